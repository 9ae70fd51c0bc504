//! The `apiary` binary, run as a user would.

#![allow(clippy::unwrap_used)]

#[path = "common/cli.rs"]
mod cli_helpers;

use std::path::Path;
use std::process::Command;

use apiary_storage::conformance::s3_test_uri;
use cli_helpers::{apiary, err, ok};

const SCHEMA: &str = "event_id:int64,user_id:utf8,page:utf8,duration_ms:int64,country:utf8";

fn create_tutorial_frame(dir: &Path, storage: &[&str]) {
    fn with<'a>(storage: &[&'a str], args: &[&'a str]) -> Vec<&'a str> {
        [storage, args].concat()
    }
    ok(&apiary(
        dir,
        &with(storage, &["create", "hive", "analytics"]),
    ));
    ok(&apiary(
        dir,
        &with(storage, &["create", "box", "analytics.events"]),
    ));
    let out = ok(&apiary(
        dir,
        &with(
            storage,
            &[
                "create",
                "frame",
                "analytics.events.clicks",
                "--schema",
                SCHEMA,
                "--partition-by",
                "country",
                "--json",
            ],
        ),
    ));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["created"], true);
}

#[test]
fn defaults_to_a_local_folder_and_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    create_tutorial_frame(dir.path(), &[]);
    assert!(dir.path().join("apiary-data/analytics/_hive").is_dir());

    assert_eq!(
        ok(&apiary(dir.path(), &["create", "hive", "analytics"])).trim(),
        "hive analytics already exists"
    );
    let hives: serde_json::Value =
        serde_json::from_str(&ok(&apiary(dir.path(), &["list", "--json"]))).unwrap();
    assert_eq!(hives[0]["name"], "analytics");
    let frames: serde_json::Value = serde_json::from_str(&ok(&apiary(
        dir.path(),
        &["list", "analytics.events", "--json"],
    )))
    .unwrap();
    assert_eq!(frames[0]["name"], "analytics.events.clicks");
    assert_eq!(frames[0]["definition"]["partition_by"][0], "country");
    assert_eq!(
        frames[0]["definition"]["schema"]["columns"][4]["nullable"],
        false
    );
    let table = ok(&apiary(dir.path(), &["list", "analytics.events"]));
    assert!(table.starts_with("frame"), "{table}");
    assert!(table.contains("analytics.events.clicks"), "{table}");
    let described = ok(&apiary(
        dir.path(),
        &["describe", "analytics.events.clicks"],
    ));
    assert!(described.contains("duration_ms  int64"), "{described}");
}

#[test]
fn bad_input_is_one_clear_line_and_nonzero() {
    let dir = tempfile::tempdir().unwrap();
    create_tutorial_frame(dir.path(), &[]);
    let cases: [(&[&str], &str); 7] = [
        (&["create", "hive", "Bad-Name"], "invalid hive name"),
        (&["--storage", "ftp://x", "list"], "Accepted forms"),
        (&["list", "nohive"], "hive `nohive` does not exist"),
        (&["create", "box", "nohive.b"], "does not exist"),
        (
            &[
                "create",
                "frame",
                "analytics.events.clicks",
                "--schema",
                "event_id:int64",
            ],
            "already exists with a different definition",
        ),
        (
            &[
                "create",
                "frame",
                "analytics.events.x",
                "--schema",
                "a:int65",
            ],
            "unknown column type `int65`",
        ),
        (
            &[
                "create",
                "frame",
                "analytics.events.x",
                "--schema",
                "a:int64",
                "--partition-by",
                "b",
            ],
            "partition column `b` is not a column",
        ),
    ];
    for (args, needle) in cases {
        let e = err(&apiary(dir.path(), args));
        assert!(e.contains(needle), "{args:?}: {e}");
    }
    // Usage errors come from clap: the message on its first line, exit code 2.
    let out = apiary(dir.path(), &["node", "--heartbeat-interval", "soon"]);
    assert_eq!(out.status.code(), Some(2));
    let first = String::from_utf8_lossy(&out.stderr)
        .lines()
        .next()
        .unwrap_or("")
        .to_string();
    assert!(first.contains("`soon` is not a duration"), "{first}");
    // Nothing of the failed creates was written.
    let frames = ok(&apiary(dir.path(), &["list", "analytics.events", "--json"]));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&frames)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn takes_the_storage_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("elsewhere");
    let out = Command::new(env!("CARGO_BIN_EXE_apiary"))
        .args(["create", "hive", "h"])
        .current_dir(dir.path())
        .env("APIARY_STORAGE", &store)
        .output()
        .unwrap();
    ok(&out);
    assert!(store.join("h/_hive").is_dir());
    assert!(!dir.path().join("apiary-data").exists());
}

#[test]
fn works_on_s3() {
    let dir = tempfile::tempdir().unwrap();
    let uri = s3_test_uri("cli").to_string();
    create_tutorial_frame(dir.path(), &["--storage", &uri]);
    let out = ok(&apiary(
        dir.path(),
        &["--storage", &uri, "list", "analytics.events"],
    ));
    assert!(out.contains("analytics.events.clicks"), "{out}");
    ok(&apiary(
        dir.path(),
        &["--storage", &uri, "drop", "hive", "analytics", "--cascade"],
    ));
    let hives = ok(&apiary(dir.path(), &["--storage", &uri, "list", "--json"]));
    assert_eq!(hives.trim(), "[]");
}

fn click_batch(start: i64, rows: i64) -> arrow_array::RecordBatch {
    use std::sync::Arc;
    let schema = arrow_schema::Schema::new(vec![
        arrow_schema::Field::new("event_id", arrow_schema::DataType::Int64, true),
        arrow_schema::Field::new("country", arrow_schema::DataType::Utf8, false),
    ]);
    arrow_array::RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(arrow_array::Int64Array::from_iter_values(
                start..start + rows,
            )),
            Arc::new(arrow_array::StringArray::from_iter_values(
                (start..start + rows).map(|i| ["us", "de"][i as usize % 2]),
            )),
        ],
    )
    .unwrap()
}

#[test]
fn writes_csv_parquet_and_ipc_from_stdin() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    create_tutorial_frame(dir.path(), &[]);
    let frame = "analytics.events.clicks";
    // CSV, columns in another order than the frame's.
    let mut csv = String::from("country,event_id,page\n");
    for i in 0..100 {
        csv.push_str(&format!("{},{i},/p{}\n", ["us", "uk"][i % 2], i % 3));
    }
    std::fs::write(dir.path().join("a.csv"), csv).unwrap();
    let out = ok(&apiary(dir.path(), &["write", frame, "a.csv", "--json"]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (v["rows_written"].as_u64(), v["cells_written"].as_u64()),
        (Some(100), Some(2))
    );
    // Parquet.
    let file = std::fs::File::create(dir.path().join("b.parquet")).unwrap();
    let batch = click_batch(1000, 50);
    let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    ok(&apiary(dir.path(), &["write", frame, "b.parquet"]));
    // An Arrow IPC file.
    let file = std::fs::File::create(dir.path().join("c.arrow")).unwrap();
    let batch = click_batch(3000, 20);
    let mut w = arrow_ipc::writer::FileWriter::try_new(file, &batch.schema()).unwrap();
    w.write(&batch).unwrap();
    w.write(&click_batch(3020, 5)).unwrap();
    w.finish().unwrap();
    let out = ok(&apiary(dir.path(), &["write", frame, "c.arrow", "--json"]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["rows_written"].as_u64(), Some(25));
    // A truncated one is refused, nothing written.
    let whole = std::fs::read(dir.path().join("c.arrow")).unwrap();
    std::fs::write(dir.path().join("cut.arrow"), &whole[..whole.len() - 10]).unwrap();
    let e = err(&apiary(dir.path(), &["write", frame, "cut.arrow"]));
    assert!(e.contains("truncated"), "{e}");
    // An IPC stream on stdin.
    let mut ipc = Vec::new();
    let batch = click_batch(2000, 30);
    let mut w = arrow_ipc::writer::StreamWriter::try_new(&mut ipc, &batch.schema()).unwrap();
    w.write(&batch).unwrap();
    w.finish().unwrap();
    drop(w);
    let mut child = Command::new(env!("CARGO_BIN_EXE_apiary"))
        .args(["write", frame, "-"])
        .current_dir(dir.path())
        .env_remove("APIARY_STORAGE")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&ipc).unwrap();
    ok(&child.wait_with_output().unwrap());
    let info: serde_json::Value =
        serde_json::from_str(&ok(&apiary(dir.path(), &["describe", frame, "--json"]))).unwrap();
    assert_eq!(
        (info["rows"].as_u64(), info["version"].as_u64()),
        (Some(205), Some(4))
    );
    // Bad inputs: one clear line, nothing committed.
    std::fs::write(dir.path().join("bad.csv"), "event_id,nope\n1,2\n").unwrap();
    std::fs::write(dir.path().join("badtype.csv"), "event_id,country\nabc,us\n").unwrap();
    for (file, needle) in [
        ("bad.csv", "names a column the frame does not have: `nope`"),
        ("badtype.csv", "does not fit the frame's types"),
        ("missing.csv", "cannot open"),
    ] {
        let e = err(&apiary(dir.path(), &["write", frame, file]));
        assert!(
            e.contains(needle) && e.contains("nothing was written"),
            "{file}: {e}"
        );
    }
    let info: serde_json::Value =
        serde_json::from_str(&ok(&apiary(dir.path(), &["describe", frame, "--json"]))).unwrap();
    assert_eq!(info["version"].as_u64(), Some(4));
}

fn write_csv_clicks(dir: &Path, storage: &[&str]) {
    let mut csv = String::from("event_id,user_id,page,duration_ms,country\n");
    for i in 0..300 {
        csv.push_str(&format!(
            "{i},user_{},{},{},{}\n",
            i % 7,
            ["/home", "/docs"][i % 2],
            100 + i,
            ["us", "uk", "de"][i % 3]
        ));
    }
    std::fs::write(dir.join("clicks.csv"), csv).unwrap();
    let args = [storage, &["write", "analytics.events.clicks", "clicks.csv"]].concat();
    ok(&apiary(dir, &args));
}

#[test]
fn sql_prints_table_csv_json_and_arrow() {
    let dir = tempfile::tempdir().unwrap();
    create_tutorial_frame(dir.path(), &[]);
    write_csv_clicks(dir.path(), &[]);
    let q = "SELECT country, COUNT(*) AS events FROM analytics.events.clicks GROUP BY country ORDER BY country";

    let table = ok(&apiary(dir.path(), &["sql", q]));
    assert!(table.contains("| country | events |"), "{table}");
    assert!(table.contains("| de      | 100    |"), "{table}");
    assert!(table.contains("(3 rows)"), "{table}");

    let csv = ok(&apiary(dir.path(), &["sql", q, "--format", "csv"]));
    assert_eq!(csv, "country,events\nde,100\nuk,100\nus,100\n");

    let json: serde_json::Value =
        serde_json::from_str(&ok(&apiary(dir.path(), &["sql", q, "--format", "json"]))).unwrap();
    assert_eq!(
        json,
        serde_json::json!([
            {"country": "de", "events": 100},
            {"country": "uk", "events": 100},
            {"country": "us", "events": 100}
        ])
    );
    let empty = ok(&apiary(
        dir.path(),
        &["sql", "SELECT 1 AS x WHERE false", "--format", "json"],
    ));
    assert_eq!(empty.trim(), "[]");

    let out = apiary(dir.path(), &["sql", q, "--format", "arrow"]);
    assert!(out.status.success());
    let reader =
        arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(out.stdout), None).unwrap();
    let rows: usize = reader.map(|b| b.unwrap().num_rows()).sum();
    assert_eq!(rows, 3);

    let explain = ok(&apiary(
        dir.path(),
        &[
            "sql",
            "EXPLAIN ANALYZE SELECT SUM(duration_ms) FROM analytics.events.clicks WHERE country = 'us'",
        ],
    ));
    assert!(
        explain.contains("cells_total=3, cells_pruned=2, cells_read=1"),
        "{explain}"
    );

    // Errors are one line and name what to do.
    let e = err(&apiary(
        dir.path(),
        &["sql", "INSERT INTO analytics.events.clicks VALUES (1)"],
    ));
    assert!(e.contains("apiary write"), "{e}");
    let e = err(&apiary(
        dir.path(),
        &["sql", "SELECT nope FROM analytics.events.clicks"],
    ));
    assert!(e.contains("nope"), "{e}");
}

/// Writes the tutorial's CSV clicks to `uri` and checks a query's answer.
fn write_and_query(uri: &str) {
    let dir = tempfile::tempdir().unwrap();
    let storage = ["--storage", uri];
    create_tutorial_frame(dir.path(), &storage);
    write_csv_clicks(dir.path(), &storage);
    let q = "SELECT COUNT(*) AS n, SUM(duration_ms) AS d FROM analytics.events.clicks WHERE country <> 'uk'";
    let csv = ok(&apiary(
        dir.path(),
        &[&storage[..], &["sql", q, "--format", "csv"]].concat(),
    ));
    let want: i64 = (0..300).filter(|i| i % 3 != 1).map(|i| 100 + i).sum();
    assert_eq!(csv, format!("n,d\n200,{want}\n"));
}

/// Without credentials (none in the environment, and an instance metadata service that
/// refuses), the store is refused at once with what to set, not as an unknown outcome.
#[test]
fn missing_s3_credentials_say_what_to_set() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_apiary"))
        .args([
            "sql",
            "--storage",
            &s3_test_uri("cli-creds").to_string(),
            "SELECT 1",
        ])
        .current_dir(dir.path())
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_WEB_IDENTITY_TOKEN_FILE")
        // A metadata service that refuses, wherever the test runs (a cloud machine has a
        // real one).
        .env("AWS_METADATA_ENDPOINT", "http://127.0.0.1:9")
        .env("APIARY_STORAGE_TIMEOUT", "30s")
        .output()
        .unwrap();
    let message = err(&out);
    assert!(
        message.contains("no credentials") && message.contains("AWS_ACCESS_KEY_ID"),
        "{message}"
    );
    assert!(!message.contains("unknown"), "{message}");
}

#[test]
fn sql_works_on_s3() {
    write_and_query(&s3_test_uri("cli-sql").to_string());
}

/// A write and a query on Azure Blob storage (Azurite, started by `scripts/test.sh`).
#[test]
fn writes_and_queries_on_azure() {
    write_and_query(&apiary_storage::conformance::azure_test_uri("cli").to_string());
}

/// Output piped into a reader that stops early (`apiary sql … | head`) ends the command
/// quietly: no panic about a failed write to stdout.
#[test]
fn a_closed_pipe_ends_output_quietly() {
    use std::io::Read;
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_apiary"))
        .args([
            "sql",
            "SELECT * FROM (VALUES (1)) AS a(x) CROSS JOIN UNNEST(range(0, 2000000)) AS b(y)",
            "--format",
            "csv",
        ])
        .current_dir(dir.path())
        .env_remove("APIARY_STORAGE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 64];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    // The reader is gone now: the pipe is closed.
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(String::from_utf8_lossy(&first).starts_with("x,y"));
}

/// `apiary list` on `s3://bucket/x` at the S3 `endpoint`, waiting at most `timeout` for it;
/// its stderr.
fn list_at_endpoint(dir: &std::path::Path, endpoint: &str, timeout: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_apiary"))
        .args(["--storage", "s3://bucket/x", "list"])
        .current_dir(dir)
        .env_remove("APIARY_STORAGE")
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("APIARY_STORAGE_TIMEOUT", timeout)
        .output()
        .unwrap();
    err(&out)
}

/// A storage endpoint that accepts connections and never answers holds a command only until
/// the open timeout, which then says what to check; one that refuses connections is
/// reported at once; `s3//…` (a lost colon) is refused at once.
#[test]
fn a_storage_that_never_answers_fails_at_the_open_timeout() {
    let dir = tempfile::tempdir().unwrap();
    // Accepts every connection (the kernel's backlog) and never reads or answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", silent.local_addr().unwrap());
    let stderr = list_at_endpoint(dir.path(), &endpoint, "2s");
    assert!(stderr.contains("did not answer within 2s"), "{stderr}");
    assert!(stderr.contains("AWS_ENDPOINT_URL"), "{stderr}");
    drop(silent);

    // An endpoint that refuses connections fails at once, saying it cannot be reached
    // (not after the retries of every preflight request, nor at the timeout).
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let refusing = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let stderr = list_at_endpoint(dir.path(), &refusing, "300s");
    assert!(stderr.contains("cannot reach it"), "{stderr}");
    assert!(stderr.contains("AWS_ENDPOINT_URL"), "{stderr}");

    let out = apiary(dir.path(), &["--storage", "s3//bucket/x", "list"]);
    assert!(err(&out).contains("colon missing"));
    let out = Command::new(env!("CARGO_BIN_EXE_apiary"))
        .args(["--storage", "./data", "list"])
        .current_dir(dir.path())
        .env_remove("APIARY_STORAGE")
        .env("APIARY_STORAGE_TIMEOUT", "soon")
        .output()
        .unwrap();
    assert!(err(&out).contains("APIARY_STORAGE_TIMEOUT is `soon`"));
}

#[test]
fn a_node_refuses_settings_that_cannot_work_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let state = state.to_str().unwrap();
    for (flags, says) in [
        (
            vec!["--heartbeat-interval", "5s", "--dead-threshold", "1s"],
            "APIARY_DEAD_THRESHOLD=`1s`: the dead threshold must be at least two heartbeat intervals",
        ),
        (
            vec!["--heartbeat-interval", "1ns"],
            "APIARY_HEARTBEAT_INTERVAL=`1ns`: an interval must be between 1ms and 1h",
        ),
        (vec!["--poll-interval", "1ns"], "APIARY_POLL_INTERVAL=`1ns`"),
        (vec!["--memory", "0"], "a node needs memory"),
        (vec!["--memory", "1000TiB"], "more than this machine"),
    ] {
        let mut args = vec!["node", "--state-dir", state];
        args.extend(flags.iter().copied());
        let out = apiary(dir.path(), &args);
        let message = err(&out);
        assert!(message.contains(says), "{flags:?}: {message}");
    }
    // A value the flag's parser refuses: clap's usage error, naming the rule.
    let out = apiary(dir.path(), &["node", "--heartbeat-interval", "100y"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("at most a year"));
    // Nothing joined: no heartbeat was written.
    assert!(!dir.path().join("apiary-data/_heartbeats").exists());
}

#[test]
fn an_empty_csv_says_it_is_empty() {
    let dir = tempfile::tempdir().unwrap();
    create_tutorial_frame(dir.path(), &[]);
    for (content, says) in [
        ("", "the CSV file is empty or starts with a blank line"),
        (
            "\n1,u,/p,5,us\n",
            "the CSV file is empty or starts with a blank line",
        ),
        (
            "event_id,,page\n1,u,/p\n",
            "the CSV header has an empty column name: column 2",
        ),
    ] {
        let path = dir.path().join("rows.csv");
        std::fs::write(&path, content).unwrap();
        let e = err(&apiary(
            dir.path(),
            &["write", "analytics.events.clicks", path.to_str().unwrap()],
        ));
        assert!(e.contains(says), "{content:?}: {e}");
        assert!(
            e.contains("event_id,user_id,page,duration_ms,country"),
            "{e}"
        );
    }
}
