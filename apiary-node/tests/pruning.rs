//! Property: pruning cells with the ledger (partition values and column statistics) never
//! changes an answer. Random frames (partitioned by a negative-capable integer and by strings
//! with `/`, `=` and spaces, several writes so partitions hold several cells, nulls) are
//! queried with random predicates, and every answer is compared with DataFusion scanning the
//! same rows from memory, unpruned: with the memory tier off, and with it on (each predicate
//! twice, so cells are read cold, admitted and served from memory).
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use apiary::apiary_query::datafusion::datasource::MemTable;
use apiary::apiary_query::datafusion::prelude::SessionContext;
use apiary::{Apiary, ApiaryOptions};
use arrow_array::{Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use proptest::prelude::*;

const STRINGS: [&str; 5] = ["a/b", "x=1", "plain", "with space", "zz"];

#[derive(Debug, Clone)]
struct Row {
    p: i64,
    s: usize,
    x: Option<i64>,
    y: f64,
}

fn row() -> impl Strategy<Value = Row> {
    (
        -3i64..3,
        0usize..5,
        proptest::option::weighted(0.8, -50i64..50),
        -10.0f64..10.0,
    )
        .prop_map(|(p, s, x, y)| Row { p, s, x, y })
}

fn batch(rows: &[Row]) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("x", DataType::Int64, true),
        Field::new("p", DataType::Int64, false),
        Field::new("y", DataType::Float64, true),
        Field::new("s", DataType::Utf8, false),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(
                rows.iter().map(|r| r.x).collect::<Vec<_>>(),
            )),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.p))),
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.y))),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| STRINGS[r.s]),
            )),
        ],
    )
    .unwrap()
}

/// A predicate over the frame's columns, as SQL.
fn predicate() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        (
            prop_oneof![Just("="), Just("<"), Just(">="), Just("<>")],
            -4i64..4
        )
            .prop_map(|(op, v)| format!("p {op} {v}")),
        (prop_oneof![Just("="), Just("<"), Just(">")], -60i64..60)
            .prop_map(|(op, v)| format!("x {op} {v}")),
        (prop_oneof![Just("<"), Just(">")], -11.0f64..11.0)
            .prop_map(|(op, v)| format!("y {op} {v}")),
        (0usize..5).prop_map(|i| format!("s = '{}'", STRINGS[i])),
        (0usize..5).prop_map(|i| format!("s > '{}'", STRINGS[i])),
        Just("x IS NULL".to_string()),
        (-3i64..3, -3i64..3).prop_map(|(a, b)| format!("p IN ({a}, {b})")),
        (-60i64..60, 0i64..40).prop_map(|(a, w)| format!("x BETWEEN {a} AND {}", a + w)),
        Just("s LIKE 'a%'".to_string()),
    ];
    leaf.prop_recursive(3, 12, 2, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} AND {b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} OR {b})")),
            inner.prop_map(|a| format!("NOT ({a})")),
        ]
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn pruning_never_changes_an_answer(
        writes in proptest::collection::vec(proptest::collection::vec(row(), 1..40), 1..4),
        predicates in proptest::collection::vec(predicate(), 6),
    ) {
        runtime().block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let uri = apiary::apiary_storage::StorageUri::Local(dir.path().to_path_buf());
            let ap = Apiary::open_with(ApiaryOptions {
                memory_tier: Some(64 << 20),
                ..ApiaryOptions::new(uri.clone())
            })
            .await
            .unwrap();
            let off = Apiary::open_with(ApiaryOptions {
                memory_tier: Some(0),
                ..ApiaryOptions::new(uri)
            })
            .await
            .unwrap();
            ap.create_hive("h").await.unwrap();
            ap.create_box("h", "b").await.unwrap();
            ap.create_frame("h", "b", "f", &[("x", "int64"), ("p", "int64"), ("y", "float64"), ("s", "utf8")], &["p", "s"])
                .await
                .unwrap();
            let mut all = Vec::new();
            for rows in &writes {
                ap.write_to_frame("h", "b", "f", [batch(rows)]).await.unwrap();
                all.extend(rows.iter().cloned());
            }
            let reference = SessionContext::new();
            let data = batch(&all);
            let table = MemTable::try_new(data.schema(), vec![vec![data]]).unwrap();
            reference.register_table("f", Arc::new(table)).unwrap();
            for p in &predicates {
                let q = "SELECT COUNT(*) AS n, SUM(x) AS sx, COUNT(DISTINCT s) AS ds, MIN(p) AS mp FROM {t} WHERE {p}";
                let sql = q.replace("{t}", "h.b.f").replace("{p}", p);
                let theirs = reference
                    .sql(&q.replace("{t}", "f").replace("{p}", p))
                    .await
                    .unwrap()
                    .collect()
                    .await
                    .unwrap();
                let show = |b: &[RecordBatch]| {
                    apiary::apiary_query::datafusion::arrow::util::pretty::pretty_format_batches(b)
                        .unwrap()
                        .to_string()
                };
                for (who, ap) in [("tier off", &off), ("tier on", &ap), ("tier on, again", &ap)] {
                    let ours = ap.sql(&sql).await.unwrap();
                    assert_eq!(show(ours.batches()), show(&theirs), "{who}: WHERE {p}");
                }
            }
        });
    }
}
