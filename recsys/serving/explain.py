"""Explaining a served similar-items answer: how much of each score is content, how much co-interaction.

The similar-items space (``Runtime._similar_vectors``) concatenates the L2-normalised content vector
scaled by ``sqrt(wc / (wc + wf))`` and the unit CF item factors scaled by ``sqrt(wf / (wc + wf))``
(``service.similar_content_weight`` / ``similar_cf_weight``; ``wf = 0`` without a feed model), so the
cosine of two items is exactly ``wc/(wc+wf) * content cosine + wf/(wc+wf) * CF cosine`` (up to the final
renormalisation of items whose CF factors are zero). This module recomputes the two terms for the items
an answer holds; it never ranks anything.

It reads the runtime's loaded snapshot (its ``content``, ``item_factors`` and ``row`` fields).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Shares:
    content_weight: float
    """``wc / (wc + wf)``: the content share of the score."""
    cf_weight: float
    """``wf / (wc + wf)``; 0 when no feed model (CF factors) is loaded."""
    parts: dict[str, tuple[float, float]]
    """Per other item: ``(content term, co-interaction term)``, the weights applied; they add up to the score."""


def similar_shares(runtime: Any, item_id: str, others: Sequence[str]) -> Shares:
    """The content and co-interaction terms of ``item_id``'s similarity to each of ``others`` (known ids)."""
    st = runtime._st()
    svc = runtime.config.service
    factors = st.item_factors
    wc = svc.similar_content_weight
    wf = svc.similar_cf_weight if factors is not None else 0.0
    total = wc + wf
    r = st.row[item_id]
    rows = np.asarray([st.row[o] for o in others if o in st.row], dtype=np.int64)
    content = (st.content[rows] @ st.content[r]).astype(np.float64) if len(rows) else np.zeros(0)
    cf = np.zeros(len(rows))
    if factors is not None and wf > 0 and len(rows):
        unit = factors[np.append(rows, r)].astype(np.float64)
        unit /= np.maximum(np.linalg.norm(unit, axis=1, keepdims=True), 1e-12)
        cf = unit[:-1] @ unit[-1]
    kept = [o for o in others if o in st.row]
    parts = {o: (float(wc / total * c), float(wf / total * f)) for o, c, f in zip(kept, content, cf, strict=True)}
    return Shares(wc / total, wf / total, parts)
