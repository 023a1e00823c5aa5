"""Configuration section ``ray`` (see :mod:`recsys.config`). Pure pydantic, no heavy imports."""

from __future__ import annotations

from pydantic import Field

from recsys.settings_base import Section as _Section

LOCAL = "local"
RAY = "ray"
ENGINES = (LOCAL, RAY)
"""Engine names the batch commands accept with ``--engine``; ``local`` is the default."""


class RayConfig(_Section):
    """How ``--engine ray`` reaches Ray and how many model actors it starts."""

    address: str | None = None
    """``None``: start a local Ray instance for the run (stopped afterwards). ``auto``: join the Ray
    cluster this machine is a node of; ``HOST:6379``: the cluster whose head is there. Ray Client
    (``ray://``) cannot drive Ray Data jobs. Overridden by ``--ray-address``."""
    num_cpus: int | None = Field(None, gt=0)
    """CPUs of the local instance (``None``: all of this machine's). Not used with an ``address``."""
    actors: int = Field(2, gt=0)
    """Model actors of a job; each builds its model once and encodes batch after batch."""
    cpus_per_actor: float = Field(1.0, gt=0)
    """CPUs Ray reserves for each actor (also its torch thread count)."""
    gpus_per_actor: float = Field(0.0, ge=0)
    """GPUs Ray reserves for each actor; set ``encoders.device: cuda`` with it."""
    page_size: int = Field(65_536, gt=0)
    """Pending items the driver reads from the database and hands to Ray as one Ray Data job (the
    actors start once per page)."""
