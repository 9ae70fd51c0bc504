//! Bugs planted on purpose, to prove that a test can fail: a simulation that passes with
//! none planted must catch each one within a few seeds. Only the `testing` feature can
//! plant one; without it [`is_planted`] is always false and costs nothing.

/// A commit whose response was lost is taken for another writer's (the ledger then commits
/// it again: a write twice).
pub const LOST_CREATE_IS_A_CONFLICT: &str = "lost-create-is-a-conflict";

/// Vacuum judges ages on the node's own clock instead of the store's (a node whose clock
/// runs ahead deletes what past versions still need).
pub const VACUUM_ON_THE_NODE_CLOCK: &str = "vacuum-on-the-node-clock";

/// A task that finds a shared cell already claimed takes the claim for its own earlier one
/// whose response was lost, without reading whose it is (two tasks then read one cell).
pub const CLAIM_TAKEN_WHEN_HELD: &str = "claim-taken-when-held";

/// The coordinator counts every result delivered: one of an attempt it gave up, and one
/// holding a cell another result delivered already.
pub const DOUBLE_COUNTED_RESULT: &str = "double-counted-result";

#[cfg(feature = "testing")]
static PLANTED: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());

/// Plants `bug` in this process (until [`clear`]).
#[cfg(feature = "testing")]
pub fn plant(bug: &'static str) {
    PLANTED.lock().unwrap_or_else(|p| p.into_inner()).push(bug);
}

/// Removes every planted bug.
#[cfg(feature = "testing")]
pub fn clear() {
    PLANTED.lock().unwrap_or_else(|p| p.into_inner()).clear();
}

/// Whether `bug` is planted in this process.
#[cfg(feature = "testing")]
pub fn is_planted(bug: &str) -> bool {
    PLANTED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .contains(&bug)
}

/// Whether `bug` is planted in this process: never, without the `testing` feature.
#[cfg(not(feature = "testing"))]
#[inline(always)]
pub fn is_planted(_bug: &str) -> bool {
    false
}
