//! Storage for Apiary: the [`StorageBackend`] trait, its default implementation over
//! [`object_store`], storage URIs, the preflight check, injected time and randomness
//! ([`time`]), and, behind the `testing` feature, test instruments (request counting,
//! seeded fault injection, held requests, the conformance suite).
//!
//! Everything canonical in Apiary lives in object storage, and everything that must be
//! serialized (ledger commits, registry changes) is one object created with
//! [`StorageBackend::put_if_absent`]. That operation is linearizable on every backend, and it
//! resolves lost responses by reading the object back, so a write that landed is never
//! reported as a conflict and never applied twice.
//!
//! ```
//! # async fn demo() -> apiary_storage::Result<()> {
//! use apiary_storage::{open, CreateOutcome, Path, StorageUri};
//! let backend = open(&StorageUri::parse("memory://")?).await?;
//! let key = Path::from("frames/clicks/_ledger/00000000000000000000.json");
//! match backend.put_if_absent(&key, "{\"write_id\":\"a\"}".into()).await? {
//!     CreateOutcome::Created(_) => println!("committed"),
//!     CreateOutcome::AlreadyExists(other) => println!("lost to {:?}", other.bytes),
//! }
//! # Ok(()) }
//! ```

mod backend;
pub mod blocking;
#[cfg(feature = "testing")]
pub mod conformance;
pub mod cost;
mod counts;
mod error;
pub mod histogram;
mod hold;
mod instrumented;
mod object;
mod open;
pub mod planted;
pub mod request_log;
mod stamped;
pub mod time;
mod trace;
mod uri;

pub use backend::{
    Capabilities, CreateOutcome, Listing, Object, ObjectMeta, ObjectVersion, StorageBackend,
    SwapOutcome,
};
pub use error::{ErrorKind, Result, StorageError};
pub use histogram::{DurationHistogram, HistogramSnapshot};
pub use instrumented::{
    CountsHandle, FaultConfig, Hold, InstrumentedStore, RequestCounts, RequestKind, RequestTrace,
    counted_backend,
};
pub use object::{ObjectStoreBackend, get_opt, memory};
pub use object_store;
pub use object_store::path::Path;
pub use open::{
    OPEN_TIMEOUT, OPEN_TIMEOUT_ENV, RESERVED_PREFIX, object_store_for, open, preflight, store_now,
};
pub use request_log::RequestStats;
pub use stamped::StampedStore;
pub use time::{Clock, ManualClock, Random, SystemClock, ThreadSeed, Ticker};
pub use uri::{ACCEPTED_FORMS, STORAGE_ENV, StorageUri};
