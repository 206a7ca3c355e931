//! WireGuard through wireguard-control (kernel or userspace backend, no `wg` binary needed):
//! key generation, public keys, and interface status for `clavitor wg` and the telemetry's
//! `wg_handshake_age_s`.
//!
//! Private keys are written 0600 and never printed or logged.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::SystemTime;

use serde::Serialize;
use wireguard_control::{Backend, Device, InterfaceName, Key};
use zeroize::Zeroizing;

use super::NodeError;

/// Makes a private key, writes it (base64, one line) to a new file `out` with mode 0600, and
/// returns the public key. An existing file is never overwritten.
pub fn keygen(out: &Path) -> Result<String, NodeError> {
    let private = Key::generate_private();
    let text = Zeroizing::new(format!("{}\n", private.to_base64()));
    let public = private.get_public().to_base64();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .map_err(|e| NodeError::Write { path: out.to_owned(), reason: e.to_string() })?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| NodeError::Write { path: out.to_owned(), reason: e.to_string() })?;
    Ok(public)
}

/// The public key of a base64 private key (surrounding whitespace ignored).
pub fn public_of(private_b64: &str) -> Result<String, NodeError> {
    let key = Key::from_base64(private_b64.trim()).map_err(|_| NodeError::WgKey)?;
    Ok(key.get_public().to_base64())
}

/// An interface to read, on a backend.
#[derive(Debug, Clone)]
pub struct WgTarget {
    pub interface: String,
    pub userspace: bool,
}

/// One peer as `clavitor wg status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PeerStatus {
    pub public_key: String,
    pub endpoint: Option<String>,
    pub allowed_ips: Vec<String>,
    /// Seconds since the latest handshake; None if there has been none.
    pub latest_handshake_age_s: Option<u64>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub persistent_keepalive_s: Option<u16>,
}

#[derive(Debug, Clone, Serialize)]
pub struct InterfaceStatus {
    pub interface: String,
    pub backend: &'static str,
    pub public_key: Option<String>,
    pub listen_port: Option<u16>,
    pub peers: Vec<PeerStatus>,
}

impl WgTarget {
    fn backend(&self) -> Backend {
        if self.userspace { Backend::Userspace } else { Backend::default() }
    }

    pub fn status(&self) -> Result<InterfaceStatus, NodeError> {
        let err = |reason: String| NodeError::WgInterface { name: self.interface.clone(), reason };
        let name: InterfaceName = self.interface.parse().map_err(|e| err(format!("{e}")))?;
        let device = Device::get(&name, self.backend()).map_err(|e| {
            let hint = match (e.kind(), self.userspace) {
                (std::io::ErrorKind::NotFound, false) => " (no such kernel interface; --userspace for wireguard-go)",
                (std::io::ErrorKind::NotFound, true) => " (no wireguard-go socket in /run/wireguard)",
                (std::io::ErrorKind::PermissionDenied, _) => " (reading WireGuard needs CAP_NET_ADMIN or root)",
                _ => "",
            };
            err(format!("{e}{hint}"))
        })?;
        let now = SystemTime::now();
        let peers = device
            .peers
            .iter()
            .map(|p| PeerStatus {
                public_key: p.config.public_key.to_base64(),
                endpoint: p.config.endpoint.map(|e| e.to_string()),
                allowed_ips: p.config.allowed_ips.iter().map(|a| format!("{}/{}", a.address, a.cidr)).collect(),
                latest_handshake_age_s: p
                    .stats
                    .last_handshake_time
                    .map(|t| now.duration_since(t).map(|d| d.as_secs()).unwrap_or(0)),
                rx_bytes: p.stats.rx_bytes,
                tx_bytes: p.stats.tx_bytes,
                persistent_keepalive_s: p.config.persistent_keepalive_interval,
            })
            .collect();
        Ok(InterfaceStatus {
            interface: self.interface.clone(),
            backend: if self.userspace { "userspace" } else { "kernel" },
            public_key: device.public_key.map(|k| k.to_base64()),
            listen_port: device.listen_port,
            peers,
        })
    }

    /// Age of the most recent handshake with any peer (a spoke has one: the hub). None when
    /// the interface cannot be read or no handshake has happened.
    pub fn handshake_age_secs(&self) -> Option<u64> {
        self.status().ok()?.peers.iter().filter_map(|p| p.latest_handshake_age_s).min()
    }
}

/// `wg show`-like text.
pub fn render_text(s: &InterfaceStatus) -> String {
    let mut out = format!("interface: {} ({})\n", s.interface, s.backend);
    if let Some(k) = &s.public_key {
        out.push_str(&format!("  public key: {k}\n"));
    }
    if let Some(p) = s.listen_port {
        out.push_str(&format!("  listening port: {p}\n"));
    }
    for p in &s.peers {
        out.push_str(&format!("\npeer: {}\n", p.public_key));
        if let Some(e) = &p.endpoint {
            out.push_str(&format!("  endpoint: {e}\n"));
        }
        out.push_str(&format!(
            "  allowed ips: {}\n",
            if p.allowed_ips.is_empty() { "(none)".into() } else { p.allowed_ips.join(", ") }
        ));
        match p.latest_handshake_age_s {
            Some(age) => out.push_str(&format!("  latest handshake: {age} seconds ago\n")),
            None => out.push_str("  latest handshake: (none)\n"),
        }
        out.push_str(&format!("  transfer: {} B received, {} B sent\n", p.rx_bytes, p.tx_bytes));
        if let Some(k) = p.persistent_keepalive_s {
            out.push_str(&format!("  persistent keepalive: every {k} seconds\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn keygen_writes_0600_and_pubkey_matches() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("wg.key");
        let public = keygen(&out).unwrap();
        let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let private = std::fs::read_to_string(&out).unwrap();
        assert_eq!(private.trim().len(), 44);
        assert_eq!(public_of(&private).unwrap(), public);
        assert!(keygen(&out).is_err(), "never overwrites a key");
        assert!(matches!(public_of("not a key"), Err(NodeError::WgKey)));
    }

    #[test]
    fn a_missing_interface_is_an_error_not_a_panic() {
        let t = WgTarget { interface: "clvtr-none0".into(), userspace: true };
        assert!(t.status().is_err());
        assert_eq!(t.handshake_age_secs(), None);
        let bad = WgTarget { interface: "a/b".into(), userspace: false };
        assert!(bad.status().is_err());
    }
}
