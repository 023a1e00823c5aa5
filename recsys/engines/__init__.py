"""Execution engines for the batch jobs.

``local`` (the default) runs a job in this process and needs nothing beyond the package.
``ray`` (:mod:`recsys.engines.ray_engine`) runs the same per-batch functions as a Ray Data job on a
local Ray instance or a Ray cluster; it needs the optional extra ``pip install 'recsys[ray]'``.

Importing this package imports neither Ray nor torch.
"""

from __future__ import annotations

from recsys.engines.settings import ENGINES, LOCAL, RAY, RayConfig

__all__ = ["ENGINES", "LOCAL", "RAY", "RayConfig"]
