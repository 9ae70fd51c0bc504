//! A split's tasks go out while the coordinator still plans: the execution takes up that
//! run, and a split dropped before it executes cancels its tasks and leaves nothing.

use std::sync::Arc;
use std::time::Duration;

use apiary_ledger::Registry;
use apiary_storage::{StorageBackend, StorageUri};
use arrow_array::{Array, Int64Array};
use async_trait::async_trait;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::logical_expr::LogicalPlan;

use crate::distributed::{
    Cluster, DistributeMode, DistributeSettings, Ended, ShuffleTransport, StorageShuffle, TaskSpec,
    WorkerDirectory, WorkerInfo, run_task,
};
use crate::{DistributeRequest, Distribution, Distributor, QueryEngine, QueryOptions};

/// One worker, `far`, with an idle bee; the coordinator is not a node.
#[derive(Debug)]
struct Far;

#[async_trait]
impl WorkerDirectory for Far {
    async fn workers(&self) -> crate::Result<Vec<WorkerInfo>> {
        Ok(vec![WorkerInfo {
            node_id: "far".into(),
            bees: 1,
            idle_bees: 1,
            memory_per_bee: 1 << 30,
            cached_cells: Vec::new(),
            attributes: Default::default(),
        }])
    }

    fn local_node(&self) -> Option<String> {
        None
    }
}

struct Setup {
    engine: QueryEngine,
    cluster: Cluster,
    transport: Arc<dyn ShuffleTransport>,
    shuffle: Arc<dyn StorageBackend>,
    /// The query's runtime, as a session makes it before distributing.
    runtime: Arc<RuntimeEnv>,
}

/// `h.b.f` with cells `[1, 2, 3]` and `[4, 5]`, an engine over it, and a cluster whose
/// transport goes through a store of its own.
async fn setup() -> Setup {
    let (backend, _) =
        apiary_storage::counted_backend(&StorageUri::parse("memory://").unwrap()).unwrap();
    let registry = Arc::new(Registry::new(backend, Default::default()));
    crate::test_frame::create(&registry).await;
    crate::test_frame::append(&registry, &[1, 2, 3]).await;
    crate::test_frame::append(&registry, &[4, 5]).await;
    let engine = QueryEngine::new(registry, QueryOptions::default()).unwrap();
    let (shuffle, _) =
        apiary_storage::counted_backend(&StorageUri::parse("memory://").unwrap()).unwrap();
    let transport: Arc<dyn ShuffleTransport> = Arc::new(StorageShuffle::new(Arc::clone(&shuffle)));
    let cluster = Cluster::new(
        Arc::clone(&transport),
        Arc::new(Far),
        DistributeSettings::default(),
    );
    let runtime = engine
        .budget
        .task_runtime(engine.base_state().runtime_env())
        .unwrap();
    Setup {
        engine,
        cluster,
        transport,
        shuffle,
        runtime,
    }
}

const SUM: &str = "SELECT sum(x) AS s FROM h.b.f";

impl Setup {
    /// `SUM` as the distributor splits it; `explaining` as an `EXPLAIN` asks.
    async fn split(&self, explaining: bool) -> LogicalPlan {
        let state = self.engine.base_state();
        let plan = state.create_logical_plan(SUM).await.unwrap();
        let distribution = self
            .cluster
            .distribute(DistributeRequest {
                plan: &plan,
                state: &state,
                mode: DistributeMode::Always,
                scope: &[],
                min_part_rows: None,
                engine: self.engine.clone(),
                explaining,
                runtime: &self.runtime,
            })
            .await
            .unwrap();
        match distribution {
            Distribution::Split(plan) => plan,
            Distribution::Local(why) => panic!("kept local: {why}"),
        }
    }

    /// The tasks `far` finds, waiting up to five seconds for the first.
    async fn tasks_for_far(&self) -> Vec<TaskSpec> {
        for _ in 0..500 {
            let tasks = self.transport.poll_tasks("far").await.unwrap();
            if !tasks.is_empty() {
                return tasks;
            }
            apiary_storage::time::sleep(Duration::from_millis(10)).await;
        }
        Vec::new()
    }

    /// The objects the transport keeps of queries (a node's doorbell outlives them).
    async fn shuffle_objects(&self) -> Vec<String> {
        self.shuffle
            .list(&apiary_storage::Path::from(crate::distributed::QUERIES_DIR))
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key.to_string())
            .collect()
    }
}

#[tokio::test]
async fn a_split_hands_its_tasks_out_before_it_executes_and_the_execution_takes_them_up() {
    let s = setup().await;
    let plan = s.split(false).await;
    // Nothing has executed the plan: the task is out already.
    let tasks = s.tasks_for_far().await;
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    // `far` runs it; the coordinator's execution answers with its rows.
    let (ended, report) = run_task(&s.engine, "far", &tasks[0], &s.transport).await;
    assert_eq!(ended, Ended::Written, "{report:?}");
    let state = s.engine.base_state();
    let physical = state.create_physical_plan(&plan).await.unwrap();
    let context = Arc::new(
        datafusion::execution::TaskContext::from(&state).with_runtime(Arc::clone(&s.runtime)),
    );
    let batches = datafusion::physical_plan::collect(physical, context)
        .await
        .unwrap();
    let sum = batches[0]
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap();
    assert_eq!((sum.len(), sum.value(0)), (1, 15));
    // No second run went out: `far` has nothing more to do.
    assert!(s.transport.poll_tasks("far").await.unwrap().is_empty());
}

#[tokio::test]
async fn a_split_dropped_before_it_executes_cancels_its_tasks_and_leaves_nothing() {
    let s = setup().await;
    let plan = s.split(false).await;
    let tasks = s.tasks_for_far().await;
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    assert!(s.transport.wanted(&tasks[0].key()).await.unwrap());
    // The query failed or was cancelled while the coordinator planned it.
    drop(plan);
    for _ in 0..500 {
        if s.shuffle_objects().await.is_empty() {
            // A worker that holds the task hears it is no longer wanted, and stops.
            assert!(!s.transport.wanted(&tasks[0].key()).await.unwrap());
            return;
        }
        apiary_storage::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("left behind: {:?}", s.shuffle_objects().await);
}

#[tokio::test]
async fn an_explained_split_hands_nothing_out_while_it_is_planned() {
    let s = setup().await;
    let plan = s.split(true).await;
    apiary_storage::time::sleep(Duration::from_millis(200)).await;
    assert!(s.transport.poll_tasks("far").await.unwrap().is_empty());
    assert!(s.shuffle_objects().await.is_empty());
    drop(plan);
}
