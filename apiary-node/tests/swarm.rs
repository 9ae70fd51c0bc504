//! The swarm with real `apiary node` processes sharing one storage: joining, SIGKILL,
//! SIGSTOP/SIGCONT, a skewed clock, SIGTERM, `apiary drain`, and a corrupt heartbeat.
//!
//! Nodes run with short intervals (heartbeat and poll 200 ms, dead threshold 2 s) and write
//! their view to a status file after every poll. Waits are bounded by generous deadlines that
//! only guard against hangs; the times they took are printed, not asserted. The exact bounds
//! (alive within two polls, suspect and dead at the thresholds) are asserted on a simulated
//! clock in `apiary-swarm`'s tests.

#![allow(clippy::unwrap_used)]
#![allow(clippy::disallowed_methods)] // real processes and real time: waits and timings read the system clock

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use apiary_storage::conformance::s3_test_uri;
use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(30);

struct Node {
    id: String,
    child: Child,
    status: PathBuf,
}

fn timing() -> [&'static str; 6] {
    [
        "--heartbeat-interval",
        "200ms",
        "--poll-interval",
        "200ms",
        "--dead-threshold",
        "2s",
    ]
}

fn start(storage: &str, dir: &Path, id: &str, env: &[(&str, &str)]) -> Node {
    let status = dir.join(format!("{id}.status.json"));
    let child = common::node_command(storage, dir, id)
        .arg("--status-file")
        .arg(&status)
        .args(timing())
        .envs(env.iter().copied())
        .spawn()
        .unwrap();
    Node {
        id: id.to_string(),
        child,
        status,
    }
}

impl Node {
    /// (polls, node id → state) from the node's status file.
    fn view(&self) -> Option<(u64, Vec<(String, String)>)> {
        let text = std::fs::read_to_string(&self.status).ok()?;
        let v: Value = serde_json::from_str(&text).ok()?;
        let nodes = v["swarm"]["nodes"]
            .as_array()?
            .iter()
            .map(|n| {
                (
                    n["node_id"].as_str().unwrap_or("").to_string(),
                    n["state"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        Some((v["polls"].as_u64()?, nodes))
    }

    fn state_of(&self, id: &str) -> Option<String> {
        self.view()?
            .1
            .into_iter()
            .find(|(n, _)| n == id)
            .map(|(_, s)| s)
    }

    fn polls(&self) -> u64 {
        self.view().map_or(0, |(p, _)| p)
    }

    fn problems(&self) -> Vec<String> {
        let text = std::fs::read_to_string(&self.status).unwrap_or_default();
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        v["swarm"]["problems"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|p| p.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} {}", self.id);
    }

    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(start.elapsed() < DEADLINE, "{} did not exit", self.id);
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `cond` holds; returns how long it took.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = start.elapsed();
    eprintln!("{what}: {took:?}");
    took
}

fn all_see_all_alive(nodes: &[&Node]) -> bool {
    nodes.iter().all(|observer| {
        nodes
            .iter()
            .all(|n| observer.state_of(&n.id).as_deref() == Some("alive"))
    })
}

fn heartbeat_path(root: &Path, id: &str) -> PathBuf {
    root.join("_heartbeats").join(format!("node_{id}.json"))
}

fn apiary(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_apiary"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn swarm_of_processes_on_a_local_folder() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("shared");
    let storage = root.to_str().unwrap().to_string();
    let n1 = start(&storage, dir.path(), "n1", &[]);
    let n2 = start(&storage, dir.path(), "n2", &[]);
    let n3 = start(&storage, dir.path(), "n3", &[]);
    wait_for("three local nodes see each other alive", || {
        all_see_all_alive(&[&n1, &n2, &n3])
    });
    let out = apiary(&[
        "swarm",
        "--json",
        "--storage",
        &storage,
        "--dead-threshold",
        "2s",
    ]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["alive"], 3, "{v}");

    // A node whose wall clock is an hour ahead is alive to the others.
    let skewed = start(
        &storage,
        dir.path(),
        "skewed",
        &[("APIARY_CLOCK_OFFSET", "1h")],
    );
    wait_for("a node an hour ahead is seen alive", || {
        all_see_all_alive(&[&n1, &n2, &skewed])
    });
    drop(skewed);

    // SIGKILL: suspect, then dead, while the others keep working.
    n3.signal("-KILL");
    let mut states = Vec::new();
    wait_for("a killed node is seen dead", || {
        let s = n1.state_of("n3").unwrap_or_default();
        if states.last() != Some(&s) {
            states.push(s.clone());
        }
        s == "dead"
    });
    assert!(
        states.contains(&"suspect".to_string()),
        "suspect before dead: {states:?}"
    );
    let polls = n2.polls();
    wait_for("the survivors keep polling", || n2.polls() > polls + 2);
    assert_eq!(n2.state_of("n1").as_deref(), Some("alive"));

    // SIGSTOP past the dead threshold, then SIGCONT: alive again.
    n2.signal("-STOP");
    wait_for("a stopped node is seen dead", || {
        n1.state_of("n2").as_deref() == Some("dead")
    });
    n2.signal("-CONT");
    wait_for("a continued node is seen alive again", || {
        n1.state_of("n2").as_deref() == Some("alive")
    });

    // A corrupt heartbeat among valid ones: reported, skipped, nothing stops.
    std::fs::write(heartbeat_path(&root, "bogus"), b"{\"format\":1,\"node_").unwrap();
    wait_for("the corrupt heartbeat is reported", || {
        n1.problems().iter().any(|p| p.contains("node_bogus.json"))
    });
    let polls = n1.polls();
    wait_for("nodes keep running past it", || n1.polls() > polls + 2);
    assert_eq!(n1.state_of("n2").as_deref(), Some("alive"));
    assert_eq!(n2.state_of("n1").as_deref(), Some("alive"));
    std::fs::remove_file(heartbeat_path(&root, "bogus")).unwrap();

    // `apiary drain` from elsewhere: the node drains, exits 0, its heartbeat disappears.
    let mut n2 = n2;
    let out = apiary(&["drain", "n2", "--storage", &storage]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(n2.wait_exit().success(), "a drained node exits cleanly");
    assert!(!heartbeat_path(&root, "n2").exists());
    wait_for("the others drop a drained node", || {
        n1.view()
            .is_some_and(|(_, v)| v.iter().all(|(id, _)| id != "n2"))
    });

    // SIGTERM: the node drains, exits 0, its heartbeat disappears, the others drop it.
    let mut n1 = n1;
    let n4 = start(&storage, dir.path(), "n4", &[]);
    wait_for("a new node joins", || all_see_all_alive(&[&n1, &n4]));
    n1.signal("-TERM");
    assert!(n1.wait_exit().success(), "SIGTERM exits cleanly");
    assert!(!heartbeat_path(&root, "n1").exists());
    wait_for("the others drop a stopped node", || {
        n4.view()
            .is_some_and(|(_, v)| v.iter().all(|(id, _)| id != "n1"))
    });
    let err = apiary(&["drain", "n1", "--storage", &storage]);
    assert!(!err.status.success());
    assert!(String::from_utf8_lossy(&err.stderr).contains("no node `n1`"));
}

#[test]
fn swarm_of_processes_on_s3() {
    let dir = tempfile::tempdir().unwrap();
    let storage = s3_test_uri("swarm-processes").to_string();
    let n1 = start(&storage, dir.path(), "s1", &[]);
    let n2 = start(&storage, dir.path(), "s2", &[]);
    let mut n3 = start(&storage, dir.path(), "s3", &[]);
    wait_for("three S3 nodes see each other alive", || {
        all_see_all_alive(&[&n1, &n2, &n3])
    });
    n3.signal("-TERM");
    assert!(n3.wait_exit().success());
    wait_for("S3 nodes drop a stopped node", || {
        n1.view()
            .is_some_and(|(_, v)| v.iter().all(|(id, _)| id != "s3"))
    });
    n2.signal("-KILL");
    wait_for("a killed S3 node is seen dead", || {
        n1.state_of("s2").as_deref() == Some("dead")
    });
}

/// A node without `--node-id` generates an id once and keeps it: restarted after SIGKILL it
/// is the same node, rewriting the same heartbeat rather than leaving a stale one.
#[test]
fn a_restarted_node_keeps_its_identity() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("shared");
    let state = dir.path().join("state");
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_apiary"))
            .args(["node", "--storage", root.to_str().unwrap()])
            .arg("--state-dir")
            .arg(&state)
            .args(timing())
            .env_remove("APIARY_NODE_ID")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let heartbeats = || -> Vec<String> {
        std::fs::read_dir(root.join("_heartbeats"))
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                    // The local store stages a write as `name#N` before renaming it.
                    .filter(|n| n.starts_with("node_") && n.ends_with(".json"))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut first = spawn();
    wait_for("a heartbeat under a generated id", || {
        heartbeats().len() == 1
    });
    let id = std::fs::read_to_string(state.join("node_id")).unwrap();
    assert_eq!(heartbeats(), [format!("node_{}.json", id.trim())]);
    first.kill().unwrap();
    first.wait().unwrap();
    let mut second = spawn();
    let before = std::fs::metadata(root.join("_heartbeats").join(&heartbeats()[0]))
        .unwrap()
        .modified()
        .unwrap();
    wait_for("the restarted node beats again", || {
        std::fs::metadata(
            root.join("_heartbeats")
                .join(format!("node_{}.json", id.trim())),
        )
        .and_then(|m| m.modified())
        .is_ok_and(|m| m > before)
    });
    assert_eq!(heartbeats().len(), 1, "one node, one heartbeat");
    assert_eq!(std::fs::read_to_string(state.join("node_id")).unwrap(), id);
    second.kill().unwrap();
    second.wait().unwrap();
}

/// Whether the kernel may back process `pid`'s memory with transparent huge pages
/// (`THP_enabled` in `/proc/PID/status`).
#[cfg(target_os = "linux")]
fn huge_pages(pid: u32) -> Option<bool> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("THP_enabled:"))?;
    Some(line.split_whitespace().nth(1)? == "1")
}

/// An `apiary node` runs without transparent huge pages (on mimalloc's huge-page arenas a
/// fault may compact memory and zero 2 MiB; `docs/operations.md`), unless
/// `MIMALLOC_ALLOW_THP` leaves the choice to mimalloc.
#[cfg(target_os = "linux")]
#[test]
fn a_node_runs_without_huge_pages_unless_told_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("shared").to_str().unwrap().to_string();
    let small = start(&storage, dir.path(), "small-pages", &[]);
    let told = start(&storage, dir.path(), "told", &[("MIMALLOC_ALLOW_THP", "1")]);
    wait_for("both nodes polling", || {
        small.polls() > 0 && told.polls() > 0
    });
    assert_eq!(huge_pages(small.child.id()), Some(false));
    // A process inherits the setting: only a test run that may use huge pages itself can
    // see a node keep them.
    if huge_pages(std::process::id()) == Some(true) {
        assert_eq!(huge_pages(told.child.id()), Some(true));
    }
}
