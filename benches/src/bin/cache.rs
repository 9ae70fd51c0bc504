//! Cold versus warm reads through a node's cell cache.
//!
//! 1. A scan of a frame of `--cells` cells (default 100): every query reads every cell. Cold
//!    is the first run on a node started with an empty cache; warm is the same query again.
//!    Reports medians, the ratio, and the cell GETs each query made (counted below the
//!    storage backend).
//! 2. With `--sf S` (> 0): the 13 Star Schema Benchmark queries, each cold (a fresh node and
//!    cache) and warm (again), with the geometric mean of the ratios.
//!
//! Storage: `APIARY_BENCH_S3` (an `s3://` URI; for the local test server:
//! `eval "$(scripts/s3-server.sh)"; export APIARY_BENCH_S3=$APIARY_TEST_S3`), else a local
//! folder (where cold and warm both read local disk).
//!
//! `cargo run --release -p apiary-benches --bin cache -- --cells 100 --runs 5 --sf 1`

#![allow(clippy::disallowed_methods)] // real processes and real time: waits and timings read the system clock
use std::sync::Arc;
use std::time::Instant;

use apiary::apiary_ledger::LedgerConfig;
use apiary::apiary_storage::{CountsHandle, StorageUri, counted_backend};
use apiary::{Apiary, NodeOptions};
use apiary_benches::harness::{flag, flags, geo_mean, load_apiary, median};
use apiary_benches::ssb::{QUERIES, generate};
use arrow_array::{ArrayRef, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};

const SCAN: &str = "SELECT COUNT(*), SUM(v), AVG(x) FROM bench.cache.scan WHERE x >= 0";

fn cell_rows(cell: i64, rows: i64) -> RecordBatch {
    let schema = Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("x", DataType::Int64, true),
        Field::new("v", DataType::Int64, true),
    ]);
    let ids: Vec<i64> = (cell * rows..(cell + 1) * rows).collect();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(ids.clone())),
        Arc::new(Int64Array::from_iter_values(
            ids.iter().map(|i| i * 7919 % 1_000_003),
        )),
        Arc::new(Int64Array::from_iter_values(ids.iter().map(|i| i % 1000))),
    ];
    RecordBatch::try_new(Arc::new(schema), columns).expect("batch")
}

/// A handle on `uri` whose requests are counted below the backend.
fn counted(uri: &StorageUri) -> (Apiary, CountsHandle) {
    let (backend, counts) = counted_backend(uri).expect("store");
    (
        Apiary::with_backend(uri.clone(), backend, LedgerConfig::default()),
        counts,
    )
}

/// A node on `uri` with an empty cache in `dir`.
async fn fresh_node(uri: &StorageUri, dir: &std::path::Path) -> (Apiary, CountsHandle) {
    let _ = std::fs::remove_dir_all(dir);
    let (ap, counts) = counted(uri);
    ap.start_with(NodeOptions {
        node_id: Some("bench".into()),
        state_dir: dir.to_path_buf(),
        cache_bytes: Some(8 << 30),
        // The disk cache alone (the memory tier would serve warm runs without reading it).
        memory_tier_bytes: Some(0),
        ..NodeOptions::default()
    })
    .await
    .expect("start");
    (ap, counts)
}

/// Milliseconds and cell GETs of one run of `sql`.
async fn timed(ap: &Apiary, counts: &CountsHandle, sql: &str) -> (f64, u64) {
    let before = counts.snapshot();
    let start = Instant::now();
    ap.sql(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    (ms, (counts.snapshot() - before).cell_get)
}

/// Cold and warm medians (ms) of `sql` over `runs` fresh nodes, and the cell GETs of the
/// last cold and warm runs.
async fn cold_warm(
    uri: &StorageUri,
    dir: &std::path::Path,
    sql: &str,
    runs: usize,
) -> (f64, f64, u64, u64) {
    let (mut cold, mut warm) = (Vec::new(), Vec::new());
    let (mut cold_gets, mut warm_gets) = (0, 0);
    for _ in 0..runs {
        let (ap, counts) = fresh_node(uri, dir).await;
        let (ms, gets) = timed(&ap, &counts, sql).await;
        cold.push(ms);
        cold_gets = gets;
        let (ms, gets) = timed(&ap, &counts, sql).await;
        warm.push(ms);
        warm_gets = gets;
        ap.shutdown().await.expect("shutdown");
    }
    (median(cold), median(warm), cold_gets, warm_gets)
}

#[tokio::main]
async fn main() {
    apiary_benches::allocate_like_a_node();
    let f = flags(&["cells", "rows", "runs", "sf"]);
    let cells: i64 = flag(&f, "cells", 100);
    let rows: i64 = flag(&f, "rows", 50_000);
    let runs: usize = flag(&f, "runs", 5);
    let sf: f64 = flag(&f, "sf", 0.0);
    let scratch = tempfile::tempdir().expect("temp dir");
    let uri = match std::env::var("APIARY_BENCH_S3") {
        Ok(base) => StorageUri::parse(&format!(
            "{}/cache-bench-{}",
            base.trim_end_matches('/'),
            std::process::id()
        ))
        .expect("APIARY_BENCH_S3 is a storage URI"),
        Err(_) => StorageUri::Local(scratch.path().join("storage")),
    };
    println!("storage: {uri}");
    let loader = Apiary::open(&uri.to_string()).await.expect("open");
    loader.create_hive("bench").await.expect("hive");
    loader.create_box("bench", "cache").await.expect("box");
    loader
        .create_frame(
            "bench",
            "cache",
            "scan",
            &[("id", "int64"), ("x", "int64"), ("v", "int64")],
            &[],
        )
        .await
        .expect("frame");
    for cell in 0..cells {
        loader
            .write_to_frame("bench", "cache", "scan", [cell_rows(cell, rows)])
            .await
            .expect("write");
    }
    let info = loader
        .describe_frame("bench", "cache", "scan")
        .await
        .expect("describe");
    println!(
        "scan: {} cells, {} rows, {:.1} MiB",
        info.cells,
        info.rows,
        info.bytes as f64 / (1 << 20) as f64
    );
    let node_dir = scratch.path().join("node");
    let (cold, warm, cold_gets, warm_gets) = cold_warm(&uri, &node_dir, SCAN, runs).await;
    println!(
        "scan of {cells} cells: cold {cold:.1} ms ({cold_gets} cell GETs), warm {warm:.1} ms \
         ({warm_gets} cell GETs): cold / warm {:.2}",
        cold / warm
    );

    if sf > 0.0 {
        let tables = generate(sf, 42);
        load_apiary(&loader, "ssb", "sf", &tables).await;
        let mut ratios = Vec::new();
        for (name, sql) in QUERIES {
            let sql = format!("USE ssb.sf; {sql}");
            let (cold, warm, cold_gets, warm_gets) = cold_warm(&uri, &node_dir, &sql, runs).await;
            println!(
                "SSB {name}: cold {cold:.1} ms ({cold_gets} cell GETs), warm {warm:.1} ms \
                 ({warm_gets}): {:.2}",
                cold / warm
            );
            ratios.push(cold / warm);
        }
        println!(
            "SSB SF {sf}: geometric mean of cold / warm: {:.2}",
            geo_mean(&ratios)
        );
    }
}
