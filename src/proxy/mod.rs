//! The credential broker (issue 18): an HTTPS proxy that puts an entry's credential into an
//! agent's request on the way out, so the agent never holds it.
//!
//! `clavitor serve --proxy-listen ADDR` runs it on a listener of its own (plain HTTP speaking
//! CONNECT; loopback only unless `--allow-plain-http`, since the agent's token travels in
//! `Proxy-Authorization` like a bearer token does on the API). Its accept loop is a dedicated
//! one with the API's [`Gate`] type (its own instance: tunnels are long-lived and would starve
//! the API's connection caps if they shared them): at most `--proxy-max-tunnels` connections
//! and `--proxy-max-tunnels-per-ip` from one address, refused before a byte is read.
//!
//! A tunnel: the agent authenticates on CONNECT (`Proxy-Authorization: Basic x:cvt_…`, the same
//! token index as the API); the proxy answers 200, terminates TLS with a leaf for the CONNECT
//! host minted under the node's CA ([`ca`]) and serves HTTP/1.1 inside ([`tunnel`]): each
//! request is re-authenticated (a revoked token stops at its next request), must name the
//! CONNECT host in `Host`, gets the injections of the rules the agent's scopes reach for that
//! host, method and path, is audited before it leaves, and goes to the CONNECT host:port over
//! verified TLS. The answer comes back with every injected value masked ([`mask`]).
//!
//! Must never: send a credential to any host but the CONNECT host its rule names, over anything
//! but verified TLS; follow a redirect; log or audit a value; forward plain `http://` requests
//! (absolute-form requests are refused: no credentials, and no open relay).

pub mod ca;
pub mod mask;
mod pool;
mod tunnel;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::api::serve::{Gate, Limits, MAX_HEAD};
use crate::audit::{Action, Actor, AuditEvent, Outcome};
use crate::auth::{Agent, TokenHash};
use crate::vault::{AuthFailure, Node, Principal};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type ProxyBody = BoxBody<Bytes, BoxError>;

pub const DEFAULT_MAX_TUNNELS: usize = 1024;
pub const DEFAULT_MAX_TUNNELS_PER_IP: usize = 256;
pub const DEFAULT_IDLE_SECS: u64 = 90;
pub const DEFAULT_LIFETIME_SECS: u64 = 3600;
pub const DEFAULT_UPSTREAM_IDLE_SECS: u64 = 30;
pub const DEFAULT_MAX_REQUEST_BYTES: u64 = 16 * 1024 * 1024;
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 256 * 1024 * 1024;
pub const DEFAULT_RATE_PER_AGENT: u32 = 50;
pub const DEFAULT_RATE_BURST: u32 = 200;
/// Agents the rate limiter tracks before it drops those whose bucket is full again.
const MAX_TRACKED_AGENTS: usize = 10_000;
/// How long connecting to an upstream (TCP and TLS) may take.
pub const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What `clavitor serve` configures (flags `--proxy-*`).
#[derive(Debug, Clone)]
pub struct Settings {
    pub max_tunnels: usize,
    pub max_tunnels_per_ip: usize,
    /// A tunnel with no request in flight and no bytes moving for this long is closed.
    pub idle: Duration,
    /// A tunnel is closed this long after it opened, whatever it is doing.
    pub lifetime: Duration,
    /// A kept upstream connection is closed after this long unused (the next request opens a
    /// new one).
    pub upstream_idle: Duration,
    pub max_request_bytes: u64,
    pub max_response_bytes: u64,
    /// Requests (CONNECTs and requests inside tunnels) per second per agent, and the burst.
    pub rate_per_agent: u32,
    pub rate_burst: u32,
    /// Extra roots the upstream's certificate may chain to (tests, private CAs).
    pub upstream_ca: Option<PathBuf>,
    /// Fixed addresses for names (`--proxy-resolve name=ip`), used instead of DNS. The upstream
    /// is still verified for the name, so a mapping can only make a request fail, never hand a
    /// credential to someone who cannot prove to be that host.
    pub resolve: HashMap<String, IpAddr>,
    /// Let DNS answers that are loopback, private or link-local be connected to (off: an agent
    /// cannot use the proxy to reach the node's own network).
    pub allow_private_upstreams: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            max_tunnels: DEFAULT_MAX_TUNNELS,
            max_tunnels_per_ip: DEFAULT_MAX_TUNNELS_PER_IP,
            idle: Duration::from_secs(DEFAULT_IDLE_SECS),
            lifetime: Duration::from_secs(DEFAULT_LIFETIME_SECS),
            upstream_idle: Duration::from_secs(DEFAULT_UPSTREAM_IDLE_SECS),
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            rate_per_agent: DEFAULT_RATE_PER_AGENT,
            rate_burst: DEFAULT_RATE_BURST,
            upstream_ca: None,
            resolve: HashMap::new(),
            allow_private_upstreams: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error(transparent)]
    Ca(#[from] ca::CaError),
    #[error("proxy upstream CA: {0}")]
    UpstreamCa(String),
    #[error("{0}")]
    Config(String),
}

/// The CA certificate the running server's proxy uses, for `GET /api/proxy/ca.pem`.
static CA_PEM: OnceLock<String> = OnceLock::new();

pub fn ca_pem() -> Option<&'static str> {
    CA_PEM.get().map(String::as_str)
}

/// The agent's `proxy_only_listed` (set on it, or on any agent it was derived from): it may
/// then open tunnels only to hosts an inject rule of an entry it can read names.
fn proxy_only_listed(agent: &Agent) -> bool {
    agent.proxy_only_listed
}

type AgentLimiter = governor::DefaultKeyedRateLimiter<(usize, i64)>;

/// Everything a tunnel needs, shared.
pub struct Proxy {
    node: Arc<Node>,
    ca: ca::Ca,
    settings: Settings,
    gate: Arc<Gate>,
    upstream_tls: Arc<rustls::ClientConfig>,
    limiter: AgentLimiter,
    auth_throttle: crate::api::throttle::AuthThrottle,
    upstreams: Arc<pool::Pool>,
}

impl Proxy {
    pub fn new(node: Arc<Node>, ca: ca::Ca, settings: Settings) -> Result<Arc<Self>, ProxyError> {
        let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
        if let Some(path) = &settings.upstream_ca {
            for cert in crate::node::tls::load_roots(path).map_err(|e| ProxyError::UpstreamCa(e.to_string()))? {
                roots.add(cert).map_err(|e| ProxyError::UpstreamCa(format!("{}: {e}", path.display())))?;
            }
        }
        let mut client = rustls::ClientConfig::builder_with_provider(crate::node::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| ProxyError::Config(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        client.alpn_protocols = vec![b"http/1.1".to_vec()];
        let quota =
            governor::Quota::per_second(NonZeroU32::new(settings.rate_per_agent.max(1)).unwrap_or(NonZeroU32::MIN))
                .allow_burst(NonZeroU32::new(settings.rate_burst.max(1)).unwrap_or(NonZeroU32::MIN));
        let gate = Gate::new(Limits {
            max_connections: settings.max_tunnels,
            max_connections_per_ip: settings.max_tunnels_per_ip,
            ..Limits::default()
        });
        let _ = CA_PEM.set(ca.pem().to_owned());
        let settings_upstream_idle = settings.upstream_idle;
        Ok(Arc::new(Self {
            node,
            ca,
            settings,
            gate,
            upstream_tls: Arc::new(client),
            limiter: governor::RateLimiter::keyed(quota),
            auth_throttle: crate::api::throttle::AuthThrottle::default(),
            upstreams: pool::Pool::new(settings_upstream_idle),
        }))
    }

    /// Accepts until `shutdown` resolves, then drains like the API listener: every connection
    /// (a CONNECT in progress or an open tunnel) finishes the request it is serving, is closed
    /// once idle, and is dropped if still busy after [`GRACE`](crate::api::serve::GRACE). Each
    /// request inside a tunnel has had its audit row committed before it was forwarded.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, shutdown: impl std::future::Future<Output = ()>) {
        let sweeper = tokio::spawn(self.upstreams.clone().sweep());
        let drain = crate::api::serve::Drain::new();
        crate::api::serve::accept_until(&listener, &self.gate, shutdown, |stream, remote, slot| {
            let _ = stream.set_nodelay(true);
            let proxy = self.clone();
            let stop = drain.stop();
            let open = drain.guard();
            tokio::spawn(async move {
                let lifetime = proxy.settings.lifetime;
                let _ = tokio::time::timeout(lifetime, proxy.connection(stream, remote, stop, open.clone())).await;
                drop(slot);
                drop(open);
            });
        })
        .await;
        drop(listener);
        drain.finish("proxy tunnels").await;
        sweeper.abort();
    }

    /// One client connection: CONNECT requests (or refusals) until one opens a tunnel, which
    /// then runs in this same task (so it keeps the connection's slot). `stop` turns true when
    /// the node shuts down: the connection then finishes what it is serving and closes. `open`
    /// is a drain guard: the shutdown waits until every clone is dropped.
    async fn connection(
        self: Arc<Self>,
        stream: tokio::net::TcpStream,
        remote: SocketAddr,
        mut stop: tokio::sync::watch::Receiver<bool>,
        open: tokio::sync::watch::Receiver<()>,
    ) {
        let opened: Arc<Mutex<Option<tunnel::Start>>> = Arc::default();
        let service = {
            let proxy = self.clone();
            let opened = opened.clone();
            hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let proxy = proxy.clone();
                let opened = opened.clone();
                async move { Ok::<_, std::convert::Infallible>(proxy.connect(req, remote, &opened).await) }
            })
        };
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .max_buf_size(MAX_HEAD)
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        if !until_stopped(conn, &mut stop, |c| c.graceful_shutdown(), remote, "proxy connection").await {
            return;
        }
        let start = opened.lock().unwrap_or_else(|p| p.into_inner()).take();
        // A tunnel answered just as the node began to stop is not started: the agent sees the
        // connection close before its first request, and retries elsewhere or later.
        if let Some(start) = start
            && !*stop.borrow()
        {
            tunnel::run(self, start, remote, stop, open).await;
        }
    }

    /// Answers a request on the proxy port: a CONNECT that authenticates and names an allowed
    /// host gets 200 and its tunnel is set up; anything else is refused with a JSON body.
    async fn connect(
        self: &Arc<Self>,
        mut req: Request<hyper::body::Incoming>,
        remote: SocketAddr,
        opened: &Mutex<Option<tunnel::Start>>,
    ) -> Response<ProxyBody> {
        if req.method() != hyper::Method::CONNECT {
            return refusal(
                StatusCode::METHOD_NOT_ALLOWED,
                "https_only",
                "this proxy only tunnels https (CONNECT); plain http requests are not forwarded",
            )
            .response();
        }
        let Some(hash) = token_hash(req.headers()) else {
            if self.auth_throttle.allow_failure(Some(remote.ip())) {
                let event = AuditEvent::new(Actor::Anonymous, Action::ProxyRefuse, Outcome::Unauthorized)
                    .peer(Some(remote.ip()))
                    .detail("no or malformed proxy credentials");
                let _ = self.node.audit(event).await;
            }
            return auth_required("proxy credentials are missing or malformed: use http://x:cvt_…@host:port")
                .response();
        };
        let principal = match self.authenticate(&hash, remote).await {
            Ok(p) => p,
            Err(refused) => return refused.response(),
        };
        let Some((host, port)) = req.uri().authority().and_then(|a| target(a.host(), a.port_u16())) else {
            return refusal(
                StatusCode::BAD_REQUEST,
                "bad_target",
                "CONNECT needs host:port with a DNS name or IPv4 address",
            )
            .response();
        };
        if let Err(refused) = self.rate_check(&principal, remote, &host).await {
            return refused.response();
        }
        if proxy_only_listed(&principal.agent) && !principal.vault.has_rules_for(&principal.agent, &host) {
            self.refuse_audit(&principal, remote, &format!("host not listed: {host}")).await;
            return refusal(
                StatusCode::FORBIDDEN,
                "host_not_allowed",
                "this agent may only use hosts an inject rule names",
            )
            .response();
        }
        *opened.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(tunnel::Start { upgrade: hyper::upgrade::on(&mut req), host, port, token: hash });
        Response::builder().status(StatusCode::OK).body(empty()).unwrap_or_else(|_| Response::new(empty()))
    }

    /// The agent a token hash belongs to, or the 407/503 refusal (audited, throttled).
    async fn authenticate(&self, hash: &TokenHash, remote: SocketAddr) -> Result<Principal, Refusal> {
        match self.node.authenticate(hash) {
            Ok(p) => Ok(p),
            Err(AuthFailure::Unknown) => {
                if self.auth_throttle.allow_failure(Some(remote.ip())) {
                    let event = AuditEvent::new(Actor::Anonymous, Action::ProxyRefuse, Outcome::Unauthorized)
                        .peer(Some(remote.ip()))
                        .detail("unknown, revoked or expired token");
                    let _ = self.node.audit(event).await;
                }
                Err(auth_required("the token is unknown, revoked or expired"))
            }
            Err(AuthFailure::Unavailable(_)) => Err(refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                "vault_unavailable",
                "this token's vault cannot be served",
            )),
        }
    }

    async fn rate_check(&self, p: &Principal, remote: SocketAddr, host: &str) -> Result<(), Refusal> {
        let key = (Arc::as_ptr(&p.vault) as usize, p.agent.id.0);
        // Agents that stopped calling are forgotten, so the limiter's map stays bounded.
        if self.limiter.len() > MAX_TRACKED_AGENTS {
            self.limiter.retain_recent();
        }
        if self.limiter.check_key(&key).is_ok() {
            return Ok(());
        }
        self.refuse_audit(p, remote, &format!("rate limited: {host}")).await;
        Err(refusal(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many proxied requests for this agent; retry shortly",
        ))
    }

    async fn refuse_audit(&self, p: &Principal, remote: SocketAddr, detail: &str) {
        let event = AuditEvent::new(Actor::Agent(p.agent.id), Action::ProxyRefuse, Outcome::Denied)
            .peer(Some(remote.ip()))
            .detail(detail);
        if let Err(e) = p.vault.audit(event).await {
            tracing::warn!(error = %e, "cannot audit a proxy refusal");
        }
    }
}

/// `Proxy-Authorization: Basic base64(user:cvt_…)` (the password; or the user if the password
/// is empty) or `Bearer cvt_…`, hashed. `None` if absent or not a well-formed token.
fn token_hash(headers: &hyper::HeaderMap) -> Option<TokenHash> {
    let value = headers.get(header::PROXY_AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = value.trim().split_once(' ')?;
    let token = if scheme.eq_ignore_ascii_case("basic") {
        let decoded = zeroize::Zeroizing::new(base64::engine::general_purpose::STANDARD.decode(rest.trim()).ok()?);
        let text = std::str::from_utf8(&decoded).ok()?;
        let (user, pass) = text.split_once(':')?;
        zeroize::Zeroizing::new(if pass.is_empty() { user } else { pass }.to_owned())
    } else if scheme.eq_ignore_ascii_case("bearer") {
        zeroize::Zeroizing::new(rest.trim().to_owned())
    } else {
        return None;
    };
    TokenHash::of_presented(&token).ok()
}

/// Lowercases and checks a CONNECT target: a DNS name (one trailing dot dropped) or an IPv4
/// address, and a port (443 if absent).
fn target(host: &str, port: Option<u16>) -> Option<(String, u16)> {
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    let dns = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    let port = port.unwrap_or(443);
    (dns && port != 0).then_some((host, port))
}

fn empty() -> ProxyBody {
    Full::new(Bytes::new()).map_err(|e| match e {}).boxed()
}

/// A refusal: answered as JSON like the API's errors, `{"error": code, "message": text}`.
#[derive(Debug)]
pub(crate) struct Refusal {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl Refusal {
    pub(crate) fn response(self) -> Response<ProxyBody> {
        let body = serde_json::json!({"error": self.code, "message": self.message}).to_string();
        let mut resp = Response::new(Full::new(Bytes::from(body)).map_err(|e| match e {}).boxed());
        *resp.status_mut() = self.status;
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if self.status == StatusCode::PROXY_AUTHENTICATION_REQUIRED {
            h.insert(header::PROXY_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"clavitor\""));
        }
        resp
    }
}

pub(crate) fn refusal(status: StatusCode, code: &'static str, message: impl Into<String>) -> Refusal {
    Refusal { status, code, message: message.into() }
}

fn auth_required(message: &str) -> Refusal {
    refusal(StatusCode::PROXY_AUTHENTICATION_REQUIRED, "unauthorized", message)
}

/// Drives a hyper connection; when `stop` turns true, asks it (`graceful`) to finish the request
/// in flight and close. `what` names it in the debug log. True if it ended on its own or after
/// that; false if `stop`'s sender went away first (the grace period is over) and the connection
/// was dropped.
async fn until_stopped<C, E>(
    conn: C,
    stop: &mut tokio::sync::watch::Receiver<bool>,
    graceful: impl Fn(std::pin::Pin<&mut C>),
    remote: SocketAddr,
    what: &str,
) -> bool
where
    C: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let mut conn = std::pin::pin!(conn);
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, %remote, "{what} ended with an error");
                }
                return true;
            }
            changed = stop.changed() => {
                if changed.is_err() {
                    return false;
                }
                if *stop.borrow_and_update() {
                    graceful(conn.as_mut());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_and_credentials() {
        assert_eq!(target("API.Example.Test.", Some(8443)), Some(("api.example.test".into(), 8443)));
        assert_eq!(target("a.b", None), Some(("a.b".into(), 443)));
        for bad in ["", "a..b", "a_b.c", "[::1]", "a b"] {
            assert!(target(bad, Some(1)).is_none(), "{bad}");
        }
        let token = format!("cvt_{}", "a".repeat(43));
        let mut h = hyper::HeaderMap::new();
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("x:{token}"));
        h.insert(header::PROXY_AUTHORIZATION, format!("Basic {basic}").parse().unwrap());
        assert!(token_hash(&h).is_some());
        h.insert(header::PROXY_AUTHORIZATION, format!("Bearer {token}").parse().unwrap());
        assert!(token_hash(&h).is_some());
        h.insert(header::PROXY_AUTHORIZATION, "Basic eDp5".parse().unwrap());
        assert!(token_hash(&h).is_none(), "x:y is no token");
    }
}
