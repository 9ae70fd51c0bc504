//! The `apiary` command.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use apiary::apiary_ledger::{
    Created, FrameDefinition, FrameInfo, FrameRef, FrameSchema, WriteMode,
};
use apiary::apiary_storage::StorageUri;
use apiary::apiary_swarm::{SwarmConfig, SystemClock, default_state_dir};
use apiary::{Apiary, ApiaryOptions, DEFAULT_STORAGE, NodeOptions, SwarmStatus};
use clap::{Args, Parser, Subcommand};
use serde_json::json;

/// The allocator the node runs on (see the `mimalloc` feature).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Apiary: a lakehouse for small compute, coordinated through object storage.
#[derive(Debug, Parser)]
#[command(name = "apiary", version, about)]
struct Cli {
    /// Storage URI: a folder, file:///path, memory://, s3://bucket/prefix, gs://…, az://…
    #[arg(long, global = true, env = "APIARY_STORAGE", default_value = DEFAULT_STORAGE)]
    storage: String,

    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    json: bool,

    #[command(flatten)]
    node: NodeArgs,

    #[command(subcommand)]
    command: Command,
}

/// Identity and timing, for every command that runs or observes a node.
#[derive(Debug, Args)]
struct NodeArgs {
    /// This node's id (generated once and kept in the state folder when unset).
    #[arg(long, global = true, env = "APIARY_NODE_ID")]
    node_id: Option<String>,
    /// Folder for this node's local state (its kept id).
    #[arg(long, global = true, env = "APIARY_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// `key=value` published in the node's heartbeats for other parts to find (repeat the
    /// flag, or separate with commas in APIARY_ATTRIBUTES).
    #[arg(long = "attribute", global = true, env = "APIARY_ATTRIBUTES", value_delimiter = ',', value_parser = attribute)]
    attributes: Vec<(String, String)>,
    /// How often a node writes its heartbeat.
    #[arg(long, global = true, env = "APIARY_HEARTBEAT_INTERVAL", default_value = "5s", value_parser = duration)]
    heartbeat_interval: Duration,
    /// How often a node reads the swarm's heartbeats.
    #[arg(long, global = true, env = "APIARY_POLL_INTERVAL", default_value = "5s", value_parser = duration)]
    poll_interval: Duration,
    /// No heartbeat change for this long: dead (half of it: suspect).
    #[arg(long, global = true, env = "APIARY_DEAD_THRESHOLD", default_value = "30s", value_parser = duration)]
    dead_threshold: Duration,
    /// How often a node looks for tasks of distributed queries (one GET-class request).
    #[arg(long, global = true, env = "APIARY_TASK_POLL_INTERVAL", default_value = "1s", value_parser = duration)]
    task_poll_interval: Duration,
    /// How long a task of a distributed query may run before it is reassigned.
    #[arg(long, global = true, env = "APIARY_TASK_TIMEOUT", default_value = "10m", value_parser = duration)]
    task_timeout: Duration,
    /// How long a task may wait to be taken by a node with an idle bee before it is
    /// reassigned (a hung node, or one running another version).
    #[arg(long, global = true, env = "APIARY_PICKUP_TIMEOUT", default_value = "20s", value_parser = duration)]
    pickup_timeout: Duration,
    /// Query folders left by a coordinator that died are removed after this (keep it above
    /// the task timeout).
    #[arg(long, global = true, env = "APIARY_QUERY_RETENTION", default_value = "15m", value_parser = duration)]
    query_retention: Duration,
    /// `apiary.distribute = 'auto'` splits a query only when it reads at least this many bytes.
    #[arg(long, global = true, env = "APIARY_DISTRIBUTE_MIN_BYTES", default_value_t = 64 << 20)]
    distribute_min_bytes: u64,
}

/// How `apiary sql` prints rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum SqlFormat {
    Table,
    Csv,
    Json,
    Arrow,
}

use apiary::settings::{parse_duration as duration, parse_size as memory};

/// A signed duration, for the test-only clock offset (`-1h` is an hour behind).
fn signed_duration(text: &str) -> Result<(Duration, bool), String> {
    match text.strip_prefix('-') {
        Some(rest) => duration(rest).map(|d| (d, false)),
        None => duration(text.trim_start_matches('+')).map(|d| (d, true)),
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a hive, box or frame (creating an identical one again is a no-op).
    #[command(subcommand)]
    Create(CreateCommand),
    /// List hives; the boxes of HIVE; or the frames of HIVE.BOX.
    List {
        /// Nothing, HIVE, or HIVE.BOX.
        scope: Option<String>,
    },
    /// Show a frame's schema, partitioning, version and size.
    Describe {
        /// HIVE.BOX.FRAME
        frame: String,
    },
    /// Drop a hive, box or frame.
    #[command(subcommand)]
    Drop(DropCommand),
    /// Run a node in the swarm until SIGTERM or SIGINT (or a drain request), then leave
    /// gracefully.
    Node {
        /// How long a leaving node waits for running work.
        #[arg(long, env = "APIARY_DRAIN_TIMEOUT", default_value = "30s", value_parser = duration)]
        drain_timeout: Duration,
        /// Write the node's view of the swarm to this file (JSON) after every poll.
        #[arg(long, env = "APIARY_STATUS_FILE")]
        status_file: Option<PathBuf>,
        /// Memory the node may use, e.g. 4GiB (detected when unset).
        #[arg(long, env = "APIARY_MEMORY", value_parser = memory)]
        memory: Option<u64>,
        /// How often a cold node compacts the frames it wrote small cells to.
        #[arg(long, env = "APIARY_COMPACT_INTERVAL", default_value = "1m", value_parser = duration)]
        compact_interval: Duration,
        /// The cell cache's directory (default: cache/NODE_ID in the state folder).
        #[arg(long, env = "APIARY_CACHE_DIR")]
        cache_dir: Option<PathBuf>,
        /// The cell cache's budget, e.g. 20GiB (default: a fifth of the free disk there;
        /// 0 turns the cache off).
        #[arg(long, env = "APIARY_CACHE_SIZE", value_parser = memory)]
        cache_size: Option<u64>,
        /// The most the memory tier of decoded columns holds, e.g. 1GiB (default: a quarter
        /// of the bees' memory, shared with the queries' pools; 0 turns it off).
        #[arg(long, env = "APIARY_MEMORY_TIER", value_parser = memory)]
        memory_tier: Option<u64>,
        /// Testing only: move this node's wall clock, e.g. 1h or -1h.
        #[arg(long, env = "APIARY_CLOCK_OFFSET", hide = true, value_parser = signed_duration)]
        clock_offset: Option<(Duration, bool)>,
    },
    /// Write files to a frame in one commit: Parquet, CSV with a header (columns matched by
    /// name), or Arrow IPC files and streams; `-` reads an IPC stream from stdin.
    Write {
        /// HIVE.BOX.FRAME
        frame: String,
        /// Input files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Replace the frame's contents instead of appending.
        #[arg(long)]
        overwrite: bool,
    },
    /// Run SQL: queries over HIVE.BOX.FRAME names, SHOW HIVES|BOXES|FRAMES, DESCRIBE, USE,
    /// EXPLAIN [ANALYZE]. Several statements may be separated by `;`; the last one's rows are
    /// printed.
    Sql {
        /// The SQL text.
        query: String,
        /// Output: an aligned table, CSV with a header, one JSON array of row objects, or an
        /// Arrow IPC stream (binary, for pipes).
        #[arg(long, value_enum)]
        format: Option<SqlFormat>,
        /// Run here only, never split over the swarm (`SET apiary.distribute = 'never'`).
        #[arg(long)]
        local: bool,
        /// Memory this query may use, e.g. 512MiB; past it, it spills to disk (unlimited
        /// when unset).
        #[arg(long, value_parser = memory)]
        memory: Option<u64>,
    },
    /// Rewrite a frame's small cells into cells near the target size (one commit per
    /// partition group; readers never see a row twice or missing). Vacuum deletes the old
    /// files later.
    Compact {
        /// HIVE.BOX.FRAME
        frame: String,
    },
    /// Delete cell files no version within the retention needs.
    Vacuum {
        /// HIVE.BOX.FRAME
        frame: String,
        /// Keep what queries and writes of this recent past may need.
        #[arg(long, default_value = "1h", value_parser = duration)]
        retention: Duration,
    },
    /// Show the swarm: every node with a heartbeat, its state and capacity.
    Swarm,
    /// Show the colony of every node: temperature, regulation band, bees busy and idle,
    /// work waiting, memory pressure, cached cells (from the swarm's heartbeats).
    Colony,
    /// Show this node: name, id, cores, memory, bees, storage.
    Status,
    /// Ask a node to drain and leave (it does so on its next poll).
    Drain {
        /// The node's id.
        node_id: String,
    },
}

#[derive(Debug, Subcommand)]
enum CreateCommand {
    /// Create a hive (database).
    Hive {
        /// Hive name.
        name: String,
    },
    /// Create a box (schema): HIVE.BOX.
    Box {
        /// HIVE.BOX
        name: String,
    },
    /// Create a frame (table): HIVE.BOX.FRAME.
    Frame {
        /// HIVE.BOX.FRAME
        name: String,
        /// Columns as `name:type[ NOT NULL],…`, e.g. `event_id:int64,page:utf8,country:utf8`.
        #[arg(long)]
        schema: String,
        /// Partition columns, comma-separated.
        #[arg(long, value_delimiter = ',')]
        partition_by: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
enum DropCommand {
    /// Drop a hive.
    Hive {
        /// Hive name.
        name: String,
        /// Also drop everything in it.
        #[arg(long)]
        cascade: bool,
    },
    /// Drop a box: HIVE.BOX.
    Box {
        /// HIVE.BOX
        name: String,
        /// Also drop its frames.
        #[arg(long)]
        cascade: bool,
    },
    /// Drop a frame: HIVE.BOX.FRAME.
    Frame {
        /// HIVE.BOX.FRAME
        name: String,
    },
}

/// `key=value`, as `--attribute` takes it.
fn attribute(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_string(), value.trim().to_string()))
        }
        _ => Err(format!("`{text}` is not `key=value`")),
    }
}

type CliResult<T> = Result<T, Box<dyn std::error::Error>>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Node { .. }) {
        // A one-shot command whose output is piped into `head` stops quietly when the pipe
        // closes, as Unix tools do, instead of panicking on the failed write. (The node keeps
        // Rust's default: it writes no output to pipes, and its sockets never raise SIGPIPE.)
        sigpipe::reset();
    }
    // A node logs what it does; a one-shot command only what went wrong (a coordinator's
    // retried result reads, say). `RUST_LOG` overrides either.
    init_logging(if matches!(cli.command, Command::Node { .. }) {
        "info"
    } else {
        "warn"
    });
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn split_two(text: &str) -> CliResult<(&str, &str)> {
    match text.split_once('.') {
        Some((a, b)) if !b.contains('.') => Ok((a, b)),
        _ => Err(format!("expected HIVE.BOX, got `{text}`").into()),
    }
}

impl NodeArgs {
    fn swarm_config(&self) -> SwarmConfig {
        SwarmConfig {
            heartbeat_interval: self.heartbeat_interval,
            poll_interval: self.poll_interval,
            dead_threshold: self.dead_threshold,
            ..SwarmConfig::default()
        }
    }

    fn options(&self) -> NodeOptions {
        NodeOptions {
            node_id: self.node_id.clone(),
            state_dir: self.state_dir.clone().unwrap_or_else(default_state_dir),
            swarm: self.swarm_config(),
            task_poll_interval: self.task_poll_interval,
            attributes: self.attributes.iter().cloned().collect(),
            ..NodeOptions::default()
        }
    }
}

async fn run(cli: Cli) -> CliResult<()> {
    let storage = StorageUri::parse(&cli.storage)?;
    let mut options = ApiaryOptions::new(storage);
    options.swarm = cli.node.swarm_config();
    options.distribute.task_timeout = cli.node.task_timeout;
    options.distribute.pickup_timeout = cli.node.pickup_timeout;
    options.distribute.orphan_retention = cli.node.query_retention;
    options.distribute.auto_min_bytes = cli.node.distribute_min_bytes;
    if let Command::Sql { local, memory, .. } = &cli.command {
        if *local {
            options.distribute_mode = apiary::apiary_query::distributed::DistributeMode::Never;
        }
        options.query_memory = memory.map(|m| m as usize);
        // One query per process: nothing would be read again from a memory tier.
        options.memory_tier = Some(0);
    }
    let ap = Apiary::open_with(options).await?;
    let json = cli.json;
    match cli.command {
        Command::Node {
            drain_timeout,
            status_file,
            memory,
            cache_dir,
            cache_size,
            memory_tier,
            compact_interval,
            clock_offset,
        } => {
            let mut options = cli.node.options();
            options.drain_timeout = drain_timeout;
            options.memory_bytes = memory;
            options.cache_dir = cache_dir;
            options.cache_bytes = cache_size;
            options.memory_tier_bytes = memory_tier;
            options.compact_interval = compact_interval;
            if let Some((offset, ahead)) = clock_offset {
                options.clock = Arc::new(SystemClock::with_wall_offset(offset, ahead));
            }
            run_node(&ap, options, status_file).await?;
        }
        Command::Write {
            frame,
            files,
            overwrite,
        } => {
            let f = FrameRef::parse(&frame)?;
            let info = ap.describe_frame(&f.hive, &f.r#box, &f.frame).await?;
            let mut inputs = Vec::with_capacity(files.len());
            for path in &files {
                inputs.push(apiary::input::open(path, &info.definition)?);
            }
            let progress = Progress::new();
            let counter = progress.clone();
            let counted = inputs.into_iter().flatten().inspect(move |b| {
                if let Ok(batch) = b {
                    counter.add(batch.num_rows());
                }
            });
            let mode = if overwrite {
                WriteMode::Overwrite
            } else {
                WriteMode::Append
            };
            let result = ap.write_batches_to_frame(&f, counted, mode).await;
            progress.finish();
            let result = result?;
            if json {
                println!("{}", serde_json::to_string_pretty(&result)?);
            } else {
                println!(
                    "wrote {} rows in {} cells ({} bytes) to {frame}, version {}, in {} ms",
                    result.rows_written,
                    result.cells_written,
                    result.bytes_written,
                    result.version,
                    result.duration_ms
                );
            }
        }
        Command::Sql { query, format, .. } => {
            let format = format.unwrap_or(if json {
                SqlFormat::Json
            } else {
                SqlFormat::Table
            });
            let printed = tokio::select! {
                printed = async {
                    let stream = ap.sql_stream(&query).await?;
                    print_stream(stream, format).await
                } => printed,
                // Ctrl-C drops the query: its local tasks stop, and it is cancelled so that
                // the swarm stops its tasks too.
                _ = tokio::signal::ctrl_c() => Err("interrupted: the query was cancelled".into()),
            };
            // The query's objects are removed after its answer (or its cancellation); not
            // left to a sweep.
            ap.settle().await;
            printed?;
        }
        Command::Compact { frame } => {
            let f = FrameRef::parse(&frame)?;
            let result = ap.compact(&f.hive, &f.r#box, &f.frame).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&result)?);
            } else if result.lease_held_elsewhere {
                println!("{frame} is being compacted by another node; nothing done");
            } else {
                println!(
                    "compacted {frame}: {} small cells into {} in {} commits ({} rows){}",
                    result.cells_removed,
                    result.cells_added,
                    result.commits,
                    result.rows,
                    if result.conflicts > 0 {
                        format!("; {} groups lost to concurrent changes", result.conflicts)
                    } else {
                        String::new()
                    }
                );
            }
        }
        Command::Vacuum { frame, retention } => {
            let f = FrameRef::parse(&frame)?;
            let result = ap
                .vacuum(&f.hive, &f.r#box, &f.frame, Some(retention))
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&result)?);
            } else {
                println!(
                    "deleted {} files ({} bytes), kept {}",
                    result.files_deleted, result.bytes_deleted, result.files_kept
                );
            }
        }
        Command::Swarm => {
            let status = ap.swarm_snapshot(&cli.node.swarm_config()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print_swarm(&status);
            }
        }
        Command::Colony => {
            let status = ap.swarm_snapshot(&cli.node.swarm_config()).await?;
            if json {
                let nodes: Vec<_> = status
                    .nodes
                    .iter()
                    .map(|n| {
                        json!({
                            "node_id": n.node_id,
                            "state": n.state,
                            "temperature": n.temperature,
                            "regulation": n.regulation,
                            "setpoint": n.setpoint,
                            "abandoned_tasks": n.abandoned_tasks,
                            "bees": n.bees,
                            "idle_bees": n.idle_bees,
                            "queue_depth": n.queue_depth,
                            "memory_pressure": n.memory_pressure,
                            "cached_cells": n.cached_cells,
                        })
                    })
                    .collect();
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({ "nodes": nodes }))?
                );
            } else {
                print_colony(&status);
            }
        }
        Command::Status => {
            let status = ap.status(&cli.node.options());
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                println!("name       {}", status.name);
                println!(
                    "node id    {}",
                    status.node_id.as_deref().unwrap_or("(not yet assigned)")
                );
                println!("cores      {}", status.cores);
                println!("memory     {:.1} GiB", status.memory_gb);
                println!("bees       {}", status.bees);
                println!("storage    {} ({})", status.storage, status.storage_uri);
            }
        }
        Command::Drain { node_id } => {
            let by = format!("apiary drain (pid {})", std::process::id());
            ap.drain_node(&node_id, &by).await?;
            if json {
                println!("{}", json!({"node_id": node_id, "drain_requested": true}));
            } else {
                println!("asked node {node_id} to drain; it leaves on its next poll");
            }
        }
        Command::Create(CreateCommand::Hive { name }) => {
            let created = ap.create_hive(&name).await?;
            report_created(json, "hive", &name, created);
        }
        Command::Create(CreateCommand::Box { name }) => {
            let (hive, b) = split_two(&name)?;
            let created = ap.create_box(hive, b).await?;
            report_created(json, "box", &name, created);
        }
        Command::Create(CreateCommand::Frame {
            name,
            schema,
            partition_by,
        }) => {
            let frame = FrameRef::parse(&name)?;
            let definition =
                FrameDefinition::new(FrameSchema::parse_compact(&schema)?, partition_by)?;
            let created = ap.create_frame_with(&frame, definition).await?;
            report_created(json, "frame", &name, created);
        }
        Command::List { scope } => list(&ap, json, scope.as_deref()).await?,
        Command::Describe { frame } => {
            let f = FrameRef::parse(&frame)?;
            let info = ap.describe_frame(&f.hive, &f.r#box, &f.frame).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&info)?);
            } else {
                describe(&info);
            }
        }
        Command::Drop(DropCommand::Hive { name, cascade }) => {
            ap.drop_hive(&name, cascade).await?;
            report_dropped(json, "hive", &name);
        }
        Command::Drop(DropCommand::Box { name, cascade }) => {
            let (hive, b) = split_two(&name)?;
            ap.drop_box(hive, b, cascade).await?;
            report_dropped(json, "box", &name);
        }
        Command::Drop(DropCommand::Frame { name }) => {
            let f = FrameRef::parse(&name)?;
            ap.drop_frame(&f.hive, &f.r#box, &f.frame).await?;
            report_dropped(json, "frame", &name);
        }
    }
    Ok(())
}

async fn run_node(
    ap: &Apiary,
    mut options: NodeOptions,
    status_file: Option<PathBuf>,
) -> CliResult<()> {
    use tokio::signal::unix::{SignalKind, signal};
    if let Some(path) = status_file {
        // The hook runs on the swarm's poll task: it only hands the newest view to a writer
        // task, which writes files on a blocking thread, one at a time, newest wins.
        let (tx, mut rx) = tokio::sync::watch::channel(None::<String>);
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let Some(body) = rx.borrow_and_update().clone() else {
                    continue;
                };
                let path = path.clone();
                let written = tokio::task::spawn_blocking(move || {
                    write_atomically(&path, body.as_bytes()).map_err(|e| (path, e))
                })
                .await;
                if let Ok(Err((path, e))) = written {
                    tracing::warn!(path = %path.display(), error = %e, "status file not written");
                }
            }
        });
        options.on_view = Some(Arc::new(move |view| {
            let body = json!({"polls": view.polls, "swarm": SwarmStatus::from(view)});
            tx.send_replace(Some(body.to_string()));
        }));
    }
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    ap.start_with(options.clone()).await?;
    let me = ap.status(&options);
    tracing::info!(
        node = me.node_id.as_deref().unwrap_or("?"),
        storage = %me.storage_uri,
        cores = me.cores,
        bees = me.bees,
        memory_gib = format!("{:.1}", me.memory_gb),
        "joined the swarm"
    );
    let reason = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
        _ = ap.drain_requested() => "a drain request",
    };
    tracing::info!("leaving the swarm after {reason}");
    ap.shutdown().await?;
    tracing::info!("left the swarm");
    Ok(())
}

/// A row counter on stderr while writing, shown only on a terminal.
#[derive(Clone)]
struct Progress(Option<indicatif::ProgressBar>);

impl Progress {
    fn new() -> Self {
        use std::io::IsTerminal;
        if !std::io::stderr().is_terminal() {
            return Self(None);
        }
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        bar.set_message("rows read");
        Self(Some(bar))
    }

    fn add(&self, rows: usize) {
        if let Some(bar) = &self.0 {
            bar.inc(rows as u64);
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}

/// Logs to stderr at `default` level, or as `RUST_LOG` says.
fn init_logging(default: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}

fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(tmp, path)
}

/// Prints a query's rows: CSV, JSON and Arrow IPC batch by batch as they arrive; a table
/// once all rows are in (its column widths depend on every row).
async fn print_stream(
    mut stream: apiary::SendableRecordBatchStream,
    format: SqlFormat,
) -> CliResult<()> {
    use apiary::apiary_query::datafusion::arrow;
    use std::io::Write;
    let schema = stream.schema();
    match format {
        SqlFormat::Table => {
            let mut batches = Vec::new();
            while let Some(batch) = next_batch(&mut stream).await? {
                batches.push(batch);
            }
            print_table_result(&apiary::QueryResult::new(schema, batches))?;
        }
        SqlFormat::Csv => {
            let mut writer = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(std::io::stdout());
            while let Some(batch) = next_batch(&mut stream).await? {
                writer.write(&batch)?;
                std::io::stdout().flush()?;
            }
        }
        SqlFormat::Json => {
            let mut writer = arrow::json::ArrayWriter::new(std::io::stdout());
            while let Some(batch) = next_batch(&mut stream).await? {
                writer.write(&batch)?;
                std::io::stdout().flush()?;
            }
            // arrow-json writes `[]` for a result without rows.
            writer.finish()?;
            println!();
        }
        SqlFormat::Arrow => {
            let mut writer = arrow::ipc::writer::StreamWriter::try_new(std::io::stdout(), &schema)?;
            while let Some(batch) = next_batch(&mut stream).await? {
                writer.write(&batch)?;
                writer.flush()?;
            }
            writer.finish()?;
        }
    }
    std::io::stdout().flush()?;
    Ok(())
}

/// The next batch of a query's stream, its error as the query's.
async fn next_batch(
    stream: &mut apiary::SendableRecordBatchStream,
) -> Result<Option<arrow_array::RecordBatch>, apiary::ApiaryError> {
    use futures::TryStreamExt;
    Ok(stream
        .try_next()
        .await
        .map_err(apiary::apiary_query::QueryError::from)?)
}

fn print_table_result(result: &apiary::QueryResult) -> CliResult<()> {
    use apiary::apiary_query::datafusion::arrow;
    use arrow::array::AsArray;
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let schema = result.schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    if names.is_empty() {
        writeln!(out, "OK")?;
    } else if names == ["plan_type", "plan"] {
        // EXPLAIN: plans are multi-line text, unreadable inside table borders.
        for batch in result.batches() {
            let kinds = arrow::compute::cast(batch.column(0), &arrow::datatypes::DataType::Utf8)?;
            let plans = arrow::compute::cast(batch.column(1), &arrow::datatypes::DataType::Utf8)?;
            let (kinds, plans) = (kinds.as_string::<i32>(), plans.as_string::<i32>());
            for row in 0..batch.num_rows() {
                writeln!(
                    out,
                    "{}:\n{}",
                    kinds.value(row),
                    plans.value(row).trim_end()
                )?;
            }
        }
    } else {
        let text = arrow::util::pretty::pretty_format_batches(result.batches())?;
        writeln!(out, "{text}")?;
        writeln!(out, "({} rows)", result.num_rows())?;
    }
    out.flush()?;
    Ok(())
}

fn print_swarm(status: &SwarmStatus) {
    println!("{} alive, {} bees", status.alive, status.total_bees);
    print_table(
        &[
            "node",
            "state",
            "cores",
            "memory",
            "bees",
            "idle",
            "temperature",
            "last seen",
        ],
        status.nodes.iter().map(|n| {
            vec![
                n.node_id.clone(),
                n.state.as_str().to_string(),
                n.cores.to_string(),
                format!("{:.1} GiB", n.memory_gb),
                n.bees.to_string(),
                n.idle_bees.to_string(),
                format!("{:.2}", n.temperature),
                format!("{:.1}s ago", n.last_seen_secs),
            ]
        }),
    );
    for problem in &status.problems {
        println!("warning: {problem}");
    }
}

fn print_colony(status: &SwarmStatus) {
    print_table(
        &[
            "node",
            "state",
            "temperature",
            "regulation",
            "busy",
            "idle",
            "waiting",
            "memory",
            "cached",
        ],
        status.nodes.iter().map(|n| {
            vec![
                n.node_id.clone(),
                n.state.as_str().to_string(),
                format!("{:.2}", n.temperature),
                n.regulation.as_str().to_string(),
                (n.bees - n.idle_bees.min(n.bees)).to_string(),
                n.idle_bees.to_string(),
                n.queue_depth.to_string(),
                format!("{:.0}%", n.memory_pressure * 100.0),
                n.cached_cells.to_string(),
            ]
        }),
    );
}

fn report_created(json: bool, kind: &str, name: &str, created: Created) {
    let new = created == Created::New;
    if json {
        println!("{}", json!({"kind": kind, "name": name, "created": new}));
    } else if new {
        println!("created {kind} {name}");
    } else {
        println!("{kind} {name} already exists");
    }
}

fn report_dropped(json: bool, kind: &str, name: &str) {
    if json {
        println!("{}", json!({"kind": kind, "name": name, "dropped": true}));
    } else {
        println!("dropped {kind} {name}");
    }
}

async fn list(ap: &Apiary, json: bool, scope: Option<&str>) -> CliResult<()> {
    let parts: Vec<&str> = scope.map(|s| s.split('.').collect()).unwrap_or_default();
    match parts.as_slice() {
        [] => {
            let hives = ap.list_hives().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&hives)?);
            } else {
                print_table(
                    &["hive", "state"],
                    hives.iter().map(|h| vec![h.name.clone(), state(&h.state)]),
                );
            }
        }
        [hive] => {
            let boxes = ap.list_boxes(hive).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&boxes)?);
            } else {
                print_table(
                    &["box", "state"],
                    boxes
                        .iter()
                        .map(|b| vec![format!("{}.{}", b.hive, b.name), state(&b.state)]),
                );
            }
        }
        [hive, b] => {
            let frames = ap.list_frames(hive, b).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&frames)?);
            } else {
                print_table(
                    &[
                        "frame",
                        "columns",
                        "partition_by",
                        "version",
                        "cells",
                        "rows",
                    ],
                    frames.iter().map(|f| {
                        vec![
                            f.name.clone(),
                            f.definition.schema.columns.len().to_string(),
                            f.definition.partition_by.join(","),
                            f.version.to_string(),
                            f.cells.to_string(),
                            f.rows.to_string(),
                        ]
                    }),
                );
            }
        }
        _ => {
            return Err(format!("expected HIVE or HIVE.BOX, got `{}`", scope.unwrap_or("")).into());
        }
    }
    Ok(())
}

fn state(s: &apiary::apiary_ledger::Lifecycle) -> String {
    match s {
        apiary::apiary_ledger::Lifecycle::Live => "live".into(),
        apiary::apiary_ledger::Lifecycle::Dropping => "dropping".into(),
    }
}

fn describe(info: &FrameInfo) {
    println!(
        "frame {} (version {}, {} cells, {} rows, {} bytes)",
        info.name, info.version, info.cells, info.rows, info.bytes
    );
    print_table(
        &["column", "type", "nullable", "partition"],
        info.definition.schema.columns.iter().map(|c| {
            vec![
                c.name.clone(),
                c.data_type.clone(),
                c.nullable.to_string(),
                info.definition.partition_by.contains(&c.name).to_string(),
            ]
        }),
    );
}

fn print_table(header: &[&str], rows: impl Iterator<Item = Vec<String>>) {
    let rows: Vec<Vec<String>> = rows.collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row);
    }
}
