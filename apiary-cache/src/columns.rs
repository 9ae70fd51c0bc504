//! [`ColumnTier`]: a node's memory tier of decoded cell columns, above the disk cache.
//!
//! A warm query spends most of its time decoding Parquet. Cells are immutable, so the Arrow
//! arrays a cell's column decodes to can be kept and served again, with nothing ever to
//! invalidate. The tier keeps them per `(cell, column)`: only the columns queries actually
//! read are held, and a column is admitted on its **second** read, so a one-off scan of a
//! large frame never flushes what repeated queries use (and cold scans keep DataFusion's
//! Parquet path with its row-group and page pruning).
//!
//! **Memory.** The tier is part of the node's memory budget, not extra to it. It holds at
//! most its share of the budget, and never more than what the queries' memory pools leave
//! free: every byte a pool reserves lowers the tier's capacity by one (evicting the
//! least valuable columns at once), and capacity comes back as pools release. Under memory
//! pressure the tier is what gives way first. Eviction is not hand-written: the index is
//! [`quick_cache`]'s (S3-FIFO / Clock-PRO), weighted by the arrays' memory.

use std::collections::HashSet;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow_array::{Array, ArrayRef};
use arrow_data::ArrayData;
use quick_cache::sync::Cache;
use quick_cache::{DefaultHashBuilder, Lifecycle, OptionsBuilder, Weighter};
use serde::Serialize;

use crate::error::{CacheError, Result};

/// A column of one cell: the cell's storage key and the column's name.
pub type ColumnKey = (String, String);

/// Keys remembered as read once (for admission on the second read).
const SEEN_KEYS: usize = 1 << 16;

/// Capacity changes smaller than this are not applied (pools grow in small steps).
const CAPACITY_STEP: u64 = 1 << 20;

/// Memory held by arrays, each buffer counted once however many arrays share it (decoded
/// string views of one page share its data buffer; `get_array_memory_size` would count it
/// once per array).
#[derive(Debug, Default)]
pub struct MemoryCount {
    seen: HashSet<usize>,
    bytes: u64,
}

impl MemoryCount {
    /// Counts `array`'s buffers not counted yet; returns the bytes it added.
    pub fn add(&mut self, array: &dyn Array) -> u64 {
        let before = self.bytes;
        self.add_data(&array.to_data());
        self.bytes - before
    }

    fn add_data(&mut self, data: &ArrayData) {
        let nulls = data.nulls().map(|n| n.buffer());
        for buffer in data.buffers().iter().chain(nulls) {
            if self.seen.insert(buffer.data_ptr().as_ptr() as usize) {
                self.bytes += buffer.capacity() as u64;
            }
        }
        for child in data.child_data() {
            self.add_data(child);
        }
    }

    /// Bytes counted so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

/// One column of one cell, decoded: its arrays in the order a scan of the cell yields them.
#[derive(Debug)]
pub struct ColumnChunks {
    arrays: Vec<ArrayRef>,
    bytes: u64,
}

impl ColumnChunks {
    /// The column's arrays, in cell order.
    pub fn new(arrays: Vec<ArrayRef>) -> Self {
        let mut count = MemoryCount::default();
        for array in &arrays {
            count.add(array.as_ref());
        }
        Self {
            arrays,
            bytes: count.bytes(),
        }
    }

    /// The arrays, in cell order.
    pub fn arrays(&self) -> &[ArrayRef] {
        &self.arrays
    }

    /// Memory the arrays hold.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Rows of each array.
    pub fn lengths(&self) -> impl Iterator<Item = usize> + '_ {
        self.arrays.iter().map(|a| a.len())
    }
}

#[derive(Debug, Clone, Copy)]
struct ByMemory;

impl Weighter<ColumnKey, Arc<ColumnChunks>> for ByMemory {
    fn weight(&self, key: &ColumnKey, chunks: &Arc<ColumnChunks>) -> u64 {
        (chunks.bytes + (key.0.len() + key.1.len()) as u64).max(1)
    }
}

/// Counts evictions.
#[derive(Debug, Clone, Default)]
struct CountEvictions(Arc<AtomicU64>);

impl Lifecycle<ColumnKey, Arc<ColumnChunks>> for CountEvictions {
    type RequestState = ();

    fn on_evict(&self, _state: &mut (), _key: ColumnKey, _chunks: Arc<ColumnChunks>) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

type Index = Cache<ColumnKey, Arc<ColumnChunks>, ByMemory, DefaultHashBuilder, CountEvictions>;

/// What the tier holds and has done since it was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TierCounts {
    /// Column reads served from memory.
    pub hits: u64,
    /// Column reads that were not in memory.
    pub misses: u64,
    /// Columns admitted.
    pub admitted: u64,
    /// Columns evicted (for room, or under memory pressure).
    pub evicted: u64,
    /// Cells decoded whole to be admitted (or, when their admission did not fit or was
    /// gone, by the scans that had waited for it).
    pub loads: u64,
    /// Scans that waited for another scan's load of a cell instead of decoding it too.
    pub load_waits: u64,
    /// Columns held now.
    pub columns: u64,
    /// Bytes held now.
    pub bytes: u64,
    /// Bytes the tier may hold now (its share, less what queries' pools hold).
    pub capacity_bytes: u64,
    /// The tier's share of the node's memory: the most it ever holds.
    pub share_bytes: u64,
}

/// Decoded columns of hot cells, in memory, within a share of the node's memory that
/// yields to the queries' memory pools.
pub struct ColumnTier {
    index: Index,
    seen: Mutex<lru::LruCache<ColumnKey, ()>>,
    /// The most the tier holds (atomics: read on every pool reservation).
    share: AtomicU64,
    /// The node's whole memory budget (pools and tier).
    budget: AtomicU64,
    /// Bytes the node's query pools hold now.
    pools: AtomicU64,
    /// The capacity last applied to the index.
    applied: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    admitted: AtomicU64,
    evicted: Arc<AtomicU64>,
    loads: AtomicU64,
    load_waits: AtomicU64,
    /// Cells being decoded for admission, and the bytes they buffer meanwhile.
    admissions: Arc<Admissions>,
}

/// The admissions in progress of one tier: which cells (with the signal their followers
/// wait on), and their buffered bytes in all.
#[derive(Debug, Default)]
struct Admissions {
    bytes: AtomicU64,
    cells: Mutex<std::collections::HashMap<String, tokio::sync::watch::Receiver<bool>>>,
}

/// What [`ColumnTier::begin_admission`] gives a scan about to decode a cell to admit it.
#[derive(Debug)]
pub enum Admission {
    /// This scan admits the cell: it decodes it within the ticket's room.
    Lead(AdmissionTicket),
    /// Another scan is admitting the cell: wait for it rather than decode it again.
    Follow(AdmissionWait),
}

/// The right to buffer a cell's decoded columns for admission (see
/// [`ColumnTier::begin_admission`]). Dropping it gives its bytes back, lets another scan
/// admit the cell, and tells the scans waiting for it whether it was admitted.
#[derive(Debug)]
pub struct AdmissionTicket {
    admissions: Arc<Admissions>,
    cell: String,
    reserved: u64,
    room: u64,
    /// Tells followers the outcome (`true`: admitted); `None` once told.
    done: Option<tokio::sync::watch::Sender<bool>>,
}

/// A wait for another scan's admission of a cell (see [`Admission::Follow`]).
#[derive(Debug)]
pub struct AdmissionWait {
    done: tokio::sync::watch::Receiver<bool>,
}

impl AdmissionWait {
    /// Waits until the leading scan admitted the cell (`true`: its columns are in the
    /// tier now, unless evicted at once) or gave up (`false`: decode it without
    /// admitting). The lead decodes on a task of its own, so this never waits on a
    /// consumer that stopped reading.
    pub async fn admitted(mut self) -> bool {
        loop {
            if *self.done.borrow_and_update() {
                return true;
            }
            if self.done.changed().await.is_err() {
                return *self.done.borrow();
            }
        }
    }
}

impl AdmissionTicket {
    /// Tells the waiting scans that the cell's columns are in the tier.
    pub fn admitted(&mut self) {
        self.release_followers(true);
    }

    /// Tells the waiting scans that this admission will not admit the cell (it does not
    /// fit), so they decode it themselves, and lets another scan admit it; the bytes
    /// counted stay reserved until the ticket is dropped.
    pub fn give_up(&mut self) {
        self.release_followers(false);
    }

    fn release_followers(&mut self, admitted: bool) {
        if let Some(done) = self.done.take() {
            self.admissions
                .cells
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&self.cell);
            let _ = done.send(admitted);
        }
    }

    /// Counts `bytes` more as buffered; false (and nothing counted) when all admissions in
    /// progress would then buffer more than the tier holds: give the admission up.
    pub fn reserve(&mut self, bytes: u64) -> bool {
        let total = &self.admissions.bytes;
        let mut now = total.load(Ordering::Relaxed);
        loop {
            let next = now.saturating_add(bytes);
            if next > self.room {
                return false;
            }
            match total.compare_exchange_weak(now, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => {
                    self.reserved += bytes;
                    return true;
                }
                Err(actual) => now = actual,
            }
        }
    }
}

impl Drop for AdmissionTicket {
    fn drop(&mut self) {
        self.admissions
            .bytes
            .fetch_sub(self.reserved, Ordering::Relaxed);
        self.release_followers(false);
    }
}

impl std::fmt::Debug for ColumnTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ColumnTier")
            .field("counts", &self.counts())
            .finish()
    }
}

impl ColumnTier {
    /// A tier holding at most `share` bytes of a node whose memory budget is `budget` bytes
    /// (queries' pools and the tier together). A share of 0 turns the tier off.
    pub fn new(share: u64, budget: u64) -> Result<Self> {
        let evicted = Arc::new(AtomicU64::new(0));
        let capacity = share.min(budget);
        let options = OptionsBuilder::new()
            // One shard: a shard's capacity bounds the largest column it admits, and lookups
            // are few (a scan's planning, per cell), so one lock is no bottleneck.
            .shards(1)
            .estimated_items_capacity(4096)
            .weight_capacity(capacity.max(1))
            .build()
            .map_err(|e| CacheError::Config(format!("{e:?}")))?;
        Ok(Self {
            index: Cache::with_options(
                options,
                ByMemory,
                DefaultHashBuilder::default(),
                CountEvictions(Arc::clone(&evicted)),
            ),
            seen: Mutex::new(lru::LruCache::new(
                NonZeroUsize::new(SEEN_KEYS).unwrap_or(NonZeroUsize::MIN),
            )),
            share: AtomicU64::new(share),
            budget: AtomicU64::new(budget),
            pools: AtomicU64::new(0),
            applied: AtomicU64::new(capacity),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            admitted: AtomicU64::new(0),
            evicted,
            loads: AtomicU64::new(0),
            load_waits: AtomicU64::new(0),
            admissions: Arc::default(),
        })
    }

    /// A ticket to decode `cell` for admission ([`Admission::Lead`]), or, while another
    /// scan admits it, a wait for that one ([`Admission::Follow`]): one cell is decoded
    /// once however many scans want it at the same moment. Every admission in progress
    /// buffers its decoded columns outside the query pools, so their bytes together are
    /// held to the tier's capacity (see [`AdmissionTicket::reserve`]): P scans loading at
    /// once hold at most the tier's size, not P times it.
    pub fn begin_admission(&self, cell: &str) -> Admission {
        let mut cells = self
            .admissions
            .cells
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(done) = cells.get(cell) {
            self.load_waits.fetch_add(1, Ordering::Relaxed);
            return Admission::Follow(AdmissionWait { done: done.clone() });
        }
        let (done, waiting) = tokio::sync::watch::channel(false);
        cells.insert(cell.to_string(), waiting);
        Admission::Lead(AdmissionTicket {
            admissions: Arc::clone(&self.admissions),
            cell: cell.to_string(),
            reserved: 0,
            room: self.capacity(),
            done: Some(done),
        })
    }

    /// Counts a whole-cell decode of a cell being loaded (see [`TierCounts::loads`]).
    pub fn count_load(&self) {
        self.loads.fetch_add(1, Ordering::Relaxed);
    }

    /// Bytes that admissions in progress buffer now.
    pub fn admitting_bytes(&self) -> u64 {
        self.admissions.bytes.load(Ordering::Relaxed)
    }

    /// Whether the tier may hold anything at all.
    pub fn is_enabled(&self) -> bool {
        self.share.load(Ordering::Relaxed) > 0
    }

    /// Sets the tier's share and the node's budget (when a node starts with its bees'
    /// memory, or an operator changes them). A share of 0 empties the tier and turns it off.
    pub fn set_limits(&self, share: u64, budget: u64) {
        self.budget.store(budget, Ordering::Relaxed);
        self.share.store(share, Ordering::Relaxed);
        if share == 0 {
            self.index.clear();
            self.seen.lock().unwrap_or_else(|p| p.into_inner()).clear();
        }
        self.apply(true);
    }

    /// The column, if it is held (counted as a hit or a miss).
    pub fn get(&self, cell: &str, column: &str) -> Option<Arc<ColumnChunks>> {
        let key = (cell.to_string(), column.to_string());
        let found = self.index.get(&key);
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Records a read of a column that is not held, and says whether it should be
    /// admitted now: true from its second read on (while the tier is on).
    pub fn read_again(&self, cell: &str, column: &str) -> bool {
        if !self.is_enabled() {
            return false;
        }
        let key = (cell.to_string(), column.to_string());
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.get(&key).is_some() {
            true
        } else {
            seen.put(key, ());
            false
        }
    }

    /// Forgets that `columns` of `cell` were read (a load that did not fit): the next read
    /// is a first read again.
    pub fn forget(&self, cell: &str, columns: &[String]) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        for column in columns {
            seen.pop(&(cell.to_string(), column.clone()));
        }
    }

    /// Keeps a decoded column (it may be evicted at once if it does not fit).
    pub fn insert(&self, cell: &str, column: &str, chunks: Arc<ColumnChunks>) {
        if !self.is_enabled() {
            return;
        }
        let key = (cell.to_string(), column.to_string());
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop(&key);
        self.index.insert(key, chunks);
        self.admitted.fetch_add(1, Ordering::Relaxed);
    }

    /// The node's query pools reserved `bytes` more: the tier gives them room.
    pub fn pools_grew(&self, bytes: usize) {
        self.pools.fetch_add(bytes as u64, Ordering::Relaxed);
        self.apply(false);
    }

    /// The node's query pools released `bytes`: the tier may hold more again.
    pub fn pools_shrank(&self, bytes: usize) {
        let bytes = bytes as u64;
        let _ = self
            .pools
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
                Some(held.saturating_sub(bytes))
            });
        self.apply(false);
    }

    /// The capacity the tier should have now.
    fn capacity(&self) -> u64 {
        let free = self
            .budget
            .load(Ordering::Relaxed)
            .saturating_sub(self.pools.load(Ordering::Relaxed));
        self.share.load(Ordering::Relaxed).min(free)
    }

    /// Applies the capacity to the index when it moved by a step (or always when `force`):
    /// shrinking evicts at once.
    fn apply(&self, force: bool) {
        let capacity = self.capacity();
        let applied = self.applied.load(Ordering::Relaxed);
        let moved = capacity.abs_diff(applied);
        let shrinks_below_content = capacity < applied && self.index.weight() > capacity;
        if force || moved >= CAPACITY_STEP || (shrinks_below_content && moved > 0) {
            self.applied.store(capacity, Ordering::Relaxed);
            self.index.set_capacity(capacity.max(1));
        }
    }

    /// What the tier holds and has done.
    pub fn counts(&self) -> TierCounts {
        TierCounts {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            admitted: self.admitted.load(Ordering::Relaxed),
            evicted: self.evicted.load(Ordering::Relaxed),
            loads: self.loads.load(Ordering::Relaxed),
            load_waits: self.load_waits.load(Ordering::Relaxed),
            columns: self.index.len() as u64,
            bytes: self.index.weight(),
            capacity_bytes: self.capacity(),
            share_bytes: self.share.load(Ordering::Relaxed),
        }
    }
}
