//! Apiary's SQL engine: DataFusion over hives, boxes and frames.
//!
//! * [`QueryEngine`] prepares DataFusion once per node: the catalog ([`catalog`]: hive →
//!   catalog, box → schema, frame → table), the node's object store (and nothing else:
//!   queries cannot reach the node's files), functions and settings.
//! * [`SqlSession`] is one client's session: `USE` and `SET` last as long as it does.
//! * A frame scan ([`FrameTable`]) reads the cells of one ledger version with DataFusion's
//!   Parquet source, after pruning cells with the ledger's partition values and exact column
//!   statistics; [`FrameScanExec`] reports cells total, pruned and read in `EXPLAIN`. Cells
//!   whose columns the node's memory tier holds are read from memory by a
//!   [`MemoryTierExec`] beside it (see the `tier` module).
//! * Layers, each importing only those below it: the **scan** (`table`, `exec`, `tier`,
//!   `parts`, `stats`, `scans`: a frame as DataFusion reads it; it reads shared cells
//!   through its own `SharedCells` trait), the **engine** (`session`, `statement`,
//!   `catalog`, `memory`, `output`, `fragments`, `travel`: sessions and statements; it hands queries
//!   to the swarm through its own [`Distributor`] trait) and **distribution**
//!   ([`distributed`]: planning, the coordinator, tasks, claims; it implements both
//!   traits). The shuffle seam itself is the `apiary-shuffle` crate.
//! * Statements: read-only SQL (queries, `EXPLAIN [ANALYZE]`, `SET datafusion.…`),
//!   `SHOW HIVES`, `SHOW BOXES [IN hive]`, `SHOW FRAMES [IN hive[.box]]`, `USE hive[.box]`,
//!   `DESCRIBE frame`. DDL, DML and file access are refused with the API call to use instead.
//! * Time travel: `FROM f VERSION AS OF 12`, `TIMESTAMP AS OF …`, `FOR SYSTEM_TIME AS OF …`,
//!   `AT (VERSION => 12)`, and the table functions `apiary.history('h.b.f')` and
//!   `apiary.changes('h.b.f', from, to)` (see the `travel` module).

pub mod catalog;
mod distribute;
pub mod distributed;
mod error;
mod exec;
mod fragments;
mod memory;
mod output;
pub mod parts;
pub mod query_stats;
mod recent;
pub mod running;
pub mod scans;
mod session;
mod star;
mod statement;
pub mod stats;
pub mod system;
mod table;
#[cfg(test)]
mod test_frame;
mod tier;
mod travel;

pub use catalog::Pinned;
pub use distribute::{DistributeMode, DistributeRequest, Distribution, Distributor, size_text};
pub use error::{QueryError, Result};
pub use exec::{FrameScanExec, ScanSummary};
pub use memory::{Admission, Grant, PoolReading};
pub use output::QueryResult;
pub use session::{QueryEngine, QueryOptions, RunningFragment, SqlSession};
pub use statement::ends_statement;
pub use table::{FrameIndex, FrameTable};
pub use tier::MemoryTierExec;

/// DataFusion, as this crate uses it (for callers that build plans or read results).
pub use datafusion;
