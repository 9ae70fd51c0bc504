//! Timing sides against each other, round by round.

#![allow(clippy::disallowed_methods)] // real processes and real time: waits and timings read the system clock
use std::time::Instant;

use apiary::{Apiary, SqlSession};
use apiary_benches::harness::{geo_mean, median, result_rows};
use apiary_benches::ssb::QUERIES;

use crate::processes::{Twins, pin_process};
use crate::session;

/// One way of running the queries.
pub(crate) enum Side {
    /// A session of this process, pinned to one core while it runs a query (the one-bee
    /// baseline) or free to use both (a coordinator, or two bees in one process).
    Session {
        session: Box<SqlSession>,
        pinned: bool,
    },
    /// Two whole copies of each query at once, one per twin process.
    Twins(Box<Twins>),
}

impl Side {
    /// Runs query `index` of [`QUERIES`]: its time and rows.
    async fn run(&mut self, index: usize) -> (f64, Vec<String>) {
        let (name, sql) = QUERIES[index];
        match self {
            Side::Session { session, pinned } => {
                pin_process(if *pinned { "0" } else { "0-1" });
                let t = Instant::now();
                let r = session
                    .sql(sql)
                    .await
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
                (t.elapsed().as_secs_f64(), result_rows(&r))
            }
            Side::Twins(twins) => twins.run(index).await,
        }
    }
}

/// A side running in a new session with `apiary.distribute = mode`.
pub(crate) async fn side(ap: &Apiary, mode: &str, pinned: bool) -> Side {
    Side::Session {
        session: Box::new(session(ap, mode).await),
        pinned,
    }
}

/// The timings of one query on one side: every timed run, in round order, and the rows of
/// the last.
#[derive(Debug, Clone, Default)]
pub(crate) struct Timed {
    pub(crate) seconds: Vec<f64>,
    pub(crate) rows: Vec<String>,
}

impl Timed {
    pub(crate) fn median(&self) -> f64 {
        median(self.seconds.clone())
    }
}

/// `runs` timed runs of every query on every side, indexed `[side][query]`.
///
/// The sides take turns: each query runs once untimed on every side (so every side is
/// measured in the same state: footers cached and, with a memory tier, columns admitted),
/// then `runs` rounds of one run per side. A shared virtual machine drifts: the same query
/// on the same side can take 40% longer a minute later. Runs of one round share the drift,
/// so the ratio of two sides does not depend on it, as it would if each side ran all its
/// queries in a block of its own.
pub(crate) async fn time_interleaved(sides: &mut [Side], runs: usize) -> Vec<Vec<Timed>> {
    let mut out: Vec<Vec<Timed>> = vec![Vec::new(); sides.len()];
    for index in 0..QUERIES.len() {
        let mut timed = vec![Timed::default(); sides.len()];
        for round in 0..=runs {
            for (i, side) in sides.iter_mut().enumerate() {
                let (took, rows) = side.run(index).await;
                if round > 0 {
                    timed[i].seconds.push(took);
                    timed[i].rows = rows;
                }
            }
        }
        for (i, t) in timed.into_iter().enumerate() {
            out[i].push(t);
        }
    }
    pin_process("0-1");
    out
}

/// The geometric mean of the speed-up of `faster` over `base` in each round (round `r`
/// pairs the `r`-th runs of every query, which ran back to back on both sides), sorted:
/// how much the figure moves with the machine's drift.
pub(crate) fn round_geo_means(base: &[Timed], faster: &[Timed]) -> Vec<f64> {
    let rounds = base.first().map_or(0, |t| t.seconds.len());
    let mut means: Vec<f64> = (0..rounds)
        .map(|r| {
            let ratios: Vec<f64> = base
                .iter()
                .zip(faster)
                .map(|(b, f)| b.seconds[r] / f.seconds[r])
                .collect();
            geo_mean(&ratios)
        })
        .collect();
    means.sort_by(f64::total_cmp);
    means
}

/// `min`–`max` of sorted round means, for the report.
pub(crate) fn range(means: &[f64]) -> String {
    match (means.first(), means.last()) {
        (Some(lo), Some(hi)) => format!("{lo:.2}x to {hi:.2}x over {} rounds", means.len()),
        _ => "no rounds".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_means_pair_the_runs_of_one_round_and_come_sorted() {
        let timed = |seconds: &[f64]| Timed {
            seconds: seconds.to_vec(),
            rows: Vec::new(),
        };
        // Round 0: speed-ups 2 and 8 (mean 4); round 1: 1 and 1; round 2: 3 and 3.
        let base = [timed(&[2.0, 1.0, 3.0]), timed(&[8.0, 5.0, 6.0])];
        let faster = [timed(&[1.0, 1.0, 1.0]), timed(&[1.0, 5.0, 2.0])];
        let means = round_geo_means(&base, &faster);
        let want = [1.0, 3.0, 4.0];
        assert_eq!(means.len(), want.len());
        for (got, want) in means.iter().zip(want) {
            assert!((got - want).abs() < 1e-9, "{means:?}");
        }
        assert_eq!(range(&means), "1.00x to 4.00x over 3 rounds");
        assert_eq!(range(&[]), "no rounds");
    }
}
