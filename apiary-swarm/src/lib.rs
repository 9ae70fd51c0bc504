//! Swarm membership for Apiary: nodes find each other only through the shared storage.
//!
//! * [`Membership`]: the seam (join, publish, leave, refresh the world view, drain).
//! * [`StorageHeartbeats`]: the default, heartbeat files under `_heartbeats/`; its request
//!   budget is documented in [`storage`].
//! * [`Observer`]: the pure state machine that turns observations into a [`WorldView`]
//!   (joining, alive, suspect, dead, leaving), judged on the observer's own monotonic clock.
//! * [`SwarmAgent`]: a running node's heartbeat and refresh loops and its graceful leave.
//! * [`simulation`]: request counts of a simulated swarm on a simulated clock.
//! * `conformance` (feature `testing`): the suite every [`Membership`] passes.

mod agent;
mod clock;
mod colony;
#[cfg(feature = "testing")]
pub mod conformance;
pub mod discovery;
mod error;
mod heartbeat;
pub mod history;
mod identity;
mod load;
pub mod membership;
mod requests;
#[cfg(feature = "testing")]
pub mod simulation;
pub mod storage;
mod view;

pub use agent::{AbandonedReport, AgentConfig, CacheReport, RequestsReport, SwarmAgent, ViewHook};
pub use clock::{Clock, ManualClock, SystemClock, Ticker};
pub use colony::{Colony, ColonyConfig, Overloaded, Regulation, Signals};
pub use discovery::Discovery;
pub use error::{Result, SwarmError};
pub use heartbeat::{
    Beat, CacheSummary, Capacity, DrainRequest, HEARTBEAT_DIR, HEARTBEAT_FORMAT, Heartbeat,
    HeartbeatKey, Lifecycle, Load, MAX_ATTRIBUTES, MAX_DEAD_AFTER, MAX_HEARTBEAT_BYTES,
    MAX_HOT_CELLS, NodeId, check_attributes,
};
pub use identity::{NodeIdentity, default_state_dir};
pub use load::{Bee, BeeState, Bees, Leaving, MemoryProbe, detect_capacity, machine_memory};
pub use membership::Membership;
pub use requests::{REQUEST_WINDOW, RequestMeter, RequestRate};
pub use storage::StorageHeartbeats;
pub use view::{Listed, NodeState, NodeView, Observer, SwarmConfig, Token, WorldView};
