//! The state of a frame at a version: what replaying its ledger yields.

use std::collections::{BTreeMap, HashMap, HashSet};

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
    /// That version's commit stamp (`Entry::committed_at_ms`; 0 in checkpoints written
    /// before stamps were kept here).
    #[serde(default)]
    pub committed_at_ms: i64,
    /// The frame, unless the last lifecycle action was a drop.
    pub live: Option<LiveFrame>,
}

impl FrameState {
    /// The state after version 0, which must create the frame.
    pub fn from_first(entry: &Entry, key: &str) -> Result<Self> {
        let mut state = FrameState {
            version: 0,
            committed_at_ms: 0,
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
        let mut next = self.clone();
        next.apply(entry, key)?;
        Ok(next)
    }

    /// Applies the entry for `self.version + 1` in place. The entry is checked in full
    /// first, so on error the state is unchanged.
    pub fn apply(&mut self, entry: &Entry, key: &str) -> Result<()> {
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
        self.check_actions(entry, key)?;
        self.apply_actions(entry, key)?;
        self.version = entry.version;
        Ok(())
    }

    /// Runs the entry's actions against an overlay of the state, without changing it.
    fn check_actions(&self, entry: &Entry, key: &str) -> Result<()> {
        let corrupt = |reason: String| LedgerError::Corrupt {
            key: key.to_string(),
            reason,
        };
        let mut live = self.live.is_some();
        // After a create in this entry, the cells and columns before it no longer count.
        let mut reset = false;
        let mut cells: HashMap<&str, bool> = HashMap::new();
        let mut columns: HashSet<&str> = HashSet::new();
        let base = self.live.as_ref();
        for action in &entry.actions {
            match action {
                Action::Create(definition) => {
                    if live {
                        return Err(corrupt("`create` of a frame that exists".into()));
                    }
                    live = true;
                    reset = true;
                    cells.clear();
                    columns = definition
                        .schema
                        .columns
                        .iter()
                        .map(|c| c.name.as_str())
                        .collect();
                }
                _ if !live => {
                    return Err(corrupt(format!(
                        "{} on a frame that does not exist",
                        action_name(action)
                    )));
                }
                Action::Drop => live = false,
                Action::AddCell(cell) => {
                    let present = cells.get(cell.path.as_str()).copied().unwrap_or(
                        !reset && base.is_some_and(|b| b.cells.contains_key(&cell.path)),
                    );
                    if present {
                        return Err(corrupt(format!("cell `{}` added twice", cell.path)));
                    }
                    cells.insert(&cell.path, true);
                }
                Action::RemoveCell { path } => {
                    let present = cells
                        .get(path.as_str())
                        .copied()
                        .unwrap_or(!reset && base.is_some_and(|b| b.cells.contains_key(path)));
                    if !present {
                        return Err(corrupt(format!("removes `{path}`, which is not live")));
                    }
                    cells.insert(path, false);
                }
                Action::AddColumn(column) => {
                    let exists = columns.contains(column.name.as_str())
                        || (!reset
                            && base.is_some_and(|b| {
                                b.definition.schema.column(&column.name).is_some()
                            }));
                    if exists {
                        return Err(corrupt(format!("column `{}` added twice", column.name)));
                    }
                    columns.insert(&column.name);
                }
            }
        }
        Ok(())
    }

    fn apply_actions(&mut self, entry: &Entry, key: &str) -> Result<()> {
        self.committed_at_ms = entry.committed_at_ms;
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

/// A checkpoint being written, borrowing the state (same JSON as [`Checkpoint`]).
#[derive(Debug, Serialize)]
pub(crate) struct CheckpointRef<'a> {
    pub(crate) format: u32,
    pub(crate) state: &'a FrameState,
}

/// The hint that points at the newest checkpoint (it may lag; readers probe forward).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LastCheckpoint {
    /// Version of the newest checkpoint known to the writer of the hint.
    pub version: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::{FORMAT_VERSION, FrameDefinition};
    use crate::schema::FrameSchema;

    fn entry(version: u64, actions: Vec<Action>) -> Entry {
        Entry {
            format: FORMAT_VERSION,
            version,
            write_id: format!("w{version}"),
            committed_at_ms: 0,
            operation: "test".into(),
            writer: None,
            read_version: version.checked_sub(1),
            actions,
        }
    }

    fn cell(path: &str) -> Cell {
        Cell {
            path: path.into(),
            rows: 1,
            bytes: 1,
            partition_values: BTreeMap::new(),
            stats: BTreeMap::new(),
            crc32c: None,
        }
    }

    #[test]
    fn a_bad_entry_leaves_the_state_unchanged() {
        let definition = FrameDefinition {
            schema: FrameSchema::parse_compact("x:int64").unwrap(),
            partition_by: vec![],
        };
        let mut state =
            FrameState::from_first(&entry(0, vec![Action::Create(definition.clone())]), "k")
                .unwrap();
        state
            .apply(&entry(1, vec![Action::AddCell(cell("a"))]), "k")
            .unwrap();
        let before = state.clone();
        for bad in [
            vec![
                Action::AddCell(cell("b")),
                Action::RemoveCell { path: "zz".into() },
            ],
            vec![Action::AddCell(cell("b")), Action::AddCell(cell("b"))],
            vec![
                Action::RemoveCell { path: "a".into() },
                Action::RemoveCell { path: "a".into() },
            ],
            vec![
                Action::AddCell(cell("c")),
                Action::Create(definition.clone()),
            ],
            vec![Action::Drop, Action::AddCell(cell("d"))],
        ] {
            assert!(state.apply(&entry(2, bad.clone()), "k").is_err(), "{bad:?}");
            assert_eq!(state, before, "{bad:?}");
        }
        // Drop then re-create in one entry is valid and starts empty.
        state
            .apply(
                &entry(
                    2,
                    vec![
                        Action::Drop,
                        Action::Create(definition),
                        Action::AddCell(cell("a")),
                    ],
                ),
                "k",
            )
            .unwrap();
        assert_eq!(state.live.as_ref().unwrap().cells.len(), 1);
        assert_eq!(state.version, 2);
    }
}
