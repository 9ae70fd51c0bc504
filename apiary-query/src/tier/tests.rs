use std::ops::Range;

use arrow_array::Int64Array;
use arrow_schema::{DataType, Field, Schema};
use datafusion::physical_plan::empty::EmptyExec;

use super::*;

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, true)]))
}

fn held() -> Source {
    Source::Held(vec![Arc::new(ColumnChunks::new(vec![Arc::new(
        Int64Array::from(vec![0i64; 4]),
    )]))])
}

fn cell(key: &str, source: Source, rows: Option<Range<u64>>, total: u64) -> TierCell {
    TierCell {
        key: key.into(),
        bytes: total * 8,
        partition_values: Vec::new(),
        source,
        rows: rows.map(|r| RowRanges::new(vec![r], total).unwrap()),
    }
}

fn load() -> Source {
    Source::Load(Arc::new(EmptyExec::new(schema())))
}

/// A cell's rows read, as (start, end) pairs.
type Rows = Option<Vec<(u64, u64)>>;

fn rows_of(cell: &TierCell) -> Rows {
    cell.rows
        .as_ref()
        .map(|r| r.ranges().iter().map(|r| (r.start, r.end)).collect())
}

/// Each partition's cells as (key, rows read).
fn layout(exec: &MemoryTierExec) -> Vec<Vec<(String, Rows)>> {
    exec.partitions
        .iter()
        .map(|p| p.iter().map(|c| (c.key.clone(), rows_of(c))).collect())
        .collect()
}

fn exec(partitions: Vec<Vec<TierCell>>) -> MemoryTierExec {
    MemoryTierExec::new(
        schema(),
        vec![OutputColumn::File(0)],
        vec!["x".into()],
        partitions,
        Statistics::new_unknown(&schema()),
        None,
        Arc::new(ColumnTier::new(0, 0).unwrap()),
    )
}

#[test]
fn a_held_cell_is_cut_for_idle_partitions_and_nothing_else_is() {
    let cut = cut_held(vec![(cell("a", held(), None, 1_000_000), 1_000_000)], 4);
    let ranges: Vec<_> = cut.iter().map(rows_of).collect();
    assert_eq!(
        ranges,
        [
            Some(vec![(0, 250_000)]),
            Some(vec![(250_000, 500_000)]),
            Some(vec![(500_000, 750_000)]),
            Some(vec![(750_000, 1_000_000)])
        ]
    );
    assert_eq!(cut.iter().map(|c| c.bytes).sum::<u64>(), 8_000_000);

    // A cell still to be loaded is decoded whole; a small cell is not worth cutting; as
    // many cells as partitions keep every partition busy already.
    for (cells, partitions) in [
        (vec![(cell("a", load(), None, 1_000_000), 1_000_000)], 4),
        (vec![(cell("a", held(), None, 100_000), 100_000)], 4),
        (
            vec![
                (cell("a", held(), None, 1_000_000), 1_000_000),
                (cell("b", held(), None, 1_000_000), 1_000_000),
            ],
            2,
        ),
    ] {
        let n = cells.len();
        let cut = cut_held(cells, partitions);
        assert_eq!(cut.len(), n);
        assert!(cut.iter().all(|c| c.rows.is_none()));
    }
}

#[test]
fn a_cut_cell_is_narrowed_as_one_cell() {
    let exec = exec(vec![
        vec![
            cell("a", load(), Some(0..50), 100),
            cell("b", load(), None, 100),
        ],
        vec![cell("a", load(), Some(50..100), 100)],
    ]);
    assert_eq!((exec.held, exec.loading), (0, 2), "cells, not pieces");

    // Kept whole: its pieces stay where they are.
    let whole = exec.keeping(&|k| (k == "a").then_some(None));
    assert_eq!(
        layout(&whole),
        [
            vec![("a".to_string(), Some(vec![(0, 50)]))],
            vec![("a".to_string(), Some(vec![(50, 100)]))]
        ]
    );
    // Kept in part: those rows, read once.
    let part = exec
        .keeping(&|k| (k == "a").then(|| Some(RowRanges::new(vec![10..20, 60..70], 100).unwrap())));
    assert_eq!(
        layout(&part),
        [
            vec![("a".to_string(), Some(vec![(10, 20), (60, 70)]))],
            vec![]
        ]
    );
    assert_eq!((part.held, part.loading), (0, 1));

    // Claimed whole or in part: one cell with those rows.
    let only = exec.only(&[("a", None), ("b", None)]).unwrap();
    assert_eq!(
        layout(&only),
        [vec![("a".to_string(), None), ("b".to_string(), None)]]
    );
    let range = 30..40;
    let rows = RowRanges::new(vec![range], 100).unwrap();
    let only = exec.only(&[("a", Some(&rows))]).unwrap();
    assert_eq!(
        layout(&only),
        [vec![("a".to_string(), Some(vec![(30, 40)]))]]
    );
}
