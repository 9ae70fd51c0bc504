//! Partitioning: splitting aligned data by the frame's partition columns into hive-style
//! folders (`country=us/day=2024-01-31/`).
//!
//! A partition value has one canonical text form, recorded in the ledger and shown in the
//! path: integers in decimal, booleans as `true`/`false`, strings as they are, dates as
//! `YYYY-MM-DD`, timestamps in ISO 8601 with their full precision (and offset when they have
//! a time zone), decimals with their scale. Parsing the text back with the column's type gives
//! the exact value. In the path, the text is escaped like Hive does (`%XX` for `/`, `=`, `%`,
//! control characters and the characters object stores advise against), so any value is a
//! safe, unambiguous path segment.

use std::collections::HashMap;
use std::fmt::Write;

use arrow_array::{Array, ArrayRef, RecordBatch, StringArray, UInt32Array};
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use arrow_cast::{CastOptions, cast_with_options};
use arrow_schema::DataType;
use arrow_select::take::take_record_batch;

use crate::error::{LedgerError, Result};

/// Bytes escaped in a path segment besides control characters and non-ASCII-safe bytes.
const ESCAPED: &[u8] = b"\"#%'*/:=?\\{}[]^`|<>~";

/// Escapes text for use as (part of) a path segment.
pub fn escape_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, ch) in text.char_indices() {
        let escape = ch.is_control()
            || (ch.is_ascii() && ESCAPED.contains(&(ch as u8)))
            // A segment must not read as `.` or `..`, nor hide as a dot file.
            || (i == 0 && ch == '.');
        if escape {
            let mut buf = [0u8; 4];
            for b in ch.encode_utf8(&mut buf).bytes() {
                let _ = write!(out, "%{b:02X}");
            }
        } else {
            out.push(ch);
        }
    }
    out
}

/// Undoes [`escape_segment`].
pub fn unescape_segment(text: &str) -> Result<String> {
    let bad = || LedgerError::Invalid(format!("`{text}` is not a validly escaped path segment"));
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3).ok_or_else(bad)?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

/// The folder of a partition, relative to the frame's data folder.
pub fn partition_dir(values: &[(String, String)]) -> String {
    values
        .iter()
        .map(|(column, value)| format!("{}={}", escape_segment(column), escape_segment(value)))
        .collect::<Vec<_>>()
        .join("/")
}

/// Whether a column of this type can partition a frame.
pub fn can_partition(data_type: &DataType) -> bool {
    use DataType::*;
    matches!(
        data_type,
        Boolean
            | Int8
            | Int16
            | Int32
            | Int64
            | UInt8
            | UInt16
            | UInt32
            | UInt64
            | Utf8
            | LargeUtf8
            | Utf8View
            | Date32
            | Date64
            | Timestamp(_, _)
            | Decimal128(_, _)
            | Decimal256(_, _)
    )
}

fn formatter(array: &dyn Array) -> Result<ArrayFormatter<'_>> {
    let options = FormatOptions::default().with_display_error(false);
    ArrayFormatter::try_new(array, &options).map_err(|e| {
        LedgerError::Invalid(format!(
            "values of type {} cannot be partition values: {e}",
            array.data_type()
        ))
    })
}

/// The canonical text of the value at `row` (which must not be null).
pub fn format_value(array: &dyn Array, row: usize) -> Result<String> {
    let f = formatter(array)?;
    let mut text = String::new();
    write!(text, "{}", f.value(row)).map_err(|_| {
        LedgerError::Invalid(format!(
            "the partition value in row {row} cannot be written as text (out of range)"
        ))
    })?;
    Ok(text)
}

/// Parses a canonical text back into a one-row array of `data_type`.
pub fn parse_value(text: &str, data_type: &DataType) -> Result<ArrayRef> {
    let strings = StringArray::from(vec![text]);
    let options = CastOptions {
        safe: false,
        ..CastOptions::default()
    };
    let parsed = cast_with_options(&strings, data_type, &options).map_err(|e| {
        LedgerError::Invalid(format!("`{text}` is not a value of type {data_type}: {e}"))
    })?;
    if parsed.is_null(0) {
        return Err(LedgerError::Invalid(format!(
            "`{text}` is not a value of type {data_type}"
        )));
    }
    Ok(parsed)
}

/// One partition of a write: its values, and its rows without the partition columns.
#[derive(Debug, Clone)]
pub struct Partition {
    /// `(column, canonical text)` in `partition_by` order.
    pub values: Vec<(String, String)>,
    /// The rows, with the partition columns removed (their values live in the ledger).
    pub batch: RecordBatch,
}

/// Splits an aligned batch by the values of its `partition_by` columns. More than
/// `max_partitions` distinct values is an error (a write that would scatter into thousands of
/// folders is almost always a mistake).
pub fn split(
    batch: &RecordBatch,
    partition_by: &[String],
    max_partitions: usize,
) -> Result<Vec<Partition>> {
    let schema = batch.schema();
    let key_columns = partition_by
        .iter()
        .map(|name| {
            schema
                .index_of(name)
                .map_err(|_| LedgerError::Invalid(format!("partition column `{name}` is missing")))
        })
        .collect::<Result<Vec<usize>>>()?;
    let data_columns: Vec<usize> = (0..schema.fields().len())
        .filter(|i| !key_columns.contains(i))
        .collect();
    let data = batch
        .project(&data_columns)
        .map_err(|e| LedgerError::Invalid(e.to_string()))?;
    if key_columns.is_empty() {
        return Ok(vec![Partition {
            values: Vec::new(),
            batch: data,
        }]);
    }
    let formatters = key_columns
        .iter()
        .map(|i| formatter(batch.column(*i).as_ref()))
        .collect::<Result<Vec<_>>>()?;
    let mut groups: HashMap<Vec<String>, Vec<u32>> = HashMap::new();
    let mut order: Vec<Vec<String>> = Vec::new();
    let mut key = Vec::with_capacity(key_columns.len());
    for row in 0..batch.num_rows() {
        key.clear();
        for (f, column) in formatters.iter().zip(&key_columns) {
            if batch.column(*column).is_null(row) {
                return Err(LedgerError::Invalid(format!(
                    "partition column `{}` is null in row {row}; partition values are never null",
                    schema.field(*column).name()
                )));
            }
            let mut text = String::new();
            write!(text, "{}", f.value(row)).map_err(|_| {
                LedgerError::Invalid(format!(
                    "the value of `{}` in row {row} cannot be a partition value (out of range)",
                    schema.field(*column).name()
                ))
            })?;
            key.push(text);
        }
        match groups.get_mut(&key) {
            Some(rows) => rows.push(row as u32),
            None => {
                if groups.len() == max_partitions {
                    return Err(LedgerError::Invalid(format!(
                        "this write would create more than {max_partitions} partitions; write \
                         fewer distinct values of {} at a time, or raise the limit",
                        partition_by.join(", ")
                    )));
                }
                order.push(key.clone());
                groups.insert(key.clone(), vec![row as u32]);
            }
        }
    }
    order
        .into_iter()
        .map(|key| {
            let rows = UInt32Array::from(groups.remove(&key).unwrap_or_default());
            let batch =
                take_record_batch(&data, &rows).map_err(|e| LedgerError::Invalid(e.to_string()))?;
            Ok(Partition {
                values: partition_by.iter().cloned().zip(key).collect(),
                batch,
            })
        })
        .collect()
}
