//! Decoding any stored ledger or registry object by its key: what the fuzzer drives, and
//! what a consistency checker would use.

use crate::entry::{Entry, parse_version_file};
use crate::error::{LedgerError, Result};
use crate::registry::decode_chain_entry;
use crate::state::{Checkpoint, FrameState, LastCheckpoint};

/// A stored object, decoded and checked.
#[derive(Debug, Clone)]
pub enum DecodedObject {
    /// A frame ledger entry, with the state it yields when it is the first version (only
    /// checked for version 0).
    LedgerEntry(Box<Entry>),
    /// A hive or box chain entry (its version).
    RegistryEntry(u64),
    /// A checkpoint.
    Checkpoint(Box<FrameState>),
    /// The newest-checkpoint hint.
    CheckpointHint(u64),
}

/// Decodes the object stored at `key` (a key as the ledger lays objects out:
/// `…/_ledger/{v}.json`, `…/_hive/{v}.json`, `…/_box/{v}.json`, `…/_checkpoints/{v}.json`,
/// `…/_checkpoints/_last`). Any damage is an error naming the key; never a panic.
pub fn decode_object(key: &str, bytes: &[u8]) -> Result<DecodedObject> {
    let corrupt = |reason: String| LedgerError::Corrupt {
        key: key.to_string(),
        reason,
    };
    let mut parts = key.rsplit('/');
    let file = parts.next().unwrap_or_default();
    let folder = parts.next().unwrap_or_default();
    match folder {
        "_checkpoints" if file == "_last" => {
            let hint: LastCheckpoint = serde_json::from_slice(bytes)
                .map_err(|e| corrupt(format!("not a checkpoint hint: {e}")))?;
            Ok(DecodedObject::CheckpointHint(hint.version))
        }
        "_checkpoints" => {
            let version = parse_version_file(file)
                .ok_or_else(|| corrupt("not a checkpoint file name".into()))?;
            let cp: Checkpoint = serde_json::from_slice(bytes)
                .map_err(|e| corrupt(format!("not a checkpoint: {e}")))?;
            if cp.state.version != version {
                return Err(corrupt(format!(
                    "checkpoint of version {} stored as {version}",
                    cp.state.version
                )));
            }
            Ok(DecodedObject::Checkpoint(Box::new(cp.state)))
        }
        "_ledger" => {
            let version =
                parse_version_file(file).ok_or_else(|| corrupt("not a ledger file name".into()))?;
            let entry = Entry::decode(key, bytes, version)?;
            if version == 0 {
                FrameState::from_first(&entry, key)?;
            }
            Ok(DecodedObject::LedgerEntry(Box::new(entry)))
        }
        "_hive" | "_box" => {
            let version = parse_version_file(file)
                .ok_or_else(|| corrupt("not a registry file name".into()))?;
            decode_chain_entry(key, bytes, version)?;
            Ok(DecodedObject::RegistryEntry(version))
        }
        _ => Err(corrupt(
            "not a ledger, checkpoint or registry object".into(),
        )),
    }
}
