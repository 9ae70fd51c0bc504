//! Alignment of incoming data to a frame by column name, and hive-style partitioning with
//! exact round trips of partition values.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use apiary_ledger::cells::partition::{can_partition, unescape_segment};
use apiary_ledger::cells::{
    Alignment, escape_segment, format_value, is_safe_widening, parse_value, partition_dir, split,
};
use apiary_ledger::{FrameDefinition, FrameSchema, LedgerError};
use arrow_array::types::Int32Type;
use arrow_array::{
    Array, ArrayRef, BooleanArray, Date32Array, Decimal128Array, DictionaryArray, Float32Array,
    Int8Array, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
    TimestampNanosecondArray, TimestampSecondArray, UInt16Array, UInt64Array,
};
use arrow_cast::cast;
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use proptest::prelude::*;

fn clicks() -> FrameDefinition {
    FrameDefinition::new(
        FrameSchema::parse_compact(
            "event_id:int64,user_id:utf8,page:large_utf8,duration_ms:float64,at:timestamp(us),country:utf8",
        )
        .unwrap(),
        vec!["country".into()],
    )
    .unwrap()
}

fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
    let fields: Vec<Field> = columns
        .iter()
        .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
        .collect();
    RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns.into_iter().map(|(_, a)| a).collect(),
    )
    .unwrap()
}

fn invalid(err: LedgerError) -> String {
    match err {
        LedgerError::Invalid(m) => m,
        other => panic!("expected Invalid, got {other}"),
    }
}

#[test]
fn columns_are_matched_by_name_and_widened() {
    let dictionary: DictionaryArray<Int32Type> =
        vec!["/home", "/docs", "/home"].into_iter().collect();
    // Out of order, narrower types, `user_id` missing (nullable), `page` dictionary-encoded.
    let input = batch(vec![
        (
            "country",
            Arc::new(StringArray::from(vec!["us", "de", "us"])) as ArrayRef,
        ),
        (
            "duration_ms",
            Arc::new(Float32Array::from(vec![1.5, 2.0, 3.25])),
        ),
        ("at", Arc::new(TimestampSecondArray::from(vec![0, 1, 2]))),
        ("page", Arc::new(dictionary)),
        ("event_id", Arc::new(Int32Array::from(vec![7, 8, 9]))),
    ]);
    let def = clicks();
    let plan = Alignment::plan(&def, &input.schema()).unwrap();
    let out = plan.apply(&input).unwrap();
    let schema = out.schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(
        names,
        [
            "event_id",
            "user_id",
            "page",
            "duration_ms",
            "at",
            "country"
        ]
    );
    let ids = out.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
    assert_eq!(ids.values(), &[7, 8, 9]);
    assert_eq!(
        out.column(1).null_count(),
        3,
        "missing nullable column is all nulls"
    );
    assert_eq!(out.column(2).data_type(), &DataType::LargeUtf8);
    let at = out
        .column(4)
        .as_any()
        .downcast_ref::<TimestampMicrosecondArray>()
        .unwrap();
    assert_eq!(at.values(), &[0, 1_000_000, 2_000_000]);
    let country = out
        .column(5)
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap();
    assert_eq!(country.value(1), "de");
}

#[test]
fn bad_input_names_every_problem() {
    let input = batch(vec![
        (
            "event_id",
            Arc::new(StringArray::from(vec!["x"])) as ArrayRef,
        ),
        ("duration_ms", Arc::new(Int64Array::from(vec![1]))),
        ("referrer", Arc::new(StringArray::from(vec!["y"]))),
    ]);
    let msg = invalid(Alignment::plan(&clicks(), &input.schema()).unwrap_err());
    for needle in [
        "column `event_id`: expected int64, found utf8",
        "column `duration_ms`: expected float64, found int64",
        "required partition column `country` (utf8) is missing",
        "column `referrer` is not in the frame",
        "nothing was written",
    ] {
        assert!(msg.contains(needle), "`{needle}` in: {msg}");
    }
    let twice = Schema::new(vec![
        Field::new("country", DataType::Utf8, false),
        Field::new("country", DataType::Utf8, false),
    ]);
    let msg = invalid(Alignment::plan(&clicks(), &twice).unwrap_err());
    assert!(msg.contains("`country` appears twice"), "{msg}");
}

#[test]
fn nulls_in_required_columns_are_refused() {
    let input = batch(vec![
        (
            "event_id",
            Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef,
        ),
        (
            "country",
            Arc::new(StringArray::from(vec![Some("us"), None])),
        ),
    ]);
    let plan = Alignment::plan(&clicks(), &input.schema()).unwrap();
    let msg = invalid(plan.apply(&input).unwrap_err());
    assert!(msg.contains("`country` is a partition column"), "{msg}");
    assert!(msg.contains("1 of 2 rows are null"), "{msg}");
}

#[test]
fn widening_table() {
    use DataType::*;
    let safe = [
        (Int8, Int64),
        (UInt32, Int64),
        (UInt8, UInt64),
        (Int16, Float32),
        (Int32, Float64),
        (Float32, Float64),
        (Utf8, LargeUtf8),
        (LargeUtf8, Utf8),
        (LargeBinary, Binary),
        (Date32, Date64),
        (Null, Utf8),
        (
            Timestamp(TimeUnit::Second, None),
            Timestamp(TimeUnit::Nanosecond, None),
        ),
        (Decimal128(10, 2), Decimal128(12, 3)),
        (Int32, Decimal128(12, 2)),
    ];
    for (from, to) in safe {
        assert!(is_safe_widening(&from, &to), "{from} -> {to}");
    }
    let unsafe_ = [
        (Int64, Int32),
        (Int64, Float64),
        (Int8, UInt64),
        (UInt64, Int64),
        (Float64, Float32),
        (Utf8, Int64),
        (LargeUtf8, Binary),
        (
            Timestamp(TimeUnit::Microsecond, None),
            Timestamp(TimeUnit::Second, None),
        ),
        (
            Timestamp(TimeUnit::Second, None),
            Timestamp(TimeUnit::Second, Some("UTC".into())),
        ),
        (Decimal128(10, 2), Decimal128(10, 3)),
        (Int32, Decimal128(10, 2)),
    ];
    for (from, to) in unsafe_ {
        assert!(!is_safe_widening(&from, &to), "{from} -> {to}");
    }
}

fn all_widening_pairs() -> Vec<(DataType, DataType)> {
    use DataType::*;
    let ints = [Int8, Int16, Int32, Int64, UInt8, UInt16, UInt32, UInt64];
    let mut pairs = Vec::new();
    for a in &ints {
        for b in ints.iter().chain(&[Float32, Float64, Decimal128(38, 0)]) {
            if is_safe_widening(a, b) {
                pairs.push((a.clone(), b.clone()));
            }
        }
    }
    pairs
}

proptest! {
    /// Every integer widening declared safe is lossless: casting back gives the same values.
    #[test]
    fn declared_widenings_are_lossless(values in prop::collection::vec(any::<i64>(), 1..50)) {
        for (from, to) in all_widening_pairs() {
            let source = cast(&(Arc::new(Int64Array::from(values.clone())) as ArrayRef), &from);
            let Ok(source) = source else { continue };
            let widened = cast(&source, &to).unwrap();
            let back = cast(&widened, &from).unwrap();
            prop_assert_eq!(source.to_data(), back.to_data(), "{} -> {}", from, to);
        }
    }

    #[test]
    fn segments_escape_and_round_trip(text in any::<String>()) {
        let escaped = escape_segment(&text);
        prop_assert_eq!(unescape_segment(&escaped).unwrap(), text.clone());
        prop_assert!(!escaped.contains('/') && !escaped.contains('='));
        prop_assert!(!escaped.chars().any(char::is_control));
        let dir = partition_dir(&[("country".into(), text)]);
        prop_assert!(apiary_storage::Path::parse(&dir).is_ok(), "{}", dir);
    }

    #[test]
    fn partition_values_round_trip_exactly(
        i in any::<i64>(),
        u in any::<u64>(),
        s in any::<String>(),
        b in any::<bool>(),
        day in -700_000i32..2_900_000,
        micros in -9_000_000_000_000_000i64..9_000_000_000_000_000,
        nanos in any::<i64>(),
        cents in -99_999_999_999i128..99_999_999_999,
    ) {
        let cases: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(vec![i])),
            Arc::new(UInt64Array::from(vec![u])),
            Arc::new(Int8Array::from(vec![i as i8])),
            Arc::new(UInt16Array::from(vec![u as u16])),
            Arc::new(StringArray::from(vec![s.as_str()])),
            Arc::new(BooleanArray::from(vec![b])),
            Arc::new(Date32Array::from(vec![day])),
            Arc::new(TimestampMicrosecondArray::from(vec![micros])),
            Arc::new(TimestampMicrosecondArray::from(vec![micros]).with_timezone("UTC")),
            Arc::new(TimestampMicrosecondArray::from(vec![micros]).with_timezone("+05:30")),
            Arc::new(TimestampNanosecondArray::from(vec![nanos])),
            Arc::new(Decimal128Array::from(vec![cents]).with_precision_and_scale(13, 2).unwrap()),
        ];
        for array in cases {
            prop_assert!(can_partition(array.data_type()));
            let text = format_value(array.as_ref(), 0).unwrap();
            let back = parse_value(&text, array.data_type()).unwrap();
            prop_assert_eq!(back.to_data(), array.to_data(), "{} via `{}`", array.data_type(), text);
        }
    }
}

#[test]
fn splits_by_partition_and_drops_partition_columns() {
    let def = FrameDefinition::new(
        FrameSchema::parse_compact("id:int64,country:utf8,day:date32").unwrap(),
        vec!["country".into(), "day".into()],
    )
    .unwrap();
    let input = batch(vec![
        (
            "id",
            Arc::new(Int64Array::from(vec![1, 2, 3, 4, 5])) as ArrayRef,
        ),
        (
            "country",
            Arc::new(StringArray::from(vec!["us", "a/b=c", "us", "us", "a/b=c"])),
        ),
        ("day", Arc::new(Date32Array::from(vec![0, 0, 0, 1, 0]))),
    ]);
    let aligned = Alignment::plan(&def, &input.schema())
        .unwrap()
        .apply(&input)
        .unwrap();
    let parts = split(&aligned, &def.partition_by, 100).unwrap();
    let summary: Vec<(String, usize)> = parts
        .iter()
        .map(|p| (partition_dir(&p.values), p.batch.num_rows()))
        .collect();
    assert_eq!(
        summary,
        [
            ("country=us/day=1970-01-01".to_string(), 2),
            ("country=a%2Fb%3Dc/day=1970-01-01".to_string(), 2),
            ("country=us/day=1970-01-02".to_string(), 1),
        ]
    );
    assert!(
        parts.iter().all(|p| p.batch.num_columns() == 1),
        "partition columns dropped"
    );
    let err = split(&aligned, &def.partition_by, 2).unwrap_err();
    assert!(invalid(err).contains("more than 2 partitions"));
    let unpartitioned = split(&aligned, &[], 1).unwrap();
    assert_eq!(unpartitioned[0].batch.num_rows(), 5);
}

#[test]
fn floats_and_binary_cannot_partition() {
    for schema in ["x:int64,p:float64", "x:int64,p:binary"] {
        let err = FrameDefinition::new(
            FrameSchema::parse_compact(schema).unwrap(),
            vec!["p".into()],
        )
        .unwrap_err();
        assert!(invalid(err).contains("partition by an integer"), "{schema}");
    }
}
