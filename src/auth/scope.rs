//! Scopes: an agent's id as lowercase hex (`format!("{:04x}", id)`), and sets of them.

use std::collections::BTreeSet;

use super::AgentId;

/// The most scopes one agent or entry may carry; keeps rows and checks small.
pub const MAX_SCOPES: usize = 256;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScopeError {
    #[error("scope {0:?} is not 4 to 8 lowercase hex digits")]
    Malformed(String),
    #[error("at most {MAX_SCOPES} scopes are allowed")]
    TooMany,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Scope(String);

impl Scope {
    pub fn for_agent(id: AgentId) -> Self {
        Self(format!("{:04x}", id.0))
    }

    pub fn parse(s: &str) -> Result<Self, ScopeError> {
        let ok = (4..=8).contains(&s.len()) && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if ok { Ok(Self(s.to_owned())) } else { Err(ScopeError::Malformed(s.chars().take(32).collect())) }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A set of scopes, stored as a comma-separated, sorted, de-duplicated string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScopeSet(BTreeSet<Scope>);

impl ScopeSet {
    /// Parses `"0002,00ff"`; the empty string is the empty set. Whitespace around items is allowed.
    pub fn parse(s: &str) -> Result<Self, ScopeError> {
        let items = s.split(',').map(str::trim).filter(|p| !p.is_empty());
        Self::from_strs(items)
    }

    pub fn from_strs<'a>(items: impl IntoIterator<Item = &'a str>) -> Result<Self, ScopeError> {
        let mut set = BTreeSet::new();
        for item in items {
            set.insert(Scope::parse(item)?);
            if set.len() > MAX_SCOPES {
                return Err(ScopeError::TooMany);
            }
        }
        Ok(Self(set))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn insert(&mut self, scope: Scope) {
        self.0.insert(scope);
    }

    pub fn intersects(&self, other: &ScopeSet) -> bool {
        let (small, large) = if self.0.len() <= other.0.len() { (self, other) } else { (other, self) };
        small.0.iter().any(|s| large.0.contains(s))
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(Scope::as_str)
    }

    /// The stored form.
    pub fn to_db(&self) -> String {
        self.iter().collect::<Vec<_>>().join(",")
    }

    pub fn to_vec(&self) -> Vec<String> {
        self.iter().map(str::to_owned).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_format() {
        assert_eq!(Scope::for_agent(AgentId(1)).as_str(), "0001");
        assert_eq!(Scope::for_agent(AgentId(0x1_0000)).as_str(), "10000");
        let s = ScopeSet::parse(" 00ff,0002 ,0002").unwrap();
        assert_eq!(s.to_db(), "0002,00ff");
        assert!(ScopeSet::parse("").unwrap().is_empty());
        assert!(ScopeSet::parse("02").is_err());
        assert!(ScopeSet::parse("00FF").is_err());
        assert!(ScopeSet::parse("'; drop").is_err());
        assert!(ScopeSet::parse("123456789").is_err());
    }
}
