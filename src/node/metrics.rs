//! The server's own counters for telemetry: requests and errors in a rolling hour, and the
//! agents seen in the last five minutes.
//!
//! Taken on the request path, so every operation is a few atomic adds or one short lock on a
//! small map (one entry per agent, pruned as it ages out). Nothing here allocates per request.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// One bucket per minute; 60 of them make the rolling hour.
const BUCKETS: usize = 60;
/// An agent counts as an active session for this long after its last request.
pub const SESSION_WINDOW_SECS: u64 = 5 * 60;

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A count per minute over the last hour. A bucket remembers which minute it holds, so a
/// bucket from an older hour is reset by the first add of its new minute and ignored by sums.
pub struct RollingHour {
    minute: [AtomicU64; BUCKETS],
    count: [AtomicU64; BUCKETS],
}

impl Default for RollingHour {
    fn default() -> Self {
        Self { minute: std::array::from_fn(|_| AtomicU64::new(0)), count: std::array::from_fn(|_| AtomicU64::new(0)) }
    }
}

impl RollingHour {
    pub fn add_at(&self, now_secs: u64) {
        let minute = now_secs / 60;
        let i = (minute % BUCKETS as u64) as usize;
        let held = self.minute[i].load(Ordering::Acquire);
        if held != minute {
            // First add of a new minute in this slot: claim it and restart its count. A race
            // between two first adds loses at most one count, which telemetry can afford.
            if self.minute[i].compare_exchange(held, minute, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                self.count[i].store(0, Ordering::Release);
            }
        }
        self.count[i].fetch_add(1, Ordering::Relaxed);
    }

    /// The count over the 60 minutes up to and including the current one.
    pub fn sum_at(&self, now_secs: u64) -> u64 {
        let current = now_secs / 60;
        (0..BUCKETS)
            .filter(|&i| current.saturating_sub(self.minute[i].load(Ordering::Acquire)) < BUCKETS as u64)
            .map(|i| self.count[i].load(Ordering::Relaxed))
            .sum()
    }
}

/// Agents seen recently: a hash of (vault, agent id) → last second seen.
#[derive(Default)]
pub struct RecentAgents {
    seen: Mutex<HashMap<u64, u64>>,
}

impl RecentAgents {
    pub fn seen_at(&self, vault: &str, agent: i64, now_secs: u64) {
        // A busy agent makes many requests a second on the same worker thread: only the first
        // of them per second and thread hashes and takes the lock. An open vault's id is one
        // string in memory, so its address stands for it here; another vault's id later at the
        // same address at worst delays that agent's record by a second.
        thread_local! {
            static LAST: std::cell::Cell<(usize, usize, usize, i64, u64)> =
                const { std::cell::Cell::new((0, 0, 0, 0, 0)) };
        }
        let this = (std::ptr::from_ref(self) as usize, vault.as_ptr() as usize, vault.len(), agent, now_secs);
        if LAST.with(|l| l.replace(this)) == this {
            return;
        }
        let mut h = DefaultHasher::new();
        (vault, agent).hash(&mut h);
        let key = h.finish();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.insert(key, now_secs);
        // Bounded by the number of agents; still prune now and then so it never grows stale.
        if seen.len() > 1024 {
            seen.retain(|_, last| now_secs.saturating_sub(*last) < SESSION_WINDOW_SECS);
        }
    }

    /// Distinct agents seen in the last five minutes.
    pub fn active_at(&self, now_secs: u64) -> u64 {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.retain(|_, last| now_secs.saturating_sub(*last) < SESSION_WINDOW_SECS);
        seen.len() as u64
    }
}

/// The counters of this process.
#[derive(Default)]
pub struct Metrics {
    requests: RollingHour,
    errors: RollingHour,
    agents: RecentAgents,
}

impl Metrics {
    /// Called once per response; any 4xx or 5xx counts as an error (credential stuffing shows
    /// up as a wall of 401s).
    pub fn record_response(&self, status: u16) {
        let now = now_secs();
        self.requests.add_at(now);
        if status >= 400 {
            self.errors.add_at(now);
        }
    }

    /// Called when a request authenticated as an agent.
    /// At `now_secs`, which the caller read anyway (one clock read per request).
    pub fn record_agent(&self, vault: &str, agent: i64, now_secs: u64) {
        self.agents.seen_at(vault, agent, now_secs);
    }

    pub fn req_1h(&self) -> u64 {
        self.requests.sum_at(now_secs())
    }

    pub fn err_1h(&self) -> u64 {
        self.errors.sum_at(now_secs())
    }

    pub fn active_sessions(&self) -> u64 {
        self.agents.active_at(now_secs())
    }
}

/// This process's counters.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rolling_hour_forgets_after_sixty_minutes() {
        let r = RollingHour::default();
        let t0 = 1_700_000_000 / 60 * 60;
        r.add_at(t0);
        r.add_at(t0 + 30);
        r.add_at(t0 + 61);
        assert_eq!(r.sum_at(t0 + 61), 3);
        assert_eq!(r.sum_at(t0 + 59 * 60), 3, "still inside the hour");
        assert_eq!(r.sum_at(t0 + 60 * 60), 1, "the first minute left the window");
        assert_eq!(r.sum_at(t0 + 61 * 60), 0);
        // The slot of minute 0 is reused an hour later and restarts from zero.
        r.add_at(t0 + 3600);
        assert_eq!(r.sum_at(t0 + 3600 + 60), 1);
    }

    #[test]
    fn active_sessions_are_distinct_agents_in_five_minutes() {
        let a = RecentAgents::default();
        let t = 1_700_000_000;
        a.seen_at("v1", 1, t);
        a.seen_at("v1", 1, t + 10);
        a.seen_at("v1", 2, t + 20);
        a.seen_at("v2", 1, t + 30);
        assert_eq!(a.active_at(t + 30), 3);
        assert_eq!(a.active_at(t + 10 + SESSION_WINDOW_SECS), 2, "agent 1 of v1 aged out");
        assert_eq!(a.active_at(t + 31 + SESSION_WINDOW_SECS), 0);
    }
}
