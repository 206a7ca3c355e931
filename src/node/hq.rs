//! HQ telemetry: the payload as JSON, `POST {host}/v1/telemetry` with the bearer token, every
//! `freq` seconds, when `edition::telemetry_settings()` is set (commercial: when configured;
//! community: only with explicit flags). One background thread; never on the request path.
//! Failures are logged once per change of state; the token never reaches a log.

use std::time::{Duration, Instant};

use super::payload::PayloadSource;
use crate::edition::TelemetrySettings;

const TIMEOUT: Duration = Duration::from_secs(10);

/// Starts the sender thread.
pub fn spawn(settings: &TelemetrySettings, mut source: PayloadSource) -> std::io::Result<()> {
    let url = format!("{}/v1/telemetry", settings.host);
    let auth = zeroize::Zeroizing::new(format!("Bearer {}", settings.token.as_str()));
    let freq = settings.freq;
    std::thread::Builder::new().name("hq-telemetry".into()).spawn(move || {
        let agent: ureq::Agent = crate::outbound::client(TIMEOUT);
        let mut last: Option<Result<(), String>> = None;
        let mut next = Instant::now();
        loop {
            let payload = source.collect();
            let outcome = match serde_json::to_string(&payload) {
                Err(e) => Err(format!("cannot serialise the payload: {e}")),
                Ok(body) => match agent
                    .post(&url)
                    .header("Authorization", auth.as_str())
                    .content_type("application/json")
                    .send(&body)
                {
                    Ok(resp) if resp.status().is_success() => Ok(()),
                    Ok(resp) => Err(format!("HTTP status {}", resp.status().as_u16())),
                    Err(e) => Err(super::kuma::describe(&e)),
                },
            };
            if last.as_ref() != Some(&outcome) {
                match &outcome {
                    Ok(()) => tracing::info!(host = %url, "HQ telemetry delivered"),
                    Err(e) => tracing::warn!(host = %url, error = %e, "HQ telemetry failed (logged again only when this changes)"),
                }
                last = Some(outcome);
            }
            next += freq;
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            } else {
                next = now;
            }
        }
    })?;
    Ok(())
}
