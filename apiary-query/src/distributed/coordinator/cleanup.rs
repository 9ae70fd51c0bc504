//! Cleanup: a query's objects are removed however its coordinator leaves it, in the
//! background, and queries left by coordinators that died are swept.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::distributed::Cluster;

/// Removes the query's objects however the coordinator leaves (an answer, an error, a
/// cancellation), in the background: the answer never waits for it. A query left without
/// its answer (an error, a dropped stream) is cancelled, so that workers stop its tasks.
pub(super) struct Cleanup {
    pub(super) cluster: Cluster,
    pub(super) query_id: String,
    /// Whether anything of the query went to the transport.
    pub(super) published: AtomicBool,
    /// Whether the query's answer is in hand (then it is finished, not cancelled).
    pub(super) answered: AtomicBool,
}

impl Cleanup {
    pub(super) fn new(cluster: Cluster, query_id: String) -> Self {
        Self {
            cluster,
            query_id,
            published: AtomicBool::new(false),
            answered: AtomicBool::new(false),
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if !self.published.load(Ordering::Relaxed) {
            return;
        }
        let transport = Arc::clone(&self.cluster.transport);
        let query_id = self.query_id.clone();
        let answered = self.answered.load(Ordering::Relaxed);
        let removal = async move {
            let removed = if answered {
                transport.finish(&query_id).await
            } else {
                tracing::debug!(query = %query_id, "cancelling the query");
                transport.cancel(&query_id).await
            };
            if let Err(e) = removed {
                tracing::warn!(query = %query_id, error = %e, "query objects not removed; a sweep will");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                self.cluster.background.spawn_on(removal, &handle);
            }
            Err(_) => tracing::warn!(
                query = %self.query_id,
                "no runtime to remove the query's objects; a sweep will"
            ),
        }
    }
}

impl Cluster {
    /// Sweeps orphaned queries in the background, at most once per half retention.
    pub(super) fn maybe_sweep(&self) {
        let mut last = self.last_sweep.lock().unwrap_or_else(|p| p.into_inner());
        let now = self.clock.monotonic();
        let due = last.is_none_or(|t| now.saturating_sub(t) >= self.settings.orphan_retention / 2);
        if !due {
            return;
        }
        *last = Some(now);
        let transport = Arc::clone(&self.transport);
        let retention = self.settings.orphan_retention;
        self.background
            .spawn(async move { sweep_orphans(transport.as_ref(), retention).await });
    }
}

/// Removes queries older than `retention` that coordinators which died left in
/// `transport`, and says what it removed; a failure only costs the next sweep's wait.
pub async fn sweep_orphans(
    transport: &dyn crate::distributed::ShuffleTransport,
    retention: std::time::Duration,
) {
    match transport.sweep(retention).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            queries = n,
            "removed queries left by coordinators that died"
        ),
        Err(e) => tracing::debug!(error = %e, "sweeping old queries failed"),
    }
}
