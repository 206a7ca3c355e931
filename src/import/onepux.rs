//! 1Password's 1PUX export: a zip archive whose `export.data` is JSON,
//! `{"accounts": [{"vaults": [{"attrs": {"name"}, "items": [...]}]}]}`. Each item has a
//! `categoryUuid` (001 login, 002 credit card, 003 secure note, 004 identity, 005 password,
//! 006 document, 100+ the other templates), `overview` (`title`, `url`), and `details` with
//! `loginFields` (`designation` username/password), `password`, `notesPlain` and `sections`
//! of `fields` whose `value` is one typed member (`string`, `concealed`, `totp`,
//! `creditCardNumber`, `email`, `date`, `monthYear`, …). Archived and trashed items are kept
//! out (`state` other than `active`). Attached files (`files/`) are not imported.

use std::io::Read;

use serde_json::Value;

use super::{ImportError, Imported, bad, item_label};
use crate::vault::entry::FieldKind;

/// A 1PUX's `export.data` larger than this is refused before it is read into memory.
const MAX_EXPORT_DATA: u64 = 64 * 1024 * 1024;

pub(super) fn parse(bytes: &[u8]) -> Result<Vec<Imported>, ImportError> {
    let mut zip =
        zip::ZipArchive::new(std::io::Cursor::new(bytes)).map_err(|e| bad(format!("not a 1PUX archive: {e}")))?;
    let mut file = zip.by_name("export.data").map_err(|_| bad("not a 1PUX archive: it has no export.data"))?;
    if file.size() > MAX_EXPORT_DATA {
        return Err(bad("export.data is larger than 64 MiB"));
    }
    let mut text = String::new();
    file.by_ref()
        .take(MAX_EXPORT_DATA)
        .read_to_string(&mut text)
        .map_err(|e| bad(format!("export.data cannot be read: {e}")))?;
    let data: Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("export.data line {}: not valid JSON", e.line())))?;
    let accounts = data
        .get("accounts")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("export.data: not a 1PUX export (no \"accounts\" list)"))?;
    let mut out = Vec::new();
    let mut n = 0;
    for account in accounts {
        for vault in account.get("vaults").and_then(Value::as_array).into_iter().flatten() {
            for item in vault.get("items").and_then(Value::as_array).into_iter().flatten() {
                n += 1;
                if let Some(e) = one(n, item)? {
                    out.push(e);
                }
            }
        }
    }
    Ok(out)
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

fn category(uuid: &str) -> &'static str {
    match uuid {
        "001" => "login",
        "002" => "card",
        "003" => "note",
        "004" => "identity",
        "005" => "password",
        "006" => "document",
        "100" => "software-license",
        "101" => "bank-account",
        "102" => "database",
        "103" => "driver-license",
        "105" => "membership",
        "106" => "passport",
        "108" => "ssn",
        "109" => "router",
        "110" => "server",
        "111" => "email",
        "112" => "api",
        "114" => "ssh-key",
        _ => "other",
    }
}

fn one(n: usize, item: &Value) -> Result<Option<Imported>, ImportError> {
    let overview = item.get("overview").unwrap_or(&Value::Null);
    let title = s(overview, "title");
    let label = item_label(n, title);
    if !item.is_object() || !overview.is_object() {
        return Err(bad(format!("{label}: not a 1PUX item (no \"overview\")")));
    }
    let state = s(item, "state");
    if !state.is_empty() && state != "active" {
        return Ok(None);
    }
    let mut e = Imported::new(format!("item {n}"), category(s(item, "categoryUuid")));
    e.title = title.to_owned();
    e.url = s(overview, "url").to_owned();
    let details = item.get("details").unwrap_or(&Value::Null);
    for f in details.get("loginFields").and_then(Value::as_array).into_iter().flatten() {
        let value = s(f, "value");
        match s(f, "designation") {
            "username" => e.push("username", FieldKind::Text, value),
            "password" => e.push("password", FieldKind::Secret, value),
            _ => {
                let kind = if s(f, "fieldType") == "P" { FieldKind::Secret } else { FieldKind::Text };
                e.push(s(f, "name"), kind, value);
            }
        }
    }
    e.push("password", FieldKind::Secret, s(details, "password"));
    for section in details.get("sections").and_then(Value::as_array).into_iter().flatten() {
        for f in section.get("fields").and_then(Value::as_array).into_iter().flatten() {
            let name = if s(f, "title").is_empty() { s(f, "id") } else { s(f, "title") };
            let Some(value) = f.get("value").and_then(Value::as_object) else {
                return Err(bad(format!("{label}: field {name:?} has no typed \"value\"")));
            };
            for (ty, v) in value {
                let (kind, text) = match (ty.as_str(), v) {
                    ("concealed" | "creditCardNumber", Value::String(t)) => (FieldKind::Secret, t.clone()),
                    ("totp", Value::String(t)) => (FieldKind::Totp, t.clone()),
                    ("url", Value::String(t)) => (FieldKind::Url, t.clone()),
                    ("email", Value::Object(o)) => {
                        (FieldKind::Text, o.get("email_address").and_then(Value::as_str).unwrap_or("").to_owned())
                    }
                    (_, Value::String(t)) => (FieldKind::Text, t.clone()),
                    (_, Value::Number(x)) => (FieldKind::Text, x.to_string()),
                    (_, Value::Bool(b)) => (FieldKind::Text, b.to_string()),
                    _ => continue,
                };
                e.push(name, kind, &text);
            }
        }
    }
    e.push("notes", FieldKind::Note, s(details, "notesPlain"));
    Ok(Some(e))
}
