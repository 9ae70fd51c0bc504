//! The `apiary` command: the command line of [`apiary::cli`] on the default parts.

use std::process::ExitCode;

/// The allocator the node runs on (see the `mimalloc` feature).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    apiary::cli::main(|builder| builder)
}
