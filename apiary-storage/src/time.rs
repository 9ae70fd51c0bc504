//! Time and randomness, injected.
//!
//! Everything in Apiary that reads a clock, sleeps, ticks or draws a random number goes
//! through this module: a [`Clock`] (monotonic time, wall time, sleep, [`Ticker`]) and a
//! [`Random`] source of ids and jitter. Components take them as parameters, so a test can
//! skew a node's wall clock, move time by hand, or replay a seeded history exactly. Clippy's
//! `disallowed-methods` (see `clippy.toml`) keeps the underlying calls
//! (`SystemTime::now`, `tokio::time::sleep`, `Uuid::new_v4`, …) inside this module.

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use tokio::sync::watch;

/// A boxed sleep, as returned by [`Clock::sleep`].
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// The clocks a component uses.
///
/// Production nodes use [`SystemClock`]; tests move a [`ManualClock`] by hand. Any component
/// that takes an `Arc<dyn Clock>` (membership, the colony, workers, caches) runs on either.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use apiary_storage::time::{Clock, ManualClock, Sleep};
///
/// /// A clock that runs ten times as fast as another (for a soak test of timeouts).
/// #[derive(Debug)]
/// struct Fast(Arc<dyn Clock>);
///
/// impl Clock for Fast {
///     fn monotonic(&self) -> Duration {
///         self.0.monotonic() * 10
///     }
///     fn wall_ms(&self) -> i64 {
///         self.0.wall_ms()
///     }
///     fn sleep(&self, duration: Duration) -> Sleep {
///         self.0.sleep(duration / 10)
///     }
/// }
///
/// let manual = ManualClock::new();
/// let fast = Fast(Arc::new(manual.clone()));
/// manual.advance(Duration::from_secs(1));
/// assert_eq!(fast.monotonic(), Duration::from_secs(10));
/// ```
pub trait Clock: Send + Sync + Debug + 'static {
    /// Monotonic time since an arbitrary origin. Durations and liveness are judged on this.
    fn monotonic(&self) -> Duration;

    /// Wall-clock milliseconds since the Unix epoch. It may be wrong on any node: nothing
    /// that must be correct compares it with another node's (ages of stored objects are
    /// judged on the store's clock, see [`store_now`](crate::store_now)).
    fn wall_ms(&self) -> i64;

    /// Completes after `duration` of this clock's time.
    fn sleep(&self, duration: Duration) -> Sleep;
}

/// Ticks every `period` of a [`Clock`]'s time. A tick that is late (the holder was busy)
/// moves the following ticks back rather than firing a burst of missed ones.
#[derive(Debug)]
pub struct Ticker {
    clock: Arc<dyn Clock>,
    period: Duration,
    next: Duration,
}

impl Ticker {
    /// A ticker whose first tick is one `period` from now.
    pub fn new(clock: Arc<dyn Clock>, period: Duration) -> Self {
        let next = clock.monotonic() + period;
        Self {
            clock,
            period,
            next,
        }
    }

    /// Waits for the next tick.
    pub async fn tick(&mut self) {
        let now = self.clock.monotonic();
        if self.next > now {
            self.clock.sleep(self.next - now).await;
        }
        self.next = self.next.max(self.clock.monotonic()) + self.period;
    }
}

/// The system's clocks (tokio's, so a test runtime with paused time moves them), with an
/// optional offset on the wall clock to test nodes whose clock is wrong.
#[derive(Debug, Clone)]
pub struct SystemClock {
    origin: tokio::time::Instant,
    wall_offset_ms: i64,
    /// For a simulation: the wall clock reads this at `origin` and then moves with tokio's
    /// (paused) time instead of the system's.
    simulated_epoch_ms: Option<i64>,
}

impl SystemClock {
    /// The system clocks.
    #[allow(clippy::disallowed_methods)] // this is the one place the system clock is read
    pub fn new() -> Self {
        Self {
            origin: tokio::time::Instant::now(),
            wall_offset_ms: 0,
            simulated_epoch_ms: None,
        }
    }

    /// The system clocks with the wall clock moved `offset` ahead (`ahead`) or behind.
    pub fn with_wall_offset(offset: Duration, ahead: bool) -> Self {
        Self::new().skewed(offset, ahead)
    }

    /// Clocks for a simulation on tokio's paused time: the wall clock reads `epoch_ms` now
    /// and moves only as tokio's time does, so a run replays the same wall times.
    pub fn simulated(epoch_ms: i64) -> Self {
        Self {
            simulated_epoch_ms: Some(epoch_ms),
            ..Self::new()
        }
    }

    /// The same clocks (one origin, simulated or not) with the wall clock moved `offset`
    /// ahead (`ahead`) or behind.
    pub fn skewed(&self, offset: Duration, ahead: bool) -> Self {
        let ms = offset.as_millis().min(i64::MAX as u128) as i64;
        Self {
            wall_offset_ms: if ahead { ms } else { -ms },
            ..self.clone()
        }
    }

    /// A shared system clock.
    pub fn shared() -> Arc<dyn Clock> {
        Arc::new(Self::new())
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

#[allow(clippy::disallowed_methods)] // this is the one place the system clock is read
impl Clock for SystemClock {
    fn monotonic(&self) -> Duration {
        self.origin.elapsed()
    }

    fn wall_ms(&self) -> i64 {
        let now = match self.simulated_epoch_ms {
            Some(epoch) => epoch.saturating_add(self.origin.elapsed().as_millis() as i64),
            None => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
        };
        now.saturating_add(self.wall_offset_ms)
    }

    fn sleep(&self, duration: Duration) -> Sleep {
        Box::pin(tokio::time::sleep(duration))
    }
}

/// `future` given `duration` of `clock`'s time: its output, or [`Elapsed`] when the time
/// ran out first (the future is then dropped). What `tokio::time::timeout` does, on a clock
/// tests control.
pub async fn timeout<F: Future>(
    clock: &dyn Clock,
    duration: Duration,
    future: F,
) -> Result<F::Output, Elapsed> {
    tokio::select! {
        biased;
        output = future => Ok(output),
        () = clock.sleep(duration) => Err(Elapsed(duration)),
    }
}

/// A [`timeout`] ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed(pub Duration);

impl std::fmt::Display for Elapsed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no answer within {:?}", self.0)
    }
}

impl std::error::Error for Elapsed {}

/// Sleeps on the system clock (tokio's), for code with no clock of its own to honour, such
/// as a storage backend's pause between retries.
pub async fn sleep(duration: Duration) {
    SystemClock::new().sleep(duration).await;
}

/// A clock moved by hand, for tests and simulations. Sleepers wake when it is moved past
/// their deadline.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<watch::Sender<Duration>>,
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl ManualClock {
    /// A clock at zero.
    pub fn new() -> Self {
        Self {
            now: Arc::new(watch::Sender::new(Duration::ZERO)),
        }
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        self.now.send_modify(|now| *now += by);
    }

    /// Sets the clock (never backwards).
    pub fn set(&self, to: Duration) {
        self.now.send_modify(|now| *now = (*now).max(to));
    }
}

impl Clock for ManualClock {
    fn monotonic(&self) -> Duration {
        *self.now.borrow()
    }

    fn wall_ms(&self) -> i64 {
        1_700_000_000_000 + self.monotonic().as_millis() as i64
    }

    fn sleep(&self, duration: Duration) -> Sleep {
        let deadline = self.monotonic() + duration;
        let mut rx = self.now.subscribe();
        Box::pin(async move {
            // The sender lives as long as the clock; if it is gone, nobody can wake us.
            if rx.wait_for(|now| *now >= deadline).await.is_err() {
                std::future::pending::<()>().await;
            }
        })
    }
}

/// A source of random ids and jitter: seeded for tests that must replay exactly, from the
/// operating system otherwise. Clones share one generator.
#[derive(Clone)]
pub struct Random {
    rng: Arc<Mutex<StdRng>>,
}

impl Debug for Random {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Random")
    }
}

/// The process's source (see [`Random::process`]).
static PROCESS: std::sync::OnceLock<Random> = std::sync::OnceLock::new();

thread_local! {
    /// A thread's own source, when a simulation seeded it (see [`Random::seed_thread`]).
    static THREAD: std::cell::RefCell<Option<Random>> = const { std::cell::RefCell::new(None) };
}

/// While it lives, [`Random::process`] answers a seeded source on the thread that made it;
/// dropped, the thread's previous source is back.
#[derive(Debug)]
#[must_use = "the thread's source is seeded only while the guard lives"]
pub struct ThreadSeed {
    previous: Option<Random>,
}

impl Drop for ThreadSeed {
    fn drop(&mut self) {
        let previous = self.previous.take();
        THREAD.with(|t| *t.borrow_mut() = previous);
    }
}

impl Default for Random {
    /// The process's source ([`Random::process`]).
    fn default() -> Self {
        Self::process()
    }
}

impl Random {
    /// Seeded from the operating system: a generator of its own. Apiary's own code never
    /// calls it (Clippy refuses it outside this module): components take a `Random`, and
    /// default to [`Random::process`].
    #[allow(clippy::disallowed_methods)] // the one place OS entropy is drawn
    pub fn from_os() -> Self {
        Self::from_rng(StdRng::from_os_rng())
    }

    /// The process's source, shared by every component not given one of its own: seeded
    /// from the operating system on first use, or with the seed [`seed_process`] gave
    /// before that (a simulation that must replay from its seed). On a thread that
    /// [`seed_thread`] seeded, that thread's source instead.
    ///
    /// [`seed_process`]: Random::seed_process
    /// [`seed_thread`]: Random::seed_thread
    #[allow(clippy::disallowed_methods)] // the one place a production process is seeded
    pub fn process() -> Self {
        if let Some(random) = THREAD.with(|t| t.borrow().clone()) {
            return random;
        }
        PROCESS.get_or_init(Self::from_os).clone()
    }

    /// Makes [`process`](Random::process) answer a source seeded with `seed` on this thread
    /// until the guard is dropped: a simulation running many seeds in one process, each on
    /// a current-thread runtime on this thread, replays each from its seed.
    pub fn seed_thread(seed: u64) -> ThreadSeed {
        let previous = THREAD.with(|t| t.borrow_mut().replace(Self::seeded(seed)));
        ThreadSeed { previous }
    }

    /// Seeds the process's source with `seed`, if nothing drew from it yet; returns whether
    /// it did (a second seed, or one after first use, changes nothing).
    pub fn seed_process(seed: u64) -> bool {
        PROCESS.set(Self::seeded(seed)).is_ok()
    }

    /// Seeded with `seed`: the same seed gives the same sequence.
    pub fn seeded(seed: u64) -> Self {
        Self::from_rng(StdRng::seed_from_u64(seed))
    }

    fn from_rng(rng: StdRng) -> Self {
        Self {
            rng: Arc::new(Mutex::new(rng)),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut StdRng) -> T) -> T {
        f(&mut self.rng.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// A random 128-bit id as 32 lowercase hex digits (a v4 UUID's simple form).
    pub fn id(&self) -> String {
        let mut bytes = [0u8; 16];
        self.with(|rng| rng.fill_bytes(&mut bytes));
        uuid::Builder::from_random_bytes(bytes)
            .into_uuid()
            .simple()
            .to_string()
    }

    /// A uniform number in `0.0..1.0`.
    pub fn unit(&self) -> f64 {
        self.with(|rng| rng.random::<f64>())
    }

    /// A uniform `u64`.
    pub fn next_u64(&self) -> u64 {
        self.with(|rng| rng.next_u64())
    }

    /// A duration drawn uniformly from `0..=ceiling` (full jitter).
    pub fn jitter(&self, ceiling: Duration) -> Duration {
        ceiling.mul_f64(self.unit())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_simulated_wall_clock_moves_with_paused_time_and_skews_share_its_origin() {
        let clock = SystemClock::simulated(1_000_000);
        let ahead = clock.skewed(Duration::from_secs(60), true);
        let behind = clock.skewed(Duration::from_secs(1), false);
        assert_eq!(clock.wall_ms(), 1_000_000);
        clock.sleep(Duration::from_secs(3600)).await;
        assert_eq!(
            clock.wall_ms(),
            1_000_000 + 3_600_000,
            "an hour of paused time"
        );
        assert_eq!(ahead.wall_ms(), clock.wall_ms() + 60_000);
        assert_eq!(behind.wall_ms(), clock.wall_ms() - 1_000);
        assert_eq!(ahead.monotonic(), clock.monotonic(), "one origin");
    }

    #[test]
    fn a_seeded_thread_replays_and_is_restored() {
        let first: Vec<String> = {
            let _seeded = Random::seed_thread(11);
            (0..3).map(|_| Random::process().id()).collect()
        };
        let again: Vec<String> = {
            let _seeded = Random::seed_thread(11);
            let nested = {
                let _inner = Random::seed_thread(12);
                Random::process().id()
            };
            assert_ne!(
                nested,
                Random::seeded(11).id(),
                "the inner seed rules inside"
            );
            (0..3).map(|_| Random::process().id()).collect()
        };
        assert_eq!(first, again);
        // Another thread, and this one once the guard is gone, draw from the process.
        let other = std::thread::spawn(|| Random::process().id())
            .join()
            .unwrap();
        assert!(!first.contains(&other));
        assert!(!first.contains(&Random::process().id()));
    }

    #[test]
    fn seeded_sources_replay() {
        let (a, b) = (Random::seeded(7), Random::seeded(7));
        assert_eq!(a.id(), b.id());
        assert_eq!(a.next_u64(), b.next_u64());
        assert_ne!(Random::seeded(8).id(), Random::seeded(7).id());
        let id = a.id();
        assert_eq!(id.len(), 32);
        assert!(id.bytes().all(|c| c.is_ascii_hexdigit()));
    }

    #[tokio::test]
    async fn manual_sleepers_wake_when_moved_past_their_deadline() {
        let clock = ManualClock::new();
        let sleeping = tokio::spawn(clock.sleep(Duration::from_secs(5)));
        tokio::task::yield_now().await;
        clock.advance(Duration::from_secs(4));
        tokio::task::yield_now().await;
        assert!(!sleeping.is_finished());
        clock.advance(Duration::from_secs(1));
        sleeping.await.unwrap();
    }

    #[tokio::test]
    async fn a_timeout_on_a_manual_clock_runs_out_when_the_clock_is_moved() {
        let clock = ManualClock::new();
        let never = std::future::pending::<()>();
        let waiting = {
            let clock = clock.clone();
            tokio::spawn(async move { timeout(&clock, Duration::from_secs(10), never).await })
        };
        tokio::task::yield_now().await;
        clock.advance(Duration::from_secs(11));
        assert_eq!(
            waiting.await.unwrap(),
            Err(Elapsed(Duration::from_secs(10)))
        );
        assert_eq!(
            timeout(&clock, Duration::from_secs(1), async { 7 }).await,
            Ok(7)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_ticker_does_not_burst() {
        let clock: Arc<dyn Clock> = SystemClock::shared();
        let mut ticker = Ticker::new(Arc::clone(&clock), Duration::from_secs(1));
        ticker.tick().await;
        let first = clock.monotonic();
        clock.sleep(Duration::from_secs(5)).await; // busy for five periods
        ticker.tick().await; // late: fires at once
        ticker.tick().await; // then one period later, not at once again
        assert_eq!(clock.monotonic() - first, Duration::from_secs(6));
    }
}
