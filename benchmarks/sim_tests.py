#!/usr/bin/env python
"""Which test makes interleaving (and A/B) decide soonest: offline redraws over a live run's lists (issue 13 (a)).

Reads the lists ``benchmarks/simulate.py`` fetched from every user for each ranker (phase ``src``, written to
``<json>.sources.json``) and redraws the assignment and the clicks (same click model, same users in the same
order as the live run) through :func:`recsys.experiments.simulation.redraw_compare`:

- every interleaving test of :mod:`recsys.experiments.statistics` (hybrid vs popularity, team-draft credit)
  and every A/B test (per-user Welch of CTR or of clicks per list);
- the same tests on A/A (two identical hybrids), interleaved and A/B: the false-positive rate.

Discipline: tests are CHOSEN on redraws ``0..N-1`` (N = ``--redraws``): per mode, among the tests whose A/A
false-positive rate at ``--alpha`` is at most ``--max-fp``, the one with the smallest median lists needed
(ties: smaller mean); the chosen tests (and the rest, for the record) are REPORTED on fresh redraws
``N..2N-1``, and with ``--extra M`` the chosen tests only on ``2N..2N+M-1`` (A/B and interleaving).

    python benchmarks/sim_tests.py --sources /tmp/sim/sim.sources.json --json tests.json
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for p in (str(REPO), str(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)

import pandas as pd
from http_load import machine_note

from recsys.experiments.settings import ExperimentConfig
from recsys.experiments.simulation import CLICK_MODELS, ClickModel, redraw_compare, temporal_split
from recsys.experiments.statistics import AB_TESTS, INTERLEAVING_TESTS

log = logging.getLogger("sim_tests")


def _exp(name: str, mode: str, a: str, b: str) -> ExperimentConfig:
    return ExperimentConfig.model_validate({"name": name, "mode": mode, "variants": [
        {"name": a, "ranker": "hybrid"}, {"name": b, "ranker": "hybrid"}]})


def run(sources: dict[str, dict[str, list[str]]], seq: list[str], future: dict[str, set[str]], model: ClickModel,
        args: argparse.Namespace, start: int, repeats: int, il_tests: list[str], ab_tests: list[str],
        keys: tuple[str, ...] = ("ab", "il", "aa_ab", "aa_il")) -> dict[str, Any]:
    hyb = sources["hybrid"]
    kw = {"repeats": repeats, "alpha": args.alpha, "step": args.step, "seed": args.seed, "start": start}
    out: dict[str, Any] = {}
    for key, exp, src, tests in (
            ("ab", _exp("ab", "ab", "hybrid", "popularity"), sources, ab_tests),
            ("il", _exp("il", "interleave", "hybrid", "popularity"), sources, il_tests),
            ("aa_ab", _exp("aa", "ab", "A", "B"), {"A": hyb, "B": hyb}, ab_tests),
            ("aa_il", _exp("aa", "interleave", "A", "B"), {"A": hyb, "B": hyb}, il_tests)):
        if key not in keys:
            continue
        t0 = time.monotonic()
        out[key] = redraw_compare(exp, src, seq, future, model, tests=tests, **kw)
        log.info("%s, redraws %d..%d: %s (%.0f s)", key, start, start + repeats - 1,
                 {t: (v["median_lists_needed"], v["quartiles"], v["significant_at_end_share"])
                  for t, v in out[key].items()}, time.monotonic() - t0)
    return out


def choose(res: dict[str, Any], mode: str, max_fp: float) -> str:
    """The test with the fewest median lists needed (then mean) among those whose A/A rate is <= ``max_fp``."""
    ok = [t for t, v in res[mode].items() if res[f"aa_{mode}"][t]["significant_at_end_share"] <= max_fp]
    if not ok:
        raise RuntimeError(f"no {mode} test keeps the A/A false-positive rate <= {max_fp}")
    return min(ok, key=lambda t: (res[mode][t]["median_lists_needed"], res[mode][t]["mean_lists_needed"]))


def compare(ab: list[int | None], il: list[int | None], repeats: int = 10_000, seed: int = 0) -> dict[str, Any]:
    """A/B's lists needed minus interleaving's over independent redraws (never reached = infinite): the
    differences of medians and of means with percentile-bootstrap 95% intervals (redraws resampled per
    mode), and the two-sided Mann-Whitney test of the two distributions."""
    import numpy as np
    from scipy.stats import mannwhitneyu

    a = np.array([np.inf if x is None else x for x in ab], dtype=float)
    b = np.array([np.inf if x is None else x for x in il], dtype=float)
    rng = np.random.default_rng(seed)
    ra, rb = a[rng.integers(0, len(a), (repeats, len(a)))], b[rng.integers(0, len(b), (repeats, len(b)))]
    out: dict[str, Any] = {"ab_minus_il_median": float(np.median(a) - np.median(b)),
                           "ab_minus_il_mean": float(a.mean() - b.mean())}
    for name, f in (("median", np.median), ("mean", np.mean)):
        boots = f(ra, axis=1) - f(rb, axis=1)
        out[f"ci95_{name}"] = (float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975)))
    out["mann_whitney_p"] = float(mannwhitneyu(a, b, alternative="two-sided").pvalue)
    out["share_il_fewer"] = float(np.mean(b[None, :] < a[:, None]))  # P(IL < A/B) over all pairs
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "movielens-100k-posters")
    ap.add_argument("--sources", type=Path, required=True, help="<json>.sources.json of a simulate.py run (phase src)")
    ap.add_argument("--requests", type=int, default=2000, help="lists per redraw")
    ap.add_argument("--step", type=int, default=25)
    ap.add_argument("--alpha", type=float, default=0.01)
    ap.add_argument("--max-fp", type=float, default=0.05, help="largest A/A false-positive rate allowed at --alpha")
    ap.add_argument("--redraws", type=int, default=100, help="N: choose on redraws 0..N-1, report on N..2N-1")
    ap.add_argument("--seed", type=int, default=0, help="the live run's seed (user order and redraw coins)")
    ap.add_argument("--eta", type=float, default=1.0)
    ap.add_argument("--p-future", type=float, default=0.5)
    ap.add_argument("--p-other", type=float, default=0.02)
    ap.add_argument("--extra", type=int, default=0,
                    help="then the chosen tests only, A/B and interleaving, on redraws 2N..2N+extra-1")
    ap.add_argument("--click-model", choices=CLICK_MODELS, default="position",
                    help="cascade: the additional, pre-stated row (README); the tests are still chosen on the "
                         "redraws 0..N-1 of this model, and --choose fixes them instead")
    ap.add_argument("--choose", help="il_test,ab_test: use these tests (chosen before, on the main model)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    t_start = time.monotonic()
    before = machine_note()
    sources = json.loads(args.sources.read_text())
    _past, future = temporal_split(pd.read_csv(args.data / "events.csv"))
    users = sorted(future)  # the live run's order of users (simulate.py)
    random.Random(args.seed).shuffle(users)
    seq = [users[i % len(users)] for i in range(args.requests)]
    model = ClickModel(args.eta, args.p_future, args.p_other, kind=args.click_model)
    n = args.redraws
    select = run(sources, seq, future, model, args, 0, n, list(INTERLEAVING_TESTS), list(AB_TESTS))
    if args.choose:
        il_test, _, ab_test = args.choose.partition(",")
        if il_test not in INTERLEAVING_TESTS or ab_test not in AB_TESTS:
            raise SystemExit(f"--choose must be IL,AB with IL in {list(INTERLEAVING_TESTS)} and AB in "
                             f"{list(AB_TESTS)}, got {args.choose!r}")
        chosen = {"il": il_test, "ab": ab_test}
        log.info("tests fixed by --choose: %s", chosen)
    else:
        chosen = {"il": choose(select, "il", args.max_fp), "ab": choose(select, "ab", args.max_fp)}
        log.info("chosen on redraws 0..%d: %s", n - 1, chosen)
    report = run(sources, seq, future, model, args, n, n, list(INTERLEAVING_TESTS), list(AB_TESTS))
    phases = [("select", select), ("report", report)]
    if args.extra:
        extra = run(sources, seq, future, model, args, 2 * n, args.extra, [chosen["il"]], [chosen["ab"]],
                    keys=("ab", "il"))
        phases.append(("extra", extra))
    versus = {phase: compare(res["ab"][chosen["ab"]]["lists_needed"], res["il"][chosen["il"]]["lists_needed"])
              for phase, res in phases}
    result = {"click_model": vars(model), "lists": args.requests, "alpha": args.alpha, "max_fp": args.max_fp,
              "chosen": chosen, "chosen_by": "--choose" if args.choose else "select", "ab_vs_il_chosen": versus, **dict(phases),
              "machine_before": before,
              "machine_after": machine_note(), "seconds": time.monotonic() - t_start}
    for phase, res in phases:
        first, last = res["ab"][chosen["ab"]]["redraws"]
        print(f"\n{phase} (redraws {first}..{last}): median lists needed [quartiles], mean; A/A share "
              "significant at the end")
        for mode in ("ab", "il"):
            for t, v in res[mode].items():
                aa = res[f"aa_{mode}"][t]["significant_at_end_share"] if f"aa_{mode}" in res else math.nan
                mark = " <- chosen" if chosen[mode] == t else ""
                print(f"  {mode:2} {t:9} {v['median_lists_needed']:6.0f} {v['quartiles']} mean "
                      f"{v['mean_lists_needed']:.0f}; median p at end {v['median_final_p']:.2g}; "
                      f"A/A {aa:.3f}{mark}")
        print(f"  chosen tests, A/B minus interleaving: {json.dumps(versus[phase])}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
