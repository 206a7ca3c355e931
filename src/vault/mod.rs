//! The vault service: entries and agents as the rest of the program sees them.
//!
//! Composes `store` (rows), `crypto` (sealing) and `auth` (who may read what). Owns the rules
//! that span them: an entry is sealed with its vault's data key bound to its uuid; an agent's own
//! scope is always among its scopes; every change is audited in the same transaction. It holds
//! no SQL and no HTTP types. [`ops`] is the write path shared by the local operator CLI and the
//! (WebAuthn-gated) admin API; [`live`] is what a running server keeps in memory.

pub mod authority;
pub mod data_dir;
pub mod entry;
pub mod gate;
pub mod inject;
pub mod live;
pub mod ops;
pub mod sessions;
pub mod totp;
pub mod view;

use crate::crypto::CryptoError;
use crate::store::StoreError;

pub use data_dir::DataDir;
pub use live::{AuthFailure, CachedEntry, LiveVault, Node, Principal, TotpSecret, UnavailableVault};

/// A vault's id: 32 lowercase hex characters, also the stem of its file name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VaultId(String);

impl VaultId {
    pub fn generate() -> Self {
        Self(hex::encode(crate::crypto::random_bytes::<16>()))
    }

    pub fn parse(s: &str) -> Result<Self, VaultError> {
        if s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(Self(s.to_owned()))
        } else {
            Err(VaultError::Corrupt(format!("invalid vault id {:?}", s.chars().take(40).collect::<String>())))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for VaultId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error("invalid entry: {0}")]
    Entry(#[from] entry::EntryError),
    #[error("invalid scopes: {0}")]
    Scope(#[from] crate::auth::ScopeError),
    #[error("vault data is damaged: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Setup(String),
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    Conflict(String),
    #[error("invalid input: {0}")]
    Invalid(String),
    /// The edition's cap for this kind of row is reached; the 403 body explains it.
    #[error("{}", .0.get("message").and_then(|m| m.as_str()).unwrap_or("cap reached"))]
    CapExceeded(Box<serde_json::Value>),
}

impl VaultError {
    /// Folds the store's not-found/conflict into ours, so callers match on one level.
    pub(crate) fn from_store(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => VaultError::NotFound,
            StoreError::Conflict(m) => VaultError::Conflict(m),
            other => VaultError::Store(other),
        }
    }
}
