//! `FrameScanExec`: the frame scan as it appears in `EXPLAIN` and `EXPLAIN ANALYZE`.
//!
//! A transparent node over DataFusion's Parquet scan that names the frame and ledger
//! version and reports how many cells the frame has, how many the ledger statistics pruned
//! and how many the scan reads. It forwards everything the physical optimizer asks of a scan
//! (filter, projection, limit and sort pushdown, repartitioning) to the node it wraps, so
//! the plan under it is the plan DataFusion builds for the same files.

use std::fmt;
use std::sync::Arc;

use apiary_cache::ScanCounters;
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

/// A frame scan: DataFusion's scan of the selected cells, labelled with the ledger's part.
#[derive(Debug, Clone)]
pub struct FrameScanExec {
    input: Arc<dyn ExecutionPlan>,
    summary: Arc<ScanSummary>,
    metrics: ExecutionPlanMetricsSet,
    /// What this scan's reads got from the cell cache and from storage.
    reads: Option<Arc<ScanCounters>>,
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
        }
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
        }
    }

    fn rewrap(&self, input: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
        replace_children_if_necessary(Arc::new(self.clone()), vec![input])
    }
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
        self.input.execute(partition, context)
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
