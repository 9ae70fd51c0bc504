//! Writing Arrow data to a frame, and reading its cells back.
//!
//! A write aligns each batch to the frame schema by name, splits it by partition, and feeds
//! each partition's rows to an open cell. A cell is finished and uploaded once it reaches the
//! target size; if the open cells together buffer more than the memory budget, the largest is
//! finished early. So a write of any size holds at most the budget (plus one input batch) in
//! memory. When the input ends, the remaining cells are uploaded and **one** ledger commit
//! makes all of them visible at once. A rejected or failed write commits nothing; the cells
//! it had uploaded are orphans that vacuum removes.
//!
//! Vacuum deletes unreferenced cells older than its retention, judged on the store's clock,
//! so a write must commit while its first cell is younger than that: a write refuses to
//! commit once [`WriteOptions::max_write_age`] has passed since its first upload began
//! (measured on the node's monotonic clock, which is never ahead of the store's age of the
//! cell). Vacuum retentions must be longer than this age.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use apiary_storage::time::{Clock, Random};

use apiary_storage::{Path, StorageBackend};
use arrow_array::{ArrayRef, RecordBatch, UInt32Array, new_null_array};
use arrow_schema::SchemaRef;
use arrow_select::take::take;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::Serialize;

use crate::cells::{Alignment, CellEncoder, EncodedCell, parse_value, partition_dir, split};
use crate::entry::{Cell, FrameDefinition};
use crate::error::{LedgerError, Result};
use crate::layout::frame_root;
use crate::ledger::FrameLedger;
use crate::ops::Operation;
use crate::state::LiveFrame;

/// Whether a write adds to the frame or replaces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// Add cells.
    Append,
    /// Replace every cell live when the write commits.
    Overwrite,
}

/// Told about every cell a write uploads: its key, bytes and ETag (a node puts the cells it
/// writes into its cell cache this way).
pub type UploadHook = Arc<dyn Fn(&Path, &bytes::Bytes, Option<String>) + Send + Sync>;

/// Sizing of a write.
#[derive(Clone)]
pub struct WriteOptions {
    /// A cell is finished when it reaches this many bytes.
    pub target_cell_bytes: usize,
    /// Most distinct partitions one write may create.
    pub max_partitions: usize,
    /// Most bytes the open cells may buffer together.
    pub memory_budget: usize,
    /// Longest time from the first upload to the commit; a slower write commits nothing
    /// (its cells are left to vacuum). Must stay below every vacuum's retention.
    pub max_write_age: Duration,
    /// Threads that encode a cell's columns (a node uses one per bee).
    pub encode_threads: usize,
    /// Called after each cell is uploaded.
    pub on_upload: Option<UploadHook>,
}

impl std::fmt::Debug for WriteOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteOptions")
            .field("target_cell_bytes", &self.target_cell_bytes)
            .field("max_partitions", &self.max_partitions)
            .field("memory_budget", &self.memory_budget)
            .field("max_write_age", &self.max_write_age)
            .field("encode_threads", &self.encode_threads)
            .field("on_upload", &self.on_upload.is_some())
            .finish()
    }
}

/// The default [`WriteOptions::max_write_age`]: half of vacuum's default retention.
pub const DEFAULT_MAX_WRITE_AGE: Duration = Duration::from_secs(30 * 60);

impl Default for WriteOptions {
    fn default() -> Self {
        Self {
            target_cell_bytes: 128 << 20,
            max_partitions: 1000,
            memory_budget: 512 << 20,
            max_write_age: DEFAULT_MAX_WRITE_AGE,
            encode_threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            on_upload: None,
        }
    }
}

/// What a write did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WriteResult {
    /// The frame version that made the write visible.
    pub version: u64,
    /// Cells written.
    pub cells_written: usize,
    /// Rows written.
    pub rows_written: u64,
    /// Bytes written.
    pub bytes_written: u64,
    /// Wall time of the write.
    pub duration_ms: u64,
}

struct OpenCell {
    encoder: CellEncoder,
    values: Vec<(String, String)>,
}

/// An encoded cell on its way from the encoding thread to the uploader.
struct Finished {
    cell: EncodedCell,
    values: Vec<(String, String)>,
}

/// The CPU side of a write, run on a blocking thread: pulls the input (which may block on a
/// file, a pipe or a decoder), aligns, partitions and encodes, and hands finished cells to
/// the uploader. At most one finished cell waits in the channel, so memory stays within the
/// budget of the open cells plus the cells in flight.
struct Encoders<'a> {
    definition: &'a FrameDefinition,
    options: &'a WriteOptions,
    open: HashMap<Vec<(String, String)>, OpenCell>,
    /// Every partition this write has opened a cell in.
    partitions_seen: HashSet<Vec<(String, String)>>,
    out: tokio::sync::mpsc::Sender<Finished>,
}

impl Encoders<'_> {
    fn run(mut self, batches: impl Iterator<Item = Result<RecordBatch>>) -> Result<()> {
        let mut plans: Vec<(SchemaRef, Alignment)> = Vec::new();
        for batch in batches {
            let batch = batch?;
            if batch.num_rows() == 0 {
                continue;
            }
            let plan = match plans.iter().find(|(s, _)| *s == batch.schema()) {
                Some((_, plan)) => plan.clone(),
                None => {
                    let plan = Alignment::plan(self.definition, &batch.schema())?;
                    plans.push((batch.schema(), plan.clone()));
                    plan
                }
            };
            let aligned = plan.apply(&batch)?;
            let parts = split(
                &aligned,
                &self.definition.partition_by,
                self.options.max_partitions,
            )?;
            for part in parts {
                self.add(part.values, &part.batch)?;
            }
        }
        // In partition order, so a write's uploads come in the same order on every run.
        let mut rest: Vec<OpenCell> = self.open.drain().map(|(_, c)| c).collect();
        rest.sort_by(|a, b| a.values.cmp(&b.values));
        for cell in rest {
            self.finish(cell)?;
        }
        Ok(())
    }

    fn finish(&self, cell: OpenCell) -> Result<()> {
        let finished = Finished {
            cell: cell.encoder.finish()?,
            values: cell.values,
        };
        // A closed channel means the uploader failed; its error is the one reported. The
        // cell waits only when the channel is full: in a simulation that runs the encoder
        // in place, the channel holds every cell and this never blocks the runtime.
        let abandoned = || LedgerError::Invalid("the write was abandoned".into());
        match self.out.try_send(finished) {
            Ok(()) => Ok(()),
            Err(tokio::sync::mpsc::error::TrySendError::Full(finished)) => {
                self.out.blocking_send(finished).map_err(|_| abandoned())
            }
            Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => Err(abandoned()),
        }
    }

    fn add(&mut self, values: Vec<(String, String)>, batch: &RecordBatch) -> Result<()> {
        if !self.open.contains_key(&values) {
            if self.partitions_seen.insert(values.clone())
                && self.partitions_seen.len() > self.options.max_partitions
            {
                return Err(LedgerError::Invalid(format!(
                    "this write would create more than {} partitions; write fewer distinct \
                     partition values at a time, or raise the limit",
                    self.options.max_partitions
                )));
            }
            let encoder = CellEncoder::new(batch.schema(), self.options.encode_threads)?;
            self.open.insert(
                values.clone(),
                OpenCell {
                    encoder,
                    values: values.clone(),
                },
            );
        }
        let full = {
            let cell = self
                .open
                .get_mut(&values)
                .ok_or_else(|| LedgerError::Invalid("internal: open cell vanished".into()))?;
            cell.encoder.write(batch)?;
            cell.encoder.estimated_bytes() >= self.options.target_cell_bytes
        };
        if full && let Some(cell) = self.open.remove(&values) {
            self.finish(cell)?;
        }
        // Stay within the memory budget: finish the largest open cell early.
        while self.buffered() > self.options.memory_budget {
            let largest = self
                .open
                .iter()
                .max_by_key(|(_, c)| c.encoder.memory_bytes())
                .map(|(k, _)| k.clone());
            let Some(key) = largest else { break };
            if let Some(cell) = self.open.remove(&key) {
                self.finish(cell)?;
            }
        }
        Ok(())
    }

    fn buffered(&self) -> usize {
        self.open.values().map(|c| c.encoder.memory_bytes()).sum()
    }
}

/// The I/O side of a write: names and uploads finished cells.
struct Uploader<'a> {
    backend: &'a dyn StorageBackend,
    clock: &'a dyn Clock,
    random: &'a Random,
    root: Path,
    /// When the first upload began, on the clock's monotonic scale.
    first_upload: Option<Duration>,
    on_upload: Option<&'a UploadHook>,
    done: Vec<Cell>,
}

impl Uploader<'_> {
    async fn upload(&mut self, finished: Finished) -> Result<()> {
        let dir = partition_dir(&finished.values);
        let name = format!("{}.parquet", self.random.id());
        let path = if dir.is_empty() {
            format!("data/{name}")
        } else {
            format!("data/{dir}/{name}")
        };
        let key = Path::parse(format!("{}/{path}", self.root)).map_err(|e| {
            LedgerError::Invalid(format!(
                "cell path `{path}` is not a valid storage key: {e}"
            ))
        })?;
        let encoded = finished.cell;
        self.first_upload
            .get_or_insert_with(|| self.clock.monotonic());
        let version = self.backend.put(&key, encoded.bytes.clone()).await?;
        if let Some(hook) = self.on_upload {
            hook(&key, &encoded.bytes, version.e_tag);
        }
        self.done.push(Cell {
            path,
            rows: encoded.rows,
            bytes: encoded.bytes.len() as u64,
            partition_values: finished
                .values
                .into_iter()
                .map(|(k, v)| (k, Some(v)))
                .collect(),
            stats: encoded.stats,
            crc32c: Some(encoded.crc32c),
        });
        Ok(())
    }
}

/// Cells uploaded by [`upload_cells`], not yet committed.
pub(crate) struct Uploaded {
    /// The cells.
    pub(crate) cells: Vec<Cell>,
    /// When the first upload began (the ledger clock's monotonic scale).
    pub(crate) first_upload: Option<Duration>,
}

/// Aligns, partitions, encodes and uploads `batches` as cells of the frame `definition`
/// describes, without committing them. The input is pulled and encoded on a blocking thread
/// (so a slow reader or a large encoding never stalls the async runtime) while this task
/// uploads the finished cells.
pub(crate) async fn upload_cells<I>(
    ledger: &FrameLedger,
    backend: &dyn StorageBackend,
    definition: FrameDefinition,
    batches: I,
    options: &WriteOptions,
) -> Result<Uploaded>
where
    I: IntoIterator<Item = Result<RecordBatch>> + Send + 'static,
    I::IntoIter: Send,
{
    // One finished cell waits for the uploader; an encoder run in place (a simulation) has
    // no uploader running beside it, so its channel holds them all.
    let waiting = if apiary_storage::blocking::is_inline() {
        1 << 20
    } else {
        1
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Finished>(waiting);
    let encoding = {
        let options = options.clone();
        apiary_storage::blocking::run(move || {
            Encoders {
                definition: &definition,
                options: &options,
                open: HashMap::new(),
                partitions_seen: HashSet::new(),
                out: tx,
            }
            .run(batches.into_iter())
        })
    };
    let mut uploader = Uploader {
        backend,
        clock: ledger.config().clock.as_ref(),
        random: &ledger.config().random,
        root: frame_root(ledger.frame()),
        first_upload: None,
        on_upload: options.on_upload.as_ref(),
        done: Vec::new(),
    };
    let mut uploaded = Ok(());
    while let Some(finished) = rx.recv().await {
        if let Err(e) = uploader.upload(finished).await {
            uploaded = Err(e);
            break;
        }
    }
    // Closing the channel stops the encoder at its next cell if the upload failed.
    drop(rx);
    let encoded = encoding
        .await
        .map_err(|e| LedgerError::Invalid(format!("the write's encoder failed: {e}")))?;
    uploaded?;
    encoded?;
    Ok(Uploaded {
        cells: std::mem::take(&mut uploader.done),
        first_upload: uploader.first_upload,
    })
}

/// Commits `op`, which makes `uploaded`'s cells live, unless its uploads began longer ago
/// than `options.max_write_age`.
pub(crate) async fn commit_uploaded(
    ledger: &FrameLedger,
    op: Operation,
    incarnation: u64,
    first_upload: Option<Duration>,
    options: &WriteOptions,
) -> Result<crate::ledger::CommitInfo> {
    let deadline = first_upload.map(|t| t + options.max_write_age);
    match ledger.commit_to(&op, deadline, Some(incarnation)).await {
        Err(LedgerError::Expired { what, detail }) => Err(LedgerError::Expired {
            what,
            detail: format!(
                "{detail}; the write's uploads took longer than its limit of {:?}, so a \
                 vacuum may already have removed its first cells. Nothing was committed: \
                 write smaller batches, or from closer to the storage",
                options.max_write_age
            ),
        }),
        other => other,
    }
}

/// Writes `batches` to the frame of `ledger`, in one commit.
///
/// The input is pulled and encoded on a blocking thread (so a slow reader or a large
/// encoding never stalls the async runtime) while this task uploads the finished cells.
pub async fn write_batches<I>(
    ledger: &FrameLedger,
    backend: &dyn StorageBackend,
    batches: I,
    mode: WriteMode,
    options: &WriteOptions,
) -> Result<WriteResult>
where
    I: IntoIterator<Item = Result<RecordBatch>> + Send + 'static,
    I::IntoIter: Send,
{
    let clock = Arc::clone(&ledger.config().clock);
    let started = clock.monotonic();
    let state = ledger.refresh().await?;
    let (definition, incarnation) = {
        let live = live(state.as_deref().and_then(|s| s.live.as_ref()), ledger)?;
        (live.definition.clone(), live.incarnation)
    };
    let Uploaded {
        cells,
        first_upload,
    } = upload_cells(ledger, backend, definition, batches, options).await?;
    let rows_written = cells.iter().map(|c| c.rows).sum();
    let bytes_written = cells.iter().map(|c| c.bytes).sum();
    let cells_written = cells.len();
    let version = match (mode, cells.is_empty()) {
        (WriteMode::Append, true) => state.map_or(0, |s| s.version),
        (WriteMode::Append, false) => {
            commit_uploaded(
                ledger,
                Operation::Append(cells),
                incarnation,
                first_upload,
                options,
            )
            .await?
            .version
        }
        (WriteMode::Overwrite, _) => {
            commit_uploaded(
                ledger,
                Operation::Overwrite(cells),
                incarnation,
                first_upload,
                options,
            )
            .await?
            .version
        }
    };
    Ok(WriteResult {
        version,
        cells_written,
        rows_written,
        bytes_written,
        duration_ms: clock.monotonic().saturating_sub(started).as_millis() as u64,
    })
}

fn live<'a>(live: Option<&'a LiveFrame>, ledger: &FrameLedger) -> Result<&'a LiveFrame> {
    live.ok_or_else(|| LedgerError::NotFound {
        what: format!("frame `{}`", ledger.frame()),
    })
}

/// Reads the frame's rows at its newest version, optionally only the cells whose partition
/// values equal `partition_filter` (`column = canonical text`, all must match). Batches have
/// the frame's current schema: partition columns restored, columns added since a cell was
/// written filled with nulls.
pub async fn read_batches(
    ledger: &FrameLedger,
    backend: &dyn StorageBackend,
    partition_filter: &[(String, String)],
) -> Result<Vec<RecordBatch>> {
    read_batches_at(ledger, backend, None, partition_filter).await
}

/// [`read_batches`] at `version` (`None`: the newest). A version the frame has not reached,
/// one at which it did not exist, and one past vacuum's retention are refused, each saying
/// so (see [`crate::travel`]).
pub async fn read_batches_at(
    ledger: &FrameLedger,
    backend: &dyn StorageBackend,
    version: Option<u64>,
    partition_filter: &[(String, String)],
) -> Result<Vec<RecordBatch>> {
    let head = ledger.refresh().await?;
    let state = match (version, &head) {
        (None, _) => head.clone(),
        (Some(v), Some(h)) if v <= h.version => {
            let past = ledger.state_at(v).await?;
            if past.live.is_none() {
                return Err(LedgerError::NotFound {
                    what: format!(
                        "frame `{}` at version {v} (it was dropped then)",
                        ledger.frame()
                    ),
                });
            }
            ledger.check_retained(v, past.live.as_ref(), h).await?;
            Some(past)
        }
        (Some(v), _) => {
            return Err(LedgerError::NotFound {
                what: format!(
                    "version {v} of frame `{}` (its newest is {})",
                    ledger.frame(),
                    head.as_ref()
                        .map_or("none".to_string(), |h| h.version.to_string())
                ),
            });
        }
    };
    let live = live(state.as_deref().and_then(|s| s.live.as_ref()), ledger)?;
    let schema: SchemaRef = Arc::new(live.definition.schema.to_arrow()?);
    for (column, _) in partition_filter {
        if !live.definition.partition_by.contains(column) {
            return Err(LedgerError::Invalid(format!(
                "`{column}` is not a partition column of `{}` (partitioned by: {})",
                ledger.frame(),
                live.definition.partition_by.join(", ")
            )));
        }
    }
    let root = frame_root(ledger.frame());
    let mut out = Vec::new();
    for cell in live.cells.values() {
        let matches = partition_filter
            .iter()
            .all(|(column, value)| cell.partition_values.get(column) == Some(&Some(value.clone())));
        if matches {
            out.extend(read_cell(backend, &root, &schema, cell).await?);
        }
    }
    Ok(out)
}

/// Rows per decoded batch: DataFusion's batch size. The Parquet reader's default (1024)
/// made a 10 M-row read 9 769 batches, whose per-batch work (partition columns restored,
/// arrays handed across the C data interface to Python) showed in read times.
const READ_BATCH_ROWS: usize = 8192;

/// The rows of `cell` (of the frame under `root`) in the frame's `schema`: fetched, then
/// decoded on a blocking thread.
pub(crate) async fn read_cell(
    backend: &dyn StorageBackend,
    root: &Path,
    schema: &SchemaRef,
    cell: &Cell,
) -> Result<Vec<RecordBatch>> {
    let key = Path::parse(format!("{root}/{}", cell.path)).map_err(|e| LedgerError::Corrupt {
        key: cell.path.clone(),
        reason: format!("not a valid cell path: {e}"),
    })?;
    // Checked against the checksum its entry records, fetched once more on a mismatch (a
    // fault on the way): a rotted cell must fail, never be copied into a new one.
    let mut bytes = backend.get(&key).await?.bytes;
    if crate::check_cell_bytes(key.as_ref(), cell.crc32c, &bytes).is_err() {
        bytes = backend.get(&key).await?.bytes;
        crate::check_cell_bytes(key.as_ref(), cell.crc32c, &bytes)?;
    }
    let (schema, cell) = (Arc::clone(schema), cell.clone());
    apiary_storage::blocking::run(move || {
        let corrupt = |e: &dyn std::fmt::Display| LedgerError::Corrupt {
            key: key.to_string(),
            reason: format!("not a readable Parquet cell: {e}"),
        };
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .map_err(|e| corrupt(&e))?
            .with_batch_size(READ_BATCH_ROWS)
            .build()
            .map_err(|e| corrupt(&e))?;
        reader
            .map(|batch| restore(&schema, &batch.map_err(|e| corrupt(&e))?, &cell))
            .collect()
    })
    .await
    .map_err(|e| LedgerError::Invalid(format!("decoding a cell failed: {e}")))?
}

/// Puts a cell's batch into the frame schema: partition values from the ledger, nulls for
/// columns the cell predates.
fn restore(schema: &SchemaRef, batch: &RecordBatch, cell: &Cell) -> Result<RecordBatch> {
    let rows = batch.num_rows();
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        let column = if let Some(Some(text)) = cell.partition_values.get(field.name()) {
            let one = parse_value(text, field.data_type())?;
            take(&one, &UInt32Array::from(vec![0u32; rows]), None)
                .map_err(|e| LedgerError::Invalid(e.to_string()))?
        } else {
            match batch.column_by_name(field.name()) {
                Some(c) => Arc::clone(c),
                None => new_null_array(field.data_type(), rows),
            }
        };
        columns.push(column);
    }
    RecordBatch::try_new(Arc::clone(schema), columns).map_err(|e| LedgerError::Corrupt {
        key: cell.path.clone(),
        reason: format!("the cell does not fit the frame schema: {e}"),
    })
}
