//! Frame ledger and registry behaviour through the public API.

#![allow(clippy::unwrap_used)]
#![allow(clippy::disallowed_methods)] // real processes and real time: waits and timings read the system clock

use std::collections::BTreeMap;
use std::sync::Arc;

use apiary_ledger::{
    Cell, Column, ColumnStats, Created, FrameDefinition, FrameLedger, FrameRef, FrameSchema,
    LedgerConfig, LedgerError, Operation, Registry, StatValue, ledger_dir,
};
use apiary_storage::{
    CountsHandle, FaultConfig, InstrumentedStore, ObjectStoreBackend, Path, StorageBackend,
    StorageUri, object_store_for,
};
use bytes::Bytes;

fn definition(partitioned: bool) -> FrameDefinition {
    FrameDefinition {
        schema: FrameSchema::parse_compact(
            "event_id:int64 not null,page:utf8,country:utf8 not null",
        )
        .unwrap(),
        partition_by: if partitioned {
            vec!["country".into()]
        } else {
            vec![]
        },
    }
}

fn cell(path: &str, rows: u64, country: Option<&str>) -> Cell {
    let mut stats = BTreeMap::new();
    stats.insert(
        "event_id".to_string(),
        ColumnStats {
            min: Some(StatValue::Int(1)),
            max: Some(StatValue::Int(rows as i64)),
            null_count: 0,
        },
    );
    Cell {
        path: path.to_string(),
        rows,
        bytes: rows * 10,
        partition_values: country
            .map(|c| BTreeMap::from([("country".to_string(), Some(c.to_string()))]))
            .unwrap_or_default(),
        stats,
    }
}

fn counted_memory() -> (Arc<dyn StorageBackend>, CountsHandle) {
    let (store, caps) = object_store_for(&StorageUri::Memory).unwrap();
    let store = InstrumentedStore::new(store, FaultConfig::none());
    let counts = store.counts();
    (
        Arc::new(ObjectStoreBackend::new(Arc::new(store), caps, "memory://")),
        counts,
    )
}

async fn registry_with_frame(
    backend: Arc<dyn StorageBackend>,
    config: LedgerConfig,
) -> (Registry, FrameRef) {
    let registry = Registry::new(backend, config);
    registry.create_hive("analytics").await.unwrap();
    registry.create_box("analytics", "events").await.unwrap();
    let frame = FrameRef::parse("analytics.events.clicks").unwrap();
    registry
        .create_frame(&frame, definition(false))
        .await
        .unwrap();
    (registry, frame)
}

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
async fn registry_ddl_is_idempotent_and_checked() {
    let backend = apiary_storage::memory();
    let registry = Registry::new(backend, LedgerConfig::default());
    assert_eq!(
        registry.create_hive("analytics").await.unwrap(),
        Created::New
    );
    assert_eq!(
        registry.create_hive("analytics").await.unwrap(),
        Created::Existing
    );
    let err = registry.create_box("nohive", "b").await.unwrap_err();
    assert!(matches!(err, LedgerError::NotFound { .. }), "{err}");
    registry.create_box("analytics", "events").await.unwrap();
    let frame = FrameRef::parse("analytics.events.clicks").unwrap();
    assert_eq!(
        registry
            .create_frame(&frame, definition(true))
            .await
            .unwrap(),
        Created::New
    );
    assert_eq!(
        registry
            .create_frame(&frame, definition(true))
            .await
            .unwrap(),
        Created::Existing
    );
    let err = registry
        .create_frame(&frame, definition(false))
        .await
        .unwrap_err();
    assert!(matches!(err, LedgerError::AlreadyExists { .. }), "{err}");
    assert!(err.to_string().contains("partitioned by"), "{err}");
    let err = registry
        .create_frame(
            &FrameRef::parse("analytics.nobox.f").unwrap(),
            definition(false),
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("box `analytics.nobox` does not exist"),
        "{err}"
    );

    let hives: Vec<String> = registry
        .list_hives()
        .await
        .unwrap()
        .into_iter()
        .map(|h| h.name)
        .collect();
    assert_eq!(hives, ["analytics"]);
    let frames = registry.list_frames("analytics", "events").await.unwrap();
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].name, "analytics.events.clicks");

    // Restrict, then cascade.
    let err = registry.drop_hive("analytics", false).await.unwrap_err();
    assert!(
        err.to_string().contains("still has boxes (events)"),
        "{err}"
    );
    assert_eq!(
        registry
            .list_frames("analytics", "events")
            .await
            .unwrap()
            .len(),
        1
    );
    registry.drop_hive("analytics", true).await.unwrap();
    assert!(registry.list_hives().await.unwrap().is_empty());
    assert!(matches!(
        registry.get_frame(&frame).await.unwrap_err(),
        LedgerError::NotFound { .. }
    ));
    // Re-created empty.
    registry.create_hive("analytics").await.unwrap();
    registry.create_box("analytics", "events").await.unwrap();
    assert!(
        registry
            .list_frames("analytics", "events")
            .await
            .unwrap()
            .is_empty()
    );
    registry
        .create_frame(&frame, definition(false))
        .await
        .unwrap();
    assert_eq!(registry.get_frame(&frame).await.unwrap().rows, 0);
}

#[tokio::test]
async fn invalid_names_are_rejected_with_the_rule() {
    let registry = Registry::new(apiary_storage::memory(), LedgerConfig::default());
    for bad in ["", "..", "a/b", "Upper", "_hidden", "x y", "a.b"] {
        let err = registry.create_hive(bad).await.unwrap_err();
        assert!(
            matches!(err, LedgerError::InvalidName { .. }),
            "{bad}: {err}"
        );
        assert!(err.to_string().contains("lowercase letter"), "{err}");
    }
    assert!(
        registry.list_hives().await.unwrap().is_empty(),
        "nothing was written"
    );
}

/// Many "nodes" (registry instances) create different frames in one box, and the same frame,
/// concurrently: every create lands, and the same-name creates agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_ddl_never_loses_a_create() {
    let backend = apiary_storage::memory();
    let setup = Registry::new(Arc::clone(&backend), LedgerConfig::default());
    setup.create_hive("h").await.unwrap();
    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let backend = Arc::clone(&backend);
            tokio::spawn(async move {
                let r = Registry::new(backend, LedgerConfig::default());
                r.create_box("h", "b").await.unwrap();
                let own = FrameRef::new("h", "b", &format!("f{i}")).unwrap();
                r.create_frame(&own, definition(false)).await.unwrap();
                let shared = FrameRef::parse("h.b.shared").unwrap();
                r.create_frame(&shared, definition(false)).await.unwrap()
            })
        })
        .collect();
    let mut new = 0;
    for t in tasks {
        if t.await.unwrap() == Created::New {
            new += 1;
        }
    }
    assert_eq!(new, 1, "exactly one creator of the shared frame");
    assert_eq!(setup.list_frames("h", "b").await.unwrap().len(), 13);
}

/// A frame create racing a drop of its box either lands before the drop (and is dropped
/// with the box) or fails; it is never acknowledged and then lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn create_racing_a_box_drop_is_never_acknowledged_and_lost() {
    for round in 0..20 {
        let backend = apiary_storage::memory();
        let r = Arc::new(Registry::new(Arc::clone(&backend), LedgerConfig::default()));
        r.create_hive("h").await.unwrap();
        r.create_box("h", "b").await.unwrap();
        let creator = {
            let r = Registry::new(Arc::clone(&backend), LedgerConfig::default());
            tokio::spawn(async move {
                let f = FrameRef::parse("h.b.f").unwrap();
                r.create_frame(&f, definition(false)).await
            })
        };
        let dropper = {
            let r = Arc::clone(&r);
            tokio::spawn(async move { r.drop_box("h", "b", false).await })
        };
        let created = creator.await.unwrap();
        let dropped = dropper.await.unwrap();
        let box_exists = r.get_box("h", "b").await.is_ok();
        let frame_exists = r
            .get_frame(&FrameRef::parse("h.b.f").unwrap())
            .await
            .is_ok();
        match (&created, &dropped) {
            (Ok(_), Ok(())) => {
                panic!("round {round}: restrict drop succeeded over an acknowledged frame")
            }
            (Ok(_), Err(_)) => assert!(box_exists && frame_exists, "round {round}"),
            (Err(_), Ok(())) => assert!(!box_exists && !frame_exists, "round {round}"),
            (Err(_), Err(_)) => assert!(!frame_exists, "round {round}"),
        }
    }
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

#[tokio::test]
async fn corrupt_registry_objects_give_clear_errors() {
    let backend = apiary_storage::memory();
    let registry = Registry::new(Arc::clone(&backend), LedgerConfig::default());
    registry.create_hive("h").await.unwrap();
    let key = Path::from("h/_hive/00000000000000000000.json");
    let good = backend.get(&key).await.unwrap().bytes;
    backend
        .put(&key, Bytes::from_static(b"{\"format\":1,"))
        .await
        .unwrap();
    let err = registry.get_hive("h").await.unwrap_err();
    assert!(matches!(err, LedgerError::Corrupt { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("h/_hive/00000000000000000000.json"),
        "{err}"
    );
    assert!(registry.create_box("h", "b").await.is_err());
    assert!(
        backend.list(&Path::from("h/b")).await.unwrap().is_empty(),
        "nothing written"
    );
    backend.put(&key, good).await.unwrap();
    registry.create_box("h", "b").await.unwrap();
}

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

/// The registry keeps open only ledgers of frames that exist, and at most
/// `max_open_ledgers` of them: asking for any number of names does not grow memory.
#[tokio::test]
async fn open_ledgers_are_bounded() {
    let backend = apiary_storage::memory();
    let config = LedgerConfig {
        max_open_ledgers: 3,
        ..LedgerConfig::default()
    };
    let registry = Registry::new(Arc::clone(&backend), config);
    registry.create_hive("h").await.unwrap();
    registry.create_box("h", "b").await.unwrap();
    for i in 0..200 {
        let missing = FrameRef::parse(&format!("h.b.missing{i}")).unwrap();
        let ledger = registry.ledger(&missing).await.unwrap();
        assert!(ledger.cached().is_none());
    }
    assert_eq!(
        registry.open_ledger_count(),
        0,
        "no ledger kept for a missing frame"
    );
    for i in 0..5 {
        let frame = FrameRef::parse(&format!("h.b.f{i}")).unwrap();
        registry
            .create_frame(&frame, definition(false))
            .await
            .unwrap();
        let ledger = registry.ledger(&frame).await.unwrap();
        assert!(ledger.cached().is_some());
    }
    assert_eq!(registry.open_ledger_count(), 3);
    // An evicted frame opens again, with its state.
    let first = FrameRef::parse("h.b.f0").unwrap();
    assert_eq!(registry.get_frame(&first).await.unwrap().cells, 0);
}
