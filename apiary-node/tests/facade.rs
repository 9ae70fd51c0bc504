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
        apiary::apiary_storage::time::sleep(Duration::from_millis(50)).await;
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

/// A membership that records what it is asked, to prove the facade's swarm operations go
/// through the plugged-in membership and never behind its back to storage.
#[derive(Debug, Default)]
struct Recording {
    calls: std::sync::Mutex<Vec<String>>,
}

impl Recording {
    fn note(&self, call: String) {
        self.calls.lock().unwrap().push(call);
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

#[async_trait::async_trait]
impl apiary::apiary_swarm::Membership for Recording {
    async fn join(&self, hb: &apiary::apiary_swarm::Heartbeat) -> apiary::apiary_swarm::Result<()> {
        self.note(format!("join {}", hb.node_id));
        Ok(())
    }
    async fn publish(
        &self,
        _: &apiary::apiary_swarm::Heartbeat,
    ) -> apiary::apiary_swarm::Result<()> {
        Ok(())
    }
    async fn leave(&self) -> apiary::apiary_swarm::Result<()> {
        self.note("leave".into());
        Ok(())
    }
    async fn refresh(&self) -> apiary::apiary_swarm::Result<apiary::apiary_swarm::WorldView> {
        Ok(Default::default())
    }
    fn world_view(&self) -> apiary::apiary_swarm::WorldView {
        Default::default()
    }
    async fn request_drain(
        &self,
        node: &apiary::apiary_swarm::NodeId,
        by: &str,
    ) -> apiary::apiary_swarm::Result<()> {
        self.note(format!("drain {node} by {by}"));
        Ok(())
    }
    async fn snapshot(&self) -> apiary::apiary_swarm::Result<apiary::apiary_swarm::WorldView> {
        self.note("snapshot".into());
        Ok(Default::default())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swarm_operations_go_through_the_plugged_in_membership() {
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("shared");
    let recording = Arc::new(Recording::default());
    let roles = Arc::new(std::sync::Mutex::new(Vec::new()));
    let factory: apiary::MembershipFactory = {
        let (recording, roles) = (Arc::clone(&recording), Arc::clone(&roles));
        Arc::new(move |role| {
            roles.lock().unwrap().push(match role {
                apiary::MembershipRole::Node { id, .. } => format!("node {id}"),
                apiary::MembershipRole::Observer { .. } => "observer".to_string(),
            });
            Arc::clone(&recording) as Arc<dyn apiary::apiary_swarm::Membership>
        })
    };
    let ap = Apiary::builder(apiary::ApiaryOptions::new(
        apiary::apiary_storage::StorageUri::parse(storage.to_str().unwrap()).unwrap(),
    ))
    .membership(factory)
    .build()
    .await
    .unwrap();

    // Not started: the snapshot and the drain request are the membership's.
    let status = ap.swarm_status().await.unwrap();
    assert_eq!(status.alive, 0);
    ap.drain_node("node-x", "tests").await.unwrap();
    assert_eq!(recording.calls(), ["snapshot", "drain node-x by tests"]);

    // Started: the node's own membership joins and takes drain requests.
    ap.start_with(options(dir.path(), "a")).await.unwrap();
    ap.drain_node("node-y", "tests").await.unwrap();
    ap.shutdown().await.unwrap();
    assert_eq!(
        recording.calls()[2..],
        ["join a", "drain node-y by tests", "leave"]
    );
    assert!(roles.lock().unwrap().contains(&"node a".to_string()));
    assert!(
        !storage.join("_heartbeats").exists(),
        "nothing was written to storage behind the membership's back"
    );
}

/// Errors carry a kind a caller can branch on, and keep their sources.
#[tokio::test]
async fn errors_have_kinds_and_sources() {
    use apiary::ErrorKind;
    let dir = tempfile::tempdir().unwrap();
    let ap = Apiary::open(dir.path().join("s").to_str().unwrap())
        .await
        .unwrap();
    let kind = |e: apiary::ApiaryError| e.kind();
    assert_eq!(
        kind(ap.create_hive("Bad Name").await.unwrap_err()),
        ErrorKind::InvalidInput
    );
    assert_eq!(
        kind(ap.describe_frame("no", "such", "frame").await.unwrap_err()),
        ErrorKind::NotFound
    );
    assert_eq!(
        kind(ap.sql("SELEC 1").await.unwrap_err()),
        ErrorKind::InvalidInput
    );
    assert_eq!(
        kind(ap.sql("INSERT INTO a.b.c VALUES (1)").await.unwrap_err()),
        ErrorKind::InvalidInput
    );
    ap.create_hive("h").await.unwrap();
    ap.create_box("h", "b").await.unwrap();
    ap.create_frame("h", "b", "f", &[("x", "int64"), ("p", "utf8")], &["p"])
        .await
        .unwrap();
    let conflict = ap
        .create_frame("h", "b", "f", &[("x", "utf8"), ("p", "utf8")], &["p"])
        .await
        .unwrap_err();
    assert_eq!(kind(conflict), ErrorKind::Conflict);
    assert_eq!(
        kind(
            ap.vacuum("h", "b", "f", Some(Duration::from_secs(1)))
                .await
                .unwrap_err()
        ),
        ErrorKind::InvalidInput,
        "a retention shorter than a write may take is refused"
    );
    // A damaged ledger entry is corrupt data, not a bug or bad input.
    let entry = dir.path().join("s/h/b/f/_ledger/00000000000000000001.json");
    std::fs::write(&entry, b"{not json").unwrap();
    let fresh = Apiary::open(dir.path().join("s").to_str().unwrap())
        .await
        .unwrap();
    let damaged = fresh.describe_frame("h", "b", "f").await.unwrap_err();
    assert_eq!(damaged.kind(), ErrorKind::Corrupt, "{damaged}");
    // A failed query keeps DataFusion's own error as its source.
    let failed = ap.sql("SELECT CAST('x' AS INT)").await.unwrap_err();
    let mut source = std::error::Error::source(&failed);
    let mut depth = 0;
    while let Some(s) = source {
        depth += 1;
        source = s.source();
    }
    assert!(depth >= 1, "{failed} has no source");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nodes_attributes_reach_every_view_and_bad_ones_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("shared");
    let ap = Apiary::open(storage.to_str().unwrap()).await.unwrap();
    let mut bad = options(dir.path(), "a");
    bad.attributes.insert(String::new(), "x".into());
    let err = ap.start_with(bad).await.unwrap_err();
    assert!(err.to_string().contains("APIARY_ATTRIBUTES"), "{err}");
    let mut with = options(dir.path(), "a");
    with.attributes
        .insert("flight".into(), "grpc://127.0.0.1:50051".into());
    ap.start_with(with).await.unwrap();
    let observer = Apiary::open(storage.to_str().unwrap()).await.unwrap();
    let swarm = observer
        .swarm_snapshot(&SwarmConfig::default())
        .await
        .unwrap();
    let node = swarm
        .nodes
        .iter()
        .find(|n| n.node_id == "a")
        .expect("node a in the view");
    assert_eq!(node.attributes["flight"], "grpc://127.0.0.1:50051");
    ap.shutdown().await.unwrap();
}
