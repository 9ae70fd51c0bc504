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

/// CPU time process `pid` has used so far, in seconds: the sum over its live threads of
/// their time on a core (`/proc/PID/task/*/schedstat`, nanoseconds, so a query's few
/// milliseconds show). Zero where the file cannot be read.
pub(crate) fn cpu_seconds(pid: u32) -> f64 {
    let Ok(threads) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    let nanos: u64 = threads
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    nanos as f64 / 1e9
}

/// CPU seconds each watched process spent during a side's timed runs of each query, summed
/// over the rounds, indexed `[side][query][process]`, and how many rounds there were.
#[derive(Debug, Clone, Default)]
pub(crate) struct CpuUse {
    pub(crate) seconds: Vec<Vec<Vec<f64>>>,
    pub(crate) rounds: usize,
}

impl CpuUse {
    /// How many processes were watched.
    pub(crate) fn processes(&self) -> usize {
        self.seconds
            .first()
            .and_then(|side| side.first())
            .map_or(0, Vec::len)
    }

    /// Milliseconds of CPU per run of query `query` on side `side` in process `process`.
    pub(crate) fn query_ms(&self, side: usize, query: usize, process: usize) -> f64 {
        self.seconds[side][query][process] * 1e3 / self.rounds.max(1) as f64
    }

    /// Milliseconds of CPU per query of side `side` in process `process`, the mean over
    /// every query.
    pub(crate) fn per_query_ms(&self, side: usize, process: usize) -> f64 {
        let queries = self.seconds[side].len();
        (0..queries)
            .map(|q| self.query_ms(side, q, process))
            .sum::<f64>()
            / queries.max(1) as f64
    }
}

/// `runs` timed runs of every query on every side, indexed `[side][query]`, and the CPU
/// each of the processes `watched` used during each side's timed runs.
///
/// The sides take turns: each query runs once untimed on every side (so every side is
/// measured in the same state: footers cached and, with a memory tier, columns admitted),
/// then `runs` rounds of one run per side. A shared virtual machine drifts: the same query
/// on the same side can take 40% longer a minute later. Runs of one round share the drift,
/// so the ratio of two sides does not depend on it, as it would if each side ran all its
/// queries in a block of its own.
pub(crate) async fn time_interleaved(
    sides: &mut [Side],
    runs: usize,
    watched: &[u32],
) -> (Vec<Vec<Timed>>, CpuUse) {
    let mut out: Vec<Vec<Timed>> = vec![Vec::new(); sides.len()];
    let mut cpu = CpuUse {
        seconds: vec![vec![vec![0.0; watched.len()]; QUERIES.len()]; sides.len()],
        rounds: runs,
    };
    for index in 0..QUERIES.len() {
        let mut timed = vec![Timed::default(); sides.len()];
        for round in 0..=runs {
            for (i, side) in sides.iter_mut().enumerate() {
                let before: Vec<f64> = watched.iter().map(|&p| cpu_seconds(p)).collect();
                let (took, rows) = side.run(index).await;
                if round > 0 {
                    timed[i].seconds.push(took);
                    timed[i].rows = rows;
                    for (p, (&pid, was)) in watched.iter().zip(before).enumerate() {
                        cpu.seconds[i][index][p] += cpu_seconds(pid) - was;
                    }
                }
            }
        }
        for (i, t) in timed.into_iter().enumerate() {
            out[i].push(t);
        }
    }
    pin_process("0-1");
    (out, cpu)
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
    fn cpu_time_counts_this_process_working_and_not_sleeping() {
        let pid = std::process::id();
        let before = cpu_seconds(pid);
        let spin = Instant::now();
        let mut x = 0u64;
        while spin.elapsed().as_millis() < 60 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let worked = cpu_seconds(pid) - before;
        // The spin is on a core for most of its 60 ms; a loaded machine may take much of
        // it, so the bound only asks that the spin was seen at all.
        assert!(worked > 0.01, "60 ms of spinning counted {worked} s");
        let before = cpu_seconds(pid);
        std::thread::sleep(std::time::Duration::from_millis(100));
        let slept = cpu_seconds(pid) - before;
        assert!(slept < 0.05, "100 ms asleep counted {slept} s");
        assert_eq!(cpu_seconds(u32::MAX), 0.0, "no such process: zero");
    }

    #[test]
    fn cpu_use_is_per_run_and_averaged_over_queries() {
        // Two sides, two queries, two processes, three rounds.
        let cpu = CpuUse {
            seconds: vec![
                vec![vec![0.3, 0.0], vec![0.6, 0.03]],
                vec![vec![0.0, 0.0], vec![0.0, 0.0]],
            ],
            rounds: 3,
        };
        assert_eq!(cpu.processes(), 2);
        assert!((cpu.query_ms(0, 1, 1) - 10.0).abs() < 1e-9);
        assert!((cpu.per_query_ms(0, 0) - 150.0).abs() < 1e-9);
        assert_eq!(cpu.per_query_ms(1, 1), 0.0);
    }

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
