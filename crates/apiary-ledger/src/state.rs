//! The state of a frame at a version: what replaying its ledger yields.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::entry::{Action, Cell, Entry, FrameDefinition};
use crate::error::{LedgerError, Result};

/// A live incarnation of a frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveFrame {
    /// Version of the `create` that started this incarnation.
    pub incarnation: u64,
    /// Current definition (the schema grows with `add_column`).
    pub definition: FrameDefinition,
    /// Live cells by path.
    pub cells: BTreeMap<String, Cell>,
}

impl LiveFrame {
    /// Total rows over live cells.
    pub fn rows(&self) -> u64 {
        self.cells.values().map(|c| c.rows).sum()
    }

    /// Total bytes over live cells.
    pub fn bytes(&self) -> u64 {
        self.cells.values().map(|c| c.bytes).sum()
    }
}

/// The state of a frame's ledger after some version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrameState {
    /// The last applied version.
    pub version: u64,
    /// The frame, unless the last lifecycle action was a drop.
    pub live: Option<LiveFrame>,
}

impl FrameState {
    /// The state after version 0, which must create the frame.
    pub fn from_first(entry: &Entry, key: &str) -> Result<Self> {
        let mut state = FrameState {
            version: 0,
            live: None,
        };
        state.apply_actions(entry, key)?;
        if state.live.is_none() {
            return Err(LedgerError::Corrupt {
                key: key.to_string(),
                reason: "version 0 of a frame ledger must create the frame".into(),
            });
        }
        Ok(state)
    }

    /// The state after applying the entry for `self.version + 1`.
    pub fn next(&self, entry: &Entry, key: &str) -> Result<Self> {
        if entry.version != self.version + 1 {
            return Err(LedgerError::Corrupt {
                key: key.to_string(),
                reason: format!(
                    "expected version {} after {}, found {}",
                    self.version + 1,
                    self.version,
                    entry.version
                ),
            });
        }
        let mut next = self.clone();
        next.version = entry.version;
        next.apply_actions(entry, key)?;
        Ok(next)
    }

    fn apply_actions(&mut self, entry: &Entry, key: &str) -> Result<()> {
        let corrupt = |reason: String| LedgerError::Corrupt {
            key: key.to_string(),
            reason,
        };
        for action in &entry.actions {
            match (action, &mut self.live) {
                (Action::Create(definition), None) => {
                    self.live = Some(LiveFrame {
                        incarnation: entry.version,
                        definition: definition.clone(),
                        cells: BTreeMap::new(),
                    });
                }
                (Action::Create(_), Some(_)) => {
                    return Err(corrupt("`create` of a frame that exists".into()));
                }
                (Action::Drop, Some(_)) => self.live = None,
                (_, None) => {
                    return Err(corrupt(format!(
                        "{} on a frame that does not exist",
                        action_name(action)
                    )));
                }
                (Action::AddCell(cell), Some(live)) => {
                    if live.cells.insert(cell.path.clone(), cell.clone()).is_some() {
                        return Err(corrupt(format!("cell `{}` added twice", cell.path)));
                    }
                }
                (Action::RemoveCell { path }, Some(live)) => {
                    if live.cells.remove(path).is_none() {
                        return Err(corrupt(format!("removes `{path}`, which is not live")));
                    }
                }
                (Action::AddColumn(column), Some(live)) => {
                    if live.definition.schema.column(&column.name).is_some() {
                        return Err(corrupt(format!("column `{}` added twice", column.name)));
                    }
                    live.definition.schema.columns.push(column.clone());
                }
            }
        }
        Ok(())
    }
}

fn action_name(action: &Action) -> &'static str {
    match action {
        Action::Create(_) => "create",
        Action::AddCell(_) => "add_cell",
        Action::RemoveCell { .. } => "remove_cell",
        Action::AddColumn(_) => "add_column",
        Action::Drop => "drop",
    }
}

/// A checkpoint: the whole state at a version, so readers need not replay from 0.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Entry format version.
    pub format: u32,
    /// The state.
    pub state: FrameState,
}

/// The hint that points at the newest checkpoint (it may lag; readers probe forward).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LastCheckpoint {
    /// Version of the newest checkpoint known to the writer of the hint.
    pub version: u64,
}
