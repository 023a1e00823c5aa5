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


class QueryFieldError(RecsysError, ValueError):
    """A search request naming something the catalogue does not have (an attribute, a facet); ``field``
    says which part of the request (``filters.attributes``, ``facets``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
