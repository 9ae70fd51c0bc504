//! `apiary shell`: an interactive SQL shell on one session.
//!
//! * Line editing and history kept in a file (rustyline); a statement may span lines and
//!   runs when a line ends it with `;` (outside strings and comments).
//! * Tab completion from a copy of the catalog loaded in the background at start and after
//!   each statement (see [`complete`]): a key press never asks storage.
//! * Shell commands in both habits, `\d` and `.tables` (see [`meta`]).
//! * While a query runs, a progress line on stderr (cells done of total, per node for a
//!   distributed query); Ctrl-C cancels the query (and its distributed tasks) and the
//!   prompt returns; at the prompt Ctrl-C clears the statement, Ctrl-D leaves.
//! * Errors print on one line, as everywhere in the CLI, and the shell goes on.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use apiary_storage::time::{Clock, SystemClock, Ticker};
use rustyline::error::ReadlineError;
use rustyline::history::FileHistory;
use rustyline::{CompletionType, Config, Editor};

use super::CliResult;
use super::args::SqlFormat;
use super::print::print_stream;
use crate::Apiary;
use crate::apiary_query::SqlSession;
use crate::apiary_query::distributed::progress::QueryProgress;

mod complete;
mod meta;

use complete::{Names, ShellHelper};
use meta::Meta;

/// After how long a running query shows its progress line.
const PROGRESS_AFTER: Duration = Duration::from_millis(500);

/// The shell's settings a user changes as it runs.
struct Settings {
    mode: SqlFormat,
    timing: bool,
}

/// Runs the shell on `ap` until Ctrl-D or `\q`, keeping history in `history`.
pub(super) async fn run(ap: &Apiary, history: PathBuf, mode: SqlFormat) -> CliResult<()> {
    let names: Arc<RwLock<Names>> = Arc::default();
    let scope: Arc<Mutex<Vec<String>>> = Arc::default();
    let pending: Arc<Mutex<String>> = Arc::default();
    reload(ap, &names);
    let config = Config::builder()
        .auto_add_history(false)
        .completion_type(CompletionType::List)
        .max_history_size(10_000)?
        .build();
    let mut editor: Editor<ShellHelper, FileHistory> = Editor::with_config(config)?;
    editor.set_helper(Some(ShellHelper {
        names: Arc::clone(&names),
        scope: Arc::clone(&scope),
        pending: Arc::clone(&pending),
    }));
    if history.exists() {
        editor.load_history(&history)?;
    }
    let mut session = ap.sql_session()?;
    session.set_client("shell");
    let mut settings = Settings {
        mode,
        timing: false,
    };
    println!(
        "Apiary {} on {}: end statements with `;`, \\? for help, Ctrl-D to leave.",
        env!("CARGO_PKG_VERSION"),
        ap.storage()
    );
    let mut statement = String::new();
    loop {
        let prompt = if statement.is_empty() {
            "apiary> "
        } else {
            "   ...> "
        };
        *pending.lock().unwrap_or_else(|p| p.into_inner()) = statement.clone();
        let line = tokio::task::block_in_place(|| editor.readline(prompt));
        let line = match line {
            Ok(line) => line,
            // Ctrl-C at the prompt drops what was typed of the statement.
            Err(ReadlineError::Interrupted) => {
                statement.clear();
                continue;
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e.into()),
        };
        if statement.is_empty() && meta::is_meta(&line) {
            remember(&mut editor, &history, line.trim());
            match meta::parse(line.trim()) {
                Ok(Meta::Quit) => break,
                Ok(Meta::Help) => println!("{}", meta::HELP),
                Ok(Meta::Timing(on)) => {
                    settings.timing = on.unwrap_or(!settings.timing);
                    println!("timing {}", if settings.timing { "on" } else { "off" });
                }
                Ok(Meta::Mode(mode)) => settings.mode = mode,
                Ok(Meta::Sql(sql)) => run_sql(ap, &mut session, &sql, &settings).await,
                Err(e) => eprintln!("error: {e}"),
            }
            continue;
        }
        if !statement.is_empty() {
            statement.push('\n');
        }
        statement.push_str(&line);
        if statement.trim().is_empty() {
            statement.clear();
            continue;
        }
        if !crate::apiary_query::ends_statement(&statement) {
            continue;
        }
        let sql = std::mem::take(&mut statement);
        remember(&mut editor, &history, &sql);
        run_sql(ap, &mut session, &sql, &settings).await;
        let (hive, r#box) = session.current();
        *scope.lock().unwrap_or_else(|p| p.into_inner()) =
            hive.into_iter().chain(r#box).map(str::to_string).collect();
        reload(ap, &names);
    }
    Ok(())
}

/// Loads the catalog's names in the background; completion uses the last copy meanwhile.
fn reload(ap: &Apiary, names: &Arc<RwLock<Names>>) {
    let ap = ap.clone();
    let names = Arc::clone(names);
    tokio::spawn(async move {
        match Names::load(&ap).await {
            Ok(loaded) => *names.write().unwrap_or_else(|p| p.into_inner()) = loaded,
            Err(e) => tracing::debug!(error = %e, "the shell's catalog names were not reloaded"),
        }
    });
}

/// Adds `entry` to the history and appends it to the file at once, so a killed shell
/// loses nothing.
fn remember(editor: &mut Editor<ShellHelper, FileHistory>, path: &Path, entry: &str) {
    if editor.add_history_entry(entry).unwrap_or(false) {
        if let Some(parent) = path.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        if let Err(e) = editor.append_history(path) {
            tracing::debug!(error = %e, path = %path.display(), "shell history not saved");
        }
    }
}

/// Runs `sql`, printing its rows in the shell's mode, a progress line while it runs, and
/// its timing when asked; Ctrl-C cancels it. Errors print on one line.
async fn run_sql(ap: &Apiary, session: &mut SqlSession, sql: &str, settings: &Settings) {
    let clock = SystemClock::new();
    let started = clock.monotonic();
    let outcome = tokio::select! {
        outcome = watched(session, sql, settings.mode) => outcome,
        _ = tokio::signal::ctrl_c() => {
            if std::io::stderr().is_terminal() {
                // Off the progress line (and the terminal's `^C`).
                eprint!("\r\x1b[2K");
            }
            Err("cancelled: the query and its tasks were stopped".into())
        }
    };
    // The query's objects are removed after its answer or its cancellation.
    ap.settle().await;
    if let Err(e) = outcome {
        eprintln!("error: {}", one_line(&e.to_string()));
    }
    if settings.timing {
        let elapsed = clock.monotonic().saturating_sub(started);
        let progress = session.last_plan().map(|plan| QueryProgress::of(&plan));
        let nodes = match &progress {
            Some(p) if !p.nodes.is_empty() => {
                let nodes: Vec<&str> = p.nodes.keys().map(String::as_str).collect();
                format!("nodes: {}", nodes.join(", "))
            }
            _ => "this node".to_string(),
        };
        match progress {
            Some(p) => println!(
                "Time: {:.3} s · {} · {nodes}",
                elapsed.as_secs_f64(),
                p.line()
            ),
            None => println!("Time: {:.3} s", elapsed.as_secs_f64()),
        }
    }
}

/// Runs `sql` and prints its rows, with a progress line on a terminal's stderr once it has
/// run for [`PROGRESS_AFTER`].
async fn watched(session: &mut SqlSession, sql: &str, mode: SqlFormat) -> CliResult<()> {
    let stream = session.sql_stream(sql).await?;
    let plan = session.last_plan();
    let printing = print_stream(stream, mode);
    tokio::pin!(printing);
    let show = std::io::stderr().is_terminal();
    let clock = SystemClock::shared();
    let mut ticker = Ticker::new(Arc::clone(&clock), Duration::from_millis(250));
    let started = clock.monotonic();
    let mut shown = false;
    loop {
        tokio::select! {
            printed = &mut printing => {
                if shown {
                    eprint!("\r\x1b[2K");
                }
                return printed;
            }
            () = ticker.tick() => {
                let running = clock.monotonic().saturating_sub(started);
                if let (true, Some(plan)) = (show && running >= PROGRESS_AFTER, &plan) {
                    eprint!("\r\x1b[2K{}", QueryProgress::of(plan).line());
                    shown = true;
                }
            }
        }
    }
}

/// An error on one line: its lines joined.
fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}
