"""Implicit ALS / BPR factor models: fit, fold-in of new users, save / load.

``implicit`` is imported inside the functions that need it, so that importing this module is cheap.
Fitting runs on the CPU (``implicit.cpu``), seeded by ``cf.seed``: ALS is reproducible with any number of
threads (every user's and item's solve is independent); BPR's Hogwild updates are only reproducible on one
thread, so BPR always runs on one.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from recsys.cf.idmap import IdMap
from recsys.cf.matrix import Bm25Stats, apply_confidence, bm25_stats
from recsys.cf.settings import CFConfig
from recsys.errors import ArtifactError

log = logging.getLogger(__name__)

__all__ = ["FORMAT_VERSION", "CFModel", "fit_factors", "fold_in"]

FORMAT_VERSION = 1


def _blas_single_thread() -> Any:
    """implicit warns (and slows down) when BLAS runs its own threads inside its threads.

    implicit is imported first, so that every BLAS library it loads is loaded when the limit is set.
    """
    global _CONTROLLER
    if _CONTROLLER is None:  # scanning the loaded libraries costs ~1 ms: once per process, not per call
        import implicit.cpu.als  # noqa: F401
        import implicit.cpu.bpr  # noqa: F401
        from threadpoolctl import ThreadpoolController

        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER.limit(limits=1, user_api="blas")


_CONTROLLER: Any = None


def _als(cfg: CFConfig, item_factors: np.ndarray | None = None) -> Any:
    from implicit.cpu.als import AlternatingLeastSquares

    model = AlternatingLeastSquares(
        factors=cfg.factors,
        regularization=cfg.regularization,
        alpha=1.0,  # confidence scaling is applied by recsys.cf.matrix.apply_confidence
        iterations=cfg.iterations,
        random_state=cfg.seed,
        num_threads=cfg.num_threads,
    )
    if item_factors is not None:
        model.factors = item_factors.shape[1]
        model.item_factors = np.ascontiguousarray(item_factors, dtype=np.float32)
    return model


def fit_factors(confidence: sp.csr_matrix, cfg: CFConfig) -> tuple[np.ndarray, np.ndarray]:
    """Fit ``cfg.model`` on a confidence matrix.

    Args:
        confidence: ``(n_users, n_items)`` float32 CSR, the output of
            :func:`~recsys.cf.matrix.apply_confidence`.

    Returns:
        user factors ``(n_users, k)`` and item factors ``(n_items, k)``, float32, where ``k`` is
        ``cfg.factors`` for ALS and ``cfg.factors + 1`` for BPR (implicit's item-bias column).
    """
    confidence = sp.csr_matrix(confidence, dtype=np.float32)
    t0 = time.perf_counter()
    with _blas_single_thread():
        if cfg.model == "als":
            model = _als(cfg)
            model.fit(confidence, show_progress=False)
        else:
            from implicit.cpu.bpr import BayesianPersonalizedRanking

            model = BayesianPersonalizedRanking(
                factors=cfg.factors,
                learning_rate=cfg.learning_rate,
                regularization=cfg.regularization,
                iterations=cfg.iterations,
                random_state=cfg.seed,
                num_threads=1,
            )
            model.fit(confidence, show_progress=False)
    log.info(
        "%s fit on %dx%d (%d nnz) in %.2fs", cfg.model, *confidence.shape, confidence.nnz, time.perf_counter() - t0
    )
    return (
        np.ascontiguousarray(model.user_factors, dtype=np.float32),
        np.ascontiguousarray(model.item_factors, dtype=np.float32),
    )


def fold_in(item_factors: np.ndarray, confidence: sp.csr_matrix, cfg: CFConfig) -> np.ndarray:
    """User vectors for rows of confidences, without retraining (implicit's ``recalculate_user``).

    The weighted least-squares solve of ALS against fixed item factors; for BPR factors the same solve is
    used as an approximation.

    Args:
        item_factors: ``(n_items, k)`` float32.
        confidence: ``(n_rows, n_items)`` CSR confidences (already through ``apply_confidence``).

    Returns:
        ``(n_rows, k)`` float32; a row without events gets the zero vector.
    """
    confidence = sp.csr_matrix(confidence, dtype=np.float32)
    if confidence.shape[0] == 0:
        return np.zeros((0, item_factors.shape[1]), dtype=np.float32)
    with _blas_single_thread():
        model = _fold_model(item_factors, cfg)
        out = model.recalculate_user(np.arange(confidence.shape[0]), confidence)
    return np.asarray(out, dtype=np.float32).reshape(confidence.shape[0], item_factors.shape[1])


_FOLD_MODELS: list[tuple[np.ndarray, str, Any]] = []


def _fold_model(item_factors: np.ndarray, cfg: CFConfig) -> Any:
    """An ALS model over ``item_factors`` for fold-in, reused while the same array is passed: it caches the
    Gram matrix ``YtY`` (at a million items, recomputing it would dominate a single user's fold-in)."""
    key = cfg.model_dump_json()
    for arr, k, model in _FOLD_MODELS:
        if arr is item_factors and k == key:
            return model
    model = _als(cfg, item_factors)
    _FOLD_MODELS.insert(0, (item_factors, key, model))
    del _FOLD_MODELS[4:]
    return model


@dataclass
class CFModel:
    """Trained factors with their id maps and the configuration that produced them.

    Attributes:
        user_factors: ``(len(users), k)`` float32.
        item_factors: ``(len(items), k)`` float32.
        users, items: the id maps of the rows.
        config: the ``cf`` section used for training (also how new users' rows are weighed).
        bm25: BM25 statistics of the training matrix (``confidence == "bm25"`` only).
        item_support: ``(len(items),)`` int64, how many training users touched each item; items with 0
            (catalogue items without events) have no real CF factors (``warm`` is False for them).
        info: free-form facts kept in the manifest (counts, times, event type weights).
    """

    user_factors: np.ndarray
    item_factors: np.ndarray
    users: IdMap
    items: IdMap
    config: CFConfig
    bm25: Bm25Stats | None = None
    item_support: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def fit(cls, weights: sp.csr_matrix, users: IdMap, items: IdMap, cfg: CFConfig) -> CFModel:
        """Fit on combined weights (``InteractionMatrix.weights``): confidence scaling, then ALS / BPR."""
        stats = bm25_stats(weights) if cfg.confidence == "bm25" else None
        uf, itf = fit_factors(apply_confidence(weights, cfg, stats), cfg)
        support = np.bincount(sp.csr_matrix(weights).indices, minlength=weights.shape[1]).astype(np.int64)
        return cls(uf, itf, users, items, cfg, stats, support)

    @property
    def warm(self) -> np.ndarray:
        """``(len(items),)`` bool: items with at least one training event (all True when unknown)."""
        if self.item_support is None:
            return np.ones(len(self.items), dtype=bool)
        return self.item_support > 0

    def user_vectors(self, weights: sp.csr_matrix) -> np.ndarray:
        """Fold in rows of combined weights ``(n, len(items))`` -> ``(n, k)`` user vectors."""
        return fold_in(self.item_factors, apply_confidence(weights, self.config, self.bm25), self.config)

    def vector_for(self, item_ids: list[str], weights: list[float] | None = None) -> np.ndarray:
        """Fold in one user from the external ids of the items they touched (unknown ids raise).

        Returns ``(k,)`` float32.
        """
        cols = self.items.rows(item_ids)
        w = np.ones(len(cols), dtype=np.float32) if weights is None else np.asarray(weights, dtype=np.float32)
        row = sp.csr_matrix((w, (np.zeros(len(cols), dtype=np.int64), cols)), shape=(1, len(self.items)))
        row.sum_duplicates()
        return self.user_vectors(row)[0]

    def scores(self, user_vectors: np.ndarray) -> np.ndarray:
        """``(n, k)`` user vectors -> ``(n, len(items))`` float32 dot-product scores."""
        return np.asarray(user_vectors, dtype=np.float32) @ self.item_factors.T

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | Path, manifest: dict[str, Any] | None = None) -> Path:
        """Write factors, id maps, BM25 statistics and ``manifest.json`` into ``directory`` (created)."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        np.save(out / "user_factors.npy", self.user_factors)
        np.save(out / "item_factors.npy", self.item_factors)
        self.users.save(out / "users.json")
        self.items.save(out / "items.json")
        if self.bm25 is not None:
            np.savez(out / "bm25.npz", idf=self.bm25.idf, avg_len=np.array(self.bm25.avg_len))
        if self.item_support is not None:
            np.save(out / "item_support.npy", self.item_support)
        body = {
            "kind": "cf",
            "format_version": FORMAT_VERSION,
            "model": self.config.model,
            "factors": int(self.item_factors.shape[1]),
            "n_users": len(self.users),
            "n_items": len(self.items),
            "config": self.config.model_dump(mode="json"),
            "info": self.info,
            "files": ["user_factors.npy", "item_factors.npy", "users.json", "items.json"]
            + (["bm25.npz"] if self.bm25 is not None else [])
            + (["item_support.npy"] if self.item_support is not None else []),
        }
        body.update(manifest or {})
        (out / "manifest.json").write_text(json.dumps(body, indent=2, sort_keys=True), encoding="utf-8")
        return out

    @classmethod
    def load(cls, directory: str | Path) -> CFModel:
        """Read what :meth:`save` wrote.

        Raises:
            ArtifactError: missing files, another format version, or shapes that do not match the maps.
        """
        src = Path(directory)
        try:
            manifest = json.loads((src / "manifest.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"cannot read {src / 'manifest.json'}: {exc}") from exc
        if manifest.get("kind") != "cf" or manifest.get("format_version") != FORMAT_VERSION:
            raise ArtifactError(
                f"{src} is not a cf artifact of format {FORMAT_VERSION} "
                f"(kind={manifest.get('kind')!r}, format_version={manifest.get('format_version')!r})"
            )
        try:
            uf = np.load(src / "user_factors.npy")
            itf = np.load(src / "item_factors.npy")
            bm25 = None
            if (src / "bm25.npz").is_file():
                with np.load(src / "bm25.npz") as z:
                    bm25 = Bm25Stats(idf=z["idf"], avg_len=float(z["avg_len"]))
            support = np.load(src / "item_support.npy") if (src / "item_support.npy").is_file() else None
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"cannot read the factors in {src}: {exc}") from exc
        users, items = IdMap.load(src / "users.json"), IdMap.load(src / "items.json")
        if uf.shape[0] != len(users) or itf.shape[0] != len(items) or uf.shape[1] != itf.shape[1]:
            raise ArtifactError(
                f"{src}: factor shapes {uf.shape} / {itf.shape} do not match {len(users)} users / {len(items)} items"
            )
        cfg = CFConfig.model_validate(manifest["config"])
        return cls(uf, itf, users, items, cfg, bm25, support, dict(manifest.get("info", {})))
