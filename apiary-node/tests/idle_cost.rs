//! What an idle `apiary node` process costs on S3, counted on the server's side: the node
//! talks to the S3 test server through a proxy that counts every HTTP request by kind.
//! Real process, real time, default settings but the idle delay (5 s instead of a minute,
//! so the test need not wait a minute for the node to go idle).

#![allow(clippy::disallowed_methods, clippy::unwrap_used)] // real processes and real time
#[path = "common/counting_proxy.rs"]
mod counting_proxy;

use std::process::{Command, Stdio};
use std::time::Duration;

use apiary_storage::conformance::s3_test_uri;
use apiary_storage::cost::S3_STANDARD;
use counting_proxy::{CountingProxy, s3_server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_node_process_costs_under_a_dollar_a_month_on_s3() {
    let storage = s3_test_uri("idle-cost").to_string();
    let proxy = CountingProxy::start(s3_server()).await;
    let dir = tempfile::tempdir().unwrap();
    let log = std::fs::File::create(dir.path().join("node.log")).unwrap();
    let state = dir.path().join("state");
    let mut node = Command::new(env!("CARGO_BIN_EXE_apiary"))
        .args(["node", "--storage", &storage, "--node-id", "idle"])
        .arg("--state-dir")
        .arg(&state)
        .env("AWS_ENDPOINT_URL", format!("http://{}", proxy.address))
        .env("APIARY_IDLE_AFTER", "5s")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();

    // Started, joined and gone idle; then five minutes: a safety listing falls in them.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let before = proxy.counts();
    let window = Duration::from_secs(300);
    tokio::time::sleep(window).await;
    let made = proxy.counts() - before;
    let monthly = S3_STANDARD.monthly(&made, window);
    println!(
        "idle node on S3, 5 minutes through a counting proxy: {made:?}: ${monthly:.2} a month"
    );
    assert!(
        node.try_wait().unwrap().is_none(),
        "the node exited; its log is in {}",
        dir.path().display()
    );
    assert!(monthly <= 1.0, "${monthly:.2} a month: {made:?}");
    // One heartbeat a minute, a listing in five minutes, no cell reads.
    assert!((4..=7).contains(&made.put), "{made:?}");
    assert!((1..=2).contains(&made.list), "{made:?}");

    // `apiary status` shows the node's own count of the same, from its heartbeat.
    let out = Command::new(env!("CARGO_BIN_EXE_apiary"))
        .args([
            "status",
            "--json",
            "--storage",
            &storage,
            "--node-id",
            "idle",
        ])
        .arg("--state-dir")
        .arg(&state)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["running"], true, "{status}");
    let reported = status["requests"]["monthly_usd"]
        .as_f64()
        .unwrap_or_else(|| panic!("no request rate in {status}"));
    // Its window starts at its first heartbeat, so it also counts the start.
    assert!(
        reported <= 1.0 && reported >= monthly * 0.8,
        "the node reports ${reported:.2} a month, the proxy counted ${monthly:.2}: {status}"
    );
    let _ = node.kill();
    let _ = node.wait();
}
