//! Query shapes distributed over a swarm of two nodes running in this process (a client
//! coordinates, so every task crosses the storage transport): each answer equals the local
//! one, whatever mix of aggregates, aliases, subqueries and expression depth the query has,
//! and a user's error inside a task fails the query once, with the kind it has locally.
//! The process-level differential test (`distributed.rs`) runs the same kinds of queries
//! through `apiary node` processes.

#![allow(clippy::unwrap_used)]
#![allow(clippy::disallowed_methods)] // real processes and real time: waits and timings read the system clock

mod common;

use std::time::Duration;

use apiary::{Apiary, ErrorKind};
use proptest::prelude::*;

async fn swarm() -> common::Swarm {
    let fast = Duration::from_millis(10);
    common::in_process_swarm(&[("shape-a", fast), ("shape-b", fast)], |_| {}).await
}

/// `sql`'s answer with `apiary.distribute` set to `mode`, as sorted text.
async fn answer(ap: &Apiary, mode: &str, sql: &str) -> Result<Vec<String>, apiary::ApiaryError> {
    answer_with(ap, mode, &[], sql).await
}

/// `sql`'s answer in a session with `settings` and `apiary.distribute` set to `mode`.
async fn answer_with(
    ap: &Apiary,
    mode: &str,
    settings: &[&str],
    sql: &str,
) -> Result<Vec<String>, apiary::ApiaryError> {
    let mut s = ap.sql_session()?;
    s.sql(&format!("SET apiary.distribute = '{mode}'")).await?;
    for set in settings {
        s.sql(set).await?;
    }
    let r = s.sql(sql).await?;
    Ok(common::canonical(r.batches()))
}

/// The plan `EXPLAIN` shows for `sql` when it is distributed.
async fn plan(ap: &Apiary, sql: &str) -> String {
    common::canonical(
        ap.sql(&format!("SET apiary.distribute = 'always'; EXPLAIN {sql}"))
            .await
            .unwrap()
            .batches(),
    )
    .join("\n")
}

/// Asserts that `sql` answers distributed as it does locally (or fails with the same kind of
/// error); returns whether it was distributed, or `None` when DataFusion refuses it locally
/// (a query whose filter rules every cell out is answered by the planner, not distributed).
async fn answers_like_local(ap: &Apiary, sql: &str) -> Option<bool> {
    let local = match answer(ap, "never", sql).await {
        Ok(rows) => rows,
        Err(local) => {
            // DataFusion refuses some queries (two aggregates it names alike, such as
            // `AVG(x)` and `AVG(CAST(x AS DOUBLE))`): so must the swarm.
            let spread = answer(ap, "always", sql).await.unwrap_err();
            assert_eq!(spread.kind(), local.kind(), "{sql}: {spread} / {local}");
            return None;
        }
    };
    let spread = answer(ap, "always", sql)
        .await
        .unwrap_or_else(|e| panic!("distributed: {sql}: {e}"));
    assert_eq!(spread, local, "distributed answer differs: {sql}");
    Some(plan(ap, sql).await.contains("DistributedExec"))
}

/// Asserts that `sql` is distributed and answers as it does locally; returns the shape of
/// the split (`partial_aggregate`, `rows`, …) that `EXPLAIN` shows.
async fn same_answer(ap: &Apiary, sql: &str) -> String {
    assert_eq!(
        answers_like_local(ap, sql).await,
        Some(true),
        "not distributed: {sql}"
    );
    let plan = plan(ap, sql).await;
    plan.split("shape=")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or_else(|| panic!("no shape in {plan}"))
        .to_string()
}

const CLICKS: &str = "analytics.events.clicks";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregates_over_one_column_answer_like_local() {
    let s = swarm().await;
    for sql in [
        // SUM and AVG of one column: both need a partial sum.
        format!(
            "SELECT country, SUM(duration_ms) AS s, AVG(duration_ms) AS a FROM {CLICKS} GROUP BY country"
        ),
        format!("SELECT SUM(duration_ms), AVG(duration_ms) FROM {CLICKS}"),
        // COUNT and AVG: both need a partial count.
        format!("SELECT COUNT(duration_ms), AVG(duration_ms) FROM {CLICKS}"),
        // A float column, where AVG's partial sum is the query's own SUM.
        format!(
            "SELECT SUM(CAST(duration_ms AS DOUBLE)) AS s, AVG(CAST(duration_ms AS DOUBLE)) AS a, COUNT(duration_ms) FROM {CLICKS}"
        ),
        format!(
            "SELECT page, COUNT(*), COUNT(page), COUNT(DISTINCT page), MIN(duration_ms), MAX(duration_ms), AVG(duration_ms), SUM(duration_ms), AVG(event_id) FROM {CLICKS} GROUP BY page"
        ),
    ] {
        // Aggregated in the tasks, not only scanned there.
        assert_eq!(
            same_answer(&s.client, &sql).await,
            "partial_aggregate",
            "{sql}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aliases_and_decorrelated_subqueries_resolve_on_the_workers() {
    let s = swarm().await;
    for sql in [
        // One frame joined twice under two aliases, each with its own filter.
        format!(
            "SELECT c.country, p1.section AS s1, p2.section AS s2, COUNT(*) AS n \
             FROM {CLICKS} c JOIN analytics.events.pages p1 ON c.page = p1.page \
             JOIN analytics.events.pages p2 ON c.page = p2.page \
             WHERE p1.section = 'shop' AND p2.page <> '/p9' GROUP BY c.country, p1.section, p2.section"
        ),
        // A correlated EXISTS over the split frame, decorrelated into a semi join.
        format!(
            "SELECT p.section, COUNT(*) AS n FROM analytics.events.pages p WHERE EXISTS \
             (SELECT 1 FROM {CLICKS} c WHERE c.page = p.page AND c.duration_ms > 800) \
             GROUP BY p.section"
        ),
        // A correlated EXISTS with a non-equal correlation, read from the split frame.
        format!(
            "SELECT c1.country, COUNT(*) AS n FROM {CLICKS} c1 WHERE EXISTS \
             (SELECT 1 FROM analytics.events.pages p WHERE p.page = c1.page AND p.section <> c1.country) \
             GROUP BY c1.country"
        ),
        format!(
            "SELECT c1.country, COUNT(*) AS n FROM {CLICKS} c1 WHERE NOT EXISTS \
             (SELECT 1 FROM analytics.events.pages p WHERE p.page = c1.page AND p.section = 'shop') \
             GROUP BY c1.country"
        ),
    ] {
        let shape = same_answer(&s.client, &sql).await;
        println!("{shape}: {sql}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_expressions_work_distributed_and_too_deep_ones_are_refused() {
    let s = swarm().await;
    let terms = |n: usize, sep: &str, term: &str| vec![term; n].join(sep);
    for sql in [
        format!(
            "SELECT SUM(event_id + {}) FROM {CLICKS}",
            terms(48, " + ", "1")
        ),
        format!(
            "SELECT COUNT(*) FROM {CLICKS} WHERE {}",
            terms(60, " AND ", "event_id >= 0")
        ),
        format!(
            "SELECT country, MAX(country || {}) FROM {CLICKS} GROUP BY country",
            terms(60, " || ", "'x'")
        ),
    ] {
        same_answer(&s.client, &sql).await;
    }
    // Far past what the planner takes: a clear refusal, locally and distributed, never a
    // stack overflow.
    let deep = format!(
        "SELECT SUM(event_id + {}) FROM {CLICKS}",
        terms(5000, " + ", "1")
    );
    for mode in ["never", "always"] {
        let err = answer(&s.client, mode, &deep).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{mode}: {err}");
        assert!(err.to_string().contains("deep"), "{mode}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_in_the_data_fails_the_query_once_with_its_kind() {
    let s = swarm().await;
    let sql = format!("SELECT SUM(CAST(country AS INT)) FROM {CLICKS}");
    let local = answer(&s.client, "never", &sql).await.unwrap_err();
    assert_eq!(local.kind(), ErrorKind::InvalidInput, "{local}");
    let spread = answer(&s.client, "always", &sql).await.unwrap_err();
    assert_eq!(spread.kind(), ErrorKind::InvalidInput, "{spread}");
    let message = spread.to_string();
    assert!(message.contains("Cannot cast"), "{message}");
    // Failed in its first round: not retried as if a node had gone away.
    assert!(
        !message.contains("failed 2 times") && !message.contains("failed 3 times"),
        "{message}"
    );
    // Its objects are removed (in the background, once the error is returned), and so is
    // what another task published after that.
    s.client.settle().await;
    let backend = apiary_storage::open(s.client.storage()).await.unwrap();
    let started = std::time::Instant::now();
    loop {
        let left = backend
            .list(&apiary_storage::Path::from("_queries"))
            .await
            .unwrap();
        if left.is_empty() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "objects left: {:?}",
            left.iter().map(|m| m.key.to_string()).collect::<Vec<_>>()
        );
        apiary::apiary_storage::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sessions_settings_travel_with_its_tasks() {
    let s = swarm().await;
    // A text read as a time in the session's zone: the instant depends on the zone.
    let sql = format!(
        "SELECT country, MAX(CAST(CAST(CONCAT('2024-01-01T0', CAST(event_id % 10 AS VARCHAR), \
         ':00:00') AS TIMESTAMP WITH TIME ZONE) AS BIGINT)) AS t FROM {CLICKS} GROUP BY country"
    );
    let zone = [
        "SET TIME ZONE '+05:00'",
        "SET datafusion.execution.batch_size = 100",
    ];
    let utc = answer(&s.client, "never", &sql).await.unwrap();
    let local = answer_with(&s.client, "never", &zone, &sql).await.unwrap();
    assert_ne!(local, utc, "the zone changes the answer");
    let spread = answer_with(&s.client, "always", &zone, &sql).await.unwrap();
    assert_eq!(spread, local, "the tasks ran in the session's zone");
    // The settings show in the plan, as the tasks get them.
    let mut session = s.client.sql_session().unwrap();
    for set in ["SET apiary.distribute = 'always'"].iter().chain(&zone) {
        session.sql(set).await.unwrap();
    }
    let plan = common::canonical(
        session
            .sql(&format!("EXPLAIN {sql}"))
            .await
            .unwrap()
            .batches(),
    )
    .join("\n");
    assert!(
        plan.contains("datafusion.execution.time_zone=+05:00"),
        "{plan}"
    );
    assert!(
        plan.contains("datafusion.execution.batch_size=100"),
        "{plan}"
    );
}

/// One aggregate of a generated query.
fn aggregate() -> impl Strategy<Value = String> {
    let column = prop::sample::select(vec![
        "duration_ms",
        "event_id",
        "page",
        "country",
        "user_id",
    ]);
    let numeric = prop::sample::select(vec!["duration_ms", "event_id"]);
    prop_oneof![
        Just("COUNT(*)".to_string()),
        column.clone().prop_map(|c| format!("COUNT({c})")),
        column.clone().prop_map(|c| format!("COUNT(DISTINCT {c})")),
        column.clone().prop_map(|c| format!("MIN({c})")),
        column.prop_map(|c| format!("MAX({c})")),
        numeric.clone().prop_map(|c| format!("SUM({c})")),
        numeric.clone().prop_map(|c| format!("AVG({c})")),
        numeric.clone().prop_map(|c| format!("SUM(DISTINCT {c})")),
        numeric.prop_map(|c| format!("AVG(CAST({c} AS DOUBLE))")),
    ]
}

/// A generated aggregate query: a mix of aggregates (repeats included) over the clicks,
/// grouped or not, with an optional filter (some match nothing), HAVING and ORDER BY … LIMIT.
fn aggregate_query() -> impl Strategy<Value = String> {
    let groups = prop::sample::subsequence(vec!["country", "page", "user_id"], 0..=2);
    let filter = prop::sample::select(vec![
        "",
        " WHERE duration_ms > 450",
        " WHERE page IS NULL",
        " WHERE country = 'nowhere'",
        " WHERE event_id % 3 = 0",
    ]);
    (
        prop::collection::vec(aggregate(), 1..5),
        groups,
        filter,
        any::<bool>(),
        prop::option::of(1usize..6),
    )
        .prop_map(|(aggs, groups, filter, having, limit)| {
            let mut select: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
            select.extend(aggs.iter().enumerate().map(|(i, a)| format!("{a} AS a{i}")));
            let mut sql = format!("SELECT {} FROM {CLICKS}{filter}", select.join(", "));
            if !groups.is_empty() {
                sql.push_str(&format!(" GROUP BY {}", groups.join(", ")));
                if having {
                    sql.push_str(" HAVING COUNT(*) > 1");
                }
                if let Some(n) = limit {
                    // Every output column orders the rows, so the first n are one set.
                    let all = (1..=select.len())
                        .map(|i| format!("{i} NULLS FIRST"))
                        .collect::<Vec<_>>();
                    sql.push_str(&format!(" ORDER BY {} LIMIT {n}", all.join(", ")));
                }
            }
            sql
        })
}

#[test]
fn generated_aggregate_queries_answer_like_local() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let s = runtime.block_on(swarm());
    let cases = std::env::var("APIARY_SHAPE_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(32);
    let answered = std::sync::atomic::AtomicU32::new(0);
    proptest!(ProptestConfig::with_cases(cases), |(sql in aggregate_query())| {
        if let Some(distributed) = runtime.block_on(answers_like_local(&s.client, &sql)) {
            answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            // Only a filter on the partition column that no cell matches keeps an
            // answerable query off the swarm.
            prop_assert_eq!(
                distributed,
                !sql.contains("country = 'nowhere'"),
                "distributed or not: {}", sql
            );
        }
    });
    // Most generated queries are ones DataFusion answers.
    let answered = answered.into_inner();
    assert!(answered >= cases / 4, "{answered} of {cases} answered");
}
