"""Errors of the encoders stage (subclasses of :class:`recsys.errors.RecsysError`)."""

from __future__ import annotations

from typing import Final

from recsys.errors import RecsysError

# Reasons an image cannot be used; the embedding job groups its failures by these.
MISSING: Final = "missing"
NOT_AN_IMAGE: Final = "not_an_image"
TRUNCATED: Final = "truncated"
TOO_LARGE: Final = "too_large"
FETCH_FAILED: Final = "fetch_failed"
UNREADABLE: Final = "unreadable"
REFUSED: Final = "refused"
"""The access policy refused the reference (:mod:`recsys.encoders.access`); nothing was read."""
IMAGE_ERROR_REASONS: Final = frozenset({MISSING, NOT_AN_IMAGE, TRUNCATED, TOO_LARGE, FETCH_FAILED, UNREADABLE, REFUSED})


class EncoderError(RecsysError):
    """An encoder cannot be built: unknown model name, unreadable weights, missing optional package."""


class ImageLoadError(RecsysError):
    """An image cannot be used as encoder input.

    Attributes:
        reason: one of :data:`IMAGE_ERROR_REASONS` (``missing``, ``not_an_image``, ``truncated``,
            ``too_large``, ``fetch_failed``, ``unreadable``, ``refused``).
        source: the path or URL that was asked for.
    """

    def __init__(self, reason: str, source: str, detail: str) -> None:
        if reason not in IMAGE_ERROR_REASONS:
            raise ValueError(f"reason must be one of {sorted(IMAGE_ERROR_REASONS)}, got {reason!r}")
        self.reason = reason
        self.source = source
        self.detail = detail
        super().__init__(f"{reason}: {source}: {detail}")

    def __reduce__(self) -> tuple[type[ImageLoadError], tuple[str, str, str]]:  # picklable across workers
        return (type(self), (self.reason, self.source, self.detail))
