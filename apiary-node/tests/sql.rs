//! SQL through the public API: the tutorial's queries, the reference implementation's known
//! failures, Apiary's own statements, pruning that never changes an answer, and safety.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use apiary::{Apiary, ApiaryError, QueryResult};
use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{
    ArrayRef, Date32Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow_schema::{DataType, Field, Schema, TimeUnit};

const COUNTRIES: [&str; 8] = ["us", "uk", "de", "fr", "jp", "br", "au", "ca"];
const PAGES: [&str; 6] = ["/home", "/products", "/about", "/pricing", "/docs", "/blog"];

/// A deterministic stand-in for the tutorial's random clicks.
fn click(i: i64) -> (i64, String, &'static str, i64, &'static str) {
    let h = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 7;
    (
        i,
        format!("user_{}", h % 500 + 1),
        PAGES[(h % 6) as usize],
        100 + (h % 29_901) as i64,
        COUNTRIES[((h >> 13) % 8) as usize],
    )
}

fn clicks(range: std::ops::Range<i64>) -> RecordBatch {
    let rows: Vec<_> = range.map(click).collect();
    let schema = common::clicks_schema();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.1.clone()),
        )),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.2))),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.3))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.4))),
    ];
    RecordBatch::try_new(schema, columns).unwrap()
}

async fn tutorial(dir: &tempfile::TempDir, writes: i64) -> Apiary {
    let ap = Apiary::open(dir.path().to_str().unwrap()).await.unwrap();
    common::create_clicks_frame(&ap).await;
    let per = 10_000 / writes;
    for w in 0..writes {
        ap.write_to_frame(
            "analytics",
            "events",
            "clicks",
            [clicks(w * per..(w + 1) * per)],
        )
        .await
        .unwrap();
    }
    ap
}

fn int(result: &QueryResult, column: usize) -> Vec<i64> {
    result
        .batches()
        .iter()
        .flat_map(|b| {
            let c = arrow_cast::cast(b.column(column), &DataType::Int64).unwrap();
            c.as_primitive::<Int64Type>()
                .iter()
                .map(|v| v.unwrap_or(i64::MIN))
                .collect::<Vec<_>>()
        })
        .collect()
}

fn text(result: &QueryResult, column: usize) -> Vec<String> {
    result
        .batches()
        .iter()
        .flat_map(|b| {
            let c = arrow_cast::cast(b.column(column), &DataType::Utf8).unwrap();
            c.as_string::<i32>()
                .iter()
                .map(|v| v.unwrap_or("NULL").to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

async fn one_int(ap: &Apiary, sql: &str) -> i64 {
    let r = ap.sql(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    let v = int(&r, 0);
    assert_eq!(v.len(), 1, "{sql}");
    v[0]
}

fn expected_by<K: Ord>(
    key: impl Fn(&(i64, String, &'static str, i64, &'static str)) -> K,
) -> BTreeMap<K, i64> {
    let mut m = BTreeMap::new();
    for i in 0..10_000 {
        *m.entry(key(&click(i))).or_default() += 1;
    }
    m
}

#[tokio::test]
async fn the_tutorials_queries_answer_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let ap = tutorial(&dir, 1).await;

    let r = ap
        .sql(
            "SELECT page, COUNT(*) AS visits, AVG(duration_ms) AS avg_duration
             FROM analytics.events.clicks GROUP BY page ORDER BY visits DESC, page",
        )
        .await
        .unwrap();
    let got: BTreeMap<String, i64> = text(&r, 0).into_iter().zip(int(&r, 1)).collect();
    let want: BTreeMap<String, i64> = expected_by(|c| c.2.to_string());
    assert_eq!(got, want);
    let visits = int(&r, 1);
    assert!(visits.windows(2).all(|w| w[0] >= w[1]), "ordered by visits");

    let r = ap
        .sql(
            "SELECT country, COUNT(*) AS events, AVG(duration_ms) AS avg_duration
             FROM analytics.events.clicks GROUP BY country ORDER BY events DESC",
        )
        .await
        .unwrap();
    let got: BTreeMap<String, i64> = text(&r, 0).into_iter().zip(int(&r, 1)).collect();
    assert_eq!(got, expected_by(|c| c.4.to_string()));

    // The seeds read results with pyarrow.ipc.open_stream: one IPC stream.
    let bytes = ap
        .sql_ipc("SELECT COUNT(*) AS n FROM analytics.events.clicks")
        .await
        .unwrap();
    let reader =
        arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None).unwrap();
    let batches: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
    assert_eq!(batches[0].schema().field(0).name(), "n");
    assert_eq!(
        batches[0].column(0).as_primitive::<Int64Type>().value(0),
        10_000
    );
}

#[tokio::test]
async fn explain_analyze_shows_cells_total_pruned_and_read() {
    let dir = tempfile::tempdir().unwrap();
    let ap = tutorial(&dir, 2).await;
    let total = ap
        .describe_frame("analytics", "events", "clicks")
        .await
        .unwrap()
        .cells;
    assert_eq!(total, 16, "8 countries x 2 writes");

    let r = ap
        .sql("EXPLAIN ANALYZE SELECT country, COUNT(*) FROM analytics.events.clicks GROUP BY country")
        .await
        .unwrap();
    let plan = text(&r, 1).join("\n");
    assert!(
        plan.contains("FrameScanExec: frame=analytics.events.clicks, version=2, cells_total=16, cells_pruned=0, cells_read=16"),
        "{plan}"
    );
    assert!(plan.contains("DataSourceExec"), "{plan}");

    let r = ap
        .sql("EXPLAIN SELECT SUM(duration_ms) FROM analytics.events.clicks WHERE country = 'us' OR country = 'de'")
        .await
        .unwrap();
    let plan = text(&r, 1).join("\n");
    assert!(
        plan.contains("cells_total=16, cells_pruned=12, cells_read=4"),
        "{plan}"
    );

    // Statistics prune too: event ids are written in order, so a range hits one write.
    let r = ap
        .sql("EXPLAIN SELECT COUNT(*) FROM analytics.events.clicks WHERE event_id < 100")
        .await
        .unwrap();
    let plan = text(&r, 1).join("\n");
    assert!(
        plan.contains("cells_total=16, cells_pruned=8, cells_read=8"),
        "{plan}"
    );
}

#[tokio::test]
async fn pruning_never_changes_an_answer() {
    let dir = tempfile::tempdir().unwrap();
    let ap = tutorial(&dir, 4).await;
    let by_country = expected_by(|c| c.4);
    let us = by_country["us"];
    let uk = by_country["uk"];
    let t = "analytics.events.clicks";

    // OR on a partition column (the reference dropped one side).
    assert_eq!(
        one_int(
            &ap,
            &format!("SELECT COUNT(*) FROM {t} WHERE country = 'us' OR country = 'uk'")
        )
        .await,
        us + uk
    );
    assert_eq!(
        one_int(
            &ap,
            &format!("SELECT COUNT(*) FROM {t} WHERE country IN ('us', 'uk')")
        )
        .await,
        us + uk
    );
    let mixed = (0..10_000)
        .map(click)
        .filter(|c| c.4 == "us" || c.3 > 29_000)
        .count() as i64;
    assert_eq!(
        one_int(
            &ap,
            &format!("SELECT COUNT(*) FROM {t} WHERE country = 'us' OR duration_ms > 29000")
        )
        .await,
        mixed
    );
    assert_eq!(
        one_int(
            &ap,
            &format!("SELECT COUNT(*) FROM {t} WHERE NOT (country <> 'us')")
        )
        .await,
        us
    );

    // A filtered and an unfiltered reference to one frame.
    assert_eq!(
        one_int(&ap, &format!("SELECT COUNT(*) FROM (SELECT event_id FROM {t} WHERE country = 'us' UNION ALL SELECT event_id FROM {t})")).await,
        us + 10_000
    );
    // Self-join with a filter on one side only.
    assert_eq!(
        one_int(&ap, &format!("SELECT COUNT(*) FROM {t} a JOIN {t} b ON a.event_id = b.event_id WHERE a.country = 'us'")).await,
        us
    );
    // Scalar subquery over a pruned reference.
    let avg_us = (0..10_000)
        .map(click)
        .filter(|c| c.4 == "us")
        .map(|c| c.3 as f64)
        .sum::<f64>()
        / us as f64;
    let above = (0..10_000)
        .map(click)
        .filter(|c| c.3 as f64 > avg_us)
        .count() as i64;
    assert_eq!(
        one_int(&ap, &format!("SELECT COUNT(*) FROM {t} WHERE duration_ms > (SELECT AVG(duration_ms) FROM {t} WHERE country = 'us')")).await,
        above
    );
    // A predicate no cell can satisfy, and one on an unknown partition value.
    assert_eq!(
        one_int(
            &ap,
            &format!("SELECT COUNT(*) FROM {t} WHERE event_id > 1000000")
        )
        .await,
        0
    );
    assert_eq!(
        one_int(
            &ap,
            &format!("SELECT COUNT(*) FROM {t} WHERE country = 'zz'")
        )
        .await,
        0
    );
    // LIMIT without a filter reads only what it needs, and still returns enough rows.
    let r = ap
        .sql(&format!("SELECT event_id FROM {t} LIMIT 7"))
        .await
        .unwrap();
    assert_eq!(r.num_rows(), 7);
}

#[tokio::test]
async fn a_checkpointed_frame_counts_every_row_once() {
    let dir = tempfile::tempdir().unwrap();
    let ap = tutorial(&dir, 1).await;
    // 60 more commits: past the checkpoint every 50 versions.
    for i in 0..60 {
        ap.write_to_frame(
            "analytics",
            "events",
            "clicks",
            [clicks(10_000 + i..10_001 + i)],
        )
        .await
        .unwrap();
    }
    assert_eq!(
        one_int(&ap, "SELECT COUNT(*) FROM analytics.events.clicks").await,
        10_060
    );
    assert_eq!(
        one_int(
            &ap,
            "SELECT COUNT(DISTINCT event_id) FROM analytics.events.clicks"
        )
        .await,
        10_060
    );
    // A second handle opens from the checkpoint.
    let other = Apiary::open(dir.path().to_str().unwrap()).await.unwrap();
    assert_eq!(
        one_int(&other, "SELECT SUM(1) FROM analytics.events.clicks").await,
        10_060
    );
}

#[tokio::test]
async fn columns_written_in_another_order_read_back_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let ap = tutorial(&dir, 1).await;
    let batch = clicks(20_000..20_010);
    let order = [4, 3, 0, 2, 1];
    let schema = Arc::new(batch.schema().project(&order).unwrap());
    let shuffled = RecordBatch::try_new(
        schema,
        order.iter().map(|&i| Arc::clone(batch.column(i))).collect(),
    )
    .unwrap();
    ap.write_to_frame("analytics", "events", "clicks", [shuffled])
        .await
        .unwrap();
    let r = ap
        .sql("SELECT event_id, user_id, page, duration_ms, country FROM analytics.events.clicks WHERE event_id >= 20000 ORDER BY event_id")
        .await
        .unwrap();
    let want: Vec<_> = (20_000..20_010).map(click).collect();
    assert_eq!(int(&r, 0), want.iter().map(|c| c.0).collect::<Vec<_>>());
    assert_eq!(
        text(&r, 1),
        want.iter().map(|c| c.1.clone()).collect::<Vec<_>>()
    );
    assert_eq!(
        text(&r, 2),
        want.iter().map(|c| c.2.to_string()).collect::<Vec<_>>()
    );
    assert_eq!(int(&r, 3), want.iter().map(|c| c.3).collect::<Vec<_>>());
    assert_eq!(
        text(&r, 4),
        want.iter().map(|c| c.4.to_string()).collect::<Vec<_>>()
    );
    // SELECT * keeps the frame's column order, partition column included where declared.
    let r = ap
        .sql("SELECT * FROM analytics.events.clicks LIMIT 1")
        .await
        .unwrap();
    let names: Vec<_> = r
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(
        names,
        ["event_id", "user_id", "page", "duration_ms", "country"]
    );
}

#[tokio::test]
async fn the_sql_surface_datafusion_offers_works_over_frames() {
    let dir = tempfile::tempdir().unwrap();
    let ap = Apiary::open(dir.path().to_str().unwrap()).await.unwrap();
    ap.create_hive("shop").await.unwrap();
    ap.create_box("shop", "main").await.unwrap();
    ap.create_frame(
        "shop",
        "main",
        "values",
        &[
            ("id", "int32"),
            ("day", "date32"),
            ("at", "timestamp(us)"),
            ("name", "utf8"),
        ],
        &["day"],
    )
    .await
    .unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int32, true),
        Field::new("day", DataType::Date32, true),
        Field::new("at", DataType::Timestamp(TimeUnit::Microsecond, None), true),
        Field::new("name", DataType::Utf8, true),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int32Array::from(vec![1, 2, 3])),
            Arc::new(Date32Array::from(vec![19_000, 19_000, 19_400])),
            Arc::new(TimestampMicrosecondArray::from(vec![
                1_641_600_000_000_000,
                1_641_600_000_000_001,
                1_676_160_000_000_000,
            ])),
            Arc::new(StringArray::from(vec!["alpha/x=1", "beta", "gamma"])),
        ],
    )
    .unwrap();
    ap.write_to_frame("shop", "main", "values", [batch])
        .await
        .unwrap();

    let f = r#"shop.main."values""#;
    assert_eq!(one_int(&ap, "SELECT 1").await, 1);
    assert_eq!(one_int(&ap, &format!("SELECT COUNT(*) FROM {f}")).await, 3);
    assert_eq!(
        one_int(
            &ap,
            &format!("WITH v AS (SELECT id FROM {f} WHERE id > 1) SELECT SUM(id) FROM v")
        )
        .await,
        5
    );
    assert_eq!(
        one_int(
            &ap,
            &format!("SELECT COUNT(*) FROM {f} a, {f} b WHERE a.id = b.id")
        )
        .await,
        3
    );
    let r = ap
        .sql(&format!("SELECT EXTRACT(YEAR FROM at) AS y, SUBSTRING(name FROM 1 FOR 4) AS s FROM {f} ORDER BY id"))
        .await
        .unwrap();
    assert_eq!(int(&r, 0), [2022, 2022, 2023]);
    assert_eq!(text(&r, 1), ["alph", "beta", "gamm"]);
    assert_eq!(
        one_int(
            &ap,
            &format!("SELECT COUNT(*) FROM {f} WHERE day = DATE '2022-01-08'")
        )
        .await,
        2
    );
    assert_eq!(
        one_int(&ap, &format!("SELECT id FROM {f} WHERE name = 'alpha/x=1'")).await,
        1
    );
    let r = ap
        .sql(&format!("SELECT id, ROW_NUMBER() OVER (PARTITION BY day ORDER BY id DESC) AS rn FROM {f} ORDER BY id"))
        .await
        .unwrap();
    assert_eq!(int(&r, 1), [2, 1, 1]);
    assert_eq!(one_int(&ap, &format!("SELECT MAX(id) FROM {f} WHERE id IN (SELECT id FROM {f} WHERE day > DATE '2022-06-01')")).await, 3);
}

#[tokio::test]
async fn a_warm_query_does_not_list_storage() {
    use apiary::apiary_ledger::LedgerConfig;
    use apiary::apiary_storage::{
        FaultConfig, InstrumentedStore, ObjectStoreBackend, StorageUri, object_store_for,
    };
    let (inner, caps) = object_store_for(&StorageUri::Memory).unwrap();
    let store = InstrumentedStore::new(inner, FaultConfig::none());
    let counts = store.counts();
    let backend = Arc::new(ObjectStoreBackend::new(Arc::new(store), caps, "memory://"));
    let ap = Apiary::with_backend(StorageUri::Memory, backend, LedgerConfig::default());
    ap.create_hive("analytics").await.unwrap();
    ap.create_box("analytics", "events").await.unwrap();
    ap.create_frame(
        "analytics",
        "events",
        "clicks",
        &[("event_id", "int64"), ("country", "utf8")],
        &["country"],
    )
    .await
    .unwrap();
    let batch = clicks(0..1000);
    let batch = RecordBatch::try_new(
        Arc::new(batch.schema().project(&[0, 4]).unwrap()),
        vec![Arc::clone(batch.column(0)), Arc::clone(batch.column(4))],
    )
    .unwrap();
    ap.write_to_frame("analytics", "events", "clicks", [batch])
        .await
        .unwrap();
    assert_eq!(
        one_int(&ap, "SELECT SUM(event_id) FROM analytics.events.clicks").await,
        499_500
    );
    let before = counts.snapshot();
    assert_eq!(
        one_int(
            &ap,
            "SELECT SUM(event_id) FROM analytics.events.clicks WHERE event_id >= 0"
        )
        .await,
        499_500
    );
    let after = counts.snapshot();
    assert_eq!(after.list - before.list, 0, "a warm query lists nothing");
    // COUNT(*) is answered from the ledger's exact row counts: the one request is the
    // ledger probe for a newer version.
    let before = counts.snapshot();
    assert_eq!(
        one_int(&ap, "SELECT COUNT(*) FROM analytics.events.clicks").await,
        1000
    );
    let after = counts.snapshot();
    assert_eq!(
        (
            after.get - before.get,
            after.list - before.list,
            after.head - before.head
        ),
        (1, 0, 0)
    );
}

#[path = "sql/statements.rs"]
mod statements;
