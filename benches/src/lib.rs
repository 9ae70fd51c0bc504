//! Shared helpers for the benchmarks: the Star Schema Benchmark ([`ssb`]) and loading it into
//! Apiary and into a plain DataFusion session over the same Parquet files ([`harness`]); the
//! memory proof of distributed row queries ([`memory`]).

pub mod harness;
pub mod memory;
pub mod ssb;
pub mod tpch;

/// Every benchmark allocates through mimalloc, as the `apiary` binary does: an in-process
/// baseline and the node processes it is compared with run on the same allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Sets this process up as the `apiary` binary does before it starts (transparent huge
/// pages off unless `MIMALLOC_ALLOW_THP` says otherwise; see `apiary::allocator`), so that
/// an in-process baseline and the nodes it is compared with allocate alike. Every bench
/// binary calls it first.
pub fn allocate_like_a_node() {
    // Best effort, as in the `apiary` binary.
    let _ = apiary::allocator::without_huge_pages();
}
