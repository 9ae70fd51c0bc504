//! Frame schemas: ordered, named, typed columns, and the text form of their types.

use std::collections::HashSet;

use arrow_schema::{DataType, Field, Schema, TimeUnit};
use serde::{Deserialize, Serialize};

use crate::error::{LedgerError, Result};

/// One column of a frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    /// Column name.
    pub name: String,
    /// Arrow type, in the text form of [`format_type`] (for example `int64`,
    /// `timestamp(us, UTC)`, `decimal128(10, 2)`).
    #[serde(rename = "type")]
    pub data_type: String,
    /// Whether the column accepts nulls.
    pub nullable: bool,
}

impl Column {
    /// A column from an Arrow type; fails for types Apiary does not store yet.
    pub fn new(name: &str, data_type: &DataType, nullable: bool) -> Result<Self> {
        Ok(Self {
            name: name.to_string(),
            data_type: format_type(data_type)?,
            nullable,
        })
    }

    /// The column's Arrow type.
    pub fn arrow_type(&self) -> Result<DataType> {
        parse_type(&self.data_type)
    }
}

/// The schema of a frame: its columns, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrameSchema {
    /// Columns in order.
    pub columns: Vec<Column>,
}

impl FrameSchema {
    /// Builds and validates a schema.
    pub fn new(columns: Vec<Column>) -> Result<Self> {
        let schema = Self { columns };
        schema.validate()?;
        Ok(schema)
    }

    /// Parses the compact form `name:type[ NOT NULL],...` used on the command line. Commas
    /// inside parentheses (`decimal128(10, 2)`) belong to the type.
    pub fn parse_compact(text: &str) -> Result<Self> {
        let mut columns = Vec::new();
        for item in split_top_level(text) {
            let item = item.trim();
            let Some((name, ty)) = item.split_once(':') else {
                return Err(LedgerError::Invalid(format!(
                    "schema item `{item}` is not `name:type` (for example `event_id:int64,page:utf8`)"
                )));
            };
            let ty = ty.trim();
            let (ty, nullable) = match ty.len().checked_sub(" not null".len()) {
                Some(cut)
                    if ty.is_char_boundary(cut) && ty[cut..].eq_ignore_ascii_case(" not null") =>
                {
                    (ty[..cut].trim(), false)
                }
                _ => (ty, true),
            };
            let data_type = parse_type(ty)?;
            columns.push(Column::new(name.trim(), &data_type, nullable)?);
        }
        Self::new(columns)
    }

    /// Checks column names (non-empty, unique, no control characters) and types.
    pub fn validate(&self) -> Result<()> {
        if self.columns.is_empty() {
            return Err(LedgerError::Invalid(
                "a frame needs at least one column".into(),
            ));
        }
        let mut seen = HashSet::new();
        for c in &self.columns {
            if c.name.is_empty() || c.name.len() > 255 || c.name.chars().any(char::is_control) {
                return Err(LedgerError::Invalid(format!(
                    "column name {:?} must be 1 to 255 bytes without control characters",
                    c.name
                )));
            }
            if !seen.insert(c.name.as_str()) {
                return Err(LedgerError::Invalid(format!(
                    "column `{}` appears twice",
                    c.name
                )));
            }
            c.arrow_type()?;
        }
        Ok(())
    }

    /// The column called `name`.
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// The Arrow schema.
    pub fn to_arrow(&self) -> Result<Schema> {
        let fields = self
            .columns
            .iter()
            .map(|c| Ok(Field::new(&c.name, c.arrow_type()?, c.nullable)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Schema::new(fields))
    }

    /// A schema from an Arrow schema.
    pub fn from_arrow(schema: &Schema) -> Result<Self> {
        let columns = schema
            .fields()
            .iter()
            .map(|f| Column::new(f.name(), f.data_type(), f.is_nullable()))
            .collect::<Result<Vec<_>>>()?;
        Self::new(columns)
    }
}

fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, ch) in text.char_indices() {
        match ch {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

const TYPE_FORMS: &str = "boolean, int8/16/32/64, uint8/16/32/64, float16/32/64, utf8, \
large_utf8, binary, large_binary, date32, date64, timestamp(s|ms|us|ns[, TZ]), \
time32(s|ms), time64(us|ns), duration(s|ms|us|ns), decimal128(P, S), decimal256(P, S)";

fn unit_name(unit: &TimeUnit) -> &'static str {
    match unit {
        TimeUnit::Second => "s",
        TimeUnit::Millisecond => "ms",
        TimeUnit::Microsecond => "us",
        TimeUnit::Nanosecond => "ns",
    }
}

/// The canonical text form of an Arrow type, or an error for types not stored yet.
pub fn format_type(data_type: &DataType) -> Result<String> {
    use DataType::*;
    Ok(match data_type {
        Boolean => "boolean".into(),
        Int8 => "int8".into(),
        Int16 => "int16".into(),
        Int32 => "int32".into(),
        Int64 => "int64".into(),
        UInt8 => "uint8".into(),
        UInt16 => "uint16".into(),
        UInt32 => "uint32".into(),
        UInt64 => "uint64".into(),
        Float16 => "float16".into(),
        Float32 => "float32".into(),
        Float64 => "float64".into(),
        Utf8 => "utf8".into(),
        LargeUtf8 => "large_utf8".into(),
        Binary => "binary".into(),
        LargeBinary => "large_binary".into(),
        Date32 => "date32".into(),
        Date64 => "date64".into(),
        Timestamp(unit, None) => format!("timestamp({})", unit_name(unit)),
        Timestamp(unit, Some(tz)) => format!("timestamp({}, {tz})", unit_name(unit)),
        Time32(unit @ (TimeUnit::Second | TimeUnit::Millisecond)) => {
            format!("time32({})", unit_name(unit))
        }
        Time64(unit @ (TimeUnit::Microsecond | TimeUnit::Nanosecond)) => {
            format!("time64({})", unit_name(unit))
        }
        Duration(unit) => format!("duration({})", unit_name(unit)),
        Decimal128(p, s) => format!("decimal128({p}, {s})"),
        Decimal256(p, s) => format!("decimal256({p}, {s})"),
        other => {
            return Err(LedgerError::Invalid(format!(
                "the Arrow type {other} cannot be stored in a frame yet; supported: {TYPE_FORMS}"
            )));
        }
    })
}

fn parse_unit(text: &str) -> Option<TimeUnit> {
    match text.trim() {
        "s" => Some(TimeUnit::Second),
        "ms" => Some(TimeUnit::Millisecond),
        "us" => Some(TimeUnit::Microsecond),
        "ns" => Some(TimeUnit::Nanosecond),
        _ => None,
    }
}

/// Parses a type's text form (case-insensitive; common SQL aliases such as `string`,
/// `bigint`, `double` and `timestamp` are accepted).
pub fn parse_type(text: &str) -> Result<DataType> {
    let bad = || {
        LedgerError::Invalid(format!(
            "unknown column type `{text}`; supported: {TYPE_FORMS}"
        ))
    };
    let lower = text.trim().to_ascii_lowercase();
    let (head, args) = match lower.split_once('(') {
        Some((head, rest)) => {
            let args = rest.strip_suffix(')').ok_or_else(bad)?;
            (head.trim(), Some(args))
        }
        None => (lower.as_str(), None),
    };
    let plain = |t: DataType| if args.is_none() { Ok(t) } else { Err(bad()) };
    match head {
        "boolean" | "bool" => plain(DataType::Boolean),
        "int8" | "tinyint" => plain(DataType::Int8),
        "int16" | "smallint" => plain(DataType::Int16),
        "int32" | "int" | "integer" => plain(DataType::Int32),
        "int64" | "bigint" => plain(DataType::Int64),
        "uint8" => plain(DataType::UInt8),
        "uint16" => plain(DataType::UInt16),
        "uint32" => plain(DataType::UInt32),
        "uint64" => plain(DataType::UInt64),
        "float16" | "halffloat" => plain(DataType::Float16),
        "float32" | "float" | "real" => plain(DataType::Float32),
        "float64" | "double" => plain(DataType::Float64),
        "utf8" | "string" | "text" | "varchar" => plain(DataType::Utf8),
        "large_utf8" | "large_string" => plain(DataType::LargeUtf8),
        "binary" | "bytes" => plain(DataType::Binary),
        "large_binary" => plain(DataType::LargeBinary),
        "date32" | "date" => plain(DataType::Date32),
        "date64" => plain(DataType::Date64),
        "timestamp" => {
            let Some(args) = args else {
                return Ok(DataType::Timestamp(TimeUnit::Microsecond, None));
            };
            // The time zone keeps its original case.
            let original = text.trim();
            let inner = &original[original.find('(').ok_or_else(bad)? + 1..original.len() - 1];
            let (unit, tz) = match inner.split_once(',') {
                Some((u, tz)) => (u, Some(tz.trim())),
                None => (inner, None),
            };
            let unit = parse_unit(&unit.to_ascii_lowercase()).ok_or_else(bad)?;
            let _ = args;
            match tz {
                Some("") => Err(bad()),
                Some(tz) => Ok(DataType::Timestamp(unit, Some(tz.into()))),
                None => Ok(DataType::Timestamp(unit, None)),
            }
        }
        "time32" => match args.and_then(parse_unit) {
            Some(u @ (TimeUnit::Second | TimeUnit::Millisecond)) => Ok(DataType::Time32(u)),
            _ => Err(bad()),
        },
        "time64" => match args.and_then(parse_unit) {
            Some(u @ (TimeUnit::Microsecond | TimeUnit::Nanosecond)) => Ok(DataType::Time64(u)),
            _ => Err(bad()),
        },
        "duration" => args
            .and_then(parse_unit)
            .map(DataType::Duration)
            .ok_or_else(bad),
        "decimal128" | "decimal" | "decimal256" => {
            let (p, s) = args.and_then(|a| a.split_once(',')).ok_or_else(bad)?;
            let p: u8 = p.trim().parse().map_err(|_| bad())?;
            let s: i8 = s.trim().parse().map_err(|_| bad())?;
            let wide = head == "decimal256";
            let max = if wide { 76 } else { 38 };
            if p == 0 || p > max || i16::from(s) > i16::from(p) {
                return Err(LedgerError::Invalid(format!(
                    "`{text}`: precision must be 1 to {max} and scale at most the precision"
                )));
            }
            Ok(if wide {
                DataType::Decimal256(p, s)
            } else {
                DataType::Decimal128(p, s)
            })
        }
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_round_trip() {
        for t in [
            "boolean",
            "int8",
            "int64",
            "uint32",
            "float64",
            "utf8",
            "large_utf8",
            "binary",
            "date32",
            "timestamp(us)",
            "timestamp(ns, Europe/Paris)",
            "time32(ms)",
            "time64(ns)",
            "duration(s)",
            "decimal128(10, 2)",
            "decimal256(40, -2)",
        ] {
            let parsed = parse_type(t).unwrap();
            assert_eq!(format_type(&parsed).unwrap(), t);
        }
        assert_eq!(parse_type("BIGINT").unwrap(), DataType::Int64);
        assert_eq!(parse_type("string").unwrap(), DataType::Utf8);
    }

    #[test]
    fn rejects_bad_types() {
        for t in [
            "",
            "int65",
            "timestamp(xs)",
            "decimal128(0, 0)",
            "decimal128(5, 6)",
            "utf8(3)",
        ] {
            let err = parse_type(t).unwrap_err().to_string();
            assert!(err.contains(t) || err.contains("precision"), "{t}: {err}");
        }
        assert!(
            format_type(&DataType::List(
                Field::new("x", DataType::Int8, true).into()
            ))
            .is_err()
        );
    }

    #[test]
    fn parses_compact_schemas() {
        let s = FrameSchema::parse_compact(
            "event_id:int64 NOT NULL, price:decimal128(10, 2),country:utf8",
        )
        .unwrap();
        assert_eq!(s.columns.len(), 3);
        assert!(!s.columns[0].nullable);
        assert_eq!(s.columns[1].data_type, "decimal128(10, 2)");
        assert!(FrameSchema::parse_compact("a:int64,a:utf8").is_err());
        assert!(FrameSchema::parse_compact("a").is_err());
        assert!(FrameSchema::parse_compact("").is_err());
        let arrow = s.to_arrow().unwrap();
        assert_eq!(FrameSchema::from_arrow(&arrow).unwrap(), s);
    }
}
