"""Experiments: assignment, team-draft interleaving, the report's statistics, the settings' checks."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
from scipy.stats import binomtest

from recsys.experiments.assign import INTERLEAVED, assign, bucket, team_draft, winner
from recsys.experiments.report import ListOutcome, format_report, summarise, two_proportion_p, wilson
from recsys.experiments.settings import ExperimentConfig


def _exp(mode: str = "ab", shares: tuple[float, float] = (0.5, 0.5)) -> ExperimentConfig:
    return ExperimentConfig.model_validate({"name": "e1", "mode": mode, "variants": [
        {"name": "hyb", "ranker": "hybrid", "share": shares[0]}, {"name": "pop", "ranker": "popularity", "share": shares[1]}]})


def test_assignment_is_deterministic_and_follows_the_shares() -> None:
    exp = _exp(shares=(0.3, 0.7))
    users = [f"user-{i}" for i in range(20_000)]
    first = [assign(exp, u).name for u in users]
    assert first == [assign(exp, u).name for u in users]
    assert abs(first.count("hyb") / len(users) - 0.3) < 0.015
    # the hash is fixed (blake2b of salt and id), not Python's per-process hash(): sticky across workers/restarts
    assert bucket("user-1", "e1") == pytest.approx(int.from_bytes(
        __import__("hashlib").blake2b(b"e1\x1fuser-1", digest_size=8).digest(), "big") / 2**64)
    salted = exp.model_copy(update={"salt": "other"})
    moved = sum(a != assign(salted, u).name for a, u in zip(first, users))
    assert moved > 5_000  # a new salt reshuffles


def test_team_draft_interleaving() -> None:
    a = ["a1", "a2", "a3", "x", "a4", "a5"]
    b = ["x", "b1", "a1", "b2", "b3", "b4"]
    for seed in range(50):
        merged, teams = team_draft(a, b, 6, random.Random(seed))
        assert len(merged) == len(set(merged)) == 6
        for n in range(1, 7):  # every prefix is balanced between the teams
            assert abs(teams[:n].count("A") - teams[:n].count("B")) <= 1 or n % 2 == 1
        for team, ranking in (("A", a), ("B", b)):  # each team's picks keep its ranking's order
            picks = [m for m, t in zip(merged, teams) if t == team]
            assert picks == sorted(picks, key=ranking.index)
    same, teams = team_draft(a, a, 4, random.Random(1))
    assert same == a[:4] and sorted(teams) == ["A", "A", "B", "B"]
    short, _ = team_draft(["p"], ["p"], 5, random.Random(0))
    assert short == ["p"]
    assert winner(["A", "B", "A"], ("A", "B")) == "A" and winner(["A", "B"], ("A", "B")) is None


def test_report_statistics() -> None:
    exp = _exp()
    outcomes = ([ListOutcome(f"h{i}", "hyb", ("i1", "i2"), (None, None), ("i1",) if i < 30 else (), ("i1",) if i < 3 else ())
                 for i in range(100)]
                + [ListOutcome(f"p{i}", "pop", ("i1", "i2"), (None, None), ("i2",) if i < 10 else (), ()) for i in range(100)])
    rep = summarise(exp, outcomes, {"i1": 20.0})
    hyb, pop = rep.variants
    assert (hyb.lists, hyb.clicked_lists, hyb.conversions, hyb.revenue) == (100, 30, 3, 60.0)
    assert hyb.ctr == 0.3 and pop.ctr == 0.1
    assert hyb.ctr_ci == pytest.approx(wilson(30, 100)) and hyb.ctr_ci[0] < 0.3 < hyb.ctr_ci[1]
    lo, hi = binomtest(30, 100).proportion_ci(method="wilson")
    assert hyb.ctr_ci == pytest.approx((lo, hi))
    assert rep.p_value_lists == pytest.approx(two_proportion_p(30, 100, 10, 100)) and rep.p_value < 0.01
    # lists without users are users of their own: Welch's t-test of 0/1 outcomes
    from scipy.stats import ttest_ind

    assert rep.p_value == pytest.approx(ttest_ind([1] * 30 + [0] * 70, [1] * 10 + [0] * 90, equal_var=False).pvalue)
    # one user seeing the same outcome in many lists is one unit, not many
    same = [ListOutcome(f"x{i}", v, ("i1",), (None,), ("i1",) if v == "hyb" and u < 6 or v == "pop" and u < 4 else (),
                        (), f"{v}{u}") for v in ("hyb", "pop") for u in range(10) for i in range(20)]
    clustered = summarise(exp, same)
    assert clustered.p_value > 0.3 and clustered.p_value_lists < 0.01

    inter = _exp("interleave")
    lists = [ListOutcome(f"r{i}", INTERLEAVED, ("i1", "i2", "i3"), ("hyb", "pop", "hyb"),
                         ("i1",) if i < 40 else ("i2",) if i < 55 else (), ()) for i in range(100)]
    rep = summarise(inter, lists)
    it = rep.interleaving
    assert it is not None and it.wins == {"hyb": 40, "pop": 15} and it.ties == 45
    assert it.p_value_wins == pytest.approx(binomtest(40, 55, 0.5).pvalue) and it.share == pytest.approx(40 / 55)
    # the report's p: t-test of the per-list credit differences, 40 x (+1), 15 x (-1), 45 x 0; by hand
    # mean .25, sd sqrt((55 - 100 x .25^2) / 99) = .70173, t = .25 / (.70173 / 10) = 3.5626 on 99 df
    from scipy.stats import t as student_t
    from scipy.stats import ttest_1samp

    assert it.credit_difference == pytest.approx(0.25)
    assert it.p_value == pytest.approx(2 * student_t.sf(3.5626, 99), rel=1e-3)
    assert it.p_value == pytest.approx(ttest_1samp([1] * 40 + [-1] * 15 + [0] * 45, 0.0).pvalue)
    # two clicks for one team in a list count twice; a click on an item of no team (None) counts for nobody
    two = [ListOutcome("t0", INTERLEAVED, ("i1", "i2", "i3"), ("hyb", "hyb", None), ("i1", "i2", "i3"), ()),
           ListOutcome("t1", INTERLEAVED, ("i1", "i2", "i3"), ("pop", "hyb", None), ("i1",), ()),
           ListOutcome("t2", INTERLEAVED, ("i1", "i2", "i3"), ("pop", "hyb", None), (), ())]
    it2 = summarise(inter, two).interleaving
    assert it2 is not None and it2.credit_difference == pytest.approx((2 - 1 + 0) / 3)
    assert it2.p_value == pytest.approx(ttest_1samp([2, -1, 0], 0.0).pvalue)
    assert "t-test of the per-list differences p = " in format_report(rep)


def test_experiment_definitions_are_checked() -> None:
    with pytest.raises(ValueError, match="exactly two"):
        ExperimentConfig.model_validate({"name": "x", "mode": "interleave", "variants": [
            {"name": "a"}, {"name": "b"}, {"name": "c"}]})
    with pytest.raises(ValueError, match="unique"):
        ExperimentConfig.model_validate({"name": "x", "variants": [{"name": "a"}, {"name": "a"}]})


def test_variant_settings_that_would_be_ignored_are_refused() -> None:
    from recsys.experiments.settings import VariantConfig

    assert VariantConfig(name="w", weights={"warm_pop": 0.5, "cold_cf": 2}).weights == {"warm_pop": 0.5, "cold_cf": 2}
    with pytest.raises(ValueError, match=r"\['warm_popularity'\] are not blend weights; allowed: warm_cf"):
        VariantConfig(name="w", weights={"warm_popularity": 0.5})
    for bad in (-0.1, 10.5, float("nan")):
        with pytest.raises(ValueError, match="weights.cold_pop must be in"):
            VariantConfig(name="w", weights={"cold_pop": bad})
    with pytest.raises(ValueError, match="cannot all be 0"):
        VariantConfig(name="w", weights={"warm_cf": 0, "warm_content": 0, "warm_pop": 0})
    for extra in ({"model_version": "v1"}, {"weights": {"warm_cf": 1}}, {"reranker": True}, {"diversity": 0.3}):
        with pytest.raises(ValueError, match="ranker=popularity takes none of"):
            VariantConfig(name="p", ranker="popularity", **extra)
    with pytest.raises(ValueError, match="diversity is not applied to the learned reranker"):
        VariantConfig(name="r", reranker=True, diversity=0.2)


def test_configured_experiment_with_an_unknown_model_version_stops_the_start(engine: Any) -> None:
    from recsys.errors import ConfigError
    from recsys.store.db import upgrade
    from services.api.served import check_configured_models

    upgrade(engine)
    exp = ExperimentConfig.model_validate({"name": "cfg", "variants": [{"name": "a", "model_version": "v-missing"},
                                                                        {"name": "b"}]})
    with pytest.raises(ConfigError, match="variant 'a': model_version 'v-missing' is not a registered feed model"):
        check_configured_models(engine, [exp])
    check_configured_models(engine, [_exp()])  # no model_version: nothing to check


def test_exclusive_credit_leaves_shared_items_to_nobody() -> None:
    from recsys.experiments.assign import exclusive_credit

    a = ["a1", "a2", "a3", "x", "a4", "a5"]
    b = ["x", "b1", "a1", "b2", "b3", "b4"]
    merged, teams = team_draft(a, b, 6, random.Random(3))
    credit = exclusive_credit(merged, teams, a, b, 6)
    for item, team, cred in zip(merged, teams, credit):
        assert cred == (None if item in ("a1", "x") else team)
    # beyond the top k an item is not shared: "a1" is b's 3rd, outside b's top 2
    assert exclusive_credit(["a1"], ["A"], a, b, 2) == ["A"]
    same, teams = team_draft(a, a, 4, random.Random(1))
    assert exclusive_credit(same, teams, a, a, 4) == [None] * 4
    # A/A interleaving under this credit: every list is a tie, the test has nothing to decide
    rep = summarise(_exp("interleave"), [ListOutcome(f"r{i}", INTERLEAVED, tuple(same), (None,) * 4, (same[0],), ())
                                         for i in range(50)])
    assert rep.interleaving is not None and rep.interleaving.ties == 50 and not rep.interleaving.p_value < 0.05


def test_redraws_find_a_real_difference_and_no_difference_between_identical_rankers() -> None:
    from recsys.experiments.simulation import ClickModel, redraw_lists_needed

    rng = random.Random(0)
    users = [f"u{i}" for i in range(120)]
    future = {u: {f"{u}-f{j}" for j in range(5)} for u in users}
    shared = [f"pop{j}" for j in range(4)]
    good = {u: shared[:2] + sorted(future[u])[:3] + [f"{u}-o{j}" for j in range(5)] for u in users}
    bad = {u: shared + [f"{u}-z{j}" for j in range(6)] for u in users}
    seq = [users[i % len(users)] for i in range(600)]
    rng.shuffle(seq)
    model = ClickModel(1.0, 0.5, 0.05)
    kw = {"repeats": 8, "alpha": 0.01, "step": 50}
    ab = redraw_lists_needed(_exp(), {"hyb": good, "pop": bad}, seq, future, model, **kw)
    il = redraw_lists_needed(_exp("interleave"), {"hyb": good, "pop": bad}, seq, future, model, **kw)
    assert ab["median_lists_needed"] <= 600 and il["median_lists_needed"] <= 600
    assert il["significant_at_end_share"] == 1.0
    for credit in ("exclusive", "team"):
        aa = redraw_lists_needed(_exp("interleave"), {"hyb": good, "pop": good}, seq, future, model, credit=credit, **kw)
        assert aa["significant_at_end_share"] <= 0.125, (credit, aa)
        if credit == "exclusive":
            # every credit difference is 0: the t-test's p is 1, the binomial test has no decided list
            assert aa["never_share"] == 1.0 and aa["median_final_p"] == 1.0
            wins = redraw_lists_needed(_exp("interleave"), {"hyb": good, "pop": good}, seq, future, model,
                                       credit=credit, test="wins", **kw)
            assert wins["never_share"] == 1.0 and math.isnan(wins["median_final_p"])
    with pytest.raises(ValueError, match="missing"):
        redraw_lists_needed(_exp(), {"hyb": good}, seq, future, model, **kw)
    with pytest.raises(ValueError, match="credit"):
        redraw_lists_needed(_exp("interleave"), {"hyb": good, "pop": bad}, seq, future, model, credit="x", **kw)


def test_fast_sequential_p_matches_the_report() -> None:
    from recsys.experiments.simulation import fast_sequential_p, sequential_p

    rng = random.Random(5)
    ab, il = [], []
    for i in range(230):
        user = f"u{rng.randrange(60)}"
        items = tuple(f"i{rng.randrange(30)}" for _ in range(4))
        clicked = tuple(it for it in items if rng.random() < 0.15)
        ab.append(ListOutcome(f"a{i}", assign(_exp(), user).name, items, (None,) * 4, clicked, (), user))
        teams = tuple(rng.choice(["hyb", "pop", None]) for _ in items)
        il.append(ListOutcome(f"b{i}", INTERLEAVED, items, teams, clicked, (), user))
    for exp, outs in ((_exp(), ab), (_exp("interleave"), il)):
        fast, slow = fast_sequential_p(exp, outs, 20), sequential_p(exp, outs, 20)
        assert [n for n, _ in fast] == [n for n, _ in slow]
        assert [p for _, p in fast] == pytest.approx([p for _, p in slow], nan_ok=True)


def test_interleaving_and_ab_tests_match_scipy_on_known_numbers() -> None:
    from scipy.stats import ttest_1samp, ttest_ind

    from recsys.experiments.statistics import AB_TESTS, INTERLEAVING_TESTS, ab_curve, interleaving_curve

    # per-list credit differences of 8 lists by 4 users
    d = [1, 0, -1, 2, 1, 0, 1, -1]
    user = [0, 1, 2, 3, 0, 1, 2, 3]
    p = {t: interleaving_curve(d, user, [4, 8], t) for t in INTERLEAVING_TESTS}
    assert p["wins"][1] == pytest.approx(binomtest(4, 6, 0.5).pvalue)  # 4 lists won, 2 lost, 2 ties
    assert p["wins"][0] == pytest.approx(binomtest(2, 3, 0.5).pvalue)
    assert p["credit_t"][1] == pytest.approx(ttest_1samp(d, 0.0).pvalue)
    assert p["credit_t"][0] == pytest.approx(ttest_1samp(d[:4], 0.0).pvalue)
    # users' sums 2, 0, 0, 1: two prefer A, none B; users' means 1, 0, 0, .5
    assert p["user_sign"][1] == pytest.approx(binomtest(2, 2, 0.5).pvalue)
    assert p["user_t"][1] == pytest.approx(ttest_1samp([1.0, 0.0, 0.0, 0.5], 0.0).pvalue)
    assert interleaving_curve([1, 1, 1], [0, 1, 2], [3], "credit_t") == [0.0]  # no variance, non-zero mean
    assert interleaving_curve([0, 0, 0], [0, 1, 2], [3], "credit_t") == [1.0]
    # A/B: users 0-2 on side 0, users 3-5 on side 1; user 0 sees two lists
    side = [0, 0, 0, 0, 1, 1, 1]
    clicks = [2, 0, 1, 0, 0, 1, 0]
    users = [0, 0, 1, 2, 3, 4, 5]
    ctr, per_list = (ab_curve(side, clicks, users, [7], t)[0] for t in AB_TESTS)
    assert ctr == pytest.approx(ttest_ind([0.5, 1.0, 0.0], [0.0, 1.0, 0.0], equal_var=False).pvalue)
    assert per_list == pytest.approx(ttest_ind([1.0, 1.0, 0.0], [0.0, 1.0, 0.0], equal_var=False).pvalue)
    with pytest.raises(ValueError, match="test must be one of"):
        interleaving_curve(d, user, [8], "z")


def test_cascade_click_model_stops_at_the_first_click() -> None:
    from recsys.experiments.simulation import ClickModel

    items = ["a", "f1", "b", "f2"]
    sure = ClickModel(p_future=1.0, p_other=0.0, kind="cascade")
    assert sure.clicks(items, {"f1", "f2"}, random.Random(0)) == [1]  # never reaches f2
    assert ClickModel(eta=0.0, p_future=1.0, p_other=0.0).clicks(items, {"f1", "f2"}, random.Random(0)) == [1, 3]
    rng = random.Random(1)
    model = ClickModel(p_future=0.5, p_other=0.5, kind="cascade")
    counts = [model.clicks(items, set(), rng) for _ in range(2000)]
    assert all(len(c) <= 1 for c in counts)
    first = sum(c == [0] for c in counts) / 2000  # P(click at 0) = .5, at 1 = .25
    second = sum(c == [1] for c in counts) / 2000
    assert abs(first - 0.5) < 0.04 and abs(second - 0.25) < 0.04
    with pytest.raises(ValueError, match="click model kind"):
        ClickModel(kind="dbn")
