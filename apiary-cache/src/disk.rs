//! [`CellCache`]: cells on local disk, indexed in memory, within a byte budget.
//!
//! # Layout
//!
//! One directory per node. Each cached cell is two files named by a random id:
//! `{id}.cell` (the object's bytes) and `{id}.meta` (JSON: the storage key, size, the
//! object's modification stamp and ETag, and a CRC32C per 1 MiB block). Both are written to a
//! temporary name and renamed, data first, so a crash leaves either a complete entry or
//! leftovers that the next start deletes. A `.lock` file held for the cache's lifetime keeps
//! a second process out of the directory.
//!
//! # Integrity
//!
//! Every read verifies the checksums of the blocks it touches, so a truncated or damaged
//! file is never served: the entry is dropped and the caller fetches the cell again.
//!
//! # Eviction
//!
//! The index is a [`quick_cache`] cache weighted by bytes (Clock-PRO / S3-FIFO: recency and
//! frequency, scan resistant). An evicted entry's files are deleted when the last reader
//! holding it finishes, so eviction never pulls a file from under a running read.

mod entry;

use std::fs::{File, OpenOptions};
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use apiary_storage::Random;
use bytes::Bytes;
use quick_cache::sync::Cache;
use quick_cache::{DefaultHashBuilder, Lifecycle, OptionsBuilder, Weighter};
use serde::Serialize;

pub use entry::CachedCell;
use entry::EntryWriter;

use crate::error::{CacheError, Result};

/// Bytes covered by one checksum, and the unit the cache reads (and verifies) a range in.
/// A reader asks for column chunks of a few hundred KiB: with 1 MiB blocks a scan of a few
/// columns read, copied and checksummed about twice the bytes it used. Each entry records
/// its own block size, so entries written with another one still read.
pub const BLOCK_BYTES: u64 = 64 << 10;

/// The smallest budget a cache gets by default; below it the default is no cache.
pub const MIN_DEFAULT_CAPACITY: u64 = 64 << 20;

/// Where a cache lives and how much it may hold.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// The node's own cache directory.
    pub dir: PathBuf,
    /// The byte budget over all cached cells.
    pub capacity_bytes: u64,
}

impl CacheConfig {
    /// The default budget for a cache in `dir`: a fifth of the disk space free there now;
    /// `None` when that is under [`MIN_DEFAULT_CAPACITY`] (the disk is nearly full, or its
    /// free space is unknown): the cache then stays off rather than fill the disk.
    pub fn default_capacity(dir: &FsPath) -> Option<u64> {
        let free = rustix::fs::statvfs(dir)
            .map(|s| s.f_bavail.saturating_mul(s.f_frsize))
            .unwrap_or(0);
        Self::capacity_for_free(free)
    }

    /// The default budget when `free` bytes are free (see
    /// [`default_capacity`](Self::default_capacity)).
    pub fn capacity_for_free(free: u64) -> Option<u64> {
        Some(free / 5).filter(|budget| *budget >= MIN_DEFAULT_CAPACITY)
    }
}

#[derive(Debug, Clone, Copy)]
struct Bytesize;

impl Weighter<String, Arc<CachedCell>> for Bytesize {
    fn weight(&self, _key: &String, cell: &Arc<CachedCell>) -> u64 {
        cell.size.max(1)
    }
}

/// Marks evicted cells so their files go once no reader holds them.
#[derive(Debug, Clone, Copy, Default)]
struct DoomOnEvict;

impl Lifecycle<String, Arc<CachedCell>> for DoomOnEvict {
    type RequestState = ();

    fn on_evict(&self, _state: &mut (), _key: String, cell: Arc<CachedCell>) {
        cell.doom();
    }
}

type Index = Cache<String, Arc<CachedCell>, Bytesize, DefaultHashBuilder, DoomOnEvict>;

/// Counters of a cache since it was opened.
#[derive(Debug, Default)]
pub struct CacheStats {
    /// Reads served from disk.
    pub hits: AtomicU64,
    /// Reads that had to fetch the cell from storage.
    pub misses: AtomicU64,
    /// Bytes fetched from storage into the cache.
    pub bytes_from_storage: AtomicU64,
    /// Bytes served from disk.
    pub bytes_from_disk: AtomicU64,
    /// Cached files found damaged (and fetched again).
    pub damaged: AtomicU64,
    /// Fetched cells that could not be written (served uncached).
    pub unwritable: AtomicU64,
}

/// A plain copy of [`CacheStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CacheCounts {
    /// Reads served from disk.
    pub hits: u64,
    /// Reads that fetched from storage.
    pub misses: u64,
    /// Bytes fetched from storage.
    pub bytes_from_storage: u64,
    /// Bytes served from disk.
    pub bytes_from_disk: u64,
    /// Damaged files found.
    pub damaged: u64,
    /// Fetched cells the cache could not write (served uncached: a full disk, say).
    pub unwritable: u64,
    /// Cells cached now.
    pub cells: u64,
    /// Bytes cached now.
    pub bytes: u64,
    /// The byte budget.
    pub capacity_bytes: u64,
}

/// A node's cache of immutable cells on local disk.
pub struct CellCache {
    dir: PathBuf,
    index: Index,
    random: Random,
    stats: CacheStats,
    capacity: u64,
    _lock: File,
}

impl std::fmt::Debug for CellCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CellCache")
            .field("dir", &self.dir)
            .field("capacity", &self.capacity)
            .field("cells", &self.index.len())
            .finish()
    }
}

impl CellCache {
    /// Opens (or creates) the cache in `config.dir`: takes the directory's lock, deletes
    /// leftovers of interrupted writes, and recovers the index from the entries on disk
    /// (evicting down to the budget). Blocking: call it from a blocking context.
    pub fn open(config: CacheConfig) -> Result<Self> {
        let io = |what: &str, source: std::io::Error| CacheError::Io {
            what: format!("{what} {}", config.dir.display()),
            source,
        };
        std::fs::create_dir_all(&config.dir).map_err(|e| io("cannot create", e))?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(config.dir.join(".lock"))
            .map_err(|e| io("cannot open the lock of", e))?;
        if lock.try_lock().is_err() {
            return Err(CacheError::InUse {
                dir: config.dir.display().to_string(),
            });
        }
        let options = OptionsBuilder::new()
            // One shard: a shard's capacity bounds the largest item, and cells are large.
            .shards(1)
            .estimated_items_capacity(1024)
            .weight_capacity(config.capacity_bytes.max(1))
            .build()
            .map_err(|e| CacheError::Config(format!("{e:?}")))?;
        let cache = Self {
            index: Cache::with_options(
                options,
                Bytesize,
                DefaultHashBuilder::default(),
                DoomOnEvict,
            ),
            dir: config.dir,
            random: Random::process(),
            stats: CacheStats::default(),
            capacity: config.capacity_bytes,
            _lock: lock,
        };
        cache.recover()?;
        Ok(cache)
    }

    fn recover(&self) -> Result<()> {
        let entries = std::fs::read_dir(&self.dir).map_err(|source| CacheError::Io {
            what: format!("cannot list {}", self.dir.display()),
            source,
        })?;
        let mut names: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        names.sort();
        let mut kept = std::collections::HashSet::new();
        for path in &names {
            if path.extension().is_some_and(|x| x == "meta")
                && let Some(cell) = CachedCell::recover(path)
                && !self.index.contains_key(&cell.key)
            {
                kept.insert(cell.data.clone());
                kept.insert(cell.meta.clone());
                self.index.insert(cell.key.clone(), Arc::new(cell));
            }
        }
        for path in names {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if name != ".lock" && !kept.contains(&path) {
                let _ = std::fs::remove_file(&path);
            }
        }
        Ok(())
    }

    /// The cached cell under `key`, if any (counts nothing).
    pub fn peek(&self, key: &str) -> Option<Arc<CachedCell>> {
        self.index.peek(key)
    }

    /// Whether `key` is cached.
    pub fn contains(&self, key: &str) -> bool {
        self.index.contains_key(key)
    }

    /// Drops `key` from the cache; its files go once no reader holds it.
    pub fn remove(&self, key: &str) {
        if let Some((_, cell)) = self.index.remove(key) {
            cell.doom();
        }
    }

    /// Writes `bytes` as the cell under `key` and indexes it (replacing nothing: a key
    /// already cached is kept). Blocking.
    pub fn insert(
        &self,
        key: &str,
        bytes: &Bytes,
        last_modified_ms: i64,
        e_tag: Option<String>,
    ) -> Result<Arc<CachedCell>> {
        if let Some(existing) = self.index.peek(key) {
            return Ok(existing);
        }
        let cell = Arc::new(
            self.writer()
                .write_entry(key, bytes, last_modified_ms, e_tag)?,
        );
        if bytes.len() as u64 > self.capacity {
            // Larger than the whole budget: served once, never kept.
            cell.doom();
            return Ok(cell);
        }
        self.index.insert(key.to_string(), Arc::clone(&cell));
        Ok(cell)
    }

    /// The cached cell under `key`, or the result of `fetch` (whole object bytes, stamp,
    /// ETag) written to disk first. Concurrent calls for one missing key fetch it once: the
    /// others wait and share the result. Returns the cell and, when this call fetched it,
    /// the bytes (so the first read needs no trip to disk).
    pub async fn get_or_fetch<F, Fut, E>(
        &self,
        key: &str,
        fetch: F,
    ) -> Result<(Arc<CachedCell>, Option<Bytes>)>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = std::result::Result<(Bytes, i64, Option<String>), E>>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        match self.index.get_value_or_guard_async(key).await {
            Ok(cell) => {
                self.stats.hits.fetch_add(1, Ordering::Relaxed);
                Ok((cell, None))
            }
            Err(guard) => {
                self.stats.misses.fetch_add(1, Ordering::Relaxed);
                let (bytes, stamp, e_tag) = fetch().await.map_err(|e| CacheError::Fetch {
                    key: key.to_string(),
                    source: e.into(),
                })?;
                self.stats
                    .bytes_from_storage
                    .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                let written = {
                    let (writer, key, bytes, e_tag) =
                        (self.writer(), key.to_string(), bytes.clone(), e_tag.clone());
                    apiary_storage::blocking::run(move || {
                        writer.write_entry(&key, &bytes, stamp, e_tag)
                    })
                    .await
                    .map_err(|e| CacheError::Config(format!("cache writer failed: {e}")))?
                };
                let cell = match written {
                    Ok(cell) => cell,
                    // A cache that cannot write (a full disk, its folder replaced) must not
                    // fail the read: the bytes are in hand, so they are served uncached.
                    Err(e @ CacheError::Io { .. }) => {
                        self.stats.unwritable.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(key, error = %e, "the cell cache cannot write; serving the cell uncached");
                        drop(guard);
                        let cell = CachedCell::unwritten(key, &bytes, stamp, e_tag);
                        return Ok((Arc::new(cell), Some(bytes)));
                    }
                    Err(e) => return Err(e),
                };
                let cell = Arc::new(cell);
                if cell.size > self.capacity {
                    cell.doom();
                    drop(guard);
                } else if guard.insert(Arc::clone(&cell)).is_err() {
                    // Displaced while fetching (a write's upload cached the same cell): the
                    // index keeps the other copy, so this one's files go once it is read.
                    cell.doom();
                }
                Ok((cell, Some(bytes)))
            }
        }
    }

    /// A handle that writes entries into this cache's directory from another thread.
    fn writer(&self) -> EntryWriter {
        EntryWriter {
            dir: self.dir.clone(),
            random: self.random.clone(),
        }
    }

    /// Counts a read served from disk.
    pub fn note_read(&self, bytes: u64) {
        self.stats
            .bytes_from_disk
            .fetch_add(bytes, Ordering::Relaxed);
    }

    /// Counts a damaged file found (the caller fetches it again).
    pub fn note_damaged(&self, key: &str) {
        self.stats.damaged.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(key, "a cached cell failed its checksum; fetching it again");
        self.remove(key);
    }

    /// Counters and usage now.
    pub fn counts(&self) -> CacheCounts {
        let s = &self.stats;
        CacheCounts {
            hits: s.hits.load(Ordering::Relaxed),
            misses: s.misses.load(Ordering::Relaxed),
            bytes_from_storage: s.bytes_from_storage.load(Ordering::Relaxed),
            bytes_from_disk: s.bytes_from_disk.load(Ordering::Relaxed),
            damaged: s.damaged.load(Ordering::Relaxed),
            unwritable: s.unwritable.load(Ordering::Relaxed),
            cells: self.index.len() as u64,
            bytes: self.index.weight(),
            capacity_bytes: self.capacity,
        }
    }

    /// Up to `limit` cached keys (for the heartbeat's cache summary).
    pub fn keys(&self, limit: usize) -> Vec<String> {
        self.index.iter().take(limit).map(|(k, _)| k).collect()
    }

    /// The directory.
    pub fn dir(&self) -> &FsPath {
        &self.dir
    }
}
