"""Configuration section ``cf`` (see :mod:`recsys.config`). Pure pydantic, no heavy imports."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from recsys.settings_base import Section as _Section


class CFConfig(_Section):
    model: Literal["als", "bpr"] = "als"
    factors: int = Field(64, gt=0)
    regularization: float = Field(0.05, ge=0)
    iterations: int = Field(15, gt=0)
    learning_rate: float = Field(0.01, gt=0)
    alpha: float = Field(10.0, gt=0)
    confidence: Literal["alpha", "bm25", "none"] = "alpha"
    half_life_days: float | None = Field(None, gt=0)
    seed: int = 0
