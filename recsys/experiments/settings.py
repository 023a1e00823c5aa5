"""Configuration sections ``impressions`` and ``experiments`` (see :mod:`recsys.config`). Pure pydantic."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from recsys.settings_base import Section as _Section

SURFACES = ("feed", "similar", "search")
"""Where a served list comes from; impressions and experiments name one of these."""


class ImpressionsConfig(_Section):
    enabled: bool = True
    """Log every served list (request id, surface, user, items, positions, variant, versions, time)."""
    queue_size: int = Field(10_000, gt=0)
    """Lists waiting for the background writer; a list that finds the queue full is dropped and counted
    (``recsys_impressions_dropped_total`` in ``/metrics``)."""
    queue_bytes: int = Field(16 * 1024 * 1024, ge=64 * 1024)
    """Bound on the memory the waiting lists hold (their estimated Python heap size, see
    :func:`recsys.serving.impressions.record_bytes`; at least 64 KiB): a list that does not fit is dropped and
    counted like one that finds the queue full. With ``k`` up to 500 ids a list is about 40 KB, so the
    count alone (``queue_size``) would let a worker hold hundreds of MB."""
    batch_size: int = Field(500, gt=0)
    """Lists written per transaction."""
    flush_interval_s: float = Field(1.0, gt=0)
    """The writer commits at least this often while lists wait."""
    spool: bool = True
    """Also append each list to a per-process spool file (one ``write`` call) before answering, so that
    lists of a process killed before its writer committed them are recovered into SQL by the next
    process (the spool is truncated once everything in it is committed)."""
    retention_days: float = Field(90.0, gt=0)
    """``recsys impressions prune`` (and the writer, once an hour) deletes lists older than this."""
    page_max_lists: int = Field(20_000, gt=0)
    """The playground's experiment pages (no key needed) report on the newest this many lists of an
    experiment and say so; ``recsys experiments report`` reads them all."""


BLEND_WEIGHTS = ("warm_cf", "warm_content", "warm_pop", "cold_cf", "cold_content", "cold_pop")
"""The hybrid's blend weights a variant may override (:class:`recsys.ranking.hybrid.HybridParams`; per side
they are normalised to sum 1, so only their ratios matter)."""
MAX_BLEND_WEIGHT = 10.0


class VariantConfig(_Section):
    name: str = Field(min_length=1, max_length=64)
    ranker: Literal["hybrid", "popularity"] = "hybrid"
    """``hybrid``: a trained feed model; ``popularity``: most popular unseen items (a control)."""
    model_version: str | None = Field(None, min_length=1, max_length=128)
    """A registered feed model version (``recsys train`` registers them); ``None``: the active one. Checked
    when the experiment is created; serving processes load it beside the active model
    (``service.experiment_models`` at most)."""
    weights: dict[str, float] = Field(default_factory=dict)
    """Blend weight overrides of the hybrid, by name (:data:`BLEND_WEIGHTS`), each in ``[0, 10]``; the
    others keep the model's tuned values."""
    search_mode: Literal["hybrid", "lexical", "semantic"] | None = None
    """Search experiments only: the retrieval mode of the variant's search answers (``None``: ``search.mode``)."""
    reranker: bool = False
    """Reorder the hybrid's best ``pool`` candidates with the active learned reranker (``recsys train-reranker``)."""
    diversity: float = Field(0.0, ge=0.0, le=1.0)
    """MMR trade-off of the hybrid's list (as the feed's ``diversity`` parameter)."""
    share: float = Field(1.0, ge=0)
    """Traffic share (A/B mode); shares are normalised over the experiment's variants (0: none, e.g. to
    serve one configuration to everybody while keeping the experiment's variant names)."""

    @model_validator(mode="after")
    def _check(self) -> VariantConfig:
        where = f"variant {self.name!r}"
        unknown = sorted(set(self.weights) - set(BLEND_WEIGHTS))
        if unknown:
            raise ValueError(f"{where}: weights {unknown} are not blend weights; allowed: {', '.join(BLEND_WEIGHTS)}")
        for key, value in self.weights.items():
            if not 0.0 <= value <= MAX_BLEND_WEIGHT:  # NaN fails too
                raise ValueError(f"{where}: weights.{key} must be in [0, {MAX_BLEND_WEIGHT:g}], got {value!r}")
        for side in ("warm", "cold"):
            names = [f"{side}_{c}" for c in ("cf", "content", "pop")]
            if all(n in self.weights for n in names) and sum(self.weights[n] for n in names) <= 0:
                raise ValueError(f"{where}: the {side} weights {names} cannot all be 0")
        if self.ranker == "popularity":  # the control has no model: a setting of one would be silently ignored
            used = [f for f, on in (("model_version", self.model_version is not None), ("weights", bool(self.weights)),
                                    ("reranker", self.reranker), ("diversity", self.diversity > 0)) if on]
            if used:
                raise ValueError(f"{where}: ranker=popularity takes none of {used} (they configure the hybrid)")
        if self.reranker and self.diversity > 0:
            raise ValueError(f"{where}: diversity is not applied to the learned reranker's order; "
                             "use reranker=true or diversity > 0, not both")
        return self


class ExperimentConfig(_Section):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    surface: str = "feed"
    """``feed`` (first pages of the home feed) or ``search`` (A/B by the request's ``user_id``; interleaving
    for every request; requests that pin ``mode`` themselves are not split). ``similar`` is refused: the
    similar-items request names no user to assign and no variant setting applies to it yet."""
    mode: Literal["ab", "interleave"] = "ab"
    """``ab``: each user sticks to one variant (hash of user id and salt); ``interleave``: team-draft
    interleaving of exactly two variants into every list, each item credited to the variant that placed it."""
    salt: str = ""
    """Empty: the experiment's name. A new salt reshuffles users between variants."""
    variants: tuple[VariantConfig, ...] = Field(min_length=2, max_length=8)
    active: bool = True

    @model_validator(mode="after")
    def _check(self) -> ExperimentConfig:
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"variant names must be unique, got {names}")
        if not any(v.share > 0 for v in self.variants):
            raise ValueError("at least one variant needs a share above 0")
        if self.mode == "interleave" and len(self.variants) != 2:
            raise ValueError(f"interleaving takes exactly two variants, got {len(self.variants)}")
        self._check_surface()
        return self

    def _check_surface(self) -> None:
        """Refuse a setting the surface's serving would ignore (never serve a variant other than it says)."""
        if self.surface == "similar":
            raise ValueError("surface 'similar' cannot be split yet: the similar-items request names no user to "
                             "assign and no variant setting applies to it; supported surfaces: feed, search")
        if self.surface not in ("feed", "search"):
            raise ValueError(f"surface must be one of ['feed', 'search'], got {self.surface!r}")
        for v in self.variants:
            if self.surface == "feed" and v.search_mode is not None:
                raise ValueError(f"variant {v.name!r}: search_mode applies to surface 'search', not 'feed'")
            if self.surface == "search":
                feed_only = [f for f, on in (("ranker=popularity", v.ranker == "popularity"),
                                             ("model_version", v.model_version is not None),
                                             ("weights", bool(v.weights)), ("reranker", v.reranker),
                                             ("diversity", v.diversity > 0)) if on]
                if feed_only:
                    raise ValueError(f"variant {v.name!r}: {feed_only} apply to surface 'feed'; a search variant "
                                     "sets search_mode (hybrid, lexical or semantic)")
