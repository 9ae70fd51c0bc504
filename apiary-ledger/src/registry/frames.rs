//! The registry's frames: creating, reading, listing and dropping them, and the cache of
//! their open ledgers.

use super::*;

impl super::Registry {
    /// The open ledger of a frame (opened on first use). The frame need not exist; only
    /// ledgers of frames that were ever created are kept open, at most `max_open_ledgers`
    /// of them, so asking for arbitrary names never grows memory.
    pub async fn ledger(&self, frame: &FrameRef) -> Result<Arc<FrameLedger>> {
        if let Some(l) = self.open_ledgers().get(frame) {
            return Ok(Arc::clone(l));
        }
        // Opened without holding the cache lock, so opens of different frames (listing a box)
        // run concurrently; if two callers race on one frame, the first inserted wins.
        let opened = Arc::new(
            FrameLedger::open(
                Arc::clone(&self.backend),
                frame.clone(),
                self.config.clone(),
            )
            .await?,
        );
        if opened.cached().is_none() {
            return Ok(opened);
        }
        let mut ledgers = self.open_ledgers();
        Ok(Arc::clone(
            ledgers.get_or_insert(frame.clone(), || Arc::clone(&opened)),
        ))
    }

    /// The frames whose ledgers are open in the cache, by name, with the state each last
    /// read or committed (no storage request): the frames this process used lately.
    pub fn open_frames(&self) -> Vec<(FrameRef, Option<Arc<crate::FrameState>>)> {
        let mut frames: Vec<_> = self
            .open_ledgers()
            .iter()
            .map(|(frame, ledger)| (frame.clone(), ledger.cached()))
            .collect();
        frames.sort_by_key(|(frame, _)| frame.to_string());
        frames
    }

    /// How many frame ledgers are open in the cache.
    pub fn open_ledger_count(&self) -> usize {
        self.open_ledgers().len()
    }

    fn open_ledgers(&self) -> std::sync::MutexGuard<'_, lru::LruCache<FrameRef, Arc<FrameLedger>>> {
        self.ledgers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Creates a frame in an existing box. Creating an identical frame again is a no-op; a
    /// different definition is an error.
    pub async fn create_frame(
        &self,
        frame: &FrameRef,
        definition: FrameDefinition,
    ) -> Result<Created> {
        definition.validate()?;
        let parent = Chain::r#box(&frame.hive, &frame.r#box);
        let parent_head = match self.live_head(&parent).await {
            Err(LedgerError::NotFound { .. }) => {
                self.get_hive(&frame.hive).await?;
                return Err(LedgerError::NotFound {
                    what: parent.describe(),
                });
            }
            other => other?,
        };
        let ledger = self.ledger(frame).await?;
        ledger.refresh().await?;
        let info = ledger.commit(&Operation::Create(definition)).await?;
        if !info.committed {
            return Ok(Created::Existing);
        }
        if !self.unchanged_since(&parent, parent_head.version).await? {
            match ledger.commit(&Operation::Drop).await {
                Ok(_) | Err(LedgerError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
            return Err(LedgerError::Conflict {
                what: format!("frame `{frame}`"),
                detail: format!(
                    "{} was dropped concurrently; nothing was created",
                    parent.describe()
                ),
            });
        }
        Ok(Created::New)
    }

    /// A frame at its newest version.
    pub async fn get_frame(&self, frame: &FrameRef) -> Result<FrameInfo> {
        let ledger = self.ledger(frame).await?;
        let state = ledger.refresh().await?;
        let live = state
            .as_ref()
            .and_then(|s| s.live.as_ref().map(|l| (s.version, l)));
        match live {
            Some((version, live)) => Ok(FrameInfo {
                name: frame.to_string(),
                version,
                definition: live.definition.clone(),
                cells: live.cells.len(),
                rows: live.rows(),
                bytes: live.bytes(),
            }),
            None => Err(LedgerError::NotFound {
                what: format!("frame `{frame}`"),
            }),
        }
    }

    /// The frames of a box, sorted by name.
    pub async fn list_frames(&self, hive: &str, r#box: &str) -> Result<Vec<FrameInfo>> {
        self.get_box(hive, r#box).await?;
        let dir = Path::from(hive).join(r#box);
        let names = self.child_names(&dir).await?;
        let found: Vec<Option<FrameInfo>> = futures::stream::iter(names)
            .map(|name| async move {
                let frame = FrameRef::new(hive, r#box, &name)?;
                match self.get_frame(&frame).await {
                    Ok(info) => Ok(Some(info)),
                    Err(LedgerError::NotFound { .. }) => Ok(None),
                    Err(e) => Err(e),
                }
            })
            .buffered(16)
            .try_collect()
            .await?;
        Ok(found.into_iter().flatten().collect())
    }

    /// Drops a frame. Its cells stay until vacuumed.
    pub async fn drop_frame(&self, frame: &FrameRef) -> Result<()> {
        self.ledger(frame).await?.commit(&Operation::Drop).await?;
        Ok(())
    }
}
