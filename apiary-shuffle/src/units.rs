//! Units of work: how a task names a whole cell or a part of one (see the manifest's
//! "Parts").
//!
//! A unit is a whole cell, named by its path, or a part of one, named
//! `{path}#{start}-{end}`: the cell's rows `start..end` in file order. Rows are positions
//! in the cell before any filter, so every reader (Parquet scan, memory tier) agrees on
//! them. A cell path may itself hold `#`, so a key that names a cell exactly is that cell;
//! a coordinator never splits a frame with such a path, so the two never meet.

use std::ops::Range;

/// Separates a cell's path from a part's rows in a unit key.
const SEPARATOR: char = '#';

/// The key of rows `rows` of `cell`.
pub fn part_key(cell: &str, rows: &Range<u64>) -> String {
    format!("{cell}{SEPARATOR}{}-{}", rows.start, rows.end)
}

/// Whether the coordinator may split cells of a frame holding `path` (a path with the
/// separator could be mistaken for a part of another cell).
pub fn splittable(path: &str) -> bool {
    !path.contains(SEPARATOR)
}

/// The cell and rows a unit key names, if it names a part: `{cell}#{start}-{end}` with
/// `start < end`. Callers first look the key up as a cell (an exact name wins).
pub fn parse_part(key: &str) -> Option<(&str, Range<u64>)> {
    let (cell, rows) = key.rsplit_once(SEPARATOR)?;
    let (start, end) = rows.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(start) || !digits(end) || cell.is_empty() {
        return None;
    }
    let (start, end) = (start.parse().ok()?, end.parse().ok()?);
    (start < end).then_some((cell, start..end))
}

/// Rows `0..total` cut into `parts` ranges of (nearly) equal length, in order.
pub fn cut(total: u64, parts: u64) -> Vec<Range<u64>> {
    let parts = parts.clamp(1, total.max(1));
    (0..parts)
        .map(|i| total * i / parts..total * (i + 1) / parts)
        .filter(|r| !r.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_keys_round_trip_and_reject_what_is_not_one() {
        let key = part_key("x=1/a.parquet", &(10..20));
        assert_eq!(key, "x=1/a.parquet#10-20");
        assert_eq!(parse_part(&key), Some(("x=1/a.parquet", 10..20)));
        for bad in [
            "a.parquet",
            "a.parquet#",
            "a.parquet#5",
            "a.parquet#5-",
            "a.parquet#-5",
            "a.parquet#5-5",
            "a.parquet#6-5",
            "a.parquet#+1-5",
            "#1-5",
            "a.parquet#1-99999999999999999999999",
        ] {
            assert_eq!(parse_part(bad), None, "{bad}");
        }
        assert!(splittable("x=1/a.parquet"));
        assert!(!splittable("x=1/a#b.parquet"));
    }
}
