//! [`StorageShuffle`]: the default transport, through the shared storage.
//!
//! ```text
//! _queries/{query_id}/query.json                          who coordinates (with the tasks)
//! _queries/{query_id}/tasks/{node_id}/{task:06}-{attempt}.json   a task (manifest format)
//! _queries/{query_id}/results/{task:06}-{attempt}.arrow   rows: the result's end (see below)
//! _queries/{query_id}/results/{task:06}-{attempt}/{writer}-{n:06}.arrow   an earlier chunk
//! _queries/{query_id}/results/{task:06}-{attempt}.empty   done, no rows (a JSON report)
//! _queries/{query_id}/results/{task:06}-{attempt}.failed  failed (a JSON report and error)
//! _queries/{query_id}/results/{task:06}-{attempt}.taken   taken by its worker (a JSON report)
//! _queries/{query_id}/claims/{attempt}/cells/{cell path}  a shared cell's reader: {"task_id": n}
//! _queries/{query_id}/claims/{attempt}/parts/{start}-{end}/{cell path}   a part's reader
//! _doorbells/{node_id}.json                               rung after tasks are published
//! ```
//!
//! A result is written as the worker produces it (see [`results`]): each time a few MiB of
//! rows are in, they go out as a chunk of their own, an Arrow IPC stream named by the
//! writer (a random id) and its number. The end, written last, is an Arrow IPC stream of
//! the last rows whose schema metadata carries the worker's report (`apiary.task_report`)
//! and the names of the earlier chunks (`apiary.result_chunks`): a small result is one
//! object, as before there were chunks. A coordinator reads a result only once its end is
//! there, so it never sees part of one; two workers that run the same attempt (a restart)
//! write chunks of their own, and whichever end stays names a whole set. Every object is
//! written whole by one PUT, so a reader never sees part of one. A claim is a create-if-absent PUT: the first task to create it reads the
//! cell; a task that finds it already there reads its content to tell its own earlier claim
//! (whose response was lost) from another task's. A part's claim names its rows in a folder
//! of their own rather than by its unit key, `{path}#{start}-{end}`: `#` is one of the
//! characters S3 asks keys to avoid, and some tools and proxies cut a URL at it.
//!
//! Discovery costs an idle node one HEAD of its doorbell per poll and nothing else (HEAD is
//! a GET-class request: at the default 1 s poll, 60 a minute, no LIST). A coordinator writes
//! its tasks first and then rewrites the doorbell of each node it gave tasks to, with a new
//! nonce, so the doorbell's ETag changes after every publication. A worker that sees a
//! change lists `_queries/` and its own task folder in each query: every task published
//! before the ring it saw is in that listing. Two coordinators ringing at once overwrite
//! each other's doorbell content, which is harmless: the content is only a nonce, and the
//! change itself is the signal. Per-node objects live outside `_queries/`, so `_queries/` is
//! empty whenever no query runs. A sweep removes doorbells not rung for a day
//! ([`DOORBELL_IDLE`]), so nodes that left leave none behind.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use apiary_storage::{CreateOutcome, Path, StorageBackend};
use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

use crate::error::{Result, ShuffleError};
use crate::manifest::{TaskKey, TaskSpec, validate_query_id};
use crate::transport::{
    Delivered, ResultWriter, ShuffleTransport, TaskFailure, TaskOutcome, TaskReport,
};

mod markers;
mod results;
mod sweep;
use markers::{mark_taken, marker};

/// Where queries live.
pub const QUERIES_DIR: &str = "_queries";
/// Where doorbells live.
pub const DOORBELL_DIR: &str = "_doorbells";

/// Concurrent requests of one cleanup.
const CONCURRENCY: usize = 16;

#[derive(Serialize, Deserialize)]
struct QueryInfo {
    format: u32,
    query_id: String,
    coordinator: String,
}

#[derive(Serialize)]
struct Doorbell<'a> {
    query_id: &'a str,
    nonce: String,
}

/// A doorbell as last seen: any change in these means "look".
type Seen = (Option<String>, i64, u64);

/// The storage transport (see the module docs for its layout and costs).
#[derive(Debug)]
pub struct StorageShuffle {
    backend: Arc<dyn StorageBackend>,
    /// Each polling node's doorbell as last seen.
    doorbells: Mutex<HashMap<String, Seen>>,
    /// Each polling node's task objects already returned (only those still listed).
    delivered: Mutex<HashMap<String, HashSet<Path>>>,
    /// About how many bytes of rows a result chunk holds.
    chunk_bytes: usize,
    /// A doorbell not rung for this long is removed by a sweep.
    doorbell_idle: Duration,
}

/// How long a doorbell may go unrung before a sweep removes it: a node that left, or was
/// killed (a pod under Kubernetes gets a new name each time), would otherwise leave its
/// doorbell for good. A live node loses nothing when its idle doorbell goes: the next
/// publication rings it anew (should one land in the instant between the sweep's listing
/// and its delete, the coordinator re-sends the task after its pickup timeout).
pub const DOORBELL_IDLE: Duration = Duration::from_secs(24 * 3600);

/// About how many bytes of rows a result chunk holds by default: large enough that a
/// request's cost is small beside its transfer, small enough that a worker and its
/// coordinator hold only a few of them.
pub const CHUNK_BYTES: usize = 4 << 20;

impl StorageShuffle {
    /// A transport over `backend`.
    pub fn new(backend: Arc<dyn StorageBackend>) -> Self {
        Self {
            backend,
            doorbells: Mutex::default(),
            delivered: Mutex::default(),
            chunk_bytes: CHUNK_BYTES,
            doorbell_idle: DOORBELL_IDLE,
        }
    }

    /// Removes doorbells not rung for `idle` (instead of [`DOORBELL_IDLE`]) when sweeping.
    pub fn with_doorbell_idle(mut self, idle: Duration) -> Self {
        self.doorbell_idle = idle;
        self
    }

    /// Sends results in chunks of about `bytes` bytes of rows (at least 1 KiB) instead of
    /// [`CHUNK_BYTES`].
    pub fn with_chunk_bytes(mut self, bytes: usize) -> Self {
        self.chunk_bytes = bytes.max(1024);
        self
    }

    fn query_dir(query_id: &str) -> Path {
        Path::from(QUERIES_DIR).join(query_id)
    }

    fn task_key(task: &TaskSpec) -> Path {
        Self::query_dir(&task.query_id)
            .join("tasks")
            .join(task.node_id.as_str())
            .join(format!("{:06}-{}.json", task.task_id, task.attempt))
    }

    fn result_key(key: &TaskKey, ext: &str) -> Path {
        Self::query_dir(&key.query_id)
            .join("results")
            .join(format!("{:06}-{}.{ext}", key.task_id, key.attempt))
    }

    fn claim_key(task: &TaskKey, unit: &str) -> Result<Path> {
        // A cell path is an object path already (see the manifest's checks): parsed, not
        // re-encoded, it names the same cell for every task. A key that reads as a part
        // is one: a frame whose cell paths hold `#` is never cut (`parts::splittable`),
        // so no whole cell of a query's frame reads as a part of another.
        let dir = format!(
            "{}/claims/{}",
            Self::query_dir(&task.query_id),
            task.attempt
        );
        let key = match crate::units::parse_part(unit) {
            Some((cell, rows)) => format!("{dir}/parts/{}-{}/{cell}", rows.start, rows.end),
            None => format!("{dir}/cells/{unit}"),
        };
        Path::parse(key)
            .map_err(|e| ShuffleError::Invalid(format!("`{unit}` is not a cell path: {e}")))
    }

    fn doorbell(node_id: &str) -> Path {
        Path::from(DOORBELL_DIR).join(format!("{node_id}.json"))
    }

    async fn put_all(&self, objects: Vec<(Path, Bytes)>) -> Result<()> {
        put_all(&self.backend, objects).await
    }

    async fn delete_all(&self, keys: Vec<Path>) -> Result<()> {
        futures::stream::iter(keys)
            .map(|k| async move { self.backend.delete(&k).await })
            .buffer_unordered(CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }
}

/// Writes `objects`, a few at a time.
async fn put_all(backend: &Arc<dyn StorageBackend>, objects: Vec<(Path, Bytes)>) -> Result<()> {
    futures::stream::iter(objects)
        .map(|(key, bytes)| {
            let backend = Arc::clone(backend);
            async move { backend.put(&key, bytes).await.map(|_| ()) }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// The task a task object's path names (`_queries/{query}/tasks/{node}/{task}-{attempt}.json`).
fn task_key_of(path: &Path) -> Option<TaskKey> {
    let parts: Vec<_> = path.parts().collect();
    let [_, query, _, _, name] = parts.as_slice() else {
        return None;
    };
    let (task_id, attempt, _) = parse_result_name(name.as_ref())?;
    Some(TaskKey {
        query_id: query.as_ref().to_string(),
        task_id,
        attempt,
    })
}

fn parse_result_name(name: &str) -> Option<(u32, u32, &str)> {
    let (stem, ext) = name.rsplit_once('.')?;
    let (task, attempt) = stem.split_once('-')?;
    Some((task.parse().ok()?, attempt.parse().ok()?, ext))
}

#[async_trait]
impl ShuffleTransport for StorageShuffle {
    async fn publish_tasks(
        &self,
        query_id: &str,
        coordinator: &str,
        tasks: &[TaskSpec],
    ) -> Result<()> {
        validate_query_id(query_id)?;
        // The query object and the tasks at once: nothing reads one before the doorbell.
        let mut objects: Vec<(Path, Bytes)> = vec![query_object(query_id, coordinator)?];
        for t in tasks {
            objects.push((Self::task_key(t), Bytes::from(t.encode()?)));
        }
        self.put_all(objects).await?;
        // Rung only once the tasks are durable: a worker that sees the ring lists them all.
        let mut nodes: Vec<&str> = tasks.iter().map(|t| t.node_id.as_str()).collect();
        nodes.sort_unstable();
        nodes.dedup();
        let mut rings: Vec<(Path, Bytes)> = Vec::with_capacity(nodes.len());
        for node in nodes {
            let ring = serde_json::to_vec(&Doorbell {
                query_id,
                nonce: apiary_storage::Random::process().id(),
            })
            .map_err(|e| {
                ShuffleError::failed(e.to_string(), apiary_storage::ErrorKind::Internal, e)
            })?;
            rings.push((Self::doorbell(node), Bytes::from(ring)));
        }
        self.put_all(rings).await
    }

    async fn poll_tasks(&self, node_id: &str) -> Result<Vec<TaskSpec>> {
        let meta = match self.backend.head(&Self::doorbell(node_id)).await {
            Ok(meta) => meta,
            Err(e) if e.is_not_found() => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let seen: Seen = (meta.version.e_tag.clone(), meta.last_modified_ms, meta.size);
        let changed = self
            .doorbells
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(node_id)
            != Some(&seen);
        if !changed {
            return Ok(Vec::new());
        }
        let queries = self
            .backend
            .list_with_delimiter(&Path::from(QUERIES_DIR))
            .await?;
        // Each query's folder of this node's tasks, listed at once.
        let dirs: Vec<Path> = queries
            .prefixes
            .iter()
            .map(|prefix| prefix.clone().join("tasks").join(node_id))
            .collect();
        let listings: Vec<_> = futures::stream::iter(dirs)
            .map(|dir| {
                let backend = Arc::clone(&self.backend);
                async move { backend.list(&dir).await }
            })
            .buffer_unordered(CONCURRENCY)
            .try_collect()
            .await?;
        let listed: HashSet<Path> = listings.into_iter().flatten().map(|m| m.key).collect();
        // Tasks returned before are not read again; those no longer listed are forgotten.
        let new: Vec<Path> = {
            let mut delivered = self.delivered.lock().unwrap_or_else(|p| p.into_inner());
            let mine = delivered.entry(node_id.to_string()).or_default();
            mine.retain(|k| listed.contains(k));
            let mut new: Vec<Path> = listed.into_iter().filter(|k| !mine.contains(k)).collect();
            // In key order, not the set's: a seeded simulation replays the same reads.
            new.sort();
            new
        };
        let read: Vec<Option<(Path, Result<TaskSpec, TaskFailure>)>> = futures::stream::iter(new)
            .map(|key| async move {
                let object = match self.backend.get(&key).await {
                    Ok(object) => object,
                    // Finished and removed between the listing and the read.
                    Err(e) if e.is_not_found() => return Ok(None),
                    Err(e) => return Err(ShuffleError::from(e)),
                };
                let read = match TaskSpec::decode(key.as_ref(), &object.bytes) {
                    Ok(task) if task.node_id == node_id => Ok(task),
                    Ok(_) => return Ok(None),
                    Err(e) => {
                        // A task this node cannot read (damaged, or of another version)
                        // fails at once, so the coordinator gives it to another node.
                        tracing::warn!(key = %key, error = %e, "task refused");
                        Err(TaskFailure {
                            kind: e.kind(),
                            retryable: true,
                            message: format!("node {node_id} cannot read its task: {e}"),
                        })
                    }
                };
                Ok(Some((key, read)))
            })
            .buffer_unordered(CONCURRENCY)
            .try_collect()
            .await?;
        // Only now: a failed read above leaves the doorbell "unseen" so the next poll retries.
        self.doorbells
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(node_id.to_string(), seen);
        let read: Vec<(Path, Result<TaskSpec, TaskFailure>)> = read.into_iter().flatten().collect();
        self.delivered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(node_id.to_string())
            .or_default()
            .extend(read.iter().map(|(k, _)| k.clone()));
        // Each task read is marked taken (for the coordinator's pickup deadline), each one
        // refused gets its failed outcome. A marker that cannot be written costs only
        // time: the coordinator then waits for the task's own outcome or deadline.
        let report = TaskReport {
            node_id: node_id.to_string(),
            ..TaskReport::default()
        };
        let mut taken = Vec::with_capacity(read.len());
        let mut refused = Vec::new();
        let mut tasks = Vec::with_capacity(read.len());
        for (path, task) in read {
            match task {
                Ok(task) => {
                    taken.push((
                        Self::result_key(&task.key(), "taken"),
                        marker(&report, None)?,
                    ));
                    tasks.push(task);
                }
                Err(failure) => {
                    if let Some(key) = task_key_of(&path) {
                        refused.push((
                            Self::result_key(&key, "failed"),
                            marker(&report, Some(failure))?,
                        ));
                    }
                }
            }
        }
        if let Err(e) = self.put_all(refused).await {
            tracing::warn!(error = %e, "reporting refused tasks failed");
        }
        // A taken marker serves only the coordinator's pickup deadline (seconds): it is
        // written while the tasks run, never in their way.
        if !taken.is_empty() {
            let backend = Arc::clone(&self.backend);
            tokio::spawn(async move { mark_taken(&backend, taken).await });
        }
        Ok(tasks)
    }

    fn reports_pickup(&self) -> bool {
        true
    }

    async fn publish_outcome(
        &self,
        task: &TaskSpec,
        outcome: TaskOutcome,
        report: &TaskReport,
    ) -> Result<()> {
        let key = task.key();
        let (path, bytes) = match outcome {
            TaskOutcome::Rows(rows) => (
                Self::result_key(&key, "arrow"),
                results::end(task, &rows, report)?,
            ),
            TaskOutcome::Empty => (Self::result_key(&key, "empty"), marker(report, None)?),
            TaskOutcome::Failed(failure) => (
                Self::result_key(&key, "failed"),
                marker(report, Some(failure))?,
            ),
            // The transport marks a task taken itself (see `poll_tasks`).
            TaskOutcome::Running => return Ok(()),
        };
        self.backend.put(&path, bytes).await?;
        Ok(())
    }

    fn open_result<'a>(
        &'a self,
        task: &'a TaskSpec,
        schema: arrow_schema::SchemaRef,
    ) -> Box<dyn ResultWriter + 'a> {
        Box::new(results::ChunkWriter::new(self, task, schema))
    }

    async fn read_chunk(
        &self,
        query_id: &str,
        chunk: &str,
    ) -> Result<Vec<arrow_array::RecordBatch>> {
        validate_query_id(query_id)?;
        let path = results::chunk_path(&Self::query_dir(query_id), chunk)?;
        let object = self.backend.get(&path).await?;
        Ok(crate::result::decode(path.as_ref(), &object.bytes)?.1)
    }

    fn can_claim(&self) -> bool {
        true
    }

    async fn claim(&self, task: &TaskKey, cell: &str) -> Result<bool> {
        validate_query_id(&task.query_id)?;
        let key = Self::claim_key(task, cell)?;
        let mine = Bytes::from(format!("{{\"task_id\":{}}}", task.task_id));
        Ok(
            match self.backend.put_if_absent(&key, mine.clone()).await? {
                CreateOutcome::Created(_) => true,
                CreateOutcome::AlreadyExists(held) => {
                    held.bytes == mine
                        || apiary_storage::planted::is_planted(
                            apiary_storage::planted::CLAIM_TAKEN_WHEN_HELD,
                        )
                }
            },
        )
    }

    async fn collect(&self, query_id: &str, wanted: &[TaskKey]) -> Result<Vec<Delivered>> {
        validate_query_id(query_id)?;
        let listed = self
            .backend
            .list(&Self::query_dir(query_id).join("results"))
            .await?;
        let mut found: Vec<(TaskKey, String, Path)> = listed
            .into_iter()
            .filter_map(|m| {
                // Chunks, a folder deeper, are read once their result's end is there.
                if m.key.parts().count() != 4 {
                    return None;
                }
                let (task_id, attempt, ext) = parse_result_name(m.key.filename()?)?;
                let key = TaskKey {
                    query_id: query_id.to_string(),
                    task_id,
                    attempt,
                };
                wanted
                    .contains(&key)
                    .then(|| (key, ext.to_string(), m.key.clone()))
            })
            .collect();
        // A task with an outcome is past being taken.
        let ended: HashSet<TaskKey> = found
            .iter()
            .filter(|(_, ext, _)| ext != "taken")
            .map(|(key, _, _)| key.clone())
            .collect();
        found.retain(|(key, ext, _)| ext != "taken" || !ended.contains(key));
        futures::stream::iter(found)
            .map(|(key, ext, path)| async move {
                if ext == "taken" {
                    // Its name says all: no read.
                    return Ok(Some(Delivered {
                        key,
                        outcome: TaskOutcome::Running,
                        report: TaskReport::default(),
                    }));
                }
                let object = match self.backend.get(&path).await {
                    Ok(object) => object,
                    Err(e) if e.is_not_found() => return Ok(None),
                    Err(e) => return Err(ShuffleError::from(e)),
                };
                let what = path.to_string();
                let delivered = match ext.as_str() {
                    // The report travels in the stream's schema metadata.
                    "arrow" => results::delivered(key, &what, &object.bytes),
                    "empty" | "failed" => markers::delivered(key, &ext, &what, &object.bytes),
                    other => Delivered {
                        key,
                        outcome: TaskOutcome::Failed(TaskFailure {
                            kind: apiary_storage::ErrorKind::Corrupt,
                            retryable: true,
                            message: format!("result `{what}` has an unknown kind `{other}`"),
                        }),
                        report: TaskReport::default(),
                    },
                };
                Ok::<_, ShuffleError>(Some(delivered))
            })
            .buffer_unordered(CONCURRENCY)
            .try_collect::<Vec<_>>()
            .await
            .map(|d: Vec<Option<Delivered>>| {
                d.into_iter()
                    .flatten()
                    .map(|mut d| {
                        d.report.via = "storage".into();
                        d
                    })
                    .collect()
            })
    }

    /// A task is wanted while its query object is there: `finish` (and so `cancel`)
    /// removes it last, and a sweep removes it with the rest. One HEAD.
    async fn wanted(&self, task: &TaskKey) -> Result<bool> {
        validate_query_id(&task.query_id)?;
        match self
            .backend
            .head(&Self::query_dir(&task.query_id).join("query.json"))
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    async fn renew(&self, query_id: &str, coordinator: &str) -> Result<()> {
        validate_query_id(query_id)?;
        let (key, bytes) = query_object(query_id, coordinator)?;
        self.backend.put(&key, bytes).await?;
        Ok(())
    }

    async fn finish(&self, query_id: &str) -> Result<()> {
        validate_query_id(query_id)?;
        tracing::debug!(query = query_id, "removing the query's objects");
        // The query object first: from then on every task of the query is unwanted, so a
        // worker that publishes after the listing below sees that and removes its own
        // outcome. (A half-finished cleanup is still a folder under `_queries/`, which a
        // sweep removes.)
        match self
            .backend
            .delete(&Self::query_dir(query_id).join("query.json"))
            .await
        {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
        let listed = self.backend.list(&Self::query_dir(query_id)).await?;
        self.delete_all(listed.into_iter().map(|m| m.key).collect())
            .await
    }

    async fn sweep(&self, retention: Duration) -> Result<usize> {
        self.sweep_left_behind(retention).await
    }
}

/// The query object: who coordinates. Rewritten to renew the query (a sweep judges a query
/// by its newest object).
fn query_object(query_id: &str, coordinator: &str) -> Result<(Path, Bytes)> {
    let info = serde_json::to_vec(&QueryInfo {
        format: 1,
        query_id: query_id.to_string(),
        coordinator: coordinator.to_string(),
    })
    .map_err(|e| ShuffleError::failed(e.to_string(), apiary_storage::ErrorKind::Internal, e))?;
    Ok((
        StorageShuffle::query_dir(query_id).join("query.json"),
        Bytes::from(info),
    ))
}
