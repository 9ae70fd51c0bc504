//! Session statements: `USE` scoped to its session, `SHOW` and `DESCRIBE`, and SQL that
//! would touch files or change data refused.

use super::*;

#[tokio::test]
async fn use_is_scoped_to_its_session() {
    let dir = tempfile::tempdir().unwrap();
    let ap = tutorial(&dir, 1).await;

    let mut one = ap.sql_session().unwrap();
    one.sql("USE analytics.events").await.unwrap();
    assert_eq!(
        int(&one.sql("SELECT COUNT(*) FROM clicks").await.unwrap(), 0),
        [10_000]
    );
    one.sql("USE analytics").await.unwrap();
    assert_eq!(
        int(
            &one.sql("SELECT COUNT(*) FROM events.clicks").await.unwrap(),
            0
        ),
        [10_000]
    );

    let mut two = ap.sql_session().unwrap();
    let err = two
        .sql("SELECT COUNT(*) FROM clicks")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("USE hive.box"), "{err}");
    // One text, one session: USE applies to the statements after it.
    assert_eq!(
        one_int(&ap, "USE analytics.events; SELECT COUNT(*) FROM clicks").await,
        10_000
    );
    assert!(ap.sql("SELECT COUNT(*) FROM clicks").await.is_err());

    let err = two.sql("USE nowhere").await.unwrap_err().to_string();
    assert!(
        err.contains("nowhere") && err.contains("does not exist"),
        "{err}"
    );
    let err = ap
        .sql("SELECT * FROM analytics.events.clickz")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("analytics.events.clickz") && err.contains("SHOW FRAMES IN analytics.events"),
        "{err}"
    );
    let err = ap
        .sql("SELECT * FROM analytics.nobox.clicks")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("analytics.nobox") && err.contains("does not exist"),
        "{err}"
    );
}

#[tokio::test]
async fn show_and_describe() {
    let dir = tempfile::tempdir().unwrap();
    let ap = tutorial(&dir, 1).await;
    ap.create_hive("warehouse").await.unwrap();

    let r = ap.sql("SHOW HIVES").await.unwrap();
    assert_eq!(text(&r, 0), ["analytics", "warehouse"]);
    let r = ap.sql("SHOW BOXES IN analytics").await.unwrap();
    assert_eq!(text(&r, 1), ["events"]);
    let r = ap.sql("SHOW FRAMES IN analytics.events").await.unwrap();
    assert_eq!(text(&r, 2), ["clicks"]);
    assert_eq!(int(&r, 5), [10_000], "rows");
    assert_eq!(text(&r, 7), ["country"], "partition_by");
    let r = ap.sql("USE analytics; SHOW FRAMES").await.unwrap();
    assert_eq!(text(&r, 2), ["clicks"]);

    let r = ap.sql("DESCRIBE analytics.events.clicks").await.unwrap();
    assert_eq!(
        text(&r, 0),
        ["event_id", "user_id", "page", "duration_ms", "country"]
    );
    assert_eq!(text(&r, 1), ["int64", "utf8", "utf8", "int64", "utf8"]);
    assert_eq!(text(&r, 2), ["true", "true", "true", "true", "false"]);
    assert_eq!(text(&r, 3), ["false", "false", "false", "false", "true"]);
    assert_eq!(int(&r, 5)[0], 8, "cells");
    assert_eq!(int(&r, 6)[0], 10_000, "rows");
    assert!(int(&r, 7)[0] > 0, "bytes");
}

#[tokio::test]
async fn sql_cannot_touch_files_or_change_data() {
    let dir = tempfile::tempdir().unwrap();
    let ap = tutorial(&dir, 1).await;
    let secret = dir.path().join("secret.csv");
    std::fs::write(&secret, "a\n1\n").unwrap();
    let s = secret.display();
    for (sql, needle) in [
        (
            format!("CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '{s}'"),
            "create_frame",
        ),
        (
            format!("COPY (SELECT 1) TO '{}/out.csv'", dir.path().display()),
            "cannot write files",
        ),
        (format!("SELECT * FROM '{s}'"), ""),
        (
            "INSERT INTO analytics.events.clicks VALUES (1, 'u', '/', 1, 'us')".into(),
            "write_to_frame",
        ),
        (
            "DELETE FROM analytics.events.clicks".into(),
            "overwrite_frame",
        ),
        ("DROP TABLE analytics.events.clicks".into(), "drop_frame"),
        (
            "CREATE TABLE analytics.events.t (x int)".into(),
            "create_frame",
        ),
        (
            "SET datafusion.runtime.temp_directory = '/tmp'".into(),
            "operator",
        ),
        (
            "SET datafusion.catalog.default_catalog = 'x'".into(),
            "operator",
        ),
    ] {
        let err = ap.sql(&sql).await.unwrap_err();
        assert!(matches!(err, ApiaryError::Query(_)), "{sql}: {err:?}");
        assert!(err.to_string().contains(needle), "{sql}: {err}");
    }
    assert!(!dir.path().join("out.csv").exists());
    assert_eq!(
        one_int(&ap, "SELECT COUNT(*) FROM analytics.events.clicks").await,
        10_000
    );
    // Deeply nested SQL is refused by the parser's recursion limit, not a stack overflow.
    let deep = format!("SELECT {}1{}", "(".repeat(5000), ")".repeat(5000));
    assert!(ap.sql(&deep).await.is_err());
    let deep = format!("SELECT 1 WHERE {}", vec!["NOT"; 5000].join(" ") + " true");
    assert!(ap.sql(&deep).await.is_err());
    // Malformed SQL is an error, not a panic.
    for sql in [
        "SELEC 1",
        "SELECT 'open",
        "SELECT * FROM",
        ";",
        "SELECT 1 +",
        "EXPLAIN",
        "USE a.b.c",
    ] {
        assert!(ap.sql(sql).await.is_err(), "{sql}");
    }
}
