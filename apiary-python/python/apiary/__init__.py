"""Apiary: a lakehouse for small compute, coordinated through object storage.

>>> from apiary import Apiary
>>> ap = Apiary("demo", storage="./apiary-data")      # or s3://bucket/prefix
>>> ap.create_hive("analytics")
>>> ap.sql("SELECT 1")                                  # Arrow IPC stream bytes

See ``help(Apiary)`` for the whole API.
"""

from __future__ import annotations

import atexit as _atexit

from . import errors
from ._native import DEFAULT_STORAGE, Apiary, ArrowStream, Session, __version__
from ._native import shutdown_all as _shutdown_all
from .errors import (
    ApiaryError,
    ClosedError,
    ConflictError,
    CorruptError,
    InternalError,
    InvalidInputError,
    NotFoundError,
    OutcomeUnknownError,
    UnavailableError,
)

# Nodes still running when the interpreter exits leave the swarm (their heartbeats are
# removed) instead of lingering until the others judge them dead.
_atexit.register(_shutdown_all)

__all__ = [
    "Apiary",
    "ArrowStream",
    "Session",
    "DEFAULT_STORAGE",
    "__version__",
    "errors",
    *errors.__all__,
]
