//! Readers never wait on writers: a commit stuck in its conditional PUT holds up neither
//! `cached` nor `refresh`, and a refresh sees other handles' versions meanwhile.

#![allow(clippy::unwrap_used)]
#![allow(clippy::disallowed_methods)] // real time: a stuck commit is waited for on the system clock

mod common;

use std::sync::Arc;

use apiary_ledger::{FrameLedger, LedgerConfig, LedgerError, Operation};
use apiary_storage::{
    FaultConfig, InstrumentedStore, ObjectStoreBackend, StorageBackend, StorageUri,
    object_store_for,
};
use common::{cell, registry_with_frame};

/// A memory store whose conditional PUTs can be held at a gate, and a second backend over
/// the same store that is never held (another process).
fn held_memory() -> (
    Arc<dyn StorageBackend>,
    Arc<dyn StorageBackend>,
    apiary_storage::Hold,
) {
    let (store, caps) = object_store_for(&StorageUri::Memory).unwrap();
    let hold = apiary_storage::Hold::new(&[apiary_storage::RequestKind::ConditionalPut]);
    let held =
        InstrumentedStore::new(Arc::clone(&store), FaultConfig::none()).with_hold(hold.clone());
    (
        Arc::new(ObjectStoreBackend::new(Arc::new(held), caps, "memory://")),
        Arc::new(ObjectStoreBackend::new(store, caps, "memory://")),
        hold,
    )
}

/// Closes `hold` and starts a commit of one cell on `ledger`; returns once its conditional
/// PUT is stuck at the gate.
async fn stuck_commit(
    ledger: &Arc<FrameLedger>,
    hold: &apiary_storage::Hold,
    path: &str,
) -> tokio::task::JoinHandle<Result<apiary_ledger::CommitInfo, LedgerError>> {
    hold.close();
    let writer = {
        let (ledger, cell) = (Arc::clone(ledger), cell(path, 1, None));
        tokio::spawn(async move { ledger.commit(&Operation::Append(vec![cell])).await })
    };
    for _ in 0..2000 {
        if hold.waiting() > 0 {
            return writer;
        }
        apiary_storage::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    panic!("the commit never reached the gate");
}

/// `refresh`, failing the test if it waits (on a stuck commit) instead of answering.
async fn bounded_refresh(ledger: &FrameLedger) -> Arc<apiary_ledger::FrameState> {
    tokio::time::timeout(std::time::Duration::from_secs(20), ledger.refresh())
        .await
        .expect("refresh waited on the stuck commit")
        .unwrap()
        .unwrap()
}

/// Readers never wait on a writer: while a commit is stuck in its conditional PUT (a slow
/// or contended store), `cached` and `refresh` of the same handle still answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_never_wait_on_a_stuck_commit() {
    let (backend, _, hold) = held_memory();
    let (registry, frame) = registry_with_frame(backend, LedgerConfig::default()).await;
    let ledger = registry.ledger(&frame).await.unwrap();
    let before = ledger.refresh().await.unwrap().unwrap().version;
    let writer = stuck_commit(&ledger, &hold, "data/a.parquet").await;
    assert_eq!(ledger.cached().unwrap().version, before);
    assert_eq!(bounded_refresh(&ledger).await.version, before);

    hold.open();
    let info = writer.await.unwrap().unwrap();
    assert_eq!(info.version, before + 1);
    assert_eq!(
        ledger.cached().unwrap().version,
        before + 1,
        "the commit is published"
    );
    assert_eq!(bounded_refresh(&ledger).await.version, before + 1);
}

/// While one handle's commit is stuck, a refresh on it moves forward past versions another
/// handle committed, and the stuck commit then lands after them (it re-resolves on the
/// refusal, never reports a conflict for an append).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_during_a_stuck_commit_sees_other_writers() {
    let (held, free, hold) = held_memory();
    let (registry, frame) = registry_with_frame(held, LedgerConfig::default()).await;
    let ledger = registry.ledger(&frame).await.unwrap();
    let other = FrameLedger::open(free, frame.clone(), LedgerConfig::default())
        .await
        .unwrap();
    let v0 = ledger.cached().unwrap().version;
    let writer = stuck_commit(&ledger, &hold, "data/mine.parquet").await;
    for i in 0..3 {
        let theirs = cell(&format!("data/o{i}.parquet"), 1, None);
        other
            .commit(&Operation::Append(vec![theirs]))
            .await
            .unwrap();
    }
    assert_eq!(bounded_refresh(&ledger).await.version, v0 + 3);
    hold.open();
    let info = writer.await.unwrap().unwrap();
    assert!(info.committed);
    assert_eq!(info.version, v0 + 4);
    let state = ledger.refresh().await.unwrap().unwrap();
    let cells = &state.live.as_ref().unwrap().cells;
    assert_eq!(cells.len(), 4, "{:?}", cells.keys().collect::<Vec<_>>());
}
