//! Writing and reading back rows through the Rust API: the baseline the Python binding's
//! benchmark (`apiary-python/bench/io.py`) compares itself with, on the very same data.
//!
//! Reads `--input FILE` (an Arrow IPC stream) into memory, then `--warmup W` (default 1,
//! not counted: the process's first large allocations pay for page faults) plus `--runs N` times: a fresh
//! frame in a new folder under `--storage DIR`, partitioned by `country`; times
//! `write_to_frame` of all the batches (one commit) and `read_from_frame` of every row.
//! Prints one JSON line: `{"rows", "write_s", "read_s"}` (medians).
//!
//! `target/release/io --input rows.arrows --storage /tmp/io --runs 3`

#![allow(clippy::disallowed_methods)] // real processes and real time: waits and timings read the system clock
use std::time::Instant;

use apiary::Apiary;
use apiary::apiary_ledger::{FrameDefinition, FrameRef, FrameSchema};
use apiary_benches::harness::{flag, flags, median};
use arrow_array::RecordBatch;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    apiary_benches::allocate_like_a_node();
    let flags = flags(&["input", "storage", "runs", "warmup"]);
    let input = flags.get("input").ok_or("--input FILE is required")?;
    let storage =
        std::path::PathBuf::from(flags.get("storage").ok_or("--storage DIR is required")?);
    let runs: usize = flag(&flags, "runs", 3);
    let warmup: usize = flag(&flags, "warmup", 1);
    let batches: Vec<RecordBatch> =
        apiary::ipc::deferred(std::fs::File::open(input)?).collect::<Result<_, _>>()?;
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let schema = batches.first().ok_or("the input has no rows")?.schema();

    let (mut writes, mut reads) = (Vec::new(), Vec::new());
    for run in 0..warmup + runs {
        let folder = storage.join(format!("rust-{run}"));
        let _ = std::fs::remove_dir_all(&folder);
        let ap = Apiary::open(folder.to_str().ok_or("a UTF-8 storage path")?).await?;
        ap.create_hive("bench").await?;
        ap.create_box("bench", "io").await?;
        let definition =
            FrameDefinition::new(FrameSchema::from_arrow(&schema)?, vec!["country".into()])?;
        ap.create_frame_with(&FrameRef::new("bench", "io", "rows")?, definition)
            .await?;

        let started = Instant::now();
        let written = ap
            .write_to_frame("bench", "io", "rows", batches.clone())
            .await?;
        writes.push(started.elapsed().as_secs_f64());
        assert_eq!(written.rows_written as usize, rows);

        let started = Instant::now();
        let back = ap.read_from_frame("bench", "io", "rows", &[]).await?;
        reads.push(started.elapsed().as_secs_f64());
        assert_eq!(back.iter().map(RecordBatch::num_rows).sum::<usize>(), rows);
        drop(back);
        std::fs::remove_dir_all(&folder)?;
    }
    writes.drain(..warmup);
    reads.drain(..warmup);
    println!(
        "{{\"rows\": {rows}, \"write_s\": {:.4}, \"read_s\": {:.4}}}",
        median(writes),
        median(reads)
    );
    Ok(())
}
