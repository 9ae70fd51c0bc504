//! The shuffle error type.

use apiary_storage::{ErrorKind, StorageError};

/// Any error kept as the source of another.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What can go wrong moving tasks and results.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShuffleError {
    /// A task, a result, a query id or a cell name is malformed; the message says which and
    /// why.
    #[error("{0}")]
    Invalid(String),

    /// The storage under the transport failed.
    #[error(transparent)]
    Storage(#[from] StorageError),

    /// The transport failed for another reason (an encoder, a connection); its error is kept
    /// as the source.
    #[error("{message}")]
    Failed {
        /// The failure on one line, with its context.
        message: String,
        /// What a caller can do about it.
        kind: ErrorKind,
        /// The original error.
        #[source]
        source: BoxError,
    },
}

impl ShuffleError {
    /// A [`ShuffleError::Failed`] keeping `source`.
    pub fn failed(
        message: impl Into<String>,
        kind: ErrorKind,
        source: impl Into<BoxError>,
    ) -> Self {
        ShuffleError::Failed {
            message: message.into(),
            kind,
            source: source.into(),
        }
    }

    /// What a caller can do about it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ShuffleError::Invalid(_) => ErrorKind::InvalidInput,
            ShuffleError::Storage(e) => e.kind(),
            ShuffleError::Failed { kind, .. } => *kind,
        }
    }
}

/// Result alias for the shuffle.
pub type Result<T, E = ShuffleError> = std::result::Result<T, E>;
