//! Scopes: an agent's id as lowercase hex (`format!("{:04x}", id)`), and sets of them.

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

/// One scope, 4 to 8 lowercase hex digits, kept inline: a vault holds one set per entry, and
/// ten thousand heap strings (plus a B-tree node each) cost megabytes on a small node.
///
/// Zero-padded to sixteen bytes (room for any `i64` agent id, though only 4 to 8 digits parse);
/// since `0` sorts below every hex digit, the derived ordering is exactly the strings' ordering.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Scope([u8; 16]);

impl Scope {
    pub fn for_agent(id: AgentId) -> Self {
        let mut bytes = [0u8; 16];
        let text = format!("{:04x}", id.0);
        // An i64 has at most 16 hex digits. An id past 8 digits yields a scope `parse` refuses,
        // so such an agent is reported as damaged rather than sharing anyone's scope.
        let len = text.len().min(16);
        bytes[..len].copy_from_slice(&text.as_bytes()[..len]);
        Self(bytes)
    }

    pub fn parse(s: &str) -> Result<Self, ScopeError> {
        let ok = (4..=8).contains(&s.len()) && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !ok {
            return Err(ScopeError::Malformed(s.chars().take(32).collect()));
        }
        let mut bytes = [0u8; 16];
        bytes[..s.len()].copy_from_slice(s.as_bytes());
        Ok(Self(bytes))
    }

    pub fn as_str(&self) -> &str {
        let len = self.0.iter().position(|b| *b == 0).unwrap_or(16);
        // Only ASCII hex digits are ever stored (see `parse`).
        std::str::from_utf8(&self.0[..len]).unwrap_or_default()
    }
}

impl std::fmt::Debug for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

/// A set of scopes: sorted and de-duplicated, stored as a comma-separated string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScopeSet(Box<[Scope]>);

impl ScopeSet {
    /// Parses `"0002,00ff"`; the empty string is the empty set. Whitespace around items is allowed.
    pub fn parse(s: &str) -> Result<Self, ScopeError> {
        let items = s.split(',').map(str::trim).filter(|p| !p.is_empty());
        Self::from_strs(items)
    }

    pub fn from_strs<'a>(items: impl IntoIterator<Item = &'a str>) -> Result<Self, ScopeError> {
        let mut set = Vec::new();
        for item in items {
            set.push(Scope::parse(item)?);
            // Checked before de-duplication too, so a huge list is refused early.
            if set.len() > MAX_SCOPES * 4 {
                return Err(ScopeError::TooMany);
            }
        }
        set.sort_unstable();
        set.dedup();
        if set.len() > MAX_SCOPES {
            return Err(ScopeError::TooMany);
        }
        Ok(Self(set.into_boxed_slice()))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn insert(&mut self, scope: Scope) {
        if let Err(at) = self.0.binary_search(&scope) {
            let mut v = std::mem::take(&mut self.0).into_vec();
            v.insert(at, scope);
            self.0 = v.into_boxed_slice();
        }
    }

    pub fn intersects(&self, other: &ScopeSet) -> bool {
        let (small, large) = if self.0.len() <= other.0.len() { (self, other) } else { (other, self) };
        small.0.iter().any(|s| large.0.binary_search(s).is_ok())
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
        assert_eq!(Scope::for_agent(AgentId(0x1_0000_0000)).as_str(), "100000000");
        let s = ScopeSet::parse(" 00ff,0002 ,0002").unwrap();
        assert_eq!(s.to_db(), "0002,00ff");
        assert!(ScopeSet::parse("").unwrap().is_empty());
        assert!(ScopeSet::parse("02").is_err());
        assert!(ScopeSet::parse("00FF").is_err());
        assert!(ScopeSet::parse("'; drop").is_err());
        assert!(ScopeSet::parse("123456789").is_err());
        // Different lengths are different scopes, and order is the strings' order.
        let s = ScopeSet::parse("00010,ffff,0001,00000001").unwrap();
        assert_eq!(s.to_db(), "00000001,0001,00010,ffff");
        assert!(!ScopeSet::parse("0001").unwrap().intersects(&ScopeSet::parse("00010,00001").unwrap()));
        assert!(ScopeSet::parse("0001").unwrap().intersects(&ScopeSet::parse("00010,0001").unwrap()));
        let mut s = ScopeSet::parse("0003").unwrap();
        s.insert(Scope::parse("0001").unwrap());
        s.insert(Scope::parse("0003").unwrap());
        assert_eq!(s.to_db(), "0001,0003");
        let too_many: Vec<String> = (0..=MAX_SCOPES).map(|i| format!("{i:04x}")).collect();
        assert_eq!(ScopeSet::from_strs(too_many.iter().map(String::as_str)), Err(ScopeError::TooMany));
        let repeated = vec!["0001"; MAX_SCOPES + 5];
        assert_eq!(ScopeSet::from_strs(repeated).unwrap().to_db(), "0001");
    }
}
