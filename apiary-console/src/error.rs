//! The console's error type.

use apiary_storage::{ErrorKind, StorageError};

/// What went wrong with a console operation.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// The request is wrong (a bad scope, id or expiry); the message says how.
    #[error("{0}")]
    InvalidInput(String),
    /// The token (or node) named does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A bug.
    #[error("{0}")]
    Internal(String),
}

impl ConsoleError {
    /// What a caller can do about it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ConsoleError::InvalidInput(_) => ErrorKind::InvalidInput,
            ConsoleError::NotFound(_) => ErrorKind::NotFound,
            ConsoleError::Storage(e) => e.kind(),
            ConsoleError::Internal(_) => ErrorKind::Internal,
        }
    }
}

/// The console's result type.
pub type Result<T> = std::result::Result<T, ConsoleError>;
