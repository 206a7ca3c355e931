//! The limit keys a license can lift, and the default tier that applies without a valid one.

use std::collections::BTreeMap;

/// One capped resource. Its key is the name in the license payload, the 403 body and the usage
/// endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Limit {
    MaxVaults,
    MaxAgentsPerVault,
    MaxPasskeysPerVault,
    MaxEntriesPerVault,
    MaxAuditRetentionDays,
}

impl Limit {
    pub const ALL: [Limit; 5] = [
        Limit::MaxVaults,
        Limit::MaxAgentsPerVault,
        Limit::MaxPasskeysPerVault,
        Limit::MaxEntriesPerVault,
        Limit::MaxAuditRetentionDays,
    ];

    pub fn key(self) -> &'static str {
        match self {
            Limit::MaxVaults => "max_vaults",
            Limit::MaxAgentsPerVault => "max_agents_per_vault",
            Limit::MaxPasskeysPerVault => "max_passkeys_per_vault",
            Limit::MaxEntriesPerVault => "max_entries_per_vault",
            Limit::MaxAuditRetentionDays => "max_audit_retention_days",
        }
    }

    /// What the limit counts, for messages ("create more agents").
    pub fn noun(self) -> &'static str {
        match self {
            Limit::MaxVaults => "vaults",
            Limit::MaxAgentsPerVault => "agents",
            Limit::MaxPasskeysPerVault => "passkeys",
            Limit::MaxEntriesPerVault => "entries",
            Limit::MaxAuditRetentionDays => "days of audit retention",
        }
    }

    pub fn from_key(key: &str) -> Option<Limit> {
        Limit::ALL.into_iter().find(|l| l.key() == key)
    }

    /// The default tier's cap for this limit.
    pub fn default_cap(self) -> u64 {
        DEFAULT_TIER.iter().find(|(l, _)| *l == self).map_or(0, |(_, v)| *v)
    }
}

/// The caps without a valid license (ABSENT, EXPIRED, INVALID): enough to evaluate, not to run
/// a fleet. One table, so every key has exactly one default.
pub const DEFAULT_TIER: [(Limit, u64); 5] = [
    (Limit::MaxVaults, 1),
    (Limit::MaxAgentsPerVault, 5),
    (Limit::MaxPasskeysPerVault, 2),
    (Limit::MaxEntriesPerVault, 100),
    (Limit::MaxAuditRetentionDays, 7),
];

/// The limits a license states explicitly; a missing key inherits the default tier.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits(pub BTreeMap<Limit, u64>);

/// Where an effective cap comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    License,
    Default,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::License => "license",
            Source::Default => "default",
        }
    }
}

impl Limits {
    /// The cap for `limit` from these limits, or the default tier's.
    pub fn cap(&self, limit: Limit) -> (u64, Source) {
        match self.0.get(&limit) {
            Some(v) => (*v, Source::License),
            None => (limit.default_cap(), Source::Default),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_has_exactly_one_default() {
        for l in Limit::ALL {
            assert_eq!(DEFAULT_TIER.iter().filter(|(k, _)| *k == l).count(), 1, "{}", l.key());
            assert!(l.default_cap() > 0, "{}", l.key());
            assert_eq!(Limit::from_key(l.key()), Some(l));
        }
        assert_eq!(DEFAULT_TIER.len(), Limit::ALL.len());
        let expected = [1, 5, 2, 100, 7];
        for (l, v) in Limit::ALL.iter().zip(expected) {
            assert_eq!(l.default_cap(), v);
        }
    }

    #[test]
    fn missing_keys_inherit_the_default() {
        let limits = Limits([(Limit::MaxVaults, 50)].into_iter().collect());
        assert_eq!(limits.cap(Limit::MaxVaults), (50, Source::License));
        assert_eq!(limits.cap(Limit::MaxEntriesPerVault), (100, Source::Default));
    }
}
