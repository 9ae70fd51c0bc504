//! Heartbeats that adapt to activity and the roster, on a manual clock: a node that went
//! idle is not taken for dead, a node that woke is read at once, a probe is one request,
//! and an idle node seen for the first time is judged by the cadence it promised.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use apiary_storage::{Clock as _, StorageUri};
use apiary_swarm::{Lifecycle, Membership, NodeId, NodeState, StorageHeartbeats, SystemClock};
use common::{SEC, Swarm, config, hb, hb_beating, state};

/// A node that went idle (a slower cadence, a longer deadline) is re-read before it would
/// be judged suspect on its older content, even with no content reads left in the budget:
/// it is not taken for dead at the active deadline.
#[tokio::test]
async fn a_node_gone_idle_is_reread_before_it_is_suspected() {
    let swarm = Swarm::new(&StorageUri::Memory);
    let a = swarm.without_content_reads("a");
    let (b, _) = swarm.member("b");
    let (ida, idb) = (NodeId::new("a").unwrap(), NodeId::new("b").unwrap());
    a.join(&hb(&ida, 1, Lifecycle::Alive, 0)).await.unwrap();
    b.join(&hb_beating(&idb, 1, true)).await.unwrap();
    a.refresh().await.unwrap();
    // A change that takes the one read the budget starts with.
    swarm.clock.advance(5 * SEC);
    b.publish(&hb_beating(&idb, 2, true)).await.unwrap();
    a.refresh().await.unwrap();
    b.publish(&hb_beating(&idb, 3, false)).await.unwrap();
    // 40 s without a change after going idle: past the active deadline (30 s).
    for _ in 0..8 {
        swarm.clock.advance(5 * SEC);
        a.publish(&hb(&ida, 1, Lifecycle::Alive, 0)).await.unwrap();
        let v = a.refresh().await.unwrap();
        assert_eq!(state(&v, "b"), Some(NodeState::Alive), "{v:?}");
    }
}

/// An idle node beating once a minute is alive between its beats, in a peer's view and in
/// its own: suspect means a beat is late, not that half its deadline passed.
#[tokio::test]
async fn an_idle_node_is_alive_between_its_beats() {
    let swarm = Swarm::new(&StorageUri::Memory);
    let (a, _) = swarm.member("a");
    let (b, _) = swarm.member("b");
    let (ida, idb) = (NodeId::new("a").unwrap(), NodeId::new("b").unwrap());
    a.join(&hb_beating(&ida, 1, false)).await.unwrap();
    b.join(&hb_beating(&idb, 1, false)).await.unwrap();
    let beat = common::config().beat(false);
    let interval = std::time::Duration::from_millis(beat.interval_ms);
    for seq in 2..5 {
        // A second before each beat is due.
        swarm.clock.advance(interval - SEC);
        for (who, member) in [("b", &b), ("a", &a)] {
            let v = member.refresh().await.unwrap();
            // (`joining` until b has seen a's heartbeat change once.)
            let s = state(&v, "a");
            assert!(
                matches!(s, Some(NodeState::Alive | NodeState::Joining)),
                "{who}'s view: {s:?} in {v:?}"
            );
        }
        swarm.clock.advance(SEC);
        a.publish(&hb_beating(&ida, seq, false)).await.unwrap();
        b.publish(&hb_beating(&idb, seq, false)).await.unwrap();
    }
    // A beat missed: suspect once it is late by half the grace left, then dead.
    let grace = std::time::Duration::from_millis(beat.dead_after_ms) - interval;
    b.refresh().await.unwrap(); // b sees a's last beat when it lands
    swarm.clock.advance(interval + grace / 4);
    assert_eq!(
        state(&b.refresh().await.unwrap(), "a"),
        Some(NodeState::Alive)
    );
    swarm.clock.advance(grace / 2);
    assert_eq!(
        state(&b.refresh().await.unwrap(), "a"),
        Some(NodeState::Suspect)
    );
    swarm.clock.advance(grace / 2);
    assert_eq!(
        state(&b.refresh().await.unwrap(), "a"),
        Some(NodeState::Dead)
    );
}

/// Idle members `a` (no content reads in its budget) and `b`, both joined and listed by
/// `a`, which spent the one read its budget starts with on `b`'s second heartbeat (not
/// listed yet).
async fn idle_pair_with_no_reads_left(
    swarm: &Swarm,
) -> (StorageHeartbeats, StorageHeartbeats, NodeId, NodeId) {
    let a = swarm.without_content_reads("a");
    let (b, _) = swarm.member("b");
    let (ida, idb) = (NodeId::new("a").unwrap(), NodeId::new("b").unwrap());
    a.join(&hb_beating(&ida, 1, false)).await.unwrap();
    b.join(&hb_beating(&idb, 1, false)).await.unwrap();
    a.refresh().await.unwrap();
    b.publish(&hb_beating(&idb, 2, false)).await.unwrap();
    (a, b, ida, idb)
}

/// A node that wakes is read at the listing its roster entry causes, even with no content
/// reads left in the budget: the observer learns the swarm is active.
#[tokio::test]
async fn a_woken_node_is_read_at_the_next_listing() {
    let swarm = Swarm::new(&StorageUri::Memory);
    let (a, b, _, idb) = idle_pair_with_no_reads_left(&swarm).await;
    let view = a.refresh().await.unwrap();
    assert!(!view.is_active(), "{view:?}");
    assert!(!a.probe().await.unwrap());
    b.publish(&hb_beating(&idb, 3, true)).await.unwrap();
    assert!(a.probe().await.unwrap(), "the wake is in the roster");
    let view = a.refresh().await.unwrap();
    assert!(
        view.is_active(),
        "the woken node's heartbeat was read: {view:?}"
    );
}

/// A probe costs one request and says whether a join or leave was recorded since the last
/// listing.
#[tokio::test]
async fn the_roster_probe_is_one_request() {
    let swarm = Swarm::new(&StorageUri::Memory);
    let (a, counts) = swarm.member("a");
    let (b, _) = swarm.member("b");
    a.join(&hb(&NodeId::new("a").unwrap(), 1, Lifecycle::Alive, 0))
        .await
        .unwrap();
    a.refresh().await.unwrap();
    let before = counts.snapshot();
    assert!(!a.probe().await.unwrap(), "nothing changed");
    assert_eq!((counts.snapshot() - before).total(), 1);
    b.join(&hb(&NodeId::new("b").unwrap(), 1, Lifecycle::Alive, 0))
        .await
        .unwrap();
    assert!(a.probe().await.unwrap(), "b joined");
    a.refresh().await.unwrap();
    assert!(!a.probe().await.unwrap(), "seen");
    b.leave().await.unwrap();
    assert!(a.probe().await.unwrap(), "b left");
}

/// A drain request reaches an idle node at its next probe, not at its next idle listing
/// (five minutes at the defaults): the request is recorded in the roster. A process that
/// never read the roster (the `apiary drain` command) records it after the newest
/// generation, however far the roster has gone.
#[tokio::test]
async fn a_drain_request_reaches_an_idle_node_at_its_next_probe() {
    let swarm = Swarm::new(&StorageUri::Memory);
    let (b, _) = swarm.member("b");
    let idb = NodeId::new("b").unwrap();
    b.join(&hb_beating(&idb, 1, false)).await.unwrap();
    // More changes than a writer starting from nothing would try to pass.
    for i in 0..40 {
        let (m, _) = swarm.member(&format!("m{i}"));
        let id = NodeId::new(&format!("m{i}")).unwrap();
        m.join(&hb_beating(&id, 1, false)).await.unwrap();
    }
    assert!(!b.refresh().await.unwrap().drain_requested);
    assert!(!b.probe().await.unwrap(), "nothing changed");

    let (ops, _) = swarm.member("ops");
    ops.request_drain(&idb, "ops@laptop").await.unwrap();
    assert!(
        b.probe().await.unwrap(),
        "the drain request is in the roster"
    );
    assert!(b.refresh().await.unwrap().drain_requested);
}

/// A member whose own change lands after generations other members took meanwhile still
/// reads theirs: a woken peer's heartbeat is read even with no content reads in the
/// budget.
#[tokio::test]
async fn changes_passed_over_by_an_announcement_are_still_read() {
    let swarm = Swarm::new(&StorageUri::Memory);
    let (a, b, ida, idb) = idle_pair_with_no_reads_left(&swarm).await;
    a.refresh().await.unwrap();
    // b wakes, then a wakes: a's announcement takes the generation after b's.
    b.publish(&hb_beating(&idb, 3, true)).await.unwrap();
    a.publish(&hb_beating(&ida, 2, true)).await.unwrap();
    assert!(a.probe().await.unwrap(), "b's wake is unread");
    let view = a.refresh().await.unwrap();
    let seen = view.node(&idb).unwrap();
    assert_eq!(
        seen.heartbeat.seq, 3,
        "b's new heartbeat was read: {view:?}"
    );
}

/// The real time since the epoch (a file's stamp is on the store's real clock).
fn wall_now() -> Duration {
    Duration::from_millis(u64::try_from(SystemClock::new().wall_ms()).unwrap())
}

/// A swarm in a local folder where node `b` beats at the idle cadence (once a minute; with
/// [`config`], suspect 72.5 s and dead 85 s after its last beat) and its heartbeat was last
/// written `ago` by the store's clock (the file's modification time).
async fn idle_b_written(ago: Duration) -> (tempfile::TempDir, Swarm) {
    let dir = tempfile::tempdir().unwrap();
    let swarm = Swarm::new(&StorageUri::Local(dir.path().join("s")));
    let (b, _) = swarm.member("b");
    let idb = NodeId::new("b").unwrap();
    b.join(&hb_beating(&idb, 1, false)).await.unwrap();
    let file = dir.path().join("s").join(idb.heartbeat_key().as_str());
    std::fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(SystemTime::UNIX_EPOCH + wall_now() - ago)
        .unwrap();
    (dir, swarm)
}

/// The one-shot snapshot (what `apiary sql` and `apiary shell` coordinate from) judges an
/// idle node by the cadence its heartbeat promises, not by the active deadline: a node
/// that beat 40 s ago at the idle cadence is alive, one whose beat is late is suspect, one
/// past its promise is dead. (Margins of seconds on each side: ages come from the store's
/// real clock.)
#[tokio::test]
async fn a_snapshot_judges_an_idle_node_by_its_promise() {
    let look = |swarm: &Swarm| {
        let observer = StorageHeartbeats::observer(
            Arc::clone(&swarm.backend),
            Arc::new(SystemClock::new()),
            config(),
        );
        async move { observer.snapshot().await.unwrap() }
    };
    for (ago, expected) in [
        (40, NodeState::Alive),
        (78, NodeState::Suspect),
        (100, NodeState::Dead),
    ] {
        let (_dir, swarm) = idle_b_written(Duration::from_secs(ago)).await;
        let v = look(&swarm).await;
        assert_eq!(state(&v, "b"), Some(expected), "written {ago} s ago: {v:?}");
    }
}

/// A node that sees an idle peer for the first time ages its heartbeat on the store's clock
/// (from its own heartbeat in the same listing) and judges it by the cadence it promises:
/// a peer that beat 40 s ago at the idle cadence is alive at once, not `joining` until its
/// next beat a minute later (which would leave a coordinator that just started without
/// workers for that minute).
#[tokio::test]
async fn an_idle_peer_is_alive_at_first_sight() {
    for (ago, expected) in [(40, NodeState::Alive), (100, NodeState::Dead)] {
        let (_dir, swarm) = idle_b_written(Duration::from_secs(ago)).await;
        let (a, _) = swarm.member("a");
        let ida = NodeId::new("a").unwrap();
        a.join(&hb(&ida, 1, Lifecycle::Joining, 0)).await.unwrap();
        let v = a.refresh().await.unwrap();
        assert_eq!(state(&v, "b"), Some(expected), "written {ago} s ago: {v:?}");
        assert_eq!(state(&v, "a"), Some(NodeState::Alive));
    }
}
