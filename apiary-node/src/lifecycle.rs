//! A node's life: starting it (heartbeats, the worker loop, the compactor, the sweeper),
//! draining and shutting it down.

use std::sync::Arc;

use apiary_query::distributed::DistributeMode;
use apiary_swarm::{AgentConfig, Bees, NodeIdentity, SwarmAgent};
use tokio::sync::watch;

use crate::{
    Apiary, ApiaryError, MembershipRole, NodeOptions, Result, RunningNode, admission, open_cache,
    prepare_scratch, spawn_sweeper, tier_limits, worker,
};

impl Apiary {
    /// Joins the swarm with options from the environment (see [`NodeOptions::from_env`]).
    pub async fn start(&self) -> Result<()> {
        self.start_with(NodeOptions::from_env()?).await
    }

    /// Joins the swarm: claims the node id, writes the first heartbeat (durable when this
    /// returns), reads the swarm once, and keeps beating and reading in the background.
    pub async fn start_with(&self, options: NodeOptions) -> Result<()> {
        // A second start waits for the first, then finds it running.
        let _starting = self.starting.lock().await;
        if self.running().is_some() {
            return Err(ApiaryError::Lifecycle("this Apiary is already started"));
        }
        options.validate()?;
        apiary_swarm::check_attributes(&options.attributes).map_err(|message| {
            ApiaryError::Setting {
                name: "APIARY_ATTRIBUTES",
                value: format!("{:?}", options.attributes),
                message,
            }
        })?;
        // The Flight port first: its address goes into the first heartbeat.
        let mut options = options;
        let flight = match &self.flight {
            Some(f) => f.serve().await?,
            None => None,
        };
        if let Some((_, advertised)) = &flight {
            options
                .attributes
                .insert(crate::flight::ATTRIBUTE.to_string(), advertised.clone());
        }
        // The console listens before the node joins (a taken port fails the start); it
        // answers 503 until the node runs.
        let console = match options.http.clone() {
            Some(config) => {
                let source = Arc::new(crate::console::NodeConsole {
                    apiary: self.clone(),
                });
                let console = apiary_console::serve(source, self.tokens(), config)
                    .await
                    .map_err(|e| ApiaryError::Setting {
                        name: "APIARY_HTTP",
                        value: options
                            .http
                            .as_ref()
                            .map(|c| c.addr.to_string())
                            .unwrap_or_default(),
                        message: e.to_string(),
                    })?;
                tracing::info!(url = %format!("http://{}/", console.local_addr()), "console");
                Some(Arc::new(console))
            }
            None => None,
        };
        let identity = NodeIdentity::resolve(options.node_id.as_deref(), &options.state_dir)?;
        let capacity = apiary_swarm::detect_capacity(options.memory_bytes);
        let tier = tier_limits(options.memory_tier_bytes.or(self.memory_tier), &capacity);
        let bees = Bees::with_resident_memory(
            capacity.bees,
            capacity.memory_per_bee_bytes * u64::from(capacity.bees),
            options.resident_memory.clone(),
        );
        let membership = self.membership_for(MembershipRole::Node {
            id: identity.node_id(),
            options: &options,
        });
        let cache = open_cache(identity.node_id(), &options).await?;
        let colony = Arc::new(apiary_swarm::Colony::new(
            Arc::clone(&bees),
            options.colony.clone(),
            Arc::clone(&options.clock),
        ));
        // The heartbeats report the tasks this node's coordinator abandoned.
        let abandoned = {
            self.query_engine()?;
            let tasks = self
                .query
                .get()
                .map(|(_, cluster)| cluster.abandoned.clone())
                .unwrap_or_default();
            Arc::new(move || tasks.count()) as apiary_swarm::AbandonedReport
        };
        let config = AgentConfig {
            swarm: options.swarm.clone(),
            drain_timeout: options.drain_timeout,
            on_view: options.on_view.clone(),
            cache: cache.as_ref().map(|cache| {
                let cache = Arc::clone(cache);
                Arc::new(move || {
                    let counts = cache.counts();
                    apiary_swarm::CacheSummary {
                        cells: counts.cells,
                        bytes: counts.bytes,
                        hot_cells: cache.keys(apiary_swarm::MAX_HOT_CELLS),
                    }
                }) as apiary_swarm::CacheReport
            }),
            colony: Some(Arc::clone(&colony)),
            attributes: options.attributes.clone(),
            abandoned: Some(abandoned),
            requests: {
                let backend = Arc::clone(self.registry.backend());
                Some(Arc::new(move || backend.request_counts()) as apiary_swarm::RequestsReport)
            },
            activity: {
                let query = Arc::clone(&self.query);
                let cache = cache.clone();
                Some(Arc::new(move || {
                    let mut activity = apiary_swarm::history::Activity::default();
                    if let Some((engine, _)) = query.get() {
                        activity.queries = engine.query_stats().durations.count;
                        activity.queries_running = engine.running().len() as u64;
                        (activity.cells_scanned, activity.bytes_scanned) = engine.scanned();
                    }
                    // Without a cache every cell read is a fetch (counted as scanned).
                    activity.cells_fetched = match &cache {
                        Some(cache) => cache.counts().misses,
                        None => activity.cells_scanned,
                    };
                    activity
                }) as apiary_swarm::history::ActivityReport)
            },
            ..AgentConfig::default()
        };
        let clock = Arc::clone(&options.clock);
        let agent = SwarmAgent::start(
            membership,
            identity.node_id().clone(),
            capacity,
            Arc::clone(&bees),
            options.clock,
            config,
        )
        .await?;
        let agent = Arc::new(agent);
        let (stop_worker, stop) = watch::channel(false);
        // Query folders left by coordinators that died are swept at start, then once per
        // retention (and by coordinators as they run queries): on an idle swarm a listing of
        // `_queries/` and one of `_doorbells/` per node every fifteen minutes (doorbells not
        // rung for a day go too), so nothing stays for good.
        spawn_sweeper(
            Arc::clone(&self.transport),
            self.distribute.orphan_retention,
            Arc::clone(&clock),
            stop.clone(),
        );
        worker::spawn_worker(
            Arc::clone(&self.transport),
            self.query_engine()?
                .clone()
                .with_distribute(DistributeMode::Never),
            agent.node_id().to_string(),
            Arc::clone(&colony),
            worker::Polling {
                discovery: apiary_swarm::Discovery {
                    poll: options.task_poll_interval,
                    idle_poll: options.task_idle_poll_interval,
                },
                clock,
                activity: agent.activity(),
            },
            Arc::clone(&self.tasks),
            stop.clone(),
        );
        self.spawn_compactor(
            Arc::clone(&colony),
            agent.node_id().to_string(),
            options.compact_interval,
            stop,
        );
        let engine = self.query_engine()?;
        engine.set_cell_cache(cache.clone());
        engine.set_system_tables(Some(Arc::new(crate::system::NodeSystem(
            crate::console::NodeConsole {
                apiary: self.clone(),
            },
        ))));
        let scratch = options
            .state_dir
            .join("scratch")
            .join(identity.node_id().as_str());
        prepare_scratch(&scratch).await?;
        engine.memory_tier().set_limits(tier.0, tier.1);
        engine.set_admission(Some(Arc::new(admission::BeeAdmission {
            colony: Arc::clone(&colony),
            scratch,
        })));
        *self.node.lock().unwrap_or_else(|p| p.into_inner()) = Some(RunningNode {
            agent,
            bees,
            colony,
            cache,
            _identity: Arc::new(identity),
            stop_worker: Arc::new(stop_worker),
            _flight: flight.map(|(server, _)| server),
            console,
        });
        Ok(())
    }

    /// Tasks of distributed queries this node ran, and how many of them failed.
    pub fn tasks_run(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering;
        (
            self.tasks.ran.load(Ordering::Relaxed),
            self.tasks.failed.load(Ordering::Relaxed),
        )
    }

    /// Stops this node at once without leaving, as a crash would: it takes no new work and
    /// stops beating, and its heartbeat stays until peers judge it dead and hand its tasks
    /// to others. For tests of failure handling, and for a program that must exit now. A
    /// no-op when not started.
    pub async fn halt(&self) {
        let running = self.node.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(node) = running {
            if let Some(console) = &node.console {
                console.stop();
            }
            node.agent.halt().await;
            let _ = node.stop_worker.send(true);
            if let Some((engine, _)) = self.query.get() {
                engine.set_cell_cache(None);
                engine.set_system_tables(None);
                engine.set_admission(None);
            }
        }
    }

    /// Leaves the swarm gracefully: no new work, running work finishes (up to the drain
    /// timeout), the heartbeat is removed. A no-op when not started.
    pub async fn shutdown(&self) -> Result<()> {
        let running = self.node.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(node) = running {
            // The agent closes the bees first: no new task is taken, running ones finish.
            let left = node.agent.leave().await;
            let _ = node.stop_worker.send(true);
            if let Some(console) = &node.console {
                console.stop();
            }
            if let Some((engine, _)) = self.query.get() {
                engine.set_cell_cache(None);
                engine.set_system_tables(None);
                engine.set_admission(None);
            }
            left?;
        }
        self.settle().await;
        Ok(())
    }

    /// Waits for the background work of queries that already returned (removing the
    /// objects a distributed query left in the shuffle transport). Call it before a short
    /// process exits, as `apiary sql` does; a long-lived one need not.
    pub async fn settle(&self) {
        if let Some((_, cluster)) = self.query.get() {
            cluster.settle().await;
        }
    }

    /// Resolves when an operator asks this node to leave (`apiary drain`). Pending forever
    /// when not started.
    pub async fn drain_requested(&self) {
        match self.running() {
            Some(node) => node.agent.drain_requested().await,
            None => std::future::pending().await,
        }
    }
}
