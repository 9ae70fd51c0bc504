//! Operations: what a committer wants, resolved against the latest state into actions.
//!
//! An operation is re-resolved on every attempt, against the state that now includes the
//! entries that beat it, so a stale action is never applied blindly:
//!
//! * `append` commutes with everything but a drop: it just moves to the next version;
//! * `overwrite` removes whatever is live *when it commits*: a concurrent append committed
//!   before it is removed with the old data, one committed after it survives;
//! * `rewrite` (remove given cells, add others: compaction) fails with a conflict when a
//!   cell it removes is no longer live;
//! * `add_column` is a no-op when the same column was added meanwhile, a conflict when a
//!   different column of that name was;
//! * `create` is a no-op when an identical frame exists, an error when it differs.

use std::collections::HashSet;

use crate::entry::{Action, Cell, FrameDefinition};
use crate::error::{LedgerError, Result};
use crate::schema::Column;
use crate::state::{FrameState, LiveFrame};

/// A change to a frame, as intended by its committer.
#[derive(Debug, Clone, PartialEq)]
pub enum Operation {
    /// Create the frame (or re-create it after a drop).
    Create(FrameDefinition),
    /// Add cells.
    Append(Vec<Cell>),
    /// Replace every live cell with these.
    Overwrite(Vec<Cell>),
    /// Replace the given cells with others (compaction, rewrites).
    Rewrite {
        /// Paths of cells to remove; each must still be live.
        remove: Vec<String>,
        /// Cells to add.
        add: Vec<Cell>,
    },
    /// Add a nullable column at the end of the schema.
    AddColumn(Column),
    /// Drop the frame.
    Drop,
}

/// What an operation amounts to against a given state.
#[derive(Debug, Clone, PartialEq)]
pub enum Resolution {
    /// Commit these actions.
    Commit(Vec<Action>),
    /// The state already is what the operation asks for; nothing to commit.
    Noop,
}

impl Operation {
    /// The name recorded in the entry's `operation` field.
    pub fn name(&self) -> &'static str {
        match self {
            Operation::Create(_) => "create",
            Operation::Append(_) => "append",
            Operation::Overwrite(_) => "overwrite",
            Operation::Rewrite { .. } => "rewrite",
            Operation::AddColumn(_) => "add_column",
            Operation::Drop => "drop",
        }
    }

    /// Resolves the operation against `state` (`None`: the ledger has no version yet).
    /// `what` names the frame in errors.
    pub fn resolve(&self, state: Option<&FrameState>, what: &str) -> Result<Resolution> {
        let live = state.and_then(|s| s.live.as_ref());
        let not_found = || LedgerError::NotFound {
            what: format!("frame `{what}`"),
        };
        match self {
            Operation::Create(definition) => {
                definition.validate()?;
                match live {
                    None => Ok(Resolution::Commit(vec![Action::Create(definition.clone())])),
                    Some(l) if l.definition == *definition => Ok(Resolution::Noop),
                    Some(l) => Err(LedgerError::AlreadyExists {
                        what: format!("frame `{what}`"),
                        detail: describe_difference(&l.definition, definition),
                    }),
                }
            }
            Operation::Append(cells) => {
                let live = live.ok_or_else(not_found)?;
                check_new_cells(live, cells, what)?;
                Ok(Resolution::Commit(
                    cells.iter().cloned().map(Action::AddCell).collect(),
                ))
            }
            Operation::Overwrite(cells) => {
                let live = live.ok_or_else(not_found)?;
                let mut actions: Vec<Action> = live
                    .cells
                    .keys()
                    .map(|path| Action::RemoveCell { path: path.clone() })
                    .collect();
                let empty = LiveFrame {
                    cells: Default::default(),
                    ..live.clone()
                };
                check_new_cells(&empty, cells, what)?;
                if cells.iter().any(|c| live.cells.contains_key(&c.path)) {
                    return Err(LedgerError::Invalid(format!(
                        "overwrite of `{what}` re-adds a cell that is live; new cells need new paths"
                    )));
                }
                actions.extend(cells.iter().cloned().map(Action::AddCell));
                Ok(Resolution::Commit(actions))
            }
            Operation::Rewrite { remove, add } => {
                let live = live.ok_or_else(not_found)?;
                let mut seen = HashSet::new();
                for path in remove {
                    if !seen.insert(path) {
                        return Err(LedgerError::Invalid(format!(
                            "rewrite of `{what}` removes `{path}` twice"
                        )));
                    }
                    if !live.cells.contains_key(path) {
                        return Err(LedgerError::Conflict {
                            what: format!("frame `{what}`"),
                            detail: format!(
                                "cell `{path}` is no longer live (removed by a concurrent commit); \
                                 re-read the frame and plan the rewrite again"
                            ),
                        });
                    }
                }
                check_new_cells(live, add, what)?;
                let mut actions: Vec<Action> = remove
                    .iter()
                    .map(|path| Action::RemoveCell { path: path.clone() })
                    .collect();
                actions.extend(add.iter().cloned().map(Action::AddCell));
                Ok(Resolution::Commit(actions))
            }
            Operation::AddColumn(column) => {
                let live = live.ok_or_else(not_found)?;
                if !column.nullable {
                    return Err(LedgerError::Invalid(format!(
                        "column `{}` must be nullable: existing cells have no values for it",
                        column.name
                    )));
                }
                match live.definition.schema.column(&column.name) {
                    Some(existing) if existing == column => Ok(Resolution::Noop),
                    Some(existing) => Err(LedgerError::Conflict {
                        what: format!("frame `{what}`"),
                        detail: format!(
                            "column `{}` already exists as {}",
                            column.name, existing.data_type
                        ),
                    }),
                    None => {
                        let mut schema = live.definition.schema.clone();
                        schema.columns.push(column.clone());
                        schema.validate()?;
                        Ok(Resolution::Commit(vec![Action::AddColumn(column.clone())]))
                    }
                }
            }
            Operation::Drop => {
                live.ok_or_else(not_found)?;
                Ok(Resolution::Commit(vec![Action::Drop]))
            }
        }
    }
}

fn check_new_cells(live: &LiveFrame, cells: &[Cell], what: &str) -> Result<()> {
    let partition_by: HashSet<&str> = live
        .definition
        .partition_by
        .iter()
        .map(String::as_str)
        .collect();
    let mut seen = HashSet::new();
    for cell in cells {
        if cell.path.is_empty() || cell.path.starts_with('/') || cell.path.contains("..") {
            return Err(LedgerError::Invalid(format!(
                "cell path {:?} must be a relative path inside the frame",
                cell.path
            )));
        }
        if !seen.insert(cell.path.as_str()) || live.cells.contains_key(&cell.path) {
            return Err(LedgerError::Invalid(format!(
                "cell `{}` is added twice to `{what}`",
                cell.path
            )));
        }
        let keys: HashSet<&str> = cell.partition_values.keys().map(String::as_str).collect();
        if keys != partition_by {
            return Err(LedgerError::Invalid(format!(
                "cell `{}` has partition values for {:?}, but `{what}` is partitioned by {:?}",
                cell.path,
                cell.partition_values.keys().collect::<Vec<_>>(),
                live.definition.partition_by
            )));
        }
        if let Some(column) = cell
            .stats
            .keys()
            .find(|c| live.definition.schema.column(c).is_none())
        {
            return Err(LedgerError::Invalid(format!(
                "cell `{}` has statistics for `{column}`, which is not a column of `{what}`",
                cell.path
            )));
        }
    }
    Ok(())
}

fn describe_difference(existing: &FrameDefinition, wanted: &FrameDefinition) -> String {
    if existing.partition_by != wanted.partition_by {
        return format!(
            "it is partitioned by {:?}, not {:?}",
            existing.partition_by, wanted.partition_by
        );
    }
    let show = |d: &FrameDefinition| {
        d.schema
            .columns
            .iter()
            .map(|c| {
                let null = if c.nullable { "" } else { " not null" };
                format!("{}:{}{null}", c.name, c.data_type)
            })
            .collect::<Vec<_>>()
            .join(",")
    };
    format!("its schema is `{}`, not `{}`", show(existing), show(wanted))
}
