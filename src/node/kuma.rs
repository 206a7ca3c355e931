//! Push to Uptime Kuma: every interval (30 s by default) a request to the monitor's push URL
//! with `status=up|down`, a short human `msg`, and `ping` = milliseconds of a self-check.
//!
//! Kuma reads only the query string (`status` must be exactly `up` to count as up). The node
//! reports itself down when a database fails its integrity check, the certificate has under
//! 14 days left, the disk is over 90 % full, or the self-check fails. The push URL carries
//! Kuma's secret token: it is never logged, and delivery errors are described without it.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use super::NodeError;
use super::integrity::{self, DbIntegrity};
use super::payload::{Payload, PayloadSource};
use crate::outbound::PlainHttp;

pub const DEFAULT_INTERVAL_SECS: u64 = 30;
pub const CERT_MIN_DAYS: i64 = 14;
pub const DISK_MAX_PCT: u8 = 90;
/// How long after start a TLS node may run without a certificate before it reports down.
pub const CERT_GRACE_SECS: u64 = 300;
const TIMEOUT: Duration = Duration::from_secs(10);

/// Validated push settings.
pub struct KumaSettings {
    /// The push URL without a query string. Secret.
    url: Zeroizing<String>,
    pub interval: Duration,
    /// Disk usage (percent) above which the node reports down.
    pub disk_max_pct: f64,
}

impl std::fmt::Debug for KumaSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KumaSettings").field("interval", &self.interval).finish_non_exhaustive()
    }
}

impl KumaSettings {
    /// From `--kuma-push-url` or `--kuma-push-url-file` (not both); None when neither is set.
    /// `plain`: whether `--kuma-allow-plain-http` said the path to Kuma is encrypted already.
    pub fn resolve(
        url: Option<String>,
        url_file: Option<PathBuf>,
        interval_secs: u64,
        disk_max_pct: u8,
        plain: PlainHttp,
    ) -> Result<Option<Self>, NodeError> {
        let url = Zeroizing::new(match (url, url_file) {
            (None, None) => return Ok(None),
            (Some(_), Some(_)) => {
                return Err(NodeError::Config("give --kuma-push-url or --kuma-push-url-file, not both".into()));
            }
            (Some(u), None) => u,
            (None, Some(path)) => std::fs::read_to_string(&path)
                .map_err(|e| NodeError::Read { path: path.clone(), reason: e.kind().to_string() })?,
        });
        if !(1..=3600).contains(&interval_secs) {
            return Err(NodeError::Config("--kuma-interval-secs must be from 1 to 3600".into()));
        }
        if !(50..=100).contains(&disk_max_pct) {
            return Err(NodeError::Config("--kuma-disk-down-pct must be from 50 to 100".into()));
        }
        Ok(Some(Self {
            url: Zeroizing::new(validate_url(url.trim(), plain)?),
            interval: Duration::from_secs(interval_secs),
            disk_max_pct: f64::from(disk_max_pct),
        }))
    }
}

/// Keeps scheme, host and path; drops a query string copied from Kuma's UI
/// (`?status=up&msg=OK&ping=`). The error never repeats the URL.
fn validate_url(raw: &str, plain: PlainHttp) -> Result<String, NodeError> {
    let base = raw.split(['?', '#']).next().unwrap_or("");
    crate::outbound::check_url(base, plain).map_err(|e| {
        let hint = match e {
            crate::outbound::OutboundError::PlainHttp => {
                " (over the WireGuard mesh, add --kuma-allow-plain-http: the tunnel encrypts it)"
            }
            _ => "",
        };
        NodeError::Config(format!("the Kuma push URL is refused: {e}{hint}"))
    })?;
    Ok(base.to_owned())
}

/// up or down, and the message the SOC sees.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub up: bool,
    pub reasons: Vec<String>,
    pub msg: String,
}

/// Decides the status from one payload and the self-check, and writes the compact message:
/// the reasons first when down, then the figures that matter. `tls_on`: the node serves TLS,
/// so having no certificate at all (ACME has not delivered one within
/// [`CERT_GRACE_SECS`] of the start) is a reason too.
pub fn evaluate(p: &Payload, self_check: &Result<(), String>, tls_on: bool, disk_max_pct: f64) -> Verdict {
    let mut reasons = Vec::new();
    if p.db_integrity == DbIntegrity::Failed {
        reasons.push("db integrity check failed".to_owned());
    }
    match p.cert_days_remaining {
        Some(d) if d < 0 => reasons.push("certificate expired".to_owned()),
        Some(d) if d < CERT_MIN_DAYS => reasons.push(format!("certificate expires in {d}d")),
        None if tls_on && p.uptime_s >= CERT_GRACE_SECS => reasons.push("no TLS certificate".to_owned()),
        _ => {}
    }
    if p.disk_pct > disk_max_pct {
        reasons.push(format!("disk {:.0}% full", p.disk_pct));
    }
    if let Err(e) = self_check {
        reasons.push(format!("self-check failed: {}", e.chars().take(80).collect::<String>()));
    }
    for vault in super::unavailable_vaults() {
        reasons.push(vault.chars().take(120).collect());
    }
    let mut figures = format!("db={}", p.db_integrity.as_str());
    if let Some(d) = p.cert_days_remaining {
        figures.push_str(&format!(" cert={d}d"));
    }
    figures.push_str(&format!(
        " disk={:.0}% ram={:.0}% cpu={:.0}% req1h={} err1h={} sess={}",
        p.disk_pct, p.ram_pct, p.cpu_pct, p.req_1h, p.err_1h, p.active_sessions
    ));
    if let Some(w) = p.wg_handshake_age_s {
        figures.push_str(&format!(" wg={w}s"));
    }
    let up = reasons.is_empty();
    let msg = if up { format!("OK {figures}") } else { format!("DOWN: {} | {figures}", reasons.join("; ")) };
    Verdict { up, reasons, msg }
}

/// The self-check behind `ping`: every database file answers a read. Returns (ms, result).
pub fn self_check(files: &[PathBuf]) -> (u128, Result<(), String>) {
    let started = Instant::now();
    let mut result = Ok(());
    for f in files {
        if let Err(e) = crate::store::ping(f) {
            result = Err(e.to_string());
            break;
        }
    }
    (started.elapsed().as_millis(), result)
}

/// A delivery error in words that never include the URL.
pub(crate) fn describe(e: &ureq::Error) -> String {
    match e {
        ureq::Error::StatusCode(c) => format!("HTTP status {c}"),
        ureq::Error::Timeout(_) => "timed out".into(),
        ureq::Error::Io(io) => format!("I/O error: {}", io.kind()),
        ureq::Error::HostNotFound => "host not found".into(),
        ureq::Error::ConnectionFailed => "connection failed".into(),
        ureq::Error::Tls(t) => format!("TLS error: {t}"),
        ureq::Error::Rustls(_) => "TLS error".into(),
        _ => "request failed".into(),
    }
}

/// Logs delivery failures and status changes once per change, never per attempt.
#[derive(Default)]
struct Transitions {
    delivery: Option<Result<(), String>>,
    up: Option<bool>,
}

impl Transitions {
    fn delivery(&mut self, what: &str, now: Result<(), String>) {
        if self.delivery.as_ref() != Some(&now) {
            match &now {
                Ok(()) if self.delivery.is_some() => tracing::info!("{what}: pushes are delivered again"),
                Ok(()) => tracing::info!("{what}: first push delivered"),
                Err(e) => tracing::warn!(error = %e, "{what}: push failed (logged again only when this changes)"),
            }
            self.delivery = Some(now);
        }
    }

    fn status(&mut self, v: &Verdict) {
        if self.up != Some(v.up) {
            if v.up {
                tracing::info!("node status: up");
            } else {
                tracing::warn!(reasons = %v.reasons.join("; "), "node status: down");
            }
            self.up = Some(v.up);
        }
    }
}

/// Starts the push thread.
pub fn spawn(settings: KumaSettings, mut source: PayloadSource) -> std::io::Result<()> {
    std::thread::Builder::new().name("kuma-push".into()).spawn(move || {
        let agent: ureq::Agent = crate::outbound::client(TIMEOUT);
        let mut log = Transitions::default();
        let mut next = Instant::now();
        let tls_on = !matches!(source.cert, super::tls::CertSource::None);
        loop {
            let payload = source.collect();
            let (ms, check) = self_check(&integrity::db_files(&source.dir));
            let verdict = evaluate(&payload, &check, tls_on, settings.disk_max_pct);
            log.status(&verdict);
            let status = if verdict.up { "up" } else { "down" };
            let sent = agent
                .get(settings.url.as_str())
                .query("status", status)
                .query("msg", &verdict.msg)
                .query("ping", ms.to_string())
                .call();
            let outcome = match sent {
                Ok(resp) if resp.status().is_success() => Ok(()),
                Ok(resp) => Err(format!("HTTP status {}", resp.status().as_u16())),
                Err(e) => Err(describe(&e)),
            };
            log.delivery("Kuma", outcome);
            // A fixed cadence: the next push is due one interval after the previous was due.
            next += settings.interval;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn healthy() -> Payload {
        crate::node::payload::tests::sample()
    }

    #[test]
    fn up_and_down_logic() {
        let v = evaluate(&healthy(), &Ok(()), false, f64::from(DISK_MAX_PCT));
        assert!(v.up);
        assert_eq!(v.msg, "OK db=ok cert=62d disk=31% ram=28% cpu=2% req1h=847 err1h=2 sess=3 wg=17s");

        let mut p = healthy();
        p.cert_days_remaining = Some(13);
        let v = evaluate(&p, &Ok(()), false, f64::from(DISK_MAX_PCT));
        assert!(!v.up);
        assert!(v.msg.starts_with("DOWN: certificate expires in 13d | db=ok cert=13d"), "{}", v.msg);

        p.cert_days_remaining = Some(14);
        assert!(evaluate(&p, &Ok(()), false, f64::from(DISK_MAX_PCT)).up, "14 days left is still up");
        p.cert_days_remaining = None;
        assert!(evaluate(&p, &Ok(()), false, f64::from(DISK_MAX_PCT)).up, "no TLS: no certificate reason");
        p.uptime_s = CERT_GRACE_SECS - 1;
        assert!(
            evaluate(&p, &Ok(()), true, f64::from(DISK_MAX_PCT)).up,
            "ACME gets a few minutes for the first certificate"
        );
        p.uptime_s = CERT_GRACE_SECS;
        let v = evaluate(&p, &Ok(()), true, f64::from(DISK_MAX_PCT));
        assert!(!v.up && v.msg.starts_with("DOWN: no TLS certificate | "), "{}", v.msg);

        p.disk_pct = 90.5;
        p.db_integrity = DbIntegrity::Failed;
        let v = evaluate(&p, &Err("node.db: locked".into()), false, f64::from(DISK_MAX_PCT));
        assert!(!v.up);
        assert_eq!(v.reasons.len(), 3, "{v:?}");
        assert!(v.msg.contains("db integrity check failed; disk 90% full; self-check failed: node.db: locked"));
        p.disk_pct = 90.0;
        p.db_integrity = DbIntegrity::Unchecked;
        assert!(evaluate(&p, &Ok(()), false, f64::from(DISK_MAX_PCT)).up, "90 % exactly and not yet checked are up");
        assert!(evaluate(&p, &Ok(()), false, f64::from(DISK_MAX_PCT)).msg.len() < 200);
    }

    #[test]
    fn settings() {
        assert!(KumaSettings::resolve(None, None, 30, 90, PlainHttp::Allowed).unwrap().is_none());
        let s = KumaSettings::resolve(
            Some("http://10.84.0.1:3001/api/push/s3cr3t?status=up&msg=OK&ping=".into()),
            None,
            30,
            90,
            PlainHttp::Allowed,
        )
        .unwrap()
        .unwrap();
        assert_eq!(s.url.as_str(), "http://10.84.0.1:3001/api/push/s3cr3t");
        let refused =
            KumaSettings::resolve(Some("http://10.84.0.1:3001/p".into()), None, 30, 90, PlainHttp::LoopbackOnly);
        assert!(refused.unwrap_err().to_string().contains("--kuma-allow-plain-http"));
        assert!(!format!("{s:?}").contains("s3cr3t"), "Debug must not show the token");
        for bad in ["ftp://x/api/push/t", "not a url", "http://u:p@x/api/push/t", "/api/push/t"] {
            let e = KumaSettings::resolve(Some(bad.into()), None, 30, 90, PlainHttp::Allowed).unwrap_err().to_string();
            assert!(!e.contains("/api/push/t"), "errors never repeat the URL: {e}");
        }
        assert!(
            KumaSettings::resolve(Some("http://x/p".into()), Some("f".into()), 30, 90, PlainHttp::Allowed).is_err()
        );
        assert!(KumaSettings::resolve(Some("http://x/p".into()), None, 0, 90, PlainHttp::Allowed).is_err());
        assert!(KumaSettings::resolve(Some("http://x/p".into()), None, 30, 49, PlainHttp::Allowed).is_err());
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("url");
        std::fs::write(&f, "https://kuma.example/api/push/abc\n").unwrap();
        let s = KumaSettings::resolve(None, Some(f), 5, 95, PlainHttp::Allowed).unwrap().unwrap();
        assert_eq!(s.url.as_str(), "https://kuma.example/api/push/abc");
        assert_eq!(s.interval, Duration::from_secs(5));
        assert_eq!(s.disk_max_pct, 95.0);
    }
}
