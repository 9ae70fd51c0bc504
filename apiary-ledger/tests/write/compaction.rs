//! Compaction through the write path: small cells become one per partition with the same
//! rows, a concurrent overwrite wins, one node compacts a frame at a time.

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
            InstrumentedStore::new(Arc::clone(&store), FaultConfig::none()).with_hold(hold.clone()),
        ),
        caps,
        "memory://",
    ));
    let free: Arc<dyn StorageBackend> = Arc::new(ObjectStoreBackend::new(store, caps, "memory://"));
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
