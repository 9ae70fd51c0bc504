//! The processes of the benchmark: one-bee nodes pinned to cores, and the twins that
//! measure the machine's ceiling.

#![allow(clippy::disallowed_methods)] // real processes and real time: waits and timings read the system clock
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use apiary::apiary_storage::StorageUri;
use apiary::apiary_swarm::NodeState;
use apiary::{Apiary, ApiaryOptions};
use apiary_benches::harness::{apiary_binary, result_rows};
use apiary_benches::ssb::QUERIES;

use crate::{FLIGHT, local_session};

/// A node with one bee, pinned to `core`.
pub(crate) fn node(
    storage: &str,
    dir: &Path,
    id: &str,
    core: usize,
    task_poll: &str,
    tier: u64,
) -> Child {
    Command::new("taskset")
        .args(["-c", &core.to_string()])
        .arg(apiary_binary())
        .args(["node", "--storage", storage, "--node-id", id])
        .arg("--state-dir")
        .arg(dir.join(id))
        .args(["--heartbeat-interval", "500ms", "--poll-interval", "500ms"])
        .args(["--task-poll-interval", task_poll])
        .args(["--memory-tier", &tier.to_string()])
        .args(if FLIGHT.get().copied().unwrap_or(false) {
            &["--flight", "127.0.0.1:0"][..]
        } else {
            &[]
        })
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("taskset and apiary node")
}

/// Pins every thread of this process to `cores` (a `taskset` list).
pub(crate) fn pin_process(cores: &str) {
    let ok = Command::new("taskset")
        .args(["-a", "-p", "-c", cores, &std::process::id().to_string()])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "taskset could not pin this process to cores {cores}");
}

/// Copies folder `from` to `to` as hard links where the file system allows (the files are
/// never written in place: storage replaces an object by renaming a new file over it).
pub(crate) fn link_copy(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.parent().expect("a parent")).expect("copy's folder");
    let cp = |flags: &str| {
        Command::new("cp")
            .arg(flags)
            .arg(from)
            .arg(to)
            .status()
            .is_ok_and(|s| s.success())
    };
    if !cp("-al") {
        let _ = std::fs::remove_dir_all(to);
        assert!(
            cp("-a"),
            "cannot copy {} to {}",
            from.display(),
            to.display()
        );
    }
}

pub(crate) struct Nodes(pub(crate) Vec<Child>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
    }
}

/// Waits until the nodes alive are exactly `ids` (nodes that just left are waited out, so
/// that only these get tasks).
pub(crate) async fn wait_alive(ap: &Apiary, ids: &[&str]) {
    let started = Instant::now();
    loop {
        let status = ap.swarm_status().await.expect("swarm");
        let mut alive: Vec<&str> = status
            .nodes
            .iter()
            .filter(|n| n.state == NodeState::Alive)
            .map(|n| n.node_id.as_str())
            .collect();
        alive.sort_unstable();
        if alive == ids {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "nodes never came up: {alive:?} alive, {ids:?} wanted"
        );
        apiary_storage::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Two processes of this binary (`--serve STORAGE`), each one bee pinned to a core of its
/// own, told to run the same whole query at the same moment.
///
/// Two copies of a query done in `t` are one query every `t / 2`: that is the ceiling the
/// machine sets on splitting one query over two one-bee processes, since a split does the
/// same work (plus its own costs) on the same two cores, balanced at best as evenly as two
/// equal copies are. It is measured on the workload itself, so it includes what the two
/// cores share (memory bandwidth, caches, the hypervisor's time), which a synthetic loop
/// would not.
pub(crate) struct Twins([Twin; 2]);

/// One twin process and its pipes: it reads a query's index a line, and answers with a
/// line `{seconds} {rows}` followed by that many lines of rows.
struct Twin {
    _child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    stdout: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl Twins {
    /// Starts the twins on `storage`, pinned to cores 0 and 1, with memory tiers of `tier`
    /// bytes, and waits until both are ready.
    pub(crate) async fn start(storage: &str, tier: u64) -> Self {
        let exe = std::env::current_exe().expect("this binary");
        let start = |core: &str| {
            let mut child = tokio::process::Command::new("taskset")
                .args(["-c", core])
                .arg(&exe)
                .args(["--serve", storage, "--memory-tier", &tier.to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .expect("taskset and this binary");
            let stdin = child.stdin.take().expect("piped");
            let stdout = child.stdout.take().expect("piped");
            Twin {
                _child: child,
                stdin,
                stdout: tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout)),
            }
        };
        let mut twins = Twins([start("0"), start("1")]);
        for twin in &mut twins.0 {
            let line = twin.stdout.next_line().await.expect("twin output");
            assert_eq!(line.as_deref(), Some("ready"), "a twin did not start");
        }
        twins
    }

    /// Runs query `index` on both twins at once: the time the two copies took together
    /// (the slower one's), halved, and their rows, which must agree.
    pub(crate) async fn run(&mut self, index: usize) -> (f64, Vec<String>) {
        use tokio::io::AsyncWriteExt;
        for twin in &mut self.0 {
            twin.stdin
                .write_all(format!("{index}\n").as_bytes())
                .await
                .expect("twin input");
            twin.stdin.flush().await.expect("twin input");
        }
        let [a, b] = &mut self.0;
        let ((ta, rows_a), (tb, rows_b)) = futures::join!(a.answer(), b.answer());
        let name = QUERIES[index].0;
        assert_eq!(rows_a, rows_b, "{name}: the twins' answers differ");
        (ta.max(tb) / 2.0, rows_a)
    }
}

impl Twin {
    /// The twin's answer to the query it was given: its time and rows.
    async fn answer(&mut self) -> (f64, Vec<String>) {
        let head = self.line().await;
        let (seconds, count) = head.split_once(' ').expect("`{seconds} {rows}`");
        let count: usize = count.parse().expect("a row count");
        let mut rows = Vec::with_capacity(count);
        for _ in 0..count {
            rows.push(self.line().await);
        }
        (seconds.parse().expect("seconds"), rows)
    }

    async fn line(&mut self) -> String {
        self.stdout
            .next_line()
            .await
            .expect("twin output")
            .expect("a twin stopped")
    }
}

/// A twin's life (`--serve STORAGE`): one bee (this process is pinned by its parent) that
/// runs whole queries of [`QUERIES`] locally as [`Twins`] asks.
pub(crate) async fn serve(storage: &str, tier: u64) {
    use std::io::{BufRead, Write};
    let uri = StorageUri::parse(storage).expect("uri");
    let ap = Apiary::open_with(ApiaryOptions {
        memory_tier: Some(tier),
        ..ApiaryOptions::new(uri)
    })
    .await
    .expect("open");
    let mut s = local_session(&ap, "never", 1).await;
    let mut out = std::io::stdout();
    writeln!(out, "ready").expect("stdout");
    out.flush().expect("stdout");
    // Read between queries only, when nothing else runs: blocking is harmless.
    let mut lines = std::io::stdin().lock().lines();
    while let Some(line) = lines.next().transpose().expect("stdin") {
        let index: usize = line.trim().parse().expect("a query index");
        let (name, sql) = QUERIES[index];
        let t = Instant::now();
        let r = s.sql(sql).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        let took = t.elapsed().as_secs_f64();
        let rows = result_rows(&r);
        let mut answer = format!("{took} {}\n", rows.len());
        for row in rows {
            answer.push_str(&row);
            answer.push('\n');
        }
        out.write_all(answer.as_bytes()).expect("stdout");
        out.flush().expect("stdout");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_copy_shares_the_files_and_keeps_them_apart_when_replaced() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("data/ssb");
        std::fs::create_dir_all(from.join("f")).unwrap();
        std::fs::write(from.join("f/cell.parquet"), b"rows").unwrap();
        let to = dir.path().join("solo/ssb");
        link_copy(&from, &to);
        let (a, b) = (from.join("f/cell.parquet"), to.join("f/cell.parquet"));
        assert_eq!(std::fs::read(&b).unwrap(), b"rows");
        // One file (one page cache) while neither side writes.
        assert_eq!(a.metadata().unwrap().ino(), b.metadata().unwrap().ino());
        // Storage replaces an object by renaming a new file over it: the other side keeps its own.
        std::fs::write(to.join("f/new"), b"other").unwrap();
        std::fs::rename(to.join("f/new"), &b).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), b"rows");
    }
}
