//! Serving the router on a plain TCP listener: one hyper HTTP/1.1 connection per socket, graceful
//! shutdown, and *handoff*: a handler may take its raw socket away from hyper.
//!
//! Handoff exists for the commercial tarpit. A connection inside hyper carries about 19 KB of
//! buffers and state for as long as it is open; a scanner held for 30 seconds needs none of that.
//! A handler that finds a [`Handoff`] in its request's extensions may call [`Handoff::take`] with
//! what to do with the socket and then never finish: the connection task drops hyper's
//! connection (buffers, service, the pending handler) and runs the takeover as a task of its own,
//! which owns little more than the socket. Nothing of the pending response is ever written.
//!
//! Must never: write to a socket after handing it off, or end before every connection it started
//! (handed-off ones included) has closed once shutdown began. TLS listeners (`node::tls`) are
//! served by axum-server and offer no handoff; handlers must work without one.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tower::ServiceExt;

/// What a handler does with a socket it took over.
pub type Takeover = Box<dyn FnOnce(TcpStream) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

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

/// How long in-flight requests get to finish once shutdown has begun; connections still busy
/// after that (a client sending a body at a trickle) are dropped, so a stop never hangs.
pub const GRACE: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` until `shutdown` resolves, then lets in-flight requests finish and
/// waits for every connection, handed-off ones included, to close: at most [`GRACE`].
pub async fn serve(listener: TcpListener, app: Router, shutdown: impl Future<Output = ()>) {
    // Connections watch `stop` to begin their graceful shutdown, and each holds a clone of
    // `open` until it closes, so `closed()` on its sender tells when all are gone.
    let (stop_tx, stop_rx) = watch::channel(false);
    let (open_tx, open_rx) = watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            biased;
            () = &mut shutdown => break,
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
        tokio::spawn(connection(stream, remote, app.clone(), stop_rx.clone(), open_rx.clone()));
    }
    drop(listener);
    stop_tx.send_replace(true);
    drop(open_rx);
    if tokio::time::timeout(GRACE, open_tx.closed()).await.is_err() {
        tracing::warn!(open = open_tx.receiver_count(), "dropping connections still busy after the grace period");
    }
    // Returning drops `stop_tx`, which ends every connection task still running.
}

fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(e.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset)
}

async fn connection(
    stream: TcpStream,
    remote: SocketAddr,
    app: Router,
    mut stop: watch::Receiver<bool>,
    open: watch::Receiver<()>,
) {
    let (handoff, mut taken) = Handoff::new();
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(remote));
        req.extensions_mut().insert(handoff.clone());
        app.clone().oneshot(req.map(Body::new))
    });
    // The timer gives hyper its default 30 s limit for reading a request head (slow-loris).
    // Half-close: hyper otherwise reads the socket again while a request is in flight, to
    // notice a client that went away; that read needs a fresh 8 KB buffer every time (the
    // request still shares the old one) plus a syscall, and would cancel a handler between
    // its audit commit and its answer. A vanished client is noticed when the answer is written.
    let mut conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .half_close(true)
        .serve_connection(TokioIo::new(stream), service);
    let mut handed_off = false;
    loop {
        tokio::select! {
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
                let stream = conn.into_parts().io.into_inner();
                tokio::spawn(async move {
                    takeover(stream).await;
                    drop(open);
                });
                return;
            }
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
