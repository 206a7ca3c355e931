//! The agent's side of the API: configuration (vault URL, token, CA), `clavitor://` references,
//! and a blocking client for the agent read routes and token derivation. `run` starts a command
//! with resolved references in its environment and masks them in its output.
//!
//! Must never: print or log a token or a secret value (errors name the reference, the entry and
//! the field, never a value), put a token on a command line, or hold a token or a value outside
//! `Zeroizing`. Outgoing requests go through `crate::outbound` (its URL rule: https, or plain
//! http to a loopback IP literal only; no redirects). Blocking (ureq): async callers wrap calls
//! in `tokio::task::spawn_blocking`.

pub mod mask;
pub mod run;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::outbound::{self, OutboundError, PlainHttp};

/// The prefix of a secret reference.
pub const REF_PREFIX: &str = "clavitor://";
/// Every request's time limit (connect included).
pub const TIMEOUT: Duration = Duration::from_secs(30);
/// The largest response body the client reads (an entry with many fields stays far below).
const MAX_BODY: u64 = 8 * 1024 * 1024;

/// Why the client could not do something. Never contains a token or a secret value.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no vault URL: set CLAVITOR_URL or pass --url")]
    NoUrl,
    #[error("vault URL refused: {0}")]
    Url(OutboundError),
    #[error(
        "no token: set CLAVITOR_TOKEN, or put the token in {} (mode 0600), or pass --token-file",
        .0.display()
    )]
    NoToken(PathBuf),
    #[error("token file {path} is readable by group or others (mode {mode:o}); chmod 600 it")]
    TokenFilePermissions { path: PathBuf, mode: u32 },
    // Causes are part of the message, not `source`s: anyhow's `{:#}` would print them twice.
    #[error("token file {path}: {cause}")]
    TokenFile { path: PathBuf, cause: std::io::Error },
    #[error("{0} does not hold a clavitor token (cvt_ followed by letters and digits)")]
    TokenFormat(String),
    #[error("CA file {path}: {reason}")]
    CaFile { path: PathBuf, reason: String },
    #[error("not a clavitor reference ({0}); expected clavitor://<entry id or exact title>/<field name>")]
    Reference(String),
    #[error("no entry {0} is visible to this token")]
    EntryNotFound(String),
    #[error("several entries are titled {title:?}: ids {}; use clavitor://<id>/<field>", join_ids(.ids))]
    Ambiguous { title: String, ids: Vec<i64> },
    #[error("entry {entry} has no field {field:?}; its fields: {}", join_names(.available))]
    FieldMissing { entry: String, field: String, available: Vec<String> },
    #[error("field {field:?} of entry {entry} cannot be read here: {reason}")]
    FieldUnreadable { entry: String, field: String, reason: &'static str },
    #[error("the vault refused the token (unknown, revoked or expired): {0}")]
    Unauthorized(String),
    #[error("the vault answered {status}: {message}")]
    Refused { status: u16, code: String, message: String },
    #[error("could not reach the vault: {0}")]
    Transport(String),
    #[error("unexpected answer from the vault: {0}")]
    Protocol(String),
    #[error("env file {path}, line {line}: {reason}")]
    EnvFile { path: PathBuf, line: usize, reason: String },
    #[error("${var}: {cause}")]
    Resolve { var: String, cause: Box<ClientError> },
    #[error("could not start {program}: {cause}")]
    Spawn { program: String, cause: std::io::Error },
    #[error("{0}")]
    Io(String),
}

fn join_ids(ids: &[i64]) -> String {
    ids.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
}

fn join_names(names: &[String]) -> String {
    if names.is_empty() {
        "(none)".to_owned()
    } else {
        names.iter().map(|n| format!("{n:?}")).collect::<Vec<_>>().join(", ")
    }
}

/// Where the client sends requests, with which token, trusting which CA.
pub struct ClientConfig {
    url: String,
    token: Zeroizing<String>,
    ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig").field("url", &self.url).field("token", &"<concealed>").finish()
    }
}

/// `~/.config/clavitor/token` (None without a home directory).
pub fn default_token_file() -> Option<PathBuf> {
    std::env::var_os("HOME").filter(|h| !h.is_empty()).map(|h| PathBuf::from(h).join(".config/clavitor/token"))
}

impl ClientConfig {
    /// `url` (else CLAVITOR_URL); the token from `token_file` if given, else CLAVITOR_TOKEN, else
    /// the default token file (refused if group/world-readable); `ca_file`: PEM certificates of a
    /// private CA.
    pub fn load(
        url: Option<String>,
        token_file: Option<PathBuf>,
        ca_file: Option<PathBuf>,
    ) -> Result<Self, ClientError> {
        let url = url
            .or_else(|| std::env::var("CLAVITOR_URL").ok())
            .filter(|u| !u.trim().is_empty())
            .ok_or(ClientError::NoUrl)?;
        let token = match token_file {
            Some(path) => read_token_file(&path)?,
            None => match std::env::var("CLAVITOR_TOKEN") {
                Ok(t) if !t.trim().is_empty() => {
                    let t = Zeroizing::new(t);
                    checked_token(t.trim(), "CLAVITOR_TOKEN")?
                }
                _ => {
                    let path = default_token_file()
                        .ok_or_else(|| ClientError::NoToken(PathBuf::from("~/.config/clavitor/token")))?;
                    if !path.exists() {
                        return Err(ClientError::NoToken(path));
                    }
                    read_token_file(&path)?
                }
            },
        };
        let ca_pem = match ca_file {
            None => None,
            Some(path) => Some(
                std::fs::read(&path).map_err(|e| ClientError::CaFile { path: path.clone(), reason: e.to_string() })?,
            ),
        };
        Self::new(url, token, ca_pem)
    }

    /// A configuration from values at hand (tests, the MCP server). The URL is checked here.
    pub fn new(url: String, token: Zeroizing<String>, ca_pem: Option<Vec<u8>>) -> Result<Self, ClientError> {
        let token = checked_token(token.trim(), "the token")?;
        outbound::check_url(&url, PlainHttp::LoopbackOnly).map_err(ClientError::Url)?;
        let url = url.trim_end_matches('/').to_owned();
        Ok(Self { url, token, ca_pem })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The token, for `run --pass-token` and for masking; never print it.
    pub fn token(&self) -> &Zeroizing<String> {
        &self.token
    }
}

fn checked_token(t: &str, source: &str) -> Result<Zeroizing<String>, ClientError> {
    let ok =
        t.strip_prefix("cvt_").is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric()));
    if !ok {
        return Err(ClientError::TokenFormat(source.to_owned()));
    }
    Ok(Zeroizing::new(t.to_owned()))
}

/// Reads a token file, refusing one that group or others can read (like the master key file).
fn read_token_file(path: &Path) -> Result<Zeroizing<String>, ClientError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |cause| ClientError::TokenFile { path: path.to_owned(), cause };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mode = file.metadata().map_err(io)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(ClientError::TokenFilePermissions { path: path.to_owned(), mode });
    }
    let mut text = Zeroizing::new(String::with_capacity(128));
    file.by_ref().take(4096).read_to_string(&mut text).map_err(io)?;
    checked_token(text.trim(), &format!("token file {}", path.display()))
}

/// Which entry: an id, or an exact title (resolved against the entries the token sees).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryRef {
    Id(i64),
    Title(String),
}

impl EntryRef {
    /// An all-digit text is an id; anything else a title.
    pub fn from_text(s: &str) -> Result<Self, ClientError> {
        if s.is_empty() {
            return Err(ClientError::Reference("the entry part is empty".into()));
        }
        if s.bytes().all(|b| b.is_ascii_digit()) {
            return match s.parse::<i64>() {
                Ok(id) if id >= 1 => Ok(EntryRef::Id(id)),
                _ => Err(ClientError::Reference("an entry id must be 1 to 9223372036854775807".into())),
            };
        }
        Ok(EntryRef::Title(s.to_owned()))
    }

    /// For `totp`: `clavitor://<entry>` or `clavitor://<entry>/<field>`, where the field part is
    /// ignored (the server computes the code from the entry's one L1 TOTP field). So a title that
    /// contains `/` needs a trailing field part, e.g. `clavitor://a/b/totp`.
    pub fn parse(s: &str) -> Result<Self, ClientError> {
        let rest = s
            .strip_prefix(REF_PREFIX)
            .ok_or_else(|| ClientError::Reference("it does not start with clavitor://".into()))?;
        match rest.rfind('/') {
            Some(i) => Self::from_text(&rest[..i]),
            None => Self::from_text(rest),
        }
    }
}

impl std::fmt::Display for EntryRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EntryRef::Id(id) => write!(f, "{id}"),
            EntryRef::Title(t) => write!(f, "{t:?}"),
        }
    }
}

/// `clavitor://<entry id or exact title>/<field name>`: the field is after the last `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRef {
    pub entry: EntryRef,
    pub field: String,
}

impl SecretRef {
    pub fn parse(s: &str) -> Result<Self, ClientError> {
        let rest = s
            .strip_prefix(REF_PREFIX)
            .ok_or_else(|| ClientError::Reference("it does not start with clavitor://".into()))?;
        let i = rest.rfind('/').ok_or_else(|| ClientError::Reference("it has no /<field name>".into()))?;
        let field = &rest[i + 1..];
        if field.is_empty() {
            return Err(ClientError::Reference("the field name is empty".into()));
        }
        Ok(SecretRef { entry: EntryRef::from_text(&rest[..i])?, field: field.to_owned() })
    }
}

impl std::fmt::Display for SecretRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.entry {
            EntryRef::Id(id) => write!(f, "{REF_PREFIX}{id}/{}", self.field),
            EntryRef::Title(t) => write!(f, "{REF_PREFIX}{t}/{}", self.field),
        }
    }
}

/// The token's own agent, from `GET /api/whoami`.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct WhoAmI {
    pub id: i64,
    pub name: String,
    pub scopes: Vec<String>,
    pub all_access: bool,
    pub admin: bool,
    #[serde(default)]
    pub reveal_to_model: bool,
    #[serde(default)]
    pub expires_at: Option<i64>,
    #[serde(default)]
    pub parent_id: Option<i64>,
}

/// An entry's metadata (list, search): never a value.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct EntrySummary {
    pub id: i64,
    pub title: String,
    #[serde(rename = "type")]
    pub entry_type: String,
    pub url: String,
    pub scopes: Vec<String>,
}

/// A current TOTP code.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct TotpCode {
    pub code: String,
    pub period: u64,
    pub expires_in: u64,
    pub digits: usize,
}

/// A field's value with where it came from.
#[derive(Debug)]
pub struct ResolvedField {
    pub entry_id: i64,
    pub title: String,
    pub field: String,
    pub kind: String,
    pub value: Zeroizing<String>,
    /// The audit row the server wrote for this read (its `x-clavitor-audit-id`).
    pub audit_id: Option<i64>,
}

/// `POST /api/tokens/derive`: a narrower, shorter-lived token for a sub-agent.
#[derive(Debug, Clone, Serialize)]
pub struct DeriveRequest {
    pub name: String,
    pub ttl_secs: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub all_access: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub reveal_to_model: bool,
}

/// The answer to a derivation; `token` is shown once.
#[derive(Deserialize, Serialize)]
pub struct DerivedToken {
    pub id: i64,
    pub name: String,
    #[serde(deserialize_with = "secret_string")]
    pub token: Zeroizing<String>,
    pub scopes: Vec<String>,
    #[serde(default)]
    pub all_access: bool,
    #[serde(default)]
    pub reveal_to_model: bool,
    pub expires_at: Option<i64>,
    pub parent_id: Option<i64>,
}

impl std::fmt::Debug for DerivedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DerivedToken")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("token", &"<concealed>")
            .finish()
    }
}

fn secret_string<'de, D: Deserializer<'de>>(d: D) -> Result<Zeroizing<String>, D::Error> {
    String::deserialize(d).map(Zeroizing::new)
}

/// Why `get`, `run` and MCP refuse a field of an inject-only entry.
pub const INJECT_ONLY: &str = "inject-only: use the proxy (HTTPS_PROXY=http://x:<token>@<vault proxy>, trusting \
                               `clavitor proxy ca`); the vault injects this value into requests to the hosts its rules \
                               name and never hands it out";

/// The agent's view of an entry as the client reads it; wiped on drop.
#[derive(Deserialize, Zeroize, ZeroizeOnDrop)]
struct EntryBody {
    id: i64,
    title: String,
    fields: Vec<FieldBody>,
    /// The entry's values are only injected by the vault's proxy, never handed out.
    #[serde(default)]
    inject_only: bool,
}

#[derive(Deserialize, Zeroize, ZeroizeOnDrop)]
struct FieldBody {
    name: String,
    kind: String,
    tier: String,
    #[serde(default)]
    value: Option<String>,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    error: String,
    #[serde(default)]
    message: String,
}

/// A blocking client of one vault, for one token.
pub struct VaultClient {
    cfg: ClientConfig,
    agent: ureq::Agent,
    auth: Zeroizing<String>,
}

impl VaultClient {
    pub fn new(cfg: ClientConfig) -> Result<Self, ClientError> {
        let agent = outbound::vault_client(TIMEOUT, cfg.ca_pem.as_deref())
            .map_err(|e| ClientError::CaFile { path: PathBuf::from("(--ca-file)"), reason: e.to_string() })?;
        let auth = Zeroizing::new(format!("Bearer {}", cfg.token.as_str()));
        Ok(Self { cfg, agent, auth })
    }

    pub fn config(&self) -> &ClientConfig {
        &self.cfg
    }

    pub fn whoami(&self) -> Result<WhoAmI, ClientError> {
        json(&self.body(self.send_get("/api/whoami")?)?)
    }

    /// Metadata of the entries the token sees (an audited list).
    pub fn list(&self) -> Result<Vec<EntrySummary>, ClientError> {
        json(&self.body(self.send_get("/api/entries")?)?)
    }

    /// Metadata of the entries matching `q` in title, URL or type (an audited search).
    pub fn search(&self, q: &str) -> Result<Vec<EntrySummary>, ClientError> {
        let q: String = q
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        json(&self.body(self.send_get(&format!("/api/search?q={q}&limit=500"))?)?)
    }

    /// The entry's id: itself, or the one entry with exactly this title.
    pub fn entry_id(&self, e: &EntryRef) -> Result<i64, ClientError> {
        match e {
            EntryRef::Id(id) => Ok(*id),
            EntryRef::Title(title) => {
                let ids: Vec<i64> = self.list()?.into_iter().filter(|s| &s.title == title).map(|s| s.id).collect();
                match ids.as_slice() {
                    [] => Err(ClientError::EntryNotFound(e.to_string())),
                    [id] => Ok(*id),
                    _ => Err(ClientError::Ambiguous { title: title.clone(), ids }),
                }
            }
        }
    }

    /// One field's L1 value (an audited read on the server).
    pub fn field(&self, r: &SecretRef) -> Result<Zeroizing<String>, ClientError> {
        Ok(self.resolve(r)?.value)
    }

    /// One field's L1 value with the entry it came from.
    pub fn resolve(&self, r: &SecretRef) -> Result<ResolvedField, ClientError> {
        let id = self.entry_id(&r.entry)?;
        let resp = self.send_get(&format!("/api/entries/{id}"))?;
        let audit_id =
            resp.headers().get("x-clavitor-audit-id").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
        let raw = self.body(resp).map_err(|e| not_found_as(e, &r.entry))?;
        let mut entry: EntryBody =
            serde_json::from_slice(&raw).map_err(|e| ClientError::Protocol(format!("entry: {}", e.classify_name())))?;
        let entry_name = match &r.entry {
            EntryRef::Id(_) => format!("{id} ({:?})", entry.title),
            EntryRef::Title(t) => format!("{t:?} (id {id})"),
        };
        let Some(f) = entry.fields.iter_mut().find(|f| f.name == r.field) else {
            let available = entry.fields.iter().map(|f| f.name.clone()).collect();
            return Err(ClientError::FieldMissing { entry: entry_name, field: r.field.clone(), available });
        };
        let reason = match (f.tier.as_str(), f.kind.as_str(), f.value.is_some()) {
            // Checked first: even if a value came, an inject-only entry is not used here.
            _ if entry.inject_only => Some(INJECT_ONLY),
            (_, _, true) => None,
            ("l2", _, _) | ("L2", _, _) => {
                Some("it is L2 (encrypted in the owner's browser); only the owner's pages can open it")
            }
            (_, "totp", _) => {
                Some("it is a TOTP seed, which agents never get; use `clavitor totp` for the current code")
            }
            _ => Some("the vault sent no value for it"),
        };
        if let Some(reason) = reason {
            return Err(ClientError::FieldUnreadable { entry: entry_name, field: r.field.clone(), reason });
        }
        let value = Zeroizing::new(f.value.take().unwrap_or_default());
        Ok(ResolvedField {
            entry_id: entry.id,
            title: std::mem::take(&mut entry.title),
            field: f.name.clone(),
            kind: f.kind.clone(),
            value,
            audit_id,
        })
    }

    /// The entry's current TOTP code (an audited read on the server).
    pub fn totp(&self, e: &EntryRef) -> Result<TotpCode, ClientError> {
        let id = self.entry_id(e)?;
        let resp = self.send_get(&format!("/api/ext/totp/{id}"))?;
        json(&self.body(resp).map_err(|err| not_found_as(err, e))?)
    }

    /// A new token narrower than this one (`POST /api/tokens/derive`).
    pub fn derive(&self, req: &DeriveRequest) -> Result<DerivedToken, ClientError> {
        let body = serde_json::to_vec(req).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let resp = self
            .agent
            .post(format!("{}/api/tokens/derive", self.cfg.url))
            .header("authorization", self.auth.as_str())
            .header("content-type", "application/json")
            .send(&body[..])
            .map_err(transport)?;
        let raw = self.body(resp)?;
        json(&raw)
    }

    fn send_get(&self, path: &str) -> Result<ureq::http::Response<ureq::Body>, ClientError> {
        self.agent
            .get(format!("{}{path}", self.cfg.url))
            .header("authorization", self.auth.as_str())
            .header("accept", "application/json")
            .call()
            .map_err(transport)
    }

    /// The body of a 2xx answer (wiped when dropped), or the server's error as a `ClientError`.
    fn body(&self, mut resp: ureq::http::Response<ureq::Body>) -> Result<Zeroizing<Vec<u8>>, ClientError> {
        let status = resp.status().as_u16();
        // Sized from Content-Length where given, so the buffer does not grow (a reallocation would
        // free an unwiped copy of the values).
        let declared = resp.body().content_length().unwrap_or(0).min(MAX_BODY);
        let mut buf = Zeroizing::new(Vec::with_capacity(usize::try_from(declared).unwrap_or(0).max(16 * 1024) + 1));
        resp.body_mut()
            .as_reader()
            .take(MAX_BODY)
            .read_to_end(&mut buf)
            .map_err(|e| ClientError::Transport(e.kind().to_string()))?;
        if (200..300).contains(&status) {
            return Ok(buf);
        }
        let (code, message) = match serde_json::from_slice::<ErrorBody>(&buf) {
            Ok(b) => (b.error, b.message),
            Err(_) => (String::new(), String::new()),
        };
        let message = if message.is_empty() { format!("HTTP {status}") } else { message };
        if status == 401 {
            return Err(ClientError::Unauthorized(message));
        }
        Err(ClientError::Refused { status, code, message })
    }
}

fn not_found_as(e: ClientError, entry: &EntryRef) -> ClientError {
    match e {
        ClientError::Refused { status: 404, .. } => ClientError::EntryNotFound(entry.to_string()),
        other => other,
    }
}

fn json<T: for<'de> Deserialize<'de>>(raw: &[u8]) -> Result<T, ClientError> {
    // serde_json's error names a position and a kind, never the text it read.
    serde_json::from_slice(raw)
        .map_err(|e| ClientError::Protocol(format!("{} at line {} column {}", e.classify_name(), e.line(), e.column())))
}

trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "I/O error",
            serde_json::error::Category::Syntax => "malformed JSON",
            serde_json::error::Category::Data => "JSON of an unexpected shape",
            serde_json::error::Category::Eof => "truncated JSON",
        }
    }
}

/// A transport error's kind, without the URL (which names the vault only, but keep it short).
fn transport(e: ureq::Error) -> ClientError {
    ClientError::Transport(match e {
        ureq::Error::Timeout(_) => "timed out".into(),
        // rustls reports a certificate it refuses as InvalidData wrapping its own error.
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::InvalidData => format!("TLS error: {io}"),
        ureq::Error::Io(io) => format!("I/O error: {io}"),
        ureq::Error::HostNotFound => "host not found".into(),
        ureq::Error::ConnectionFailed => "connection failed".into(),
        ureq::Error::Tls(t) => format!("TLS error: {t}"),
        ureq::Error::Rustls(r) => format!("TLS error: {r}"),
        ureq::Error::TooManyRedirects | ureq::Error::RedirectFailed => {
            "the vault answered with a redirect, which the client never follows".into()
        }
        other => other.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_at_the_last_slash() {
        let r = SecretRef::parse("clavitor://42/password").unwrap();
        assert_eq!(r, SecretRef { entry: EntryRef::Id(42), field: "password".into() });
        let r = SecretRef::parse("clavitor://CI / deploy/api key").unwrap();
        assert_eq!(r, SecretRef { entry: EntryRef::Title("CI / deploy".into()), field: "api key".into() });
        assert_eq!(SecretRef::parse("clavitor://a1/x").unwrap().entry, EntryRef::Title("a1".into()));
        for bad in [
            "42/password",
            "clavitor://",
            "clavitor://42",
            "clavitor://42/",
            "clavitor:///x",
            "clavitor://0/x",
            "clavitor://99999999999999999999/x",
        ] {
            assert!(matches!(SecretRef::parse(bad), Err(ClientError::Reference(_))), "{bad}");
        }
    }

    #[test]
    fn totp_references_ignore_the_field() {
        assert_eq!(EntryRef::parse("clavitor://7").unwrap(), EntryRef::Id(7));
        assert_eq!(EntryRef::parse("clavitor://7/otp").unwrap(), EntryRef::Id(7));
        assert_eq!(EntryRef::parse("clavitor://a/b/totp").unwrap(), EntryRef::Title("a/b".into()));
        assert!(EntryRef::parse("7").is_err());
    }

    #[test]
    fn tokens_are_checked_and_never_shown() {
        let cfg = ClientConfig::new("http://127.0.0.1:1".into(), Zeroizing::new("cvt_abc123\n".into()), None).unwrap();
        assert_eq!(cfg.token().as_str(), "cvt_abc123");
        assert!(!format!("{cfg:?}").contains("abc123"));
        let err = ClientConfig::new("http://127.0.0.1:1".into(), Zeroizing::new("hunter2".into()), None).unwrap_err();
        assert!(!err.to_string().contains("hunter2"));
        let err = ClientConfig::new("http://10.0.0.1/".into(), Zeroizing::new("cvt_a".into()), None).unwrap_err();
        assert!(matches!(err, ClientError::Url(OutboundError::PlainHttp)), "{err}");
    }
}
