//! A node's storage requests as it publishes them: the rate over the last minutes and what
//! a month at that rate costs.

use std::collections::VecDeque;
use std::time::Duration;

use apiary_storage::RequestCounts;
use apiary_storage::cost::S3_STANDARD;
use serde::{Deserialize, Serialize};

/// A node's recent storage requests, in its heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RequestRate {
    /// Requests a minute, all kinds.
    pub per_minute: f64,
    /// PUT (conditional or not) and LIST a minute: the dear class.
    pub writes_and_lists_per_minute: f64,
    /// What a month at this rate costs at S3 Standard prices, in dollars.
    pub monthly_usd: f64,
    /// Over how many seconds the rate was measured.
    pub window_s: u64,
}

/// How long a rate is measured over.
pub const REQUEST_WINDOW: Duration = Duration::from_secs(600);

/// Turns readings of a request counter into a [`RequestRate`] over the last
/// [`REQUEST_WINDOW`].
#[derive(Debug, Default)]
pub struct RequestMeter {
    samples: VecDeque<(Duration, RequestCounts)>,
}

impl RequestMeter {
    /// Records `counts` read at `now` (monotonic) and returns the rate since the oldest
    /// reading kept, once at least a second of readings is in.
    pub fn sample(&mut self, now: Duration, counts: RequestCounts) -> Option<RequestRate> {
        self.samples.push_back((now, counts));
        // Keep one reading at least a window old, as the base.
        while self
            .samples
            .get(1)
            .is_some_and(|(t, _)| now.saturating_sub(*t) >= REQUEST_WINDOW)
        {
            self.samples.pop_front();
        }
        let (start, base) = *self.samples.front()?;
        let over = now.saturating_sub(start);
        if over < Duration::from_secs(1) {
            return None;
        }
        let made = counts.saturating_sub(&base);
        let minutes = over.as_secs_f64() / 60.0;
        Some(RequestRate {
            per_minute: made.total() as f64 / minutes,
            writes_and_lists_per_minute: (made.put + made.conditional_put + made.list) as f64
                / minutes,
            monthly_usd: S3_STANDARD.monthly(&made, over),
            window_s: over.as_secs(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(put: u64, get: u64) -> RequestCounts {
        RequestCounts {
            put,
            get,
            ..RequestCounts::default()
        }
    }

    #[test]
    fn the_rate_is_over_the_last_ten_minutes() {
        let mut meter = RequestMeter::default();
        let min = Duration::from_secs(60);
        assert_eq!(meter.sample(Duration::ZERO, counts(0, 0)), None);
        // A busy first minute, then one PUT and 12 GETs a minute.
        let mut put = 600;
        let mut get = 600;
        meter.sample(min, counts(put, get));
        for m in 2..=30 {
            put += 1;
            get += 12;
            let rate = meter.sample(m * min, counts(put, get)).unwrap();
            if m >= 12 {
                assert!((rate.per_minute - 13.0).abs() < 1e-9, "{m}: {rate:?}");
                assert!((rate.writes_and_lists_per_minute - 1.0).abs() < 1e-9);
                assert_eq!(rate.window_s, 600);
            }
        }
        let rate = meter.sample(31 * min, counts(put + 1, get + 12)).unwrap();
        // 1 PUT and 12 GETs a minute for a month: 43 830 PUTs and 525 960 GETs.
        assert!((rate.monthly_usd - 0.4295).abs() < 0.001, "{rate:?}");
    }
}
