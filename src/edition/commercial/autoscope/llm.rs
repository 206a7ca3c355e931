//! The optional LLM path of autoscope: one OpenAI-compatible chat-completions call
//! (`--autoscope-llm-url`, bearer key read from `--autoscope-llm-key-file`), bounded by
//! `--autoscope-llm-timeout-secs`, and the strict check of its answer.
//!
//! It sends only what the request carried (title, URL, type, field names and kinds) and the
//! candidate scopes with their agents' names; there is no value to send (the request type has
//! none). Any failure (transport, timeout, non-2xx, an answer that is not the JSON asked for, a
//! field missing or twice, a scope that is not a candidate) is an `LlmError`, and the caller
//! answers with the rules. Never logs the key, the prompt or the answer.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{Value, json};

use super::{Ask, Candidate, FieldSuggestion, LlmConfig, ScopeSuggestion, SuggestedTier, Suggestions};

/// Largest answer read from the endpoint.
const MAX_ANSWER: u64 = 256 * 1024;
/// Longest reason kept from the model (characters).
const MAX_REASON: usize = 300;

#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error("request failed: {0}")]
    Transport(String),
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("the answer is not the JSON asked for: {0}")]
    Shape(&'static str),
    #[error("the answer names a scope that is not one of the vault's candidates")]
    UnknownScope,
}

const SYSTEM: &str = "You classify the fields of a credential-vault entry for AI agents. \
For each field give a tier: L1 for what an agent needs to act (username, password, API key, token, \
one-time code), L2 for identity and recovery data (card numbers, card codes, PINs, recovery codes, \
security answers, identity documents, dates of birth). Suggest which of the candidate scopes (each \
names the agents that hold it) the entry should carry so that the right agents can read its L1 fields; \
use only candidate scope strings, and none if unsure. Answer with one JSON object only: \
{\"fields\": [{\"name\": <field name as given>, \"tier\": \"L1\"|\"L2\", \"scopes\": [<scope>...], \
\"reason\": <short reason>}], \"scopes\": [{\"scope\": <scope>, \"reason\": <short reason>}]}";

/// The user message: exactly what autoscope was sent, plus the candidates.
pub fn prompt(ask: &Ask, candidates: &[Candidate]) -> Value {
    json!({
        "entry": {
            "title": ask.title,
            "url": ask.url,
            "type": ask.entry_type,
            "fields": ask.fields.iter().map(|f| json!({"name": f.name, "kind": f.kind})).collect::<Vec<_>>(),
        },
        "candidate_scopes": candidates.iter().map(|c| json!({"scope": c.scope, "agents": c.agents})).collect::<Vec<_>>(),
    })
}

/// Asks the endpoint; blocking (run it on the blocking pool).
pub fn ask_model(cfg: &LlmConfig, ask: &Ask, candidates: &[Candidate]) -> Result<Suggestions, LlmError> {
    let body = json!({
        "model": cfg.model,
        "temperature": 0,
        "response_format": {"type": "json_object"},
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": prompt(ask, candidates).to_string()},
        ],
    });
    let agent = crate::outbound::client(cfg.timeout);
    let mut req = agent.post(&cfg.url).header("Content-Type", "application/json");
    if let Some(key) = &cfg.key {
        req = req.header("Authorization", format!("Bearer {}", key.as_str()));
    }
    let mut resp = req.send(body.to_string().as_bytes()).map_err(|e| LlmError::Transport(describe(&e)))?;
    let status = resp.status().as_u16();
    if !(200..300).contains(&status) {
        return Err(LlmError::Status(status));
    }
    let text = resp
        .body_mut()
        .with_config()
        .limit(MAX_ANSWER)
        .read_to_string()
        .map_err(|e| LlmError::Transport(describe(&e)))?;
    parse_answer(&text, ask, candidates)
}

fn describe(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Timeout(_) => "timed out".into(),
        ureq::Error::Io(io) if matches!(io.kind(), std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock) => {
            "timed out".into()
        }
        other => crate::node::kuma::describe(other),
    }
}

/// Checks a chat-completions answer against what was asked. Public for the unit tests.
pub fn parse_answer(text: &str, ask: &Ask, candidates: &[Candidate]) -> Result<Suggestions, LlmError> {
    let outer: Value = serde_json::from_str(text).map_err(|_| LlmError::Shape("the response is not JSON"))?;
    let content = outer["choices"][0]["message"]["content"].as_str().ok_or(LlmError::Shape("no message content"))?;
    let content = content.trim();
    // Some models wrap JSON in a Markdown fence despite response_format.
    let content = content
        .strip_prefix("```json")
        .or_else(|| content.strip_prefix("```"))
        .and_then(|c| c.strip_suffix("```"))
        .unwrap_or(content);
    let answer: Value = serde_json::from_str(content).map_err(|_| LlmError::Shape("the message is not JSON"))?;
    let known: HashSet<&str> = candidates.iter().map(|c| c.scope.as_str()).collect();
    let scope_list = |v: &Value| -> Result<Vec<String>, LlmError> {
        let list = match v {
            Value::Null => return Ok(Vec::new()),
            Value::Array(list) => list,
            _ => return Err(LlmError::Shape("scopes is not a list")),
        };
        let mut out: Vec<String> = Vec::new();
        for s in list {
            let s = s.as_str().ok_or(LlmError::Shape("a scope is not a string"))?;
            if !known.contains(s) {
                return Err(LlmError::UnknownScope);
            }
            if !out.iter().any(|o| o == s) {
                out.push(s.to_owned());
            }
        }
        Ok(out)
    };
    let reason = |v: &Value| -> String {
        let r = v.as_str().unwrap_or("").trim();
        let r: String = r.chars().filter(|c| !c.is_control()).take(MAX_REASON).collect();
        if r.is_empty() { "suggested by the model".into() } else { format!("model: {r}") }
    };
    let given = answer["fields"].as_array().ok_or(LlmError::Shape("no fields list"))?;
    let mut fields = Vec::with_capacity(ask.fields.len());
    for f in &ask.fields {
        let mut hits = given.iter().filter(|g| g["name"].as_str() == Some(f.name.as_str()));
        let (Some(g), None) = (hits.next(), hits.next()) else {
            return Err(LlmError::Shape("a field is missing or answered twice"));
        };
        let tier = match g["tier"].as_str().map(str::to_ascii_uppercase).as_deref() {
            Some("L1") => SuggestedTier::L1,
            Some("L2") => SuggestedTier::L2,
            _ => return Err(LlmError::Shape("a tier is not L1 or L2")),
        };
        let scopes = scope_list(&g["scopes"])?;
        // An L2 value is never readable by an agent: a scope for it suggests nothing.
        let scopes = if tier == SuggestedTier::L2 { Vec::new() } else { scopes };
        fields.push(FieldSuggestion { name: f.name.clone(), tier, scopes, reason: reason(&g["reason"]) });
    }
    if given.len() != ask.fields.len() {
        return Err(LlmError::Shape("the answer names fields that were not asked about"));
    }
    let mut scopes = Vec::new();
    if let Some(list) = answer["scopes"].as_array() {
        for s in list {
            let scope = s["scope"].as_str().ok_or(LlmError::Shape("a scope is not a string"))?;
            if !known.contains(scope) {
                return Err(LlmError::UnknownScope);
            }
            if !scopes.iter().any(|x: &ScopeSuggestion| x.scope == scope) {
                scopes.push(ScopeSuggestion { scope: scope.to_owned(), reason: reason(&s["reason"]) });
            }
        }
    } else if !answer["scopes"].is_null() {
        return Err(LlmError::Shape("scopes is not a list"));
    }
    // Field scopes the model did not list at the top are still suggestions for the entry.
    for f in &fields {
        for s in &f.scopes {
            if !scopes.iter().any(|x| &x.scope == s) {
                scopes.push(ScopeSuggestion { scope: s.clone(), reason: "model: suggested for an L1 field".into() });
            }
        }
    }
    Ok(Suggestions { fields, scopes })
}

/// How long the whole call may take, with a margin over the client's own timeout.
pub fn deadline(cfg: &LlmConfig) -> Duration {
    cfg.timeout + Duration::from_secs(1)
}

#[cfg(test)]
mod tests {
    use super::super::FieldAsk;
    use super::*;

    fn ask() -> (Ask, Vec<Candidate>) {
        (
            Ask {
                title: "GitHub".into(),
                url: "https://github.com".into(),
                entry_type: "login".into(),
                fields: vec![
                    FieldAsk { name: "password".into(), kind: "secret".into() },
                    FieldAsk { name: "recovery".into(), kind: "note".into() },
                ],
            },
            vec![Candidate { scope: "0002".into(), agents: vec!["ci".into()] }],
        )
    }

    fn wrap(content: &str) -> String {
        json!({"choices": [{"message": {"role": "assistant", "content": content}}]}).to_string()
    }

    #[test]
    fn a_good_answer_is_taken_and_a_bad_one_refused() {
        let (a, c) = ask();
        let good = r#"{"fields":[{"name":"password","tier":"L1","scopes":["0002"],"reason":"login"},
            {"name":"recovery","tier":"L2","scopes":["0002"],"reason":"recovery"}]}"#;
        let s = parse_answer(&wrap(good), &a, &c).unwrap();
        assert_eq!(s.fields[0].tier, SuggestedTier::L1);
        assert_eq!(s.fields[1].scopes, Vec::<String>::new());
        assert_eq!(s.scopes.len(), 1);
        let unknown = good.replace("\"0002\"]", "\"ffff\"]");
        assert!(matches!(parse_answer(&wrap(&unknown), &a, &c), Err(LlmError::UnknownScope)));
        for bad in [
            "not json",
            r#"{"fields":[{"name":"password","tier":"L1"}]}"#,
            r#"{"fields":[{"name":"password","tier":"L3"},{"name":"recovery","tier":"L2"}]}"#,
        ] {
            assert!(parse_answer(&wrap(bad), &a, &c).is_err(), "{bad}");
        }
        assert!(parse_answer("{}", &a, &c).is_err());
    }
}
