#!/usr/bin/env python
"""Which test makes interleaving (and A/B) decide soonest: offline redraws over a live run's lists (issue 13 (a)).

Reads the lists ``benchmarks/simulate.py`` fetched from every user for each ranker (phase ``src``, written to
``<json>.sources.json``) and redraws the assignment and the clicks (same click model, same users in the same
order as the live run) through :func:`recsys.experiments.simulation.redraw_compare`:

- every interleaving test of :mod:`recsys.experiments.statistics` (hybrid vs popularity, team-draft credit)
  and every A/B test (per-user Welch of CTR or of clicks per list);
- the same tests on A/A (two identical hybrids), interleaved and A/B: the false-positive rate.

Discipline: tests are CHOSEN on redraws ``0..N-1`` (``--select``): per mode, among the tests whose A/A
false-positive rate at ``--alpha`` is at most ``--max-fp``, the one with the smallest median lists needed
(ties: smaller mean); the chosen tests (and the rest, for the record) are REPORTED on fresh redraws
``N..2N-1`` (``--report``).

    python benchmarks/sim_tests.py --sources /tmp/sim/sim.sources.json --json tests.json
"""

from __future__ import annotations

import argparse
import json
import logging
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
from recsys.experiments.simulation import ClickModel, redraw_compare, temporal_split
from recsys.experiments.statistics import AB_TESTS, INTERLEAVING_TESTS

log = logging.getLogger("sim_tests")


def _exp(name: str, mode: str, a: str, b: str) -> ExperimentConfig:
    return ExperimentConfig.model_validate({"name": name, "mode": mode, "variants": [
        {"name": a, "ranker": "hybrid"}, {"name": b, "ranker": "hybrid"}]})


def run(sources: dict[str, dict[str, list[str]]], seq: list[str], future: dict[str, set[str]], model: ClickModel,
        args: argparse.Namespace, start: int, repeats: int, il_tests: list[str], ab_tests: list[str]
        ) -> dict[str, Any]:
    hyb = sources["hybrid"]
    kw = {"repeats": repeats, "alpha": args.alpha, "step": args.step, "seed": args.seed, "start": start}
    out: dict[str, Any] = {}
    for key, exp, src, tests in (
            ("ab", _exp("ab", "ab", "hybrid", "popularity"), sources, ab_tests),
            ("il", _exp("il", "interleave", "hybrid", "popularity"), sources, il_tests),
            ("aa_ab", _exp("aa", "ab", "A", "B"), {"A": hyb, "B": hyb}, ab_tests),
            ("aa_il", _exp("aa", "interleave", "A", "B"), {"A": hyb, "B": hyb}, il_tests)):
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
    model = ClickModel(args.eta, args.p_future, args.p_other)
    n = args.redraws
    select = run(sources, seq, future, model, args, 0, n, list(INTERLEAVING_TESTS), list(AB_TESTS))
    chosen = {"il": choose(select, "il", args.max_fp), "ab": choose(select, "ab", args.max_fp)}
    log.info("chosen on redraws 0..%d: %s", n - 1, chosen)
    report = run(sources, seq, future, model, args, n, n, list(INTERLEAVING_TESTS), list(AB_TESTS))
    result = {"click_model": vars(model), "lists": args.requests, "alpha": args.alpha, "max_fp": args.max_fp,
              "chosen_on_select": chosen, "select": select, "report": report, "machine_before": before,
              "machine_after": machine_note(), "seconds": time.monotonic() - t_start}
    for phase in ("select", "report"):
        print(f"\n{phase} (redraws {'0..' + str(n - 1) if phase == 'select' else f'{n}..{2 * n - 1}'}): "
              "median lists needed [quartiles], mean; A/A share significant at the end")
        for mode in ("ab", "il"):
            for t, v in result[phase][mode].items():
                aa = result[phase][f"aa_{mode}"][t]
                mark = " <- chosen" if chosen[mode] == t else ""
                print(f"  {mode:2} {t:9} {v['median_lists_needed']:6.0f} {v['quartiles']} mean "
                      f"{v['mean_lists_needed']:.0f}; median p at end {v['median_final_p']:.2g}; "
                      f"A/A {aa['significant_at_end_share']:.3f}{mark}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
