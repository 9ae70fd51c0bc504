//! The `apiary` binary, run as a user would.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};

use apiary_storage::conformance::s3_test_uri;

fn apiary(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_apiary"))
        .args(args)
        .current_dir(dir)
        .env_remove("APIARY_STORAGE")
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn err(out: &Output) -> String {
    assert!(!out.status.success(), "should have failed");
    let stderr = String::from_utf8(out.stderr.clone()).unwrap();
    assert_eq!(stderr.lines().count(), 1, "one clear line: {stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    stderr
}

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
