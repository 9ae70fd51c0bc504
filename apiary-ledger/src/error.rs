//! The ledger error type.

use apiary_storage::{ErrorKind, StorageError};

/// What can go wrong with the registry or a frame ledger.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    /// A hive, box or frame name breaks the naming rule.
    #[error(
        "invalid {kind} name {name:?}: {reason}; a name is {}",
        crate::names::NAME_RULE
    )]
    InvalidName {
        /// What was being named (`hive`, `box`, `frame`).
        kind: &'static str,
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The hive, box or frame does not exist.
    #[error("{what} does not exist")]
    NotFound {
        /// What was looked up, e.g. "frame `a.b.c`".
        what: String,
    },

    /// It exists already with a different definition.
    #[error("{what} already exists with a different definition: {detail}")]
    AlreadyExists {
        /// What was being created.
        what: String,
        /// How the definitions differ.
        detail: String,
    },

    /// A request that is invalid on its face (bad schema, unknown partition column, …).
    #[error("{0}")]
    Invalid(String),

    /// A concurrent change made the operation impossible; nothing was committed.
    #[error("conflict on {what}: {detail}")]
    Conflict {
        /// The object of contention.
        what: String,
        /// What changed underneath.
        detail: String,
    },

    /// The operation ran past its deadline and was abandoned; nothing was committed.
    #[error("{what} was abandoned: {detail}")]
    Expired {
        /// What ran out of time.
        what: String,
        /// How late it was and what to do.
        detail: String,
    },

    /// Too many writers raced for the same ledger; nothing was committed.
    #[error(
        "gave up committing to {what} after {attempts} attempts lost to concurrent writers; retry later"
    )]
    Contention {
        /// The ledger.
        what: String,
        /// Attempts made.
        attempts: u32,
    },

    /// A past version was asked for whose cells vacuum may have deleted.
    #[error(
        "version {version} of frame `{frame}` is past vacuum's retention: oldest retained \
         version {oldest} (retention {retention}); read a later version"
    )]
    NotRetained {
        /// `hive.box.frame`.
        frame: String,
        /// The version asked for.
        version: u64,
        /// The oldest version whose cells are all kept.
        oldest: u64,
        /// The retention of the vacuum that ran with the latest horizon, as text (`1h`).
        retention: String,
    },

    /// A stored ledger, checkpoint or registry object is damaged or of an unknown format.
    #[error("corrupt object `{key}`: {reason}")]
    Corrupt {
        /// The object's key.
        key: String,
        /// What is wrong.
        reason: String,
    },

    /// The storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl LedgerError {
    /// What a caller can do about it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            LedgerError::InvalidName { .. } | LedgerError::Invalid(_) => ErrorKind::InvalidInput,
            LedgerError::NotFound { .. } | LedgerError::NotRetained { .. } => ErrorKind::NotFound,
            LedgerError::AlreadyExists { .. }
            | LedgerError::Conflict { .. }
            | LedgerError::Contention { .. } => ErrorKind::Conflict,
            LedgerError::Expired { .. } => ErrorKind::Unavailable,
            LedgerError::Corrupt { .. } => ErrorKind::Corrupt,
            LedgerError::Storage(e) => e.kind(),
        }
    }
}

/// Result alias for ledger operations.
pub type Result<T, E = LedgerError> = std::result::Result<T, E>;
