//! Where node telemetry goes (HQ) and with which credentials: parsed and validated once.
//!
//! Shared by both editions: the commercial edition also reads the reference's environment
//! variables (`TELEMETRY_HOST`, …), the community edition only the operator's explicit flags.
//! Never logs the token.

use std::path::PathBuf;
use std::time::Duration;

use zeroize::Zeroizing;

/// The reference's commercial environment variables.
pub const COMMERCIAL_ENV: &[&str] =
    &["TELEMETRY_HOST", "TELEMETRY_TOKEN", "TELEMETRY_TOKEN_FILE", "TELEMETRY_FREQ", "POP_REGION"];

pub const DEFAULT_FREQ_SECS: u64 = 300;
const FREQ_RANGE: std::ops::RangeInclusive<u64> = 10..=86_400;
const MAX_TOKEN: usize = 4096;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TelemetryError {
    #[error(
        "telemetry host {0:?} must be an https:// URL (http:// only for a loopback IP such as 127.0.0.1), without path, query or credentials"
    )]
    Host(String),
    #[error(
        "a telemetry host is set but no token: set TELEMETRY_TOKEN or TELEMETRY_TOKEN_FILE (--telemetry-token-file)"
    )]
    MissingToken,
    #[error("give the telemetry token either directly or as a file, not both")]
    TwoTokens,
    #[error("cannot read the telemetry token file {path}: {reason}")]
    TokenFile { path: PathBuf, reason: String },
    #[error("the telemetry token must be 1 to {MAX_TOKEN} printable characters without spaces")]
    Token,
    #[error("a telemetry token or region is set but no telemetry host")]
    MissingHost,
    #[error("telemetry frequency {0:?} must be a whole number of seconds from 10 to 86400")]
    Freq(String),
    #[error("POP region {0:?} must be 1 to 63 characters of a-z, 0-9 and '-'")]
    Region(String),
}

/// Raw inputs, from flags or environment variables, before validation.
#[derive(Debug, Default, Clone)]
pub struct TelemetryInputs {
    pub host: Option<String>,
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
    pub freq: Option<String>,
    pub pop_region: Option<String>,
}

/// Validated settings.
#[derive(Clone)]
pub struct TelemetrySettings {
    /// Base URL without a trailing slash, e.g. `https://hq.clavitor.com`.
    pub host: String,
    pub token: Zeroizing<String>,
    pub freq: Duration,
    pub pop_region: Option<String>,
}

impl std::fmt::Debug for TelemetrySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetrySettings")
            .field("host", &self.host)
            .field("freq", &self.freq)
            .field("pop_region", &self.pop_region)
            .finish_non_exhaustive()
    }
}

impl TelemetryInputs {
    /// The commercial environment variables, for fields the flags left empty.
    pub fn or_env(mut self) -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        self.host = self.host.or_else(|| var("TELEMETRY_HOST"));
        if self.token.is_none() && self.token_file.is_none() {
            self.token = var("TELEMETRY_TOKEN");
            self.token_file = var("TELEMETRY_TOKEN_FILE").map(PathBuf::from);
        }
        self.freq = self.freq.or_else(|| var("TELEMETRY_FREQ"));
        self.pop_region = self.pop_region.or_else(|| var("POP_REGION"));
        self
    }

    /// `None` when no host is configured (telemetry off).
    pub fn resolve(self) -> Result<Option<TelemetrySettings>, TelemetryError> {
        let freq = match &self.freq {
            None => DEFAULT_FREQ_SECS,
            Some(f) => f
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|n| FREQ_RANGE.contains(n))
                .ok_or_else(|| TelemetryError::Freq(f.clone()))?,
        };
        if let Some(region) = &self.pop_region {
            let ok = (1..=63).contains(&region.len())
                && region.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !ok {
                return Err(TelemetryError::Region(region.clone()));
            }
        }
        let Some(host) = self.host else {
            if self.token.is_some() || self.token_file.is_some() {
                return Err(TelemetryError::MissingHost);
            }
            return Ok(None);
        };
        let host = validate_host(&host)?;
        let token = match (self.token, self.token_file) {
            (Some(_), Some(_)) => return Err(TelemetryError::TwoTokens),
            (None, None) => return Err(TelemetryError::MissingToken),
            (Some(t), None) => Zeroizing::new(t),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| TelemetryError::TokenFile { path: path.clone(), reason: e.kind().to_string() })?;
                Zeroizing::new(text.trim().to_owned())
            }
        };
        if token.is_empty() || token.len() > MAX_TOKEN || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TelemetryError::Token);
        }
        Ok(Some(TelemetrySettings { host, token, freq: Duration::from_secs(freq), pop_region: self.pop_region }))
    }
}

fn validate_host(raw: &str) -> Result<String, TelemetryError> {
    let bad = || TelemetryError::Host(raw.chars().take(200).collect());
    let trimmed = raw.trim().trim_end_matches('/');
    let uri = crate::outbound::check_url(trimmed, crate::outbound::PlainHttp::LoopbackOnly).map_err(|_| bad())?;
    if uri.query().is_some() || !matches!(uri.path(), "" | "/") {
        return Err(bad());
    }
    Ok(trimmed.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(host: Option<&str>, token: Option<&str>) -> TelemetryInputs {
        TelemetryInputs { host: host.map(Into::into), token: token.map(Into::into), ..Default::default() }
    }

    #[test]
    fn validation() {
        assert!(inputs(None, None).resolve().unwrap().is_none());
        let s = inputs(Some("https://hq.clavitor.com/"), Some("t0ken")).resolve().unwrap().unwrap();
        assert_eq!(s.host, "https://hq.clavitor.com");
        assert_eq!(s.freq, Duration::from_secs(300));
        assert!(format!("{s:?}").find("t0ken").is_none(), "Debug must not show the token");
        assert!(inputs(Some("http://127.0.0.1:9"), Some("t")).resolve().unwrap().is_some());
        for bad in
            ["http://hq.clavitor.com", "ftp://x", "https://u:p@x", "https://x/path", "https://x?q=1", "not a url"]
        {
            assert!(matches!(inputs(Some(bad), Some("t")).resolve(), Err(TelemetryError::Host(_))), "{bad}");
        }
        assert_eq!(inputs(Some("https://x"), None).resolve().unwrap_err(), TelemetryError::MissingToken);
        assert_eq!(inputs(None, Some("t")).resolve().unwrap_err(), TelemetryError::MissingHost);
        assert_eq!(inputs(Some("https://x"), Some("has space")).resolve().unwrap_err(), TelemetryError::Token);
        let mut i = inputs(Some("https://x"), Some("t"));
        i.freq = Some("5".into());
        assert!(matches!(i.clone().resolve(), Err(TelemetryError::Freq(_))));
        i.freq = Some("60".into());
        i.pop_region = Some("US East".into());
        assert!(matches!(i.resolve(), Err(TelemetryError::Region(_))));
    }
}
