//! `apiary node` processes on one storage for the multi-process tests, and the client that
//! watches them with the tests' short thresholds.

#![allow(clippy::disallowed_methods)] // real processes and real time: waits and timings read the system clock
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use apiary::apiary_query::distributed::{FramePin, TaskSpec, conformance};
use apiary::{Apiary, ApiaryOptions};
use apiary_storage::StorageUri;

/// How long a test waits for anything.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// An `apiary node` process, killed when dropped.
pub struct Node {
    /// Its node id.
    pub id: String,
    /// The process.
    pub child: Child,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The environment of a test node: short heartbeats, thresholds and retention.
pub fn node_env(task_poll: &str) -> Vec<(String, String)> {
    vec![
        ("APIARY_HEARTBEAT_INTERVAL".into(), "200ms".into()),
        ("APIARY_POLL_INTERVAL".into(), "200ms".into()),
        ("APIARY_DEAD_THRESHOLD".into(), "2s".into()),
        ("APIARY_TASK_POLL_INTERVAL".into(), task_poll.into()),
        ("APIARY_QUERY_RETENTION".into(), "1s".into()),
    ]
}

/// Starts node `id` on `storage` with its state under `dir`, looking for tasks every
/// `task_poll`.
pub fn start(storage: &str, dir: &Path, id: &str, task_poll: &str) -> Node {
    start_with(storage, dir, id, task_poll, &[])
}

/// A client (not a node) that judges the swarm with the test's short thresholds.
pub async fn client(storage: &str) -> Apiary {
    let mut options = ApiaryOptions::new(StorageUri::parse(storage).unwrap());
    options.swarm.dead_threshold = Duration::from_secs(2);
    options.distribute.orphan_retention = Duration::from_secs(1);
    Apiary::open_with(options).await.unwrap()
}

/// A temporary folder holding the clicks frame (see [`load`]), its storage URI, and a
/// client on it.
pub async fn loaded_folder() -> (tempfile::TempDir, String, Apiary) {
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("data").display().to_string();
    let ap = client(&storage).await;
    super::load_clicks_and_pages(&ap).await;
    (dir, storage, ap)
}

/// Waits until `ap` sees `n` nodes alive.
pub async fn wait_alive(ap: &Apiary, n: usize) {
    let started = Instant::now();
    loop {
        let status = ap.swarm_snapshot(&short_swarm()).await.unwrap();
        if status.alive >= n {
            println!("{n} nodes alive after {:?}", started.elapsed());
            return;
        }
        assert!(started.elapsed() < DEADLINE, "only {} alive", status.alive);
        apiary::apiary_storage::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The swarm thresholds the test nodes use.
pub fn short_swarm() -> apiary::apiary_swarm::SwarmConfig {
    apiary::apiary_swarm::SwarmConfig {
        dead_threshold: Duration::from_secs(2),
        ..Default::default()
    }
}

/// The objects under `_queries/`.
pub async fn queries_left(ap: &Apiary) -> Vec<apiary_storage::ObjectMeta> {
    ap.registry()
        .backend()
        .list(&apiary_storage::Path::from("_queries"))
        .await
        .unwrap()
}

/// Waits until nothing is left under `_queries/`.
pub async fn assert_no_queries(ap: &Apiary) {
    let started = Instant::now();
    loop {
        let left = queries_left(ap).await;
        if left.is_empty() {
            return;
        }
        assert!(started.elapsed() < DEADLINE, "left behind: {left:?}");
        apiary::apiary_storage::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A task for `node` that runs `sql` with the clicks frame of `pin_hive` as its split
/// (none of its cells): what an attacker who can write to `_queries/` could publish.
pub fn hostile(query_id: &str, node: &str, sql: &str, pin_hive: &str) -> TaskSpec {
    let mut task = conformance::task(query_id, 0, 1, node);
    task.coordinator = "attacker".into();
    task.split = FramePin {
        hive: pin_hive.into(),
        r#box: "events".into(),
        frame: "clicks".into(),
        version: 0,
    };
    task.cells = Vec::new();
    task.bytes = 0;
    task.sql = sql.into();
    task.timeout_ms = 10_000;
    task
}

/// Starts node `id` as [`start`] does, with `extra` arguments (`--flight ADDR`, say).
pub fn start_with(storage: &str, dir: &Path, id: &str, task_poll: &str, extra: &[&str]) -> Node {
    let child = super::node_command(storage, dir, id)
        .args(["--memory", "2GiB"])
        .args(extra)
        .envs(node_env(task_poll))
        .spawn()
        .unwrap();
    Node {
        id: id.to_string(),
        child,
    }
}

/// A client as [`client`] makes, pushing its distributed tasks over Flight where it can.
pub async fn flight_client(storage: &str) -> Apiary {
    let mut options = ApiaryOptions::new(StorageUri::parse(storage).unwrap());
    options.swarm.dead_threshold = Duration::from_secs(2);
    options.distribute.orphan_retention = Duration::from_secs(1);
    options.flight = Some(apiary::FlightOptions::client());
    Apiary::open_with(options).await.unwrap()
}
