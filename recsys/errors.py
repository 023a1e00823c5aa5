"""Domain exceptions.

Library code raises these; only the HTTP boundary (``services/``) and the CLI turn them into status
codes or exit codes. Messages say what was wrong and what is allowed.
"""

from __future__ import annotations


class RecsysError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(RecsysError):
    """The configuration file or an environment override is invalid."""


class InputFormatError(RecsysError):
    """An input file cannot be read as asked (unreadable, wrong format, missing mapped column).

    Raised before anything is written.
    """


class UnknownIdError(RecsysError, KeyError):
    """An external id that the id map (or the catalogue) does not know."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class DatabaseError(RecsysError):
    """The database is unreachable or not at the expected schema revision."""


class ArtifactError(RecsysError):
    """A trained or built artifact is missing, incomplete or of an unexpected version."""


class UnsupportedQueryError(RecsysError):
    """A well-formed query this deployment cannot answer (e.g. an image query without an alignment)."""


class ImageAccessError(RecsysError):
    """An image reference the access policy refuses (:mod:`recsys.encoders.access`): a path outside the
    allowed folders, a scheme other than http(s), an address that is not public. Nothing was read.

    Attributes:
        reason: short code: ``outside_roots``, ``no_roots``, ``scheme``, ``bad_url``, ``address``, ``dns``,
            ``redirects``.
        source: the reference as given.
        detail: what was wrong and what is allowed.
    """

    def __init__(self, reason: str, source: str, detail: str) -> None:
        self.reason = reason
        self.source = source
        self.detail = detail
        self.field: str | None = None
        """Set by callers that know it, e.g. ``items[3].image`` for an API body."""
        super().__init__(f"{source}: {detail}")

    def __reduce__(self) -> tuple[type[ImageAccessError], tuple[str, str, str]]:  # picklable across workers
        return (type(self), (self.reason, self.source, self.detail))
