//! The `apiary` command: the command line of [`apiary::cli`] on the default parts.

use std::process::ExitCode;

/// The allocator the node runs on (see the `mimalloc` feature).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // Best effort: a process that cannot change it runs as before.
    #[cfg(feature = "mimalloc")]
    let _ = apiary::allocator::without_huge_pages();
    apiary::cli::main(|builder| builder)
}
