//! Autoscope (commercial, issue 16 §5): `POST /api/autoscope` suggests, for an entry the owner
//! is writing, each field's tier (L1/L2) and which of the vault's agents' scopes the entry
//! should carry, with a reason for each.
//!
//! Owns the route, its flags (`--autoscope-llm-url`, `--autoscope-llm-key-file`,
//! `--autoscope-llm-model`, `--autoscope-llm-timeout-secs`) and the choice between the
//! deterministic rules ([`rules`], the default) and an OpenAI-compatible model ([`llm`]), which
//! falls back to the rules on any failure. It reads only what it is sent (title, URL, type, field
//! names and kinds) and the names and scopes of the agents the calling admin lists; a request
//! carrying a value is refused before anything is read or sent. It never reads an entry, never
//! writes anything (a suggestion is applied by the ordinary WebAuthn-gated entry write), never
//! suggests a scope the caller could not set, and never logs what it sends or receives.

pub mod llm;
pub mod rules;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use axum::Json;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::api::{ApiError, Caller, JsonBytes};
use crate::audit::{Action, Outcome};
use crate::auth::Agent;
use crate::edition::EditionError;
use crate::vault::authority;
use crate::vault::entry::{MAX_FIELD_NAME, MAX_FIELDS};

/// Limits of what autoscope is sent.
const MAX_TITLE: usize = 256;
const MAX_URL: usize = 2048;
const MAX_TYPE: usize = 32;
/// Keys that carry a value somewhere in the vault's API; none is accepted anywhere in the body.
const VALUE_KEYS: &[&str] = &["value", "values", "ciphertext", "secret_value"];

/// The autoscope flags (commercial; global, like the license flags).
#[derive(Debug, Clone, clap::Args)]
pub struct AutoscopeArgs {
    /// An OpenAI-compatible chat-completions URL autoscope asks for suggestions (https://, or
    /// http:// to a loopback IP). Unset: the built-in rules only. Sent: entry title, URL, type,
    /// field names and kinds, and agent names; never a value.
    #[arg(long, env = "CLAVITOR_AUTOSCOPE_LLM_URL", global = true)]
    pub autoscope_llm_url: Option<String>,
    /// A file holding the endpoint's API key (sent as a bearer token).
    #[arg(long, env = "CLAVITOR_AUTOSCOPE_LLM_KEY_FILE", global = true)]
    pub autoscope_llm_key_file: Option<PathBuf>,
    /// The model named in the request.
    #[arg(long, env = "CLAVITOR_AUTOSCOPE_LLM_MODEL", default_value = "gpt-4o-mini", global = true)]
    pub autoscope_llm_model: String,
    /// Seconds the endpoint may take before the rules answer instead (1 to 120).
    #[arg(long, env = "CLAVITOR_AUTOSCOPE_LLM_TIMEOUT_SECS", default_value_t = 10, global = true,
          value_parser = clap::value_parser!(u64).range(1..=120))]
    pub autoscope_llm_timeout_secs: u64,
}

impl Default for AutoscopeArgs {
    fn default() -> Self {
        Self {
            autoscope_llm_url: None,
            autoscope_llm_key_file: None,
            autoscope_llm_model: "gpt-4o-mini".into(),
            autoscope_llm_timeout_secs: 10,
        }
    }
}

/// A configured model endpoint.
pub struct LlmConfig {
    pub url: String,
    pub key: Option<zeroize::Zeroizing<String>>,
    pub model: String,
    pub timeout: Duration,
}

static LLM: OnceLock<LlmConfig> = OnceLock::new();

/// Validates the flags once at start (a server only): a bad URL or an unreadable key file stops
/// the start rather than silently using the rules.
pub fn configure(args: &AutoscopeArgs) -> Result<(), EditionError> {
    let Some(url) = &args.autoscope_llm_url else {
        if args.autoscope_llm_key_file.is_some() {
            return Err(EditionError::Setting("--autoscope-llm-key-file needs --autoscope-llm-url".into()));
        }
        return Ok(());
    };
    crate::outbound::check_url(url, crate::outbound::PlainHttp::LoopbackOnly)
        .map_err(|e| EditionError::Setting(format!("--autoscope-llm-url: {e}")))?;
    let key = match &args.autoscope_llm_key_file {
        None => None,
        Some(path) => {
            let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
                EditionError::Setting(format!("--autoscope-llm-key-file {}: {}", path.display(), e.kind()))
            })?);
            let key = text.trim();
            if key.is_empty() || key.chars().any(|c| c.is_control() || c == ' ') {
                return Err(EditionError::Setting(format!(
                    "--autoscope-llm-key-file {}: the file must hold one API key",
                    path.display()
                )));
            }
            Some(zeroize::Zeroizing::new(key.to_owned()))
        }
    };
    let cfg = LlmConfig {
        url: url.clone(),
        key,
        model: args.autoscope_llm_model.clone(),
        timeout: Duration::from_secs(args.autoscope_llm_timeout_secs),
    };
    // Set once per process; a second configure keeps the first.
    let _ = LLM.set(cfg);
    Ok(())
}

/// One field as autoscope is sent it: a name and a kind, never a value.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FieldAsk {
    #[schema(min_length = 1, max_length = 64)]
    pub name: String,
    /// The field's kind, as in an entry.
    #[schema(value_type = crate::vault::entry::FieldKind)]
    pub kind: String,
}

/// What autoscope is sent about an entry.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Ask {
    #[schema(max_length = 256)]
    pub title: String,
    #[serde(default)]
    #[schema(max_length = 2048)]
    pub url: String,
    #[serde(rename = "type", default = "default_type")]
    #[schema(min_length = 1, max_length = 32)]
    pub entry_type: String,
    #[schema(max_items = 64)]
    pub fields: Vec<FieldAsk>,
}

fn default_type() -> String {
    "login".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub enum SuggestedTier {
    L1,
    L2,
}

/// A scope the caller could put on the entry, and the agents (that it lists) holding it.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub scope: String,
    pub agents: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldSuggestion {
    pub name: String,
    pub tier: SuggestedTier,
    /// Scopes whose agents need this field (empty for L2: no agent reads an L2 value).
    pub scopes: Vec<String>,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ScopeSuggestion {
    pub scope: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Suggestions {
    pub fields: Vec<FieldSuggestion>,
    pub scopes: Vec<ScopeSuggestion>,
}

/// The answer: suggestions only; applying them is an ordinary gated entry write.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct AutoscopeAnswer {
    fields: Vec<FieldSuggestion>,
    scopes: Vec<ScopeSuggestion>,
    /// `rules` or `llm`.
    source: String,
    /// Why the model's answer was not used (only when a model is configured and failed).
    fallback: Option<String>,
}

/// True if `v` holds a key naming a value anywhere.
fn carries_value(v: &Value) -> bool {
    match v {
        Value::Object(map) => map.iter().any(|(k, v)| VALUE_KEYS.contains(&k.as_str()) || carries_value(v)),
        Value::Array(list) => list.iter().any(carries_value),
        _ => false,
    }
}

fn check(ask: &Ask) -> Result<(), ApiError> {
    let bad = |m: String| Err(ApiError::Unprocessable(m));
    if ask.title.chars().count() > MAX_TITLE || ask.url.chars().count() > MAX_URL {
        return bad(format!("title is at most {MAX_TITLE} characters, url at most {MAX_URL}"));
    }
    if ask.entry_type.is_empty() || ask.entry_type.chars().count() > MAX_TYPE {
        return bad(format!("type is 1 to {MAX_TYPE} characters"));
    }
    if ask.fields.len() > MAX_FIELDS {
        return bad(format!("at most {MAX_FIELDS} fields"));
    }
    for f in &ask.fields {
        if f.name.is_empty() || f.name.chars().count() > MAX_FIELD_NAME {
            return bad(format!("field names are 1 to {MAX_FIELD_NAME} characters"));
        }
        if !["text", "secret", "url", "totp", "note"].contains(&f.kind.as_str()) {
            return bad("field kind must be one of text, secret, url, totp, note".into());
        }
    }
    Ok(())
}

/// The scopes `me` could put on an entry, from the agents it lists: for the owner every scope an
/// agent without all access holds (its own included); for a scoped admin only the scopes it
/// holds itself (it may set no other on an entry).
fn candidates(me: &Agent, agents: &[std::sync::Arc<Agent>]) -> Vec<Candidate> {
    let owner = me.all_access && me.admin;
    let mut by_scope: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for a in agents.iter().filter(|a| !a.all_access && a.id != me.id && authority::lists_agent(me, a)) {
        for s in a.scopes.iter() {
            if owner || me.scopes.iter().any(|h| h == s) {
                by_scope.entry(s.to_owned()).or_default().push(a.name.clone());
            }
        }
    }
    by_scope.into_iter().map(|(scope, agents)| Candidate { scope, agents }).collect()
}

#[utoipa::path(
    post,
    path = "/api/autoscope",
    summary = "Suggest tiers and scopes for an entry's fields (admin; names and kinds only, never values)",
    security(("bearer" = [])),
    request_body(content = Ask, content_type = "application/json"),
    responses(
        (status = 200, description = "suggestions (nothing is changed)", body = AutoscopeAnswer),
        (status = "4XX", description = "error: 400 bad input or a value sent, 401 no valid token, 403 not an admin, 415 body not JSON, 422 invalid", body = crate::api::openapi::schemas::ErrorBody),
    )
)]
pub async fn suggest(caller: Caller, JsonBytes(body): JsonBytes) -> Result<Response, ApiError> {
    caller.require_admin()?;
    let raw: Value =
        serde_json::from_slice(&body).map_err(|_| ApiError::BadRequest("the body is not valid JSON".into()))?;
    if carries_value(&raw) {
        return Err(ApiError::BadRequest(
            "autoscope never takes values: send the entry's title, url, type and field names and kinds only".into(),
        ));
    }
    let ask: Ask = serde_json::from_value(raw)
        .map_err(|_| ApiError::BadRequest("expected {title, url, type, fields: [{name, kind}]}".into()))?;
    check(&ask)?;
    let me = &caller.principal.agent;
    let candidates = candidates(me, &caller.principal.vault.agents());
    let rules = rules::suggest(&ask, &candidates);
    let (chosen, source, fallback) = match LLM.get() {
        None => (rules, "rules", None),
        Some(cfg) => {
            let (ask, cands) = (ask.clone(), candidates.clone());
            let call = tokio::task::spawn_blocking(move || llm::ask_model(cfg, &ask, &cands));
            match tokio::time::timeout(llm::deadline(cfg), call).await {
                Ok(Ok(Ok(s))) => (s, "llm", None),
                Ok(Ok(Err(e))) => (rules, "rules", Some(e.to_string())),
                Ok(Err(_)) => (rules, "rules", Some("the model call failed".to_owned())),
                Err(_) => (rules, "rules", Some("timed out".to_owned())),
            }
        }
    };
    if let Some(why) = &fallback {
        tracing::warn!(reason = %why, "autoscope: the model's answer was not used; the rules answered");
    }
    // Who asked and who answered is the owner's to know (the model is a third party when one is
    // configured); the title, URL and field names are not recorded.
    let detail = match &fallback {
        None => format!("answered by {source}"),
        Some(_) => "answered by rules (the model's answer was not used; the log says why)".to_owned(),
    };
    caller.principal.vault.audit(caller.event(Action::AutoscopeSuggest, Outcome::Ok).detail(detail)).await?;
    Ok(Json(json!({"fields": chosen.fields, "scopes": chosen.scopes, "source": source, "fallback": fallback}))
        .into_response())
}
