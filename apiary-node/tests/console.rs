//! The HTTP console, tested as an operator meets it: three real `apiary node` processes on
//! one storage, each serving the console; every route and status code, tokens created with
//! the CLI and honoured by every node, a SIGKILLed node shown dead on the others' API, and
//! `/metrics` in the Prometheus text format.

#![allow(clippy::disallowed_methods, clippy::unwrap_used)] // real processes and real time

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use common::console::{
    Client, check_prometheus_text, cli, free_addr, promtool_check, states, token,
};
use common::nodes::{DEADLINE, start_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_serve_the_console_behind_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("data").display().to_string();
    let addrs: Vec<SocketAddr> = (0..3).map(|_| free_addr()).collect();
    let mut nodes: Vec<_> = addrs
        .iter()
        .enumerate()
        .map(|(i, addr)| {
            let addr = addr.to_string();
            start_with(
                &storage,
                dir.path(),
                &format!("console-{i}"),
                "100ms",
                &["--http", &addr, "--http-token-refresh", "200ms"],
            )
        })
        .collect();
    let client = Client::new();

    // The probes are public; the API waits for a token to exist.
    let started = Instant::now();
    for addr in &addrs {
        loop {
            // Not listening yet, or not ready: both mean wait.
            let ready = client
                .http
                .get(format!("http://{addr}/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status().as_u16() == 200);
            if ready {
                break;
            }
            assert!(started.elapsed() < DEADLINE, "{addr} never ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            client.get(*addr, "/healthz", None).await,
            (200, "ok\n".into())
        );
    }
    let (status, body) = client.get(addrs[0], "/api/v1/nodes", None).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("apiary token create"), "{body}");

    // Tokens made with the CLI, honoured by every node with no configuration of its own.
    // (Read last: once a node honours it, it read the others too.)
    let metrics = token(dir.path(), &storage, "metrics");
    let admin = token(dir.path(), &storage, "admin");
    let read = token(dir.path(), &storage, "read");
    let everyone: BTreeSet<(String, String)> = (0..3)
        .map(|i| (format!("console-{i}"), "alive".to_string()))
        .collect();
    for addr in &addrs {
        let nodes = client
            .until(*addr, "/api/v1/nodes", &read, |v| states(v) == everyone)
            .await;
        assert!(!nodes["served_by"].as_str().unwrap().is_empty());
        let first = &nodes["nodes"][0];
        for field in [
            "host",
            "version",
            "cores",
            "bees",
            "bees_busy",
            "memory_bytes",
            "temperature",
            "regulation",
            "last_heartbeat_age_s",
        ] {
            assert!(!first[field].is_null(), "{field} missing: {first}");
        }
    }
    let swarm = client.json(addrs[1], "/api/v1/swarm", &admin).await;
    assert_eq!(swarm["nodes_by_state"]["alive"], 3, "{swarm}");
    let one = client
        .json(addrs[2], "/api/v1/nodes/console-0", &read)
        .await;
    assert_eq!(one["id"], "console-0");

    // Status codes: 401 without or with a bad token, 403 with the wrong scope, 404.
    let (status, body) = client.get(addrs[0], "/api/v1/swarm", None).await;
    assert_eq!(status, 401, "{body}");
    let bad = format!("apiary_{}_{}", "0".repeat(12), "0".repeat(64));
    assert_eq!(
        client.get(addrs[0], "/api/v1/swarm", Some(&bad)).await.0,
        401
    );
    assert_eq!(
        client
            .get(addrs[0], "/api/v1/swarm", Some("garbage"))
            .await
            .0,
        401
    );
    let (status, body) = client.get(addrs[0], "/api/v1/nodes", Some(&metrics)).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("`read` scope"), "{body}");
    assert_eq!(client.get(addrs[0], "/metrics", Some(&read)).await.0, 403);
    let (status, body) = client
        .get(addrs[0], "/api/v1/nodes/nobody", Some(&read))
        .await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("nobody"), "{body}");
    assert_eq!(
        client.get(addrs[0], "/no/such/route", Some(&read)).await.0,
        404
    );

    // /metrics, in the Prometheus text format.
    let (status, text) = client.get(addrs[0], "/metrics", Some(&metrics)).await;
    assert_eq!(status, 200, "{text}");
    check_prometheus_text(&text);
    promtool_check(&text);
    for series in [
        "apiary_build_info{version=",
        "apiary_storage_requests_total{operation=\"put\",outcome=\"ok\"}",
        "apiary_storage_request_duration_seconds_bucket{operation=\"put\",le=\"0.001\"}",
        "apiary_storage_request_duration_seconds_count{operation=\"list\"}",
        "apiary_ledger_commits_total{outcome=\"committed\"}",
        "apiary_ledger_commits_total{outcome=\"outcome_unknown\"} 0",
        "apiary_bees{state=\"idle\"}",
        "apiary_nodes{state=\"alive\"} 3",
        "apiary_colony_temperature",
        "apiary_distributed_duplicate_reads_total 0",
        "apiary_distributed_splits_reused_total",
    ] {
        assert!(text.contains(series), "{series} missing:\n{text}");
    }
    // The node's own requests are in them: its heartbeat PUTs and its timed listings.
    let samples = apiary::apiary_console::metrics::samples(&text);
    let value = |name: &str, labels: &str| {
        samples
            .iter()
            .find(|s| s.name == name && s.labels == labels)
            .map_or(0.0, |s| s.value)
    };
    let puts = value(
        "apiary_storage_requests_total",
        "operation=\"put\",outcome=\"ok\"",
    );
    assert!(puts >= 1.0, "no heartbeat PUT counted:\n{text}");
    let listings = value(
        "apiary_storage_request_duration_seconds_count",
        "operation=\"list\"",
    );
    assert!(listings >= 1.0, "no listing timed:\n{text}");
    assert_eq!(client.get(addrs[0], "/metrics", Some(&admin)).await.0, 200);

    // A distributed query's tasks show in the workers' metrics.
    let sql = |args: &[&str]| cli(dir.path(), &storage, args);
    sql(&["create", "hive", "h"]);
    sql(&["create", "box", "h.b"]);
    sql(&["create", "frame", "h.b.t", "--schema", "id:int64"]);
    std::fs::write(dir.path().join("ids.csv"), "id\n1\n2\n3\n").unwrap();
    for _ in 0..3 {
        sql(&["write", "h.b.t", "ids.csv"]);
    }
    sql(&[
        "sql",
        "SET apiary.distribute = 'always'; SELECT SUM(id) FROM h.b.t",
    ]);
    let mut tasks = 0;
    for addr in &addrs {
        let (_, text) = client.get(*addr, "/metrics", Some(&metrics)).await;
        let line = text
            .lines()
            .find(|l| l.starts_with("apiary_tasks_total{outcome=\"ok\"}"))
            .unwrap_or_else(|| panic!("no task counter:\n{text}"));
        tasks += line.rsplit(' ').next().unwrap().parse::<u64>().unwrap();
    }
    assert!(tasks >= 1, "no node counted a task");

    // A node killed with SIGKILL shows dead on every other node's API within the dead
    // threshold and a poll of its last heartbeat (2 s and 0.2 s in `node_env`), timed from
    // the kill; the second of slack covers a loaded two-core machine and the asking itself.
    let killed = nodes.remove(2);
    let kill = Instant::now();
    drop(killed); // SIGKILL, then reaped
    let mut rest = everyone.clone();
    rest.remove(&("console-2".to_string(), "alive".to_string()));
    rest.insert(("console-2".to_string(), "dead".to_string()));
    let promise = Duration::from_millis(2_000 + 200);
    let mut dead_on = vec![None; 2];
    while dead_on.iter().any(Option::is_none) {
        for (i, addr) in addrs[..2].iter().enumerate() {
            if dead_on[i].is_none()
                && states(&client.json(*addr, "/api/v1/nodes", &read).await) == rest
            {
                dead_on[i] = Some(kill.elapsed());
            }
        }
        assert!(
            kill.elapsed() < promise + Duration::from_secs(10),
            "console-2 not dead everywhere: {dead_on:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    for (addr, took) in addrs.iter().zip(&dead_on) {
        let took = took.unwrap();
        eprintln!("{addr} showed console-2 dead {took:?} after the kill");
        assert!(
            took <= promise + Duration::from_secs(1),
            "{addr} showed console-2 dead only {took:?} after the kill"
        );
    }

    // The colony of every node.
    let colony = client.json(addrs[0], "/api/v1/colony", &read).await;
    assert_eq!(colony["nodes"].as_array().unwrap().len(), 3, "{colony}");
    assert!(!colony["nodes"][0]["regulation"].is_null(), "{colony}");

    // Drain from the API: admin only; the node leaves (with no work running it is gone
    // within a poll) and exits 0.
    let post = |path: String, token: String| {
        let request = client.http.post(format!("http://{}{path}", addrs[0]));
        async move {
            let response = request.bearer_auth(token).send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.text().await.unwrap())
        }
    };
    let (status, body) = post("/api/v1/nodes/console-1/drain".into(), read.clone()).await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = post("/api/v1/nodes/nobody/drain".into(), admin.clone()).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = post("/api/v1/nodes/console-1/drain".into(), admin.clone()).await;
    assert_eq!(status, 202, "{body}");
    // It shows leaving (it announces it, and stays a poll and a half and a second), then it is gone.
    let started = Instant::now();
    let mut seen = BTreeSet::new();
    loop {
        let now = states(&client.json(addrs[0], "/api/v1/nodes", &read).await);
        let Some((_, state)) = now.iter().find(|(id, _)| id == "console-1") else {
            break;
        };
        seen.insert(state.clone());
        assert!(
            started.elapsed() < DEADLINE,
            "console-1 never left: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        seen.contains("leaving"),
        "console-1 left without showing leaving: {seen:?}"
    );
    let drained = nodes[1].child.wait().unwrap();
    assert!(drained.success(), "the drained node exited with {drained}");

    // A revoked token is refused once the nodes read their tokens again.
    let id = &read["apiary_".len().."apiary_".len() + 12];
    let out = Command::new(env!("CARGO_BIN_EXE_apiary"))
        .args(["token", "revoke", id, "--storage", &storage])
        .output()
        .unwrap();
    assert!(out.status.success());
    let started = Instant::now();
    while client.get(addrs[0], "/api/v1/swarm", Some(&read)).await.0 != 401 {
        assert!(
            started.elapsed() < DEADLINE,
            "a revoked token is still honoured"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(nodes);
}
