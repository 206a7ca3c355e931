//! The tarpit: an unrecognised request is held open, one byte a second, to waste a scanner's
//! time. At most [`Tarpit::max`] are held at once (beyond that: an immediate plain 404), and all
//! are released within a second of shutdown starting.
//!
//! The body is JSON: the dripped bytes are spaces (leading whitespace is valid JSON) and the
//! final chunk is the usual `{"error":"not_found",…}`, so a slow client still gets a proper answer.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

const FINAL: &str = r#"{"error":"not_found","message":"not found"}"#;

struct Tarpit {
    hold_secs: u64,
    max: usize,
}

static CONFIG: OnceLock<Tarpit> = OnceLock::new();
static HELD: AtomicUsize = AtomicUsize::new(0);

/// Reads `CLAVITOR_TARPIT_HOLD_SECS` (1–300, default 30) and `CLAVITOR_TARPIT_MAX`
/// (1–100000, default 1000).
pub fn configure_from_env() -> Result<(), String> {
    let read = |name: &str, default: u64, max: u64| -> Result<u64, String> {
        match std::env::var(name) {
            Err(_) => Ok(default),
            Ok(v) => v
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|n| (1..=max).contains(n))
                .ok_or_else(|| format!("{name} must be 1 to {max}")),
        }
    };
    let hold_secs = read("CLAVITOR_TARPIT_HOLD_SECS", 30, 300)?;
    let max = read("CLAVITOR_TARPIT_MAX", 1000, 100_000)? as usize;
    let _ = CONFIG.set(Tarpit { hold_secs, max });
    Ok(())
}

fn config() -> &'static Tarpit {
    CONFIG.get_or_init(|| Tarpit { hold_secs: 30, max: 1000 })
}

/// Decrements the held count when the response body is dropped (finished or disconnected).
struct Held;

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

pub async fn hold() -> Response {
    let cfg = config();
    if HELD.fetch_add(1, Ordering::AcqRel) >= cfg.max {
        HELD.fetch_sub(1, Ordering::AcqRel);
        return json_404(Body::from(FINAL));
    }
    let held = Held;
    let stream = futures_util::stream::unfold((0u64, Some(held)), move |(sent, held)| async move {
        let held = held?;
        if sent >= cfg.hold_secs {
            drop(held);
            return Some((Ok::<_, std::convert::Infallible>(Bytes::from_static(FINAL.as_bytes())), (sent, None)));
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => Some((Ok(Bytes::from_static(b" ")), (sent + 1, Some(held)))),
            () = crate::edition::shutdown_started() => {
                drop(held);
                Some((Ok(Bytes::from_static(FINAL.as_bytes())), (cfg.hold_secs, None)))
            }
        }
    });
    json_404(Body::from_stream(stream))
}
