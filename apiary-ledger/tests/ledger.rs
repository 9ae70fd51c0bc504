//! Frame ledgers through the public API: commit costs, checkpoints, versions, rebasing,
//! schema evolution and corrupt ledger objects (the registry is in `registry.rs`).

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use apiary_ledger::{
    Column, FrameLedger, FrameRef, LedgerConfig, LedgerError, Operation, Registry, ledger_dir,
};
use apiary_storage::{CountsHandle, StorageBackend};
use bytes::Bytes;

mod common;
use common::{cell, counted_memory, definition, registry_with_frame};

#[tokio::test]
async fn warm_uncontended_commit_is_one_conditional_put() {
    let (backend, counts) = counted_memory();
    let (registry, frame) = registry_with_frame(backend, LedgerConfig::default()).await;
    let ledger = registry.ledger(&frame).await.unwrap();
    ledger
        .commit(&Operation::Append(vec![cell("data/a.parquet", 1, None)]))
        .await
        .unwrap();
    for i in 0..20 {
        let before = counts.snapshot();
        let info = ledger
            .commit(&Operation::Append(vec![cell(
                &format!("data/{i}.parquet"),
                1,
                None,
            )]))
            .await
            .unwrap();
        let used = counts.snapshot() - before;
        assert_eq!(used.conditional_put, 1, "commit {}: {used:?}", info.version);
        assert_eq!(used.list, 0, "no LIST on a warm commit: {used:?}");
        assert_eq!(used.total(), 1, "exactly one request: {used:?}");
    }
    // Nothing changed: a refresh is one GET.
    let before = counts.snapshot();
    ledger.refresh().await.unwrap();
    let used = counts.snapshot() - before;
    assert_eq!((used.get, used.total()), (1, 1), "{used:?}");
}

/// A counted in-memory store with one frame whose ledger checkpoints every ten versions.
struct Checkpointed {
    backend: Arc<dyn StorageBackend>,
    counts: CountsHandle,
    config: LedgerConfig,
    registry: Registry,
    frame: FrameRef,
    ledger: Arc<FrameLedger>,
}

async fn checkpointed_every_ten() -> Checkpointed {
    let (backend, counts) = counted_memory();
    let config = LedgerConfig {
        checkpoint_interval: 10,
        ..LedgerConfig::default()
    };
    let (registry, frame) = registry_with_frame(Arc::clone(&backend), config.clone()).await;
    let ledger = registry.ledger(&frame).await.unwrap();
    Checkpointed {
        backend,
        counts,
        config,
        registry,
        frame,
        ledger,
    }
}

#[tokio::test]
async fn checkpointed_frames_count_every_row_once() {
    let Checkpointed {
        backend,
        counts,
        config,
        registry,
        frame,
        ledger,
    } = checkpointed_every_ten().await;
    for i in 0..57u64 {
        ledger
            .commit(&Operation::Append(vec![cell(
                &format!("data/{i}.parquet"),
                i + 1,
                None,
            )]))
            .await
            .unwrap();
    }
    let expected_rows: u64 = (1..=57).sum();
    let before = counts.snapshot();
    let fresh = FrameLedger::open(Arc::clone(&backend), frame.clone(), config)
        .await
        .unwrap();
    let used = counts.snapshot() - before;
    let state = fresh.cached().unwrap();
    assert_eq!(state.version, 57);
    let live = state.live.as_ref().unwrap();
    assert_eq!(live.rows(), expected_rows);
    assert_eq!(live.cells.len(), 57);
    // One LIST; the history before the checkpoint is not read.
    assert_eq!(used.list, 1, "{used:?}");
    // Hint, checkpoint, versions 51..=57, and one probe past the end.
    assert_eq!(used.get, 2 + 7 + 1, "{used:?}");
    let via_registry = registry.get_frame(&frame).await.unwrap();
    assert_eq!(via_registry.rows, expected_rows);
}

#[tokio::test]
async fn state_at_a_version_is_that_version_exactly() {
    let Checkpointed {
        backend,
        counts,
        config,
        registry: _,
        frame,
        ledger,
    } = checkpointed_every_ten().await;
    let mut states = vec![ledger.cached().unwrap()];
    for i in 0..25u64 {
        let op = if i == 17 {
            Operation::Overwrite(vec![cell("data/over.parquet", 5, None)])
        } else {
            Operation::Append(vec![cell(&format!("data/{i}.parquet"), i + 1, None)])
        };
        ledger.commit(&op).await.unwrap();
        states.push(ledger.cached().unwrap());
    }
    // A reader that is behind moves forward to the version asked for, and one that is ahead
    // rebuilds older versions from a checkpoint, without moving its own head back.
    let reader = FrameLedger::open(Arc::clone(&backend), frame.clone(), config)
        .await
        .unwrap();
    for v in [25u64, 24, 21, 20, 17, 12, 9, 3, 0] {
        let before = counts.snapshot();
        let at = reader.state_at(v).await.unwrap();
        let used = counts.snapshot() - before;
        assert_eq!(at.as_ref(), states[v as usize].as_ref(), "version {v}");
        if (10..25).contains(&v) {
            // The checkpoint at or before it, then only the versions after that.
            assert_eq!(used.get, 1 + v % 10, "version {v}: {used:?}");
        }
    }
    assert_eq!(reader.cached().unwrap().version, 25, "the head stays");
    let err = reader.state_at(26).await.unwrap_err();
    assert!(err.to_string().contains("version 26"), "{err}");
}

#[tokio::test]
async fn a_damaged_checkpoint_falls_back_to_the_ledger() {
    let backend = apiary_storage::memory();
    let config = LedgerConfig {
        checkpoint_interval: 5,
        ..LedgerConfig::default()
    };
    let (registry, frame) = registry_with_frame(Arc::clone(&backend), config.clone()).await;
    let ledger = registry.ledger(&frame).await.unwrap();
    for i in 0..12u64 {
        ledger
            .commit(&Operation::Append(vec![cell(
                &format!("data/{i}.parquet"),
                2,
                None,
            )]))
            .await
            .unwrap();
    }
    let cp = apiary_ledger::frame_root(&frame)
        .join("_checkpoints")
        .join("00000000000000000010.json");
    backend
        .put(&cp, Bytes::from_static(b"{\"format\":1,\"sta"))
        .await
        .unwrap();
    let fresh = FrameLedger::open(Arc::clone(&backend), frame, config)
        .await
        .unwrap();
    let state = fresh.cached().unwrap();
    assert_eq!(
        (state.version, state.live.as_ref().unwrap().rows()),
        (12, 24)
    );
}

#[tokio::test]
async fn overwrite_rebases_over_concurrent_appends() {
    let backend = apiary_storage::memory();
    let (registry, frame) =
        registry_with_frame(Arc::clone(&backend), LedgerConfig::default()).await;
    let a = registry.ledger(&frame).await.unwrap();
    // A second handle, as on another node, whose state goes stale.
    let b = FrameLedger::open(Arc::clone(&backend), frame.clone(), LedgerConfig::default())
        .await
        .unwrap();
    a.commit(&Operation::Append(vec![cell("data/old.parquet", 5, None)]))
        .await
        .unwrap();
    b.refresh().await.unwrap();
    // Committed before the overwrite, unseen by b: must be removed with the old data.
    a.commit(&Operation::Append(vec![cell(
        "data/before.parquet",
        7,
        None,
    )]))
    .await
    .unwrap();
    let info = b
        .commit(&Operation::Overwrite(vec![cell(
            "data/new.parquet",
            3,
            None,
        )]))
        .await
        .unwrap();
    assert_eq!(info.conflicts, 1);
    // Committed after the overwrite: survives.
    a.commit(&Operation::Append(vec![cell(
        "data/after.parquet",
        11,
        None,
    )]))
    .await
    .unwrap();
    let state = a.refresh().await.unwrap().unwrap();
    let live = state.live.as_ref().unwrap();
    let paths: Vec<&str> = live.cells.keys().map(String::as_str).collect();
    assert_eq!(paths, ["data/after.parquet", "data/new.parquet"]);
    assert_eq!(live.rows(), 14);
}

#[tokio::test]
async fn rewrite_of_a_cell_removed_meanwhile_is_a_conflict() {
    let backend = apiary_storage::memory();
    let (registry, frame) =
        registry_with_frame(Arc::clone(&backend), LedgerConfig::default()).await;
    let a = registry.ledger(&frame).await.unwrap();
    a.commit(&Operation::Append(vec![cell("data/x.parquet", 5, None)]))
        .await
        .unwrap();
    let b = FrameLedger::open(Arc::clone(&backend), frame.clone(), LedgerConfig::default())
        .await
        .unwrap();
    a.commit(&Operation::Overwrite(vec![cell("data/y.parquet", 5, None)]))
        .await
        .unwrap();
    let before = a.refresh().await.unwrap();
    let err = b
        .commit(&Operation::Rewrite {
            remove: vec!["data/x.parquet".into()],
            add: vec![cell("data/x2.parquet", 5, None)],
        })
        .await
        .unwrap_err();
    assert!(matches!(err, LedgerError::Conflict { .. }), "{err}");
    assert!(err.to_string().contains("data/x.parquet"), "{err}");
    assert_eq!(a.refresh().await.unwrap(), before, "nothing was committed");
}

#[tokio::test]
async fn schema_evolution_and_append_validation() {
    let backend = apiary_storage::memory();
    let registry = Registry::new(backend, LedgerConfig::default());
    registry.create_hive("h").await.unwrap();
    registry.create_box("h", "b").await.unwrap();
    let frame = FrameRef::parse("h.b.f").unwrap();
    registry
        .create_frame(&frame, definition(true))
        .await
        .unwrap();
    let ledger = registry.ledger(&frame).await.unwrap();
    let column = Column {
        name: "referrer".into(),
        data_type: "utf8".into(),
        nullable: true,
    };
    assert!(
        ledger
            .commit(&Operation::AddColumn(column.clone()))
            .await
            .unwrap()
            .committed
    );
    assert!(
        !ledger
            .commit(&Operation::AddColumn(column))
            .await
            .unwrap()
            .committed
    );
    let required = Column {
        name: "x".into(),
        data_type: "int64".into(),
        nullable: false,
    };
    let err = ledger
        .commit(&Operation::AddColumn(required))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("must be nullable"), "{err}");
    let clash = Column {
        name: "referrer".into(),
        data_type: "int64".into(),
        nullable: true,
    };
    assert!(matches!(
        ledger
            .commit(&Operation::AddColumn(clash))
            .await
            .unwrap_err(),
        LedgerError::Conflict { .. }
    ));
    // Cells must carry exactly the partition columns.
    let err = ledger
        .commit(&Operation::Append(vec![cell("data/a.parquet", 1, None)]))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("partitioned by"), "{err}");
    ledger
        .commit(&Operation::Append(vec![cell(
            "data/country=us/a.parquet",
            1,
            Some("us"),
        )]))
        .await
        .unwrap();
    let err = ledger
        .commit(&Operation::Append(vec![cell(
            "data/country=us/a.parquet",
            1,
            Some("us"),
        )]))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("added twice"), "{err}");
    let info = registry.get_frame(&frame).await.unwrap();
    assert_eq!(info.definition.schema.columns.len(), 4);
    assert_eq!((info.cells, info.rows), (1, 1));
}

#[tokio::test]
async fn corrupt_ledger_objects_give_clear_errors_and_damage_nothing() {
    let backend = apiary_storage::memory();
    let (registry, frame) =
        registry_with_frame(Arc::clone(&backend), LedgerConfig::default()).await;
    let ledger = registry.ledger(&frame).await.unwrap();
    ledger
        .commit(&Operation::Append(vec![cell("data/a.parquet", 3, None)]))
        .await
        .unwrap();
    let dir = ledger_dir(&frame);
    let key = |v: u64| dir.clone().join(format!("{v:020}.json").as_str());
    let entry = backend.get(&key(1)).await.unwrap().bytes;
    let text = String::from_utf8(entry.to_vec()).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", entry[..entry.len() / 2].to_vec()),
        ("not json", b"\x00\xffgarbage".to_vec()),
        ("empty", Vec::new()),
        (
            "newer format",
            text.replacen("\"format\":1", "\"format\":99", 1)
                .into_bytes(),
        ),
        (
            "wrong version",
            text.replacen("\"version\":1", "\"version\":7", 1)
                .into_bytes(),
        ),
        (
            "unknown action",
            text.replacen("add_cell", "explode", 1).into_bytes(),
        ),
    ];
    for (what, bytes) in cases {
        backend
            .put(&key(2), Bytes::from(bytes.clone()))
            .await
            .unwrap();
        let err = FrameLedger::open(Arc::clone(&backend), frame.clone(), LedgerConfig::default())
            .await
            .unwrap_err();
        assert!(matches!(err, LedgerError::Corrupt { .. }), "{what}: {err}");
        let msg = err.to_string();
        assert!(
            msg.contains("00000000000000000002.json"),
            "{what}: names the object: {msg}"
        );
        if what == "newer format" {
            assert!(msg.contains("upgrade Apiary"), "{msg}");
        }
        // A warm committer meeting it refuses to build on it, and writes nothing.
        let err = ledger
            .commit(&Operation::Append(vec![cell("data/b.parquet", 1, None)]))
            .await
            .unwrap_err();
        assert!(matches!(err, LedgerError::Corrupt { .. }), "{what}: {err}");
        assert_eq!(
            backend.get(&key(2)).await.unwrap().bytes,
            bytes,
            "{what}: untouched"
        );
        assert!(
            backend.head(&key(3)).await.unwrap_err().is_not_found(),
            "{what}"
        );
        assert_eq!(
            backend.get(&key(1)).await.unwrap().bytes,
            entry,
            "{what}: history intact"
        );
    }
}
