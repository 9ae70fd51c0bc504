//! The swarm error type.

use apiary_storage::{ErrorKind, StorageError};

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
    #[error("node identity: {message}: {source}")]
    Identity {
        /// What could not be done, and where.
        message: String,
        /// The file system's error.
        #[source]
        source: std::io::Error,
    },
    /// The node id kept in the state folder is damaged.
    #[error("node identity: {path} holds an invalid node id ({reason}); fix or delete it")]
    BadIdentityFile {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Another process holds this node id from the same state folder.
    #[error(
        "node id `{node_id}` is in use by another process with the state folder {state_dir}; \
         give each node its own state folder (`--state-dir`, `APIARY_STATE_DIR`, or \
         `state_dir=` in Python) or node id (`--node-id`, `APIARY_NODE_ID`, `node_id=`)"
    )]
    IdentityInUse {
        /// The node id.
        node_id: String,
        /// The state folder.
        state_dir: String,
    },
    /// No such node in the swarm.
    #[error("no node `{0}` in the swarm")]
    UnknownNode(String),
    /// The storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl SwarmError {
    /// What a caller can do about it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            SwarmError::InvalidNodeId { .. } => ErrorKind::InvalidInput,
            SwarmError::BadHeartbeat { .. } => ErrorKind::Corrupt,
            SwarmError::Identity { .. } => ErrorKind::Unavailable,
            SwarmError::BadIdentityFile { .. } => ErrorKind::Corrupt,
            SwarmError::IdentityInUse { .. } => ErrorKind::Conflict,
            SwarmError::UnknownNode(_) => ErrorKind::NotFound,
            SwarmError::Storage(e) => e.kind(),
        }
    }
}

/// Result alias for swarm operations.
pub type Result<T, E = SwarmError> = std::result::Result<T, E>;
