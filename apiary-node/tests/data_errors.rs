//! What the data cannot take is the user's error (`InvalidInput`), whether DataFusion finds
//! it while planning (a constant folded) or while running, locally or in a distributed
//! task: division by zero, a cast. Never "a bug in Apiary".

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use apiary::ErrorKind;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_in_the_data_are_invalid_input_locally_and_distributed() {
    let fast = Duration::from_millis(10);
    let s = common::in_process_swarm(&[("data-a", fast)], |_| {}).await;
    for (sql, says) in [
        ("SELECT 1 / 0", "divide by zero"),
        ("SELECT 7 % 0", "by zero"),
        (
            "SELECT event_id / 0 FROM analytics.events.clicks",
            "divide by zero",
        ),
        (
            "SELECT SUM(duration_ms % 0) FROM analytics.events.clicks",
            "by zero",
        ),
        ("SELECT CAST('x' AS INT)", "cannot cast"),
        (
            "SELECT CAST(page AS INT) FROM analytics.events.clicks",
            "cannot cast",
        ),
    ] {
        for mode in ["never", "always"] {
            let mut session = s.client.sql_session().unwrap();
            session
                .sql(&format!("SET apiary.distribute = '{mode}'"))
                .await
                .unwrap();
            let err = session.sql(sql).await.unwrap_err();
            let message = err.to_string();
            assert_eq!(
                err.kind(),
                ErrorKind::InvalidInput,
                "{mode}: {sql}: {message}"
            );
            assert!(
                message.to_lowercase().contains(says),
                "{mode}: {sql}: {message}"
            );
            assert!(!message.contains("bug"), "{mode}: {sql}: {message}");
        }
    }
}
