//! Frame scans from the memory tier: cells whose columns are held decoded in the node's
//! [`ColumnTier`] are served from memory without touching Parquet, and cells read for the
//! second time are decoded whole once and admitted.
//!
//! A frame scan splits its cells three ways (see [`choose`]):
//!
//! * **held**: every column the scan reads is in the tier, with the same row chunking:
//!   the cell's batches are assembled from the held arrays;
//! * **load**: a column is missing but was read before: the cell's columns are decoded whole
//!   (one Parquet scan of the cell, no row filter) and admitted, then served;
//! * **cold**: read for the first time: DataFusion's Parquet scan reads it, with its
//!   row-group and page pruning.
//!
//! The first two run in a [`MemoryTierExec`], the third in DataFusion's scan beside it. The
//! tier returns whole cells; filters stay above the scan (the frame reports them `Inexact`)
//! and cell pruning by the ledger happens before any of this, so answers are the same with
//! the tier on or off.

use std::fmt;
use std::sync::Arc;

use apiary_cache::{ColumnChunks, ColumnTier};
use arrow_schema::SchemaRef;
use datafusion::common::stats::Statistics;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{Result, ScalarValue};
use datafusion::error::DataFusionError;
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{EquivalenceProperties, Partitioning, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{
    Boundedness, EmissionType, ReplaceChildrenOptions,
};
use datafusion::physical_plan::metrics::{
    BaselineMetrics, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet,
};
use datafusion::physical_plan::statistics::StatisticsArgs;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, SendableRecordBatchStream,
};
use futures::{StreamExt, TryStreamExt};

use crate::parts::RowRanges;

mod reader;
use reader::CellReader;

/// Where one output column of a tier scan comes from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum OutputColumn {
    /// The `i`th of the scan's file columns.
    File(usize),
    /// The `i`th of the cell's partition values.
    Partition(usize),
}

/// How a cell's rows reach a [`MemoryTierExec`].
#[derive(Debug, Clone)]
pub(crate) enum Source {
    /// The scan's file columns, held in the tier (same chunking in every column).
    Held(Vec<Arc<ColumnChunks>>),
    /// A Parquet scan of the whole cell yielding the scan's file columns, to admit.
    Load(Arc<dyn ExecutionPlan>),
}

/// One cell of a tier scan.
#[derive(Debug, Clone)]
pub(crate) struct TierCell {
    /// The cell's storage key.
    pub(crate) key: String,
    /// The cell's size in storage (for spreading cells over partitions).
    pub(crate) bytes: u64,
    /// The values of the scan's partition columns (in output order).
    pub(crate) partition_values: Vec<ScalarValue>,
    pub(crate) source: Source,
    /// The rows read (positions in the cell); `None` for all of them.
    pub(crate) rows: Option<RowRanges>,
}

/// What a scan should do with a cell given what the tier holds of its `columns`.
#[derive(Debug)]
pub(crate) enum Choice {
    /// Serve from memory.
    Held(Vec<Arc<ColumnChunks>>),
    /// Decode whole and admit.
    Load,
    /// Read through DataFusion's Parquet scan.
    Cold,
}

/// The cell `key`'s `columns` if the tier holds them all with one chunking.
fn held(tier: &ColumnTier, key: &str, columns: &[String]) -> Option<Vec<Arc<ColumnChunks>>> {
    if !tier.is_enabled() || columns.is_empty() {
        return None;
    }
    let held: Vec<Arc<ColumnChunks>> = columns
        .iter()
        .map(|c| tier.get(key, c))
        .collect::<Option<_>>()?;
    aligned(held)
}

/// `held` columns if they share one chunking (columns admitted by scans with another batch
/// size do not line up).
fn aligned(held: Vec<Arc<ColumnChunks>>) -> Option<Vec<Arc<ColumnChunks>>> {
    let aligned = held.windows(2).all(|w| w[0].lengths().eq(w[1].lengths()));
    aligned.then_some(held)
}

/// Decides how to read the cell `key`'s `columns`: from memory when all are held with one
/// chunking, loaded when every missing one was read before, cold otherwise (each miss is
/// remembered, so the next read admits it).
pub(crate) fn choose(tier: &ColumnTier, key: &str, columns: &[String]) -> Choice {
    if !tier.is_enabled() || columns.is_empty() {
        return Choice::Cold;
    }
    let held: Vec<Option<Arc<ColumnChunks>>> = columns.iter().map(|c| tier.get(key, c)).collect();
    if held.iter().all(Option::is_some) {
        // All held; columns that do not line up are decoded again.
        return aligned(held.into_iter().flatten().collect()).map_or(Choice::Load, Choice::Held);
    }
    // Every missing column is noted (no short-circuit), so one more read admits them all.
    let again = columns
        .iter()
        .zip(&held)
        .filter(|(_, h)| h.is_none())
        .fold(true, |all, (c, _)| tier.read_again(key, c) && all);
    if again { Choice::Load } else { Choice::Cold }
}

/// Scans cells from the memory tier (and decodes and admits the ones chosen for loading).
#[derive(Debug)]
pub struct MemoryTierExec {
    schema: SchemaRef,
    layout: Arc<[OutputColumn]>,
    /// Names of the scan's file columns (the tier's column keys).
    file_columns: Arc<[String]>,
    partitions: Vec<Arc<[Arc<TierCell>]>>,
    statistics: Arc<Statistics>,
    limit: Option<usize>,
    tier: Arc<ColumnTier>,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
    held: usize,
    loading: usize,
}

impl MemoryTierExec {
    /// A scan producing `schema` (each column per `layout`) from `partitions` of cells.
    pub(crate) fn new(
        schema: SchemaRef,
        layout: Vec<OutputColumn>,
        file_columns: Vec<String>,
        partitions: Vec<Vec<TierCell>>,
        statistics: Statistics,
        limit: Option<usize>,
        tier: Arc<ColumnTier>,
    ) -> Self {
        let partitions: Vec<Arc<[Arc<TierCell>]>> = partitions
            .into_iter()
            .map(|cells| cells.into_iter().map(Arc::new).collect())
            .collect();
        let (held, loading) = counts(partitions.iter().flat_map(|p| p.iter()));
        let metrics = ExecutionPlanMetricsSet::new();
        for (name, value) in [("cells_in_memory", held), ("cells_admitted", loading)] {
            MetricBuilder::new(&metrics).global_counter(name).add(value);
        }
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(partitions.len().max(1)),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Self {
            schema,
            layout: layout.into(),
            file_columns: file_columns.into(),
            partitions,
            statistics: Arc::new(statistics),
            limit,
            tier,
            properties,
            metrics,
            held,
            loading,
        }
    }
}

impl MemoryTierExec {
    /// The same scan of only the cells stored at `units`' keys (only the rows given, if
    /// any), in one partition, in that order (`None` if this scan does not read them all).
    pub(crate) fn only(&self, units: &[(&str, Option<&RowRanges>)]) -> Option<Self> {
        // A cell cut into pieces over the partitions (see `cut_held`) is read as one.
        let by_key: std::collections::HashMap<&str, &Arc<TierCell>> = self
            .partitions
            .iter()
            .flat_map(|p| p.iter())
            .map(|c| (c.key.as_str(), c))
            .collect();
        let cells = units
            .iter()
            .map(|&(key, rows)| {
                let cell = *by_key.get(key)?;
                Some(if cell.rows.is_none() && rows.is_none() {
                    Arc::clone(cell)
                } else {
                    Arc::new(TierCell {
                        rows: rows.cloned(),
                        ..TierCell::clone(cell)
                    })
                })
            })
            .collect::<Option<Vec<_>>>()?;
        let (held, loading) = counts(cells.iter());
        Some(Self {
            schema: Arc::clone(&self.schema),
            layout: Arc::clone(&self.layout),
            file_columns: Arc::clone(&self.file_columns),
            partitions: vec![Arc::from(cells)],
            statistics: Arc::clone(&self.statistics),
            limit: self.limit,
            tier: Arc::clone(&self.tier),
            properties: Arc::new(PlanProperties::new(
                EquivalenceProperties::new(Arc::clone(&self.schema)),
                Partitioning::UnknownPartitioning(1),
                EmissionType::Incremental,
                Boundedness::Bounded,
            )),
            metrics: self.metrics.clone(),
            held,
            loading,
        })
    }
}

impl MemoryTierExec {
    /// The same scan of only the cells `keep` names (by storage key; all their rows, or
    /// `Some` of them), each partition keeping its cells and order (some may be left empty).
    pub(crate) fn keeping(&self, keep: &dyn Fn(&str) -> Option<Option<RowRanges>>) -> Self {
        // A cell cut into pieces (see `cut_held`) and kept only in part is read once, with
        // those rows, where its first piece was.
        let mut selected = std::collections::HashSet::new();
        let partitions: Vec<Arc<[Arc<TierCell>]>> = self
            .partitions
            .iter()
            .map(|p| {
                p.iter()
                    .filter_map(|c| match keep(&c.key)? {
                        None => Some(Arc::clone(c)),
                        Some(rows) if rows.is_all() => Some(Arc::clone(c)),
                        Some(rows) if selected.insert(c.key.clone()) => Some(Arc::new(TierCell {
                            rows: Some(rows),
                            ..TierCell::clone(c)
                        })),
                        Some(_) => None,
                    })
                    .collect()
            })
            .collect();
        let (held, loading) = counts(partitions.iter().flat_map(|p| p.iter()));
        Self {
            schema: Arc::clone(&self.schema),
            layout: Arc::clone(&self.layout),
            file_columns: Arc::clone(&self.file_columns),
            partitions,
            statistics: Arc::clone(&self.statistics),
            limit: self.limit,
            tier: Arc::clone(&self.tier),
            properties: Arc::clone(&self.properties),
            metrics: self.metrics.clone(),
            held,
            loading,
        }
    }
}

/// How many distinct cells of `cells` are held and how many are loaded.
fn counts<'a>(cells: impl Iterator<Item = &'a Arc<TierCell>>) -> (usize, usize) {
    let mut seen = std::collections::HashSet::new();
    let (mut held, mut loading) = (0, 0);
    for c in cells.filter(|c| seen.insert(c.key.as_str())) {
        match c.source {
            Source::Held(_) => held += 1,
            Source::Load(_) => loading += 1,
        }
    }
    (held, loading)
}

/// The fewest rows of a piece [`cut_held`] cuts.
const MIN_PIECE_ROWS: u64 = 64 * 1024;

/// `cells` (each with its rows) with the held ones cut into row ranges when there are
/// fewer cells than `partitions`, so that every partition has rows to read: one large cell
/// held in memory is otherwise read by one core. Slicing a held cell costs nothing; a cell
/// still to be loaded is decoded whole, so it is left whole.
pub(crate) fn cut_held(cells: Vec<(TierCell, u64)>, partitions: usize) -> Vec<TierCell> {
    if cells.is_empty() || cells.len() >= partitions {
        return cells.into_iter().map(|(c, _)| c).collect();
    }
    // Every cell in as many pieces as partitions: each partition then reads as many rows.
    let pieces = partitions as u64;
    let mut out = Vec::with_capacity(partitions);
    for (cell, rows) in cells {
        let pieces = pieces.min(rows / MIN_PIECE_ROWS);
        if pieces < 2 || cell.rows.is_some() || !matches!(cell.source, Source::Held(_)) {
            out.push(cell);
            continue;
        }
        for range in crate::parts::cut(rows, pieces) {
            let share = range.end - range.start;
            let Some(rows_read) = RowRanges::new(vec![range], rows) else {
                continue;
            };
            out.push(TierCell {
                bytes: (u128::from(cell.bytes) * u128::from(share) / u128::from(rows)) as u64,
                rows: Some(rows_read),
                ..cell.clone()
            });
        }
    }
    out
}

impl DisplayAs for MemoryTierExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match t {
            DisplayFormatType::TreeRender => {
                write!(f, "in_memory={}\nadmitted={}", self.held, self.loading)
            }
            _ => write!(
                f,
                "MemoryTierExec: cells_in_memory={}, cells_admitted={}, columns=[{}]",
                self.held,
                self.loading,
                self.file_columns.join(", ")
            ),
        }
    }
}

impl ExecutionPlan for MemoryTierExec {
    fn name(&self) -> &str {
        "MemoryTierExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.is_empty() {
            Ok(self)
        } else {
            Err(DataFusionError::Internal(
                "MemoryTierExec is a leaf and takes no children".into(),
            ))
        }
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(
                datafusion::physical_plan::execution_plan::ChildrenPropertiesMode::Recompute,
            ),
        )
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let cells = self.partitions.get(partition).cloned().ok_or_else(|| {
            DataFusionError::Internal(format!("MemoryTierExec has no partition {partition}"))
        })?;
        let reader = Arc::new(CellReader {
            schema: Arc::clone(&self.schema),
            layout: Arc::clone(&self.layout),
            file_columns: Arc::clone(&self.file_columns),
            tier: Arc::clone(&self.tier),
        });
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let batches = futures::stream::iter(cells.to_vec())
            .map(move |cell| Arc::clone(&reader).read(cell, Arc::clone(&context)))
            .try_flatten();
        // Cells are whole; a limit (when the scan has one) cuts the output, not the cells.
        let limited = batches.scan(self.limit.unwrap_or(usize::MAX), move |remaining, item| {
            let out = match item {
                Ok(_) if *remaining == 0 => None,
                Ok(batch) => {
                    let batch = batch.slice(0, batch.num_rows().min(*remaining));
                    *remaining -= batch.num_rows();
                    baseline.record_output(batch.num_rows());
                    Some(Ok(batch))
                }
                Err(e) => Some(Err(e)),
            };
            futures::future::ready(out)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            limited,
        )))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn statistics_from_inputs(
        &self,
        _input_stats: &[Arc<Statistics>],
        args: &StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        Ok(match args.partition() {
            None => Arc::clone(&self.statistics),
            Some(_) => Arc::new(Statistics::new_unknown(&self.schema)),
        })
    }
}

#[cfg(test)]
mod tests;
