//! KeePassXC's XML export (the KeePass 2 XML shape): `<KeePassFile><Root><Group><Name>…` with
//! nested groups, each `<Entry>` holding `<String><Key>…</Key><Value>…</Value></String>` pairs
//! (Title, UserName, Password, URL, Notes, otp, and any custom key). Entries inside
//! `<History>` are old versions and are skipped. A value marked `Protected="True"` is still
//! encrypted by the database's inner stream (not a plain export) and is refused.

use quick_xml::Reader;
use quick_xml::events::Event;

use super::{ImportError, Imported, bad, line_of};
use crate::vault::entry::FieldKind;

#[derive(Default)]
struct Open {
    entry: Option<Imported>,
    key: String,
    value: String,
    in_key: bool,
    in_value: bool,
}

pub(super) fn parse(text: &str) -> Result<Vec<Imported>, ImportError> {
    let mut reader = Reader::from_str(text);
    let mut path: Vec<String> = Vec::new();
    let mut groups: Vec<String> = Vec::new();
    let mut history = 0usize;
    let mut open = Open::default();
    let mut out = Vec::new();
    let mut saw_root = false;
    let at = |reader: &Reader<&[u8]>| line_of(text, reader.buffer_position() as usize);
    loop {
        let event = reader.read_event().map_err(|e| {
            bad(format!("line {}: not a KeePass XML export ({e})", line_of(text, reader.error_position() as usize)))
        })?;
        match event {
            Event::Start(e) => {
                let name = e.name().as_ref().to_owned();
                match name.as_str() {
                    "KeePassFile" => saw_root = true,
                    "History" => history += 1,
                    "Entry" if history == 0 => {
                        let mut entry =
                            Imported::new(format!("entry {} (line {})", out.len() + 1, at(&reader)), "login");
                        entry.push("group", FieldKind::Text, &groups.join("/"));
                        open.entry = Some(entry);
                    }
                    "Group" => groups.push(String::new()),
                    "Key" if open.entry.is_some() && history == 0 => {
                        open.in_key = true;
                        open.key.clear();
                    }
                    "Value" if open.entry.is_some() && history == 0 => {
                        let protected = e
                            .attributes()
                            .flatten()
                            .any(|a| a.key.as_ref() == "Protected" && a.value.eq_ignore_ascii_case("true"));
                        if protected {
                            return Err(bad(format!(
                                "line {}: this value is encrypted (Protected=\"True\"): export the database \
                                 from KeePassXC with Database > Export > XML",
                                at(&reader)
                            )));
                        }
                        open.in_value = true;
                        open.value.clear();
                    }
                    _ => {}
                }
                path.push(name);
            }
            Event::End(e) => {
                let name = e.name();
                match name.as_ref() {
                    "History" => history = history.saturating_sub(1),
                    "Group" => {
                        groups.pop();
                    }
                    "Key" => open.in_key = false,
                    "Value" => open.in_value = false,
                    "String" if history == 0 => {
                        if let Some(entry) = open.entry.as_mut() {
                            store(entry, &open.key, &open.value);
                        }
                        open.key.clear();
                        open.value.clear();
                    }
                    "Entry" if history == 0 => {
                        if let Some(entry) = open.entry.take() {
                            out.push(entry);
                        }
                    }
                    _ => {}
                }
                path.pop();
            }
            Event::Text(t) => {
                // Entity references come as their own events (below), so this is literal text.
                take_text(&mut open, &path, &mut groups, &t.xml10_content());
            }
            Event::CData(t) => {
                take_text(&mut open, &path, &mut groups, &t.xml10_content());
            }
            Event::GeneralRef(r) => {
                let name = r.xml10_content();
                let ch = match r.resolve_char_ref() {
                    Ok(Some(c)) => c.to_string(),
                    _ => quick_xml::escape::resolve_predefined_entity(&name)
                        .map(str::to_owned)
                        .ok_or_else(|| bad(format!("line {}: unknown entity &{name};", at(&reader))))?,
                };
                take_text(&mut open, &path, &mut groups, &ch);
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !saw_root {
        return Err(bad("line 1: not a KeePass XML export: no <KeePassFile> element"));
    }
    Ok(out)
}

fn take_text(open: &mut Open, path: &[String], groups: &mut [String], s: &str) {
    if open.in_key {
        open.key.push_str(s);
    } else if open.in_value {
        open.value.push_str(s);
    } else if path.last().map(String::as_str) == Some("Name")
        && path.len() >= 2
        && path[path.len() - 2] == "Group"
        && let Some(g) = groups.last_mut()
    {
        g.push_str(s);
    }
}

fn store(entry: &mut Imported, key: &str, value: &str) {
    match key {
        "Title" => entry.title = value.to_owned(),
        "URL" => entry.url = value.to_owned(),
        "UserName" => entry.push("username", FieldKind::Text, value),
        "Password" => entry.push("password", FieldKind::Secret, value),
        "Notes" => entry.push("notes", FieldKind::Note, value),
        "otp" | "TOTP Seed" => entry.push("totp", FieldKind::Totp, value),
        "TOTP Settings" => {}
        other => entry.push(other, FieldKind::Text, value),
    }
}
