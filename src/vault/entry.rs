//! What an entry is: a title, a type, a URL and typed fields, each field L1 or L2.
//!
//! L1 values are sealed at rest and decrypted for agents whose scopes match. L2 values arrive
//! already encrypted by the owner's browser; the server stores and returns them as opaque text
//! and never has their key. It checks only their envelope: `v1.<iv>.<ciphertext>` (AES-GCM
//! with constant associated data; still read, rewritten on the next save) or `v2.<iv>.<ciphertext>`
//! (associated data binds the entry uuid and the field name, so a value moved elsewhere fails to
//! open in the browser), both parts base64url. An entry's uuid may be chosen by the browser
//! (`uuid` in the create request, a canonical lowercase uuid v4) so it can bind v2 values before
//! the entry exists. This module validates input and shapes output; it does no I/O.

use serde::{Deserialize, Serialize};

use super::inject::InjectRule;
use super::totp;
use crate::auth::ScopeSet;

pub const MAX_TITLE: usize = 256;
pub const MAX_URL: usize = 2048;
pub const MAX_FIELDS: usize = 64;
pub const MAX_FIELD_NAME: usize = 64;
pub const MAX_VALUE: usize = 16 * 1024;
/// L2 ciphertext is base64 text of an AES-GCM output, a little larger than its plaintext.
pub const MAX_L2_VALUE: usize = 24 * 1024;
/// An L2 envelope's IV: 12 bytes as unpadded base64url.
const L2_IV_CHARS: usize = 16;
/// An L2 envelope's ciphertext holds at least the 16-byte GCM tag (22 base64url characters).
const L2_MIN_CT_CHARS: usize = 22;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EntryError {
    #[error("{0}")]
    Invalid(String),
}

fn invalid(msg: impl Into<String>) -> EntryError {
    EntryError::Invalid(msg.into())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FieldKind {
    Text,
    Secret,
    Url,
    Totp,
    Note,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    #[default]
    L1,
    L2,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Field {
    pub name: String,
    pub kind: FieldKind,
    #[serde(default)]
    pub tier: Tier,
    pub value: String,
}

/// A value is wiped when its field goes away: decrypted entries pass through the server's heap
/// (cache refreshes, writes) and should not linger in freed memory.
impl Drop for Field {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.value);
    }
}

/// The sealed part of an entry: everything but ids, scopes and timestamps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntryData {
    pub title: String,
    #[serde(rename = "type", default = "default_type")]
    pub entry_type: String,
    #[serde(default)]
    pub url: String,
    #[serde(default)]
    pub fields: Vec<Field>,
    /// Where the proxy may put this entry's credential (`vault::inject`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inject: Vec<InjectRule>,
    /// The L1 values are only ever injected by the proxy, never returned to an agent.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub inject_only: bool,
}

fn default_type() -> String {
    "login".to_owned()
}

/// An entry as submitted by the operator CLI or the admin API: data plus scopes.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EntryInput {
    /// On create: the entry's uuid, chosen by the owner's browser so that L2 values can be bound
    /// to it before the entry exists (canonical lowercase uuid v4, unused in this vault). On
    /// replace: if given, must be the entry's uuid. Absent: the server picks one.
    #[serde(default)]
    pub uuid: Option<String>,
    pub title: String,
    #[serde(rename = "type", default = "default_type")]
    pub entry_type: String,
    #[serde(default)]
    pub url: String,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub fields: Vec<Field>,
    #[serde(default)]
    pub inject: Vec<InjectRule>,
    #[serde(default)]
    pub inject_only: bool,
}

impl EntryInput {
    /// Validates everything and splits into the sealed part and the scopes.
    pub fn into_parts(self) -> Result<(EntryData, ScopeSet), EntryError> {
        if let Some(u) = &self.uuid {
            check_uuid(u)?;
        }
        let scopes = ScopeSet::from_strs(self.scopes.iter().map(String::as_str)).map_err(|e| invalid(e.to_string()))?;
        let data = EntryData {
            title: self.title,
            entry_type: self.entry_type,
            url: self.url,
            fields: self.fields,
            inject: self.inject,
            inject_only: self.inject_only,
        };
        data.validate()?;
        Ok((data, scopes))
    }
}

impl EntryData {
    pub fn validate(&self) -> Result<(), EntryError> {
        let title = self.title.trim();
        if title.is_empty() || self.title.chars().count() > MAX_TITLE {
            return Err(invalid(format!("title must be 1 to {MAX_TITLE} characters")));
        }
        if self.title.chars().any(char::is_control) {
            return Err(invalid("title must not contain control characters"));
        }
        let ty = &self.entry_type;
        if ty.is_empty()
            || ty.len() > 32
            || !ty.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        {
            return Err(invalid("type must be 1 to 32 characters of a-z, 0-9, '_' or '-'"));
        }
        if self.url.len() > MAX_URL || self.url.chars().any(char::is_control) {
            return Err(invalid(format!("url must be at most {MAX_URL} bytes without control characters")));
        }
        if self.fields.len() > MAX_FIELDS {
            return Err(invalid(format!("at most {MAX_FIELDS} fields are allowed")));
        }
        for (i, f) in self.fields.iter().enumerate() {
            f.validate().map_err(|EntryError::Invalid(m)| invalid(format!("field {i}: {m}")))?;
            // A v2 value is bound to (entry, field name): two L2 fields of one name could be
            // swapped unnoticed.
            if f.tier == Tier::L2 && self.fields[..i].iter().any(|g| g.tier == Tier::L2 && g.name == f.name) {
                return Err(invalid(format!("field {i}: two L2 fields are both named {:?}", f.name)));
            }
        }
        super::inject::validate(self)
    }
}

impl Field {
    fn validate(&self) -> Result<(), EntryError> {
        if self.name.trim().is_empty()
            || self.name.chars().count() > MAX_FIELD_NAME
            || self.name.chars().any(char::is_control)
        {
            return Err(invalid(format!("name must be 1 to {MAX_FIELD_NAME} characters without control characters")));
        }
        match self.tier {
            Tier::L1 => {
                if self.value.len() > MAX_VALUE {
                    return Err(invalid(format!("value must be at most {MAX_VALUE} bytes")));
                }
                if self.kind == FieldKind::Totp {
                    totp::parse(&self.value).map_err(|e| invalid(e.to_string()))?;
                }
            }
            Tier::L2 => {
                if self.value.len() > MAX_L2_VALUE || !is_l2_envelope(&self.value) {
                    return Err(invalid(format!(
                        "an L2 value is the owner's browser's ciphertext: \"v2.<iv>.<ciphertext>\" (or the older \
                         \"v1.\" form), base64url, at most {MAX_L2_VALUE} characters"
                    )));
                }
            }
        }
        Ok(())
    }
}

/// `v1.` or `v2.`, a 12-byte IV and at least a GCM tag, both unpadded base64url.
fn is_l2_envelope(value: &str) -> bool {
    let b64u = |s: &str| s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    let mut parts = value.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("v1" | "v2"), Some(iv), Some(ct), None) => {
            iv.len() == L2_IV_CHARS && b64u(iv) && ct.len() >= L2_MIN_CT_CHARS && b64u(ct)
        }
        _ => false,
    }
}

/// A client-chosen entry uuid: a random (v4) uuid in canonical lowercase form, so the same
/// entry has exactly one spelling and AEAD bindings cannot differ by case.
pub fn check_uuid(text: &str) -> Result<(), EntryError> {
    match uuid::Uuid::parse_str(text) {
        Ok(u) if u.get_version_num() == 4 && u.hyphenated().to_string() == text => Ok(()),
        _ => Err(invalid("uuid must be a random uuid (version 4) in lowercase hyphenated form")),
    }
}

/// A field as an agent receives it: L1 value in the clear, L2 as ciphertext. TOTP seeds are
/// never handed out; the agent asks `/api/ext/totp/{id}` for the current code instead. The L1
/// values of an inject-only entry are never handed out either (only the proxy injects them).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FieldView<'a> {
    pub name: &'a str,
    pub kind: FieldKind,
    pub tier: Tier,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ciphertext: Option<&'a str>,
}

impl<'a> FieldView<'a> {
    /// `inject_only`: the entry's `inject_only`; its L1 values are then left out.
    pub fn of(field: &'a Field, inject_only: bool) -> Self {
        let (value, ciphertext) = match (field.tier, field.kind) {
            (Tier::L2, _) => (None, Some(field.value.as_str())),
            (Tier::L1, FieldKind::Totp) => (None, None),
            (Tier::L1, _) if inject_only => (None, None),
            (Tier::L1, _) => (Some(field.value.as_str()), None),
        };
        FieldView { name: &field.name, kind: field.kind, tier: field.tier, value, ciphertext }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(json: &str) -> Result<(EntryData, ScopeSet), EntryError> {
        serde_json::from_str::<EntryInput>(json).map_err(|e| invalid(e.to_string()))?.into_parts()
    }

    #[test]
    fn validation() {
        assert!(input(r#"{"title":"GitHub","url":"https://github.com","scopes":["0002"],"fields":[{"name":"password","kind":"secret","value":"x"}]}"#).is_ok());
        assert!(input(r#"{"title":""}"#).is_err());
        assert!(input(r#"{"title":"a","type":"Bad Type"}"#).is_err());
        assert!(input(r#"{"title":"a","scopes":["xyz"]}"#).is_err());
        assert!(input(r#"{"title":"a","fields":[{"name":"otp","kind":"totp","value":"not base32!"}]}"#).is_err());
        assert!(input(r#"{"title":"a","fields":[{"name":"otp","kind":"totp","value":"JBSWY3DPEHPK3PXP"}]}"#).is_ok());
        assert!(
            input(r#"{"title":"a","fields":[{"name":"n","kind":"note","tier":"l2","value":"has spaces"}]}"#).is_err()
        );
        let l2 = |v: &str| {
            input(&format!(r#"{{"title":"a","fields":[{{"name":"n","kind":"note","tier":"l2","value":"{v}"}}]}}"#))
        };
        let (iv, ct) = ("AAAAAAAAAAAAAAAA", "AAAAAAAAAAAAAAAAAAAAAA");
        assert!(l2(&format!("v2.{iv}.{ct}")).is_ok());
        assert!(l2(&format!("v1.{iv}.{ct}-_x")).is_ok());
        for bad in [
            format!("v3.{iv}.{ct}"),
            format!("{iv}.{ct}"),
            format!("v2.{iv}.{ct}.x"),
            format!("v2.{iv}A.{ct}"),
            format!("v2.{iv}.{}", &ct[1..]),
            format!("v2.{iv}.{ct}="),
            format!("v2.{iv}.{ct}+"),
            "c2VjcmV0Y2lwaGVydGV4dA==".into(),
        ] {
            assert!(l2(&bad).is_err(), "{bad}");
        }
        let two = format!(
            r#"{{"title":"a","fields":[{{"name":"n","kind":"note","tier":"l2","value":"v2.{iv}.{ct}"}},{{"name":"n","kind":"note","tier":"l2","value":"v2.{iv}.{ct}"}}]}}"#
        );
        assert!(input(&two).is_err(), "two L2 fields of one name");
        assert!(input(r#"{"title":"a","uuid":"6f1c2a4e-8b3d-4c5e-9f60-718293a4b5c6"}"#).is_ok());
        for bad in [
            "6F1C2A4E-8B3D-4C5E-9F60-718293A4B5C6",
            "6f1c2a4e8b3d4c5e9f60718293a4b5c6",
            "6f1c2a4e-8b3d-1c5e-9f60-718293a4b5c6",
            "x",
        ] {
            assert!(input(&format!(r#"{{"title":"a","uuid":"{bad}"}}"#)).is_err(), "{bad}");
        }
        assert!(input(r#"{"title":"a","unknown":1}"#).is_err());
    }

    #[test]
    fn views_hide_totp_seeds_and_pass_l2_ciphertext() {
        let seed =
            Field { name: "otp".into(), kind: FieldKind::Totp, tier: Tier::L1, value: "JBSWY3DPEHPK3PXP".into() };
        let v = FieldView::of(&seed, false);
        assert!(v.value.is_none() && v.ciphertext.is_none());
        let l2 = Field { name: "n".into(), kind: FieldKind::Note, tier: Tier::L2, value: "AAAA".into() };
        assert_eq!(FieldView::of(&l2, false).ciphertext, Some("AAAA"));
        assert_eq!(FieldView::of(&l2, true).ciphertext, Some("AAAA"), "L2 is the owner's ciphertext either way");
        let key = Field { name: "k".into(), kind: FieldKind::Secret, tier: Tier::L1, value: "sk-1".into() };
        assert_eq!(FieldView::of(&key, false).value, Some("sk-1"));
        let hidden = FieldView::of(&key, true);
        assert!(hidden.value.is_none() && hidden.ciphertext.is_none() && hidden.name == "k");
    }
}
