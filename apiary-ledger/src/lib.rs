//! The registry and the frame ledgers of Apiary.
//!
//! * [`Registry`]: hives (databases), boxes (schemas) and frames (tables). Each hive and box
//!   is a small chain of versioned objects and each frame is its own ledger, so DDL on one
//!   object never contends with another.
//! * [`FrameLedger`]: a frame's ledger of versioned JSON entries (format in [`entry`]),
//!   each created with a conditional put, checkpointed every
//!   [`LedgerConfig::checkpoint_interval`] versions, and kept in memory by an open handle
//!   that moves forward by probing the versions after its head.
//! * [`Operation`]: the commit protocol's unit. Operations are re-resolved against the
//!   newest state after every lost race (see [`ops`]), so stale actions are never applied.
//!
//! An uncontended commit on an open ledger costs exactly one conditional PUT.

pub mod cells;
pub mod commits;
pub mod compact;
mod decode;
pub mod entry;
mod error;
pub mod ipc;
mod layout;
mod ledger;
mod names;
pub mod ops;
mod registry;
mod schema;
pub mod stamp;
mod state;
pub mod travel;
pub mod vacuum;
pub mod write;

pub use commits::{CommitCounts, CommitTally};
pub use compact::{CompactOptions, CompactResult, compact};
pub use decode::{DecodedObject, decode_object};
pub use entry::{Action, Cell, ColumnStats, Entry, FrameDefinition, StatValue, check_cell_bytes};
pub use error::{LedgerError, Result};
pub use layout::{frame_root, ledger_dir};
pub use ledger::{CommitInfo, FrameLedger, LedgerConfig};
pub use names::{FrameRef, MAX_NAME_LEN, NAME_RULE, validate_name};
pub use ops::{Operation, Resolution};
pub use registry::{BoxInfo, Created, FrameInfo, HiveInfo, Lifecycle, Registry};
pub use schema::{Column, FrameSchema, format_type, parse_type};
pub use stamp::StoreClock;
pub use state::{FrameState, LiveFrame};
pub use travel::{Commit, VersionAt};
pub use vacuum::{VacuumResult, vacuum};
pub use write::{
    DEFAULT_MAX_WRITE_AGE, UploadHook, WriteMode, WriteOptions, WriteResult, read_batches,
    read_batches_at, write_batches,
};
