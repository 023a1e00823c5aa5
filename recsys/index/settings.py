"""Configuration section ``index`` (see :mod:`recsys.config`). Pure pydantic, no heavy imports."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from recsys.settings_base import Section as _Section


class IndexConfig(_Section):
    backend: Literal["auto", "scann", "exact"] = "auto"
    recall_sample: int = Field(200, gt=0)
