//! [`DurationHistogram`]: durations counted into fixed buckets with relaxed atomics, read as
//! a [`HistogramSnapshot`] (what a node's `/metrics` serves as a Prometheus histogram).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Counts durations into the buckets of fixed upper bounds, plus one past the last.
#[derive(Debug)]
pub struct DurationHistogram {
    bounds: &'static [f64],
    /// Per bucket, not cumulative; the last slot is past the last bound.
    buckets: Box<[AtomicU64]>,
    /// The total, in microseconds.
    micros: AtomicU64,
}

/// What a [`DurationHistogram`] counted so far.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistogramSnapshot {
    /// Cumulative counts at each upper bound in seconds, then at `+Inf`.
    pub buckets: Vec<(f64, u64)>,
    /// Durations counted.
    pub count: u64,
    /// Their total, in seconds.
    pub sum_seconds: f64,
}

impl DurationHistogram {
    /// An empty histogram over `bounds` (upper bounds in seconds, ascending).
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            micros: AtomicU64::new(0),
        }
    }

    /// Counts `n` durations of `took` each.
    pub fn record(&self, took: Duration, n: u64) {
        let secs = took.as_secs_f64();
        let bucket = self
            .bounds
            .iter()
            .position(|&bound| secs <= bound)
            .unwrap_or(self.bounds.len());
        self.buckets[bucket].fetch_add(n, Ordering::Relaxed);
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.micros
            .fetch_add(micros.saturating_mul(n), Ordering::Relaxed);
    }

    /// The counts now.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut count = 0;
        let buckets = self
            .buckets
            .iter()
            .enumerate()
            .map(|(i, n)| {
                count += n.load(Ordering::Relaxed);
                (self.bounds.get(i).copied().unwrap_or(f64::INFINITY), count)
            })
            .collect();
        HistogramSnapshot {
            buckets,
            count,
            sum_seconds: self.micros.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_fall_in_the_first_bucket_that_holds_them() {
        let h = DurationHistogram::new(&[0.001, 0.01]);
        h.record(Duration::from_millis(1), 1); // on a bound: that bucket
        h.record(Duration::from_millis(5), 2);
        h.record(Duration::from_secs(3), 1);
        let s = h.snapshot();
        assert_eq!(s.buckets, vec![(0.001, 1), (0.01, 3), (f64::INFINITY, 4)]);
        assert_eq!(s.count, 4);
        assert!((s.sum_seconds - 3.011).abs() < 1e-9);
    }
}
