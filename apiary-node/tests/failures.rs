//! How a distributed query meets failures, on nodes started in this process: a node that
//! heartbeats with an idle bee but never takes its task (hung, or another version) costs the
//! pickup deadline, not the run deadline; a task a worker cannot read, or a result the
//! coordinator cannot read, fails that attempt at once and the next round answers; a query
//! whose tasks outlive the retention is renewed, not swept; a query dropped by its client
//! stops on every node and leaves nothing in storage.

#![allow(clippy::unwrap_used)]
#![allow(clippy::disallowed_methods)] // real processes and real time: waits and timings read the system clock

mod common;

use std::time::{Duration, Instant};

use apiary::Apiary;
use apiary::apiary_query::distributed::{
    ShuffleTransport, StorageShuffle, TaskFailure, TaskOutcome,
};

const CLICKS_BY_COUNTRY: &str = "SELECT country, COUNT(*) AS n, SUM(duration_ms) AS s FROM analytics.events.clicks GROUP BY country";

async fn answer(ap: &Apiary, mode: &str, sql: &str) -> Vec<String> {
    let mut s = ap.sql_session().unwrap();
    s.sql(&format!("SET apiary.distribute = '{mode}'"))
        .await
        .unwrap();
    common::canonical(s.sql(sql).await.unwrap().batches())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_never_takes_its_task_costs_the_pickup_deadline() {
    // `sleepy` heartbeats with idle bees but looks for tasks once an hour.
    let s = common::in_process_swarm(
        &[
            ("busy-bee", Duration::from_millis(10)),
            ("sleepy", Duration::from_secs(3600)),
        ],
        |o| o.distribute.pickup_timeout = Duration::from_millis(500),
    )
    .await;
    let local = answer(&s.client, "never", CLICKS_BY_COUNTRY).await;
    let started = Instant::now();
    let plan = answer(
        &s.client,
        "always",
        &format!("EXPLAIN ANALYZE {CLICKS_BY_COUNTRY}"),
    )
    .await
    .join("\n");
    // The run deadline is ten minutes: well inside it, the task went elsewhere.
    assert!(started.elapsed() < Duration::from_secs(60), "{plan}");
    assert!(plan.contains("did not take the task"), "{plan}");
    assert!(!plan.contains("node=sleepy"), "{plan}");
    assert_eq!(answer(&s.client, "always", CLICKS_BY_COUNTRY).await, local);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_outcome_or_task_fails_that_attempt_at_once() {
    let s = common::in_process_swarm(&[("w", Duration::from_millis(10))], |_| {}).await;
    let backend = apiary_storage::open(s.client.storage()).await.unwrap();
    let transport = StorageShuffle::new(backend.clone());
    let q = "q-damaged";
    let task = |id: u32, node: &str| apiary::apiary_query::distributed::TaskSpec {
        format: apiary::apiary_query::distributed::manifest::TASK_FORMAT,
        query_id: q.into(),
        task_id: id,
        attempt: 1,
        node_id: node.into(),
        coordinator: "tests".into(),
        split: apiary::apiary_query::distributed::FramePin::new(
            &apiary_ledger::FrameRef::new("analytics", "events", "clicks").unwrap(),
            1,
        ),
        bytes: 0,
        shared: 0,
        steal: Vec::new(),
        cells: Vec::new(),
        pins: Vec::new(),
        sql: "SELECT 1 AS c0".into(),
        scope: Vec::new(),
        settings: Default::default(),
        schema: Vec::new(),
        timeout_ms: 1000,
        frames: vec![],
    };
    let (a, b) = (task(0, "nobody"), task(1, "nobody"));
    transport
        .publish_tasks(q, "tests", &[a.clone(), b.clone()])
        .await
        .unwrap();
    // Task 0's outcome is damaged; task 1's worker cannot read its manifest.
    backend
        .put(
            &apiary_storage::Path::from(format!("_queries/{q}/results/000000-1.empty")),
            bytes::Bytes::from_static(b"{not json"),
        )
        .await
        .unwrap();
    backend
        .put(
            &apiary_storage::Path::from(format!("_queries/{q}/tasks/nobody/000001-1.json")),
            bytes::Bytes::from_static(b"{\"format\": 99}"),
        )
        .await
        .unwrap();
    // Task 0 is taken (its outcome is there already, damaged); task 1 is refused.
    let polled = transport.poll_tasks("nobody").await.unwrap();
    assert_eq!(polled.iter().map(|t| t.task_id).collect::<Vec<_>>(), [0]);
    let mut got = transport.collect(q, &[a.key(), b.key()]).await.unwrap();
    got.sort_by_key(|d| d.key.task_id);
    let failure = |o: &TaskOutcome| match o {
        TaskOutcome::Failed(f) => f.clone(),
        other => panic!("{other:?}"),
    };
    let damaged: TaskFailure = failure(&got[0].outcome);
    assert!(
        damaged.retryable && damaged.message.contains("damaged"),
        "{damaged:?}"
    );
    let unreadable = failure(&got[1].outcome);
    assert!(unreadable.retryable, "{unreadable:?}");
    assert!(
        unreadable.message.contains("cannot read its task"),
        "{unreadable:?}"
    );
    assert_eq!(got[1].report.node_id, "nobody");
    transport.finish(q).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_query_is_renewed_and_not_swept() {
    let s = common::in_process_swarm(&[("w", Duration::from_millis(10))], |o| {
        o.distribute.orphan_retention = Duration::from_millis(300)
    })
    .await;
    let transport = std::sync::Arc::clone(s.client.transport());
    let q = "q-renewed";
    // A coordinator renewing its query every 100 ms for a second: sweeps with a 300 ms
    // retention, all the while, find nothing to remove.
    transport.publish_tasks(q, "tests", &[]).await.unwrap();
    for _ in 0..10 {
        transport.renew(q, "tests").await.unwrap();
        apiary::apiary_storage::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            transport.sweep(Duration::from_millis(300)).await.unwrap(),
            0
        );
    }
    // Left alone past the retention, it is swept.
    apiary::apiary_storage::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        transport.sweep(Duration::from_millis(300)).await.unwrap(),
        1
    );
}

/// A coordinator whose listings are slow (up to 3 s, twice the orphan retention) still
/// renews its running query on time: renewal runs beside the wait for results, so its query
/// object never looks older than the retention to a sweep.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_listings_do_not_delay_a_running_query_s_renewal() {
    use apiary_storage::{FaultConfig, InstrumentedStore, ObjectStoreBackend, object_store_for};
    use std::sync::Arc;
    let s = common::in_process_swarm(&[("renew-w", Duration::from_millis(10))], |_| {}).await;
    let retention = Duration::from_millis(1500);
    let (store, caps) = object_store_for(s.client.storage()).unwrap();
    let slow = InstrumentedStore::new(
        store,
        FaultConfig {
            seed: 7,
            max_list_latency: Duration::from_millis(3000),
            ..FaultConfig::none()
        },
    );
    let mut options = apiary::ApiaryOptions::new(s.client.storage().clone());
    options.swarm = common::fast_swarm_config();
    options.distribute.orphan_retention = retention;
    let slow_client = apiary::ApiaryBuilder::new(options)
        .backend(Arc::new(ObjectStoreBackend::new(
            Arc::new(slow),
            caps,
            "slow listings",
        )))
        .build()
        .await
        .unwrap();
    let query = tokio::spawn(async move {
        let mut session = slow_client.sql_session().unwrap();
        session
            .sql("SET apiary.distribute = 'always'")
            .await
            .unwrap();
        session
            .sql("SELECT country, COUNT(*) FROM analytics.events.clicks GROUP BY country")
            .await
    });
    // For eight seconds of the query's run, its query object's age on the store's clock,
    // read from a thread of its own (the query's work busies this runtime's threads).
    let storage = s.client.storage().clone();
    let running = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let watcher = {
        let running = Arc::clone(&running);
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let backend = apiary_storage::open(&storage).await.unwrap();
                let watching = Instant::now();
                let (mut oldest, mut seen) = (0, 0);
                while watching.elapsed() < Duration::from_secs(8)
                    && running.load(std::sync::atomic::Ordering::Relaxed)
                {
                    let listed = backend
                        .list(&apiary_storage::Path::from("_queries"))
                        .await
                        .unwrap();
                    for object in listed {
                        if object.key.as_ref().ends_with("/query.json") {
                            let now = apiary_storage::store_now(backend.as_ref()).await.unwrap();
                            oldest = oldest.max(now - object.last_modified_ms);
                            seen += 1;
                        }
                    }
                    apiary::apiary_storage::time::sleep(Duration::from_millis(50)).await;
                }
                (oldest, seen)
            })
        })
    };
    while !watcher.is_finished() && !query.is_finished() {
        apiary::apiary_storage::time::sleep(Duration::from_millis(50)).await;
    }
    running.store(false, std::sync::atomic::Ordering::Relaxed);
    let (oldest, seen) = watcher.join().unwrap();
    eprintln!("the query object was {oldest} ms old at most ({seen} readings)");
    query.abort();
    assert!(seen > 10, "the query object was seen {seen} times");
    assert!(
        oldest < retention.as_millis() as i64,
        "the running query's object went {oldest} ms without renewal (retention {retention:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_query_stops_on_every_node_and_leaves_nothing() {
    let s = common::in_process_swarm(
        &[
            ("cancel-a", Duration::from_millis(10)),
            ("cancel-b", Duration::from_millis(10)),
        ],
        |_| {},
    )
    .await;
    common::write_numbers(&s.client).await;
    let client = s.client.clone();
    let query = tokio::spawn(async move {
        let mut session = client.sql_session().unwrap();
        session
            .sql("SET apiary.distribute = 'always'")
            .await
            .unwrap();
        session.sql(common::LONG_QUERY).await
    });
    // Running on both nodes.
    let busy = |ap: &Apiary| ap.bees().unwrap().occupancy().0;
    let started = Instant::now();
    while s.nodes.iter().any(|n| busy(n) == 0) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the tasks never started"
        );
        assert!(!query.is_finished(), "the query ended: {:?}", query.await);
        apiary::apiary_storage::time::sleep(Duration::from_millis(20)).await;
    }
    // The client drops the query (as a dropped stream or Ctrl-C does).
    query.abort();
    assert!(query.await.unwrap_err().is_cancelled());
    let dropped = Instant::now();
    let backend = apiary_storage::open(s.client.storage()).await.unwrap();
    loop {
        let left = backend
            .list(&apiary_storage::Path::from("_queries"))
            .await
            .unwrap();
        let working: Vec<u32> = s.nodes.iter().map(busy).collect();
        if left.is_empty() && working.iter().all(|&b| b == 0) {
            println!(
                "every node idle and _queries/ empty {:?} after the drop",
                dropped.elapsed()
            );
            break;
        }
        assert!(
            dropped.elapsed() < Duration::from_secs(10),
            "still busy {working:?}, left {left:?}"
        );
        apiary::apiary_storage::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_node_sweeps_what_a_dead_coordinator_left() {
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("data").display().to_string();
    let mut options =
        apiary::ApiaryOptions::new(apiary_storage::StorageUri::parse(&storage).unwrap());
    options.distribute.orphan_retention = Duration::from_millis(400);
    let node = Apiary::open_with(options).await.unwrap();
    node.start_with(apiary::NodeOptions {
        node_id: Some("sweeper".into()),
        state_dir: dir.path().join("sweeper.state"),
        swarm: common::fast_swarm_config(),
        ..apiary::NodeOptions::default()
    })
    .await
    .unwrap();
    // A coordinator publishes a query, then dies: nobody renews or finishes it, and no
    // query runs after it.
    let task = apiary::apiary_shuffle::conformance::task("q-orphan", 0, 1, "gone");
    node.transport()
        .publish_tasks("q-orphan", "dead", std::slice::from_ref(&task))
        .await
        .unwrap();
    let backend = apiary_storage::open(node.storage()).await.unwrap();
    let queries = apiary_storage::Path::from("_queries");
    assert!(!backend.list(&queries).await.unwrap().is_empty());
    let left = Instant::now();
    while !backend.list(&queries).await.unwrap().is_empty() {
        assert!(
            left.elapsed() < Duration::from_secs(10),
            "the orphan is still there"
        );
        apiary::apiary_storage::time::sleep(Duration::from_millis(50)).await;
    }
    println!("swept {:?} after it was left", left.elapsed());
    node.shutdown().await.unwrap();
}

/// A query whose client reads its answer slowly, for longer than the orphan retention,
/// stays renewed until the stream ends: a sweep meanwhile removes nothing, and the client
/// still gets every row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_read_slowly_stays_renewed_until_its_stream_ends() {
    use futures::TryStreamExt;
    let retention = Duration::from_millis(600);
    let s = common::in_process_swarm(&[("slow-reader-w", Duration::from_millis(10))], |o| {
        o.distribute.orphan_retention = retention
    })
    .await;
    let sql = "SELECT event_id FROM analytics.events.clicks";
    let local = s.client.sql(sql).await.unwrap().num_rows();
    let mut session = s.client.sql_session().unwrap();
    session
        .sql("SET apiary.distribute = 'always'")
        .await
        .unwrap();
    let mut stream = session.sql_stream(sql).await.unwrap();
    let mut rows = stream.try_next().await.unwrap().unwrap().num_rows();
    // The answer is open for two and a half retentions; sweeps with that retention find
    // nothing to remove all the while.
    let transport = std::sync::Arc::clone(s.client.transport());
    let open = Instant::now();
    while open.elapsed() < retention * 5 / 2 {
        apiary::apiary_storage::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            transport.sweep(retention).await.unwrap(),
            0,
            "a sweep took part of a query whose answer is still being read"
        );
    }
    while let Some(batch) = stream.try_next().await.unwrap() {
        rows += batch.num_rows();
    }
    assert_eq!(rows, local);
}
