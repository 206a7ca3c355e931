//! Throttling of failed authentication per client address.
//!
//! Tokens carry 256 bits, so guessing is hopeless; what a flood of bad tokens can do is burn CPU
//! and fill the audit log. Past the quota a client's failures get 429 without an audit row each;
//! requests with a valid token are never throttled.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Failed authentications a client may make per second, sustained.
const PER_SECOND: u32 = 10;
/// ... and in a burst.
const BURST: u32 = 50;
/// Keys kept before stale ones are swept.
const MAX_TRACKED: usize = 10_000;

pub struct AuthThrottle {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    suppressed: AtomicU64,
}

impl Default for AuthThrottle {
    fn default() -> Self {
        let quota = Quota::per_second(NonZeroU32::MIN.saturating_add(PER_SECOND - 1))
            .allow_burst(NonZeroU32::MIN.saturating_add(BURST - 1));
        Self { limiter: RateLimiter::keyed(quota), suppressed: AtomicU64::new(0) }
    }
}

impl AuthThrottle {
    /// Records a failure; false when this client is over its quota.
    pub fn allow_failure(&self, client: Option<IpAddr>) -> bool {
        let Some(ip) = client else { return true };
        if self.limiter.len() > MAX_TRACKED {
            self.limiter.retain_recent();
        }
        if self.limiter.check_key(&ip).is_ok() {
            return true;
        }
        let n = self.suppressed.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_power_of_two() {
            tracing::warn!(suppressed = n, "throttling failed authentication");
        }
        false
    }
}
