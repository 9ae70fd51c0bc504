//! [`StorageHeartbeats`]: membership through heartbeat files in the shared storage.
//!
//! ```text
//! _heartbeats/node_{id}.json            a node's heartbeat, rewritten on every beat
//! _heartbeats/drain_{id}.json           an operator's request that the node leave
//! _heartbeats/roster_{generation}.json  one change of the swarm: a join, a leave, a wake,
//!                                       a node starting to leave
//! ```
//!
//! ## The roster
//!
//! Listing is the dearest request a store has (S3 prices a LIST like a PUT, twelve times a
//! GET), so an idle swarm does not list every poll. Instead, a node that joins, leaves or
//! wakes (goes from idle to active) creates the roster's next generation, `roster_{n+1}`,
//! by create-if-absent; a node that finds it taken tries the next one. Every node probes
//! for the generation after the newest it knows with one GET: a 404 (a GET's price, no
//! bytes) says nothing changed, and an object says list now and names the node whose
//! heartbeat to read then (outside the content budget: a node that woke is read at once). That is the conditional read
//! of a single roster object (`If-None-Match`) turned into a read of the next name, which
//! every backend supports with the create-if-absent the ledgers already need. A listing
//! tells the newest generation; the creator of generation `n` deletes `n − 64`.
//!
//! ## Request budget
//!
//! Per node, at the default settings ([`SwarmConfig`]):
//!
//! * **Idle swarm** (no node has worked for a minute): a heartbeat PUT a minute, a roster
//!   probe (GET) every 5 s, a listing every 5 minutes as a safety net, and about one content
//!   GET per listing. At S3 Standard prices that is about $0.48 a month, whatever the size
//!   of the swarm up to 1000 nodes per listing page (`simulation` measures it).
//! * **Active swarm**: 12 heartbeat PUTs and 12 listings a minute, and at most 6 content
//!   GETs a minute in the steady state, from a token bucket
//!   ([`SwarmConfig::content_reads_per_minute`]): the listing's ETag, size and modification
//!   stamp show liveness without reading the object, and contents are re-read only to
//!   refresh peers' load (nodes whose size changed first, then the stalest). A node about
//!   to be judged suspect on content older than its heartbeat is re-read outside the
//!   budget (it may have gone idle and promised a slower cadence). A node seen for the
//!   first time is read at once, outside the budget: joining costs one GET per observer,
//!   once.
//! * rare: a HEAD and a DELETE for a heartbeat dead longer than the retention; a
//!   create-if-absent and a GET per node for each join, leave or wake.

use std::sync::{Arc, Mutex};

use apiary_storage::{CreateOutcome, Path, StorageBackend, get_opt};
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
    roster: Mutex<Roster>,
}

/// What this member knows of the roster.
#[derive(Debug, Default)]
struct Roster {
    /// The newest generation seen or created.
    generation: u64,
    /// Whether this node's last published heartbeat said it was active.
    active: Option<bool>,
    /// Whether this node announced that it is leaving.
    leaving: bool,
    /// Nodes the roster said joined or woke since the last listing: their heartbeats are
    /// read at the next listing, outside the content budget (a woken node's new cadence
    /// is what makes this member list at the active cadence again).
    changed: Vec<NodeId>,
}

/// Generations a probe reads forward at most before leaving the rest to the listing.
const PROBE_FORWARD: u64 = 16;

/// Generations kept behind the newest: a member further behind than this learns of the
/// change at its next safety listing.
const ROSTER_KEPT: u64 = 64;

/// Attempts at creating the next generation before giving up (the change is then seen at
/// the next listing).
const ROSTER_ATTEMPTS: u64 = 32;

fn roster_key(generation: u64) -> Path {
    Path::from(format!("{HEARTBEAT_DIR}/roster_{generation:020}.json").as_str())
}

/// One change of the swarm, as stored in a roster generation.
#[derive(Debug, serde::Serialize)]
struct RosterEvent<'a> {
    format: u32,
    event: &'a str,
    node_id: &'a NodeId,
    at_ms: i64,
}

/// What a member reads of a roster generation: whose change it was (anything else in it is
/// for people).
#[derive(Debug, serde::Deserialize)]
struct RosterChange {
    node_id: NodeId,
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

/// Reads `_heartbeats/` once: what is listed, with change tokens, and the newest roster
/// generation.
async fn list_heartbeats(backend: &dyn StorageBackend) -> Result<(Vec<Listed>, u64)> {
    let listed = backend.list(&Path::from(HEARTBEAT_DIR)).await?;
    let mut generation = 0;
    let listed = listed
        .into_iter()
        .filter_map(|m| {
            let name = m.key.filename().unwrap_or_default().to_string();
            Some(match HeartbeatKey::parse(&name) {
                Some(HeartbeatKey::Roster(g)) => {
                    generation = generation.max(g);
                    return None;
                }
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
            })
        })
        .collect();
    Ok((listed, generation))
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
            roster: Mutex::new(Roster::default()),
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
        let id = NodeId::generate(&apiary_storage::Random::process());
        Self::new(backend, id, clock, config)
    }

    fn saw_generation(&self, generation: u64) {
        let mut roster = lock(&self.roster);
        roster.generation = roster.generation.max(generation);
    }

    /// Learns the roster's newest generation from a listing (what a member that never read
    /// the roster must do before recording a change after it).
    async fn find_roster_end(&self) -> Result<()> {
        let (_, generation) = list_heartbeats(self.backend.as_ref()).await?;
        self.saw_generation(generation);
        Ok(())
    }

    /// Records a change of the swarm as the roster's next generation, naming `node` (this
    /// member, or the node asked to drain). Best effort: a change not recorded is seen at
    /// peers' next listing.
    async fn announce(&self, event: &str, node: &NodeId) {
        let bytes = Bytes::from(
            serde_json::to_vec(&RosterEvent {
                format: HEARTBEAT_FORMAT,
                event,
                node_id: node,
                at_ms: self.clock.wall_ms(),
            })
            .unwrap_or_default(),
        );
        let known = lock(&self.roster).generation;
        let mut generation = known;
        for _ in 0..ROSTER_ATTEMPTS {
            generation += 1;
            match self
                .backend
                .put_if_absent(&roster_key(generation), bytes.clone())
                .await
            {
                Ok(CreateOutcome::Created(_)) => {
                    // Generations other members took meanwhile are unread: this member's
                    // next probe or listing walks them (and its own, harmlessly).
                    if generation == known + 1 {
                        self.saw_generation(generation);
                    }
                    if generation > ROSTER_KEPT {
                        let old = roster_key(generation - ROSTER_KEPT);
                        if let Err(e) = self.backend.delete(&old).await {
                            tracing::debug!(error = %e, "could not remove an old roster generation");
                        }
                    }
                    return;
                }
                // Another member's change took this generation: try the next.
                Ok(_) => continue,
                Err(e) => {
                    tracing::debug!(error = %e, event, "could not record a change in the roster; peers see it at their next listing");
                    return;
                }
            }
        }
        tracing::debug!(
            event,
            "the roster moved on too fast to record a change; peers see it at their next listing"
        );
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
        self.publish(heartbeat).await?;
        // The join is recorded after the roster's newest generation.
        self.find_roster_end().await?;
        self.announce("join", &self.me).await;
        Ok(())
    }

    async fn publish(&self, heartbeat: &Heartbeat) -> Result<()> {
        let key = Path::from(self.me.heartbeat_key().as_str());
        self.backend
            .put(&key, Bytes::from(heartbeat.encode()))
            .await?;
        lock(&self.observer).set_own(heartbeat.clone(), self.clock.monotonic());
        let active = heartbeat.is_active();
        let (woke, leaving) = {
            let mut roster = lock(&self.roster);
            let woke = roster.active.replace(active) == Some(false) && active;
            let leaving = heartbeat.state == crate::heartbeat::Lifecycle::Leaving
                && !std::mem::replace(&mut roster.leaving, true);
            (woke, leaving)
        };
        if leaving {
            // Members read this heartbeat at once, idle or not: they stop sending the node
            // work and show it leaving before it is gone.
            self.announce("leaving", &self.me).await;
        } else if woke {
            // Idle members list the swarm again and follow this node's cadence.
            self.announce("wake", &self.me).await;
        }
        Ok(())
    }

    async fn leave(&self) -> Result<()> {
        self.backend
            .delete(&Path::from(self.me.heartbeat_key().as_str()))
            .await?;
        self.backend
            .delete(&Path::from(self.me.drain_key().as_str()))
            .await?;
        self.announce("leave", &self.me).await;
        Ok(())
    }

    async fn probe(&self) -> Result<bool> {
        let known = lock(&self.roster).generation;
        let mut next = known + 1;
        // Each new generation names a node whose heartbeat the next listing reads; a 404
        // ends the walk (and, at the first, says nothing changed).
        while next <= known + PROBE_FORWARD {
            match get_opt(self.backend.as_ref(), &roster_key(next)).await? {
                Some(object) => {
                    if let Ok(change) = serde_json::from_slice::<RosterChange>(&object.bytes) {
                        lock(&self.roster).changed.push(change.node_id);
                    }
                    next += 1;
                }
                None => break,
            }
        }
        if next == known + 1 {
            return Ok(false);
        }
        self.saw_generation(next - 1);
        Ok(true)
    }

    async fn refresh(&self) -> Result<WorldView> {
        let (listed, generation) = list_heartbeats(self.backend.as_ref()).await?;
        // Generations created since the last probe or listing name nodes that joined,
        // woke or began to leave: their heartbeats are read now, outside the budget (one GET
        // per change, and none while nothing changes).
        let known = lock(&self.roster).generation;
        let first = (known + 1).max(generation.saturating_sub(PROBE_FORWARD) + 1);
        for next in first..=generation {
            if let Ok(Some(object)) = get_opt(self.backend.as_ref(), &roster_key(next)).await
                && let Ok(change) = serde_json::from_slice::<RosterChange>(&object.bytes)
            {
                lock(&self.roster).changed.push(change.node_id);
            }
        }
        self.saw_generation(generation);
        let changed = std::mem::take(&mut lock(&self.roster).changed);
        let mut to_fetch = lock(&self.observer).observe_listing(listed, self.clock.monotonic());
        for id in changed {
            if id != self.me && !to_fetch.contains(&id) {
                to_fetch.push(id);
            }
        }
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
        .await?;
        // An idle node lists the swarm only every idle listing interval, but probes the
        // roster every poll: the request is recorded there so that it drains at once. A
        // process that never read the roster (the `apiary drain` command) learns where it
        // ends first.
        if lock(&self.roster).generation == 0 {
            self.find_roster_end().await?;
        }
        self.announce("drain", node).await;
        Ok(())
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

    let (listed, _) = list_heartbeats(backend).await?;
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
        // Judged by the cadence the heartbeat promises: an idle node beats once a minute.
        let state = if age > heartbeat.dead_after(config.dead_threshold) {
            NodeState::Dead
        } else if age > heartbeat.suspect_after(config.dead_threshold) {
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
