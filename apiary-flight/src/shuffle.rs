//! [`FlightShuffle`]: the hybrid transport. Tasks for nodes whose Flight port this process
//! can reach are pushed over Flight and their results stream back on the same exchange;
//! every other pair (no address, a refused or timed-out handshake, a link that broke) goes
//! through the storage shuffle, in the same query.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apiary_shuffle::{
    Delivered, Result, ResultWriter, ShuffleError, ShuffleTransport, StorageShuffle, TaskKey,
    TaskOutcome, TaskReport, TaskSpec,
};
use apiary_storage::{ErrorKind, StorageBackend};
use arrow_array::RecordBatch;
use arrow_flight::FlightData;
use arrow_schema::SchemaRef;
use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;
use tonic::transport::{Identity, ServerTlsConfig};

use crate::auth::{FlightKey, SwarmKey};
use crate::client::{Links, insert_proof};
use crate::config::{FlightConfig, Peers};
use crate::coordinator::Coordinator;
use crate::server::{FlightServer, Service};
use crate::wire::{Ending, ToCoordinator, ToWorker, message, parse};
use crate::worker::{Inbox, lock};
use crate::writer::FlightWriter;

/// Arrow Flight between nodes that can reach each other, the storage shuffle between those
/// that cannot (see the crate docs).
pub struct FlightShuffle {
    storage: Arc<dyn ShuffleTransport>,
    peers: Arc<dyn Peers>,
    config: FlightConfig,
    key: Arc<SwarmKey>,
    links: Arc<Links>,
    inbox: Arc<Inbox>,
    coordinator: Arc<Coordinator>,
    /// Queries this process's workers took tasks of from storage (bounded, oldest
    /// forgotten): only those can have outcomes of theirs to tidy there.
    stored: Mutex<(HashSet<String>, std::collections::VecDeque<String>)>,
}

/// Queries remembered in [`FlightShuffle::stored`].
const REMEMBERED_QUERIES: usize = 4096;

impl std::fmt::Debug for FlightShuffle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlightShuffle")
            .field("storage", &self.storage)
            .field("peers", &self.peers)
            .finish_non_exhaustive()
    }
}

impl FlightShuffle {
    /// Flight where `peers` name an address, the storage shuffle over `backend` elsewhere.
    pub fn new(backend: Arc<dyn StorageBackend>, peers: Arc<dyn Peers>) -> Self {
        Self::with_config(backend, peers, FlightConfig::default())
    }

    /// As [`FlightShuffle::new`], configured.
    pub fn with_config(
        backend: Arc<dyn StorageBackend>,
        peers: Arc<dyn Peers>,
        config: FlightConfig,
    ) -> Self {
        let links = Arc::new(Links::new(
            Arc::clone(&config.clock),
            config.connect_timeout,
            config.retry_after,
            config.tls.clone(),
        ));
        Self {
            storage: Arc::new(StorageShuffle::new(Arc::clone(&backend))),
            key: Arc::new(SwarmKey::new(backend)),
            peers,
            coordinator: Arc::new(Coordinator::new(config.memory_bytes)),
            config,
            links,
            inbox: Arc::default(),
            stored: Mutex::default(),
        }
    }

    /// The swarm's Flight key, read (or made) once.
    async fn key(&self) -> Result<&FlightKey> {
        self.key.get().await
    }

    /// Serves this process's Flight port on `address` (port 0 picks one; see
    /// [`FlightServer::local_addr`]): tasks pushed to it reach this process's workers.
    pub async fn serve(&self, address: SocketAddr) -> Result<FlightServer> {
        let key = self.key().await?.clone();
        let listener = tokio::net::TcpListener::bind(address).await.map_err(|e| {
            ShuffleError::failed(
                format!("cannot serve Flight on {address}: {e} (is the port taken, or not this machine's?)"),
                ErrorKind::InvalidInput,
                e,
            )
        })?;
        let tls = self.server_tls(address)?;
        FlightServer::spawn(
            listener,
            Service {
                key,
                inbox: Arc::clone(&self.inbox),
            },
            tls,
        )
        .map_err(|e| {
            ShuffleError::failed(
                format!("cannot serve Flight on {address}: {e}"),
                ErrorKind::InvalidInput,
                e,
            )
        })
    }

    /// The port's TLS, when configured: a certificate and its key are then required.
    fn server_tls(&self, address: SocketAddr) -> Result<Option<ServerTlsConfig>> {
        let Some(tls) = &self.config.tls else {
            return Ok(None);
        };
        let (Some(certificate), Some(key)) = (&tls.certificate, &tls.private_key) else {
            return Err(ShuffleError::Invalid(format!(
                "cannot serve Flight on {address} with TLS: a port serving TLS needs both a \
                 certificate and its private key (--flight-tls-cert and --flight-tls-key)"
            )));
        };
        Ok(Some(
            ServerTlsConfig::new().identity(Identity::from_pem(certificate, key)),
        ))
    }

    /// The address to push `node`'s tasks to, if Flight is worth trying.
    fn route(&self, node: &str) -> Option<String> {
        let address = self.peers.flight_address(node)?;
        (!self.links.failed_recently(node)).then_some(address)
    }

    /// Opens `task`'s exchange with the node at `address`; returns once the node queued it.
    /// A connection that went stale (the node restarted on the same address) is replaced
    /// once before the node is given up.
    async fn open(
        &self,
        address: &str,
        task: &TaskSpec,
        claims_here: bool,
    ) -> std::result::Result<(mpsc::Sender<FlightData>, tonic::Streaming<FlightData>), String> {
        match self.open_once(address, task, claims_here).await {
            Ok(opened) => Ok(opened),
            Err(first) => self
                .open_once(address, task, claims_here)
                .await
                .map_err(|again| format!("{first}; on a new connection: {again}")),
        }
    }

    async fn open_once(
        &self,
        address: &str,
        task: &TaskSpec,
        claims_here: bool,
    ) -> std::result::Result<(mpsc::Sender<FlightData>, tonic::Streaming<FlightData>), String> {
        let key = self.key().await.map_err(|e| e.to_string())?;
        let mut client = self.links.client(address, key).await?;
        let body = task.encode().map_err(|e| e.to_string())?;
        let (tx, rx) = mpsc::channel::<FlightData>(16);
        let first = message(
            &ToWorker::Task {
                claims_here,
                lz4: self.config.lz4,
            },
            Bytes::from(body),
        );
        tx.try_send(first)
            .map_err(|_| "the exchange closed at once".to_string())?;
        let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        insert_proof(&mut request, &self.links.proof(key))?;
        let opened = async {
            let mut stream = client
                .do_exchange(request)
                .await
                .map_err(|s| format!("node at {address} refused the task: {}", s.message()))?
                .into_inner();
            match stream.message().await {
                Ok(Some(data))
                    if matches!(parse::<ToCoordinator>(&data), Ok(ToCoordinator::Accepted)) =>
                {
                    Ok(stream)
                }
                Ok(_) => Err(format!("node at {address} did not accept the task")),
                Err(s) => Err(format!(
                    "node at {address} failed the task's exchange: {}",
                    s.message()
                )),
            }
        };
        let limit = self.config.connect_timeout * 5;
        match apiary_storage::time::timeout(self.config.clock.as_ref(), limit, opened).await {
            Ok(Ok(stream)) => Ok((tx, stream)),
            Ok(Err(e)) => {
                self.links.forget(address);
                Err(e)
            }
            Err(_) => {
                self.links.forget(address);
                Err(format!("node at {address} did not accept the task in time"))
            }
        }
    }

    /// Marks the query as having used storage.
    fn used_storage(&self, query_id: &str) {
        lock(&self.coordinator.query_or_new(query_id).state).used_storage = true;
    }

    /// Removes what a query this process does not coordinate left in storage, once its
    /// coordinator removed it there (its query object is gone). A worker asks this after a
    /// task of it went unwanted; over Flight that only means that one exchange ended, while
    /// the query may still run, its later attempts in storage: those are left alone.
    async fn tidy_elsewhere(&self, query_id: &str) -> Result<()> {
        if !lock(&self.stored).0.contains(query_id) {
            // This worker took nothing of it from storage, so it left nothing there; and
            // the query may not have reached storage yet.
            return Ok(());
        }
        let probe = TaskKey {
            query_id: query_id.to_string(),
            task_id: 0,
            attempt: 0,
        };
        if self.storage.wanted(&probe).await? {
            return Ok(());
        }
        self.storage.cancel(query_id).await
    }

    /// Whether the storage holds anything of the query (or may: a query this process does
    /// not know, such as another process's).
    fn storage_has(&self, query_id: &str) -> bool {
        self.coordinator
            .query(query_id)
            .is_none_or(|q| lock(&q.state).used_storage)
    }
}

#[async_trait]
impl ShuffleTransport for FlightShuffle {
    async fn publish_tasks(
        &self,
        query_id: &str,
        coordinator: &str,
        tasks: &[TaskSpec],
    ) -> Result<()> {
        apiary_shuffle::manifest::validate_query_id(query_id)?;
        // Which nodes take Flight: those with an address whose link opens (links to new
        // nodes are opened at once, not one after another).
        let mut nodes: Vec<&str> = tasks.iter().map(|t| t.node_id.as_str()).collect();
        nodes.sort_unstable();
        nodes.dedup();
        let routes: Vec<(&str, String)> = nodes
            .into_iter()
            .filter_map(|n| Some((n, self.route(n)?)))
            .collect();
        let linked = if routes.is_empty() {
            Vec::new()
        } else {
            let key = self.key().await?;
            let links = &self.links;
            futures::future::join_all(routes.into_iter().map(|(node, address)| async move {
                links
                    .reach(node, &address, key)
                    .await
                    .then(|| (node.to_string(), address))
            }))
            .await
        };
        let reachable: HashMap<String, String> = linked.into_iter().flatten().collect();
        let (flight, stored): (Vec<&TaskSpec>, Vec<&TaskSpec>) = tasks
            .iter()
            .partition(|t| reachable.contains_key(&t.node_id));
        let query = self.coordinator.query_or_new(query_id);
        // A round's claims are arbitrated here only when every task of it is reachable:
        // never some in memory and some in storage.
        let claims_here = stored.is_empty();
        {
            let mut st = lock(&query.state);
            for t in &flight {
                if claims_here {
                    st.memory_rounds.insert(t.attempt);
                }
            }
            if !stored.is_empty() {
                st.used_storage = true;
            }
        }
        if !stored.is_empty() {
            let stored: Vec<TaskSpec> = stored.into_iter().cloned().collect();
            self.storage
                .publish_tasks(query_id, coordinator, &stored)
                .await?;
            for t in &stored {
                self.inbox.ring(&t.node_id);
            }
        }
        let reachable = &reachable;
        let opened = futures::future::join_all(flight.iter().map(|&t| async move {
            let address = &reachable[&t.node_id];
            (t, self.open(address, t, claims_here).await)
        }))
        .await;
        for (t, opened) in opened {
            match opened {
                Ok((tx, stream)) => {
                    let links = Arc::clone(&self.links);
                    self.coordinator.track(
                        &query,
                        t.key(),
                        t.node_id.clone(),
                        tx,
                        stream,
                        move |node: &str| links.mark_failed(node),
                    );
                }
                Err(why) => {
                    tracing::warn!(task = %t.key(), node = %t.node_id, %why, "pushing a task over Flight failed");
                    self.links.mark_failed(&t.node_id);
                    self.coordinator.failed_to_open(
                        &query,
                        t.key(),
                        t.node_id.clone(),
                        format!("{why}; the next attempt goes through storage"),
                    );
                }
            }
        }
        Ok(())
    }

    async fn poll_tasks(&self, node_id: &str) -> Result<Vec<TaskSpec>> {
        let mut tasks = self.inbox.take(node_id);
        if tasks.is_empty() {
            // Woken by Flight, there is no need to look in storage this time; the next
            // regular poll does.
            tasks = self.storage.poll_tasks(node_id).await?;
            let mut stored = lock(&self.stored);
            for t in &tasks {
                if stored.0.insert(t.query_id.clone()) {
                    stored.1.push_back(t.query_id.clone());
                }
            }
            while stored.1.len() > REMEMBERED_QUERIES {
                if let Some(old) = stored.1.pop_front() {
                    stored.0.remove(&old);
                }
            }
        }
        Ok(tasks)
    }

    fn open_result<'a>(
        &'a self,
        task: &'a TaskSpec,
        schema: SchemaRef,
    ) -> Box<dyn ResultWriter + 'a> {
        match self.inbox.session(&task.key()) {
            Some(session) => Box::new(FlightWriter::new(session, schema, self.config.chunk_bytes)),
            None => self.storage.open_result(task, schema),
        }
    }

    async fn read_chunk(&self, query_id: &str, chunk: &str) -> Result<Vec<RecordBatch>> {
        if crate::coordinator::names_chunk(chunk) {
            let query = self.coordinator.query(query_id).ok_or_else(|| {
                ShuffleError::Invalid(format!(
                    "query {query_id} is not running here, so its chunk `{chunk}` is gone"
                ))
            })?;
            return self.coordinator.read_chunk(&query, chunk).await;
        }
        self.storage.read_chunk(query_id, chunk).await
    }

    async fn publish_outcome(
        &self,
        task: &TaskSpec,
        outcome: TaskOutcome,
        report: &TaskReport,
    ) -> Result<()> {
        let key = task.key();
        let Some(session) = self.inbox.session(&key) else {
            if self.inbox.ended(&key) {
                // Its coordinator let go of it over Flight: no one looks in storage for it.
                return Ok(());
            }
            return self.storage.publish_outcome(task, outcome, report).await;
        };
        let ending = match outcome {
            TaskOutcome::Rows(rows) => {
                let mut w = FlightWriter::new(
                    Arc::clone(&session),
                    task.expected_schema()?,
                    self.config.chunk_bytes,
                );
                for b in rows.batches {
                    w.write(b).await?;
                }
                if !rows.chunks.is_empty() {
                    return Err(ShuffleError::Invalid(
                        "a Flight result is written with open_result, not as named chunks".into(),
                    ));
                }
                return Box::new(w).finish(report).await;
            }
            TaskOutcome::Empty => Ending::Empty,
            TaskOutcome::Failed(f) => Ending::failed(&f),
            TaskOutcome::Running => return Ok(()),
        };
        session.end(session.new_writer(), ending, report).await
    }

    async fn tasks_arrived(&self, node_id: &str) {
        tokio::select! {
            biased;
            () = self.inbox.arrived(node_id) => {}
            () = self.storage.tasks_arrived(node_id) => {}
        }
    }

    fn warm(&self, node_ids: &[String]) {
        let targets: Vec<(String, String)> = node_ids
            .iter()
            .filter_map(|node| Some((node.clone(), self.route(node)?)))
            .filter(|(_, address)| !self.links.has(address))
            .collect();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if targets.is_empty() {
            return;
        }
        let (links, key) = (Arc::clone(&self.links), Arc::clone(&self.key));
        runtime.spawn(async move {
            let key = match key.get().await {
                Ok(key) => key,
                Err(e) => {
                    tracing::debug!(error = %e, "no Flight key to open links ahead with");
                    return;
                }
            };
            let links = &links;
            futures::future::join_all(
                targets
                    .iter()
                    .map(|(node, address)| links.reach(node, address, key)),
            )
            .await;
        });
    }

    fn pushes_tasks(&self) -> bool {
        true
    }

    fn pushed(&self, task: &TaskKey) -> bool {
        self.inbox.session(task).is_some()
    }

    fn reports_pickup(&self) -> bool {
        true
    }

    fn can_claim(&self) -> bool {
        self.storage.can_claim()
    }

    async fn claim(&self, task: &TaskKey, cell: &str) -> Result<bool> {
        match self.inbox.session(task) {
            // Pushed over Flight: its round's claims go where its coordinator said.
            Some(session) if session.claims_here => return session.claim(cell).await,
            Some(_) => return self.storage.claim(task, cell).await,
            None if self.inbox.ended(task) => {
                return Err(ShuffleError::failed(
                    format!("task {task}'s Flight exchange is over: it may claim nothing more"),
                    ErrorKind::Unavailable,
                    "flight exchange closed",
                ));
            }
            None => {}
        }
        if let Some(query) = self.coordinator.query(&task.query_id)
            && lock(&query.state).memory_rounds.contains(&task.attempt)
        {
            return Ok(self.coordinator.claim(&query, task, cell));
        }
        // A task this process's worker took from storage, or one its coordinator runs
        // itself: only the latter makes the query's storage this coordinator's to remove.
        if !lock(&self.stored).0.contains(&task.query_id) {
            self.used_storage(&task.query_id);
        }
        self.storage.claim(task, cell).await
    }

    async fn results_arrived(&self, query_id: &str) {
        match self.coordinator.query(query_id) {
            Some(q) => q.arrived.notified().await,
            None => std::future::pending().await,
        }
    }

    fn pushes_results(&self, query_id: &str) -> bool {
        self.coordinator
            .query(query_id)
            .is_some_and(|q| !lock(&q.state).used_storage)
    }

    async fn collect(&self, query_id: &str, wanted: &[TaskKey]) -> Result<Vec<Delivered>> {
        let Some(query) = self.coordinator.query(query_id) else {
            return self.storage.collect(query_id, wanted).await;
        };
        let (mut found, elsewhere) = self.coordinator.collect(&query, wanted);
        if !elsewhere.is_empty() && lock(&query.state).used_storage {
            found.extend(self.storage.collect(query_id, &elsewhere).await?);
        }
        Ok(found)
    }

    async fn renew(&self, query_id: &str, coordinator: &str) -> Result<()> {
        if self.storage_has(query_id) {
            self.storage.renew(query_id, coordinator).await?;
        }
        Ok(())
    }

    async fn wanted(&self, task: &TaskKey) -> Result<bool> {
        if let Some(session) = self.inbox.session(task) {
            return Ok(session.open());
        }
        if self.inbox.ended(task) {
            return Ok(false);
        }
        self.storage.wanted(task).await
    }

    async fn cancel(&self, query_id: &str) -> Result<()> {
        if self.coordinator.remove(query_id).is_none() {
            return self.tidy_elsewhere(query_id).await;
        }
        if self.storage_has(query_id) {
            self.storage.cancel(query_id).await?;
        }
        Ok(())
    }

    async fn finish(&self, query_id: &str) -> Result<()> {
        let Some(query) = self.coordinator.remove(query_id) else {
            return self.tidy_elsewhere(query_id).await;
        };
        if lock(&query.state).used_storage {
            self.storage.finish(query_id).await?;
        }
        Ok(())
    }

    async fn sweep(&self, retention: Duration) -> Result<usize> {
        self.storage.sweep(retention).await
    }
}
