"""Experiments from the config and from SQL (``recsys experiments create``), looked up per request."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

from sqlalchemy import Engine, select

from recsys.errors import ConfigError
from recsys.experiments.settings import ExperimentConfig
from recsys.store.models import Experiment

log = logging.getLogger(__name__)


def stored_experiments(engine: Engine) -> list[ExperimentConfig]:
    """Experiments created from the CLI, oldest first."""
    with engine.connect() as conn:
        rows = conn.execute(select(Experiment.definition).order_by(Experiment.created_at, Experiment.name)).scalars()
        return [ExperimentConfig.model_validate(d) for d in rows]


def all_experiments(engine: Engine, configured: Sequence[ExperimentConfig]) -> list[ExperimentConfig]:
    """The config's experiments, then the stored ones (a stored one may not reuse a configured name)."""
    names = {e.name for e in configured}
    return [*configured, *(e for e in stored_experiments(engine) if e.name not in names)]


def find_experiment(engine: Engine, configured: Sequence[ExperimentConfig], name: str) -> ExperimentConfig:
    for e in all_experiments(engine, configured):
        if e.name == name:
            return e
    known = [e.name for e in all_experiments(engine, configured)]
    raise ConfigError(f"unknown experiment {name!r}; known: {', '.join(known) or 'none'}")


def check_model_versions(engine: Engine, experiment: ExperimentConfig) -> None:
    """Every variant's ``model_version`` is a registered feed model whose folder exists.

    Raises:
        ConfigError: naming the variant, the version and the registered versions.
    """
    from pathlib import Path

    from recsys.store.artifacts import list_artifacts

    wanted = [v for v in experiment.variants if v.model_version is not None]
    if not wanted:
        return
    feeds = {a.version: a for a in list_artifacts(engine, "feed")}
    for v in wanted:
        art = feeds.get(v.model_version or "")
        if art is None:
            known = ", ".join(sorted(feeds)) or "none (run `recsys train`)"
            raise ConfigError(f"experiment {experiment.name!r}, variant {v.name!r}: model_version "
                              f"{v.model_version!r} is not a registered feed model; registered: {known}")
        if not art.path or not Path(art.path).is_dir():
            raise ConfigError(f"experiment {experiment.name!r}, variant {v.name!r}: feed model "
                              f"{v.model_version!r} points to a missing folder {art.path!r}")


def save_experiment(engine: Engine, experiment: ExperimentConfig, configured: Sequence[ExperimentConfig],
                    *, replace: bool = False) -> None:
    """Store an experiment (``replace``: overwrite one of the same name). Config names are refused, and so
    are model versions that are not registered (:func:`check_model_versions`)."""
    if any(e.name == experiment.name for e in configured):
        raise ConfigError(f"experiment {experiment.name!r} is defined in the config; edit it there")
    check_model_versions(engine, experiment)
    with engine.begin() as conn:
        row = conn.execute(select(Experiment.name).where(Experiment.name == experiment.name)).scalar_one_or_none()
        if row is not None and not replace:
            raise ConfigError(f"experiment {experiment.name!r} exists; pass --replace to overwrite it")
        table = Experiment.__table__
        if row is not None:
            conn.execute(table.update().where(table.c.name == experiment.name),
                         {"definition": experiment.model_dump(mode="json")})
        else:
            conn.execute(table.insert(), {"name": experiment.name, "definition": experiment.model_dump(mode="json")})


class ExperimentBook:
    """The experiments a serving process applies: re-read from SQL at most every ``refresh_s``."""

    def __init__(self, engine: Engine, configured: Sequence[ExperimentConfig], refresh_s: float = 2.0) -> None:
        self.engine = engine
        self.configured = tuple(configured)
        self.refresh_s = refresh_s
        self._lock = threading.Lock()
        self._all: list[ExperimentConfig] = list(self.configured)
        self._read = 0.0

    def active(self, surface: str) -> ExperimentConfig | None:
        """The first active experiment on ``surface`` (config order, then creation order)."""
        now = time.monotonic()
        if now - self._read >= self.refresh_s:
            with self._lock:
                if now - self._read >= self.refresh_s:
                    try:
                        self._all = all_experiments(self.engine, self.configured)
                    except Exception as exc:  # noqa: BLE001 - a database hiccup keeps the last known experiments
                        log.warning("experiments: cannot re-read stored experiments: %s", exc)
                    self._read = now
        for e in self._all:
            if e.active and e.surface == surface:
                return e
        return None
