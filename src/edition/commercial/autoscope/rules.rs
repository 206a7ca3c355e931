//! The deterministic autoscope classifier: a field's tier from its name, kind and the entry's
//! type; the entry's scopes from agent names that match words of its title or URL host.
//!
//! Pure: no I/O, no clock, no randomness, so the same input always gives the same answer (and
//! the answer the LLM path falls back to). Never sees a value: its input has none.

use super::{Ask, Candidate, FieldAsk, FieldSuggestion, ScopeSuggestion, SuggestedTier, Suggestions};

/// Field names (as words) that are identity or recovery data: L2 (the owner's browser encrypts
/// them; no agent ever reads them). Multi-word patterns match adjacent words or the words run
/// together ("cardnumber").
const L2_PATTERNS: &[(&str, &str)] = &[
    ("card number", "a payment card number is identity data"),
    ("cc", "a payment card number is identity data"),
    ("pan", "a payment card number is identity data"),
    ("cvv", "a card security code is identity data"),
    ("cvc", "a card security code is identity data"),
    ("csc", "a card security code is identity data"),
    ("pin", "a PIN is identity data"),
    ("iban", "a bank account number is identity data"),
    ("account number", "a bank account number is identity data"),
    ("routing number", "a bank routing number is identity data"),
    ("ssn", "a national identity number is identity data"),
    ("social security", "a national identity number is identity data"),
    ("national id", "a national identity number is identity data"),
    ("tax id", "a tax number is identity data"),
    ("passport", "a passport number is identity data"),
    ("driver license", "a driving licence number is identity data"),
    ("drivers license", "a driving licence number is identity data"),
    ("driving licence", "a driving licence number is identity data"),
    ("date of birth", "a date of birth is identity data"),
    ("dob", "a date of birth is identity data"),
    ("birthday", "a date of birth is identity data"),
    ("maiden name", "a security answer is recovery data"),
    ("security question", "a security question is recovery data"),
    ("security answer", "a security answer is recovery data"),
    ("answer", "a security answer is recovery data"),
    ("recovery", "recovery codes and keys are recovery data"),
    ("backup code", "backup codes are recovery data"),
    ("backup codes", "backup codes are recovery data"),
    ("seed phrase", "a wallet seed phrase is recovery data"),
    ("mnemonic", "a wallet seed phrase is recovery data"),
];

/// Names an agent needs to act with: L1.
const L1_PATTERNS: &[(&str, &str)] = &[
    ("username", "an agent needs the username to log in"),
    ("user", "an agent needs the username to log in"),
    ("login", "an agent needs the login to log in"),
    ("email", "an agent needs the login e-mail to log in"),
    ("password", "an agent needs the password to log in"),
    ("api key", "an agent needs the API key to call the service"),
    ("apikey", "an agent needs the API key to call the service"),
    ("key", "an agent needs the key to call the service"),
    ("token", "an agent needs the token to call the service"),
    ("secret", "an agent needs the secret to call the service"),
    ("client id", "an agent needs the client id to authenticate"),
    ("host", "an agent needs to know where to connect"),
    ("url", "an agent needs to know where to connect"),
    ("endpoint", "an agent needs to know where to connect"),
];

/// Words of a title or host that say nothing about which agent needs the entry.
const STOP_WORDS: &[&str] = &[
    "www", "com", "org", "net", "io", "dev", "app", "api", "the", "and", "for", "login", "account", "http", "https",
    "prod", "test", "staging", "key", "keys", "token", "admin", "agent", "bot", "service",
];

/// Lowercase words of a title, host or agent name, both as written ("github") and split at
/// case changes ("stripe", "billing" from "StripeBilling").
fn loose_words(text: &str) -> Vec<String> {
    let mut out: Vec<String> =
        text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase).collect();
    for w in words(text) {
        if !out.contains(&w) {
            out.push(w);
        }
    }
    out
}

/// Lowercase words: split on anything not alphanumeric and at lower→upper case changes.
pub fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut prev_lower = false;
    for c in text.chars() {
        if c.is_alphanumeric() {
            if c.is_uppercase() && prev_lower && !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            prev_lower = c.is_lowercase() || c.is_numeric();
            cur.extend(c.to_lowercase());
        } else {
            prev_lower = false;
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The first pattern of `patterns` that `name_words` contains, as adjacent words or run together.
fn matches(name_words: &[String], patterns: &'static [(&'static str, &'static str)]) -> Option<&'static str> {
    let joined = name_words.concat();
    patterns.iter().find_map(|(pattern, reason)| {
        let p: Vec<&str> = pattern.split(' ').collect();
        let adjacent = name_words.windows(p.len()).any(|w| w.iter().zip(&p).all(|(a, b)| a == b));
        let run_together = p.len() > 1 && joined.contains(&p.concat());
        (adjacent || run_together).then_some(*reason)
    })
}

/// A field's tier and why.
pub fn tier_of(field: &FieldAsk, entry_type: &str) -> (SuggestedTier, String) {
    let w = words(&field.name);
    if field.kind == "totp" {
        return (
            SuggestedTier::L1,
            "an agent needs the one-time code to log in (it gets codes, never the seed)".into(),
        );
    }
    if let Some(reason) = matches(&w, L2_PATTERNS) {
        return (SuggestedTier::L2, format!("\"{}\": {reason}", field.name));
    }
    if let Some(reason) = matches(&w, L1_PATTERNS) {
        return (SuggestedTier::L1, format!("\"{}\": {reason}", field.name));
    }
    match (entry_type, field.kind.as_str()) {
        ("card" | "identity", _) => (SuggestedTier::L2, format!("a field of a {entry_type} entry is identity data")),
        (_, "note") => (SuggestedTier::L2, "free-form notes often hold recovery data".into()),
        _ => (SuggestedTier::L1, "no identity or recovery pattern: an agent may need it to act".into()),
    }
}

/// The candidates whose agents are named like a word of the entry's title or URL host.
pub fn scopes_for(ask: &Ask, candidates: &[Candidate]) -> Vec<ScopeSuggestion> {
    let host = ask.url.split("://").nth(1).unwrap_or(&ask.url).split(['/', '?', '#']).next().unwrap_or("");
    let host = host.rsplit('@').next().unwrap_or(host);
    let mut entry_words: Vec<(String, &str)> = loose_words(&ask.title).into_iter().map(|w| (w, "title")).collect();
    entry_words.extend(loose_words(host).into_iter().map(|w| (w, "URL host")));
    entry_words.retain(|(w, _)| w.chars().count() >= 3 && !STOP_WORDS.contains(&w.as_str()));
    let mut out = Vec::new();
    for c in candidates {
        let hit = c.agents.iter().find_map(|agent| {
            let agent_words = loose_words(agent);
            entry_words.iter().find(|(w, _)| agent_words.contains(w)).map(|(w, place)| (agent, w, place))
        });
        if let Some((agent, word, place)) = hit {
            out.push(ScopeSuggestion {
                scope: c.scope.clone(),
                reason: format!("agent \"{agent}\" is named like \"{word}\" in the entry's {place}"),
            });
        }
    }
    out
}

/// The whole answer from the rules.
pub fn suggest(ask: &Ask, candidates: &[Candidate]) -> Suggestions {
    let scopes = scopes_for(ask, candidates);
    let fields = ask
        .fields
        .iter()
        .map(|f| {
            let (tier, reason) = tier_of(f, &ask.entry_type);
            let field_scopes = match tier {
                SuggestedTier::L1 => scopes.iter().map(|s| s.scope.clone()).collect(),
                SuggestedTier::L2 => Vec::new(),
            };
            FieldSuggestion { name: f.name.clone(), tier, scopes: field_scopes, reason }
        })
        .collect();
    Suggestions { fields, scopes }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(name: &str, kind: &str) -> FieldAsk {
        FieldAsk { name: name.into(), kind: kind.into() }
    }

    #[test]
    fn identity_and_recovery_are_l2_what_an_agent_acts_with_is_l1() {
        for (name, kind) in [
            ("Card Number", "secret"),
            ("cardNumber", "text"),
            ("CVV", "secret"),
            ("recovery codes", "note"),
            ("Security answer 1", "secret"),
            ("passport_no", "text"),
        ] {
            assert_eq!(tier_of(&field(name, kind), "login").0, SuggestedTier::L2, "{name}");
        }
        for (name, kind) in [("username", "text"), ("password", "secret"), ("API key", "secret"), ("otp", "totp")] {
            assert_eq!(tier_of(&field(name, kind), "login").0, SuggestedTier::L1, "{name}");
        }
        // "pin" is a word, not a substring: "spinner" says nothing.
        assert_eq!(tier_of(&field("spinner", "text"), "login").0, SuggestedTier::L1);
        assert_eq!(tier_of(&field("holder", "text"), "card").0, SuggestedTier::L2);
    }

    #[test]
    fn scopes_follow_agent_names_in_title_or_host() {
        let ask = Ask {
            title: "GitHub deploy".into(),
            url: "https://api.stripe.com/v1".into(),
            entry_type: "login".into(),
            fields: vec![field("password", "secret"), field("recovery codes", "note")],
        };
        let candidates = vec![
            Candidate { scope: "0002".into(), agents: vec!["github-ci".into()] },
            Candidate { scope: "0003".into(), agents: vec!["StripeBilling".into()] },
            Candidate { scope: "0004".into(), agents: vec!["mailer".into()] },
        ];
        let s = suggest(&ask, &candidates);
        let scopes: Vec<&str> = s.scopes.iter().map(|s| s.scope.as_str()).collect();
        assert_eq!(scopes, ["0002", "0003"]);
        assert_eq!(s.fields[0].scopes, ["0002", "0003"]);
        assert!(s.fields[1].scopes.is_empty());
        assert_eq!(s, suggest(&ask, &candidates), "deterministic");
    }
}
