//! The license state machine (ABSENT / ACTIVE / GRACE / EXPIRED / INVALID) and its messages.
//!
//! What is held ([`LicenseSlot`]) changes only by an install, a replace or a revalidation; the
//! time states are recomputed from `now` at every check, so no scheduler moves ACTIVE to GRACE
//! to EXPIRED.

use super::limits::{Limit, Limits, Source};
use super::token::{LicenseError, LicenseInfo};

const DAY: i64 = 86_400;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Absent,
    Active,
    Grace,
    Expired,
    Invalid,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Absent => "ABSENT",
            State::Active => "ACTIVE",
            State::Grace => "GRACE",
            State::Expired => "EXPIRED",
            State::Invalid => "INVALID",
        }
    }
}

/// What the node holds: nothing, a verified license, or the reason the last token was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LicenseSlot {
    Absent,
    Valid(LicenseInfo),
    Invalid(LicenseError),
}

impl LicenseSlot {
    /// An install or replace, from any state: a verified token wins, a refused one is INVALID.
    pub fn install(result: Result<LicenseInfo, LicenseError>) -> LicenseSlot {
        match result {
            Ok(info) => LicenseSlot::Valid(info),
            Err(e) => LicenseSlot::Invalid(e),
        }
    }

    pub fn state(&self, now: i64) -> State {
        match self {
            LicenseSlot::Absent => State::Absent,
            LicenseSlot::Invalid(_) => State::Invalid,
            LicenseSlot::Valid(info) => {
                let grace_end = info.exp.saturating_add(i64::from(info.grace_period_days) * DAY);
                if now < info.exp {
                    State::Active
                } else if now < grace_end {
                    State::Grace
                } else {
                    State::Expired
                }
            }
        }
    }

    pub fn info(&self) -> Option<&LicenseInfo> {
        match self {
            LicenseSlot::Valid(info) => Some(info),
            _ => None,
        }
    }

    /// The effective cap: the license's (default for keys it omits) while ACTIVE or GRACE, the
    /// default tier otherwise.
    pub fn cap(&self, limit: Limit, now: i64) -> (u64, Source) {
        match (self.state(now), self) {
            (State::Active | State::Grace, LicenseSlot::Valid(info)) => info.limits.cap(limit),
            _ => Limits::default().cap(limit),
        }
    }

    /// The 403 body's `message` for a refused create.
    pub fn cap_message(&self, limit: Limit, current: u64, cap: u64, now: i64) -> String {
        let key = limit.key();
        match (self.state(now), self) {
            (State::Active, _) => format!(
                "License cap reached: {key} = {cap}. Current usage is {current}. Contact your vendor to raise the cap."
            ),
            (State::Grace, LicenseSlot::Valid(info)) => {
                let (n, m) = grace_days(info, now);
                format!(
                    "License expired {n} day(s) ago and is in its grace period (ends in {m} days). Cap unchanged at {cap}. Renew before grace ends."
                )
            }
            (State::Expired, LicenseSlot::Valid(info)) => format!(
                "License expired {} days ago: system reverted to default tier (cap = {cap} for {key}). Current usage is {current}. Renew the license to lift the cap.",
                days_since(info.exp, now)
            ),
            (State::Invalid, LicenseSlot::Invalid(reason)) => format!(
                "License rejected ({reason}): default tier applies (cap = {cap} for {key}). Fix the license to raise this."
            ),
            _ => format!(
                "No license installed: default tier applies (cap = {cap} for {key}). Install a license to raise this."
            ),
        }
    }

    /// The usage endpoint's `message`.
    pub fn usage_message(&self, now: i64) -> String {
        match (self.state(now), self) {
            (State::Active, LicenseSlot::Valid(info)) => {
                format!("License active. {} days remaining.", days_remaining(info, now))
            }
            (State::Grace, LicenseSlot::Valid(info)) => {
                let (n, m) = grace_days(info, now);
                format!("License expired {n} days ago. Grace period ends in {m} days. Renew now to avoid degradation.")
            }
            (State::Expired, LicenseSlot::Valid(info)) => {
                format!("License expired {} days ago. System reverted to default tier.", days_since(info.exp, now))
            }
            (State::Invalid, LicenseSlot::Invalid(reason)) => {
                format!("License rejected: {reason}. Default tier applies. Fix the license to recover.")
            }
            _ => "No license installed. Default tier applies.".to_owned(),
        }
    }
}

/// Whole days until `exp`, negative once it has passed.
pub fn days_remaining(info: &LicenseInfo, now: i64) -> i64 {
    (info.exp - now).div_euclid(DAY)
}

fn days_since(t: i64, now: i64) -> i64 {
    (now - t).max(0) / DAY
}

fn grace_days(info: &LicenseInfo, now: i64) -> (i64, i64) {
    let end = info.exp + i64::from(info.grace_period_days) * DAY;
    (days_since(info.exp, now), ((end - now).max(0) + DAY - 1) / DAY)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::license::token::tests::info;

    const EXP: i64 = 2_000_000_000;

    #[test]
    fn time_transitions_and_the_grace_boundary() {
        let slot = LicenseSlot::install(Ok(info(EXP)));
        assert_eq!(slot.state(EXP - 1), State::Active);
        assert_eq!(slot.state(EXP), State::Grace);
        let grace_end = EXP + 30 * DAY;
        assert_eq!(slot.state(grace_end - 1), State::Grace);
        assert_eq!(slot.state(grace_end), State::Expired);
        let mut no_grace = info(EXP);
        no_grace.grace_period_days = 0;
        assert_eq!(LicenseSlot::Valid(no_grace).state(EXP), State::Expired);
    }

    #[test]
    fn install_replaces_whatever_was_held() {
        // An install does not look at the previous slot: valid from any state (including
        // INVALID) is ACTIVE, refused from any state is INVALID.
        let now = EXP - 10;
        assert_eq!(LicenseSlot::install(Ok(info(EXP))).state(now), State::Active);
        assert_eq!(LicenseSlot::install(Err(LicenseError::Signature)).state(now), State::Invalid);
        assert_eq!(LicenseSlot::install(Err(LicenseError::NoPublicKey)).state(now), State::Invalid);
        assert_eq!(LicenseSlot::Absent.state(now), State::Absent);
        assert_eq!(LicenseSlot::install(Ok(info(1))).state(now), State::Expired);
    }

    #[test]
    fn caps_follow_the_state() {
        let slot = LicenseSlot::install(Ok(info(EXP)));
        assert_eq!(slot.cap(Limit::MaxAgentsPerVault, EXP - 1), (50, Source::License));
        assert_eq!(slot.cap(Limit::MaxAgentsPerVault, EXP + DAY), (50, Source::License));
        assert_eq!(slot.cap(Limit::MaxEntriesPerVault, EXP - 1), (100, Source::Default));
        assert_eq!(slot.cap(Limit::MaxAgentsPerVault, EXP + 31 * DAY), (5, Source::Default));
        let bad = LicenseSlot::install(Err(LicenseError::Signature));
        assert_eq!(bad.cap(Limit::MaxAgentsPerVault, 0), (5, Source::Default));
        assert_eq!(LicenseSlot::Absent.cap(Limit::MaxVaults, 0), (1, Source::Default));
    }

    #[test]
    fn messages_vary_by_state() {
        let l = Limit::MaxAgentsPerVault;
        let slot = LicenseSlot::install(Ok(info(EXP)));
        assert!(slot.cap_message(l, 50, 50, EXP - 1).starts_with("License cap reached: max_agents_per_vault = 50."));
        assert!(
            slot.cap_message(l, 50, 50, EXP + 2 * DAY)
                .starts_with("License expired 2 day(s) ago and is in its grace period (ends in 28 days)")
        );
        assert!(slot.cap_message(l, 5, 5, EXP + 40 * DAY).starts_with(
            "License expired 40 days ago: system reverted to default tier (cap = 5 for max_agents_per_vault)"
        ));
        let bad = LicenseSlot::Invalid(LicenseError::Signature);
        assert!(bad.cap_message(l, 5, 5, 0).starts_with("License rejected (License signature verification failed)"));
        assert!(
            LicenseSlot::Absent
                .cap_message(l, 5, 5, 0)
                .starts_with("No license installed: default tier applies (cap = 5")
        );
        assert_eq!(slot.usage_message(EXP - 10 * DAY), "License active. 10 days remaining.");
        assert_eq!(LicenseSlot::Absent.usage_message(0), "No license installed. Default tier applies.");
    }
}
