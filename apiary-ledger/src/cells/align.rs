//! Aligning incoming Arrow data to a frame's schema, by column name, never by position.
//!
//! Columns are matched by name and put in the frame's order; safe widenings are cast
//! (`int32` → `int64`, `float32` → `float64`, `utf8` ↔ `large_utf8`, dictionary-encoded
//! values to their value type, a coarser timestamp to a finer one, …); missing nullable
//! columns are filled with nulls. Everything else is refused, with every problem named at
//! once: an incompatible type (with the expected and found types), a missing required
//! column, an unknown column, nulls in a required column (partition columns are required).

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch, new_null_array};
use arrow_cast::{CastOptions, cast_with_options};
use arrow_schema::{DataType, Schema, SchemaRef, TimeUnit};

use crate::entry::FrameDefinition;
use crate::error::{LedgerError, Result};
use crate::schema::format_type;

/// Where each frame column comes from in an incoming batch.
#[derive(Debug, Clone)]
enum Source {
    /// Column `index` of the input, cast to the frame type when `cast` is set.
    Column { index: usize, cast: bool },
    /// Absent from the input: all nulls.
    Nulls,
}

/// The alignment of one incoming schema to a frame's schema, checked once and applied to
/// every batch of a write.
#[derive(Debug, Clone)]
pub struct Alignment {
    target: SchemaRef,
    sources: Vec<Source>,
    /// Per target column: whether it is a partition column (for messages).
    partition: Vec<bool>,
}

fn describe(data_type: &DataType) -> String {
    format_type(data_type).unwrap_or_else(|_| data_type.to_string())
}

fn int_rank(t: &DataType) -> Option<(bool, u8)> {
    use DataType::*;
    Some(match t {
        Int8 => (true, 8),
        Int16 => (true, 16),
        Int32 => (true, 32),
        Int64 => (true, 64),
        UInt8 => (false, 8),
        UInt16 => (false, 16),
        UInt32 => (false, 32),
        UInt64 => (false, 64),
        _ => return None,
    })
}

fn unit_rank(u: &TimeUnit) -> u8 {
    match u {
        TimeUnit::Second => 0,
        TimeUnit::Millisecond => 1,
        TimeUnit::Microsecond => 2,
        TimeUnit::Nanosecond => 3,
    }
}

/// Whether every value of `from` is exactly representable as `to`.
pub fn is_safe_widening(from: &DataType, to: &DataType) -> bool {
    use DataType::*;
    if from == to {
        return true;
    }
    if let (Some((fs, fb)), Some((ts, tb))) = (int_rank(from), int_rank(to)) {
        return match (fs, ts) {
            (true, true) | (false, false) => tb >= fb,
            (false, true) => tb > fb,
            (true, false) => false,
        };
    }
    match (from, to) {
        (Null, _) => true,
        (Dictionary(_, value), to) => is_safe_widening(value, to),
        (Float16, Float32 | Float64) | (Float32, Float64) => true,
        (Int8 | Int16 | UInt8 | UInt16, Float32 | Float64) => true,
        (Int32 | UInt32, Float64) => true,
        (Utf8 | Utf8View, Utf8 | LargeUtf8 | Utf8View) => true,
        // Large (64-bit offset) strings keep every value in 32-bit offsets; only a batch
        // holding over 2 GiB of text cannot, and the checked cast refuses it with an error.
        // pandas and pyarrow's `large_string` data write to `utf8` frames this way.
        (LargeUtf8, Utf8 | LargeUtf8 | Utf8View) => true,
        (Binary | BinaryView, Binary | LargeBinary | BinaryView) => true,
        (LargeBinary, Binary | LargeBinary | BinaryView) => true,
        (Date32, Date64) => true,
        (Timestamp(fu, ftz), Timestamp(tu, ttz)) => ftz == ttz && unit_rank(tu) >= unit_rank(fu),
        (Time32(fu), Time32(tu)) => unit_rank(tu) >= unit_rank(fu),
        (Time32(_), Time64(_)) => true,
        (Time64(fu), Time64(tu)) => unit_rank(tu) >= unit_rank(fu),
        (Duration(fu), Duration(tu)) => unit_rank(tu) >= unit_rank(fu),
        (Decimal128(fp, fs), Decimal128(tp, ts) | Decimal256(tp, ts)) => {
            ts >= fs && i16::from(*tp) - i16::from(*ts) >= i16::from(*fp) - i16::from(*fs)
        }
        (Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 | UInt64, Decimal128(p, s)) => {
            let digits = match from {
                Int8 | UInt8 => 3,
                Int16 | UInt16 => 5,
                Int32 | UInt32 => 10,
                _ => 20,
            };
            i16::from(*p) - i16::from(*s) >= digits
        }
        _ => false,
    }
}

impl Alignment {
    /// Checks `incoming` against the frame and plans the alignment. Every problem is
    /// reported in one error.
    pub fn plan(definition: &FrameDefinition, incoming: &Schema) -> Result<Self> {
        let target = Arc::new(definition.schema.to_arrow()?);
        let mut by_name: HashMap<&str, usize> = HashMap::new();
        let mut problems = Vec::new();
        for (i, field) in incoming.fields().iter().enumerate() {
            if by_name.insert(field.name().as_str(), i).is_some() {
                problems.push(format!(
                    "column `{}` appears twice in the input",
                    field.name()
                ));
            }
        }
        let mut sources = Vec::with_capacity(target.fields().len());
        for field in target.fields() {
            match by_name.remove(field.name().as_str()) {
                Some(index) => {
                    let found = incoming.field(index).data_type();
                    if !is_safe_widening(found, field.data_type()) {
                        problems.push(format!(
                            "column `{}`: expected {}, found {} (only widening conversions are \
                             applied; cast it before writing)",
                            field.name(),
                            describe(field.data_type()),
                            describe(found)
                        ));
                    }
                    sources.push(Source::Column {
                        index,
                        cast: found != field.data_type(),
                    });
                }
                None if field.is_nullable() => sources.push(Source::Nulls),
                None => {
                    let partition = if definition.partition_by.contains(field.name()) {
                        "partition "
                    } else {
                        ""
                    };
                    problems.push(format!(
                        "required {partition}column `{}` ({}) is missing",
                        field.name(),
                        describe(field.data_type())
                    ))
                }
            }
        }
        let mut unknown: Vec<&str> = by_name.into_keys().collect();
        unknown.sort_unstable();
        for name in unknown {
            problems.push(format!(
                "column `{name}` is not in the frame (its columns: {}); add it with add_column first",
                target
                    .fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if problems.is_empty() {
            let partition = target
                .fields()
                .iter()
                .map(|f| definition.partition_by.contains(f.name()))
                .collect();
            Ok(Self {
                target,
                sources,
                partition,
            })
        } else {
            Err(LedgerError::Invalid(format!(
                "the data does not fit the frame: {}; nothing was written",
                problems.join("; ")
            )))
        }
    }

    /// The frame's Arrow schema, which aligned batches have.
    pub fn schema(&self) -> &SchemaRef {
        &self.target
    }

    /// Aligns one batch (its schema must be the one planned for).
    pub fn apply(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let rows = batch.num_rows();
        let options = CastOptions {
            safe: false,
            ..CastOptions::default()
        };
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.sources.len());
        for ((field, source), partition) in self
            .target
            .fields()
            .iter()
            .zip(&self.sources)
            .zip(&self.partition)
        {
            let column = match source {
                Source::Nulls => new_null_array(field.data_type(), rows),
                Source::Column { index, cast: false } => Arc::clone(batch.column(*index)),
                Source::Column { index, cast: true } => {
                    cast_with_options(batch.column(*index), field.data_type(), &options).map_err(
                        |e| {
                            LedgerError::Invalid(format!(
                                "column `{}` cannot be converted to {}: {e}; nothing was written",
                                field.name(),
                                describe(field.data_type())
                            ))
                        },
                    )?
                }
            };
            if !field.is_nullable() && column.null_count() > 0 {
                let why = if *partition {
                    "a partition column, so it never takes null"
                } else {
                    "NOT NULL"
                };
                return Err(LedgerError::Invalid(format!(
                    "column `{}` is {why}, but {} of {rows} rows are null; nothing was written",
                    field.name(),
                    column.null_count()
                )));
            }
            columns.push(column);
        }
        RecordBatch::try_new(Arc::clone(&self.target), columns)
            .map_err(|e| LedgerError::Invalid(format!("aligned batch is invalid: {e}")))
    }
}
