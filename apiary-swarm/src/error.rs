//! The swarm error type.

use apiary_storage::StorageError;

/// What can go wrong with membership.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SwarmError {
    /// A node id breaks the rule.
    #[error(
        "invalid node id {id:?}: {reason}; a node id is 1 to 64 lowercase letters, digits, `-` or `_`, starting with a letter or digit"
    )]
    InvalidNodeId {
        /// The id as given.
        id: String,
        /// What is wrong.
        reason: String,
    },
    /// A heartbeat or drain request object is damaged or foreign.
    #[error("bad heartbeat object `{key}`: {reason}")]
    BadHeartbeat {
        /// Its key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// The local node identity could not be read or kept.
    #[error("node identity: {0}")]
    Identity(String),
    /// No such node in the swarm.
    #[error("no node `{0}` in the swarm")]
    UnknownNode(String),
    /// The storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Result alias for swarm operations.
pub type Result<T, E = SwarmError> = std::result::Result<T, E>;
