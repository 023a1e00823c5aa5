"""The served feed model: the evaluated hybrid, fitted on the store's events, saved as an artifact.

``recsys train`` builds one :class:`FeedModel` from SQL: the events table becomes a
:class:`~recsys.cf.history.History` exactly as ``recsys evaluate`` builds its training history (events
ordered by user, time, then the item's tie rank; each (user, item) pair once), the stored text and
image vectors become the content blocks, and :class:`~recsys.recommend.hybrid.HybridRecommender` chooses its
settings on validation splits of that history and fits. The service, ``recsys export`` and the offline
check all score users with this one object, through the same functions as the evaluation.

Pair weights: each event weighs ``config.event_types[type]`` divided by the largest weight among the
events used, and a pair keeps its strongest event (``max``). A log of one event type (MovieLens ratings,
H&M purchases) therefore trains with weight 1 per pair, as the offline protocols do; a mixed log keeps
the ratios of its types (a purchase counts more than a view).

Artifact layout (``<artifacts>/feed/<version>/``): ``manifest.json`` (settings, chosen parameters,
encoder versions, metrics), ``item_ids.json``, and ``.npy`` arrays (item factors, warm mask,
standardised popularity, content blocks, the content -> factor and content -> popularity maps, BM25
statistics when used; the cold path's own factors and their map when ``params.cold_als`` chose them;
``sasrec.npz`` / ``sasrec.json`` when validation gave the SASRec sequence model a weight; older
artifacts load without it).
The ``artifacts`` table gets a row of kind ``feed``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recsys.cf.history import History, item_tie_rank
from recsys.cf.itemitem import ItemItem
from recsys.cf.matrix import Bm25Stats
from recsys.cf.ridge import RidgeMap
from recsys.cf.sasrec import SasrecModel
from recsys.cf.settings import CFConfig
from recsys.errors import ArtifactError, RecsysError
from recsys.ranking.hybrid import HybridComponents, HybridParams
from recsys.recommend.hybrid import HybridRecommender

log = logging.getLogger(__name__)

__all__ = ["KIND", "FeedModel", "StoreHistory", "fit_feed_model", "load_feed_model", "read_store_history"]

KIND = "feed"
FORMAT = 1


@dataclass(frozen=True)
class StoreHistory:
    """The events table as a training history.

    Attributes:
        history: ``(n_users, n_items)`` history over the catalogue rows.
        user_ids: ``(n_users,)`` external user ids (users with at least one weighted event).
        item_ids: ``(n_items,)`` external item ids, every catalogue item, by internal id.
        n_events: events used (types with a positive weight).
        weight_scale: the largest type weight among them (pair weights are divided by it).
    """

    history: History
    user_ids: np.ndarray
    item_ids: np.ndarray
    n_events: int
    weight_scale: float


def type_weights(event_type: np.ndarray, event_types: dict[str, float], *, warn: bool = False) -> np.ndarray:
    """``(n,)`` float32 weight of each event from its type (``config.event_types``; unknown or non-positive: 0)."""
    types = np.asarray(event_type, dtype=object)
    weight = np.zeros(types.shape[0], dtype=np.float32)
    for name in np.unique(types) if types.size else []:
        w = float(event_types.get(str(name), 0.0))
        if w <= 0 and warn:
            log.warning("feed model: events of type %r ignored (weight %s in config.event_types)", name, w)
        weight[types == name] = max(w, 0.0)
    return weight


def read_store_history(engine: Any, event_types: dict[str, float]) -> StoreHistory:
    """Read the events and id tables into a :class:`StoreHistory` (see the module docstring)."""
    from recsys.cf.sql import _id_table, _rows_of, read_event_columns
    from recsys.store.models import Item, User

    ev = read_event_columns(engine, with_value=False, with_ts=True)
    item_internal, item_ext = _id_table(engine, Item)
    user_internal, user_ext = _id_table(engine, User)
    weight = type_weights(ev.event_type, event_types, warn=True)
    keep = weight > 0
    item_rows = _rows_of(ev.item_id[keep], item_internal)
    user_rows_all = _rows_of(ev.user_id[keep], user_internal)
    active = np.unique(user_rows_all)
    remap = np.full(max(user_internal.shape[0], 1), -1, dtype=np.int64)
    remap[active] = np.arange(active.shape[0])
    user_rows = remap[user_rows_all] if user_rows_all.size else user_rows_all
    ties = item_tie_rank(np.asarray(item_ext, dtype=object))
    ts = ev.ts[keep]
    order = np.lexsort((ties[item_rows], ts, user_rows)) if item_rows.size else np.zeros(0, dtype=np.int64)
    scale = float(weight[keep].max()) if keep.any() else 1.0
    history = History.from_events(
        user_rows[order], item_rows[order], int(active.shape[0]), int(item_ext.shape[0]),
        weight=(weight[keep][order] / scale).astype(np.float32), combine="max",
    )
    return StoreHistory(history, user_ext[active], item_ext, int(keep.sum()), scale)


@dataclass
class FeedModel:
    """A fitted hybrid over the catalogue it was trained on, plus what scoring new items needs.

    Attributes:
        item_ids: ``(n_items,)`` external ids of the model's rows.
        params: the chosen hybrid settings.
        cfg: the ``cf`` section it was fitted with (fold-in uses it).
        components: item factors, warm mask, standardised popularity, content blocks, BM25 statistics.
        factor_map: content -> CF factor map for items that arrive after training (``None`` without content).
        pop_map: content -> log popularity map; ``pop_mean`` / ``pop_std`` standardise its output.
        encoders: the encoder version of each content block (``text``, ``image``).
        weight_scale: see :class:`StoreHistory`.
        version, info: the artifact's version and manifest extras (metrics, selection details).
    """

    item_ids: np.ndarray
    params: HybridParams
    cfg: CFConfig
    components: HybridComponents
    factor_map: RidgeMap | None
    pop_map: RidgeMap | None
    pop_mean: float
    pop_std: float
    encoders: dict[str, str]
    weight_scale: float = 1.0
    version: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def n_items(self) -> int:
        return int(self.item_ids.shape[0])

    def recommender(self, history: History | None = None) -> HybridRecommender:
        """A :class:`HybridRecommender` holding this model's fit (for offline scoring of ``history``'s rows)."""
        return HybridRecommender(self.cfg, self.params, self.components, history)

    def new_item_rows(self, blocks: tuple[np.ndarray, ...] | None, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """CF factors and standardised popularity of items the model never saw, from their content blocks.

        ``n``: how many items (needed when ``blocks`` is ``None``, e.g. an ids-only catalogue).
        Returns ``(factors (n, k) float32, pop_z (n,) float32)``; without content maps: zeros.
        """
        n = (0 if blocks is None else blocks[0].shape[0]) if n is None else n
        k = self.components.item_factors.shape[1]
        if blocks is None or self.factor_map is None or self.pop_map is None:
            return np.zeros((n, k), np.float32), np.zeros(n, np.float32)
        x = np.concatenate(blocks, axis=1)
        factors = self.factor_map(x)
        pop_z = (self.pop_map(x)[:, 0] - self.pop_mean) / self.pop_std
        return factors.astype(np.float32), pop_z.astype(np.float32)

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | Path, manifest: dict[str, Any] | None = None) -> Path:
        """Write the artifact files into ``directory`` (created; must not exist)."""
        out = Path(directory)
        out.mkdir(parents=True)
        comp = self.components
        np.save(out / "item_factors.npy", comp.item_factors)
        np.save(out / "warm.npy", comp.warm)
        np.save(out / "pop.npy", comp.pop)
        for b, block in enumerate(comp.content or ()):
            np.save(out / f"content_{b}.npy", block)
        if comp.bm25 is not None:
            np.save(out / "bm25_idf.npy", comp.bm25.idf)
        if comp.cold_factors is not None:  # the cold path's own factors (params.cold_als)
            np.save(out / "cold_item_factors.npy", comp.cold_factors)
        if comp.content_map is not None:  # the learned content score's map (params.cold_bilinear)
            np.save(out / "content_map.npy", comp.content_map)
        for name, m in (("factor_map", self.factor_map), ("pop_map", self.pop_map), ("cold_factor_map", comp.cold_factor_map)):
            if m is not None:
                np.savez(out / f"{name}.npz", coef=m.coef, intercept=m.intercept)
        if comp.item_item is not None:  # EASE / item-kNN: the CF score's item-item matrix
            comp.item_item.save(out)
        if comp.seq is not None:  # item-to-next-item transitions
            comp.seq.save(out, "transitions")
        if comp.sasrec is not None:  # the SASRec sequence model (params.sasrec_weight > 0)
            comp.sasrec.save(out, "sasrec")
        (out / "item_ids.json").write_text(json.dumps([str(i) for i in self.item_ids]))
        body = {
            "format": FORMAT,
            "kind": KIND,
            "version": self.version,
            "params": asdict(self.params),
            "cf": self.cfg.model_dump(mode="json"),
            "n_items": self.n_items,
            "content_blocks": len(comp.content or ()),
            "encoders": self.encoders,
            "pop_mean": self.pop_mean,
            "pop_std": self.pop_std,
            "bm25_avg_len": comp.bm25.avg_len if comp.bm25 is not None else None,
            "weight_scale": self.weight_scale,
            "item_item": None if comp.item_item is None else comp.item_item.kind,
            "transitions": comp.seq is not None,
            "sasrec": comp.sasrec is not None,
            "cold_factors": comp.cold_factors is not None,
            "content_map": comp.content_map is not None,
            **self.info,
            **(manifest or {}),
        }
        (out / "manifest.json").write_text(json.dumps(body, indent=2, default=str))
        return out

    @classmethod
    def load(cls, directory: str | Path) -> FeedModel:
        """Read an artifact folder written by :meth:`save` (arrays memory-mapped read-only).

        Raises:
            ArtifactError: missing files or an unknown format.
        """
        src = Path(directory)
        try:
            man = json.loads((src / "manifest.json").read_text())
            if man.get("format") != FORMAT:
                raise ArtifactError(f"feed artifact {src}: format {man.get('format')!r}, this code reads {FORMAT}")
            item_ids = np.asarray(json.loads((src / "item_ids.json").read_text()), dtype=object)
            content = tuple(np.load(src / f"content_{b}.npy", mmap_mode="r") for b in range(man["content_blocks"]))
            bm25 = None
            if man.get("bm25_avg_len") is not None:
                bm25 = Bm25Stats(np.load(src / "bm25_idf.npy"), float(man["bm25_avg_len"]))
            item_item = ItemItem.load(src, str(man["item_item"])) if man.get("item_item") else None
            seq = ItemItem.load(src, "transitions", "transitions") if man.get("transitions") else None
            maps = {}
            for name in ("factor_map", "pop_map", "cold_factor_map"):
                path = src / f"{name}.npz"
                if path.is_file():
                    with np.load(path) as z:
                        maps[name] = RidgeMap(z["coef"], z["intercept"])
            cold = np.load(src / "cold_item_factors.npy") if man.get("cold_factors") else None  # older: none
            sasrec = SasrecModel.load(src, "sasrec") if man.get("sasrec") else None  # older: none
            content_map = np.load(src / "content_map.npy") if man.get("content_map") else None  # older: none
            comp = HybridComponents(
                np.load(src / "item_factors.npy"), np.load(src / "warm.npy"), np.load(src / "pop.npy"),
                content or None, bm25, 0.0, item_item=item_item, seq=seq, cold_factors=cold,
                cold_factor_map=maps.get("cold_factor_map"), sasrec=sasrec, content_map=content_map,
            )
        except (OSError, KeyError, ValueError) as exc:
            raise ArtifactError(f"cannot read the feed artifact in {src}: {exc}") from exc
        known = {f for f in HybridParams.__dataclass_fields__}
        params = HybridParams(**{k: v for k, v in man["params"].items() if k in known})
        skip = {"format", "kind", "version", "params", "cf", "n_items", "content_blocks", "encoders", "pop_mean",
                "pop_std", "bm25_avg_len", "weight_scale", "item_item", "transitions", "sasrec", "cold_factors", "content_map"}
        return cls(
            item_ids=item_ids, params=params, cfg=CFConfig.model_validate(man["cf"]), components=comp,
            factor_map=maps.get("factor_map"), pop_map=maps.get("pop_map"), pop_mean=float(man["pop_mean"]),
            pop_std=float(man["pop_std"]), encoders=dict(man.get("encoders") or {}),
            weight_scale=float(man.get("weight_scale", 1.0)), version=str(man.get("version", src.name)),
            info={k: v for k, v in man.items() if k not in skip},
        )


FEW_ITEMS = 20_000
"""Up to this many items, :func:`content_blocks` reads only their rows; more, one pass over the table."""


def content_blocks(engine: Any, item_ids: np.ndarray, internal_ids: np.ndarray | None = None,
                   versions: dict[str, str] | None = None) -> tuple[tuple[np.ndarray, ...] | None, dict[str, str]]:
    """The stored text (and image, when any item has one) vectors of items, as zero-filled blocks.

    Args:
        item_ids: external ids (the rows of the result).
        versions: encoder version per space to read; default: for each space the version with the most
            stored vectors.

    Returns:
        ``(blocks or None, versions used)``; ``None`` when no item has a text vector.
    """
    from sqlalchemy import select

    from recsys.embed import IMAGE, TEXT, encoder_versions, load_item_vectors
    from recsys.store.models import Item, ItemEmbedding

    few = len(item_ids) <= FEW_ITEMS  # a few new items (the service's updates): read just their rows
    wanted = [str(e) for e in item_ids]
    with engine.connect() as conn:
        if few:
            internal = {}
            for start in range(0, len(wanted), 5000):
                internal.update(conn.execute(
                    select(Item.external_id, Item.id).where(Item.external_id.in_(wanted[start : start + 5000]))).all())
        else:
            internal = dict(conn.execute(select(Item.external_id, Item.id)).all())
    rows = np.array([internal.get(e, -1) for e in wanted], dtype=np.int64)
    chosen: dict[str, str] = {}
    blocks: list[np.ndarray] = []
    for space in (TEXT, IMAGE):
        version = (versions or {}).get(space)
        if version is None and versions is None:
            found = encoder_versions(engine, space)
            version = found[0][0] if found else None
        if version is None:
            continue
        ids, vectors = load_item_vectors(engine, space, version, item_ids=rows[rows >= 0] if few else None)
        if len(ids) == 0 and few:  # none of these items has one: zero rows, if the space has vectors at all
            with engine.connect() as conn:
                dim = conn.execute(select(ItemEmbedding.dim).where(
                    ItemEmbedding.space == space, ItemEmbedding.encoder == version,
                    ItemEmbedding.vector.is_not(None)).limit(1)).scalar()
            if dim:
                blocks.append(np.zeros((len(item_ids), int(dim)), np.float32))
                chosen[space] = version
                continue
        if len(ids) == 0:
            if space == TEXT:
                break
            continue
        pos = np.searchsorted(ids, rows)
        pos = np.minimum(pos, len(ids) - 1)
        hit = ids[pos] == rows
        block = np.zeros((len(item_ids), vectors.shape[1]), np.float32)
        block[hit] = vectors[pos[hit]]
        blocks.append(block)
        chosen[space] = version
    if TEXT not in chosen:
        return None, {}
    return tuple(blocks), chosen


def fit_feed_model(engine: Any, config: Any, *, content: bool = True, params: HybridParams | None = None,
                   store_history: StoreHistory | None = None) -> FeedModel:
    """Fit the hybrid on the store (events, and stored item vectors unless ``content`` is False).

    ``params``: fixed settings instead of choosing them on validation splits (benchmarks, experiments).
    ``store_history``: fit on this history instead of reading the events (the reranker's validation split).

    Raises:
        RecsysError: no event with a positive weight.
    """
    t0 = time.perf_counter()
    sh = store_history if store_history is not None else read_store_history(engine, dict(config.event_types))
    if sh.n_events == 0:
        raise RecsysError(
            f"no events to train on: the events table has no event of a type in config.event_types "
            f"({sorted(config.event_types)}) with a positive weight"
        )
    blocks, versions = content_blocks(engine, sh.item_ids) if content else (None, {})
    t1 = time.perf_counter()
    model = HybridRecommender(config.cf, params, budget_s=config.train.budget_s).fit(sh.history, blocks)
    t2 = time.perf_counter()
    comp = model.components
    assert comp is not None and model.params is not None
    warm = comp.warm
    metrics = {
        "read_seconds": round(t1 - t0, 3),
        "fit_seconds": round(t2 - t1, 3),
        "users": int(sh.history.n_users),
        "items": int(sh.history.n_items),
        "pairs": int(sh.history.items.shape[0]),
        "events": sh.n_events,
        "warm_items": int(warm.sum()),
    }
    return FeedModel(
        item_ids=sh.item_ids, params=model.params, cfg=model.cfg, components=comp, factor_map=comp.factor_map,
        pop_map=comp.pop_map, pop_mean=comp.pop_mean, pop_std=comp.pop_std, encoders=versions, weight_scale=sh.weight_scale,
        info={"metrics": metrics, "selection": _jsonable(model.selection)},
    )


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def new_version(now: dt.datetime | None = None) -> str:
    now = now or dt.datetime.now(dt.timezone.utc)
    return now.strftime("%Y%m%dT%H%M%S%fZ") + "-hybrid"


def save_feed_model(engine: Any, config: Any, model: FeedModel, *, version: str | None = None,
                    activate: bool = True) -> Path:
    """Save into ``<artifacts>/feed/<version>`` (temporary name, then rename) and register it.

    Raises:
        ArtifactError: the version folder exists already.
    """
    from recsys.store.artifacts import register_artifact

    model.version = version or new_version()
    target = config.artifacts_path / KIND / model.version
    if target.exists():
        raise ArtifactError(f"artifact folder {target} exists already; choose another --version")
    from recsys.store.staging import staging_dir

    with staging_dir(target.parent, f".{model.version}.tmp") as tmp:  # also removes those a killed run left
        model.save(tmp, manifest={"created_at": dt.datetime.now(dt.timezone.utc).isoformat()})
        tmp.rename(target)
    register_artifact(
        engine, KIND, model.version, str(target.resolve()),
        config={"cf": config.cf.model_dump(mode="json"), "event_types": dict(config.event_types),
                "params": asdict(model.params), "encoders": model.encoders},
        metrics=model.info.get("metrics", {}), activate=activate,
    )
    return target


def load_feed_model(engine: Any, version: str | None = None) -> FeedModel | None:
    """The active (or named) feed artifact, or ``None`` when none is registered.

    Raises:
        ArtifactError: a registered version whose folder is missing or broken.
    """
    from recsys.store.artifacts import active_artifact, get_artifact

    record = get_artifact(engine, KIND, version) if version else active_artifact(engine, KIND)
    if record is None:
        return None
    if not record.path or not Path(record.path).is_dir():
        raise ArtifactError(f"feed artifact {record.version} points to a missing folder {record.path!r}")
    return FeedModel.load(record.path)


def train_feed(engine: Any, config: Any, *, version: str | None = None, activate: bool = True,
               content: bool = True) -> FeedModel:
    """Fit on the store, save and register (:func:`fit_feed_model` + :func:`save_feed_model`)."""
    model = fit_feed_model(engine, config, content=content)
    save_feed_model(engine, config, model, version=version, activate=activate)
    return model
