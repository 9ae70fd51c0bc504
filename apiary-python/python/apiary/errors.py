"""Apiary's exceptions: one class per kind of failure, all under :class:`ApiaryError`.

Each carries the Rust core's message (what was wrong and what to do), a ``kind`` attribute
naming the kind, and ``retryable`` (whether the same call may simply succeed later). Kinds
that mean what a built-in exception means also derive from it, so ``except ValueError``
and ``except LookupError`` work as Python code expects.
"""

from __future__ import annotations


class ApiaryError(Exception):
    """Base class of every error Apiary raises."""

    kind: str = "Internal"
    retryable: bool = False


class InvalidInputError(ApiaryError, ValueError):
    """The call itself is wrong: a bad name, schema, type, SQL, URI, setting or Arrow data.

    Retrying the same call fails the same way; nothing was committed.
    """


class NotFoundError(ApiaryError, LookupError):
    """The hive, box, frame or node does not exist."""


class ConflictError(ApiaryError):
    """Someone else changed the same thing first, or it exists with another definition."""


class UnavailableError(ApiaryError):
    """The storage or another dependency failed or is overloaded; retrying later may work."""


class OutcomeUnknownError(ApiaryError):
    """A commit was sent but whether it landed is unknown: read the state before retrying."""


class CorruptError(ApiaryError):
    """Stored data is damaged or of an unknown format."""


class ClosedError(ApiaryError):
    """The call needs a running node (call ``start()`` first) or the node is shut down."""


class InternalError(ApiaryError):
    """A bug in Apiary: please report it with the call that caused it."""


__all__ = [
    "ApiaryError",
    "InvalidInputError",
    "NotFoundError",
    "ConflictError",
    "UnavailableError",
    "OutcomeUnknownError",
    "CorruptError",
    "ClosedError",
    "InternalError",
]
