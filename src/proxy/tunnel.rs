//! Inside one tunnel: TLS terminated with the CONNECT host's leaf, HTTP/1.1 served, each
//! request checked, injected, audited and forwarded to the CONNECT host over verified TLS, on an
//! upstream connection taken from the agent's pool for that host (see `pool`).
//!
//! Must never: forward a request whose `Host` (or absolute URI) names another host than the
//! CONNECT host; forward an injected request before its audit rows are committed; pass a
//! response on without masking the values injected into its request.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use super::mask::{MaskedBody, Values};
use super::pool::{Key, PooledBody, Sender};
use super::{BoxError, Proxy, ProxyBody, Refusal, UPSTREAM_CONNECT_TIMEOUT, refusal};
use crate::api::serve::{HANDSHAKE_TIMEOUT, MAX_HEAD};
use crate::audit::{Action, Actor, AuditEvent, Outcome};
use crate::auth::TokenHash;
use crate::vault::inject::{Filled, percent_encode};

/// What a successful CONNECT hands to [`run`].
pub struct Start {
    pub upgrade: hyper::upgrade::OnUpgrade,
    pub host: String,
    pub port: u16,
    pub token: TokenHash,
}

/// The upstream connection's read buffer (see `connect_upstream`).
const UPSTREAM_READ_BUF: usize = 4096;

/// Headers that belong to one hop and are never passed on, either way.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authorization",
    "proxy-authenticate",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// When the tunnel last moved a byte, and how many requests are in flight.
struct Activity {
    origin: Instant,
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    fn touch(&self) {
        self.last_ms.store(self.origin.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.origin + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// Ends when the tunnel has been idle (no bytes, no request in flight) for `idle`.
async fn idle_watch(activity: &Activity, idle: Duration) {
    loop {
        let due = activity.last() + idle;
        if Instant::now() >= due {
            if activity.in_flight.load(Ordering::Relaxed) == 0 {
                return;
            }
            tokio::time::sleep(idle).await;
            continue;
        }
        tokio::time::sleep_until(due).await;
    }
}

/// A stream that notes each read and write in the tunnel's [`Activity`].
struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

struct Tunnel {
    proxy: Arc<Proxy>,
    host: String,
    port: u16,
    token: TokenHash,
    remote: SocketAddr,
    activity: Arc<Activity>,
    /// The drain guard (see [`run`]).
    open: tokio::sync::watch::Receiver<()>,
}

/// Serves the tunnel's requests until it closes, goes idle, or the node stops (`stop`: the
/// request in flight is finished and answered first, see [`super::until_stopped`]).
/// `open` is the connection's drain guard: each result row's task holds a clone until the row is
/// committed, so a shutdown waits for those rows too.
pub async fn run(
    proxy: Arc<Proxy>,
    start: Start,
    remote: SocketAddr,
    mut stop: tokio::sync::watch::Receiver<bool>,
    open: tokio::sync::watch::Receiver<()>,
) {
    let Ok(upgraded) = start.upgrade.await else { return };
    let config = match proxy.ca.server_config(&start.host) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "cannot mint a proxy leaf certificate");
            return;
        }
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(TokioIo::new(upgraded))).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, %remote, "proxy tunnel TLS handshake failed (does the agent trust the vault CA?)");
            return;
        }
        Err(_) => return,
    };
    let activity =
        Arc::new(Activity { origin: Instant::now(), last_ms: AtomicU64::new(0), in_flight: AtomicUsize::new(0) });
    let idle = proxy.settings.idle;
    let tunnel = Arc::new(Tunnel {
        proxy,
        host: start.host,
        port: start.port,
        token: start.token,
        remote,
        activity: activity.clone(),
        open,
    });
    let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
        let tunnel = tunnel.clone();
        async move { Ok::<_, std::convert::Infallible>(tunnel.handle(req).await) }
    });
    let io = Watched { inner: tls, activity: activity.clone() };
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .max_buf_size(MAX_HEAD)
        .serve_connection(TokioIo::new(io), service);
    tokio::select! {
        _ = super::until_stopped(conn, &mut stop, |c| c.graceful_shutdown(), remote, "proxy tunnel") => {}
        () = idle_watch(&activity, idle) => tracing::debug!(%remote, "proxy tunnel closed: idle"),
    }
}

impl Tunnel {
    async fn handle(&self, req: Request<hyper::body::Incoming>) -> Response<ProxyBody> {
        self.activity.in_flight.fetch_add(1, Ordering::Relaxed);
        let _in_flight = InFlight(self.activity.clone());
        // Judged at every request: a revoked or expired token stops here, tunnel or not.
        let principal = match self.proxy.authenticate(&self.token, self.remote).await {
            Ok(p) => p,
            Err(refused) => {
                let mut resp = refused.response();
                resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
                return resp;
            }
        };
        match self.forward(req, &principal).await {
            Ok(resp) => resp,
            Err(refused) => refused.response(),
        }
    }

    async fn forward(
        &self,
        req: Request<hyper::body::Incoming>,
        principal: &crate::vault::Principal,
    ) -> Result<Response<ProxyBody>, Refusal> {
        let proxy = &self.proxy;
        proxy.rate_check(principal, self.remote, &self.host).await?;
        if !self.names_connect_host(&req) {
            proxy.refuse_audit(principal, self.remote, &format!("request names another host than {}", self.host)).await;
            return Err(refusal(
                StatusCode::MISDIRECTED_REQUEST,
                "wrong_host",
                "the request's Host must be the host this tunnel was opened to",
            ));
        }
        // Judged again at every request, like the token: a restriction set, or the last rule for
        // this host removed, while the tunnel is open takes effect at its next request.
        if super::proxy_only_listed(&principal.agent) && !principal.vault.has_rules_for(&principal.agent, &self.host) {
            proxy.refuse_audit(principal, self.remote, &format!("host not listed: {}", self.host)).await;
            return Err(refusal(
                StatusCode::FORBIDDEN,
                "host_not_allowed",
                "this agent may only use hosts an inject rule names",
            ));
        }
        let method = req.method().as_str().to_owned();
        let path = req.uri().path().to_owned();
        let plan = match principal.vault.injections(&principal.agent, &self.host, &method, &path) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "cannot look up inject rules");
                return Err(refusal(StatusCode::INTERNAL_SERVER_ERROR, "internal", "cannot look up inject rules"));
            }
        };
        if let Some(len) = declared_length(req.headers())
            && len > proxy.settings.max_request_bytes
        {
            return Err(refusal(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the request body is over the proxy's limit",
            ));
        }
        let up_req = self.upstream_request(req, &plan.injections)?;
        // The evidence first: every entry whose credential goes out has its row committed.
        let detail = format!("{method} {}:{}{path}", self.host, self.port);
        let mut entries: Vec<i64> = plan.injections.iter().map(|i| i.entry_id).collect();
        entries.dedup();
        for &entry in &entries {
            let event = AuditEvent::new(Actor::Agent(principal.agent.id), Action::ProxyInject, Outcome::Ok)
                .entry(entry)
                .peer(Some(self.remote.ip()))
                .detail(detail.clone());
            if let Err(e) = principal.vault.audit(event).await {
                tracing::error!(error = %e, "cannot commit the proxy's audit row; not forwarding");
                return Err(refusal(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "audit_unavailable",
                    "the audit trail cannot be written",
                ));
            }
        }
        let resp = self.send(up_req).await?;
        let values = Values::new(plan.mask);
        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        let status = parts.status.as_u16();
        // The second row of an injected request: what came back (or why it was not passed on).
        let result = {
            let vault = principal.vault.clone();
            let agent = principal.agent.id;
            let client = self.remote.ip().to_string();
            // Written after the answer has gone: the guard makes a shutdown wait for the row.
            let open = self.open.clone();
            move |outcome: String| {
                if entries.is_empty() {
                    return;
                }
                let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
                rt.spawn(async move {
                    for entry in entries {
                        let event = AuditEvent::new(Actor::Agent(agent), Action::ProxyResult, Outcome::Ok)
                            .entry(entry)
                            .client(client.clone())
                            .detail(format!("{detail} -> {status}, {outcome}"));
                        let _ = vault.audit_background(event).await;
                    }
                    drop(open);
                });
            }
        };
        if let Some(len) = declared_length(&parts.headers)
            && len > proxy.settings.max_response_bytes
        {
            result(format!("refused: {len} bytes over the limit"));
            return Err(refusal(
                StatusCode::BAD_GATEWAY,
                "upstream_too_large",
                "the upstream's answer is over the proxy's limit",
            ));
        }
        // An encoded body cannot be searched for the values; we asked for identity, so an
        // upstream that compresses anyway gets its answer refused rather than passed unmasked.
        if !values.is_empty()
            && parts
                .headers
                .get_all(header::CONTENT_ENCODING)
                .iter()
                .any(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"))
        {
            result("refused: encoded answer".to_owned());
            return Err(refusal(
                StatusCode::BAD_GATEWAY,
                "upstream_encoded",
                "the upstream sent an encoded answer to a request with an injected credential; it cannot be masked",
            ));
        }
        if !values.is_empty() {
            for v in parts.headers.values_mut() {
                if let Some(masked) = values.mask_header(v) {
                    *v = masked;
                }
            }
        }
        let on_end: Box<dyn FnOnce(u64) + Send + Sync> = Box::new(move |bytes| result(format!("{bytes} bytes")));
        let body = MaskedBody::new(body, values, proxy.settings.max_response_bytes, on_end);
        Ok(Response::from_parts(parts, body.map_err(|e| -> BoxError { Box::new(e) }).boxed()))
    }

    /// True if `Host` (exactly one) and any absolute URI name the CONNECT host (and its port,
    /// if they give one).
    fn names_connect_host(&self, req: &Request<hyper::body::Incoming>) -> bool {
        let same = |host: &str, port: Option<u16>| {
            super::target(host, port.or(Some(self.port))).is_some_and(|(h, p)| h == self.host && p == self.port)
        };
        if let Some(a) = req.uri().authority()
            && !same(a.host(), a.port_u16())
        {
            return false;
        }
        let mut hosts = req.headers().get_all(header::HOST).iter();
        match (hosts.next(), hosts.next()) {
            (Some(h), None) => h
                .to_str()
                .ok()
                .and_then(|h| h.parse::<hyper::http::uri::Authority>().ok())
                .is_some_and(|a| same(a.host(), a.port_u16())),
            _ => false,
        }
    }

    /// The request as it goes upstream: origin-form URI, hop-by-hop headers gone, injections in
    /// place (any header or parameter of the same name the agent sent removed first), and, when
    /// something is injected, no `Accept-Encoding` so the answer can be masked as it streams.
    fn upstream_request(
        &self,
        req: Request<hyper::body::Incoming>,
        injections: &[crate::vault::inject::Injection],
    ) -> Result<Request<ProxyBody>, Refusal> {
        let (mut parts, body) = req.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        let mut path_and_query = parts.uri.path_and_query().map_or("/".to_owned(), |pq| pq.as_str().to_owned());
        if !injections.is_empty() {
            parts.headers.remove(header::ACCEPT_ENCODING);
        }
        for injection in injections {
            match &injection.place {
                Filled::Header { name, value } => {
                    let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value))
                    else {
                        continue;
                    };
                    parts.headers.remove(&name);
                    let mut value = value;
                    value.set_sensitive(true);
                    parts.headers.insert(name, value);
                }
                Filled::Query { param, value } => {
                    path_and_query = with_query_param(&path_and_query, param, &percent_encode(value));
                }
            }
        }
        parts.uri = path_and_query
            .parse()
            .map_err(|_| refusal(StatusCode::BAD_REQUEST, "bad_request", "the request target cannot be forwarded"))?;
        parts.version = hyper::Version::HTTP_11;
        let limit = usize::try_from(self.proxy.settings.max_request_bytes).unwrap_or(usize::MAX);
        let body = http_body_util::Limited::new(body, limit).boxed();
        Ok(Request::from_parts(parts, body))
    }

    /// Sends on a kept connection of this agent to this host, or a new one; the answer's body
    /// hands the connection back when it has been read to the end.
    async fn send(&self, req: Request<ProxyBody>) -> Result<Response<PooledBody>, Refusal> {
        let key = Key { agent: self.token.clone(), host: self.host.clone(), port: self.port };
        let pool = self.proxy.upstreams.clone();
        let mut sender = match pool.take(&key).await {
            Some(sender) => sender,
            None => self.connect_upstream().await?,
        };
        let resp = sender.send_request(req).await.map_err(|e| {
            tracing::debug!(error = %e, host = %self.host, "upstream request failed");
            refusal(StatusCode::BAD_GATEWAY, "upstream_failed", "the upstream did not answer")
        })?;
        Ok(resp.map(|body| PooledBody::new(body, pool, key, sender)))
    }

    async fn connect_upstream(&self) -> Result<Sender, Refusal> {
        let unreachable =
            |msg: &str| refusal(StatusCode::BAD_GATEWAY, "upstream_unreachable", format!("{}: {msg}", self.host));
        let settings = &self.proxy.settings;
        let addrs: Vec<SocketAddr> = match settings.resolve.get(&self.host) {
            Some(ip) => vec![SocketAddr::new(*ip, self.port)],
            None => {
                let found: Vec<SocketAddr> = tokio::net::lookup_host((self.host.as_str(), self.port))
                    .await
                    .map_err(|_| unreachable("the name does not resolve"))?
                    .collect();
                let allowed: Vec<SocketAddr> =
                    found.iter().copied().filter(|a| settings.allow_private_upstreams || is_public(a.ip())).collect();
                if allowed.is_empty() && !found.is_empty() {
                    return Err(refusal(
                        StatusCode::FORBIDDEN,
                        "upstream_not_allowed",
                        "the host resolves to a loopback, private or link-local address",
                    ));
                }
                allowed
            }
        };
        let connect = async {
            let tcp = tokio::net::TcpStream::connect(&addrs[..]).await.map_err(|_| unreachable("cannot connect"))?;
            let _ = tcp.set_nodelay(true);
            let name = rustls::pki_types::ServerName::try_from(self.host.clone())
                .map_err(|_| unreachable("not a valid TLS server name"))?;
            tokio_rustls::TlsConnector::from(self.proxy.upstream_tls.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| unreachable(&format!("TLS with the upstream failed: {e}")))
        };
        let tls = tokio::time::timeout(UPSTREAM_CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| unreachable("connecting timed out"))??;
        // A small fixed read buffer: kept connections would otherwise each hold an adaptive
        // 8 KiB+ one.
        let (sender, conn) = hyper::client::conn::http1::Builder::new()
            .read_buf_exact_size(Some(UPSTREAM_READ_BUF))
            .handshake(TokioIo::new(tls))
            .await
            .map_err(|_| unreachable("HTTP handshake failed"))?;
        // Ends when the last sender is dropped (the pool let the connection go) or the upstream
        // closes it.
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }
}

fn declared_length(headers: &hyper::HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// Removes hop-by-hop headers, including those the `Connection` header names.
fn strip_hop_by_hop(headers: &mut hyper::HeaderMap) {
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|s| s.trim().to_ascii_lowercase()))
        .filter(|s| !s.is_empty())
        .collect();
    for name in HOP_BY_HOP.iter().copied().chain(named.iter().map(String::as_str)) {
        headers.remove(name);
    }
}

/// `path?query` with every `param` the agent sent removed (compared after percent-decoding the
/// name) and `param=value` appended.
fn with_query_param(path_and_query: &str, param: &str, encoded_value: &str) -> String {
    let (path, query) = path_and_query.split_once('?').unwrap_or((path_and_query, ""));
    let mut out = String::with_capacity(path_and_query.len() + param.len() + encoded_value.len() + 2);
    out.push_str(path);
    let mut sep = '?';
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let name = pair.split('=').next().unwrap_or("");
        if percent_decode(name).as_deref() == Some(param) {
            continue;
        }
        out.push(sep);
        out.push_str(pair);
        sep = '&';
    }
    out.push(sep);
    out.push_str(param);
    out.push('=');
    out.push_str(encoded_value);
    out
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Not loopback, private, link-local, shared (CGNAT), unspecified or multicast.
fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64))
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public(IpAddr::V4(v4)),
            None => {
                let s = v6.segments();
                !(v6.is_loopback()
                    || v6.is_unspecified()
                    || v6.is_multicast()
                    || (s[0] & 0xfe00) == 0xfc00
                    || (s[0] & 0xffc0) == 0xfe80)
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_injection_replaces_the_agents_own_parameter() {
        assert_eq!(with_query_param("/v1/x", "key", "s%20k"), "/v1/x?key=s%20k");
        assert_eq!(with_query_param("/v1/x?a=1&key=mine&b=2", "key", "K"), "/v1/x?a=1&b=2&key=K");
        assert_eq!(with_query_param("/?ke%79=mine&key", "key", "K"), "/?key=K");
    }

    #[test]
    fn private_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "169.254.169.254",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "0.0.0.0",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["1.1.1.1", "2606:4700::1111"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn hop_by_hop_headers_go() {
        let mut h = hyper::HeaderMap::new();
        h.insert(header::CONNECTION, "close, X-Secret-Hop".parse().unwrap());
        h.insert("x-secret-hop", "1".parse().unwrap());
        h.insert(header::PROXY_AUTHORIZATION, "Basic x".parse().unwrap());
        h.insert("x-kept", "1".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }
}
