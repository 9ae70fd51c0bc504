//! A node's recent history, carried in its heartbeat: a sample every
//! [`SAMPLE_SPACING`] or so over the last [`HISTORY_SPAN`] (queries a second, bytes scanned
//! a second, cache hit ratio, temperature), so that any node can draw every node's charts
//! from the heartbeats it reads anyway, with no metrics server.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How far back a heartbeat's history reaches.
pub const HISTORY_SPAN: Duration = Duration::from_secs(600);
/// The least time between two samples (heartbeats come more often while a node works).
pub const SAMPLE_SPACING: Duration = Duration::from_secs(10);
/// The most samples a heartbeat carries (a damaged or hostile one is cut to it).
pub const MAX_SAMPLES: usize = 128;

/// What a node counts of its work since it started, read at each heartbeat.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Activity {
    /// SQL statements finished.
    pub queries: u64,
    /// Statements running now.
    pub queries_running: u64,
    /// Bytes of the cells its scans read (from memory, its cache or storage).
    pub bytes_scanned: u64,
    /// Cells its scans read.
    pub cells_scanned: u64,
    /// Cells it fetched from storage (the reads its memory and its cache could not serve).
    pub cells_fetched: u64,
}

/// Reads the node's [`Activity`], for each heartbeat.
pub type ActivityReport = Arc<dyn Fn() -> Activity + Send + Sync>;

/// One point of a node's history: rates over the time since the sample before it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// When it was taken (ms since the epoch, the node's own clock).
    pub at_ms: i64,
    /// Statements finished a second.
    pub queries_per_s: f64,
    /// Bytes scanned a second.
    pub bytes_scanned_per_s: f64,
    /// The share of cell reads served from memory or the cache, not storage; absent when
    /// no cell was read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_hit_ratio: Option<f64>,
    /// Colony temperature when it was taken.
    pub temperature: f64,
    /// Statements running when it was taken.
    #[serde(default)]
    pub queries_running: u64,
}

impl Sample {
    /// The sample with every figure finite and in range (for one read from storage).
    pub(crate) fn sanitized(mut self) -> Self {
        let finite = |v: f64| if v.is_finite() { v.max(0.0) } else { 0.0 };
        self.queries_per_s = finite(self.queries_per_s);
        self.bytes_scanned_per_s = finite(self.bytes_scanned_per_s);
        self.temperature = finite(self.temperature);
        self.cache_hit_ratio = self
            .cache_hit_ratio
            .filter(|r| r.is_finite())
            .map(|r| r.clamp(0.0, 1.0));
        self
    }
}

/// Turns readings of a node's [`Activity`] into its [`Sample`]s.
#[derive(Debug, Default)]
pub struct HistoryRecorder {
    /// The last reading a sample was taken at: (monotonic time, activity).
    last: Option<(Duration, Activity)>,
    samples: VecDeque<Sample>,
}

impl HistoryRecorder {
    /// Records `activity` read at `now` (monotonic) and `wall_ms`, with the colony's
    /// `temperature`, and returns the history to publish. A sample is taken only when
    /// [`SAMPLE_SPACING`] passed since the last one; the first reading is the base.
    pub fn record(
        &mut self,
        now: Duration,
        wall_ms: i64,
        activity: Activity,
        temperature: f64,
    ) -> Vec<Sample> {
        match self.last {
            None => self.last = Some((now, activity)),
            Some((then, before)) if now.saturating_sub(then) >= SAMPLE_SPACING => {
                let secs = now.saturating_sub(then).as_secs_f64();
                let delta = |a: u64, b: u64| a.saturating_sub(b) as f64;
                let reads = delta(activity.cells_scanned, before.cells_scanned);
                let fetched = delta(activity.cells_fetched, before.cells_fetched).min(reads);
                self.samples.push_back(Sample {
                    at_ms: wall_ms,
                    queries_per_s: delta(activity.queries, before.queries) / secs,
                    bytes_scanned_per_s: delta(activity.bytes_scanned, before.bytes_scanned) / secs,
                    cache_hit_ratio: (reads > 0.0).then(|| 1.0 - fetched / reads),
                    temperature,
                    queries_running: activity.queries_running,
                });
                self.last = Some((now, activity));
            }
            Some(_) => {}
        }
        let span = i64::try_from(HISTORY_SPAN.as_millis()).unwrap_or(i64::MAX);
        while self
            .samples
            .front()
            .is_some_and(|s| wall_ms.saturating_sub(s.at_ms) > span)
            || self.samples.len() > MAX_SAMPLES
        {
            self.samples.pop_front();
        }
        self.samples.iter().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(queries: u64, bytes: u64, cells: u64, fetched: u64) -> Activity {
        Activity {
            queries,
            queries_running: 1,
            bytes_scanned: bytes,
            cells_scanned: cells,
            cells_fetched: fetched,
        }
    }

    #[test]
    fn samples_are_rates_spaced_apart_and_ten_minutes_long() {
        let mut h = HistoryRecorder::default();
        let s = Duration::from_secs;
        assert!(h.record(s(0), 0, reading(0, 0, 0, 0), 0.0).is_empty());
        // Too soon: no sample yet.
        assert!(h.record(s(5), 5_000, reading(5, 0, 0, 0), 0.5).is_empty());
        let got = h.record(s(10), 10_000, reading(20, 1000, 4, 1), 0.5);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].queries_per_s, 2.0);
        assert_eq!(got[0].bytes_scanned_per_s, 100.0);
        assert_eq!(got[0].cache_hit_ratio, Some(0.75));
        assert_eq!(got[0].queries_running, 1);
        // No cell read: no ratio rather than a made-up one.
        let got = h.record(s(20), 20_000, reading(20, 1000, 4, 1), 0.0);
        assert_eq!(got[1].cache_hit_ratio, None);
        assert_eq!(got[1].queries_per_s, 0.0);
        // Eleven minutes on, the old samples are gone.
        let got = h.record(s(680), 680_000, reading(20, 1000, 4, 1), 0.0);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].at_ms, 680_000);
    }

    #[test]
    fn a_damaged_sample_is_made_finite() {
        let bad = Sample {
            at_ms: 0,
            queries_per_s: f64::NAN,
            bytes_scanned_per_s: -4.0,
            cache_hit_ratio: Some(7.0),
            temperature: f64::INFINITY,
            queries_running: 0,
        }
        .sanitized();
        assert_eq!(bad.queries_per_s, 0.0);
        assert_eq!(bad.bytes_scanned_per_s, 0.0);
        assert_eq!(bad.cache_hit_ratio, Some(1.0));
        assert_eq!(bad.temperature, 0.0);
    }
}
