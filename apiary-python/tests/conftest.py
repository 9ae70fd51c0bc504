"""Shared fixtures: the `apiary` binary, node processes, the S3 test server, waiting."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import time
import uuid
from typing import Callable, Iterator, TypeVar

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
T = TypeVar("T")

#: Timings for tests: a node beats and reads the swarm every second.
FAST = {
    "APIARY_HEARTBEAT_INTERVAL": "1s",
    "APIARY_POLL_INTERVAL": "1s",
    "APIARY_DEAD_THRESHOLD": "10s",
    "APIARY_TASK_POLL_INTERVAL": "100ms",
}


def apiary_binary() -> str:
    """The `apiary` binary the Rust build made (APIARY_BIN overrides)."""
    if os.environ.get("APIARY_BIN"):
        return os.environ["APIARY_BIN"]
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    path = target / "debug" / "apiary"
    if not path.exists():
        pytest.fail(f"{path} is missing: build it with `cargo build -p apiary-node` (scripts/test.sh does)")
    return str(path)


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 20.0, every: float = 0.2) -> T:
    """Calls `probe` until it returns something truthy; fails naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(every)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


def alive_ids(status: dict) -> set[str]:
    return {n["node_id"] for n in status["nodes"] if n["state"] == "alive"}


@pytest.fixture
def s3_storage() -> str:
    """A fresh prefix on the S3 test server that scripts/test.sh starts."""
    base = os.environ.get("APIARY_TEST_S3")
    if not base:
        pytest.fail("APIARY_TEST_S3 is not set: run the tests with scripts/test.sh, which starts the S3 server")
    return f"{base}/py-{uuid.uuid4().hex[:12]}"


@pytest.fixture(autouse=True)
def node_env(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test's nodes keep their state (and so their node id) in its own folder, on fast
    timings."""
    monkeypatch.setenv("APIARY_STATE_DIR", str(tmp_path / "state"))
    for key, value in FAST.items():
        monkeypatch.setenv(key, value)


class NodeProcesses:
    """`apiary node` processes sharing one storage, stopped (SIGTERM) at the end."""

    def __init__(self, root: pathlib.Path) -> None:
        self.root = root
        self.procs: list[subprocess.Popen] = []

    def start(self, storage: str, env: dict[str, str] | None = None, node_id: str | None = None) -> subprocess.Popen:
        i = len(self.procs)
        state = self.root / f"node-{i}"
        state.mkdir(parents=True, exist_ok=True)
        full = {**os.environ, **FAST, "APIARY_STATE_DIR": str(state), "RUST_LOG": "warn"}
        full.pop("APIARY_NODE_ID", None)
        full.update(env or {})
        if node_id:
            full["APIARY_NODE_ID"] = node_id
        log = open(self.root / f"node-{i}.log", "wb")
        proc = subprocess.Popen(
            [apiary_binary(), "--storage", storage, "node"],
            env=full,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted(self.root.glob("node-*.log"))
        )


@pytest.fixture
def nodes(tmp_path: pathlib.Path) -> Iterator[NodeProcesses]:
    procs = NodeProcesses(tmp_path / "nodes")
    procs.root.mkdir()
    try:
        yield procs
    finally:
        procs.stop()


def ipc_bytes(table) -> bytes:
    """`table` as an Arrow IPC stream, as seed 001 writes it."""
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    writer = pa.ipc.new_stream(sink, table.schema)
    writer.write_table(table)
    writer.close()
    return sink.getvalue().to_pybytes()


def run_python(code: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Runs `code` in a fresh interpreter of this environment."""
    import sys

    return subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
