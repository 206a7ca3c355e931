//! Keys and sealing: the node master key, per-vault data keys, and the AEAD of entries.
//!
//! Owns every use of key material. It never touches SQLite or HTTP and never logs a key or a
//! plaintext; callers get opaque sealed bytes and put them wherever they like.
//!
//! Layout of a sealed value: a 24-byte random XChaCha20 nonce followed by the ciphertext and its
//! 16-byte Poly1305 tag. The associated data binds a ciphertext to where it belongs (the vault and
//! the entry), so a row copied into another vault or onto another entry fails to open.
//!
//! [`RowKey`] authenticates the rows that grant access (agents; entry ids, uuids and scopes):
//! an HMAC-SHA256 key derived from the vault's data key with its own label, so a row inserted or
//! changed in the file by anyone without the master key fails to verify.
//!
//! [`MemoryKey`] is separate: a random key that lives only in the server's memory and seals
//! what the server keeps there between requests (an entry's rendered agent view), so that a
//! heap dump or a stray read of the cache shows no plaintext. It uses ring's AES-256-GCM with a
//! counter nonce: on CPUs with AES instructions about half the cost of ChaCha20-Poly1305 for a
//! read-path-sized value (150 against 330 ns to open a 380-byte view, copy included; every entry
//! read opens one), and already in the binary for TLS.
//! Nothing sealed with it is ever written anywhere, so the choice can change between releases.

// HPKE transport of data keys to backup POPs (issue 14); commercial builds only.
#[cfg(feature = "commercial")]
pub mod key_transport;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use zeroize::{Zeroize, ZeroizeOnDrop};

const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("master key file {path} not found; run `clavitor init` to create one")]
    MasterKeyMissing { path: PathBuf },
    #[error("master key file {path} is readable by group or others (mode {mode:o}); chmod 600 it")]
    MasterKeyPermissions { path: PathBuf, mode: u32 },
    #[error("master key file {path} must hold exactly 32 bytes, it holds {len}")]
    MasterKeyLength { path: PathBuf, len: usize },
    #[error("master key file {path} already exists; refusing to overwrite it")]
    MasterKeyExists { path: PathBuf },
    #[error("cannot access master key file {path}: {source}")]
    MasterKeyIo { path: PathBuf, source: std::io::Error },
    /// Wrong key, wrong associated data, or tampered bytes: deliberately indistinguishable.
    #[error("sealed data failed authentication (wrong key or tampered data)")]
    Open,
    #[error("sealing failed")]
    Seal,
}

/// The node's key-encryption key. Only ever wraps data keys; never seals entries directly.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct MasterKey([u8; KEY_LEN]);

impl MasterKey {
    /// Reads the key file, refusing one that group or others could read.
    pub fn load(path: &Path) -> Result<Self, CryptoError> {
        let io = |source| CryptoError::MasterKeyIo { path: path.to_owned(), source };
        let meta = match fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(CryptoError::MasterKeyMissing { path: path.to_owned() });
            }
            Err(e) => return Err(io(e)),
        };
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(CryptoError::MasterKeyPermissions { path: path.to_owned(), mode });
        }
        let mut bytes = fs::read(path).map_err(io)?;
        if bytes.len() != KEY_LEN {
            let len = bytes.len();
            bytes.zeroize();
            return Err(CryptoError::MasterKeyLength { path: path.to_owned(), len });
        }
        let mut key = [0u8; KEY_LEN];
        key.copy_from_slice(&bytes);
        bytes.zeroize();
        Ok(Self(key))
    }

    /// Creates a new random key file with mode 0600; never overwrites an existing file.
    pub fn create(path: &Path) -> Result<Self, CryptoError> {
        let mut key = [0u8; KEY_LEN];
        rand::rngs::OsRng.fill_bytes(&mut key);
        let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                CryptoError::MasterKeyExists { path: path.to_owned() }
            } else {
                CryptoError::MasterKeyIo { path: path.to_owned(), source }
            }
        })?;
        let io = |source| CryptoError::MasterKeyIo { path: path.to_owned(), source };
        file.write_all(&key).map_err(io)?;
        file.sync_all().map_err(io)?;
        Ok(Self(key))
    }

    /// Wraps a vault's data key; `context` (the vault id) is bound as associated data.
    pub fn wrap(&self, data_key: &DataKey, context: &str) -> Result<Vec<u8>, CryptoError> {
        seal_raw(&self.0, &data_key.0, &wrap_aad(context))
    }

    pub fn unwrap_key(&self, wrapped: &[u8], context: &str) -> Result<DataKey, CryptoError> {
        let mut plain = open_raw(&self.0, wrapped, &wrap_aad(context))?;
        if plain.len() != KEY_LEN {
            plain.zeroize();
            return Err(CryptoError::Open);
        }
        let mut key = [0u8; KEY_LEN];
        key.copy_from_slice(&plain);
        plain.zeroize();
        Ok(DataKey(key))
    }
}

impl MasterKey {
    /// Seals a node-level secret kept in a file (the proxy CA's key); `context` names what it
    /// is and is bound as associated data, so one sealed file cannot stand in for another.
    pub fn seal_secret(&self, plain: &[u8], context: &str) -> Result<Vec<u8>, CryptoError> {
        seal_raw(&self.0, plain, &secret_aad(context))
    }

    pub fn open_secret(&self, sealed: &[u8], context: &str) -> Result<zeroize::Zeroizing<Vec<u8>>, CryptoError> {
        open_raw(&self.0, sealed, &secret_aad(context)).map(zeroize::Zeroizing::new)
    }
}

fn secret_aad(context: &str) -> Vec<u8> {
    [b"clavitor/node-secret/v1\0".as_slice(), context.as_bytes()].concat()
}

fn wrap_aad(context: &str) -> Vec<u8> {
    [b"clavitor/vault-key/v1\0".as_slice(), context.as_bytes()].concat()
}

/// A vault's data key: seals that vault's entries and nothing else.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct DataKey([u8; KEY_LEN]);

impl DataKey {
    pub fn generate() -> Self {
        let mut key = [0u8; KEY_LEN];
        rand::rngs::OsRng.fill_bytes(&mut key);
        Self(key)
    }

    /// Seals an entry's JSON, bound to its vault and entry uuid.
    pub fn seal_entry(&self, vault_id: &str, entry_uuid: &str, plain: &[u8]) -> Result<Vec<u8>, CryptoError> {
        seal_raw(&self.0, plain, &entry_aad(vault_id, entry_uuid))
    }

    pub fn open_entry(&self, vault_id: &str, entry_uuid: &str, sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        open_raw(&self.0, sealed, &entry_aad(vault_id, entry_uuid))
    }
}

impl DataKey {
    /// The vault's row-authentication key: HMAC-SHA256(data key, label), so it is never the data
    /// key itself and a MAC can never be confused with a seal.
    pub fn row_key(&self) -> RowKey {
        let base = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &self.0);
        let derived = ring::hmac::sign(&base, b"clavitor/row-mac/v1");
        RowKey(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, derived.as_ref()))
    }
}

/// Authenticates access-granting rows; see the module docs.
#[derive(Clone)]
pub struct RowKey(ring::hmac::Key);

impl RowKey {
    /// The MAC of a row: `kind` (what table), the vault id, then the row's granting columns as
    /// text. Each part is length-prefixed, so no two different rows encode to the same bytes.
    pub fn mac(&self, kind: &str, vault_id: &str, parts: &[&str]) -> Vec<u8> {
        ring::hmac::sign(&self.0, &row_encoding(kind, vault_id, parts)).as_ref().to_vec()
    }

    /// Constant-time check of a stored MAC; a missing MAC never verifies.
    pub fn verify(&self, kind: &str, vault_id: &str, parts: &[&str], mac: Option<&[u8]>) -> bool {
        mac.is_some_and(|mac| ring::hmac::verify(&self.0, &row_encoding(kind, vault_id, parts), mac).is_ok())
    }
}

fn row_encoding(kind: &str, vault_id: &str, parts: &[&str]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + parts.iter().map(|p| p.len() + 8).sum::<usize>());
    for part in [kind, vault_id].iter().chain(parts.iter()) {
        out.extend_from_slice(&(part.len() as u64).to_be_bytes());
        out.extend_from_slice(part.as_bytes());
    }
    out
}

impl std::fmt::Debug for RowKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RowKey(..)")
    }
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(..)")
    }
}

fn entry_aad(vault_id: &str, entry_uuid: &str) -> Vec<u8> {
    // The NUL separators keep ("ab","c") and ("a","bc") from producing the same bytes.
    [b"clavitor/entry/v1\0".as_slice(), vault_id.as_bytes(), b"\0", entry_uuid.as_bytes()].concat()
}

fn seal_raw(key: &[u8; KEY_LEN], plain: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let cipher = XChaCha20Poly1305::new(key.into());
    let mut nonce = [0u8; NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let body =
        cipher.encrypt(XNonce::from_slice(&nonce), Payload { msg: plain, aad }).map_err(|_| CryptoError::Seal)?;
    let mut out = Vec::with_capacity(NONCE_LEN + body.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&body);
    Ok(out)
}

fn open_raw(key: &[u8; KEY_LEN], sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return Err(CryptoError::Open);
    }
    let (nonce, body) = sealed.split_at(NONCE_LEN);
    XChaCha20Poly1305::new(key.into())
        .decrypt(XNonce::from_slice(nonce), Payload { msg: body, aad })
        .map_err(|_| CryptoError::Open)
}

/// A per-process key for values the server caches in memory (see the module docs).
pub struct MemoryKey {
    key: ring::aead::LessSafeKey,
    /// Nonces are a counter under a key no other process has: unique without randomness.
    next_nonce: std::sync::atomic::AtomicU64,
}

const MEMORY_NONCE_LEN: usize = ring::aead::NONCE_LEN;

impl MemoryKey {
    pub fn generate() -> Result<Self, CryptoError> {
        let mut raw = zeroize::Zeroizing::new([0u8; KEY_LEN]);
        rand::rngs::OsRng.fill_bytes(raw.as_mut());
        let unbound =
            ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, raw.as_ref()).map_err(|_| CryptoError::Seal)?;
        Ok(Self { key: ring::aead::LessSafeKey::new(unbound), next_nonce: std::sync::atomic::AtomicU64::new(1) })
    }

    /// Returns nonce ‖ ciphertext ‖ tag.
    pub fn seal(&self, plain: &[u8]) -> Result<Box<[u8]>, CryptoError> {
        let counter = self.next_nonce.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut nonce = [0u8; MEMORY_NONCE_LEN];
        nonce[4..].copy_from_slice(&counter.to_le_bytes());
        let mut out = Vec::with_capacity(MEMORY_NONCE_LEN + plain.len() + TAG_LEN);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plain);
        let tag = self
            .key
            .seal_in_place_separate_tag(
                ring::aead::Nonce::assume_unique_for_key(nonce),
                ring::aead::Aad::empty(),
                &mut out[MEMORY_NONCE_LEN..],
            )
            .map_err(|_| CryptoError::Seal)?;
        out.extend_from_slice(tag.as_ref());
        Ok(out.into_boxed_slice())
    }

    /// The plaintext of something [`MemoryKey::seal`] returned, in a buffer of its own.
    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if sealed.len() < MEMORY_NONCE_LEN + TAG_LEN {
            return Err(CryptoError::Open);
        }
        let (nonce, body) = sealed.split_at(MEMORY_NONCE_LEN);
        let nonce = ring::aead::Nonce::try_assume_unique_for_key(nonce).map_err(|_| CryptoError::Open)?;
        let mut buf = body.to_vec();
        let plain_len =
            self.key.open_in_place(nonce, ring::aead::Aad::empty(), &mut buf).map_err(|_| CryptoError::Open)?.len();
        buf.truncate(plain_len);
        Ok(buf)
    }
}

impl std::fmt::Debug for MemoryKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryKey(..)")
    }
}

/// SHA-256 as lowercase hex: how bearer tokens are stored and looked up.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    // By hand into a String of the right size: `hex::encode` grows its String a char at a time,
    // which showed in profiles of the read path (every request hashes its token).
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = [0u8; 64];
    for (pair, byte) in text.chunks_exact_mut(2).zip(sha2::Sha256::digest(bytes)) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0x0f)];
    }
    // Always ASCII; the check is one pass over 64 bytes, where pushing chars checked each one.
    std::str::from_utf8(&text).map(str::to_owned).unwrap_or_default()
}

/// Random bytes from the OS generator.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    rand::rngs::OsRng.fill_bytes(&mut out);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn sha256_hex_is_lowercase_hex_of_the_digest() {
        assert_eq!(super::sha256_hex(b""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(super::sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        for n in 0..=255u8 {
            let input = [n; 3];
            assert_eq!(super::sha256_hex(&input), hex::encode(<sha2::Sha256 as sha2::Digest>::digest(input)));
        }
    }

    use super::*;

    #[test]
    fn entry_seal_is_bound_to_vault_and_entry() {
        let key = DataKey::generate();
        let sealed = key.seal_entry("v1", "e1", b"secret").unwrap();
        assert_eq!(key.open_entry("v1", "e1", &sealed).unwrap(), b"secret");
        assert!(key.open_entry("v2", "e1", &sealed).is_err());
        assert!(key.open_entry("v1", "e2", &sealed).is_err());
        assert!(DataKey::generate().open_entry("v1", "e1", &sealed).is_err());
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(key.open_entry("v1", "e1", &tampered).is_err());
        assert!(key.open_entry("v1", "e1", &sealed[..10]).is_err());
    }

    #[test]
    fn row_macs_bind_every_part() {
        let key = DataKey::generate();
        let rk = key.row_key();
        let mac = rk.mac("agent", "v", &["1", "hash", "0002", "0", "1"]);
        assert!(rk.verify("agent", "v", &["1", "hash", "0002", "0", "1"], Some(&mac)));
        assert!(!rk.verify("agent", "v", &["1", "hash", "0002", "1", "1"], Some(&mac)), "a flipped flag");
        assert!(!rk.verify("agent", "w", &["1", "hash", "0002", "0", "1"], Some(&mac)), "another vault");
        assert!(!rk.verify("entry", "v", &["1", "hash", "0002", "0", "1"], Some(&mac)), "another table");
        assert!(!rk.verify("agent", "v", &["1", "hash0", "002", "0", "1"], Some(&mac)), "shifted boundary");
        assert!(!rk.verify("agent", "v", &["1", "hash", "0002", "0", "1"], None));
        assert!(!rk.verify("agent", "v", &["1", "hash", "0002", "0", "1"], Some(&mac[..31])));
        assert!(!DataKey::generate().row_key().verify("agent", "v", &["1", "hash", "0002", "0", "1"], Some(&mac)));
        assert_ne!(rk.mac("agent", "v", &["a"]), rk.mac("agent", "v", &["a", ""]));
    }

    #[test]
    fn memory_seal_round_trips_and_detects_tampering() {
        let key = MemoryKey::generate().unwrap();
        let a = key.seal(b"the view").unwrap();
        let b = key.seal(b"the view").unwrap();
        assert_ne!(a, b, "every seal takes a fresh nonce");
        assert!(!a.windows(8).any(|w| w == b"the view"), "sealed bytes hold no plaintext");
        assert_eq!(key.open(&a).unwrap(), b"the view");
        assert_eq!(key.open(&key.seal(b"").unwrap()).unwrap(), b"");
        let mut tampered = a.to_vec();
        tampered[14] ^= 1;
        assert!(key.open(&tampered).is_err());
        assert!(key.open(&a[..20]).is_err());
        assert!(MemoryKey::generate().unwrap().open(&a).is_err(), "another process's key does not open it");
    }

    #[test]
    fn master_key_file_rules() {
        let dir = std::env::temp_dir().join(format!("clavitor-mk-{}", hex::encode(random_bytes::<8>())));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("master.key");
        assert!(matches!(MasterKey::load(&path), Err(CryptoError::MasterKeyMissing { .. })));
        let mk = MasterKey::create(&path).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(matches!(MasterKey::create(&path), Err(CryptoError::MasterKeyExists { .. })));
        let dk = DataKey::generate();
        let wrapped = mk.wrap(&dk, "vault-a").unwrap();
        let loaded = MasterKey::load(&path).unwrap();
        let back = loaded.unwrap_key(&wrapped, "vault-a").unwrap();
        let sealed = dk.seal_entry("a", "b", b"x").unwrap();
        assert_eq!(back.open_entry("a", "b", &sealed).unwrap(), b"x");
        assert!(loaded.unwrap_key(&wrapped, "vault-b").is_err());
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(MasterKey::load(&path), Err(CryptoError::MasterKeyPermissions { .. })));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(&path, b"short").unwrap();
        assert!(matches!(MasterKey::load(&path), Err(CryptoError::MasterKeyLength { .. })));
        fs::remove_dir_all(&dir).unwrap();
    }
}
