//! The node's proxy CA and the leaf certificates it mints for CONNECT hosts.
//!
//! The CA is created once per data dir: `proxy-ca.pem` (the certificate; public, handed out by
//! `GET /api/proxy/ca.pem` and `clavitor proxy ca`) and `proxy-ca.key` (its PKCS#8 key sealed
//! under the master key, mode 0600), like every other key at rest. Leaves are minted on first
//! use for exactly the CONNECT host, valid for [`LEAF_VALIDITY`], all sharing one key pair made
//! at start (never written anywhere), and cached as ready server configs, at most
//! [`MAX_CACHED`] hosts. Must never: write the CA key unsealed, or mint a leaf for a name other
//! than the one asked for.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use zeroize::Zeroizing;

use crate::crypto::MasterKey;
use crate::vault::DataDir;

/// A leaf is good for this long; it is re-minted after a day in the cache.
pub const LEAF_VALIDITY: Duration = Duration::from_secs(7 * 24 * 3600);
const LEAF_REFRESH: Duration = Duration::from_secs(24 * 3600);
/// Hosts whose server config is kept. Past it, the cache is emptied (the next tunnels mint again).
pub const MAX_CACHED: usize = 1024;
/// The CA is valid for ten years from its creation.
const CA_YEARS: i64 = 10;
const SEAL_CONTEXT: &str = "proxy-ca-key";

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("proxy CA file {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("proxy CA: {0}")]
    Cert(String),
}

fn cert_err(e: impl std::fmt::Display) -> CaError {
    CaError::Cert(e.to_string())
}

pub fn cert_path(dir: &DataDir) -> PathBuf {
    dir.root.join("proxy-ca.pem")
}

fn key_path(dir: &DataDir) -> PathBuf {
    dir.root.join("proxy-ca.key")
}

/// The CA's distinguished name is a function of its key, so the issuer the leaves name is the
/// subject of the stored certificate without parsing it back.
fn ca_params(key: &KeyPair) -> Result<CertificateParams, CaError> {
    let id = crate::crypto::sha256_hex(key.public_key_raw());
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(cert_err)?;
    params.distinguished_name.push(DnType::CommonName, format!("Clavitor proxy CA {}", &id[..16]));
    params.distinguished_name.push(DnType::OrganizationName, "Clavitor");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    Ok(params)
}

/// Reads the CA, creating it first if the data dir has none. Returns the CA and whether it was
/// created now.
pub fn load_or_create(dir: &DataDir, master: &MasterKey) -> Result<(Ca, bool), CaError> {
    let (cert_file, key_file) = (cert_path(dir), key_path(dir));
    let io = |path: &Path, e: std::io::Error| CaError::File { path: path.to_owned(), reason: e.to_string() };
    if key_file.exists() {
        let sealed = std::fs::read(&key_file).map_err(|e| io(&key_file, e))?;
        let der = master.open_secret(&sealed, SEAL_CONTEXT).map_err(|_| CaError::File {
            path: key_file.clone(),
            reason: "does not open with this master key".into(),
        })?;
        let key = KeyPair::try_from(der.as_slice()).map_err(cert_err)?;
        let pem = std::fs::read_to_string(&cert_file).map_err(|e| io(&cert_file, e))?;
        return Ok((Ca::new(key, pem)?, false));
    }
    let key = KeyPair::generate().map_err(cert_err)?;
    let mut params = ca_params(&key)?;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(365 * CA_YEARS);
    let pem = params.self_signed(&key).map_err(cert_err)?.pem();
    let sealed = master.seal_secret(&Zeroizing::new(key.serialize_der()), SEAL_CONTEXT).map_err(cert_err)?;
    // The certificate first, then the key with create_new: a concurrent creator (a second
    // process) fails here instead of leaving a key that does not match the certificate.
    // Public, but 0600 like every file in the data dir: it is handed out by the API and the CLI.
    let tmp = dir.root.join(".proxy-ca.pem.tmp");
    let _ = std::fs::remove_file(&tmp);
    write_new(&tmp, pem.as_bytes()).map_err(|e| io(&cert_file, e))?;
    write_new(&key_file, &sealed).map_err(|e| io(&key_file, e))?;
    std::fs::rename(&tmp, &cert_file).map_err(|e| io(&cert_file, e))?;
    Ok((Ca::new(key, pem)?, true))
}

fn write_new(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// The loaded CA: signs leaves, caches their server configs.
pub struct Ca {
    key: KeyPair,
    /// The issuer as rcgen needs it (same subject and key as the stored certificate).
    issuer: rcgen::Certificate,
    pem: String,
    leaf_key: KeyPair,
    leaves: Mutex<HashMap<String, (Arc<rustls::ServerConfig>, Instant)>>,
}

impl Ca {
    fn new(key: KeyPair, pem: String) -> Result<Self, CaError> {
        let issuer = ca_params(&key)?.self_signed(&key).map_err(cert_err)?;
        let leaf_key = KeyPair::generate().map_err(cert_err)?;
        Ok(Self { key, issuer, pem, leaf_key, leaves: Mutex::new(HashMap::new()) })
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// A server config presenting a leaf for `host` (a DNS name or IP address the caller has
    /// validated), from the cache or minted now.
    pub fn server_config(&self, host: &str) -> Result<Arc<rustls::ServerConfig>, CaError> {
        {
            let cache = self.leaves.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((config, made)) = cache.get(host)
                && made.elapsed() < LEAF_REFRESH
            {
                return Ok(config.clone());
            }
        }
        let config = Arc::new(self.mint(host)?);
        let mut cache = self.leaves.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(host.to_owned(), (config.clone(), Instant::now()));
        Ok(config)
    }

    fn mint(&self, host: &str) -> Result<rustls::ServerConfig, CaError> {
        let mut params = CertificateParams::new(vec![host.to_owned()]).map_err(cert_err)?;
        params.distinguished_name.push(DnType::CommonName, host);
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::seconds(LEAF_VALIDITY.as_secs() as i64);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let leaf = params.signed_by(&self.leaf_key, &self.issuer, &self.key).map_err(cert_err)?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.leaf_key.serialize_der()));
        let mut config = rustls::ServerConfig::builder_with_provider(crate::node::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(cert_err)?
            .with_no_client_auth()
            .with_single_cert(vec![CertificateDer::from(leaf.der().to_vec())], key)
            .map_err(cert_err)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_is_created_once_sealed_and_signs_leaves_for_the_asked_host() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::new(tmp.path().to_owned(), None);
        let master = MasterKey::create(&tmp.path().join("master.key")).unwrap();
        let (ca, created) = load_or_create(&dir, &master).unwrap();
        assert!(created);
        let sealed = std::fs::read(key_path(&dir)).unwrap();
        let der = ca.key.serialize_der();
        assert!(!sealed.windows(32).any(|w| der.windows(32).any(|d| d == w)), "the key is sealed");
        let (again, created) = load_or_create(&dir, &master).unwrap();
        assert!(!created);
        assert_eq!(again.pem(), ca.pem());
        assert_eq!(again.issuer.params().distinguished_name, ca.issuer.params().distinguished_name);
        // Another master key cannot open it.
        let other = MasterKey::create(&tmp.path().join("other.key")).unwrap();
        assert!(load_or_create(&dir, &other).is_err());
        let a = ca.server_config("api.example.test").unwrap();
        assert!(Arc::ptr_eq(&a, &ca.server_config("api.example.test").unwrap()), "cached");
        assert!(!Arc::ptr_eq(&a, &ca.server_config("evil.example.test").unwrap()));
    }
}
