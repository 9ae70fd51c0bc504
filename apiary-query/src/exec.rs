//! `FrameScanExec`: the frame scan as it appears in `EXPLAIN` and `EXPLAIN ANALYZE`.
//!
//! A transparent node over DataFusion's Parquet scan that names the frame and ledger
//! version and reports how many cells the frame has, how many the ledger statistics pruned
//! and how many the scan reads. It forwards everything the physical optimizer asks of a scan
//! (filter, projection, limit and sort pushdown, repartitioning) to the node it wraps, so
//! the plan under it is the plan DataFusion builds for the same files.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, OnceLock};

use apiary_cache::ScanCounters;
use apiary_storage::Path;
use datafusion::error::DataFusionError;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::{StreamExt, TryStreamExt};

use crate::parts::RowRanges;

mod narrowing;
mod yielding;

use datafusion::common::Result;
use datafusion::common::config::ConfigOptions;
use datafusion::common::stats::Statistics;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::execution::TaskContext;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::PhysicalSortExpr;
use datafusion::physical_plan::execution_plan::{
    CardinalityEffect, ChildrenPropertiesMode, ReplaceChildrenOptions,
    replace_children_if_necessary,
};
use datafusion::physical_plan::filter_pushdown::{
    ChildPushdownResult, FilterDescription, FilterPushdownPhase, FilterPushdownPropagation,
};
use datafusion::physical_plan::metrics::{
    Count, ExecutionPlanMetricsSet, Metric, MetricBuilder, MetricValue, MetricsSet,
};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::sort_pushdown::SortOrderPushdownResult;
use datafusion::physical_plan::statistics::{ChildStats, StatisticsArgs};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, SendableRecordBatchStream,
};
use narrowing::{cells, narrow};
pub use yielding::YieldingJoins;

/// What the ledger contributed to one frame scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanSummary {
    /// `hive.box.frame`.
    pub frame: String,
    /// The ledger version read.
    pub version: u64,
    /// Live cells at that version.
    pub cells_total: usize,
    /// Cells the scan reads (the rest were pruned by partition values and statistics).
    pub cells_read: usize,
}

impl ScanSummary {
    /// Cells the ledger statistics ruled out.
    pub fn cells_pruned(&self) -> usize {
        self.cells_total - self.cells_read
    }
}

/// A cell a task's scan plans to read: where it is and how many rows it has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PlannedCell {
    /// The cell's object.
    pub(crate) location: Path,
    /// Its rows, as the ledger records them.
    pub(crate) rows: u64,
}

/// One unit to read: a cell, whole or some of its rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unit {
    /// The cell's object.
    pub(crate) location: Path,
    /// The rows to read; `None` for all of them.
    pub(crate) rows: Option<RowRanges>,
}

/// What a task's scan reads of one cell when its partitions keep their own units: all of
/// it, or some rows.
pub(crate) type KeptCells = HashMap<String, Option<RowRanges>>;

/// Where a frame scan whose cells are shared with other tasks' scans gets the units it reads:
/// the scan asks, the distributed layer arbitrates (its claim queue implements this), so
/// the scan layer depends on no transport.
#[async_trait::async_trait]
pub(crate) trait SharedCells: Send + Sync + fmt::Debug {
    /// The next units one of the scan's `partitions` reads, claimed for it: a run of the
    /// units no other task may take (its fair share of them, read as one scan), or else
    /// one unit; empty when none is left.
    async fn next_units(&self, partitions: usize) -> crate::Result<Vec<Unit>>;

    /// For a scan whose partitions must each keep their own units (sorted or partitioned
    /// output): the units it holds, by location, claimed at once; or why that failed.
    async fn claim_own(&self) -> std::result::Result<Arc<KeptCells>, String>;
}

/// A frame scan: DataFusion's scan of the selected cells, labelled with the ledger's part.
#[derive(Debug, Clone)]
pub struct FrameScanExec {
    input: Arc<dyn ExecutionPlan>,
    summary: Arc<ScanSummary>,
    metrics: ExecutionPlanMetricsSet,
    /// What this scan's reads got from the cell cache and from storage.
    reads: Option<Arc<ScanCounters>>,
    /// The cells the scan reads, by path in the frame.
    cells: Arc<HashMap<String, PlannedCell>>,
    /// Set when the scan's cells are shared with other tasks: every partition then reads
    /// the cells this queue hands out, one at a time.
    shared: Arc<OnceLock<Arc<dyn SharedCells>>>,
    /// The input narrowed to the cells a task keeps (see [`SharedCells::claim_own`]), made
    /// once for all partitions: they must run partitions of one plan, since a Parquet scan
    /// lets the partitions of one execution take each other's files (each partition of a
    /// copy of its own would read every file of the copy).
    narrowed: Arc<OnceLock<Option<Arc<dyn ExecutionPlan>>>>,
}

impl FrameScanExec {
    /// Wraps `input`, the scan of the cells `summary` describes, whose reads are counted in
    /// `reads`.
    pub fn new(
        input: Arc<dyn ExecutionPlan>,
        summary: ScanSummary,
        reads: Option<Arc<ScanCounters>>,
    ) -> Self {
        let metrics = ExecutionPlanMetricsSet::new();
        for (name, value) in [
            ("cells_total", summary.cells_total),
            ("cells_pruned", summary.cells_pruned()),
            ("cells_read", summary.cells_read),
        ] {
            MetricBuilder::new(&metrics).global_counter(name).add(value);
        }
        Self {
            input,
            summary: Arc::new(summary),
            metrics,
            reads,
            cells: Arc::default(),
            shared: Arc::default(),
            narrowed: Arc::default(),
        }
    }

    /// Names the cells the scan reads, by path in the frame.
    pub(crate) fn with_cells(mut self, cells: HashMap<String, PlannedCell>) -> Self {
        self.cells = Arc::new(cells);
        self
    }

    /// The cells the scan reads, by path in the frame.
    pub(crate) fn cells(&self) -> &HashMap<String, PlannedCell> {
        &self.cells
    }

    /// Makes every partition read the cells `queue` hands out instead of its own; before
    /// execution only, and once.
    pub(crate) fn share(&self, queue: Arc<dyn SharedCells>) -> Result<()> {
        self.shared
            .set(queue)
            .map_err(|_| DataFusionError::Internal("the scan's cells are already shared".into()))
    }

    /// Whether every partition may read any cell: its output is neither sorted nor
    /// partitioned by value (then cells can be handed out one at a time).
    fn partitions_are_interchangeable(&self) -> bool {
        let props = self.input.properties();
        props.output_ordering().is_none()
            && matches!(
                props.partitioning,
                datafusion::physical_plan::Partitioning::UnknownPartitioning(_)
                    | datafusion::physical_plan::Partitioning::RoundRobinBatch(_)
            )
    }

    /// Partition `partition` of the input narrowed to the task's own cells it holds (see
    /// [`SharedCells::claim_own`]): each partition keeps its cells, in order.
    fn execute_kept(
        &self,
        queue: Arc<dyn SharedCells>,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = Arc::clone(&self.input);
        let narrowed = Arc::clone(&self.narrowed);
        let stream = futures::stream::once(async move {
            let kept = queue
                .claim_own()
                .await
                .map_err(DataFusionError::Execution)?;
            narrowed
                .get_or_init(|| narrow(&input, &|location| kept.get(location).cloned()))
                .as_ref()
                .ok_or_else(|| {
                    DataFusionError::Internal("the scan cannot be narrowed to its cells".into())
                })?
                .execute(partition, context)
        })
        .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema(),
            stream,
        )))
    }

    /// A partition's stream over the units `queue` hands out: each run of them is read by
    /// the input narrowed to those cells (or their parts' rows), as one scan where it can
    /// be and one cell at a time where not; a scan limit stays a limit on the partition's
    /// rows.
    fn execute_shared(
        &self,
        queue: Arc<dyn SharedCells>,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = Arc::clone(&self.input);
        let partitions = input.properties().partitioning.partition_count();
        let streams = futures::stream::unfold(queue, move |queue| {
            let input = Arc::clone(&input);
            let context = Arc::clone(&context);
            async move {
                let units = match queue.next_units(partitions).await {
                    Ok(units) if units.is_empty() => return None,
                    Ok(units) => units,
                    Err(e) => return Some((Err(DataFusionError::External(Box::new(e))), queue)),
                };
                Some((read_units(&input, &units, context), queue))
            }
        });
        let batches = streams.try_flatten();
        let schema = self.schema();
        Ok(match self.input.fetch() {
            Some(limit) => Box::pin(RecordBatchStreamAdapter::new(
                schema,
                batches
                    .scan(limit, |left, batch| {
                        let out = match batch {
                            Ok(_) if *left == 0 => None,
                            Ok(b) => {
                                let b = b.slice(0, b.num_rows().min(*left));
                                *left -= b.num_rows();
                                Some(Ok(b))
                            }
                            Err(e) => Some(Err(e)),
                        };
                        futures::future::ready(out)
                    })
                    .boxed(),
            )),
            None => Box::pin(RecordBatchStreamAdapter::new(schema, batches)),
        })
    }

    /// What this scan read so far: `(cache hits, cache misses, bytes from storage, bytes
    /// from the cache)`.
    pub fn reads(&self) -> (u64, u64, u64, u64) {
        self.reads.as_ref().map_or((0, 0, 0, 0), |r| r.get())
    }

    /// What the ledger contributed to this scan.
    pub fn summary(&self) -> &ScanSummary {
        &self.summary
    }

    /// The wrapped DataFusion scan.
    pub fn input(&self) -> &Arc<dyn ExecutionPlan> {
        &self.input
    }

    fn with_input(&self, input: Arc<dyn ExecutionPlan>) -> Self {
        Self {
            input,
            summary: Arc::clone(&self.summary),
            metrics: self.metrics.clone(),
            reads: self.reads.clone(),
            cells: Arc::clone(&self.cells),
            shared: Arc::clone(&self.shared),
            // Another input: narrowed anew.
            narrowed: Arc::default(),
        }
    }

    fn rewrap(&self, input: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
        replace_children_if_necessary(Arc::new(self.clone()), vec![input])
    }
}

/// The batches of `units` read by `input` (a frame scan's input) narrowed to them: one
/// scan of them all where the input allows it, else one scan per unit, in turn.
fn read_units(
    input: &Arc<dyn ExecutionPlan>,
    units: &[Unit],
    context: Arc<TaskContext>,
) -> Result<futures::stream::BoxStream<'static, Result<arrow_array::RecordBatch>>> {
    let plans = match cells(input, units) {
        Some(plan) => vec![plan],
        None if units.len() > 1 => units
            .iter()
            .map(|u| cells(input, std::slice::from_ref(u)).ok_or(u))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(cannot_read)?,
        None => return Err(cannot_read(&units[0])),
    };
    let first = plans[0].execute(0, Arc::clone(&context))?;
    let rest = futures::stream::iter(plans.into_iter().skip(1))
        .map(move |plan| plan.execute(0, Arc::clone(&context)))
        .try_flatten();
    Ok(first.chain(rest).boxed())
}

fn cannot_read(unit: &Unit) -> DataFusionError {
    DataFusionError::Internal(format!(
        "the scan cannot read cell `{}` alone",
        unit.location
    ))
}

/// `stream` yielding to the runtime after each batch. Reading a cached cell never waits, so
/// a plan that computes over many cells could otherwise keep its thread for the whole scan:
/// nothing else on the thread would run, and a query dropped meanwhile (cancelled, or
/// its task no longer wanted) would stop only at its end. One reschedule a batch costs
/// microseconds against the milliseconds of decoding and computing one.
fn yielding(stream: SendableRecordBatchStream) -> SendableRecordBatchStream {
    let schema = stream.schema();
    Box::pin(RecordBatchStreamAdapter::new(
        schema,
        stream.then(|batch| async move {
            tokio::task::yield_now().await;
            batch
        }),
    ))
}

impl DisplayAs for FrameScanExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.summary;
        match t {
            DisplayFormatType::TreeRender => write!(
                f,
                "frame={}\nversion={}\ncells={}/{} read",
                s.frame, s.version, s.cells_read, s.cells_total
            ),
            _ => write!(
                f,
                "FrameScanExec: frame={}, version={}, cells_total={}, cells_pruned={}, cells_read={}",
                s.frame,
                s.version,
                s.cells_total,
                s.cells_pruned(),
                s.cells_read
            ),
        }
    }
}

impl ExecutionPlan for FrameScanExec {
    fn name(&self) -> &str {
        "FrameScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        // Properties are always the child's own, so both modes are the same here.
        if children.len() != 1 {
            return Err(datafusion::error::DataFusionError::Internal(format!(
                "FrameScanExec takes one child, got {}",
                children.len()
            )));
        }
        Ok(Arc::new(self.with_input(children.swap_remove(0))))
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

    fn repartitioned(
        &self,
        target_partitions: usize,
        config: &ConfigOptions,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        match self.input.repartitioned(target_partitions, config)? {
            Some(input) => Ok(Some(self.rewrap(input)?)),
            None => Ok(None),
        }
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let stream = match self.shared.get() {
            Some(queue) if self.partitions_are_interchangeable() => {
                self.execute_shared(Arc::clone(queue), context)
            }
            Some(queue) => self.execute_kept(Arc::clone(queue), partition, context),
            None => self.input.execute(partition, context),
        }?;
        Ok(yielding(stream))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        let mut set = self.metrics.clone_inner();
        let (hits, misses, from_storage, from_cache) = self.reads();
        for (name, value) in [
            ("cache_hits", hits),
            ("cache_misses", misses),
            ("bytes_from_storage", from_storage),
            ("bytes_from_cache", from_cache),
        ] {
            let count = Count::new();
            count.add(value as usize);
            set.push(Arc::new(Metric::new(
                MetricValue::Count {
                    name: name.into(),
                    count,
                },
                None,
            )));
        }
        Some(set)
    }

    fn child_stats_requests(&self, partition: Option<usize>) -> Vec<ChildStats> {
        vec![ChildStats::At(partition)]
    }

    fn statistics_from_inputs(
        &self,
        input_stats: &[Arc<Statistics>],
        _args: &StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        match input_stats.first() {
            Some(s) => Ok(Arc::clone(s)),
            None => Ok(Arc::new(Statistics::new_unknown(&self.schema()))),
        }
    }

    fn supports_limit_pushdown(&self) -> bool {
        true
    }

    fn cardinality_effect(&self) -> CardinalityEffect {
        CardinalityEffect::Equal
    }

    fn try_swapping_with_projection(
        &self,
        projection: &ProjectionExec,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        match self.input.try_swapping_with_projection(projection)? {
            Some(input) => Ok(Some(self.rewrap(input)?)),
            None => Ok(None),
        }
    }

    fn gather_filters_for_pushdown(
        &self,
        _phase: FilterPushdownPhase,
        parent_filters: Vec<Arc<dyn PhysicalExpr>>,
        _config: &ConfigOptions,
    ) -> Result<FilterDescription> {
        FilterDescription::from_children(parent_filters, &self.children())
    }

    fn handle_child_pushdown_result(
        &self,
        _phase: FilterPushdownPhase,
        child_pushdown_result: ChildPushdownResult,
        _config: &ConfigOptions,
    ) -> Result<FilterPushdownPropagation<Arc<dyn ExecutionPlan>>> {
        Ok(FilterPushdownPropagation::if_all(child_pushdown_result))
    }

    fn try_pushdown_sort(
        &self,
        order: &[PhysicalSortExpr],
    ) -> Result<SortOrderPushdownResult<Arc<dyn ExecutionPlan>>> {
        Ok(match self.input.try_pushdown_sort(order)? {
            SortOrderPushdownResult::Exact { inner } => SortOrderPushdownResult::Exact {
                inner: self.rewrap(inner)?,
            },
            SortOrderPushdownResult::Inexact { inner } => SortOrderPushdownResult::Inexact {
                inner: self.rewrap(inner)?,
            },
            SortOrderPushdownResult::Unsupported => SortOrderPushdownResult::Unsupported,
        })
    }

    fn with_preserve_order(&self, preserve_order: bool) -> Option<Arc<dyn ExecutionPlan>> {
        let input = self.input.with_preserve_order(preserve_order)?;
        Some(Arc::new(self.with_input(input)))
    }
}

#[cfg(test)]
mod tests;
