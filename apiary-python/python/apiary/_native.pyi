"""Type stubs for Apiary's extension module (re-exported by ``apiary``)."""

from __future__ import annotations

import datetime
import os
from typing import Any, Mapping, Protocol, Sequence, Union

import pyarrow

__version__: str
DEFAULT_STORAGE: str

class _ArrowStreamExportable(Protocol):
    def __arrow_c_stream__(self, requested_schema: object | None = None) -> object: ...

class _ArrowArrayExportable(Protocol):
    def __arrow_c_array__(self, requested_schema: object | None = None) -> tuple[object, object]: ...

class _ArrowSchemaExportable(Protocol):
    def __arrow_c_schema__(self) -> object: ...

#: What a write takes: Arrow IPC stream bytes, or any Arrow PyCapsule producer (a pyarrow
#: Table, RecordBatch or RecordBatchReader, a polars or pandas DataFrame, ...).
WriteData = Union[bytes, bytearray, memoryview, _ArrowStreamExportable, _ArrowArrayExportable]

#: A frame's schema: column name to type (``"int64"``, ``"utf8"``, ``"timestamp(us, UTC)"``,
#: ``"decimal128(10, 2)"``, ...), a list of ``(name, type)`` pairs, or an Arrow schema.
SchemaLike = Union[Mapping[str, str], Sequence[tuple[str, str]], _ArrowSchemaExportable]

class ArrowStream:
    """Query results that Arrow libraries import without copies.

    Pass it to ``pyarrow.table()``, ``polars.DataFrame()``, ``duckdb.arrow()``, ...; it can
    be read any number of times.
    """

    @property
    def num_rows(self) -> int:
        """Rows in the result."""
    @property
    def column_names(self) -> list[str]:
        """Columns in the result."""
    def __arrow_c_stream__(self, requested_schema: object | None = None) -> object:
        """The Arrow PyCapsule stream interface."""
    def __arrow_c_schema__(self) -> object:
        """The Arrow PyCapsule schema interface."""
    def __len__(self) -> int: ...

class Session:
    """A SQL session: ``USE hive[.box]`` and ``SET`` last for its lifetime."""

    def sql(self, query: str) -> bytes:
        """Runs SQL in this session; the rows as Arrow IPC stream bytes."""
    def query(self, query: str) -> pyarrow.Table:
        """Runs SQL in this session; the rows as a ``pyarrow.Table``."""
    def sql_arrow(self, query: str) -> ArrowStream:
        """Runs SQL in this session; the rows as an :class:`ArrowStream`."""

class Apiary:
    """A handle on an Apiary storage root and, after :meth:`start`, a node of its swarm.

    ``storage`` is a folder, ``file://...``, ``memory://``, ``s3://bucket/prefix``,
    ``gs://...`` or ``az://...``; by default ``APIARY_STORAGE``, else ``./apiary-data``.
    S3 credentials and endpoint come from the ``AWS_*`` variables when the handle is made;
    opening waits at most ``APIARY_STORAGE_TIMEOUT`` (60 s). ``state_dir`` is this node's
    local state folder (default ``APIARY_STATE_DIR``; two nodes on one machine need one
    each) and ``node_id`` its id (default ``APIARY_NODE_ID``, else generated once and kept).
    Every call releases the GIL while it waits, and Ctrl-C interrupts it.
    """

    def __init__(
        self,
        name: str = "apiary",
        storage: str | os.PathLike[str] | None = None,
        *,
        state_dir: str | os.PathLike[str] | None = None,
        node_id: str | None = None,
    ) -> None: ...
    @property
    def storage(self) -> str:
        """The storage URI."""
    def start(self) -> None:
        """Joins the swarm as a node (tuned by the ``APIARY_*`` variables and the
        constructor's ``state_dir`` and ``node_id``).

        The first heartbeat is durable when this returns. The node leaves on
        :meth:`shutdown`, when the handle is garbage-collected, or at interpreter exit.
        """
    def shutdown(self) -> None:
        """Leaves the swarm gracefully; a no-op when not started."""
    def status(self) -> dict[str, Any]:
        """This node: ``name``, ``node_id``, ``running``, ``cores``, ``memory_gb``, ``bees``,
        ``storage``, ``storage_uri``, ``tasks_run``, ``tasks_failed``, ``cache``."""
    def swarm_status(self) -> dict[str, Any]:
        """The swarm: ``alive``, ``total_bees``, ``nodes`` (each with ``node_id``,
        ``state``, ``cores``, ``memory_gb``, ``bees``, ``idle_bees``, ``temperature``, ...)
        and ``problems``."""
    def colony_status(self) -> dict[str, Any]:
        """The running node's colony: ``temperature``, ``regulation``, ``setpoint``,
        ``signals``, ``abandoned_tasks``, ``recent_abandoned``, ``throttled``, ``refused``,
        ``bees``. Raises :class:`ClosedError` when not started."""
    def bee_status(self) -> list[dict[str, Any]]:
        """The running node's bees."""
    def drain_node(self, node_id: str) -> None:
        """Asks node ``node_id`` to drain and leave; it does so on its next poll."""
    def create_hive(self, hive: str) -> bool:
        """Creates a hive; True when created, False when it existed."""
    def create_box(self, hive: str, box: str) -> bool:
        """Creates a box in a hive; True when created, False when it existed."""
    def create_frame(
        self,
        hive: str,
        box: str,
        frame: str,
        schema: SchemaLike,
        partition_by: str | Sequence[str] | None = None,
    ) -> bool:
        """Creates a frame; columns are nullable except the partition columns.

        True when created, False when an identical frame existed; a different definition
        raises :class:`ConflictError`.
        """
    def list_hives(self) -> list[str]:
        """Hive names."""
    def list_boxes(self, hive: str) -> list[str]:
        """The box names of a hive."""
    def list_frames(self, hive: str, box: str) -> list[str]:
        """The frame names of a box."""
    def describe_frame(self, hive: str, box: str, frame: str) -> dict[str, Any]:
        """``name``, ``version``, ``definition``, ``cells``, ``rows``, ``bytes``."""
    def drop_hive(self, hive: str, cascade: bool = False) -> None:
        """Drops a hive; without ``cascade`` it must be empty."""
    def drop_box(self, hive: str, box: str, cascade: bool = False) -> None:
        """Drops a box; without ``cascade`` it must be empty."""
    def drop_frame(self, hive: str, box: str, frame: str) -> None:
        """Drops a frame."""
    def write_to_frame(self, hive: str, box: str, frame: str, data: WriteData) -> dict[str, Any]:
        """Appends rows in one commit; columns are matched by name.

        Returns ``version``, ``cells_written``, ``rows_written``, ``bytes_written``,
        ``duration_ms``. Data that does not fit the frame raises
        :class:`InvalidInputError` and commits nothing.
        """
    def overwrite_frame(self, hive: str, box: str, frame: str, data: WriteData) -> dict[str, Any]:
        """Replaces a frame's rows atomically (same inputs and result as ``write_to_frame``)."""
    def read_from_frame(
        self,
        hive: str,
        box: str,
        frame: str,
        partition_filter: Mapping[str, str] | None = None,
        *,
        version: int | None = None,
    ) -> bytes:
        """A frame's rows as Arrow IPC stream bytes (only matching partitions with a filter),
        at its newest version or at ``version``."""
    def read_table(
        self,
        hive: str,
        box: str,
        frame: str,
        partition_filter: Mapping[str, str] | None = None,
        *,
        version: int | None = None,
    ) -> pyarrow.Table:
        """``read_from_frame`` as a ``pyarrow.Table``, without copies."""
    def read_frame(
        self,
        name: str,
        version: int | None = None,
        *,
        partition_filter: Mapping[str, str] | None = None,
    ) -> pyarrow.Table:
        """The frame ``"hive.box.frame"`` at its newest version or at ``version`` (what
        ``SELECT * FROM name VERSION AS OF version`` reads); a version past vacuum's
        retention raises :class:`NotFoundError` naming the oldest retained one."""
    def history(self, name: str) -> list[dict[str, Any]]:
        """The commits of frame ``"hive.box.frame"``, oldest first: ``version``,
        ``committed_at_ms``, ``operation``, ``writer``, ``cells_added``, ``cells_removed``,
        ``rows_added``, ``rows_removed``."""
    def sql(self, query: str) -> bytes:
        """Runs SQL; the last statement's rows as Arrow IPC stream bytes.

        Read-only: DDL, DML and file access raise :class:`InvalidInputError` naming the call
        to use instead.
        """
    def query(self, query: str) -> pyarrow.Table:
        """``sql``, with the rows as a ``pyarrow.Table`` (imported without copies)."""
    def sql_arrow(self, query: str) -> ArrowStream:
        """``sql``, with the rows as an :class:`ArrowStream` (no pyarrow needed)."""
    def session(self) -> Session:
        """A SQL session for ``USE`` and ``SET``."""
    def vacuum(
        self,
        hive: str,
        box: str,
        frame: str,
        retention: float | datetime.timedelta | None = None,
    ) -> dict[str, Any]:
        """Deletes cell files no version within ``retention`` (default 1 hour) needs."""
    def compact(self, hive: str, box: str, frame: str) -> dict[str, Any]:
        """Rewrites the frame's small cells into cells near the target size."""
    def __enter__(self) -> Apiary: ...
    def __exit__(self, *args: object) -> bool: ...

def shutdown_all() -> None:
    """Leaves the swarm with every node still running in this process."""
