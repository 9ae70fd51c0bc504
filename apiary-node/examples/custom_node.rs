//! A custom node binary in ten lines: the whole `apiary` command line (every subcommand,
//! flag and environment variable, signals, the status file, drain) on parts of your own.
//! This one sends distributed results in 1 MiB chunks instead of 4 MiB; a storage backend,
//! membership or transport of your own plugs into the builder the same way.
//!
//! Run: `cargo run -p apiary-node --example custom_node -- node --storage ./apiary-data`

use std::process::ExitCode;
use std::sync::Arc;

use apiary::apiary_shuffle::StorageShuffle;

fn main() -> ExitCode {
    apiary::cli::main(|builder| {
        builder.transport_with(|backend| {
            Arc::new(StorageShuffle::new(Arc::clone(backend)).with_chunk_bytes(1 << 20))
        })
    })
}
