"""Configuration section ``cf`` (see :mod:`recsys.config`). Pure pydantic, no heavy imports.

The defaults are the recommended values. The ALS hyperparameters (factors, regularization, alpha) were
chosen once on a validation split carved from the *training* part of MovieLens temporal-20 (each user's
newest 20 % of training events; never the test split) and frozen here. The hybrid's settings are not
frozen: :mod:`recsys.recommend.selection` chooses them at fit time on validation splits carved from the
training events it is given, from the grids below (the same grids for every data set).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from recsys.settings_base import Section as _Section


class HybridConfig(_Section):
    """How :class:`recsys.recommend.hybrid.HybridRecommender` blends CF, content and popularity."""

    recency_tau: tuple[float, ...] = (3.0, 10.0)
    """Candidate time constants (in events, counted back from the user's latest) of the recency weight
    ``1 + beta * exp(-r / tau)`` used to fold users in; the validation split picks one."""
    recency_beta: tuple[float, ...] = (0.0, 10.0, 30.0)
    """Candidate boosts of the user's latest events in the fold-in (0 = no recency)."""
    profile_tau: tuple[float, ...] = (1.0, 3.0, 10.0, 1000.0)
    """Candidate time constants (in events) of the content profile's weights ``exp(-r / tau)``."""
    profile_gamma: tuple[float, ...] = (0.0, 5.0, 10.0, 20.0, 40.0)
    """Candidate sharpness of the content kernel ``exp(gamma * (cos - 1))`` (0: cosine to the mean profile)."""
    content_mix: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75)
    """Candidate shares of the second content block (the image) in the cosine, when there are two."""
    weight_grid: tuple[float, ...] = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
    """Values tried for the content and popularity weights (the CF weight is 0 or 1)."""
    cf_shrink: tuple[float, ...] = (0.0, 5.0, 20.0)
    """Candidate ``k`` of the per-user CF weight ``n / (n + k)`` (users with few events lean on content)."""
    cold_offset: tuple[float, ...] = (-2.0, -1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0)
    """Candidate offsets of the score of items without events (temporal validation)."""
    cold_scale: tuple[float, ...] = (0.5, 0.75, 1.0, 1.5, 2.0)
    """Candidate factors on the blended score of items without events (temporal validation)."""
    seq_weight: tuple[float, ...] = (0.0, 0.1, 0.25, 0.5, 1.0)
    """Candidate weights of the item-to-next-item transitions (:mod:`recsys.cf.sequence`) inside the CF
    score (0: none)."""
    seq_tau: tuple[float, ...] = (0.5, 2.0)
    """Candidate recency constants (in events) of the history weights scored against the transitions."""
    sasrec_weight: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
    """Candidate weights of the SASRec score (:mod:`recsys.cf.sasrec`) inside the CF score (0: none)."""
    rounds: int = Field(2, gt=0)
    """Rounds of the coordinate ascent over the grids."""
    cold_carves: int = Field(3, gt=0)
    """Item hold-out carves (seeds ``seed``, ``seed + 1``, ...) whose mean validation NDCG chooses the cold
    items' settings (one carve holds a few hundred users on H&M, and its choice fits their noise). 3 was
    chosen without a test split: choices made with 1 and 3 carves scored on five fresh carves of the
    training parts of MovieLens and H&M (``benchmarks/cold_carves_validation.py``; README, "Cold items")."""
    cold_als: tuple[tuple[int, float, float], ...] = ((32, 5.0, 0.5), (16, 5.0, 0.5), (64, 5.0, 0.5), (32, 20.0, 0.5))
    """Candidate ALS settings ``(factors, regularization, alpha)`` of the factors that score items without
    events (mapped from content), tried beside the warm ALS settings on the cold-items validation carve
    (:mod:`recsys.recommend.selection`); one that wins costs one more ALS fit. Empty: the warm factors only."""

    @field_validator("recency_tau", "profile_tau", "recency_beta", "profile_gamma", "content_mix", "weight_grid",
                     "cf_shrink", "cold_offset", "cold_scale", "seq_weight", "seq_tau", "sasrec_weight")
    @classmethod
    def _grid(cls, values: tuple[float, ...], info) -> tuple[float, ...]:  # type: ignore[no-untyped-def]
        bounds = {
            "recency_tau": (1e-9, None), "profile_tau": (1e-9, None), "recency_beta": (0.0, None),
            "profile_gamma": (0.0, 40.0), "content_mix": (0.0, 1.0), "weight_grid": (0.0, None),
            "cf_shrink": (0.0, None), "cold_offset": (None, None), "cold_scale": (1e-9, None),
            "seq_weight": (0.0, None), "seq_tau": (1e-9, None), "sasrec_weight": (0.0, None),
        }
        lo, hi = bounds[info.field_name]
        if not values:
            raise ValueError("give at least one value")
        for v in values:
            if (lo is not None and v < lo) or (hi is not None and v > hi):
                raise ValueError(f"values must be in [{lo if lo is not None else '-inf'}, "
                                 f"{hi if hi is not None else 'inf'}], got {v}")
        return values

    @field_validator("cold_als")
    @classmethod
    def _cold_als(cls, values: tuple[tuple[int, float, float], ...]) -> tuple[tuple[int, float, float], ...]:
        for factors, reg, alpha in values:
            if factors <= 0 or reg < 0 or alpha <= 0:
                raise ValueError(f"cold_als entries are (factors > 0, regularization >= 0, alpha > 0), "
                                 f"got {(factors, reg, alpha)}")
        return values

    mapping_l2: float = Field(10.0, gt=0)
    """Ridge penalty of the content -> CF item-factor mapping used for items without events."""
    cold_bilinear: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0, 2.0)
    """Candidate weights of the learned content score in the cold content score, chosen on the item
    hold-out carves (:func:`recsys.ranking.hybrid.bilinear_component`); ``[]`` or ``[0]``: never fitted."""
    bilinear_l2: float = Field(0.1, gt=0)
    """Ridge penalty of the learned content map, relative to the mean diagonal of each side's Gram matrix
    (chosen on fresh item hold-out carves of H&M's training part: 0.1 over 0.01, 0.3, 1, 10, 100)."""
    bilinear_max_users: int = Field(20_000, gt=0)
    """The learned content map is fitted on at most this many users (a seeded sample): its cost is
    ``users * d**2`` for ``d`` content dimensions."""
    validation_fraction: float = Field(0.2, gt=0, lt=1)
    """Share of each user's latest training events (and of the warm items) held out to choose weights."""
    max_validation_users: int = Field(2000, gt=0)
    """At most this many validation users are scored per candidate setting (a seeded sample)."""


class TuningConfig(_Section):
    """How :mod:`recsys.recommend.tuning` chooses the CF component and its hyperparameters per catalogue.

    Every candidate is fitted on a temporal validation carve of the training events (never a test split)
    and scored by validation NDCG@10; candidates run cheapest first until ``train.budget_s`` is spent.
    """

    enabled: bool = True
    """``False``: use the fixed ``cf`` settings (``component``, ``factors``, ...) as they are."""
    components: tuple[Literal["als", "ease", "itemknn"], ...] = ("als", "ease", "itemknn")
    """Families tried."""
    als_factors: tuple[int, ...] = (32, 64, 128)
    als_regularization: tuple[float, ...] = (0.1, 5.0)
    als_alpha: tuple[float, ...] = (0.5, 5.0)
    ease_lambda: tuple[float, ...] = (50.0, 200.0, 800.0)
    """EASE penalties tried (absolute, on binary pair weights)."""
    ease_max_items: int = Field(20_000, gt=0)
    """EASE holds an ``n_items^2`` float32 matrix (1.6 GB at 20,000 items); above this it is not tried."""
    knn_k: tuple[int, ...] = (50, 200)
    knn_shrink: tuple[float, ...] = (0.0, 10.0)
    max_validation_users: int = Field(5000, gt=0)
    """At most this many validation users score each candidate (a seeded sample)."""

    @field_validator("als_factors", "als_regularization", "als_alpha", "ease_lambda", "knn_k", "knn_shrink",
                     "components")
    @classmethod
    def _non_empty(cls, values: tuple, info) -> tuple:  # type: ignore[no-untyped-def,type-arg]
        if not values:
            raise ValueError("give at least one value")
        if info.field_name != "components" and any(float(v) < 0 for v in values):
            raise ValueError(f"values must be >= 0, got {values}")
        return values


class SasrecConfig(_Section):
    """The SASRec-style sequence component (:mod:`recsys.cf.sasrec`): architecture, training and budget.

    It is trained on the validation carve (epochs chosen there) and, when validation gives it a weight,
    once more on the whole history; both fits must fit into what ``train.budget_s`` leaves after the CF
    tuning, and the carve's fit into ``max_seconds``, else it is skipped (recorded in the manifest).
    """

    enabled: bool = True
    """``False``: never trained (the hybrid's sequence term is the transitions alone)."""
    dim: int = Field(32, gt=0)
    blocks: int = Field(1, gt=0)
    heads: int = Field(1, gt=0)
    max_len: int = Field(50, gt=1)
    """Newest items of a user the model reads (and the length of the training windows)."""
    dropout: float = Field(0.0, ge=0, lt=1)
    learning_rate: float = Field(0.01, gt=0)
    batch_size: int = Field(128, gt=0)
    max_windows: int = Field(0, ge=0)
    """Training windows per user, newest first (0: all; 1: only each user's newest ``max_len`` items)."""
    max_epochs: int = Field(20, gt=0)
    min_epochs: int = Field(3, gt=0)
    """Fewer epochs than this fitting into the time allowed: skipped."""
    eval_every: int = Field(1, gt=0)
    """Validation NDCG is computed every this many epochs (the carve's fit only)."""
    patience: int = Field(2, gt=0)
    """Validation scores without improvement before the carve's fit stops."""
    max_seconds: float = Field(7.0, gt=0)
    """Wall-clock limit of the carve's fit (the final fit runs its epoch count on the whole history)."""
    full_softmax_max_items: int = Field(20_000, gt=0)
    """Up to this many items the loss is a full softmax; above, the positive against sampled negatives."""
    negatives: int = Field(256, gt=0)
    """Shared uniform negatives per batch above ``full_softmax_max_items``."""
    threads: int = Field(1, ge=0)
    """torch threads for scoring (0: the machine's cores). 1 by default: the service scores in several
    workers at once, and on the shared 2-core machine under load a training step took 1.28 s on 2 threads
    and 0.21 s on 1 (2026-11-30, load 6)."""
    train_threads: int = Field(0, ge=0)
    """torch threads for training; 0: the faster of one thread and all the cores this process may use,
    timed on a few training steps before each fit (quiet 2-core machine: 0.62 s an epoch on 2 threads
    against 1.06 s on 1 on MovieLens; under load one thread wins, see ``threads``)."""

    @field_validator("heads")
    @classmethod
    def _heads(cls, v: int, info) -> int:  # type: ignore[no-untyped-def]
        dim = info.data.get("dim", 32)
        if dim % v:
            raise ValueError(f"heads must divide dim ({dim}), got {v}")
        return v


class CFConfig(_Section):
    model: Literal["als", "bpr"] = "als"
    factors: int = Field(32, gt=0)
    regularization: float = Field(5.0, ge=0)
    iterations: int = Field(15, gt=0)
    learning_rate: float = Field(0.01, gt=0)
    """BPR only."""
    alpha: float = Field(0.5, gt=0)
    """Confidence scale: ALS sees ``alpha * weight`` (``confidence: alpha``) or ``alpha * bm25(weight)``."""
    confidence: Literal["alpha", "bm25", "none"] = "alpha"
    """``alpha``: ``alpha * w``; ``bm25``: BM25 weighting of users' rows, then ``alpha``; ``none``: ``w``."""
    bm25_k1: float = Field(100.0, gt=0)
    bm25_b: float = Field(0.8, ge=0, le=1)
    half_life_days: float | None = Field(None, gt=0)
    """Time decay: an event ``d`` days older than the newest event weighs ``0.5 ** (d / half_life_days)``."""
    combine: Literal["sum", "max", "last"] = "sum"
    """How repeated events of one (user, item) pair combine: ``sum`` of weights, their ``max``, or the
    weight of the ``last`` (most recent) event."""
    value_transform: Literal["ignore", "linear", "log1p", "threshold"] = "ignore"
    """How an event's ``value`` (e.g. a rating) scales its weight, for the types in ``value_event_types``:
    ``ignore`` (x1), ``linear`` (x value), ``log1p`` (x log(1 + value)), ``threshold`` (x1 when
    ``value >= value_threshold``, else the event is dropped). Events without a value count x1."""
    value_threshold: float = 0.0
    value_event_types: tuple[str, ...] = ("rating",)
    seed: int = 0
    num_threads: int = Field(0, ge=0)
    """Threads for implicit (0 = all cores)."""
    component: Literal["als", "ease", "itemknn"] = "als"
    """The hybrid's CF score: ALS/BPR factors (``als``, the model in ``model``), EASE or item-kNN on the
    interaction matrix (a user scores ``history row @ B``). Chosen on validation when ``tuning.enabled``."""
    ease_lambda: float = Field(200.0, gt=0)
    """EASE's L2 penalty (absolute)."""
    knn_k: int = Field(200, gt=0)
    knn_shrink: float = Field(10.0, ge=0)
    sequence: bool = True
    """Fit the item-to-next-item transitions (:mod:`recsys.cf.sequence`); their weight in the CF score is
    chosen on validation (``hybrid.seq_weight``), so a log without useful order gets weight 0."""
    seq_window: int = Field(1, gt=0)
    seq_decay: float = Field(0.5, gt=0, le=1)
    seq_shrink: float = Field(5.0, ge=0)
    hybrid: HybridConfig = HybridConfig()
    tuning: TuningConfig = TuningConfig()
    sasrec: SasrecConfig = SasrecConfig()
