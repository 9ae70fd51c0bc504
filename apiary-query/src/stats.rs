//! Ledger statistics in DataFusion's terms: typed values, per-cell pruning statistics, and
//! the exact table and file statistics the planner uses for join order and `COUNT(*)`.
//!
//! Everything here is exact or absent. A bound the ledger does not know becomes "unknown",
//! never a guess, so pruning can only skip cells that cannot match.

use std::collections::HashSet;
use std::sync::Arc;

use apiary_ledger::{Cell, StatValue, cells::partition::parse_value};
use arrow_array::{ArrayRef, BooleanArray, UInt64Array};
use arrow_schema::{DataType, FieldRef, TimeUnit};
use datafusion::common::pruning::PruningStatistics;
use datafusion::common::stats::{ColumnStatistics, Precision, Statistics};
use datafusion::common::{Column, ScalarValue};

/// A statistics value as a scalar of `data_type`, if the value fits the type.
pub fn stat_scalar(value: &StatValue, data_type: &DataType) -> Option<ScalarValue> {
    use DataType as D;
    use ScalarValue as S;
    Some(match (value, data_type) {
        (StatValue::Bool(b), D::Boolean) => S::Boolean(Some(*b)),
        (StatValue::Int(i), _) => int_scalar(*i, data_type)?,
        (StatValue::UInt(u), D::UInt8) => S::UInt8(Some(u8::try_from(*u).ok()?)),
        (StatValue::UInt(u), D::UInt16) => S::UInt16(Some(u16::try_from(*u).ok()?)),
        (StatValue::UInt(u), D::UInt32) => S::UInt32(Some(u32::try_from(*u).ok()?)),
        (StatValue::UInt(u), D::UInt64) => S::UInt64(Some(*u)),
        // Recorded from the column's own values, so an f32 bound converts back exactly.
        (StatValue::Float(f), D::Float32) => S::Float32(Some(*f as f32)),
        (StatValue::Float(f), D::Float64) => S::Float64(Some(*f)),
        (StatValue::Decimal(d), D::Decimal128(p, s)) => {
            S::Decimal128(Some(d.parse().ok()?), *p, *s)
        }
        (StatValue::Str(t), D::Utf8) => S::Utf8(Some(t.clone())),
        (StatValue::Str(t), D::LargeUtf8) => S::LargeUtf8(Some(t.clone())),
        (StatValue::Str(t), D::Utf8View) => S::Utf8View(Some(t.clone())),
        (StatValue::Bytes(h), D::Binary) => S::Binary(Some(unhex(h)?)),
        (StatValue::Bytes(h), D::LargeBinary) => S::LargeBinary(Some(unhex(h)?)),
        (StatValue::Bytes(h), D::BinaryView) => S::BinaryView(Some(unhex(h)?)),
        _ => return None,
    })
}

fn int_scalar(i: i64, data_type: &DataType) -> Option<ScalarValue> {
    use DataType as D;
    use ScalarValue as S;
    let small = |v: i64| i32::try_from(v).ok();
    Some(match data_type {
        D::Int8 => S::Int8(Some(i8::try_from(i).ok()?)),
        D::Int16 => S::Int16(Some(i16::try_from(i).ok()?)),
        D::Int32 => S::Int32(Some(small(i)?)),
        D::Int64 => S::Int64(Some(i)),
        D::Date32 => S::Date32(Some(small(i)?)),
        D::Date64 => S::Date64(Some(i)),
        D::Time32(TimeUnit::Second) => S::Time32Second(Some(small(i)?)),
        D::Time32(TimeUnit::Millisecond) => S::Time32Millisecond(Some(small(i)?)),
        D::Time64(TimeUnit::Microsecond) => S::Time64Microsecond(Some(i)),
        D::Time64(TimeUnit::Nanosecond) => S::Time64Nanosecond(Some(i)),
        D::Timestamp(unit, tz) => {
            let tz = tz.clone();
            match unit {
                TimeUnit::Second => S::TimestampSecond(Some(i), tz),
                TimeUnit::Millisecond => S::TimestampMillisecond(Some(i), tz),
                TimeUnit::Microsecond => S::TimestampMicrosecond(Some(i), tz),
                TimeUnit::Nanosecond => S::TimestampNanosecond(Some(i), tz),
            }
        }
        D::Duration(TimeUnit::Second) => S::DurationSecond(Some(i)),
        D::Duration(TimeUnit::Millisecond) => S::DurationMillisecond(Some(i)),
        D::Duration(TimeUnit::Microsecond) => S::DurationMicrosecond(Some(i)),
        D::Duration(TimeUnit::Nanosecond) => S::DurationNanosecond(Some(i)),
        _ => return None,
    })
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A cell's partition value for `column` as a scalar of `data_type`.
pub fn partition_scalar(cell: &Cell, column: &str, data_type: &DataType) -> Option<ScalarValue> {
    let text = cell.partition_values.get(column)?.as_deref()?;
    let array = parse_value(text, data_type).ok()?;
    ScalarValue::try_from_array(&array, 0).ok()
}

/// What the ledger knows of one column in one cell.
#[derive(Debug, Clone, Default)]
struct Known {
    min: Option<ScalarValue>,
    max: Option<ScalarValue>,
    nulls: Option<u64>,
}

impl Known {
    fn of(cell: &Cell, field: &FieldRef, partition: bool) -> Self {
        if partition {
            let v = partition_scalar(cell, field.name(), field.data_type());
            let nulls = v.as_ref().map(|_| 0);
            return Known {
                min: v.clone(),
                max: v,
                nulls,
            };
        }
        let bound =
            |v: &Option<StatValue>| v.as_ref().and_then(|v| stat_scalar(v, field.data_type()));
        match cell.stats.get(field.name()) {
            Some(s) => Known {
                min: bound(&s.min),
                max: bound(&s.max),
                nulls: Some(s.null_count),
            },
            None => Known::default(),
        }
    }
}

/// What the ledger knows of one cell, as typed scalars: computed once per ledger version and
/// shared by every query's pruning and statistics.
#[derive(Debug, Clone)]
pub struct CellFacts {
    rows: u64,
    bytes: u64,
    /// One entry per column, in the order of the fields the facts were built for.
    columns: Vec<Known>,
}

impl CellFacts {
    /// The facts of `cell` for the columns in `fields` (`true` marks a partition column).
    pub fn new(cell: &Cell, fields: &[(FieldRef, bool)]) -> Self {
        Self {
            rows: cell.rows,
            bytes: cell.bytes,
            columns: fields
                .iter()
                .map(|(field, partition)| Known::of(cell, field, *partition))
                .collect(),
        }
    }
}

impl CellFacts {
    /// Rows in the cell.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Bytes of the cell.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The value of column `i` when it is a partition column (a cell holds one).
    pub fn partition_value(&self, i: usize) -> Option<&ScalarValue> {
        self.columns.get(i).and_then(|k| k.min.as_ref())
    }
}

/// Per-cell statistics for [`PruningPredicate`](datafusion::physical_optimizer::pruning::PruningPredicate):
/// one container per cell.
#[derive(Debug)]
pub struct CellPruningStats<'a> {
    cells: Vec<&'a CellFacts>,
    fields: &'a [(FieldRef, bool)],
}

impl<'a> CellPruningStats<'a> {
    /// Statistics of `cells`, whose facts were built for `fields`.
    pub fn new(cells: Vec<&'a CellFacts>, fields: &'a [(FieldRef, bool)]) -> Self {
        Self { cells, fields }
    }

    fn column(&self, column: &Column) -> Option<usize> {
        self.fields
            .iter()
            .position(|(f, _)| f.name() == &column.name)
    }

    fn bound(&self, column: &Column, max: bool) -> Option<ArrayRef> {
        let i = self.column(column)?;
        let null = ScalarValue::try_from(self.fields[i].0.data_type()).ok()?;
        let values = self.cells.iter().map(|c| {
            let k = &c.columns[i];
            let v = if max { &k.max } else { &k.min };
            v.clone().unwrap_or_else(|| null.clone())
        });
        ScalarValue::iter_to_array(values).ok()
    }
}

impl PruningStatistics for CellPruningStats<'_> {
    fn min_values(&self, column: &Column) -> Option<ArrayRef> {
        self.bound(column, false)
    }

    fn max_values(&self, column: &Column) -> Option<ArrayRef> {
        self.bound(column, true)
    }

    fn num_containers(&self) -> usize {
        self.cells.len()
    }

    fn null_counts(&self, column: &Column) -> Option<ArrayRef> {
        let i = self.column(column)?;
        Some(Arc::new(UInt64Array::from_iter(
            self.cells.iter().map(|c| c.columns[i].nulls),
        )))
    }

    fn row_counts(&self) -> Option<ArrayRef> {
        Some(Arc::new(UInt64Array::from_iter_values(
            self.cells.iter().map(|c| c.rows),
        )))
    }

    #[allow(clippy::mutable_key_type)] // the trait's signature
    fn contained(&self, column: &Column, values: &HashSet<ScalarValue>) -> Option<BooleanArray> {
        // Exact only for partition columns: a cell holds a single value there.
        let i = self.column(column)?;
        if !self.fields[i].1 {
            return None;
        }
        Some(BooleanArray::from_iter(self.cells.iter().map(|c| {
            c.columns[i].min.as_ref().map(|v| values.contains(v))
        })))
    }
}

/// Exact statistics of `cells` for the columns their facts were built for, in that order.
pub fn statistics(cells: &[&CellFacts], columns: usize) -> Statistics {
    let rows: u64 = cells.iter().map(|c| c.rows).sum();
    let bytes: u64 = cells.iter().map(|c| c.bytes).sum();
    Statistics {
        num_rows: Precision::Exact(usize::try_from(rows).unwrap_or(usize::MAX)),
        // Compressed bytes on storage, not in-memory size: a hint only.
        total_byte_size: Precision::Inexact(usize::try_from(bytes).unwrap_or(usize::MAX)),
        column_statistics: (0..columns).map(|i| column_statistics(cells, i)).collect(),
    }
}

fn column_statistics(cells: &[&CellFacts], i: usize) -> ColumnStatistics {
    let mut stats = ColumnStatistics::new_unknown();
    if cells.iter().all(|c| c.columns[i].nulls.is_some()) {
        let nulls: u64 = cells.iter().filter_map(|c| c.columns[i].nulls).sum();
        stats.null_count = Precision::Exact(usize::try_from(nulls).unwrap_or(usize::MAX));
    }
    // A bound is exact only when every cell with values reports one; a cell of nulls only
    // has no bound and does not widen the range.
    let mut min: Option<&ScalarValue> = None;
    let mut max: Option<&ScalarValue> = None;
    for cell in cells {
        let k = &cell.columns[i];
        match (&k.min, &k.max) {
            (Some(lo), Some(hi)) => {
                if min.is_none_or(|m| lo.partial_cmp(m) == Some(std::cmp::Ordering::Less)) {
                    min = Some(lo);
                }
                if max.is_none_or(|m| hi.partial_cmp(m) == Some(std::cmp::Ordering::Greater)) {
                    max = Some(hi);
                }
            }
            _ if k.nulls == Some(cell.rows) => {}
            _ => return stats,
        }
    }
    if let (Some(lo), Some(hi)) = (min, max) {
        stats.min_value = Precision::Exact(lo.clone());
        stats.max_value = Precision::Exact(hi.clone());
    }
    stats
}
