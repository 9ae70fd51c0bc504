//! How long one cell's columns take to decode: the cell as Apiary writes it (ZSTD level 3,
//! dictionaries, page statistics) against other Parquet settings, half of it read through
//! a row selection (what a part of a cell costs), and the cell written in smaller row
//! groups, read whole and one group at a time (what finer units of work would cost).
//!
//! `cargo run --release -p apiary-benches --bin cell_decode -- [--runs N] [--sf F]`
//!
//! The cell is the first 375 000 rows of SSB's `lineorder` at scale factor `--sf` (1 by
//! default): one of the SF 1 bench's sixteen cells, its keys as many-valued as there. Each
//! row is the best of `--runs` single-threaded reads of two sets of four columns (those Q2.x
//! and Q1.x read), batches of 8192 rows as DataFusion asks for them. Pin it to a core
//! (`taskset -c 1`) for steady figures.

#![allow(clippy::disallowed_methods)] // a benchmark: it times reads on the system clock

use std::sync::Arc;
use std::time::Instant;

use apiary_benches::ssb::generate;
use apiary_ledger::cells::encode::{CellEncoder, ROW_GROUP_ROWS};
use arrow_array::RecordBatch;
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowReaderOptions, ParquetRecordBatchReaderBuilder, RowSelection, RowSelector,
};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::PageIndexPolicy;
use parquet::file::properties::{EnabledStatistics, WriterProperties};

const ROWS: usize = 375_000;
const SETS: [(&str, [&str; 4]); 2] = [
    (
        "Q2.x columns",
        ["lo_partkey", "lo_suppkey", "lo_orderdate", "lo_revenue"],
    ),
    (
        "Q1.x columns",
        [
            "lo_orderdate",
            "lo_discount",
            "lo_quantity",
            "lo_extendedprice",
        ],
    ),
];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str, default: f64| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map(|n| {
                n.parse()
                    .unwrap_or_else(|_| panic!("{name} takes a number"))
            })
            .unwrap_or(default)
    };
    let runs = flag("--runs", 15.0) as usize;
    let lineorder = generate(flag("--sf", 1.0), 42)
        .into_iter()
        .find(|t| t.name == "lineorder")
        .expect("SSB has lineorder");
    let batches = first_rows(&lineorder.batches, ROWS);
    let mut apiary = CellEncoder::new(Arc::clone(&lineorder.schema), 1).expect("encoder");
    for b in &batches {
        apiary.write(b).expect("encode");
    }
    let apiary = apiary.finish().expect("cell").bytes;

    println!("one cell of {ROWS} rows, best of {runs} reads of four columns");
    println!(
        "{:<34} {:>9} {:>16} {:>16}",
        "written as", "size", SETS[0].0, SETS[1].0
    );
    let zstd = |level| Compression::ZSTD(ZstdLevel::try_new(level).expect("level"));
    let props = |compression, dictionary_limit: Option<usize>| {
        let b = WriterProperties::builder()
            .set_compression(compression)
            .set_statistics_enabled(EnabledStatistics::Page)
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS));
        match dictionary_limit {
            Some(0) => b.set_dictionary_enabled(false),
            Some(bytes) => b.set_dictionary_page_size_limit(bytes),
            None => b,
        }
        .build()
    };
    let variants: Vec<(&str, Bytes)> = vec![
        ("Apiary (ZSTD 3, dictionaries)", apiary.clone()),
        (
            "ZSTD 3, no dictionaries",
            written(&batches, props(zstd(3), Some(0))),
        ),
        (
            "ZSTD 3, dictionaries <= 64 KiB",
            written(&batches, props(zstd(3), Some(64 << 10))),
        ),
        (
            "ZSTD 1, dictionaries",
            written(&batches, props(zstd(1), None)),
        ),
        (
            "LZ4, dictionaries",
            written(&batches, props(Compression::LZ4_RAW, None)),
        ),
        (
            "Snappy, dictionaries",
            written(&batches, props(Compression::SNAPPY, None)),
        ),
        (
            "uncompressed, dictionaries",
            written(&batches, props(Compression::UNCOMPRESSED, None)),
        ),
    ];
    for (name, cell) in &variants {
        let times: Vec<f64> = SETS
            .iter()
            .map(|(_, columns)| best(runs, || read(cell, columns, Pick::All)))
            .collect();
        println!(
            "{name:<34} {:>6.2} MB {:>13.2} ms {:>13.2} ms",
            cell.len() as f64 / 1e6,
            times[0],
            times[1]
        );
    }

    println!("\nApiary's cell, {} read whole and in halves", SETS[0].0);
    let half = ROWS / 2;
    let halves = [
        ("whole", None),
        (
            "first half",
            Some(vec![
                RowSelector::select(half),
                RowSelector::skip(ROWS - half),
            ]),
        ),
        (
            "second half",
            Some(vec![
                RowSelector::skip(half),
                RowSelector::select(ROWS - half),
            ]),
        ),
    ];
    for (name, selection) in halves {
        let ms = best(runs, || {
            let pick = selection
                .clone()
                .map_or(Pick::All, |s| Pick::Rows(RowSelection::from(s)));
            read(&apiary, &SETS[0].1, pick)
        });
        println!("{name:<34} {ms:>9.2} ms");
    }

    println!(
        "\nZSTD 3 in smaller row groups, {} read whole and one group at a time",
        SETS[0].0
    );
    for group_rows in [187_500usize, 125_000, 93_750, 65_536] {
        let props = WriterProperties::builder()
            .set_compression(zstd(3))
            .set_statistics_enabled(EnabledStatistics::Page)
            .set_max_row_group_row_count(Some(group_rows))
            .build();
        let cell = written(&batches, props);
        let whole = best(runs, || read(&cell, &SETS[0].1, Pick::All));
        let groups = ROWS.div_ceil(group_rows);
        let parts: f64 = (0..groups)
            .map(|g| best(runs, || read(&cell, &SETS[0].1, Pick::Groups(vec![g]))))
            .sum();
        println!(
            "groups of {group_rows:<8} {:>6.2} MB  whole {whole:>6.2} ms  one at a time {parts:>6.2} ms",
            cell.len() as f64 / 1e6
        );
    }
}

/// The first `rows` rows of `batches` (all of them if fewer).
fn first_rows(batches: &[RecordBatch], rows: usize) -> Vec<RecordBatch> {
    let mut left = rows;
    let mut out = Vec::new();
    for b in batches {
        if left == 0 {
            break;
        }
        let take = left.min(b.num_rows());
        out.push(b.slice(0, take));
        left -= take;
    }
    assert_eq!(left, 0, "the scale factor gives fewer than {rows} rows");
    out
}

/// `batches` as one Parquet file with `props`.
fn written(batches: &[RecordBatch], props: WriterProperties) -> Bytes {
    let mut writer =
        ArrowWriter::try_new(Vec::new(), batches[0].schema(), Some(props)).expect("writer");
    for b in batches {
        writer.write(b).expect("write");
    }
    Bytes::from(writer.into_inner().expect("file"))
}

/// Which rows of a cell to read.
enum Pick {
    /// All of them.
    All,
    /// Those of a row selection (with the page index).
    Rows(RowSelection),
    /// Those of some row groups.
    Groups(Vec<usize>),
}

/// Reads `columns` of `cell`, the rows `pick` says.
fn read(cell: &Bytes, columns: &[&str], pick: Pick) -> usize {
    let index = match pick {
        Pick::Rows(_) => PageIndexPolicy::Required,
        _ => PageIndexPolicy::Skip,
    };
    let options = ArrowReaderOptions::new().with_page_index_policy(index);
    let builder = ParquetRecordBatchReaderBuilder::try_new_with_options(cell.clone(), options)
        .expect("a Parquet file");
    let schema = Arc::clone(builder.schema());
    let roots = columns
        .iter()
        .map(|c| schema.index_of(c).expect("a lineorder column"));
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
    let mut builder = builder.with_projection(mask).with_batch_size(8192);
    match pick {
        Pick::All => {}
        Pick::Rows(selection) => builder = builder.with_row_selection(selection),
        Pick::Groups(groups) => builder = builder.with_row_groups(groups),
    }
    builder
        .build()
        .expect("reader")
        .map(|b| b.expect("a batch").num_rows())
        .sum()
}

/// The shortest of `runs` timings of `f`, in milliseconds.
fn best(runs: usize, mut f: impl FnMut() -> usize) -> f64 {
    (0..runs.max(1))
        .map(|_| {
            let t = Instant::now();
            assert!(f() > 0, "rows were read");
            t.elapsed().as_secs_f64() * 1e3
        })
        .fold(f64::INFINITY, f64::min)
}
