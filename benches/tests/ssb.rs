//! Differential test: the 13 Star Schema Benchmark queries answered by Apiary equal plain
//! DataFusion reading the same Parquet cells directly.
#![allow(clippy::unwrap_used)]
#![allow(clippy::disallowed_methods)] // real processes and real time: waits and timings read the system clock

use apiary::apiary_storage::StorageUri;
use apiary::{Apiary, ApiaryOptions};
use apiary_benches::harness::{
    datafusion_over_cells, load_apiary, load_in_quarters, result_rows, rows, run_datafusion,
};
use apiary_benches::ssb::{QUERIES, generate};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssb_queries_match_datafusion_on_the_same_files() {
    let dir = tempfile::tempdir().unwrap();
    let open = |tier: u64| {
        let uri = StorageUri::Local(dir.path().to_path_buf());
        Apiary::open_with(ApiaryOptions {
            memory_tier: Some(tier),
            ..ApiaryOptions::new(uri)
        })
    };
    let ap = open(256 << 20).await.unwrap();
    let off = open(0).await.unwrap();
    // SF 0.01: 60 000 line orders, small enough for a debug build, big enough that every
    // query returns rows.
    let tables = generate(0.01, 7);
    load_apiary(&ap, "ssb", "sf", &tables).await;
    let df = datafusion_over_cells(dir.path(), "ssb", "sf", &tables, 4).await;
    let mut session = ap.sql_session().unwrap();
    session.sql("USE ssb.sf").await.unwrap();
    let mut session_off = off.sql_session().unwrap();
    session_off.sql("USE ssb.sf").await.unwrap();
    let mut empty = Vec::new();
    for (name, sql) in QUERIES {
        let theirs = rows(&run_datafusion(&df, sql).await);
        let ours = result_rows(
            &session_off
                .sql(sql)
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}")),
        );
        assert_eq!(ours, theirs, "{name} differs with the memory tier off");
        // With the tier on: cold, admitted, then from memory.
        for run in 0..3 {
            let ours = result_rows(
                &session
                    .sql(sql)
                    .await
                    .unwrap_or_else(|e| panic!("{name}: {e}")),
            );
            assert_eq!(
                ours, theirs,
                "{name} differs with the memory tier on (run {run})"
            );
        }
        if ours.is_empty() || ours[0] == "NULL" {
            empty.push(name);
        }
    }
    let tier = ap.memory_tier().unwrap();
    assert!(tier.hits > 0 && tier.columns > 0, "{tier:?}");
    // The most selective queries (one brand, two cities, one month) find nothing at this
    // scale; the rest must have something to compare.
    eprintln!("empty at SF 0.01: {empty:?}");
    assert!(
        empty.len() <= 4,
        "{empty:?} returned no rows: the data is too thin"
    );
}

#[tokio::test]
async fn the_generator_is_deterministic_and_sized_by_scale_factor() {
    let a = generate(0.001, 1);
    let b = generate(0.001, 1);
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.batches, y.batches, "{}", x.name);
    }
    let lineorder = a.iter().find(|t| t.name == "lineorder").unwrap();
    assert_eq!(lineorder.rows(), 6_000);
    let dates = a.iter().find(|t| t.name == "dwdate").unwrap();
    assert_eq!(dates.rows(), 2557, "1992-01-01 ..= 1998-12-31");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssb_queries_on_three_node_processes_match_one_node() {
    distributed_differential(false).await;
}

/// The same over Arrow Flight: every task pushed to its node and its rows streamed back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssb_queries_over_flight_match_one_node() {
    distributed_differential(true).await;
}

async fn distributed_differential(flight: bool) {
    use apiary_benches::harness::{swarm, task_transports};
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let storage = data.display().to_string();
    let ap = Apiary::open(&storage).await.unwrap();
    let tables = generate(0.01, 7);
    // Line orders in four writes, so that the fact frame has cells to split.
    let (facts, dims): (Vec<_>, Vec<_>) = tables.into_iter().partition(|t| t.name == "lineorder");
    load_apiary(&ap, "ssb", "sf", &dims).await;
    for fact in &facts {
        load_in_quarters(&ap, "ssb", "sf", fact).await;
    }
    let (nodes, coordinator) = swarm(&storage, dir.path(), "ssb", 3, &ap, flight).await;
    let mut local = ap.sql_session().unwrap();
    local
        .sql("USE ssb.sf; SET apiary.distribute = 'never'")
        .await
        .unwrap();
    let mut spread = coordinator.sql_session().unwrap();
    spread
        .sql("USE ssb.sf; SET apiary.distribute = 'always'")
        .await
        .unwrap();
    for (name, sql) in QUERIES {
        let one = result_rows(&local.sql(sql).await.unwrap());
        let t = Instant::now();
        let many = result_rows(
            &spread
                .sql(sql)
                .await
                .unwrap_or_else(|e| panic!("{name} distributed: {e}")),
        );
        eprintln!("{name}: {:?} distributed", t.elapsed());
        assert_eq!(many, one, "{name}: three nodes differ from one");
    }
    // Tasks share cells: on data this small, a node that looks for tasks sooner than the
    // others may read every shared cell before they look (a node that just finished a task
    // looks every millisecond for 100 ms). So each try waits for that to pass, and a few
    // tries are allowed; the answers above are checked on every query regardless.
    let mut shown = Vec::new();
    for _ in 0..5 {
        apiary_storage::time::sleep(Duration::from_millis(150)).await;
        let plan = result_rows(
            &spread
                .sql(&format!("EXPLAIN ANALYZE {}", QUERIES[3].1))
                .await
                .unwrap(),
        );
        if flight {
            let via = task_transports(&plan);
            assert!(
                !via.is_empty() && via.iter().all(|v| v == "flight"),
                "every task over Flight: {plan:?}"
            );
        }
        let text = plan.join("\n");
        let used: std::collections::BTreeSet<String> = text
            .split("node=")
            .skip(1)
            .filter_map(|s| s.split_whitespace().next().map(str::to_string))
            .collect();
        if used.len() >= 2 {
            shown.clear();
            break;
        }
        shown.push(format!("tasks on {used:?}:\n{text}"));
    }
    assert!(
        shown.is_empty(),
        "no try ran tasks on two nodes:\n{}",
        shown.join("\n")
    );
    drop(nodes);
}
