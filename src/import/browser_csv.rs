//! The password CSV of Chrome (and Chromium, Edge: `name,url,username,password,note`) and of
//! Firefox (`url,username,password,httpRealm,formActionOrigin,guid,timeCreated,…`).

use super::table::Table;
use super::{ImportError, Imported};
use crate::vault::entry::FieldKind;

pub(super) fn parse(text: &str) -> Result<Vec<Imported>, ImportError> {
    let t = Table::read(text)?;
    let url = t.require("Chrome/Firefox password", &["url"])?;
    t.require("Chrome/Firefox password", &["password"])?;
    let (name, user, pass, note) =
        (t.column(&["name"]), t.column(&["username"]), t.column(&["password"]), t.column(&["note", "notes"]));
    Ok(t.rows
        .iter()
        .map(|r| {
            let mut e = Imported::new(format!("line {}", r.line), "login");
            e.url = r.get(Some(url)).to_owned();
            e.title = if r.get(name).is_empty() { host_of(&e.url) } else { r.get(name).to_owned() };
            e.push("username", FieldKind::Text, r.get(user));
            e.push("password", FieldKind::Secret, r.get(pass));
            e.push("note", FieldKind::Note, r.get(note));
            e
        })
        .collect())
}

/// The host of a URL, for a title when the export has none (Firefox's has no name column).
pub(super) fn host_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split(['/', '?', '#']).next().unwrap_or("").rsplit('@').next().unwrap_or("").to_owned()
}
