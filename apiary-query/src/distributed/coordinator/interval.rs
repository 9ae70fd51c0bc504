//! How often a coordinator looks for results while it waits.

use std::time::Duration;

/// How long the coordinator waits before looking for results again, `elapsed` into the
/// wait, once `first` the first task answered (if one has), never longer than `max`.
///
/// A twenty-fifth of the time spent (at least 2 ms): waiting adds about a fiftieth to a query
/// on average, and a long one costs few requests (about sixty per tenfold of its time, until
/// `max` bounds them). Once a task has answered, the others are due (shares are cut to
/// finish together): for a quarter of the time until that first answer, results are looked
/// for every fiftieth of it (at least every millisecond), at most about a dozen looks more.
pub(super) fn result_interval(
    elapsed: Duration,
    first: Option<Duration>,
    max: Duration,
) -> Duration {
    match first {
        Some(first) if elapsed < first + first / 4 => {
            (first / 50).clamp(Duration::from_millis(1), max)
        }
        _ => (elapsed / 25).clamp(Duration::from_millis(2), max),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Looks made while waiting `total` for results, the first answering at `first`.
    fn looks(total: Duration, first: Option<Duration>) -> (u32, Duration) {
        let max = Duration::from_millis(250);
        let (mut at, mut looks, mut longest) = (Duration::ZERO, 0, Duration::ZERO);
        while at < total {
            let seen = first.filter(|f| at >= *f);
            let wait = result_interval(at, seen, max);
            // How much longer than a twenty-fifth of the wait so far (or 2 ms) a result that
            // lands just after a look can go unseen.
            longest = longest.max(wait.saturating_sub((at / 25).max(Duration::from_millis(2))));
            at += wait;
            looks += 1;
        }
        (looks, longest)
    }

    #[test]
    fn results_are_looked_for_often_early_and_rarely_late() {
        // Never more than a twenty-fifth of the time spent (or 2 ms) between looks.
        for first in [None, Some(Duration::from_millis(300))] {
            let (n, longest) = looks(Duration::from_secs(1), first);
            assert_eq!(longest, Duration::ZERO, "{first:?}");
            assert!(n <= 115, "{first:?}: {n} looks in 1 s");
        }
        // A 10-minute task: bounded by `max` at the end, about 2 500 looks, not 300 000.
        let (n, _) = looks(Duration::from_secs(600), Some(Duration::from_secs(60)));
        assert!(n <= 2_600, "{n} looks in 10 minutes");
        // After a first answer the next look comes sooner.
        let t = Duration::from_millis(200);
        assert!(result_interval(t, Some(t), Duration::from_secs(1)) < t / 25);
        assert_eq!(
            result_interval(t * 2, Some(t), Duration::from_secs(1)),
            t * 2 / 25
        );
    }
}
