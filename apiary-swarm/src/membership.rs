//! The [`Membership`] seam: how a node joins, publishes, leaves and learns the swarm.
//!
//! The default is [`StorageHeartbeats`](crate::StorageHeartbeats): heartbeat files in the
//! shared storage. Gossip or a service registry can be plugged in behind the same trait.

use async_trait::async_trait;

use crate::error::Result;
use crate::heartbeat::{Heartbeat, NodeId};
use crate::view::WorldView;

/// Membership of one node in a swarm.
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
