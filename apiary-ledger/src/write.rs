//! Writing Arrow data to a frame, and reading its cells back.
//!
//! A write aligns each batch to the frame schema by name, splits it by partition, and feeds
//! each partition's rows to an open cell. A cell is finished and uploaded once it reaches the
//! target size; if the open cells together buffer more than the memory budget, the largest is
//! finished early. So a write of any size holds at most the budget (plus one input batch) in
//! memory. When the input ends, the remaining cells are uploaded and **one** ledger commit
//! makes all of them visible at once. A rejected or failed write commits nothing; the cells
//! it had uploaded are orphans that vacuum removes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use apiary_storage::{Path, StorageBackend};
use arrow_array::{ArrayRef, RecordBatch, UInt32Array, new_null_array};
use arrow_schema::SchemaRef;
use arrow_select::take::take;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::Serialize;

use crate::cells::{Alignment, CellEncoder, parse_value, partition_dir, split};
use crate::entry::Cell;
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

/// Sizing of a write.
#[derive(Debug, Clone)]
pub struct WriteOptions {
    /// A cell is finished when it reaches this many bytes.
    pub target_cell_bytes: usize,
    /// Most distinct partitions one write may create.
    pub max_partitions: usize,
    /// Most bytes the open cells may buffer together.
    pub memory_budget: usize,
}

impl Default for WriteOptions {
    fn default() -> Self {
        Self {
            target_cell_bytes: 128 << 20,
            max_partitions: 1000,
            memory_budget: 512 << 20,
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

struct Writer<'a> {
    backend: &'a dyn StorageBackend,
    root: Path,
    options: &'a WriteOptions,
    open: HashMap<Vec<(String, String)>, OpenCell>,
    partitions_seen: usize,
    done: Vec<Cell>,
}

impl Writer<'_> {
    async fn finish(&mut self, cell: OpenCell) -> Result<()> {
        let encoded = cell.encoder.finish()?;
        let dir = partition_dir(&cell.values);
        let name = format!("{}.parquet", uuid::Uuid::new_v4().simple());
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
        self.backend.put(&key, encoded.bytes.clone()).await?;
        self.done.push(Cell {
            path,
            rows: encoded.rows,
            bytes: encoded.bytes.len() as u64,
            partition_values: cell.values.into_iter().map(|(k, v)| (k, Some(v))).collect(),
            stats: encoded.stats,
        });
        Ok(())
    }

    async fn add(&mut self, values: Vec<(String, String)>, batch: &RecordBatch) -> Result<()> {
        if !self.open.contains_key(&values) {
            self.partitions_seen += 1;
            if self.partitions_seen > self.options.max_partitions {
                return Err(LedgerError::Invalid(format!(
                    "this write would create more than {} partitions; write fewer distinct \
                     partition values at a time, or raise the limit",
                    self.options.max_partitions
                )));
            }
            let encoder = CellEncoder::new(batch.schema())?;
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
            self.finish(cell).await?;
        }
        // Stay within the memory budget: finish the largest open cell early.
        while self.buffered() > self.options.memory_budget {
            let largest = self
                .open
                .iter()
                .max_by_key(|(_, c)| c.encoder.estimated_bytes())
                .map(|(k, _)| k.clone());
            let Some(key) = largest else { break };
            if let Some(cell) = self.open.remove(&key) {
                self.finish(cell).await?;
            }
        }
        Ok(())
    }

    fn buffered(&self) -> usize {
        self.open
            .values()
            .map(|c| c.encoder.estimated_bytes())
            .sum()
    }
}

/// Writes `batches` to the frame of `ledger`, in one commit.
pub async fn write_batches<I>(
    ledger: &FrameLedger,
    backend: &dyn StorageBackend,
    batches: I,
    mode: WriteMode,
    options: &WriteOptions,
) -> Result<WriteResult>
where
    I: IntoIterator<Item = Result<RecordBatch>>,
{
    let started = Instant::now();
    let state = ledger.refresh().await?;
    let live = live(state.as_deref().and_then(|s| s.live.as_ref()), ledger)?;
    let definition = live.definition.clone();
    let mut writer = Writer {
        backend,
        root: frame_root(ledger.frame()),
        options,
        open: HashMap::new(),
        partitions_seen: 0,
        done: Vec::new(),
    };
    let mut plans: Vec<(SchemaRef, Alignment)> = Vec::new();
    for batch in batches {
        let batch = batch?;
        if batch.num_rows() == 0 {
            continue;
        }
        let plan = match plans.iter().find(|(s, _)| *s == batch.schema()) {
            Some((_, plan)) => plan.clone(),
            None => {
                let plan = Alignment::plan(&definition, &batch.schema())?;
                plans.push((batch.schema(), plan.clone()));
                plan
            }
        };
        let aligned = plan.apply(&batch)?;
        for part in split(&aligned, &definition.partition_by, options.max_partitions)? {
            writer.add(part.values, &part.batch).await?;
        }
    }
    let rest: Vec<OpenCell> = writer.open.drain().map(|(_, c)| c).collect();
    for cell in rest {
        writer.finish(cell).await?;
    }
    let cells = std::mem::take(&mut writer.done);
    let rows_written = cells.iter().map(|c| c.rows).sum();
    let bytes_written = cells.iter().map(|c| c.bytes).sum();
    let cells_written = cells.len();
    let version = match (mode, cells.is_empty()) {
        (WriteMode::Append, true) => state.map_or(0, |s| s.version),
        (WriteMode::Append, false) => ledger.commit(&Operation::Append(cells)).await?.version,
        (WriteMode::Overwrite, _) => ledger.commit(&Operation::Overwrite(cells)).await?.version,
    };
    Ok(WriteResult {
        version,
        cells_written,
        rows_written,
        bytes_written,
        duration_ms: started.elapsed().as_millis() as u64,
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
    let state = ledger.refresh().await?;
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
        if !matches {
            continue;
        }
        let key =
            Path::parse(format!("{root}/{}", cell.path)).map_err(|e| LedgerError::Corrupt {
                key: cell.path.clone(),
                reason: format!("not a valid cell path: {e}"),
            })?;
        let bytes = backend.get(&key).await?.bytes;
        let corrupt = |e: parquet::errors::ParquetError| LedgerError::Corrupt {
            key: key.to_string(),
            reason: format!("not a readable Parquet cell: {e}"),
        };
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .map_err(corrupt)?
            .build()
            .map_err(corrupt)?;
        for batch in reader {
            let batch = batch.map_err(|e| LedgerError::Corrupt {
                key: key.to_string(),
                reason: format!("not a readable Parquet cell: {e}"),
            })?;
            out.push(restore(&schema, &batch, cell)?);
        }
    }
    Ok(out)
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
