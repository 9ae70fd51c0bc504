//! The conformance suite every [`ShuffleTransport`] must pass (as the storage backends have
//! theirs). Each check panics with a message naming the broken rule. Run them all with
//! [`run_all`]; each check uses query ids of its own, so a shared store is fine.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use arrow_array::{Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};

use crate::manifest::{ColumnSpec, FramePin, TASK_FORMAT, TaskKey, TaskSpec};
use crate::transport::{Rows, ShuffleTransport, TaskFailure, TaskOutcome, TaskReport};

mod results;
pub use results::{
    large_results_stream_in_chunks, pushed_tasks_wake_their_node, read_rows,
    rerun_attempts_keep_one_whole_result, unfinished_results_are_not_collected,
};

/// A task of query `query_id` for `node`.
pub fn task(query_id: &str, task_id: u32, attempt: u32, node: &str) -> TaskSpec {
    TaskSpec {
        format: TASK_FORMAT,
        query_id: query_id.into(),
        task_id,
        attempt,
        node_id: node.into(),
        coordinator: "conformance".into(),
        split: FramePin {
            hive: "h".into(),
            r#box: "b".into(),
            frame: "f".into(),
            version: 1,
        },
        cells: vec![format!("data/cell-{task_id}.parquet")],
        bytes: 100,
        shared: 0,
        steal: vec![],
        pins: vec![],
        sql: "SELECT 1 AS c0".into(),
        scope: vec![],
        settings: Default::default(),
        schema: vec![ColumnSpec {
            name: "c0".into(),
            data_type: "Int64".into(),
            nullable: true,
        }],
        timeout_ms: 60_000,
        frames: vec![],
    }
}

pub(crate) fn unique(name: &str) -> String {
    format!("q-{name}-{}", &apiary_storage::Random::process().id()[..12])
}

pub(crate) fn report(node: &str, rows: u64) -> TaskReport {
    TaskReport {
        node_id: node.into(),
        rows,
        elapsed_ms: 1,
        ..TaskReport::default()
    }
}

fn rows(values: &[i64]) -> Rows {
    Rows {
        batches: vec![ints(values)],
        chunks: Vec::new(),
    }
}

/// A batch of the conformance tasks' schema (`c0 Int64`).
fn ints(values: &[i64]) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![Field::new("c0", DataType::Int64, true)]));
    RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(values.to_vec()))])
        .expect("a batch")
}

/// Polls `node` until `n` distinct tasks were seen (a transport may deliver again).
pub(crate) async fn poll_until(t: &dyn ShuffleTransport, node: &str, n: usize) -> Vec<TaskSpec> {
    let mut seen: Vec<TaskSpec> = Vec::new();
    for _ in 0..200 {
        for task in t.poll_tasks(node).await.expect("poll_tasks") {
            if !seen.iter().any(|s| s.key() == task.key()) {
                seen.push(task);
            }
        }
        if seen.len() >= n {
            return seen;
        }
        apiary_storage::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("only {} of {n} tasks were delivered to {node}", seen.len());
}

/// Runs every check.
pub async fn run_all(t: Arc<dyn ShuffleTransport>) {
    warming_is_only_a_hint(t.as_ref()).await;
    delivery_to_the_right_node(t.as_ref()).await;
    idle_poll_is_empty(t.as_ref()).await;
    outcomes_round_trip(t.as_ref()).await;
    late_and_duplicate_outcomes(t.as_ref()).await;
    finish_removes_everything(t.as_ref()).await;
    concurrent_queries(Arc::clone(&t)).await;
    pickup_is_reported(t.as_ref()).await;
    cancelled_tasks_are_not_wanted(t.as_ref()).await;
    renewed_queries_survive_sweeps(t.as_ref()).await;
    large_results_stream_in_chunks(t.as_ref()).await;
    unfinished_results_are_not_collected(t.as_ref()).await;
    rerun_attempts_keep_one_whole_result(t.as_ref()).await;
    pushed_tasks_wake_their_node(Arc::clone(&t)).await;
    if t.can_claim() {
        claims_have_one_winner(Arc::clone(&t)).await;
    }
}

/// A transport that reports pickup shows a task taken once its node polled it, and its
/// outcome, no longer "running", once the outcome is published. Others report nothing
/// before the outcome.
pub async fn pickup_is_reported(t: &dyn ShuffleTransport) {
    let q = unique("pickup");
    let node = unique("picker");
    let spec = task(&q, 0, 1, &node);
    let key = spec.key();
    t.publish_tasks(&q, "coord", std::slice::from_ref(&spec))
        .await
        .expect("publish");
    let before = t
        .collect(&q, std::slice::from_ref(&key))
        .await
        .expect("collect");
    assert!(
        before.is_empty(),
        "nothing before the task is taken: {before:?}"
    );
    poll_until(t, &node, 1).await;
    let mut taken = t
        .collect(&q, std::slice::from_ref(&key))
        .await
        .expect("collect");
    if t.reports_pickup() {
        // Soon, not necessarily at once: a transport may mark pickup beside the run.
        for _ in 0..100 {
            if !taken.is_empty() {
                break;
            }
            apiary_storage::time::sleep(Duration::from_millis(20)).await;
            taken = t
                .collect(&q, std::slice::from_ref(&key))
                .await
                .expect("collect");
        }
        assert!(
            taken.len() == 1 && taken[0].outcome == TaskOutcome::Running,
            "a transport that reports pickup shows a polled task running: {taken:?}"
        );
    } else {
        assert!(
            taken.is_empty(),
            "no outcome before one is published: {taken:?}"
        );
    }
    t.publish_outcome(&spec, TaskOutcome::Empty, &report(&node, 0))
        .await
        .expect("outcome");
    let ended = t
        .collect(&q, std::slice::from_ref(&key))
        .await
        .expect("collect");
    assert!(
        ended.len() == 1 && ended[0].outcome == TaskOutcome::Empty,
        "a published outcome replaces \"running\": {ended:?}"
    );
    t.finish(&q).await.expect("finish");
}

/// A published task is wanted until its query is cancelled or finished; a transport that
/// cannot tell always answers that it is.
pub async fn cancelled_tasks_are_not_wanted(t: &dyn ShuffleTransport) {
    for end in ["cancel", "finish"] {
        let q = unique(end);
        let spec = task(&q, 0, 1, &unique("worker"));
        t.publish_tasks(&q, "coord", std::slice::from_ref(&spec))
            .await
            .expect("publish");
        assert!(
            t.wanted(&spec.key()).await.expect("wanted"),
            "a published task is wanted"
        );
        match end {
            "cancel" => t.cancel(&q).await.expect("cancel"),
            _ => t.finish(&q).await.expect("finish"),
        }
        let _ = t.wanted(&spec.key()).await.expect("wanted after the end");
    }
}

/// A query renewed more often than the retention survives sweeps however long it runs.
pub async fn renewed_queries_survive_sweeps(t: &dyn ShuffleTransport) {
    let q = unique("renewed");
    let node = unique("renewed-node");
    let spec = task(&q, 0, 1, &node);
    t.publish_tasks(&q, "coord", std::slice::from_ref(&spec))
        .await
        .expect("publish");
    // Three seconds of retention (S3 times objects to the second), renewed every 300 ms
    // for four.
    for _ in 0..13 {
        t.renew(&q, "coord").await.expect("renew");
        apiary_storage::time::sleep(Duration::from_millis(300)).await;
        t.sweep(Duration::from_secs(3)).await.expect("sweep");
    }
    let polled = poll_until(t, &node, 1).await;
    assert_eq!(
        polled[0].key(),
        spec.key(),
        "the renewed query's task is still there"
    );
    t.finish(&q).await.expect("finish");
}

/// Of many tasks claiming the same units at once (whole cells, and parts of one cell, each
/// a unit of its own), exactly one holds each; asking again gives the same answer; a new
/// round claims afresh; `finish` removes the claims.
pub async fn claims_have_one_winner(t: Arc<dyn ShuffleTransport>) {
    let q = unique("claims");
    // The contenders are published tasks of one round, as a coordinator's are.
    let round: Vec<TaskSpec> = (0..4u32).map(|id| task(&q, id, 1, "w")).collect();
    t.publish_tasks(&q, "coord", &round).await.expect("publish");
    let mut cells: Vec<String> = (0..6).map(|i| format!("data/p={i}/c.parquet")).collect();
    cells.extend(
        crate::units::cut(300, 3)
            .iter()
            .map(|rows| crate::units::part_key("data/p=6/c.parquet", rows)),
    );
    let contenders = (0..4u32).map(|id| {
        let t = Arc::clone(&t);
        let key = task(&q, id, 1, "w").key();
        let cells = cells.clone();
        async move {
            let mut won = Vec::new();
            for cell in &cells {
                if t.claim(&key, cell).await.expect("claim") {
                    won.push(cell.clone());
                }
            }
            (key, won)
        }
    });
    let results = futures::future::join_all(contenders).await;
    let mut all: Vec<&String> = results.iter().flat_map(|(_, won)| won).collect();
    all.sort();
    assert_eq!(
        all,
        cells.iter().collect::<Vec<_>>(),
        "each cell has exactly one holder: {results:?}"
    );
    for (key, won) in &results {
        for cell in &cells {
            assert_eq!(
                t.claim(key, cell).await.expect("claim again"),
                won.contains(cell),
                "{key} asking again for {cell}"
            );
        }
    }
    // The next round's claims are its own.
    let next = task(&q, 9, 2, "w");
    t.publish_tasks(&q, "coord", std::slice::from_ref(&next))
        .await
        .expect("publish round 2");
    let next = next.key();
    assert!(t.claim(&next, &cells[0]).await.expect("claim in round 2"));
    t.finish(&q).await.expect("finish");
    assert!(
        t.claim(&task(&q, 10, 1, "w").key(), &cells[0])
            .await
            .expect("claim after finish"),
        "finish removed the claims"
    );
    t.finish(&q).await.expect("finish");
}

/// [`ShuffleTransport::warm`] returns at once for any node, known or not, and tasks
/// published after it reach their node as without it.
pub async fn warming_is_only_a_hint(t: &dyn ShuffleTransport) {
    let q = unique("warm");
    let node = format!("w-{q}");
    t.warm(&[node.clone(), format!("nowhere-{q}"), String::new()]);
    t.warm(&[]);
    let spec = task(&q, 0, 1, &node);
    t.publish_tasks(&q, "coord", std::slice::from_ref(&spec))
        .await
        .expect("publish after warming");
    let got = poll_until(t, &node, 1).await;
    assert_eq!(got, vec![spec], "the task arrives unchanged");
    t.finish(&q).await.expect("finish");
}

/// Tasks reach their own node, and only it.
pub async fn delivery_to_the_right_node(t: &dyn ShuffleTransport) {
    let q = unique("deliver");
    let a = format!("a-{q}");
    let b = format!("b-{q}");
    let tasks = vec![task(&q, 0, 1, &a), task(&q, 1, 1, &b), task(&q, 2, 1, &a)];
    t.publish_tasks(&q, "coord", &tasks).await.expect("publish");
    let got = poll_until(t, &a, 2).await;
    let ids: HashSet<u32> = got.iter().map(|t| t.task_id).collect();
    assert_eq!(ids, HashSet::from([0, 2]), "node a gets its two tasks");
    assert!(
        got.iter().all(|g| g.node_id == a),
        "never another node's task"
    );
    assert_eq!(
        got.iter().find(|g| g.task_id == 0),
        Some(&tasks[0]),
        "a task arrives unchanged"
    );
    let got = poll_until(t, &b, 1).await;
    assert_eq!(got[0].task_id, 1);
    // A new attempt of a task, published later, is delivered too.
    t.publish_tasks(&q, "coord", &[task(&q, 1, 2, &a)])
        .await
        .expect("publish again");
    // (Tasks already delivered may or may not come again: at least once.)
    let mut found = false;
    for _ in 0..200 {
        let got = t.poll_tasks(&a).await.expect("poll_tasks");
        assert!(
            got.iter().all(|g| g.node_id == a),
            "never another node's task"
        );
        if got.iter().any(|g| g.task_id == 1 && g.attempt == 2) {
            found = true;
            break;
        }
        apiary_storage::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(found, "the second attempt reaches a");
    t.finish(&q).await.expect("finish");
}

/// A node with nothing meant for it gets nothing.
pub async fn idle_poll_is_empty(t: &dyn ShuffleTransport) {
    let node = unique("idle");
    for _ in 0..3 {
        assert!(t.poll_tasks(&node).await.expect("poll").is_empty());
    }
}

/// Rows, "no rows" and failures come back whole, with their reports (rows published as one
/// outcome, as a transport's default writer does).
pub async fn outcomes_round_trip(t: &dyn ShuffleTransport) {
    let q = unique("outcomes");
    let tasks: Vec<TaskSpec> = (0..3).map(|i| task(&q, i, 1, "w")).collect();
    t.publish_tasks(&q, "coord", &tasks).await.expect("publish");
    let wanted: Vec<TaskKey> = tasks.iter().map(TaskSpec::key).collect();
    assert!(
        t.collect(&q, &wanted).await.expect("collect").is_empty(),
        "nothing before anything is published"
    );
    t.publish_outcome(
        &tasks[0],
        TaskOutcome::Rows(rows(&[1, 2, 3])),
        &report("w", 3),
    )
    .await
    .expect("rows");
    t.publish_outcome(&tasks[1], TaskOutcome::Empty, &report("w", 0))
        .await
        .expect("empty");
    t.publish_outcome(
        &tasks[2],
        TaskOutcome::Failed(TaskFailure::new(
            apiary_storage::ErrorKind::InvalidInput,
            "boom: bad cast",
        )),
        &report("w", 0),
    )
    .await
    .expect("failed");
    let mut got = t.collect(&q, &wanted).await.expect("collect");
    got.sort_by_key(|d| d.key.task_id);
    assert_eq!(got.len(), 3, "every outcome is collected");
    match &got[0].outcome {
        TaskOutcome::Rows(rows) => {
            assert_eq!(read_rows(t, &q, rows).await, vec![1, 2, 3]);
        }
        other => panic!("rows came back as {other:?}"),
    }
    assert_eq!(got[1].outcome, TaskOutcome::Empty);
    assert_eq!(got[1].report.node_id, "w", "a marker keeps its report");
    assert_eq!(
        got[2].outcome,
        TaskOutcome::Failed(TaskFailure::new(
            apiary_storage::ErrorKind::InvalidInput,
            "boom: bad cast"
        )),
        "the cause, its kind and whether it may be retried are kept"
    );
    // Only what is asked for.
    let only = t.collect(&q, &wanted[1..2]).await.expect("collect one");
    assert_eq!(only.len(), 1);
    assert_eq!(only[0].key, wanted[1]);
    t.finish(&q).await.expect("finish");
}

/// Outcomes of several attempts coexist; publishing one key twice keeps one.
pub async fn late_and_duplicate_outcomes(t: &dyn ShuffleTransport) {
    let q = unique("late");
    let first = task(&q, 0, 1, "slow");
    let second = task(&q, 0, 2, "fast");
    t.publish_tasks(&q, "coord", std::slice::from_ref(&first))
        .await
        .expect("publish");
    t.publish_tasks(&q, "coord", std::slice::from_ref(&second))
        .await
        .expect("publish");
    t.publish_outcome(&second, TaskOutcome::Empty, &report("fast", 0))
        .await
        .expect("second");
    t.publish_outcome(&second, TaskOutcome::Empty, &report("fast", 0))
        .await
        .expect("second again");
    t.publish_outcome(&first, TaskOutcome::Empty, &report("slow", 0))
        .await
        .expect("first, late");
    let got = t
        .collect(&q, &[first.key(), second.key()])
        .await
        .expect("collect");
    assert_eq!(
        got.len(),
        2,
        "one outcome per key, both attempts visible: {got:?}"
    );
    t.finish(&q).await.expect("finish");
}

/// After `finish`, the query is gone: no tasks delivered, nothing collected, and a sweep
/// finds nothing of it.
pub async fn finish_removes_everything(t: &dyn ShuffleTransport) {
    let q = unique("finish");
    let node = format!("n-{q}");
    let spec = task(&q, 0, 1, &node);
    t.publish_tasks(&q, "coord", std::slice::from_ref(&spec))
        .await
        .expect("publish");
    poll_until(t, &node, 1).await;
    t.publish_outcome(&spec, TaskOutcome::Rows(rows(&[7])), &report(&node, 1))
        .await
        .expect("outcome");
    t.finish(&q).await.expect("finish");
    assert!(
        t.collect(&q, &[spec.key()])
            .await
            .expect("collect")
            .is_empty(),
        "results are gone after finish"
    );
    // The node is rung again by another query: the finished one's task is not among what
    // it gets.
    let q2 = unique("after");
    t.publish_tasks(&q2, "coord", &[task(&q2, 0, 1, &node)])
        .await
        .expect("publish");
    let again = poll_until(t, &node, 1).await;
    assert!(
        again.iter().all(|g| g.query_id != q),
        "a finished query's task is not delivered again"
    );
    t.finish(&q2).await.expect("finish");
}

/// Many coordinators publishing at once to the same node lose nothing.
pub async fn concurrent_queries(t: Arc<dyn ShuffleTransport>) {
    let node = unique("busy");
    let queries: Vec<String> = (0..6).map(|i| unique(&format!("c{i}"))).collect();
    let publishers = queries.iter().map(|q| {
        let t = Arc::clone(&t);
        let q = q.clone();
        let node = node.clone();
        async move {
            t.publish_tasks(&q, "coord", &[task(&q, 0, 1, &node)])
                .await
                .expect("publish")
        }
    });
    futures::future::join_all(publishers).await;
    let got = poll_until(t.as_ref(), &node, queries.len()).await;
    let ids: HashSet<&str> = got.iter().map(|g| g.query_id.as_str()).collect();
    assert_eq!(ids.len(), queries.len(), "one task of every query arrives");
    for q in &queries {
        t.finish(q).await.expect("finish");
    }
}
