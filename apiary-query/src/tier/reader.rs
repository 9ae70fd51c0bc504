//! Reading one cell of a tier scan: from held columns, or loaded (decoded whole once,
//! however many scans want it at the same moment, and admitted).

use std::sync::Arc;

use apiary_cache::{Admission, AdmissionTicket, ColumnChunks, ColumnTier, MemoryCount};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::SchemaRef;
use datafusion::common::Result;
use datafusion::error::DataFusionError;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::{ExecutionPlan, SendableRecordBatchStream};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};

use super::{OutputColumn, Source, TierCell, held};
use crate::parts::RowRanges;

/// Turns one cell's source into output batches (admitting loaded columns).
pub(super) struct CellReader {
    pub(super) schema: SchemaRef,
    pub(super) layout: Arc<[OutputColumn]>,
    pub(super) file_columns: Arc<[String]>,
    pub(super) tier: Arc<ColumnTier>,
}

/// What loading a cell for admission came to.
enum Loaded {
    /// Its columns, decoded whole and admitted.
    Admitted(Vec<Arc<ColumnChunks>>),
    /// Too large for what the tier had room for: the batches decoded so far and the rest
    /// of the decode, with the ticket that still counts their bytes.
    TooLarge {
        seen: Vec<RecordBatch>,
        rest: SendableRecordBatchStream,
        ticket: AdmissionTicket,
    },
}

/// Decodes a cell whole for admission within `ticket`'s room, then admits its columns; a
/// cell with another row count than its ledger entry's (`expected`) is not admitted. Runs
/// as a task of its own, so the scans waiting for it never wait on a consumer that
/// stopped reading the scan that started it.
async fn load(
    mut decoded: SendableRecordBatchStream,
    mut ticket: AdmissionTicket,
    tier: Arc<ColumnTier>,
    file_columns: Arc<[String]>,
    key: String,
    expected: Option<u64>,
) -> Result<Loaded> {
    let mut memory = MemoryCount::default();
    let mut seen: Vec<RecordBatch> = Vec::new();
    while let Some(batch) = decoded.next().await {
        let batch = batch?;
        let mut fits = true;
        for array in batch.columns() {
            fits &= ticket.reserve(memory.add(array.as_ref()));
        }
        seen.push(batch);
        if !fits {
            // Read it cold next time; the scans waiting for it decode it themselves.
            tier.forget(&key, &file_columns);
            ticket.give_up();
            return Ok(Loaded::TooLarge {
                seen,
                rest: decoded,
                ticket,
            });
        }
    }
    let rows: u64 = seen.iter().map(|b| b.num_rows() as u64).sum();
    if let Some(expected) = expected.filter(|&e| e != rows) {
        // Parts of this cell were cut by the ledger's row count: a cell that disagrees
        // must not be admitted or answered from.
        tier.forget(&key, &file_columns);
        return Err(DataFusionError::Execution(format!(
            "cell `{key}` has {rows} rows where its ledger entry says {expected}"
        )));
    }
    let columns: Vec<Arc<ColumnChunks>> = (0..file_columns.len())
        .map(|i| {
            let arrays = seen.iter().map(|b| Arc::clone(b.column(i))).collect();
            Arc::new(ColumnChunks::new(arrays))
        })
        .collect();
    for (name, chunks) in file_columns.iter().zip(&columns) {
        tier.insert(&key, name, Arc::clone(chunks));
    }
    ticket.admitted();
    Ok(Loaded::Admitted(columns))
}

impl CellReader {
    /// The cell's batches: assembled from held columns, or loaded. A cell to load is
    /// decoded whole once, however many scans want it at the same moment: the first
    /// decodes and admits it (on a task of its own) and the others wait for it, then all
    /// serve it from memory. A cell too large for the tier is streamed on from where the
    /// load stopped, and the scans that waited decode it themselves.
    pub(super) fn read(
        self: Arc<Self>,
        cell: Arc<TierCell>,
        context: Arc<TaskContext>,
    ) -> Result<BoxStream<'static, Result<RecordBatch>>> {
        // Another scan may have admitted the cell since this one was planned.
        let held_now = match &cell.source {
            Source::Load(_) => held(&self.tier, &cell.key, &self.file_columns),
            Source::Held(_) => None,
        };
        let plan = match (&cell.source, held_now) {
            (_, Some(columns)) => return self.read_held(&cell, columns),
            (Source::Held(columns), None) => return self.read_held(&cell, columns.clone()),
            (Source::Load(plan), None) => Arc::clone(plan),
        };
        // A fresh run of the scan: a data source shares its work among the runs of one
        // plan, and the parts of a cell each read the whole cell.
        let decode = move |plan: Arc<dyn ExecutionPlan>| plan.reset_state()?.execute(0, context);
        let expected = cell.rows.as_ref().map(RowRanges::total);
        match self.tier.begin_admission(&cell.key) {
            Admission::Lead(ticket) => {
                // An admission that ended between the look above and this one left the
                // columns held.
                if let Some(columns) = held(&self.tier, &cell.key, &self.file_columns) {
                    return self.read_held(&cell, columns);
                }
                self.tier.count_load();
                let loading = tokio::spawn(load(
                    decode(plan)?,
                    ticket,
                    Arc::clone(&self.tier),
                    Arc::clone(&self.file_columns),
                    cell.key.clone(),
                    expected,
                ));
                let out = async move {
                    let loaded = loading.await.map_err(|e| {
                        DataFusionError::Execution(format!(
                            "loading cell `{}` into memory stopped: {e}",
                            cell.key
                        ))
                    })??;
                    match loaded {
                        Loaded::Admitted(columns) => self.read_held(&cell, columns),
                        Loaded::TooLarge { seen, rest, ticket } => {
                            let batches = futures::stream::iter(seen.into_iter().map(Ok));
                            Ok(self.decoded(cell, batches.chain(rest).boxed(), Some(ticket)))
                        }
                    }
                };
                Ok(futures::stream::once(out).try_flatten().boxed())
            }
            Admission::Follow(wait) => {
                let out = async move {
                    // Held now if the lead admitted it (unless evicted at once), or if
                    // the lead found it held.
                    wait.admitted().await;
                    if let Some(columns) = held(&self.tier, &cell.key, &self.file_columns) {
                        return self.read_held(&cell, columns);
                    }
                    self.tier.count_load();
                    let batches = decode(plan)?;
                    Ok(self.decoded(cell, batches, None))
                };
                Ok(futures::stream::once(out).try_flatten().boxed())
            }
        }
    }

    /// The output batches of a whole-cell decode of `cell` (only the rows it reads),
    /// checked against the ledger's row count at the end; `ticket` (bytes still counted
    /// for it) is held until then.
    fn decoded(
        self: Arc<Self>,
        cell: Arc<TierCell>,
        batches: BoxStream<'static, Result<RecordBatch>>,
        ticket: Option<AdmissionTicket>,
    ) -> BoxStream<'static, Result<RecordBatch>> {
        // Rows are positions in the whole cell, which the decode yields in order.
        let mut cutter = cell.rows.as_ref().map(RowRanges::cutter);
        let expected = cell.rows.as_ref().map(RowRanges::total);
        let seen = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = Arc::clone(&seen);
        let reader = Arc::clone(&self);
        let at_end = Arc::clone(&cell);
        let out = batches.map(move |batch| {
            let batch = batch?;
            counted.fetch_add(
                batch.num_rows() as u64,
                std::sync::atomic::Ordering::Relaxed,
            );
            let Some(cutter) = cutter.as_mut() else {
                return Ok(vec![reader.assemble(&cell, batch.columns())?]);
            };
            cutter
                .cut(&batch)
                .iter()
                .map(|b| reader.assemble(&cell, b.columns()))
                .collect()
        });
        let out = out
            .map_ok(|b| futures::stream::iter(b.into_iter().map(Ok)))
            .try_flatten();
        let check = futures::stream::once(async move {
            drop(ticket);
            let rows = seen.load(std::sync::atomic::Ordering::Relaxed);
            match expected {
                Some(expected) if rows != expected => {
                    self.tier.forget(&at_end.key, &self.file_columns);
                    Some(Err(DataFusionError::Execution(format!(
                        "cell `{}` has {rows} rows where its ledger entry says {expected}",
                        at_end.key
                    ))))
                }
                _ => None,
            }
        })
        .filter_map(futures::future::ready);
        out.chain(check).boxed()
    }

    /// The cell's batches from its held `columns` (only the rows it reads).
    fn read_held(
        self: Arc<Self>,
        cell: &Arc<TierCell>,
        columns: Vec<Arc<ColumnChunks>>,
    ) -> Result<BoxStream<'static, Result<RecordBatch>>> {
        let chunks = columns.first().map_or(0, |c| c.arrays().len());
        let lengths: Vec<usize> = columns
            .first()
            .map(|c| c.arrays().iter().map(|a| a.len()).collect())
            .unwrap_or_default();
        // Each chunk's rows within the cell, and the slice of it to read.
        let mut slices: Vec<(usize, usize, usize)> = Vec::with_capacity(chunks);
        match &cell.rows {
            None => slices.extend(lengths.iter().enumerate().map(|(n, &len)| (n, 0, len))),
            Some(rows) => {
                let total: usize = lengths.iter().sum();
                if total as u64 != rows.total() {
                    return Err(DataFusionError::Execution(format!(
                        "cell `{}` holds {total} rows where its ledger entry says {}",
                        cell.key,
                        rows.total()
                    )));
                }
                let mut start = 0u64;
                for (n, &len) in lengths.iter().enumerate() {
                    let end = start + len as u64;
                    for r in rows.ranges() {
                        let (from, to) = (r.start.max(start), r.end.min(end));
                        if from < to {
                            slices.push((n, (from - start) as usize, (to - from) as usize));
                        }
                    }
                    start = end;
                }
            }
        }
        let cell = Arc::clone(cell);
        let batches = slices.into_iter().map(move |(n, offset, len)| {
            let arrays: Vec<ArrayRef> = columns
                .iter()
                .map(|c| {
                    let a = &c.arrays()[n];
                    if offset == 0 && len == a.len() {
                        Arc::clone(a)
                    } else {
                        a.slice(offset, len)
                    }
                })
                .collect();
            self.assemble(&cell, &arrays)
        });
        Ok(futures::stream::iter(batches).boxed())
    }

    /// An output batch of `cell` from its file columns' `arrays` (in the scan's order).
    fn assemble(&self, cell: &TierCell, arrays: &[ArrayRef]) -> Result<RecordBatch> {
        let rows = arrays.first().map_or(0, |a| a.len());
        let columns = self
            .layout
            .iter()
            .map(|column| match column {
                OutputColumn::File(i) => arrays.get(*i).cloned().ok_or_else(|| {
                    DataFusionError::Internal(format!("cell `{}` lacks file column {i}", cell.key))
                }),
                OutputColumn::Partition(i) => cell
                    .partition_values
                    .get(*i)
                    .ok_or_else(|| {
                        DataFusionError::Internal(format!(
                            "cell `{}` lacks partition value {i}",
                            cell.key
                        ))
                    })?
                    .to_array_of_size(rows),
            })
            .collect::<Result<Vec<ArrayRef>>>()?;
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), columns)?)
    }
}
