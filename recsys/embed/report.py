"""What an embedding run did: plain dataclasses, printable by the CLI."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ImageFailure:
    """One item whose image could not be used (it still gets its text embedding)."""

    item_id: int
    source: str
    reason: str
    """One of :data:`recsys.encoders.errors.IMAGE_ERROR_REASONS`."""
    detail: str


@dataclass
class SpaceReport:
    """One space (``text`` or ``image``) of one run.

    ``total`` = items eligible for this space (items with an image for ``image``);
    ``skipped`` = already embedded with this encoder and content hash;
    ``embedded`` + ``failed`` = encoded (or tried) in this run.
    """

    space: str
    encoder: str
    total: int = 0
    skipped: int = 0
    embedded: int = 0
    failed: int = 0
    seconds: float = 0.0
    """Wall time of this space's loop: reading, decoding, encoding and writing."""
    encode_seconds: float = 0.0
    """Time spent inside the encoder only."""

    @property
    def processed(self) -> int:
        return self.embedded + self.failed

    @property
    def items_per_s(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0


@dataclass
class EmbedReport:
    spaces: list[SpaceReport] = field(default_factory=list)
    failures: list[ImageFailure] = field(default_factory=list)
    seconds: float = 0.0

    def space(self, name: str) -> SpaceReport:
        for s in self.spaces:
            if s.space == name:
                return s
        raise KeyError(f"no space {name!r} in this report; spaces: {[s.space for s in self.spaces]}")

    @property
    def failures_by_reason(self) -> dict[str, int]:
        """Reason -> number of items, most frequent first."""
        return dict(Counter(f.reason for f in self.failures).most_common())

    def lines(self, max_failures: int = 20) -> list[str]:
        """Human-readable summary (what ``recsys embed`` prints)."""
        out = []
        for s in self.spaces:
            out.append(
                f"{s.space:5s} {s.encoder}: {s.embedded} embedded, {s.failed} failed, {s.skipped} up to date "
                f"(of {s.total}); {s.items_per_s:.1f} items/s over {s.seconds:.1f} s"
            )
        if self.failures:
            by = ", ".join(f"{reason}: {n}" for reason, n in self.failures_by_reason.items())
            out.append(f"{len(self.failures)} images could not be used ({by}); those items got a text embedding only")
            for f in self.failures[:max_failures]:
                out.append(f"  item {f.item_id}: {f.reason}: {f.source}: {f.detail}")
            if len(self.failures) > max_failures:
                out.append(f"  ... and {len(self.failures) - max_failures} more")
        return out
