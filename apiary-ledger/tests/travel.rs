//! Reading the past through the ledger: a time to a version, retention, history.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use apiary_ledger::{
    Cell, FrameDefinition, FrameLedger, FrameRef, FrameSchema, LedgerConfig, LedgerError,
    Operation, vacuum,
};
use apiary_storage::time::{Clock, ManualClock, SystemClock};
use apiary_storage::{Path, StorageBackend};
use bytes::Bytes;

fn definition() -> FrameDefinition {
    FrameDefinition {
        schema: FrameSchema::parse_compact("x:int64").unwrap(),
        partition_by: vec![],
    }
}

fn cell(path: &str, rows: u64) -> Cell {
    Cell {
        path: path.to_string(),
        rows,
        bytes: rows * 8,
        partition_values: Default::default(),
        stats: Default::default(),
        crc32c: None,
    }
}

fn frame() -> FrameRef {
    FrameRef::new("h", "b", "f").unwrap()
}

/// A ledger whose stamps come from `clock` as it is (no store clock), so tests set times.
async fn open(backend: &Arc<dyn StorageBackend>, clock: Arc<dyn Clock>) -> FrameLedger {
    let config = LedgerConfig {
        clock,
        store_clock: None,
        ..LedgerConfig::default()
    };
    open_with(backend, config).await
}

/// The frame's ledger with `config`, the frame created (version 0).
async fn open_with(backend: &Arc<dyn StorageBackend>, config: LedgerConfig) -> FrameLedger {
    let ledger = FrameLedger::open(Arc::clone(backend), frame(), config)
        .await
        .unwrap();
    ledger
        .commit(&Operation::Create(definition()))
        .await
        .unwrap();
    ledger
}

#[tokio::test]
async fn a_time_finds_its_version_by_binary_search_over_ten_thousand() {
    let backend = apiary_storage::memory();
    let clock = ManualClock::new();
    let ledger = open(&backend, Arc::new(clock.clone())).await;
    let start = clock.wall_ms();
    let versions = 10_000u64;
    for v in 1..versions {
        clock.advance(Duration::from_secs(1));
        let info = ledger
            .commit(&Operation::Append(vec![cell(
                &format!("data/{v}.parquet"),
                1,
            )]))
            .await
            .unwrap();
        assert_eq!(info.version, v);
    }
    // Version v was committed at start + v s. A time between two commits reads the earlier.
    let bound = (versions as f64).log2().ceil() as u32;
    let mut most = 0;
    for (at, expected) in [
        (start, 0),
        (start + 500, 0),
        (start + 1_000, 1),
        (start + 4_321_999, 4_321),
        (start + 9_998_500, 9_998),
        (start + 9_999_000, 9_999),
    ] {
        let found = ledger.version_at_time(at).await.unwrap();
        assert_eq!(found.version, expected, "at {at}");
        assert_eq!(found.committed_at_ms, start + expected as i64 * 1000);
        assert!(found.reads <= bound, "{} reads for {at}", found.reads);
        most = most.max(found.reads);
    }
    println!("time to version over {versions} versions: at most {most} entry reads");
    let err = ledger.version_at_time(start - 1).await.unwrap_err();
    assert!(matches!(err, LedgerError::NotFound { .. }), "{err}");
    assert!(
        err.to_string().contains("first version was committed at"),
        "{err}"
    );
    let err = ledger
        .version_at_time(clock.wall_ms() + 60_000)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("in the future"), "{err}");
}

#[tokio::test]
async fn stamps_never_go_backwards_across_writers_with_bad_clocks() {
    let backend = apiary_storage::memory();
    let ahead: Arc<dyn Clock> = Arc::new(SystemClock::with_wall_offset(
        Duration::from_secs(3600),
        true,
    ));
    let behind: Arc<dyn Clock> = Arc::new(SystemClock::with_wall_offset(
        Duration::from_secs(3600),
        false,
    ));
    let a = open(&backend, ahead).await;
    let b = open(&backend, behind).await;
    for i in 0..6 {
        let ledger = if i % 2 == 0 { &b } else { &a };
        ledger.refresh().await.unwrap();
        ledger
            .commit(&Operation::Append(vec![cell(
                &format!("data/{i}.parquet"),
                1,
            )]))
            .await
            .unwrap();
    }
    let history = a.history().await.unwrap();
    assert_eq!(history.len(), 7);
    for pair in history.windows(2) {
        assert!(
            pair[0].committed_at_ms <= pair[1].committed_at_ms,
            "{pair:?}"
        );
    }
}

#[tokio::test]
async fn store_stamps_ignore_the_node_clock() {
    let backend = apiary_storage::memory();
    // A node three hours behind, stamping on the store's clock (the default).
    let config = LedgerConfig {
        clock: Arc::new(SystemClock::with_wall_offset(
            Duration::from_secs(3 * 3600),
            false,
        )),
        ..LedgerConfig::default()
    };
    let ledger = open_with(&backend, config).await;
    let (entry, meta) = ledger.read_entry(0).await.unwrap().unwrap();
    assert!(
        (entry.committed_at_ms - meta.last_modified_ms).abs() < 5_000,
        "stamp {} vs the store's {}",
        entry.committed_at_ms,
        meta.last_modified_ms
    );
}

#[tokio::test]
async fn a_version_past_retention_names_the_oldest_retained() {
    let backend = apiary_storage::memory();
    let ledger = open(&backend, SystemClock::shared()).await;
    for name in ["a", "b"] {
        ledger
            .commit(&Operation::Append(vec![cell(&format!("data/{name}"), 2)]))
            .await
            .unwrap();
    }
    ledger
        .commit(&Operation::Overwrite(vec![cell("data/c", 5)]))
        .await
        .unwrap();
    ledger
        .commit(&Operation::Append(vec![cell("data/d", 1)]))
        .await
        .unwrap();
    for name in ["a", "b", "c", "d"] {
        let key = Path::from(format!("h/b/f/data/{name}"));
        backend
            .put(&key, Bytes::from_static(b"cell"))
            .await
            .unwrap();
    }
    let head = ledger.refresh().await.unwrap().unwrap();
    let past = |v| {
        let ledger = &ledger;
        async move { ledger.state_at(v).await.unwrap() }
    };
    // Never vacuumed: every version is retained.
    for v in 0..4 {
        ledger
            .check_retained(v, past(v).await.live.as_ref(), &head)
            .await
            .unwrap();
    }
    apiary_storage::time::sleep(Duration::from_millis(20)).await;
    let result = vacuum(&ledger, backend.as_ref(), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(result.files_deleted, 2, "{result:?}");
    for v in [1, 2] {
        let err = ledger
            .check_retained(v, past(v).await.live.as_ref(), &head)
            .await
            .unwrap_err();
        match &err {
            LedgerError::NotRetained {
                version, oldest, ..
            } => assert_eq!((*version, *oldest), (v, 4)),
            other => panic!("{other}"),
        }
        let text = err.to_string();
        assert!(
            text.contains("oldest retained version 4 (retention 0s)"),
            "{text}"
        );
    }
    // Retained means entry v + 1 is newer than the horizon; versions whose cells are all
    // still live read too: version 0 (no cells) and version 3 (its cell is live).
    ledger
        .check_retained(0, past(0).await.live.as_ref(), &head)
        .await
        .unwrap();
    ledger
        .check_retained(3, past(3).await.live.as_ref(), &head)
        .await
        .unwrap();
}

#[tokio::test]
async fn history_counts_what_each_commit_added_and_removed() {
    let backend = apiary_storage::memory();
    let config = LedgerConfig {
        writer: Some("node-1".into()),
        ..LedgerConfig::default()
    };
    let ledger = open_with(&backend, config).await;
    ledger
        .commit(&Operation::Append(vec![
            cell("data/a", 2),
            cell("data/b", 3),
        ]))
        .await
        .unwrap();
    ledger
        .commit(&Operation::Rewrite {
            remove: vec!["data/a".into(), "data/b".into()],
            add: vec![cell("data/ab", 5)],
        })
        .await
        .unwrap();
    ledger
        .commit(&Operation::Overwrite(vec![cell("data/c", 7)]))
        .await
        .unwrap();
    ledger.commit(&Operation::Drop).await.unwrap();
    let history = ledger.history().await.unwrap();
    let rows: Vec<(u64, &str, u64, u64, u64, u64)> = history
        .iter()
        .map(|c| {
            (
                c.version,
                c.operation.as_str(),
                c.cells_added,
                c.cells_removed,
                c.rows_added,
                c.rows_removed,
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            (0, "create", 0, 0, 0, 0),
            (1, "append", 2, 0, 5, 0),
            (2, "rewrite", 1, 2, 5, 5),
            (3, "overwrite", 1, 1, 7, 5),
            (4, "drop", 0, 1, 0, 7),
        ]
    );
    assert!(
        history
            .iter()
            .all(|c| c.writer.as_deref() == Some("node-1"))
    );
}

#[tokio::test]
async fn vacuum_removes_the_staging_files_of_killed_writes() {
    let dir = tempfile::tempdir().unwrap();
    let uri = apiary_storage::StorageUri::Local(dir.path().to_path_buf());
    let backend = apiary_storage::open(&uri).await.unwrap();
    let ledger = open(&backend, SystemClock::shared()).await;
    // What a write killed mid-PUT leaves: `name#N` beside the ledger and the cells. Listings
    // hide them; only vacuum, past the retention, removes them.
    let frame_dir = dir.path().join("h/b/f");
    let old = [
        frame_dir.join("_ledger/00000000000000000001.json#3"),
        frame_dir.join("data/x.parquet#12"),
    ];
    let fresh = frame_dir.join("_ledger/00000000000000000002.json#4");
    let kept = frame_dir.join("data/notes#draft");
    for path in old.iter().chain([&fresh, &kept]) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"").unwrap();
    }
    let hour_ago = std::time::UNIX_EPOCH
        + Duration::from_millis((SystemClock::new().wall_ms() - 3_600_000) as u64);
    for path in &old {
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(hour_ago)
            .unwrap();
    }
    let listed: Vec<String> = backend
        .list(&Path::from("h/b/f"))
        .await
        .unwrap()
        .iter()
        .map(|m| m.key.to_string())
        .collect();
    assert!(
        !listed
            .iter()
            .any(|k| k.ends_with("#3") || k.ends_with("#12")),
        "{listed:?}"
    );
    let result = vacuum(&ledger, backend.as_ref(), Duration::from_secs(600))
        .await
        .unwrap();
    assert_eq!(result.files_deleted, 2, "{result:?}");
    assert!(old.iter().all(|p| !p.exists()));
    assert!(fresh.exists() && kept.exists());
}
