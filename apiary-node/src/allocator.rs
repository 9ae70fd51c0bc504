//! How a node's allocator (mimalloc, in the `apiary` binary) returns memory to the system.
//!
//! mimalloc gives freed pages back to the kernel one second after they were freed. A node
//! that answers a query every few seconds then gets its whole working set (hash tables,
//! decoded pages, batch buffers) from the kernel again for every query, and the kernel
//! zeroes each page on first touch: on the Star Schema Benchmark that was a tenth of a
//! node's CPU per query (see `docs/benchmarks.md`, "Where the nodes' CPU goes").
//! [`keep_freed_memory`] keeps freed pages for ten seconds instead, as jemalloc does by
//! default (`dirty_decay_ms`): a busy node reuses them, and an idle one still gives them
//! back ten seconds after its last query.

// mimalloc's options are set through its C interface.
#![allow(unsafe_code)]

use libmimalloc_sys::mi_option_t;

/// mimalloc's `mi_option_purge_delay` (its place in `mi_option_e`, `mimalloc.h`; the Rust
/// bindings name no constant for it). The tests check that it is the option the
/// `MIMALLOC_PURGE_DELAY` variable sets.
const PURGE_DELAY: mi_option_t = 15;

/// How long freed memory is kept before it is given back, in milliseconds.
pub const KEEP_FREED_MS: i64 = 10_000;

/// Keeps freed memory [`KEEP_FREED_MS`] before giving it back to the system, unless the
/// environment sets mimalloc's own `MIMALLOC_PURGE_DELAY` (which then wins). For a binary
/// whose global allocator is `mimalloc::MiMalloc`; call it first thing in `main`.
pub fn keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one of mimalloc's option values; any value is valid for this option.
        unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, KEEP_FREED_MS as _) }
    }
}

/// The purge delay mimalloc runs with, in milliseconds.
#[allow(clippy::useless_conversion)] // `c_long` is `i64` here, `i32` on Windows.
pub fn purge_delay_ms() -> i64 {
    // SAFETY: reads one of mimalloc's option values.
    i64::from(unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY) })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Set in the child process [`the_environment_wins`] starts.
    const CHILD: &str = "APIARY_ALLOCATOR_TEST_CHILD";

    #[test]
    fn freed_memory_is_kept_ten_seconds() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return; // The environment's value wins; checked below.
        }
        keep_freed_memory();
        assert_eq!(purge_delay_ms(), KEEP_FREED_MS);
    }

    /// In a child process with `MIMALLOC_PURGE_DELAY` set: the option read is the one the
    /// variable names (so [`PURGE_DELAY`] is mimalloc's purge delay), and it is kept.
    #[test]
    fn the_environment_wins() {
        if std::env::var_os(CHILD).is_some() {
            keep_freed_memory();
            assert_eq!(purge_delay_ms(), 4321);
            return;
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "allocator::tests::the_environment_wins"])
            .env(CHILD, "1")
            .env("MIMALLOC_PURGE_DELAY", "4321")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("1 passed"), "{stdout}");
    }
}
