//! The [`Membership`] seam: how a node joins, publishes, leaves and learns the swarm.
//!
//! The default is [`StorageHeartbeats`](crate::StorageHeartbeats): heartbeat files in the
//! shared storage. Gossip or a service registry can be plugged in behind the same trait
//! (`ApiaryBuilder::membership` in `apiary-node` takes a factory of them).
//!
//! # Contract
//!
//! One `Membership` value is one process's membership: a node that joins, or an observer
//! (a command, a coordinator that is not a node) that only reads and asks nodes to drain.
//! [`conformance`](crate::conformance) checks every rule below; run it on any
//! implementation (`conformance::run_all`).
//!
//! **Views.** A [`WorldView`] lists every node with a heartbeat, sorted by id, once each,
//! with the newest heartbeat content the member holds. States:
//! * `alive`: publishing. A member that has joined is `alive` in its own view (its own
//!   entry is always included, with the heartbeat it published last) until it declares
//!   `leaving`.
//! * `joining`: seen but not yet known to publish steadily. Another member sees a node that
//!   joined on its next refresh, `joining` or `alive` (never `dead`), and `alive` once the
//!   node has published again and it has refreshed again.
//! * `suspect` after half the dead threshold without a publish seen, `dead` after the dead
//!   threshold ([`SwarmConfig::dead_threshold`](crate::SwarmConfig)), judged on the
//!   member's own monotonic clock or the store's clock: **never** by comparing another
//!   node's wall clock (`written_at_ms`) with this one's.
//! * `leaving`: the node published a heartbeat declaring
//!   [`Lifecycle::Leaving`](crate::Lifecycle::Leaving); others see it on their next
//!   refresh. After [`Membership::leave`] the node is gone from others' next refresh.
//!
//! **Freshness of content.** Load, cache and attributes in a peer's heartbeat may lag (the
//! storage default re-reads contents within a request budget), but a heartbeat that changes
//! state is seen within a refresh, and any published content within a few polls.
//!
//! **Drain.** [`request_drain`](Membership::request_drain) from any member, joined or not,
//! makes `drain_requested` true in the *target's* next refreshed view, and in no other
//! member's. The request ends when the target leaves. Asking to drain a node without a
//! heartbeat fails with [`SwarmError::UnknownNode`](crate::SwarmError).
//!
//! **Snapshot.** [`snapshot`](Membership::snapshot) answers a process that has not watched
//! the swarm: every node with a heartbeat, nodes that publish within the thresholds
//! `alive` at once (no `joining` wait), aged without any node's clock.
//!
//! **Probe.** After another member joins or leaves, [`probe`](Membership::probe) answers
//! `true` until this member refreshes.
//!
//! **Cadence.** A heartbeat may carry a [`Beat`](crate::Beat): a node's own promise of its
//! interval and of when to judge it dead. Members judge each node by its promise (an idle
//! node beats rarely and promises a longer deadline), and a node without one by their own
//! dead threshold.
//!
//! **No I/O in [`world_view`](Membership::world_view):** it returns the last refresh's view.
//!
//! Coordinators place work from these views: capacity (bees, memory), load (idle bees,
//! temperature, queue depth) and cache summaries come from the heartbeats a view carries,
//! so a membership must carry the published heartbeat whole.
//!

use async_trait::async_trait;

use crate::error::Result;
use crate::heartbeat::{Heartbeat, NodeId};
use crate::view::WorldView;

/// Membership of one node in a swarm, keeping the [contract](crate::membership#contract)
/// that `conformance` checks.
///
/// # Plugging one in
///
/// ```
/// use apiary_swarm::{Heartbeat, Membership, NodeId, Result, WorldView};
///
/// /// A membership that knows only itself: a swarm of one (a laptop, a test).
/// #[derive(Debug, Default)]
/// struct Alone {
///     me: std::sync::Mutex<Option<Heartbeat>>,
///     drain: std::sync::atomic::AtomicBool,
/// }
///
/// #[async_trait::async_trait]
/// impl Membership for Alone {
///     async fn join(&self, heartbeat: &Heartbeat) -> Result<()> {
///         self.publish(heartbeat).await
///     }
///     async fn publish(&self, heartbeat: &Heartbeat) -> Result<()> {
///         *self.me.lock().unwrap() = Some(heartbeat.clone());
///         Ok(())
///     }
///     async fn leave(&self) -> Result<()> {
///         *self.me.lock().unwrap() = None;
///         self.drain.store(false, std::sync::atomic::Ordering::Relaxed);
///         Ok(())
///     }
///     async fn refresh(&self) -> Result<WorldView> {
///         Ok(self.world_view())
///     }
///     fn world_view(&self) -> WorldView {
///         let me = self.me.lock().unwrap();
///         let nodes = me.iter().map(|hb| apiary_swarm::NodeView {
///             node_id: hb.node_id.clone(),
///             state: match hb.state {
///                 apiary_swarm::Lifecycle::Leaving => apiary_swarm::NodeState::Leaving,
///                 _ => apiary_swarm::NodeState::Alive,
///             },
///             last_seen: std::time::Duration::ZERO,
///             heartbeat: hb.clone(),
///         });
///         let drain_requested = self.drain.load(std::sync::atomic::Ordering::Relaxed);
///         WorldView { nodes: nodes.collect(), drain_requested, ..WorldView::default() }
///     }
///     async fn request_drain(&self, node: &NodeId, _by: &str) -> Result<()> {
///         match &*self.me.lock().unwrap() {
///             Some(hb) if hb.node_id == *node => {
///                 self.drain.store(true, std::sync::atomic::Ordering::Relaxed);
///                 Ok(())
///             }
///             _ => Err(apiary_swarm::SwarmError::UnknownNode(node.to_string())),
///         }
///     }
///     async fn snapshot(&self) -> Result<WorldView> {
///         Ok(self.world_view())
///     }
/// }
/// ```
#[async_trait]
pub trait Membership: Send + Sync + std::fmt::Debug + 'static {
    /// Makes this node known: publishes its first heartbeat. Returns once it is durable.
    async fn join(&self, heartbeat: &Heartbeat) -> Result<()>;

    /// Publishes this node's newest heartbeat (load, state).
    async fn publish(&self, heartbeat: &Heartbeat) -> Result<()>;

    /// Removes this node from the swarm (and any request that it leave).
    async fn leave(&self) -> Result<()>;

    /// Reads the swarm now and returns the updated world view.
    async fn refresh(&self) -> Result<WorldView>;

    /// Whether the swarm may have changed (a node joined, left or woke) since the last
    /// refresh: a cheap check an idle member makes every poll instead of a refresh. `false`
    /// promises only that no join, leave or wake was recorded; heartbeats may still have
    /// been rewritten. The default, for memberships with no cheaper check, is `true`.
    async fn probe(&self) -> Result<bool> {
        Ok(true)
    }

    /// The world view as of the last refresh (no I/O).
    fn world_view(&self) -> WorldView;

    /// Asks `node` to drain and leave; it sees the request on its next refresh.
    async fn request_drain(&self, node: &NodeId, requested_by: &str) -> Result<()>;

    /// A one-shot reading of the swarm, for a process that has not watched it change (a
    /// process that is not a node, a command run once). It must not judge liveness by
    /// comparing another node's clock with this one's; the storage implementation ages
    /// heartbeats on the store's own clock.
    async fn snapshot(&self) -> Result<WorldView>;
}
