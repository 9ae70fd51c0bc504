//! How often a node looks for work handed to it (its tasks' doorbell, say): often while it
//! or its swarm works, rarely while everything is idle.
//!
//! Queries come in bursts (a dashboard's panels, a notebook's cells, a script's statements),
//! and a burst's next query waits for discovery like its first:
//! * A script's next statement is usually published within milliseconds of the answer to
//!   the last, so for [`HOT_WINDOW`] after finishing a task a node looks every
//!   [`HOT_INTERVAL`] (or every `poll`, if that is shorter). That is at most 100 looks per
//!   task; on a remote store a look takes longer than the interval, so far fewer.
//! * For [`BUSY_WINDOW`] after a task a node looks four times as often (at most every
//!   millisecond), and the wait for the next query's tasks falls to a quarter.
//! * Otherwise it looks every `poll` while the swarm is active (some node works), and every
//!   `idle_poll` while it is idle: a query that starts on an idle swarm begins on its
//!   coordinator, whose waking tells every node through the roster within a poll of the
//!   swarm, and they join at their active cadence as they wake. So what idling costs stays
//!   what the idle setting says.
//!
//! Only tasks found by looking count as "given" and "finished" here. A task pushed to the
//! node (over Flight) does not: its coordinator pushes the next query's tasks too, so quicker
//! looks would find nothing and only take CPU from the node's work. (A pushed task whose
//! link breaks is tried again through storage, found at the regular cadence.)

use std::time::Duration;

/// For this long after it was last given a task, a node looks for tasks more often.
pub const BUSY_WINDOW: Duration = Duration::from_secs(60);

/// For this long after it finished a task, a node looks for tasks every [`HOT_INTERVAL`].
pub const HOT_WINDOW: Duration = Duration::from_millis(100);

/// How often a node looks for tasks just after it finished one.
pub const HOT_INTERVAL: Duration = Duration::from_millis(1);

/// How often a node looks for work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Discovery {
    /// While the swarm is active (default 1 s).
    pub poll: Duration,
    /// While the swarm is idle (default 30 s; never shorter than `poll`).
    pub idle_poll: Duration,
}

impl Default for Discovery {
    fn default() -> Self {
        Self {
            poll: Duration::from_secs(1),
            idle_poll: Duration::from_secs(30),
        }
    }
}

impl Discovery {
    /// How long to wait before looking again, given the time `given` since this node was
    /// last given a task and the time `finished` since it last finished one (`None`:
    /// never), and whether the swarm is active (see the module documentation).
    pub fn interval(
        &self,
        given: Option<Duration>,
        finished: Option<Duration>,
        swarm_active: bool,
    ) -> Duration {
        let poll = self.poll;
        if finished.is_some_and(|f| f < HOT_WINDOW) {
            return poll.min(HOT_INTERVAL);
        }
        match given {
            Some(given) if given < BUSY_WINDOW => (poll / 4).max(poll.min(HOT_INTERVAL)),
            _ if swarm_active => poll,
            _ => self.idle_poll.max(poll),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const SECOND: Duration = Duration::from_secs(1);

    fn every(poll: Duration) -> Discovery {
        Discovery {
            poll,
            idle_poll: 30 * SECOND,
        }
    }

    #[test]
    fn a_node_looks_more_often_for_a_minute_after_a_task() {
        let at = |given, finished| every(SECOND).interval(given, finished, true);
        // Idle (never given a task, or not for a minute): the configured interval.
        assert_eq!(at(None, None), SECOND);
        assert_eq!(at(Some(BUSY_WINDOW), Some(BUSY_WINDOW)), SECOND);
        assert_eq!(at(Some(10 * BUSY_WINDOW), None), SECOND);
        // Busy: a quarter of it.
        assert_eq!(at(Some(Duration::ZERO), None), SECOND / 4);
        assert_eq!(at(Some(BUSY_WINDOW - MS), None), SECOND / 4);
        assert_eq!(at(Some(BUSY_WINDOW - MS), Some(HOT_WINDOW)), SECOND / 4);
        assert_eq!(every(20 * MS).interval(Some(MS), None, true), 5 * MS);
        // Never below a millisecond, nor above the configured interval.
        assert_eq!(every(2 * MS).interval(Some(MS), None, true), MS);
        assert_eq!(every(MS / 2).interval(Some(MS), None, true), MS / 2);
    }

    #[test]
    fn a_node_looks_every_millisecond_just_after_it_finished_a_task() {
        for finished in [Duration::ZERO, HOT_WINDOW / 2, HOT_WINDOW - MS] {
            assert_eq!(every(SECOND).interval(Some(MS), Some(finished), false), MS);
        }
        assert_eq!(
            every(SECOND).interval(Some(HOT_WINDOW), Some(HOT_WINDOW), false),
            SECOND / 4
        );
        // A shorter configured interval stays.
        assert_eq!(
            every(MS / 4).interval(Some(MS), Some(Duration::ZERO), true),
            MS / 4
        );
    }

    #[test]
    fn an_idle_swarm_looks_rarely() {
        let d = every(SECOND);
        assert_eq!(d.interval(None, None, false), 30 * SECOND);
        assert_eq!(d.interval(Some(BUSY_WINDOW), None, false), 30 * SECOND);
        // A task within the busy window keeps the node looking often.
        assert_eq!(d.interval(Some(BUSY_WINDOW - MS), None, false), SECOND / 4);
        // Never less often than the active interval.
        let slow = Discovery {
            poll: 60 * SECOND,
            idle_poll: SECOND,
        };
        assert_eq!(slow.interval(None, None, false), 60 * SECOND);
    }
}
