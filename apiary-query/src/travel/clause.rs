//! Version clauses resolved to version numbers: `VERSION AS OF n`, a time (evaluated as a
//! constant expression, read as UTC when it has no zone) and `AT (…)`.

use std::sync::Arc;

use apiary_ledger::FrameRef;
use arrow_array::{Array, TimestampMillisecondArray};
use arrow_schema::{DataType, TimeUnit};
use datafusion::execution::context::SQLOptions;
use datafusion::sql::sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, FunctionArguments, ObjectName, TableVersion, Value,
};

use super::{Travel, name_parts};
use crate::error::{QueryError, Result};

impl Travel<'_> {
    /// `parts` as a frame, completed from the session's `USE`.
    pub(super) fn frame_of(&self, parts: &[String]) -> Result<FrameRef> {
        crate::session::resolve_in(parts, self.scope)
    }

    pub(super) fn frame(&self, name: &ObjectName) -> Result<FrameRef> {
        self.frame_of(&name_parts(name)?)
    }

    /// The version a clause names.
    pub(super) async fn version(&self, frame: &FrameRef, clause: &TableVersion) -> Result<u64> {
        match clause {
            TableVersion::VersionAsOf(e) => version_number(e, "VERSION AS OF"),
            TableVersion::TimestampAsOf(e) | TableVersion::ForSystemTimeAsOf(e) => {
                self.version_at(frame, e).await
            }
            TableVersion::Function(Expr::Function(f)) => {
                let which = f.name.to_string().to_ascii_uppercase();
                if which != "AT" {
                    return Err(QueryError::Invalid(format!(
                        "`{clause}` is not supported: use AT (VERSION => n) or \
                         AT (TIMESTAMP => time) (for the version before one, ask for it)"
                    )));
                }
                let FunctionArguments::List(list) = &f.args else {
                    return Err(at_usage(clause));
                };
                let [arg] = list.args.as_slice() else {
                    return Err(at_usage(clause));
                };
                let (key, value) = match arg {
                    FunctionArg::Named {
                        name,
                        arg: FunctionArgExpr::Expr(value),
                        ..
                    } => (name.value.to_ascii_uppercase(), value),
                    FunctionArg::ExprNamed {
                        name: Expr::Identifier(name),
                        arg: FunctionArgExpr::Expr(value),
                        ..
                    } => (name.value.to_ascii_uppercase(), value),
                    _ => return Err(at_usage(clause)),
                };
                match key.as_str() {
                    "VERSION" => version_number(value, "AT (VERSION => …)"),
                    "TIMESTAMP" => self.version_at(frame, value).await,
                    _ => Err(at_usage(clause)),
                }
            }
            TableVersion::Changes { .. } => Err(QueryError::Invalid(
                "CHANGES (…) is not supported here: use the table function \
                 apiary.changes('hive.box.frame', from_version, to_version)"
                    .into(),
            )),
            other => Err(QueryError::Invalid(format!(
                "`{other}` is not a version clause Apiary reads: use VERSION AS OF n or \
                 TIMESTAMP AS OF time"
            ))),
        }
    }

    /// The version of `frame` at the time `expr` evaluates to.
    async fn version_at(&self, frame: &FrameRef, expr: &Expr) -> Result<u64> {
        let at = self.time_ms(expr).await?;
        let ledger = self.catalog.registry().ledger(frame).await?;
        Ok(ledger.version_at_time(at).await?.version)
    }

    /// Evaluates `expr` (a constant expression) to milliseconds since the epoch, UTC.
    async fn time_ms(&self, expr: &Expr) -> Result<i64> {
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let not_a_time = |why: String| {
            QueryError::Invalid(format!(
                "`{expr}` is not a time ({why}): a time travel clause takes a timestamp such \
                 as '2026-09-01T10:00:00Z' or now() - INTERVAL '1 hour' (a time without a \
                 zone is UTC)"
            ))
        };
        let batches = self
            .ctx
            .sql_with_options(&format!("SELECT {expr}"), options)
            .await
            .map_err(|e| not_a_time(e.strip_backtrace()))?
            .collect()
            .await
            .map_err(|e| not_a_time(e.strip_backtrace()))?;
        let column = match batches.iter().find(|b| b.num_rows() > 0) {
            Some(batch) if batch.num_columns() == 1 && batch.num_rows() == 1 => {
                Arc::clone(batch.column(0))
            }
            _ => return Err(not_a_time("it is not one value".into())),
        };
        let ms_type = DataType::Timestamp(TimeUnit::Millisecond, None);
        // A zoned timestamp holds UTC; a zoneless one is read as UTC; a string is parsed
        // (with its offset, if it has one).
        let column = match column.data_type() {
            DataType::Timestamp(_, Some(_)) => arrow_cast::cast(
                &column,
                &DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            )
            .map_err(|e| not_a_time(e.to_string()))?,
            DataType::Timestamp(_, None)
            | DataType::Date32
            | DataType::Date64
            | DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View => {
                arrow_cast::cast(&column, &ms_type).map_err(|e| not_a_time(e.to_string()))?
            }
            other => return Err(not_a_time(format!("it is {other}"))),
        };
        let ms = match column.data_type() {
            DataType::Timestamp(TimeUnit::Millisecond, _) => column
                .as_any()
                .downcast_ref::<TimestampMillisecondArray>()
                .filter(|a| !a.is_null(0))
                .map(|a| a.value(0)),
            _ => None,
        };
        ms.ok_or_else(|| not_a_time("it is null".into()))
    }
}

fn at_usage(clause: &TableVersion) -> QueryError {
    QueryError::Invalid(format!(
        "`{clause}`: AT takes one of VERSION => n or TIMESTAMP => time"
    ))
}

/// A version number written as a literal.
pub(super) fn version_number(expr: &Expr, what: &str) -> Result<u64> {
    let text = match expr {
        Expr::Value(v) => match &v.value {
            Value::Number(n, _) => Some(n.as_str()),
            _ => None,
        },
        _ => None,
    };
    text.and_then(|t| t.parse::<u64>().ok()).ok_or_else(|| {
        QueryError::Invalid(format!(
            "{what} takes a version number (0, 1, 2, …), not `{expr}`; for a time use \
             TIMESTAMP AS OF"
        ))
    })
}
