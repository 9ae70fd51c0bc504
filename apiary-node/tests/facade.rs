//! The `Apiary` API as the seeds use it: open, start, swarm_status, status, shutdown.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use apiary::apiary_swarm::{
    self as swarm, Heartbeat, Membership, NodeId, NodeState, SwarmConfig, WorldView,
};
use apiary::{Apiary, NodeOptions};
use common::board::{Board, BoardMember};

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
async fn two_concurrent_starts_of_one_handle_start_one_node() {
    let dir = tempfile::tempdir().unwrap();
    let ap = Apiary::open(dir.path().join("shared").to_str().unwrap())
        .await
        .unwrap();
    let same = ap.clone();
    let (first, second) = tokio::join!(
        ap.start_with(options(dir.path(), "a")),
        same.start_with(options(dir.path(), "b"))
    );
    let errors: Vec<String> = [first, second]
        .into_iter()
        .filter_map(|r| r.err().map(|e| e.to_string()))
        .collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("already started"), "{errors:?}");
    let mut swarm = ap.swarm_status().await.unwrap();
    for _ in 0..20 {
        apiary::apiary_storage::time::sleep(Duration::from_millis(50)).await;
        swarm = ap.swarm_status().await.unwrap();
    }
    assert_eq!(swarm.alive, 1, "{swarm:?}");
    ap.shutdown().await.unwrap();
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
/// through the plugged-in membership and never behind its back to storage. It records, then
/// answers from an in-memory board (`common::board`), so it keeps the Membership contract:
/// the conformance suite below runs on it.
#[derive(Debug)]
struct Recording {
    calls: Arc<std::sync::Mutex<Vec<String>>>,
    inner: BoardMember,
}

impl Recording {
    fn note(&self, call: String) {
        self.calls.lock().unwrap().push(call);
    }
}

#[async_trait::async_trait]
impl Membership for Recording {
    async fn join(&self, hb: &Heartbeat) -> swarm::Result<()> {
        self.note(format!("join {}", hb.node_id));
        self.inner.join(hb).await
    }
    async fn publish(&self, hb: &Heartbeat) -> swarm::Result<()> {
        self.inner.publish(hb).await
    }
    async fn leave(&self) -> swarm::Result<()> {
        self.note("leave".into());
        self.inner.leave().await
    }
    async fn refresh(&self) -> swarm::Result<WorldView> {
        self.inner.refresh().await
    }
    fn world_view(&self) -> WorldView {
        self.inner.world_view()
    }
    async fn request_drain(&self, node: &NodeId, by: &str) -> swarm::Result<()> {
        self.note(format!("drain {node} by {by}"));
        self.inner.request_drain(node, by).await
    }
    async fn snapshot(&self) -> swarm::Result<WorldView> {
        self.note("snapshot".into());
        self.inner.snapshot().await
    }
}

/// The conformance suite's harness for the recording double: members on one board, on a
/// manual clock.
struct RecordingHarness {
    board: Arc<Board>,
    clock: swarm::ManualClock,
}

#[async_trait::async_trait]
impl swarm::conformance::Harness for RecordingHarness {
    fn config(&self) -> SwarmConfig {
        SwarmConfig::default()
    }
    async fn member(&self, id: &str) -> Arc<dyn Membership> {
        Arc::new(Recording {
            calls: Arc::default(),
            inner: self.board.member(id),
        })
    }
    async fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }
}

#[tokio::test]
async fn the_recording_membership_passes_the_conformance_suite() {
    let clock = swarm::ManualClock::new();
    let harness = RecordingHarness {
        board: Board::new(Arc::new(clock.clone()), SwarmConfig::default()),
        clock,
    };
    swarm::conformance::run_all(&harness).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swarm_operations_go_through_the_plugged_in_membership() {
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("shared");
    let board = Board::new(Arc::new(swarm::SystemClock::new()), SwarmConfig::default());
    let calls: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let roles = Arc::new(std::sync::Mutex::new(Vec::new()));
    let factory: apiary::MembershipFactory = {
        let (calls, roles) = (Arc::clone(&calls), Arc::clone(&roles));
        Arc::new(move |role| {
            let id = match role {
                apiary::MembershipRole::Node { id, .. } => id.to_string(),
                apiary::MembershipRole::Observer { .. } => "observer".to_string(),
            };
            roles.lock().unwrap().push(id.clone());
            Arc::new(Recording {
                calls: Arc::clone(&calls),
                inner: board.member(&id),
            }) as Arc<dyn Membership>
        })
    };
    let ap = Apiary::builder(apiary::ApiaryOptions::new(
        apiary::apiary_storage::StorageUri::parse(storage.to_str().unwrap()).unwrap(),
    ))
    .membership(factory)
    .build()
    .await
    .unwrap();
    let recorded = || calls.lock().unwrap().clone();

    // Not started: the snapshot and the drain request are the membership's (which knows no
    // node-x).
    let status = ap.swarm_status().await.unwrap();
    assert_eq!(status.alive, 0);
    let err = ap.drain_node("node-x", "tests").await.unwrap_err();
    assert_eq!(err.kind(), apiary::ErrorKind::NotFound, "{err}");
    assert_eq!(recorded(), ["snapshot", "drain node-x by tests"]);

    // Started: the node's own membership joins, is alive in its own view at once, and takes
    // drain requests.
    ap.start_with(options(dir.path(), "a")).await.unwrap();
    let status = ap.swarm_status().await.unwrap();
    assert_eq!(status.alive, 1, "{status:?}");
    ap.drain_node("a", "tests").await.unwrap();
    ap.shutdown().await.unwrap();
    assert_eq!(recorded()[2..], ["join a", "drain a by tests", "leave"]);
    assert!(roles.lock().unwrap().contains(&"a".to_string()));
    assert!(
        !storage.join("_heartbeats").exists(),
        "nothing was written to storage behind the membership's back"
    );
}

/// Opening, starting and querying can run on any task of a multi-threaded runtime (their
/// futures are `Send`), as Python's interruptible calls and `tokio::spawn` need.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_futures_can_be_spawned() {
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("s").display().to_string();
    let ap = tokio::spawn(async move { Apiary::open(&storage).await })
        .await
        .unwrap()
        .unwrap();
    let started = ap.clone();
    let state = dir.path().to_path_buf();
    tokio::spawn(async move { started.start_with(options(&state, "spawned")).await })
        .await
        .unwrap()
        .unwrap();
    let querying = ap.clone();
    let rows = tokio::spawn(async move { querying.sql("SELECT 1 AS one").await })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rows.num_rows(), 1);
    ap.shutdown().await.unwrap();
}

/// Errors carry a kind a caller can branch on, and keep their sources.
/// A halted node stops as a crash would: it leaves its heartbeat behind, beats no more, and
/// a peer judges it dead; a graceful shutdown afterwards is a no-op.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_halted_node_is_judged_dead_not_gone() {
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("shared");
    let open = || Apiary::open(storage.to_str().unwrap());
    let (a, b) = (open().await.unwrap(), open().await.unwrap());
    a.start_with(options(dir.path(), "a")).await.unwrap();
    b.start_with(options(dir.path(), "b")).await.unwrap();
    let state_of_b = |a: &Apiary| {
        let a = a.clone();
        async move {
            let view = a.swarm_status().await.unwrap();
            view.nodes
                .iter()
                .find(|n| n.node_id == "b")
                .map(|n| n.state)
        }
    };
    for _ in 0..100 {
        if state_of_b(&a).await == Some(NodeState::Alive) {
            break;
        }
        apiary::apiary_storage::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(state_of_b(&a).await, Some(NodeState::Alive));
    b.halt().await;
    assert!(!b.status(&NodeOptions::default()).running);
    assert!(storage.join("_heartbeats/node_b.json").exists(), "no leave");
    let mut seen = None;
    for _ in 0..200 {
        seen = state_of_b(&a).await;
        if seen == Some(NodeState::Dead) {
            break;
        }
        apiary::apiary_storage::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seen, Some(NodeState::Dead));
    b.shutdown().await.unwrap();
    assert!(storage.join("_heartbeats/node_b.json").exists());
    a.shutdown().await.unwrap();
}

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
