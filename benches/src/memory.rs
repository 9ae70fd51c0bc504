//! The memory proof of distributed row queries: a `SELECT *` whose answer is several times
//! each process's `--memory`, answered by two `apiary node` processes for an `apiary sql`
//! client, with every process's peak resident memory measured by the kernel (a node's
//! `VmHWM`, the client's `ru_maxrss`).

#![allow(clippy::disallowed_methods)] // real processes and real time: waits and timings read the system clock
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use apiary::Apiary;
use arrow_array::{Int64Array, RecordBatch, StringArray};

use crate::harness::{Nodes, apiary_binary};

/// What one run of the proof measured.
#[derive(Debug, Clone)]
pub struct Proof {
    /// The `--memory` every process was given, in bytes.
    pub memory: u64,
    /// Rows of the answer (counted in the client's CSV output) and rows written.
    pub rows: u64,
    /// Rows the frame holds.
    pub expected_rows: u64,
    /// Bytes of the answer as the client printed it (CSV).
    pub answer_bytes: u64,
    /// Bytes of the frame's rows in Arrow memory.
    pub frame_bytes: u64,
    /// Peak resident memory of each node process, in bytes.
    pub node_peaks: Vec<u64>,
    /// Peak resident memory of the client (the coordinator), in bytes.
    pub client_peak: u64,
    /// Resident memory of an idle node before the query (its fixed part), in bytes.
    pub idle_node: u64,
    /// Seconds the query took.
    pub seconds: f64,
}

/// `rows` rows of `(id, payload)`: a 100-character payload that does not compress (from a
/// fixed-seed generator), so the answer's size is what it says.
pub fn wide_rows(start: u64, rows: usize) -> RecordBatch {
    let mut state = start.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let ids: Vec<i64> = (0..rows as i64).map(|i| start as i64 + i).collect();
    let payloads: Vec<String> = (0..rows)
        .map(|_| {
            (0..7)
                .map(|_| format!("{:016x}", next()))
                .collect::<String>()[..100]
                .to_string()
        })
        .collect();
    RecordBatch::try_from_iter([
        ("id", Arc::new(Int64Array::from(ids)) as _),
        ("payload", Arc::new(StringArray::from(payloads)) as _),
    ])
    .expect("a batch")
}

/// Writes `mem.rows.wide` under `storage`: `cells` commits of `rows_per_cell` rows. Returns
/// the rows' bytes in Arrow memory.
pub async fn load(ap: &Apiary, cells: usize, rows_per_cell: usize) -> u64 {
    ap.create_hive("mem").await.expect("hive");
    ap.create_box("mem", "rows").await.expect("box");
    ap.create_frame(
        "mem",
        "rows",
        "wide",
        &[("id", "int64"), ("payload", "utf8")],
        &[],
    )
    .await
    .expect("frame");
    let mut bytes = 0;
    for c in 0..cells {
        let batch = wide_rows((c * rows_per_cell) as u64, rows_per_cell);
        bytes += batch.get_array_memory_size() as u64;
        ap.write_to_frame("mem", "rows", "wide", [batch])
            .await
            .expect("write");
    }
    bytes
}

/// A process's resident memory now and at its peak (`VmRSS`, `VmHWM`), in bytes.
pub fn resident(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Runs the proof over the frame [`load`] wrote under `storage` (`frame_bytes` in memory):
/// two nodes and the client, each with `memory` bytes, the client asking for the rows whose
/// id is below `rows` (the first `rows` written).
pub async fn prove(
    storage: &str,
    dir: &Path,
    observer: &Apiary,
    memory: u64,
    rows: u64,
    frame_bytes: u64,
) -> Proof {
    let expected_rows = rows;
    let memory_flag = format!("{}MiB", memory >> 20);
    // Nodes of their own for each run (a run's nodes leave when it ends).
    let prefix = format!("mem{rows}");
    let nodes = Nodes::start_with(
        storage,
        dir,
        &prefix,
        2,
        observer,
        &["--memory", &memory_flag],
    )
    .await;
    let idle_node = nodes
        .0
        .iter()
        .map(|n| resident(n.id()).0)
        .max()
        .unwrap_or(0);
    let started = std::time::Instant::now();
    // Reaped by `wait_with_peak` (wait4, which also gives its peak memory), not `wait`.
    #[allow(clippy::zombie_processes)]
    let mut client = Command::new(apiary_binary())
        .args(["sql", "--storage", storage, "--memory", &memory_flag])
        .args(["--format", "csv"])
        .arg(format!(
            "SET apiary.distribute = 'always'; SELECT id, payload FROM mem.rows.wide WHERE id < {rows}"
        ))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("an apiary sql process");
    let mut out = client.stdout.take().expect("stdout");
    let mut err = client.stderr.take().expect("stderr");
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = err.read_to_string(&mut text);
        text
    });
    // The answer is counted as it streams, never kept.
    let (mut answer_bytes, mut lines) = (0u64, 0u64);
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let n = out.read(&mut buffer).expect("the client's output");
        if n == 0 {
            break;
        }
        answer_bytes += n as u64;
        lines += buffer[..n].iter().filter(|&&b| b == b'\n').count() as u64;
    }
    let (status, client_peak) = wait_with_peak(client.id());
    let seconds = started.elapsed().as_secs_f64();
    let errors = errors.join().unwrap_or_default();
    assert!(status == 0, "apiary sql failed ({status}): {errors}");
    let node_peaks = nodes.0.iter().map(|n| resident(n.id()).1).collect();
    nodes.leave();
    Proof {
        memory,
        rows: lines.saturating_sub(1),
        expected_rows,
        answer_bytes,
        frame_bytes,
        node_peaks,
        client_peak,
        idle_node,
        seconds,
    }
}

/// Waits for child `pid` and returns its exit status and its peak resident memory in bytes,
/// as the kernel counted it.
fn wait_with_peak(pid: u32) -> (i32, u64) {
    let mut status = 0;
    // SAFETY: `rusage` is plain data the call fills; `pid` is a child of this process that
    // nothing else waits for.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let waited = unsafe { libc::wait4(pid as libc::pid_t, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid as libc::pid_t, "waiting for the client failed");
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    // Linux counts it in KiB.
    (code, usage.ru_maxrss as u64 * 1024)
}

impl std::fmt::Display for Proof {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        writeln!(
            f,
            "answer: {} rows, {:.0} MiB as CSV (the frame: {:.0} MiB in Arrow), {:.1}x the --memory of {:.0} MiB, in {:.1} s",
            self.rows,
            mib(self.answer_bytes),
            mib(self.frame_bytes),
            self.answer_bytes as f64 / self.memory as f64,
            mib(self.memory),
            self.seconds
        )?;
        for (i, peak) in self.node_peaks.iter().enumerate() {
            writeln!(
                f,
                "node {i}: peak RSS {:.0} MiB ({:.0} MiB over --memory; idle node {:.0} MiB)",
                mib(*peak),
                mib(peak.saturating_sub(self.memory)),
                mib(self.idle_node)
            )?;
        }
        write!(
            f,
            "client (coordinator): peak RSS {:.0} MiB ({:.0} MiB over --memory)",
            mib(self.client_peak),
            mib(self.client_peak.saturating_sub(self.memory))
        )
    }
}
