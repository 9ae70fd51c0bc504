//! Golden files: every kind of object the registry and the frame ledgers store today
//! (hive and box chain entries, ledger entries with each action, a checkpoint and its hint),
//! produced through the public API on a seeded random source and a manual clock, so their
//! bytes are reproducible. A change to any stored format fails here instead of passing
//! silently: if it is intended, bump the format version, keep reading the old one, and
//! re-bless with `APIARY_BLESS=1 cargo test -p apiary-ledger --test golden -- --test-threads=1`.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use apiary_ledger::{
    Cell, Column, ColumnStats, FrameDefinition, FrameRef, FrameSchema, LedgerConfig, Operation,
    Registry, StatValue, parse_type,
};
use apiary_storage::{ManualClock, Path, Random};
use bytes::Bytes;

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/ledger")
}

fn cell(path: &str, country: &str) -> Cell {
    let stats = BTreeMap::from([
        (
            "event_id".to_string(),
            ColumnStats {
                min: Some(StatValue::Int(-3)),
                max: Some(StatValue::Int(9)),
                null_count: 0,
            },
        ),
        (
            "page".to_string(),
            ColumnStats {
                min: Some(StatValue::Str("/a".into())),
                max: Some(StatValue::Str("/z".into())),
                null_count: 2,
            },
        ),
        (
            "score".to_string(),
            ColumnStats {
                min: Some(StatValue::Float(-0.5)),
                max: Some(StatValue::Float(1e10)),
                null_count: 1,
            },
        ),
        (
            "price".to_string(),
            ColumnStats {
                min: Some(StatValue::Decimal("-1234".into())),
                max: Some(StatValue::Decimal("99999".into())),
                null_count: 0,
            },
        ),
        (
            "flag".to_string(),
            ColumnStats {
                min: Some(StatValue::Bool(false)),
                max: Some(StatValue::Bool(true)),
                null_count: 0,
            },
        ),
        (
            "tag".to_string(),
            ColumnStats {
                min: Some(StatValue::Bytes("00ff".into())),
                max: None,
                null_count: 5,
            },
        ),
        (
            "count".to_string(),
            ColumnStats {
                min: Some(StatValue::UInt(0)),
                max: Some(StatValue::UInt(u64::MAX)),
                null_count: 0,
            },
        ),
    ]);
    Cell {
        path: format!("data/country={country}/{path}.parquet"),
        rows: 10,
        bytes: 2048,
        partition_values: BTreeMap::from([("country".to_string(), Some(country.to_string()))]),
        stats,
        crc32c: None,
    }
}

/// Every object a short history leaves in storage, by key.
async fn history() -> BTreeMap<String, Bytes> {
    let backend = apiary_storage::memory();
    let config = LedgerConfig {
        checkpoint_interval: 3,
        clock: Arc::new(ManualClock::new()),
        random: Random::seeded(2026),
        // Stamps from the manual clock as it is, so the bytes replay.
        store_clock: None,
        ..LedgerConfig::default()
    };
    let registry = Registry::new(Arc::clone(&backend), config);
    registry.create_hive("analytics").await.unwrap();
    registry.create_box("analytics", "events").await.unwrap();
    registry.create_hive("scratch").await.unwrap();
    registry.drop_hive("scratch", false).await.unwrap();
    let frame = FrameRef::parse("analytics.events.clicks").unwrap();
    let definition = FrameDefinition::new(
        FrameSchema::parse_compact(
            "event_id:int64 not null,page:utf8,score:float64,price:decimal128(10,2),flag:bool,\
             tag:binary,count:uint64,at:timestamp(us,UTC),day:date32,country:utf8 not null",
        )
        .unwrap(),
        vec!["country".into()],
    )
    .unwrap();
    registry
        .create_frame(&frame, definition.clone())
        .await
        .unwrap();
    let ledger = registry.ledger(&frame).await.unwrap();
    ledger
        .commit(&Operation::Append(vec![cell("a", "us"), cell("b", "de")]))
        .await
        .unwrap();
    ledger
        .commit(&Operation::AddColumn(
            Column::new("extra", &parse_type("utf8").unwrap(), true).unwrap(),
        ))
        .await
        .unwrap();
    ledger
        .commit(&Operation::Rewrite {
            remove: vec!["data/country=us/a.parquet".into()],
            add: vec![cell("c", "us")],
        })
        .await
        .unwrap();
    ledger
        .commit(&Operation::Overwrite(vec![cell("d", "fr")]))
        .await
        .unwrap();
    ledger.commit(&Operation::Drop).await.unwrap();
    ledger.commit(&Operation::Create(definition)).await.unwrap();

    let mut objects = BTreeMap::new();
    for meta in backend.list(&Path::from("")).await.unwrap() {
        let key = meta.key.to_string();
        if key.starts_with("_apiary/") {
            continue;
        }
        objects.insert(key, backend.get(&meta.key).await.unwrap().bytes);
    }
    objects
}

fn checked_in() -> BTreeMap<String, Bytes> {
    let root = golden_dir();
    let mut out = BTreeMap::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let key = path
                    .strip_prefix(&root)
                    .unwrap()
                    .to_string_lossy()
                    .to_string();
                out.insert(key, Bytes::from(std::fs::read(&path).unwrap()));
            }
        }
    }
    out
}

#[tokio::test]
async fn stored_objects_match_the_golden_files() {
    let objects = history().await;
    if std::env::var_os("APIARY_BLESS").is_some() {
        let root = golden_dir();
        let _ = std::fs::remove_dir_all(&root);
        for (key, bytes) in &objects {
            let path = root.join(key);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, bytes).unwrap();
        }
    }
    let golden = checked_in();
    assert_eq!(
        objects.keys().collect::<Vec<_>>(),
        golden.keys().collect::<Vec<_>>(),
        "the set of stored objects changed"
    );
    for (key, bytes) in &objects {
        assert_eq!(
            String::from_utf8_lossy(bytes),
            String::from_utf8_lossy(&golden[key]),
            "the stored format of `{key}` changed: bump its format version, keep reading \
             the old one, then re-bless (APIARY_BLESS=1)"
        );
    }
}

/// Today's files stay readable: a registry over exactly the golden objects sees the
/// history they record.
#[tokio::test]
async fn golden_files_read_back() {
    let backend = apiary_storage::memory();
    for (key, bytes) in checked_in() {
        backend.put(&Path::from(key.as_str()), bytes).await.unwrap();
    }
    let registry = Registry::new(Arc::clone(&backend), LedgerConfig::default());
    let hives: Vec<String> = registry
        .list_hives()
        .await
        .unwrap()
        .into_iter()
        .map(|h| h.name)
        .collect();
    assert_eq!(hives, ["analytics"]);
    let frame = FrameRef::parse("analytics.events.clicks").unwrap();
    let ledger = registry.ledger(&frame).await.unwrap();
    let state = ledger.cached().unwrap();
    assert_eq!(state.version, 6);
    let live = state.live.as_ref().unwrap();
    assert!(live.cells.is_empty(), "re-created after the drop");
    assert_eq!(live.definition.schema.columns.len(), 10);
    let before_drop = ledger.state_at(4).await.unwrap();
    let live = before_drop.live.as_ref().unwrap();
    assert_eq!(
        live.cells.keys().collect::<Vec<_>>(),
        ["data/country=fr/d.parquet"]
    );
    assert_eq!(
        live.definition.schema.columns.len(),
        11,
        "with the added column"
    );
    let cell = &live.cells["data/country=fr/d.parquet"];
    assert_eq!(cell.stats["count"].max, Some(StatValue::UInt(u64::MAX)));
    assert_eq!(
        cell.stats["price"].min,
        Some(StatValue::Decimal("-1234".into()))
    );
}
