//! Shared helpers for the benchmarks: the Star Schema Benchmark ([`ssb`]) and loading it into
//! Apiary and into a plain DataFusion session over the same Parquet files ([`harness`]).

pub mod harness;
pub mod ssb;
