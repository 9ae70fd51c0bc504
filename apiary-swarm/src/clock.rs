//! Time, injected: a monotonic clock for judging liveness and a wall clock for display.

use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The clocks a node uses.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// Monotonic time since an arbitrary origin. Liveness is judged on this alone.
    fn monotonic(&self) -> Duration;
    /// Wall-clock milliseconds since the Unix epoch, written into heartbeats for people to
    /// read. No decision is ever made by comparing it with another node's.
    fn wall_ms(&self) -> i64;
}

/// The system clocks, with an optional offset on the wall clock (to test that a node whose
/// clock is wrong is still judged correctly).
#[derive(Debug)]
pub struct SystemClock {
    origin: Instant,
    wall_offset_ms: i64,
}

impl SystemClock {
    /// The system clocks.
    pub fn new() -> Self {
        Self::with_wall_offset(Duration::ZERO, true)
    }

    /// The system clocks with the wall clock moved `offset` ahead (`ahead`) or behind.
    pub fn with_wall_offset(offset: Duration, ahead: bool) -> Self {
        let ms = offset.as_millis().min(i64::MAX as u128) as i64;
        Self {
            origin: Instant::now(),
            wall_offset_ms: if ahead { ms } else { -ms },
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn monotonic(&self) -> Duration {
        self.origin.elapsed()
    }

    fn wall_ms(&self) -> i64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        now.saturating_add(self.wall_offset_ms)
    }
}

/// A clock moved by hand, for tests and simulations.
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    now: Arc<Mutex<Duration>>,
}

impl ManualClock {
    /// A clock at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().unwrap_or_else(|p| p.into_inner());
        *now += by;
    }

    /// Sets the clock (never backwards).
    pub fn set(&self, to: Duration) {
        let mut now = self.now.lock().unwrap_or_else(|p| p.into_inner());
        *now = (*now).max(to);
    }
}

impl Clock for ManualClock {
    fn monotonic(&self) -> Duration {
        *self.now.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wall_ms(&self) -> i64 {
        1_700_000_000_000 + self.monotonic().as_millis() as i64
    }
}
