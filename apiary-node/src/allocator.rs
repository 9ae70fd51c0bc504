//! What a binary that allocates through mimalloc sets for its process before it starts.
//!
//! mimalloc asks the kernel for transparent huge pages on its arenas (`madvise(MADV_HUGEPAGE)`).
//! Where the kernel's `defrag` setting is `madvise` (its default), a fault in such a region
//! may stop to compact memory and then zeroes 2 MiB, however little of it is used; and
//! mimalloc gives idle memory back after a second, so a node that answers a query every few
//! hundred milliseconds faults its pages in again and again. On a coordinator running SSB's
//! Q4.1 thirty times: 5 to 21 ms of kernel time per query with huge pages, 3 ms without
//! (`docs/operations.md`, `docs/benchmarks.md`).

/// The variable mimalloc reads to decide about huge pages itself (`0` or `1`).
pub const MIMALLOC_ALLOW_THP: &str = "MIMALLOC_ALLOW_THP";

/// Turns transparent huge pages off for this process (and the processes it starts), unless
/// [`MIMALLOC_ALLOW_THP`] is set: then mimalloc does what it says. Returns whether huge
/// pages are now off. Call it first thing in `main`; an embedding program that keeps its
/// own allocator need not. Linux only: elsewhere it does nothing and returns `false`.
pub fn without_huge_pages() -> std::io::Result<bool> {
    if std::env::var_os(MIMALLOC_ALLOW_THP).is_some() {
        return Ok(false);
    }
    turn_off()
}

#[cfg(target_os = "linux")]
fn turn_off() -> std::io::Result<bool> {
    nix::sys::prctl::set_thp_disable(true)?;
    Ok(nix::sys::prctl::get_thp_disable()?)
}

#[cfg(not(target_os = "linux"))]
fn turn_off() -> std::io::Result<bool> {
    Ok(false)
}
