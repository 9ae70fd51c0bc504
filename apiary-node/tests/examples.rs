//! The examples run to the end: the custom transport passes the conformance suite and a
//! query distributed over its two nodes answers like one node; the custom node binary
//! serves the whole command line, answers a distributed query and leaves when drained.

#![allow(clippy::unwrap_used)]
#![allow(clippy::disallowed_methods)] // real processes and real time: waits and timings read the system clock

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::nodes::{self, DEADLINE};

/// The path of example `name`, which `cargo test` builds beside the tests.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let example = profile_dir.join("examples").join(name);
    assert!(
        example.exists(),
        "{} is missing: cargo test builds examples",
        example.display()
    );
    example
}

#[test]
fn the_custom_transport_example_runs() {
    let out = Command::new(example("custom_transport")).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("passes the transport conformance suite"),
        "{stdout}"
    );
    assert!(stdout.contains("answered like one node"), "{stdout}");
}

/// Runs the custom node binary's one-shot command and returns its stdout.
fn custom(storage: &str, args: &[&str]) -> String {
    let out = Command::new(example("custom_node"))
        .args(args)
        .args(["--storage", storage])
        .envs(nodes::node_env("20ms"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{args:?}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_custom_node_binary_is_the_whole_command_line_on_its_parts() {
    let (dir, storage, ap) = nodes::loaded_folder().await;
    let help = custom(&storage, &["--help"]);
    for command in ["node", "sql", "write", "colony", "drain", "vacuum"] {
        assert!(help.contains(command), "{help}");
    }
    let log = std::fs::File::create(dir.path().join("custom.log")).unwrap();
    let mut node = Command::new(example("custom_node"))
        .args(["node", "--node-id", "custom", "--storage", &storage])
        .arg("--state-dir")
        .arg(dir.path().join("custom.state"))
        .envs(nodes::node_env("20ms"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    nodes::wait_alive(&ap, 1).await;

    let sql = "SELECT country, count(*) AS n, sum(duration_ms) AS d FROM analytics.events.clicks \
               GROUP BY country ORDER BY country";
    let local = custom(&storage, &["sql", "--json", "--local", sql]);
    let distributed = custom(
        &storage,
        &[
            "sql",
            "--json",
            &format!("SET apiary.distribute = 'always'; {sql}"),
        ],
    );
    assert_eq!(distributed, local);
    let plan = custom(
        &storage,
        &[
            "sql",
            &format!("SET apiary.distribute = 'always'; EXPLAIN ANALYZE {sql}"),
        ],
    );
    assert!(
        plan.contains("node=custom"),
        "the node took no task: {plan}"
    );

    let colony: serde_json::Value =
        serde_json::from_str(&custom(&storage, &["colony", "--json"])).unwrap();
    assert_eq!(colony["nodes"][0]["node_id"], "custom", "{colony}");
    custom(&storage, &["drain", "custom"]);
    let started = Instant::now();
    let status = loop {
        if let Some(status) = node.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "the drained node is still running"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    nodes::assert_no_queries(&ap).await;
}
