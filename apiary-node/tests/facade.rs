//! The `Apiary` API as the seeds use it: open, start, swarm_status, status, shutdown.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use apiary::apiary_swarm::{NodeState, SwarmConfig};
use apiary::{Apiary, NodeOptions};

fn options(dir: &std::path::Path, id: &str) -> NodeOptions {
    NodeOptions {
        node_id: Some(id.into()),
        state_dir: dir.join(format!("{id}.state")),
        swarm: SwarmConfig {
            heartbeat_interval: Duration::from_millis(100),
            poll_interval: Duration::from_millis(100),
            dead_threshold: Duration::from_secs(2),
            ..SwarmConfig::default()
        },
        ..NodeOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_status_and_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("shared");
    let ap = Apiary::open(storage.to_str().unwrap()).await.unwrap();
    let heartbeat = storage.join("_heartbeats/node_a.json");

    ap.start_with(options(dir.path(), "a")).await.unwrap();
    assert!(
        heartbeat.is_file(),
        "the first heartbeat is written before start returns"
    );
    let err = ap.start_with(options(dir.path(), "a")).await.unwrap_err();
    assert!(err.to_string().contains("already started"), "{err}");

    let status = ap.status(&options(dir.path(), "a"));
    assert_eq!(status.node_id.as_deref(), Some("a"));
    assert!(status.running && status.cores >= 1 && status.bees == status.cores);
    assert_eq!(status.storage, "local");

    let other = Apiary::open(storage.to_str().unwrap()).await.unwrap();
    other.start_with(options(dir.path(), "b")).await.unwrap();
    let mut swarm = ap.swarm_status().await.unwrap();
    for _ in 0..100 {
        if swarm.alive == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        swarm = ap.swarm_status().await.unwrap();
    }
    assert_eq!(swarm.alive, 2, "{swarm:?}");
    assert_eq!(swarm.total_bees, 2 * u64::from(status.bees));
    assert!(
        swarm
            .nodes
            .iter()
            .all(|n| n.state == NodeState::Alive && n.memory_gb > 0.0)
    );

    // Work holds a bee; the node says so in its load.
    let bees = ap.bees().unwrap();
    let bee = bees.acquire().await.unwrap();
    assert_eq!(bees.load().busy_bees, 1);
    drop(bee);

    ap.shutdown().await.unwrap();
    assert!(!heartbeat.exists(), "shutdown removes the heartbeat");
    assert!(ap.bees().is_none());
    ap.shutdown().await.unwrap();
    // Not started: swarm_status reads the heartbeats once, on the storage's clock.
    let snapshot = ap.swarm_status().await.unwrap();
    assert_eq!(snapshot.nodes.len(), 1);
    assert_eq!(snapshot.nodes[0].node_id, "b");
    other.shutdown().await.unwrap();
}
