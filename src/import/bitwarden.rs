//! Bitwarden's unencrypted JSON export: `{"encrypted": false, "folders": [...], "items": [...]}`,
//! each item with a `type` (1 login, 2 secure note, 3 card, 4 identity, 5 SSH key), `name`,
//! `notes`, custom `fields` (type 0 text, 1 hidden, 2 boolean, 3 linked) and the part of its
//! type (`login` with `uris`, `username`, `password`, `totp`; `card`; `identity`; `sshKey`).
//! An encrypted export is refused: it can only be opened with the Bitwarden account's key.

use serde::Deserialize;
use serde_json::Value;

use super::{ImportError, Imported, bad, item_label};
use crate::vault::entry::FieldKind;

#[derive(Deserialize)]
struct Export {
    #[serde(default)]
    encrypted: bool,
    items: Option<Vec<Value>>,
}

pub(super) fn parse(text: &str) -> Result<Vec<Imported>, ImportError> {
    let export: Export = serde_json::from_str(text).map_err(|e| {
        bad(format!(
            "line {}: not a Bitwarden JSON export ({})",
            e.line(),
            match e.classify() {
                serde_json::error::Category::Data => "unexpected shape",
                _ => "invalid JSON",
            }
        ))
    })?;
    if export.encrypted {
        return Err(bad(
            "this Bitwarden export is encrypted: export again choosing \"JSON\" (not \"JSON (Encrypted)\")",
        ));
    }
    let items = export.items.ok_or_else(|| bad("not a Bitwarden JSON export: no \"items\" list"))?;
    items.iter().enumerate().map(|(i, item)| one(i + 1, item)).collect()
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

fn one(n: usize, item: &Value) -> Result<Imported, ImportError> {
    let name = s(item, "name");
    let label = item_label(n, name);
    if !item.is_object() {
        return Err(bad(format!("{label}: not an object")));
    }
    let kind = item.get("type").and_then(Value::as_u64).ok_or_else(|| bad(format!("{label}: no numeric \"type\"")))?;
    let mut e = Imported::new(format!("item {n}"), "login");
    e.title = name.to_owned();
    match kind {
        1 => {
            let login = item.get("login").unwrap_or(&Value::Null);
            let uris: Vec<&str> = login
                .get("uris")
                .and_then(Value::as_array)
                .map(|u| u.iter().map(|x| s(x, "uri")).filter(|u| !u.is_empty()).collect())
                .unwrap_or_default();
            e.url = uris.first().copied().unwrap_or("").to_owned();
            e.push("username", FieldKind::Text, s(login, "username"));
            e.push("password", FieldKind::Secret, s(login, "password"));
            e.push("totp", FieldKind::Totp, s(login, "totp"));
            for u in uris.iter().skip(1) {
                e.push("url", FieldKind::Url, u);
            }
        }
        2 => e.entry_type = "note".into(),
        3 => {
            e.entry_type = "card".into();
            let c = item.get("card").unwrap_or(&Value::Null);
            e.push("cardholder", FieldKind::Text, s(c, "cardholderName"));
            e.push("brand", FieldKind::Text, s(c, "brand"));
            e.push("number", FieldKind::Secret, s(c, "number"));
            let (m, y) = (s(c, "expMonth"), s(c, "expYear"));
            if !m.is_empty() || !y.is_empty() {
                e.push("expiry", FieldKind::Text, &format!("{m}/{y}"));
            }
            e.push("code", FieldKind::Secret, s(c, "code"));
        }
        4 => {
            e.entry_type = "identity".into();
            let id = item.get("identity").unwrap_or(&Value::Null);
            for (key, field, kind) in [
                ("title", "title", FieldKind::Text),
                ("firstName", "first name", FieldKind::Text),
                ("middleName", "middle name", FieldKind::Text),
                ("lastName", "last name", FieldKind::Text),
                ("username", "username", FieldKind::Text),
                ("company", "company", FieldKind::Text),
                ("email", "email", FieldKind::Text),
                ("phone", "phone", FieldKind::Text),
                ("address1", "address", FieldKind::Text),
                ("address2", "address 2", FieldKind::Text),
                ("address3", "address 3", FieldKind::Text),
                ("city", "city", FieldKind::Text),
                ("state", "state", FieldKind::Text),
                ("postalCode", "postal code", FieldKind::Text),
                ("country", "country", FieldKind::Text),
                ("ssn", "ssn", FieldKind::Secret),
                ("passportNumber", "passport number", FieldKind::Secret),
                ("licenseNumber", "license number", FieldKind::Secret),
            ] {
                e.push(field, kind, s(id, key));
            }
        }
        5 => {
            e.entry_type = "ssh-key".into();
            let k = item.get("sshKey").unwrap_or(&Value::Null);
            e.push("private key", FieldKind::Secret, s(k, "privateKey"));
            e.push("public key", FieldKind::Text, s(k, "publicKey"));
            e.push("fingerprint", FieldKind::Text, s(k, "keyFingerprint"));
        }
        other => return Err(bad(format!("{label}: unknown item type {other}"))),
    }
    for f in item.get("fields").and_then(Value::as_array).into_iter().flatten() {
        let value = match f.get("value") {
            Some(Value::String(v)) => v.clone(),
            Some(Value::Bool(b)) => b.to_string(),
            Some(Value::Number(n)) => n.to_string(),
            _ => String::new(),
        };
        let kind = if f.get("type").and_then(Value::as_u64) == Some(1) { FieldKind::Secret } else { FieldKind::Text };
        e.push(s(f, "name"), kind, &value);
    }
    e.push("notes", FieldKind::Note, s(item, "notes"));
    Ok(e)
}
