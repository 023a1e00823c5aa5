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
    rounds: int = Field(2, gt=0)
    """Rounds of the coordinate ascent over the grids."""

    @field_validator("recency_tau", "profile_tau", "recency_beta", "profile_gamma", "content_mix", "weight_grid",
                     "cf_shrink", "cold_offset", "cold_scale")
    @classmethod
    def _grid(cls, values: tuple[float, ...], info) -> tuple[float, ...]:  # type: ignore[no-untyped-def]
        bounds = {
            "recency_tau": (1e-9, None), "profile_tau": (1e-9, None), "recency_beta": (0.0, None),
            "profile_gamma": (0.0, 40.0), "content_mix": (0.0, 1.0), "weight_grid": (0.0, None),
            "cf_shrink": (0.0, None), "cold_offset": (None, None), "cold_scale": (1e-9, None),
        }
        lo, hi = bounds[info.field_name]
        if not values:
            raise ValueError("give at least one value")
        for v in values:
            if (lo is not None and v < lo) or (hi is not None and v > hi):
                raise ValueError(f"values must be in [{lo if lo is not None else '-inf'}, "
                                 f"{hi if hi is not None else 'inf'}], got {v}")
        return values
    mapping_l2: float = Field(10.0, gt=0)
    """Ridge penalty of the content -> CF item-factor mapping used for items without events."""
    validation_fraction: float = Field(0.2, gt=0, lt=1)
    """Share of each user's latest training events (and of the warm items) held out to choose weights."""
    max_validation_users: int = Field(2000, gt=0)
    """At most this many validation users are scored per candidate setting (a seeded sample)."""


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
    hybrid: HybridConfig = HybridConfig()
