//! SQL: the [`Apiary`] methods that answer queries, and the engine they share.

use std::sync::Arc;

use apiary_ledger::{FrameRef, LedgerError};
use apiary_query::datafusion::execution::SendableRecordBatchStream;
use apiary_query::distributed::Cluster;
use apiary_query::{QueryEngine, QueryOptions, QueryResult, SqlSession};
use arrow_array::RecordBatch;

use crate::cluster::SwarmDirectory;
use crate::{Apiary, MembershipRole, Result, tier_limits};

impl Apiary {
    /// The node's SQL engine, prepared on first use: one scan partition per bee.
    pub(crate) fn query_engine(&self) -> Result<&QueryEngine> {
        if let Some((engine, _)) = self.query.get() {
            return Ok(engine);
        }
        let capacity = apiary_swarm::detect_capacity(None);
        let (memory_tier, memory_budget) = tier_limits(self.memory_tier, &capacity);
        let directory = Arc::new(SwarmDirectory::new(
            Arc::clone(&self.node),
            self.membership_for(MembershipRole::Observer { swarm: &self.swarm }),
            Arc::clone(&self.registry.config().clock),
            Arc::clone(&self.transport),
        ));
        if let Some(flight) = &self.flight {
            flight.peers.set(Arc::clone(&directory));
        }
        let engine = QueryEngine::new(
            Arc::clone(&self.registry),
            QueryOptions {
                target_partitions: capacity.bees as usize,
                memory_limit: self.query_memory,
                memory_tier,
                memory_budget,
                ..QueryOptions::default()
            },
        )?
        .with_distribute(self.distribute_mode);
        let cluster = Cluster::new(
            Arc::clone(&self.transport),
            directory,
            self.distribute.clone(),
        )
        .with_time(
            Arc::clone(&self.registry.config().clock),
            self.registry.config().random.clone(),
        );
        let engine = engine.with_distributor(Arc::new(cluster.clone()));
        // A racing first call may have set it; either engine is equivalent.
        Ok(&self.query.get_or_init(|| (engine, cluster)).0)
    }

    /// Runs SQL (one or more `;`-separated statements; the last one's rows are returned)
    /// over `hive.box.frame` names in a session of its own, so a `USE` lasts for the rest
    /// of this text only. Read-only: DDL, DML and file access are refused with the API call
    /// to use instead.
    pub async fn sql(&self, query: &str) -> Result<QueryResult> {
        Ok(self.query_engine()?.sql(query).await?)
    }

    /// [`sql`](Self::sql), with the last statement's rows streamed as they are produced
    /// instead of collected: memory stays bounded by what the consumer holds, and the
    /// first rows arrive before the query ends. Dropping the stream cancels the query.
    pub async fn sql_stream(&self, query: &str) -> Result<SendableRecordBatchStream> {
        Ok(self.sql_session()?.sql_stream(query).await?)
    }

    /// [`sql`](Self::sql), with the rows as one Arrow IPC stream (what
    /// `pyarrow.ipc.open_stream` reads).
    pub async fn sql_ipc(&self, query: &str) -> Result<Vec<u8>> {
        Ok(self.sql(query).await?.to_ipc_stream()?)
    }

    /// The SQL statements running on this node now, oldest first (what the console's
    /// `GET /api/v1/queries` and `apiary.system.queries` list).
    pub fn running_queries(&self) -> Vec<apiary_query::running::RunningQuery> {
        self.query
            .get()
            .map(|(engine, _)| engine.running().list())
            .unwrap_or_default()
    }

    /// Asks the running statement `id` to stop, on behalf of `by` (named in its error);
    /// false when no statement `id` runs here.
    pub fn cancel_query(&self, id: &str, by: &str) -> bool {
        self.query
            .get()
            .is_some_and(|(engine, _)| engine.running().cancel(id, by))
    }

    /// A SQL session: `USE` and `SET` in it last until it is dropped.
    pub fn sql_session(&self) -> Result<SqlSession> {
        Ok(self.query_engine()?.session())
    }

    /// Reads a frame at its newest version; with `partition_filter`, only the cells whose
    /// partition columns have exactly these values (`("country", "us")`).
    pub async fn read_from_frame(
        &self,
        hive: &str,
        r#box: &str,
        frame: &str,
        partition_filter: &[(&str, &str)],
    ) -> Result<Vec<RecordBatch>> {
        self.read_from_frame_at(hive, r#box, frame, None, partition_filter)
            .await
    }

    /// [`read_from_frame`](Self::read_from_frame) at `version` (`None`: the newest), as
    /// `SELECT * FROM f VERSION AS OF n` reads it. A version past vacuum's retention is
    /// refused, naming the oldest retained one.
    pub async fn read_from_frame_at(
        &self,
        hive: &str,
        r#box: &str,
        frame: &str,
        version: Option<u64>,
        partition_filter: &[(&str, &str)],
    ) -> Result<Vec<RecordBatch>> {
        let frame = FrameRef::new(hive, r#box, frame)?;
        let ledger = self.registry.ledger(&frame).await?;
        let filter: Vec<(String, String)> = partition_filter
            .iter()
            .map(|(c, v)| (c.to_string(), v.to_string()))
            .collect();
        Ok(apiary_ledger::read_batches_at(
            &ledger,
            self.registry.backend().as_ref(),
            version,
            &filter,
        )
        .await?)
    }

    /// Every commit of a frame, oldest first (what `apiary.history('h.b.f')` answers in
    /// SQL and `apiary history` prints).
    pub async fn frame_history(
        &self,
        hive: &str,
        r#box: &str,
        frame: &str,
    ) -> Result<Vec<apiary_ledger::Commit>> {
        let frame = FrameRef::new(hive, r#box, frame)?;
        let ledger = self.registry.ledger(&frame).await?;
        let commits = ledger.history().await?;
        if commits.is_empty() {
            return Err(LedgerError::NotFound {
                what: format!("frame `{frame}`"),
            }
            .into());
        }
        Ok(commits)
    }
}
