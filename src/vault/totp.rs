//! TOTP codes (RFC 6238) from an L1 field: an `otpauth://totp/...` URI or a bare base32 secret.

use totp_rs::{Algorithm, Secret, TOTP};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TotpError {
    #[error("not a TOTP secret: expected an otpauth://totp/ URI or a base32 secret")]
    Unparseable,
    #[error("TOTP parameters out of range: digits must be 6 to 8 and the period 1 to 300 seconds")]
    OutOfRange,
}

/// A code and how long it stays valid.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct TotpCode {
    pub code: String,
    pub period: u64,
    pub expires_in: u64,
    pub digits: usize,
}

pub fn parse(value: &str) -> Result<TOTP, TotpError> {
    let value = value.trim();
    let totp = if value.starts_with("otpauth://") {
        TOTP::from_url_unchecked(value).map_err(|_| TotpError::Unparseable)?
    } else {
        // Built in place at its final size, so no outgrown copy of the secret is freed unwiped;
        // the TOTP wipes its bytes on drop too.
        let mut cleaned = String::with_capacity(value.len());
        for c in value.chars().filter(|c| !c.is_whitespace() && *c != '-') {
            cleaned.push(c.to_ascii_uppercase());
        }
        // `Secret` wipes its text on drop (totp-rs "zeroize").
        let bytes = Secret::Encoded(cleaned).to_bytes().map_err(|_| TotpError::Unparseable)?;
        TOTP::new_unchecked(Algorithm::SHA1, 6, 1, 30, bytes, None, String::new())
    };
    if totp.secret.is_empty() {
        return Err(TotpError::Unparseable);
    }
    if !(6..=8).contains(&totp.digits) || !(1..=300).contains(&totp.step) {
        return Err(TotpError::OutOfRange);
    }
    Ok(totp)
}

/// The code valid at unix time `now`.
pub fn code_at(value: &str, now: u64) -> Result<TotpCode, TotpError> {
    let totp = parse(value)?;
    Ok(TotpCode {
        code: totp.generate(now),
        period: totp.step,
        expires_in: totp.step - now % totp.step,
        digits: totp.digits,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 Appendix B: the seeds are ASCII "1234567890" repeated to 20, 32 and 64 bytes.
    #[test]
    fn rfc6238_vectors() {
        let seeds = [
            ("SHA1", "12345678901234567890"),
            ("SHA256", "12345678901234567890123456789012"),
            ("SHA512", "1234567890123456789012345678901234567890123456789012345678901234"),
        ];
        let vectors: [(u64, [&str; 3]); 6] = [
            (59, ["94287082", "46119246", "90693936"]),
            (1111111109, ["07081804", "68084774", "25091201"]),
            (1111111111, ["14050471", "67062674", "99943326"]),
            (1234567890, ["89005924", "91819424", "93441116"]),
            (2000000000, ["69279037", "90698825", "38618901"]),
            (20000000000, ["65353130", "77737706", "47863826"]),
        ];
        for (i, (alg, seed)) in seeds.iter().enumerate() {
            let b32 = Secret::Raw(seed.as_bytes().to_vec()).to_encoded().to_string();
            let uri = format!("otpauth://totp/Test:rfc?secret={b32}&algorithm={alg}&digits=8&period=30&issuer=Test");
            for (t, codes) in &vectors {
                assert_eq!(code_at(&uri, *t).unwrap().code, codes[i], "{alg} at {t}");
            }
        }
    }

    #[test]
    fn bare_base32_and_garbage() {
        let c = code_at("JBSW Y3DP EHPK 3PXP", 59).unwrap();
        assert_eq!(c.digits, 6);
        assert_eq!(c.expires_in, 1);
        assert_eq!(parse("not base32!").unwrap_err(), TotpError::Unparseable);
        assert!(parse("otpauth://hotp/x?secret=JBSWY3DPEHPK3PXP").is_err());
        assert!(parse("").is_err());
    }
}
