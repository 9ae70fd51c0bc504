//! A node's stable identity: configured, or generated once and kept in its state folder, so
//! a restarted node is the same node and rewrites its own heartbeat.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Result, SwarmError};
use crate::heartbeat::NodeId;

/// A node id, held exclusively by this process on this machine while it lives.
#[derive(Debug)]
pub struct NodeIdentity {
    node_id: NodeId,
    state_dir: PathBuf,
    _lock: File,
}

impl NodeIdentity {
    /// Resolves the identity: `configured` (from `--node-id` / `APIARY_NODE_ID`) if given,
    /// else the id kept in `state_dir/node_id`, generated on first use. Two processes cannot
    /// hold the same id from the same state folder.
    pub fn resolve(configured: Option<&str>, state_dir: &Path) -> Result<Self> {
        let io = |what: &str, source: std::io::Error| SwarmError::Identity {
            message: format!("{what} in {}", state_dir.display()),
            source,
        };
        std::fs::create_dir_all(state_dir).map_err(|e| io("cannot create the state folder", e))?;
        let node_id = match configured {
            Some(id) => NodeId::new(id)?,
            None => Self::kept_id(state_dir)?,
        };
        let lock_path = state_dir.join(format!("node_{node_id}.lock"));
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io("cannot open the lock file", e))?;
        if lock.try_lock().is_err() {
            return Err(SwarmError::IdentityInUse {
                node_id: node_id.to_string(),
                state_dir: state_dir.display().to_string(),
            });
        }
        Ok(Self {
            node_id,
            state_dir: state_dir.to_path_buf(),
            _lock: lock,
        })
    }

    fn kept_id(state_dir: &Path) -> Result<NodeId> {
        let path = state_dir.join("node_id");
        let read = |path: &Path| -> Result<NodeId> {
            let text = std::fs::read_to_string(path).map_err(|source| SwarmError::Identity {
                message: format!("cannot read {}", path.display()),
                source,
            })?;
            NodeId::new(text.trim()).map_err(|e| SwarmError::BadIdentityFile {
                path: path.display().to_string(),
                reason: e.to_string(),
            })
        };
        if path.exists() {
            return read(&path);
        }
        let id = NodeId::generate(&apiary_storage::Random::process());
        // create_new: if another process raced us, keep its id.
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(mut file) => {
                file.write_all(format!("{id}\n").as_bytes())
                    .and_then(|()| file.sync_all())
                    .map_err(|source| SwarmError::Identity {
                        message: format!("cannot write {}", path.display()),
                        source,
                    })?;
                Ok(id)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read(&path),
            Err(source) => Err(SwarmError::Identity {
                message: format!("cannot create {}", path.display()),
                source,
            }),
        }
    }

    /// The id.
    pub fn node_id(&self) -> &NodeId {
        &self.node_id
    }

    /// The state folder.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }
}

/// The default state folder: `APIARY_STATE_DIR`, else `$XDG_STATE_HOME/apiary`, else
/// `~/.local/state/apiary`, else `./.apiary-state`.
pub fn default_state_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("APIARY_STATE_DIR") {
        return PathBuf::from(dir);
    }
    if let Ok(dir) = std::env::var("XDG_STATE_HOME") {
        return PathBuf::from(dir).join("apiary");
    }
    if let Ok(home) = std::env::var("HOME") {
        return PathBuf::from(home).join(".local/state/apiary");
    }
    PathBuf::from(".apiary-state")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_kept_and_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let first = NodeIdentity::resolve(None, dir.path()).unwrap();
        let id = first.node_id().clone();
        let err = NodeIdentity::resolve(None, dir.path()).unwrap_err();
        assert!(
            err.to_string().contains("in use by another process"),
            "{err}"
        );
        drop(first);
        let again = NodeIdentity::resolve(None, dir.path()).unwrap();
        assert_eq!(again.node_id(), &id, "a restarted node keeps its id");
        let other = NodeIdentity::resolve(Some("n2"), dir.path()).unwrap();
        assert_eq!(other.node_id().as_str(), "n2");
        assert!(NodeIdentity::resolve(Some("Bad!"), dir.path()).is_err());
        std::fs::write(dir.path().join("node_id"), "not valid!\n").unwrap();
        drop(again);
        let err = NodeIdentity::resolve(None, dir.path()).unwrap_err();
        assert!(err.to_string().contains("invalid node id"), "{err}");
    }
}
