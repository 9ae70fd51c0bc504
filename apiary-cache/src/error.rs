//! The cache error type.

use apiary_storage::ErrorKind;

/// What can go wrong with the cell cache.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    /// The cache directory could not be created, read or written.
    #[error("cell cache: {what}: {source}")]
    Io {
        /// What was being done, and where.
        what: String,
        /// The file system's error.
        #[source]
        source: std::io::Error,
    },
    /// Another process uses this cache directory.
    #[error(
        "cell cache {dir} is in use by another process; give each node its own cache \
         directory (--cache-dir) or node id"
    )]
    InUse {
        /// The directory.
        dir: String,
    },
    /// A cached file failed its checksum or could not be read; it is dropped and fetched
    /// again.
    #[error("cached cell `{key}` is damaged: {reason}")]
    Damaged {
        /// The cell's storage key.
        key: String,
        /// What was wrong.
        reason: String,
    },
    /// A cell fetched from storage does not match the checksum its ledger entry records,
    /// twice in a row: the stored object is damaged.
    #[error(
        "cell `{key}` in storage is damaged: its {size} bytes do not match the checksum its \
         ledger entry records (CRC-32C {expected:08x}, read {actual:08x}, twice). Nothing was \
         answered from it. Restore the object from a backup or replica (bit rot, a truncated \
         copy, or a tool that rewrote it)"
    )]
    Corrupt {
        /// The cell's storage key.
        key: String,
        /// The checksum recorded when it was written.
        expected: u32,
        /// The checksum of what storage returned.
        actual: u32,
        /// Bytes storage returned.
        size: u64,
    },
    /// A read asked for bytes outside the cell.
    #[error("range {range:?} is outside cell `{key}` of {size} bytes")]
    Range {
        /// The cell's storage key.
        key: String,
        /// The range asked for.
        range: std::ops::Range<u64>,
        /// The cell's size.
        size: u64,
    },
    /// Fetching the cell from storage failed.
    #[error("fetching `{key}` for the cache failed: {source}")]
    Fetch {
        /// The cell's storage key.
        key: String,
        /// The storage's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The cache could not be set up as asked.
    #[error("cell cache: {0}")]
    Config(String),
}

impl CacheError {
    /// What a caller can do about it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            CacheError::Io { .. } | CacheError::Fetch { .. } => ErrorKind::Unavailable,
            CacheError::InUse { .. } => ErrorKind::Conflict,
            CacheError::Damaged { .. } | CacheError::Corrupt { .. } => ErrorKind::Corrupt,
            CacheError::Range { .. } | CacheError::Config(_) => ErrorKind::InvalidInput,
        }
    }
}

/// Result alias for the cache.
pub type Result<T, E = CacheError> = std::result::Result<T, E>;
