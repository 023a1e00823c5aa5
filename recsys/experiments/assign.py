"""Deterministic assignment of users to variants, and team-draft interleaving. Pure functions."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence

from recsys.experiments.settings import ExperimentConfig, VariantConfig

INTERLEAVED = "interleaved"
"""The ``variant`` logged for an interleaved list (the per-position ``team`` names the variants)."""


def bucket(user_id: str, salt: str) -> float:
    """A number in ``[0, 1)`` from a hash of ``salt`` and ``user_id``: the same in every process and run."""
    digest = hashlib.blake2b(f"{salt}\x1f{user_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def assign(experiment: ExperimentConfig, user_id: str) -> VariantConfig:
    """The user's variant: shares are normalised and laid out in order over ``[0, 1)``."""
    u = bucket(user_id, experiment.salt or experiment.name)
    total = sum(v.share for v in experiment.variants)
    edge = 0.0
    for v in experiment.variants:
        edge += v.share / total
        if u < edge and v.share > 0:
            return v
    return [v for v in experiment.variants if v.share > 0][-1]


def request_rng(request_id: str) -> random.Random:
    """The coin of one interleaved list (seeded by its request id, so a logged list can be replayed)."""
    return random.Random(int.from_bytes(hashlib.blake2b(request_id.encode(), digest_size=8).digest(), "big"))


def team_draft(a: Sequence[str], b: Sequence[str], k: int, rng: random.Random,
               teams: tuple[str, str] = ("A", "B")) -> tuple[list[str], list[str]]:
    """Team-draft interleaving (Radlinski, Kurup and Joachims, 2008) of rankings ``a`` and ``b``.

    In each round the team with fewer picks (a coin flip on a tie) adds its best item not yet in the
    list. Returns the merged list (at most ``k`` items) and, per position, the team that placed it.
    """
    out: list[str] = []
    credit: list[str] = []
    taken: set[str] = set()
    ia = ib = 0
    na = nb = 0
    while len(out) < k:
        a_left = any(x not in taken for x in a[ia:])
        b_left = any(x not in taken for x in b[ib:])
        if not a_left and not b_left:
            break
        a_turn = (na < nb or (na == nb and rng.random() < 0.5)) if a_left and b_left else a_left
        if a_turn:
            while a[ia] in taken:
                ia += 1
            pick, team = a[ia], teams[0]
            na += 1
        else:
            while b[ib] in taken:
                ib += 1
            pick, team = b[ib], teams[1]
            nb += 1
        out.append(pick)
        credit.append(team)
        taken.add(pick)
    return out, credit


def exclusive_credit(merged: Sequence[str], teams: Sequence[str], a: Sequence[str], b: Sequence[str],
                     k: int) -> list[str | None]:
    """Per position of a team-draft list, the team credited with a click: ``None`` for an item that both
    rankings place in their best ``k`` (it expresses no preference between them; a click on it is left
    out, so with identical rankings every list is a tie), else the team that placed it.

    A credit rule the simulation compares with plain team draft (``benchmarks/simulate.py`` redraws); the
    service credits every click to the team that placed the item (in the simulation this rule decided
    no sooner and gave larger p-values, see the README)."""
    both = set(a[:k]) & set(b[:k])
    return [None if item in both else team for item, team in zip(merged, teams, strict=True)]


def winner(clicked_teams: Sequence[str], teams: tuple[str, str]) -> str | None:
    """The team credited with more clicks in one list; ``None`` on a tie (including no clicks)."""
    na = sum(t == teams[0] for t in clicked_teams)
    nb = sum(t == teams[1] for t in clicked_teams)
    return teams[0] if na > nb else teams[1] if nb > na else None
