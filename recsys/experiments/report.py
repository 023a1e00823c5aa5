"""Experiment reports from the impression log and the attributed events.

An event is attributed to a served list through the ``request_id`` (and ``position``) it was posted with
(stored in the event's attributes). Per variant (A/B): served lists, clicks, CTR = share of lists with at
least one click, conversions (lists with an event of a conversion type) and revenue (the prices of the
converted items, where items have prices), with Wilson score intervals (scipy's ``binomtest``); with two
variants also a two-sided two-proportion z-test of the CTRs. For interleaving: per list, the variant
credited with more clicked positions wins; the share of wins with its Wilson interval and an exact
binomial test against one half (``scipy.stats.binomtest``; ties, no or equal clicks, left out); and the
test the report's p-value is: a one-sample t-test of the per-list credit differences (clicks credited to
the first variant minus the second, every list counted, zeros included; Chapelle et al. 2012), which in
the simulation decided as soon as or sooner than the binomial test (README, "Simulation").

A/B p-values take users as the unit (they are what is randomised): Welch's t-test of per-user CTRs. The
CTR intervals treat lists as independent (a user who requests many lists makes them optimistic); the
list-level z-test is reported beside it for comparison.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import Engine, func, select

from recsys.experiments.assign import INTERLEAVED, winner
from recsys.experiments.settings import ExperimentConfig
from recsys.experiments.statistics import binomial_p, one_sample_t_p, welch_p
from recsys.store.models import Event, Impression, ImpressionItem, Item

CONVERSION_TYPES = ("purchase",)
AB_TEST = "ctr"
"""The A/B test (:mod:`recsys.experiments.statistics`): Welch's t-test of per-user CTRs."""
INTERLEAVING_TEST = "credit_t"
"""The interleaving test (:mod:`recsys.experiments.statistics`): a t-test of the per-list credit differences,
chosen over the binomial test of wins in the simulation (README, "Simulation")."""


def wilson(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion (``(nan, nan)`` for ``n == 0``)."""
    if n == 0:
        return (math.nan, math.nan)
    from scipy.stats import binomtest

    ci = binomtest(successes, n).proportion_ci(confidence_level=confidence, method="wilson")
    return (float(ci.low), float(ci.high))


def two_proportion_p(x1: int, n1: int, x2: int, n2: int) -> float:
    """Two-sided p-value of the pooled two-proportion z-test (``nan`` without data or variance)."""
    if n1 == 0 or n2 == 0:
        return math.nan
    from scipy.stats import norm

    p = (x1 + x2) / (n1 + n2)
    se = math.sqrt(p * (1 - p) * (1 / n1 + 1 / n2))
    if se == 0:
        return 1.0
    return float(2 * norm.sf(abs(x1 / n1 - x2 / n2) / se))


@dataclass
class VariantStats:
    name: str
    lists: int = 0
    clicks: int = 0
    clicked_lists: int = 0
    conversions: int = 0
    revenue: float = 0.0
    ctr: float = math.nan
    ctr_ci: tuple[float, float] = (math.nan, math.nan)
    conversion_rate: float = math.nan
    conversion_ci: tuple[float, float] = (math.nan, math.nan)

    def finish(self, confidence: float) -> None:
        if self.lists:
            self.ctr = self.clicked_lists / self.lists
            self.conversion_rate = self.conversions / self.lists
        self.ctr_ci = wilson(self.clicked_lists, self.lists, confidence)
        self.conversion_ci = wilson(self.conversions, self.lists, confidence)


@dataclass
class InterleavingStats:
    teams: tuple[str, str]
    lists: int = 0
    wins: dict[str, int] = field(default_factory=dict)
    ties: int = 0
    share: float = math.nan
    """Wins of the first variant over the decided lists."""
    share_ci: tuple[float, float] = (math.nan, math.nan)
    p_value_wins: float = math.nan
    """Exact binomial test of the wins against one half (ties left out)."""
    credit_difference: float = math.nan
    """Mean over every interleaved list of the clicks credited to the first variant minus the second."""
    p_value: float = math.nan
    """One-sample t-test of the per-list credit differences (every list, ties and unclicked included)."""


@dataclass
class ExperimentReport:
    experiment: str
    mode: str
    variants: list[VariantStats]
    p_value: float = math.nan
    """A/B with two variants: Welch's t-test of their per-user CTRs (users are the randomised unit)."""
    p_value_lists: float = math.nan
    """The same comparison with lists as independent units (two-proportion z-test): anti-conservative
    when users see several lists."""
    interleaving: InterleavingStats | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ListOutcome:
    """One served list: its variant, positions' items and teams, and the attributed events."""

    request_id: str
    variant: str | None
    items: tuple[str, ...]
    teams: tuple[str | None, ...]
    clicked: tuple[str, ...]
    converted: tuple[str, ...]
    user: str | None = None


def read_outcomes(engine: Engine, experiment: str, conversion_types: Sequence[str] = CONVERSION_TYPES,
                  max_lists: int | None = None) -> tuple[list[ListOutcome], dict[str, float]]:
    """The experiment's lists with their attributed clicks and conversions, and the items' prices.

    Args:
        max_lists: read only the newest this many lists (``None``: all), which bounds the memory and time of
            a report that a request without a key can ask for (the playground's pages).
    """
    with engine.connect() as conn:
        q_heads = (select(Impression.request_id, Impression.variant, Impression.ts_ms, Impression.user_id)
                   .where(Impression.experiment == experiment))
        if max_lists is None:
            heads = conn.execute(q_heads.order_by(Impression.ts_ms, Impression.request_id)).all()
        else:
            newest = q_heads.order_by(Impression.ts_ms.desc(), Impression.request_id.desc()).limit(max_lists)
            heads = conn.execute(newest).all()[::-1]
        if not heads:
            return [], {}
        since_ms = min(h.ts_ms for h in heads)
        since = since_ms // 1000 - 1
        rids = {h.request_id for h in heads}
        pos: dict[str, list[tuple[int, str, str | None]]] = defaultdict(list)
        q = (select(ImpressionItem.request_id, ImpressionItem.position, ImpressionItem.item_id, ImpressionItem.team)
             .join(Impression, Impression.request_id == ImpressionItem.request_id)
             .where(Impression.experiment == experiment, Impression.ts_ms >= since_ms))
        for r in conn.execute(q):
            if r.request_id in rids:
                pos[r.request_id].append((r.position, r.item_id, r.team))
        evq = (select(Event.attributes, Event.event_type, Item.external_id, Item.price)
               .join(Item, Item.id == Event.item_id)
               .where(Event.ts >= since, Event.attributes.is_not(None)))
        clicks: dict[str, list[str]] = defaultdict(list)
        convs: dict[str, list[str]] = defaultdict(list)
        prices: dict[str, float] = {}
        for attrs, etype, item, price in conn.execute(evq):
            rid = attrs.get("request_id") if isinstance(attrs, dict) else None
            if rid not in rids:
                continue
            (convs if etype in conversion_types else clicks)[rid].append(item)
            if price is not None:
                prices[item] = float(price)
    out = []
    for h in heads:
        rows = sorted(pos.get(h.request_id, []))
        out.append(ListOutcome(h.request_id, h.variant, tuple(r[1] for r in rows), tuple(r[2] for r in rows),
                               tuple(clicks.get(h.request_id, ())), tuple(convs.get(h.request_id, ())), h.user_id))
    return out, prices


def summarise(experiment: ExperimentConfig, outcomes: Iterable[ListOutcome], prices: dict[str, float] | None = None,
              confidence: float = 0.95) -> ExperimentReport:
    """The report of an experiment from its list outcomes (pure: the simulation calls it directly)."""
    prices = prices or {}
    names = [v.name for v in experiment.variants]
    stats = {n: VariantStats(n) for n in names}
    inter = InterleavingStats((names[0], names[-1]), wins={n: 0 for n in names}) if experiment.mode == "interleave" else None
    diffs: list[int] = []
    for o in outcomes:
        if inter is not None and o.variant == INTERLEAVED:
            team_of = {it: t for it, t in zip(o.items, o.teams)}
            credited = [team_of[i] for i in dict.fromkeys(o.clicked) if team_of.get(i) is not None]
            for n in names:  # per variant: the lists where the items it placed were clicked
                mine = [i for i in dict.fromkeys(o.clicked) if team_of.get(i) == n]
                stats[n].lists += 1
                stats[n].clicks += len(mine)
                stats[n].clicked_lists += bool(mine)
            inter.lists += 1
            diffs.append(sum(t == inter.teams[0] for t in credited) - sum(t == inter.teams[1] for t in credited))
            w = winner(credited, inter.teams)  # type: ignore[arg-type]
            if w is None:
                inter.ties += 1
            else:
                inter.wins[w] += 1
            continue
        s = stats.get(o.variant or "")
        if s is None:
            continue
        s.lists += 1
        s.clicks += len(o.clicked)
        s.clicked_lists += bool(o.clicked)
        s.conversions += bool(o.converted)
        s.revenue += sum(prices.get(i, 0.0) for i in o.converted)
    for s in stats.values():
        s.finish(confidence)
    report = ExperimentReport(experiment.name, experiment.mode, list(stats.values()), interleaving=inter)
    if inter is not None:
        a = inter.wins[inter.teams[0]]
        decided = a + inter.wins[inter.teams[1]]
        inter.share = a / decided if decided else math.nan
        inter.share_ci = wilson(a, decided, confidence)
        inter.p_value_wins = binomial_p(a, decided)
        d = np.asarray(diffs, dtype=float)
        inter.credit_difference = float(d.mean()) if len(d) else math.nan
        inter.p_value = one_sample_t_p(float(d.sum()), float((d * d).sum()), len(d))
    elif len(names) == 2:
        s1, s2 = stats[names[0]], stats[names[1]]
        report.p_value_lists = two_proportion_p(s1.clicked_lists, s1.lists, s2.clicked_lists, s2.lists)
        report.p_value = user_level_p(outcomes, names[0], names[1])
    return report


def user_level_p(outcomes: Iterable[ListOutcome], a: str, b: str) -> float:
    """Welch's t-test of per-user CTRs (share of each user's lists clicked) between variants ``a`` and ``b``;
    a list without a user counts as a user of its own."""
    per: dict[str, dict[str, list[int]]] = {a: defaultdict(lambda: [0, 0]), b: defaultdict(lambda: [0, 0])}
    for o in outcomes:
        if o.variant in per:
            cell = per[o.variant][o.user if o.user is not None else f"list:{o.request_id}"]
            cell[0] += bool(o.clicked)
            cell[1] += 1
    return welch_p([c / n for c, n in per[a].values()], [c / n for c, n in per[b].values()])


def count_lists(engine: Engine, experiment: str) -> int:
    """How many lists the impression log holds for the experiment."""
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(Impression)
                                .where(Impression.experiment == experiment)).scalar_one())


def experiment_report(engine: Engine, experiment: ExperimentConfig, confidence: float = 0.95,
                      conversion_types: Sequence[str] = CONVERSION_TYPES, max_lists: int | None = None
                      ) -> ExperimentReport:
    """The report over the experiment's lists (the newest ``max_lists`` of them when given)."""
    outcomes, prices = read_outcomes(engine, experiment.name, conversion_types, max_lists)
    return summarise(experiment, outcomes, prices, confidence)


def _ci(ci: tuple[float, float]) -> str:
    return "-" if math.isnan(ci[0]) else f"[{ci[0]:.4f}, {ci[1]:.4f}]"


def format_report(report: ExperimentReport) -> str:
    """A markdown table (and the test's line)."""
    lines = [f"experiment {report.experiment} ({report.mode})", "",
             "| variant | lists | clicks | CTR (lists clicked) | 95% CI | conversions | conv. rate | 95% CI | revenue |",
             "|---|---|---|---|---|---|---|---|---|"]
    for s in report.variants:
        ctr = "-" if math.isnan(s.ctr) else f"{s.ctr:.4f}"
        conv = "-" if math.isnan(s.conversion_rate) else f"{s.conversion_rate:.4f}"
        lines.append(f"| {s.name} | {s.lists} | {s.clicks} | {ctr} | {_ci(s.ctr_ci)} | {s.conversions} | {conv} | "
                     f"{_ci(s.conversion_ci)} | {s.revenue:.2f} |")
    if report.interleaving is not None:
        it = report.interleaving
        a, b = it.teams
        share = "-" if math.isnan(it.share) else f"{it.share:.4f}"
        lines += ["", f"interleaved lists: {it.lists}; wins {a}: {it.wins[a]}, {b}: {it.wins[b]}, ties: {it.ties}; "
                      f"share of wins of {a}: {share} {_ci(it.share_ci)}; binomial test p = {it.p_value_wins:.3g}",
                  f"clicks credited to {a} minus {b}, mean per list: {it.credit_difference:.4f}; "
                  f"t-test of the per-list differences p = {it.p_value:.3g}"]
    elif not math.isnan(report.p_value):
        lines += ["", f"Welch t-test of per-user CTRs: p = {report.p_value:.3g} (lists as independent units, "
                      f"two-proportion z-test: p = {report.p_value_lists:.3g})"]
    return "\n".join(lines)


def plot_report(report: ExperimentReport, path: str) -> None:
    """A PNG: CTR per variant with its interval (and the interleaving share of wins)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 2 if report.interleaving is not None else 1
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 3.5), squeeze=False)
    ax = axes[0][0]
    names = [s.name for s in report.variants]
    ctr = [0.0 if math.isnan(s.ctr) else s.ctr for s in report.variants]
    err = [[max(c - (s.ctr_ci[0] if not math.isnan(s.ctr_ci[0]) else c), 0) for c, s in zip(ctr, report.variants)],
           [max((s.ctr_ci[1] if not math.isnan(s.ctr_ci[1]) else c) - c, 0) for c, s in zip(ctr, report.variants)]]
    ax.bar(names, ctr, yerr=err, capsize=6, color="#4c72b0")
    ax.set_ylabel("CTR (share of lists clicked)")
    ax.set_title(f"{report.experiment}: CTR, 95% Wilson CI")
    if report.interleaving is not None:
        it = report.interleaving
        ax2 = axes[0][1]
        share = 0.5 if math.isnan(it.share) else it.share
        lo, hi = (share, share) if math.isnan(it.share_ci[0]) else it.share_ci
        ax2.bar([f"{it.teams[0]} wins"], [share], yerr=[[share - lo], [hi - share]], capsize=6, color="#55a868")
        ax2.axhline(0.5, color="grey", linestyle="--")
        ax2.set_ylim(0, 1)
        ax2.set_title(f"interleaving: p = {it.p_value:.2g}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
