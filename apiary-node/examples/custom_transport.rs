//! A custom node binary with a shuffle transport of its own.
//!
//! `ChannelShuffle` keeps tasks and results in process memory instead of storage: the
//! smallest transport that keeps the contract (see `apiary_shuffle::transport`), and a
//! starting point for trying others (Arrow Flight, a message queue). It pushes tasks (a
//! node's worker wakes as soon as its tasks are published, with no poll interval) and keeps
//! the trait's default result writer (a task's rows published whole when it ends; a
//! streaming transport overrides `open_result` and `read_chunk`). This program checks it
//! with the transport conformance suite, then composes two nodes from parts (one in-memory
//! storage, the default heartbeats, this transport), runs a query distributed over both and
//! checks the answer against a local run.
//!
//! Run: `cargo run -p apiary-node --example custom_transport`

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apiary::apiary_shuffle::Result;
use apiary::apiary_shuffle::{
    Delivered, ShuffleTransport, TaskKey, TaskOutcome, TaskReport, TaskSpec, conformance,
};
use apiary::apiary_storage::{self, StorageUri};
use apiary::apiary_swarm::SwarmConfig;
use apiary::{Apiary, ApiaryOptions, NodeOptions};
use arrow_array::{Int64Array, RecordBatch, StringArray};
use async_trait::async_trait;

#[derive(Default)]
struct Query {
    tasks: Vec<TaskSpec>,
    outcomes: HashMap<TaskKey, (TaskOutcome, TaskReport)>,
    /// Shared cells' holders, by attempt round and cell.
    claims: HashMap<(u32, String), u32>,
}

/// Tasks and results in memory, shared by every node of this process. Tasks are pushed:
/// publishing them wakes their node's worker at once (no poll interval).
#[derive(Debug, Default)]
struct ChannelShuffle {
    state: Mutex<State>,
    /// Each node's wake-up (a permit is kept until its worker waits).
    wake: Mutex<HashMap<String, Arc<tokio::sync::Notify>>>,
}

impl ChannelShuffle {
    fn wake_of(&self, node_id: &str) -> Arc<tokio::sync::Notify> {
        let mut wake = self.wake.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(wake.entry(node_id.to_string()).or_default())
    }
}

#[derive(Default)]
struct State {
    queries: HashMap<String, Query>,
    /// Tasks already handed to each node.
    handed: HashMap<String, HashSet<TaskKey>>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} queries", self.queries.len())
    }
}

#[async_trait]
impl ShuffleTransport for ChannelShuffle {
    async fn publish_tasks(
        &self,
        query_id: &str,
        _coordinator: &str,
        tasks: &[TaskSpec],
    ) -> Result<()> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let query = state.queries.entry(query_id.to_string()).or_default();
        query.tasks.extend(tasks.iter().cloned());
        drop(state);
        for task in tasks {
            self.wake_of(&task.node_id).notify_one();
        }
        Ok(())
    }

    async fn tasks_arrived(&self, node_id: &str) {
        self.wake_of(node_id).notified().await
    }

    fn pushes_tasks(&self) -> bool {
        true
    }

    fn pushed(&self, _task: &TaskKey) -> bool {
        true
    }

    async fn poll_tasks(&self, node_id: &str) -> Result<Vec<TaskSpec>> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mine: Vec<TaskSpec> = state
            .queries
            .values()
            .flat_map(|q| q.tasks.iter())
            .filter(|t| t.node_id == node_id)
            .cloned()
            .collect();
        let handed = state.handed.entry(node_id.to_string()).or_default();
        Ok(mine
            .into_iter()
            .filter(|t| handed.insert(t.key()))
            .collect())
    }

    async fn publish_outcome(
        &self,
        task: &TaskSpec,
        outcome: TaskOutcome,
        report: &TaskReport,
    ) -> Result<()> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(query) = state.queries.get_mut(&task.query_id) {
            query
                .outcomes
                .entry(task.key())
                .or_insert((outcome, report.clone()));
        }
        Ok(())
    }

    fn can_claim(&self) -> bool {
        true
    }

    async fn claim(&self, task: &TaskKey, cell: &str) -> Result<bool> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let query = state.queries.entry(task.query_id.clone()).or_default();
        let holder = query
            .claims
            .entry((task.attempt, cell.to_string()))
            .or_insert(task.task_id);
        Ok(*holder == task.task_id)
    }

    async fn collect(&self, query_id: &str, wanted: &[TaskKey]) -> Result<Vec<Delivered>> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let Some(query) = state.queries.get(query_id) else {
            return Ok(Vec::new());
        };
        Ok(wanted
            .iter()
            .filter_map(|k| {
                query.outcomes.get(k).map(|(outcome, report)| Delivered {
                    key: k.clone(),
                    outcome: outcome.clone(),
                    report: report.clone(),
                })
            })
            .collect())
    }

    async fn finish(&self, query_id: &str) -> Result<()> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.queries.remove(query_id);
        for handed in state.handed.values_mut() {
            handed.retain(|k| k.query_id != query_id);
        }
        Ok(())
    }

    async fn sweep(&self, _retention: Duration) -> Result<usize> {
        // Queries live as long as this process; nothing outlives a coordinator here.
        Ok(0)
    }
}

#[tokio::main]
async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let transport: Arc<ChannelShuffle> = Arc::default();
    conformance::run_all(transport.clone()).await;
    println!("ChannelShuffle passes the transport conformance suite");

    let storage = StorageUri::parse("memory://")?;
    let backend = apiary_storage::open(&storage).await?;
    let state = tempfile::tempdir()?;
    let swarm = SwarmConfig {
        heartbeat_interval: Duration::from_millis(100),
        poll_interval: Duration::from_millis(100),
        dead_threshold: Duration::from_secs(2),
        ..SwarmConfig::default()
    };
    let mut nodes = Vec::new();
    for id in ["node-one", "node-two"] {
        let mut options = ApiaryOptions::new(storage.clone());
        options.swarm = swarm.clone();
        let ap = Apiary::builder(options)
            .backend(Arc::clone(&backend))
            .transport(transport.clone())
            .build()
            .await?;
        ap.start_with(NodeOptions {
            node_id: Some(id.into()),
            state_dir: state.path().join(id),
            swarm: swarm.clone(),
            task_poll_interval: Duration::from_millis(20),
            ..NodeOptions::default()
        })
        .await?;
        nodes.push(ap);
    }
    let ap = &nodes[0];
    for _ in 0..100 {
        if ap.swarm_status().await?.alive == 2 {
            break;
        }
        apiary::apiary_storage::time::sleep(Duration::from_millis(50)).await;
    }

    ap.create_hive("demo").await?;
    ap.create_box("demo", "events").await?;
    ap.create_frame(
        "demo",
        "events",
        "clicks",
        &[("id", "int64"), ("country", "utf8")],
        &["country"],
    )
    .await?;
    for country in ["us", "de", "fr", "jp"] {
        let ids: Vec<i64> = (0..1000).collect();
        let batch = RecordBatch::try_from_iter([
            ("id", Arc::new(Int64Array::from(ids)) as _),
            (
                "country",
                Arc::new(StringArray::from(vec![country; 1000])) as _,
            ),
        ])?;
        ap.write_to_frame("demo", "events", "clicks", [batch])
            .await?;
    }
    let sql = "SELECT country, COUNT(*) AS n, SUM(id) AS s FROM demo.events.clicks GROUP BY country ORDER BY country";
    let mut session = ap.sql_session()?;
    session.sql("SET apiary.distribute = 'never'").await?;
    let values = |r: &apiary::QueryResult| -> Vec<String> {
        r.batches()
            .iter()
            .flat_map(|b| b.columns().iter().map(|c| format!("{c:?}")))
            .collect()
    };
    let local = values(&session.sql(sql).await?);
    session.sql("SET apiary.distribute = 'always'").await?;
    let spread = values(&session.sql(sql).await?);
    assert_eq!(local, spread, "the distributed answer equals the local one");
    let plan = session.sql(&format!("EXPLAIN ANALYZE {sql}")).await?;
    let text = format!("{:?}", plan.batches());
    assert!(
        text.contains("node-two") && text.contains("node-one"),
        "tasks ran on both nodes"
    );
    println!(
        "a query distributed over node-one and node-two through ChannelShuffle answered like one node"
    );
    for ap in &nodes {
        ap.shutdown().await?;
    }
    Ok(())
}
