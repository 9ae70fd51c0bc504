//! Per-column statistics of a cell (minimum, maximum, null count), computed from the Arrow
//! data as it is written, in the typed form the ledger records.
//!
//! Minima and maxima are exact. They are left out (unknown) where an exact bound would be
//! unwieldy or undefined: strings and binaries longer than [`MAX_STAT_BYTES`], floats that
//! are NaN, and types without an order the ledger records (nested types).

use arrow_arith::aggregate;
use arrow_array::cast::AsArray;
use arrow_array::types::{
    Decimal128Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type,
    UInt32Type, UInt64Type,
};
use arrow_array::{Array, ArrayRef};
use arrow_cast::cast;
use arrow_schema::DataType;

use crate::entry::{ColumnStats, StatValue};

/// Longest string or binary bound recorded, in bytes.
pub const MAX_STAT_BYTES: usize = 64;

/// Accumulates one column's statistics over the batches of a cell.
#[derive(Debug, Clone)]
pub struct StatsBuilder {
    data_type: DataType,
    min: Option<StatValue>,
    max: Option<StatValue>,
    null_count: u64,
    /// A value was seen whose bound cannot be recorded: min/max stay unknown.
    unbounded: bool,
}

fn ordered(a: &StatValue, b: &StatValue) -> Option<std::cmp::Ordering> {
    use StatValue::*;
    match (a, b) {
        (Bool(x), Bool(y)) => Some(x.cmp(y)),
        (Int(x), Int(y)) => Some(x.cmp(y)),
        (UInt(x), UInt(y)) => Some(x.cmp(y)),
        (Float(x), Float(y)) => x.partial_cmp(y),
        (Decimal(x), Decimal(y)) => Some(x.parse::<i128>().ok()?.cmp(&y.parse::<i128>().ok()?)),
        (Str(x), Str(y)) => Some(x.cmp(y)),
        (Bytes(x), Bytes(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The (min, max) of the non-null values, or `None` when unknown or all null.
fn bounds(array: &ArrayRef) -> Result<Option<(StatValue, StatValue)>, ()> {
    use DataType::*;
    if array.null_count() == array.len() {
        return Ok(None);
    }
    macro_rules! prim {
        ($t:ty, $variant:ident, $conv:expr) => {{
            let a = array.as_primitive::<$t>();
            match (aggregate::min(a), aggregate::max(a)) {
                (Some(lo), Some(hi)) => Some((
                    StatValue::$variant($conv(lo)),
                    StatValue::$variant($conv(hi)),
                )),
                _ => None,
            }
        }};
    }
    Ok(match array.data_type() {
        Boolean => {
            let a = array.as_boolean();
            match (aggregate::min_boolean(a), aggregate::max_boolean(a)) {
                (Some(lo), Some(hi)) => Some((StatValue::Bool(lo), StatValue::Bool(hi))),
                _ => None,
            }
        }
        Int8 => prim!(Int8Type, Int, i64::from),
        Int16 => prim!(Int16Type, Int, i64::from),
        Int32 => prim!(Int32Type, Int, i64::from),
        Int64 => prim!(Int64Type, Int, |x| x),
        UInt8 => prim!(UInt8Type, UInt, u64::from),
        UInt16 => prim!(UInt16Type, UInt, u64::from),
        UInt32 => prim!(UInt32Type, UInt, u64::from),
        UInt64 => prim!(UInt64Type, UInt, |x| x),
        Float16 | Float32 | Float64 => {
            // Every float widens exactly to f64; NaN leaves the bounds unknown.
            let wide = cast(array, &Float64).map_err(|_| ())?;
            let a = wide.as_primitive::<Float64Type>();
            match (aggregate::min(a), aggregate::max(a)) {
                (Some(lo), Some(hi)) if !lo.is_nan() && !hi.is_nan() => {
                    Some((StatValue::Float(lo), StatValue::Float(hi)))
                }
                (Some(_), Some(_)) => return Err(()),
                _ => None,
            }
        }
        Date32 | Date64 | Timestamp(_, _) | Time32(_) | Time64(_) | Duration(_) => {
            let ints = cast(array, &Int64).map_err(|_| ())?;
            let a = ints.as_primitive::<Int64Type>();
            match (aggregate::min(a), aggregate::max(a)) {
                (Some(lo), Some(hi)) => Some((StatValue::Int(lo), StatValue::Int(hi))),
                _ => None,
            }
        }
        Decimal128(_, _) => prim!(Decimal128Type, Decimal, |x: i128| x.to_string()),
        Utf8 | LargeUtf8 | Utf8View => {
            let strings = cast(array, &Utf8).map_err(|_| ())?;
            let a = strings.as_string::<i32>();
            match (aggregate::min_string(a), aggregate::max_string(a)) {
                (Some(lo), Some(hi))
                    if lo.len() <= MAX_STAT_BYTES && hi.len() <= MAX_STAT_BYTES =>
                {
                    Some((
                        StatValue::Str(lo.to_string()),
                        StatValue::Str(hi.to_string()),
                    ))
                }
                _ => return Err(()),
            }
        }
        Binary | LargeBinary | BinaryView => {
            let bins = cast(array, &Binary).map_err(|_| ())?;
            let a = bins.as_binary::<i32>();
            match (aggregate::min_binary(a), aggregate::max_binary(a)) {
                (Some(lo), Some(hi))
                    if lo.len() <= MAX_STAT_BYTES && hi.len() <= MAX_STAT_BYTES =>
                {
                    Some((StatValue::Bytes(hex(lo)), StatValue::Bytes(hex(hi))))
                }
                _ => return Err(()),
            }
        }
        _ => return Err(()),
    })
}

impl StatsBuilder {
    /// A builder for a column of `data_type`.
    pub fn new(data_type: DataType) -> Self {
        Self {
            data_type,
            min: None,
            max: None,
            null_count: 0,
            unbounded: false,
        }
    }

    /// Adds a batch's column.
    pub fn update(&mut self, array: &ArrayRef) {
        debug_assert_eq!(array.data_type(), &self.data_type);
        self.null_count += array.null_count() as u64;
        if self.unbounded {
            return;
        }
        match bounds(array) {
            Err(()) => {
                self.unbounded = true;
                self.min = None;
                self.max = None;
            }
            Ok(None) => {}
            Ok(Some((lo, hi))) => {
                let lower = match &self.min {
                    Some(m) => ordered(&lo, m) == Some(std::cmp::Ordering::Less),
                    None => true,
                };
                if lower {
                    self.min = Some(lo);
                }
                let higher = match &self.max {
                    Some(m) => ordered(&hi, m) == Some(std::cmp::Ordering::Greater),
                    None => true,
                };
                if higher {
                    self.max = Some(hi);
                }
            }
        }
    }

    /// The statistics.
    pub fn finish(self) -> ColumnStats {
        ColumnStats {
            min: self.min,
            max: self.max,
            null_count: self.null_count,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{Float32Array, Float64Array, StringArray};

    use super::*;

    fn stats(array: ArrayRef) -> ColumnStats {
        let mut b = StatsBuilder::new(array.data_type().clone());
        b.update(&array);
        b.finish()
    }

    #[test]
    fn floats_strings_and_nulls() {
        let s = stats(Arc::new(Float32Array::from(vec![
            Some(1.5),
            None,
            Some(-2.0),
        ])));
        assert_eq!(s.min, Some(StatValue::Float(-2.0)));
        assert_eq!(s.max, Some(StatValue::Float(1.5)));
        assert_eq!(s.null_count, 1);
        let s = stats(Arc::new(Float64Array::from(vec![1.0, f64::NAN])));
        assert_eq!(
            (s.min, s.max),
            (None, None),
            "NaN leaves the bounds unknown"
        );
        let long = "x".repeat(MAX_STAT_BYTES + 1);
        let s = stats(Arc::new(StringArray::from(vec!["b", long.as_str()])));
        assert_eq!(
            (s.min, s.max),
            (None, None),
            "over-long strings leave bounds unknown"
        );
        let s = stats(Arc::new(StringArray::from(vec![
            Some("b"),
            Some("a"),
            None,
        ])));
        assert_eq!(s.min, Some(StatValue::Str("a".into())));
        assert_eq!(s.max, Some(StatValue::Str("b".into())));
    }
}
