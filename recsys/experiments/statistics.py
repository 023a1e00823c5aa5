"""The tests an experiment report can run, as pure functions of arrays (one value per served list).

Interleaving (one list = one comparison of variants A and B; ``d`` = clicks credited to A minus clicks
credited to B, per list):

- ``wins``: exact binomial test of the lists A won against those B won (ties, including lists without a
  click, left out); the per-list "wins" statistic of Radlinski, Kurup and Joachims (2008);
- ``credit_t``: one-sample t-test of the mean of ``d`` over every list, zeros included (the per-query
  credit difference of Chapelle, Joachims, Radlinski and Yue, 2012, "Large-scale validation and analysis
  of interleaved search evaluation", with a t-test in place of their bootstrap);
- ``user_sign``: each user's ``d`` summed over their lists, exact binomial test of the users who preferred
  A against those who preferred B (per-user aggregation, as in Chapelle et al. 2012, section 5);
- ``user_t``: one-sample t-test of the users' mean ``d`` (users as the unit, like the A/B test).

A/B (users are randomised, so users are the unit): Welch's t-test of per-user means, of ``ctr`` (share of
a user's lists with a click, the report's test) or of ``clicks`` (clicks per list).

Each test has a cumulative form (``*_curve``) that gives the p-value on the first ``m`` lists for every
``m`` in ``marks``, which the simulation's redraws use; the report calls the same functions once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

INTERLEAVING_TESTS = ("wins", "credit_t", "user_sign", "user_t")
AB_TESTS = ("ctr", "clicks")


def binomial_p(wins: int, n: int) -> float:
    """Exact two-sided binomial test of ``wins`` out of ``n`` against one half (``nan`` for ``n == 0``)."""
    if n == 0:
        return math.nan
    from scipy.stats import binomtest

    return float(binomtest(wins, n, 0.5).pvalue)


def one_sample_t_p(total: float, total_sq: float, n: int) -> float:
    """Two-sided one-sample t-test of mean 0 from the sum and the sum of squares of ``n`` values (``nan``
    for ``n < 2``; without variance, 1 for a zero mean and 0 otherwise)."""
    if n < 2:
        return math.nan
    from scipy.stats import t as student_t

    mean = total / n
    var = max(total_sq - n * mean * mean, 0.0) / (n - 1)
    if var <= 1e-15 * max(1.0, mean * mean):
        return 1.0 if mean == 0 else 0.0
    return float(2 * student_t.sf(abs(mean) / math.sqrt(var / n), n - 1))


def welch_p(xa: Sequence[float] | np.ndarray, xb: Sequence[float] | np.ndarray) -> float:
    """Welch's t-test of two samples (``nan`` with fewer than two values on a side; without variance, 1 for
    equal means and 0 otherwise)."""
    from scipy.stats import ttest_ind

    if len(xa) < 2 or len(xb) < 2:
        return math.nan
    if np.var(xa) == 0 and np.var(xb) == 0:
        return 1.0 if np.mean(xa) == np.mean(xb) else 0.0
    return float(ttest_ind(xa, xb, equal_var=False).pvalue)


def _check(test: str, allowed: tuple[str, ...]) -> None:
    if test not in allowed:
        raise ValueError(f"test must be one of {list(allowed)}, got {test!r}")


def interleaving_curve(d: np.ndarray, user: np.ndarray, marks: Sequence[int], test: str) -> list[float]:
    """p-values of interleaving test ``test`` on the first ``m`` lists, for each ``m`` in ``marks``.

    ``d``: ``(n_lists,)`` clicks credited to A minus to B; ``user``: ``(n_lists,)`` int user codes
    ``0..n_users-1`` (a list without a user gets a code of its own)."""
    _check(test, INTERLEAVING_TESTS)
    d = np.asarray(d, dtype=float)
    user = np.asarray(user, dtype=np.int64)
    if test == "wins":
        ca, cb = np.cumsum(d > 0), np.cumsum(d < 0)
        return [binomial_p(int(ca[m - 1]), int(ca[m - 1] + cb[m - 1])) if m else math.nan for m in marks]
    if test == "credit_t":
        s, s2 = np.cumsum(d), np.cumsum(d * d)
        return [one_sample_t_p(float(s[m - 1]), float(s2[m - 1]), m) if m else math.nan for m in marks]
    n_users = int(user.max()) + 1 if len(user) else 0
    out = []
    for m in marks:
        sums = np.bincount(user[:m], weights=d[:m], minlength=n_users)
        if test == "user_sign":
            a, b = int(np.sum(sums > 0)), int(np.sum(sums < 0))
            out.append(binomial_p(a, a + b))
        else:  # user_t
            lists = np.bincount(user[:m], minlength=n_users)
            means = sums[lists > 0] / lists[lists > 0]
            out.append(one_sample_t_p(float(means.sum()), float((means * means).sum()), len(means)))
    return out


def interleaving_p(d: np.ndarray, user: np.ndarray, test: str) -> float:
    """The p-value of interleaving test ``test`` on all lists (see :func:`interleaving_curve`)."""
    return interleaving_curve(d, user, [len(d)], test)[0]


def ab_curve(side: np.ndarray, clicks: np.ndarray, user: np.ndarray, marks: Sequence[int], test: str) -> list[float]:
    """p-values of the A/B test on the first ``m`` lists, for each ``m`` in ``marks``: Welch's t-test of
    per-user means of ``clicked`` (``test == "ctr"``: 1 if the list got a click) or of the clicks per list
    (``"clicks"``).

    ``side``: ``(n_lists,)`` 0 for variant A, 1 for B, -1 for neither; ``clicks``: clicks per list;
    ``user``: int user codes."""
    _check(test, AB_TESTS)
    side = np.asarray(side)
    user = np.asarray(user, dtype=np.int64)
    y = np.asarray(clicks, dtype=float)
    y = (y > 0).astype(float) if test == "ctr" else y
    n_users = int(user.max()) + 1 if len(user) else 0
    out = []
    for m in marks:
        xs = []
        for v in (0, 1):
            sel = side[:m] == v
            lists = np.bincount(user[:m][sel], minlength=n_users)
            total = np.bincount(user[:m][sel], weights=y[:m][sel], minlength=n_users)
            xs.append(total[lists > 0] / lists[lists > 0])
        out.append(welch_p(xs[0], xs[1]))
    return out
