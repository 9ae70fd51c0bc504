//! The cell cache on its own: recovery, the budget, checksums, single flight, one directory
//! per node, and the object store wrapper in front of a counted store.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use apiary_cache::{CacheConfig, CacheError, CachingStore, CellCache};
use apiary_storage::object_store::path::Path;
use apiary_storage::object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use apiary_storage::{CountsHandle, FaultConfig, InstrumentedStore, StorageUri, object_store_for};
use bytes::Bytes;

fn config(dir: &std::path::Path, capacity_bytes: u64) -> CacheConfig {
    CacheConfig {
        dir: dir.to_path_buf(),
        capacity_bytes,
    }
}

fn data(seed: u8, len: usize) -> Bytes {
    Bytes::from(
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect::<Vec<_>>(),
    )
}

fn files_on_disk(dir: &std::path::Path, ext: &str) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect()
}

fn bytes_on_disk(dir: &std::path::Path) -> u64 {
    files_on_disk(dir, "cell")
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum()
}

/// Flips the byte at `at` of the one cached cell file in `dir`; its path and new contents.
fn flip_byte(dir: &std::path::Path, at: usize) -> (std::path::PathBuf, Vec<u8>) {
    let file = files_on_disk(dir, "cell").pop().unwrap();
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[at] ^= 0xff;
    std::fs::write(&file, &bytes).unwrap();
    (file, bytes)
}

#[test]
fn a_restarted_cache_keeps_its_cells_and_reads_them_back() {
    let dir = tempfile::tempdir().unwrap();
    let cell = data(1, 3 << 20 | 17);
    {
        let cache = CellCache::open(config(dir.path(), 64 << 20)).unwrap();
        cache
            .insert(
                "h/b/f/data/a.parquet",
                &cell,
                1_700_000_000_000,
                Some("e1".into()),
            )
            .unwrap();
        assert_eq!(cache.counts().cells, 1);
    }
    // Leftovers of an interrupted write are cleaned up at start.
    std::fs::write(dir.path().join("junk.tmp"), b"half").unwrap();
    std::fs::write(dir.path().join("orphan.cell"), b"no meta").unwrap();
    let cache = CellCache::open(config(dir.path(), 64 << 20)).unwrap();
    let found = cache.peek("h/b/f/data/a.parquet").expect("recovered");
    assert_eq!(found.size(), cell.len() as u64);
    assert_eq!(found.e_tag(), Some("e1"));
    assert_eq!(found.read(0..found.size()).unwrap(), cell);
    let range = (1 << 20) - 5..(2 << 20) + 9;
    assert_eq!(
        found.read(range.clone()).unwrap(),
        cell.slice(range.start as usize..range.end as usize)
    );
    assert!(!dir.path().join("junk.tmp").exists());
    assert!(!dir.path().join("orphan.cell").exists());
}

#[test]
fn the_budget_holds_under_a_larger_workload_and_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let budget = 1 << 20;
    {
        let cache = CellCache::open(config(dir.path(), budget)).unwrap();
        for i in 0..40u8 {
            let key = format!("h/b/f/data/c{i}.parquet");
            let cell = cache.insert(&key, &data(i, 100 << 10), 0, None).unwrap();
            drop(cell);
            assert!(cache.counts().bytes <= budget, "{:?}", cache.counts());
            assert!(
                bytes_on_disk(dir.path()) <= budget,
                "evicted files are deleted"
            );
        }
        assert!(cache.counts().cells >= 5, "{:?}", cache.counts());
        // A cell larger than the whole budget is served, never kept.
        let huge = cache
            .insert("h/b/f/data/huge.parquet", &data(9, 2 << 20), 0, None)
            .unwrap();
        assert_eq!(huge.read(0..10).unwrap(), data(9, 2 << 20).slice(0..10));
        drop(huge);
        assert!(!cache.contains("h/b/f/data/huge.parquet"));
        assert!(bytes_on_disk(dir.path()) <= budget);
    }
    // Reopened with a smaller budget: it evicts down to it at start.
    let cache = CellCache::open(config(dir.path(), budget / 4)).unwrap();
    assert!(cache.counts().bytes <= budget / 4, "{:?}", cache.counts());
    assert!(bytes_on_disk(dir.path()) <= budget / 4);
}

/// A fresh 64 MiB cache in its own folder holding one cell of `len` bytes: the folder, the
/// cache, the cell's bytes and the cached cell.
fn one_cell(
    seed: u8,
    len: usize,
) -> (
    tempfile::TempDir,
    CellCache,
    Bytes,
    Arc<apiary_cache::CachedCell>,
) {
    let dir = tempfile::tempdir().unwrap();
    let cache = CellCache::open(config(dir.path(), 64 << 20)).unwrap();
    let cell = data(seed, len);
    let cached = cache
        .insert("h/b/f/data/a.parquet", &cell, 0, None)
        .unwrap();
    (dir, cache, cell, cached)
}

#[test]
fn a_damaged_file_is_never_served() {
    let (dir, cache, cell, cached) = one_cell(3, 2 << 20);
    let (file, bytes) = flip_byte(dir.path(), (1 << 20) + 7);
    // The damaged block is caught; the intact first block still reads.
    assert_eq!(cached.read(0..100).unwrap(), cell.slice(0..100));
    assert!(matches!(
        cached.read(0..cell.len() as u64),
        Err(CacheError::Damaged { .. })
    ));
    // A file truncated under a reader is damaged, not served short; it is dropped at the
    // next start.
    std::fs::write(&file, &bytes[..1000]).unwrap();
    match cached.read(0..100) {
        Err(CacheError::Damaged { reason, .. }) => assert!(reason.contains("short"), "{reason}"),
        other => panic!("a truncated file was read: {other:?}"),
    }
    drop(cached);
    drop(cache);
    let cache = CellCache::open(config(dir.path(), 64 << 20)).unwrap();
    assert!(!cache.contains("h/b/f/data/a.parquet"));
}

/// A read touches only the blocks of its range (a column chunk costs its own bytes plus at
/// most a block on either side, not the megabytes around it): with one block damaged, the
/// blocks on either side still read, and a range inside it fails.
#[test]
fn a_read_touches_only_the_blocks_of_its_range() {
    let block = apiary_cache::BLOCK_BYTES;
    let (dir, _cache, cell, cached) = one_cell(9, 1 << 20);
    flip_byte(dir.path(), (3 * block + 1) as usize);
    assert_eq!(
        cached.read(0..3 * block).unwrap(),
        cell.slice(0..3 * block as usize)
    );
    let after = 4 * block..5 * block;
    assert_eq!(
        cached.read(after.clone()).unwrap(),
        cell.slice(after.start as usize..after.end as usize)
    );
    assert!(matches!(
        cached.read(3 * block + 100..3 * block + 200),
        Err(CacheError::Damaged { .. })
    ));
    assert!(
        block <= 64 << 10,
        "blocks of {block} bytes: a scan of a few columns reads far more than it uses"
    );
}

/// An entry written with another block size (1 MiB, before blocks got smaller) reads back
/// after a restart, checked against its own checksums: an upgrade keeps the cache.
#[test]
fn an_entry_with_another_block_size_still_reads() {
    let dir = tempfile::tempdir().unwrap();
    let cell = data(4, (3 << 20) + 5);
    {
        let cache = CellCache::open(config(dir.path(), 64 << 20)).unwrap();
        cache
            .insert("h/b/f/data/old.parquet", &cell, 7, None)
            .unwrap();
    }
    let meta_file = files_on_disk(dir.path(), "meta").pop().unwrap();
    let mut meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&meta_file).unwrap()).unwrap();
    let old_block = 1usize << 20;
    meta["block_bytes"] = old_block.into();
    meta["crcs"] = cell
        .chunks(old_block)
        .map(crc32c::crc32c)
        .collect::<Vec<u32>>()
        .into();
    std::fs::write(&meta_file, serde_json::to_vec(&meta).unwrap()).unwrap();
    let cache = CellCache::open(config(dir.path(), 64 << 20)).unwrap();
    let cached = cache.peek("h/b/f/data/old.parquet").expect("kept");
    let ranges = [5..100, (1 << 20) - 3..(2 << 20) + 3, 0..(3 << 20) + 5];
    let read = cached.read_ranges(&ranges).unwrap();
    for (r, bytes) in ranges.iter().zip(read) {
        assert_eq!(bytes, cell.slice(r.start as usize..r.end as usize));
    }
    // Its own checksums still guard it.
    flip_byte(dir.path(), (2 << 20) + 9);
    assert!(matches!(
        cached.read(2 << 20..(2 << 20) + 10),
        Err(CacheError::Damaged { .. })
    ));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
    /// Many ranges read at once (as a Parquet reader asks for a row group's column chunks:
    /// unordered, overlapping, sharing blocks, empty) are exactly the cell's bytes.
    #[test]
    fn ranges_read_together_are_the_cells_bytes(
        len in 1usize..(3 << 20),
        picks in proptest::collection::vec((0.0f64..=1.0, 0.0f64..=1.0), 0..12),
    ) {
        let (_dir, _cache, cell, cached) = one_cell(7, len);
        let ranges: Vec<std::ops::Range<u64>> = picks
            .iter()
            .map(|&(a, b)| {
                let (a, b) = ((a * len as f64) as u64, (b * len as f64) as u64);
                a.min(b)..a.max(b)
            })
            .collect();
        let read = cached.read_ranges(&ranges).unwrap();
        proptest::prop_assert_eq!(read.len(), ranges.len());
        for (r, bytes) in ranges.iter().zip(&read) {
            proptest::prop_assert_eq!(bytes, &cell.slice(r.start as usize..r.end as usize));
        }
    }
}

#[test]
fn ranges_read_together_catch_damage_and_bad_ranges() {
    let (dir, _cache, cell, cached) = one_cell(5, 3 << 20);
    let beyond = cached.read_ranges(&[0..10, (3 << 20) - 1..(3 << 20) + 1]);
    assert!(
        matches!(beyond, Err(CacheError::Range { .. })),
        "{beyond:?}"
    );
    flip_byte(dir.path(), (2 << 20) + 3);
    // Ranges clear of the damaged third block still read; one that touches it fails.
    let fine = cached
        .read_ranges(&[0..10, (1 << 20)..(1 << 20) + 10])
        .unwrap();
    assert_eq!(fine[1], cell.slice((1 << 20)..(1 << 20) + 10));
    assert!(matches!(
        cached.read_ranges(&[0..10, (2 << 20) - 1..(2 << 20) + 1]),
        Err(CacheError::Damaged { .. })
    ));
}

#[test]
fn one_directory_belongs_to_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let _first = CellCache::open(config(dir.path(), 1 << 20)).unwrap();
    let second = CellCache::open(config(dir.path(), 1 << 20)).unwrap_err();
    assert!(matches!(second, CacheError::InUse { .. }), "{second}");
    assert!(second.to_string().contains("--cache-dir"), "{second}");
}

/// A counted memory store behind a caching store with a cache in `dir`.
fn cached_store(
    dir: &std::path::Path,
    budget: u64,
) -> (Arc<dyn ObjectStore>, Arc<dyn ObjectStore>, CountsHandle) {
    let (store, _) = object_store_for(&StorageUri::Memory).unwrap();
    let counted = InstrumentedStore::new(Arc::clone(&store), FaultConfig::none());
    let counts = counted.counts();
    let caching = CachingStore::new(Arc::new(counted));
    caching.set_cache(Some(Arc::new(
        CellCache::open(config(dir, budget)).unwrap(),
    )));
    (Arc::new(caching), store, counts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_misses_on_one_cell_fetch_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let (caching, raw, counts) = cached_store(dir.path(), 64 << 20);
    let key = Path::from("h/b/f/data/x.parquet");
    let cell = data(5, 4 << 20);
    raw.put(&key, PutPayload::from(cell.clone())).await.unwrap();
    let readers: Vec<_> = (0..8u64)
        .map(|i| {
            let (caching, key) = (Arc::clone(&caching), key.clone());
            tokio::spawn(async move { caching.get_range(&key, i * 1000..i * 1000 + 500).await })
        })
        .collect();
    for (i, reader) in readers.into_iter().enumerate() {
        let got = reader.await.unwrap().unwrap();
        let at = i * 1000;
        assert_eq!(got, cell.slice(at..at + 500));
    }
    assert_eq!(
        counts.snapshot().cell_get,
        1,
        "one fetch for eight concurrent misses"
    );
    // And from now on, from disk: a footer read, a whole read, a HEAD.
    let len = cell.len() as u64;
    assert_eq!(
        caching.get_range(&key, len - 8..len).await.unwrap(),
        cell.slice(cell.len() - 8..)
    );
    assert_eq!(
        caching.get(&key).await.unwrap().bytes().await.unwrap(),
        cell
    );
    assert_eq!(caching.head(&key).await.unwrap().size, len);
    assert_eq!(counts.snapshot().cell_get, 1);
    assert_eq!(counts.snapshot().head, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_cached_cell_is_fetched_again() {
    let dir = tempfile::tempdir().unwrap();
    let (caching, raw, counts) = cached_store(dir.path(), 64 << 20);
    let key = Path::from("h/b/f/data/x.parquet");
    let cell = data(6, 2 << 20);
    raw.put(&key, PutPayload::from(cell.clone())).await.unwrap();
    caching.get_range(&key, 0..10).await.unwrap();
    let (file, _) = flip_byte(dir.path(), 12345);
    let got = caching.get_range(&key, 12_000..13_000).await.unwrap();
    assert_eq!(
        got,
        cell.slice(12_000..13_000),
        "the right bytes, not the damaged ones"
    );
    assert_eq!(counts.snapshot().cell_get, 2, "fetched again");
    assert!(!file.exists(), "the damaged file is gone");
}

#[tokio::test]
async fn only_cells_go_through_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let (caching, raw, counts) = cached_store(dir.path(), 64 << 20);
    let ledger = Path::from("h/b/f/_ledger/00000000000000000001.json");
    raw.put(&ledger, PutPayload::from_static(b"{}"))
        .await
        .unwrap();
    for _ in 0..3 {
        caching.get(&ledger).await.unwrap();
    }
    assert_eq!(
        counts.snapshot().get,
        3,
        "ledger objects are read from storage every time"
    );
    assert!(files_on_disk(dir.path(), "cell").is_empty());
    // A missing cell is storage's NotFound, unchanged.
    let missing = caching
        .get(&Path::from("h/b/f/data/none.parquet"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            missing,
            apiary_storage::object_store::Error::NotFound { .. }
        ),
        "{missing}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_folder_removed_under_a_running_node_is_made_again() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("cache");
    let (caching, raw, counts) = cached_store(&dir, 64 << 20);
    let (one, two) = (
        Path::from("h/b/f/data/1.parquet"),
        Path::from("h/b/f/data/2.parquet"),
    );
    let (a, b) = (data(7, 300_000), data(8, 200_000));
    raw.put(&one, PutPayload::from(a.clone())).await.unwrap();
    raw.put(&two, PutPayload::from(b.clone())).await.unwrap();
    assert_eq!(
        caching.get_range(&one, 0..100).await.unwrap(),
        a.slice(0..100)
    );
    std::fs::remove_dir_all(&dir).unwrap();
    // A new cell is fetched, the folder made again, and the cell cached in it.
    assert_eq!(
        caching.get_range(&two, 10..20).await.unwrap(),
        b.slice(10..20)
    );
    assert_eq!(files_on_disk(&dir, "cell").len(), 1);
    assert_eq!(
        caching.get_range(&two, 50..60).await.unwrap(),
        b.slice(50..60)
    );
    assert_eq!(
        counts.snapshot().cell_get,
        2,
        "the new cell is read from disk now"
    );
    // The cell whose file went with the folder is fetched again.
    assert_eq!(caching.get_range(&one, 5..9).await.unwrap(), a.slice(5..9));
    assert_eq!(counts.snapshot().cell_get, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_that_cannot_write_serves_cells_uncached() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("cache");
    let (store, _) = object_store_for(&StorageUri::Memory).unwrap();
    let counted = InstrumentedStore::new(Arc::clone(&store), FaultConfig::none());
    let counts = counted.counts();
    let caching = CachingStore::new(Arc::new(counted));
    let cache = Arc::new(CellCache::open(config(&dir, 64 << 20)).unwrap());
    caching.set_cache(Some(Arc::clone(&cache)));
    let key = Path::from("h/b/f/data/x.parquet");
    let cell = data(9, 100_000);
    store
        .put(&key, PutPayload::from(cell.clone()))
        .await
        .unwrap();
    // The folder replaced by a file: nothing can be written, or made again, there.
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::write(&dir, b"not a folder").unwrap();
    for range in [0..10u64, 99_990..100_000] {
        let got = caching.get_range(&key, range.clone()).await.unwrap();
        assert_eq!(got, cell.slice(range.start as usize..range.end as usize));
    }
    assert_eq!(counts.snapshot().cell_get, 2, "uncached: fetched each time");
    let used = cache.counts();
    assert_eq!((used.unwritable, used.cells), (2, 0), "{used:?}");
}

#[test]
fn a_nearly_full_disk_gets_no_cache_by_default() {
    use apiary_cache::{CacheConfig, MIN_DEFAULT_CAPACITY};
    // A fifth of the free space, when that is at least 64 MiB.
    assert_eq!(CacheConfig::capacity_for_free(10 << 30), Some(2 << 30));
    assert_eq!(
        CacheConfig::capacity_for_free(5 * MIN_DEFAULT_CAPACITY),
        Some(MIN_DEFAULT_CAPACITY)
    );
    // Less: no cache (it used to get 64 MiB, filling a disk with 100 MiB free by itself).
    assert_eq!(CacheConfig::capacity_for_free(100 << 20), None);
    assert_eq!(CacheConfig::capacity_for_free(0), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_displaced_by_a_writes_upload_leaves_no_files_behind() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Arc::new(CellCache::open(config(dir.path(), 1 << 20)).unwrap());
    let cell = data(7, 4096);
    let (release, wait) = tokio::sync::oneshot::channel::<()>();
    let fetching = {
        let (cache, cell) = (Arc::clone(&cache), cell.clone());
        tokio::spawn(async move {
            cache
                .get_or_fetch("h/b/f/data/c.parquet", || async move {
                    let _ = wait.await;
                    Ok::<_, std::io::Error>((cell, 1, None))
                })
                .await
                .map(|(_, bytes)| bytes.map_or(0, |b| b.len()))
        })
    };
    // While the read fetches, a write's upload caches the same cell.
    apiary_storage::time::sleep(std::time::Duration::from_millis(50)).await;
    let c = Arc::clone(&cache);
    let uploaded = cell.clone();
    apiary_storage::blocking::run(move || c.insert("h/b/f/data/c.parquet", &uploaded, 1, None))
        .await
        .unwrap()
        .unwrap();
    release.send(()).unwrap();
    assert_eq!(fetching.await.unwrap().unwrap(), 4096);
    // One copy on disk, the indexed one; the displaced fetch's files are gone.
    assert_eq!(files_on_disk(dir.path(), "cell").len(), 1);
    assert_eq!(bytes_on_disk(dir.path()), 4096);
    assert_eq!(cache.counts().cells, 1);
}
