//! How evenly the two nodes' tasks end: a two-node query waits for the slower task, so the
//! time the slower one ends after the pair's mean is time the faster node sat idle. Tasks
//! share cells and steal the last ones, so the gap is at most about one cell's read; this
//! measures what it costs, from each task's round trip in `EXPLAIN ANALYZE`.

use apiary::SqlSession;
use apiary_benches::harness::result_rows;

/// The round trips (ms) of the task lines of an `EXPLAIN ANALYZE` of a distributed query.
pub(crate) fn round_trips(plan: &str) -> Vec<f64> {
    plan.lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with("task="))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|word| word.strip_prefix("round_trip="))
                .and_then(|ms| ms.strip_suffix("ms"))
                .and_then(|ms| ms.parse().ok())
        })
        .collect()
}

/// How unevenly one run's tasks ended: `(last − first, last − mean)` of their round trips;
/// `None` for fewer than two tasks.
pub(crate) fn spread(trips: &[f64]) -> Option<(f64, f64)> {
    if trips.len() < 2 {
        return None;
    }
    let last = trips.iter().copied().fold(f64::MIN, f64::max);
    let first = trips.iter().copied().fold(f64::MAX, f64::min);
    let mean = trips.iter().sum::<f64>() / trips.len() as f64;
    Some((last - first, last - mean))
}

/// Runs each query `runs` times under `EXPLAIN ANALYZE` and prints how far apart its
/// tasks ended on average, and what the slower task cost against the query's median time
/// on two nodes (`two_node_ms`, in query order).
pub(crate) async fn report(
    session: &mut SqlSession,
    queries: &[(&str, &str)],
    two_node_ms: &[f64],
    runs: usize,
) {
    println!(
        "\nhow evenly the two tasks end ({runs} EXPLAIN ANALYZE runs a query; mean ms): gap between them | slower one past their mean | that as a share of the query"
    );
    let (mut losses, mut shares) = (Vec::new(), Vec::new());
    for ((name, sql), &query_ms) in queries.iter().zip(two_node_ms) {
        let mut spreads = Vec::new();
        for _ in 0..runs {
            let plan = result_rows(
                &session
                    .sql(&format!("EXPLAIN ANALYZE {sql}"))
                    .await
                    .unwrap_or_else(|e| panic!("{name}: {e}")),
            )
            .join("\n");
            spreads.extend(spread(&round_trips(&plan)));
        }
        if spreads.is_empty() {
            println!("  {name:<6} (ran as one task)");
            continue;
        }
        let n = spreads.len() as f64;
        let gap = spreads.iter().map(|s| s.0).sum::<f64>() / n;
        let loss = spreads.iter().map(|s| s.1).sum::<f64>() / n;
        let share = 100.0 * loss / query_ms;
        println!("  {name:<6} {gap:>6.1} | {loss:>6.1} | {share:>5.1}%");
        losses.push(loss);
        shares.push(share);
    }
    if !losses.is_empty() {
        let n = losses.len() as f64;
        println!(
            "the slower task ends {:.1} ms past the mean of the two, on average: {:.1}% of a two-node query",
            losses.iter().sum::<f64>() / n,
            shares.iter().sum::<f64>() / n
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_come_from_the_task_lines_only() {
        let plan = "\
DistributedExec: frame=ssb.sf.lineorder, tasks=2, round_trip=999ms
    task=0 node=a attempt=1 cells=9 time=144ms planning=3ms plan=reused round_trip=146ms via=flight
    task=1 node=b attempt=1 cells=7 time=131ms planning=2ms plan=reused round_trip=132ms via=flight
    task=2 node=c attempt=1 cells=0 time=1ms round_trip=oops";
        assert_eq!(round_trips(plan), [146.0, 132.0]);
    }

    #[test]
    fn the_spread_is_the_last_task_against_the_first_and_the_mean() {
        assert_eq!(spread(&[146.0, 132.0]), Some((14.0, 7.0)));
        assert_eq!(spread(&[10.0, 10.0, 16.0]), Some((6.0, 4.0)));
        assert_eq!(spread(&[10.0]), None);
        assert_eq!(spread(&[]), None);
    }
}
