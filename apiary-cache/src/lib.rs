//! Apiary's local cell cache.
//!
//! Cells are immutable and uniquely named, so a node can keep any cell it read on its own
//! disk and serve it again without asking storage: there is nothing to invalidate.
//!
//! * [`CellCache`]: the cells on disk, their in-memory index (recency and frequency aware,
//!   weighted by bytes, within a budget), recovery at start, checksums on every read,
//!   single-flight fetching, one locked directory per node. See [`disk`] for the layout.
//! * [`CachingStore`]: an `object_store` wrapper that serves cells through a cache
//!   (ranged reads included: Parquet footers and column chunks) and passes everything else
//!   through. DataFusion reads frames through it.
//!
//! * [`ColumnTier`]: the memory tier above the disk: decoded Arrow columns of hot cells,
//!   admitted on their second read, within a share of the node's memory that yields to
//!   the queries' memory pools.
//!
//! Why an index over plain files rather than a hybrid cache crate such as `foyer`: a Parquet
//! reader asks for byte ranges of a cell, and a plain file answers a range with one
//! positioned read; caches that store values whole would read whole cells for a footer.
//! Eviction is not hand-written: the index is [`quick_cache`]'s.

mod columns;
mod digests;
pub mod disk;
mod error;
mod store;

pub use columns::{
    Admission, AdmissionTicket, AdmissionWait, ColumnChunks, ColumnKey, ColumnTier, MemoryCount,
    TierCounts,
};
pub use digests::CellDigests;
pub use disk::{
    BLOCK_BYTES, CacheConfig, CacheCounts, CachedCell, CellCache, MIN_DEFAULT_CAPACITY,
};
pub use error::{CacheError, Result};
pub use store::{CachingStore, ScanCounters, is_cell_key};
