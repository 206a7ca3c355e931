//! Operator alerts to HQ: `POST {TELEMETRY_HOST}/v1/alerts` with the bearer token.
//!
//! A bounded queue feeds one sender thread, so raising an alert never blocks or slows a
//! request: when HQ is slow or down the queue fills, the oldest alert is dropped and counted.
//! Each alert is tried a few times with the integer backoff table, then given up on.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use crate::edition::TelemetrySettings;

const QUEUE_CAP: usize = 256;
const BACKOFF: [Duration; 3] = [Duration::from_secs(1), Duration::from_secs(5), Duration::from_secs(25)];
const TIMEOUT: Duration = Duration::from_secs(5);

struct Queue {
    items: Mutex<VecDeque<Value>>,
    ready: Condvar,
    dropped: AtomicU64,
}

static QUEUE: OnceLock<Queue> = OnceLock::new();

/// Starts the sender thread (once).
pub fn start(settings: &TelemetrySettings) {
    if QUEUE.get().is_some() {
        return;
    }
    let queue = QUEUE.get_or_init(|| Queue {
        items: Mutex::new(VecDeque::new()),
        ready: Condvar::new(),
        dropped: AtomicU64::new(0),
    });
    let url = format!("{}/v1/alerts", settings.host);
    let auth = format!("Bearer {}", settings.token.as_str());
    let spawned = std::thread::Builder::new().name("alert-sender".into()).spawn(move || sender(queue, &url, &auth));
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the alert sender; alerts stay local");
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).unwrap_or_default()
}

pub fn enqueue(kind: &str, message: &str, details: &[(&str, String)]) {
    let Some(queue) = QUEUE.get() else { return };
    let details: serde_json::Map<String, Value> =
        details.iter().map(|(k, v)| ((*k).to_owned(), Value::String(v.clone()))).collect();
    let region = crate::edition::telemetry_settings().and_then(|s| s.pop_region.clone());
    let payload = json!({
        "edition": "commercial",
        "type": kind,
        "message": message,
        "details": details,
        "hostname": hostname(),
        "pop_region": region,
        "timestamp": humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
    });
    let mut items = queue.items.lock().unwrap_or_else(|p| p.into_inner());
    if items.len() >= QUEUE_CAP {
        items.pop_front();
        let dropped = queue.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        if dropped.is_power_of_two() {
            tracing::warn!(dropped, "alert queue full: dropping the oldest alerts");
        }
    }
    items.push_back(payload);
    queue.ready.notify_one();
}

fn sender(queue: &Queue, url: &str, auth: &str) {
    let agent: ureq::Agent = crate::outbound::client(TIMEOUT);
    let mut failing = false;
    loop {
        let payload = {
            let mut items = queue.items.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                if let Some(p) = items.pop_front() {
                    break p;
                }
                items = queue.ready.wait(items).unwrap_or_else(|p| p.into_inner());
            }
        };
        let body = payload.to_string();
        let mut delivered = false;
        for (attempt, pause) in std::iter::once(Duration::ZERO).chain(BACKOFF).enumerate() {
            std::thread::sleep(pause);
            match agent.post(url).header("Authorization", auth).content_type("application/json").send(&body) {
                Ok(resp) if resp.status().is_success() => {
                    delivered = true;
                    break;
                }
                Ok(resp) if resp.status().is_client_error() && resp.status().as_u16() != 429 => {
                    tracing::warn!(status = resp.status().as_u16(), "HQ refused an alert; not retrying");
                    break;
                }
                Ok(resp) => tracing::debug!(attempt, status = resp.status().as_u16(), "alert delivery failed"),
                Err(e) => tracing::debug!(attempt, error = %e, "alert delivery failed"),
            }
        }
        // Log state changes only, not every failed attempt.
        if delivered && failing {
            tracing::info!("alert delivery to HQ works again");
        } else if !delivered && !failing {
            tracing::warn!("cannot deliver operator alerts to HQ; they stay in the local log");
        }
        failing = !delivered;
    }
}
