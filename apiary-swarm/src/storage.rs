//! [`StorageHeartbeats`]: membership through heartbeat files in the shared storage.
//!
//! ## Request budget
//!
//! Per node, at the default intervals (heartbeat 5 s, poll 5 s):
//!
//! * 12 PUTs a minute: its heartbeat;
//! * 12 LISTs a minute: one listing of `_heartbeats/` per poll (one page per 1000 nodes);
//! * at most 6 GETs a minute in the steady state, from a token bucket
//!   ([`SwarmConfig::content_reads_per_minute`]): the listing's ETag, size and modification
//!   stamp show liveness without reading the object, and contents are re-read only to refresh
//!   peers' load (nodes whose size changed first, then the stalest). A node seen for the first
//!   time is read at once, outside the budget: joining costs one GET per observer, once.
//! * rare: a HEAD and a DELETE for a heartbeat dead longer than the retention.
//!
//! So at most 30 requests per node per minute, whatever the size of the swarm, up to 1000
//! nodes per listing page.

use std::sync::{Arc, Mutex};

use apiary_storage::{Path, StorageBackend, get_opt};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;

use crate::clock::Clock;
use crate::error::{Result, SwarmError};
use crate::heartbeat::{
    DrainRequest, HEARTBEAT_DIR, HEARTBEAT_FORMAT, Heartbeat, HeartbeatKey, NodeId,
};
use crate::membership::Membership;
use crate::view::{Listed, Observer, SwarmConfig, Token, WorldView};

/// Membership through `_heartbeats/` in the shared storage.
pub struct StorageHeartbeats {
    backend: Arc<dyn StorageBackend>,
    me: NodeId,
    clock: Arc<dyn Clock>,
    config: SwarmConfig,
    observer: Mutex<Observer>,
    view: Mutex<WorldView>,
}

impl std::fmt::Debug for StorageHeartbeats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageHeartbeats")
            .field("storage", &self.backend.to_string())
            .field("node", &self.me)
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Reads `_heartbeats/` once: what is listed, with change tokens.
async fn list_heartbeats(backend: &dyn StorageBackend) -> Result<Vec<Listed>> {
    let listed = backend.list(&Path::from(HEARTBEAT_DIR)).await?;
    Ok(listed
        .into_iter()
        .map(|m| {
            let name = m.key.filename().unwrap_or_default().to_string();
            match HeartbeatKey::parse(&name) {
                Some(HeartbeatKey::Node(id)) => Listed::Node(
                    id,
                    Token {
                        e_tag: m.version.e_tag.clone(),
                        size: m.size,
                        last_modified_ms: m.last_modified_ms,
                    },
                ),
                Some(HeartbeatKey::Drain(id)) => Listed::Drain(id),
                None => Listed::Foreign(m.key.to_string()),
            }
        })
        .collect())
}

/// Fetches and decodes one heartbeat; a damaged one becomes the reason it was skipped.
async fn fetch(backend: &dyn StorageBackend, id: &NodeId) -> Option<Result<Heartbeat, String>> {
    let key = id.heartbeat_key();
    match get_opt(backend, &Path::from(key.as_str())).await {
        Ok(Some(object)) => Some(Heartbeat::decode(&key, &object.bytes, id).map_err(|e| {
            tracing::warn!(error = %e, "skipping a damaged heartbeat");
            e.to_string()
        })),
        // Gone between the listing and the read: the next listing will say so.
        Ok(None) => None,
        Err(e) => {
            tracing::debug!(node = %id, error = %e, "heartbeat read failed; retrying next poll");
            None
        }
    }
}

impl StorageHeartbeats {
    /// Membership of node `me` through `backend`.
    pub fn new(
        backend: Arc<dyn StorageBackend>,
        me: NodeId,
        clock: Arc<dyn Clock>,
        config: SwarmConfig,
    ) -> Self {
        Self {
            observer: Mutex::new(Observer::new(me.clone(), config.clone())),
            view: Mutex::new(WorldView::default()),
            backend,
            me,
            clock,
            config,
        }
    }

    /// Membership for a process that reads the swarm and asks nodes to drain but is not a
    /// node itself (it never publishes a heartbeat unless it joins).
    pub fn observer(
        backend: Arc<dyn StorageBackend>,
        clock: Arc<dyn Clock>,
        config: SwarmConfig,
    ) -> Self {
        let id = NodeId::generate(&apiary_storage::Random::from_os());
        Self::new(backend, id, clock, config)
    }

    async fn remove_expired(&self) {
        let expired = lock(&self.observer).expired(self.clock.monotonic());
        for (id, token) in expired {
            let key = Path::from(id.heartbeat_key().as_str());
            // Only if it is still the heartbeat that died: a node that came back has written
            // a new one. (Storage offers no conditional delete; a node that returns in the
            // instant between these two requests rewrites its heartbeat on its next beat.)
            match self.backend.head(&key).await {
                Ok(meta) if meta.version.e_tag == token.e_tag && meta.size == token.size => {
                    if let Err(e) = self.backend.delete(&key).await {
                        tracing::warn!(node = %id, error = %e, "could not remove a dead heartbeat");
                    } else {
                        tracing::info!(node = %id, "removed the heartbeat of a long-dead node");
                    }
                }
                _ => {}
            }
        }
    }
}

#[async_trait]
impl Membership for StorageHeartbeats {
    async fn join(&self, heartbeat: &Heartbeat) -> Result<()> {
        self.publish(heartbeat).await
    }

    async fn publish(&self, heartbeat: &Heartbeat) -> Result<()> {
        let key = Path::from(self.me.heartbeat_key().as_str());
        self.backend
            .put(&key, Bytes::from(heartbeat.encode()))
            .await?;
        lock(&self.observer).set_own(heartbeat.clone(), self.clock.monotonic());
        Ok(())
    }

    async fn leave(&self) -> Result<()> {
        self.backend
            .delete(&Path::from(self.me.heartbeat_key().as_str()))
            .await?;
        self.backend
            .delete(&Path::from(self.me.drain_key().as_str()))
            .await?;
        Ok(())
    }

    async fn refresh(&self) -> Result<WorldView> {
        let listed = list_heartbeats(self.backend.as_ref()).await?;
        let to_fetch = lock(&self.observer).observe_listing(listed, self.clock.monotonic());
        let backend = self.backend.as_ref();
        let fetched: Vec<(NodeId, Option<Result<Heartbeat, String>>)> =
            futures::stream::iter(to_fetch)
                .map(|id| async move {
                    let content = fetch(backend, &id).await;
                    (id, content)
                })
                .buffer_unordered(8)
                .collect()
                .await;
        {
            let mut observer = lock(&self.observer);
            let now = self.clock.monotonic();
            for (id, content) in fetched {
                if let Some(content) = content {
                    observer.record_content(&id, content, now);
                }
            }
        }
        self.remove_expired().await;
        let view = lock(&self.observer).view(self.clock.monotonic());
        *lock(&self.view) = view.clone();
        Ok(view)
    }

    fn world_view(&self) -> WorldView {
        lock(&self.view).clone()
    }

    async fn request_drain(&self, node: &NodeId, requested_by: &str) -> Result<()> {
        request_drain(
            self.backend.as_ref(),
            node,
            requested_by,
            self.clock.wall_ms(),
        )
        .await
    }

    async fn snapshot(&self) -> Result<WorldView> {
        snapshot(self.backend.as_ref(), &self.config).await
    }
}

/// Writes a drain request for `node`, which must have a heartbeat.
pub(crate) async fn request_drain(
    backend: &dyn StorageBackend,
    node: &NodeId,
    requested_by: &str,
    now_ms: i64,
) -> Result<()> {
    let heartbeat = Path::from(node.heartbeat_key().as_str());
    match backend.head(&heartbeat).await {
        Ok(_) => {}
        Err(e) if e.is_not_found() => return Err(SwarmError::UnknownNode(node.to_string())),
        Err(e) => return Err(e.into()),
    }
    let request = DrainRequest {
        format: HEARTBEAT_FORMAT,
        node_id: node.clone(),
        requested_at_ms: now_ms,
        requested_by: requested_by.to_string(),
    };
    let bytes = serde_json::to_vec(&request).unwrap_or_default();
    backend
        .put(&Path::from(node.drain_key().as_str()), Bytes::from(bytes))
        .await?;
    Ok(())
}

/// A one-shot view for a process that cannot watch heartbeats change (the `apiary swarm`
/// command). Ages are measured on the *store's* clock: a probe object is written and its
/// modification stamp is "now"; a heartbeat's age is that minus its own stamp. No node's
/// clock is involved. Every heartbeat is read.
pub(crate) async fn snapshot(
    backend: &dyn StorageBackend,
    config: &SwarmConfig,
) -> Result<WorldView> {
    let store_now = apiary_storage::store_now(backend).await?;

    let listed = list_heartbeats(backend).await?;
    let mut view = WorldView::default();
    let mut nodes = Vec::new();
    for item in listed {
        match item {
            Listed::Foreign(k) => view.problems.push(format!(
                "`{k}` is not a heartbeat or drain request; ignored"
            )),
            Listed::Drain(_) => {}
            Listed::Node(id, token) => match fetch(backend, &id).await {
                Some(Ok(hb)) => {
                    let age_ms = store_now.saturating_sub(token.last_modified_ms).max(0);
                    nodes.push((id, hb, std::time::Duration::from_millis(age_ms as u64)));
                }
                Some(Err(problem)) => view.problems.push(problem),
                None => {}
            },
        }
    }
    for (id, heartbeat, age) in nodes {
        use crate::heartbeat::Lifecycle;
        use crate::view::NodeState;
        let state = if age > config.dead_threshold {
            NodeState::Dead
        } else if age > config.dead_threshold / 2 {
            NodeState::Suspect
        } else {
            match heartbeat.state {
                // Its first heartbeat is durable and fresh on the store's clock: it joined.
                Lifecycle::Joining | Lifecycle::Alive => NodeState::Alive,
                Lifecycle::Leaving => NodeState::Leaving,
            }
        };
        view.nodes.push(crate::view::NodeView {
            node_id: id,
            state,
            last_seen: age,
            heartbeat,
        });
    }
    view.polls = 1;
    Ok(view)
}
