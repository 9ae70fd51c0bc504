//! The cell scan core: a frame of many cells scanned with a projection and a selective
//! filter, by Apiary and by plain DataFusion over the very same Parquet files.
//!
//! * `pruned`: a range on a column the cells are ordered by; the ledger statistics rule out
//!   all but one cell (DataFusion must open every file's footer to find that out).
//! * `selective`: a filter no statistics can prune (every cell is read), two of four
//!   columns projected.
//! * `planning`: `EXPLAIN` of the pruned query: catalog, ledger and planning only.
//!
//! `apiary` reads through Parquet (the memory tier off), like DataFusion; `apiary_tier`
//! has the memory tier on, so after its first two runs the cells come from memory.
//!
//! `cargo bench -p apiary-benches --bench scan`

use std::sync::Arc;

use apiary::Apiary;
use apiary_benches::harness::run_datafusion;
use arrow_array::{Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use criterion::{Criterion, criterion_group, criterion_main};

const CELLS: i64 = 64;
const ROWS_PER_CELL: i64 = 50_000;

fn cell(n: i64) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("value", DataType::Float64, true),
        Field::new("category", DataType::Utf8, true),
        Field::new("ts", DataType::Int64, true),
    ]));
    let ids = n * ROWS_PER_CELL..(n + 1) * ROWS_PER_CELL;
    let hash = |i: i64| (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from_iter_values(ids.clone())),
            Arc::new(Float64Array::from_iter_values(
                ids.clone()
                    .map(|i| (hash(i) >> 11) as f64 / (1u64 << 53) as f64),
            )),
            Arc::new(StringArray::from_iter_values(
                ids.clone().map(|i| format!("c{}", hash(i) % 20)),
            )),
            Arc::new(Int64Array::from_iter_values(ids.map(|i| 1_700_000_000 + i))),
        ],
    )
    .expect("batch")
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let open = |tier: u64| {
        let uri = apiary::apiary_storage::StorageUri::Local(dir.path().to_path_buf());
        Apiary::open_with(apiary::ApiaryOptions {
            memory_tier: Some(tier),
            ..apiary::ApiaryOptions::new(uri)
        })
    };
    let (ap, tiered, df) = rt.block_on(async {
        let ap = open(0).await.expect("open");
        ap.create_hive("bench").await.expect("hive");
        ap.create_box("bench", "scan").await.expect("box");
        ap.create_frame(
            "bench",
            "scan",
            "events",
            &[
                ("id", "int64"),
                ("value", "float64"),
                ("category", "utf8"),
                ("ts", "int64"),
            ],
            &[],
        )
        .await
        .expect("frame");
        for n in 0..CELLS {
            ap.write_to_frame("bench", "scan", "events", [cell(n)])
                .await
                .expect("write");
        }
        let tables = vec![apiary_benches::ssb::Table {
            name: "events",
            schema: cell(0).schema(),
            batches: Vec::new(),
        }];
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let df = apiary_benches::harness::datafusion_over_cells(
            dir.path(),
            "bench",
            "scan",
            &tables,
            cores,
        )
        .await;
        (ap, open(1 << 30).await.expect("open"), df)
    });

    let pruned = "SELECT SUM(value) FROM {t} WHERE id BETWEEN 1000100 AND 1000200";
    let selective =
        "SELECT category, COUNT(*), SUM(value) FROM {t} WHERE value > 0.999 GROUP BY category";
    let planning = "EXPLAIN SELECT SUM(value) FROM {t} WHERE id BETWEEN 1000100 AND 1000200";
    for (name, sql) in [
        ("pruned", pruned),
        ("selective", selective),
        ("planning", planning),
    ] {
        let ours = sql.replace("{t}", "bench.scan.events");
        let theirs = sql.replace("{t}", "events");
        let mut group = c.benchmark_group(format!("scan/{name}"));
        group.sample_size(20);
        group.bench_function("apiary", |b| {
            b.to_async(&rt)
                .iter(|| async { ap.sql(&ours).await.expect("query") })
        });
        group.bench_function("apiary_tier", |b| {
            b.to_async(&rt)
                .iter(|| async { tiered.sql(&ours).await.expect("query") })
        });
        group.bench_function("datafusion", |b| {
            b.to_async(&rt).iter(|| run_datafusion(&df, &theirs))
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
