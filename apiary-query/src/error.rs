//! The query error type.

use apiary_ledger::LedgerError;
use datafusion::error::DataFusionError;

/// What can go wrong with a query.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// The statement is not valid SQL, names something that does not exist, or does not
    /// type-check. The message says what and where.
    #[error("{0}")]
    Invalid(String),

    /// The statement is valid SQL but not allowed through `sql`; the message names the API
    /// call or command to use instead.
    #[error("{statement} is not supported in SQL: {instead}")]
    Rejected {
        /// The kind of statement, e.g. `INSERT`.
        statement: String,
        /// What to use instead.
        instead: String,
    },

    /// The registry or a frame ledger failed (storage, corruption, …).
    #[error(transparent)]
    Ledger(#[from] LedgerError),

    /// Storage failed while moving a distributed query's tasks or results.
    #[error(transparent)]
    Storage(#[from] apiary_storage::StorageError),

    /// Running the query failed (a cell could not be read, memory ran out, …).
    #[error("query failed: {0}")]
    Execution(String),
}

/// Result alias for queries.
pub type Result<T, E = QueryError> = std::result::Result<T, E>;

impl From<DataFusionError> for QueryError {
    fn from(e: DataFusionError) -> Self {
        // Errors raised inside a provider travel through DataFusion wrapped; unwrap ours.
        match e {
            DataFusionError::External(inner) => match inner.downcast::<QueryError>() {
                Ok(q) => *q,
                Err(inner) => match inner.downcast::<LedgerError>() {
                    Ok(l) => QueryError::Ledger(*l),
                    Err(inner) => match inner.downcast::<apiary_storage::StorageError>() {
                        Ok(s) => QueryError::Storage(*s),
                        Err(other) => QueryError::Execution(other.to_string()),
                    },
                },
            },
            DataFusionError::Context(context, inner) => match QueryError::from(*inner) {
                QueryError::Execution(m) => QueryError::Execution(format!("{context}: {m}")),
                other => other,
            },
            DataFusionError::Shared(shared) => match std::sync::Arc::try_unwrap(shared) {
                Ok(owned) => QueryError::from(owned),
                Err(shared) => QueryError::Execution(shared.strip_backtrace()),
            },
            DataFusionError::SQL(..)
            | DataFusionError::Plan(..)
            | DataFusionError::SchemaError(..)
            | DataFusionError::NotImplemented(..) => QueryError::Invalid(one_line(&e)),
            DataFusionError::Diagnostic(_, inner) => QueryError::from(*inner),
            DataFusionError::Collection(mut errors) if !errors.is_empty() => {
                QueryError::from(errors.swap_remove(0))
            }
            other => QueryError::Execution(one_line(&other)),
        }
    }
}

/// DataFusion's message on one line (some span several: "No field named x.\nValid fields …").
fn one_line(e: &DataFusionError) -> String {
    e.strip_backtrace()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

impl From<QueryError> for DataFusionError {
    fn from(e: QueryError) -> Self {
        DataFusionError::External(Box::new(e))
    }
}
