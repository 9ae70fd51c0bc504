//! Parts of a cell: row ranges that let the tasks of a distributed query split one cell
//! (see the manifest's "Parts"). How a task names a part is the shuffle's
//! ([`apiary_shuffle::units`]); how a reader keeps only its rows is here.

use std::ops::Range;

use arrow_array::RecordBatch;
use datafusion::parquet::arrow::arrow_reader::RowSelection;

pub use apiary_shuffle::units::{cut, parse_part, part_key, splittable};

/// The cell of `live` a task's name denotes: the cell at that path, or the cell a part key
/// cuts (an exact path wins, since a cell path may itself contain `#`).
pub(crate) fn named_cell<'a>(
    live: &'a apiary_ledger::LiveFrame,
    name: &str,
) -> Option<&'a apiary_ledger::Cell> {
    live.cells
        .get(name)
        .or_else(|| live.cells.get(parse_part(name)?.0))
}

/// A cell of the split frame one task may read, or a part of one (some of its rows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitCell {
    /// Path relative to the frame.
    pub path: String,
    /// Bytes (of a part: its share of the cell's bytes).
    pub bytes: u64,
    /// The cell's rows, as the ledger records them.
    pub rows: u64,
    /// The rows of a part (positions in the cell); `None` for the whole cell.
    pub part: Option<std::ops::Range<u64>>,
}

impl SplitCell {
    /// The key that names this unit in a task (see [`crate::parts`]).
    pub fn key(&self) -> String {
        match &self.part {
            None => self.path.clone(),
            Some(rows) => part_key(&self.path, rows),
        }
    }

    /// This cell cut into at most `parts` parts of nearly equal rows (itself when it is a
    /// part already or has too few rows).
    pub fn cut(self, parts: u64) -> Vec<SplitCell> {
        if self.part.is_some() || parts < 2 || self.rows < 2 {
            return vec![self];
        }
        cut(self.rows, parts)
            .into_iter()
            .map(|rows| SplitCell {
                path: self.path.clone(),
                bytes: (u128::from(self.bytes) * u128::from(rows.end - rows.start)
                    / u128::from(self.rows)) as u64,
                rows: self.rows,
                part: Some(rows),
            })
            .collect()
    }
}

/// The rows of one cell a reader keeps: sorted, disjoint, non-empty ranges within the
/// cell's `total` rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowRanges {
    ranges: Vec<Range<u64>>,
    total: u64,
}

impl RowRanges {
    /// `ranges` of a cell of `total` rows, merged where they touch; `None` when one reaches
    /// past the cell or two overlap (a part of a cell that does not have those rows).
    pub fn new(mut ranges: Vec<Range<u64>>, total: u64) -> Option<Self> {
        ranges.retain(|r| !r.is_empty());
        ranges.sort_by_key(|r| r.start);
        let mut merged: Vec<Range<u64>> = Vec::with_capacity(ranges.len());
        for r in ranges {
            if r.end > total {
                return None;
            }
            match merged.last_mut() {
                Some(last) if r.start < last.end => return None,
                Some(last) if r.start == last.end => last.end = r.end,
                _ => merged.push(r),
            }
        }
        Some(Self {
            ranges: merged,
            total,
        })
    }

    /// Whether every row of the cell is kept.
    pub fn is_all(&self) -> bool {
        self.ranges.len() == 1 && self.ranges[0] == (0..self.total)
    }

    /// The rows kept.
    pub fn ranges(&self) -> &[Range<u64>] {
        &self.ranges
    }

    /// The cell's rows.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The selection of a Parquet reader over the whole cell.
    pub fn selection(&self) -> RowSelection {
        RowSelection::from_consecutive_ranges(
            self.ranges.iter().map(|r| r.start as usize..r.end as usize),
            self.total as usize,
        )
    }

    /// A cutter of the cell's batches, read in order from its first row, to the kept rows.
    pub fn cutter(&self) -> Cutter {
        Cutter {
            ranges: self.ranges.clone(),
            next: 0,
            offset: 0,
        }
    }
}

/// Keeps the kept rows of a cell's batches as they stream by (see [`RowRanges::cutter`]).
#[derive(Debug)]
pub struct Cutter {
    ranges: Vec<Range<u64>>,
    /// The first range not yet passed.
    next: usize,
    /// The cell row of the next batch's first row.
    offset: u64,
}

impl Cutter {
    /// The kept rows of `batch`, the next batch of the cell (one slice per kept range it
    /// meets; none once the last range is passed).
    pub fn cut(&mut self, batch: &RecordBatch) -> Vec<RecordBatch> {
        let start = self.offset;
        let end = start + batch.num_rows() as u64;
        self.offset = end;
        let mut out = Vec::new();
        while let Some(r) = self.ranges.get(self.next) {
            let (from, to) = (r.start.max(start), r.end.min(end));
            if from < to {
                out.push(batch.slice((from - start) as usize, (to - from) as usize));
            }
            if r.end > end {
                break;
            }
            self.next += 1;
        }
        out
    }

    /// Whether no later batch has kept rows.
    pub fn is_done(&self) -> bool {
        self.next >= self.ranges.len()
    }

    /// Rows seen so far.
    pub fn seen(&self) -> u64 {
        self.offset
    }
}

#[cfg(test)]
#[allow(clippy::single_range_in_vec_init)] // one range of rows is what these tests mean
mod tests {
    use super::*;
    use arrow_array::{Array, Int64Array};
    use proptest::prelude::*;
    use std::sync::Arc;

    #[test]
    fn ranges_outside_the_cell_or_overlapping_are_refused() {
        assert_eq!(RowRanges::new(vec![0..11], 10), None);
        assert_eq!(RowRanges::new(vec![0..5, 4..8], 10), None);
        let r = RowRanges::new(vec![5..10, 0..5], 10).unwrap();
        assert!(r.is_all());
        assert_eq!(r.ranges(), &[0..10]);
        assert!(!RowRanges::new(vec![0..5], 10).unwrap().is_all());
    }

    proptest! {
        /// Cutting covers every row once, in order, in at most the parts asked for.
        #[test]
        fn cut_covers_every_row_once(total in 0u64..10_000, parts in 0u64..20) {
            let cuts = cut(total, parts);
            prop_assert!(cuts.len() as u64 <= parts.max(1));
            let mut next = 0;
            for r in &cuts {
                prop_assert_eq!(r.start, next);
                prop_assert!(r.end > r.start);
                next = r.end;
            }
            prop_assert_eq!(next, total);
        }

        /// The cutter keeps exactly the kept rows, however the cell is batched, and the
        /// Parquet selection selects the same rows.
        #[test]
        fn cutter_and_selection_keep_exactly_the_ranges(
            batches in proptest::collection::vec(0usize..50, 0..12),
            picks in proptest::collection::vec((0u64..400, 1u64..60), 0..6),
        ) {
            let total: u64 = batches.iter().map(|&n| n as u64).sum();
            let mut ranges: Vec<Range<u64>> = Vec::new();
            for (start, len) in picks {
                let r = start.min(total)..(start + len).min(total);
                if ranges.iter().all(|o| r.end <= o.start || r.start >= o.end) {
                    ranges.push(r);
                }
            }
            let kept = RowRanges::new(ranges.clone(), total).unwrap();
            let mut cutter = kept.cutter();
            let mut got = Vec::new();
            let mut offset = 0i64;
            for n in batches {
                let values = Int64Array::from_iter_values(offset..offset + n as i64);
                offset += n as i64;
                let batch = RecordBatch::try_from_iter([("v", Arc::new(values) as _)]).unwrap();
                for piece in cutter.cut(&batch) {
                    let col = piece.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
                    got.extend(col.values().iter().map(|&v| v as u64));
                }
            }
            let mut want: Vec<u64> = kept.ranges().iter().flat_map(|r| r.clone()).collect();
            want.sort_unstable();
            prop_assert_eq!(&got, &want);
            prop_assert!(cutter.is_done() || kept.ranges().is_empty() || total == 0);
            let selected: u64 = kept.selection().iter().filter(|s| !s.skip).map(|s| s.row_count as u64).sum();
            prop_assert_eq!(selected, want.len() as u64);
            prop_assert_eq!(kept.selection().row_count() as u64, want.len() as u64);
        }
    }
}
