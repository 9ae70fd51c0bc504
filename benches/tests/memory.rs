//! The memory proof of distributed row queries: answers several times every process's
//! `--memory`, from two `apiary node` processes to an `apiary sql` client, complete with
//! each process's peak resident memory within its budget plus a fixed overhead, and tripling
//! the answer barely moves that peak.
#![allow(clippy::unwrap_used)]

use apiary::Apiary;
use apiary_benches::memory::{load, prove};

/// What a process holds besides its budget: code, the runtime and its threads, allocator
/// slack, the cells being decoded (a node decodes a row group of each cell its scans read
/// at once; these cells hold 100 000 rows each), a few result chunks in flight. Measured:
/// about 230 MiB over the budget for a node, 100 MiB for the client.
const OVERHEAD: u64 = 288 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_query_larger_than_memory_streams_through_every_process() {
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("data").display().to_string();
    let ap = Apiary::open(&storage).await.unwrap();
    let (cells, rows_per_cell) = (60, 100_000);
    let frame_bytes = load(&ap, cells, rows_per_cell).await;
    let memory = 64 << 20;
    let all = (cells * rows_per_cell) as u64;
    let small = prove(&storage, dir.path(), &ap, memory, all / 3, frame_bytes).await;
    println!("a third of the rows:\n{small}");
    let big = prove(&storage, dir.path(), &ap, memory, all, frame_bytes).await;
    println!("every row:\n{big}");
    for proof in [&small, &big] {
        assert_eq!(proof.rows, proof.expected_rows, "every row, once: {proof}");
    }
    assert!(
        big.answer_bytes > 8 * memory && big.answer_bytes > memory + OVERHEAD,
        "a process holding the answer would pass the bound: {big}"
    );
    let peaks = |p: &apiary_benches::memory::Proof| {
        let mut all = p.node_peaks.clone();
        all.push(p.client_peak);
        all
    };
    for (peak, before) in peaks(&big).into_iter().zip(peaks(&small)) {
        assert!(peak > 0, "the peak was measured: {big}");
        assert!(
            peak < memory + OVERHEAD,
            "a process went past its budget: {big}"
        );
        // Three times the answer (400 MiB more), nearly the same peak: nothing holds it.
        assert!(
            peak < before + (96 << 20),
            "a process's peak grew with the answer ({} MiB to {} MiB)",
            before >> 20,
            peak >> 20
        );
    }
}
