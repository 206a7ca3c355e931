//! The tarpit: an unrecognised request is held open, one byte a second, to waste a scanner's
//! time. At most [`Tarpit::max`] are held at once (beyond that: an immediate plain 404), and all
//! are released within a second of shutdown starting.
//!
//! The body is JSON: the dripped bytes are spaces (leading whitespace is valid JSON) and the
//! final chunk is the usual `{"error":"not_found",…}`, so a slow client still gets a proper answer.
//!
//! A held connection is taken out of hyper ([`Handoff`](crate::api::serve::Handoff)) and dripped by a small task that owns
//! only the socket: a thousand held scanners then cost about a megabyte rather than hyper's
//! ~19 KB each. A handed-off plain socket leaves the listener's connection caps, so held scanners
//! never take places real clients need: this module's own `max` bounds them. A handed-off TLS
//! socket keeps its place (it still holds rustls state), so on TLS scanners count against the
//! caps like any client. Where no handoff is offered (HEAD) the bytes are streamed through hyper.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::api::serve::{Peer, Socket};
use axum::Extension;
use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

const FINAL: &str = r#"{"error":"not_found","message":"not found"}"#;

struct Tarpit {
    hold_secs: u64,
    max: usize,
}

static CONFIG: OnceLock<Tarpit> = OnceLock::new();
static HELD: AtomicUsize = AtomicUsize::new(0);

/// Reads `CLAVITOR_TARPIT_HOLD_SECS` (0–300, default 30; 0: no hold, the 404 goes at once) and
/// `CLAVITOR_TARPIT_MAX` (1–100000, default 1000).
pub fn configure_from_env() -> Result<(), String> {
    let read = |name: &str, default: u64, range: std::ops::RangeInclusive<u64>| -> Result<u64, String> {
        match std::env::var(name) {
            Err(_) => Ok(default),
            Ok(v) => v
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|n| range.contains(n))
                .ok_or_else(|| format!("{name} must be {} to {}", range.start(), range.end())),
        }
    };
    let hold_secs = read("CLAVITOR_TARPIT_HOLD_SECS", 30, 0..=300)?;
    let max = read("CLAVITOR_TARPIT_MAX", 1000, 1..=100_000)? as usize;
    let _ = CONFIG.set(Tarpit { hold_secs, max });
    Ok(())
}

fn config() -> &'static Tarpit {
    CONFIG.get_or_init(|| Tarpit { hold_secs: 30, max: 1000 })
}

/// One held connection; decrements the held count when dropped (finished or disconnected).
struct Held;

impl Held {
    /// None when `max` are already held.
    fn acquire(max: usize) -> Option<Self> {
        if HELD.fetch_add(1, Ordering::AcqRel) >= max {
            HELD.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Self)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        HELD.fetch_sub(1, Ordering::AcqRel);
    }
}

fn json_404(body: Body) -> Response {
    let mut resp = (StatusCode::NOT_FOUND, body).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

pub async fn hold(method: Method, peer: Option<Extension<Peer>>) -> Response {
    let cfg = config();
    let Some(held) = Held::acquire(cfg.max) else {
        return json_404(Body::from(FINAL));
    };
    // A HEAD response has no body to drip; hyper's streaming path below handles it.
    if let Some(Extension(Peer { handoff, .. })) = peer.filter(|_| method != Method::HEAD) {
        if handoff.take(Box::new(move |stream| Box::pin(drip(stream, held, cfg.hold_secs)))) {
            // The connection task drops this handler unfinished and runs `drip` instead.
            return std::future::pending().await;
        }
        // Refused (the connection is going away): the takeover and its `Held` are dropped.
        return json_404(Body::from(FINAL));
    }
    json_404(Body::from_stream(drips(held, cfg.hold_secs).map(Ok::<_, std::convert::Infallible>)))
}

/// The body, chunk by chunk: a space a second for `hold_secs`, then the JSON answer; the answer
/// comes at once when shutdown begins. `held` is released with the answer.
fn drips(held: Held, hold_secs: u64) -> impl futures_util::Stream<Item = Bytes> + Send {
    futures_util::stream::unfold((0u64, Some(held)), move |(sent, held)| async move {
        let held = held?;
        if sent >= hold_secs {
            drop(held);
            return Some((Bytes::from_static(FINAL.as_bytes()), (sent, None)));
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => Some((Bytes::from_static(b" "), (sent + 1, Some(held)))),
            () = crate::edition::shutdown_started() => {
                drop(held);
                Some((Bytes::from_static(FINAL.as_bytes()), (hold_secs, None)))
            }
        }
    })
}

/// The head hyper would write for the streamed response.
const RAW_HEAD: &[u8] = b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncache-control: no-store\r\n\
transfer-encoding: chunked\r\nconnection: close\r\n\r\n";

/// The same response on a socket taken out of hyper, with hyper's chunked framing. Ends early
/// when the client goes away.
async fn drip(mut stream: Box<dyn Socket>, held: Held, hold_secs: u64) {
    if stream.write_all(RAW_HEAD).await.is_err() {
        return;
    }
    let mut chunks = std::pin::pin!(drips(held, hold_secs));
    while let Some(chunk) = chunks.next().await {
        let framed = [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
        if stream.write_all(&framed).await.is_err() {
            return;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let _ = stream.shutdown().await;
}
