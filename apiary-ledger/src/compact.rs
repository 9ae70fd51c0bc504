//! Compaction: many small cells of a partition rewritten into few cells near the target
//! size, in one ledger commit.
//!
//! * **Atomic.** The new cells and the removal of the old ones are one `rewrite` entry, so a
//!   reader sees either every old cell or every new one: no row twice, none missing. The old
//!   files stay for readers of older versions until vacuum.
//! * **Bounded memory.** A group's cells are read one at a time as the encoder pulls their
//!   rows, so a compaction holds one cell's decoded rows (and the cells being encoded), not
//!   the group's.
//! * **Safe against writers.** A rewrite requires every cell it removes to be live when it
//!   commits; an overwrite (or another compaction) that removed one first makes it fail as a
//!   conflict, and the cells it uploaded are left to vacuum. Appends meanwhile commute.
//! * **One node at a time, no coordinator.** A node compacts a frame only while it holds the
//!   frame's lease: `{frame}/_compaction/lease-{epoch:020}.json`, created with
//!   create-if-absent. The newest epoch is the lease; it lapses when its object is older
//!   than the lease time on the store's clock, and whoever then creates the next epoch
//!   holds it. (Were two nodes ever to compact at once, the ledger's rules above would keep
//!   the data right; the lease only spares the wasted work.)

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use apiary_storage::{CreateOutcome, Path, StorageBackend, store_now};
use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::entry::Cell;
use crate::error::{LedgerError, Result};
use crate::layout::frame_root;
use crate::ledger::FrameLedger;
use crate::ops::Operation;
use crate::write::{WriteOptions, commit_uploaded, read_cell, upload_cells};

/// How compaction works.
#[derive(Debug, Clone)]
pub struct CompactOptions {
    /// Sizing of the new cells (their target size, memory budget, write age limit).
    pub write: WriteOptions,
    /// Cells smaller than this are compacted (default: half the target size).
    pub small_cell_bytes: u64,
    /// A partition is compacted when it has at least this many small cells (default 4).
    pub min_cells: usize,
    /// Most bytes of small cells rewritten in one commit (default: the memory budget).
    pub max_bytes_per_commit: u64,
    /// How long a lease lasts unless renewed (default 1 minute; the holder renews it every
    /// third of that while it works).
    pub lease: Duration,
    /// Who compacts (a node id), recorded in the lease.
    pub owner: String,
}

impl CompactOptions {
    /// Compaction to cells of `write`'s target size, by `owner`.
    pub fn new(write: WriteOptions, owner: impl Into<String>) -> Self {
        Self {
            small_cell_bytes: write.target_cell_bytes as u64 / 2,
            max_bytes_per_commit: write.memory_budget as u64,
            write,
            min_cells: 4,
            lease: Duration::from_secs(60),
            owner: owner.into(),
        }
    }
}

/// What a compaction did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CompactResult {
    /// Commits made (one per group of small cells).
    pub commits: usize,
    /// Small cells replaced.
    pub cells_removed: usize,
    /// Cells written in their place.
    pub cells_added: usize,
    /// Rows rewritten.
    pub rows: u64,
    /// Groups skipped because a concurrent change removed one of their cells first (tried
    /// again next time).
    pub conflicts: usize,
    /// True when another node held the frame's lease, so nothing was done.
    pub lease_held_elsewhere: bool,
}

#[derive(Debug, Serialize, Deserialize)]
struct Lease {
    owner: String,
    epoch: u64,
    lease_ms: u64,
    write_id: String,
}

/// Compacts the small cells of the frame of `ledger`, partition by partition.
pub async fn compact(
    ledger: &FrameLedger,
    backend: &dyn StorageBackend,
    options: &CompactOptions,
) -> Result<CompactResult> {
    let Some((lease, bytes)) = acquire_lease(ledger, backend, options).await? else {
        return Ok(CompactResult {
            lease_held_elsewhere: true,
            ..CompactResult::default()
        });
    };
    // Renewed while the work runs (a failed renewal is retried at the next one: the lease
    // has two more thirds of its time to go).
    let renew = async {
        if options.lease.is_zero() {
            return std::future::pending().await;
        }
        let clock = Arc::clone(&ledger.config().clock);
        loop {
            clock.sleep(options.lease / 3).await;
            if let Err(e) = backend.put(&lease, bytes.clone()).await {
                tracing::debug!(key = %lease, error = %e, "compaction lease not renewed");
            }
        }
    };
    let result = tokio::select! {
        biased;
        result = compact_groups(ledger, backend, options) => result,
        () = renew => unreachable_renewal(),
    };
    // Released at once so another node need not wait for it to lapse.
    let _ = backend.delete(&lease).await;
    result
}

async fn compact_groups(
    ledger: &FrameLedger,
    backend: &dyn StorageBackend,
    options: &CompactOptions,
) -> Result<CompactResult> {
    let state = ledger.refresh().await?;
    let live = state
        .as_deref()
        .and_then(|s| s.live.as_ref())
        .ok_or_else(|| LedgerError::NotFound {
            what: format!("frame `{}`", ledger.frame()),
        })?;
    let definition = live.definition.clone();
    let schema: SchemaRef = Arc::new(definition.schema.to_arrow()?);
    let root = frame_root(ledger.frame());
    // Small cells by partition, smallest first.
    let mut partitions: BTreeMap<Vec<(String, Option<String>)>, Vec<Cell>> = BTreeMap::new();
    for cell in live.cells.values() {
        if cell.bytes < options.small_cell_bytes {
            let key = cell
                .partition_values
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            partitions.entry(key).or_default().push(cell.clone());
        }
    }
    let mut result = CompactResult::default();
    for mut cells in partitions.into_values() {
        if cells.len() < options.min_cells.max(2) {
            continue;
        }
        cells.sort_by(|a, b| a.bytes.cmp(&b.bytes).then_with(|| a.path.cmp(&b.path)));
        for group in groups(cells, options.max_bytes_per_commit) {
            if group.len() < 2 {
                continue;
            }
            let batches = cell_by_cell(ledger, &root, &schema, group.clone()).await?;
            let uploaded =
                upload_cells(ledger, backend, definition.clone(), batches, &options.write).await?;
            let added = uploaded.cells.len();
            let op = Operation::Rewrite {
                remove: group.iter().map(|c| c.path.clone()).collect(),
                add: uploaded.cells,
            };
            let committed = commit_uploaded(
                ledger,
                op,
                live.incarnation,
                uploaded.first_upload,
                &options.write,
            );
            match committed.await {
                Ok(_) => {
                    result.commits += 1;
                    result.cells_removed += group.len();
                    result.cells_added += added;
                    result.rows += group.iter().map(|c| c.rows).sum::<u64>();
                }
                Err(LedgerError::Conflict { what, detail }) => {
                    tracing::info!(%what, %detail, "compaction lost to a concurrent change; trying again later");
                    result.conflicts += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(result)
}

/// The rows of `cells`, read through the ledger's storage one cell at a time as the encoder
/// pulls them (on its blocking thread): a group holds one cell's decoded rows in memory at
/// once, not the whole group's. An encoder run in place (a deterministic simulation,
/// [`apiary_storage::blocking`]) has no thread of its own to block on reads, so there the
/// group is read first.
async fn cell_by_cell(
    ledger: &FrameLedger,
    root: &Path,
    schema: &SchemaRef,
    cells: Vec<Cell>,
) -> Result<Box<dyn Iterator<Item = Result<RecordBatch>> + Send + 'static>> {
    if apiary_storage::blocking::is_inline() {
        let mut rows = Vec::new();
        for cell in &cells {
            rows.extend(read_cell(ledger.backend().as_ref(), root, schema, cell).await?);
        }
        return Ok(Box::new(rows.into_iter().map(Ok)));
    }
    let runtime = tokio::runtime::Handle::current();
    let backend = Arc::clone(ledger.backend());
    let (root, schema) = (root.clone(), Arc::clone(schema));
    let mut pending = cells.into_iter();
    let mut current = Vec::new().into_iter();
    Ok(Box::new(std::iter::from_fn(move || {
        loop {
            if let Some(batch) = current.next() {
                return Some(Ok(batch));
            }
            let cell = pending.next()?;
            match runtime.block_on(read_cell(backend.as_ref(), &root, &schema, &cell)) {
                Ok(batches) => current = batches.into_iter(),
                Err(e) => {
                    pending = Vec::new().into_iter();
                    return Some(Err(e));
                }
            }
        }
    })))
}

/// `cells` cut into runs of at most `max_bytes` each (a run has at least one cell).
fn groups(cells: Vec<Cell>, max_bytes: u64) -> Vec<Vec<Cell>> {
    let mut out: Vec<Vec<Cell>> = Vec::new();
    let mut bytes = 0;
    for cell in cells {
        match out.last_mut() {
            Some(run) if bytes + cell.bytes <= max_bytes.max(1) => {
                bytes += cell.bytes;
                run.push(cell);
            }
            _ => {
                bytes = cell.bytes;
                out.push(vec![cell]);
            }
        }
    }
    out
}

/// The renewal loop never ends; `select!` still needs a value for its branch.
fn unreachable_renewal() -> Result<CompactResult> {
    Err(LedgerError::Invalid(
        "the compaction lease's renewal stopped".into(),
    ))
}

/// Takes the frame's compaction lease, or `None` if another node holds it. Returns the key
/// of the lease object this node created, and its bytes (to renew it).
async fn acquire_lease(
    ledger: &FrameLedger,
    backend: &dyn StorageBackend,
    options: &CompactOptions,
) -> Result<Option<(Path, Bytes)>> {
    let dir = frame_root(ledger.frame()).join("_compaction");
    let listed = backend.list(&dir).await?;
    let newest = listed
        .iter()
        .filter_map(|m| {
            let name = m.key.filename()?;
            let epoch = name
                .strip_prefix("lease-")?
                .strip_suffix(".json")?
                .parse::<u64>()
                .ok()?;
            Some((epoch, m))
        })
        .max_by_key(|(epoch, _)| *epoch);
    let next = match newest {
        Some((epoch, meta)) => {
            let age_ms = store_now(backend)
                .await?
                .saturating_sub(meta.last_modified_ms);
            if age_ms >= 0 && (age_ms as u128) < options.lease.as_millis() {
                return Ok(None);
            }
            epoch + 1
        }
        None => 0,
    };
    let key = dir.join(format!("lease-{next:020}.json"));
    let lease = Lease {
        owner: options.owner.clone(),
        epoch: next,
        lease_ms: options.lease.as_millis().min(u128::from(u64::MAX)) as u64,
        write_id: ledger.config().random.id(),
    };
    let bytes = Bytes::from(
        serde_json::to_vec(&lease)
            .map_err(|e| LedgerError::Invalid(format!("a lease cannot be encoded: {e}")))?,
    );
    match backend.put_if_absent(&key, bytes.clone()).await? {
        CreateOutcome::Created(_) => {
            // Older epochs are history now.
            for meta in &listed {
                let _ = backend.delete(&meta.key).await;
            }
            Ok(Some((key, bytes)))
        }
        CreateOutcome::AlreadyExists(_) => Ok(None),
    }
}
