//! The POP's replication file (`--replication-config FILE`, TOML): its role, its peers and their
//! Ed25519 public keys, its own signing key, and the limits of the review (issue 14, item 1).
//!
//! The role comes from this file only; no environment variable can change it (review item 3).
//! Errors name the problem but never a path or a key (review item 9): the details go to the
//! log only. Never holds another POP's private key.

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::VerifyingKey;
use ring::signature::Ed25519KeyPair;
use serde::Deserialize;

use crate::crypto::key_transport::{TransportPublic, TransportSecret};

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410); the 32 key bytes follow.
const SPKI_ED25519_PREFIX: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];

// Split so the repository's secret scan (tests/nix/run.sh) does not take the labels for a key.
const PEM_BEGIN: &str = concat!("-----BEGIN ", "PRIVATE KEY-----");
const PEM_END: &str = concat!("-----END ", "PRIVATE KEY-----");

/// The largest body a replication request may have: the server's own body limit.
pub const MAX_BODY_CEILING: usize = crate::api::MAX_BODY;

/// Why the replication file was refused. Messages never carry a path or key material.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("replication configuration error: the file cannot be read (details in the log)")]
    Unreadable,
    #[error("replication configuration error: not valid TOML or an unknown/missing setting (details in the log)")]
    Syntax,
    #[error("replication configuration error: {0}")]
    Invalid(String),
    #[error("replication configuration error: the signing key file cannot be read (details in the log)")]
    KeyUnreadable,
    #[error("replication configuration error: the signing key file must be readable by its owner only (mode 0600)")]
    KeyMode,
    #[error("replication configuration error: the signing key is not an Ed25519 PKCS#8 PEM private key")]
    KeyFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Primary,
    Backup,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Backup => "backup",
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeer {
    id: String,
    #[serde(default)]
    url: Option<String>,
    public_key: String,
    /// A backup's HPKE (X25519) public key, 64 hex digits: a vault's data key travels sealed to
    /// it (issue 14 item 2).
    #[serde(default)]
    transport_key: Option<String>,
}

fn d_batch() -> u32 {
    100
}
fn d_retries() -> u32 {
    5
}
fn d_timeout() -> u64 {
    30
}
fn d_age() -> u64 {
    300
}
fn d_rate() -> u32 {
    1
}
fn d_ban_after() -> u32 {
    10
}
fn d_ban_secs() -> u64 {
    3600
}
fn d_body() -> usize {
    MAX_BODY_CEILING
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    pop_id: String,
    role: Role,
    signing_key_file: PathBuf,
    #[serde(default)]
    backups: Vec<RawPeer>,
    #[serde(default)]
    sources: Vec<RawPeer>,
    #[serde(default = "d_batch")]
    batch_size: u32,
    #[serde(default = "d_retries")]
    retries: u32,
    #[serde(default = "d_timeout")]
    request_timeout_s: u64,
    #[serde(default = "d_age")]
    max_request_age_s: u64,
    #[serde(default = "d_rate")]
    rate_limit_per_s: u32,
    #[serde(default = "d_ban_after")]
    ban_after_failures: u32,
    #[serde(default = "d_ban_secs")]
    ban_duration_s: u64,
    #[serde(default = "d_body")]
    max_body_bytes: usize,
    #[serde(default)]
    ca_file: Option<PathBuf>,
    #[serde(default = "d_timeout")]
    poll_interval_s: u64,
    /// A backup's HPKE secret: a 0600 file holding 64 hex digits (`openssl rand -hex 32`).
    #[serde(default)]
    transport_key_file: Option<PathBuf>,
}

/// Another POP: a primary's backup (with its URL) or a backup's authorised source.
#[derive(Debug, Clone)]
pub struct Peer {
    pub id: String,
    pub url: Option<String>,
    pub key: VerifyingKey,
    /// The backup's HPKE public key (a primary's backups only).
    pub transport_key: Option<TransportPublic>,
}

/// The validated replication file.
pub struct Config {
    pub pop_id: String,
    pub role: Role,
    pub signing_key: Ed25519KeyPair,
    /// A primary's backups, in failover order (a backup's list is ignored: no cascade).
    pub backups: Vec<Peer>,
    /// A backup's authorised source POPs.
    pub sources: Vec<Peer>,
    pub batch_size: u32,
    pub retries: u32,
    pub request_timeout_s: u64,
    pub max_request_age_s: u64,
    /// Requests per second per source POP; 0 lifts the limit.
    pub rate_limit_per_s: u32,
    pub ban_after_failures: u32,
    pub ban_duration_s: u64,
    pub max_body_bytes: usize,
    pub ca_file: Option<PathBuf>,
    /// The private CA's certificates (PEM), read at start.
    pub ca_pem: Option<Vec<u8>>,
    /// Seconds between a primary's sends when nothing woke it (the reference's 30 s backstop).
    pub poll_interval_s: u64,
    /// A backup's HPKE secret, which opens the data keys its sources send it.
    pub transport_secret: Option<TransportSecret>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config").field("pop_id", &self.pop_id).field("role", &self.role).finish_non_exhaustive()
    }
}

/// POP ids go into audit rows and logs, so they are plain: `[A-Za-z0-9._-]{1,64}`.
pub fn valid_pop_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// An Ed25519 public key as `openssl pkey -pubout` prints it: the PEM, or just its base64 line.
pub fn parse_public_key(text: &str) -> Option<VerifyingKey> {
    let b64: String = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with("-----")).collect();
    let der = STANDARD.decode(b64.as_bytes()).ok()?;
    let raw = der.strip_prefix(&SPKI_ED25519_PREFIX[..])?;
    let bytes: [u8; 32] = raw.try_into().ok()?;
    VerifyingKey::from_bytes(&bytes).ok()
}

/// An Ed25519 PKCS#8 PEM private key (`openssl genpkey -algorithm ed25519`, PKCS#8 v1).
///
/// Signing uses ring, not ed25519-dalek: the node binary links no ed25519-dalek signing code
/// (tests/license.rs checks that for the license's sake); dalek only verifies.
pub fn parse_private_key(pem: &str) -> Option<Ed25519KeyPair> {
    let b64: String =
        pem.lines().map(str::trim).skip_while(|l| *l != PEM_BEGIN).skip(1).take_while(|l| *l != PEM_END).collect();
    let der = zeroize::Zeroizing::new(STANDARD.decode(b64.as_bytes()).ok()?);
    Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).ok()
}

fn read_signing_key(path: &Path) -> Result<Ed25519KeyPair, ConfigError> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).map_err(|e| {
        tracing::error!(path = %path.display(), error = %e, "replication signing key unreadable");
        ConfigError::KeyUnreadable
    })?;
    if meta.mode() & 0o077 != 0 {
        tracing::error!(path = %path.display(), mode = format!("{:o}", meta.mode() & 0o777), "replication signing key too open");
        return Err(ConfigError::KeyMode);
    }
    let pem = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
        tracing::error!(path = %path.display(), error = %e, "replication signing key unreadable");
        ConfigError::KeyUnreadable
    })?);
    parse_private_key(&pem).ok_or(ConfigError::KeyFormat)
}

fn read_ca(path: &Path) -> Result<Vec<u8>, ConfigError> {
    let pem = std::fs::read(path).map_err(|e| {
        tracing::error!(path = %path.display(), error = %e, "replication CA file unreadable");
        ConfigError::Invalid("ca_file cannot be read (details in the log)".into())
    })?;
    crate::outbound::vault_client(std::time::Duration::from_secs(1), Some(&pem))
        .map_err(|_| ConfigError::Invalid("ca_file holds no PEM certificate".into()))?;
    Ok(pem)
}

/// The backup's HPKE secret: 64 hex digits in a file only its owner can read.
fn read_transport_secret(path: &Path) -> Result<TransportSecret, ConfigError> {
    use std::os::unix::fs::MetadataExt;
    let unreadable = |e: std::io::Error| {
        tracing::error!(path = %path.display(), error = %e, "replication transport key unreadable");
        ConfigError::Invalid("transport_key_file cannot be read (details in the log)".into())
    };
    let meta = std::fs::metadata(path).map_err(unreadable)?;
    if meta.mode() & 0o077 != 0 {
        return Err(ConfigError::Invalid("transport_key_file must be readable by its owner only (mode 0600)".into()));
    }
    let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(unreadable)?);
    let mut seed = zeroize::Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(text.trim(), seed.as_mut_slice()).map_err(|_| {
        ConfigError::Invalid("transport_key_file must hold 64 hex digits (openssl rand -hex 32)".into())
    })?;
    Ok(TransportSecret::from_seed(&seed))
}

fn peers(raw: Vec<RawPeer>, what: &str, own: &str, need_url: bool) -> Result<Vec<Peer>, ConfigError> {
    let mut out: Vec<Peer> = Vec::with_capacity(raw.len());
    for (i, p) in raw.into_iter().enumerate() {
        if !valid_pop_id(&p.id) {
            return Err(ConfigError::Invalid(format!("{what}[{i}].id must be 1-64 of A-Z a-z 0-9 . _ -")));
        }
        if p.id == own {
            return Err(ConfigError::Invalid(format!("{what}[{i}].id is this POP's own id")));
        }
        if out.iter().any(|o| o.id == p.id) {
            return Err(ConfigError::Invalid(format!("{what}[{i}].id {} is listed twice", p.id)));
        }
        let key = parse_public_key(&p.public_key).ok_or_else(|| {
            ConfigError::Invalid(format!("{what}[{i}].public_key is not an Ed25519 public key (PEM or its base64)"))
        })?;
        let url = match (need_url, p.url) {
            // Verified TLS only (review item 6): a backup is reached over https, never http.
            (true, Some(u)) if u.starts_with("https://") && u.len() > 8 => Some(u.trim_end_matches('/').to_owned()),
            (true, _) => return Err(ConfigError::Invalid(format!("{what}[{i}].url must be an https:// URL"))),
            (false, u) => u,
        };
        let transport_key = match p.transport_key {
            Some(hex) => Some(TransportPublic::from_hex(&hex).ok_or_else(|| {
                ConfigError::Invalid(format!("{what}[{i}].transport_key must be an X25519 public key (64 hex digits)"))
            })?),
            None => None,
        };
        out.push(Peer { id: p.id, url, key, transport_key });
    }
    Ok(out)
}

fn in_range<T: PartialOrd + std::fmt::Display + Copy>(name: &str, v: T, lo: T, hi: T) -> Result<T, ConfigError> {
    if v < lo || v > hi {
        return Err(ConfigError::Invalid(format!("{name} must be between {lo} and {hi}")));
    }
    Ok(v)
}

/// Parses and validates the file's text; `read_key` loads the signing key (tests pass a stub).
pub fn parse(
    text: &str,
    read_key: impl FnOnce(&Path) -> Result<Ed25519KeyPair, ConfigError>,
) -> Result<Config, ConfigError> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| {
        tracing::error!(error = %e, "replication file is not valid");
        ConfigError::Syntax
    })?;
    if !valid_pop_id(&raw.pop_id) {
        return Err(ConfigError::Invalid("pop_id must be 1-64 of A-Z a-z 0-9 . _ -".into()));
    }
    let backups = peers(raw.backups, "backups", &raw.pop_id, true)?;
    let sources = peers(raw.sources, "sources", &raw.pop_id, false)?;
    match raw.role {
        Role::Primary if backups.is_empty() => {
            return Err(ConfigError::Invalid("a primary needs at least one entry in backups".into()));
        }
        Role::Backup if sources.is_empty() => {
            return Err(ConfigError::Invalid("a backup needs at least one authorised POP in sources".into()));
        }
        _ => {}
    }
    let cfg = Config {
        batch_size: in_range("batch_size", raw.batch_size, 1, 10_000)?,
        // The backoff table has five steps: 1, 5, 25, 125, 625 s (review item 11).
        retries: in_range("retries", raw.retries, 1, 5)?,
        request_timeout_s: in_range("request_timeout_s", raw.request_timeout_s, 1, 600)?,
        max_request_age_s: in_range("max_request_age_s", raw.max_request_age_s, 10, 3600)?,
        rate_limit_per_s: in_range("rate_limit_per_s", raw.rate_limit_per_s, 0, 10_000)?,
        ban_after_failures: in_range("ban_after_failures", raw.ban_after_failures, 1, 1_000_000)?,
        ban_duration_s: in_range("ban_duration_s", raw.ban_duration_s, 1, 30 * 86_400)?,
        max_body_bytes: in_range("max_body_bytes", raw.max_body_bytes, 1024, MAX_BODY_CEILING)?,
        poll_interval_s: in_range("poll_interval_s", raw.poll_interval_s, 1, 3600)?,
        ca_pem: match &raw.ca_file {
            Some(path) => Some(read_ca(path)?),
            None => None,
        },
        signing_key: read_key(&raw.signing_key_file)?,
        transport_secret: match &raw.transport_key_file {
            Some(path) => Some(read_transport_secret(path)?),
            None => None,
        },
        pop_id: raw.pop_id,
        role: raw.role,
        backups,
        sources,
        ca_file: raw.ca_file,
    };
    Ok(cfg)
}

/// Loads and validates the file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        tracing::error!(path = %path.display(), error = %e, "replication file unreadable");
        ConfigError::Unreadable
    })?;
    parse(&text, read_signing_key)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PUB: &str = "MCowBQYDK2VwAyEAIBry8IfjWP45gFufBBDc6EX86zQ2vg+WjkSnLnXDtpk=";

    fn stub(_: &Path) -> Result<Ed25519KeyPair, ConfigError> {
        Ed25519KeyPair::from_seed_unchecked(&[7; 32]).map_err(|_| ConfigError::KeyFormat)
    }

    fn backup_file(extra: &str) -> String {
        format!(
            "pop_id = \"zurich-01\"\nrole = \"backup\"\nsigning_key_file = \"/secret/dir/k.pem\"\n{extra}\n[[sources]]\nid = \"calgary-01\"\npublic_key = \"{PUB}\"\n"
        )
    }

    #[test]
    fn defaults_are_the_reviews() {
        let c = parse(&backup_file(""), stub).expect("valid");
        assert_eq!(c.role, Role::Backup);
        assert_eq!((c.batch_size, c.retries, c.request_timeout_s, c.max_request_age_s), (100, 5, 30, 300));
        assert_eq!((c.rate_limit_per_s, c.ban_after_failures, c.ban_duration_s), (1, 10, 3600));
        assert_eq!(c.sources[0].id, "calgary-01");
    }

    #[test]
    fn refusals_name_the_problem_not_the_path() {
        for (text, want) in [
            (backup_file("batch_size = 0"), "batch_size"),
            (backup_file("retries = 6"), "retries"),
            (backup_file("max_body_bytes = 999999999"), "max_body_bytes"),
            (backup_file("").replace(PUB, "AAAA"), "public_key"),
            (backup_file("").replace("calgary-01", "zurich-01"), "own id"),
            (backup_file("").replace("calgary-01", "bad id\\n"), "sources[0].id"),
            (backup_file("role_typo = 1"), "TOML"),
            (
                "pop_id = \"a\"\nrole = \"primary\"\nsigning_key_file = \"/secret/dir/k.pem\"\n[[backups]]\nid = \"b\"\nurl = \"http://b\"\npublic_key = \"".to_owned() + PUB + "\"\n",
                "https://",
            ),
            ("pop_id = \"a\"\nrole = \"primary\"\nsigning_key_file = \"/secret/dir/k.pem\"\n".into(), "at least one"),
        ] {
            let e = parse(&text, stub).expect_err(&text).to_string();
            assert!(e.contains(want), "{e} should name {want}");
            assert!(!e.contains("/secret/dir"), "{e} names a path");
        }
    }

    #[test]
    fn transport_keys_are_read_checked_and_refused_without_naming_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("transport.key");
        let seed = [5u8; 32];
        std::fs::write(&file, format!("{}\n", hex::encode(seed))).expect("write");
        let set_mode = |m: u32| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(m)).expect("chmod");
        };
        set_mode(0o600);
        let want = TransportSecret::from_seed(&seed).public().to_hex();
        let line = format!("transport_key_file = \"{}\"", file.display());
        let c = parse(&backup_file(&line), stub).expect("valid");
        assert_eq!(c.transport_secret.expect("secret").public().to_hex(), want);

        set_mode(0o644);
        let e = parse(&backup_file(&line), stub).expect_err("too open").to_string();
        assert!(e.contains("0600") && !e.contains(&dir.path().display().to_string()), "{e}");
        set_mode(0o600);
        std::fs::write(&file, "not hex").expect("write");
        let e = parse(&backup_file(&line), stub).expect_err("not hex").to_string();
        assert!(e.contains("64 hex digits") && !e.contains(&dir.path().display().to_string()), "{e}");

        let primary = |key: &str| {
            format!(
                "pop_id = \"a\"\nrole = \"primary\"\nsigning_key_file = \"/k\"\n[[backups]]\nid = \"b\"\nurl = \"https://b\"\npublic_key = \"{PUB}\"\ntransport_key = \"{key}\"\n"
            )
        };
        let c = parse(&primary(&want), stub).expect("valid primary");
        assert_eq!(c.backups[0].transport_key.as_ref().map(TransportPublic::to_hex), Some(want));
        let e = parse(&primary("abcd"), stub).expect_err("short key").to_string();
        assert!(e.contains("backups[0].transport_key"), "{e}");
    }

    #[test]
    fn pkcs8_seed_round_trips() {
        use ring::signature::KeyPair;
        // openssl's PKCS#8 v1 layout: this prefix, then the 32-byte seed.
        let mut der =
            vec![0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
        der.extend_from_slice(&[9; 32]);
        let pem = format!("{PEM_BEGIN}\n{}\n{PEM_END}\n", STANDARD.encode(der));
        let want = Ed25519KeyPair::from_seed_unchecked(&[9; 32]).expect("seed");
        let got = parse_private_key(&pem).expect("parses");
        assert_eq!(got.public_key().as_ref(), want.public_key().as_ref());
        assert!(parse_private_key(&format!("{PEM_BEGIN}\nAAAA\n{PEM_END}")).is_none());
    }
}
