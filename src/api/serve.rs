//! The one hardened listener: every public port (plain HTTP, TLS, the :80 redirect) is served by
//! [`serve`], so no limit exists on one and not another. It owns, per process:
//!
//! - **Connection caps** ([`Gate`]): at most `max_connections` open connections, and at most
//!   `max_connections_per_ip` from one IPv4 address or IPv6 /64. Past either, a new connection is
//!   closed at once, before a byte is read (and before a TLS handshake); open ones keep working.
//! - **Request heads**: at most [`MAX_HEAD`] bytes (hyper answers 431 and closes; `JsonErrors`
//!   gives that answer the JSON error body), read within hyper's 30 s header timeout (slow-loris),
//!   checked every [`HEAD_CHECK`] rather than timed per request ([`HeadTimer`]).
//! - **Request bodies**: read here, before any handler, into one buffer: a declared length over
//!   the limit is refused 413 before a byte of it is read; a chunked body is cut at the limit
//!   (413); a body not complete within `body_timeout`, or arriving slower than `body_min_rate`
//!   after [`RATE_GRACE`], is answered 408. Refusals carry the JSON error body and close the
//!   connection. All bodies being buffered share one budget ([`BODY_BUDGET`]); a body takes its
//!   declared size (a chunked one: the limit) from it before it is read, and waits its turn
//!   (TCP back-pressure) when it is spent, within the body's own deadline.
//! - **TLS**: the handshake runs inside the connection task, after the caps, within
//!   [`HANDSHAKE_TIMEOUT`]; every response over TLS carries HSTS.
//! - **Handoff**: a handler may take its raw socket away from hyper (the commercial tarpit).
//!   A connection inside hyper carries about 19 KB of buffers and state for as long as it is
//!   open; a scanner held for 30 seconds needs none of that. A handler that finds a [`Handoff`]
//!   in its request's extensions may call [`Handoff::take`] and then never finish: the connection
//!   task drops hyper's connection and runs the takeover as a task of its own, which owns little
//!   more than the socket. A handed-off *plain* socket leaves the connection caps (the tarpit
//!   bounds those itself); a handed-off TLS socket keeps its slot, as it still holds rustls state.
//!
//! Must never: read a body before its declared length was checked, write to a socket after
//! handing it off, or end before every connection it started (handed-off ones included) has
//! closed once shutdown began.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use hyper::body::{Body as _, Incoming};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot, watch};
use tokio::time::Instant;
use tower::ServiceExt;

/// Largest request head (request line and headers). hyper answers a larger one 431 and closes.
pub const MAX_HEAD: usize = 16 * 1024;
/// Bytes of request bodies buffered at once, all connections together: 32 bodies of the largest
/// size, or 128 of 64 KiB. Measured (bench/strangers.sh): 500 concurrent 64 KiB uploads cost
/// about 130 KB per connection above idle with 16 MiB here, too much for a 64 MB target; the
/// handler's parsed copy and hyper's buffers come on top of what is counted.
pub const BODY_BUDGET: usize = 8 * 1024 * 1024;
/// How much of [`BODY_BUDGET`] bodies from one address (IPv4, or IPv6 /64) may hold at once:
/// a quarter, so a few slow senders on one address cannot starve everyone else's writes.
pub const BODY_SHARE_PER_IP: usize = BODY_BUDGET / 4;
/// A body is held to the floor rate only after this long: a small body comes in one packet.
pub const RATE_GRACE: Duration = Duration::from_secs(5);
/// A TLS handshake (or an ACME validation connection) that takes longer is dropped, so idle
/// sockets cannot pile up before a request is ever read.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long in-flight requests get to finish once shutdown has begun; connections still busy
/// after that (a client sending a body at a trickle) are dropped, so a stop never hangs.
pub const GRACE: Duration = Duration::from_secs(10);
/// Sent on every response over TLS: browsers then never try plain http for this host.
pub const HSTS: &str = "max-age=31536000";

/// The listener's limits (flags `--max-connections`, `--max-connections-per-ip`,
/// `--body-timeout-secs`, `--body-min-rate`).
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub body_timeout: Duration,
    /// Bytes per second a body must average after [`RATE_GRACE`]; 0 turns the floor off.
    pub body_min_rate: u64,
    pub max_body: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
            body_timeout: Duration::from_secs(30),
            body_min_rate: DEFAULT_BODY_MIN_RATE,
            max_body: super::MAX_BODY,
        }
    }
}

/// Sized for a 1-vCPU / 512 MB node: a connection stuck in a partial head or body costs about
/// 20 KB, so a full house is about 20 MB above idle, plus at most [`BODY_BUDGET`] of bodies.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Enough for a NAT full of browsers and agents; one address cannot take the whole node.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 64;
/// 1 KiB/s: a 256 KiB body on a link that slow would miss the 30 s timeout anyway.
pub const DEFAULT_BODY_MIN_RATE: u64 = 1024;

/// Admission for every listener of the process: the connection counts and the body budget.
pub struct Gate {
    limits: Limits,
    open: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    /// In KiB.
    body_budget: Arc<Semaphore>,
    /// KiB of the body budget each address holds (see [`BODY_SHARE_PER_IP`]).
    body_per_ip: Mutex<HashMap<IpAddr, u32>>,
}

impl Gate {
    pub fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            open: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
            body_budget: Arc::new(Semaphore::new(BODY_BUDGET / 1024)),
            body_per_ip: Mutex::new(HashMap::new()),
        })
    }

    /// Books `kib` of `ip`'s share of the body budget; None if that would pass the share.
    fn book_body(self: &Arc<Self>, ip: IpAddr, kib: u32) -> Option<BodyShare> {
        let key = ip_key(ip);
        let mut held = self.body_per_ip.lock().unwrap_or_else(|p| p.into_inner());
        let now = held.get(&key).copied().unwrap_or(0);
        if now as usize + kib as usize > BODY_SHARE_PER_IP / 1024 {
            return None;
        }
        held.insert(key, now + kib);
        Some(BodyShare { gate: self.clone(), key, kib })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// A slot for a connection from `ip`, or None past either cap.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let key = ip_key(ip);
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        let from_ip = per_ip.get(&key).copied().unwrap_or(0);
        if from_ip >= self.limits.max_connections_per_ip {
            return None;
        }
        if self.open.fetch_add(1, Ordering::AcqRel) >= self.limits.max_connections {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        per_ip.insert(key, from_ip + 1);
        Some(Slot { gate: self.clone(), key })
    }
}

/// IPv4 (also when mapped into IPv6) by address, IPv6 by /64: one host usually owns a /64.
fn ip_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
}

/// An address's booked share of the body budget; given back when dropped.
struct BodyShare {
    gate: Arc<Gate>,
    key: IpAddr,
    kib: u32,
}

impl Drop for BodyShare {
    fn drop(&mut self) {
        let mut held = self.gate.body_per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = held.get_mut(&self.key) {
            *n = n.saturating_sub(self.kib);
            if *n == 0 {
                held.remove(&self.key);
            }
        }
    }
}

/// One admitted connection; gives its place back when dropped.
pub(crate) struct Slot {
    gate: Arc<Gate>,
    key: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.gate.open.fetch_sub(1, Ordering::AcqRel);
        let mut per_ip = self.gate.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = per_ip.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&self.key);
            }
        }
    }
}

/// A connection's byte stream: a TCP socket, or a TLS session over one.
pub trait Socket: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Socket for T {}

/// Runs a TLS handshake on an admitted socket. `Ok(None)`: the connection was an ACME
/// validation and is done.
pub type TlsAccept = Arc<
    dyn Fn(TcpStream) -> Pin<Box<dyn Future<Output = std::io::Result<Option<Box<dyn Socket>>>> + Send>> + Send + Sync,
>;

/// What a handler does with a socket it took over.
pub type Takeover = Box<dyn FnOnce(Box<dyn Socket>) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// What a request knows of its connection: the peer's address (audit rows, throttles) and the
/// way to take its socket over. One extension rather than two: a request's extension map holds
/// three entries without growing, and the router adds two (the matched route, path params).
#[derive(Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    pub handoff: Handoff,
}

/// Lets one handler on this connection take the raw socket (see the module docs). Cloned into
/// every request of the connection; only the first [`Handoff::take`] wins.
#[derive(Clone)]
pub struct Handoff(Arc<Mutex<Option<oneshot::Sender<Takeover>>>>);

impl Handoff {
    fn new() -> (Self, oneshot::Receiver<Takeover>) {
        let (tx, rx) = oneshot::channel();
        (Self(Arc::new(Mutex::new(Some(tx)))), rx)
    }

    /// Hands the socket to `takeover` once the current handler is dropped. Returns false if the
    /// socket was already taken or the connection is gone; the caller must then answer normally.
    /// On true the caller must not finish: its response would never be written.
    pub fn take(&self, takeover: Takeover) -> bool {
        let sender = self.0.lock().unwrap_or_else(|p| p.into_inner()).take();
        sender.is_some_and(|tx| tx.send(takeover).is_ok())
    }
}

/// Serves `app` on `listener` (over TLS when `tls` is given) under `gate`'s limits until
/// `shutdown` resolves, then lets in-flight requests finish and waits for every connection,
/// handed-off ones included, to close: at most [`GRACE`].
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAccept>,
    gate: Arc<Gate>,
    app: Router,
    shutdown: impl Future<Output = ()>,
) {
    let drain = Drain::new();
    accept_until(&listener, &gate, shutdown, |stream, remote, slot| {
        let conn = Conn { remote, slot, gate: gate.clone(), app: app.clone(), stop: drain.stop(), open: drain.guard() };
        tokio::spawn(conn.run(stream, tls.clone()));
    })
    .await;
    drop(listener);
    drain.finish("connections").await;
}

/// The graceful shutdown of one listener's connections (the API's here, the proxy's).
/// Each connection watches [`stop`](Self::stop) to begin its graceful shutdown and holds a
/// [`guard`](Self::guard) until it is done; [`finish`](Self::finish) turns `stop` true and
/// waits for every guard to go, at most [`GRACE`].
pub(crate) struct Drain {
    stop_tx: watch::Sender<bool>,
    stop_rx: watch::Receiver<bool>,
    open_tx: watch::Sender<()>,
    open_rx: watch::Receiver<()>,
}

impl Drain {
    pub(crate) fn new() -> Self {
        let (stop_tx, stop_rx) = watch::channel(false);
        let (open_tx, open_rx) = watch::channel(());
        Self { stop_tx, stop_rx, open_tx, open_rx }
    }

    /// Turns true when the shutdown begins; errs once the grace period is over.
    pub(crate) fn stop(&self) -> watch::Receiver<bool> {
        self.stop_rx.clone()
    }

    /// Held by a connection (or work it leaves behind) until it is done.
    pub(crate) fn guard(&self) -> watch::Receiver<()> {
        self.open_rx.clone()
    }

    /// Begins the shutdown and waits for every guard, at most [`GRACE`]; `what` names the
    /// connections in the warning about those still busy. Returning drops the `stop` sender,
    /// which ends every connection task still running.
    pub(crate) async fn finish(self, what: &str) {
        let Drain { stop_tx, stop_rx, open_tx, open_rx } = self;
        stop_tx.send_replace(true);
        drop((stop_rx, open_rx));
        if tokio::time::timeout(GRACE, open_tx.closed()).await.is_err() {
            tracing::warn!(open = open_tx.receiver_count(), "dropping {what} still busy after the grace period");
        }
    }
}

/// Accepts connections until `shutdown` resolves, admitting each through `gate` (one refused
/// over a cap is closed before anything is read or allocated for it) and handing it with its
/// slot to `each`. The one accept loop of every listener (API, TLS, proxy), so none of them
/// lacks a cap or the back-off.
pub(crate) async fn accept_until(
    listener: &TcpListener,
    gate: &Arc<Gate>,
    shutdown: impl Future<Output = ()>,
    mut each: impl FnMut(tokio::net::TcpStream, SocketAddr, Slot),
) {
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            biased;
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(ok) => ok,
                Err(e) => {
                    // Out of file descriptors and the like: the error repeats until a socket
                    // closes, so back off rather than spin. Per-connection errors (reset before
                    // accept) are retried at once.
                    if !is_connection_error(&e) {
                        tracing::warn!(error = %e, "accept failed; retrying in a second");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    continue;
                }
            },
        };
        let Some(slot) = gate.admit(remote.ip()) else {
            tracing::debug!(%remote, "connection refused: over the connection cap");
            continue;
        };
        each(stream, remote, slot);
    }
}

fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(e.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset)
}

struct Conn {
    remote: SocketAddr,
    slot: Slot,
    gate: Arc<Gate>,
    app: Router,
    stop: watch::Receiver<bool>,
    open: watch::Receiver<()>,
}

impl Conn {
    async fn run(self, stream: TcpStream, tls: Option<TlsAccept>) {
        let is_tls = tls.is_some();
        let socket: Box<dyn Socket> = match tls {
            None => Box::new(stream),
            Some(accept) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, accept(stream)).await {
                Ok(Ok(Some(tls))) => tls,
                Ok(Ok(None)) => return,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, remote = %self.remote, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(remote = %self.remote, "TLS handshake timed out");
                    return;
                }
            },
        };
        self.http(socket, is_tls).await;
    }

    async fn http(self, socket: Box<dyn Socket>, is_tls: bool) {
        let Conn { remote, slot, gate, app, mut stop, open } = self;
        let (handoff, mut taken) = Handoff::new();
        let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let app = app.clone();
            let gate = gate.clone();
            let handoff = handoff.clone();
            async move {
                let (mut parts, body) = req.into_parts();
                let mut resp = match read_body(body, &gate, remote.ip()).await {
                    Ok((bytes, _budget)) => {
                        parts.extensions.insert(Peer { addr: remote, handoff });
                        let req = hyper::Request::from_parts(parts, Body::from(bytes));
                        // `_budget` is held until the handler has answered: the body lives
                        // until then.
                        app.oneshot(req).await?
                    }
                    Err(refusal) => {
                        drop(parts);
                        refusal.response()
                    }
                };
                if is_tls {
                    resp.headers_mut().insert(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static(HSTS));
                }
                Ok::<_, std::convert::Infallible>(resp)
            }
        });
        // The timer gives hyper its default 30 s limit for reading a request head (slow-loris);
        // `head_check` wakes this task so that hyper looks at it (see [`HeadTimer`]).
        // Half-close: hyper otherwise reads the socket again while a request is in flight, to
        // notice a client that went away; that read needs a fresh 8 KB buffer every time (the
        // request still shares the old one) plus a syscall, and would cancel a handler between
        // its audit commit and its answer. A vanished client is noticed when the answer is written.
        let mut conn = hyper::server::conn::http1::Builder::new()
            .timer(HeadTimer)
            .half_close(true)
            .max_buf_size(MAX_HEAD)
            .serve_connection(TokioIo::new(JsonErrors::new(socket)), service);
        let mut handed_off = false;
        let mut head_check = tokio::time::interval_at(Instant::now() + HEAD_CHECK, HEAD_CHECK);
        head_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                // In order, no random start: every turn of a busy connection pays for the draw
                // otherwise, and the other branches fire a few times in a connection's life.
                biased;
                result = &mut conn => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, %remote, "connection ended with an error");
                    }
                    return;
                }
                taken = &mut taken, if !handed_off => {
                    handed_off = true;
                    // Err: the sender went with the service, which cannot happen while `conn` lives.
                    let Ok(takeover) = taken else { continue };
                    // Everything hyper held for this connection is freed here; the new task owns
                    // the socket and keeps `open` so that shutdown still waits for it.
                    let socket = conn.into_parts().io.into_inner().inner;
                    let slot = if is_tls { Some(slot) } else { None };
                    tokio::spawn(async move {
                        takeover(socket).await;
                        drop(slot);
                        drop(open);
                    });
                    return;
                }
                // Nothing to do here: the next turn of the loop polls `conn`, which compares
                // its head deadline (if it is waiting for a head) with the clock.
                _ = head_check.tick() => {}
                changed = stop.changed() => {
                    if changed.is_err() {
                        // `serve` has returned: the grace period is over.
                        return;
                    }
                    Pin::new(&mut conn).graceful_shutdown();
                }
            }
        }
    }
}

/// How often a connection's task wakes to let hyper check its request-head deadline: a head
/// that is not complete 30 s after hyper began to wait for it is cut off within this much more.
const HEAD_CHECK: Duration = Duration::from_secs(5);

/// hyper's timer, for its one use on these connections: the deadline for reading a request
/// head. hyper asks for a new deadline before every request and drops it once the head is in;
/// with tokio's timer each of those entered and left tokio's timer wheel (a lock each way, an
/// allocation and two clock reads per request: about 2 % of a read's CPU in profiles). A
/// [`HeadDeadline`] is only a point in time, compared with the clock when hyper polls it, and
/// registers no wake-up of its own: the connection's task wakes every [`HEAD_CHECK`] and polls
/// hyper, which then finds an expired deadline and closes the connection.
/// Must never be given to a hyper connection whose task does not wake every [`HEAD_CHECK`].
#[derive(Clone, Copy)]
struct HeadTimer;

struct HeadDeadline(std::time::Instant);

impl Future for HeadDeadline {
    type Output = ();

    fn poll(self: Pin<&mut Self>, _cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        if std::time::Instant::now() >= self.0 { std::task::Poll::Ready(()) } else { std::task::Poll::Pending }
    }
}

impl hyper::rt::Sleep for HeadDeadline {}

impl hyper::rt::Timer for HeadTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.sleep_until(std::time::Instant::now() + duration)
    }

    fn sleep_until(&self, deadline: std::time::Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(HeadDeadline(deadline))
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>, new_deadline: std::time::Instant) {
        match sleep.as_mut().downcast_mut_pin::<HeadDeadline>() {
            Some(deadline) => deadline.get_mut().0 = new_deadline,
            None => *sleep = self.sleep_until(new_deadline),
        }
    }
}

/// Gives hyper's own error answers the JSON body every other error has. hyper answers a request
/// it cannot parse (a head over [`MAX_HEAD`]: 431; a malformed one: 400) itself, with no body and
/// no content type, then closes; no hook exists to change that answer. This adapter recognises
/// such a head as it is written (an error status, no `content-type`, nothing after the head:
/// every response of the router has a content type, `api::finish` sees to it) and writes the
/// JSON error in its place. Everything else passes through untouched.
///
/// After such an answer the connection closes while the client may still be sending the rest of
/// its head; closing a socket with unread data makes the kernel send a reset, which can destroy
/// the answer before the client reads it. So shutdown *lingers* (after these answers and after
/// our own 408 and 413): it sends FIN, then reads and discards what still comes, up to
/// [`LINGER_BYTES`] or [`LINGER`], whichever is first. The connection keeps its slot meanwhile.
struct JsonErrors<S> {
    inner: S,
    /// The replacement being written, how much of it is out, and what to report to hyper.
    pending: Option<(Vec<u8>, usize, usize)>,
    /// Set once an error answer was replaced: shutdown lingers.
    linger: Option<Linger>,
}

struct Linger {
    until: Pin<Box<tokio::time::Sleep>>,
    drained: usize,
    fin_sent: bool,
}

/// How long and how much a closing connection reads after an error answer (see [`JsonErrors`]).
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1024 * 1024;

impl<S> JsonErrors<S> {
    fn new(inner: S) -> Self {
        Self { inner, pending: None, linger: None }
    }

    fn start_linger(&mut self) {
        self.linger = Some(Linger { until: Box::pin(tokio::time::sleep(LINGER)), drained: 0, fin_sent: false });
    }

    /// Our own 408 and 413 ([`Refusal`]) leave a body unread, like hyper's errors: linger too.
    fn note_refusal(&mut self, head: &[u8]) {
        if head.starts_with(b"HTTP/1.1 408 ") || head.starts_with(b"HTTP/1.1 413 ") {
            self.start_linger();
        }
    }
}

/// The JSON answer to write instead of `head`, if `head` is hyper's own bodiless error.
fn json_error_for(head: &[u8]) -> Option<Vec<u8>> {
    let rest = head.strip_prefix(b"HTTP/1.1 ")?;
    if !matches!(rest.first(), Some(b'4' | b'5')) || !head.ends_with(b"\r\n\r\n") {
        return None;
    }
    let text = std::str::from_utf8(head).ok()?.to_ascii_lowercase();
    if text.contains("\r\ncontent-type:") || text.matches("\r\n\r\n").count() != 1 {
        return None;
    }
    let status = StatusCode::from_bytes(rest.get(..3)?).ok()?;
    let message = status.canonical_reason().unwrap_or("error");
    let body = serde_json::json!({"error": super::error::code_for(status), "message": message}).to_string();
    crate::node::metrics().record_response(status.as_u16());
    Some(
        format!(
            "HTTP/1.1 {} {message}\r\ncontent-type: application/json\r\ncache-control: no-store\r\n\
             x-content-type-options: nosniff\r\ncontent-length: {}\r\n\r\n{body}",
            status.as_u16(),
            body.len()
        )
        .into_bytes(),
    )
}

impl<S: AsyncWrite + Unpin> JsonErrors<S> {
    /// Writes the pending replacement; Ready(n) reports hyper's `n` bytes as written.
    fn drive(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<usize>> {
        use std::task::Poll;
        while let Some((bytes, done, report)) = &mut self.pending {
            if *done == bytes.len() {
                let n = *report;
                self.pending = None;
                self.start_linger();
                return Poll::Ready(Ok(n));
            }
            match Pin::new(&mut self.inner).poll_write(cx, &bytes[*done..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => *done += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(0))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for JsonErrors<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for JsonErrors<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if self.pending.is_none() {
            match json_error_for(buf) {
                Some(json) => self.pending = Some((json, 0, buf.len())),
                None => {
                    self.note_refusal(buf);
                    return Pin::new(&mut self.inner).poll_write(cx, buf);
                }
            }
        }
        self.drive(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if self.pending.is_none() {
            let total: usize = bufs.iter().map(|b| b.len()).sum();
            let first = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| &b[..]);
            // hyper's bodiless error head is all there is in its write.
            match json_error_for(first).filter(|_| first.len() == total) {
                Some(json) => self.pending = Some((json, 0, total)),
                None => {
                    self.note_refusal(first);
                    return Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
                }
            }
        }
        self.drive(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        let this = &mut *self;
        let Some(linger) = &mut this.linger else {
            return Pin::new(&mut this.inner).poll_shutdown(cx);
        };
        if !linger.fin_sent {
            std::task::ready!(Pin::new(&mut this.inner).poll_shutdown(cx))?;
            linger.fin_sent = true;
        }
        let mut scratch = [0u8; 4096];
        while linger.drained < LINGER_BYTES && linger.until.as_mut().poll(cx).is_pending() {
            let mut buf = tokio::io::ReadBuf::new(&mut scratch);
            match Pin::new(&mut this.inner).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => linger.drained += buf.filled().len(),
                Poll::Ready(_) => break, // EOF or error: nothing more to drain
                Poll::Pending => return Poll::Pending,
            }
        }
        this.linger = None;
        Poll::Ready(Ok(()))
    }
}

/// Why a body was not read to its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    TooLarge,
    TooSlow,
    Broken,
    /// This address already holds its share of the body budget.
    Busy,
}

impl Refusal {
    fn response(self) -> Response {
        let (status, message) = match self {
            Refusal::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "the request body is too large"),
            Refusal::TooSlow => (StatusCode::REQUEST_TIMEOUT, "the request body did not arrive in time"),
            Refusal::Broken => (StatusCode::BAD_REQUEST, "the request body could not be read"),
            Refusal::Busy => {
                (StatusCode::TOO_MANY_REQUESTS, "too many request bodies in flight from this address; retry shortly")
            }
        };
        let body = serde_json::json!({"error": super::error::code_for(status), "message": message}).to_string();
        let mut resp = Response::new(Body::from(body));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        // The rest of the body is never read: the connection cannot carry another request.
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        crate::node::metrics().record_response(status.as_u16());
        resp
    }
}

/// Reads a whole body under the limits, copying it out of hyper's read buffers (a small chunk
/// would otherwise pin a whole buffer). Returns the bytes and their share of the body budget.
async fn read_body(
    mut body: Incoming,
    gate: &Arc<Gate>,
    ip: IpAddr,
) -> Result<(Bytes, Option<(OwnedSemaphorePermit, BodyShare)>), Refusal> {
    if body.is_end_stream() {
        return Ok((Bytes::new(), None));
    }
    let limits = &gate.limits;
    // A declared Content-Length is the exact size hint: refused before a byte is read.
    if body.size_hint().lower() > limits.max_body as u64 {
        return Err(Refusal::TooLarge);
    }
    let started = Instant::now();
    let deadline = started + limits.body_timeout;
    // The whole body's share of the budget is taken before a byte is read, in one piece and in
    // arrival order (tokio's semaphore is fair): bodies taking it chunk by chunk would each hold
    // a part and all wait for more. A chunked body (no declared length) takes the largest size.
    let declared = body.size_hint().exact().map(|n| n as usize);
    let reserve = declared.unwrap_or(limits.max_body);
    let permits = u32::try_from(reserve.div_ceil(1024).max(1)).map_err(|_| Refusal::TooLarge)?;
    // Past its share, an address is told to come back rather than queued: its own slow bodies
    // must not hold the budget that everyone else's writes wait for.
    let share = gate.book_body(ip, permits).ok_or(Refusal::Busy)?;
    let permit = tokio::time::timeout_at(deadline, gate.body_budget.clone().acquire_many_owned(permits))
        .await
        .map_err(|_| Refusal::TooSlow)?
        .map_err(|_| Refusal::Broken)?;
    // Time spent waiting for the budget is ours, not the client's: it does not count for the rate.
    let waited = started.elapsed();
    let mut check = tokio::time::interval_at(Instant::now() + RATE_GRACE, Duration::from_secs(1));
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    // Counted in the budget already, so the declared size can be allocated at once (no regrowth).
    let mut buf: Vec<u8> = Vec::with_capacity(declared.unwrap_or(0));
    loop {
        let frame = tokio::select! {
            frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)) => frame,
            () = tokio::time::sleep_until(deadline) => return Err(Refusal::TooSlow),
            _ = check.tick(), if limits.body_min_rate > 0 => {
                let elapsed = started.elapsed().saturating_sub(waited + RATE_GRACE);
                if (buf.len() as u128) < u128::from(limits.body_min_rate) * elapsed.as_millis() / 1000 {
                    return Err(Refusal::TooSlow);
                }
                continue;
            }
        };
        let data = match frame {
            None => break,
            Some(Err(_)) => return Err(Refusal::Broken),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                Err(_) => continue, // trailers
            },
        };
        if buf.len() + data.len() > limits.max_body {
            return Err(Refusal::TooLarge);
        }
        // Exact growth for chunked bodies: what is held stays within what was reserved.
        buf.reserve_exact(data.len());
        buf.extend_from_slice(&data);
    }
    Ok((Bytes::from(buf), Some((permit, share))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_count_per_address_and_in_total() {
        let gate = Gate::new(Limits { max_connections: 3, max_connections_per_ip: 2, ..Limits::default() });
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        let a1 = gate.admit(a).unwrap();
        let _a2 = gate.admit(a).unwrap();
        assert!(gate.admit(a).is_none(), "per-address cap");
        let _b1 = gate.admit(b).unwrap();
        assert!(gate.admit(b).is_none(), "total cap");
        drop(a1);
        assert!(gate.admit(b).is_some(), "a closed connection gives its place back");
    }

    #[test]
    fn only_hypers_bodiless_error_heads_are_replaced() {
        let hyper_431 = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let json = String::from_utf8(json_error_for(hyper_431).unwrap()).unwrap();
        assert!(json.starts_with("HTTP/1.1 431 "), "{json}");
        assert!(
            json.ends_with(r#"{"error":"headers_too_large","message":"Request Header Fields Too Large"}"#),
            "{json}"
        );
        // The router's own errors carry a content type; successes and bodies are never touched.
        assert!(json_error_for(b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\n\r\n").is_none());
        assert!(json_error_for(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_none());
        assert!(json_error_for(b"HTTP/1.1 400 Bad\r\ncontent-length: 2\r\n\r\n{}").is_none());
        assert!(json_error_for(b"{\"HTTP/1.1 431\"}").is_none());
    }

    #[test]
    fn ipv6_hosts_count_by_prefix() {
        let one: IpAddr = "2001:db8::1".parse().unwrap();
        let two: IpAddr = "2001:db8::ffff:2".parse().unwrap();
        assert_eq!(ip_key(one), ip_key(two));
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert_eq!(ip_key(mapped), "127.0.0.1".parse::<IpAddr>().unwrap());
    }
}
