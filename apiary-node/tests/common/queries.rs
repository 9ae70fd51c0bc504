//! The queries and helpers the distributed differential tests share (storage and Flight).

use apiary::Apiary;

pub const QUERIES: &[&str] = &[
    "SELECT country, COUNT(*) AS n, SUM(duration_ms) AS total, MIN(duration_ms) AS lo, MAX(duration_ms) AS hi FROM analytics.events.clicks GROUP BY country",
    "SELECT page, AVG(duration_ms) AS avg_ms FROM analytics.events.clicks GROUP BY page",
    "SELECT COUNT(DISTINCT user_id) AS users, COUNT(DISTINCT page) AS pages FROM analytics.events.clicks",
    "SELECT country, COUNT(DISTINCT user_id) AS users, SUM(duration_ms) AS total FROM analytics.events.clicks GROUP BY country",
    "SELECT event_id, duration_ms FROM analytics.events.clicks ORDER BY duration_ms DESC NULLS LAST, event_id LIMIT 7",
    "SELECT page, COUNT(*) AS n FROM analytics.events.clicks GROUP BY page HAVING COUNT(*) > 400",
    "SELECT * FROM (SELECT country, event_id, ROW_NUMBER() OVER (PARTITION BY country ORDER BY duration_ms DESC NULLS LAST, event_id) AS r FROM analytics.events.clicks) WHERE r <= 2",
    "SELECT p.section, COUNT(*) AS n, SUM(c.duration_ms) AS total FROM analytics.events.clicks c JOIN analytics.events.pages p ON c.page = p.page GROUP BY p.section",
    "SELECT c.page, p.section FROM analytics.events.clicks c LEFT JOIN analytics.events.pages p ON c.page = p.page WHERE c.event_id < 5",
    "SELECT COUNT(*) AS n FROM analytics.events.clicks WHERE country = 'nowhere'",
    "SELECT country, SUM(duration_ms) FROM analytics.events.clicks WHERE duration_ms > 100000 GROUP BY country",
    "SELECT page, COUNT(*) AS n FROM analytics.events.clicks WHERE page IS NULL GROUP BY page",
    "SELECT * FROM analytics.events.clicks WHERE event_id % 997 = 3",
    "SELECT COUNT(*), SUM(duration_ms) FROM analytics.events.clicks",
    "SELECT COUNT(*) FROM analytics.events.clicks",
    "SELECT country, page, COUNT(*) AS n, MAX(event_id) AS last FROM analytics.events.clicks WHERE country = 'us' GROUP BY country, page",
    // Aggregates that need the same partial (a sum, a count) of one column.
    "SELECT country, SUM(duration_ms) AS s, AVG(duration_ms) AS a, COUNT(duration_ms) AS n FROM analytics.events.clicks GROUP BY country",
    // A frame under two aliases, and a correlated subquery: fragments the unparser cannot
    // write whole run the split frame's scan in the tasks.
    "SELECT c.country, p1.section AS s1, COUNT(*) AS n FROM analytics.events.clicks c JOIN analytics.events.pages p1 ON c.page = p1.page JOIN analytics.events.pages p2 ON c.page = p2.page WHERE p1.section = 'shop' AND p2.page <> '/p9' GROUP BY c.country, p1.section",
    "SELECT c1.country, COUNT(*) AS n FROM analytics.events.clicks c1 WHERE EXISTS (SELECT 1 FROM analytics.events.pages p WHERE p.page = c1.page AND p.section <> c1.country) GROUP BY c1.country",
];

/// Settings that make a distributed query cut the test's 200-row cells into parts.
pub const IN_PARTS: &[&str] = &[
    "SET apiary.distribute = 'always'",
    "SET apiary.min_part_rows = 16",
];

pub async fn answer(ap: &Apiary, mode: &str, sql: &str) -> Vec<String> {
    answer_with(ap, &[&format!("SET apiary.distribute = '{mode}'")], sql).await
}

/// The answer to `sql` in a session with `settings`.
pub async fn answer_with(ap: &Apiary, settings: &[&str], sql: &str) -> Vec<String> {
    let mut s = ap.sql_session().unwrap();
    for set in settings {
        s.sql(set).await.unwrap();
    }
    let r = s
        .sql(sql)
        .await
        .unwrap_or_else(|e| panic!("{settings:?}: {sql}: {e}"));
    super::canonical(r.batches())
}

pub async fn explain_analyze(ap: &Apiary, sql: &str) -> String {
    explain_analyze_with(ap, &["SET apiary.distribute = 'always'"], sql).await
}

pub async fn explain_analyze_with(ap: &Apiary, settings: &[&str], sql: &str) -> String {
    answer_with(ap, settings, &format!("EXPLAIN ANALYZE {sql}"))
        .await
        .join("\n")
}

/// The values of `key=value` in `plan`'s task lines, in order.
pub fn task_fields(plan: &str, key: &str) -> Vec<String> {
    plan.split(&format!(" {key}="))
        .skip(1)
        .filter_map(|s| s.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// The cells (and parts of cells) `plan`'s tasks read, summed over its task lines.
pub fn units_read(plan: &str) -> usize {
    let tasks: String = plan
        .lines()
        .filter(|l| l.trim_start().starts_with("task="))
        .collect::<Vec<_>>()
        .join("\n");
    task_fields(&tasks, "cells")
        .iter()
        .map(|c| c.parse::<usize>().unwrap())
        .sum()
}

pub fn nodes_in(plan: &str) -> std::collections::BTreeSet<String> {
    task_fields(plan, "node").into_iter().collect()
}
