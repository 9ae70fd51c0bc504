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

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use apiary_storage::Random;
use bytes::Bytes;
use quick_cache::sync::Cache;
use quick_cache::{DefaultHashBuilder, Lifecycle, OptionsBuilder, Weighter};
use serde::{Deserialize, Serialize};

use crate::error::{CacheError, Result};

/// Bytes covered by one checksum.
pub const BLOCK_BYTES: u64 = 1 << 20;

/// Where a cache lives and how much it may hold.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// The node's own cache directory.
    pub dir: PathBuf,
    /// The byte budget over all cached cells.
    pub capacity_bytes: u64,
}

impl CacheConfig {
    /// The default budget for a cache in `dir`: a fifth of the disk space free there now
    /// (at least 64 MiB).
    pub fn default_capacity(dir: &FsPath) -> u64 {
        let free = rustix::fs::statvfs(dir)
            .map(|s| s.f_bavail.saturating_mul(s.f_frsize))
            .unwrap_or(0);
        (free / 5).max(64 << 20)
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Meta {
    format: u32,
    key: String,
    size: u64,
    last_modified_ms: i64,
    #[serde(default)]
    e_tag: Option<String>,
    block_bytes: u64,
    crcs: Vec<u32>,
}

const META_FORMAT: u32 = 1;

/// One cached cell. Cheap to clone behind an `Arc`; its files are deleted when it has been
/// evicted (or found damaged) and the last holder drops it.
#[derive(Debug)]
pub struct CachedCell {
    key: String,
    data: PathBuf,
    meta: PathBuf,
    size: u64,
    last_modified_ms: i64,
    e_tag: Option<String>,
    block_bytes: u64,
    crcs: Vec<u32>,
    doomed: AtomicBool,
}

impl CachedCell {
    /// The storage key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The object's modification stamp in storage (milliseconds since the epoch).
    pub fn last_modified_ms(&self) -> i64 {
        self.last_modified_ms
    }

    /// The object's ETag in storage, if it had one.
    pub fn e_tag(&self) -> Option<&str> {
        self.e_tag.as_deref()
    }

    fn doom(&self) {
        self.doomed.store(true, Ordering::SeqCst);
    }

    /// A cell fetched but not written to disk: served from the fetched bytes only, never
    /// read from disk, and never indexed.
    fn unwritten(key: &str, bytes: &Bytes, last_modified_ms: i64, e_tag: Option<String>) -> Self {
        Self {
            key: key.to_string(),
            data: PathBuf::new(),
            meta: PathBuf::new(),
            size: bytes.len() as u64,
            last_modified_ms,
            e_tag,
            block_bytes: BLOCK_BYTES,
            crcs: Vec::new(),
            doomed: AtomicBool::new(false),
        }
    }

    /// Reads `range` from disk, verifying every block it touches. Blocking.
    pub fn read(&self, range: std::ops::Range<u64>) -> Result<Bytes> {
        let mut out = self.read_ranges(std::slice::from_ref(&range))?;
        Ok(out.pop().unwrap_or_default())
    }

    /// Reads every range from disk with one open of the file: the blocks the ranges touch
    /// are read and verified once each (runs of adjacent blocks in one read), and each range
    /// is a slice of them. Blocking.
    pub fn read_ranges(&self, ranges: &[std::ops::Range<u64>]) -> Result<Vec<Bytes>> {
        if let Some(bad) = ranges.iter().find(|r| r.start > r.end || r.end > self.size) {
            return Err(CacheError::Range {
                key: self.key.clone(),
                range: bad.clone(),
                size: self.size,
            });
        }
        // The blocks wanted, as sorted runs of adjacent block indexes.
        let mut blocks: Vec<(u64, u64)> = ranges
            .iter()
            .filter(|r| !r.is_empty())
            .map(|r| (r.start / self.block_bytes, (r.end - 1) / self.block_bytes))
            .collect();
        blocks.sort_unstable();
        let mut runs: Vec<(u64, u64)> = Vec::with_capacity(blocks.len());
        for (first, last) in blocks {
            match runs.last_mut() {
                Some((_, end)) if first <= *end + 1 => *end = (*end).max(last),
                _ => runs.push((first, last)),
            }
        }
        let mut file = None;
        // Each run read and verified: (first byte, its bytes).
        let mut read: Vec<(u64, Bytes)> = Vec::with_capacity(runs.len());
        for (first, last) in runs {
            let file = match &file {
                Some(f) => f,
                None => file.insert(
                    File::open(&self.data)
                        .map_err(|e| self.damaged(format!("cannot open: {e}")))?,
                ),
            };
            let start = first * self.block_bytes;
            let end = ((last + 1) * self.block_bytes).min(self.size);
            let mut buf = vec![0u8; (end - start) as usize];
            file.read_exact_at(&mut buf, start)
                .map_err(|e| self.damaged(format!("cannot read: {e}")))?;
            for (i, block) in buf.chunks(self.block_bytes as usize).enumerate() {
                let index = first as usize + i;
                let expected = self.crcs.get(index).copied();
                if expected != Some(crc32c::crc32c(block)) {
                    return Err(self.damaged(format!("block {index} fails its checksum")));
                }
            }
            read.push((start, Bytes::from(buf)));
        }
        Ok(ranges
            .iter()
            .map(|r| {
                if r.is_empty() {
                    return Bytes::new();
                }
                // The run that starts at or before the range holds all of it.
                let at = read
                    .partition_point(|(start, _)| *start <= r.start)
                    .saturating_sub(1);
                let (start, bytes) = &read[at];
                bytes.slice((r.start - start) as usize..(r.end - start) as usize)
            })
            .collect())
    }

    fn damaged(&self, reason: String) -> CacheError {
        CacheError::Damaged {
            key: self.key.clone(),
            reason,
        }
    }
}

impl Drop for CachedCell {
    fn drop(&mut self) {
        if self.doomed.load(Ordering::SeqCst) {
            let _ = std::fs::remove_file(&self.meta);
            let _ = std::fs::remove_file(&self.data);
        }
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
            random: Random::from_os(),
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
                && let Some(cell) = self.recover_entry(path)
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

    /// An entry whose meta parses and whose data file has the recorded size.
    fn recover_entry(&self, meta_path: &FsPath) -> Option<CachedCell> {
        let meta: Meta = serde_json::from_slice(&std::fs::read(meta_path).ok()?).ok()?;
        let data = meta_path.with_extension("cell");
        let on_disk = std::fs::metadata(&data).ok()?.len();
        let blocks = meta.size.div_ceil(meta.block_bytes.max(1));
        if meta.format != META_FORMAT
            || on_disk != meta.size
            || meta.block_bytes == 0
            || meta.crcs.len() as u64 != blocks
        {
            return None;
        }
        Some(CachedCell {
            key: meta.key,
            data,
            meta: meta_path.to_path_buf(),
            size: meta.size,
            last_modified_ms: meta.last_modified_ms,
            e_tag: meta.e_tag,
            block_bytes: meta.block_bytes,
            crcs: meta.crcs,
            doomed: AtomicBool::new(false),
        })
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
                    tokio::task::spawn_blocking(move || {
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
                } else {
                    let _ = guard.insert(Arc::clone(&cell));
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

/// Writes entries into a cache directory (the part of [`CellCache`] a blocking thread needs).
struct EntryWriter {
    dir: PathBuf,
    random: Random,
}

impl EntryWriter {
    /// Writes the data file, then the meta file (each to a temporary name, then renamed).
    fn write_entry(
        &self,
        key: &str,
        bytes: &Bytes,
        last_modified_ms: i64,
        e_tag: Option<String>,
    ) -> Result<CachedCell> {
        let id = self.random.id();
        let data = self.dir.join(format!("{id}.cell"));
        let meta_path = self.dir.join(format!("{id}.meta"));
        let meta = Meta {
            format: META_FORMAT,
            key: key.to_string(),
            size: bytes.len() as u64,
            last_modified_ms,
            e_tag: e_tag.clone(),
            block_bytes: BLOCK_BYTES,
            crcs: bytes
                .chunks(BLOCK_BYTES as usize)
                .map(crc32c::crc32c)
                .collect(),
        };
        let encoded = serde_json::to_vec(&meta)
            .map_err(|e| CacheError::Config(format!("cache metadata cannot be encoded: {e}")))?;
        match write_atomically(&data, bytes) {
            // The folder was removed under the running node (a cleaner of temporary
            // files, an operator): made again, and the write tried once more.
            Err(CacheError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(&self.dir).map_err(|source| CacheError::Io {
                    what: format!("cannot create {}", self.dir.display()),
                    source,
                })?;
                tracing::warn!(dir = %self.dir.display(), "the cell cache's folder was gone; made it again");
                write_atomically(&data, bytes)?;
            }
            other => other?,
        }
        if let Err(e) = write_atomically(&meta_path, &encoded) {
            let _ = std::fs::remove_file(&data);
            return Err(e);
        }
        Ok(CachedCell {
            key: meta.key,
            data,
            meta: meta_path,
            size: meta.size,
            last_modified_ms,
            e_tag,
            block_bytes: BLOCK_BYTES,
            crcs: meta.crcs,
            doomed: AtomicBool::new(false),
        })
    }
}

fn write_atomically(path: &FsPath, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let io = |source: std::io::Error| CacheError::Io {
        what: format!("cannot write {}", path.display()),
        source,
    };
    let mut file = File::create(&tmp).map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(io)
}
