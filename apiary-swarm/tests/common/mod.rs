//! What the storage-heartbeat tests share: members of one swarm on one store, on a manual
//! clock, and heartbeats to publish.

#![allow(clippy::unwrap_used, dead_code)]

use std::sync::Arc;
use std::time::Duration;

use apiary_storage::{
    CountsHandle, FaultConfig, InstrumentedStore, ObjectStoreBackend, Path, StorageBackend,
    StorageUri, object_store_for,
};
use apiary_swarm::{
    Capacity, HEARTBEAT_FORMAT, Heartbeat, Lifecycle, Load, ManualClock, NodeId, NodeState,
    StorageHeartbeats, SwarmConfig, WorldView,
};

pub const SEC: Duration = Duration::from_secs(1);

pub fn config() -> SwarmConfig {
    SwarmConfig {
        heartbeat_interval: 5 * SEC,
        poll_interval: 5 * SEC,
        dead_threshold: 30 * SEC,
        retention: 60 * SEC,
        content_reads_per_minute: 6.0,
        ..SwarmConfig::default()
    }
}

pub fn hb(id: &NodeId, seq: u64, state: Lifecycle, wall_ms: i64) -> Heartbeat {
    Heartbeat {
        format: HEARTBEAT_FORMAT,
        node_id: id.clone(),
        seq,
        state,
        software_version: "test".into(),
        hostname: "h".into(),
        started_at_ms: wall_ms,
        written_at_ms: wall_ms,
        capacity: Capacity {
            cores: 4,
            bees: 4,
            memory_bytes: 8 << 30,
            memory_per_bee_bytes: 1 << 30,
            target_cell_bytes: 64 << 20,
        },
        load: Load {
            idle_bees: 4,
            ..Load::default()
        },
        cache: Default::default(),
        attributes: Default::default(),
        beat: None,
        requests: None,
        history: Vec::new(),
    }
}

pub struct Swarm {
    pub backend: Arc<dyn StorageBackend>,
    pub store: Arc<dyn apiary_storage::object_store::ObjectStore>,
    pub caps: apiary_storage::Capabilities,
    pub clock: ManualClock,
}

impl Swarm {
    pub fn new(uri: &StorageUri) -> Self {
        let (store, caps) = object_store_for(uri).unwrap();
        let backend = Arc::new(ObjectStoreBackend::new(
            Arc::clone(&store),
            caps,
            uri.to_string(),
        ));
        Self {
            backend,
            store,
            caps,
            clock: ManualClock::new(),
        }
    }

    /// A member with no content reads in its budget beyond the first (what the cadence
    /// tests need: reads outside the budget are the ones they prove).
    pub fn without_content_reads(&self, id: &str) -> StorageHeartbeats {
        self.member_with(
            id,
            SwarmConfig {
                content_reads_per_minute: 0.0,
                ..config()
            },
        )
    }

    /// A member judging by `config` instead of [`config`]'s.
    pub fn member_with(&self, id: &str, config: SwarmConfig) -> StorageHeartbeats {
        StorageHeartbeats::new(
            Arc::new(ObjectStoreBackend::new(
                Arc::clone(&self.store),
                self.caps,
                "test",
            )),
            NodeId::new(id).unwrap(),
            Arc::new(self.clock.clone()),
            config,
        )
    }

    pub fn member(&self, id: &str) -> (StorageHeartbeats, CountsHandle) {
        let counted = InstrumentedStore::new(Arc::clone(&self.store), FaultConfig::none());
        let counts = counted.counts();
        let backend = Arc::new(ObjectStoreBackend::new(
            Arc::new(counted),
            self.caps,
            "test",
        ));
        let m = StorageHeartbeats::new(
            backend,
            NodeId::new(id).unwrap(),
            Arc::new(self.clock.clone()),
            config(),
        );
        (m, counts)
    }
}

pub fn state(view: &WorldView, id: &str) -> Option<NodeState> {
    view.node(&NodeId::new(id).unwrap()).map(|n| n.state)
}

/// The heartbeats and drain requests under `_heartbeats/` (not the roster).
pub async fn heartbeat_keys(swarm: &Swarm) -> Vec<String> {
    swarm
        .backend
        .list(&Path::from("_heartbeats"))
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key.to_string())
        .filter(|k| !k.contains("/roster_"))
        .collect()
}

/// A heartbeat of `id` promising the active or the idle cadence of [`config`].
pub fn hb_beating(id: &NodeId, seq: u64, active: bool) -> Heartbeat {
    let mut h = hb(id, seq, Lifecycle::Alive, 0);
    h.beat = Some(config().beat(active));
    h
}
