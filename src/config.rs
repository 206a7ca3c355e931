//! The server's configuration, built once from flags/env and validated before anything starts.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::auth::webauthn::{RelyingParty, WebauthnError};
use crate::vault::DataDir;
use crate::vault::gate::{MAX_CHALLENGE_TTL, MIN_CHALLENGE_TTL};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "refusing to serve plain HTTP on {0}, which is not a loopback address: bearer tokens would cross the network \
         in the clear. Listen on 127.0.0.1, or pass --allow-plain-http if a TLS terminator you trust sits in front"
    )]
    PlainHttpOnPublic(SocketAddr),
    #[error("{0}")]
    RelyingParty(#[from] WebauthnError),
    #[error("--challenge-ttl-secs must be {MIN_CHALLENGE_TTL} to {MAX_CHALLENGE_TTL}, not {0}")]
    ChallengeTtl(u64),
    #[error("{0}")]
    Listener(String),
}

/// The listener's limits from `--max-connections`, `--max-connections-per-ip`,
/// `--body-timeout-secs` and `--body-min-rate`, checked.
pub fn listener_limits(
    max_connections: usize,
    max_connections_per_ip: usize,
    body_timeout_secs: u64,
    body_min_rate: u64,
) -> Result<crate::api::serve::Limits, ConfigError> {
    let bad = |m: String| Err(ConfigError::Listener(m));
    if !(1..=1_000_000).contains(&max_connections) {
        return bad(format!("--max-connections must be 1 to 1000000, not {max_connections}"));
    }
    if !(1..=max_connections).contains(&max_connections_per_ip) {
        return bad(format!(
            "--max-connections-per-ip must be 1 to --max-connections ({max_connections}), not {max_connections_per_ip}"
        ));
    }
    if !(1..=300).contains(&body_timeout_secs) {
        return bad(format!("--body-timeout-secs must be 1 to 300, not {body_timeout_secs}"));
    }
    if body_min_rate > 1024 * 1024 {
        return bad(format!("--body-min-rate must be 0 to 1048576 bytes per second, not {body_min_rate}"));
    }
    Ok(crate::api::serve::Limits {
        max_connections,
        max_connections_per_ip,
        body_timeout: Duration::from_secs(body_timeout_secs),
        body_min_rate,
        ..Default::default()
    })
}

/// The WebAuthn side of the configuration: who we are to authenticators, and for how long a
/// challenge holds.
#[derive(Debug, Clone)]
pub struct WebauthnConfig {
    pub rp: RelyingParty,
    pub challenge_ttl: Duration,
}

impl WebauthnConfig {
    pub fn new(rp_id: &str, origin: &str, challenge_ttl_secs: u64) -> Result<Self, ConfigError> {
        if !(MIN_CHALLENGE_TTL..=MAX_CHALLENGE_TTL).contains(&challenge_ttl_secs) {
            return Err(ConfigError::ChallengeTtl(challenge_ttl_secs));
        }
        Ok(Self { rp: RelyingParty::new(rp_id, origin)?, challenge_ttl: Duration::from_secs(challenge_ttl_secs) })
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: DataDir,
    pub listen: SocketAddr,
}

impl Config {
    pub fn new(
        data_dir: PathBuf,
        master_key_file: Option<PathBuf>,
        listen: SocketAddr,
        allow_plain_http: bool,
    ) -> Result<Self, ConfigError> {
        if !listen.ip().is_loopback() && !allow_plain_http {
            return Err(ConfigError::PlainHttpOnPublic(listen));
        }
        Ok(Self { data_dir: DataDir::new(data_dir, master_key_file), listen })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_on_loopback_unless_allowed() {
        let public: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert!(Config::new("d".into(), None, public, false).is_err());
        assert!(Config::new("d".into(), None, public, true).is_ok());
        assert!(Config::new("d".into(), None, "127.0.0.1:0".parse().unwrap(), false).is_ok());
        assert!(Config::new("d".into(), None, "[::1]:80".parse().unwrap(), false).is_ok());
    }

    #[test]
    fn listener_limits_are_checked() {
        assert!(listener_limits(1024, 64, 30, 1024).is_ok());
        assert!(listener_limits(0, 1, 30, 1024).is_err());
        assert!(listener_limits(10, 11, 30, 1024).is_err());
        assert!(listener_limits(10, 0, 30, 1024).is_err());
        assert!(listener_limits(10, 5, 0, 1024).is_err());
        assert!(listener_limits(10, 5, 30, 0).is_ok());
    }

    #[test]
    fn webauthn_settings_are_checked() {
        assert!(WebauthnConfig::new("localhost", "http://localhost:8080", 60).is_ok());
        assert!(WebauthnConfig::new("example.com", "http://localhost:8080", 60).is_err());
        assert!(WebauthnConfig::new("localhost", "http://localhost:8080", 0).is_err());
        assert!(WebauthnConfig::new("localhost", "http://localhost:8080", 301).is_err());
    }
}
