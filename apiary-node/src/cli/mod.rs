//! The `apiary` command line, reusable: a custom node binary gets every subcommand, flag,
//! signal handling, the status file and drain by calling [`main`] with a function that
//! plugs its parts into the [`ApiaryBuilder`].
//!
//! A node binary whose results travel in 1 MiB chunks instead of 4 MiB (any storage
//! backend, membership or shuffle transport plugs in the same way):
//!
//! ```no_run
//! use std::sync::Arc;
//! use apiary::apiary_shuffle::StorageShuffle;
//!
//! fn main() -> std::process::ExitCode {
//!     apiary::cli::main(|builder| {
//!         builder.transport_with(|backend| {
//!             Arc::new(StorageShuffle::new(Arc::clone(backend)).with_chunk_bytes(1 << 20))
//!         })
//!     })
//! }
//! ```
//!
//! `my-node node --storage s3://bucket/swarm`, `my-node sql "…"`, `my-node colony`: the
//! same commands as `apiary`, on the parts given.

use std::ffi::OsString;
use std::process::ExitCode;

use apiary_storage::StorageUri;
use clap::Parser;

use crate::{Apiary, ApiaryBuilder, ApiaryOptions};

mod args;
mod commands;
mod print;
mod shell;
mod tokens;

use args::{Cli, Command};

type CliResult<T> = Result<T, Box<dyn std::error::Error>>;

/// Runs the command line of this process's arguments on a node composed by `customize`
/// (given the builder with the command's options; return it with your parts plugged in).
/// Prints errors on stderr as `error: …` and returns the exit code for `main` to return.
pub fn main(customize: impl FnOnce(ApiaryBuilder) -> ApiaryBuilder) -> ExitCode {
    main_from(std::env::args_os(), customize)
}

/// [`main`] with the arguments given (the first one names the program).
pub fn main_from<I, T>(args: I, customize: impl FnOnce(ApiaryBuilder) -> ApiaryBuilder) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let mut cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        // `--help` and `--version` print and succeed; a bad argument prints its usage.
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let command = match cli.command.take() {
        Some(command) => command,
        None => {
            use std::io::IsTerminal;
            if std::io::stdin().is_terminal() && std::io::stdout().is_terminal() {
                // The shell's own flags from the environment, as `apiary shell` reads them.
                match Cli::try_parse_from(args.iter().chain([&OsString::from("shell")])) {
                    Ok(Cli {
                        command: Some(shell),
                        ..
                    }) => shell,
                    Ok(_) => unreachable!("`shell` parses as the shell command"),
                    Err(e) => {
                        let _ = e.print();
                        return ExitCode::from(2);
                    }
                }
            } else {
                use clap::CommandFactory;
                let _ = Cli::command().print_help();
                return ExitCode::from(2);
            }
        }
    };
    let node = matches!(command, Command::Node { .. });
    if !node {
        // A one-shot command whose output is piped into `head` stops quietly when the pipe
        // closes, as Unix tools do, instead of panicking on the failed write. (The node keeps
        // Rust's default: it writes no output to pipes, and its sockets never raise SIGPIPE.)
        sigpipe::reset();
    }
    // A node logs what it does; a one-shot command only what went wrong (a coordinator's
    // retried result reads, say). `RUST_LOG` overrides either.
    init_logging(if node { "info" } else { "warn" });
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
    let run = async {
        let ap = open(&cli, &command, customize).await?;
        commands::execute(&ap, cli, command).await
    };
    match runtime.block_on(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Opens the node the command runs on, with the command's options and the caller's parts.
async fn open(
    cli: &Cli,
    command: &Command,
    customize: impl FnOnce(ApiaryBuilder) -> ApiaryBuilder,
) -> CliResult<Apiary> {
    let storage = StorageUri::parse(&cli.storage)?;
    let mut options = ApiaryOptions::new(storage);
    options.swarm = cli.node.swarm_config();
    // Commits name the node of this state folder (when it has one) as their writer.
    options.ledger.writer = cli.node.options().peek_node_id();
    options.distribute.task_timeout = cli.node.task_timeout;
    options.distribute.pickup_timeout = cli.node.pickup_timeout;
    options.distribute.orphan_retention = cli.node.query_retention;
    options.distribute.auto_min_bytes = cli.node.distribute_min_bytes;
    if let Some(listen) = cli.node.flight {
        let node = matches!(command, Command::Node { .. });
        options.flight = Some(crate::FlightOptions {
            listen: node.then_some(listen),
            advertise: cli.node.flight_advertise.clone(),
            lz4: cli.node.flight_lz4,
            tls: cli.node.flight_tls()?,
        });
    }
    if let Command::Shell { memory_tier, .. } = command {
        options.memory_tier = *memory_tier;
    }
    if let Command::Sql { local, memory, .. } = command {
        if *local {
            options.distribute_mode = apiary_query::distributed::DistributeMode::Never;
        }
        options.query_memory = memory.map(|m| m as usize);
        // One query per process: nothing would be read again from a memory tier.
        options.memory_tier = Some(0);
    }
    Ok(customize(Apiary::builder(options)).build().await?)
}

/// `HIVE.BOX`, split.
fn split_two(text: &str) -> CliResult<(&str, &str)> {
    match text.split_once('.') {
        Some((a, b)) if !b.contains('.') => Ok((a, b)),
        _ => Err(format!("expected HIVE.BOX, got `{text}`").into()),
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
