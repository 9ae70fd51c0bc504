"""What a Python user relies on: threads, the GIL, Ctrl-C, event loops, and nodes that leave
cleanly however the handle goes away."""

from __future__ import annotations

import asyncio
import gc
import pathlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pytest

from apiary import Apiary, ApiaryError
from conftest import run_python, wait_for

#: A join whose work grows with the square of the rows sharing a key.
JOIN = "SELECT COUNT(*) AS n FROM h.b.big x JOIN h.b.big y ON x.k = y.k"


def big_frame(ap: Apiary, rows: int, keys: int) -> int:
    """A frame whose self-join on `k` yields the returned number of rows."""
    ap.create_hive("h")
    ap.create_box("h", "b")
    ap.create_frame("h", "b", "big", {"id": "int64", "k": "int64"})
    ap.write_to_frame("h", "b", "big", pa.table({"id": list(range(rows)), "k": [i % keys for i in range(rows)]}))
    per_key = [rows // keys + (1 if i < rows % keys else 0) for i in range(keys)]
    return sum(n * n for n in per_key)


@pytest.mark.parametrize("started", [False, True], ids=["client", "node"])
def test_queries_from_many_threads_at_once(tmp_path: pathlib.Path, started: bool) -> None:
    ap = Apiary("threads", storage=str(tmp_path / "data"))
    expected = big_frame(ap, 2000, 50)
    # A node runs queries on its bees and refuses new ones when far more wait than it has
    # bees (its colony is critical): as many threads as bees there, eight on a client.
    workers = 8
    if started:
        ap.start()
        workers = ap.status()["bees"]

    def work(i: int) -> tuple[int, int]:
        n = ap.query(JOIN).column("n")[0].as_py()
        m = ap.query(f"SELECT COUNT(*) AS m FROM h.b.big WHERE k = {i % 50}").column("m")[0].as_py()
        return n, m

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(work, range(32)))
    assert all(n == expected for n, _ in results)
    assert all(m == 40 for _, m in results)
    ap.shutdown()


def test_other_threads_run_while_a_query_waits(tmp_path: pathlib.Path) -> None:
    ap = Apiary("gil", storage=str(tmp_path / "data"))
    expected = big_frame(ap, 20000, 20)
    answer: list[int] = []
    query = threading.Thread(target=lambda: answer.append(ap.query(JOIN).column("n")[0].as_py()))
    ticks = 0
    query.start()
    # Pure-Python work on this thread while the query runs on the other: if the query held
    # the GIL, this loop would not advance until the query finished.
    while query.is_alive():
        ticks += 1
        time.sleep(0.001)
    query.join()
    assert answer == [expected]
    assert ticks > 20, f"the main thread ran {ticks} times during the query"


def test_ctrl_c_interrupts_a_long_query(tmp_path: pathlib.Path) -> None:
    code = f"""
import _thread, threading, time
import pyarrow as pa
from apiary import Apiary
ap = Apiary("interrupt", storage={str(tmp_path / "data")!r})
ap.create_hive("h"); ap.create_box("h", "b")
ap.create_frame("h", "b", "big", {{"id": "int64", "k": "int64"}})
ap.write_to_frame("h", "b", "big", pa.table({{"id": list(range(200000)), "k": [0] * 200000}}))
threading.Timer(0.5, _thread.interrupt_main).start()
started = time.monotonic()
try:
    ap.sql({JOIN!r})
    print("FINISHED")
except KeyboardInterrupt:
    print("INTERRUPTED after", round(time.monotonic() - started, 2))
print("still usable:", ap.query("SELECT COUNT(*) AS n FROM h.b.big").column("n")[0].as_py())
"""
    done = run_python(code, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "INTERRUPTED after" in done.stdout, done.stdout
    assert "still usable: 200000" in done.stdout


def test_inside_a_running_event_loop(tmp_path: pathlib.Path) -> None:
    # Jupyter runs cells inside an asyncio loop: the blocking API must work there.
    ap = Apiary("jupyter", storage=str(tmp_path / "data"))

    async def cell() -> int:
        ap.start()
        big_frame(ap, 100, 10)
        n = ap.query("SELECT COUNT(*) AS n FROM h.b.big").column("n")[0].as_py()
        ap.shutdown()
        return n

    assert asyncio.run(cell()) == 100


def heartbeat_ids(storage: pathlib.Path) -> set[str]:
    folder = storage / "_heartbeats"
    return {p.stem.removeprefix("node_") for p in folder.glob("node_*.json")} if folder.exists() else set()


def test_one_node_per_handle_and_leaving(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    storage = tmp_path / "data"
    monkeypatch.setenv("APIARY_NODE_ID", "first")
    first = Apiary("a", storage=str(storage))
    first.start()
    monkeypatch.setenv("APIARY_NODE_ID", "second")
    monkeypatch.setenv("APIARY_STATE_DIR", str(tmp_path / "state2"))
    with Apiary("b", storage=str(storage)) as second:
        second.start()
        assert heartbeat_ids(storage) == {"first", "second"}
        with pytest.raises(Exception, match="already started"):
            second.start()
    # Leaving the `with` block shut the second node down.
    assert heartbeat_ids(storage) == {"first"}
    # Garbage collection of a started handle leaves the swarm too.
    del first
    gc.collect()
    wait_for("the collected node's heartbeat to go", lambda: heartbeat_ids(storage) == set(), timeout=10)


def test_interpreter_exit_leaves_the_swarm(tmp_path: pathlib.Path) -> None:
    storage = tmp_path / "data"
    code = f"""
from apiary import Apiary
ap = Apiary("exit", storage={str(storage)!r})
ap.start()
print(ap.status()["node_id"])
# no shutdown(): the interpreter's exit must leave the swarm
"""
    done = run_python(code, env={"APIARY_NODE_ID": "exiting"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "exiting"
    assert heartbeat_ids(storage) == set()
    swarm = Apiary("observer", storage=str(storage)).swarm_status()
    assert swarm["nodes"] == []


def test_ctrl_c_during_a_write_commits_nothing(tmp_path: pathlib.Path) -> None:
    code = f"""
import _thread, threading, time
import pyarrow as pa
from apiary import Apiary
ap = Apiary("interrupt", storage={str(tmp_path / "data")!r})
ap.create_hive("h"); ap.create_box("h", "b")
ap.create_frame("h", "b", "f", {{"id": "int64"}})
def slow():
    for i in range(1000):
        time.sleep(0.01)
        yield pa.record_batch({{"id": [i]}})
reader = pa.RecordBatchReader.from_batches(pa.schema([("id", pa.int64())]), slow())
threading.Timer(0.5, _thread.interrupt_main).start()
try:
    ap.write_to_frame("h", "b", "f", reader)
    print("FINISHED")
except KeyboardInterrupt:
    print("INTERRUPTED")
time.sleep(0.5)
info = ap.describe_frame("h", "b", "f")
print("version", info["version"], "rows", info["rows"])
ap.write_to_frame("h", "b", "f", pa.table({{"id": [1, 2]}}))
print("after", ap.describe_frame("h", "b", "f")["rows"])
"""
    done = run_python(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:3] == ["INTERRUPTED", "version 0 rows 0", "after 2"], done.stdout


def test_state_dir_and_node_id_are_constructor_arguments(tmp_path: pathlib.Path) -> None:
    storage = tmp_path / "data"
    with Apiary("one", storage=str(storage), state_dir=tmp_path / "s1", node_id="one") as a:
        a.start()
        # A second node on this machine needs its own state folder; given one, it joins.
        with Apiary("two", storage=str(storage), state_dir=str(tmp_path / "s2")) as b:
            b.start()
            second = b.status()["node_id"]
            assert heartbeat_ids(storage) == {"one", second}
        assert (tmp_path / "s2").is_dir()
        # The same folder twice is refused, naming the Python argument to give.
        with Apiary("three", storage=str(storage), state_dir=tmp_path / "s1", node_id="one") as c:
            with pytest.raises(ApiaryError, match="state_dir="):
                c.start()


def test_help_shows_the_constructors_signature() -> None:
    import inspect

    signature = str(inspect.signature(Apiary))
    assert signature == "(name='apiary', storage=None, *, state_dir=None, node_id=None)", signature
    assert "state_dir" in (Apiary.__doc__ or "")


def test_ctrl_c_interrupts_opening_a_storage_that_never_answers(tmp_path: pathlib.Path) -> None:
    import socket

    # A server that accepts connections and never answers.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    code = f"""
import _thread, os, threading, time
os.environ.update(AWS_ENDPOINT_URL="http://127.0.0.1:{port}", AWS_ACCESS_KEY_ID="x",
                  AWS_SECRET_ACCESS_KEY="y", AWS_REGION="us-east-1", APIARY_STORAGE_TIMEOUT="300s")
from apiary import Apiary
threading.Timer(1.0, _thread.interrupt_main).start()
started = time.monotonic()
try:
    Apiary("silent", storage="s3://bucket/prefix")
    print("OPENED")
except KeyboardInterrupt:
    print("INTERRUPTED after", round(time.monotonic() - started, 1))
"""
    try:
        done = run_python(code, timeout=120)
    finally:
        listener.close()
    assert done.returncode == 0, done.stderr
    # Interrupted, not timed out: the timeout would have raised UnavailableError.
    assert "INTERRUPTED after" in done.stdout, (done.stdout, done.stderr)
