//! [`ApiaryError`]: what the [`Apiary`](crate::Apiary) API returns, classified by
//! [`ErrorKind`].

use apiary_ledger::LedgerError;
use apiary_storage::{ErrorKind, StorageError};
use apiary_swarm::SwarmError;

/// Errors from the [`Apiary`](crate::Apiary) API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiaryError {
    /// Registry or ledger failure (names, definitions, conflicts, corruption).
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// Storage failure (URI, preflight, requests).
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Swarm membership failure (node id, identity, heartbeats).
    #[error(transparent)]
    Swarm(#[from] SwarmError),
    /// A SQL statement failed (syntax, unknown names, refused statements, execution).
    #[error(transparent)]
    Query(#[from] apiary_query::QueryError),
    /// The node's cell cache could not be opened or used.
    #[error(transparent)]
    Cache(#[from] apiary_cache::CacheError),
    /// A node's local directory (state, scratch) could not be prepared.
    #[error("{what}: {source}")]
    LocalDisk {
        /// What could not be done, and where.
        what: String,
        /// The file system's error.
        #[source]
        source: std::io::Error,
    },
    /// One is running already, or the call cannot be made in this state.
    #[error("{0}")]
    Lifecycle(&'static str),
    /// The call needs a running node: call `Apiary::start` first.
    #[error("{0} needs a running node: call start() first (or run `apiary node`)")]
    NotStarted(&'static str),
    /// A setting (an `APIARY_*` variable) has a value that cannot be used.
    #[error("{name}=`{value}`: {message}")]
    Setting {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it, and what a good value looks like.
        message: String,
    },
}

impl ApiaryError {
    /// What a caller can do about it: the same few kinds whatever part failed. Sources are
    /// kept: [`std::error::Error::source`] walks down to the storage's or DataFusion's own
    /// error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ApiaryError::Ledger(e) => e.kind(),
            ApiaryError::Storage(e) => e.kind(),
            ApiaryError::Swarm(e) => e.kind(),
            ApiaryError::Query(e) => e.kind(),
            ApiaryError::Cache(e) => e.kind(),
            ApiaryError::LocalDisk { .. } => ErrorKind::Unavailable,
            ApiaryError::Lifecycle(_) => ErrorKind::Conflict,
            ApiaryError::NotStarted(_) => ErrorKind::Closed,
            ApiaryError::Setting { .. } => ErrorKind::InvalidInput,
        }
    }
}
