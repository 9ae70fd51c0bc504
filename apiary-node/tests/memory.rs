//! Memory budgets and admission: a query larger than its budget completes by spilling, one
//! that cannot spill fails saying what to set, and on a node a query waits for a free bee.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use apiary::{Apiary, ApiaryOptions, ErrorKind, NodeOptions};
use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};

const KEYS: i64 = 400_000;

fn rows(range: std::ops::Range<i64>) -> RecordBatch {
    let ids: Vec<i64> = range.collect();
    let schema = Schema::new(vec![
        Field::new("k", DataType::Int64, true),
        Field::new("v", DataType::Int64, true),
        Field::new("p", DataType::Utf8, false),
    ]);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(
            ids.iter().map(|i| (i * 2_654_435_761) % KEYS),
        )),
        Arc::new(Int64Array::from_iter_values(ids.iter().map(|i| i % 97))),
        Arc::new(StringArray::from_iter_values(ids.iter().map(|_| "x"))),
    ];
    RecordBatch::try_new(Arc::new(schema), columns).unwrap()
}

async fn with_data(dir: &std::path::Path, memory: Option<usize>) -> Apiary {
    let uri = apiary::apiary_storage::StorageUri::parse(dir.to_str().unwrap()).unwrap();
    let options = ApiaryOptions {
        query_memory: memory,
        ..ApiaryOptions::new(uri)
    };
    let ap = Apiary::open_with(options).await.unwrap();
    if ap.list_hives().await.unwrap().is_empty() {
        ap.create_hive("h").await.unwrap();
        ap.create_box("h", "b").await.unwrap();
        ap.create_frame(
            "h",
            "b",
            "f",
            &[("k", "int64"), ("v", "int64"), ("p", "utf8")],
            &["p"],
        )
        .await
        .unwrap();
        let batches: Vec<RecordBatch> = (0..4)
            .map(|i| rows(i * KEYS / 4..(i + 1) * KEYS / 4))
            .collect();
        ap.write_to_frame("h", "b", "f", batches).await.unwrap();
    }
    ap
}

const GROUP_BY: &str = "SELECT COUNT(*) AS groups, SUM(s) AS total FROM \
                        (SELECT k, SUM(v) AS s FROM h.b.f GROUP BY k)";

async fn text(ap: &Apiary, sql: &str) -> String {
    let result = ap.sql(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    apiary::apiary_query::datafusion::arrow::util::pretty::pretty_format_batches(result.batches())
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_by_larger_than_its_budget_completes_by_spilling() {
    let dir = tempfile::tempdir().unwrap();
    let unlimited = with_data(dir.path(), None).await;
    let expected = text(&unlimited, GROUP_BY).await;
    assert!(expected.contains(&KEYS.to_string()), "{expected}");

    let tight = with_data(dir.path(), Some(4 << 20)).await;
    assert_eq!(text(&tight, GROUP_BY).await, expected, "the same answer");
    let analyzed = text(&tight, &format!("EXPLAIN ANALYZE {GROUP_BY}")).await;
    let spilled = analyzed
        .split("spill_count=")
        .skip(1)
        .filter_map(|s| {
            s.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum::<u64>();
    assert!(spilled > 0, "it spilled to stay within 4 MiB:\n{analyzed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_that_cannot_fit_says_what_to_set() {
    let dir = tempfile::tempdir().unwrap();
    let ap = with_data(dir.path(), Some(256 << 10)).await;
    // A hash join's build side does not spill.
    let err = ap
        .sql("SELECT COUNT(*) FROM h.b.f a JOIN h.b.f b ON a.k = b.k")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    let message = err.to_string();
    assert!(message.contains("more memory than its budget"), "{message}");
    assert!(message.contains("--memory"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_node_a_query_waits_for_a_free_bee() {
    let dir = tempfile::tempdir().unwrap();
    let ap = with_data(&dir.path().join("s"), None).await;
    ap.start_with(NodeOptions {
        node_id: Some("a".into()),
        state_dir: dir.path().join("state"),
        cache_bytes: Some(0),
        ..NodeOptions::default()
    })
    .await
    .unwrap();
    let bees = ap.bees().unwrap();
    let mut held = Vec::new();
    for _ in 0..bees.total() {
        held.push(bees.acquire().await.unwrap());
    }
    let query = {
        let ap = ap.clone();
        tokio::spawn(async move { text(&ap, "SELECT COUNT(*) FROM h.b.f").await })
    };
    for _ in 0..2000 {
        if bees.load().queue_depth == 1 {
            break;
        }
        apiary::apiary_storage::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(bees.load().queue_depth, 1, "the query waits for a bee");
    assert!(!query.is_finished());
    held.clear();
    assert!(query.await.unwrap().contains(&KEYS.to_string()));
    assert_eq!(bees.load().busy_bees, 0, "its bees are back");
    ap.shutdown().await.unwrap();
}
