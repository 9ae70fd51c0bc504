//! The colony's temperature: how loaded a node is, from real signals, and what it does about
//! it.
//!
//! Signals, each a ratio where 1.0 is "fully used":
//! * **load**: bees busy plus work waiting for one, over the bees;
//! * **memory**: memory held by running work over the bees' budget;
//! * **failures**: tasks that failed among those that ended in the last five minutes;
//! * **storage**: the storage latency (moving average of heartbeat writes) over a reference
//!   of 250 ms.
//!
//! `temperature = max(load, memory) + 0.25 × failures + 0.25 × min(storage, 2)`, so a node
//! whose bees are all busy sits at 1.0, and one with as much work waiting as running at 2.0.
//! Regulation bands around the setpoint (default 0.7): `cold` below setpoint − 0.35, `ideal`
//! up to setpoint + 0.15, `warm` up to + 0.5, `hot` up to + 1.3, `critical` above. What a
//! band does:
//! * `cold`: background work (compaction) may run;
//! * `hot`: new queries and writes wait before they start (backpressure, up to 2 s,
//!   growing with the temperature), and the wait is counted;
//! * `critical`: new queries are refused with an error that says the node is overloaded and
//!   when to retry.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use crate::clock::Clock;
use crate::load::Bees;

/// A regulation band.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Regulation {
    /// Idle enough for background work.
    Cold,
    /// Around the setpoint.
    Ideal,
    /// Busy.
    Warm,
    /// Overloaded: new work is slowed.
    Hot,
    /// Far overloaded: new queries are refused.
    Critical,
}

impl Regulation {
    /// The band of `temperature` around `setpoint`.
    pub fn of(temperature: f64, setpoint: f64) -> Self {
        if temperature < setpoint - 0.35 {
            Regulation::Cold
        } else if temperature <= setpoint + 0.15 {
            Regulation::Ideal
        } else if temperature <= setpoint + 0.5 {
            Regulation::Warm
        } else if temperature <= setpoint + 1.3 {
            Regulation::Hot
        } else {
            Regulation::Critical
        }
    }

    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Regulation::Cold => "cold",
            Regulation::Ideal => "ideal",
            Regulation::Warm => "warm",
            Regulation::Hot => "hot",
            Regulation::Critical => "critical",
        }
    }
}

/// How the colony regulates itself.
#[derive(Debug, Clone)]
pub struct ColonyConfig {
    /// The temperature the node aims at (default 0.7).
    pub setpoint: f64,
    /// The longest wait `hot` puts before new work (default 2 s).
    pub max_backpressure: Duration,
    /// How far back task failures count (default 5 min).
    pub failure_window: Duration,
    /// Storage latency that counts as 1.0 (default 250 ms).
    pub latency_reference: Duration,
}

impl Default for ColonyConfig {
    fn default() -> Self {
        Self {
            setpoint: 0.7,
            max_backpressure: Duration::from_secs(2),
            failure_window: Duration::from_secs(300),
            latency_reference: Duration::from_millis(250),
        }
    }
}

/// The signals behind a temperature.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Signals {
    /// (busy + waiting) / bees.
    pub load: f64,
    /// Memory held by work / the bees' budget.
    pub memory: f64,
    /// Failed / ended tasks in the failure window.
    pub failures: f64,
    /// Storage latency / the reference.
    pub storage: f64,
}

impl Signals {
    /// The temperature they make.
    pub fn temperature(&self) -> f64 {
        self.load.max(self.memory) + 0.25 * self.failures + 0.25 * self.storage.min(2.0)
    }
}

/// New work refused because the node is overloaded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "this node is overloaded (colony temperature {temperature:.2}, critical): it takes no new \
     queries now; retry in {retry_after_secs} s, or on another node"
)]
pub struct Overloaded {
    /// The temperature when it refused.
    pub temperature: f64,
    /// A reasonable wait before retrying, in seconds.
    pub retry_after_secs: u64,
}

/// A node's colony: its bees and the other signals, and the regulation they lead to.
pub struct Colony {
    bees: Arc<Bees>,
    config: ColonyConfig,
    clock: Arc<dyn Clock>,
    /// When each recent task ended, and whether it failed.
    tasks: Mutex<VecDeque<(Duration, bool)>>,
    /// Storage latency moving average, in microseconds.
    latency_us: AtomicU64,
    throttled: AtomicU64,
    refused: AtomicU64,
}

impl std::fmt::Debug for Colony {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Colony")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Colony {
    /// The colony of `bees`, timed on `clock`.
    pub fn new(bees: Arc<Bees>, config: ColonyConfig, clock: Arc<dyn Clock>) -> Self {
        Self {
            bees,
            config,
            clock,
            tasks: Mutex::default(),
            latency_us: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    /// The bees.
    pub fn bees(&self) -> &Arc<Bees> {
        &self.bees
    }

    /// The setpoint.
    pub fn setpoint(&self) -> f64 {
        self.config.setpoint
    }

    /// Records a task that ended.
    pub fn record_task(&self, failed: bool) {
        let now = self.clock.monotonic();
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        tasks.push_back((now, failed));
        while tasks.len() > 10_000 {
            tasks.pop_front();
        }
    }

    /// Records how long a storage request took (the agent reports its heartbeat writes).
    pub fn record_storage_latency(&self, took: Duration) {
        let sample = took.as_micros().min(u128::from(u64::MAX)) as u64;
        let old = self.latency_us.load(Ordering::Relaxed);
        let new = if old == 0 {
            sample
        } else {
            (old * 7 + sample) / 8
        };
        self.latency_us.store(new, Ordering::Relaxed);
    }

    /// The signals now.
    pub fn signals(&self) -> Signals {
        let (busy, queued) = self.bees.occupancy();
        let total = f64::from(self.bees.total().max(1));
        let budget = self.bees.memory_budget().max(1) as f64;
        let now = self.clock.monotonic();
        let (ended, failed) = {
            let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
            while tasks
                .front()
                .is_some_and(|(at, _)| now.saturating_sub(*at) > self.config.failure_window)
            {
                tasks.pop_front();
            }
            (tasks.len(), tasks.iter().filter(|(_, f)| *f).count())
        };
        let reference = self.config.latency_reference.as_micros().max(1) as f64;
        Signals {
            load: f64::from(busy + queued) / total,
            memory: self.bees.memory_used() as f64 / budget,
            failures: if ended == 0 {
                0.0
            } else {
                failed as f64 / ended as f64
            },
            storage: self.latency_us.load(Ordering::Relaxed) as f64 / reference,
        }
    }

    /// The temperature now.
    pub fn temperature(&self) -> f64 {
        self.signals().temperature()
    }

    /// The regulation band now.
    pub fn regulation(&self) -> Regulation {
        Regulation::of(self.temperature(), self.config.setpoint)
    }

    /// Lets new work start: at once when the colony is cool enough, after a wait when it is
    /// hot, not at all when it is critical.
    pub async fn admit(&self) -> Result<(), Overloaded> {
        let temperature = self.temperature();
        match Regulation::of(temperature, self.config.setpoint) {
            Regulation::Critical => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                Err(Overloaded {
                    temperature,
                    retry_after_secs: self.config.max_backpressure.as_secs().max(1) * 5,
                })
            }
            Regulation::Hot => {
                // From nothing at the hot line to the full wait at the critical line.
                let hot = self.config.setpoint + 0.5;
                let share = ((temperature - hot) / 0.8).clamp(0.1, 1.0);
                self.throttled.fetch_add(1, Ordering::Relaxed);
                tracing::info!(temperature, "the colony is hot: slowing new work down");
                self.clock
                    .sleep(self.config.max_backpressure.mul_f64(share))
                    .await;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Lets a write start: like [`admit`](Self::admit), but a critical colony only slows it
    /// down (the longest wait) instead of refusing it: writes carry data that has nowhere
    /// else to go.
    pub async fn admit_write(&self) {
        if self.admit().await.is_err() {
            self.clock.sleep(self.config.max_backpressure).await;
        }
    }

    /// New work slowed down by `hot` so far.
    pub fn throttled(&self) -> u64 {
        self.throttled.load(Ordering::Relaxed)
    }

    /// New queries refused by `critical` so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn bands_around_the_setpoint() {
        let band = |t| Regulation::of(t, 0.7);
        assert_eq!(band(0.0), Regulation::Cold);
        assert_eq!(band(0.5), Regulation::Ideal);
        assert_eq!(band(1.0), Regulation::Warm);
        assert_eq!(band(1.5), Regulation::Hot);
        assert_eq!(band(2.5), Regulation::Critical);
    }

    #[tokio::test]
    async fn failures_and_latency_warm_the_colony_and_age_out() {
        let clock = ManualClock::new();
        let colony = Colony::new(
            Bees::new(2, 2 << 30),
            ColonyConfig::default(),
            Arc::new(clock.clone()),
        );
        assert_eq!(colony.regulation(), Regulation::Cold);
        for failed in [true, true, false, false] {
            colony.record_task(failed);
        }
        assert!((colony.signals().failures - 0.5).abs() < 1e-9);
        colony.record_storage_latency(Duration::from_millis(500));
        let t = colony.temperature();
        assert!((t - (0.125 + 0.5)).abs() < 1e-9, "{t}");
        clock.advance(Duration::from_secs(301));
        assert_eq!(colony.signals().failures, 0.0, "old failures age out");
    }
}
