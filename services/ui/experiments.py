"""The playground's experiment pages: every experiment, and one experiment's report.

The report is what ``recsys experiments report NAME`` prints (:func:`recsys.experiments.report.experiment_report`):
per variant lists, clicks, CTR and conversions with their intervals, the A/B p-values, and for
interleaving the wins per variant with the binomial test and the t-test of per-list credit differences;
the PNG is ``--plot``'s. These pages need no key, so a report reads at most the newest
``impressions.page_max_lists`` lists of the experiment (the page says when there are more) and is computed at
most once per ``AGGREGATE_TTL_S`` per process.
"""

from __future__ import annotations

import math
import tempfile
import threading
from pathlib import Path
from typing import Any

from flask import Response, abort, current_app

from recsys.errors import ConfigError
from services.api.common import config
from services.ui.views import AGGREGATE_TTL_S, _aggregate, _engine, _render, bp


def _experiments() -> list[Any]:
    from recsys.experiments.store import all_experiments

    return _aggregate("experiments", lambda: all_experiments(_engine(), config().experiments))


def _report(name: str) -> tuple[Any, Any, int]:
    """``(experiment, report, lists in the log)``; a 404 for an unknown name. The report covers the newest
    ``impressions.page_max_lists`` lists (these pages need no key, so what one request reads is bounded)."""
    from recsys.experiments.report import count_lists, experiment_report
    from recsys.experiments.store import find_experiment

    try:
        exp = find_experiment(_engine(), config().experiments, name)
    except ConfigError as exc:
        abort(404, str(exc))
    cap = config().impressions.page_max_lists
    rep, total = _aggregate(f"experiment-report:{name}", lambda: (
        experiment_report(_engine(), exp, max_lists=cap), count_lists(_engine(), exp.name)))
    return exp, rep, total


def number(value: float, digits: int = 3) -> str:
    """A statistic as text (``-`` where it is undefined, e.g. a CTR of no lists)."""
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}g}"


def interval(ci: tuple[float, float]) -> str:
    return "-" if any(math.isnan(x) for x in ci) else f"{ci[0]:.3f} – {ci[1]:.3f}"


@bp.get("/experiments")
def experiments() -> tuple[str, int]:
    return _render("experiments.html", experiments=_experiments(), ttl=AGGREGATE_TTL_S)


@bp.get("/experiments/<name>")
def experiment(name: str) -> tuple[str, int]:
    exp, rep, total = _report(name)
    return _render("experiment.html", exp=exp, rep=rep, number=number, interval=interval, ttl=AGGREGATE_TTL_S,
                   total=total, cap=config().impressions.page_max_lists)


@bp.get("/experiments/<name>/report.png")
def experiment_plot(name: str) -> Response:
    from recsys.experiments.report import plot_report

    _exp, rep, _total = _report(name)

    def draw() -> bytes:  # pyplot's state is per process: one figure at a time
        lock = current_app.extensions.setdefault("recsys.ui.plot_lock", threading.Lock())
        with lock, tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "report.png"
            plot_report(rep, str(path))
            return path.read_bytes()

    png = _aggregate(f"experiment-plot:{name}", draw)
    return Response(png, mimetype="image/png", headers={"Cache-Control": f"max-age={int(AGGREGATE_TTL_S)}"})
