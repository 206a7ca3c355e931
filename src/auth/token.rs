//! Bearer tokens: `cvt_` + 32 random bytes in base62, stored only as SHA-256 hex.
//!
//! The `cvt_` prefix lets secret scanners (GitHub, GitLab) recognise a leaked token.

use zeroize::Zeroizing;

pub const PREFIX: &str = "cvt_";
/// 62^43 > 2^256, so 43 base62 digits hold any 32-byte value.
const BODY_LEN: usize = 43;
const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("not a clavitor token")]
    Malformed,
}

/// A freshly minted token. The only place a plaintext token exists; it is shown once and dropped.
pub struct NewToken {
    plain: Zeroizing<String>,
    hash: TokenHash,
}

impl NewToken {
    pub fn generate() -> Self {
        let bytes = Zeroizing::new(crate::crypto::random_bytes::<32>());
        let plain = Zeroizing::new(format!("{PREFIX}{}", base62_fixed(&bytes)));
        let hash = TokenHash::of_valid(&plain);
        Self { plain, hash }
    }

    pub fn reveal(&self) -> &str {
        &self.plain
    }

    pub fn hash(&self) -> &TokenHash {
        &self.hash
    }
}

/// SHA-256 (hex) of a token: what the database and the in-memory index hold.
///
/// Looking a request's token up by its hash means no comparison ever branches on the secret
/// bytes themselves: an attacker learns nothing from timing about how close a guess was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenHash(String);

impl std::hash::Hash for TokenHash {
    /// The first 16 hex digits: 64 bits of a SHA-256, as well spread as the whole, for a
    /// quarter of the hashing every request's index lookup pays. Equal values have equal
    /// prefixes, so this agrees with `Eq`.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let bytes = self.0.as_bytes();
        state.write(&bytes[..bytes.len().min(16)]);
    }
}

impl TokenHash {
    /// Checks the format first, so garbage never reaches the index and costs nothing to reject.
    pub fn of_presented(token: &str) -> Result<Self, TokenError> {
        let body = token.strip_prefix(PREFIX).ok_or(TokenError::Malformed)?;
        if body.len() != BODY_LEN || !body.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(TokenError::Malformed);
        }
        Ok(Self::of_valid(token))
    }

    fn of_valid(token: &str) -> Self {
        Self(crate::crypto::sha256_hex(token.as_bytes()))
    }

    /// Wraps a hash read back from storage.
    pub fn from_stored(hex: String) -> Self {
        Self(hex)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Fixed-width base62 of a 256-bit big-endian number (long division, 43 digits, left-padded).
///
/// Hand-written because the base62 crates either stop at u128 or drop leading zeros, and a token
/// must always have the same length so its format can be checked before any lookup.
fn base62_fixed(bytes: &[u8; 32]) -> String {
    let mut num = *bytes;
    let mut digits = [0u8; BODY_LEN];
    for slot in digits.iter_mut().rev() {
        let mut rem: u32 = 0;
        for byte in num.iter_mut() {
            let acc = (rem << 8) | u32::from(*byte);
            *byte = (acc / 62) as u8;
            rem = acc % 62;
        }
        *slot = ALPHABET[rem as usize];
    }
    num.iter_mut().for_each(|b| *b = 0);
    String::from_utf8_lossy(&digits).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_and_hash() {
        let t = NewToken::generate();
        assert!(t.reveal().starts_with("cvt_"));
        assert_eq!(t.reveal().len(), 4 + 43);
        assert_eq!(TokenHash::of_presented(t.reveal()).unwrap(), *t.hash());
        assert_eq!(t.hash().as_str().len(), 64);
        assert_ne!(NewToken::generate().reveal(), t.reveal());
        assert!(TokenHash::of_presented("cvt_short").is_err());
        assert!(TokenHash::of_presented(&t.reveal().replace("cvt_", "xyz_")).is_err());
        let mut bad = t.reveal().to_owned();
        bad.pop();
        bad.push('!');
        assert!(TokenHash::of_presented(&bad).is_err());
    }

    #[test]
    fn base62_extremes() {
        assert_eq!(base62_fixed(&[0; 32]), "0".repeat(43));
        let max = base62_fixed(&[0xff; 32]);
        assert_eq!(max.len(), 43);
        // 2^256 - 1 needs all 43 digits: the top one is not padding.
        assert!(!max.starts_with('0'));
        let mut one = [0u8; 32];
        one[31] = 61;
        assert_eq!(base62_fixed(&one), format!("{}z", "0".repeat(42)));
    }
}
