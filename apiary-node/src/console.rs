//! The node's side of the HTTP console (`apiary node --http ADDR`): what it serves, read
//! from the running node's memory (see [`apiary_console::ConsoleSource`]).

use apiary_console::api;
use apiary_console::{CacheFigures, ConsoleSource, NodeMetrics, QueryFigures, Rows, SqlFailure};
use apiary_swarm::WorldView;
use futures::StreamExt;

use crate::Apiary;

/// The running node as the console sees it.
pub(crate) struct NodeConsole {
    pub(crate) apiary: Apiary,
}

#[async_trait::async_trait]
impl ConsoleSource for NodeConsole {
    fn node_id(&self) -> String {
        self.apiary
            .running()
            .map(|n| n.agent.node_id().to_string())
            .unwrap_or_default()
    }

    fn view(&self) -> Option<WorldView> {
        self.apiary.running().map(|n| n.agent.view())
    }

    fn readiness(&self) -> Result<(), String> {
        let node = self
            .apiary
            .running()
            .ok_or("the node is not running (starting or stopped)")?;
        // Its first heartbeat was written when it joined; a poll shows storage answering.
        if node.agent.view().polls == 0 {
            return Err("the node has not read the swarm from storage yet".into());
        }
        Ok(())
    }

    fn metrics(&self) -> NodeMetrics {
        let node = self.apiary.running();
        let bees = node.as_ref().map(|n| n.bees.states()).unwrap_or_default();
        let tier = self
            .apiary
            .memory_tier()
            .map(|t| CacheFigures {
                bytes: t.bytes,
                hits: t.hits,
                misses: t.misses,
            })
            .unwrap_or_default();
        let coordinator = self.apiary.coordinator_counts();
        let queries = self
            .apiary
            .query_engine()
            .map(|e| {
                let t = e.query_stats();
                QueryFigures {
                    outcomes: t.outcomes,
                    durations: t.durations,
                }
            })
            .unwrap_or_default();
        NodeMetrics {
            storage_requests: self.apiary.registry.backend().request_stats(),
            ledger_commits: self
                .apiary
                .registry
                .config()
                .commits
                .counts()
                .by_outcome()
                .to_vec(),
            bees_busy: bees.iter().filter(|b| b.state == "busy").count() as u64,
            bees: bees.len() as u64,
            temperature: node.as_ref().map_or(0.0, |n| n.colony.temperature()),
            cache: node.as_ref().and_then(|n| n.cache.as_ref()).map(|c| {
                let counts = c.counts();
                CacheFigures {
                    bytes: counts.bytes,
                    hits: counts.hits,
                    misses: counts.misses,
                }
            }),
            memory_tier: tier,
            fragments: coordinator.fragments,
            tasks_given_up: coordinator.tasks_given_up,
            duplicate_reads: coordinator.duplicate_reads,
            splits_reused: coordinator.splits_reused,
            queries,
            tasks: self.apiary.tasks_run(),
        }
    }

    async fn drain(&self, node_id: &str, by: &str) -> Result<(), String> {
        self.apiary
            .drain_node(node_id, by)
            .await
            .map_err(|e| e.to_string())
    }

    fn frames(&self) -> Vec<api::Frame> {
        self.apiary
            .registry
            .open_frames()
            .into_iter()
            .filter_map(|(name, state)| {
                let state = state?;
                let live = state.live.as_ref()?;
                Some(api::Frame {
                    name: name.to_string(),
                    version: state.version,
                    committed_at_ms: state.committed_at_ms,
                    cells: live.cells.len() as u64,
                    rows: live.rows(),
                    bytes: live.bytes(),
                    columns: live
                        .definition
                        .schema
                        .columns
                        .iter()
                        .map(|c| api::Column {
                            name: c.name.clone(),
                            data_type: c.data_type.clone(),
                            nullable: c.nullable,
                        })
                        .collect(),
                    partition_by: live.definition.partition_by.clone(),
                })
            })
            .collect()
    }

    fn queries(&self) -> Vec<api::Query> {
        self.apiary
            .running_queries()
            .into_iter()
            .map(|q| api::Query {
                id: q.id,
                sql: q.sql,
                client: q.client,
                started_ms: q.started_ms,
                elapsed_s: q.elapsed.as_secs_f64(),
                cancelling: q.cancelling,
            })
            .collect()
    }

    fn cancel_query(&self, id: &str, by: &str) -> bool {
        self.apiary.cancel_query(id, by)
    }

    async fn sql(&self, sql: &str) -> Result<Rows, SqlFailure> {
        let failure = |e: crate::ApiaryError| SqlFailure {
            kind: e.kind().as_str(),
            message: e.to_string(),
        };
        let mut session = self.apiary.sql_session().map_err(failure)?;
        session.set_client("api");
        let stream = session
            .sql_stream(sql)
            .await
            .map_err(|e| failure(e.into()))?;
        let schema = stream.schema();
        let batches = stream
            .map(|b| b.map_err(|e| apiary_query::QueryError::from(e).to_string()))
            .boxed();
        Ok(Rows { schema, batches })
    }
}
