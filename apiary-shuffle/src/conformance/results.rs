//! Checks of results as streams: chunks, ends, reruns of an attempt, and the wake-up of push
//! transports.

use std::sync::Arc;
use std::time::Duration;

use arrow_array::{Array, Int64Array};

use super::{ints, poll_until, report, task, unique};
use crate::manifest::TaskSpec;
use crate::transport::{Rows, ShuffleTransport, TaskOutcome};

/// Every value of `rows` (the `c0` column), chunks first and then the rows in hand, in
/// order, reading each chunk with [`ShuffleTransport::read_chunk`].
pub async fn read_rows(t: &dyn ShuffleTransport, query_id: &str, rows: &Rows) -> Vec<i64> {
    let mut batches = Vec::new();
    for chunk in &rows.chunks {
        batches.extend(t.read_chunk(query_id, chunk).await.expect("read_chunk"));
    }
    batches.extend(rows.batches.iter().cloned());
    batches
        .iter()
        .flat_map(|b| {
            let column = b
                .column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .expect("c0 is Int64");
            assert_eq!(column.null_count(), 0);
            column.values().to_vec()
        })
        .collect()
}

/// Writes `values` to a new result of `spec` in batches of `batch_rows`; not finished.
async fn write<'a>(
    t: &'a dyn ShuffleTransport,
    spec: &'a TaskSpec,
    values: &[i64],
    batch_rows: usize,
) -> Box<dyn crate::transport::ResultWriter + 'a> {
    let mut w = t.open_result(spec, ints(&[]).schema());
    for piece in values.chunks(batch_rows) {
        w.write(ints(piece)).await.expect("write");
    }
    w
}

/// The only outcome collected for `spec` now.
async fn outcome(t: &dyn ShuffleTransport, spec: &TaskSpec) -> Option<TaskOutcome> {
    let got = t
        .collect(&spec.query_id, &[spec.key()])
        .await
        .expect("collect");
    assert!(got.len() <= 1, "one outcome per key: {got:?}");
    got.into_iter()
        .map(|d| d.outcome)
        .find(|o| !matches!(o, TaskOutcome::Running))
}

/// A result larger than any transport's chunk (24 MiB of rows) written batch by batch
/// comes back whole and in order, and its report with it.
pub async fn large_results_stream_in_chunks(t: &dyn ShuffleTransport) {
    let q = unique("large");
    let spec = task(&q, 0, 1, "w");
    t.publish_tasks(&q, "coord", std::slice::from_ref(&spec))
        .await
        .expect("publish");
    let values: Vec<i64> = (0..3_000_000).collect();
    let w = write(t, &spec, &values, 65_536).await;
    w.finish(&report("w", values.len() as u64))
        .await
        .expect("finish");
    let got = t
        .collect(&q, &[spec.key()])
        .await
        .expect("collect")
        .into_iter()
        .find(|d| !matches!(d.outcome, TaskOutcome::Running))
        .expect("the result, once finished");
    assert_eq!(
        got.report.rows,
        values.len() as u64,
        "the report comes along"
    );
    let TaskOutcome::Rows(rows) = &got.outcome else {
        panic!("rows came back as {:?}", got.outcome);
    };
    assert_eq!(
        read_rows(t, &q, rows).await,
        values,
        "every row, once, in order"
    );
    t.finish(&q).await.expect("finish");
}

/// A result whose writer has not finished is not collected (a reader never sees part of a
/// result), and one dropped unfinished leaves room for the attempt's failure.
pub async fn unfinished_results_are_not_collected(t: &dyn ShuffleTransport) {
    let q = unique("unfinished");
    let spec = task(&q, 0, 1, "w");
    t.publish_tasks(&q, "coord", std::slice::from_ref(&spec))
        .await
        .expect("publish");
    let values: Vec<i64> = (0..1_500_000).collect();
    let w = write(t, &spec, &values, 100_000).await;
    assert_eq!(outcome(t, &spec).await, None, "nothing before the end");
    drop(w);
    assert_eq!(outcome(t, &spec).await, None, "nothing of a dropped writer");
    let failure = crate::TaskFailure::new(apiary_storage::ErrorKind::Unavailable, "gone");
    t.publish_outcome(&spec, TaskOutcome::Failed(failure.clone()), &report("w", 0))
        .await
        .expect("failed");
    assert_eq!(outcome(t, &spec).await, Some(TaskOutcome::Failed(failure)));
    t.finish(&q).await.expect("finish");
}

/// An attempt run twice (a worker restarted, or polled the task again), its rows cut into
/// batches differently each time: one whole result is collected, never a mix of the two.
pub async fn rerun_attempts_keep_one_whole_result(t: &dyn ShuffleTransport) {
    let q = unique("rerun");
    let spec = task(&q, 0, 1, "w");
    t.publish_tasks(&q, "coord", std::slice::from_ref(&spec))
        .await
        .expect("publish");
    let values: Vec<i64> = (0..2_000_000).collect();
    let reversed: Vec<i64> = values.iter().rev().copied().collect();
    // Interleaved: both writers are open at once.
    let first = write(t, &spec, &values, 70_000).await;
    let second = write(t, &spec, &reversed, 130_000).await;
    let n = values.len() as u64;
    first.finish(&report("w", n)).await.expect("first end");
    second.finish(&report("w", n)).await.expect("second end");
    let Some(TaskOutcome::Rows(rows)) = outcome(t, &spec).await else {
        panic!("the result is collected");
    };
    let got = read_rows(t, &q, &rows).await;
    assert!(
        got == values || got == reversed,
        "one of the two results, whole: {} rows, starting {:?}",
        got.len(),
        &got[..got.len().min(3)]
    );
    t.finish(&q).await.expect("finish");
}

/// A transport that pushes tasks wakes their node's worker soon after they are published;
/// one that does not push never says it pushed a task ([`ShuffleTransport::pushed`]).
pub async fn pushed_tasks_wake_their_node(t: Arc<dyn ShuffleTransport>) {
    let q = unique("push");
    let node = unique("pushed");
    if !t.pushes_tasks() {
        t.publish_tasks(&q, "coord", &[task(&q, 0, 1, &node)])
            .await
            .expect("publish");
        let found = poll_until(t.as_ref(), &node, 1).await;
        assert!(
            !t.pushed(&found[0].key()),
            "a transport that does not push says it pushed a task"
        );
        t.finish(&q).await.expect("finish");
        return;
    }
    let waiter = {
        let t = Arc::clone(&t);
        let node = node.clone();
        tokio::spawn(async move { t.tasks_arrived(&node).await })
    };
    // The worker is waiting before the tasks are published.
    apiary_storage::time::sleep(Duration::from_millis(50)).await;
    t.publish_tasks(&q, "coord", &[task(&q, 0, 1, &node)])
        .await
        .expect("publish");
    let clock = apiary_storage::SystemClock::new();
    apiary_storage::time::timeout(&clock, Duration::from_secs(2), waiter)
        .await
        .expect("tasks_arrived returns within 2 s of the publication")
        .expect("the waiter ran");
    poll_until(t.as_ref(), &node, 1).await;
    t.finish(&q).await.expect("finish");
}
