//! Where the registry and the ledgers live in storage.
//!
//! ```text
//! {hive}/_hive/{v:020}.json                 hive chain (create, seal, unseal, drop)
//! {hive}/{box}/_box/{v:020}.json            box chain
//! {hive}/{box}/{frame}/_ledger/{v:020}.json frame ledger
//! {hive}/{box}/{frame}/_checkpoints/{v:020}.json and _checkpoints/_last
//! {hive}/{box}/{frame}/data/…               cells
//! ```
//!
//! Names never start with `_`, so Apiary's own folders (`_apiary`, `_heartbeats`, `_hive`,
//! …) never collide with user names.

use apiary_storage::Path;

use crate::entry::version_file;
use crate::names::FrameRef;

/// The chain of a hive.
pub fn hive_chain(hive: &str) -> Path {
    Path::from(hive).join("_hive")
}

/// The chain of a box.
pub fn box_chain(hive: &str, r#box: &str) -> Path {
    Path::from(hive).join(r#box).join("_box")
}

/// A frame's folder.
pub fn frame_root(frame: &FrameRef) -> Path {
    Path::from(frame.hive.as_str())
        .join(frame.r#box.as_str())
        .join(frame.frame.as_str())
}

/// A frame's ledger folder.
pub fn ledger_dir(frame: &FrameRef) -> Path {
    frame_root(frame).join("_ledger")
}

/// A frame's checkpoint folder.
pub fn checkpoint_dir(frame: &FrameRef) -> Path {
    frame_root(frame).join("_checkpoints")
}

/// The key of `version` in the chain or ledger at `dir`.
pub fn version_key(dir: &Path, version: u64) -> Path {
    dir.clone().join(version_file(version).as_str())
}
