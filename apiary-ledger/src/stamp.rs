//! Commit stamps on the store's clock.
//!
//! Every ledger entry carries `committed_at_ms`, the time a reader's `TIMESTAMP AS OF` is
//! judged against. A node's own clock may be hours off (a Raspberry Pi without a real-time
//! clock boots in 1970 until NTP answers), so a stamp is the node's clock corrected by its
//! measured offset to the **store's** clock ([`store_now`]): every node stamps on one
//! clock, and because the stamp is written into the entry (not read from the object's
//! modification time) a copied bucket keeps its history. The offset is measured again
//! when it is older than [`StoreClock::recalibrate`], so a clock that jumps is followed.
//!
//! A committer also never stamps before the entry it follows, so stamps never decrease
//! along a ledger and a time can be found by binary search over versions.

use std::sync::Mutex;
use std::time::Duration;

use apiary_storage::time::Clock;
use apiary_storage::{StorageBackend, store_now};

/// The offset from a node's wall clock to the store's clock, measured when stale.
#[derive(Debug)]
pub struct StoreClock {
    /// How old a measurement may get before the next stamp measures again.
    pub recalibrate: Duration,
    /// `(offset_ms, measured at on the monotonic clock)`.
    measured: Mutex<Option<(i64, Duration)>>,
}

impl Default for StoreClock {
    fn default() -> Self {
        Self::new(Duration::from_secs(600))
    }
}

impl StoreClock {
    /// A clock that measures its offset at most every `recalibrate`.
    pub fn new(recalibrate: Duration) -> Self {
        Self {
            recalibrate,
            measured: Mutex::new(None),
        }
    }

    /// The store's time now, estimated from `clock` and the last offset measured; measures
    /// again (one PUT, one HEAD, one DELETE) when the offset is stale. A failed measurement
    /// keeps the last offset (none: the node's clock as it is) and is logged.
    pub async fn now_ms(&self, clock: &dyn Clock, backend: &dyn StorageBackend) -> i64 {
        let fresh = *self.measured.lock().unwrap_or_else(|p| p.into_inner());
        let offset = match fresh {
            Some((offset, at)) if clock.monotonic().saturating_sub(at) < self.recalibrate => offset,
            _ => {
                let before = clock.wall_ms();
                match store_now(backend).await {
                    Ok(store) => {
                        let after = clock.wall_ms();
                        let offset = store - (before / 2 + after / 2);
                        *self.measured.lock().unwrap_or_else(|p| p.into_inner()) =
                            Some((offset, clock.monotonic()));
                        offset
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "the store's clock could not be read; \
                            stamping with the last known offset");
                        fresh.map_or(0, |(offset, _)| offset)
                    }
                }
            }
        };
        clock.wall_ms().saturating_add(offset)
    }

    /// The store's time now, estimated without a request (the node's clock when no offset
    /// was measured yet).
    pub fn estimate_ms(&self, clock: &dyn Clock) -> i64 {
        let offset = self
            .measured
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map_or(0, |(offset, _)| offset);
        clock.wall_ms().saturating_add(offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use apiary_storage::time::{ManualClock, SystemClock};

    #[tokio::test]
    async fn a_skewed_node_stamps_on_the_store_clock() {
        let backend = apiary_storage::memory();
        let truth = SystemClock::new();
        // A node whose clock is three hours behind.
        let skewed = SystemClock::with_wall_offset(Duration::from_secs(3 * 3600), false);
        let stamps = StoreClock::default();
        let stamped = stamps.now_ms(&skewed, backend.as_ref()).await;
        assert!((stamped - truth.wall_ms()).abs() < 5_000, "{stamped}");
        assert!((stamps.estimate_ms(&skewed) - truth.wall_ms()).abs() < 5_000);
    }

    #[tokio::test]
    async fn the_offset_is_measured_again_once_stale() {
        let backend = apiary_storage::memory();
        let clock = ManualClock::new();
        let stamps = StoreClock::new(Duration::from_secs(60));
        let first = stamps.now_ms(&clock, backend.as_ref()).await;
        clock.advance(Duration::from_secs(30));
        // Within the period: no new measurement, the manual clock's 30 s show.
        let second = stamps.now_ms(&clock, backend.as_ref()).await;
        assert_eq!(second - first, 30_000);
        clock.advance(Duration::from_secs(31));
        // Stale: measured again against the store, whose clock did not move 61 s.
        let third = stamps.now_ms(&clock, backend.as_ref()).await;
        assert!(third - first < 30_000, "{first} {third}");
    }
}
