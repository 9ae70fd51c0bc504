//! Time travel in SQL and the API: every spelling of a version clause, every refusal, the
//! retention error, `apiary.history` and `apiary.changes` (histories generated at random are
//! in `travel_history.rs`).

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use apiary::Apiary;
use apiary_ledger::FrameRef;
use apiary_ledger::travel::format_ms;

const F: &str = "analytics.events.clicks";

async fn count(ap: &Apiary, sql: &str) -> i64 {
    let rows = common::canonical(
        ap.sql(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .batches(),
    );
    assert_eq!(rows.len(), 1, "{sql}: {rows:?}");
    rows[0].parse().unwrap()
}

async fn error(ap: &Apiary, sql: &str) -> String {
    match ap.sql(sql).await {
        Ok(r) => panic!("{sql} answered {:?}", common::canonical(r.batches())),
        Err(e) => e.to_string(),
    }
}

/// Versions: 0 create, 1 = 100 rows, 2 = 200 rows, 3 = overwrite with 10 rows.
async fn three_versions() -> (tempfile::TempDir, Apiary) {
    let dir = tempfile::tempdir().unwrap();
    let ap = Apiary::open(dir.path().join("data").to_str().unwrap())
        .await
        .unwrap();
    common::create_clicks_frame(&ap).await;
    for range in [0..100, 100..200] {
        ap.write_to_frame("analytics", "events", "clicks", [common::clicks(range)])
            .await
            .unwrap();
        apiary_storage::time::sleep(Duration::from_millis(5)).await;
    }
    ap.overwrite_frame(
        "analytics",
        "events",
        "clicks",
        [common::clicks(1000..1010)],
    )
    .await
    .unwrap();
    (dir, ap)
}

/// Commit stamps by version.
async fn stamps(ap: &Apiary) -> Vec<i64> {
    ap.frame_history("analytics", "events", "clicks")
        .await
        .unwrap()
        .iter()
        .map(|c| c.committed_at_ms)
        .collect()
}

#[tokio::test]
async fn every_spelling_reads_the_same_past_version() {
    let (_dir, ap) = three_versions().await;
    let stamps = stamps(&ap).await;
    assert!(stamps[1] < stamps[2], "{stamps:?}");
    for (sql, rows) in [
        (format!("SELECT COUNT(*) FROM {F}"), 10),
        (format!("SELECT COUNT(*) FROM {F} VERSION AS OF 1"), 100),
        (format!("SELECT COUNT(*) FROM {F} VERSION AS OF 0"), 0),
        (format!("SELECT COUNT(*) FROM {F} AT (VERSION => 2)"), 200),
        (format!("SELECT COUNT(*) FROM {F} at(version => 1)"), 100),
        (format!("SELECT COUNT(*) FROM {F} VERSION AS OF 3"), 10),
        // A time between two commits reads the earlier one; a zoneless time is UTC.
        (
            format!(
                "SELECT COUNT(*) FROM {F} TIMESTAMP AS OF '{}'",
                format_ms(stamps[2] - 1)
            ),
            100,
        ),
        (
            format!(
                "SELECT COUNT(*) FROM {F} TIMESTAMP AS OF '{}'",
                format_ms(stamps[2] - 1).trim_end_matches('Z')
            ),
            100,
        ),
        (
            format!(
                "SELECT COUNT(*) FROM {F} FOR SYSTEM_TIME AS OF TIMESTAMP '{}'",
                format_ms(stamps[2])
            ),
            200,
        ),
        (
            format!(
                "SELECT COUNT(*) FROM {F} AT (TIMESTAMP => '{}')",
                format_ms(stamps[1])
            ),
            100,
        ),
        (
            format!("SELECT COUNT(*) FROM {F} FOR SYSTEM_TIME AS OF now()"),
            10,
        ),
        (
            format!("SELECT COUNT(*) FROM {F} TIMESTAMP AS OF CAST(now() AS TIMESTAMP)"),
            10,
        ),
        // A frame with itself at two versions, and columns qualified by the frame's name.
        (
            format!(
                "SELECT COUNT(*) FROM {F} VERSION AS OF 1 AS old JOIN {F} VERSION AS OF 2 AS new \
                 ON old.event_id = new.event_id"
            ),
            100,
        ),
        (
            format!(
                "SELECT COUNT(*) FROM {F} VERSION AS OF 2 WHERE clicks.event_id >= 100 AND \
                 clicks.event_id IN (SELECT event_id FROM {F} VERSION AS OF 1)"
            ),
            0,
        ),
        (
            format!(
                "SELECT COUNT(*) FROM (SELECT event_id FROM {F} VERSION AS OF 2 EXCEPT \
                 SELECT event_id FROM {F} VERSION AS OF 1)"
            ),
            100,
        ),
        (
            format!(
                "WITH old AS (SELECT * FROM {F} VERSION AS OF 1) SELECT COUNT(*) FROM old \
                 JOIN {F} AS now ON old.event_id = now.event_id"
            ),
            0,
        ),
    ] {
        assert_eq!(count(&ap, &sql).await, rows, "{sql}");
    }
    // Names completed by USE, and EXPLAIN of a past version.
    let mut session = ap.sql_session().unwrap();
    session.sql("USE analytics.events").await.unwrap();
    let r = session
        .sql("SELECT COUNT(*) FROM clicks VERSION AS OF 2")
        .await
        .unwrap();
    assert_eq!(common::canonical(r.batches()), vec!["200"]);
    let plan = common::canonical(
        session
            .sql("EXPLAIN SELECT * FROM clicks VERSION AS OF 1")
            .await
            .unwrap()
            .batches(),
    )
    .join("\n");
    assert!(plan.contains("clicks@1"), "{plan}");
    // The API reads the same versions.
    let rows = |batches: Vec<arrow_array::RecordBatch>| -> usize {
        batches.iter().map(|b| b.num_rows()).sum()
    };
    for (version, expected) in [(None, 10), (Some(1), 100), (Some(2), 200), (Some(0), 0)] {
        let read = ap
            .read_from_frame_at("analytics", "events", "clicks", version, &[])
            .await
            .unwrap();
        assert_eq!(rows(read), expected, "{version:?}");
    }
}

#[tokio::test]
async fn a_version_clause_on_anything_but_a_frame_is_refused() {
    let (_dir, ap) = three_versions().await;
    for (sql, says) in [
        (
            "WITH c AS (SELECT 1 AS x) SELECT * FROM c VERSION AS OF 1".to_string(),
            "`c` is a WITH query, not a frame",
        ),
        (
            format!("SELECT * FROM {F} TIMESTAMP AS OF now() - INTERVAL '1 day'"),
            "its first version was committed at",
        ),
        (
            format!("SELECT * FROM {F} TIMESTAMP AS OF '2999-01-01T00:00:00Z'"),
            "is in the future",
        ),
        (
            format!("SELECT * FROM {F} TIMESTAMP AS OF '2001-01-01 00:00:00'"),
            "its first version was committed at",
        ),
        (
            format!("SELECT * FROM {F} VERSION AS OF 99"),
            "has no version 99 yet: its newest is 3",
        ),
        (
            format!("SELECT * FROM {F} TIMESTAMP AS OF 42"),
            "is not a time",
        ),
        (
            format!("SELECT * FROM {F} TIMESTAMP AS OF 'yesterday'"),
            "is not a time",
        ),
        (
            format!("SELECT * FROM {F} AT (OFFSET => -60)"),
            "AT takes one of VERSION => n or TIMESTAMP => time",
        ),
        (
            format!("SELECT * FROM {F} BEFORE (VERSION => 2)"),
            "is not supported",
        ),
        (
            "SELECT * FROM analytics.events.nothing VERSION AS OF 1".to_string(),
            "does not exist",
        ),
        (
            "SELECT * FROM clicks VERSION AS OF 1".to_string(),
            "does not say which hive and box",
        ),
        (
            format!("SELECT * FROM apiary.changes('{F}', 2, 1)"),
            "from_version < to_version",
        ),
        (
            "SELECT * FROM apiary.history('analytics.events.nothing')".to_string(),
            "does not exist",
        ),
        (
            "SELECT * FROM apiary.history(1)".to_string(),
            "takes a frame's name as a string",
        ),
    ] {
        let e = error(&ap, &sql).await;
        assert!(e.contains(says), "{sql}: {e}");
    }
    // Not parsed at all: a VALUES list, a subquery or a table function cannot carry a
    // version.
    let history = format!("SELECT * FROM apiary.history('{F}') VERSION AS OF 1");
    for sql in [
        history.as_str(),
        "SELECT * FROM (VALUES (1)) AS v VERSION AS OF 1",
        "SELECT * FROM (SELECT 1) AS s VERSION AS OF 1",
    ] {
        error(&ap, sql).await;
    }
}

#[tokio::test]
async fn a_version_past_retention_names_the_oldest_retained() {
    let (_dir, ap) = three_versions().await;
    let ledger = ap
        .registry()
        .ledger(&FrameRef::new("analytics", "events", "clicks").unwrap())
        .await
        .unwrap();
    apiary_storage::time::sleep(Duration::from_millis(20)).await;
    // Retention zero: what the overwrite removed goes (the API refuses so short a
    // retention; the ledger's own call does not).
    let vacuumed = apiary_ledger::vacuum(&ledger, ap.registry().backend().as_ref(), Duration::ZERO)
        .await
        .unwrap();
    assert!(vacuumed.files_deleted > 0, "{vacuumed:?}");
    for sql in [
        format!("SELECT COUNT(*) FROM {F} VERSION AS OF 1"),
        format!("SELECT COUNT(*) FROM {F} VERSION AS OF 2"),
    ] {
        let e = error(&ap, &sql).await;
        assert!(
            e.contains("oldest retained version 3 (retention 0s)"),
            "{sql}: {e}"
        );
        assert!(!e.contains("not found"), "{e}");
    }
    let e = ap
        .read_from_frame_at("analytics", "events", "clicks", Some(2), &[])
        .await
        .unwrap_err();
    assert!(e.to_string().contains("oldest retained version 3"), "{e}");
    // Version 0 (no cells) and the newest still read.
    assert_eq!(
        count(&ap, &format!("SELECT COUNT(*) FROM {F} VERSION AS OF 0")).await,
        0
    );
    assert_eq!(
        count(&ap, &format!("SELECT COUNT(*) FROM {F} VERSION AS OF 3")).await,
        10
    );
}

#[tokio::test]
async fn history_and_changes_follow_appends_an_overwrite_and_a_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let ap = Apiary::open(dir.path().join("data").to_str().unwrap())
        .await
        .unwrap();
    common::create_clicks_frame(&ap).await;
    // 1-4: four appends of 40 rows (10 per country), 5: compaction, 6: overwrite.
    for w in 0..4 {
        ap.write_to_frame(
            "analytics",
            "events",
            "clicks",
            [common::clicks(w * 40..(w + 1) * 40)],
        )
        .await
        .unwrap();
    }
    let compacted = ap.compact("analytics", "events", "clicks").await.unwrap();
    assert!(compacted.commits >= 1, "{compacted:?}");
    let after_compaction = ap
        .frame_history("analytics", "events", "clicks")
        .await
        .unwrap()
        .len() as u64
        - 1;
    ap.overwrite_frame("analytics", "events", "clicks", [common::clicks(150..170)])
        .await
        .unwrap();
    let head = after_compaction + 1;
    let history = common::canonical(
        ap.sql(&format!(
            "SELECT operation, COUNT(*), SUM(cells_added), SUM(cells_removed), SUM(rows_added), \
             SUM(rows_removed), MIN(version), MAX(version) FROM apiary.history('{F}') \
             GROUP BY operation"
        ))
        .await
        .unwrap()
        .batches(),
    );
    let rewrites = compacted.commits as u64;
    assert_eq!(
        history,
        vec![
            "append|4|16|0|160|0|1|4".to_string(),
            "create|1|0|0|0|0|0|0".to_string(),
            format!("overwrite|1|4|4|20|160|{head}|{head}"),
            format!("rewrite|{rewrites}|4|16|160|160|5|{after_compaction}"),
        ]
    );
    let n = count(
        &ap,
        &format!("SELECT COUNT(*) FROM apiary.history('{F}') WHERE committed_at <= now() AND writer IS NULL"),
    )
    .await;
    assert_eq!(n as u64, head + 1);
    // Changes: appends are inserts; a compaction cancels out; an overwrite deletes what it
    // replaced and inserts what it wrote (rows kept unchanged cancel out too).
    let changes = |from: u64, to: u64| {
        let ap = &ap;
        async move {
            common::canonical(
                ap.sql(&format!(
                    "SELECT _change_type, COUNT(*), MIN(event_id), MAX(event_id) \
                     FROM apiary.changes('{F}', {from}, {to}) GROUP BY _change_type"
                ))
                .await
                .unwrap()
                .batches(),
            )
        }
    };
    assert_eq!(changes(0, 2).await, vec!["insert|80|0|79"]);
    assert_eq!(changes(2, 4).await, vec!["insert|80|80|159"]);
    assert!(changes(4, after_compaction).await.is_empty());
    assert_eq!(
        changes(after_compaction, head).await,
        vec!["delete|150|0|149", "insert|10|160|169"]
    );
    assert_eq!(
        changes(1, head).await,
        vec!["delete|40|0|39", "insert|20|150|169"]
    );
    let columns = ap
        .sql(&format!(
            "SELECT * FROM apiary.changes('{F}', 0, 1) LIMIT 1"
        ))
        .await
        .unwrap();
    let names: Vec<String> = columns
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(
        names,
        [
            "event_id",
            "user_id",
            "page",
            "duration_ms",
            "country",
            "_change_type"
        ]
    );
}

#[tokio::test]
async fn the_cli_prints_a_frames_history() {
    let (dir, _ap) = three_versions().await;
    let storage = dir.path().join("data");
    let run = |json: bool| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_apiary"));
        command
            .args(["history", F, "--storage"])
            .arg(&storage)
            .arg("--state-dir")
            .arg(dir.path().join("state"));
        if json {
            command.arg("--json");
        }
        let out = command.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let text = run(false);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    assert!(lines[0].starts_with("VERSION"), "{text}");
    assert!(lines[4].contains("overwrite"), "{text}");
    let json: serde_json::Value = serde_json::from_str(&run(true)).unwrap();
    let commits = json.as_array().unwrap();
    assert_eq!(commits.len(), 4);
    assert_eq!(commits[1]["rows_added"], 100);
    assert_eq!(commits[3]["operation"], "overwrite");
    assert_eq!(commits[3]["rows_removed"], 200);
    // The writer is the node of the state folder, when it has one.
    let mut write = std::process::Command::new(env!("CARGO_BIN_EXE_apiary"));
    let csv = dir.path().join("rows.csv");
    std::fs::write(
        &csv,
        "event_id,user_id,page,duration_ms,country\n1,u,/p,5,us\n",
    )
    .unwrap();
    let out = write
        .args(["write", F])
        .arg(&csv)
        .arg("--storage")
        .arg(&storage)
        .args(["--node-id", "node-cli"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_str(&run(true)).unwrap();
    assert_eq!(json[4]["writer"], "node-cli");
}
