//! `EXPLAIN` and `EXPLAIN ANALYZE` of a query kept local say why, and what to set to split
//! it; a split query's plan shows its tasks instead.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use arrow_array::cast::AsArray;

/// The `apiary_distribution` row of an explained query, if any.
async fn why(ap: &apiary::Apiary, settings: &[&str], sql: &str) -> Option<String> {
    let mut session = ap.sql_session().unwrap();
    for set in settings {
        session.sql(set).await.unwrap();
    }
    let result = session.sql(sql).await.unwrap();
    let mut found = None;
    for batch in result.batches() {
        let (kinds, plans) = (
            batch.column(0).as_string::<i32>(),
            batch.column(1).as_string::<i32>(),
        );
        for row in 0..batch.num_rows() {
            if kinds.value(row) == "apiary_distribution" {
                found = Some(plans.value(row).to_string());
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_kept_local_says_why_in_explain() {
    let s = common::in_process_swarm(&[("explain-a", Duration::from_millis(10))], |_| {}).await;
    let ap = &s.client;
    let query = "SELECT country, COUNT(*) FROM analytics.events.clicks GROUP BY country";
    for explain in ["EXPLAIN", "EXPLAIN ANALYZE"] {
        let sql = format!("{explain} {query}");
        let small = why(ap, &[], &sql).await.unwrap();
        assert!(small.starts_with("local: reads "), "{small}");
        assert!(
            small.contains(" < 64 MiB (APIARY_DISTRIBUTE_MIN_BYTES)"),
            "{small}"
        );
        assert!(small.contains("; 1 node alive;"), "{small}");
        assert!(
            small.ends_with("SET apiary.distribute = 'always' to split it"),
            "{small}"
        );
        let never = why(ap, &["SET apiary.distribute = 'never'"], &sql).await;
        assert_eq!(never.as_deref(), Some("local: apiary.distribute = 'never'"));
        // Split: the plan shows the tasks, and no reason to stay local.
        let split = why(ap, &["SET apiary.distribute = 'always'"], &sql).await;
        assert_eq!(split, None, "{sql}");
    }
    let nothing = why(ap, &[], "EXPLAIN SELECT 1").await.unwrap();
    assert_eq!(nothing, "local: the query reads no frame");
    // Not explained: the answer holds no such row.
    let answer = ap.sql(query).await.unwrap();
    assert_eq!(answer.schema().fields().len(), 2);
    assert_eq!(answer.schema().field(0).name(), "country");
}
