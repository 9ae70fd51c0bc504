"""Writing and reading back rows through Python, next to the same through the Rust API, to
deltalake's `write_deltalake`, and to DuckDB reading the Parquet cells Apiary wrote.

Not a test: it prints medians and ratios. Build both sides in release first:

    cargo build --release -p apiary-benches --bin io
    (cd apiary-python && maturin develop --release)
    pip install -r apiary-python/bench/requirements.txt
    python apiary-python/bench/io.py --rows 10000000 --runs 3

The rows are the tutorial's click events (event_id, user_id, page, duration_ms, country),
generated once with a fixed seed; every tool gets the same in-memory table (the Rust binary
reads the same rows from an Arrow IPC file before it starts timing). Apiary and deltalake
both partition by country.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import tempfile
import time

import numpy as np
import pyarrow as pa

REPO = pathlib.Path(__file__).resolve().parents[2]
COUNTRIES = ["us", "uk", "de", "fr", "jp", "br", "au", "ca"]
PAGES = ["/home", "/products", "/about", "/pricing", "/docs", "/blog"]


def generate(rows: int) -> pa.Table:
    rng = np.random.default_rng(7)
    users = pa.array([f"user_{i}" for i in range(1, 50_001)])
    return pa.table(
        {
            "event_id": pa.array(np.arange(rows, dtype=np.int64)),
            "user_id": users.take(pa.array(rng.integers(0, len(users), rows))),
            "page": pa.array(PAGES).take(pa.array(rng.integers(0, len(PAGES), rows))),
            "duration_ms": pa.array(rng.integers(100, 30_000, rows, dtype=np.int64)),
            "country": pa.array(COUNTRIES).take(pa.array(rng.integers(0, len(COUNTRIES), rows))),
        }
    ).combine_chunks()


def timed(fn) -> tuple[float, object]:
    started = time.perf_counter()
    out = fn()
    return time.perf_counter() - started, out


#: Runs per tool before the counted ones: a process's first large allocations pay for page
#: faults, which is not what is compared. Every tool gets the same.
WARMUP = 1


def apiary_python(table: pa.Table, root: pathlib.Path, runs: int) -> tuple[float, float, pathlib.Path]:
    from apiary import Apiary

    writes, reads = [], []
    keep = root / "apiary-keep"
    for run in range(WARMUP + runs):
        folder = root / f"py-{run}"
        ap = Apiary("bench", storage=str(folder))
        ap.create_hive("bench")
        ap.create_box("bench", "io")
        ap.create_frame("bench", "io", "rows", table.schema, partition_by=["country"])
        # pyarrow's batches of 64 Ki rows, as a reader of a file or a pipeline hands them over.
        reader = pa.RecordBatchReader.from_batches(table.schema, table.to_batches(max_chunksize=65536))
        t, result = timed(lambda: ap.write_to_frame("bench", "io", "rows", reader))
        assert result["rows_written"] == table.num_rows
        writes.append(t)
        t, back = timed(lambda: ap.read_table("bench", "io", "rows"))
        assert back.num_rows == table.num_rows
        reads.append(t)
        del back, ap
        if run == 0:
            folder.rename(keep)
        else:
            shutil.rmtree(folder)
    return statistics.median(writes[WARMUP:]), statistics.median(reads[WARMUP:]), keep


def apiary_rust(table: pa.Table, root: pathlib.Path, runs: int) -> tuple[float, float]:
    binary = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target")) / "release" / "io"
    if not binary.exists():
        raise SystemExit(f"{binary} is missing: cargo build --release -p apiary-benches --bin io")
    source = root / "rows.arrows"
    with pa.OSFile(str(source), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        for batch in table.to_batches(max_chunksize=65536):
            writer.write_batch(batch)
    done = subprocess.run(
        [str(binary), "--input", str(source), "--storage", str(root), "--runs", str(runs), "--warmup", str(WARMUP)],
        capture_output=True,
        text=True,
        check=True,
    )
    source.unlink()
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["rows"] == table.num_rows
    return figures["write_s"], figures["read_s"]


def delta(table: pa.Table, root: pathlib.Path, runs: int) -> tuple[float, float]:
    from deltalake import DeltaTable, write_deltalake

    writes, reads = [], []
    for run in range(WARMUP + runs):
        folder = root / f"delta-{run}"
        t, _ = timed(lambda: write_deltalake(str(folder), table, partition_by=["country"]))
        writes.append(t)
        t, back = timed(lambda: DeltaTable(str(folder)).to_pyarrow_table())
        assert back.num_rows == table.num_rows
        reads.append(t)
        shutil.rmtree(folder)
    return statistics.median(writes[WARMUP:]), statistics.median(reads[WARMUP:])


def duckdb_read(cells: pathlib.Path, rows: int, runs: int) -> float:
    import duckdb

    pattern = str(cells / "**" / "*.parquet")
    con = duckdb.connect()
    reads = []
    for _ in range(WARMUP + runs):
        # DuckDB 2's .arrow() hands back a lazy reader: the timing includes reading it all.
        query = f"SELECT * FROM read_parquet('{pattern}', hive_partitioning = true)"
        t, back = timed(lambda: pa.table(con.sql(query).arrow()))
        assert back.num_rows == rows
        reads.append(t)
    return statistics.median(reads[WARMUP:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", type=pathlib.Path, default=None, help="scratch folder (default: a temporary one)")
    args = parser.parse_args()
    root = pathlib.Path(tempfile.mkdtemp(prefix="apiary-io-", dir=args.dir))
    try:
        _, table = timed(lambda: generate(args.rows))
        print(f"rows: {table.num_rows}, {table.nbytes / 2**20:.0f} MiB in memory, {args.runs} runs (medians)")
        rust_w, rust_r = apiary_rust(table, root, args.runs)
        py_w, py_r, cells = apiary_python(table, root, args.runs)
        delta_w, delta_r = delta(table, root, args.runs)
        duck_r = duckdb_read(cells, table.num_rows, args.runs)
        rows = [
            ("Apiary, Rust API", rust_w, rust_r),
            ("Apiary, Python", py_w, py_r),
            ("deltalake write_deltalake / to_pyarrow_table", delta_w, delta_r),
            ("DuckDB read_parquet of Apiary's cells", None, duck_r),
        ]
        print(f"{'':48} {'write s':>9} {'read s':>9}")
        for name, w, r in rows:
            print(f"{name:48} {('%.3f' % w) if w is not None else '-':>9} {r:9.3f}")
        print(f"python / rust: write ratio {py_w / rust_w:.3f}, read ratio {py_r / rust_r:.3f}")
        print(f"python / deltalake: write ratio {py_w / delta_w:.3f}, read ratio {py_r / delta_r:.3f}")
        print(f"python / duckdb: read ratio {py_r / duck_r:.3f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
