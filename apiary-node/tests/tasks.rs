//! Tasks published by hand to real `apiary node` processes: hostile manifests are refused
//! by every worker, a task that names parts of cells reads exactly their rows, and
//! `apiary.min_part_rows` takes only a positive number.

#![allow(clippy::unwrap_used)]
#![allow(clippy::disallowed_methods)] // real processes and real time: waits and timings read the system clock

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use apiary::apiary_query::distributed::{
    ShuffleTransport, StorageShuffle, TaskKey, TaskOutcome, TaskSpec,
};
use arrow_array::Int64Array;
use common::nodes::{
    DEADLINE, Node, assert_no_queries, client, hostile, loaded_folder, start, wait_alive,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_manifests_are_refused_by_every_worker() {
    let (dir, storage, ap) = loaded_folder().await;
    ap.create_hive("secret").await.unwrap();
    let nodes: Vec<Node> = (0..2)
        .map(|i| start(&storage, dir.path(), &format!("node-h{i}"), "100ms"))
        .collect();
    wait_alive(&ap, 2).await;
    let target = dir.path().join("stolen.csv");
    let cases = [
        format!("COPY (SELECT 1) TO '{}'", target.display()),
        "CREATE TABLE t AS SELECT 1".to_string(),
        "INSERT INTO analytics.events.clicks (event_id) VALUES (1)".to_string(),
        "DROP TABLE analytics.events.clicks".to_string(),
        "SET datafusion.execution.target_partitions = 1".to_string(),
        "SELECT * FROM '/etc/passwd'".to_string(),
        "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc/passwd'".to_string(),
        "SELECT COUNT(*) FROM secret.events.clicks".to_string(),
        "SELECT 1; SELECT 2".to_string(),
    ];
    let transport = StorageShuffle::new(Arc::clone(ap.registry().backend()));
    for node in &nodes {
        for (i, sql) in cases.iter().enumerate() {
            let q = format!("q-hostile-{}-{i}", node.id);
            let task = hostile(&q, &node.id, sql, "analytics");
            transport
                .publish_tasks(&q, "attacker", std::slice::from_ref(&task))
                .await
                .unwrap();
            let key = TaskKey {
                query_id: q.clone(),
                task_id: 0,
                attempt: 1,
            };
            let started = Instant::now();
            let outcome = loop {
                let got = transport
                    .collect(&q, std::slice::from_ref(&key))
                    .await
                    .unwrap();
                // A task taken but not finished is not an end.
                if let Some(d) = got.into_iter().find(|d| d.outcome != TaskOutcome::Running) {
                    break d.outcome;
                }
                assert!(
                    started.elapsed() < DEADLINE,
                    "{} never answered {sql}",
                    node.id
                );
                apiary::apiary_storage::time::sleep(Duration::from_millis(50)).await;
            };
            match outcome {
                TaskOutcome::Failed(cause) => println!("{}: {sql} -> {cause}", node.id),
                other => panic!("{} ran {sql}: {other:?}", node.id),
            }
            transport.finish(&q).await.unwrap();
        }
    }
    assert!(!target.exists(), "a worker wrote a file");
    // The frames are untouched and still answer.
    let r = ap
        .sql("SELECT COUNT(*) FROM analytics.events.clicks")
        .await
        .unwrap();
    assert_eq!(common::canonical(r.batches()), vec!["2400".to_string()]);
}

/// The event ids `task` returns once published to its node (its fragment selects them), or
/// why it failed.
async fn run_published(
    transport: &StorageShuffle,
    task: TaskSpec,
) -> Result<std::collections::BTreeSet<i64>, String> {
    let q = task.query_id.clone();
    transport
        .publish_tasks(&q, "test", std::slice::from_ref(&task))
        .await
        .unwrap();
    let started = Instant::now();
    let outcome = loop {
        let got = transport.collect(&q, &[task.key()]).await.unwrap();
        // A task taken but not finished is not an end.
        if let Some(d) = got.into_iter().find(|d| d.outcome != TaskOutcome::Running) {
            break d.outcome;
        }
        assert!(started.elapsed() < DEADLINE, "no answer to {q}");
        apiary::apiary_storage::time::sleep(Duration::from_millis(20)).await;
    };
    let mut batches = Vec::new();
    match outcome {
        TaskOutcome::Rows(rows) => {
            // Chunks are read before the query is finished (which removes them).
            for chunk in &rows.chunks {
                batches.extend(transport.read_chunk(&q, chunk).await.unwrap());
            }
            batches.extend(rows.batches);
        }
        TaskOutcome::Empty => {}
        TaskOutcome::Failed(cause) => {
            transport.finish(&q).await.unwrap();
            return Err(cause.message);
        }
        TaskOutcome::Running => unreachable!("the loop waits for an end"),
    }
    transport.finish(&q).await.unwrap();
    Ok(batches
        .iter()
        .flat_map(|b| {
            let ids = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
            ids.values().to_vec()
        })
        .collect())
}

/// A task that names parts of cells reads exactly their rows (positions in the cell, before
/// its filter), whether the node reads the cell from Parquet, decodes it into the memory
/// tier or serves it from there; a part the cell does not have fails the task, saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_reads_exactly_the_rows_of_the_parts_it_names() {
    let (dir, storage, ap) = loaded_folder().await;
    let node = start(&storage, dir.path(), "node-p0", "5ms");
    wait_alive(&ap, 1).await;
    let frame = apiary::apiary_ledger::FrameRef::new("analytics", "events", "clicks").unwrap();
    let state = ap
        .registry()
        .ledger(&frame)
        .await
        .unwrap()
        .refresh()
        .await
        .unwrap()
        .unwrap();
    let mut cells: Vec<String> = state.live.as_ref().unwrap().cells.keys().cloned().collect();
    cells.sort();
    let (a, b) = (&cells[0], &cells[1]);
    let transport = StorageShuffle::new(Arc::clone(ap.registry().backend()));
    let mut n = 0;
    let mut task = |units: &[String], sql: &str| {
        n += 1;
        let mut t = hostile(&format!("q-parts-{n}"), &node.id, sql, "analytics");
        t.split.version = state.version;
        t.cells = units.to_vec();
        t
    };
    let ids = "SELECT event_id AS c0 FROM analytics.events.clicks";
    let units = [
        format!("{a}#0-50"),
        format!("{a}#150-200"),
        format!("{b}#199-200"),
    ];
    let even = format!("{ids} WHERE event_id % 2 = 0");
    // The node's first read of these cells is cold (Parquet with a row selection), the
    // second decodes them into its memory tier, later ones are served from there.
    let mut parts = Vec::new();
    let mut filtered = Vec::new();
    for _ in 0..3 {
        parts.push(run_published(&transport, task(&units, ids)).await.unwrap());
        // A filter applies to the part's rows, not the part to the filtered rows.
        filtered.push(
            run_published(&transport, task(&units[..1], &even))
                .await
                .unwrap(),
        );
    }
    // Each cell's ids in file order: one write of 200 consecutive ids.
    let whole = run_published(&transport, task(std::slice::from_ref(a), ids))
        .await
        .unwrap();
    assert_eq!(whole.len(), 200);
    let first = *whole.first().unwrap();
    assert_eq!(*whole.last().unwrap(), first + 199, "{whole:?}");
    let b_first = *run_published(&transport, task(std::slice::from_ref(b), ids))
        .await
        .unwrap()
        .first()
        .unwrap();
    let mut want: std::collections::BTreeSet<i64> = (first..first + 50).collect();
    want.extend(first + 150..first + 200);
    want.insert(b_first + 199);
    let want_even: std::collections::BTreeSet<i64> =
        (first..first + 50).filter(|i| i % 2 == 0).collect();
    for round in 0..3 {
        assert_eq!(parts[round], want, "round {round}");
        assert_eq!(filtered[round], want_even, "round {round}");
    }
    // A part past the cell's 200 rows.
    let cause = run_published(&transport, task(&[format!("{a}#100-300")], ids))
        .await
        .unwrap_err();
    assert!(cause.contains("which has 200"), "{cause}");
    assert_no_queries(&ap).await;
}

/// `apiary.min_part_rows` takes a number of rows above zero; anything else is refused,
/// naming the setting, and the session goes on with the value it had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_part_rows_takes_only_a_positive_number() {
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("data").display().to_string();
    let ap = client(&storage).await;
    let mut s = ap.sql_session().unwrap();
    s.sql("SET apiary.min_part_rows = 1000").await.unwrap();
    s.sql("SET apiary.min_part_rows = '2000'").await.unwrap();
    for bad in ["0", "-5", "'many'", "1.5"] {
        let err = s
            .sql(&format!("SET apiary.min_part_rows = {bad}"))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("apiary.min_part_rows is a number of rows"),
            "{bad}: {err}"
        );
    }
    let err = s
        .sql("SET apiary.min_rows = 5")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("apiary.min_part_rows"), "{err}");
}
