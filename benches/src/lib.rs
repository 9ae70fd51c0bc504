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
