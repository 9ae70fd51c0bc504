//! The query error type.

use apiary_ledger::LedgerError;
use apiary_storage::ErrorKind;
use datafusion::error::DataFusionError;

/// Any error kept as the source of another.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

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

    /// The shuffle transport failed, or a task or result it carried is malformed.
    #[error(transparent)]
    Shuffle(#[from] apiary_shuffle::ShuffleError),

    /// Running the query failed for a reason Apiary itself detected (a task ran past its
    /// deadline, a result had the wrong shape, …).
    #[error("query failed: {0}")]
    Execution(String),

    /// The statement was cancelled (`DELETE /api/v1/queries/{id}`, say) before it ended;
    /// the message says by whom.
    #[error("{0}")]
    Cancelled(String),

    /// A component failed while running the query (DataFusion, an encoder, the swarm's
    /// membership); its error is kept as the source.
    #[error("query failed: {message}")]
    Failed {
        /// The failure on one line, with its context.
        message: String,
        /// What a caller can do about it.
        kind: ErrorKind,
        /// The original error.
        #[source]
        source: BoxError,
    },
}

impl QueryError {
    /// A [`QueryError::Failed`] keeping `source`.
    pub fn failed(
        message: impl Into<String>,
        kind: ErrorKind,
        source: impl Into<BoxError>,
    ) -> Self {
        QueryError::Failed {
            message: message.into(),
            kind,
            source: source.into(),
        }
    }

    /// The message without the "query failed: " that [`Display`](std::fmt::Display) puts
    /// before an execution failure (for a message that another one quotes).
    pub fn detail(&self) -> String {
        match self {
            QueryError::Execution(message) | QueryError::Failed { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }

    /// What a caller can do about it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            QueryError::Invalid(_) | QueryError::Rejected { .. } => ErrorKind::InvalidInput,
            QueryError::Ledger(e) => e.kind(),
            QueryError::Storage(e) => e.kind(),
            QueryError::Shuffle(e) => e.kind(),
            QueryError::Execution(_) => ErrorKind::Internal,
            QueryError::Cancelled(_) => ErrorKind::Closed,
            QueryError::Failed { kind, .. } => *kind,
        }
    }
}

/// The kind of a DataFusion failure that is not Apiary's own error.
pub(crate) fn datafusion_kind(e: &DataFusionError) -> ErrorKind {
    match e {
        DataFusionError::ResourcesExhausted(_)
        | DataFusionError::IoError(_)
        | DataFusionError::ObjectStore(_) => ErrorKind::Unavailable,
        DataFusionError::ParquetError(_) => ErrorKind::Corrupt,
        DataFusionError::ArrowError(e, _) => arrow_kind(e),
        DataFusionError::Shared(inner) => datafusion_kind(inner),
        DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => {
            datafusion_kind(inner)
        }
        DataFusionError::External(inner) => boxed_kind(inner.as_ref()),
        _ => ErrorKind::Internal,
    }
}

/// The kind of an error DataFusion carries boxed: one of Apiary's, or its own.
fn boxed_kind(e: &(dyn std::error::Error + Send + Sync + 'static)) -> ErrorKind {
    if let Some(q) = e.downcast_ref::<QueryError>() {
        q.kind()
    } else if let Some(df) = e.downcast_ref::<DataFusionError>() {
        datafusion_kind(df)
    } else if let Some(l) = e.downcast_ref::<LedgerError>() {
        l.kind()
    } else if let Some(s) = e.downcast_ref::<apiary_storage::StorageError>() {
        s.kind()
    } else if let Some(s) = e.downcast_ref::<apiary_shuffle::ShuffleError>() {
        s.kind()
    } else {
        ErrorKind::Internal
    }
}

/// The kind of an Arrow compute failure: the data cannot take what the query asks of it (a
/// cast, a division by zero, an overflow) is the query's own error, as it would be in any
/// database; the rest are Apiary's.
fn arrow_kind(e: &arrow_schema::ArrowError) -> ErrorKind {
    use arrow_schema::ArrowError as A;
    match e {
        A::CastError(_)
        | A::ParseError(_)
        | A::DivideByZero
        | A::ArithmeticOverflow(_)
        | A::ComputeError(_)
        | A::InvalidArgumentError(_) => ErrorKind::InvalidInput,
        A::IoError(..) | A::MemoryError(_) => ErrorKind::Unavailable,
        A::ParquetError(_) | A::IpcError(_) => ErrorKind::Corrupt,
        _ => ErrorKind::Internal,
    }
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
                        Err(inner) => match inner.downcast::<apiary_shuffle::ShuffleError>() {
                            Ok(s) => QueryError::Shuffle(*s),
                            // DataFusion's own error, boxed on the way (a stream adapter, a
                            // spawned partition): classified as itself.
                            Err(inner) => match inner.downcast::<DataFusionError>() {
                                Ok(df) => QueryError::from(*df),
                                Err(other) => QueryError::failed(
                                    other.to_string(),
                                    ErrorKind::Internal,
                                    other,
                                ),
                            },
                        },
                    },
                },
            },
            DataFusionError::Context(context, inner) => match QueryError::from(*inner) {
                QueryError::Execution(m) => QueryError::Execution(format!("{context}: {m}")),
                QueryError::Failed {
                    message,
                    kind,
                    source,
                } => QueryError::Failed {
                    message: format!("{context}: {message}"),
                    kind,
                    source,
                },
                other => other,
            },
            DataFusionError::Shared(shared) => match std::sync::Arc::try_unwrap(shared) {
                Ok(owned) => QueryError::from(owned),
                // Still shared (a hash join's build side is awaited by every partition).
                Err(shared) => match exhausted(&shared) {
                    Some(what) => QueryError::failed(
                        memory_message(what),
                        ErrorKind::Unavailable,
                        DataFusionError::Shared(shared),
                    ),
                    None => QueryError::failed(
                        shared.strip_backtrace(),
                        datafusion_kind(&shared),
                        shared,
                    ),
                },
            },
            DataFusionError::SQL(..)
            | DataFusionError::Plan(..)
            | DataFusionError::SchemaError(..)
            | DataFusionError::NotImplemented(..) => QueryError::Invalid(one_line(&e)),
            DataFusionError::Diagnostic(_, inner) => QueryError::from(*inner),
            DataFusionError::Collection(mut errors) if !errors.is_empty() => {
                QueryError::from(errors.swap_remove(0))
            }
            DataFusionError::ResourcesExhausted(ref what) => {
                QueryError::failed(memory_message(what), ErrorKind::Unavailable, e)
            }
            other => QueryError::failed(one_line(&other), datafusion_kind(&other), other),
        }
    }
}

/// The message of a query that ran out of memory: what DataFusion said and what to set.
fn memory_message(what: &str) -> String {
    format!(
        "the query needs more memory than its budget, even after spilling to disk ({what}); \
         give the node more memory (`apiary node --memory` / APIARY_MEMORY), give a one-shot \
         query more (`apiary sql --memory SIZE`), or make the query smaller",
        what = what.split_whitespace().collect::<Vec<_>>().join(" ")
    )
}

/// The allocation failure at the root of `e`, through the wrappers DataFusion adds.
fn exhausted(e: &DataFusionError) -> Option<&str> {
    match e {
        DataFusionError::ResourcesExhausted(what) => Some(what),
        DataFusionError::Shared(inner) => exhausted(inner),
        DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => {
            exhausted(inner)
        }
        _ => None,
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn an_error_in_the_data_keeps_its_kind_when_boxed() {
        let cast = || {
            DataFusionError::ArrowError(
                Box::new(arrow_schema::ArrowError::CastError(
                    "Cannot cast 'x'".into(),
                )),
                None,
            )
        };
        // Still shared (another partition holds it), so it cannot be unwrapped.
        let held = Arc::new(DataFusionError::External(Box::new(cast())));
        let kept = Arc::clone(&held);
        for e in [
            cast(),
            DataFusionError::External(Box::new(cast())),
            DataFusionError::Shared(held),
        ] {
            let q = QueryError::from(e);
            assert_eq!(q.kind(), ErrorKind::InvalidInput, "{q}");
        }
        drop(kept);
    }

    #[test]
    fn an_allocation_failure_says_what_to_set_however_it_is_wrapped() {
        let root = || DataFusionError::ResourcesExhausted("Failed to allocate 97 KB".into());
        // A shared error another partition still holds cannot be unwrapped.
        let held = Arc::new(root());
        let wrapped = [
            root(),
            DataFusionError::Shared(Arc::new(root())),
            DataFusionError::Shared(Arc::clone(&held)),
            DataFusionError::Context("join".into(), Box::new(DataFusionError::Shared(held))),
        ];
        for e in wrapped {
            let q = QueryError::from(e);
            assert_eq!(q.kind(), ErrorKind::Unavailable, "{q}");
            let message = q.to_string();
            assert!(message.contains("more memory than its budget"), "{message}");
            assert!(message.contains("97 KB"), "{message}");
            assert!(message.contains("--memory"), "{message}");
        }
    }
}
