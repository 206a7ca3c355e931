//! The license envelope `base64url(payload).base64url(signature)` and its validator.
//!
//! The payload is canonical JSON (sorted keys, no whitespace); the signature is Ed25519 over
//! those exact bytes, checked with `verify_strict` (malleable and small-order signatures are
//! refused). Never signs: that is the minter's crate alone.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ed25519_dalek::{Signature, VerifyingKey};
use serde_json::Value;

use super::limits::{Limit, Limits};

/// Why a token or key was refused. The text is what the operator sees (403 bodies, usage,
/// audit details), so it names the problem without echoing the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LicenseError {
    #[error("license is not of the form payload.signature (base64url)")]
    Format,
    #[error("License signature verification failed")]
    Signature,
    #[error("license payload is not valid JSON: {0}")]
    Json(String),
    #[error("license field {0} is missing or invalid")]
    Field(&'static str),
    #[error("License tenantId '{license}' does not match server tenant '{server}'")]
    TenantMismatch { license: String, server: String },
    #[error("no license public key is configured but a license token is present")]
    NoPublicKey,
    #[error("the license public key is not an Ed25519 public key (PEM \"PUBLIC KEY\"): {0}")]
    BadPublicKey(String),
}

/// A verified license's contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LicenseInfo {
    pub license_id: uuid::Uuid,
    pub tenant_id: String,
    pub label: Option<String>,
    /// Unix seconds.
    pub iat: i64,
    /// Unix seconds.
    pub exp: i64,
    pub grace_period_days: u32,
    pub limits: Limits,
}

/// The Ed25519 key licenses are verified against (`--license-public-key`, never the DB).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410); the 32 key bytes follow.
const SPKI_ED25519_PREFIX: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];

impl PublicKey {
    /// Reads `openssl pkey -pubout` output (PEM "PUBLIC KEY", Ed25519).
    pub fn from_pem(pem: &str) -> Result<Self, LicenseError> {
        let body: String = pem
            .lines()
            .map(str::trim)
            .skip_while(|l| *l != "-----BEGIN PUBLIC KEY-----")
            .skip(1)
            .take_while(|l| *l != "-----END PUBLIC KEY-----")
            .collect();
        if body.is_empty() {
            return Err(LicenseError::BadPublicKey("no BEGIN PUBLIC KEY block".into()));
        }
        let der = STANDARD.decode(body).map_err(|_| LicenseError::BadPublicKey("bad base64".into()))?;
        let key = der
            .strip_prefix(&SPKI_ED25519_PREFIX[..])
            .and_then(|k| <[u8; 32]>::try_from(k).ok())
            .ok_or_else(|| LicenseError::BadPublicKey("not an Ed25519 key".into()))?;
        Self::from_bytes(&key)
    }

    pub fn from_bytes(key: &[u8; 32]) -> Result<Self, LicenseError> {
        VerifyingKey::from_bytes(key)
            .map(PublicKey)
            .map_err(|_| LicenseError::BadPublicKey("not a valid curve point".into()))
    }

    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.0
    }
}

/// The canonical payload: JSON with sorted keys and no whitespace. Unspecified limits are
/// omitted, so the license inherits the default for them.
pub fn canonical_payload(info: &LicenseInfo) -> Vec<u8> {
    let limits: BTreeMap<String, Value> =
        info.limits.0.iter().map(|(l, v)| (l.key().to_owned(), Value::from(*v))).collect();
    let mut top: BTreeMap<&str, Value> = BTreeMap::new();
    top.insert("exp", Value::from(info.exp));
    top.insert("gracePeriodDays", Value::from(info.grace_period_days));
    top.insert("iat", Value::from(info.iat));
    if let Some(label) = &info.label {
        top.insert("label", Value::from(label.clone()));
    }
    top.insert("licenseId", Value::from(info.license_id.to_string()));
    top.insert("limits", Value::Object(limits.into_iter().collect()));
    top.insert("tenantId", Value::from(info.tenant_id.clone()));
    // A BTreeMap serialises in key order whatever serde_json's map type is.
    serde_json::to_vec(&top).unwrap_or_default()
}

fn b64(part: &str) -> Result<Vec<u8>, LicenseError> {
    URL_SAFE_NO_PAD.decode(part.trim_end_matches('=')).map_err(|_| LicenseError::Format)
}

/// Verifies `token` against `key` and checks that it is for `tenant`. Expiry is not a refusal
/// here: an expired license is valid and in GRACE or EXPIRED (see `state`).
pub fn validate(token: &str, key: &PublicKey, tenant: &str) -> Result<LicenseInfo, LicenseError> {
    let (payload_b64, sig_b64) = token.trim().split_once('.').ok_or(LicenseError::Format)?;
    let payload = b64(payload_b64)?;
    let sig: [u8; 64] = b64(sig_b64)?.try_into().map_err(|_| LicenseError::Format)?;
    key.0.verify_strict(&payload, &Signature::from_bytes(&sig)).map_err(|_| LicenseError::Signature)?;
    let info = parse_payload(&payload)?;
    if info.tenant_id != tenant {
        return Err(LicenseError::TenantMismatch { license: info.tenant_id, server: tenant.to_owned() });
    }
    Ok(info)
}

fn parse_payload(payload: &[u8]) -> Result<LicenseInfo, LicenseError> {
    let v: Value = serde_json::from_slice(payload).map_err(|e| LicenseError::Json(e.to_string()))?;
    let obj = v.as_object().ok_or_else(|| LicenseError::Json("not an object".into()))?;
    let license_id = obj
        .get("licenseId")
        .and_then(Value::as_str)
        .and_then(|s| uuid::Uuid::parse_str(s).ok())
        .ok_or(LicenseError::Field("licenseId"))?;
    let tenant_id = obj
        .get("tenantId")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or(LicenseError::Field("tenantId"))?
        .to_owned();
    let iat = obj.get("iat").and_then(Value::as_i64).ok_or(LicenseError::Field("iat"))?;
    let exp = obj.get("exp").and_then(Value::as_i64).ok_or(LicenseError::Field("exp"))?;
    let label = match obj.get("label") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(LicenseError::Field("label")),
    };
    let grace_period_days = match obj.get("gracePeriodDays") {
        None => 0,
        Some(g) => g.as_u64().and_then(|g| u32::try_from(g).ok()).ok_or(LicenseError::Field("gracePeriodDays"))?,
    };
    let mut limits = BTreeMap::new();
    match obj.get("limits") {
        None => {}
        Some(Value::Object(m)) => {
            for (k, v) in m {
                // Unknown keys are ignored: a newer vendor may cap things this build lacks.
                if let Some(limit) = Limit::from_key(k) {
                    limits.insert(limit, v.as_u64().ok_or(LicenseError::Field("limits"))?);
                }
            }
        }
        Some(_) => return Err(LicenseError::Field("limits")),
    }
    // Other top-level fields (an old token's `features`, `tier`) are dropped silently.
    Ok(LicenseInfo { license_id, tenant_id, label, iat, exp, grace_period_days, limits: Limits(limits) })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    // A throwaway key for unit tests only (test code is never in a node build).
    pub(crate) fn test_key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    pub(crate) fn sign_raw(key: &SigningKey, payload: &[u8]) -> String {
        let sig = key.sign(payload);
        format!("{}.{}", URL_SAFE_NO_PAD.encode(payload), URL_SAFE_NO_PAD.encode(sig.to_bytes()))
    }

    pub(crate) fn info(exp: i64) -> LicenseInfo {
        LicenseInfo {
            license_id: uuid::Uuid::parse_str("550e8400-e29b-41d4-a716-446655440000").unwrap(),
            tenant_id: "acme".into(),
            label: Some("ACME prod".into()),
            iat: 1_700_000_000,
            exp,
            grace_period_days: 30,
            limits: Limits([(Limit::MaxAgentsPerVault, 50)].into_iter().collect()),
        }
    }

    fn pk(key: &SigningKey) -> PublicKey {
        PublicKey(key.verifying_key())
    }

    #[test]
    fn round_trip_and_canonical_bytes() {
        let k = test_key(1);
        let i = info(2_000_000_000);
        let payload = canonical_payload(&i);
        assert_eq!(
            String::from_utf8(payload.clone()).unwrap(),
            r#"{"exp":2000000000,"gracePeriodDays":30,"iat":1700000000,"label":"ACME prod","licenseId":"550e8400-e29b-41d4-a716-446655440000","limits":{"max_agents_per_vault":50},"tenantId":"acme"}"#
        );
        assert_eq!(payload, canonical_payload(&i.clone()));
        assert_eq!(validate(&sign_raw(&k, &payload), &pk(&k), "acme").unwrap(), i);
    }

    #[test]
    fn wrong_key_or_edited_payload_fails_the_signature() {
        let k = test_key(1);
        let tok = sign_raw(&k, &canonical_payload(&info(2_000_000_000)));
        assert_eq!(validate(&tok, &pk(&test_key(2)), "acme"), Err(LicenseError::Signature));
        let (p, s) = tok.split_once('.').unwrap();
        let mut bytes = URL_SAFE_NO_PAD.decode(p).unwrap();
        let pos = bytes.windows(2).position(|w| w == b"50").unwrap();
        bytes[pos] = b'9';
        let forged = format!("{}.{s}", URL_SAFE_NO_PAD.encode(&bytes));
        assert_eq!(validate(&forged, &pk(&k), "acme"), Err(LicenseError::Signature));
        assert_eq!(validate("garbage", &pk(&k), "acme"), Err(LicenseError::Format));
        assert_eq!(validate("a.b", &pk(&k), "acme"), Err(LicenseError::Format));
    }

    #[test]
    fn small_order_signature_is_refused() {
        // The identity point as R and S = 0 "verifies" under the lax rule for a small-order key.
        let mut small = [0u8; 32];
        small[0] = 1;
        let key = PublicKey::from_bytes(&small).unwrap();
        let mut sig = [0u8; 64];
        sig[0] = 1;
        let tok = format!("{}.{}", URL_SAFE_NO_PAD.encode(b"{}"), URL_SAFE_NO_PAD.encode(sig));
        assert_eq!(validate(&tok, &key, "acme"), Err(LicenseError::Signature));
    }

    #[test]
    fn expiry_is_not_a_refusal_but_tenant_mismatch_is() {
        let k = test_key(1);
        let tok = sign_raw(&k, &canonical_payload(&info(1)));
        assert_eq!(validate(&tok, &pk(&k), "acme").unwrap().exp, 1);
        let err = validate(&tok, &pk(&k), "beta").unwrap_err();
        assert_eq!(err.to_string(), "License tenantId 'acme' does not match server tenant 'beta'");
    }

    #[test]
    fn each_missing_required_field_is_refused() {
        let k = test_key(1);
        let full: Value = serde_json::from_slice(&canonical_payload(&info(2_000_000_000))).unwrap();
        for field in ["licenseId", "tenantId", "iat", "exp"] {
            let mut v = full.clone();
            v.as_object_mut().unwrap().remove(field);
            let tok = sign_raw(&k, &serde_json::to_vec(&v).unwrap());
            assert_eq!(validate(&tok, &pk(&k), "acme"), Err(LicenseError::Field(field)), "{field}");
        }
        let mut v = full.clone();
        v["licenseId"] = "not-a-uuid".into();
        let tok = sign_raw(&k, &serde_json::to_vec(&v).unwrap());
        assert_eq!(validate(&tok, &pk(&k), "acme"), Err(LicenseError::Field("licenseId")));
    }

    #[test]
    fn unknown_fields_and_features_are_ignored_and_optional_ones_default() {
        let k = test_key(1);
        let v = serde_json::json!({
            "licenseId": "550e8400-e29b-41d4-a716-446655440000", "tenantId": "acme",
            "iat": 1, "exp": 2, "features": ["topology"], "tier": "gold",
            "limits": {"max_vaults": 9, "max_apps": 3}
        });
        let got = validate(&sign_raw(&k, &serde_json::to_vec(&v).unwrap()), &pk(&k), "acme").unwrap();
        assert_eq!(got.grace_period_days, 0);
        assert_eq!(got.label, None);
        assert_eq!(got.limits.0, [(Limit::MaxVaults, 9)].into_iter().collect());
    }

    #[test]
    fn public_key_pem_is_parsed() {
        let k = test_key(3);
        let mut der = SPKI_ED25519_PREFIX.to_vec();
        der.extend_from_slice(k.verifying_key().as_bytes());
        let pem = format!("-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n", STANDARD.encode(&der));
        assert_eq!(PublicKey::from_pem(&pem).unwrap(), pk(&k));
        assert!(PublicKey::from_pem("nothing").is_err());
    }
}
