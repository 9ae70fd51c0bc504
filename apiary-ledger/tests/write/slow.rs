//! Slow writes and vacuum: ages are judged on the store's clock, a write slower than its
//! limit commits nothing, a blocking input does not stall the runtime, and vacuum deletes
//! only what nothing can need.

use super::*;

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
