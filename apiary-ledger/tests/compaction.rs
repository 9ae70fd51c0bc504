//! Compaction's lease and memory: the lease is renewed while its holder works, so a
//! compaction longer than the lease keeps it, and short (a minute), so a killed holder does
//! not block others long; a group's cells are read one at a time as they are re-encoded.

#![allow(clippy::unwrap_used)]
#![allow(clippy::disallowed_methods)] // real processes and real time: waits and timings read the system clock

use std::sync::Arc;
use std::time::Duration;

use apiary_ledger::{
    CompactOptions, FrameDefinition, FrameLedger, FrameRef, FrameSchema, LedgerConfig, Operation,
    WriteMode, WriteOptions, compact, write_batches,
};
use apiary_storage::{
    FaultConfig, Hold, InstrumentedStore, ObjectStoreBackend, RequestKind, StorageUri,
};
use arrow_array::{ArrayRef, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};

fn rows(from: i64) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, true)]));
    let x: ArrayRef = Arc::new(Int64Array::from_iter_values(from..from + 10));
    RecordBatch::try_new(schema, vec![x]).unwrap()
}

/// A frame of `cells` small cells written quickly, and its ledger and backend over the same
/// memory store seen through `slow` (an instrumented store: latency, a gate).
async fn frame_of_small_cells(
    cells: i64,
    slow: impl FnOnce(Arc<dyn apiary_storage::object_store::ObjectStore>) -> InstrumentedStore,
) -> (Arc<FrameLedger>, Arc<dyn apiary_storage::StorageBackend>) {
    let (store, caps) = apiary_storage::object_store_for(&StorageUri::Memory).unwrap();
    let fast: Arc<dyn apiary_storage::StorageBackend> = Arc::new(ObjectStoreBackend::new(
        Arc::clone(&store),
        caps,
        "memory://",
    ));
    let backend: Arc<dyn apiary_storage::StorageBackend> = Arc::new(ObjectStoreBackend::new(
        Arc::new(slow(store)),
        caps,
        "memory://",
    ));
    let frame = FrameRef::new("h", "b", "f").unwrap();
    let writer = FrameLedger::open(Arc::clone(&fast), frame.clone(), LedgerConfig::default())
        .await
        .unwrap();
    let definition =
        FrameDefinition::new(FrameSchema::parse_compact("x:int64").unwrap(), vec![]).unwrap();
    writer.commit(&Operation::Create(definition)).await.unwrap();
    for i in 0..cells {
        write_batches(
            &writer,
            fast.as_ref(),
            [Ok(rows(i * 10))],
            WriteMode::Append,
            &WriteOptions::default(),
        )
        .await
        .unwrap();
    }
    let ledger = FrameLedger::open(Arc::clone(&backend), frame, LedgerConfig::default())
        .await
        .unwrap();
    (Arc::new(ledger), backend)
}

#[test]
fn a_lease_lasts_a_minute_unless_renewed() {
    let options = CompactOptions::new(WriteOptions::default(), "n");
    assert_eq!(options.lease, Duration::from_secs(60));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compaction_longer_than_its_lease_keeps_it() {
    // The cells are written quickly; then every request of the compaction takes up to
    // 30 ms, so compacting 60 cells takes far longer than the 400 ms lease.
    let (ledger, backend) = frame_of_small_cells(60, |store| {
        InstrumentedStore::new(
            store,
            FaultConfig {
                max_latency: Duration::from_millis(30),
                ..FaultConfig::none()
            },
        )
    })
    .await;
    let lease = Duration::from_millis(400);
    let holder = CompactOptions {
        lease,
        ..CompactOptions::new(WriteOptions::default(), "holder")
    };
    let other = CompactOptions {
        lease,
        ..CompactOptions::new(WriteOptions::default(), "other")
    };
    let started = std::time::Instant::now();
    let (held, tries) = tokio::join!(
        async {
            let held = compact(&ledger, backend.as_ref(), &holder).await;
            (held, started.elapsed())
        },
        async {
            // Another node tries while the holder works, well past one lease time.
            let mut tries = Vec::new();
            for _ in 0..20 {
                apiary_storage::time::sleep(Duration::from_millis(50)).await;
                let at = started.elapsed();
                let result = compact(&ledger, backend.as_ref(), &other).await.unwrap();
                tries.push((at, started.elapsed(), result));
            }
            tries
        }
    );
    let (held, worked) = held;
    let held = held.unwrap();
    assert_eq!(held.commits, 1, "{held:?}");
    assert!(worked > lease * 2, "the compaction took only {worked:?}");
    // Every try that began well before the holder finished found the lease held (one that
    // began near the end may find it released).
    for (at, _, result) in &tries {
        if *at + Duration::from_millis(200) < worked {
            assert!(
                result.lease_held_elsewhere,
                "at {at:?} of the holder's {worked:?}, the lease was free: {tries:?}"
            );
        }
    }
    assert!(tries.iter().all(|(_, _, t)| t.commits == 0), "{tries:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_is_read_cell_by_cell_as_it_is_encoded() {
    // Uploads (plain PUTs) wait at a gate the test holds closed.
    let hold = Hold::new(&[RequestKind::Put]);
    let counts = std::sync::OnceLock::new();
    let cells = 20;
    let (ledger, backend) = frame_of_small_cells(cells, |store| {
        let gated = InstrumentedStore::new(store, FaultConfig::none()).with_hold(hold.clone());
        let _ = counts.set(gated.counts());
        gated
    })
    .await;
    let counts = counts.get().unwrap();
    // Output cells of a few rows each, so the encoder hands one to the uploader early.
    let write = WriteOptions {
        target_cell_bytes: 1,
        ..WriteOptions::default()
    };
    let options = CompactOptions {
        min_cells: 2,
        small_cell_bytes: 1 << 20,
        ..CompactOptions::new(write, "n")
    };
    hold.close();
    let before = counts.snapshot().get;
    let compaction = {
        let (ledger, backend) = (Arc::clone(&ledger), Arc::clone(&backend));
        tokio::spawn(async move { compact(&ledger, backend.as_ref(), &options).await })
    };
    let started = std::time::Instant::now();
    while hold.waiting() == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no upload began"
        );
        apiary_storage::time::sleep(Duration::from_millis(10)).await;
    }
    // The first output cell is uploading; the encoder may be a cell or two ahead of it,
    // but most of the group has not been read yet.
    apiary_storage::time::sleep(Duration::from_millis(200)).await;
    let read = counts.snapshot().get - before;
    assert!(
        read < (cells as u64) / 2,
        "{read} of {cells} cells read before the first upload finished"
    );
    hold.open();
    let done = compaction.await.unwrap().unwrap();
    assert_eq!(done.cells_removed, cells as usize, "{done:?}");
}
