//! Distributed SQL over Arrow Flight with real `apiary node` processes: every answer equals
//! the local one and every task goes over Flight; a link cut between the coordinator and one
//! worker in the middle of a query (storage still reachable) fails over to storage for that
//! worker, and the answer is still the local one; nodes serving TLS answer the same.

#![allow(clippy::unwrap_used)]
#![allow(clippy::disallowed_methods)] // real processes and real time: waits and timings read the system clock

mod common;

use common::nodes::{
    Node, assert_no_queries, flight_client, loaded_folder, start_with, wait_alive,
};
use common::queries::{
    IN_PARTS, QUERIES, answer, answer_with, explain_analyze, nodes_in, task_fields,
};

use apiary_flight::testing::Proxy;

fn flight_node(storage: &str, dir: &std::path::Path, id: &str, extra: &[&str]) -> Node {
    let mut args = vec!["--flight", "127.0.0.1:0"];
    if !extra.is_empty() {
        args = extra.to_vec();
    }
    start_with(storage, dir, id, "1s", &args)
}

/// A loaded folder, a Flight client on it and Flight nodes `ids`, alive.
async fn flight_swarm(ids: &[&str]) -> (tempfile::TempDir, apiary::Apiary, Vec<Node>) {
    let (dir, storage, _) = loaded_folder().await;
    let ap = flight_client(&storage).await;
    let nodes: Vec<Node> = ids
        .iter()
        .map(|id| flight_node(&storage, dir.path(), id, &[]))
        .collect();
    wait_alive(&ap, ids.len()).await;
    (dir, ap, nodes)
}

/// A backend on `storage` whose every request is written down in the trace, as `label`.
fn traced_backend(
    storage: &str,
    label: &str,
) -> (
    std::sync::Arc<apiary::apiary_storage::ObjectStoreBackend>,
    apiary::apiary_storage::RequestTrace,
) {
    use apiary::apiary_storage::{
        FaultConfig, InstrumentedStore, ObjectStoreBackend, RequestTrace, StorageUri,
        object_store_for,
    };
    let (inner, caps) = object_store_for(&StorageUri::parse(storage).unwrap()).unwrap();
    let trace = RequestTrace::new();
    let store = InstrumentedStore::new(inner, FaultConfig::none()).with_trace(label, trace.clone());
    let backend = ObjectStoreBackend::new(std::sync::Arc::new(store), caps, storage.to_string());
    (std::sync::Arc::new(backend), trace)
}

/// Flight nodes `direct`, and `proxied` whose Flight port is reached through a proxy (it
/// advertises the proxy's address).
async fn behind_a_proxy(
    storage: &str,
    dir: &std::path::Path,
    direct: &[&str],
    proxied: &str,
) -> (Proxy, Vec<Node>) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let proxy = Proxy::start(port).await.unwrap();
    let (listen, advertise) = (port.to_string(), proxy.address().to_string());
    let mut nodes: Vec<Node> = direct
        .iter()
        .map(|id| flight_node(storage, dir, id, &[]))
        .collect();
    nodes.push(flight_node(
        storage,
        dir,
        proxied,
        &["--flight", &listen, "--flight-advertise", &advertise],
    ));
    (proxy, nodes)
}

/// The `via=` of each task line of `plan`, by node.
fn via_by_node(plan: &str) -> Vec<(String, String)> {
    plan.lines()
        .filter(|l| l.trim_start().starts_with("task="))
        .map(|l| {
            let node = task_fields(l, "node").pop().unwrap_or_default();
            let via = task_fields(l, "via").pop().unwrap_or_default();
            (node, via)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_flight_nodes_answer_like_one() {
    // The nodes look for tasks in storage only every second: a task that came in
    // milliseconds was pushed.
    let (_dir, ap, _nodes) = flight_swarm(&["node-f0", "node-f1", "node-f2"]).await;
    for sql in QUERIES {
        let local = answer(&ap, "never", sql).await;
        assert_eq!(
            answer(&ap, "always", sql).await,
            local,
            "over Flight: {sql}"
        );
        assert_eq!(
            answer_with(&ap, IN_PARTS, sql).await,
            local,
            "over Flight in parts: {sql}"
        );
    }
    let plan = explain_analyze(&ap, QUERIES[0]).await;
    println!("{plan}");
    let via = via_by_node(&plan);
    assert!(!via.is_empty(), "{plan}");
    assert!(
        via.iter().all(|(_, v)| v == "flight"),
        "every task over Flight: {plan}"
    );
    assert!(nodes_in(&plan).len() >= 2, "{plan}");
    assert_no_queries(&ap).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_cut_mid_query_fails_over_to_storage_and_answers_the_same() {
    let (dir, storage, _) = loaded_folder().await;
    let ap = flight_client(&storage).await;
    // Node p2 is reached through a proxy the test cuts; storage stays reachable for all.
    let (proxy, _nodes) =
        behind_a_proxy(&storage, dir.path(), &["node-p0", "node-p1"], "node-p2").await;
    wait_alive(&ap, 3).await;
    let sql = QUERIES[0];
    let local = answer(&ap, "never", sql).await;
    // Every link works, the proxied one too.
    let plan = explain_analyze(&ap, sql).await;
    let via = via_by_node(&plan);
    assert!(
        via.iter().any(|(n, v)| n == "node-p2" && v == "flight"),
        "{plan}"
    );
    assert!(via.iter().all(|(_, v)| v == "flight"), "{plan}");

    // The link to p2 breaks at its next answer: in the middle of the next query.
    proxy.cut_at_next_answer();
    let cut = common::queries::explain_analyze(&ap, sql).await;
    println!("{cut}");
    assert!(
        cut.contains("the next attempt goes through storage"),
        "{cut}"
    );
    let via = via_by_node(&cut);
    assert!(
        via.iter().any(|(n, v)| n == "node-p2" && v == "storage")
            || !nodes_in(&cut).contains("node-p2"),
        "{cut}"
    );
    // Queries go on: p2 through storage, the others over Flight, the answer the local one.
    assert_eq!(answer(&ap, "always", sql).await, local);
    let after = explain_analyze(&ap, sql).await;
    let via = via_by_node(&after);
    assert!(
        via.iter()
            .all(|(n, v)| (n == "node-p2") == (v == "storage")),
        "{after}"
    );
    assert_no_queries(&ap).await;
}

/// The cut query's own answer is the local one (the cut happens at the query's first
/// answer from p2, whatever it asked).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_answer_of_the_query_whose_link_is_cut_is_the_local_one() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("apiary_flight=debug,apiary_query=debug")
        .with_test_writer()
        .try_init();
    let (dir, storage, _) = loaded_folder().await;
    let ap = flight_client(&storage).await;
    let (proxy, _nodes) = behind_a_proxy(&storage, dir.path(), &["node-c0"], "node-c1").await;
    wait_alive(&ap, 2).await;
    for sql in [QUERIES[0], QUERIES[3], QUERIES[7]] {
        let local = answer(&ap, "never", sql).await;
        // Warm: the proxied link is open.
        assert_eq!(answer(&ap, "always", sql).await, local);
    }
    proxy.cut_at_next_answer();
    for sql in [QUERIES[0], QUERIES[3], QUERIES[7]] {
        let local = answer(&ap, "never", sql).await;
        assert_eq!(answer_with(&ap, IN_PARTS, sql).await, local, "{sql}");
    }
    assert_no_queries(&ap).await;
}

/// Nodes serving Flight over TLS (certificates from files, as an operator gives them)
/// answer like one, every task over Flight; a node given a certificate without its key is
/// refused at start, naming the missing flag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flight_over_tls_answers_like_one() {
    let (dir, storage, _) = loaded_folder().await;
    let ca = apiary_flight::testing::Authority::new();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.ca_pem()).unwrap();
    let nodes: Vec<Node> = (0..2)
        .map(|i| {
            let (cert, key) = ca.issue(&["localhost", "127.0.0.1"]);
            let (cert_file, key_file) = (
                dir.path().join(format!("node-t{i}.crt")),
                dir.path().join(format!("node-t{i}.key")),
            );
            std::fs::write(&cert_file, cert).unwrap();
            std::fs::write(&key_file, key).unwrap();
            let args = [
                "--flight",
                "127.0.0.1:0",
                "--flight-tls-cert",
                cert_file.to_str().unwrap(),
                "--flight-tls-key",
                key_file.to_str().unwrap(),
                "--flight-tls-ca",
                ca_file.to_str().unwrap(),
            ];
            flight_node(&storage, dir.path(), &format!("node-t{i}"), &args)
        })
        .collect();
    // The client trusts the swarm's CA; it does not serve, so it needs no certificate.
    let mut options =
        apiary::ApiaryOptions::new(apiary_storage::StorageUri::parse(&storage).unwrap());
    options.swarm.dead_threshold = std::time::Duration::from_secs(2);
    options.flight = Some(apiary::FlightOptions {
        tls: Some(apiary::FlightTls {
            ca: Some(ca.ca_pem()),
            ..apiary::FlightTls::default()
        }),
        ..apiary::FlightOptions::client()
    });
    let ap = apiary::Apiary::open_with(options).await.unwrap();
    wait_alive(&ap, nodes.len()).await;
    for sql in [QUERIES[0], QUERIES[3]] {
        let local = answer(&ap, "never", sql).await;
        assert_eq!(answer(&ap, "always", sql).await, local, "over TLS: {sql}");
    }
    let plan = explain_analyze(&ap, QUERIES[0]).await;
    let via = via_by_node(&plan);
    assert!(nodes_in(&plan).len() >= 2, "{plan}");
    assert!(
        !via.is_empty() && via.iter().all(|(_, v)| v == "flight"),
        "every task over Flight, TLS included: {plan}"
    );
    // The nodes advertise their ports as https.
    let log = std::fs::read_to_string(dir.path().join("node-t0.log")).unwrap();
    assert!(log.contains("advertised=https://127.0.0.1:"), "{log}");
    assert_no_queries(&ap).await;

    // A certificate without its key: refused before anything starts.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_apiary"))
        .args(["node", "--storage", &storage, "--flight", "127.0.0.1:0"])
        .arg("--flight-tls-cert")
        .arg(dir.path().join("node-t0.crt"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--flight-tls-key"), "{err}");
}

/// A node that has coordinated opens its link to a node that joins as soon as its view
/// shows it: the next query to the newcomer does not wait for a connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinating_node_links_to_a_node_as_it_joins() {
    let (dir, storage, _) = loaded_folder().await;
    let mut options =
        apiary::ApiaryOptions::new(apiary::apiary_storage::StorageUri::parse(&storage).unwrap());
    options.flight = Some(apiary::FlightOptions::client());
    options.swarm.poll_interval = std::time::Duration::from_millis(200);
    let ap = apiary::Apiary::open_with(options).await.unwrap();
    ap.start().await.unwrap();
    let sql = QUERIES[0];
    let local = answer(&ap, "never", sql).await;
    // Coordinating alone, it has no peer to link to.
    assert_eq!(answer(&ap, "always", sql).await, local);
    let (proxy, _nodes) = behind_a_proxy(&storage, dir.path(), &[], "node-late").await;
    wait_alive(&ap, 2).await;
    let started = std::time::Instant::now();
    while proxy.connections() == 0 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "no link opened to the node that joined"
        );
        apiary::apiary_storage::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // The next query's tasks for the newcomer go over that link.
    let plan = explain_analyze(&ap, sql).await;
    assert!(
        via_by_node(&plan)
            .iter()
            .any(|(n, v)| n == "node-late" && v == "flight"),
        "{plan}"
    );
    assert_eq!(proxy.connections(), 1, "the link opened ahead was used");
    assert_eq!(answer(&ap, "always", sql).await, local);
    ap.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_over_flight_asks_storage_only_for_its_ledger_probes() {
    let (dir, storage, _) = loaded_folder().await;
    // A client whose every storage request is written down.
    let (backend, trace) = traced_backend(&storage, "client");
    let mut options =
        apiary::ApiaryOptions::new(apiary::apiary_storage::StorageUri::parse(&storage).unwrap());
    options.swarm.dead_threshold = std::time::Duration::from_secs(2);
    options.flight = Some(apiary::FlightOptions::client());
    let ap = apiary::Apiary::builder(options)
        .backend(backend)
        .build()
        .await
        .unwrap();
    let _nodes: Vec<Node> = (0..2)
        .map(|i| flight_node(&storage, dir.path(), &format!("node-p{i}"), &[]))
        .collect();
    wait_alive(&ap, 2).await;
    // The last of the queries joins two frames: each is probed once.
    let sql = QUERIES[QUERIES.len() - 1];
    let local = answer(&ap, "never", sql).await;
    // Warm: links open, the swarm read, the frames' ledgers cached.
    for _ in 0..2 {
        assert_eq!(answer(&ap, "always", sql).await, local);
    }
    ap.settle().await;
    let before = trace.lines().len();
    let plan = explain_analyze(&ap, sql).await;
    assert!(
        via_by_node(&plan).iter().all(|(_, v)| v == "flight"),
        "{plan}"
    );
    ap.settle().await;
    let requests: Vec<String> = trace.lines()[before..].to_vec();
    println!(
        "requests of one query over Flight:\n{}",
        requests.join("\n")
    );
    let probes = requests
        .iter()
        .filter(|r| r.contains(" get ") && r.contains("/_ledger/"))
        .count();
    assert!(
        probes <= 2 && requests.len() == probes,
        "beyond the two frames' ledger probes: {requests:#?}"
    );
    ap.shutdown().await.unwrap();
}

/// A task whose result the coordinator took is not a failure on its node: the coordinator
/// answers the end of a result before it lets the query finish, so the worker is not left
/// waiting on an exchange that is gone (it counted such a task failed, told its colony so,
/// and logged "task failed" for most queries); and a task whose coordinator let go of it is
/// not a failure of the node either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_whose_results_landed_are_not_failures() {
    let ids = ["node-e0", "node-e1"];
    let (dir, ap, _nodes) = flight_swarm(&ids).await;
    for sql in QUERIES {
        let local = answer(&ap, "never", sql).await;
        assert_eq!(answer(&ap, "always", sql).await, local, "{sql}");
    }
    ap.settle().await;
    // A task ends on its node a moment after its result landed.
    apiary::apiary_storage::time::sleep(std::time::Duration::from_secs(1)).await;
    for id in ids {
        let log = std::fs::read_to_string(dir.path().join(format!("{id}.log"))).unwrap();
        let failed: Vec<&str> = log.lines().filter(|l| l.contains("task failed")).collect();
        assert!(failed.is_empty(), "{id}: {failed:#?}");
    }
}

/// A node given its tasks over Flight keeps looking in storage at its regular cadence: a
/// task found by looking makes a node look every millisecond for 100 ms and four times as
/// often for a minute (the next query of a burst likely comes the same way), but a pushed
/// task's coordinator pushes its next tasks too, and the quick looks would only take CPU
/// from the node's work (and, on S3, cost requests).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_given_tasks_over_flight_does_not_look_in_storage_more_often() {
    use std::time::Duration;

    let (dir, storage, _) = loaded_folder().await;
    let poll = Duration::from_millis(50);
    // The node's every storage request is written down.
    let (backend, trace) = traced_backend(&storage, "node");
    let mut options =
        apiary::ApiaryOptions::new(apiary::apiary_storage::StorageUri::parse(&storage).unwrap());
    options.flight = Some(apiary::FlightOptions::serve("127.0.0.1:0".parse().unwrap()));
    let node = apiary::Apiary::builder(options)
        .backend(backend)
        .build()
        .await
        .unwrap();
    node.start_with(apiary::NodeOptions {
        node_id: Some("pushed".into()),
        state_dir: dir.path().join("pushed"),
        task_poll_interval: poll,
        ..apiary::NodeOptions::default()
    })
    .await
    .unwrap();
    let ap = flight_client(&storage).await;
    wait_alive(&ap, 1).await;
    let sql = QUERIES[0];
    let local = answer(&ap, "never", sql).await;
    assert_eq!(answer(&ap, "always", sql).await, local);
    let doorbell_heads = |from: usize| {
        trace.lines()[from..]
            .iter()
            .filter(|l| l.contains(" head ") && l.contains("_doorbells/"))
            .count()
    };
    let plan = explain_analyze(&ap, sql).await;
    assert_eq!(
        via_by_node(&plan),
        vec![("pushed".to_string(), "flight".to_string())],
        "{plan}"
    );
    // Just after the task: no looks every millisecond (a found task brings at least
    // sixteen in these 100 ms; see `distributed.rs`), only the regular ones.
    let before = trace.lines().len();
    apiary::apiary_storage::time::sleep(Duration::from_millis(100)).await;
    let hot = doorbell_heads(before);
    assert!(
        hot <= 4,
        "{hot} looks in storage in the 100 ms after a pushed task"
    );
    // Then a second at the regular cadence (at most 21 looks at 50 ms; a found task would
    // bring 80), and still some: storage stays the way in for coordinators without Flight.
    let before = trace.lines().len();
    apiary::apiary_storage::time::sleep(Duration::from_secs(1)).await;
    let busy = doorbell_heads(before);
    assert!(
        (5..=30).contains(&busy),
        "{busy} looks in storage in the second after a pushed task, at a {poll:?} poll"
    );
    node.shutdown().await.unwrap();
    ap.shutdown().await.unwrap();
}

/// Where every result is pushed, the coordinator looks for results when a worker tells it
/// something (a task taken, a result ended) and at its round's check every 250 ms, not every
/// few milliseconds as it must over storage (its timer would wake it on the workers' cores).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_looks_for_pushed_results_only_when_told() {
    let (_dir, ap, _nodes) = flight_swarm(&["node-w0", "node-w1"]).await;
    // Tasks that take a while: every row's user id repeated into a long string and searched
    // (about 40 ms at 40 000 on a 2-core machine, in a debug build; longer where that is too
    // quick to tell).
    for repeat in [40_000, 80_000, 160_000] {
        let sql = format!(
            "SELECT country, count(*) FROM analytics.events.clicks \
             WHERE strpos(repeat(user_id, {repeat}), 'absent') = 0 GROUP BY country"
        );
        let local = answer(&ap, "never", &sql).await;
        assert_eq!(answer(&ap, "always", &sql).await, local);
        let plan = explain_analyze(&ap, &sql).await;
        let via = via_by_node(&plan);
        assert!(
            !via.is_empty() && via.iter().all(|(_, v)| v == "flight"),
            "{plan}"
        );
        let (looks, wait_ms) = (metric(&plan, "result_looks"), metric_ms(&plan, "wait_time"));
        let tasks = via.len() as u64;
        println!("{looks} looks for the results of {tasks} tasks in {wait_ms:.1} ms");
        assert!(
            looks <= 2 * tasks + 2 + (wait_ms / 250.0) as u64,
            "{looks} looks for the results of {tasks} tasks pushed over Flight in {wait_ms} ms: {plan}"
        );
        // Over storage it looks every twenty-fifth of the time waited (at least every 2
        // ms): ten times in 20 ms, more than the bound above allows.
        if wait_ms >= 20.0 {
            return;
        }
    }
    panic!("the tasks were too quick to tell how often their results were looked for");
}

/// The value of metric `name` in `plan`: the text after ` name=`, up to the next `,` or `]`.
fn metric_text<'a>(plan: &'a str, name: &str) -> &'a str {
    let after = plan
        .split(&format!(" {name}="))
        .nth(1)
        .unwrap_or_else(|| panic!("no {name}: {plan}"));
    after.split([',', ']']).next().unwrap()
}

/// A count metric of `plan`.
fn metric(plan: &str, name: &str) -> u64 {
    metric_text(plan, name).parse().unwrap()
}

/// A time metric of `plan`, in milliseconds.
fn metric_ms(plan: &str, name: &str) -> f64 {
    let text = metric_text(plan, name);
    let unit = text.trim_start_matches(|c: char| c.is_ascii_digit() || c == '.');
    let number: f64 = text[..text.len() - unit.len()].parse().unwrap();
    number
        * match unit {
            "s" => 1000.0,
            "ms" => 1.0,
            "µs" => 0.001,
            "ns" => 0.000_001,
            other => panic!("unit {other} of {text}"),
        }
}
