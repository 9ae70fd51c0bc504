//! The conformance suite every [`Membership`] must pass (behind the `testing` feature): the
//! contract written in [`membership`](crate::Membership), checked.
//!
//! An implementation provides a [`Harness`]: members of one swarm, and a way to let time
//! pass for all of them. [`run_all`] runs every check; each check uses node ids of its own,
//! so checks can share one swarm. The checks panic with a message naming the rule that was
//! broken.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::SwarmError;
use crate::heartbeat::{Capacity, HEARTBEAT_FORMAT, Heartbeat, Lifecycle, Load, NodeId};
use crate::membership::Membership;
use crate::view::{NodeState, SwarmConfig, WorldView};

/// Members of one swarm for the suite, and its time.
#[async_trait]
pub trait Harness: Send + Sync {
    /// The thresholds every member judges by.
    fn config(&self) -> SwarmConfig;

    /// A new member of this harness's swarm for node `id` (not joined yet). Called once per
    /// id; a member that never joins is an observer.
    async fn member(&self, id: &str) -> Arc<dyn Membership>;

    /// Lets `by` pass for every member (moves a manual clock, or sleeps).
    async fn advance(&self, by: Duration);
}

/// Runs every check.
pub async fn run_all(h: &dyn Harness) {
    joined_member_is_alive_in_its_own_view(h).await;
    others_see_a_joined_node(h).await;
    probe_sees_joins_and_leaves(h).await;
    each_node_is_judged_by_its_own_cadence(h).await;
    a_silent_node_turns_suspect_then_dead(h).await;
    leaving_is_seen_and_leave_removes(h).await;
    drain_reaches_only_its_target(h).await;
    snapshot_sees_publishing_nodes_alive(h).await;
    world_view_is_the_last_refresh(h).await;
}

/// A heartbeat of node `id` for the checks: 4 bees, the given sequence and state, and a
/// wall clock an hour off (no membership may judge by it).
pub fn heartbeat(id: &str, seq: u64, state: Lifecycle) -> Heartbeat {
    let skewed = 1_800_000_000_000 + 3_600_000;
    Heartbeat {
        format: HEARTBEAT_FORMAT,
        node_id: NodeId::new(id).unwrap(),
        seq,
        state,
        software_version: "conformance".into(),
        hostname: "conformance".into(),
        started_at_ms: skewed,
        written_at_ms: skewed,
        capacity: Capacity {
            cores: 4,
            bees: 4,
            memory_bytes: 8 << 30,
            memory_per_bee_bytes: 2 << 30,
            target_cell_bytes: 64 << 20,
        },
        load: Load {
            idle_bees: 4,
            ..Load::default()
        },
        cache: Default::default(),
        attributes: [("seq".to_string(), seq.to_string())].into(),
        beat: None,
        requests: None,
        history: Vec::new(),
    }
}

/// A member of `h` for node `id` that has joined with its first heartbeat.
async fn joined(h: &dyn Harness, id: &str) -> Arc<dyn Membership> {
    let member = h.member(id).await;
    member
        .join(&heartbeat(id, 1, Lifecycle::Joining))
        .await
        .unwrap();
    member
}

fn state_of(view: &WorldView, id: &str) -> Option<NodeState> {
    view.node(&NodeId::new(id).unwrap()).map(|n| n.state)
}

fn seq_of(view: &WorldView, id: &str) -> Option<u64> {
    view.node(&NodeId::new(id).unwrap())
        .map(|n| n.heartbeat.seq)
}

/// Every view lists nodes sorted by id, once each.
fn assert_well_formed(view: &WorldView, rule: &str) {
    let ids: Vec<&str> = view.nodes.iter().map(|n| n.node_id.as_str()).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(
        ids, sorted,
        "{rule}: a view lists nodes sorted by id, once each"
    );
}

/// Refreshes `m` up to `polls` times, a poll interval apart, until `until` holds.
async fn refresh_until(
    h: &dyn Harness,
    m: &dyn Membership,
    polls: usize,
    until: impl Fn(&WorldView) -> bool,
) -> WorldView {
    let mut view = m.refresh().await.unwrap();
    for _ in 0..polls {
        if until(&view) {
            break;
        }
        h.advance(h.config().poll_interval).await;
        view = m.refresh().await.unwrap();
    }
    assert_well_formed(&view, "refresh");
    view
}

/// After another member joins or leaves, `probe` says the swarm may have changed until this
/// member refreshes.
pub async fn probe_sees_joins_and_leaves(h: &dyn Harness) {
    let a = joined(h, "probe-a").await;
    a.refresh().await.unwrap();
    let b = joined(h, "probe-b").await;
    assert!(
        a.probe().await.unwrap(),
        "after a join, probe answers true until the next refresh"
    );
    let view = a.refresh().await.unwrap();
    assert!(state_of(&view, "probe-b").is_some(), "{view:?}");
    b.leave().await.unwrap();
    assert!(
        a.probe().await.unwrap(),
        "after a leave, probe answers true until the next refresh"
    );
    let view = a.refresh().await.unwrap();
    assert_eq!(state_of(&view, "probe-b"), None, "{view:?}");
    a.leave().await.unwrap();
}

/// A node whose heartbeat promises a slow cadence (idle) is alive past the observer's dead
/// threshold, and dead past its own promise.
pub async fn each_node_is_judged_by_its_own_cadence(h: &dyn Harness) {
    let config = h.config();
    let a = joined(h, "cadence-a").await;
    let b = h.member("cadence-b").await;
    let idle = |seq| {
        let mut hb = heartbeat("cadence-b", seq, Lifecycle::Alive);
        hb.beat = Some(crate::heartbeat::Beat {
            active: false,
            interval_ms: config.dead_threshold.as_millis() as u64 * 2,
            dead_after_ms: config.dead_threshold.as_millis() as u64 * 3,
        });
        hb
    };
    b.join(&idle(1)).await.unwrap();
    refresh_until(h, a.as_ref(), 4, |v| {
        state_of(v, "cadence-b") == Some(NodeState::Alive)
    })
    .await;
    b.publish(&idle(2)).await.unwrap();
    let view = refresh_until(h, a.as_ref(), 4, |v| {
        v.node(&NodeId::new("cadence-b").unwrap())
            .is_some_and(|n| n.heartbeat.seq == 2)
    })
    .await;
    assert_eq!(seq_of(&view, "cadence-b"), Some(2), "{view:?}");
    // Past the observer's own threshold, within the node's promise: alive.
    h.advance(config.dead_threshold + config.poll_interval)
        .await;
    let view = a.refresh().await.unwrap();
    assert_eq!(
        state_of(&view, "cadence-b"),
        Some(NodeState::Alive),
        "a node is judged by the cadence its heartbeat promises: {view:?}"
    );
    // Past its promise: dead.
    h.advance(config.dead_threshold * 2).await;
    let view = a.refresh().await.unwrap();
    assert_eq!(
        state_of(&view, "cadence-b"),
        Some(NodeState::Dead),
        "a node silent past its own promise is dead: {view:?}"
    );
    b.leave().await.unwrap();
    a.leave().await.unwrap();
}

/// A member that joined is `alive` in its own view, carrying the heartbeat it published.
pub async fn joined_member_is_alive_in_its_own_view(h: &dyn Harness) {
    let a = joined(h, "own-a").await;
    let view = a.refresh().await.unwrap();
    assert_eq!(
        state_of(&view, "own-a"),
        Some(NodeState::Alive),
        "a member that joined is alive in its own view: {view:?}"
    );
    a.publish(&heartbeat("own-a", 2, Lifecycle::Alive))
        .await
        .unwrap();
    let view = a.refresh().await.unwrap();
    assert_eq!(
        seq_of(&view, "own-a"),
        Some(2),
        "its own entry is its newest heartbeat"
    );
    a.leave().await.unwrap();
}

/// Another member sees a node that joined on its next refresh (`joining` or `alive`, never
/// worse), `alive` once it published again, and its newest content within a few polls.
pub async fn others_see_a_joined_node(h: &dyn Harness) {
    let (a, b) = (joined(h, "see-a").await, joined(h, "see-b").await);
    let view = a.refresh().await.unwrap();
    assert!(
        matches!(
            state_of(&view, "see-b"),
            Some(NodeState::Joining | NodeState::Alive)
        ),
        "a node that joined is seen on the next refresh, joining or alive: {view:?}"
    );
    let interval = h.config().heartbeat_interval;
    for seq in 2..=3 {
        h.advance(interval).await;
        b.publish(&heartbeat("see-b", seq, Lifecycle::Alive))
            .await
            .unwrap();
        a.publish(&heartbeat("see-a", seq, Lifecycle::Alive))
            .await
            .unwrap();
    }
    let view = refresh_until(h, a.as_ref(), 6, |v| seq_of(v, "see-b") == Some(3)).await;
    assert_eq!(
        state_of(&view, "see-b"),
        Some(NodeState::Alive),
        "a node seen to publish again is alive: {view:?}"
    );
    assert_eq!(
        seq_of(&view, "see-b"),
        Some(3),
        "published content reaches other members within a few polls"
    );
    a.leave().await.unwrap();
    b.leave().await.unwrap();
}

/// A node that stops publishing (killed) turns `suspect` after half the dead threshold and
/// `dead` after it, in the view of a member that keeps publishing and refreshing; the
/// silent node's wall clock plays no part.
pub async fn a_silent_node_turns_suspect_then_dead(h: &dyn Harness) {
    let config = h.config();
    let (a, b) = (joined(h, "silent-a").await, joined(h, "silent-b").await);
    a.refresh().await.unwrap();
    h.advance(config.heartbeat_interval).await;
    b.publish(&heartbeat("silent-b", 2, Lifecycle::Alive))
        .await
        .unwrap();
    let view = refresh_until(h, a.as_ref(), 4, |v| {
        state_of(v, "silent-b") == Some(NodeState::Alive)
    })
    .await;
    assert_eq!(
        state_of(&view, "silent-b"),
        Some(NodeState::Alive),
        "{view:?}"
    );
    // b is killed: it publishes nothing more.
    let step = config.poll_interval;
    let mut elapsed = Duration::ZERO;
    let mut seen = Vec::new();
    let mut seq = 2;
    while elapsed <= config.dead_threshold + 2 * step {
        h.advance(step).await;
        elapsed += step;
        seq += 1;
        a.publish(&heartbeat("silent-a", seq, Lifecycle::Alive))
            .await
            .unwrap();
        let view = a.refresh().await.unwrap();
        assert_well_formed(&view, "refresh");
        let state = state_of(&view, "silent-b").expect("a dead node stays listed");
        if elapsed + step < config.dead_threshold / 2 {
            assert_eq!(
                state,
                NodeState::Alive,
                "alive before half the dead threshold"
            );
        }
        assert_eq!(state_of(&view, "silent-a"), Some(NodeState::Alive));
        seen.push(state);
    }
    assert!(
        seen.contains(&NodeState::Suspect),
        "suspect on the way: {seen:?}"
    );
    assert_eq!(
        seen.last(),
        Some(&NodeState::Dead),
        "dead after the threshold: {seen:?}"
    );
    a.leave().await.unwrap();
    b.leave().await.unwrap();
}

/// A heartbeat declaring `leaving` is seen as such; after `leave` the node is gone.
pub async fn leaving_is_seen_and_leave_removes(h: &dyn Harness) {
    let (a, b) = (joined(h, "leave-a").await, joined(h, "leave-b").await);
    a.refresh().await.unwrap();
    h.advance(h.config().heartbeat_interval).await;
    b.publish(&heartbeat("leave-b", 2, Lifecycle::Leaving))
        .await
        .unwrap();
    let view = refresh_until(h, a.as_ref(), 4, |v| {
        state_of(v, "leave-b") == Some(NodeState::Leaving)
    })
    .await;
    assert_eq!(
        state_of(&view, "leave-b"),
        Some(NodeState::Leaving),
        "a node declaring leaving is seen leaving: {view:?}"
    );
    b.leave().await.unwrap();
    let view = a.refresh().await.unwrap();
    assert_eq!(
        state_of(&view, "leave-b"),
        None,
        "a node that left is gone: {view:?}"
    );
    a.leave().await.unwrap();
}

/// A drain request from any member, joined or not, reaches its target's next refresh and
/// no one else's, and ends when the target leaves; a node without a heartbeat cannot be
/// asked.
pub async fn drain_reaches_only_its_target(h: &dyn Harness) {
    let (a, b) = (joined(h, "drain-a").await, joined(h, "drain-b").await);
    let operator = h.member("drain-operator").await;
    operator
        .request_drain(&NodeId::new("drain-b").unwrap(), "conformance")
        .await
        .unwrap();
    assert!(
        b.refresh().await.unwrap().drain_requested,
        "the target sees a drain request on its next refresh"
    );
    assert!(
        !a.refresh().await.unwrap().drain_requested,
        "a drain request is for its target only"
    );
    b.leave().await.unwrap();
    b.join(&heartbeat("drain-b", 3, Lifecycle::Joining))
        .await
        .unwrap();
    assert!(
        !b.refresh().await.unwrap().drain_requested,
        "a drain request ends when its target leaves"
    );
    let unknown = operator
        .request_drain(&NodeId::new("drain-nobody").unwrap(), "conformance")
        .await;
    assert!(
        matches!(unknown, Err(SwarmError::UnknownNode(_))),
        "asking a node without a heartbeat to drain is UnknownNode: {unknown:?}"
    );
    a.leave().await.unwrap();
    b.leave().await.unwrap();
}

/// A snapshot, from a member that never joined nor refreshed, lists every node with a
/// heartbeat; those publishing are `alive` at once, whatever their wall clocks say.
pub async fn snapshot_sees_publishing_nodes_alive(h: &dyn Harness) {
    let (a, b) = (joined(h, "snap-a").await, joined(h, "snap-b").await);
    b.publish(&heartbeat("snap-b", 2, Lifecycle::Alive))
        .await
        .unwrap();
    let observer = h.member("snap-observer").await;
    let view = observer.snapshot().await.unwrap();
    assert_well_formed(&view, "snapshot");
    for id in ["snap-a", "snap-b"] {
        assert_eq!(
            state_of(&view, id),
            Some(NodeState::Alive),
            "a snapshot sees a publishing node alive at once: {view:?}"
        );
    }
    assert_eq!(
        seq_of(&view, "snap-b"),
        Some(2),
        "with its newest heartbeat"
    );
    assert_eq!(
        state_of(&view, "snap-observer"),
        None,
        "an observer never joins"
    );
    a.leave().await.unwrap();
    b.leave().await.unwrap();
}

/// `world_view` is the last refresh's view.
pub async fn world_view_is_the_last_refresh(h: &dyn Harness) {
    let a = joined(h, "view-a").await;
    let refreshed = a.refresh().await.unwrap();
    assert_eq!(
        a.world_view(),
        refreshed,
        "world_view is the last refresh's view"
    );
    a.leave().await.unwrap();
}
