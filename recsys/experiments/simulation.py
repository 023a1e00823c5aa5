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


CLICK_MODELS = ("position", "cascade")


@dataclass(frozen=True)
class ClickModel:
    """Clicks on real preferences: an item's attractiveness is ``p_future`` if it is among the user's future
    items, else ``p_other``.

    ``kind="position"`` (the simulation's model): position ``p`` is clicked with probability
    ``(p + 1) ** -eta`` times the attractiveness, independently. ``kind="cascade"`` (the cascade model of
    Craswell, Zoeter, Taylor and Ramsey, 2008): the user reads from the top, clicks an item with probability
    its attractiveness and stops at the first click (``eta`` unused)."""

    eta: float = 1.0
    p_future: float = 0.5
    p_other: float = 0.02
    kind: str = "position"

    def __post_init__(self) -> None:
        if self.kind not in CLICK_MODELS:
            raise ValueError(f"click model kind must be one of {list(CLICK_MODELS)}, got {self.kind!r}")

    def clicks(self, items: Sequence[str], future: set[str], rng: random.Random) -> list[int]:
        """Positions clicked in a shown list (0-based)."""
        out = []
        for p, item in enumerate(items):
            attract = self.p_future if item in future else self.p_other
            if self.kind == "cascade":
                if rng.random() < attract:
                    return [p]
                continue
            if rng.random() < (p + 1) ** -self.eta * attract:
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


def _marks(n: int, step: int) -> list[int]:
    marks = list(range(step, n + 1, step))
    if not marks or marks[-1] != n:
        marks.append(n)
    return marks


def _user_codes(outcomes: Sequence[ListOutcome]) -> np.ndarray:
    codes: dict[str, int] = {}
    return np.array([codes.setdefault(o.user if o.user is not None else f"list:{o.request_id}", len(codes))
                     for o in outcomes], dtype=np.int64)


def credit_differences(outcomes: Sequence[ListOutcome], teams: tuple[str, str]) -> np.ndarray:
    """``(n_lists,)`` per interleaved list, distinct clicked items credited to ``teams[0]`` minus to ``teams[1]``."""
    d = np.zeros(len(outcomes), dtype=np.int64)
    for j, o in enumerate(outcomes):
        team_of = dict(zip(o.items, o.teams))
        credited = [team_of.get(i) for i in dict.fromkeys(o.clicked)]
        d[j] = sum(t == teams[0] for t in credited) - sum(t == teams[1] for t in credited)
    return d


def fast_sequential_p(experiment: ExperimentConfig, outcomes: Sequence[ListOutcome], step: int,
                      test: str | None = None) -> list[tuple[int, float]]:
    """:func:`sequential_p` computed incrementally, for the many redraws, with test ``test`` (interleaving:
    one of :data:`recsys.experiments.statistics.INTERLEAVING_TESTS`, A/B: one of ``AB_TESTS``; ``None``:
    the report's test); ``tests/test_experiments.py`` checks it against :func:`sequential_p`."""
    from recsys.experiments.report import AB_TEST, INTERLEAVING_TEST
    from recsys.experiments.statistics import ab_curve, interleaving_curve

    marks = _marks(len(outcomes), step)
    names = [v.name for v in experiment.variants]
    user = _user_codes(outcomes)
    if experiment.mode == "interleave":
        d = credit_differences(outcomes, (names[0], names[-1]))
        return list(zip(marks, interleaving_curve(d, user, marks, test or INTERLEAVING_TEST)))
    if len(names) != 2:
        return [(m, math.nan) for m in marks]
    side = np.array([0 if o.variant == names[0] else 1 if o.variant == names[1] else -1 for o in outcomes])
    clicks = np.array([len(set(o.clicked)) for o in outcomes], dtype=float)
    return list(zip(marks, ab_curve(side, clicks, user, marks, test or AB_TEST)))


def redraw_outcomes(experiment: ExperimentConfig, sources: dict[str, dict[str, Sequence[str]]],
                    users: Sequence[str], future: dict[str, set[str]], model: ClickModel, r: int, k: int = 10,
                    credit: str = "team", seed: int = 0) -> tuple[ExperimentConfig, list[ListOutcome]]:
    """Redraw number ``r``: the assignment (A/B: salt ``redraw-{seed}-{r}``; interleaving: new team-draft
    coins) and the clicks over the lists each variant serves (``sources``: variant -> user -> list;
    ``users``: the user of each request, in serving order). ``credit`` (interleaving): ``"team"`` (plain team
    draft, the service's rule) or ``"exclusive"`` (clicks on items both lists hold credited to nobody)."""
    from recsys.experiments.assign import INTERLEAVED, assign, exclusive_credit, team_draft

    names = [v.name for v in experiment.variants]
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
    return exp, outcomes


def _summary(needed: list[float], final: list[float], alpha: float) -> dict[str, object]:
    arr, fin = np.asarray(needed, dtype=float), np.asarray(final, dtype=float)
    q1, med, q3 = (float(x) for x in np.quantile(arr, [0.25, 0.5, 0.75], method="inverted_cdf"))
    return {"median_lists_needed": med, "quartiles": (q1, q3), "mean_lists_needed": float(np.mean(arr)),
            "never_share": float(np.mean(np.isinf(arr))),
            "significant_at_end_share": float(np.mean(np.nan_to_num(fin, nan=1.0) < alpha)),
            "median_final_p": float(np.nanmedian(fin)) if np.isfinite(fin).any() else math.nan,
            "lists_needed": [None if math.isinf(x) else int(x) for x in arr]}


def redraw_compare(experiment: ExperimentConfig, sources: dict[str, dict[str, Sequence[str]]],
                   users: Sequence[str], future: dict[str, set[str]], model: ClickModel, repeats: int,
                   alpha: float, step: int, tests: Sequence[str], k: int = 10, credit: str = "team", seed: int = 0,
                   start: int = 0) -> dict[str, dict[str, object]]:
    """"Lists needed" under each test in ``tests``, over redraws ``start .. start + repeats - 1``
    (:func:`redraw_outcomes`; every test sees the same redraws). Per test: the median and quartiles of lists
    needed (never reached counts as infinite), the share of redraws that never reached ``p < alpha``, the
    share significant at the end, and the per-redraw values."""
    if credit not in ("exclusive", "team"):
        raise ValueError(f"credit must be one of ['exclusive', 'team'], got {credit!r}")
    names = [v.name for v in experiment.variants]
    missing = [(n, u) for n in names for u in set(users) if u not in sources.get(n, {})]
    if missing:
        raise ValueError(f"{len(missing)} (variant, user) lists missing from sources, e.g. {missing[0]}")
    needed: dict[str, list[float]] = {t: [] for t in tests}
    final: dict[str, list[float]] = {t: [] for t in tests}
    for r in range(start, start + repeats):
        exp, outcomes = redraw_outcomes(experiment, sources, users, future, model, r, k, credit, seed)
        for t in tests:
            curve = fast_sequential_p(exp, outcomes, step, t)
            n = lists_needed(curve, alpha)
            needed[t].append(math.inf if n is None else n)
            final[t].append(curve[-1][1])
    head = {"repeats": repeats, "redraws": [start, start + repeats - 1], "alpha": alpha, "lists": len(users),
            "credit": credit if experiment.mode != "ab" else None}
    return {t: {**head, "test": t, **_summary(needed[t], final[t], alpha)} for t in tests}


def redraw_lists_needed(experiment: ExperimentConfig, sources: dict[str, dict[str, Sequence[str]]],
                        users: Sequence[str], future: dict[str, set[str]], model: ClickModel, repeats: int,
                        alpha: float, step: int, k: int = 10, credit: str = "team", seed: int = 0,
                        test: str | None = None, start: int = 0) -> dict[str, object]:
    """"Lists needed" as a distribution over ``repeats`` seeded redraws (:func:`redraw_compare`) under one
    test (``None``: the report's test)."""
    from recsys.experiments.report import AB_TEST, INTERLEAVING_TEST

    t = test or (AB_TEST if experiment.mode == "ab" else INTERLEAVING_TEST)
    return redraw_compare(experiment, sources, users, future, model, repeats, alpha, step, [t], k, credit, seed,
                          start)[t]
