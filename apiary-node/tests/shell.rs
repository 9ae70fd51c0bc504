//! `apiary shell` in a real terminal (tmux, its keys sent with send-keys and its screen read
//! with capture-pane): completion offers a frame's columns, a statement spans lines, Ctrl-C
//! cancels a long query and the prompt returns, errors keep the shell alive, output modes
//! and shell commands work, and history survives a restart.

#![allow(clippy::unwrap_used)]
#![allow(clippy::disallowed_methods)] // real processes and real time: waits and timings read the system clock

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use apiary::Apiary;
use arrow_array::{Int64Array, RecordBatch, StringArray};

/// A tmux server of its own (socket under the test's folder), with one shell in it.
struct Terminal {
    socket: PathBuf,
}

impl Terminal {
    /// Starts `apiary {subcommand}` (`shell`, or nothing: `apiary` alone opens the shell on
    /// a terminal).
    fn start(dir: &Path, storage: &Path, subcommand: &str) -> Self {
        Self::start_with(dir, storage, subcommand, &[])
    }

    /// [`Terminal::start`] with `env` set for the process.
    fn start_with(dir: &Path, storage: &Path, subcommand: &str, env: &[(&str, &str)]) -> Self {
        let socket = dir.join("tmux.sock");
        let shell = format!(
            "{} {subcommand} --storage {} --state-dir {}",
            env!("CARGO_BIN_EXE_apiary"),
            storage.display(),
            dir.join("state").display(),
        );
        let terminal = Self { socket };
        let env: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut args = vec!["new-session", "-d", "-s", "shell", "-x", "160", "-y", "50"];
        for e in &env {
            args.extend(["-e", e]);
        }
        args.push(&shell);
        terminal.tmux(&args);
        terminal
    }

    fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("tmux runs (scripts/test-deps.sh installs it)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Types `text` literally (tmux would read a trailing `;` as its own separator, so a
    /// semicolon goes as its key code).
    fn type_text(&self, text: &str) {
        for (i, piece) in text.split(';').enumerate() {
            if i > 0 {
                self.tmux(&["send-keys", "-t", "shell", "-H", "3b"]);
            }
            if !piece.is_empty() {
                self.tmux(&["send-keys", "-t", "shell", "-l", piece]);
            }
        }
    }

    fn key(&self, key: &str) {
        self.tmux(&["send-keys", "-t", "shell", key]);
    }

    /// Types a line and presses Enter.
    fn line(&self, text: &str) {
        self.type_text(text);
        self.key("Enter");
    }

    fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-J", "-t", "shell", "-S", "-200"])
    }

    /// Waits until the screen satisfies `ready`; returns it.
    fn wait(&self, what: &str, ready: impl Fn(&str) -> bool) -> String {
        let started = Instant::now();
        loop {
            let screen = self.screen();
            if ready(&screen) {
                return screen;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "waited for {what}; the screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn alive(&self) -> bool {
        Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(["has-session", "-t", "shell"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        self.tmux(&["kill-server"]);
    }
}

async fn storage_with_clicks(dir: &Path) -> PathBuf {
    let storage = dir.join("data");
    let ap = Apiary::open(storage.to_str().unwrap()).await.unwrap();
    common::create_clicks_frame(&ap).await;
    common::write_clicks(&ap, 1).await;
    // A frame big enough that a three-way cross join runs for minutes.
    ap.create_frame(
        "analytics",
        "events",
        "numbers",
        &[("n", "int64"), ("tag", "utf8")],
        &[],
    )
    .await
    .unwrap();
    let n = 3000;
    let batch = RecordBatch::try_new(
        std::sync::Arc::new(arrow_schema::Schema::new(vec![
            arrow_schema::Field::new("n", arrow_schema::DataType::Int64, true),
            arrow_schema::Field::new("tag", arrow_schema::DataType::Utf8, true),
        ])),
        vec![
            std::sync::Arc::new(Int64Array::from_iter_values(0..n)),
            std::sync::Arc::new(StringArray::from_iter_values(
                (0..n).map(|i| format!("t{i}")),
            )),
        ],
    )
    .unwrap();
    ap.write_to_frame("analytics", "events", "numbers", [batch])
        .await
        .unwrap();
    storage
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shell_completes_runs_cancels_and_remembers() {
    let dir = tempfile::tempdir().unwrap();
    let storage = storage_with_clicks(dir.path()).await;
    let started = Instant::now();
    let term = Terminal::start(dir.path(), &storage, "shell");
    term.wait("the prompt", |s| s.contains("apiary> "));
    println!("prompt after {:?} (tmux included)", started.elapsed());

    // A statement over two lines runs when `;` ends it.
    term.line("SELECT COUNT(*) AS n");
    term.wait("the continuation prompt", |s| s.contains("...> "));
    term.line("FROM analytics.events.clicks;");
    term.wait("the count", |s| s.contains("| 5000 |"));

    // Completion: a column of the frame the statement reads (the catalog's names load in
    // the background, so try until they are in).
    let started = Instant::now();
    loop {
        term.type_text("SELECT durat");
        term.key("Tab");
        std::thread::sleep(Duration::from_millis(100));
        if term.screen().contains("SELECT duration_ms") {
            break;
        }
        term.key("C-u");
        term.type_text("SELECT * FROM analytics.events.clicks WHERE durat");
        term.key("Tab");
        std::thread::sleep(Duration::from_millis(100));
        if term.screen().contains("WHERE duration_ms") {
            break;
        }
        term.key("C-u");
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{}",
            term.screen()
        );
    }
    term.key("C-u");
    term.type_text("SELECT * FROM analytics.events.clicks WHERE even");
    term.type_text("t_");
    term.key("Tab");
    term.wait("event_id completed", |s| s.contains("WHERE event_id"));
    term.line(" = 7;");
    term.wait("the row of event 7", |s| s.contains("| user_7 "));

    // Shell commands in both habits, an output mode, and an error that keeps it alive.
    term.line("\\dt analytics.events");
    term.wait("the frames", |s| s.contains("| numbers"));
    term.line(".mode line");
    term.line("SELECT event_id, country FROM analytics.events.clicks WHERE event_id = 3;");
    // The answer's own line (the typed statement also holds `event_id = 3`), so the next
    // statement is not typed while this one still runs.
    term.wait("line mode", |s| s.contains(" country = jp"));
    term.line(".mode table");
    term.line("SELECT * FROM analytics.events.nothing;");
    term.wait("the error", |s| {
        s.contains("error: ") && s.contains("nothing")
    });
    term.line("\\timing on");
    term.line("SELECT 40 + 2 AS answer;");
    term.wait("the timing", |s| {
        s.contains("| 42 ") && s.contains("Time: ")
    });

    // Ctrl-C cancels a long query; the prompt returns and the next query runs.
    term.line(
        "SELECT SUM(a.n + b.n + c.n) FROM analytics.events.numbers a, \
         analytics.events.numbers b, analytics.events.numbers c;",
    );
    term.wait("the progress line", |s| s.contains("cells 3 ·"));
    term.key("C-c");
    term.wait("the cancellation", |s| s.contains("error: cancelled"));
    term.line("SELECT 'still here' AS state;");
    term.wait("the next answer", |s| s.contains("| still here |"));

    // Ctrl-D leaves (at once: the cancelled query left nothing running).
    term.key("C-d");
    let started = Instant::now();
    while term.alive() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the shell did not exit"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // History survives a restart (of `apiary` alone, which opens the shell on a terminal):
    // Up brings the last statement back.
    let term = Terminal::start(dir.path(), &storage, "");
    term.wait("the prompt", |s| s.contains("apiary> "));
    term.key("Up");
    term.wait("the last statement", |s| {
        s.contains("apiary> SELECT 'still here' AS state;")
    });
    term.key("C-u");
    term.key("C-d");
}

#[test]
fn startup_to_the_prompt_is_measured() {
    // Not a timed assertion: the figure is printed for docs/benchmarks.md.
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("data");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let ap = Apiary::open(storage.to_str().unwrap()).await.unwrap();
        common::create_clicks_frame(&ap).await;
    });
    let mut times = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_apiary"))
            .args(["shell", "--storage"])
            .arg(&storage)
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        times.push(started.elapsed());
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("Apiary") && text.contains("\\? for help"),
            "{text}"
        );
    }
    times.sort();
    println!(
        "shell start to exit on end of input (debug build): median {:?}",
        times[2]
    );
}

#[test]
fn apiary_alone_off_a_terminal_prints_its_usage() {
    let out = Command::new(env!("CARGO_BIN_EXE_apiary"))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Usage") && text.contains("shell"), "{text}");
}

/// `apiary shell` given `input` on its standard input, with `env` and `args`.
fn piped_shell(
    dir: &Path,
    storage: &Path,
    env: &[(&str, &str)],
    args: &[&str],
    input: &str,
) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_apiary"))
        .args(["shell", "--storage"])
        .arg(storage)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args(args)
        .env_remove("APIARY_MEMORY_TIER")
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// The standard output of a shell that must succeed.
fn printed(out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// One query three times: read once, admitted on the second read, served from memory on the
/// third (where the shell keeps a memory tier).
const TIER_PROBE: &str =
    "EXPLAIN ANALYZE SELECT page, COUNT(*) AS n FROM analytics.events.clicks GROUP BY page;";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shell_keeps_decoded_columns_unless_told_not_to() {
    let dir = tempfile::tempdir().unwrap();
    let storage = storage_with_clicks(dir.path()).await;
    let input = format!("{TIER_PROBE}\n").repeat(3);
    let kept = printed(piped_shell(dir.path(), &storage, &[], &[], &input));
    assert!(kept.contains("MemoryTierExec: cells_in_memory="), "{kept}");
    for (env, args) in [
        (&[("APIARY_MEMORY_TIER", "0")][..], &[][..]),
        (&[], &["--memory-tier", "0"][..]),
        // The flag wins over the environment.
        (&[("APIARY_MEMORY_TIER", "1GiB")], &["--memory-tier", "0"]),
    ] {
        let off = printed(piped_shell(dir.path(), &storage, env, args, &input));
        assert!(
            off.contains("DataSourceExec") && !off.contains("MemoryTierExec"),
            "{env:?} {args:?}: {off}"
        );
    }
    let bad = piped_shell(
        dir.path(),
        &storage,
        &[("APIARY_MEMORY_TIER", "lots")],
        &[],
        &input,
    );
    assert_eq!(bad.status.code(), Some(2));
    let said = String::from_utf8_lossy(&bad.stderr);
    assert!(
        said.contains("'lots'") && said.contains("--memory-tier"),
        "{said}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apiary_alone_on_a_terminal_reads_the_shells_environment() {
    let dir = tempfile::tempdir().unwrap();
    let storage = storage_with_clicks(dir.path()).await;
    let term = Terminal::start_with(dir.path(), &storage, "", &[("APIARY_MEMORY_TIER", "0")]);
    let prompts = |s: &str| s.matches("apiary> ").count();
    let mut seen = prompts(&term.wait("the prompt", |s| s.contains("apiary> ")));
    for _ in 0..3 {
        term.line(TIER_PROBE);
        seen = prompts(&term.wait("the plan", |s| prompts(s) > seen));
    }
    let screen = term.screen();
    assert_eq!(screen.matches("DataSourceExec").count(), 3, "{screen}");
    assert!(!screen.contains("MemoryTierExec"), "{screen}");
    term.key("C-d");
}
