//! Bees (the node's workers, one per core), their load, and the node's capacity.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::heartbeat::{Capacity, Load};

/// Reports the memory a bee's work holds now, in bytes.
pub type MemoryProbe = Arc<dyn Fn() -> u64 + Send + Sync>;

/// What one bee is doing.
#[derive(Default)]
struct Slot {
    busy: bool,
    memory: Option<MemoryProbe>,
}

/// One bee as `bee_status` reports it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BeeState {
    /// `bee-0`, `bee-1`, …
    pub bee_id: String,
    /// `busy` or `idle`.
    pub state: &'static str,
    /// Memory its work holds now, in bytes.
    pub memory_used: u64,
    /// Its memory budget, in bytes.
    pub memory_budget: u64,
}

/// The node's bees: a work slot per core. Work holds a [`Bee`] while it runs; the counts are
/// the load the node publishes.
pub struct Bees {
    total: u32,
    memory_budget: u64,
    /// Reads the memory the node holds; `None`: the process's resident memory.
    resident: Option<MemoryProbe>,
    slots: Arc<Semaphore>,
    states: Mutex<Vec<Slot>>,
    busy: AtomicU32,
    queued: AtomicU32,
    accepting: AtomicBool,
    idle: Notify,
    /// Woken whenever a bee is released.
    freed: Notify,
    /// Bees taken since the start: work the node did, for telling active from idle.
    taken: AtomicU64,
    /// Woken when a bee is taken while none was busy (for the heartbeat loop).
    woke: Notify,
}

impl std::fmt::Debug for Bees {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bees")
            .field("total", &self.total)
            .field("busy", &self.busy)
            .field("queued", &self.queued)
            .finish()
    }
}

/// One bee at work; released on drop.
#[derive(Debug)]
pub struct Bee {
    bees: Arc<Bees>,
    index: usize,
    _permit: OwnedSemaphorePermit,
}

impl Bee {
    /// Tells the bee where to read the memory its work holds (a query's memory pool).
    pub fn attach_memory(&self, probe: MemoryProbe) {
        if let Some(slot) = self.bees.lock_states().get_mut(self.index) {
            slot.memory = Some(probe);
        }
    }
}

impl Drop for Bee {
    fn drop(&mut self) {
        if let Some(slot) = self.bees.lock_states().get_mut(self.index) {
            *slot = Slot::default();
        }
        if self.bees.busy.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.bees.idle.notify_waiters();
        }
        self.bees.freed.notify_waiters();
    }
}

/// Work was refused because the node is leaving.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("this node is leaving the swarm and takes no new work")]
pub struct Leaving;

impl Bees {
    /// `total` bees sharing `memory_budget` bytes.
    pub fn new(total: u32, memory_budget: u64) -> Arc<Self> {
        Self::with_resident_memory(total, memory_budget, None)
    }

    /// `total` bees sharing `memory_budget` bytes, whose memory pressure is what `resident`
    /// reads over the budget (`None`: the process's resident memory, `VmRSS`). A process
    /// running several nodes (a simulation) gives each a figure of its own.
    pub fn with_resident_memory(
        total: u32,
        memory_budget: u64,
        resident: Option<MemoryProbe>,
    ) -> Arc<Self> {
        let total = total.max(1);
        Arc::new(Self {
            total,
            memory_budget,
            resident,
            slots: Arc::new(Semaphore::new(total as usize)),
            states: Mutex::new((0..total).map(|_| Slot::default()).collect()),
            busy: AtomicU32::new(0),
            queued: AtomicU32::new(0),
            accepting: AtomicBool::new(true),
            idle: Notify::new(),
            freed: Notify::new(),
            taken: AtomicU64::new(0),
            woke: Notify::new(),
        })
    }

    /// Waits for a free bee; refused once the node is leaving.
    pub async fn acquire(self: &Arc<Self>) -> Result<Bee, Leaving> {
        if !self.accepting.load(Ordering::Acquire) {
            return Err(Leaving);
        }
        self.queued.fetch_add(1, Ordering::AcqRel);
        let permit = Arc::clone(&self.slots).acquire_owned().await;
        self.queued.fetch_sub(1, Ordering::AcqRel);
        let permit = permit.map_err(|_| Leaving)?;
        Ok(self.bee(permit))
    }

    fn lock_states(&self) -> std::sync::MutexGuard<'_, Vec<Slot>> {
        self.states.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A bee for `permit`, in the first idle slot.
    fn bee(self: &Arc<Self>, permit: OwnedSemaphorePermit) -> Bee {
        self.taken.fetch_add(1, Ordering::AcqRel);
        if self.busy.fetch_add(1, Ordering::AcqRel) == 0 {
            self.woke.notify_one();
        }
        let mut states = self.lock_states();
        // A permit guarantees a free slot.
        let index = states.iter().position(|s| !s.busy).unwrap_or(0);
        if let Some(slot) = states.get_mut(index) {
            slot.busy = true;
        }
        Bee {
            bees: Arc::clone(self),
            index,
            _permit: permit,
        }
    }

    /// Every bee: busy or idle, the memory its work holds, its budget.
    pub fn states(&self) -> Vec<BeeState> {
        let budget = self.memory_per_bee();
        self.lock_states()
            .iter()
            .enumerate()
            .map(|(i, slot)| BeeState {
                bee_id: format!("bee-{i}"),
                state: if slot.busy { "busy" } else { "idle" },
                memory_used: slot.memory.as_ref().map_or(0, |probe| probe()),
                memory_budget: budget,
            })
            .collect()
    }

    /// Memory the bees' work holds now, in bytes.
    pub fn memory_used(&self) -> u64 {
        self.lock_states()
            .iter()
            .filter_map(|slot| slot.memory.as_ref().map(|probe| probe()))
            .sum()
    }

    /// Bees busy and work waiting for one, now (no I/O: what admission reads per query).
    pub fn occupancy(&self) -> (u32, u32) {
        (
            self.busy.load(Ordering::Acquire).min(self.total),
            self.queued.load(Ordering::Acquire),
        )
    }

    /// The bees' memory budget in total, in bytes.
    pub fn memory_budget(&self) -> u64 {
        self.memory_budget
    }

    /// A free bee now, if there is one and nobody is waiting for one; never waits.
    pub fn try_acquire(self: &Arc<Self>) -> Option<Bee> {
        if !self.accepting.load(Ordering::Acquire) || self.queued.load(Ordering::Acquire) > 0 {
            return None;
        }
        let permit = Arc::clone(&self.slots).try_acquire_owned().ok()?;
        Some(self.bee(permit))
    }

    /// Memory of one bee, in bytes.
    pub fn memory_per_bee(&self) -> u64 {
        self.memory_budget / u64::from(self.total)
    }

    /// Whether new work is still taken (false once the node is leaving).
    pub fn accepting(&self) -> bool {
        self.accepting.load(Ordering::Acquire)
    }

    /// Stops accepting new work.
    pub fn close(&self) {
        self.accepting.store(false, Ordering::Release);
    }

    /// Waits until no bee is busy, at most `timeout` of `clock`'s time. True if idle.
    pub async fn wait_idle(&self, clock: &dyn crate::clock::Clock, timeout: Duration) -> bool {
        let wait = async {
            loop {
                let notified = self.idle.notified();
                if self.busy.load(Ordering::Acquire) == 0 {
                    return;
                }
                notified.await;
            }
        };
        apiary_storage::time::timeout(clock, timeout, wait)
            .await
            .is_ok()
    }

    /// Returns once some bee is idle: at once if one is now, else when one is released.
    pub async fn until_free(&self) {
        loop {
            // Created before the check, so a release in between still wakes it.
            let freed = self.freed.notified();
            if self.busy.load(Ordering::Acquire) < self.total {
                return;
            }
            freed.await;
        }
    }

    /// Bees taken since the start, and whether one is busy now: the node worked since the
    /// last reading when either changed.
    pub fn work(&self) -> (u64, bool) {
        (
            self.taken.load(Ordering::Acquire),
            self.busy.load(Ordering::Acquire) > 0,
        )
    }

    /// Returns when a bee is taken while none was busy (or at once if that happened since
    /// the last call). For one waiter: the node's heartbeat loop.
    pub async fn woken(&self) {
        self.woke.notified().await;
    }

    /// Bees in total.
    pub fn total(&self) -> u32 {
        self.total
    }

    /// The current load. Temperature is (busy + queued) / bees: 0 idle, 1 all busy, above 1
    /// when work waits.
    pub fn load(&self) -> Load {
        let busy = self.busy.load(Ordering::Acquire).min(self.total);
        let queued = self.queued.load(Ordering::Acquire);
        let resident = match &self.resident {
            Some(probe) => Some(probe()),
            None => resident_bytes(),
        };
        let memory_pressure = match (resident, self.memory_budget) {
            (Some(rss), budget) if budget > 0 => rss as f64 / budget as f64,
            _ => 0.0,
        };
        Load {
            busy_bees: busy,
            idle_bees: self.total - busy,
            memory_pressure,
            queue_depth: queued,
            temperature: f64::from(busy + queued) / f64::from(self.total),
            ..Load::default()
        }
    }
}

/// Resident memory of this process, from `/proc/self/status` (Linux).
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Memory of the machine, or of the container's memory limit when smaller.
pub fn machine_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let total_kb: u64 = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    let mut total = total_kb * 1024;
    for limit_file in [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ] {
        if let Some(limit) = std::fs::read_to_string(limit_file)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
        {
            total = total.min(limit);
        }
    }
    Some(total)
}

/// Detects this machine's capacity. `memory_override` replaces the detected memory (bytes).
/// Apiary budgets three quarters of the memory for its bees; a bee's target cell size is an
/// eighth of its budget, between 16 MiB and 256 MiB.
pub fn detect_capacity(memory_override: Option<u64>) -> Capacity {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let memory = memory_override.or_else(machine_memory).unwrap_or(1 << 30);
    let per_bee = memory / 4 * 3 / u64::from(cores);
    Capacity {
        cores,
        bees: cores,
        memory_bytes: memory,
        memory_per_bee_bytes: per_bee,
        target_cell_bytes: (per_bee / 8).clamp(16 << 20, 256 << 20),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bees_track_load_and_refuse_work_when_leaving() {
        let bees = Bees::new(2, 1 << 30);
        assert_eq!(bees.load().idle_bees, 2);
        let a = bees.acquire().await.unwrap();
        let load = bees.load();
        assert_eq!((load.busy_bees, load.idle_bees), (1, 1));
        assert!((load.temperature - 0.5).abs() < 1e-9);
        bees.close();
        assert_eq!(bees.acquire().await.unwrap_err(), Leaving);
        assert!(
            !bees
                .wait_idle(&crate::clock::SystemClock::new(), Duration::from_millis(20))
                .await
        );
        drop(a);
        assert!(
            bees.wait_idle(&crate::clock::SystemClock::new(), Duration::from_millis(20))
                .await
        );
    }

    #[tokio::test]
    async fn until_free_waits_while_every_bee_is_busy() {
        let bees = Bees::new(2, 1 << 30);
        let wait = |bees: &Arc<Bees>| {
            let bees = Arc::clone(bees);
            tokio::spawn(async move { bees.until_free().await })
        };
        let a = bees.acquire().await.unwrap();
        // One bee idle: at once.
        wait(&bees).await.unwrap();
        let b = bees.acquire().await.unwrap();
        let waiting = wait(&bees);
        apiary_storage::time::sleep(Duration::from_millis(30)).await;
        assert!(!waiting.is_finished(), "both bees are busy");
        drop(b);
        let clock = crate::clock::SystemClock::new();
        apiary_storage::time::timeout(&clock, Duration::from_secs(5), waiting)
            .await
            .expect("a released bee wakes the waiter")
            .unwrap();
        drop(a);
    }

    #[test]
    fn capacity_is_sane() {
        let c = detect_capacity(Some(8 << 30));
        assert!(c.cores >= 1 && c.bees == c.cores);
        assert_eq!(c.memory_bytes, 8 << 30);
        assert!(c.target_cell_bytes >= 16 << 20 && c.target_cell_bytes <= 256 << 20);
        assert!(detect_capacity(None).memory_bytes > 0);
    }
}
