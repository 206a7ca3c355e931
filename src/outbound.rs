//! Outgoing HTTP: HQ telemetry, operator alerts, the Kuma push, and the agent-side client's
//! requests to a vault (`crate::client`). The one place that decides where a request may go and
//! with which client.
//!
//! Rules: `https://` anywhere; plain `http://` only to a loopback address written as an IP
//! literal (a name such as `127.0.0.1.example.com` or `localhost` is resolved by DNS, so it
//! proves nothing), unless the operator allowed plain http for that one client (the Kuma push
//! over the WireGuard mesh); never credentials in the URL; and the clients follow no redirect at
//! all, so neither a bearer token nor a push secret can be bounced to another host or scheme.
//! Must never: log a URL it refused (it may hold a secret), or hand out a client that follows
//! redirects.

use std::net::IpAddr;
use std::time::Duration;

use axum::http::Uri;

/// Why a URL was refused. Never repeats the URL: it may carry a secret.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OutboundError {
    #[error("not an absolute http(s) URL with a host")]
    Malformed,
    #[error("credentials in the URL are not accepted")]
    Credentials,
    #[error("plain http:// is accepted only for a loopback IP address (127.0.0.1, [::1]); use https://")]
    PlainHttp,
    #[error("the CA file holds no usable PEM certificate")]
    CaFile,
}

/// Whether plain http is acceptable beyond loopback for one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlainHttp {
    LoopbackOnly,
    /// The operator said the path is already encrypted (e.g. the WireGuard mesh).
    Allowed,
}

/// True for an IP literal in 127.0.0.0/8 or `::1` (with or without brackets).
pub fn is_loopback_ip(host: &str) -> bool {
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Checks an outgoing URL against the rules above.
pub fn check_url(raw: &str, plain: PlainHttp) -> Result<Uri, OutboundError> {
    let uri: Uri = raw.parse().map_err(|_| OutboundError::Malformed)?;
    let authority = uri.authority().ok_or(OutboundError::Malformed)?;
    if authority.as_str().contains('@') {
        return Err(OutboundError::Credentials);
    }
    if authority.host().is_empty() {
        return Err(OutboundError::Malformed);
    }
    match uri.scheme_str() {
        Some("https") => Ok(uri),
        Some("http") if plain == PlainHttp::Allowed || is_loopback_ip(authority.host()) => Ok(uri),
        Some("http") => Err(OutboundError::PlainHttp),
        _ => Err(OutboundError::Malformed),
    }
}

/// The HTTP client for outgoing requests: a global timeout, statuses as values, no redirects,
/// and no proxy taken from the environment: a service's inherited `HTTP(S)_PROXY` must not
/// route a push secret or the HQ bearer token through a host the operator never named here.
pub fn client(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .max_redirects(0)
        .proxy(None)
        .build()
        .into()
}

/// The agent-side client's agent for talking to a vault: a connect and a global timeout,
/// statuses as values, no redirects (a bearer token is never bounced elsewhere), no proxy taken
/// from the environment (a plain loopback request must not leave the host through one), and
/// always-verified TLS. `ca_pem`: a private CA's certificates (PEM); when given, the server's
/// certificate must chain to one of them, and the public (Mozilla) roots are not used: ureq takes
/// either its built-in roots or a list of certificates, and the built-in roots are not
/// certificates that could be added to such a list.
pub fn vault_client(timeout: Duration, ca_pem: Option<&[u8]>) -> Result<ureq::Agent, OutboundError> {
    use ureq::tls::{PemItem, RootCerts, TlsConfig};
    let mut tls = TlsConfig::builder();
    if let Some(pem) = ca_pem {
        let certs: Vec<_> = ureq::tls::parse_pem(pem)
            .filter_map(|item| match item {
                Ok(PemItem::Certificate(c)) => Some(c),
                _ => None,
            })
            .collect();
        if certs.is_empty() {
            return Err(OutboundError::CaFile);
        }
        tls = tls.root_certs(RootCerts::new_with_certs(&certs));
    }
    Ok(ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .timeout_connect(Some(Duration::from_secs(10).min(timeout)))
        .http_status_as_error(false)
        .max_redirects(0)
        .proxy(None)
        .tls_config(tls.build())
        .build()
        .into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_to_loopback_ip_literals() {
        for ok in ["http://127.0.0.1:9/x", "http://127.3.4.5/", "http://[::1]:80/p", "https://hq.example.com"] {
            assert!(check_url(ok, PlainHttp::LoopbackOnly).is_ok(), "{ok}");
        }
        for bad in ["http://127.0.0.1.example.com/", "http://localhost:9/", "http://10.84.0.1:3001/", "http://[::2]/"] {
            assert_eq!(check_url(bad, PlainHttp::LoopbackOnly), Err(OutboundError::PlainHttp), "{bad}");
        }
        assert!(check_url("http://10.84.0.1:3001/api/push/t", PlainHttp::Allowed).is_ok());
        assert_eq!(check_url("https://u:p@x/", PlainHttp::Allowed), Err(OutboundError::Credentials));
        for bad in ["ftp://x/", "not a url", "/relative"] {
            assert_eq!(check_url(bad, PlainHttp::Allowed), Err(OutboundError::Malformed), "{bad}");
        }
    }

    #[test]
    fn vault_client_refuses_a_ca_file_without_certificates() {
        assert_eq!(vault_client(Duration::from_secs(1), Some(b"not pem")).err(), Some(OutboundError::CaFile));
        assert!(vault_client(Duration::from_secs(1), None).is_ok());
    }
}
