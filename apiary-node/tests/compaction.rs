//! Compaction on a node: 200 small writes become a few target-sized cells once the node is
//! idle, the answers do not change, and readers querying all along never see a row twice or
//! missing.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use apiary::{Apiary, NodeOptions};
use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};

fn rows(start: i64) -> RecordBatch {
    let ids: Vec<i64> = (start..start + 50).collect();
    let schema = Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("v", DataType::Int64, true),
        Field::new("side", DataType::Utf8, false),
    ]);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(ids.clone())),
        Arc::new(Int64Array::from_iter_values(
            ids.iter().map(|i| i * 3 % 101),
        )),
        Arc::new(StringArray::from_iter_values(
            ids.iter().map(|i| if i % 2 == 0 { "even" } else { "odd" }),
        )),
    ];
    RecordBatch::try_new(Arc::new(schema), columns).unwrap()
}

/// Reads every row (a filter keeps the ledger's exact counts from answering alone).
const CHECK: &str = "SELECT COUNT(*) AS n, COUNT(DISTINCT id) AS ids, SUM(id) AS s, SUM(v) AS sv \
                     FROM h.b.f WHERE id >= 0";

async fn answer(ap: &Apiary) -> String {
    let result = ap.sql(CHECK).await.unwrap();
    apiary::apiary_query::datafusion::arrow::util::pretty::pretty_format_batches(result.batches())
        .unwrap()
        .to_string()
}

async fn frame_with_small_writes(ap: &Apiary, writes: i64) {
    ap.create_hive("h").await.unwrap();
    ap.create_box("h", "b").await.unwrap();
    ap.create_frame(
        "h",
        "b",
        "f",
        &[("id", "int64"), ("v", "int64"), ("side", "utf8")],
        &["side"],
    )
    .await
    .unwrap();
    for w in 0..writes {
        ap.write_to_frame("h", "b", "f", [rows(w * 50)])
            .await
            .unwrap();
    }
}

async fn cells(ap: &Apiary) -> usize {
    ap.describe_frame("h", "b", "f").await.unwrap().cells
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_node_compacts_what_it_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let ap = Apiary::open(dir.path().join("s").to_str().unwrap())
        .await
        .unwrap();
    ap.start_with(NodeOptions {
        node_id: Some("a".into()),
        state_dir: dir.path().join("state"),
        cache_bytes: Some(0),
        compact_interval: Duration::from_millis(100),
        ..NodeOptions::default()
    })
    .await
    .unwrap();
    frame_with_small_writes(&ap, 200).await;
    // 200 writes × 2 sides: 400 cells until the node is idle and compacts them. Compactions
    // that ran between writes leave at most three small cells per side (a partition is
    // compacted from four small cells up), so at most six remain.
    let mut now = cells(&ap).await;
    for _ in 0..600 {
        if now <= 6 {
            break;
        }
        apiary::apiary_storage::time::sleep(Duration::from_millis(50)).await;
        now = cells(&ap).await;
    }
    assert!(now <= 6, "still {now} cells");
    let text = answer(&ap).await;
    assert!(
        text.contains("| 10000 | 10000 | 49995000 | 499950 |"),
        "{text}"
    );
    ap.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_never_see_rows_twice_or_missing_while_compaction_runs() {
    let dir = tempfile::tempdir().unwrap();
    let ap = Apiary::open(dir.path().join("s").to_str().unwrap())
        .await
        .unwrap();
    frame_with_small_writes(&ap, 200).await;
    let before = cells(&ap).await;
    assert_eq!(before, 400);
    let expected = answer(&ap).await;

    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (reader, done, expected) = (ap.clone(), Arc::clone(&done), expected.clone());
            tokio::spawn(async move {
                let mut checks = 0;
                // Keep reading until compaction is over, and a few times after.
                let mut after = 0;
                while after < 3 {
                    if done.load(Ordering::SeqCst) {
                        after += 1;
                    }
                    assert_eq!(answer(&reader).await, expected, "after {checks} reads");
                    checks += 1;
                }
                checks
            })
        })
        .collect();
    let result = ap.compact("h", "b", "f").await.unwrap();
    done.store(true, Ordering::SeqCst);
    for reader in readers {
        assert!(reader.await.unwrap() >= 3);
    }
    assert_eq!(
        (result.cells_removed, result.cells_added),
        (400, 2),
        "{result:?}"
    );
    assert_eq!(cells(&ap).await, 2);
    assert_eq!(answer(&ap).await, expected);
}
