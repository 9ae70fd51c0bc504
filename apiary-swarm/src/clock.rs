//! Time, injected: the swarm uses the clocks of `apiary_storage::time` (a monotonic clock for
//! judging liveness, a wall clock for display, sleeps and tickers for its timers).

pub use apiary_storage::time::{Clock, ManualClock, SystemClock, Ticker};
