//! Settings from the environment: the `APIARY_*` variables the `apiary` binary reads as
//! flag defaults, for embedders that configure a node without flags (the Python binding, a
//! container). One parser per kind of value, shared with the binary's flags, so a value means
//! the same wherever it is given.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `APIARY_NODE_ID` | this node's id | generated once, kept in the state folder |
//! | `APIARY_STATE_DIR` | the node's local state folder | `$XDG_STATE_HOME/apiary` or `~/.local/state/apiary` |
//! | `APIARY_HEARTBEAT_INTERVAL` | how often an active node writes its heartbeat | 5s |
//! | `APIARY_IDLE_HEARTBEAT_INTERVAL` | how often an idle node writes its heartbeat | 1m |
//! | `APIARY_IDLE_AFTER` | a node with no work this long is idle | 1m |
//! | `APIARY_POLL_INTERVAL` | how often a node reads the swarm (a listing while it is active, a roster probe while idle) | 5s |
//! | `APIARY_IDLE_LIST_INTERVAL` | how often a node lists the heartbeats while the swarm is idle | 5m |
//! | `APIARY_DEAD_THRESHOLD` | an active node's heartbeat unchanged this long: dead (half: suspect) | 20s |
//! | `APIARY_TASK_POLL_INTERVAL` | how often a node looks for tasks while the swarm is active | 1s |
//! | `APIARY_TASK_IDLE_POLL_INTERVAL` | how often a node looks for tasks while the swarm is idle | 30s |
//! | `APIARY_TASK_TIMEOUT` | a task running longer is reassigned | 10m |
//! | `APIARY_QUERY_RETENTION` | orphaned query folders are removed after this | 15m |
//! | `APIARY_DISTRIBUTE_MIN_BYTES` | `auto` distributes from this many bytes to read | 64 MiB |
//! | `APIARY_DRAIN_TIMEOUT` | how long a leaving node waits for running work | 30s |
//! | `APIARY_MEMORY` | memory the node may use (`4GiB`) | detected |
//! | `APIARY_COMPACT_INTERVAL` | how often a cold node compacts | 1m |
//! | `APIARY_CACHE_DIR` | the cell cache's folder | `cache/NODE_ID` in the state folder |
//! | `APIARY_CACHE_SIZE` | the cell cache's budget (`0` turns it off) | a fifth of the free disk |
//! | `APIARY_MEMORY_TIER` | the most the memory tier of decoded columns holds (`0` turns it off) | a quarter of the bees' memory |

use std::time::Duration;

use crate::{ApiaryError, ApiaryOptions, NodeOptions, Result};

/// The longest duration any setting takes: a year.
const LONGEST: Duration = Duration::from_secs(365 * 24 * 3600);

/// Parses a positive duration such as `500ms`, `5s` or `1m`, at most a year.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text.trim())
        .map_err(|e| format!("`{text}` is not a duration such as 500ms, 5s or 1m: {e}"))?;
    if d.is_zero() {
        return Err("a duration must be more than zero".into());
    }
    if d > LONGEST {
        return Err("a duration must be at most a year (365d)".into());
    }
    Ok(d)
}

/// Parses a size in bytes such as `4GiB`, `512MiB`, `64MB` or `1000`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("`{text}` is not a size such as 4GiB"))?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "tib" => 1 << 40,
        _ => {
            return Err(format!(
                "`{text}`: unknown unit (use B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)"
            ));
        }
    };
    n.checked_mul(scale)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// The value of `name`, when set and not empty.
fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// `name` parsed with `parse`, when set; a bad value is an error naming the variable.
fn parsed<T>(name: &'static str, parse: fn(&str) -> Result<T, String>) -> Result<Option<T>> {
    var(name)
        .map(|v| {
            parse(&v).map_err(|message| ApiaryError::Setting {
                name,
                value: v.clone(),
                message,
            })
        })
        .transpose()
}

impl ApiaryOptions {
    /// Options for `storage`, tuned by the `APIARY_*` variables that concern any process on
    /// the storage (swarm thresholds, distribution). Unset variables keep the defaults; a
    /// malformed one is an error that names it.
    pub fn from_env(storage: apiary_storage::StorageUri) -> Result<Self> {
        let mut options = Self::new(storage);
        options.swarm = swarm_from_env(options.swarm)?;
        let d = &mut options.distribute;
        if let Some(v) = parsed("APIARY_TASK_TIMEOUT", parse_duration)? {
            d.task_timeout = v;
        }
        if let Some(v) = parsed("APIARY_PICKUP_TIMEOUT", parse_duration)? {
            d.pickup_timeout = v;
        }
        if let Some(v) = parsed("APIARY_QUERY_RETENTION", parse_duration)? {
            d.orphan_retention = v;
        }
        if let Some(v) = parsed("APIARY_DISTRIBUTE_MIN_BYTES", parse_size)? {
            d.auto_min_bytes = v;
        }
        options.memory_tier = parsed("APIARY_MEMORY_TIER", parse_size)?;
        Ok(options)
    }
}

fn swarm_from_env(mut swarm: apiary_swarm::SwarmConfig) -> Result<apiary_swarm::SwarmConfig> {
    if let Some(v) = parsed("APIARY_HEARTBEAT_INTERVAL", parse_duration)? {
        swarm.heartbeat_interval = v;
    }
    if let Some(v) = parsed("APIARY_POLL_INTERVAL", parse_duration)? {
        swarm.poll_interval = v;
    }
    if let Some(v) = parsed("APIARY_DEAD_THRESHOLD", parse_duration)? {
        swarm.dead_threshold = v;
    }
    if let Some(v) = parsed("APIARY_IDLE_HEARTBEAT_INTERVAL", parse_duration)? {
        swarm.idle_heartbeat_interval = v;
    }
    if let Some(v) = parsed("APIARY_IDLE_AFTER", parse_duration)? {
        swarm.idle_after = v;
    }
    if let Some(v) = parsed("APIARY_IDLE_LIST_INTERVAL", parse_duration)? {
        swarm.idle_list_interval = v;
    }
    Ok(swarm)
}

impl NodeOptions {
    /// Defaults, tuned by the node's `APIARY_*` variables (identity, state folder, timing,
    /// memory, cache); see the [module documentation](crate::settings). A malformed value is
    /// an error that names the variable.
    pub fn from_env() -> Result<Self> {
        let mut options = Self {
            node_id: var("APIARY_NODE_ID"),
            ..Self::default()
        };
        options.swarm = swarm_from_env(options.swarm)?;
        if let Some(v) = parsed("APIARY_TASK_POLL_INTERVAL", parse_duration)? {
            options.task_poll_interval = v;
        }
        if let Some(v) = parsed("APIARY_TASK_IDLE_POLL_INTERVAL", parse_duration)? {
            options.task_idle_poll_interval = v;
        }
        if let Some(v) = parsed("APIARY_DRAIN_TIMEOUT", parse_duration)? {
            options.drain_timeout = v;
        }
        if let Some(v) = parsed("APIARY_COMPACT_INTERVAL", parse_duration)? {
            options.compact_interval = v;
        }
        options.memory_bytes = parsed("APIARY_MEMORY", parse_size)?;
        options.cache_bytes = parsed("APIARY_CACHE_SIZE", parse_size)?;
        options.cache_dir = var("APIARY_CACHE_DIR").map(Into::into);
        options.memory_tier_bytes = parsed("APIARY_MEMORY_TIER", parse_size)?;
        Ok(options)
    }
}

/// The shortest interval a node may beat, read the swarm or look for tasks at: shorter is
/// a busy loop, and on S3 a storm of requests.
const SHORTEST_INTERVAL: Duration = Duration::from_millis(1);

/// The longest: a node beating less often than this is as good as gone.
const LONGEST_INTERVAL: Duration = Duration::from_secs(3600);

impl NodeOptions {
    /// Refuses what cannot work, each with one line naming the rule: intervals outside
    /// 1 ms to 1 h, a dead threshold under two heartbeat intervals (every node, this one
    /// included, would be judged dead between two beats), no memory, memory beyond the
    /// machine's, a memory tier beyond the node's memory. Called by `start`.
    pub fn validate(&self) -> Result<()> {
        let bad = |name: &'static str, value: String, message: String| {
            Err(ApiaryError::Setting {
                name,
                value,
                message,
            })
        };
        let show = |d: Duration| humantime::format_duration(d).to_string();
        for (name, value) in [
            ("APIARY_HEARTBEAT_INTERVAL", self.swarm.heartbeat_interval),
            ("APIARY_POLL_INTERVAL", self.swarm.poll_interval),
            ("APIARY_TASK_POLL_INTERVAL", self.task_poll_interval),
            (
                "APIARY_TASK_IDLE_POLL_INTERVAL",
                self.task_idle_poll_interval,
            ),
            (
                "APIARY_IDLE_HEARTBEAT_INTERVAL",
                self.swarm.idle_heartbeat_interval,
            ),
            ("APIARY_IDLE_LIST_INTERVAL", self.swarm.idle_list_interval),
        ] {
            if !(SHORTEST_INTERVAL..=LONGEST_INTERVAL).contains(&value) {
                return bad(
                    name,
                    show(value),
                    format!(
                        "an interval must be between {} and {}",
                        show(SHORTEST_INTERVAL),
                        show(LONGEST_INTERVAL)
                    ),
                );
            }
        }
        if self.swarm.idle_after > LONGEST_INTERVAL * 24 {
            return bad(
                "APIARY_IDLE_AFTER",
                show(self.swarm.idle_after),
                "a node idle only after more than a day never saves anything; give at most 1 day"
                    .into(),
            );
        }
        let beat = self.swarm.heartbeat_interval;
        if self.swarm.dead_threshold < beat * 2 {
            return bad(
                "APIARY_DEAD_THRESHOLD",
                show(self.swarm.dead_threshold),
                format!(
                    "the dead threshold must be at least two heartbeat intervals ({}): below \
                     it every node, this one included, would be judged dead between two beats",
                    show(beat * 2)
                ),
            );
        }
        if let Some(memory) = self.memory_bytes {
            if memory == 0 {
                return bad(
                    "APIARY_MEMORY",
                    "0".into(),
                    "a node needs memory: give more than 0 (e.g. 4GiB), or leave it unset to \
                     use what the machine has"
                        .into(),
                );
            }
            if let Some(machine) = apiary_swarm::machine_memory()
                && memory > machine
            {
                return bad(
                    "APIARY_MEMORY",
                    memory.to_string(),
                    format!(
                        "more than this machine (or container) has: {machine} bytes; give at \
                         most that, or leave it unset"
                    ),
                );
            }
            if let Some(tier) = self.memory_tier_bytes
                && tier > memory
            {
                return bad(
                    "APIARY_MEMORY_TIER",
                    tier.to_string(),
                    format!("the memory tier cannot hold more than the node's memory ({memory})"),
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration(" 1m "), Ok(Duration::from_secs(60)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon").is_err());
        assert_eq!(parse_size("4GiB"), Ok(4 << 30));
        assert_eq!(parse_size("64 MB"), Ok(64_000_000));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("99999999999999GiB").is_err());
        assert_eq!(parse_size("1TiB"), Ok(1 << 40));
        assert!(parse_duration("100y").is_err());
    }

    #[test]
    fn what_cannot_work_is_refused_naming_the_rule() {
        let ok = NodeOptions::default();
        ok.validate().unwrap();
        let refused = |change: fn(&mut NodeOptions), says: &str| {
            let mut options = NodeOptions::default();
            change(&mut options);
            let err = options.validate().unwrap_err().to_string();
            assert!(err.contains(says), "{err}");
        };
        refused(
            |o| o.swarm.dead_threshold = o.swarm.heartbeat_interval / 2,
            "APIARY_DEAD_THRESHOLD=`2s 500ms`: the dead threshold must be at least two",
        );
        refused(
            |o| o.swarm.heartbeat_interval = Duration::from_nanos(1),
            "APIARY_HEARTBEAT_INTERVAL=`1ns`: an interval must be between 1ms and 1h",
        );
        refused(
            |o| o.swarm.poll_interval = Duration::from_nanos(1),
            "APIARY_POLL_INTERVAL",
        );
        refused(
            |o| o.task_poll_interval = Duration::from_secs(100 * 3600),
            "APIARY_TASK_POLL_INTERVAL",
        );
        refused(|o| o.memory_bytes = Some(0), "a node needs memory");
        refused(
            |o| o.memory_bytes = Some(u64::MAX),
            "more than this machine (or container) has",
        );
        refused(
            |o| {
                o.memory_bytes = Some(64 << 20);
                o.memory_tier_bytes = Some(128 << 20);
            },
            "APIARY_MEMORY_TIER",
        );
    }
}
