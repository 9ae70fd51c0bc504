//! The console page in a real browser: headless Chromium (Debian's), driven by
//! playwright-core (`apiary-console/ui-tests/console.mjs`), against three real `apiary node`
//! processes on one storage. The page loads, a wrong token is refused, the cards count three
//! alive nodes, the charts fill, a SIGKILLed node turns to the dead colour, a running query
//! is cancelled from the page and drain from the button shows the node leaving. Screenshots
//! are saved in the test's target folder (`console-browser/`).
//!
//! Needs Node.js, Chromium and playwright-core: `scripts/test.sh` installs them and sets
//! `APIARY_PLAYWRIGHT` and `CHROMIUM` (`eval "$(scripts/ui-test-deps.sh)"` does it by hand).

#![allow(clippy::disallowed_methods, clippy::unwrap_used)] // real processes and real time

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::console::{Client, free_addr, token};
use common::nodes::{DEADLINE, Node};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_page_shows_the_swarm_and_acts_on_it() {
    let playwright = std::env::var("APIARY_PLAYWRIGHT")
        .expect("APIARY_PLAYWRIGHT is not set: run the tests with scripts/test.sh");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("data").display().to_string();
    let addrs: Vec<_> = (0..3).map(|_| free_addr()).collect();
    // Polls of a second: a draining node stays `leaving` a poll and a half and a second, long enough for
    // the page (refreshing every 250 ms) to show it.
    let nodes: Vec<Node> = addrs
        .iter()
        .enumerate()
        .map(|(i, addr)| {
            let id = format!("web-{i}");
            let child = common::node_command(&storage, dir.path(), &id)
                .args(["--memory", "2GiB", "--http", &addr.to_string()])
                .args(["--http-token-refresh", "200ms"])
                .env("APIARY_HEARTBEAT_INTERVAL", "200ms")
                .env("APIARY_POLL_INTERVAL", "1s")
                .env("APIARY_DEAD_THRESHOLD", "3s")
                .env("APIARY_TASK_POLL_INTERVAL", "100ms")
                .spawn()
                .unwrap();
            Node { id, child }
        })
        .collect();
    let admin = token(dir.path(), &storage, "admin");
    let client = Client::new();
    client
        .until(addrs[0], "/api/v1/nodes", &admin, |v| {
            v["nodes"].as_array().is_some_and(|n| n.len() == 3)
        })
        .await;

    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-browser");
    std::fs::create_dir_all(&shots).unwrap();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../apiary-console/ui-tests/console.mjs"
    );
    let out = apiary_storage::blocking::run({
        let (nodes_list, kill_pid) = (
            nodes
                .iter()
                .map(|n| n.id.clone())
                .collect::<Vec<_>>()
                .join(","),
            nodes[2].child.id().to_string(),
        );
        let (url, shots) = (format!("http://{}", addrs[0]), shots.clone());
        move || {
            Command::new("node")
                .arg(script)
                .env("APIARY_PLAYWRIGHT", playwright)
                .env("CHROMIUM", chromium)
                .env("CONSOLE_URL", url)
                .env("ADMIN_TOKEN", admin)
                .env("NODES", nodes_list)
                .env("KILL_NODE", "web-2")
                .env("KILL_PID", kill_pid)
                .env("DRAIN_NODE", "web-1")
                .env("SCREENSHOTS", shots)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "the browser test failed (screenshots in {}):\n{said}",
        shots.display()
    );
    assert!(said.contains("\nok"), "{said}");
    assert!(shots.join("console.png").exists());
    // The drained node left and exited cleanly.
    let mut drained = nodes.into_iter().nth(1).unwrap();
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(status) = drained.child.try_wait().unwrap() {
            assert!(status.success(), "the drained node exited with {status}");
            break;
        }
        assert!(Instant::now() < deadline, "the drained node never exited");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
