//! TLS: in-process ACME (rustls-acme, TLS-ALPN-01) or static certificate files, and the plain
//! HTTP listener that only redirects to https. Plain HTTP alone stays the development default.
//! Both are served by `api::serve` (the one hardened listener); this module supplies only the
//! TLS handshake (axum-server's and rustls-acme's acceptors, used as plain futures).
//!
//! The ACME account and certificates are cached in `<data-dir>/acme` (0700), so a restart
//! reuses them; renewal is automatic and in-process. One rustls crypto provider (ring) is used
//! everywhere, as ureq's is: two providers in one process make rustls panic.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum_server::accept::Accept;
use futures_util::StreamExt;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::NodeError;
use crate::api::serve::{Gate, HANDSHAKE_TIMEOUT, Socket, TlsAccept};
use crate::vault::DataDir;

pub const LETS_ENCRYPT_PRODUCTION: &str = "https://acme-v02.api.letsencrypt.org/directory";
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";
pub const DEFAULT_TLS_LISTEN: &str = "0.0.0.0:443";
pub const DEFAULT_REDIRECT_LISTEN: &str = "0.0.0.0:80";

/// Raw TLS flags, before validation.
#[derive(Debug, Default, Clone)]
pub struct TlsInputs {
    pub acme_domains: Vec<String>,
    pub acme_contact: Vec<String>,
    pub acme_directory: Option<String>,
    pub acme_ca_file: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_listen: Option<SocketAddr>,
    pub http_redirect_listen: Option<String>,
}

#[derive(Debug, Clone)]
pub struct AcmeSettings {
    pub domains: Vec<String>,
    /// `mailto:` URLs.
    pub contact: Vec<String>,
    pub directory: String,
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub enum TlsMode {
    /// Only the plain `--listen` listener (development, or behind a terminator).
    Plain,
    Static {
        cert: PathBuf,
        key: PathBuf,
    },
    Acme(AcmeSettings),
}

/// Validated TLS settings.
#[derive(Debug, Clone)]
pub struct TlsPlan {
    pub mode: TlsMode,
    pub tls_listen: SocketAddr,
    pub redirect_listen: Option<SocketAddr>,
}

fn cfg(msg: impl Into<String>) -> NodeError {
    NodeError::Config(msg.into())
}

fn valid_domain(d: &str) -> bool {
    (1..=253).contains(&d.len())
        && d.contains('.')
        && d.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

impl TlsInputs {
    pub fn resolve(self) -> Result<TlsPlan, NodeError> {
        let acme = !self.acme_domains.is_empty();
        let stat = self.tls_cert.is_some() || self.tls_key.is_some();
        if acme && stat {
            return Err(cfg("choose ACME (--acme-domain) or static files (--tls-cert/--tls-key), not both"));
        }
        if !acme && (!self.acme_contact.is_empty() || self.acme_directory.is_some() || self.acme_ca_file.is_some()) {
            return Err(cfg("--acme-contact, --acme-directory and --acme-ca-file need at least one --acme-domain"));
        }
        let mode = if acme {
            let mut domains = Vec::new();
            for d in &self.acme_domains {
                let d = d.trim().trim_end_matches('.').to_ascii_lowercase();
                if !valid_domain(&d) {
                    return Err(cfg(format!(
                        "--acme-domain {d:?} is not a DNS name (letters, digits, '-', at least one dot; no wildcards)"
                    )));
                }
                if !domains.contains(&d) {
                    domains.push(d);
                }
            }
            let mut contact = Vec::new();
            for c in &self.acme_contact {
                let c = c.trim();
                let email = c.strip_prefix("mailto:").unwrap_or(c);
                let ok = email.split_once('@').is_some_and(|(user, host)| {
                    !user.is_empty() && host.contains('.') && !email.contains(char::is_whitespace)
                });
                if !ok {
                    return Err(cfg(format!("--acme-contact {c:?} is not an e-mail address")));
                }
                contact.push(format!("mailto:{email}"));
            }
            let directory = match self.acme_directory.as_deref().map(str::trim) {
                None | Some("production") => LETS_ENCRYPT_PRODUCTION.to_owned(),
                Some("staging") => LETS_ENCRYPT_STAGING.to_owned(),
                Some(url) if url.starts_with("https://") && url.parse::<axum::http::Uri>().is_ok() => url.to_owned(),
                Some(other) => {
                    return Err(cfg(format!(
                        "--acme-directory {other:?} must be `production`, `staging` or an https:// URL"
                    )));
                }
            };
            if let Some(ca) = &self.acme_ca_file {
                load_roots(ca)?;
            }
            TlsMode::Acme(AcmeSettings { domains, contact, directory, ca_file: self.acme_ca_file })
        } else if stat {
            match (self.tls_cert, self.tls_key) {
                (Some(cert), Some(key)) => {
                    // Refuse unreadable or mismatched files at start, not at the first handshake.
                    static_server_config(&cert, &key)?;
                    TlsMode::Static { cert, key }
                }
                _ => return Err(cfg("--tls-cert and --tls-key go together")),
            }
        } else {
            TlsMode::Plain
        };
        let tls_on = !matches!(mode, TlsMode::Plain);
        if !tls_on && (self.tls_listen.is_some() || self.http_redirect_listen.is_some()) {
            return Err(cfg(
                "--tls-listen and --http-redirect-listen need TLS: --acme-domain, or --tls-cert with --tls-key",
            ));
        }
        let tls_listen = match self.tls_listen {
            Some(a) => a,
            None => DEFAULT_TLS_LISTEN.parse().map_err(|_| cfg("bad default TLS address"))?,
        };
        let redirect_listen = match self.http_redirect_listen.as_deref().map(str::trim) {
            Some("off") => None,
            Some(a) => Some(
                a.parse::<SocketAddr>()
                    .map_err(|_| cfg(format!("--http-redirect-listen {a:?} must be ADDRESS:PORT or `off`")))?,
            ),
            None if matches!(mode, TlsMode::Acme(_)) => {
                Some(DEFAULT_REDIRECT_LISTEN.parse().map_err(|_| cfg("bad default redirect address"))?)
            }
            None => None,
        };
        if redirect_listen.is_some_and(|r| r == tls_listen) {
            return Err(cfg("--http-redirect-listen and --tls-listen must differ"));
        }
        Ok(TlsPlan { mode, tls_listen, redirect_listen })
    }
}

impl TlsPlan {
    /// Where the telemetry reads the served certificate from.
    pub fn cert_source(&self, dir: &DataDir) -> CertSource {
        match &self.mode {
            TlsMode::Plain => CertSource::None,
            TlsMode::Static { cert, .. } => CertSource::File(cert.clone()),
            TlsMode::Acme(_) => CertSource::AcmeCache(acme_cache_dir(dir)),
        }
    }
}

pub fn acme_cache_dir(dir: &DataDir) -> PathBuf {
    dir.root.join("acme")
}

/// The served certificate, for `cert_days_remaining`.
#[derive(Debug, Clone)]
pub enum CertSource {
    None,
    File(PathBuf),
    /// The newest certificate rustls-acme cached.
    AcmeCache(PathBuf),
}

impl CertSource {
    /// What `clavitor telemetry show` reports on: the given file, else an ACME cache in the
    /// data dir if one holds a certificate, else none.
    pub fn detect(dir: &DataDir, tls_cert: Option<PathBuf>) -> Self {
        match tls_cert {
            Some(f) => Self::File(f),
            None if newest_cached_cert(&acme_cache_dir(dir)).is_some() => Self::AcmeCache(acme_cache_dir(dir)),
            None => Self::None,
        }
    }

    /// Whole days until the leaf certificate expires (negative once expired); None without TLS
    /// or before the first certificate.
    pub fn days_remaining(&self) -> Option<i64> {
        let pem = match self {
            Self::None => return None,
            Self::File(f) => std::fs::read(f).ok()?,
            Self::AcmeCache(d) => std::fs::read(newest_cached_cert(d)?).ok()?,
        };
        let not_after = leaf_not_after(&pem)?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs() as i64;
        Some((not_after - now).div_euclid(86_400))
    }
}

fn newest_cached_cert(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("cached_cert_"))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .max()
        .map(|(_, p)| p)
}

/// notAfter (Unix seconds) of the first certificate in a PEM bundle (rustls-acme's cache puts
/// the private key first; it is skipped).
pub fn leaf_not_after(pem: &[u8]) -> Option<i64> {
    for block in x509_parser::pem::Pem::iter_from_buffer(pem) {
        let block = block.ok()?;
        if block.label == "CERTIFICATE" {
            let cert = block.parse_x509().ok()?;
            return Some(cert.validity().not_after.timestamp());
        }
    }
    None
}

pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, NodeError> {
    std::fs::read(path).map_err(|e| NodeError::Read { path: path.to_owned(), reason: e.to_string() })
}

pub(crate) fn load_roots(path: &Path) -> Result<Vec<CertificateDer<'static>>, NodeError> {
    let pem = read(path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem).collect::<Result<_, _>>().map_err(|e| {
        NodeError::Certificate { path: path.to_owned(), reason: format!("not a PEM certificate file: {e}") }
    })?;
    if certs.is_empty() {
        return Err(NodeError::Certificate { path: path.to_owned(), reason: "holds no certificate".into() });
    }
    Ok(certs)
}

/// A server config for static files: the chain from `cert`, the key from `key`.
pub fn static_server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, NodeError> {
    let chain = load_roots(cert)?;
    let key_pem = zeroize::Zeroizing::new(read(key)?);
    let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| NodeError::Certificate {
        path: key.to_owned(),
        reason: "holds no PEM private key (PKCS#8, PKCS#1 or SEC1)".into(),
    })?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| cfg(format!("TLS setup: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| NodeError::Certificate {
            path: cert.to_owned(),
            reason: format!("certificate and key do not form a usable pair: {e}"),
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The client config the ACME client uses: the web PKI roots plus `--acme-ca-file`.
fn acme_client_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, NodeError> {
    let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    if let Some(path) = ca_file {
        for cert in load_roots(path)? {
            roots.add(cert).map_err(|e| NodeError::Certificate {
                path: path.to_owned(),
                reason: format!("not a usable root certificate: {e}"),
            })?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| cfg(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn bind(addr: SocketAddr, what: &str) -> Result<std::net::TcpListener, NodeError> {
    let l = std::net::TcpListener::bind(addr).map_err(|e| cfg(format!("cannot listen on {addr} ({what}): {e}")))?;
    l.set_nonblocking(true).map_err(|e| cfg(format!("cannot listen on {addr} ({what}): {e}")))?;
    Ok(l)
}

/// The running TLS and redirect listeners.
pub struct TlsServers {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Where they listen (for the start-up message): ("https", addr), ("http-redirect", addr).
    pub bound: Vec<(&'static str, SocketAddr)>,
}

impl TlsServers {
    /// Waits until the listeners have shut down (they start to once shutdown has begun).
    pub async fn wait(self) {
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Binds and starts the TLS listener (and the redirect listener) for `app`. Nothing for plain.
/// Both run on `api::serve`, under the same `gate` (caps, head and body limits) as the plain
/// listener; the TLS handshake happens inside the connection task, after the caps. They shut
/// down gracefully once `edition::shutdown_started` resolves.
pub fn start(plan: &TlsPlan, dir: &DataDir, app: Router, gate: Arc<Gate>) -> Result<TlsServers, NodeError> {
    let mut servers = TlsServers { tasks: Vec::new(), bound: Vec::new() };
    let domains = match &plan.mode {
        TlsMode::Plain => return Ok(servers),
        TlsMode::Static { .. } => Vec::new(),
        TlsMode::Acme(a) => a.domains.clone(),
    };
    let tls_listener = bind(plan.tls_listen, "TLS")?;
    let tls_addr = tls_listener.local_addr().map_err(|e| cfg(format!("cannot read the TLS address: {e}")))?;
    let tls_listener = tokio::net::TcpListener::from_std(tls_listener)
        .map_err(|e| cfg(format!("cannot listen on {tls_addr} (TLS): {e}")))?;
    let (accept, acme_task): (TlsAccept, _) = match &plan.mode {
        TlsMode::Plain => return Ok(servers),
        TlsMode::Static { cert, key } => {
            let config = axum_server::tls_rustls::RustlsConfig::from_config(static_server_config(cert, key)?);
            let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(config).handshake_timeout(HANDSHAKE_TIMEOUT);
            let accept: TlsAccept = Arc::new(move |tcp| {
                let handshake = acceptor.accept(tcp, ());
                Box::pin(async move {
                    let (tls, ()) = handshake.await?;
                    Ok(Some(Box::new(tls) as Box<dyn Socket>))
                })
            });
            (accept, None)
        }
        TlsMode::Acme(acme) => {
            let cache = acme_cache_dir(dir);
            create_private_dir(&cache)?;
            let client = acme_client_config(acme.ca_file.as_deref())?;
            let mut state = rustls_acme::AcmeConfig::new_with_client_config(acme.domains.clone(), client)
                .contact(acme.contact.clone())
                .directory(&acme.directory)
                .cache(rustls_acme::caches::DirCache::new(cache))
                .state();
            // rustls-acme's acceptor answers TLS-ALPN-01 validation connections itself and has
            // no time limit of its own: `api::serve` bounds it with HANDSHAKE_TIMEOUT.
            let acceptor = state.axum_acceptor(state.default_rustls_config_with_provider(provider()));
            let domains_text = acme.domains.join(",");
            let directory = acme.directory.clone();
            tracing::info!(domains = %domains_text, %directory, "ACME: obtaining or loading the certificate");
            let acme_task = tokio::spawn(async move {
                let mut failing = false;
                while let Some(event) = state.next().await {
                    match event {
                        Ok(ok) => {
                            tracing::info!(event = ?ok, domains = %domains_text, "ACME");
                            failing = false;
                        }
                        Err(err) => {
                            // rustls-acme retries with backoff; tell the operator once per streak.
                            if !failing {
                                crate::edition::alert(
                                    "acme",
                                    "cannot obtain or renew the TLS certificate",
                                    &[("domains", domains_text.clone()), ("error", err.to_string())],
                                );
                            }
                            failing = true;
                        }
                    }
                }
            });
            let accept: TlsAccept = Arc::new(move |tcp| {
                let handshake = acceptor.accept(tcp, ());
                Box::pin(async move {
                    match handshake.await {
                        Ok((tls, ())) => Ok(Some(Box::new(tls) as Box<dyn Socket>)),
                        // The acceptor ends a validation connection with this error once it has
                        // answered the challenge: that connection is done, not failed.
                        Err(e) if e.to_string().contains("TLS-ALPN-01") => Ok(None),
                        Err(e) => Err(e),
                    }
                })
            });
            (accept, Some(acme_task))
        }
    };
    let gate_for_tls = gate.clone();
    let task = tokio::spawn(async move {
        crate::api::serve::serve(tls_listener, Some(accept), gate_for_tls, app, crate::edition::shutdown_started())
            .await;
        // The ACME loop never ends by itself: stop renewing with the listener.
        if let Some(t) = acme_task {
            t.abort();
        }
    });
    servers.tasks.push(task);
    servers.bound.push(("https", tls_addr));

    if let Some(addr) = plan.redirect_listen {
        let listener = bind(addr, "HTTP redirect")?;
        let local = listener.local_addr().map_err(|e| cfg(format!("cannot read the redirect address: {e}")))?;
        let listener = tokio::net::TcpListener::from_std(listener)
            .map_err(|e| cfg(format!("cannot listen on {addr} (HTTP redirect): {e}")))?;
        let target = Arc::new(RedirectTarget { domains, https_port: tls_addr.port() });
        let app = Router::new().fallback(redirect).with_state(target);
        // The same loop and the same caps as the plain listener: port 80 is public too.
        servers.tasks.push(tokio::spawn(crate::api::serve::serve(
            listener,
            None,
            gate,
            app,
            crate::edition::shutdown_started(),
        )));
        servers.bound.push(("http-redirect", local));
    }
    Ok(servers)
}

fn create_private_dir(path: &Path) -> Result<(), NodeError> {
    use std::os::unix::fs::DirBuilderExt;
    if !path.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .map_err(|e| NodeError::Write { path: path.to_owned(), reason: e.to_string() })?;
    }
    Ok(())
}

struct RedirectTarget {
    /// ACME domains; empty for static certificates (then any well-formed host is kept).
    domains: Vec<String>,
    https_port: u16,
}

/// The same host and path over https; the query string is kept as it is.
async fn redirect(State(target): State<Arc<RedirectTarget>>, req: Request) -> Response {
    let Some(location) = redirect_location(&target, req.headers().get(header::HOST), req.uri()) else {
        return (StatusCode::BAD_REQUEST, "bad Host header\n").into_response();
    };
    match HeaderValue::from_str(&location) {
        Ok(v) => (StatusCode::PERMANENT_REDIRECT, [(header::LOCATION, v)]).into_response(),
        Err(_) => (StatusCode::BAD_REQUEST, "bad request\n").into_response(),
    }
}

fn redirect_location(target: &RedirectTarget, host: Option<&HeaderValue>, uri: &axum::http::Uri) -> Option<String> {
    let raw = host.and_then(|h| h.to_str().ok()).unwrap_or("");
    // Host without its port ("[::1]:80" keeps its brackets).
    let name = match raw.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !h.is_empty() => h,
        _ => raw,
    }
    .to_ascii_lowercase();
    let host = if target.domains.is_empty() {
        let ok = !name.is_empty()
            && name.len() <= 253
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'[' | b']' | b':'));
        if !ok {
            return None;
        }
        name
    } else if target.domains.contains(&name) {
        name
    } else {
        // Never redirect to a host this node does not serve.
        target.domains.first()?.clone()
    };
    let port = if target.https_port == 443 { String::new() } else { format!(":{}", target.https_port) };
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    Some(format!("https://{host}{port}{path}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acme(domains: &[&str]) -> TlsInputs {
        TlsInputs { acme_domains: domains.iter().map(|d| (*d).to_owned()).collect(), ..Default::default() }
    }

    #[test]
    fn combinations() {
        let plain = TlsInputs::default().resolve().unwrap();
        assert!(matches!(plain.mode, TlsMode::Plain));
        assert_eq!(plain.redirect_listen, None);

        let a = acme(&["Node.Clavitor.com"]).resolve().unwrap();
        let TlsMode::Acme(s) = &a.mode else { panic!("acme") };
        assert_eq!(s.domains, ["node.clavitor.com"]);
        assert_eq!(s.directory, LETS_ENCRYPT_PRODUCTION);
        assert_eq!(a.tls_listen.port(), 443);
        assert_eq!(a.redirect_listen.map(|r| r.port()), Some(80), "ACME redirects :80 by default");

        let mut i = acme(&["a.example"]);
        i.acme_directory = Some("staging".into());
        i.acme_contact = vec!["ops@example.com".into()];
        i.http_redirect_listen = Some("off".into());
        let p = i.resolve().unwrap();
        let TlsMode::Acme(s) = &p.mode else { panic!("acme") };
        assert_eq!(s.directory, LETS_ENCRYPT_STAGING);
        assert_eq!(s.contact, ["mailto:ops@example.com"]);
        assert_eq!(p.redirect_listen, None);

        let refuse = |i: TlsInputs, words: &str| {
            let e = i.resolve().unwrap_err().to_string();
            assert!(e.contains(words), "{e}");
        };
        let mut i = acme(&["a.example"]);
        i.tls_cert = Some("c".into());
        refuse(i, "not both");
        refuse(TlsInputs { tls_cert: Some("c".into()), ..Default::default() }, "go together");
        refuse(TlsInputs { acme_contact: vec!["a@b.c".into()], ..Default::default() }, "need at least one");
        refuse(TlsInputs { tls_listen: Some("127.0.0.1:8443".parse().unwrap()), ..Default::default() }, "need TLS");
        refuse(TlsInputs { http_redirect_listen: Some("127.0.0.1:80".into()), ..Default::default() }, "need TLS");
        refuse(acme(&["*.example.com"]), "not a DNS name");
        refuse(acme(&["localhost"]), "not a DNS name");
        let mut i = acme(&["a.example"]);
        i.acme_directory = Some("http://insecure/dir".into());
        refuse(i, "https:// URL");
        let mut i = acme(&["a.example"]);
        i.acme_contact = vec!["nobody".into()];
        refuse(i, "e-mail");
        let mut i = acme(&["a.example"]);
        i.tls_listen = Some("127.0.0.1:8443".parse().unwrap());
        i.http_redirect_listen = Some("127.0.0.1:8443".into());
        refuse(i, "must differ");
        let mut i = acme(&["a.example"]);
        i.acme_ca_file = Some("/nonexistent/ca.pem".into());
        refuse(i, "cannot read");
    }

    #[test]
    fn redirects_keep_path_and_only_serve_known_hosts() {
        let t = RedirectTarget { domains: vec!["a.example".into()], https_port: 443 };
        let uri: axum::http::Uri = "/api/entries?x=1".parse().unwrap();
        let h = HeaderValue::from_static("A.example:80");
        assert_eq!(redirect_location(&t, Some(&h), &uri).unwrap(), "https://a.example/api/entries?x=1");
        let evil = HeaderValue::from_static("evil.example");
        assert_eq!(redirect_location(&t, Some(&evil), &uri).unwrap(), "https://a.example/api/entries?x=1");
        let t = RedirectTarget { domains: vec![], https_port: 8443 };
        let h = HeaderValue::from_static("127.0.0.1:8080");
        assert_eq!(redirect_location(&t, Some(&h), &uri).unwrap(), "https://127.0.0.1:8443/api/entries?x=1");
        assert!(redirect_location(&t, None, &uri).is_none());
        let bad = HeaderValue::from_static("a/b");
        assert!(redirect_location(&t, Some(&bad), &uri).is_none());
    }
}
