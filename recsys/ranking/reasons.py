"""Why an item was recommended: the components that lifted it most, for the home feed's answer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from recsys.ranking.hybrid import HybridParams


def feed_reasons(r: int, warm: bool, cf: float, content: float, pop: float, params: HybridParams,
                 history_items: np.ndarray, vectors: np.ndarray, ids: Sequence[str]) -> list[dict[str, Any]]:
    """Up to two reasons for row ``r``: the components that lifted it most (weighted, standardised).

    Args:
        warm: whether the item had training events (cold items use the cold weights and say ``new_item``).
        cf, content, pop: the item's standardised components for this user.
        history_items: ``(m,)`` the user's catalogue rows; vectors: ``(n, d)`` L2-normalised item vectors
            (the history item nearest to ``r`` is named in a ``similar_to`` reason).
    """
    w = params.warm if warm else params.cold
    parts = {"collaborative": w.cf * cf, "similar_to": w.content * content, "popular": w.pop * pop}
    out: list[dict[str, Any]] = []
    for name, value in sorted(parts.items(), key=lambda kv: -kv[1]):
        if value <= 0 or len(out) == 2:
            continue
        if name == "similar_to":
            if not len(history_items):
                continue
            sims = vectors[history_items] @ vectors[r]
            out.append({"type": "similar_to", "item": ids[int(history_items[int(np.argmax(sims))])]})
        else:
            out.append({"type": name})
    if not warm:
        out.append({"type": "new_item"})
    return out or [{"type": "popular"}]
