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

#[tokio::test]
async fn vacuum_deletes_only_what_nothing_can_need() {
    use std::time::Duration;
    let backend = apiary_storage::memory();
    let registry = setup(Arc::clone(&backend)).await;
    let ledger = registry.ledger(&frame()).await.unwrap();
    let opts = WriteOptions::default();
    write_batches(
        &ledger,
        backend.as_ref(),
        [Ok(clicks(0, 100))],
        WriteMode::Append,
        &opts,
    )
    .await
    .unwrap();
    write_batches(
        &ledger,
        backend.as_ref(),
        [Ok(clicks(100, 10))],
        WriteMode::Overwrite,
        &opts,
    )
    .await
    .unwrap();
    // An orphan: uploaded by a write that never committed.
    let orphan = Path::from("analytics/events/clicks/data/country=us/orphan.parquet");
    backend
        .put(&orphan, bytes::Bytes::from_static(b"PAR1"))
        .await
        .unwrap();
    let files = || async {
        backend
            .list(&Path::from("analytics/events/clicks/data"))
            .await
            .unwrap()
            .len()
    };
    let before = files().await;
    assert_eq!(before, 8 + 8 + 1);

    // Within the retention everything stays: the overwrite and the orphan are recent.
    let r = vacuum(&ledger, backend.as_ref(), Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!((r.files_deleted, r.files_kept), (0, before));

    // With no retention: the overwritten cells and the orphan go, the live cells stay.
    apiary_storage::time::sleep(Duration::from_millis(5)).await;
    let r = vacuum(&ledger, backend.as_ref(), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!((r.files_deleted, r.files_kept), (9, 8), "{r:?}");
    let read = read_batches(&ledger, backend.as_ref(), &[]).await.unwrap();
    assert_eq!(rows_by_id(&read).len(), 10, "the live version is intact");

    // A dropped frame keeps its cells until the drop ages out.
    registry.drop_frame(&frame()).await.unwrap();
    let r = vacuum(&ledger, backend.as_ref(), Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(r.files_deleted, 0);
    apiary_storage::time::sleep(Duration::from_millis(5)).await;
    let r = vacuum(&ledger, backend.as_ref(), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!((r.files_deleted, r.files_kept), (8, 0));
}

/// An input whose first batch arrives at once and whose second waits for `go` (a slow
/// upstream: a pipe, a network stream). It waits at most `limit`, then ends with an error.
fn slow_input(
    first: RecordBatch,
    second: RecordBatch,
    go: std::sync::mpsc::Receiver<()>,
    limit: std::time::Duration,
) -> impl Iterator<Item = Result<RecordBatch, LedgerError>> + Send + 'static {
    let mut step = 0;
    std::iter::from_fn(move || {
        step += 1;
        match step {
            1 => Some(Ok(first.clone())),
            2 => Some(match go.recv_timeout(limit) {
                Ok(()) => Ok(second.clone()),
                Err(_) => Err(LedgerError::Invalid(
                    "the input was not released: its reader blocked the task that would \
                     release it"
                        .into(),
                )),
            }),
            _ => None,
        }
    })
}

fn one_cell_per_batch() -> WriteOptions {
    WriteOptions {
        target_cell_bytes: 1,
        ..WriteOptions::default()
    }
}

async fn cells_in_storage(backend: &Arc<dyn StorageBackend>) -> usize {
    backend
        .list(&Path::from("analytics/events/clicks/data"))
        .await
        .unwrap()
        .len()
}

/// Starts a write of two batches whose second waits for the returned sender, and returns
/// once the first batch's cells are uploaded.
async fn start_slow_write(
    ledger: &Arc<FrameLedger>,
    backend: &Arc<dyn StorageBackend>,
    options: WriteOptions,
) -> (
    std::sync::mpsc::Sender<()>,
    tokio::task::JoinHandle<Result<WriteResult, LedgerError>>,
) {
    let (go, wait) = std::sync::mpsc::channel();
    let writing = {
        let (ledger, backend) = (Arc::clone(ledger), Arc::clone(backend));
        tokio::spawn(async move {
            let input = slow_input(
                clicks(0, 8),
                clicks(8, 8),
                wait,
                std::time::Duration::from_secs(60),
            );
            write_batches(
                &ledger,
                backend.as_ref(),
                input,
                WriteMode::Append,
                &options,
            )
            .await
        })
    };
    for _ in 0..2000 {
        if cells_in_storage(backend).await > 0 {
            break;
        }
        apiary_storage::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert!(
        cells_in_storage(backend).await > 0,
        "the first cells are uploaded"
    );
    (go, writing)
}

/// Vacuum judges every age on the store's clock. A node whose clock runs an hour fast must
/// not delete the cells of a write still uploading; one whose clock runs two hours slow
/// (so its own commits look old) must not delete cells that a recent overwrite removed and
/// a reader of the version before may still read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vacuum_ages_on_the_store_clock_whatever_the_nodes_clock_says() {
    use apiary_storage::SystemClock;
    use std::time::Duration;
    const HOUR: Duration = Duration::from_secs(3600);
    let backend = apiary_storage::memory();
    let skewed = |offset: Duration, ahead: bool| LedgerConfig {
        clock: Arc::new(SystemClock::with_wall_offset(offset, ahead)),
        ..LedgerConfig::default()
    };

    // Fast clock, slow write: the first cell is uploaded, the rest waits.
    let registry = setup_with(Arc::clone(&backend), skewed(HOUR, true)).await;
    let ledger = registry.ledger(&frame()).await.unwrap();
    let (go, writing) = start_slow_write(&ledger, &backend, one_cell_per_batch()).await;
    let r = vacuum(&ledger, backend.as_ref(), HOUR).await.unwrap();
    assert_eq!(
        r.files_deleted, 0,
        "a write in flight keeps its cells: {r:?}"
    );
    go.send(()).unwrap();
    let written = writing.await.unwrap().unwrap();
    assert_eq!(written.rows_written, 16);
    let read = read_batches(&ledger, backend.as_ref(), &[]).await.unwrap();
    assert_eq!(
        rows_by_id(&read).len(),
        16,
        "every committed cell is readable"
    );

    // Slow clock: this node's overwrite carries a `committed_at_ms` two hours old. The cells
    // it removes were uploaded over a second ago, so only the overwrite's own (store) age
    // protects them from a vacuum with a one-second retention.
    apiary_storage::time::sleep(Duration::from_millis(1200)).await;
    let slow = Registry::new(Arc::clone(&backend), skewed(2 * HOUR, false));
    let ledger = slow.ledger(&frame()).await.unwrap();
    write_batches(
        &ledger,
        backend.as_ref(),
        [Ok(clicks(100, 8))],
        WriteMode::Overwrite,
        &WriteOptions::default(),
    )
    .await
    .unwrap();
    let before = cells_in_storage(&backend).await;
    let r = vacuum(&ledger, backend.as_ref(), Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(
        r.files_deleted, 0,
        "cells removed a moment ago stay for the retention: {r:?}"
    );
    assert_eq!(cells_in_storage(&backend).await, before);
    // Once the overwrite itself is older than the retention, they go.
    apiary_storage::time::sleep(Duration::from_millis(1200)).await;
    let r = vacuum(&ledger, backend.as_ref(), Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(r.files_deleted, before - 8, "{r:?}");
}

/// A write whose uploads outlast its `max_write_age` commits nothing: by then a vacuum may
/// have taken its first cells for orphans.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_slower_than_its_limit_commits_nothing() {
    use std::time::Duration;
    let backend = apiary_storage::memory();
    let registry = setup(Arc::clone(&backend)).await;
    let ledger = registry.ledger(&frame()).await.unwrap();
    let version = ledger.refresh().await.unwrap().unwrap().version;
    let options = WriteOptions {
        max_write_age: Duration::from_millis(200),
        ..one_cell_per_batch()
    };
    let (go, writing) = start_slow_write(&ledger, &backend, options).await;
    // Released only after the limit has surely passed since the first upload.
    apiary_storage::time::sleep(Duration::from_millis(400)).await;
    go.send(()).unwrap();
    let err = writing.await.unwrap().unwrap_err();
    assert!(matches!(err, LedgerError::Expired { .. }), "{err}");
    assert!(err.to_string().contains("Nothing was committed"), "{err}");
    assert_eq!(
        ledger.refresh().await.unwrap().unwrap().version,
        version,
        "no commit"
    );
}

/// The input of a write is pulled off the async runtime: on a single-threaded runtime, an
/// input that waits for another task of the same runtime completes instead of deadlocking.
#[tokio::test(flavor = "current_thread")]
async fn a_blocking_input_does_not_stall_the_runtime() {
    use std::time::Duration;
    let backend = apiary_storage::memory();
    let registry = setup(Arc::clone(&backend)).await;
    let ledger = registry.ledger(&frame()).await.unwrap();
    let (go, wait) = std::sync::mpsc::channel();
    // Runs only if the write leaves the runtime's one thread free.
    let releaser = tokio::spawn(async move {
        apiary_storage::time::sleep(Duration::from_millis(20)).await;
        go.send(()).unwrap();
    });
    let written = write_batches(
        &ledger,
        backend.as_ref(),
        slow_input(clicks(0, 8), clicks(8, 8), wait, Duration::from_secs(10)),
        WriteMode::Append,
        &WriteOptions::default(),
    )
    .await
    .unwrap();
    releaser.await.unwrap();
    assert_eq!(written.rows_written, 16);
}

mod compaction {
    use super::*;
    use apiary_ledger::{CompactOptions, compact};
    use apiary_storage::{FaultConfig, Hold, InstrumentedStore, ObjectStoreBackend, RequestKind};

    fn small_writes() -> WriteOptions {
        WriteOptions {
            target_cell_bytes: 1 << 20,
            ..WriteOptions::default()
        }
    }

    fn options(owner: &str) -> CompactOptions {
        CompactOptions::new(small_writes(), owner)
    }

    /// `n` writes of 25 rows each: 8 small cells per write (one per country).
    async fn many_writes(ledger: &FrameLedger, backend: &Arc<dyn StorageBackend>, n: i64) {
        for w in 0..n {
            write_batches(
                ledger,
                backend.as_ref(),
                [Ok(clicks(w * 25, 25))],
                WriteMode::Append,
                &small_writes(),
            )
            .await
            .unwrap();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn small_cells_become_one_per_partition_with_the_same_rows() {
        let backend = apiary_storage::memory();
        let registry = setup(Arc::clone(&backend)).await;
        let ledger = registry.ledger(&frame()).await.unwrap();
        many_writes(&ledger, &backend, 20).await;
        let before = read_batches(&ledger, backend.as_ref(), &[]).await.unwrap();
        assert_eq!(
            ledger.cached().unwrap().live.as_ref().unwrap().cells.len(),
            160
        );

        let done = compact(&ledger, backend.as_ref(), &options("n1"))
            .await
            .unwrap();
        assert_eq!(
            (done.cells_removed, done.cells_added, done.commits),
            (160, 8, 8),
            "{done:?}"
        );
        let state = ledger.refresh().await.unwrap().unwrap();
        assert_eq!(state.live.as_ref().unwrap().cells.len(), 8);
        let after = read_batches(&ledger, backend.as_ref(), &[]).await.unwrap();
        assert_eq!(
            rows_by_id(&after),
            rows_by_id(&before),
            "the same rows, once each"
        );
        // Nothing small is left to do.
        let again = compact(&ledger, backend.as_ref(), &options("n1"))
            .await
            .unwrap();
        assert_eq!(again.commits, 0);
        // The lease was released.
        let leases = backend
            .list(&Path::from("analytics/events/clicks/_compaction"))
            .await
            .unwrap();
        assert!(leases.is_empty(), "{leases:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_concurrent_overwrite_wins_and_the_compaction_stands_down() {
        let (store, caps) = apiary_storage::object_store_for(&StorageUri::Memory).unwrap();
        let hold = Hold::new(&[RequestKind::ConditionalPut]);
        let held: Arc<dyn StorageBackend> = Arc::new(ObjectStoreBackend::new(
            Arc::new(
                InstrumentedStore::new(Arc::clone(&store), FaultConfig::none())
                    .with_hold(hold.clone()),
            ),
            caps,
            "memory://",
        ));
        let free: Arc<dyn StorageBackend> =
            Arc::new(ObjectStoreBackend::new(store, caps, "memory://"));
        let registry = setup(Arc::clone(&free)).await;
        let writer = registry.ledger(&frame()).await.unwrap();
        many_writes(&writer, &free, 4).await;
        let compactor_registry = Registry::new(Arc::clone(&held), LedgerConfig::default());
        let compactor = compactor_registry.ledger(&frame()).await.unwrap();
        hold.close();
        let compacting = {
            let (ledger, backend) = (Arc::clone(&compactor), Arc::clone(&held));
            tokio::spawn(async move { compact(&ledger, backend.as_ref(), &options("n2")).await })
        };
        // The compaction's first conditional PUT (its lease) goes through; its second (the
        // first rewrite commit) waits at the gate.
        hold.let_through(1);
        for _ in 0..2000 {
            if hold.passed() == 1 && hold.waiting() == 1 {
                break;
            }
            apiary_storage::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert_eq!((hold.passed(), hold.waiting()), (1, 1));
        write_batches(
            &writer,
            free.as_ref(),
            [Ok(clicks(10_000, 10))],
            WriteMode::Overwrite,
            &small_writes(),
        )
        .await
        .unwrap();
        hold.open();
        let done = compacting.await.unwrap().unwrap();
        assert!(done.conflicts >= 1, "{done:?}");
        let read = read_batches(&writer, free.as_ref(), &[]).await.unwrap();
        let rows = rows_by_id(&read);
        assert_eq!(rows.len(), 10, "only the overwrite's rows: {done:?}");
        assert!(rows.keys().all(|id| *id >= 10_000));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn only_one_node_compacts_a_frame_at_a_time() {
        let backend = apiary_storage::memory();
        let registry = setup(Arc::clone(&backend)).await;
        let ledger = registry.ledger(&frame()).await.unwrap();
        many_writes(&ledger, &backend, 4).await;
        // Another node holds a live lease.
        backend
            .put(
                &Path::from("analytics/events/clicks/_compaction/lease-00000000000000000007.json"),
                bytes::Bytes::from_static(b"{}"),
            )
            .await
            .unwrap();
        let done = compact(&ledger, backend.as_ref(), &options("n3"))
            .await
            .unwrap();
        assert!(done.lease_held_elsewhere);
        assert_eq!(done.commits, 0);
        // Once it lapses (here: a lease time of zero), the next epoch is taken.
        let lapsed = CompactOptions {
            lease: std::time::Duration::ZERO,
            ..options("n3")
        };
        let done = compact(&ledger, backend.as_ref(), &lapsed).await.unwrap();
        assert!(!done.lease_held_elsewhere);
        assert_eq!(done.commits, 8);
    }
}
