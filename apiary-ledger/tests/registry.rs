//! The registry through the public API: DDL, names, races of creates and drops, corrupt
//! registry objects, and the bound on open ledgers.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use apiary_ledger::{Created, FrameRef, LedgerConfig, LedgerError, Registry};
use apiary_storage::Path;
use bytes::Bytes;
use common::definition;

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
