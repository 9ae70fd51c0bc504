//! Reads from the cell cache's disk tier: a 32 MiB cell read back as a Parquet reader asks
//! for a row group's column chunks (eight ranges of 2 MiB spread over the file; and four
//! chunks of 600 KiB to 1.6 MiB, as a scan of a few columns of an 8 MiB cell asks), every
//! touched block checked against its CRC-32C. The file sits in the page cache, so this is
//! the cache's own cost per byte: the copy out of the kernel, the checksums, the slices.
//!
//! `cargo bench -p apiary-benches --bench cache_read`

// Allocates through mimalloc, as a node does (set in the benches library).
use apiary_benches as _;
use apiary_cache::{CacheConfig, CellCache};
use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const CELL_BYTES: usize = 32 << 20;

fn cache_read(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let cache = CellCache::open(CacheConfig {
        dir: dir.path().to_path_buf(),
        capacity_bytes: 1 << 30,
    })
    .expect("cache");
    let cell = Bytes::from(
        (0..CELL_BYTES)
            .map(|i| (i as u8).wrapping_mul(31) ^ (i >> 12) as u8)
            .collect::<Vec<_>>(),
    );
    let cached = cache
        .insert("h/b/f/data/bench.parquet", &cell, 0, None)
        .expect("insert");
    let chunk = 2u64 << 20;
    let ranges: Vec<std::ops::Range<u64>> = (0..8u64)
        .map(|i| {
            let start = i * 4 * (1 << 20) + 4096;
            start..start + chunk
        })
        .collect();
    let bytes: u64 = ranges.iter().map(|r| r.end - r.start).sum();
    let mut group = c.benchmark_group("cache_read");
    group.throughput(Throughput::Bytes(bytes));
    group.bench_function("eight 2 MiB column chunks", |b| {
        b.iter(|| {
            let read = cached.read_ranges(&ranges).expect("read");
            assert_eq!(read.len(), ranges.len());
            read
        })
    });
    // What a scan of a few columns of an 8 MiB cell asks for: four column chunks of a
    // few hundred KiB at unaligned places, far smaller than a megabyte.
    let small: Vec<std::ops::Range<u64>> =
        [(300, 1_900), (2_500, 3_100), (4_100, 5_300), (6_000, 6_700)]
            .iter()
            .map(|&(a, b)| (a << 10) + 123..(b << 10) + 45)
            .collect();
    group.throughput(Throughput::Bytes(
        small.iter().map(|r| r.end - r.start).sum(),
    ));
    group.bench_function("four column chunks of an 8 MiB cell", |b| {
        b.iter(|| {
            let read = cached.read_ranges(&small).expect("read");
            assert_eq!(read.len(), small.len());
            read
        })
    });
    group.finish();
}

criterion_group!(benches, cache_read);
criterion_main!(benches);
