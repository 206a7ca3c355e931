//! The server's configuration, built once from flags/env and validated before anything starts.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::vault::DataDir;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "refusing to serve plain HTTP on {0}, which is not a loopback address: bearer tokens would cross the network \
         in the clear. Listen on 127.0.0.1, or pass --allow-plain-http if a TLS terminator you trust sits in front"
    )]
    PlainHttpOnPublic(SocketAddr),
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
}
