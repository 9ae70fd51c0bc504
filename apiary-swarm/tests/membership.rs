//! Membership through storage heartbeats, on a simulated clock: states, thresholds, damaged
//! files, drains, cleanup, the one-shot snapshot, and the request budget.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use apiary_storage::conformance::s3_test_uri;
use apiary_storage::{Path, StorageUri};
use apiary_swarm::simulation::{SimulationConfig, Workload, simulate};
use apiary_swarm::{
    Clock, Lifecycle, Membership, NodeId, NodeState, StorageHeartbeats, SwarmConfig, SystemClock,
};
use bytes::Bytes;

mod common;

use common::{SEC, Swarm, config, hb, heartbeat_keys, state};

/// Two nodes beating every 5 s: a node is alive in its own view once it joined, and sees a
/// newcomer whose heartbeat is fresh on the store's clock alive at first sight; then
/// `suspect` after 15 s without a change and `dead` after 30 s. An observer that never
/// wrote a heartbeat has no reading of the store's clock: it sees a newcomer `joining`
/// until it has seen its heartbeat change.
#[tokio::test]
async fn states_follow_observed_changes() {
    let swarm = Swarm::new(&StorageUri::Memory);
    let (a, _) = swarm.member("a");
    let (b, _) = swarm.member("b");
    let (watcher, _) = swarm.member("watcher");
    let (ida, idb) = (NodeId::new("a").unwrap(), NodeId::new("b").unwrap());
    a.join(&hb(&ida, 1, Lifecycle::Joining, 0)).await.unwrap();
    let v = a.refresh().await.unwrap();
    assert_eq!(state(&v, "a"), Some(NodeState::Alive), "alive once joined");

    b.join(&hb(&idb, 1, Lifecycle::Joining, 0)).await.unwrap();
    let v = a.refresh().await.unwrap();
    assert_eq!(
        state(&v, "b"),
        Some(NodeState::Alive),
        "fresh at first sight"
    );
    let v = watcher.refresh().await.unwrap();
    assert_eq!(state(&v, "b"), Some(NodeState::Joining), "no store reading");
    for seq in 2..=3 {
        swarm.clock.advance(5 * SEC);
        a.publish(&hb(&ida, seq, Lifecycle::Alive, 0))
            .await
            .unwrap();
        b.publish(&hb(&idb, seq, Lifecycle::Alive, 0))
            .await
            .unwrap();
        let v = a.refresh().await.unwrap();
        assert_eq!(
            state(&v, "b"),
            Some(NodeState::Alive),
            "alive by the second poll"
        );
        assert_eq!(state(&v, "a"), Some(NodeState::Alive));
        assert_eq!((v.alive(), v.total_bees()), (2, 8));
    }
    // b stops (SIGKILL): a keeps beating.
    let mut seen = Vec::new();
    for seq in 4..12 {
        swarm.clock.advance(5 * SEC);
        a.publish(&hb(&ida, seq, Lifecycle::Alive, 0))
            .await
            .unwrap();
        let v = a.refresh().await.unwrap();
        seen.push(state(&v, "b").unwrap());
        assert_eq!(state(&v, "a"), Some(NodeState::Alive));
    }
    use NodeState::*;
    assert_eq!(
        seen,
        [Alive, Alive, Alive, Suspect, Suspect, Suspect, Dead, Dead]
    );
    // It comes back (SIGCONT): alive again on the next change.
    b.publish(&hb(&idb, 99, Lifecycle::Alive, 0)).await.unwrap();
    swarm.clock.advance(5 * SEC);
    let v = a.refresh().await.unwrap();
    assert_eq!(state(&v, "b"), Some(Alive));
}

/// A node whose clock is an hour ahead (or behind) is judged alive: only changes count.
/// A heartbeat seen for the first time is aged on the store's clock: one last written in
/// 2023 (by the store's stamp) is dead at first sight, not `joining` for a dead
/// threshold; one written just now is alive.
#[tokio::test]
async fn a_stale_heartbeat_is_dead_at_first_sight() {
    let dir = tempfile::tempdir().unwrap();
    let swarm = Swarm::new(&StorageUri::parse(dir.path().to_str().unwrap()).unwrap());
    let (a, _) = swarm.member("a");
    let (b, _) = swarm.member("b");
    let (ida, idb) = (NodeId::new("a").unwrap(), NodeId::new("b").unwrap());
    b.join(&hb(&idb, 1, Lifecycle::Alive, 0)).await.unwrap();
    let file = dir.path().join(idb.heartbeat_key().as_str());
    std::fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(std::time::SystemTime::UNIX_EPOCH + 1_700_000_000 * SEC)
        .unwrap();
    a.join(&hb(&ida, 1, Lifecycle::Joining, 0)).await.unwrap();
    let v = a.refresh().await.unwrap();
    assert_eq!(state(&v, "b"), Some(NodeState::Dead), "{v:?}");
    assert_eq!(state(&v, "a"), Some(NodeState::Alive));
    // b comes back: its next heartbeat is a change, and it is alive again.
    b.publish(&hb(&idb, 2, Lifecycle::Alive, 0)).await.unwrap();
    let v = a.refresh().await.unwrap();
    assert_eq!(state(&v, "b"), Some(NodeState::Alive), "{v:?}");
}

#[tokio::test]
async fn a_skewed_clock_does_not_matter() {
    let swarm = Swarm::new(&StorageUri::Memory);
    let (a, _) = swarm.member("a");
    let (skewed, _) = swarm.member("skewed");
    let id = NodeId::new("skewed").unwrap();
    let hour = 3_600_000;
    for seq in 1..=4 {
        let wall = swarm.clock.wall_ms() + if seq % 2 == 0 { hour } else { -hour };
        skewed
            .publish(&hb(&id, seq, Lifecycle::Alive, wall))
            .await
            .unwrap();
        let v = a.refresh().await.unwrap();
        if seq > 1 {
            assert_eq!(state(&v, "skewed"), Some(NodeState::Alive));
        }
        swarm.clock.advance(5 * SEC);
    }
}

/// Damaged and foreign files are reported and skipped; the valid nodes are all listed.
#[tokio::test]
async fn damaged_heartbeats_are_reported_and_skipped() {
    let swarm = Swarm::new(&StorageUri::Memory);
    let (a, _) = swarm.member("a");
    let (b, _) = swarm.member("b");
    a.join(&hb(&NodeId::new("a").unwrap(), 1, Lifecycle::Alive, 0))
        .await
        .unwrap();
    b.join(&hb(&NodeId::new("b").unwrap(), 1, Lifecycle::Alive, 0))
        .await
        .unwrap();
    let put = |k: &str, v: &'static [u8]| {
        let backend = Arc::clone(&swarm.backend);
        let k = Path::from(k);
        async move { backend.put(&k, Bytes::from_static(v)).await.unwrap() }
    };
    put(
        "_heartbeats/node_c.json",
        b"{\"format\":1,\"node_id\":\"c\",\"se",
    )
    .await;
    put("_heartbeats/node_d.json", b"\x00\x01binary").await;
    put("_heartbeats/node_e.json", b"{\"format\":7}").await;
    let wrong_owner = hb(&NodeId::new("zz").unwrap(), 1, Lifecycle::Alive, 0).encode();
    swarm
        .backend
        .put(
            &Path::from("_heartbeats/node_f.json"),
            Bytes::from(wrong_owner),
        )
        .await
        .unwrap();
    put("_heartbeats/notes.txt", b"hello").await;
    let v = a.refresh().await.unwrap();
    let ids: Vec<&str> = v.nodes.iter().map(|n| n.node_id.as_str()).collect();
    assert_eq!(ids, ["a", "b"]);
    assert_eq!(v.problems.len(), 5, "{:#?}", v.problems);
    let all = v.problems.join("\n");
    for needle in [
        "node_c.json",
        "node_d.json",
        "format 7",
        "heartbeat of `zz`",
        "notes.txt",
    ] {
        assert!(all.contains(needle), "{needle} in {all}");
    }
}

/// A drain request is seen by its node on its next refresh; leaving removes the heartbeat and
/// the request; the others drop the node on their next poll.
#[tokio::test]
async fn drain_and_leave() {
    let swarm = Swarm::new(&StorageUri::Memory);
    let (a, _) = swarm.member("a");
    let (b, _) = swarm.member("b");
    let idb = NodeId::new("b").unwrap();
    a.join(&hb(&NodeId::new("a").unwrap(), 1, Lifecycle::Alive, 0))
        .await
        .unwrap();
    b.join(&hb(&idb, 1, Lifecycle::Alive, 0)).await.unwrap();
    assert!(!b.refresh().await.unwrap().drain_requested);
    let err = a
        .request_drain(&NodeId::new("nope").unwrap(), "test")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no node `nope`"), "{err}");
    a.request_drain(&idb, "test").await.unwrap();
    assert!(
        !a.refresh().await.unwrap().drain_requested,
        "not a's request"
    );
    assert!(b.refresh().await.unwrap().drain_requested);
    b.publish(&hb(&idb, 2, Lifecycle::Leaving, 0))
        .await
        .unwrap();
    swarm.clock.advance(5 * SEC);
    assert_eq!(
        state(&a.refresh().await.unwrap(), "b"),
        Some(NodeState::Leaving)
    );
    b.leave().await.unwrap();
    let v = a.refresh().await.unwrap();
    assert_eq!(state(&v, "b"), None);
    assert_eq!(heartbeat_keys(&swarm).await, ["_heartbeats/node_a.json"]);
}

/// Heartbeats of nodes dead longer than the retention are removed, but not one that came
/// back in the meantime.
#[tokio::test]
async fn long_dead_heartbeats_are_cleaned_up() {
    let swarm = Swarm::new(&StorageUri::Memory);
    let (a, _) = swarm.member("a");
    let (b, _) = swarm.member("b");
    let (c, _) = swarm.member("c");
    let ida = NodeId::new("a").unwrap();
    a.join(&hb(&ida, 1, Lifecycle::Alive, 0)).await.unwrap();
    b.join(&hb(&NodeId::new("b").unwrap(), 1, Lifecycle::Alive, 0))
        .await
        .unwrap();
    c.join(&hb(&NodeId::new("c").unwrap(), 1, Lifecycle::Alive, 0))
        .await
        .unwrap();
    a.refresh().await.unwrap();
    for seq in 2..20 {
        swarm.clock.advance(5 * SEC);
        a.publish(&hb(&ida, seq, Lifecycle::Alive, 0))
            .await
            .unwrap();
        a.refresh().await.unwrap();
    }
    // 90 s: both dead for 60 s = dead threshold + retention. c comes back just now.
    c.publish(&hb(&NodeId::new("c").unwrap(), 2, Lifecycle::Alive, 0))
        .await
        .unwrap();
    swarm.clock.advance(5 * SEC);
    a.refresh().await.unwrap();
    assert_eq!(
        heartbeat_keys(&swarm).await,
        ["_heartbeats/node_a.json", "_heartbeats/node_c.json"]
    );
}

/// Content reads stay within the budget when every node changes every poll.
#[tokio::test]
async fn content_reads_stay_within_budget() {
    let swarm = Swarm::new(&StorageUri::Memory);
    let (observer, counts) = swarm.member("observer");
    let members: Vec<(NodeId, StorageHeartbeats)> = (0..50)
        .map(|i| {
            let id = format!("m{i}");
            (NodeId::new(&id).unwrap(), swarm.member(&id).0)
        })
        .collect();
    for seq in 1..=61u64 {
        for (id, m) in &members {
            m.publish(&hb(id, seq, Lifecycle::Alive, 0)).await.unwrap();
        }
        if seq == 2 {
            // After the first sight of all 50 (one GET each, unbudgeted).
            let first = counts.snapshot();
            assert_eq!(first.get, 50, "{first:?}");
        }
        observer.refresh().await.unwrap();
        swarm.clock.advance(5 * SEC);
    }
    let used = counts.snapshot();
    // 60 polls over 5 minutes: 50 first reads + at most 6 a minute + the initial token.
    assert!(used.get <= 50 + 30 + 1, "{used:?}");
    assert_eq!(used.list, 61);
}

/// The one-shot snapshot ages heartbeats on the store's clock.
#[tokio::test]
async fn snapshot_uses_the_store_clock() {
    let dir = tempfile::tempdir().unwrap();
    let swarm = Swarm::new(&StorageUri::Local(dir.path().join("s")));
    let (a, _) = swarm.member("a");
    a.join(&hb(
        &NodeId::new("a").unwrap(),
        2,
        Lifecycle::Alive,
        i64::MAX / 2,
    ))
    .await
    .unwrap();
    // Ages come from the store's clock. Only bounds that cannot flake are asserted here
    // (the exact suspect/dead boundaries are asserted on a simulated clock above): a fresh
    // heartbeat is alive; after 300 ms it is dead to a 100 ms threshold, still alive to an
    // hour's, and its age is at least the time slept.
    // Read through an observer membership, as `apiary swarm` does.
    let look = |dead: Duration| {
        let observer = StorageHeartbeats::observer(
            Arc::clone(&swarm.backend),
            Arc::new(SystemClock::new()),
            SwarmConfig {
                dead_threshold: dead,
                ..config()
            },
        );
        async move { observer.snapshot().await.unwrap() }
    };
    let v = look(3600 * SEC).await;
    assert_eq!(state(&v, "a"), Some(NodeState::Alive));
    apiary_storage::time::sleep(Duration::from_millis(300)).await;
    let v = look(Duration::from_millis(100)).await;
    assert_eq!(state(&v, "a"), Some(NodeState::Dead));
    let v = look(3600 * SEC).await;
    let node = v.node(&NodeId::new("a").unwrap()).unwrap();
    assert_eq!(node.state, NodeState::Alive);
    assert!(
        node.last_seen >= Duration::from_millis(290),
        "{:?}",
        node.last_seen
    );
    assert!(
        swarm
            .backend
            .list(&Path::from("_apiary"))
            .await
            .unwrap()
            .is_empty()
    );
}

/// Three members on S3 and on a local folder see one another.
async fn three_members_see_each_other(uri: StorageUri) {
    let swarm = Swarm::new(&uri);
    let members: Vec<(NodeId, StorageHeartbeats)> = ["x", "y", "z"]
        .iter()
        .map(|id| (NodeId::new(id).unwrap(), swarm.member(id).0))
        .collect();
    for seq in 1..=2 {
        for (id, m) in &members {
            m.publish(&hb(id, seq, Lifecycle::Alive, 0)).await.unwrap();
        }
        for (_, m) in &members {
            m.refresh().await.unwrap();
        }
        swarm.clock.advance(5 * SEC);
    }
    for (_, m) in &members {
        let v = m.world_view();
        assert_eq!(v.alive(), 3, "{v:#?}");
    }
}

#[tokio::test]
async fn three_members_on_a_local_folder() {
    let dir = tempfile::tempdir().unwrap();
    three_members_see_each_other(StorageUri::Local(dir.path().join("s"))).await;
}

#[tokio::test]
async fn three_members_on_s3() {
    three_members_see_each_other(s3_test_uri("swarm")).await;
}

/// The request budget of a working swarm, simulated: flat in swarm size and at most 30 per
/// node per minute.
#[tokio::test(start_paused = true)]
async fn requests_per_node_are_flat_in_swarm_size() {
    let mut rates = Vec::new();
    for nodes in [10, 100] {
        let report = simulate(
            nodes,
            Workload::Working,
            60 * SEC,
            120 * SEC,
            SimulationConfig::default(),
        )
        .await;
        assert!(report.per_node_per_minute <= 30.0, "{nodes}: {report:?}");
        assert!(
            report.max_node_per_minute <= 30.0 + 1.0,
            "{nodes}: {report:?}"
        );
        assert_eq!(report.final_view.alive(), nodes, "{nodes}");
        rates.push(report.per_node_per_minute);
    }
    assert!((rates[0] - rates[1]).abs() <= 1.0, "flat: {rates:?}");
}

/// The Membership conformance suite's harness for storage heartbeats: members on one
/// storage, all on one manual clock (liveness judged on it; snapshots on the store's).
struct StorageHarness {
    swarm: Swarm,
}

#[async_trait::async_trait]
impl apiary_swarm::conformance::Harness for StorageHarness {
    fn config(&self) -> SwarmConfig {
        config()
    }

    async fn member(&self, id: &str) -> Arc<dyn Membership> {
        Arc::new(self.swarm.member(id).0)
    }

    async fn advance(&self, by: Duration) {
        self.swarm.clock.advance(by);
    }
}

#[tokio::test]
async fn storage_heartbeats_pass_the_conformance_suite_in_memory() {
    let harness = StorageHarness {
        swarm: Swarm::new(&StorageUri::Memory),
    };
    apiary_swarm::conformance::run_all(&harness).await;
}

#[tokio::test]
async fn storage_heartbeats_pass_the_conformance_suite_on_a_local_folder() {
    let dir = tempfile::tempdir().unwrap();
    let harness = StorageHarness {
        swarm: Swarm::new(&StorageUri::Local(dir.path().join("s"))),
    };
    apiary_swarm::conformance::run_all(&harness).await;
}

#[tokio::test]
async fn storage_heartbeats_pass_the_conformance_suite_on_s3() {
    let harness = StorageHarness {
        swarm: Swarm::new(&s3_test_uri("swarm-conformance")),
    };
    apiary_swarm::conformance::run_all(&harness).await;
}
