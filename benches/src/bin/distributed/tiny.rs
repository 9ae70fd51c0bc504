//! The fixed cost of distributing a tiny query at the default task poll interval (1 s): on
//! nodes just started (first contact), on nodes idle past their busy window, on active
//! ones and as a script's next statement; and the coordinator's storage requests for it.

#![allow(clippy::disallowed_methods)] // real processes and real time: waits and timings read the system clock
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use apiary::apiary_storage::{CountsHandle as Counts, RequestCounts};
use apiary::{Apiary, SqlSession};

use crate::processes::{Nodes, node, wait_alive};
use crate::{Args, session};

/// Measures and prints the tiny query's added time on fresh pairs of nodes.
pub(crate) async fn measure(ap: &Apiary, counts: &Counts, storage: &str, state: &Path, a: &Args) {
    // The fixed cost at the defaults (task poll 1 s): a query over one tiny frame.
    let _ = ap.drop_frame("ssb", "sf", "tiny").await;
    ap.create_frame("ssb", "sf", "tiny", &[("x", "int64")], &[])
        .await
        .expect("tiny");
    let batch = arrow_array::RecordBatch::try_from_iter([(
        "x",
        Arc::new(arrow_array::Int64Array::from(vec![1, 2, 3])) as _,
    )])
    .expect("batch");
    ap.write_to_frame("ssb", "sf", "tiny", [batch])
        .await
        .expect("write tiny");
    let tiny = "SELECT SUM(x) FROM tiny";
    let mut plain = session(ap, "never").await;
    let mut spread = session(ap, "always").await;
    // On nodes just started (never given a task, never reached by this coordinator: it
    // opens its links to them, they read their first cell), on active ones (given a task
    // in the last minute: they look four times as often), and as a script's next statement
    // (published right after the last answer: the nodes finished a task within 100 ms and
    // look every millisecond).
    let mut fresh = Vec::new();
    let mut active = Vec::new();
    let mut next = Vec::new();
    // The storage requests of the last distributed tiny query.
    let mut requests = Default::default();
    for i in 0..(a.runs * 3).max(5) {
        let ids = [format!("tiny-a{i}"), format!("tiny-b{i}")];
        let pair = Nodes(vec![
            node(storage, state, &ids[0], 0, "1s", a.memory_tier),
            node(storage, state, &ids[1], 1, "1s", a.memory_tier),
        ]);
        wait_alive(ap, &[&ids[0], &ids[1]]).await;
        // The coordinator's list of workers is at most two seconds old.
        apiary_storage::time::sleep(Duration::from_millis(2100)).await;
        // Idle once per pair; active and right after another `--tiny-per-pair` times each.
        let mut plan: Vec<(u8, bool, usize)> = vec![(0, true, 0)];
        for k in 0..a.tiny_per_pair {
            plan.push((1, true, k));
            plan.push((2, false, k));
        }
        for (which, wait, k) in plan {
            let added = match which {
                0 => &mut fresh,
                1 => &mut active,
                _ => &mut next,
            };
            // Queries arrive at any point of the workers' poll cycle, not in step with it.
            if wait {
                let ms = 137 * (i * a.tiny_per_pair + k) as u64 % 1000;
                apiary_storage::time::sleep(Duration::from_millis(ms)).await;
            }
            let (took, made) = added_time(ap, counts, &mut plain, &mut spread, tiny).await;
            added.push(took);
            requests = made;
        }
        drop(pair);
    }
    // On idle nodes: a pair that ran a query, then nothing for longer than a node's busy
    // window (60 s) while this coordinator also idled (its view of the swarm is stale).
    let mut idle = Vec::new();
    if a.idle_samples > 0 {
        let ids = ["tiny-idle-a".to_string(), "tiny-idle-b".to_string()];
        let _pair = Nodes(vec![
            node(storage, state, &ids[0], 0, "1s", a.memory_tier),
            node(storage, state, &ids[1], 1, "1s", a.memory_tier),
        ]);
        wait_alive(ap, &[&ids[0], &ids[1]]).await;
        spread.sql(tiny).await.expect("distributed tiny");
        for _ in 0..a.idle_samples {
            apiary_storage::time::sleep(Duration::from_secs(a.idle_secs)).await;
            idle.push(
                added_time(ap, counts, &mut plain, &mut spread, tiny)
                    .await
                    .0,
            );
        }
    }
    for (what, mut added) in [
        ("nodes just started (first contact)", fresh),
        ("nodes idle for a while", idle),
        ("active nodes", active),
        ("active nodes, right after another", next),
    ] {
        if added.is_empty() {
            continue;
        }
        added.sort_by(f64::total_cmp);
        let mean = added.iter().sum::<f64>() / added.len() as f64;
        println!(
            "tiny query on {what}, distributed at the default 1 s task poll{}: adds {:.1} ms mean, {:.1} ms median, {:.1} ms p99, {:.1} ms max over {} runs",
            if a.flight { " over Flight" } else { "" },
            mean * 1e3,
            added[added.len() / 2] * 1e3,
            added[(added.len() * 99 / 100).min(added.len() - 1)] * 1e3,
            added[added.len() - 1] * 1e3,
            added.len()
        );
    }
    println!(
        "coordinator storage requests per distributed tiny query: {} ({} GET, {} HEAD, {} PUT, {} LIST, {} DELETE)",
        requests.total(),
        requests.get,
        requests.head,
        requests.put + requests.conditional_put,
        requests.list,
        requests.delete
    );
}

/// The seconds `sql` takes distributed (`spread`) beyond its time run locally (`plain`)
/// just before.
async fn added_time(
    ap: &Apiary,
    counts: &Counts,
    plain: &mut SqlSession,
    spread: &mut SqlSession,
    sql: &str,
) -> (f64, RequestCounts) {
    let t = Instant::now();
    plain.sql(sql).await.expect("local tiny");
    let base = t.elapsed().as_secs_f64();
    // Only the distributed query's requests are counted (the local one probes the ledger
    // too); its objects are removed after its answer, so the count waits for that.
    ap.settle().await;
    let before = counts.snapshot();
    let t = Instant::now();
    spread.sql(sql).await.expect("distributed tiny");
    let added = t.elapsed().as_secs_f64() - base;
    ap.settle().await;
    (added, counts.snapshot() - before)
}
