"""Presenting evaluation reports: a text table, JSON, and a PNG bar chart (matplotlib, optional)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from recsys.evaluation.runner import EvalReport

__all__ = ["format_table", "reports_json", "write_plot"]


def format_table(report: EvalReport) -> str:
    """A fixed-width table: one row per model with NDCG, recall, coverage and seconds."""
    k = report.k
    head = ["model", f"NDCG@{k}", f"Recall@{k}", f"Coverage@{k}", "time (s)"]
    body = [
        [r.model, f"{r.ndcg:.4f}", f"{r.recall:.4f}", f"{r.coverage:.3f}", f"{r.seconds:.1f}"] for r in report.rows
    ]
    widths = [max(len(str(row[i])) for row in [head, *body]) for i in range(len(head))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    title = (
        f"{report.dataset} / {report.protocol}: {report.n_test_users} test users, "
        f"{report.n_candidates} rankable items"
    )
    rule = "-" * len(line(head))
    return "\n".join([title, line(head), rule, *(line(b) for b in body), *_ratio_line(report)])


def _ratio_line(report: EvalReport) -> list[str]:
    """``hybrid / best yardstick`` when the report has both (see :mod:`recsys.evaluation.yardsticks`)."""
    from recsys.evaluation.yardsticks import ALS_TEST_NAME, EASE_NAME

    hybrid = [r for r in report.rows if r.model == "hybrid"]
    sticks = [r for r in report.rows if r.model in (ALS_TEST_NAME, EASE_NAME)]
    if not hybrid or not sticks:
        return []
    best = max(sticks, key=lambda r: r.ndcg)
    ratio = hybrid[0].ndcg / best.ndcg if best.ndcg > 0 else float("inf")
    return [f"hybrid / best yardstick ({best.model}): {ratio:.3f} x NDCG@{report.k}"]


def reports_json(reports: Sequence[EvalReport]) -> str:
    """The reports as a JSON list (one object per protocol)."""
    return json.dumps([r.as_dict() for r in reports], indent=2)


def write_plot(reports: Sequence[EvalReport], path: str | Path) -> Path:
    """A grouped bar chart of NDCG@k and Recall@k per model, one panel per report.

    Raises:
        ImportError: matplotlib is not installed (``pip install recsys[plot]``).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("--plot needs matplotlib (pip install 'recsys[plot]')") from exc
    import numpy as np

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, len(reports), figsize=(5.5 * len(reports), 4), squeeze=False)
    for ax, rep in zip(axes[0], reports):
        names = [r.model for r in rep.rows]
        x = np.arange(len(names))
        ax.bar(x - 0.2, [r.ndcg for r in rep.rows], width=0.4, label=f"NDCG@{rep.k}")
        ax.bar(x + 0.2, [r.recall for r in rep.rows], width=0.4, label=f"Recall@{rep.k}")
        for xi, r in zip(x, rep.rows):
            ax.text(xi - 0.2, r.ndcg, f"{r.ndcg:.3f}", ha="center", va="bottom", fontsize=7)
        ax.set_xticks(x, names, rotation=15)
        ax.set_title(f"{rep.dataset}\n{rep.protocol} ({rep.n_test_users} users)", fontsize=9)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
