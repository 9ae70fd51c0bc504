//! A frame's index: its cells at one ledger version with their partition values and
//! statistics, and the pruning that rules cells out before any is opened.

use std::sync::Arc;

use apiary_ledger::{FrameRef, FrameState, LiveFrame, frame_root};
use apiary_storage::object_store::ObjectMeta;
use apiary_storage::object_store::path::Path;
use arrow_array::cast::AsArray;
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, FieldRef, Schema, SchemaRef};
use datafusion::catalog::Session;
use datafusion::common::stats::Statistics;
use datafusion::common::tree_node::TreeNode;
use datafusion::common::{DFSchema, Result as DfResult, ScalarValue};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::listing::helpers::expr_applicable_for_cols;
use datafusion::logical_expr::Expr;
use datafusion::logical_expr::expr_rewriter::unnormalize_col;
use datafusion::logical_expr::utils::conjunction;
use datafusion::physical_optimizer::pruning::{PruningPredicate, PruningPredicateBuilder};

use crate::stats::{self, CellFacts, CellPruningStats};

/// Cells are immutable and uniquely named, so every cell gets the same modification time;
/// a stable value lets DataFusion's footer cache recognise a cell it has read before.
fn cell_mtime() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::<chrono::Utc>::UNIX_EPOCH
}

/// What a scan needs of one ledger version, computed once per version and shared by every
/// query that reads it.
#[derive(Debug)]
pub struct FrameIndex {
    pub(super) frame: FrameRef,
    pub(super) version: u64,
    pub(super) incarnation: u64,
    /// The columns as scanned, in frame order (strings and binaries as views).
    pub(super) schema: SchemaRef,
    /// The columns as declared, in frame order.
    pub(super) declared: SchemaRef,
    /// Non-partition columns, in frame order: the columns stored in the cells.
    pub(super) file_schema: SchemaRef,
    /// Partition columns, in `partition_by` order.
    pub(super) partition_fields: Vec<FieldRef>,
    /// For each frame column, its index in DataFusion's table schema (file columns, then
    /// partition columns).
    pub(super) table_index: Vec<usize>,
    /// DataFusion's table schema columns, each with its partition flag.
    pub(super) table_fields: Vec<(FieldRef, bool)>,
    pub(super) cells: Vec<IndexedCell>,
    pub(super) partition_by: Vec<String>,
    /// Whether the statistics are exact: not for a task that may read only some of its
    /// cells (see [`FrameIndex::inexact`]).
    pub(super) exact: bool,
    /// One row per cell: its partition values (for evaluating partition filters exactly).
    pub(super) partition_values: Option<RecordBatch>,
    /// The ledger's state this index was built from (what a coordinator ships to tasks).
    pub(super) source: Source,
}

/// The ledger state an index was built from: the ledger cache's own when the index is of
/// a whole version (so a frame's cell entries are held once), a copy for a task's subset.
#[derive(Debug)]
pub(super) enum Source {
    Shared(Arc<FrameState>),
    Own(LiveFrame),
}

#[derive(Debug)]
pub(super) struct IndexedCell {
    /// Path relative to the frame, as the ledger records it.
    pub(super) path: String,
    pub(super) facts: CellFacts,
    pub(super) file: PartitionedFile,
    /// The checksum its ledger entry records (reads of it are checked against it).
    pub(super) crc32c: Option<u32>,
}

impl FrameIndex {
    /// Indexes the live frame at `version`.
    /// The index of `frame` at `state` (which must be live), sharing `state` with the ledger
    /// cache it came from.
    pub fn build_shared(
        frame: &FrameRef,
        state: &Arc<FrameState>,
    ) -> Result<Self, apiary_ledger::LedgerError> {
        let live = state
            .live
            .as_ref()
            .ok_or_else(|| apiary_ledger::LedgerError::NotFound {
                what: format!("frame `{frame}` at version {}", state.version),
            })?;
        Self::index(
            frame,
            state.version,
            live,
            Source::Shared(Arc::clone(state)),
        )
    }

    /// The index of `frame` at `version`, holding its own copy of `live`.
    pub fn build(
        frame: &FrameRef,
        version: u64,
        live: &LiveFrame,
    ) -> Result<Self, apiary_ledger::LedgerError> {
        Self::index(frame, version, live, Source::Own(live.clone()))
    }

    fn index(
        frame: &FrameRef,
        version: u64,
        live: &LiveFrame,
        source: Source,
    ) -> Result<Self, apiary_ledger::LedgerError> {
        let declared: SchemaRef = Arc::new(live.definition.schema.to_arrow()?);
        let partition_by = live.definition.partition_by.clone();
        let is_partition = |name: &str| partition_by.iter().any(|p| p == name);
        // Strings and binaries stored in cells are read as views, as DataFusion reads any
        // Parquet file by default (`schema_force_view_types`): decoding into views is what
        // makes its string-heavy scans fast. Partition columns keep their declared type.
        let schema: SchemaRef = Arc::new(Schema::new(
            declared
                .fields()
                .iter()
                .map(|f| {
                    let view = match f.data_type() {
                        DataType::Utf8 | DataType::LargeUtf8 => Some(DataType::Utf8View),
                        DataType::Binary | DataType::LargeBinary => Some(DataType::BinaryView),
                        _ => None,
                    };
                    match view {
                        Some(t) if !is_partition(f.name()) => {
                            Arc::new(f.as_ref().clone().with_data_type(t))
                        }
                        _ => Arc::clone(f),
                    }
                })
                .collect::<Vec<_>>(),
        ));
        let file_fields: Vec<FieldRef> = schema
            .fields()
            .iter()
            .filter(|f| !is_partition(f.name()))
            .cloned()
            .collect();
        let partition_fields: Vec<FieldRef> = partition_by
            .iter()
            .filter_map(|p| schema.field_with_name(p).ok())
            .map(|f| Arc::new(f.clone()))
            .collect();
        let table_fields: Vec<(FieldRef, bool)> = file_fields
            .iter()
            .map(|f| (Arc::clone(f), false))
            .chain(partition_fields.iter().map(|f| (Arc::clone(f), true)))
            .collect();
        let table_index = schema
            .fields()
            .iter()
            .map(|f| {
                table_fields
                    .iter()
                    .position(|(t, _)| t.name() == f.name())
                    .unwrap_or_default()
            })
            .collect();
        let root = frame_root(frame);
        let cells = live
            .cells
            .values()
            .map(|cell| {
                // The cell path is already a valid object path (partition values are
                // percent-escaped when written): parse it, never re-encode it.
                let location = Path::parse(format!("{root}/{}", cell.path)).map_err(|e| {
                    apiary_ledger::LedgerError::Corrupt {
                        key: cell.path.clone(),
                        reason: format!("not a valid cell path: {e}"),
                    }
                })?;
                let mut file = PartitionedFile::new_from_meta(ObjectMeta {
                    location,
                    last_modified: cell_mtime(),
                    size: cell.bytes,
                    e_tag: None,
                    version: None,
                });
                let facts = CellFacts::new(cell, &table_fields);
                let first_partition = table_fields.len() - partition_fields.len();
                file.partition_values = partition_fields
                    .iter()
                    .enumerate()
                    .map(|(i, f)| {
                        facts
                            .partition_value(first_partition + i)
                            .cloned()
                            .ok_or_else(|| apiary_ledger::LedgerError::Corrupt {
                                key: cell.path.clone(),
                                reason: format!(
                                    "the ledger records no valid value of partition column `{}`",
                                    f.name()
                                ),
                            })
                    })
                    .collect::<Result<_, _>>()?;
                file.statistics = Some(Arc::new(stats::statistics(&[&facts], table_fields.len())));
                Ok(IndexedCell {
                    path: cell.path.clone(),
                    facts,
                    file,
                    crc32c: cell.crc32c,
                })
            })
            .collect::<Result<Vec<IndexedCell>, apiary_ledger::LedgerError>>()?;
        let partition_values = partition_batch(&partition_fields, &cells)?;
        Ok(Self {
            partition_values,
            source,
            frame: frame.clone(),
            version,
            incarnation: live.incarnation,
            file_schema: Arc::new(Schema::new(file_fields)),
            schema,
            declared,
            partition_fields,
            table_index,
            table_fields,
            cells,
            partition_by,
            exact: true,
        })
    }

    /// This index with statistics that bound the rows rather than count them: for a
    /// distributed task, which reads only the cells (and parts) it claims of those it
    /// names, so nothing may be answered from the statistics alone (a `COUNT(*)` would
    /// count cells another task read).
    pub fn inexact(mut self) -> Self {
        self.exact = false;
        for cell in &mut self.cells {
            if let Some(stats) = cell.file.statistics.take() {
                cell.file.statistics = Some(Arc::new(stats.as_ref().clone().to_inexact()));
            }
        }
        self
    }

    /// The statistics of `cells`, exact where this index's are.
    pub(super) fn statistics_of(&self, cells: &[&CellFacts]) -> Statistics {
        let stats = stats::statistics(cells, self.table_fields.len());
        if self.exact {
            stats
        } else {
            stats.to_inexact()
        }
    }

    /// The frame.
    pub fn frame(&self) -> &FrameRef {
        &self.frame
    }

    /// The cells a scan with `filters` must read (after ledger pruning), with their sizes.
    pub fn select_cells(
        &self,
        state: &dyn Session,
        filters: &[Expr],
    ) -> DfResult<Vec<crate::parts::SplitCell>> {
        Ok(self
            .select(state, filters)?
            .into_iter()
            .map(|i| crate::parts::SplitCell {
                path: self.cells[i].path.clone(),
                bytes: self.cells[i].facts.bytes(),
                rows: self.cells[i].facts.rows(),
                part: None,
            })
            .collect())
    }

    /// The ledger's state of the frame at this version (definition and cell entries).
    pub fn source(&self) -> Option<&LiveFrame> {
        match &self.source {
            Source::Own(live) => Some(live),
            Source::Shared(state) => state.live.as_ref(),
        }
    }

    /// The ledger version this index describes.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The incarnation (version of the `create`) this index describes.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// The frame's schema as scanned (strings and binaries as views).
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// The frame's schema as declared.
    pub fn declared_schema(&self) -> &SchemaRef {
        &self.declared
    }

    /// Number of cells.
    pub fn cells(&self) -> usize {
        self.cells.len()
    }

    /// Rows over all cells.
    pub fn rows(&self) -> u64 {
        self.cells.iter().map(|c| c.facts.rows()).sum()
    }

    /// Bytes over all cells.
    pub fn bytes(&self) -> u64 {
        self.cells.iter().map(|c| c.facts.bytes()).sum()
    }

    /// The partition columns.
    pub fn partition_by(&self) -> &[String] {
        &self.partition_by
    }

    /// The cells a scan with these filters must read: the ones the ledger statistics cannot
    /// rule out. Filters that cannot be evaluated on statistics rule nothing out.
    pub(super) fn select(&self, state: &dyn Session, filters: &[Expr]) -> DfResult<Vec<usize>> {
        let (exact, other): (Vec<Expr>, Vec<Expr>) = filters
            .iter()
            .cloned()
            .partition(|f| is_partition_filter(&self.partition_by, f));
        let all: Vec<usize> = self.matching_partitions(state, &exact)?;
        let Some(predicate) = self.pruning_predicate(state, &other) else {
            return Ok(all);
        };
        let stats = CellPruningStats::new(
            self.cells.iter().map(|c| &c.facts).collect(),
            &self.table_fields,
        );
        Ok(match predicate.prune(&stats) {
            Ok(keep) => all.into_iter().filter(|&i| keep[i]).collect(),
            Err(e) => {
                tracing::debug!(frame = %self.frame, "cell pruning skipped: {e}");
                all
            }
        })
    }

    /// The cells whose partition values satisfy every one of `filters` (partition filters,
    /// which the scan then reports to DataFusion as applied exactly).
    fn matching_partitions(&self, state: &dyn Session, filters: &[Expr]) -> DfResult<Vec<usize>> {
        let all = (0..self.cells.len()).collect();
        let (Some(batch), Some(filter)) = (&self.partition_values, conjunction(filters.to_vec()))
        else {
            return Ok(all);
        };
        let schema = DFSchema::try_from(batch.schema())?;
        let physical = state.create_physical_expr(unnormalize_col(filter), &schema)?;
        let verdict = physical.evaluate(batch)?.into_array(batch.num_rows())?;
        let verdict = verdict.as_boolean_opt().ok_or_else(|| {
            datafusion::error::DataFusionError::Plan("a partition filter is not a boolean".into())
        })?;
        Ok((0..self.cells.len())
            .filter(|&i| verdict.is_valid(i) && verdict.value(i))
            .collect())
    }

    fn pruning_predicate(
        &self,
        state: &dyn Session,
        filters: &[Expr],
    ) -> Option<Arc<PruningPredicate>> {
        if filters.is_empty() || self.cells.is_empty() {
            return None;
        }
        let table_schema = Arc::new(Schema::new(
            self.table_fields
                .iter()
                .map(|(f, _)| Arc::clone(f))
                .collect::<Vec<_>>(),
        ));
        let df_schema = DFSchema::try_from(Arc::clone(&table_schema)).ok()?;
        // Each filter on its own: one that cannot be planned here (it never should) only
        // loses its pruning, never the others'.
        let planned: Vec<_> = filters
            .iter()
            .filter_map(|f| {
                state
                    .create_physical_expr(unnormalize_col(f.clone()), &df_schema)
                    .ok()
            })
            .collect();
        if planned.is_empty() {
            return None;
        }
        let physical = datafusion::physical_expr::conjunction(planned);
        PruningPredicateBuilder::new()
            .with_file_schema(table_schema)
            .with_max_in_list_size(state.config_options().execution.parquet.max_in_list_size)
            .build(physical)
    }
}

/// The partition values of `cells` as a batch, one row per cell (`None` when unpartitioned).
fn partition_batch(
    fields: &[FieldRef],
    cells: &[IndexedCell],
) -> Result<Option<RecordBatch>, apiary_ledger::LedgerError> {
    if fields.is_empty() {
        return Ok(None);
    }
    let columns = (0..fields.len())
        .map(|i| {
            ScalarValue::iter_to_array(cells.iter().map(|c| c.file.partition_values[i].clone()))
        })
        .collect::<Result<Vec<_>, _>>();
    let schema = Arc::new(Schema::new(fields.to_vec()));
    let batch = match columns {
        Ok(columns) if !cells.is_empty() => RecordBatch::try_new(schema, columns),
        _ => Ok(RecordBatch::new_empty(schema)),
    };
    batch
        .map(Some)
        .map_err(|e| apiary_ledger::LedgerError::Invalid(e.to_string()))
}

/// Whether `filter` reads only partition columns (at least one), with no subquery and no
/// volatile function: such a filter is decided per cell, exactly, from partition values.
pub(super) fn is_partition_filter(partition_by: &[String], filter: &Expr) -> bool {
    if partition_by.is_empty() {
        return false;
    }
    let names: Vec<&str> = partition_by.iter().map(String::as_str).collect();
    let subquery = filter.exists(|e| {
        Ok(matches!(
            e,
            Expr::Exists(_)
                | Expr::InSubquery(_)
                | Expr::ScalarSubquery(_)
                | Expr::SetComparison(_)
        ))
    });
    expr_applicable_for_cols(&names, filter)
        && !filter.column_refs().is_empty()
        && !matches!(subquery, Ok(true) | Err(_))
}
