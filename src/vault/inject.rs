//! Inject rules: where an entry's credential may be put into an agent's outgoing request by the
//! proxy (`src/proxy/`), so the agent never holds the value.
//!
//! Owns the rule model stored inside an entry's sealed data ([`InjectRule`], [`HostPattern`],
//! [`Placement`]), its validation against the entry's fields, matching a request against a rule,
//! and filling a rule with values ([`Injection`]). It must never let a rule name an L2 or TOTP
//! field (L2 values are the owner's ciphertext; TOTP seeds are never handed out), never match a
//! host the rule does not name exactly (or by its one-label wildcard), and never build a header
//! or query value that could smuggle a second header or parameter (CR, LF, NUL are refused at
//! write time and again at fill time). It does no I/O.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::entry::{EntryData, EntryError, Field, FieldKind, Tier};

/// At most this many rules per entry.
pub const MAX_RULES: usize = 16;
pub const MAX_HOST: usize = 253;
pub const MAX_PATH_PREFIX: usize = 1024;
pub const MAX_METHODS: usize = 16;
pub const MAX_HEADER_NAME: usize = 64;
pub const MAX_TEMPLATE: usize = 1024;
pub const MAX_QUERY_PARAM: usize = 128;
/// Values shorter than this are not masked in responses: masking every "ab" would mangle
/// bodies, and a value that short is no secret worth that (usernames of Basic rules mostly).
pub const MIN_MASK_LEN: usize = 4;

/// Headers a rule may not set: they frame the message, route it, or talk to the proxy itself.
const FORBIDDEN_HEADERS: &[&str] =
    &["host", "content-length", "transfer-encoding", "connection", "keep-alive", "te", "trailer", "upgrade"];

fn invalid(msg: impl Into<String>) -> EntryError {
    EntryError::Invalid(msg.into())
}

/// A host a rule names: an exact DNS name (`api.example.com`) or a one-label wildcard
/// (`*.example.com`, at least two labels after the star). Lowercase ASCII, no port, no scheme,
/// no trailing dot. Parsing lowercases, so stored patterns have one spelling.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HostPattern(String);

impl HostPattern {
    pub fn parse(text: &str) -> Result<Self, EntryError> {
        let lower = text.to_ascii_lowercase();
        let (wild, base) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, lower.as_str()),
        };
        if !is_dns_name(base) || lower.len() > MAX_HOST {
            return Err(invalid(format!(
                "host must be a DNS name like \"api.example.com\" or \"*.example.com\" (no scheme, port or \
                 path), at most {MAX_HOST} characters"
            )));
        }
        if wild && base.split('.').count() < 2 {
            return Err(invalid("a wildcard host needs at least two labels after \"*.\" (e.g. \"*.example.com\")"));
        }
        Ok(Self(lower))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True if `host` (a bare DNS name, compared case-insensitively) is the one this pattern
    /// names: equal, or for `*.base` exactly one label followed by `.base`. A host with a
    /// trailing dot, a port or anything that is not a DNS name matches nothing.
    pub fn matches(&self, host: &str) -> bool {
        if !is_dns_name(host) {
            return false;
        }
        match self.0.strip_prefix("*.") {
            None => host.eq_ignore_ascii_case(&self.0),
            Some(base) => match host.split_once('.') {
                Some((label, rest)) => !label.is_empty() && rest.eq_ignore_ascii_case(base),
                None => false,
            },
        }
    }
}

impl TryFrom<String> for HostPattern {
    type Error = EntryError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<HostPattern> for String {
    fn from(h: HostPattern) -> Self {
        h.0
    }
}

/// Labels of 1-63 characters of a-z, 0-9 and '-' (not at either end), any case, separated by
/// single dots. Digits-only labels are allowed, so `127.0.0.1` is a name here too.
fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_HOST
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Where the credential goes in the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Placement {
    /// A header whose value is `template` with each `{{field}}` replaced by that L1 field's value.
    Header { name: String, template: String },
    /// `Authorization: Basic base64(username:password)` from two L1 fields.
    Basic { username_field: String, password_field: String },
    /// A query parameter set to the field's value (percent-encoded).
    Query { param: String, field: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InjectRule {
    /// `api.example.com` or `*.example.com` (one label).
    #[schema(value_type = String, max_length = 253, pattern = r"^(\*\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+|[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*)$")]
    pub host: HostPattern,
    /// Starts with '/'; the request path (without query) must start with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// Upper-case method names; absent: any method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub methods: Option<Vec<String>>,
    pub place: Placement,
}

/// An RFC 9110 token (header names, methods).
fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Splits a template into literal text and `{{field}}` names; `None` if a `{{` is unclosed or
/// a name is empty.
fn template_parts(template: &str) -> Option<Vec<TemplatePart<'_>>> {
    let mut parts = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        if start > 0 {
            parts.push(TemplatePart::Text(&rest[..start]));
        }
        let after = &rest[start + 2..];
        let end = after.find("}}")?;
        let name = &after[..end];
        if name.is_empty() {
            return None;
        }
        parts.push(TemplatePart::Field(name));
        rest = &after[end + 2..];
    }
    if !rest.is_empty() {
        parts.push(TemplatePart::Text(rest));
    }
    Some(parts)
}

enum TemplatePart<'a> {
    Text(&'a str),
    Field(&'a str),
}

impl Placement {
    /// The names of the entry fields this placement reads.
    pub fn field_names(&self) -> Vec<&str> {
        match self {
            Placement::Header { template, .. } => template_parts(template)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|p| match p {
                    TemplatePart::Field(n) => Some(n),
                    TemplatePart::Text(_) => None,
                })
                .collect(),
            Placement::Basic { username_field, password_field } => vec![username_field, password_field],
            Placement::Query { field, .. } => vec![field],
        }
    }

    fn validate(&self) -> Result<(), EntryError> {
        match self {
            Placement::Header { name, template } => {
                if !is_token(name) || name.len() > MAX_HEADER_NAME {
                    return Err(invalid(format!(
                        "header name must be an HTTP token of 1 to {MAX_HEADER_NAME} characters"
                    )));
                }
                let lower = name.to_ascii_lowercase();
                if FORBIDDEN_HEADERS.contains(&lower.as_str()) || lower.starts_with("proxy-") {
                    return Err(invalid(format!(
                        "header {name:?} frames or routes the request and cannot be injected"
                    )));
                }
                if template.len() > MAX_TEMPLATE || !header_safe(template) {
                    return Err(invalid(format!(
                        "template must be at most {MAX_TEMPLATE} bytes without control characters"
                    )));
                }
                match template_parts(template) {
                    Some(p) if p.iter().any(|p| matches!(p, TemplatePart::Field(_))) => {}
                    _ => return Err(invalid("template must name at least one field as {{field}}, every {{ closed")),
                }
            }
            Placement::Basic { .. } => {}
            Placement::Query { param, .. } => {
                if param.is_empty()
                    || param.len() > MAX_QUERY_PARAM
                    || !param.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
                {
                    return Err(invalid(format!(
                        "query param must be 1 to {MAX_QUERY_PARAM} characters of A-Z, a-z, 0-9, '-', '.', '_', '~'"
                    )));
                }
            }
        }
        Ok(())
    }
}

/// No control characters but tab: the text goes into a header value.
fn header_safe(s: &str) -> bool {
    !s.chars().any(|c| c.is_control() && c != '\t')
}

impl InjectRule {
    fn validate(&self, fields: &[Field]) -> Result<(), EntryError> {
        if let Some(p) = &self.path_prefix
            && (!p.starts_with('/')
                || p.len() > MAX_PATH_PREFIX
                || p.contains(['?', '#', '\\'])
                || p.chars().any(|c| c.is_control() || c == ' '))
        {
            return Err(invalid(format!(
                "path_prefix must start with '/', have no query, fragment, backslash, space or control \
                 characters, and be at most {MAX_PATH_PREFIX} bytes"
            )));
        }
        if let Some(methods) = &self.methods
            && (methods.is_empty()
                || methods.len() > MAX_METHODS
                || !methods.iter().all(|m| is_token(m) && m.len() <= 32 && m.bytes().all(|b| !b.is_ascii_lowercase())))
        {
            return Err(invalid(format!(
                "methods must be 1 to {MAX_METHODS} upper-case HTTP method names (omit it for any method)"
            )));
        }
        self.place.validate()?;
        for name in self.place.field_names() {
            let field = injectable_field(fields, name)?;
            if !header_safe(&field.value) {
                return Err(invalid(format!("field {name:?} has control characters and cannot be injected")));
            }
            if let Placement::Basic { username_field, .. } = &self.place
                && username_field == name
                && field.value.contains(':')
            {
                return Err(invalid(format!("field {name:?} is a Basic username and cannot contain ':'")));
            }
        }
        Ok(())
    }

    /// True if a request with this method and path (no query) is one this rule is for. The
    /// host is matched separately ([`HostPattern::matches`]). A path with dot segments or an
    /// encoded '.', '/' or '\' matches no rule that has a prefix: the upstream might resolve
    /// `/v1/../admin` to a path the prefix does not cover.
    pub fn matches_request(&self, method: &str, path: &str) -> bool {
        if let Some(methods) = &self.methods
            && !methods.iter().any(|m| m == method)
        {
            return false;
        }
        match &self.path_prefix {
            None => true,
            Some(prefix) => path.starts_with(prefix.as_str()) && path_is_plain(path),
        }
    }
}

/// No `.`/`..` segments, no percent-encoded '.', '/', '\', no backslash.
fn path_is_plain(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    !lower.contains("%2e")
        && !lower.contains("%2f")
        && !lower.contains("%5c")
        && !lower.contains('\\')
        && path.split('/').all(|seg| seg != "." && seg != "..")
}

/// The L1, non-TOTP field of this name. Any field of the name that is L2 or TOTP makes the name
/// unusable, so that a rule can never come to read a value the server must not hand out.
fn injectable_field<'a>(fields: &'a [Field], name: &str) -> Result<&'a Field, EntryError> {
    let mut found = None;
    for f in fields.iter().filter(|f| f.name == name) {
        if f.tier == Tier::L2 {
            return Err(invalid(format!("field {name:?} is L2 (end-to-end encrypted) and can never be injected")));
        }
        if f.kind == FieldKind::Totp {
            return Err(invalid(format!("field {name:?} is a TOTP seed and can never be injected")));
        }
        found.get_or_insert(f);
    }
    found.ok_or_else(|| invalid(format!("no field named {name:?} in this entry")))
}

/// Validates an entry's rules against its fields (called by [`EntryData::validate`]).
pub fn validate(data: &EntryData) -> Result<(), EntryError> {
    if data.inject.len() > MAX_RULES {
        return Err(invalid(format!("at most {MAX_RULES} inject rules are allowed")));
    }
    if data.inject_only && data.inject.is_empty() {
        return Err(invalid("inject_only needs at least one inject rule"));
    }
    for (i, rule) in data.inject.iter().enumerate() {
        rule.validate(&data.fields).map_err(|EntryError::Invalid(m)| invalid(format!("inject rule {i}: {m}")))?;
    }
    Ok(())
}

/// The values of the fields an entry's rules read, by name: what the server's cache keeps
/// (sealed) for the proxy, and nothing else of the entry.
pub fn referenced_values(data: &EntryData) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for rule in &data.inject {
        for name in rule.place.field_names() {
            if out.iter().any(|(n, _)| n == name) {
                continue;
            }
            if let Ok(f) = injectable_field(&data.fields, name) {
                out.push((name.to_owned(), f.value.clone()));
            }
        }
    }
    out
}

/// One rule filled with its values: what the proxy puts into a request.
#[derive(Debug)]
pub struct Injection {
    pub entry_id: i64,
    pub entry_uuid: String,
    pub place: Filled,
}

#[derive(Debug)]
pub enum Filled {
    /// Set this header (any header of the same name the agent sent is removed first).
    Header { name: String, value: Zeroizing<String> },
    /// Set this query parameter (any the agent sent of the same name is removed first).
    Query { param: String, value: Zeroizing<String> },
}

impl Filled {
    /// Header name (lowercase) or query parameter: two injections with the same key conflict.
    pub fn key(&self) -> String {
        match self {
            Filled::Header { name, .. } => format!("h:{}", name.to_ascii_lowercase()),
            Filled::Query { param, .. } => format!("q:{param}"),
        }
    }
}

/// What [`super::LiveVault::injections`] returns: the injections for one request and every
/// value that must not come back to the agent in the response.
#[derive(Debug, Default)]
pub struct InjectionPlan {
    pub injections: Vec<Injection>,
    /// Raw field values and the filled header/query values, each at least [`MIN_MASK_LEN`]
    /// bytes, longest first (so a value containing another is masked whole).
    pub mask: Vec<Zeroizing<String>>,
}

impl InjectionPlan {
    /// Adds one rule's injection unless an earlier one (lower entry id, earlier rule) already
    /// sets the same header or parameter: the first rule wins, deterministically.
    pub(super) fn add(
        &mut self,
        (entry_id, entry_uuid): (i64, &str),
        place: &Placement,
        values: &[(String, Zeroizing<String>)],
    ) {
        let Some(filled) = fill(place, values) else { return };
        if self.injections.iter().any(|i| i.place.key() == filled.key()) {
            return;
        }
        for name in place.field_names() {
            if let Some((_, v)) = values.iter().find(|(n, _)| n == name) {
                self.push_mask(v);
            }
        }
        match &filled {
            Filled::Header { value, .. } => self.push_mask(value),
            Filled::Query { value, .. } => self.push_mask(&percent_encode(value)),
        }
        self.injections.push(Injection { entry_id, entry_uuid: entry_uuid.to_owned(), place: filled });
    }

    fn push_mask(&mut self, v: &str) {
        if v.len() >= MIN_MASK_LEN && !self.mask.iter().any(|m| m.as_str() == v) {
            self.mask.push(Zeroizing::new(v.to_owned()));
            self.mask.sort_by_key(|m| std::cmp::Reverse(m.len()));
        }
    }
}

/// Fills a placement from the entry's referenced values; `None` if a value is missing or would
/// not be a safe header value (the entry changed since validation rules were weaker).
fn fill(place: &Placement, values: &[(String, Zeroizing<String>)]) -> Option<Filled> {
    let get = |name: &str| values.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str()).filter(|v| header_safe(v));
    match place {
        Placement::Header { name, template } => {
            let mut out = Zeroizing::new(String::with_capacity(template.len() + 64));
            for part in template_parts(template)? {
                match part {
                    TemplatePart::Text(t) => out.push_str(t),
                    TemplatePart::Field(f) => out.push_str(get(f)?),
                }
            }
            Some(Filled::Header { name: name.clone(), value: out })
        }
        Placement::Basic { username_field, password_field } => {
            use base64::Engine as _;
            let user = get(username_field).filter(|u| !u.contains(':'))?;
            let pass = get(password_field)?;
            let pair = Zeroizing::new(format!("{user}:{pass}"));
            let value = Zeroizing::new(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(&*pair)));
            Some(Filled::Header { name: "Authorization".to_owned(), value })
        }
        Placement::Query { param, field } => {
            Some(Filled::Query { param: param.clone(), value: Zeroizing::new(get(field)?.to_owned()) })
        }
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub fn percent_encode(s: &str) -> Zeroizing<String> {
    let mut out = Zeroizing::new(String::with_capacity(s.len() * 3));
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(name: &str, kind: FieldKind, tier: Tier, value: &str) -> Field {
        Field { name: name.into(), kind, tier, value: value.into() }
    }

    fn data(rules: &str, inject_only: bool) -> EntryData {
        EntryData {
            title: "t".into(),
            entry_type: "api".into(),
            url: String::new(),
            fields: vec![
                field("api_key", FieldKind::Secret, Tier::L1, "sk-live-123456"),
                field("user", FieldKind::Text, Tier::L1, "alice"),
                field("otp", FieldKind::Totp, Tier::L1, "JBSWY3DPEHPK3PXP"),
                field("e2e", FieldKind::Note, Tier::L2, "v2.AAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAA"),
                field("colon", FieldKind::Text, Tier::L1, "a:b"),
                field("crlf", FieldKind::Secret, Tier::L1, "x\r\nEvil: 1"),
            ],
            inject: serde_json::from_str(rules).unwrap(),
            inject_only,
        }
    }

    fn header(name: &str, template: &str) -> String {
        format!(r#"[{{"host":"api.example.com","place":{{"kind":"header","name":"{name}","template":"{template}"}}}}]"#)
    }

    #[test]
    fn host_patterns() {
        let exact = HostPattern::parse("API.Example.com").unwrap();
        assert_eq!(exact.as_str(), "api.example.com");
        assert!(exact.matches("api.example.com") && exact.matches("API.EXAMPLE.COM"));
        for no in
            ["example.com", "evil.api.example.com", "api.example.com.", "api.example.com:443", "api.example.co", ""]
        {
            assert!(!exact.matches(no), "{no}");
        }
        let wild = HostPattern::parse("*.example.com").unwrap();
        assert!(wild.matches("a.example.com") && wild.matches("A-1.Example.COM"));
        for no in ["example.com", "a.b.example.com", ".example.com", "aexample.com", "a.example.com.evil.test"] {
            assert!(!wild.matches(no), "{no}");
        }
        for bad in [
            "",
            "*.com",
            "*",
            "*.*.example.com",
            "a.*.example.com",
            "https://api.example.com",
            "api.example.com:443",
            "api.example.com/",
            "api.example.com.",
            "-a.example.com",
            "a..example.com",
            "exa mple.com",
            "ex_ample.com",
            "[::1]",
        ] {
            assert!(HostPattern::parse(bad).is_err(), "{bad}");
        }
        assert!(HostPattern::parse("localhost").is_ok() && HostPattern::parse("127.0.0.1").is_ok());
        assert!(HostPattern::parse(&format!("{}.com", "a".repeat(64))).is_err());
        // Deserialising goes through the same parser.
        assert!(serde_json::from_str::<HostPattern>(r#""*.com""#).is_err());
        assert_eq!(serde_json::from_str::<HostPattern>(r#""A.B.c""#).unwrap().as_str(), "a.b.c");
    }

    #[test]
    fn validation() {
        assert!(validate(&data(&header("Authorization", "Bearer {{api_key}}"), true)).is_ok());
        assert!(validate(&data(&header("X-Api-Key", "{{api_key}}"), false)).is_ok());
        for (name, template, why) in [
            ("Host", "{{api_key}}", "host"),
            ("content-length", "{{api_key}}", "framing"),
            ("Transfer-Encoding", "{{api_key}}", "framing"),
            ("Connection", "{{api_key}}", "hop"),
            ("Proxy-Authorization", "{{api_key}}", "proxy"),
            ("X Bad", "{{api_key}}", "not a token"),
            ("X-Key", "{{otp}}", "TOTP"),
            ("X-Key", "{{e2e}}", "L2"),
            ("X-Key", "{{missing}}", "no such field"),
            ("X-Key", "{{crlf}}", "CRLF value"),
            ("X-Key", "constant", "no field"),
            ("X-Key", "{{api_key", "unclosed"),
            ("X-Key", "{{}}", "empty name"),
            ("X-Key", "a\\r\\nb {{api_key}}", "CRLF template"),
        ] {
            assert!(validate(&data(&header(name, template), false)).is_err(), "{why}");
        }
        let rule = |extra: &str, place: &str| format!(r#"[{{"host":"api.example.com"{extra},"place":{place}}}]"#);
        let basic = |u: &str, p: &str| format!(r#"{{"kind":"basic","username_field":"{u}","password_field":"{p}"}}"#);
        let query = |param: &str, f: &str| format!(r#"{{"kind":"query","param":"{param}","field":"{f}"}}"#);
        assert!(validate(&data(&rule("", &basic("user", "api_key")), false)).is_ok());
        assert!(validate(&data(&rule("", &basic("colon", "api_key")), false)).is_err(), "':' in username");
        assert!(validate(&data(&rule("", &basic("user", "e2e")), false)).is_err(), "L2 password");
        assert!(validate(&data(&rule("", &query("key", "api_key")), false)).is_ok());
        assert!(validate(&data(&rule("", &query("a&b", "api_key")), false)).is_err());
        assert!(validate(&data(&rule("", &query("key", "otp")), false)).is_err());
        let q = query("key", "api_key");
        assert!(validate(&data(&rule(r#","path_prefix":"/v1/","methods":["GET","POST"]"#, &q), false)).is_ok());
        for extra in [
            r#","path_prefix":"v1/""#,
            r#","path_prefix":"/v1?x=1""#,
            r#","path_prefix":"/v1 x""#,
            r#","methods":[]"#,
            r#","methods":["get"]"#,
            r#","methods":["G T"]"#,
        ] {
            assert!(validate(&data(&rule(extra, &q), false)).is_err(), "{extra}");
        }
        assert!(validate(&data("[]", true)).is_err(), "inject_only without rules");
        let many = format!("[{}]", vec![&rule("", &q)[1..rule("", &q).len() - 1]; MAX_RULES + 1].join(","));
        assert!(validate(&data(&many, false)).is_err());
        // Unknown keys and kinds are refused when parsing.
        assert!(serde_json::from_str::<Vec<InjectRule>>(&rule(r#","port":1"#, &q)).is_err());
        assert!(serde_json::from_str::<Vec<InjectRule>>(&rule("", r#"{"kind":"cookie","name":"a"}"#)).is_err());
    }

    #[test]
    fn request_matching() {
        let r: InjectRule = serde_json::from_str(
            r#"{"host":"api.example.com","path_prefix":"/v1/","methods":["GET"],"place":{"kind":"query","param":"k","field":"api_key"}}"#,
        )
        .unwrap();
        assert!(r.matches_request("GET", "/v1/models"));
        assert!(!r.matches_request("POST", "/v1/models"));
        assert!(!r.matches_request("get", "/v1/models"));
        for path in ["/v2/x", "/v1", "/v1/../admin", "/v1/%2e%2e/admin", "/v1/a%2Fb", "/v1/./x", "/v1\\x", "/V1/x"] {
            assert!(!r.matches_request("GET", path), "{path}");
        }
        let any: InjectRule = serde_json::from_str(
            r#"{"host":"api.example.com","place":{"kind":"query","param":"k","field":"api_key"}}"#,
        )
        .unwrap();
        assert!(any.matches_request("DELETE", "/anything/../at/all"));
    }

    #[test]
    fn filling_and_masks() {
        let d = data(&header("Authorization", "Bearer {{api_key}}"), false);
        let values: Vec<(String, Zeroizing<String>)> =
            referenced_values(&d).into_iter().map(|(n, v)| (n, Zeroizing::new(v))).collect();
        assert_eq!(values.len(), 1, "only referenced fields are kept");
        let mut plan = InjectionPlan::default();
        plan.add((7, "u"), &d.inject[0].place, &values);
        // A second rule for the same header (later entry) loses.
        let other = Placement::Header { name: "authorization".into(), template: "{{api_key}}".into() };
        plan.add((8, "v"), &other, &values);
        assert_eq!(plan.injections.len(), 1);
        match &plan.injections[0].place {
            Filled::Header { name, value } => {
                assert_eq!(name, "Authorization");
                assert_eq!(value.as_str(), "Bearer sk-live-123456");
            }
            Filled::Query { .. } => panic!("header expected"),
        }
        let masks: Vec<&str> = plan.mask.iter().map(|m| m.as_str()).collect();
        assert_eq!(masks, ["Bearer sk-live-123456", "sk-live-123456"]);

        let basic = Placement::Basic { username_field: "user".into(), password_field: "api_key".into() };
        let vals = vec![
            ("user".to_owned(), Zeroizing::new("ab".to_owned())),
            ("api_key".to_owned(), Zeroizing::new("p w&".to_owned())),
        ];
        let mut plan = InjectionPlan::default();
        plan.add((1, "u"), &basic, &vals);
        plan.add((1, "u"), &Placement::Query { param: "k".into(), field: "api_key".into() }, &vals);
        match &plan.injections[0].place {
            Filled::Header { value, .. } => assert_eq!(value.as_str(), "Basic YWI6cCB3Jg=="),
            Filled::Query { .. } => panic!("header expected"),
        }
        let masks: Vec<&str> = plan.mask.iter().map(|m| m.as_str()).collect();
        assert!(!masks.contains(&"ab"), "too short to mask");
        assert!(masks.contains(&"p w&") && masks.contains(&"p%20w%26") && masks.contains(&"Basic YWI6cCB3Jg=="));
        // A value that turned unsafe is not filled.
        let bad = vec![("api_key".to_owned(), Zeroizing::new("a\nb".to_owned()))];
        let mut plan = InjectionPlan::default();
        plan.add((1, "u"), &Placement::Query { param: "k".into(), field: "api_key".into() }, &bad);
        assert!(plan.injections.is_empty());
    }
}
