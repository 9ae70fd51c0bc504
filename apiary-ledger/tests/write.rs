//! Writing Arrow data into partitioned Parquet cells committed through the ledger, and
//! reading it back.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use apiary_ledger::{
    FrameDefinition, FrameLedger, FrameRef, FrameSchema, LedgerConfig, LedgerError, Registry,
    StatValue, WriteMode, WriteOptions, WriteResult, read_batches, vacuum, write_batches,
};
use apiary_storage::conformance::s3_test_uri;
use apiary_storage::{Path, StorageBackend, StorageUri};
use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};

const COUNTRIES: [&str; 8] = ["us", "uk", "de", "fr", "jp", "br", "au", "ca"];

fn frame() -> FrameRef {
    FrameRef::parse("analytics.events.clicks").unwrap()
}

async fn setup(backend: Arc<dyn StorageBackend>) -> Registry {
    setup_with(backend, LedgerConfig::default()).await
}

async fn setup_with(backend: Arc<dyn StorageBackend>, config: LedgerConfig) -> Registry {
    let registry = Registry::new(backend, config);
    registry.create_hive("analytics").await.unwrap();
    registry.create_box("analytics", "events").await.unwrap();
    let definition = FrameDefinition::new(
        FrameSchema::parse_compact(
            "event_id:int64,user_id:utf8,page:utf8,duration_ms:int64,country:utf8",
        )
        .unwrap(),
        vec!["country".into()],
    )
    .unwrap();
    registry.create_frame(&frame(), definition).await.unwrap();
    registry
}

/// `rows` tutorial click events, in a column order unlike the frame's.
fn clicks(start: i64, rows: i64) -> RecordBatch {
    let ids: Vec<i64> = (start..start + rows).collect();
    let schema = Schema::new(vec![
        Field::new("country", DataType::Utf8, false),
        Field::new("duration_ms", DataType::Int64, true),
        Field::new("event_id", DataType::Int64, true),
        Field::new("page", DataType::Utf8, true),
        Field::new("user_id", DataType::Utf8, true),
    ]);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            ids.iter().map(|i| COUNTRIES[(*i as usize * 7) % 8]),
        )),
        Arc::new(Int64Array::from_iter_values(
            ids.iter().map(|i| 100 + i * 3 % 29_900),
        )),
        Arc::new(Int64Array::from(ids.clone())),
        Arc::new(StringArray::from_iter_values(
            ids.iter().map(|i| format!("/p{}", i % 6)),
        )),
        Arc::new(StringArray::from_iter_values(
            ids.iter().map(|i| format!("user_{}", i % 500)),
        )),
    ];
    RecordBatch::try_new(Arc::new(schema), columns).unwrap()
}

/// event_id → (country, duration) over every row read.
fn rows_by_id(batches: &[RecordBatch]) -> BTreeMap<i64, (String, i64)> {
    let mut out = BTreeMap::new();
    for b in batches {
        let ids = b
            .column_by_name("event_id")
            .unwrap()
            .as_primitive::<Int64Type>();
        let durations = b
            .column_by_name("duration_ms")
            .unwrap()
            .as_primitive::<Int64Type>();
        let countries = b.column_by_name("country").unwrap().as_string::<i32>();
        for i in 0..b.num_rows() {
            let old = out.insert(
                ids.value(i),
                (countries.value(i).to_string(), durations.value(i)),
            );
            assert!(old.is_none(), "row {} read twice", ids.value(i));
        }
    }
    out
}

async fn write_and_read(backend: Arc<dyn StorageBackend>) {
    let registry = setup(Arc::clone(&backend)).await;
    let ledger = registry.ledger(&frame()).await.unwrap();
    let input = vec![clicks(0, 6000), clicks(6000, 4000)];
    let result = write_batches(
        &ledger,
        backend.as_ref(),
        input.clone().into_iter().map(Ok),
        WriteMode::Append,
        &WriteOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(result.rows_written, 10_000);
    assert_eq!(result.cells_written, 8, "one cell per country");
    assert_eq!(result.version, 1, "one commit");
    let info = registry.get_frame(&frame()).await.unwrap();
    assert_eq!((info.rows, info.cells), (10_000, 8));

    let read = read_batches(&ledger, backend.as_ref(), &[]).await.unwrap();
    let schema = read[0].schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(
        names,
        ["event_id", "user_id", "page", "duration_ms", "country"]
    );
    let expected = rows_by_id(&input);
    assert_eq!(
        rows_by_id(&read),
        expected,
        "every row back, under the right names"
    );

    let us = read_batches(
        &ledger,
        backend.as_ref(),
        &[("country".into(), "us".into())],
    )
    .await
    .unwrap();
    let us = rows_by_id(&us);
    assert_eq!(
        us.len(),
        expected.values().filter(|(c, _)| c == "us").count()
    );
    assert!(us.values().all(|(c, _)| c == "us"));

    // Statistics in the ledger are exact.
    let state = ledger.cached().unwrap();
    for cell in state.live.as_ref().unwrap().cells.values() {
        let country = cell.partition_values["country"].clone().unwrap();
        let ids: Vec<i64> = expected
            .iter()
            .filter(|(_, (c, _))| *c == country)
            .map(|(id, _)| *id)
            .collect();
        let stats = &cell.stats["event_id"];
        assert_eq!(stats.min, Some(StatValue::Int(*ids.iter().min().unwrap())));
        assert_eq!(stats.max, Some(StatValue::Int(*ids.iter().max().unwrap())));
        assert_eq!(stats.null_count, 0);
        assert!(
            cell.path.starts_with(&format!("data/country={country}/")),
            "{}",
            cell.path
        );
        assert!(
            !cell.stats.contains_key("country"),
            "partition columns are not in the file"
        );
    }
}

#[tokio::test]
async fn write_and_read_in_memory() {
    write_and_read(apiary_storage::memory()).await;
}

#[tokio::test]
async fn write_and_read_on_a_local_folder() {
    let dir = tempfile::tempdir().unwrap();
    let backend = apiary_storage::open(&StorageUri::Local(dir.path().join("s")))
        .await
        .unwrap();
    write_and_read(backend).await;
}

#[tokio::test]
async fn write_and_read_on_s3() {
    let backend = apiary_storage::open(&s3_test_uri("write")).await.unwrap();
    write_and_read(backend).await;
}

#[tokio::test]
async fn cells_are_cut_near_the_target_size_in_bounded_memory() {
    let backend = apiary_storage::memory();
    let registry = setup(Arc::clone(&backend)).await;
    let ledger = registry.ledger(&frame()).await.unwrap();
    let options = WriteOptions {
        target_cell_bytes: 64 << 10,
        max_partitions: 100,
        memory_budget: 256 << 10,
        ..WriteOptions::default()
    };
    let input = (0..40).map(|i| Ok(clicks(i * 5000, 5000)));
    let result = write_batches(
        &ledger,
        backend.as_ref(),
        input,
        WriteMode::Append,
        &options,
    )
    .await
    .unwrap();
    assert_eq!(result.rows_written, 200_000);
    assert!(result.cells_written > 8, "{result:?}");
    let state = ledger.cached().unwrap();
    let live = state.live.as_ref().unwrap();
    // A cell closes at the first batch that takes it past the target: at most one batch
    // partition (5000 rows / 8 countries) beyond it.
    let biggest = live.cells.values().map(|c| c.bytes).max().unwrap();
    assert!(biggest < 2 * (64 << 10), "biggest cell {biggest} bytes");
    assert_eq!(live.rows(), 200_000);
}

#[tokio::test]
async fn rejected_writes_commit_nothing() {
    let backend = apiary_storage::memory();
    let registry = setup(Arc::clone(&backend)).await;
    let ledger = registry.ledger(&frame()).await.unwrap();
    let before = ledger.refresh().await.unwrap();
    let bad = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("event_id", DataType::Utf8, true),
            Field::new("country", DataType::Utf8, true),
        ])),
        vec![
            Arc::new(StringArray::from(vec!["x"])) as ArrayRef,
            Arc::new(StringArray::from(vec![Some("us")])),
        ],
    )
    .unwrap();
    let null_country = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("event_id", DataType::Int64, true),
            Field::new("country", DataType::Utf8, true),
        ])),
        vec![
            Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef,
            Arc::new(StringArray::from(vec![Some("us"), None])),
        ],
    )
    .unwrap();
    for (what, input, needle) in [
        (
            "wrong type",
            vec![clicks(0, 10), bad],
            "expected int64, found utf8",
        ),
        (
            "null partition",
            vec![null_country],
            "`country` is a partition column",
        ),
    ] {
        let err = write_batches(
            &ledger,
            backend.as_ref(),
            input.into_iter().map(Ok),
            WriteMode::Append,
            &WriteOptions::default(),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, LedgerError::Invalid(_)), "{what}: {err}");
        assert!(err.to_string().contains(needle), "{what}: {err}");
        assert_eq!(
            ledger.refresh().await.unwrap(),
            before,
            "{what}: nothing committed"
        );
    }
    let options = WriteOptions {
        max_partitions: 3,
        ..WriteOptions::default()
    };
    let err = write_batches(
        &ledger,
        backend.as_ref(),
        [Ok(clicks(0, 100))],
        WriteMode::Append,
        &options,
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("more than 3 partitions"), "{err}");
    assert_eq!(ledger.refresh().await.unwrap(), before);
}

#[tokio::test]
async fn overwrite_replaces_everything() {
    let backend = apiary_storage::memory();
    let registry = setup(Arc::clone(&backend)).await;
    let ledger = registry.ledger(&frame()).await.unwrap();
    let append = |start| {
        let ledger = Arc::clone(&ledger);
        let backend = Arc::clone(&backend);
        async move {
            write_batches(
                &ledger,
                backend.as_ref(),
                [Ok(clicks(start, 1000))],
                WriteMode::Append,
                &WriteOptions::default(),
            )
            .await
            .unwrap()
        }
    };
    append(0).await;
    append(1000).await;
    let result = write_batches(
        &ledger,
        backend.as_ref(),
        [Ok(clicks(50_000, 10))],
        WriteMode::Overwrite,
        &WriteOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(result.version, 3);
    let read = rows_by_id(&read_batches(&ledger, backend.as_ref(), &[]).await.unwrap());
    assert_eq!(
        read.keys().copied().collect::<Vec<_>>(),
        (50_000..50_010).collect::<Vec<_>>()
    );
    // The old cells are still in storage (for running readers) until vacuum.
    let stored = backend
        .list(&Path::from("analytics/events/clicks/data"))
        .await
        .unwrap()
        .len();
    assert!(stored > 8, "{stored}");
}

#[tokio::test]
async fn partition_values_of_any_kind_round_trip() {
    let backend = apiary_storage::memory();
    let registry = Registry::new(Arc::clone(&backend), LedgerConfig::default());
    registry.create_hive("h").await.unwrap();
    registry.create_box("h", "b").await.unwrap();
    let f = FrameRef::parse("h.b.f").unwrap();
    let definition = FrameDefinition::new(
        FrameSchema::parse_compact("x:int64,p:utf8,n:int32").unwrap(),
        vec!["p".into(), "n".into()],
    )
    .unwrap();
    registry.create_frame(&f, definition).await.unwrap();
    let ledger = registry.ledger(&f).await.unwrap();
    let values = [
        "a/b=c",
        "",
        "..",
        "%41",
        "100%",
        "naïve ☃",
        " spaced ",
        "#?*",
    ];
    let batch = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("x", DataType::Int64, true),
            Field::new("p", DataType::Utf8, false),
            Field::new("n", DataType::Int32, false),
        ])),
        vec![
            Arc::new(Int64Array::from_iter_values(0..values.len() as i64)) as ArrayRef,
            Arc::new(StringArray::from(values.to_vec())),
            Arc::new(arrow_array::Int32Array::from_iter_values(
                (0..values.len() as i32).map(|i| -i * 1000),
            )),
        ],
    )
    .unwrap();
    write_batches(
        &ledger,
        backend.as_ref(),
        [Ok(batch)],
        WriteMode::Append,
        &WriteOptions::default(),
    )
    .await
    .unwrap();
    let read = read_batches(&ledger, backend.as_ref(), &[]).await.unwrap();
    let mut got: Vec<(i64, String, i32)> = Vec::new();
    for b in &read {
        for i in 0..b.num_rows() {
            got.push((
                b.column(0).as_primitive::<Int64Type>().value(i),
                b.column(1).as_string::<i32>().value(i).to_string(),
                b.column(2)
                    .as_primitive::<arrow_array::types::Int32Type>()
                    .value(i),
            ));
        }
    }
    got.sort();
    let expected: Vec<(i64, String, i32)> = values
        .iter()
        .enumerate()
        .map(|(i, v)| (i as i64, v.to_string(), -(i as i32) * 1000))
        .collect();
    assert_eq!(got, expected);
}

#[path = "write/slow.rs"]
mod slow;

#[path = "write/compaction.rs"]
mod compaction;
