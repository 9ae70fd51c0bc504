//! The manifest of a distributed query: what a coordinator asks of workers.
//!
//! A task is one JSON object (format [`TASK_FORMAT`]):
//!
//! ```json
//! {
//!   "format": 3,
//!   "query_id": "q-3f2a…",            // [a-z0-9-], unique per query
//!   "task_id": 0,                      // unique within the query
//!   "attempt": 1,                      // 1, 2, 3: a reassigned task is a new attempt
//!   "node_id": "node-1a2b…",          // the node meant to run it
//!   "coordinator": "node-9f8e…",      // who waits for it (informational)
//!   "split": {"hive": "h", "box": "b", "frame": "f", "version": 12},
//!   "cells": ["country=us/…parquet"],  // the split frame's cells this task reads
//!   "shared": 1,                       // of those, how many (the last) others may take
//!   "steal": [["…parquet"]],           // other tasks' shared cells it may take after
//!   "pins": [{"hive": "h", "box": "b", "frame": "dim", "version": 3}],
//!   "sql": "SELECT … FROM h.b.f …",   // a read-only SELECT, pasteable into `apiary sql`
//!   "scope": ["h", "b"],               // the `USE` the fragment's names resolve in
//!   "settings": {"datafusion.execution.time_zone": "+05:00"},   // the session's SETs
//!   "schema": [{"name": "c0", "type": "Utf8", "nullable": true}],
//!   "timeout_ms": 600000,
//!   "frames": [{"pin": {"hive": "h", "box": "b", "frame": "f", "version": 12},
//!               "incarnation": 0, "definition": {…}, "cells": [{"path": "…", …}]}]
//! }
//! ```
//!
//! The fragment reads `split` at `version` through a per-task table holding only `cells`
//! (and `steal`); every frame in `pins` is read whole at its version, so every task sees one
//! snapshot. `settings` are the options the coordinator's session changed (`SET
//! datafusion.…`, `SET TIME ZONE`), which the worker plans and runs the fragment with; only
//! options a session may set are accepted (absent when none changed).
//!
//! **Shipped frames.** `frames` (absent when empty) carries the coordinator's state of
//! pinned frames at their versions: the definition and the ledger's entries of the cells
//! the task may read (for `split`) or of every cell (for a pin small enough to ship). A
//! worker reads a shipped frame from it and replays no ledger, so a task on a node that has
//! never seen the frame makes no storage request before its first cell. A frame not shipped
//! is read from its ledger at its version, as before; every shipped frame must be the split
//! or a pin at the same version, and its cell paths pass the same checks as named cells.
//!
//! **Shared cells.** So that a node that finishes early helps one that lags, the tasks of
//! one attempt round can share cells: the last `shared` of a task's `cells` may be read by
//! another task of the round, which lists them in its `steal` (owners from the front, thieves
//! from the back of each list). The worker reads its unshared cells unconditionally, then
//! claims each shared or stolen cell through the transport (`ShuffleTransport::claim`, one
//! winner per cell and round) before it reads it, and reports the cells it read and those
//! its plan ruled out (`TaskReport::read`, `TaskReport::pruned`). `steal` holds one list per other
//! task, each from the back; a worker takes from them in turn and drops a list at the first
//! claim it loses there (its owner or another thief got that far). Both fields are absent
//! (`0`, `[]`) when the round shares nothing.
//!
//! **Parts.** An entry of `cells` or `steal` may name a part of a cell rather than the whole:
//! `"{path}#{start}-{end}"` is the cell's rows `start..end` (positions in the cell, before
//! any filter; see [`crate::units`]). A coordinator cuts cells into parts where there are
//! fewer cells than bees, and cuts the last cells of every task that shares, so that the
//! task that ends last ends at most a part behind; a cell once cut is handed out in those
//! parts only. A name that is a cell of the frame is that cell (a coordinator never cuts a
//! frame with a `#` in a cell path). A worker reads a part with a row selection (Parquet)
//! or a slice (memory tier), claims it like a cell, and reports it by its name; a part
//! outside its cell's rows fails the task. The
//! result must have `schema` (columns by position; types are cast where they differ only in
//! representation). `timeout_ms` is measured by the worker from when it takes the task; the
//! coordinator keeps its own deadline on its own clock. A worker never trusts a task: the
//! SQL goes through the same checks as `sql` (one read-only query), names are validated, and
//! sizes are bounded ([`MAX_TASK_BYTES`], [`MAX_CELLS`]).

use apiary_ledger::{Cell, FrameDefinition, FrameRef, validate_name};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};
use std::str::FromStr;
use std::sync::Arc;

use crate::error::{Result, ShuffleError};

/// Format version of task objects. Format 2 added parts of cells and moved claims to
/// `claims/{attempt}/cells/…` and `claims/{attempt}/parts/…`: a node of format 1 would take
/// a part for a pruned cell and claim shared cells under other keys than its peers (reading
/// some twice), so nodes refuse tasks of any other format, and the task is reassigned.
///
/// Format 3 added `settings`: a node of format 2 would plan the fragment on its defaults
/// (another time zone, another optimizer), so it refuses the task instead.
pub const TASK_FORMAT: u32 = 3;
/// Most session settings one task may carry.
pub const MAX_SETTINGS: usize = 128;
/// Largest task object accepted.
pub const MAX_TASK_BYTES: usize = 4 << 20;
/// Most cells one task may name.
pub const MAX_CELLS: usize = 100_000;
/// Longest fragment accepted.
pub const MAX_SQL_BYTES: usize = 1 << 20;

/// A frame read at one version.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FramePin {
    /// Hive.
    pub hive: String,
    /// Box.
    #[serde(rename = "box")]
    pub r#box: String,
    /// Frame.
    pub frame: String,
    /// Ledger version.
    pub version: u64,
}

impl FramePin {
    /// The pinned frame's name.
    pub fn frame_ref(&self) -> Result<FrameRef> {
        FrameRef::new(&self.hive, &self.r#box, &self.frame)
            .map_err(|e| ShuffleError::Invalid(e.to_string()))
    }

    /// A pin of `frame` at `version`.
    pub fn new(frame: &FrameRef, version: u64) -> Self {
        Self {
            hive: frame.hive.clone(),
            r#box: frame.r#box.clone(),
            frame: frame.frame.clone(),
            version,
        }
    }
}

/// One column of a task's expected result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnSpec {
    /// Column name.
    pub name: String,
    /// Arrow type, as Arrow prints it (`Int64`, `Utf8`, `Timestamp(Nanosecond, Some("UTC"))`).
    #[serde(rename = "type")]
    pub data_type: String,
    /// Whether nulls may occur.
    pub nullable: bool,
}

/// Identifies one attempt of one task.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskKey {
    /// The query.
    pub query_id: String,
    /// The task within the query.
    pub task_id: u32,
    /// The attempt (from 1).
    pub attempt: u32,
}

impl std::fmt::Display for TaskKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}#{}", self.query_id, self.task_id, self.attempt)
    }
}

/// A pinned frame's state as a coordinator ships it in a task: what the worker would
/// otherwise replay from the frame's ledger (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShippedFrame {
    /// The frame and its version: the task's `split` or one of its `pins`.
    pub pin: FramePin,
    /// Version of the `create` that started the incarnation read.
    pub incarnation: u64,
    /// The definition at that version.
    pub definition: FrameDefinition,
    /// Ledger entries of cells: for the split frame at least every cell the task names,
    /// for a pin every cell of the version.
    pub cells: Vec<Cell>,
}

/// One task of a distributed query (see the module docs for the format).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// Format version ([`TASK_FORMAT`]).
    pub format: u32,
    /// The query.
    pub query_id: String,
    /// The task within the query.
    pub task_id: u32,
    /// The attempt, from 1.
    pub attempt: u32,
    /// The node meant to run it.
    pub node_id: String,
    /// The coordinating node (or process).
    pub coordinator: String,
    /// The frame whose cells are split over tasks, and its version.
    pub split: FramePin,
    /// The split frame's cells this task reads (paths relative to the frame).
    pub cells: Vec<String>,
    /// Bytes of those cells.
    #[serde(default)]
    pub bytes: u64,
    /// How many of `cells`, counted from the end, other tasks of this attempt round may
    /// take: each is claimed before it is read.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub shared: u32,
    /// Other tasks' shared cells this task may take once its own are done: one list per
    /// other task, each in the order to try (from the back of that task's cells); each cell
    /// is claimed before it is read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steal: Vec<Vec<String>>,
    /// Other frames the fragment reads whole, each at its version.
    pub pins: Vec<FramePin>,
    /// The fragment: one read-only SELECT.
    pub sql: String,
    /// `USE` in force for the fragment: `[]`, `[hive]` or `[hive, box]` (unqualified names
    /// in the fragment resolve as they did for the coordinator).
    #[serde(default)]
    pub scope: Vec<String>,
    /// Session options the fragment is planned and run with (`datafusion.…` key → value).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub settings: std::collections::BTreeMap<String, String>,
    /// The expected result columns.
    pub schema: Vec<ColumnSpec>,
    /// How long the worker may run it.
    pub timeout_ms: u64,
    /// Pinned frames' states shipped with the task (see [`ShippedFrame`]); a frame not
    /// here is read from its ledger.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub frames: Vec<ShippedFrame>,
}

impl TaskSpec {
    /// This attempt's key.
    pub fn key(&self) -> TaskKey {
        TaskKey {
            query_id: self.query_id.clone(),
            task_id: self.task_id,
            attempt: self.attempt,
        }
    }

    /// The JSON object.
    pub fn encode(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(self).map_err(|e| {
            ShuffleError::failed(
                format!("a task cannot be encoded: {e}"),
                apiary_storage::ErrorKind::Internal,
                e,
            )
        })
    }

    /// Decodes and validates a task object; anything malformed is an error naming `what`.
    pub fn decode(what: &str, bytes: &[u8]) -> Result<Self> {
        let bad =
            |reason: String| ShuffleError::Invalid(format!("task `{what}` is invalid: {reason}"));
        if bytes.len() > MAX_TASK_BYTES {
            return Err(bad(format!(
                "{} bytes, more than the {MAX_TASK_BYTES} a task may have",
                bytes.len()
            )));
        }
        let task: TaskSpec = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        if task.format != TASK_FORMAT {
            let which = if task.format > TASK_FORMAT {
                "a newer"
            } else {
                "an older"
            };
            return Err(bad(format!(
                "format {} is not {TASK_FORMAT}; {which} Apiary is coordinating: run one \
                 version on every node",
                task.format
            )));
        }
        validate_query_id(&task.query_id).map_err(|e| bad(e.to_string()))?;
        if task.attempt == 0 {
            return Err(bad("attempts count from 1".into()));
        }
        let named = task.cells.len() + task.steal.iter().map(Vec::len).sum::<usize>();
        if named > MAX_CELLS {
            return Err(bad(format!("{named} cells, more than {MAX_CELLS}")));
        }
        if task.shared as usize > task.cells.len() {
            return Err(bad(format!(
                "{} shared cells of {}",
                task.shared,
                task.cells.len()
            )));
        }
        if task.sql.len() > MAX_SQL_BYTES || task.sql.trim().is_empty() {
            return Err(bad("the fragment is empty or too long".into()));
        }
        if task.scope.len() > 2 {
            return Err(bad("a scope is `[hive]` or `[hive, box]`".into()));
        }
        if task.settings.len() > MAX_SETTINGS {
            return Err(bad(format!("more than {MAX_SETTINGS} settings")));
        }
        if let Some(key) = task
            .settings
            .iter()
            .find(|(k, v)| !k.starts_with("datafusion.") || k.len() + v.len() > 4096)
            .map(|(k, _)| k)
        {
            return Err(bad(format!(
                "`{key}` is not a DataFusion option a task may carry"
            )));
        }
        for (kind, name) in ["hive", "box"].iter().zip(&task.scope) {
            validate_name(kind, name).map_err(|e| bad(e.to_string()))?;
        }
        for pin in std::iter::once(&task.split).chain(&task.pins) {
            for (kind, name) in [
                ("hive", &pin.hive),
                ("box", &pin.r#box),
                ("frame", &pin.frame),
            ] {
                validate_name(kind, name).map_err(|e| bad(e.to_string()))?;
            }
        }
        let mut named = std::collections::HashSet::new();
        for cell in task.cells.iter().chain(task.steal.iter().flatten()) {
            if !is_cell_path(cell) {
                return Err(bad(format!("`{cell}` is not a cell path")));
            }
            if !named.insert(cell.as_str()) {
                return Err(bad(format!("cell `{cell}` is named twice")));
            }
        }
        task.check_shipped().map_err(bad)?;
        task.expected_schema().map_err(|e| bad(e.to_string()))?;
        Ok(task)
    }

    /// Every shipped frame is the split or a pin at its version, shipped once, with safe
    /// cell paths and no more cells than a task may name.
    fn check_shipped(&self) -> std::result::Result<(), String> {
        let mut seen = std::collections::HashSet::new();
        let mut cells = 0;
        for shipped in &self.frames {
            let pin = &shipped.pin;
            let name = format!("{}.{}.{}", pin.hive, pin.r#box, pin.frame);
            if !(std::iter::once(&self.split).chain(&self.pins)).any(|p| p == pin) {
                return Err(format!(
                    "it ships frame `{name}` at version {}, which it does not pin",
                    pin.version
                ));
            }
            if !seen.insert(pin) {
                return Err(format!(
                    "it ships frame `{name}` at version {} twice",
                    pin.version
                ));
            }
            cells += shipped.cells.len();
            if cells > MAX_CELLS {
                return Err(format!("it ships more than {MAX_CELLS} cells"));
            }
            if let Some(cell) = shipped.cells.iter().find(|c| !is_cell_path(&c.path)) {
                return Err(format!(
                    "`{}` of shipped frame `{name}` is not a cell path",
                    cell.path
                ));
            }
        }
        Ok(())
    }

    /// Whether this task shares cells with others of its round (then cells are claimed).
    pub fn shares(&self) -> bool {
        self.shared > 0 || !self.steal.is_empty()
    }

    /// The expected result schema.
    pub fn expected_schema(&self) -> Result<SchemaRef> {
        let fields = self
            .schema
            .iter()
            .map(|c| {
                let t = DataType::from_str(&c.data_type).map_err(|e| {
                    ShuffleError::Invalid(format!("column `{}` has no valid type: {e}", c.name))
                })?;
                Ok(Field::new(&c.name, t, c.nullable))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Arc::new(Schema::new(fields)))
    }
}

/// A relative path inside a frame's folder: not empty, not absolute, no `..`.
fn is_cell_path(path: &str) -> bool {
    !path.is_empty() && !path.starts_with('/') && !path.split('/').any(|s| s == "..")
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Columns of `schema` as a task names them.
pub fn columns_of(schema: &Schema) -> Vec<ColumnSpec> {
    schema
        .fields()
        .iter()
        .map(|f| ColumnSpec {
            name: f.name().clone(),
            data_type: f.data_type().to_string(),
            nullable: f.is_nullable(),
        })
        .collect()
}

/// Query ids are short, lowercase and safe in object keys: `[a-z0-9-]{1,64}`.
pub fn validate_query_id(id: &str) -> Result<()> {
    if id.is_empty()
        || id.len() > 64
        || !id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(ShuffleError::Invalid(format!(
            "`{id}` is not a query id (1 to 64 of a-z, 0-9 and -)"
        )));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> TaskSpec {
        TaskSpec {
            format: TASK_FORMAT,
            query_id: "q-1".into(),
            task_id: 3,
            attempt: 1,
            node_id: "node-a".into(),
            coordinator: "node-b".into(),
            split: FramePin {
                hive: "h".into(),
                r#box: "b".into(),
                frame: "f".into(),
                version: 7,
            },
            cells: vec!["data/country=us/x.parquet".into()],
            bytes: 10,
            shared: 0,
            steal: vec![],
            pins: vec![],
            sql: "SELECT 1".into(),
            scope: vec![],
            settings: [(
                "datafusion.execution.time_zone".to_string(),
                "+05:00".to_string(),
            )]
            .into(),
            schema: vec![ColumnSpec {
                name: "c0".into(),
                data_type: DataType::Timestamp(
                    arrow_schema::TimeUnit::Nanosecond,
                    Some("Europe/Paris".into()),
                )
                .to_string(),
                nullable: true,
            }],
            timeout_ms: 1000,
            frames: vec![shipped(7, "data/country=us/x.parquet")],
        }
    }

    /// Frame `h.b.f` at `version` with one cell at `path`.
    fn shipped(version: u64, path: &str) -> ShippedFrame {
        let schema = apiary_ledger::FrameSchema::new(vec![apiary_ledger::Column {
            name: "x".into(),
            data_type: "int64".into(),
            nullable: true,
        }])
        .unwrap();
        ShippedFrame {
            pin: FramePin {
                hive: "h".into(),
                r#box: "b".into(),
                frame: "f".into(),
                version,
            },
            incarnation: 0,
            definition: FrameDefinition::new(schema, vec![]).unwrap(),
            cells: vec![Cell {
                path: path.into(),
                rows: 1,
                bytes: 10,
                partition_values: Default::default(),
                stats: Default::default(),
                crc32c: None,
            }],
        }
    }

    #[test]
    fn round_trips_and_types_parse_back() {
        let task = sample();
        let back = TaskSpec::decode("t", &task.encode().unwrap()).unwrap();
        assert_eq!(back, task);
        assert_eq!(
            back.expected_schema().unwrap().field(0).data_type(),
            &DataType::Timestamp(
                arrow_schema::TimeUnit::Nanosecond,
                Some("Europe/Paris".into())
            )
        );
    }

    #[test]
    fn refuses_what_is_malformed() {
        type Mutation = Box<dyn Fn(&mut TaskSpec)>;
        let cases: Vec<(Mutation, &str)> = vec![
            (Box::new(|t| t.format = 9), "format 9 is not 3; a newer"),
            (Box::new(|t| t.format = 2), "format 2 is not 3; an older"),
            (
                Box::new(|t| {
                    t.settings
                        .insert("apiary.distribute".into(), "always".into());
                }),
                "not a DataFusion option",
            ),
            (Box::new(|t| t.query_id = "../x".into()), "query id"),
            (Box::new(|t| t.attempt = 0), "attempts"),
            (
                Box::new(|t| t.cells = vec!["../../etc/passwd".into()]),
                "cell path",
            ),
            (Box::new(|t| t.split.hive = "_apiary".into()), "hive"),
            (Box::new(|t| t.shared = 2), "2 shared cells of 1"),
            (
                Box::new(|t| t.steal = vec![vec!["data/country=us/x.parquet".into()]]),
                "named twice",
            ),
            (
                Box::new(|t| t.steal = vec![vec!["/abs".into()]]),
                "cell path",
            ),
            (Box::new(|t| t.sql = " ".into()), "fragment"),
            (
                Box::new(|t| t.schema[0].data_type = "Nope".into()),
                "valid type",
            ),
            (
                Box::new(|t| t.frames = vec![shipped(6, "x.parquet")]),
                "ships frame `h.b.f` at version 6, which it does not pin",
            ),
            (
                Box::new(|t| t.frames.push(t.frames[0].clone())),
                "ships frame `h.b.f` at version 7 twice",
            ),
            (
                Box::new(|t| t.frames = vec![shipped(7, "../../g/data/y.parquet")]),
                "`../../g/data/y.parquet` of shipped frame `h.b.f` is not a cell path",
            ),
        ];
        for (mutate, expected) in cases {
            let mut task = sample();
            mutate(&mut task);
            let err = TaskSpec::decode("t", &task.encode().unwrap()).unwrap_err();
            assert!(
                err.to_string().contains(expected),
                "{err} should name {expected}"
            );
        }
        assert!(TaskSpec::decode("t", b"{not json").is_err());
        assert!(TaskSpec::decode("t", &vec![b' '; MAX_TASK_BYTES + 1]).is_err());
    }
}
