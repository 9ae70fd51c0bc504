//! A node's cell cache in the read path: warm queries read cells from local disk, a restart
//! keeps them, cells the node writes are cached as written, and nodes never share a cache.

#![allow(clippy::unwrap_used)]

mod common;

use apiary::apiary_ledger::LedgerConfig;
use apiary::apiary_storage::{CountsHandle, StorageUri, counted_backend};
use apiary::{Apiary, ApiaryError, NodeOptions};
use std::path::Path;

/// An `Apiary` over `storage` whose requests are counted below the backend.
fn counted(storage: &Path) -> (Apiary, CountsHandle) {
    let uri = StorageUri::Local(storage.to_path_buf());
    let (backend, counts) = counted_backend(&uri).unwrap();
    (
        Apiary::with_backend(uri, backend, LedgerConfig::default()),
        counts,
    )
}

fn node(dir: &Path, id: &str) -> NodeOptions {
    NodeOptions {
        node_id: Some(id.into()),
        state_dir: dir.join("state"),
        cache_bytes: Some(256 << 20),
        // The disk cache alone: with the memory tier, warm scans would not read it.
        memory_tier_bytes: Some(0),
        swarm: apiary::apiary_swarm::SwarmConfig {
            heartbeat_interval: std::time::Duration::from_millis(50),
            poll_interval: std::time::Duration::from_millis(50),
            ..Default::default()
        },
        ..NodeOptions::default()
    }
}

/// The cache summary in node `id`'s newest heartbeat, once it reports `cells` cells.
async fn published_cache(
    storage: &Path,
    id: &str,
    cells: u64,
) -> apiary::apiary_swarm::CacheSummary {
    let path = storage.join(format!("_heartbeats/node_{id}.json"));
    let mut last = None;
    for _ in 0..400 {
        if let Ok(bytes) = std::fs::read(&path) {
            let beat: apiary::apiary_swarm::Heartbeat = serde_json::from_slice(&bytes).unwrap();
            if beat.cache.cells == cells {
                return beat.cache;
            }
            last = Some(beat.cache);
        }
        apiary::apiary_storage::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("node {id} never published {cells} cached cells; last: {last:?}");
}

const QUERY: &str = "SELECT country, COUNT(*) AS n, SUM(duration_ms) AS d \
                     FROM analytics.events.clicks GROUP BY country ORDER BY country";

async fn answer(ap: &Apiary) -> String {
    let result = ap.sql(QUERY).await.unwrap();
    apiary::apiary_query::datafusion::arrow::util::pretty::pretty_format_batches(result.batches())
        .unwrap()
        .to_string()
}

async fn explain_analyze(ap: &Apiary) -> String {
    use apiary::apiary_query::datafusion::arrow::array::AsArray;
    let result = ap.sql(&format!("EXPLAIN ANALYZE {QUERY}")).await.unwrap();
    let mut text = String::new();
    for batch in result.batches() {
        let plans = apiary::apiary_query::datafusion::arrow::compute::cast(
            batch.column(1),
            &arrow_schema::DataType::Utf8,
        )
        .unwrap();
        for plan in plans.as_string::<i32>().iter().flatten() {
            text.push_str(plan);
            text.push('\n');
        }
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_queries_read_cells_from_the_nodes_disk() {
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("shared");
    // Another process writes the data: nothing of it is in this node's cache.
    let writer = Apiary::open(storage.to_str().unwrap()).await.unwrap();
    common::create_clicks_frame(&writer).await;
    common::write_clicks(&writer, 3).await;

    let (ap, counts) = counted(&storage);
    ap.start_with(node(dir.path(), "a")).await.unwrap();
    let before = counts.snapshot();
    let cold = answer(&ap).await;
    let first = counts.snapshot() - before;
    assert!(
        first.cell_get > 0,
        "a cold query reads cells from storage: {first:?}"
    );

    let before = counts.snapshot();
    assert_eq!(answer(&ap).await, cold);
    let second = counts.snapshot() - before;
    assert_eq!(
        second.cell_get, 0,
        "a warm query reads no cell from storage: {second:?}"
    );
    // EXPLAIN ANALYZE says where each scan's bytes came from.
    let analyzed = explain_analyze(&ap).await;
    let scan = analyzed
        .lines()
        .find(|l| l.contains("FrameScanExec"))
        .unwrap_or_else(|| panic!("{analyzed}"));
    assert!(
        scan.contains("cache_misses=0") && scan.contains("bytes_from_storage=0"),
        "{scan}"
    );
    assert!(!scan.contains("cache_hits=0"), "{scan}");
    let cache = ap.status(&node(dir.path(), "a")).cache.unwrap();
    assert!(cache.hits > 0 && cache.cells == 12, "{cache:?}");
    // The heartbeat says which cells this node holds, for the distributed planner.
    let summary = published_cache(&storage, "a", 12).await;
    assert_eq!(summary.hot_cells.len(), 12);
    assert!(
        summary
            .hot_cells
            .iter()
            .all(|k| k.starts_with("analytics/events/clicks/data/")),
        "{summary:?}"
    );
    ap.shutdown().await.unwrap();

    // A restarted node keeps its warm cache.
    let (ap, counts) = counted(&storage);
    ap.start_with(node(dir.path(), "a")).await.unwrap();
    let before = counts.snapshot();
    assert_eq!(answer(&ap).await, cold);
    assert_eq!(
        (counts.snapshot() - before).cell_get,
        0,
        "warm after a restart"
    );

    // Cells the node writes enter its cache as they are written.
    ap.write_to_frame(
        "analytics",
        "events",
        "clicks",
        [common::clicks(15_000..16_000)],
    )
    .await
    .unwrap();
    // The cache insert runs beside the commit; give it a moment (bounded) to land.
    for _ in 0..200 {
        if ap.cell_cache().unwrap().counts().cells == 16 {
            break;
        }
        apiary::apiary_storage::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let before = counts.snapshot();
    let with_new = answer(&ap).await;
    assert_ne!(with_new, cold);
    assert_eq!(
        (counts.snapshot() - before).cell_get,
        0,
        "written cells are cached"
    );
    ap.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_one_machine_keep_separate_caches() {
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("shared");
    let a = Apiary::open(storage.to_str().unwrap()).await.unwrap();
    let b = Apiary::open(storage.to_str().unwrap()).await.unwrap();
    a.start_with(node(dir.path(), "a")).await.unwrap();
    b.start_with(node(dir.path(), "b")).await.unwrap();
    let (ca, cb) = (a.cell_cache().unwrap(), b.cell_cache().unwrap());
    assert_ne!(ca.dir(), cb.dir(), "one directory per node by default");
    b.shutdown().await.unwrap();
    drop(cb);

    // Pointing a second node at a cache directory in use is refused, clearly.
    let c = Apiary::open(storage.to_str().unwrap()).await.unwrap();
    let shared = NodeOptions {
        cache_dir: Some(ca.dir().to_path_buf()),
        ..node(dir.path(), "c")
    };
    let err = c.start_with(shared).await.unwrap_err();
    assert!(matches!(err, ApiaryError::Cache(_)), "{err}");
    assert!(
        err.to_string().contains("in use by another process"),
        "{err}"
    );
    a.shutdown().await.unwrap();
}
