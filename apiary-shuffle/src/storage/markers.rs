//! Markers: the small JSON objects that end a task without rows (`.empty`, `.failed`) or
//! say it was taken (`.taken`), each with the worker's report.

use std::sync::Arc;

use apiary_storage::{Path, StorageBackend};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::{Result, ShuffleError};
use crate::manifest::TaskKey;
use crate::transport::{Delivered, TaskFailure, TaskOutcome, TaskReport};

/// A marker's content.
#[derive(Serialize, Deserialize)]
struct Marker {
    report: TaskReport,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// The failure's kind ([`apiary_storage::ErrorKind::as_str`]); markers of older workers have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kind: Option<String>,
    /// Whether another attempt may succeed; older workers' failures all were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retryable: Option<bool>,
}

impl Marker {
    /// A marker standing for one that could not be read: a failed attempt, retried.
    fn damaged(message: String) -> Self {
        Marker {
            report: TaskReport::default(),
            error: Some(message),
            kind: Some(apiary_storage::ErrorKind::Corrupt.as_str().to_string()),
            retryable: Some(true),
        }
    }

    /// The failure this marker records (a marker without a kind: an older worker's, retried
    /// as it always was).
    fn failure(self) -> TaskFailure {
        let message = self.error.unwrap_or_else(|| "no cause given".into());
        match self
            .kind
            .as_deref()
            .and_then(apiary_storage::ErrorKind::from_name)
        {
            Some(kind) => TaskFailure {
                kind,
                retryable: self
                    .retryable
                    .unwrap_or_else(|| TaskFailure::retryable_kind(kind)),
                message,
            },
            None => TaskFailure {
                kind: apiary_storage::ErrorKind::Internal,
                retryable: true,
                message,
            },
        }
    }
}

/// The outcome an `.empty` or `.failed` marker (`what`, read as `bytes`) stands for; one
/// that cannot be read is a failed attempt.
pub(super) fn delivered(key: TaskKey, ext: &str, what: &str, bytes: &[u8]) -> Delivered {
    let (marker, ended) = match serde_json::from_slice::<Marker>(bytes) {
        Ok(marker) => (marker, ext),
        // The attempt failed: its outcome cannot be known.
        Err(e) => (
            Marker::damaged(format!("result `{what}` is damaged: {e}")),
            "failed",
        ),
    };
    let report = marker.report.clone();
    Delivered {
        key,
        outcome: match ended {
            "empty" => TaskOutcome::Empty,
            _ => TaskOutcome::Failed(marker.failure()),
        },
        report,
    }
}

/// A marker's bytes: `report`, with `failure` for a failed task.
pub(super) fn marker(report: &TaskReport, failure: Option<TaskFailure>) -> Result<Bytes> {
    let (error, kind, retryable) = match failure {
        Some(f) => (
            Some(f.message),
            Some(f.kind.as_str().to_string()),
            Some(f.retryable),
        ),
        None => (None, None, None),
    };
    serde_json::to_vec(&Marker {
        report: report.clone(),
        error,
        kind,
        retryable,
    })
    .map(Bytes::from)
    .map_err(|e| ShuffleError::failed(e.to_string(), apiary_storage::ErrorKind::Internal, e))
}

/// Writes the taken markers `taken`, then removes those of queries finished meanwhile. A
/// query's `finish` removes its query object before it lists what to delete: a marker
/// written before its query object was gone is in that listing, and one written after it
/// finds the query object gone here.
pub(super) async fn mark_taken(backend: &Arc<dyn StorageBackend>, taken: Vec<(Path, Bytes)>) {
    let keys: Vec<Path> = taken.iter().map(|(k, _)| k.clone()).collect();
    if let Err(e) = super::put_all(backend, taken).await {
        tracing::warn!(error = %e, "marking tasks taken failed");
    }
    let mut queries: Vec<Path> = keys
        .iter()
        .filter_map(|k| {
            let parts: Vec<_> = k.parts().collect();
            (parts.len() >= 2).then(|| Path::from_iter(parts[..2].iter().cloned()))
        })
        .collect();
    queries.sort();
    queries.dedup();
    for query in queries {
        let gone = matches!(
            backend.head(&query.clone().join("query.json")).await,
            Err(e) if e.is_not_found()
        );
        if gone {
            for key in keys
                .iter()
                .filter(|k| k.as_ref().starts_with(query.as_ref()))
            {
                if let Err(e) = backend.delete(key).await
                    && !e.is_not_found()
                {
                    tracing::debug!(key = %key, error = %e, "removing a late taken marker failed");
                }
            }
        }
    }
}
