"""``recsys export``: top-k recommendations for every user, or similar items for every item, in bulk.

The ranking is the service's own: the same :class:`~recsys.ranking.ranker.FeedRanker` (home feed),
the same similar-items index and the same filters and diversity step, over the state a
:class:`~recsys.serving.Runtime` loads. Users' histories are read from the events table in one pass and
built exactly as the service builds one user's (:func:`recsys.cf.history.user_history`'s rules).

The work is split into fixed chunks of ids (sorted, so the split is the same on every run); each chunk
is ranked and written durably on its own (:mod:`recsys.export.writers`), so memory stays at one chunk's
scores and an interrupted run resumes at the first missing chunk. A manifest beside the file (and a row
of kind ``export`` in the artifacts registry) records the model and index versions used.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from recsys.cf.history import History
from recsys.errors import ArtifactError, ConfigError
from recsys.ranking.diversity import reshape
from recsys.ranking.ranker import FEED_POOL, FeedRanker
from recsys.recommend.model import type_weights

log = logging.getLogger(__name__)

__all__ = ["ExportContext", "ExportOptions", "ExportResult", "rank_feed_chunk", "run_export", "similar_chunk",
           "store_histories"]

FEED_SCHEMA = pa.schema([("user_id", pa.string()), ("rank", pa.int32()), ("item_id", pa.string()),
                         ("score", pa.float32())])
SIMILAR_SCHEMA = pa.schema([("item_id", pa.string()), ("rank", pa.int32()), ("similar_item_id", pa.string()),
                            ("score", pa.float32())])


@dataclass(frozen=True)
class ExportOptions:
    """What to export, with the API's filters (``GET /v1/users/<id>/recommendations`` / ``/similar``)."""

    what: Literal["recommendations", "similar"] = "recommendations"
    k: int = 10
    exclude_seen: bool = True
    category: str | None = None
    diversity: float = 0.0
    max_per_category: int | None = None
    available_only: bool = True
    chunk_size: int = 2048

    def __post_init__(self) -> None:
        if self.what not in ("recommendations", "similar"):
            raise ConfigError(f"export: what must be 'recommendations' or 'similar', got {self.what!r}")
        if not 1 <= self.k <= 10_000:
            raise ConfigError(f"export: k must be between 1 and 10000, got {self.k}")
        if not 0.0 <= self.diversity <= 1.0:
            raise ConfigError(f"export: diversity must be in [0, 1], got {self.diversity}")
        if self.chunk_size < 1:
            raise ConfigError(f"export: chunk size must be positive, got {self.chunk_size}")


@dataclass
class ExportContext:
    """The serving state an export ranks with (what a :class:`~recsys.serving.Runtime` holds)."""

    ids: tuple[str, ...]
    categories: tuple[str | None, ...]
    available: np.ndarray
    content: np.ndarray
    feed: FeedRanker | None
    similar_index: Any
    similar_vectors: np.ndarray
    internal_to_row: dict[int, int] = field(default_factory=dict)
    versions: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def from_runtime(cls, rt: Any) -> ExportContext:
        st = rt._st()
        return cls(st.ids, st.categories, st.available, st.content, st.feed, st.similar_index, st.similar_vectors,
                   st.internal_to_row, dict(st.versions))

    def allowed(self, opts: ExportOptions) -> np.ndarray:
        """The API's filter mask (availability, category) shared by every row of the export."""
        mask = self.available.copy() if opts.available_only else np.ones(len(self.ids), dtype=bool)
        if opts.category is not None:
            mask &= np.fromiter((c == opts.category for c in self.categories), bool, len(self.ids))
        return mask

    def neighbours(self) -> Callable[[np.ndarray, int], np.ndarray]:
        def near(rows: np.ndarray, n: int) -> np.ndarray:
            ids, _ = self.similar_index.search(self.similar_vectors[rows], n + 1)
            ids = np.asarray(ids).ravel()
            return ids[ids >= 0]

        return near


@dataclass(frozen=True)
class ExportResult:
    version: str
    location: str
    rows: int
    ids: int
    seconds: float
    resumed_chunks: int
    manifest: dict[str, Any]


# ---------------------------------------------------------------------- ranking one chunk
def rank_feed_chunk(ctx: ExportContext, user_ids: Sequence[str], history: History, opts: ExportOptions,
                    allowed: np.ndarray) -> pa.Table:
    """Top-k rows of some users (``history`` rows in ``user_ids`` order), as the API ranks them."""
    if ctx.feed is None:
        raise ArtifactError("no active feed model to export with; run `recsys train`")
    pooled = opts.diversity > 0 or bool(opts.max_per_category)
    ranking = ctx.feed.rank(history, opts.k, allowed, exclude_seen=opts.exclude_seen,
                            pool=FEED_POOL if pooled else None, neighbours=ctx.neighbours())
    ids = np.asarray(ctx.ids, dtype=object)
    if not pooled:  # the common case, vectorised: ranked rows are a prefix of each row (-1 pads last)
        rows, sc = ranking.rows[:, : opts.k], ranking.scores[:, : opts.k]
        valid = rows >= 0
        rank = np.broadcast_to(np.arange(1, rows.shape[1] + 1, dtype=np.int32), rows.shape)
        return pa.table({
            "user_id": pa.array(np.repeat(np.asarray(user_ids, dtype=object), valid.sum(axis=1)), pa.string()),
            "rank": pa.array(rank[valid], pa.int32()),
            "item_id": pa.array(ids[rows[valid]], pa.string()),
            "score": pa.array(sc[valid], pa.float32()),
        }, schema=FEED_SCHEMA)
    users: list[np.ndarray] = []
    items: list[np.ndarray] = []
    ranks: list[np.ndarray] = []
    scores: list[np.ndarray] = []
    for u, uid in enumerate(user_ids):
        valid = ranking.rows[u] >= 0
        rows, sc = ranking.rows[u][valid], ranking.scores[u][valid]
        if pooled:
            pick = reshape(rows, sc, opts.k, vectors=ctx.content, categories=ctx.categories,
                           diversity=opts.diversity, max_per_category=opts.max_per_category)
            rows, sc = rows[pick], sc[pick]
        rows, sc = rows[: opts.k], sc[: opts.k]
        users.append(np.full(len(rows), uid, dtype=object))
        items.append(rows)
        ranks.append(np.arange(1, len(rows) + 1, dtype=np.int32))
        scores.append(sc)
    item_rows = np.concatenate(items) if items else np.zeros(0, np.int64)
    return pa.table({
        "user_id": pa.array(np.concatenate(users) if users else [], pa.string()),
        "rank": pa.array(np.concatenate(ranks) if ranks else [], pa.int32()),
        "item_id": pa.array(ids[item_rows] if len(item_rows) else [], pa.string()),
        "score": pa.array(np.concatenate(scores) if scores else [], pa.float32()),
    }, schema=FEED_SCHEMA)


def similar_chunk(ctx: ExportContext, rows: np.ndarray, opts: ExportOptions, allowed: np.ndarray) -> pa.Table:
    """Similar items of some catalogue rows, as ``GET /v1/items/<id>/similar`` answers them."""
    allow = None if allowed.all() else allowed  # the API's rule: no mask when nothing is filtered out
    found, scores = ctx.similar_index.search(ctx.similar_vectors[rows], opts.k, allow=allow,
                                             exclude=[[int(r)] for r in rows])
    found, scores = np.asarray(found).reshape(len(rows), -1), np.asarray(scores).reshape(len(rows), -1)
    ids = np.asarray(ctx.ids, dtype=object)
    valid = found >= 0
    per = valid.sum(axis=1)
    rank = np.concatenate([np.arange(1, n + 1, dtype=np.int32) for n in per]) if len(per) else np.zeros(0, np.int32)
    return pa.table({
        "item_id": pa.array(np.repeat(ids[rows], per), pa.string()),
        "rank": pa.array(rank, pa.int32()),
        "similar_item_id": pa.array(ids[found[valid]], pa.string()),
        "score": pa.array(scores[valid].astype(np.float32), pa.float32()),
    }, schema=SIMILAR_SCHEMA)


# ---------------------------------------------------------------------- histories from SQL
def store_histories(engine: Any, ctx: ExportContext, event_types: dict[str, float],
                    user_ids: Sequence[str] | None = None) -> tuple[np.ndarray, History]:
    """Every user's history over the serving rows, read in one pass (the service's rules per user).

    Args:
        user_ids: only these users, in this order (unknown ones get an empty history: a cold-start
            feed, as the API gives); default: every user with at least one weighted event, sorted.

    Returns:
        ``(user ids (n,) object, History with n rows)``.
    """
    from recsys.cf.sql import _id_table, read_event_columns
    from recsys.store.models import User

    if ctx.feed is None:
        raise ArtifactError("no active feed model to export with; run `recsys train`")
    ev = read_event_columns(engine, with_value=False, with_ts=True)
    user_internal, user_ext = _id_table(engine, User)
    top = max([*ctx.internal_to_row.keys(), 0]) + 1
    lookup = np.full(top, -1, dtype=np.int64)
    for internal, row in ctx.internal_to_row.items():
        lookup[internal] = row
    item_rows = np.where(ev.item_id < top, lookup[np.minimum(ev.item_id, top - 1)], -1)
    weight = type_weights(ev.event_type, event_types)
    keep = (weight > 0) & (item_rows >= 0)
    pos = np.searchsorted(user_internal, ev.user_id[keep])
    ext_of_event = user_ext[pos]
    if user_ids is None:
        wanted = np.array(sorted(set(ext_of_event.tolist())), dtype=object)
    else:
        wanted = np.asarray([str(u) for u in user_ids], dtype=object)
    index = {u: i for i, u in enumerate(wanted.tolist())}
    user_rows = np.fromiter((index.get(u, -1) for u in ext_of_event), dtype=np.int64, count=len(ext_of_event))
    mine = user_rows >= 0
    u, it, ts, w = user_rows[mine], item_rows[keep][mine], ev.ts[keep][mine], weight[keep][mine]
    order = np.lexsort((ctx.feed.tie_rank[it], ts, u))
    scale = np.float32(ctx.feed.model.weight_scale)
    history = History.from_events(u[order], it[order], len(wanted), len(ctx.ids), weight=w[order] / scale,
                                  combine="max")
    return wanted, history


# ---------------------------------------------------------------------- the job
def run_export(
    ctx: ExportContext,
    opts: ExportOptions,
    sink_factory: Callable[[dict[str, Any], pa.Schema], Any],
    *,
    engine: Any = None,
    event_types: dict[str, float] | None = None,
    ids: Sequence[str] | None = None,
    histories: tuple[np.ndarray, History] | None = None,
    progress: bool = False,
    rank_chunks: Callable[..., Iterator[tuple[int, pa.Table]]] | None = None,
    register: bool = True,
    engine_name: str = "local",
) -> ExportResult:
    """Rank every user (or item) chunk by chunk and write through the sink; resume what exists.

    Args:
        sink_factory: ``(spec, schema) -> Sink`` (see :func:`recsys.export.writers.open_sink`); the spec
            identifies the export so that a resume with other settings is refused.
        ids: users (recommendations) or items (similar) to export; default all.
        histories: precomputed ``(user ids, History)`` (benchmarks); default read from ``engine``.
        rank_chunks: an engine's chunk runner ``(todo, ...) -> (chunk, table)`` pairs (``--engine ray``);
            default: rank in this process.
    """
    t0 = time.perf_counter()
    allowed = ctx.allowed(opts)
    if opts.what == "recommendations":
        if histories is None:
            histories = store_histories(engine, ctx, event_types or {}, ids)
        keys, history = histories
        schema = FEED_SCHEMA
    else:
        row = {e: r for r, e in enumerate(ctx.ids)}
        if ids is None:
            item_rows = np.arange(len(ctx.ids))
        else:
            unknown = [i for i in ids if str(i) not in row]
            if unknown:
                from recsys.errors import UnknownIdError

                raise UnknownIdError(f"unknown item id(s) {unknown[:5]} ({len(unknown)} in all)")
            item_rows = np.array([row[str(i)] for i in ids], dtype=np.int64)
        keys, history = np.asarray(ctx.ids, dtype=object)[item_rows], None
        schema = SIMILAR_SCHEMA
    digest = hashlib.sha256("\x00".join(map(str, keys)).encode()).hexdigest()[:16]
    spec = {"options": asdict(opts), "versions": ctx.versions, "ids": len(keys), "ids_sha256": digest,
            "schema": schema.names}
    sink = sink_factory(spec, schema)
    n_chunks = (len(keys) + opts.chunk_size - 1) // opts.chunk_size
    done = sink.done_chunks()
    todo = [c for c in range(n_chunks) if c not in done]
    if done:
        log.info("resuming: %d of %d chunks already written", len(done & set(range(n_chunks))), n_chunks)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(keys), unit=" users" if opts.what == "recommendations" else " items",
                   initial=min(len(done) * opts.chunk_size, len(keys)))
    rows_written = 0

    def local_chunks() -> Iterator[tuple[int, pa.Table]]:
        for c in todo:
            start, stop = c * opts.chunk_size, min((c + 1) * opts.chunk_size, len(keys))
            if history is not None:
                yield c, rank_feed_chunk(ctx, keys[start:stop].tolist(), history.select(np.arange(start, stop)),
                                         opts, allowed)
            else:
                yield c, similar_chunk(ctx, item_rows[start:stop], opts, allowed)

    runner = rank_chunks(todo, keys, history, opts, allowed) if rank_chunks is not None else local_chunks()
    for c, table in runner:
        sink.write_chunk(c, table)
        rows_written += table.num_rows
        if bar is not None:
            bar.update(min((c + 1) * opts.chunk_size, len(keys)) - c * opts.chunk_size)
    if bar is not None:
        bar.close()
    location = sink.finish(n_chunks)
    seconds = time.perf_counter() - t0
    version = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ") + f"-{opts.what}"
    manifest = {
        "export": version,
        "what": opts.what,
        "location": location,
        "options": asdict(opts),
        "versions": ctx.versions,
        "ids": len(keys),
        "rows_written_this_run": rows_written,
        "chunks": n_chunks,
        "resumed_chunks": len(done & set(range(n_chunks))),
        "seconds_this_run": round(seconds, 3),
        "engine": engine_name,
        "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(),
    }
    if not location.startswith("table "):
        Path(location).with_name(Path(location).name + ".manifest.json").write_text(json.dumps(manifest, indent=2))
    if register and engine is not None:
        from recsys.store.artifacts import register_artifact

        register_artifact(engine, "export", version, location, config={"options": asdict(opts), "versions": ctx.versions},
                          metrics={"ids": len(keys), "seconds": round(seconds, 3)}, activate=False)
    return ExportResult(version, location, rows_written, len(keys), seconds, manifest["resumed_chunks"], manifest)
