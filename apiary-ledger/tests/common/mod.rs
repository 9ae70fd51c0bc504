//! Frames, cells and stores the ledger's integration tests share.
#![allow(clippy::unwrap_used, dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;

use apiary_ledger::{
    Cell, ColumnStats, FrameDefinition, FrameRef, FrameSchema, LedgerConfig, Registry, StatValue,
};
use apiary_storage::{
    CountsHandle, FaultConfig, InstrumentedStore, ObjectStoreBackend, StorageBackend, StorageUri,
    object_store_for,
};

pub fn definition(partitioned: bool) -> FrameDefinition {
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

pub fn cell(path: &str, rows: u64, country: Option<&str>) -> Cell {
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
        crc32c: None,
    }
}

pub fn counted_memory() -> (Arc<dyn StorageBackend>, CountsHandle) {
    let (store, caps) = object_store_for(&StorageUri::Memory).unwrap();
    let store = InstrumentedStore::new(store, FaultConfig::none());
    let counts = store.counts();
    (
        Arc::new(ObjectStoreBackend::new(Arc::new(store), caps, "memory://")),
        counts,
    )
}

pub async fn registry_with_frame(
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
