//! The memory tier of decoded columns: a column is admitted on its second read and served
//! from memory from then on (no cell read at all), every answer is the same with the tier on
//! and off, and under memory pressure the tier gives way to the queries.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use apiary::apiary_storage::StorageUri;
use apiary::{Apiary, ApiaryOptions, NodeOptions};
use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};

async fn open(storage: &std::path::Path, tier: Option<u64>) -> Apiary {
    let options = ApiaryOptions {
        memory_tier: tier,
        ..ApiaryOptions::new(StorageUri::Local(storage.to_path_buf()))
    };
    Apiary::open_with(options).await.unwrap()
}

/// The clicks frame with 15 000 rows in 12 cells (3 writes x 4 countries).
async fn clicks(storage: &std::path::Path) {
    let writer = open(storage, Some(0)).await;
    common::create_clicks_frame(&writer).await;
    common::write_clicks(&writer, 3).await;
}

async fn text(ap: &Apiary, sql: &str) -> String {
    let result = ap.sql(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    apiary::apiary_query::datafusion::arrow::util::pretty::pretty_format_batches(result.batches())
        .unwrap()
        .to_string()
}

/// The frame scan's and the tier's lines of `EXPLAIN ANALYZE sql`.
async fn scan_lines(ap: &Apiary, sql: &str) -> Vec<String> {
    use apiary::apiary_query::datafusion::arrow::array::AsArray;
    let result = ap.sql(&format!("EXPLAIN ANALYZE {sql}")).await.unwrap();
    let mut lines = Vec::new();
    for batch in result.batches() {
        let plans = apiary::apiary_query::datafusion::arrow::compute::cast(
            batch.column(1),
            &DataType::Utf8,
        )
        .unwrap();
        for plan in plans.as_string::<i32>().iter().flatten() {
            lines.extend(
                plan.lines()
                    .filter(|l| {
                        ["FrameScanExec", "MemoryTierExec", "DataSourceExec"]
                            .iter()
                            .any(|n| l.contains(n))
                    })
                    .map(|l| l.trim().to_string()),
            );
        }
    }
    lines
}

/// Whether any of `lines` contains `needle`.
fn has(lines: &[String], needle: &str) -> bool {
    lines.iter().any(|l| l.contains(needle))
}

const QUERIES: [&str; 7] = [
    "SELECT page, COUNT(*) AS visits, AVG(duration_ms) AS d FROM analytics.events.clicks \
     GROUP BY page ORDER BY page",
    "SELECT country, page, SUM(duration_ms) AS d FROM analytics.events.clicks \
     WHERE duration_ms > 500 GROUP BY country, page ORDER BY country, page",
    "SELECT * FROM analytics.events.clicks ORDER BY event_id DESC LIMIT 7",
    "SELECT user_id, country FROM analytics.events.clicks WHERE event_id BETWEEN 100 AND 120 \
     ORDER BY event_id",
    "SELECT event_id, country FROM analytics.events.clicks WHERE country = 'de' \
     AND event_id % 1000 = 1 ORDER BY event_id",
    "SELECT COUNT(*) AS n, SUM(a.duration_ms) AS d FROM analytics.events.clicks a \
     JOIN analytics.events.clicks b ON a.event_id = b.event_id + 1 WHERE b.country = 'us'",
    "SELECT COUNT(*) AS n FROM (SELECT user_id FROM analytics.events.clicks LIMIT 10)",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_are_the_same_with_the_tier_on_and_off() {
    let dir = tempfile::tempdir().unwrap();
    clicks(dir.path()).await;
    let off = open(dir.path(), Some(0)).await;
    let on = open(dir.path(), Some(256 << 20)).await;
    for sql in QUERIES {
        let expected = text(&off, sql).await;
        // Cold, then admitted, then from memory: three paths, one answer.
        for run in 0..3 {
            assert_eq!(text(&on, sql).await, expected, "run {run} of {sql}");
        }
    }
    let counts = on.memory_tier().unwrap();
    assert!(counts.hits > 0 && counts.columns > 0, "{counts:?}");
    assert_eq!(off.memory_tier().unwrap().columns, 0, "off holds nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_column_is_admitted_on_its_second_read_and_then_read_from_memory() {
    let dir = tempfile::tempdir().unwrap();
    clicks(dir.path()).await;
    let ap = open(dir.path(), Some(256 << 20)).await;
    let sql = QUERIES[0];

    let first = scan_lines(&ap, sql).await;
    assert!(
        has(&first, "DataSourceExec") && !has(&first, "MemoryTierExec"),
        "a first read goes through Parquet: {first:#?}"
    );
    let second = scan_lines(&ap, sql).await;
    assert!(
        has(
            &second,
            "MemoryTierExec: cells_in_memory=0, cells_admitted=12"
        ) && !has(&second, "DataSourceExec"),
        "the second read admits every cell: {second:#?}"
    );
    let third = scan_lines(&ap, sql).await;
    assert!(
        has(
            &third,
            "MemoryTierExec: cells_in_memory=12, cells_admitted=0"
        ),
        "{third:#?}"
    );
    // Served from memory: not a byte read from the cells.
    let scan = third.iter().find(|l| l.contains("FrameScanExec")).unwrap();
    assert!(
        scan.contains("bytes_from_storage=0") && scan.contains("bytes_from_cache=0"),
        "{scan}"
    );
    let held = ap.memory_tier().unwrap();
    assert_eq!(
        held.columns, 24,
        "page and duration_ms of 12 cells: {held:?}"
    );

    // Another column set: the held column is used, the new one waits for its second read.
    let other = "SELECT page, MAX(user_id) AS u FROM analytics.events.clicks GROUP BY page";
    let lines = scan_lines(&ap, other).await;
    assert!(!has(&lines, "MemoryTierExec"), "{lines:#?}");
    let lines = scan_lines(&ap, other).await;
    assert!(has(&lines, "cells_admitted=12"), "{lines:#?}");
    assert_eq!(ap.memory_tier().unwrap().columns, 36);

    // A new write: its cells start cold, the others stay in memory.
    ap.write_to_frame(
        "analytics",
        "events",
        "clicks",
        [common::clicks(20_000..20_400)],
    )
    .await
    .unwrap();
    let lines = scan_lines(&ap, sql).await;
    assert!(
        has(
            &lines,
            "MemoryTierExec: cells_in_memory=12, cells_admitted=0"
        ) && has(&lines, "DataSourceExec"),
        "{lines:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scans_loading_one_cell_at_once_decode_it_once() {
    let dir = tempfile::tempdir().unwrap();
    clicks(dir.path()).await;
    let ap = Arc::new(open(dir.path(), Some(256 << 20)).await);
    let sql = QUERIES[0];
    let expected = text(&ap, sql).await; // the first read: every cell noted
    // Eight queries at once, each planned to load all 12 cells: each cell is decoded by
    // one scan, and the others wait for it or find it held.
    let runs: Vec<_> = (0..8)
        .map(|_| {
            let ap = Arc::clone(&ap);
            tokio::spawn(async move { text(&ap, sql).await })
        })
        .collect();
    for run in runs {
        assert_eq!(run.await.unwrap(), expected);
    }
    let counts = ap.memory_tier().unwrap();
    assert_eq!(counts.loads, 12, "one decode per cell: {counts:?}");
    assert_eq!(counts.columns, 24, "{counts:?}");
    assert_eq!(ap.memory_tier().unwrap().admitted, 24, "{counts:?}");
}

/// The frame `h.b.f` of [`wide`] rows, empty.
async fn wide_frame(ap: &Apiary) {
    ap.create_hive("h").await.unwrap();
    ap.create_box("h", "b").await.unwrap();
    ap.create_frame("h", "b", "f", &[("x", "int64"), ("s", "utf8")], &[])
        .await
        .unwrap();
}

/// `n` rows of a key and a 40-character text.
fn wide(range: std::ops::Range<i64>) -> RecordBatch {
    let ids: Vec<i64> = range.collect();
    let schema = Schema::new(vec![
        Field::new("x", DataType::Int64, true),
        Field::new("s", DataType::Utf8, true),
    ]);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(ids.clone())),
        Arc::new(StringArray::from_iter_values(
            ids.iter()
                .map(|i| format!("{:040}", (i * 2_654_435_761) % 1_000_003)),
        )),
    ];
    RecordBatch::try_new(Arc::new(schema), columns).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_memory_pressure_the_tier_gives_way_to_queries() {
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("shared");
    let writer = open(&storage, Some(0)).await;
    wide_frame(&writer).await;
    for w in 0..4 {
        writer
            .write_to_frame("h", "b", "f", [wide(w * 50_000..(w + 1) * 50_000)])
            .await
            .unwrap();
    }
    // Grouping by 200 000 distinct 40-character texts holds more than the tier leaves free.
    let group_by = "SELECT COUNT(*) AS groups, SUM(n) AS rows, MAX(s) AS s FROM \
                    (SELECT s, COUNT(*) AS n FROM h.b.f GROUP BY s)";
    let expected = text(&writer, group_by).await;

    // A node of 24 MiB: its bees have 18 MiB, all of which the tier may use.
    let ap = open(&storage, None).await;
    ap.start_with(NodeOptions {
        node_id: Some("n".into()),
        state_dir: dir.path().join("state"),
        memory_bytes: Some(24 << 20),
        memory_tier_bytes: Some(18 << 20),
        cache_bytes: Some(0),
        ..NodeOptions::default()
    })
    .await
    .unwrap();
    let scan = "SELECT COUNT(*) AS n, MAX(s) AS s, SUM(x) AS x FROM h.b.f WHERE x >= 0";
    let answer = text(&ap, scan).await;
    for _ in 0..2 {
        assert_eq!(text(&ap, scan).await, answer);
    }
    let full = ap.memory_tier().unwrap();
    assert_eq!(full.columns, 8, "both columns of 4 cells: {full:?}");
    assert_eq!(full.capacity_bytes, 18 << 20);

    // A query that holds most of the bees' memory: the tier makes room first.
    assert_eq!(text(&ap, group_by).await, expected);
    let after = ap.memory_tier().unwrap();
    assert!(after.evicted > 0, "{after:?}");
    assert!(after.bytes < full.bytes, "{full:?} -> {after:?}");
    // The query is over: the tier may hold its share again, and answers are unchanged.
    assert_eq!(after.capacity_bytes, 18 << 20, "{after:?}");
    assert_eq!(text(&ap, scan).await, answer);
    ap.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_large_cell_held_in_memory_is_read_by_every_partition() {
    let dir = tempfile::tempdir().unwrap();
    let writer = open(dir.path(), Some(0)).await;
    wide_frame(&writer).await;
    // One write, one cell of 300 000 rows.
    writer
        .write_to_frame("h", "b", "f", [wide(0..300_000)])
        .await
        .unwrap();
    let sql = "SELECT COUNT(*) AS n, SUM(x) AS x, MIN(s) AS lo, MAX(s) AS hi FROM h.b.f \
               WHERE x % 7 = 3";
    let expected = text(&writer, sql).await;

    let ap = open(dir.path(), Some(256 << 20)).await;
    let mut session = ap.sql_session().unwrap();
    session
        .sql("SET datafusion.execution.target_partitions = 4")
        .await
        .unwrap();
    let pretty = |r: &apiary::QueryResult| {
        apiary::apiary_query::datafusion::arrow::util::pretty::pretty_format_batches(r.batches())
            .unwrap()
            .to_string()
    };
    // Cold, then admitted, then from memory: one answer.
    for run in 0..3 {
        assert_eq!(
            pretty(&session.sql(sql).await.unwrap()),
            expected,
            "run {run}"
        );
    }
    let explained = session
        .sql(&format!("EXPLAIN ANALYZE VERBOSE {sql}"))
        .await
        .unwrap();
    let plan = pretty(&explained);
    let tier = plan
        .lines()
        .find(|l| l.contains("MemoryTierExec: cells_in_memory=1") && l.contains("{partition="))
        .unwrap_or_else(|| panic!("the cell is read from memory:\n{plan}"));
    // Each of the four partitions reads a quarter of the cell.
    for partition in 0..4 {
        assert!(
            tier.contains(&format!("output_rows{{partition={partition}}}=75.00 K")),
            "partition {partition} reads 75 000 rows: {tier}"
        );
    }
}
