//! A membership held in memory, the test double the facade tests plug in: one `Board` per
//! swarm, one `BoardMember` per process. The board is the authority (as the store is for
//! storage heartbeats): a node's age is the time since it last published, on the board's
//! clock. It passes the Membership conformance suite (see `facade.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apiary::apiary_swarm::{
    Clock, Heartbeat, Lifecycle, Membership, NodeId, NodeState, NodeView, Result, SwarmConfig,
    SwarmError, WorldView,
};

/// One swarm's heartbeats and drain requests.
#[derive(Debug)]
pub struct Board {
    clock: Arc<dyn Clock>,
    config: SwarmConfig,
    state: Mutex<BoardState>,
}

#[derive(Debug, Default)]
struct BoardState {
    /// Each node's newest heartbeat and when it was published.
    nodes: BTreeMap<NodeId, (Heartbeat, Duration)>,
    drains: BTreeSet<NodeId>,
}

impl Board {
    /// An empty swarm judged by `config` on `clock`.
    pub fn new(clock: Arc<dyn Clock>, config: SwarmConfig) -> Arc<Self> {
        Arc::new(Self {
            clock,
            config,
            state: Mutex::default(),
        })
    }

    /// A member of this swarm for node `id`.
    pub fn member(self: &Arc<Self>, id: &str) -> BoardMember {
        BoardMember {
            board: Arc::clone(self),
            me: NodeId::new(id).unwrap(),
            view: Mutex::default(),
        }
    }

    fn view(&self, me: &NodeId) -> WorldView {
        let now = self.clock.monotonic();
        let state = self.state.lock().unwrap();
        let threshold = self.config.dead_threshold;
        let nodes = state
            .nodes
            .iter()
            .map(|(id, (heartbeat, at))| {
                let since = now.saturating_sub(*at);
                // Each node by the cadence its heartbeat promises.
                let threshold = heartbeat.dead_after(threshold);
                let node_state = if since > threshold {
                    NodeState::Dead
                } else if since > threshold / 2 {
                    NodeState::Suspect
                } else if heartbeat.state == Lifecycle::Leaving {
                    NodeState::Leaving
                } else {
                    NodeState::Alive
                };
                NodeView {
                    node_id: id.clone(),
                    state: node_state,
                    last_seen: since,
                    heartbeat: heartbeat.clone(),
                }
            })
            .collect();
        WorldView {
            nodes,
            drain_requested: state.drains.contains(me),
            ..WorldView::default()
        }
    }
}

/// One process's membership on a [`Board`].
#[derive(Debug)]
pub struct BoardMember {
    board: Arc<Board>,
    me: NodeId,
    view: Mutex<WorldView>,
}

#[async_trait::async_trait]
impl Membership for BoardMember {
    async fn join(&self, heartbeat: &Heartbeat) -> Result<()> {
        self.publish(heartbeat).await
    }

    async fn publish(&self, heartbeat: &Heartbeat) -> Result<()> {
        let at = self.board.clock.monotonic();
        let mut state = self.board.state.lock().unwrap();
        state.nodes.insert(self.me.clone(), (heartbeat.clone(), at));
        Ok(())
    }

    async fn leave(&self) -> Result<()> {
        let mut state = self.board.state.lock().unwrap();
        state.nodes.remove(&self.me);
        state.drains.remove(&self.me);
        Ok(())
    }

    async fn refresh(&self) -> Result<WorldView> {
        let mut view = self.board.view(&self.me);
        let mut held = self.view.lock().unwrap();
        view.polls = held.polls + 1;
        *held = view.clone();
        Ok(view)
    }

    fn world_view(&self) -> WorldView {
        self.view.lock().unwrap().clone()
    }

    async fn request_drain(&self, node: &NodeId, _requested_by: &str) -> Result<()> {
        let mut state = self.board.state.lock().unwrap();
        if !state.nodes.contains_key(node) {
            return Err(SwarmError::UnknownNode(node.to_string()));
        }
        state.drains.insert(node.clone());
        Ok(())
    }

    async fn snapshot(&self) -> Result<WorldView> {
        Ok(WorldView {
            drain_requested: false,
            polls: 1,
            ..self.board.view(&self.me)
        })
    }
}
