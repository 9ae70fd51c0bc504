//! Differential test: the 22 TPC-H queries answered by three `apiary node` processes equal
//! the answers of one process alone, on data made here by `tpchgen` (SF 0.01: 60 000 line
//! items). The large frames are written in several commits, so that there are cells to
//! split; every query is asked with `apiary.distribute = 'always'`.
#![allow(clippy::unwrap_used)]
#![allow(clippy::disallowed_methods)] // real processes and real time: waits and timings read the system clock

use std::time::Instant;

use apiary::Apiary;
use apiary_benches::harness::{load_apiary, load_in_quarters, result_rows, swarm, task_transports};
use apiary_benches::tpch::{QUERIES, generate};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_queries_on_three_node_processes_match_one_process() {
    differential(false).await;
}

/// The same over Arrow Flight: every task pushed to its node and its rows streamed back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_queries_over_flight_match_one_process() {
    differential(true).await;
}

async fn differential(flight: bool) {
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("data").display().to_string();
    let ap = Apiary::open(&storage).await.unwrap();
    let tables = generate(0.01);
    let rows = |name: &str| tables.iter().find(|t| t.name == name).unwrap().rows();
    assert_eq!(rows("nation"), 25);
    assert_eq!(rows("orders"), 15_000);
    // The facts in four writes each: several cells per frame.
    let (facts, dims): (Vec<_>, Vec<_>) = tables
        .into_iter()
        .partition(|t| matches!(t.name, "lineitem" | "orders" | "partsupp"));
    load_apiary(&ap, "tpch", "sf", &dims).await;
    for fact in &facts {
        load_in_quarters(&ap, "tpch", "sf", fact).await;
    }
    let (_nodes, coordinator) = swarm(&storage, dir.path(), "tpch", 3, &ap, flight).await;
    let mut local = ap.sql_session().unwrap();
    local
        .sql("USE tpch.sf; SET apiary.distribute = 'never'")
        .await
        .unwrap();
    let mut spread = coordinator.sql_session().unwrap();
    spread
        .sql("USE tpch.sf; SET apiary.distribute = 'always'")
        .await
        .unwrap();
    let mut empty = Vec::new();
    for (name, sql) in QUERIES {
        let one = result_rows(
            &local
                .sql(sql)
                .await
                .unwrap_or_else(|e| panic!("{name} locally: {e}")),
        );
        let t = Instant::now();
        let result = spread
            .sql(sql)
            .await
            .unwrap_or_else(|e| panic!("{name} distributed: {e}"));
        let took = t.elapsed();
        assert_eq!(
            result_rows(&result),
            one,
            "{name}: three nodes differ from one"
        );
        if one.is_empty() {
            empty.push(name);
        }
        // Distributed indeed: the plan splits a frame over the swarm.
        let plan = result_rows(&spread.sql(&format!("EXPLAIN {sql}")).await.unwrap()).join("\n");
        assert!(
            plan.contains("DistributedExec"),
            "{name} ran locally:\n{plan}"
        );
        let shape = plan
            .split("shape=")
            .nth(1)
            .and_then(|s| s.split(',').next());
        eprintln!("{name}: {took:?} distributed, {shape:?}");
    }
    if flight {
        let plan = result_rows(
            &spread
                .sql(&format!("EXPLAIN ANALYZE {}", QUERIES[0].1))
                .await
                .unwrap(),
        );
        let via = task_transports(&plan);
        assert!(
            !via.is_empty() && via.iter().all(|v| v == "flight"),
            "every task over Flight: {plan:?}"
        );
    }
    eprintln!("empty at SF 0.01: {empty:?}");
    assert!(
        empty.len() <= 3,
        "{empty:?} returned no rows: the data is too thin"
    );
}
