//! Writes, compaction and vacuum: the [`Apiary`] methods that change a frame's cells.

use std::sync::Arc;

use apiary_ledger::ipc;
use apiary_ledger::{FrameRef, LedgerError, WriteMode, WriteOptions, WriteResult};
use arrow_array::RecordBatch;
use tokio::sync::watch;

use crate::{Apiary, Result};

impl Apiary {
    /// Sizing of writes from this node's capacity: cells near its target cell size (an
    /// eighth of a bee's memory, 16 MiB to 256 MiB), at most one bee's memory buffered.
    fn write_options(&self) -> WriteOptions {
        let capacity = match self.running() {
            Some(node) => node.agent.capacity().clone(),
            None => apiary_swarm::detect_capacity(None),
        };
        // Cells this node writes enter its cache as they are uploaded.
        let on_upload = self.cell_cache().map(|cache| {
            let clock = Arc::clone(&self.registry.config().clock);
            Arc::new(
                move |key: &apiary_storage::Path, bytes: &bytes::Bytes, e_tag: Option<String>| {
                    let (cache, key, bytes, now) = (
                        Arc::clone(&cache),
                        key.to_string(),
                        bytes.clone(),
                        clock.wall_ms(),
                    );
                    apiary_storage::blocking::detach(move || {
                        if let Err(e) = cache.insert(&key, &bytes, now, e_tag) {
                            tracing::debug!(key, error = %e, "a written cell was not cached");
                        }
                    });
                },
            ) as apiary_ledger::UploadHook
        });
        WriteOptions {
            on_upload,
            target_cell_bytes: capacity.target_cell_bytes as usize,
            encode_threads: capacity.bees.max(1) as usize,
            memory_budget: (capacity.memory_per_bee_bytes as usize)
                .max(capacity.target_cell_bytes as usize * 2),
            ..WriteOptions::default()
        }
    }

    /// Appends `batches` to a frame in one commit. Columns are matched to the frame by name
    /// (any order; safe widenings cast; missing nullable columns null); anything else is
    /// refused and nothing is committed.
    pub async fn write_to_frame(
        &self,
        hive: &str,
        r#box: &str,
        frame: &str,
        batches: impl IntoIterator<Item = RecordBatch, IntoIter: Send + 'static>,
    ) -> Result<WriteResult> {
        let frame = FrameRef::new(hive, r#box, frame)?;
        self.write_batches_to_frame(&frame, batches.into_iter().map(Ok), WriteMode::Append)
            .await
    }

    /// Appends an Arrow IPC stream (the seeds' `write_to_frame(…, ipc_bytes)`), read batch by
    /// batch on a blocking thread (a slow reader never stalls the runtime). Malformed IPC is
    /// an error and commits nothing.
    pub async fn write_ipc_to_frame(
        &self,
        hive: &str,
        r#box: &str,
        frame: &str,
        ipc: impl std::io::Read + Send + 'static,
    ) -> Result<WriteResult> {
        let frame = FrameRef::new(hive, r#box, frame)?;
        self.write_batches_to_frame(&frame, ipc::deferred(ipc), WriteMode::Append)
            .await
    }

    /// Replaces a frame's contents with `batches`, atomically: a concurrent append committed
    /// before the overwrite is removed with the old data; one committed after it survives.
    pub async fn overwrite_frame(
        &self,
        hive: &str,
        r#box: &str,
        frame: &str,
        batches: impl IntoIterator<Item = RecordBatch, IntoIter: Send + 'static>,
    ) -> Result<WriteResult> {
        let frame = FrameRef::new(hive, r#box, frame)?;
        self.write_batches_to_frame(&frame, batches.into_iter().map(Ok), WriteMode::Overwrite)
            .await
    }

    /// Writes batches from any source (files, streams) to `frame`, in one commit that
    /// appends or replaces its contents.
    pub async fn write_batches_to_frame(
        &self,
        frame: &FrameRef,
        batches: impl IntoIterator<Item = Result<RecordBatch, LedgerError>, IntoIter: Send + 'static>,
        mode: WriteMode,
    ) -> Result<WriteResult> {
        if let Some(node) = self.running() {
            // A hot colony slows writes down before they start.
            node.colony.admit_write().await;
        }
        // A write takes a bee like a query, so the node's idle bees count it.
        let _bee = self.work_bee().await;
        self.written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(frame.clone());
        let ledger = self.registry.ledger(frame).await?;
        let backend = Arc::clone(self.registry.backend());
        Ok(apiary_ledger::write_batches(
            &ledger,
            backend.as_ref(),
            batches.into_iter(),
            mode,
            &self.write_options(),
        )
        .await?)
    }

    /// A bee of the running node for a write or a compaction, held until dropped (waiting
    /// for one while every bee is busy). `None` off a node, or on one that is leaving: the
    /// work then runs without one, since its data has nowhere else to go.
    async fn work_bee(&self) -> Option<apiary_swarm::Bee> {
        let node = self.running()?;
        node.colony.bees().acquire().await.ok()
    }

    /// Compacts the frame's small cells, partition by partition, into cells near this
    /// node's target size, each group in one commit (readers never see a row twice or
    /// missing). Skipped while another node holds the frame's compaction lease. The old files
    /// stay for readers of older versions until [`vacuum`](Self::vacuum).
    pub async fn compact(
        &self,
        hive: &str,
        r#box: &str,
        frame: &str,
    ) -> Result<apiary_ledger::CompactResult> {
        let frame = FrameRef::new(hive, r#box, frame)?;
        self.compact_frame(&frame).await
    }

    async fn compact_frame(&self, frame: &FrameRef) -> Result<apiary_ledger::CompactResult> {
        let owner = match self.running() {
            Some(node) => node.agent.node_id().to_string(),
            None => format!("client-{}", std::process::id()),
        };
        let ledger = self.registry.ledger(frame).await?;
        let options = apiary_ledger::CompactOptions::new(self.write_options(), owner);
        // Compaction reads and writes cells: it takes a bee like a query.
        let _bee = self.work_bee().await;
        Ok(apiary_ledger::compact(&ledger, self.registry.backend().as_ref(), &options).await?)
    }

    /// While the node runs: every `interval`, when its colony is cold, compacts the frames
    /// it wrote to since their last compaction.
    pub(crate) fn spawn_compactor(
        &self,
        colony: Arc<apiary_swarm::Colony>,
        node_id: String,
        interval: std::time::Duration,
        mut stop: watch::Receiver<bool>,
    ) {
        let ap = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    biased;
                    _ = stop.changed() => break,
                    _ = apiary_storage::time::sleep(interval) => {}
                }
                if colony.regulation() != apiary_swarm::Regulation::Cold {
                    continue;
                }
                let mut frames: Vec<FrameRef> = ap
                    .written
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .drain()
                    .collect();
                while let Some(frame) = frames.pop() {
                    if colony.regulation() != apiary_swarm::Regulation::Cold {
                        // Busy again: the rest waits for the next cold spell.
                        frames.push(frame);
                        ap.written
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .extend(frames);
                        break;
                    }
                    match ap.compact_frame(&frame).await {
                        Ok(done) if done.conflicts > 0 || done.lease_held_elsewhere => {
                            ap.written
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .insert(frame);
                        }
                        Ok(done) if done.commits > 0 => {
                            tracing::info!(node = %node_id, %frame, cells_removed = done.cells_removed, cells_added = done.cells_added, "compacted");
                        }
                        Ok(_) => {}
                        Err(e) => tracing::warn!(%frame, error = %e, "compaction failed"),
                    }
                }
            }
        });
    }

    /// Deletes the frame's cell files that nothing can need: unreferenced by the newest
    /// version, not removed within `retention` (default 1 hour), and older than it, on the
    /// store's clock. A retention shorter than a write may take
    /// ([`apiary_ledger::DEFAULT_MAX_WRITE_AGE`]) is refused: it could delete the cells of a
    /// write still uploading.
    pub async fn vacuum(
        &self,
        hive: &str,
        r#box: &str,
        frame: &str,
        retention: Option<std::time::Duration>,
    ) -> Result<apiary_ledger::VacuumResult> {
        let frame = FrameRef::new(hive, r#box, frame)?;
        let ledger = self.registry.ledger(&frame).await?;
        let retention = retention.unwrap_or(std::time::Duration::from_secs(3600));
        let min = self.write_options().max_write_age;
        if retention < min {
            return Err(LedgerError::Invalid(format!(
                "a vacuum retention of {} is shorter than the {} a write may take to commit, \
                 so it could delete the cells of a write still in flight; use a retention of \
                 at least {}",
                humantime::format_duration(retention),
                humantime::format_duration(min),
                humantime::format_duration(min)
            ))
            .into());
        }
        Ok(apiary_ledger::vacuum(&ledger, self.registry.backend().as_ref(), retention).await?)
    }
}
