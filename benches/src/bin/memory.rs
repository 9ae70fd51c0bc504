//! The memory proof of distributed row queries, as a benchmark binary: writes a frame whose
//! rows are several times `--memory-mib`, starts two `apiary node` processes and an
//! `apiary sql` client with that `--memory`, asks for every row (`SELECT id, payload`,
//! distributed), counts the answer as it streams, and prints each process's peak resident
//! memory as the kernel measured it.
//!
//! `target/release/memory --memory-mib 128 --cells 24 --rows-per-cell 100000`
//! (`--load-only DIR` writes the frame to DIR and stops, for runs by hand.)

use apiary::Apiary;
use apiary_benches::harness::{flag, flags};
use apiary_benches::memory::{load, prove};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    apiary_benches::allocate_like_a_node();
    let flags = flags(&["memory-mib", "cells", "rows-per-cell", "load-only"]);
    let memory: u64 = flag(&flags, "memory-mib", 128u64) << 20;
    let cells: usize = flag(&flags, "cells", 24);
    let rows_per_cell: usize = flag(&flags, "rows-per-cell", 100_000);
    let dir = tempfile::tempdir()?;
    let storage = dir.path().join("data").display().to_string();
    let ap = Apiary::open(&storage).await?;
    let frame_bytes = load(&ap, cells, rows_per_cell).await;
    // `--load-only DIR`: leave the frame in DIR for runs by hand (under a profiler).
    if let Some(keep) = flags.get("load-only") {
        std::fs::rename(dir.path().join("data"), keep)?;
        println!("{frame_bytes} bytes of rows in {keep}");
        return Ok(());
    }
    let expected = (cells * rows_per_cell) as u64;
    let proof = prove(&storage, dir.path(), &ap, memory, expected, frame_bytes).await;
    println!("{proof}");
    if proof.rows != expected {
        return Err(format!("{} rows came back of {expected}", proof.rows).into());
    }
    Ok(())
}
