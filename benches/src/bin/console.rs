//! Latency of the console's API on a node running queries: p50, p99 and the worst of
//! `GET /api/v1/nodes` and `GET /metrics` (target: p99 at most 5 ms), first on the idle
//! node, then while `--clients` loops run a scan over a frame of `--cells` cells on it.
//!
//! The node is embedded (one process), on a local folder, with its console on loopback
//! behind a token (each request is checked, as in production). Requests are sent one after
//! another over one keep-alive connection.
//!
//! `cargo run --release -p apiary-benches --bin console -- --requests 2000 --clients 4`

#![allow(clippy::disallowed_methods)] // real sockets and real time: latencies read the system clock
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use apiary::apiary_console::{ConsoleConfig, Scope};
use apiary::apiary_storage::StorageUri;
use apiary::{Apiary, ApiaryOptions, ErrorKind, NodeOptions};
use apiary_benches::harness::{flag, flags};
use arrow_array::{ArrayRef, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};

const SCAN: &str = "SELECT x % 97 AS k, COUNT(*), SUM(v) FROM bench.console.scan GROUP BY k";

fn cell(cell: i64, rows: i64) -> RecordBatch {
    let schema = Schema::new(vec![
        Field::new("x", DataType::Int64, true),
        Field::new("v", DataType::Int64, true),
    ]);
    let ids: Vec<i64> = (cell * rows..(cell + 1) * rows).collect();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(
            ids.iter().map(|i| i * 7919 % 1_000_003),
        )),
        Arc::new(Int64Array::from_iter_values(ids.iter().map(|i| i % 1000))),
    ];
    RecordBatch::try_new(Arc::new(schema), columns).expect("batch")
}

/// Latencies of `n` sequential `GET path`, in milliseconds, sorted.
async fn measure(http: &reqwest::Client, url: &str, token: &str, n: usize) -> Vec<f64> {
    let mut took = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let response = http
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .expect("request");
        assert!(
            response.status().is_success(),
            "{url}: {}",
            response.status()
        );
        let _ = response.bytes().await.expect("body");
        took.push(started.elapsed().as_secs_f64() * 1e3);
    }
    took.sort_by(f64::total_cmp);
    took
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    apiary_benches::allocate_like_a_node();
    let args = flags(&["requests", "clients", "cells", "rows"]);
    let requests: usize = flag(&args, "requests", 2000);
    let clients: usize = flag(&args, "clients", 4);
    let cells: i64 = flag(&args, "cells", 16);
    let rows: i64 = flag(&args, "rows", 200_000);

    let dir = tempfile::tempdir().expect("tempdir");
    let uri = StorageUri::parse(&dir.path().join("data").display().to_string()).expect("uri");
    let ap = Apiary::open_with(ApiaryOptions::new(uri))
        .await
        .expect("open");
    ap.create_hive("bench").await.expect("hive");
    ap.create_box("bench", "console").await.expect("box");
    ap.create_frame(
        "bench",
        "console",
        "scan",
        &[("x", "int64"), ("v", "int64")],
        &[],
    )
    .await
    .expect("frame");
    for c in 0..cells {
        ap.write_to_frame("bench", "console", "scan", [cell(c, rows)])
            .await
            .expect("write");
    }
    let token = ap
        .tokens()
        .create(&[Scope::Admin], None)
        .await
        .expect("token")
        .text;
    ap.start_with(NodeOptions {
        state_dir: dir.path().join("state"),
        http: Some(ConsoleConfig::new("127.0.0.1:0".parse().expect("addr"))),
        ..NodeOptions::default()
    })
    .await
    .expect("start");
    let addr = ap.console_addr().expect("console");
    let http = reqwest::Client::new();
    let base = format!("http://{addr}");
    // Ready once the token is honoured.
    while http
        .get(format!("{base}/api/v1/nodes"))
        .bearer_auth(&token)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
        != 200
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    println!(
        "console latency over {requests} sequential requests per route ({clients} query loops \
         when busy; a scan of {cells} cells x {rows} rows)"
    );
    println!(
        "{:<10} {:<14} {:>9} {:>9} {:>9}",
        "node", "route", "p50 ms", "p99 ms", "max ms"
    );
    let routes = ["/api/v1/nodes", "/metrics"];
    let report = |state: &str, route: &str, took: &[f64]| {
        println!(
            "{state:<10} {route:<14} {:>9.3} {:>9.3} {:>9.3}",
            quantile(took, 0.5),
            quantile(took, 0.99),
            took.last().copied().unwrap_or(0.0)
        );
    };
    for route in routes {
        let took = measure(&http, &format!("{base}{route}"), &token, requests).await;
        report("idle", route, &took);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let ran = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let loops: Vec<_> = (0..clients)
        .map(|_| {
            let (ap, stop, ran, refused) = (
                ap.clone(),
                Arc::clone(&stop),
                Arc::clone(&ran),
                Arc::clone(&refused),
            );
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match ap.sql(SCAN).await {
                        Ok(_) => ran.fetch_add(1, Ordering::Relaxed),
                        // More loops than bees heat the colony until it refuses new
                        // queries: a client backs off and asks again, as a user would.
                        Err(e) if e.kind() == ErrorKind::Unavailable => {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            refused.fetch_add(1, Ordering::Relaxed)
                        }
                        Err(e) => panic!("scan: {e}"),
                    };
                }
            })
        })
        .collect();
    // Queries under way before measuring.
    while ran.load(Ordering::Relaxed) < clients as u64 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = Instant::now();
    for route in routes {
        let took = measure(&http, &format!("{base}{route}"), &token, requests).await;
        report("busy", route, &took);
    }
    let queries = ran.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        let _ = l.await;
    }
    println!(
        "busy: {queries} queries finished, {:.1} a second, while the routes were measured \
         ({} refused as overloaded, each retried after 100 ms)",
        queries as f64 / started.elapsed().as_secs_f64(),
        refused.load(Ordering::Relaxed)
    );
    ap.shutdown().await.expect("shutdown");
}
