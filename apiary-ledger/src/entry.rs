//! The frame ledger entry format (format version 1).
//!
//! A frame's ledger is a sequence of JSON objects, one per version, at
//! `{hive}/{box}/{frame}/_ledger/{version:020}.json`; the zero-padded 20-digit name makes
//! name order equal integer order over the whole `u64` range. Each entry is created with a
//! conditional put (create-if-absent), so exactly one writer owns each version.
//!
//! ```json
//! {
//!   "format": 1,
//!   "version": 3,
//!   "write_id": "4f0c…",
//!   "committed_at_ms": 1763784000000,
//!   "operation": "append",
//!   "writer": "node-7f3a…",
//!   "read_version": 2,
//!   "actions": [
//!     {"add_cell": {"path": "data/country=us/….parquet", "rows": 10, "bytes": 2048,
//!                   "partition_values": {"country": "us"},
//!                   "stats": {"event_id": {"min": {"int": 1}, "max": {"int": 9}, "null_count": 0}}}},
//!     {"remove_cell": {"path": "data/….parquet"}},
//!     {"create": {"schema": {"columns": [{"name": "x", "type": "int64", "nullable": true}]},
//!                 "partition_by": []}},
//!     {"add_column": {"name": "y", "type": "utf8", "nullable": true}},
//!     "drop"
//!   ]
//! }
//! ```
//!
//! * `write_id` is random per commit; it makes every entry's bytes unique, which is how a
//!   writer recognises its own entry after a lost response.
//! * `committed_at_ms` is the commit time on the store's clock (see [`crate::stamp`]),
//!   never before the previous entry's; `TIMESTAMP AS OF` is judged on it, vacuum never.
//! * `writer` (optional) names the node that committed.
//! * `read_version` is the version the writer's state was at when it built the entry.
//! * `create` starts the frame (at version 0, or again after a `drop`).
//! * A reader that meets a `format` it does not know refuses the ledger with an error
//!   instead of guessing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{LedgerError, Result};
use crate::schema::{Column, FrameSchema};

/// The entry format this version of Apiary writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// A typed statistics value (a column minimum or maximum).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatValue {
    /// Booleans.
    Bool(bool),
    /// Signed integers, and dates, times, timestamps and durations as their integer value.
    Int(i64),
    /// Unsigned integers.
    UInt(u64),
    /// Floating point numbers (never NaN).
    Float(f64),
    /// Decimals, as the unscaled integer in decimal digits.
    Decimal(String),
    /// Strings.
    Str(String),
    /// Binary values, hex-encoded.
    Bytes(String),
}

/// Statistics of one column in one cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ColumnStats {
    /// Smallest non-null value, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<StatValue>,
    /// Largest non-null value, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<StatValue>,
    /// Number of nulls.
    pub null_count: u64,
}

/// A cell: one Parquet file of a frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    /// Path relative to the frame's folder.
    pub path: String,
    /// Number of rows.
    pub rows: u64,
    /// Size in bytes.
    pub bytes: u64,
    /// Value of each partition column (as its escaped text form; `None` for null).
    #[serde(default)]
    pub partition_values: BTreeMap<String, Option<String>>,
    /// Per-column statistics.
    #[serde(default)]
    pub stats: BTreeMap<String, ColumnStats>,
    /// CRC-32C of the cell's bytes as written: every fetch of the cell is checked against
    /// it, so a stored object that rotted or was rewritten fails its reads instead of
    /// answering wrongly (absent from cells written before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crc32c: Option<u32>,
}

/// How a cell's bytes were found wrong.
pub fn check_cell_bytes(key: &str, expected: Option<u32>, bytes: &[u8]) -> Result<()> {
    let Some(expected) = expected else {
        return Ok(());
    };
    let actual = crc32c::crc32c(bytes);
    if actual == expected {
        return Ok(());
    }
    Err(LedgerError::Corrupt {
        key: key.to_string(),
        reason: format!(
            "the cell's {} bytes do not match the checksum its ledger entry records (CRC-32C \
             {expected:08x}, read {actual:08x}): the stored object is damaged (bit rot, a \
             truncated copy, or a tool that rewrote it); restore it from a backup or replica",
            bytes.len()
        ),
    })
}

/// The definition a frame is created with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrameDefinition {
    /// Columns.
    pub schema: FrameSchema,
    /// Partition columns, in order.
    #[serde(default)]
    pub partition_by: Vec<String>,
}

impl FrameDefinition {
    /// A validated definition; partition columns are made required (a partition value is
    /// never null).
    pub fn new(mut schema: FrameSchema, partition_by: Vec<String>) -> Result<Self> {
        for column in &mut schema.columns {
            if partition_by.contains(&column.name) {
                column.nullable = false;
            }
        }
        let definition = Self {
            schema,
            partition_by,
        };
        definition.validate()?;
        Ok(definition)
    }

    /// Checks the schema and that every partition column exists once, is not a float
    /// (equality on floats makes poor partitions) and is required.
    pub fn validate(&self) -> Result<()> {
        self.schema.validate()?;
        let mut seen = std::collections::HashSet::new();
        for p in &self.partition_by {
            let Some(column) = self.schema.column(p) else {
                return Err(LedgerError::Invalid(format!(
                    "partition column `{p}` is not a column of the frame"
                )));
            };
            if !seen.insert(p) {
                return Err(LedgerError::Invalid(format!(
                    "partition column `{p}` is listed twice"
                )));
            }
            if column.nullable {
                return Err(LedgerError::Invalid(format!(
                    "partition column `{p}` must be NOT NULL: a partition value is never null"
                )));
            }
            if !crate::cells::partition::can_partition(&column.arrow_type()?) {
                return Err(LedgerError::Invalid(format!(
                    "partition column `{p}` is {}; partition by an integer, string, boolean, \
                     date, timestamp or decimal column instead",
                    column.data_type
                )));
            }
        }
        if self.partition_by.len() == self.schema.columns.len() {
            return Err(LedgerError::Invalid(
                "at least one column must not be a partition column".into(),
            ));
        }
        Ok(())
    }
}

/// One change recorded in a ledger entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Creates (or re-creates after a drop) the frame.
    Create(FrameDefinition),
    /// Adds a cell.
    AddCell(Cell),
    /// Removes a cell (by path).
    RemoveCell {
        /// The path of the removed cell.
        path: String,
    },
    /// Adds a nullable column at the end of the schema.
    AddColumn(Column),
    /// Drops the frame; only a `create` may follow.
    Drop,
}

/// One ledger entry (one version).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Entry format version.
    pub format: u32,
    /// The ledger version this entry is.
    pub version: u64,
    /// Random id of the commit.
    pub write_id: String,
    /// Time of the commit in milliseconds since the epoch, on the store's clock as the
    /// committer estimated it, and never before the previous entry's (see
    /// [`crate::stamp`]): `TIMESTAMP AS OF` is judged on it.
    pub committed_at_ms: i64,
    /// What the committer was doing (`create`, `append`, `overwrite`, …).
    pub operation: String,
    /// Who committed (a node id), when the committer said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writer: Option<String>,
    /// The version the committer had read.
    pub read_version: Option<u64>,
    /// The changes.
    pub actions: Vec<Action>,
}

impl Entry {
    /// Serializes the entry.
    pub fn encode(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(self)
            .map_err(|e| LedgerError::Invalid(format!("ledger entry cannot be encoded: {e}")))
    }

    /// Parses and checks an entry read from `key`; `expected_version` is the version its
    /// name says it is.
    pub fn decode(key: &str, bytes: &[u8], expected_version: u64) -> Result<Self> {
        let corrupt = |reason: String| LedgerError::Corrupt {
            key: key.to_string(),
            reason,
        };
        let probe: FormatProbe = serde_json::from_slice(bytes)
            .map_err(|e| corrupt(format!("not a ledger entry: {e}")))?;
        if probe.format != FORMAT_VERSION {
            return Err(corrupt(format!(
                "entry format {} is not supported by this Apiary (it reads format \
                 {FORMAT_VERSION}); upgrade Apiary to read this frame",
                probe.format
            )));
        }
        let entry: Entry = serde_json::from_slice(bytes)
            .map_err(|e| corrupt(format!("malformed ledger entry: {e}")))?;
        if entry.version != expected_version {
            return Err(corrupt(format!(
                "entry says it is version {} but is stored as version {expected_version}",
                entry.version
            )));
        }
        Ok(entry)
    }
}

/// Just the format field, read first so that a newer format gets a precise error.
#[derive(Deserialize)]
pub(crate) struct FormatProbe {
    pub(crate) format: u32,
}

/// The object name of a version: 20 zero-padded digits, so that name order is integer order.
pub fn version_file(version: u64) -> String {
    format!("{version:020}.json")
}

/// The version a file name stands for, if it is a version file.
pub fn parse_version_file(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".json")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_names_sort_like_integers() {
        let versions = [
            0u64,
            1,
            9,
            10,
            99,
            100,
            12345,
            u64::MAX / 2,
            u64::MAX - 1,
            u64::MAX,
        ];
        let names: Vec<String> = versions.iter().map(|v| version_file(*v)).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        for v in versions {
            assert_eq!(parse_version_file(&version_file(v)), Some(v));
        }
        assert_eq!(parse_version_file("1.json"), None);
        assert_eq!(parse_version_file("99999999999999999999.json"), None);
        assert_eq!(parse_version_file("0000000000000000000a.json"), None);
    }
}
