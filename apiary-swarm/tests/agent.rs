//! The running agent: heartbeats and swarm reads run on their own timers, independently.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use apiary_storage::{
    FaultConfig, Hold, InstrumentedStore, ObjectStoreBackend, Path, RequestKind, StorageBackend,
    StorageUri, SystemClock, object_store_for,
};
use apiary_swarm::{
    AgentConfig, Bees, Heartbeat, NodeId, StorageHeartbeats, SwarmAgent, SwarmConfig,
    detect_capacity,
};

async fn seq(backend: &Arc<dyn StorageBackend>, id: &NodeId) -> u64 {
    let key = id.heartbeat_key();
    let object = backend.get(&Path::from(key.as_str())).await.unwrap();
    Heartbeat::decode(&key, &object.bytes, id).unwrap().seq
}

/// A listing of the swarm that never returns (a huge swarm, a throttled store) must not
/// stop this node's heartbeat: otherwise every other node would take it for dead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_swarm_read_does_not_delay_heartbeats() {
    let (store, caps) = object_store_for(&StorageUri::Memory).unwrap();
    let hold = Hold::new(&[RequestKind::List]);
    let held: Arc<dyn StorageBackend> = Arc::new(ObjectStoreBackend::new(
        Arc::new(
            InstrumentedStore::new(Arc::clone(&store), FaultConfig::none()).with_hold(hold.clone()),
        ),
        caps,
        "memory://",
    ));
    let plain: Arc<dyn StorageBackend> =
        Arc::new(ObjectStoreBackend::new(store, caps, "memory://"));
    let id = NodeId::new("a").unwrap();
    let swarm = SwarmConfig {
        heartbeat_interval: Duration::from_millis(20),
        poll_interval: Duration::from_millis(20),
        ..SwarmConfig::default()
    };
    let membership = Arc::new(StorageHeartbeats::new(
        held,
        id.clone(),
        SystemClock::shared(),
        swarm.clone(),
    ));
    let capacity = detect_capacity(Some(1 << 30));
    let agent = SwarmAgent::start(
        membership,
        id.clone(),
        capacity,
        Bees::new(1, 1 << 30),
        SystemClock::shared(),
        AgentConfig {
            swarm,
            drain_timeout: Duration::from_secs(1),
            ..AgentConfig::default()
        },
    )
    .await
    .unwrap();

    hold.close();
    for _ in 0..2000 {
        if hold.waiting() > 0 {
            break;
        }
        apiary_storage::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(hold.waiting() > 0, "the swarm read is stuck at the gate");
    let stuck_at = seq(&plain, &id).await;
    let mut now = stuck_at;
    for _ in 0..1000 {
        now = seq(&plain, &id).await;
        if now >= stuck_at + 3 {
            break;
        }
        apiary_storage::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        now >= stuck_at + 3,
        "heartbeats stopped while the swarm read was stuck (seq {stuck_at} -> {now})"
    );
    hold.open();
    agent.leave().await.unwrap();
}
