//! The command line: every flag, environment variable and subcommand of `apiary`.

use std::path::PathBuf;
use std::time::Duration;

use apiary_swarm::{SwarmConfig, default_state_dir};
use clap::{Args, Parser, Subcommand};

use crate::{ApiaryError, DEFAULT_STORAGE, NodeOptions};

/// Apiary: a lakehouse for small compute, coordinated through object storage.
#[derive(Debug, Parser)]
#[command(name = "apiary", version, about)]
pub(crate) struct Cli {
    /// Storage URI: a folder, file:///path, memory://, s3://bucket/prefix, gs://…, az://…
    #[arg(long, global = true, env = "APIARY_STORAGE", default_value = DEFAULT_STORAGE)]
    pub(crate) storage: String,

    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub(crate) json: bool,

    #[command(flatten)]
    pub(crate) node: NodeArgs,

    /// What to do; none on a terminal opens the shell.
    #[command(subcommand)]
    pub(crate) command: Option<Command>,
}

/// Identity and timing, for every command that runs or observes a node.
#[derive(Debug, Args)]
pub(crate) struct NodeArgs {
    /// This node's id (generated once and kept in the state folder when unset).
    #[arg(long, global = true, env = "APIARY_NODE_ID")]
    pub(crate) node_id: Option<String>,
    /// Folder for this node's local state (its kept id).
    #[arg(long, global = true, env = "APIARY_STATE_DIR")]
    pub(crate) state_dir: Option<PathBuf>,
    /// `key=value` published in the node's heartbeats for other parts to find (repeat the
    /// flag, or separate with commas in APIARY_ATTRIBUTES).
    #[arg(long = "attribute", global = true, env = "APIARY_ATTRIBUTES", value_delimiter = ',', value_parser = attribute)]
    pub(crate) attributes: Vec<(String, String)>,
    /// Arrow Flight between nodes that can reach each other: `apiary node` serves it on
    /// this address (e.g. 0.0.0.0:50051; port 0 picks one) and advertises it; any other
    /// command pushes its distributed tasks over Flight where it can. Unset: storage only.
    #[arg(long, global = true, env = "APIARY_FLIGHT")]
    pub(crate) flight: Option<std::net::SocketAddr>,
    /// The address other processes reach this node's Flight port at (behind NAT, a proxy or
    /// a Kubernetes service); default the bound address, or the host name on 0.0.0.0.
    #[arg(
        long,
        global = true,
        env = "APIARY_FLIGHT_ADVERTISE",
        requires = "flight"
    )]
    pub(crate) flight_advertise: Option<String>,
    /// LZ4-compress Flight results (for slow links).
    #[arg(long, global = true, env = "APIARY_FLIGHT_LZ4", requires = "flight")]
    pub(crate) flight_lz4: bool,
    /// TLS for Flight: this node's certificate chain (PEM file). The node then serves TLS
    /// and advertises `https://`; peers check it against --flight-tls-ca.
    #[arg(
        long,
        global = true,
        env = "APIARY_FLIGHT_TLS_CERT",
        requires_all = ["flight", "flight_tls_key"]
    )]
    pub(crate) flight_tls_cert: Option<PathBuf>,
    /// The private key of --flight-tls-cert (PEM file).
    #[arg(
        long,
        global = true,
        env = "APIARY_FLIGHT_TLS_KEY",
        requires_all = ["flight", "flight_tls_cert"]
    )]
    pub(crate) flight_tls_key: Option<PathBuf>,
    /// Certificate authorities (PEM file) that peers' Flight certificates must chain to;
    /// default the system's roots. Setting any TLS flag means Flight only over TLS: peers
    /// serving plain Flight get their tasks through storage.
    #[arg(long, global = true, env = "APIARY_FLIGHT_TLS_CA", requires = "flight")]
    pub(crate) flight_tls_ca: Option<PathBuf>,
    /// The name peers' Flight certificates must carry, when it is not the host they
    /// advertise (one certificate for the whole swarm).
    #[arg(
        long,
        global = true,
        env = "APIARY_FLIGHT_TLS_DOMAIN",
        requires = "flight"
    )]
    pub(crate) flight_tls_domain: Option<String>,
    /// How often an active node writes its heartbeat.
    #[arg(long, global = true, env = "APIARY_HEARTBEAT_INTERVAL", default_value = "5s", value_parser = duration)]
    pub(crate) heartbeat_interval: Duration,
    /// How often an idle node writes its heartbeat.
    #[arg(long, global = true, env = "APIARY_IDLE_HEARTBEAT_INTERVAL", default_value = "1m", value_parser = duration)]
    pub(crate) idle_heartbeat_interval: Duration,
    /// A node with no work for this long is idle.
    #[arg(long, global = true, env = "APIARY_IDLE_AFTER", default_value = "1m", value_parser = duration)]
    pub(crate) idle_after: Duration,
    /// How often a node reads the swarm: a listing while it is active, a probe of the
    /// roster (one GET) while it is idle.
    #[arg(long, global = true, env = "APIARY_POLL_INTERVAL", default_value = "5s", value_parser = duration)]
    pub(crate) poll_interval: Duration,
    /// How often a node lists the heartbeats while the swarm is idle.
    #[arg(long, global = true, env = "APIARY_IDLE_LIST_INTERVAL", default_value = "5m", value_parser = duration)]
    pub(crate) idle_list_interval: Duration,
    /// An active node's heartbeat unchanged this long: dead (half of it: suspect).
    #[arg(long, global = true, env = "APIARY_DEAD_THRESHOLD", default_value = "20s", value_parser = duration)]
    pub(crate) dead_threshold: Duration,
    /// How often a node looks for tasks of distributed queries while the swarm is active
    /// (one GET-class request).
    #[arg(long, global = true, env = "APIARY_TASK_POLL_INTERVAL", default_value = "1s", value_parser = duration)]
    pub(crate) task_poll_interval: Duration,
    /// How often a node looks for tasks while the whole swarm is idle.
    #[arg(long, global = true, env = "APIARY_TASK_IDLE_POLL_INTERVAL", default_value = "30s", value_parser = duration)]
    pub(crate) task_idle_poll_interval: Duration,
    /// How long a task of a distributed query may run before it is reassigned.
    #[arg(long, global = true, env = "APIARY_TASK_TIMEOUT", default_value = "10m", value_parser = duration)]
    pub(crate) task_timeout: Duration,
    /// How long a task may wait to be taken by a node with an idle bee before it is
    /// reassigned (a hung node, or one running another version).
    #[arg(long, global = true, env = "APIARY_PICKUP_TIMEOUT", default_value = "20s", value_parser = duration)]
    pub(crate) pickup_timeout: Duration,
    /// Query folders left by a coordinator that died are removed after this (keep it above
    /// the task timeout).
    #[arg(long, global = true, env = "APIARY_QUERY_RETENTION", default_value = "15m", value_parser = duration)]
    pub(crate) query_retention: Duration,
    /// `apiary.distribute = 'auto'` splits a query only when it reads at least this many bytes.
    #[arg(long, global = true, env = "APIARY_DISTRIBUTE_MIN_BYTES", default_value_t = 64 << 20)]
    pub(crate) distribute_min_bytes: u64,
}

/// How `apiary sql` prints rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum SqlFormat {
    Table,
    Csv,
    Json,
    /// One `column = value` line per column, a blank line between rows.
    Line,
    Arrow,
}

use crate::settings::{parse_duration as duration, parse_size as memory};

/// A signed duration, for the test-only clock offset (`-1h` is an hour behind).
fn signed_duration(text: &str) -> Result<(Duration, bool), String> {
    match text.strip_prefix('-') {
        Some(rest) => duration(rest).map(|d| (d, false)),
        None => duration(text.trim_start_matches('+')).map(|d| (d, true)),
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
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
    /// Show a frame's commits, oldest first: version, time (the store's clock), operation,
    /// cells and rows added and removed, and the node that wrote it. Read any of them with
    /// `SELECT … FROM HIVE.BOX.FRAME VERSION AS OF n`.
    History {
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
        /// Serve the HTTP console at this address, e.g. 0.0.0.0:8080: probes (/healthz,
        /// /readyz), /metrics and the JSON API (/api/v1/…), behind access tokens
        /// (`apiary token create`).
        #[arg(long, env = "APIARY_HTTP")]
        http: Option<std::net::SocketAddr>,
        /// Serve the console without tokens (a laptop, a machine only you can reach).
        #[arg(long, env = "APIARY_HTTP_INSECURE", requires = "http")]
        http_insecure: bool,
        /// How often the console reads the access tokens again: a token created or revoked
        /// takes effect within this (one LIST each time, one GET per new token).
        #[arg(long, env = "APIARY_HTTP_TOKEN_REFRESH", default_value = "1m", value_parser = duration)]
        http_token_refresh: Duration,
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
    /// An interactive SQL shell (also what `apiary` alone opens on a terminal): line
    /// editing, history, multi-line statements ending in `;`, tab completion from the
    /// catalog, `\d` and `.tables` style commands, `\timing`, output modes; Ctrl-C cancels
    /// the running query, Ctrl-D leaves. `\?` lists its commands.
    Shell {
        /// History file (default: shell_history in the state folder).
        #[arg(long, env = "APIARY_SHELL_HISTORY")]
        history: Option<PathBuf>,
        /// Output mode to start in.
        #[arg(long, value_enum, default_value = "table")]
        mode: SqlFormat,
        /// The most the shell's memory tier of decoded columns holds, e.g. 1GiB (default: a
        /// quarter of the bees' memory; 0 turns it off), as for `apiary node`.
        #[arg(long, env = "APIARY_MEMORY_TIER", value_parser = memory)]
        memory_tier: Option<u64>,
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
    /// Manage the console's access tokens, kept hashed in the storage: every node on it
    /// honours them.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Debug, Subcommand)]
pub(crate) enum TokenCommand {
    /// Create a token and print it. It is shown this once: only its digest is stored.
    Create {
        /// What it may do: read, admin (drain, cancel, SQL; everything read may) or
        /// metrics (scrape /metrics). Repeat for several.
        #[arg(long = "scope", required = true, value_parser = scope)]
        scopes: Vec<apiary_console::Scope>,
        /// How long it is honoured, e.g. 30d or 12h (default: until revoked).
        #[arg(long, value_parser = duration)]
        expires: Option<Duration>,
    },
    /// List the tokens: id, scopes, created, expires (never their secrets).
    List,
    /// Revoke a token: no node honours it once it refreshes its tokens.
    Revoke {
        /// The token's id, as `apiary token list` shows it.
        id: String,
    },
}

fn scope(text: &str) -> Result<apiary_console::Scope, String> {
    text.parse()
        .map_err(|e: apiary_console::ConsoleError| e.to_string())
}

#[derive(Debug, Subcommand)]
pub(crate) enum CreateCommand {
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
pub(crate) enum DropCommand {
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

impl NodeArgs {
    /// The Flight TLS settings the flags give (files read here), or `None` without any.
    pub(crate) fn flight_tls(&self) -> Result<Option<apiary_flight::FlightTls>, ApiaryError> {
        let any = self.flight_tls_cert.is_some()
            || self.flight_tls_ca.is_some()
            || self.flight_tls_domain.is_some();
        if !any {
            return Ok(None);
        }
        let read = |name: &'static str, path: &Option<PathBuf>| {
            path.as_ref()
                .map(|p| {
                    std::fs::read(p).map_err(|e| ApiaryError::Setting {
                        name,
                        value: p.display().to_string(),
                        message: format!("cannot read this PEM file: {e}"),
                    })
                })
                .transpose()
        };
        Ok(Some(apiary_flight::FlightTls {
            certificate: read("APIARY_FLIGHT_TLS_CERT", &self.flight_tls_cert)?,
            private_key: read("APIARY_FLIGHT_TLS_KEY", &self.flight_tls_key)?,
            ca: read("APIARY_FLIGHT_TLS_CA", &self.flight_tls_ca)?,
            domain: self.flight_tls_domain.clone(),
        }))
    }

    pub(crate) fn swarm_config(&self) -> SwarmConfig {
        SwarmConfig {
            heartbeat_interval: self.heartbeat_interval,
            idle_heartbeat_interval: self.idle_heartbeat_interval,
            idle_after: self.idle_after,
            poll_interval: self.poll_interval,
            idle_list_interval: self.idle_list_interval,
            dead_threshold: self.dead_threshold,
            ..SwarmConfig::default()
        }
    }

    pub(crate) fn options(&self) -> NodeOptions {
        NodeOptions {
            node_id: self.node_id.clone(),
            state_dir: self.state_dir.clone().unwrap_or_else(default_state_dir),
            swarm: self.swarm_config(),
            task_poll_interval: self.task_poll_interval,
            task_idle_poll_interval: self.task_idle_poll_interval,
            attributes: self.attributes.iter().cloned().collect(),
            ..NodeOptions::default()
        }
    }
}
