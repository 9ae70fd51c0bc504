"""The seeds' tutorials, run as written: three `apiary node` processes and the S3 test server
stand in for the Compose file's containers and MinIO.

Seed 001 step 5 calls `pa.ipc.new_stream_writer`, which pyarrow does not have; the test uses
`pa.ipc.new_stream`, pyarrow's name for the same writer.
"""

from __future__ import annotations

import os
import random

import pyarrow as pa
import pytest

from apiary import Apiary
from conftest import alive_ids, wait_for


def assert_matches_pandas(result_bytes: bytes, df, key: str, count: str) -> None:
    """The tutorial's `GROUP BY key` (COUNT as `count`, AVG(duration_ms)) equals pandas'."""
    got = pa.ipc.open_stream(result_bytes).read_all().to_pandas()
    want = (
        df.groupby(key)
        .agg(**{count: ("event_id", "count"), "avg_duration": ("duration_ms", "mean")})
        .reset_index()
        .sort_values([count, key], ascending=[False, True])
        .reset_index(drop=True)
    )
    assert list(got[key]) == list(want[key])
    assert list(got[count]) == list(want[count])
    assert got["avg_duration"].round(9).tolist() == want["avg_duration"].round(9).tolist()


def test_seed_001_multi_node_swarm(s3_storage: str, nodes, monkeypatch: pytest.MonkeyPatch) -> None:
    # Step 1-2: the cluster (three nodes on the shared storage).
    for _ in range(3):
        nodes.start(s3_storage)

    # Step 3: connect a client. AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_ENDPOINT_URL
    # are in the environment, as the tutorial sets them (scripts/test.sh exports the S3
    # server's). Queries this small distribute only when told to: the tutorial's swarm is
    # there to show distribution.
    assert os.environ["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1")
    monkeypatch.setenv("APIARY_DISTRIBUTE_MIN_BYTES", "1")
    ap = Apiary("swarm", storage=s3_storage)
    ap.start()

    # Step 4: all three nodes are visible, four with the client.
    swarm = wait_for("four alive nodes", lambda: (s := ap.swarm_status())["alive"] == 4 and s, timeout=30)
    assert swarm["total_bees"] >= 4
    me = ap.status()["node_id"]
    assert me in alive_ids(swarm)
    for node in swarm["nodes"]:
        assert node["cores"] >= 1 and node["memory_gb"] > 0
        assert f"  {node['node_id']}: {node['state']} ({node['cores']} cores, {node['memory_gb']:.1f} GB)"

    # Step 5: write 10 000 rows across eight countries, as Arrow IPC bytes.
    ap.create_hive("analytics")
    ap.create_box("analytics", "events")
    ap.create_frame(
        "analytics",
        "events",
        "clicks",
        {"event_id": "int64", "user_id": "utf8", "page": "utf8", "duration_ms": "int64", "country": "utf8"},
        partition_by=["country"],
    )
    countries = ["us", "uk", "de", "fr", "jp", "br", "au", "ca"]
    pages = ["/home", "/products", "/about", "/pricing", "/docs", "/blog"]
    rng = random.Random(1)
    all_rows = {"event_id": [], "user_id": [], "page": [], "duration_ms": [], "country": []}
    for i in range(10000):
        all_rows["event_id"].append(i)
        all_rows["user_id"].append(f"user_{rng.randint(1, 500)}")
        all_rows["page"].append(rng.choice(pages))
        all_rows["duration_ms"].append(rng.randint(100, 30000))
        all_rows["country"].append(rng.choice(countries))
    table = pa.table(all_rows)
    sink = pa.BufferOutputStream()
    writer = pa.ipc.new_stream(sink, table.schema)
    writer.write_table(table)
    writer.close()
    result = ap.write_to_frame("analytics", "events", "clicks", sink.getvalue().to_pybytes())
    assert result["rows_written"] == 10000
    assert result["cells_written"] == len(countries)

    # Step 6: the two GROUP BY queries equal what pandas computes from the same table.
    df = table.to_pandas()
    result_bytes = ap.sql(
        """
        SELECT page, COUNT(*) AS visits, AVG(duration_ms) AS avg_duration
        FROM analytics.events.clicks
        GROUP BY page
        ORDER BY visits DESC, page
        """
    )
    assert_matches_pandas(result_bytes, df, "page", "visits")
    result_bytes = ap.sql(
        """
        SELECT country, COUNT(*) AS events, AVG(duration_ms) AS avg_duration
        FROM analytics.events.clicks
        GROUP BY country
        ORDER BY events DESC, country
        """
    )
    assert_matches_pandas(result_bytes, df, "country", "events")

    # EXPLAIN ANALYZE shows how the cells were distributed: tasks on several nodes.
    result_bytes = ap.sql(
        """
        EXPLAIN ANALYZE
        SELECT country, COUNT(*)
        FROM analytics.events.clicks
        GROUP BY country
        """
    )
    plan = pa.ipc.open_stream(result_bytes).read_all().to_pandas()
    text = "\n".join(plan.iloc[:, -1].astype(str))
    task_nodes = {part.split("=", 1)[1].split()[0].strip(",") for part in text.split() if part.startswith("node=")}
    assert len(task_nodes) >= 2, text

    # At the defaults this 97 KB frame stays local, and EXPLAIN says why and what to set.
    monkeypatch.delenv("APIARY_DISTRIBUTE_MIN_BYTES")
    defaults = Apiary("defaults", storage=s3_storage)
    plan = pa.ipc.open_stream(defaults.sql("EXPLAIN SELECT country, COUNT(*) FROM analytics.events.clicks GROUP BY country")).read_all()
    reasons = [p for t, p in zip(plan.column(0).to_pylist(), plan.column(1).to_pylist()) if t == "apiary_distribution"]
    assert len(reasons) == 1 and reasons[0].startswith("local: reads "), plan
    assert "< 64 MiB" in reasons[0] and "4 nodes alive" in reasons[0], reasons
    assert "SET apiary.distribute = 'always'" in reasons[0], reasons

    # Step 7: a fourth node joins and is seen.
    before = alive_ids(ap.swarm_status())
    nodes.start(s3_storage)
    swarm = wait_for("a fifth alive node", lambda: (s := ap.swarm_status())["alive"] == 5 and s, timeout=30)
    assert before < alive_ids(swarm)

    # Step 8: colony status.
    colony = ap.colony_status()
    assert isinstance(colony["temperature"], float)
    assert f"Temperature: {colony['temperature']:.2f}"
    assert colony["regulation"] in {"cold", "ideal", "warm", "hot", "critical"}
    assert colony["abandoned_tasks"] == 0

    # Step 9: shutdown leaves: the client's heartbeat is gone for everyone.
    ap.shutdown()
    observer = Apiary("observer", storage=s3_storage)
    wait_for(
        "the client's heartbeat to be removed",
        lambda: me not in {n["node_id"] for n in observer.swarm_status()["nodes"]},
        timeout=15,
    )
    assert observer.swarm_status()["alive"] == 4


def test_seed_000_a_new_node_is_seen_within_ten_seconds(s3_storage: str, nodes, monkeypatch: pytest.MonkeyPatch) -> None:
    # Seed 000's promise is made at the default timings (5 s heartbeats and polls).
    for key in ("APIARY_HEARTBEAT_INTERVAL", "APIARY_POLL_INTERVAL", "APIARY_DEAD_THRESHOLD"):
        monkeypatch.delenv(key)
    ap = Apiary("production", storage=s3_storage)
    ap.start()
    # "Verify it joined the swarm", printed right after start(): alive in its own view.
    swarm = ap.swarm_status()
    assert {n["node_id"] for n in swarm["nodes"]} == {ap.status()["node_id"]}
    assert swarm["alive"] == 1 and swarm["nodes"][0]["state"] == "alive", swarm

    defaults = {"APIARY_HEARTBEAT_INTERVAL": "5s", "APIARY_POLL_INTERVAL": "5s", "APIARY_DEAD_THRESHOLD": "30s"}
    proc = nodes.start(s3_storage, env=defaults, node_id="pi-new")
    # Seen alive at first sight (its heartbeat is fresh on the store's clock), not "joining"
    # until a second heartbeat has been seen.
    wait_for(
        "the new node alive in the world view",
        lambda: "pi-new" in alive_ids(ap.swarm_status()),
        timeout=10,
        every=0.1,
    )
    assert proc.poll() is None
    swarm = ap.swarm_status()
    for node in swarm["nodes"]:
        assert {"node_id", "state", "cores", "memory_gb"} <= node.keys()
    ap.shutdown()
