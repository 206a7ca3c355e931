//! The backup's memory between apply requests: nonces seen within the window, per-POP request
//! rates and per-(POP, address) failed authentications and bans (review items 4 and 10).
//!
//! Bans are keyed by the claimed POP id *and* the peer address, so a stranger who sends bad
//! signatures under a real POP's id bans only itself, not the real POP. Memory is bounded: a
//! nonce is remembered only after its signature verified (so only authorised POPs, at their
//! rate, can add any) and is forgotten when the window passes. Never does I/O.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;

#[derive(Default)]
struct State {
    nonces: HashSet<[u8; 16]>,
    /// (expiry second, nonce) in arrival order, to forget nonces once the window passed.
    expiry: VecDeque<(i64, [u8; 16])>,
    /// Per POP: (current second, requests in it).
    rates: HashMap<String, (i64, u32)>,
    /// Per (POP, address): (consecutive failures, banned until second).
    failures: HashMap<(String, Option<IpAddr>), (u32, i64)>,
}

pub struct Gate {
    state: Mutex<State>,
}

impl Gate {
    pub fn new() -> Self {
        Self { state: Mutex::new(State::default()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Seconds left of a ban on this (POP, address), if any.
    pub fn banned(&self, pop: &str, ip: Option<IpAddr>, now: i64) -> Option<i64> {
        let s = self.lock();
        match s.failures.get(&(pop.to_owned(), ip)) {
            Some((_, until)) if *until > now => Some(until - now),
            _ => None,
        }
    }

    /// Counts one request of `pop` against `per_s` (0: no limit); false if over it.
    pub fn within_rate(&self, pop: &str, per_s: u32, now: i64) -> bool {
        if per_s == 0 {
            return true;
        }
        let mut s = self.lock();
        let slot = s.rates.entry(pop.to_owned()).or_insert((now, 0));
        if slot.0 != now {
            *slot = (now, 0);
        }
        if slot.1 >= per_s {
            return false;
        }
        slot.1 += 1;
        true
    }

    /// Records a failed authentication; true if this one started a ban.
    pub fn fail(&self, pop: &str, ip: Option<IpAddr>, now: i64, ban_after: u32, ban_secs: u64) -> bool {
        let mut s = self.lock();
        let slot = s.failures.entry((pop.to_owned(), ip)).or_insert((0, 0));
        slot.0 = slot.0.saturating_add(1);
        if slot.0 >= ban_after {
            slot.0 = 0;
            slot.1 = now.saturating_add(i64::try_from(ban_secs).unwrap_or(i64::MAX));
            return true;
        }
        false
    }

    pub fn succeed(&self, pop: &str, ip: Option<IpAddr>) {
        self.lock().failures.remove(&(pop.to_owned(), ip));
    }

    /// Remembers `nonce` until `now + window`; false if it was already seen (a replay).
    pub fn fresh_nonce(&self, nonce: [u8; 16], now: i64, window: i64) -> bool {
        let mut s = self.lock();
        while s.expiry.front().is_some_and(|(exp, _)| *exp < now) {
            if let Some((_, old)) = s.expiry.pop_front() {
                s.nonces.remove(&old);
            }
        }
        if !s.nonces.insert(nonce) {
            return false;
        }
        // Remembered for twice the window: a request is accepted up to `window` seconds either
        // side of this POP's clock.
        s.expiry.push_back((now.saturating_add(window.saturating_mul(2)), nonce));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_are_single_use_and_forgotten_after_the_window() {
        let g = Gate::new();
        assert!(g.fresh_nonce([1; 16], 1000, 300));
        assert!(!g.fresh_nonce([1; 16], 1500, 300));
        assert!(g.fresh_nonce([2; 16], 1601, 300));
        assert!(g.fresh_nonce([1; 16], 1601, 300), "forgotten after twice the window");
    }

    #[test]
    fn rate_is_per_pop_per_second() {
        let g = Gate::new();
        assert!(g.within_rate("a", 1, 10));
        assert!(!g.within_rate("a", 1, 10));
        assert!(g.within_rate("b", 1, 10));
        assert!(g.within_rate("a", 1, 11));
        assert!((0..100).all(|_| g.within_rate("a", 0, 11)));
    }

    #[test]
    fn ban_after_n_failures_is_per_pop_and_address() {
        let g = Gate::new();
        let ip: Option<IpAddr> = "127.0.0.2".parse().ok();
        for _ in 0..2 {
            assert!(!g.fail("a", ip, 0, 3, 60));
        }
        assert!(g.fail("a", ip, 0, 3, 60));
        assert_eq!(g.banned("a", ip, 10), Some(50));
        assert_eq!(g.banned("a", None, 10), None, "another address is not banned");
        assert_eq!(g.banned("a", ip, 60), None, "the ban ends");
    }
}
