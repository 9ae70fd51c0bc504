//! The table functions `apiary.history('h.b.f')` and `apiary.changes('h.b.f', from, to)`.

use std::sync::Arc;

use apiary_ledger::{FrameRef, LedgerError};
use arrow_array::{ArrayRef, RecordBatch, StringArray, TimestampMillisecondArray, UInt64Array};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use datafusion::catalog::TableProvider;
use datafusion::datasource::MemTable;
use datafusion::prelude::lit;
use datafusion::sql::sqlparser::ast::{Expr, Value};

use super::clause::version_number;
use super::{Function, Travel};
use crate::error::{QueryError, Result};
use crate::table::{FrameIndex, FrameTable};

impl Travel<'_> {
    /// A frame name given as a string argument.
    fn frame_arg(&self, function: Function, arg: Option<&Expr>) -> Result<FrameRef> {
        let usage = || {
            QueryError::Invalid(match function {
                Function::History => "apiary.history takes a frame's name as a string: \
                    apiary.history('hive.box.frame')"
                    .into(),
                Function::Changes => "apiary.changes takes a frame's name and two versions: \
                    apiary.changes('hive.box.frame', from_version, to_version)"
                    .into(),
            })
        };
        let Some(Expr::Value(v)) = arg else {
            return Err(usage());
        };
        let (Value::SingleQuotedString(text) | Value::DoubleQuotedString(text)) = &v.value else {
            return Err(usage());
        };
        let parts: Vec<String> = text.split('.').map(str::to_string).collect();
        self.frame_of(&parts)
    }

    /// `apiary.history('h.b.f')`: one row per commit.
    pub(super) async fn history(&self, args: &[Expr]) -> Result<Arc<dyn TableProvider>> {
        if args.len() != 1 {
            return Err(QueryError::Invalid(
                "apiary.history takes one argument: apiary.history('hive.box.frame')".into(),
            ));
        }
        let frame = self.frame_arg(Function::History, args.first())?;
        let ledger = self.catalog.registry().ledger(&frame).await?;
        let commits = ledger.history().await?;
        if commits.is_empty() {
            return Err(QueryError::Ledger(LedgerError::NotFound {
                what: format!("frame `{frame}`"),
            }));
        }
        let schema = Arc::new(Schema::new(vec![
            Field::new("version", DataType::UInt64, false),
            Field::new(
                "committed_at",
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                false,
            ),
            Field::new("operation", DataType::Utf8, false),
            Field::new("cells_added", DataType::UInt64, false),
            Field::new("cells_removed", DataType::UInt64, false),
            Field::new("rows_added", DataType::UInt64, false),
            Field::new("rows_removed", DataType::UInt64, false),
            Field::new("writer", DataType::Utf8, true),
        ]));
        let u64s = |f: fn(&apiary_ledger::Commit) -> u64| -> ArrayRef {
            Arc::new(UInt64Array::from_iter_values(commits.iter().map(f)))
        };
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                u64s(|c| c.version),
                Arc::new(
                    TimestampMillisecondArray::from_iter_values(
                        commits.iter().map(|c| c.committed_at_ms),
                    )
                    .with_timezone("UTC"),
                ),
                Arc::new(StringArray::from_iter_values(
                    commits.iter().map(|c| c.operation.as_str()),
                )),
                u64s(|c| c.cells_added),
                u64s(|c| c.cells_removed),
                u64s(|c| c.rows_added),
                u64s(|c| c.rows_removed),
                Arc::new(StringArray::from_iter(
                    commits.iter().map(|c| c.writer.as_deref()),
                )),
            ],
        )
        .map_err(|e| QueryError::Execution(format!("the history table: {e}")))?;
        Ok(Arc::new(MemTable::try_new(schema, vec![vec![batch]])?))
    }

    /// `apiary.changes('h.b.f', from, to)`: the rows added and removed between two
    /// versions, read from the cells that differ between them only. Rows that a commit
    /// in between removed and another added back unchanged (a compaction) cancel out.
    pub(super) async fn changes(&self, args: &[Expr]) -> Result<Arc<dyn TableProvider>> {
        let [frame_arg, from, to] = args else {
            return Err(QueryError::Invalid(
                "apiary.changes takes three arguments: apiary.changes('hive.box.frame', \
                 from_version, to_version)"
                    .into(),
            ));
        };
        let frame = self.frame_arg(Function::Changes, Some(frame_arg))?;
        let from = version_number(from, "apiary.changes's from_version")?;
        let to = version_number(to, "apiary.changes's to_version")?;
        if from >= to {
            return Err(QueryError::Invalid(format!(
                "apiary.changes needs from_version < to_version, not {from} and {to}"
            )));
        }
        let old = self.catalog.frame_table_at(&frame, from).await?;
        let new = self.catalog.frame_table_at(&frame, to).await?;
        let (Some(old_live), Some(new_live)) = (old.index().source(), new.index().source()) else {
            return Err(QueryError::Invalid(format!(
                "frame `{frame}` has no cells to compare at versions {from} and {to}"
            )));
        };
        if old_live.incarnation != new_live.incarnation {
            return Err(QueryError::Invalid(format!(
                "frame `{frame}` was dropped and created again between versions {from} and \
                 {to}; compare versions of one incarnation (apiary.history shows its creates)"
            )));
        }
        let side = |cells_of: &apiary_ledger::LiveFrame,
                    other: &apiary_ledger::LiveFrame,
                    version: u64|
         -> Result<Arc<dyn TableProvider>> {
            let mut subset = new_live.clone();
            subset.cells = cells_of
                .cells
                .iter()
                .filter(|(path, _)| !other.cells.contains_key(*path))
                .map(|(path, cell)| (path.clone(), cell.clone()))
                .collect();
            let index = FrameIndex::build(&frame, version, &subset)?;
            Ok(Arc::new(FrameTable::new(
                Arc::new(index),
                Arc::clone(self.catalog.scans()),
            )))
        };
        let added = self.ctx.read_table(side(new_live, old_live, to)?)?;
        let removed = self.ctx.read_table(side(old_live, new_live, from)?)?;
        let with_kind = |df: datafusion::dataframe::DataFrame, kind: &str| {
            let mut columns: Vec<datafusion::prelude::Expr> = df
                .schema()
                .columns()
                .into_iter()
                .map(datafusion::prelude::Expr::Column)
                .collect();
            columns.push(lit(kind.to_string()).alias("_change_type"));
            df.select(columns)
        };
        let inserts = with_kind(added.clone().except(removed.clone())?, "insert")?;
        let deletes = with_kind(removed.except(added)?, "delete")?;
        Ok(inserts.union(deletes)?.into_view())
    }
}
