//! Differential test: the 22 TPC-H queries answered by three `apiary node` processes equal
//! the answers of one process alone, on data made here by `tpchgen` (SF 0.01: 60 000 line
//! items). The large frames are written in several commits, so that there are cells to
//! split; every query is asked with `apiary.distribute = 'always'`.
#![allow(clippy::unwrap_used)]

use std::time::Instant;

use apiary::Apiary;
use apiary_benches::harness::{Nodes, load_apiary, load_in_quarters, result_rows};
use apiary_benches::tpch::{QUERIES, generate};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_queries_on_three_node_processes_match_one_process() {
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
    let _nodes = Nodes::start(&storage, dir.path(), "tpch", 3, &ap).await;
    let mut local = ap.sql_session().unwrap();
    local
        .sql("USE tpch.sf; SET apiary.distribute = 'never'")
        .await
        .unwrap();
    let mut spread = ap.sql_session().unwrap();
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
    eprintln!("empty at SF 0.01: {empty:?}");
    assert!(
        empty.len() <= 3,
        "{empty:?} returned no rows: the data is too thin"
    );
}
