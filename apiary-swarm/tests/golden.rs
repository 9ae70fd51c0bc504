//! Golden files of what a node stores: its heartbeat and a drain request, written through
//! the storage membership. A change to either format fails here instead of passing
//! silently; if it is intended, bump `HEARTBEAT_FORMAT`, keep reading the old one, and
//! re-bless with `APIARY_BLESS=1 cargo test -p apiary-swarm --test golden`.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;

use apiary_storage::{ManualClock, Path};
use apiary_swarm::{
    CacheSummary, Capacity, HEARTBEAT_FORMAT, Heartbeat, Lifecycle, Load, Membership, NodeId,
    StorageHeartbeats, SwarmConfig,
};

fn golden(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

fn heartbeat(id: &NodeId) -> Heartbeat {
    Heartbeat {
        format: HEARTBEAT_FORMAT,
        node_id: id.clone(),
        seq: 42,
        state: Lifecycle::Alive,
        software_version: "0.1.0".into(),
        hostname: "pi-kitchen".into(),
        started_at_ms: 1_764_633_600_000,
        written_at_ms: 1_764_633_660_000,
        capacity: Capacity {
            cores: 4,
            bees: 4,
            memory_bytes: 8 << 30,
            memory_per_bee_bytes: 1 << 30,
            target_cell_bytes: 64 << 20,
        },
        load: Load {
            busy_bees: 1,
            idle_bees: 3,
            memory_pressure: 0.25,
            queue_depth: 2,
            temperature: 0.5,
            ..Load::default()
        },
        cache: CacheSummary {
            cells: 12,
            bytes: 3 << 20,
            hot_cells: vec!["analytics/events/clicks/data/country=us/a.parquet".into()],
        },
        attributes: [("flight".to_string(), "grpc://10.0.0.7:50051".to_string())].into(),
        beat: None,
        requests: None,
        history: Vec::new(),
    }
}

fn check(name: &str, actual: &[u8]) {
    let path = golden(name);
    if std::env::var_os("APIARY_BLESS").is_some() {
        std::fs::write(&path, actual).unwrap();
    }
    let expected = std::fs::read(&path).unwrap();
    assert_eq!(
        String::from_utf8_lossy(actual),
        String::from_utf8_lossy(&expected),
        "the stored format of {name} changed: bump HEARTBEAT_FORMAT, keep reading the old \
         one, then re-bless (APIARY_BLESS=1)"
    );
}

#[tokio::test]
async fn heartbeats_and_drain_requests_match_the_golden_files() {
    let backend = apiary_storage::memory();
    let id = NodeId::new("node-0123456789ab").unwrap();
    let clock = ManualClock::new();
    let membership = StorageHeartbeats::new(
        Arc::clone(&backend),
        id.clone(),
        Arc::new(clock.clone()),
        SwarmConfig::default(),
    );
    let beat = heartbeat(&id);
    membership.join(&beat).await.unwrap();
    membership.request_drain(&id, "ops@laptop").await.unwrap();
    let stored = |key: String| {
        let backend = Arc::clone(&backend);
        async move { backend.get(&Path::from(key.as_str())).await.unwrap().bytes }
    };
    let heartbeat_bytes = stored(id.heartbeat_key()).await;
    check("heartbeat.json", &heartbeat_bytes);
    check("drain.json", &stored(id.drain_key()).await);

    // And today's file decodes to the same heartbeat.
    let golden_bytes = std::fs::read(golden("heartbeat.json")).unwrap();
    let decoded = Heartbeat::decode(&id.heartbeat_key(), &golden_bytes, &id).unwrap();
    assert_eq!(decoded, beat);
}
