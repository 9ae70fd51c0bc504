//! Six OS processes commit 30 appends each to one frame, on a shared local folder and on the
//! S3 server: afterwards the ledger holds exactly 180 appends, gap-free, none lost or
//! duplicated.
//!
//! The committing processes are this test binary itself, re-executed with
//! `APIARY_MP_CHILD_URI` set, running only [`mp_child_entry_point`].

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashSet};
use std::process::Command;
use std::sync::Arc;

use apiary_ledger::{
    Action, Cell, Entry, FrameDefinition, FrameLedger, FrameRef, FrameSchema, LedgerConfig,
    Operation, Registry, ledger_dir,
};
use apiary_storage::StorageUri;
use apiary_storage::conformance::s3_test_uri;

const PROCESSES: usize = 6;
const COMMITS: usize = 30;

fn frame() -> FrameRef {
    FrameRef::parse("mp.test.log").unwrap()
}

/// Entry point of a child process; returns at once in a normal test run.
#[tokio::test]
async fn mp_child_entry_point() {
    let Ok(uri) = std::env::var("APIARY_MP_CHILD_URI") else {
        return;
    };
    let id: usize = std::env::var("APIARY_MP_CHILD_ID")
        .unwrap()
        .parse()
        .unwrap();
    let backend = apiary_storage::open(&StorageUri::parse(&uri).unwrap())
        .await
        .unwrap();
    let ledger = FrameLedger::open(backend, frame(), LedgerConfig::default())
        .await
        .unwrap();
    for i in 0..COMMITS {
        let cell = Cell {
            path: format!("data/p{id}-{i}.parquet"),
            rows: 1,
            bytes: 1,
            partition_values: BTreeMap::new(),
            stats: BTreeMap::new(),
            crc32c: None,
        };
        ledger.commit(&Operation::Append(vec![cell])).await.unwrap();
    }
}

async fn six_processes(uri: StorageUri) {
    let backend = apiary_storage::open(&uri).await.unwrap();
    let registry = Registry::new(Arc::clone(&backend), LedgerConfig::default());
    registry.create_hive("mp").await.unwrap();
    registry.create_box("mp", "test").await.unwrap();
    let definition = FrameDefinition {
        schema: FrameSchema::parse_compact("x:int64").unwrap(),
        partition_by: vec![],
    };
    registry.create_frame(&frame(), definition).await.unwrap();

    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..PROCESSES)
        .map(|id| {
            Command::new(&exe)
                .args([
                    "--exact",
                    "mp_child_entry_point",
                    "--test-threads=1",
                    "--quiet",
                ])
                .env("APIARY_MP_CHILD_URI", uri.to_string())
                .env("APIARY_MP_CHILD_ID", id.to_string())
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut child in children {
        assert!(
            child.wait().unwrap().success(),
            "a committing process failed"
        );
    }

    let listed = backend.list(&ledger_dir(&frame())).await.unwrap();
    assert_eq!(
        listed.len(),
        1 + PROCESSES * COMMITS,
        "create + 180 appends"
    );
    let mut seen = HashSet::new();
    for (version, meta) in listed.iter().enumerate() {
        let bytes = backend.get(&meta.key).await.unwrap().bytes;
        let entry = Entry::decode(meta.key.as_ref(), &bytes, version as u64).unwrap();
        if version == 0 {
            continue;
        }
        let [Action::AddCell(cell)] = entry.actions.as_slice() else {
            panic!("version {version} is not a single append");
        };
        assert!(
            seen.insert(cell.path.clone()),
            "{} committed twice",
            cell.path
        );
    }
    for id in 0..PROCESSES {
        for i in 0..COMMITS {
            assert!(
                seen.contains(&format!("data/p{id}-{i}.parquet")),
                "p{id}-{i} lost"
            );
        }
    }
    let info = registry.get_frame(&frame()).await.unwrap();
    assert_eq!((info.version, info.rows), (180, 180));
}

#[tokio::test]
async fn six_processes_on_a_local_folder() {
    let dir = tempfile::tempdir().unwrap();
    six_processes(StorageUri::Local(dir.path().join("shared"))).await;
}

#[tokio::test]
async fn six_processes_on_s3() {
    six_processes(s3_test_uri("mp")).await;
}
