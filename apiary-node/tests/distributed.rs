//! Distributed SQL with real `apiary node` processes sharing one storage (a local folder and
//! the S3 test server): every answer equals the single-node answer, EXPLAIN ANALYZE shows
//! tasks on several nodes, a worker SIGKILLed under a query loses no rows, a coordinator
//! SIGKILLed mid-query leaves nothing behind after the retention, and task discovery costs
//! an idle node one HEAD per poll (tasks published by hand are in `tasks.rs`).

#![allow(clippy::unwrap_used)]
#![allow(clippy::disallowed_methods)] // real processes and real time: waits and timings read the system clock

mod common;

use common::nodes::{
    DEADLINE, Node, assert_no_queries, client, hostile, loaded_folder, node_env, queries_left,
    start, wait_alive,
};
use common::queries::{
    IN_PARTS, QUERIES, answer, answer_with, explain_analyze, explain_analyze_with, nodes_in,
    task_fields, units_read,
};

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use apiary::apiary_query::distributed::{ShuffleTransport, StorageShuffle, TaskOutcome};
use apiary::{Apiary, ApiaryOptions};
use apiary_storage::StorageUri;
use apiary_storage::conformance::s3_test_uri;
use arrow_array::{Int64Array, RecordBatch, StringArray};

async fn differential(storage: String, dir: PathBuf) {
    let ap = client(&storage).await;
    common::load_clicks_and_pages(&ap).await;
    let nodes: Vec<Node> = (0..3)
        .map(|i| start(&storage, &dir, &format!("node-d{i}"), "100ms"))
        .collect();
    wait_alive(&ap, 3).await;
    for sql in QUERIES {
        let local = answer(&ap, "never", sql).await;
        let started = Instant::now();
        let spread = answer(&ap, "always", sql).await;
        println!("{:>6.0?} {sql}", started.elapsed());
        assert_eq!(spread, local, "distributed answer differs: {sql}");
        // With every node up, one round reads every cell: shared cells leave no gaps.
        let plan = explain_analyze(&ap, sql).await;
        let attempts = task_fields(&plan, "attempt");
        assert!(attempts.iter().all(|a| a == "1"), "{sql}: {plan}");
        // Cells cut into parts (some rows each) answer the same.
        let in_parts = answer_with(&ap, IN_PARTS, sql).await;
        assert_eq!(
            in_parts, local,
            "distributed answer in parts differs: {sql}"
        );
    }
    // Parts are read: more units than the 12 cells (the last cells of every task are cut),
    // and the 3 cells of one country are cut so every bee has some.
    for (sql, cells) in [(QUERIES[0], 12), (QUERIES[15], 3)] {
        let plan = explain_analyze_with(&ap, IN_PARTS, sql).await;
        let units = units_read(&plan);
        assert!(units > cells, "{units} units for {cells} cells: {plan}");
    }
    // Tasks share cells: on data this small, a node that looks for tasks sooner than the
    // others (one that just finished a task looks every millisecond for 100 ms) may read
    // every shared cell before they look. So each try waits for that to pass, and a few
    // tries are allowed.
    let mut tries = Vec::new();
    let (plan, used) = loop {
        apiary_storage::time::sleep(Duration::from_millis(150)).await;
        let plan = explain_analyze(
            &ap,
            "SELECT country, COUNT(*) FROM analytics.events.clicks GROUP BY country",
        )
        .await;
        let used = nodes_in(&plan);
        if used.len() >= 2 || tries.len() == 4 {
            break (plan, used);
        }
        tries.push(plan);
    };
    println!("{plan}");
    assert!(plan.contains("DistributedExec"), "{plan}");
    assert!(plan.contains("fragment: SELECT"), "{plan}");
    // Where the coordinator's time went: handing the tasks out, then waiting for them.
    for phase in ["dispatch_time=", "wait_time="] {
        assert!(plan.contains(phase), "{phase} in {plan}");
    }
    assert!(
        used.len() >= 2,
        "tasks ran on {used:?}: {plan}\nearlier tries:\n{}",
        tries.join("\n")
    );
    for n in &used {
        assert!(nodes.iter().any(|x| &x.id == n), "unknown node {n}");
    }
    // `auto` distributes by the bytes a query would read, found even in a subquery, and
    // keeps a query local when no frame it reads is large enough.
    let in_subquery = "SELECT section FROM analytics.events.pages WHERE page IN \
                       (SELECT page FROM analytics.events.clicks WHERE duration_ms > 800)";
    let bytes = |frame: &'static str| {
        let ap = ap.clone();
        async move {
            ap.describe_frame("analytics", "events", frame)
                .await
                .unwrap()
                .bytes
        }
    };
    let (pages, clicks) = (bytes("pages").await, bytes("clicks").await);
    assert!(pages < clicks);
    // Above the outer frame's size but not the subquery's: distributed for the subquery.
    for (min_bytes, distributed) in [(pages + 1, true), (clicks + 1, false)] {
        let mut options = ApiaryOptions::new(StorageUri::parse(&storage).unwrap());
        options.swarm.dead_threshold = Duration::from_secs(2);
        options.distribute.auto_min_bytes = min_bytes;
        let auto = Apiary::open_with(options).await.unwrap();
        let mut s = auto.sql_session().unwrap();
        let plan = common::canonical(
            s.sql(&format!("EXPLAIN {in_subquery}"))
                .await
                .unwrap()
                .batches(),
        )
        .join("\n");
        assert_eq!(
            plan.contains("DistributedExec"),
            distributed,
            "{min_bytes}: {plan}"
        );
        assert_eq!(
            answer(&auto, "auto", in_subquery).await,
            answer(&ap, "never", in_subquery).await
        );
    }
    // A frame whose cells all prune away runs locally, and answers the same.
    let q = "SELECT COUNT(*) FROM analytics.events.clicks WHERE country = 'xx'";
    assert_eq!(
        answer(&ap, "always", q).await,
        answer(&ap, "never", q).await
    );
    // The query folders are gone when no query runs.
    assert_no_queries(&ap).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apiary_with_no_nodes_to_share_with_plans_locally() {
    // Every frame is above `auto`'s threshold, but no node is alive: each mode runs the
    // query where it was asked, and answers it.
    let dir = tempfile::tempdir().unwrap();
    let mut options = ApiaryOptions::new(StorageUri::Local(dir.path().to_path_buf()));
    options.distribute.auto_min_bytes = 1;
    let ap = Apiary::open_with(options).await.unwrap();
    common::load_clicks_and_pages(&ap).await;
    let q = "SELECT country, COUNT(*), SUM(duration_ms) FROM analytics.events.clicks \
             GROUP BY country";
    let expected = answer(&ap, "never", q).await;
    assert_eq!(expected.len(), 4, "{expected:?}");
    for mode in ["auto", "always"] {
        let mut s = ap.sql_session().unwrap();
        s.sql(&format!("SET apiary.distribute = '{mode}'"))
            .await
            .unwrap();
        let plan =
            common::canonical(s.sql(&format!("EXPLAIN {q}")).await.unwrap().batches()).join("\n");
        assert!(!plan.contains("DistributedExec"), "{mode}: {plan}");
        assert_eq!(answer(&ap, mode, q).await, expected, "{mode}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_answer_like_one_on_a_local_folder() {
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("data").display().to_string();
    differential(storage, dir.path().to_path_buf()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_answer_like_one_on_s3() {
    let dir = tempfile::tempdir().unwrap();
    let storage = s3_test_uri("distributed").to_string();
    differential(storage, dir.path().to_path_buf()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_under_a_query_loses_no_rows() {
    let (dir, storage, ap) = loaded_folder().await;
    let mut nodes: Vec<Node> = (0..3)
        .map(|i| start(&storage, dir.path(), &format!("node-k{i}"), "100ms"))
        .collect();
    wait_alive(&ap, 3).await;
    let sql = "SELECT country, COUNT(*) AS n, SUM(duration_ms) AS s FROM analytics.events.clicks GROUP BY country";
    let expected = answer(&ap, "never", sql).await;
    // Killed just before the query: it still looks alive, so it is given a task it never
    // answers; the coordinator sees it go suspect and reassigns.
    let victim = nodes.remove(0);
    let victim_id = victim.id.clone();
    drop(victim); // SIGKILL
    let started = Instant::now();
    let plan = explain_analyze(&ap, sql).await;
    println!("answered in {:?}\n{plan}", started.elapsed());
    assert!(!nodes_in(&plan).contains(&victim_id), "{plan}");
    assert_eq!(answer(&ap, "always", sql).await, expected);
    assert!(
        plan.contains(&format!("node {victim_id} is no longer available")),
        "the dead node was given a task and it was reassigned: {plan}"
    );
    // Killed while its task runs.
    let sql2 = "SELECT page, COUNT(DISTINCT user_id) FROM analytics.events.clicks GROUP BY page";
    let expected2 = answer(&ap, "never", sql2).await;
    let ap2 = ap.clone();
    // In parts: the dead node's parts are read by the next round.
    let query = tokio::spawn(async move { answer_with(&ap2, IN_PARTS, sql2).await });
    apiary::apiary_storage::time::sleep(Duration::from_millis(150)).await;
    drop(nodes.remove(0));
    assert_eq!(query.await.unwrap(), expected2);
    assert_no_queries(&ap).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_coordinator_leaves_nothing_after_the_retention() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let storage = data.display().to_string();
    let ap = client(&storage).await;
    common::load_clicks_and_pages(&ap).await;
    // Workers that look for tasks only every 3 s, so the coordinator is surely waiting.
    let _nodes: Vec<Node> = (0..2)
        .map(|i| start(&storage, dir.path(), &format!("node-c{i}"), "3s"))
        .collect();
    wait_alive(&ap, 2).await;
    let mut coordinator = Command::new(env!("CARGO_BIN_EXE_apiary"))
        .args(["sql", "--storage", &storage, "--dead-threshold", "2s"])
        .arg("SET apiary.distribute = 'always'; SELECT country, COUNT(*) FROM analytics.events.clicks GROUP BY country")
        .envs(node_env("1s"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let queries = data.join("_queries");
    let started = Instant::now();
    loop {
        let published = std::fs::read_dir(&queries)
            .map(|d| d.flatten().any(|e| e.path().join("tasks").exists()))
            .unwrap_or(false);
        if published {
            break;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "the coordinator never published"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    coordinator.kill().unwrap();
    coordinator.wait().unwrap();
    assert!(
        std::fs::read_dir(&queries).unwrap().count() > 0,
        "orphan present"
    );
    // Past the retention, coordinators sweep it. Its tasks may still be answered after the
    // kill (if their doorbells were rung before it), and a late result restarts the
    // retention, which counts from the folder's newest object: coordinators go on running
    // queries (each sweeps at most once per half retention) until it is gone.
    apiary::apiary_storage::time::sleep(Duration::from_millis(2500)).await;
    loop {
        answer(&ap, "always", QUERIES[0]).await;
        // This query's own objects are removed after its answer.
        ap.settle().await;
        let left = queries_left(&ap).await;
        if left.is_empty() {
            break;
        }
        assert!(started.elapsed() < DEADLINE, "left behind: {left:?}");
        apiary::apiary_storage::time::sleep(Duration::from_millis(500)).await;
    }
    println!("orphan removed {:?} after the kill", started.elapsed());
}

/// A task whose scan keeps its partitions (a top-k sorted under the scan, a window)
/// claims its own cells up front and runs its plan narrowed to them. Its partitions must
/// run partitions of one narrowed plan: a Parquet scan lets the partitions of one execution
/// take each other's files, so partitions of a copy each would read every file of the copy
/// (rows twice). Cells of one country are read first, so that the memory tier takes them:
/// the others are then read by a Parquet scan of several file groups beside the tier.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_that_keeps_its_cells_reads_each_once() {
    let (dir, storage, ap) = loaded_folder().await;
    let _fast = start(&storage, dir.path(), "node-fast", "5ms");
    let _slow = start(&storage, dir.path(), "node-slow", "3s");
    wait_alive(&ap, 2).await;
    let us =
        "SELECT MAX(event_id), SUM(duration_ms) FROM analytics.events.clicks WHERE country = 'us'";
    for _ in 0..3 {
        answer(&ap, "always", us).await;
    }
    for sql in [QUERIES[4], QUERIES[6]] {
        let expected = answer(&ap, "never", sql).await;
        for _ in 0..2 {
            assert_eq!(answer(&ap, "always", sql).await, expected, "{sql}");
        }
    }
    assert_no_queries(&ap).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_finishes_first_reads_cells_of_one_that_lags() {
    let (dir, storage, ap) = loaded_folder().await;
    // The slow node looks for tasks every 3 s: its share waits for it, and the fast node,
    // done with its own, takes the cells it shares.
    let _fast = start(&storage, dir.path(), "node-fast", "5ms");
    let _slow = start(&storage, dir.path(), "node-slow", "3s");
    wait_alive(&ap, 2).await;
    let mut stole = false;
    for sql in [QUERIES[13], QUERIES[0], QUERIES[4]] {
        let expected = answer(&ap, "never", sql).await;
        let plan = explain_analyze(&ap, sql).await;
        println!("{plan}");
        let nodes = task_fields(&plan, "node");
        let stolen = task_fields(&plan, "stolen");
        let cells = units_read(&plan);
        assert_eq!(cells, 12, "every cell read once: {plan}");
        assert!(
            task_fields(&plan, "attempt").iter().all(|a| a == "1"),
            "{plan}"
        );
        // The slow node still reads the half of its share no one else may take.
        assert!(nodes.iter().any(|n| n == "node-slow"), "{plan}");
        stole |= nodes
            .iter()
            .zip(&stolen)
            .any(|(n, s)| n == "node-fast" && s != "0");
        assert_eq!(answer(&ap, "always", sql).await, expected, "{sql}");
    }
    assert!(stole, "the fast node took none of the slow node's cells");
    assert_no_queries(&ap).await;
}

/// A worker given the same fragment over the same cells again reuses its optimized plan,
/// and the coordinator its split of the same query; a write makes a new version, hence a new
/// split and a new fragment, planned anew: the answer includes the new rows. A query with
/// `now()` is split anew every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_fragment_reuses_its_plan_until_the_frame_changes() {
    let (dir, storage, ap) = loaded_folder().await;
    let _node = start(&storage, dir.path(), "node-r0", "100ms");
    wait_alive(&ap, 1).await;
    let sql = "SELECT country, COUNT(*) AS n, SUM(duration_ms) AS d \
               FROM analytics.events.clicks GROUP BY country";
    let plans = |plan: &str| task_fields(plan, "plan");
    let reused = || ap.coordinator_counts().splits_reused;
    let first = explain_analyze(&ap, sql).await;
    assert_eq!(plans(&first), ["new"], "{first}");
    assert_eq!(reused(), 0);
    let again = explain_analyze(&ap, sql).await;
    assert_eq!(plans(&again), ["reused"], "{again}");
    assert_eq!(
        reused(),
        1,
        "the second EXPLAIN ANALYZE reuses the first's split"
    );
    assert_eq!(
        answer(&ap, "always", sql).await,
        answer(&ap, "never", sql).await
    );
    assert_eq!(reused(), 2, "so does the query itself");
    let timed = "SELECT COUNT(*) AS n FROM analytics.events.clicks \
                 WHERE now() > TIMESTAMP '2000-01-01T00:00:00'";
    for _ in 0..2 {
        assert_eq!(
            answer(&ap, "always", timed).await,
            answer(&ap, "never", timed).await
        );
    }
    assert_eq!(reused(), 2, "a query with now() is split anew");

    let batch = RecordBatch::try_new(
        common::clicks_schema(),
        vec![
            Arc::new(Int64Array::from(vec![900_001, 900_002])),
            Arc::new(StringArray::from(vec!["u1", "u2"])),
            Arc::new(StringArray::from(vec![Some("/p1"), None])),
            Arc::new(Int64Array::from(vec![Some(5), Some(7)])),
            Arc::new(StringArray::from(vec!["nl", "nl"])),
        ],
    )
    .unwrap();
    ap.write_to_frame("analytics", "events", "clicks", [batch])
        .await
        .unwrap();
    let after = explain_analyze(&ap, sql).await;
    assert_eq!(plans(&after), ["new"], "{after}");
    assert_eq!(reused(), 2, "a new version is split anew");
    let spread = answer(&ap, "always", sql).await;
    assert_eq!(reused(), 3);
    assert_eq!(spread, answer(&ap, "never", sql).await);
    assert!(
        spread.iter().any(|row| row.contains("nl")),
        "the new rows are missing: {spread:?}"
    );
}

/// Discovery's cost, counted on the transport's own store: an idle node only HEADs its
/// doorbell, once per poll interval (no LIST, no GET); for 100 ms after it finished a task
/// it looks every millisecond, and for a minute after it was given one, four times as often;
/// while every bee is busy, it does not look.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_node_only_heads_its_doorbell_and_a_busy_one_looks_more_often() {
    use apiary::NodeOptions;

    let poll = Duration::from_millis(50);
    // Tasks in a store of their own, whose every request is counted.
    let (tasks_store, counts) =
        apiary_storage::counted_backend(&StorageUri::parse("memory://").unwrap()).unwrap();
    let transport = Arc::new(StorageShuffle::new(tasks_store));
    let dir = tempfile::tempdir().unwrap();
    let ap = Apiary::builder(ApiaryOptions::new(StorageUri::parse("memory://").unwrap()))
        .transport(transport.clone())
        .build()
        .await
        .unwrap();
    ap.start_with(NodeOptions {
        node_id: Some("poller".into()),
        state_dir: dir.path().join("poller"),
        task_poll_interval: poll,
        ..NodeOptions::default()
    })
    .await
    .unwrap();
    // Past the start-up sweep (one LIST), then one idle second.
    apiary_storage::time::sleep(Duration::from_millis(300)).await;
    let before = counts.snapshot();
    let idle_for = Instant::now();
    apiary_storage::time::sleep(Duration::from_secs(1)).await;
    let idle = counts.snapshot() - before;
    let most = (idle_for.elapsed().as_millis() / poll.as_millis()) as u64 + 1;
    assert!(
        idle.head >= 1 && idle.head <= most,
        "{} HEADs in {:?} at a {poll:?} poll",
        idle.head,
        idle_for.elapsed()
    );
    assert_eq!(idle.total(), idle.head, "an idle node only HEADs: {idle:?}");

    // A task (its frame does not exist, so it fails fast): the node finds it and answers.
    let task = hostile("q-busy", "poller", "SELECT 1", "analytics");
    transport
        .publish_tasks("q-busy", "test", std::slice::from_ref(&task))
        .await
        .unwrap();
    let started = Instant::now();
    // Until its outcome is in (taken is not an end).
    while transport
        .collect("q-busy", std::slice::from_ref(&task.key()))
        .await
        .unwrap()
        .iter()
        .all(|d| d.outcome == TaskOutcome::Running)
    {
        assert!(started.elapsed() < DEADLINE, "the task was never answered");
        apiary_storage::time::sleep(Duration::from_millis(10)).await;
    }
    // Just after finishing a task a node looks every millisecond (for 100 ms), where busy
    // polling alone would look every 12.5 ms: at most nine times in 100 ms. The bound (a
    // look every 6 ms) leaves room for a loaded machine's late timers.
    let before = counts.snapshot();
    apiary_storage::time::sleep(Duration::from_millis(100)).await;
    let hot = counts.snapshot() - before;
    assert!(
        hot.head >= 16,
        "{} HEADs in the 100 ms after a task",
        hot.head
    );
    assert_eq!(hot.total(), hot.head, "no task, no LIST: {hot:?}");
    transport.finish("q-busy").await.unwrap();
    // Past the quick looks: the busy rate.
    apiary_storage::time::sleep(Duration::from_millis(50)).await;
    let before = counts.snapshot();
    apiary_storage::time::sleep(Duration::from_secs(1)).await;
    let busy = counts.snapshot() - before;
    // Four times as often as idle; the bound (half again as often as idle could) leaves
    // room for a loaded machine's late timers.
    assert!(
        2 * busy.head > 3 * most,
        "{} HEADs in a busy second, {} in an idle one",
        busy.head,
        idle.head
    );
    assert_eq!(busy.total(), busy.head, "no task, no LIST: {busy:?}");

    // Every bee busy (held here, as local queries would): no looks at all, since a task
    // found now could only wait; a released bee brings them back.
    let bees = ap.bees().expect("a running node has bees");
    let mut held = Vec::new();
    for _ in 0..bees.total() {
        held.push(bees.acquire().await.unwrap());
    }
    apiary_storage::time::sleep(2 * poll).await;
    let before = counts.snapshot();
    apiary_storage::time::sleep(Duration::from_millis(500)).await;
    let full = counts.snapshot() - before;
    assert_eq!(full.total(), 0, "looks while no bee was free: {full:?}");
    held.pop();
    let before = counts.snapshot();
    apiary_storage::time::sleep(Duration::from_millis(500)).await;
    let freed = counts.snapshot() - before;
    assert!(freed.head >= 2, "no looks once a bee was free: {freed:?}");
    drop(held);
    ap.shutdown().await.unwrap();
}
