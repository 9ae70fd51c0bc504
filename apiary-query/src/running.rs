//! The statements an engine is running now, each cancellable by id: what the console's
//! `GET /api/v1/queries`, `DELETE /api/v1/queries/{id}` and `apiary.system.queries` show.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apiary_storage::{Clock, Random};
use tokio_util::sync::CancellationToken;

/// The statements running on one engine (clones share them).
#[derive(Debug, Clone)]
pub struct RunningQueries {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    clock: Arc<dyn Clock>,
    random: Random,
    queries: Mutex<BTreeMap<String, Entry>>,
}

#[derive(Debug)]
struct Entry {
    sql: String,
    client: String,
    started_ms: i64,
    started: Duration,
    cancel: CancellationToken,
    cancelled_by: Arc<Mutex<Option<String>>>,
}

/// One running statement, as [`RunningQueries::list`] shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunningQuery {
    /// Its id, for cancelling it.
    pub id: String,
    /// Its SQL text (cut to 4 KiB).
    pub sql: String,
    /// Who runs it: `api`, `python`, `shell`, … (the session's label).
    pub client: String,
    /// When it started (ms since the epoch, this node's clock).
    pub started_ms: i64,
    /// How long it has run.
    pub elapsed: Duration,
    /// Whether a cancel was asked for (it stops at its next step).
    pub cancelling: bool,
}

/// The longest SQL text kept of a running statement.
const MAX_SQL: usize = 4096;

impl RunningQueries {
    /// None running yet; ids drawn from `random`, times read from `clock`.
    pub fn new(clock: Arc<dyn Clock>, random: Random) -> Self {
        Self {
            inner: Arc::new(Inner {
                clock,
                random,
                queries: Mutex::default(),
            }),
        }
    }

    /// Registers a statement starting now; it is listed until the returned ticket drops.
    pub(crate) fn start(&self, sql: &str, client: &str) -> Ticket {
        let id = self.inner.random.id();
        let mut cut = sql.trim().to_string();
        if cut.len() > MAX_SQL {
            let mut end = MAX_SQL;
            while !cut.is_char_boundary(end) {
                end -= 1;
            }
            cut.truncate(end);
            cut.push('…');
        }
        let cancel = CancellationToken::new();
        let cancelled_by = Arc::new(Mutex::new(None));
        let entry = Entry {
            sql: cut,
            client: client.to_string(),
            started_ms: self.inner.clock.wall_ms(),
            started: self.inner.clock.monotonic(),
            cancel: cancel.clone(),
            cancelled_by: Arc::clone(&cancelled_by),
        };
        self.lock().insert(id.clone(), entry);
        Ticket {
            queries: self.clone(),
            id,
            cancel,
            cancelled_by,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Entry>> {
        self.inner.queries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The statements running now, oldest first.
    pub fn list(&self) -> Vec<RunningQuery> {
        let now = self.inner.clock.monotonic();
        let mut list: Vec<RunningQuery> = self
            .lock()
            .iter()
            .map(|(id, e)| RunningQuery {
                id: id.clone(),
                sql: e.sql.clone(),
                client: e.client.clone(),
                started_ms: e.started_ms,
                elapsed: now.saturating_sub(e.started),
                cancelling: e.cancel.is_cancelled(),
            })
            .collect();
        list.sort_by(|a, b| b.elapsed.cmp(&a.elapsed).then(a.id.cmp(&b.id)));
        list
    }

    /// How many statements run now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none runs.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Asks statement `id` to stop, on behalf of `by`: it ends with a
    /// [`QueryError::Cancelled`](crate::QueryError::Cancelled) naming `by` at its next step
    /// (a distributed query's tasks are abandoned with it). False when no statement `id`
    /// runs.
    pub fn cancel(&self, id: &str, by: &str) -> bool {
        let queries = self.lock();
        let Some(entry) = queries.get(id) else {
            return false;
        };
        entry
            .cancelled_by
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert_with(|| by.to_string());
        entry.cancel.cancel();
        true
    }
}

/// A running statement's registration: listed while it lives, and told when to stop.
#[derive(Debug)]
pub(crate) struct Ticket {
    queries: RunningQueries,
    id: String,
    cancel: CancellationToken,
    cancelled_by: Arc<Mutex<Option<String>>>,
}

impl Ticket {
    /// Resolves once a cancel is asked for.
    pub(crate) fn cancelled(&self) -> tokio_util::sync::WaitForCancellationFutureOwned {
        self.cancel.clone().cancelled_owned()
    }

    /// The error the statement ends with once cancelled.
    pub(crate) fn error(&self) -> crate::QueryError {
        let by = self
            .cancelled_by
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_else(|| "someone".into());
        crate::QueryError::Cancelled(format!(
            "query {} was cancelled by {by}; nothing it would have changed was committed",
            self.id
        ))
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.queries.lock().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use apiary_storage::ManualClock;

    #[test]
    fn statements_are_listed_while_they_run_and_cancelled_by_id() {
        let clock = Arc::new(ManualClock::new());
        let running = RunningQueries::new(clock.clone(), Random::seeded(1));
        let first = running.start("SELECT 1", "api");
        clock.advance(Duration::from_secs(2));
        let second = running.start(&"x".repeat(5000), "python");
        let list = running.list();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].sql, "SELECT 1", "oldest first");
        assert_eq!(list[0].elapsed, Duration::from_secs(2));
        assert!(list[1].sql.len() <= MAX_SQL + '…'.len_utf8());
        assert!(!running.cancel("nobody", "me"));
        assert!(running.cancel(&list[0].id, "the console of n1"));
        assert!(running.list()[0].cancelling);
        assert!(first.error().to_string().contains("the console of n1"));
        drop(first);
        drop(second);
        assert!(running.is_empty());
    }
}
