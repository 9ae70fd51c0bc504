//! Apiary's shuffle transport seam: how a distributed query's tasks reach workers and their
//! results come back.
//!
//! * [`ShuffleTransport`]: the trait, with its written contract (see [`transport`]).
//! * [`manifest`]: the task format every worker reads ([`TaskSpec`]), and [`units`]: how a
//!   task names a whole cell or a part of one.
//! * [`result`]: a task's rows as Arrow IPC streams, the end one carrying the worker's
//!   report.
//! * [`StorageShuffle`]: the default, through the shared storage (any
//!   [`apiary_storage::StorageBackend`]).
//! * `conformance` (feature `testing`): the checks every transport must pass, the way
//!   storage backends have theirs.
//!
//! A researcher writing a new transport depends on this crate alone, implements
//! [`ShuffleTransport`], runs `conformance::run_all` over it, and plugs it into a node with
//! `apiary::Apiary::builder(…).transport(…)`.

#[cfg(feature = "testing")]
pub mod conformance;
mod error;
pub mod manifest;
pub mod result;
mod storage;
pub mod transport;
pub mod units;

pub use error::{BoxError, Result, ShuffleError};
pub use manifest::{ColumnSpec, FramePin, ShippedFrame, TaskKey, TaskSpec};
pub use storage::{CHUNK_BYTES, DOORBELL_DIR, DOORBELL_IDLE, QUERIES_DIR, StorageShuffle};
pub use transport::{
    Delivered, ResultWriter, Rows, ShuffleTransport, TaskFailure, TaskOutcome, TaskReport,
};
