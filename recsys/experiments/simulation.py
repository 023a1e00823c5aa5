"""Simulated users with real preferences: the pieces ``benchmarks/simulate.py`` drives.

A data set is split in time per user (the ``temporal-20`` rule of EVALUATION.md: each user's last 20% of
distinct items are their *future*). The service is trained on the past; a simulated user who is shown a
list clicks position ``p`` with probability ``bias(p) * (p_future if the item is among their real future
interactions else p_other)``, ``bias(p) = (p + 1) ** -eta`` (a position-bias curve). Everything is seeded.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from recsys.experiments.report import ListOutcome, summarise
from recsys.experiments.settings import ExperimentConfig


def temporal_split(events: pd.DataFrame, test_share: float = 0.2, numeric_items: bool = True
                   ) -> tuple[pd.DataFrame, dict[str, set[str]]]:
    """``(past events, user -> future item ids)``.

    ``events``: columns ``user_id, item_id, timestamp`` (others kept). Per user, distinct items ordered by
    their first time (ties by item id); the last ``round(test_share * n)`` (at least 1, users with 2+
    items) are the future and their events are removed from the past.
    """
    ev = events.copy()
    ev["_tie"] = pd.to_numeric(ev["item_id"], errors="coerce") if numeric_items else ev["item_id"].astype(str)
    ev = ev.sort_values(["user_id", "timestamp", "_tie"], kind="stable")
    first = ev.drop_duplicates(["user_id", "item_id"], keep="first")
    future: dict[str, set[str]] = {}
    drop: list[tuple[str, str]] = []
    for user, grp in first.groupby("user_id", sort=False):
        n = len(grp)
        if n < 2:
            continue
        m = max(1, int(round(test_share * n)))
        items = [str(i) for i in grp["item_id"].tolist()[-m:]]
        future[str(user)] = set(items)
        drop.extend((str(user), i) for i in items)
    key = ev["user_id"].astype(str) + "\x1f" + ev["item_id"].astype(str)
    gone = {f"{u}\x1f{i}" for u, i in drop}
    past = ev.loc[~key.isin(gone)].drop(columns="_tie")
    return past, future


@dataclass(frozen=True)
class ClickModel:
    """Position-biased clicks on real preferences."""

    eta: float = 1.0
    p_future: float = 0.5
    p_other: float = 0.02

    def clicks(self, items: Sequence[str], future: set[str], rng: random.Random) -> list[int]:
        """Positions clicked in a shown list (0-based)."""
        out = []
        for p, item in enumerate(items):
            prob = (p + 1) ** -self.eta * (self.p_future if item in future else self.p_other)
            if rng.random() < prob:
                out.append(p)
        return out


def request_seed(seed: int, index: int) -> int:
    """The click coin of request ``index`` in a run seeded ``seed`` (the same across rounds)."""
    return (seed * 1_000_003 + index) & 0xFFFFFFFF


def p_value(experiment: ExperimentConfig, outcomes: Sequence[ListOutcome]) -> float:
    """The report's test: z-test of two A/B variants' CTRs, or the binomial test of interleaving wins."""
    rep = summarise(experiment, outcomes)
    return rep.interleaving.p_value if rep.interleaving is not None else rep.p_value


def sequential_p(experiment: ExperimentConfig, outcomes: Sequence[ListOutcome], step: int) -> list[tuple[int, float]]:
    """``(lists, p)`` at every ``step`` lists (outcomes in serving order), and at the end."""
    marks = list(range(step, len(outcomes) + 1, step))
    if not marks or marks[-1] != len(outcomes):
        marks.append(len(outcomes))
    return [(n, p_value(experiment, outcomes[:n])) for n in marks]


def lists_needed(curve: Sequence[tuple[int, float]], alpha: float) -> int | None:
    """The first checkpoint from which ``p < alpha`` holds at every later checkpoint (``None``: never)."""
    needed = None
    for n, p in curve:
        if not math.isnan(p) and p < alpha:
            needed = n if needed is None else needed
        else:
            needed = None
    return needed


def aa_repeats(lists: Sequence[tuple[str, tuple[str, ...]]], future: dict[str, set[str]], model: ClickModel,
               repeats: int, alpha: float, seed: int = 0) -> dict[str, float]:
    """A/A by repeated draws: the same served lists (``(user, items)``, one ranker), users split by a new
    salt and clicks drawn anew per repeat, through :func:`recsys.experiments.assign.assign` and the report.

    Returns the share of repeats with ``p < alpha`` and the p-values' summary."""
    from recsys.experiments.assign import assign

    ps = []
    for r in range(repeats):
        exp = ExperimentConfig.model_validate({"name": f"aa-{seed}-{r}", "mode": "ab", "variants": [
            {"name": "A", "ranker": "hybrid"}, {"name": "B", "ranker": "hybrid"}]})
        rng = random.Random(request_seed(seed + 7919 * (r + 1), 0))
        outcomes = []
        for i, (user, items) in enumerate(lists):
            clicked = model.clicks(items, future.get(user, set()), rng)
            outcomes.append(ListOutcome(f"{r}-{i}", assign(exp, user).name, items, (None,) * len(items),
                                        tuple(items[p] for p in clicked), (), user))
        ps.append(p_value(exp, outcomes))
    arr = np.asarray(ps)
    return {"repeats": repeats, "alpha": alpha, "significant_share": float(np.mean(arr < alpha)),
            "not_significant_share": float(np.mean(arr >= alpha)), "median_p": float(np.median(arr))}


def ab_lists_estimate(p1: float, p2: float, alpha: float, power: float = 0.8) -> float:
    """Lists (both arms together, equal split) a two-proportion z-test needs to detect ``p1`` vs ``p2``."""
    from scipy.stats import norm

    if p1 == p2:
        return math.inf
    za, zb = norm.isf(alpha / 2), norm.isf(1 - power)
    pbar = (p1 + p2) / 2
    n = (za * math.sqrt(2 * pbar * (1 - pbar)) + zb * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))) ** 2 / (p1 - p2) ** 2
    return 2 * n


def interleaving_lists_estimate(share: float, decided_rate: float, alpha: float, power: float = 0.8) -> float:
    """Interleaved lists a binomial test of the win share needs (normal approximation), given the share of
    decided (non-tied) lists."""
    from scipy.stats import norm

    if share == 0.5 or decided_rate <= 0:
        return math.inf
    za, zb = norm.isf(alpha / 2), norm.isf(1 - power)
    n = ((za * 0.5 + zb * math.sqrt(share * (1 - share))) / (share - 0.5)) ** 2
    return n / decided_rate


def paired_difference(a: Sequence[bool], b: Sequence[bool], repeats: int = 2000, seed: int = 0
                      ) -> tuple[float, tuple[float, float]]:
    """``mean(b) - mean(a)`` over paired lists (same user, same click coin) and its 95% bootstrap interval."""
    x = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
    rng = np.random.default_rng(seed)
    boots = x[rng.integers(0, len(x), size=(repeats, len(x)))].mean(axis=1)
    return float(x.mean()), (float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975)))


def fast_sequential_p(experiment: ExperimentConfig, outcomes: Sequence[ListOutcome], step: int
                      ) -> list[tuple[int, float]]:
    """:func:`sequential_p` computed incrementally (the same tests: the interleaving binomial test of wins,
    the A/B Welch test of per-user CTRs), for the many redraws; ``tests/test_experiments.py`` checks it
    against :func:`sequential_p`."""
    from recsys.experiments.assign import winner
    from recsys.experiments.report import binomial_p, welch_p

    n = len(outcomes)
    marks = list(range(step, n + 1, step))
    if not marks or marks[-1] != n:
        marks.append(n)
    names = [v.name for v in experiment.variants]
    if experiment.mode == "interleave":
        teams = (names[0], names[-1])
        wa, wb = np.zeros(n, np.int64), np.zeros(n, np.int64)
        for j, o in enumerate(outcomes):
            team_of = dict(zip(o.items, o.teams))
            w = winner([team_of[i] for i in dict.fromkeys(o.clicked) if team_of.get(i) is not None], teams)
            wa[j], wb[j] = w == teams[0], w == teams[1]
        ca, cb = np.cumsum(wa), np.cumsum(wb)
        return [(m, binomial_p(int(ca[m - 1]), int(ca[m - 1] + cb[m - 1]))) for m in marks]
    if len(names) != 2:
        return [(m, math.nan) for m in marks]
    codes: dict[str, int] = {}
    user = np.array([codes.setdefault(o.user if o.user is not None else f"list:{o.request_id}", len(codes))
                     for o in outcomes], dtype=np.int64)
    side = np.array([0 if o.variant == names[0] else 1 if o.variant == names[1] else -1 for o in outcomes])
    hit = np.array([bool(o.clicked) for o in outcomes], dtype=float)
    out = []
    for m in marks:
        xs = []
        for v in (0, 1):
            sel = side[:m] == v
            lists = np.bincount(user[:m][sel], minlength=len(codes))
            clicks = np.bincount(user[:m][sel], weights=hit[:m][sel], minlength=len(codes))
            xs.append(clicks[lists > 0] / lists[lists > 0])
        out.append((m, welch_p(xs[0], xs[1])))
    return out


def _curve_lists_needed(exp: ExperimentConfig, outcomes: Sequence[ListOutcome], step: int, alpha: float
                        ) -> tuple[int | None, float]:
    curve = fast_sequential_p(exp, outcomes, step)
    return lists_needed(curve, alpha), curve[-1][1]


def redraw_lists_needed(experiment: ExperimentConfig, sources: dict[str, dict[str, Sequence[str]]],
                        users: Sequence[str], future: dict[str, set[str]], model: ClickModel, repeats: int,
                        alpha: float, step: int, k: int = 10, credit: str = "team", seed: int = 0
                        ) -> dict[str, object]:
    """"Lists needed" as a distribution: ``repeats`` seeded redraws of the assignment (A/B: a new salt per
    repeat; interleaving: new team-draft coins) and of the clicks, over the lists each variant serves.

    ``sources``: variant name -> user -> that variant's list for the user (as served live); ``users``: the
    user of each request, in serving order. ``credit`` (interleaving): ``"team"`` (plain team draft, the service's
    rule: every click to the team that placed the item) or ``"exclusive"`` (clicks on items both lists
    hold are credited to nobody). Each repeat goes through the report's tests (:func:`fast_sequential_p`).

    Returns the median (and quartiles) of lists needed, never reached counting as infinite, the share of
    repeats that never reached ``p < alpha`` and the share significant at the end (``p < alpha``).
    """
    from recsys.experiments.assign import INTERLEAVED, assign, exclusive_credit, team_draft

    if credit not in ("exclusive", "team"):
        raise ValueError(f"credit must be one of ['exclusive', 'team'], got {credit!r}")
    names = [v.name for v in experiment.variants]
    missing = [(n, u) for n in names for u in set(users) if u not in sources.get(n, {})]
    if missing:
        raise ValueError(f"{len(missing)} (variant, user) lists missing from sources, e.g. {missing[0]}")
    needed, final = [], []
    for r in range(repeats):
        exp = experiment.model_copy(update={"salt": f"redraw-{seed}-{r}"})
        rng = random.Random(request_seed(seed + 104_729 * (r + 1), 0))
        outcomes = []
        for i, user in enumerate(users):
            if exp.mode == "ab":
                variant = assign(exp, user).name
                items = tuple(sources[variant][user])
                teams: tuple[str | None, ...] = (None,) * len(items)
            else:
                a, b = sources[names[0]][user], sources[names[1]][user]
                merged, drafted = team_draft(a, b, k, rng, teams=(names[0], names[1]))
                credited = exclusive_credit(merged, drafted, a, b, k) if credit == "exclusive" else drafted
                variant, items, teams = INTERLEAVED, tuple(merged), tuple(credited)
            clicked = model.clicks(items, future.get(user, set()), rng)
            outcomes.append(ListOutcome(f"{r}-{i}", variant, items, teams, tuple(items[p] for p in clicked), (), user))
        n, p = _curve_lists_needed(exp, outcomes, step, alpha)
        needed.append(math.inf if n is None else n)
        final.append(p)
    arr, fin = np.asarray(needed, dtype=float), np.asarray(final, dtype=float)
    q1, med, q3 = (float(x) for x in np.quantile(arr, [0.25, 0.5, 0.75], method="inverted_cdf"))
    return {"repeats": repeats, "alpha": alpha, "lists": len(users), "credit": credit if exp.mode != "ab" else None,
            "median_lists_needed": med, "quartiles": (q1, q3), "never_share": float(np.mean(np.isinf(arr))),
            "significant_at_end_share": float(np.mean(np.nan_to_num(fin, nan=1.0) < alpha)),
            "median_final_p": float(np.nanmedian(fin)) if np.isfinite(fin).any() else math.nan}
