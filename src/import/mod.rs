//! Import from the password managers people leave: Bitwarden's unencrypted JSON export,
//! 1Password's 1PUX and CSV, KeePassXC's XML and CSV, and the Chrome/Firefox password CSV.
//! One file per format; each turns a whole export into [`Imported`] items or fails naming the
//! line (CSV) or item (JSON, XML, 1PUX) at fault.
//!
//! Owns parsing only: it never writes to a vault (the CLI hands the result to
//! `vault::ops::import_entries`, one transaction), never decides who may read an entry (every
//! imported entry is owner-only until shared) and never tiers a field L2 (that needs the
//! owner's browser; the pages' own parser, `web/assets/import.js`, proposes L2 fields there).
//! No I/O besides the bytes it is given; nothing it returns or reports contains a field value.

mod bitwarden;
mod browser_csv;
mod keepass_csv;
mod keepass_xml;
mod onepassword_csv;
mod onepux;
mod table;

use crate::vault::entry::{EntryInput, Field, FieldKind, Tier};

/// The `--from` choices of `clavitor entry import`. 1Password and KeePass exports come in two
/// shapes each, told apart by content (see [`detect`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Source {
    /// Bitwarden's unencrypted JSON export.
    Bitwarden,
    /// 1Password: a 1PUX archive (a zip file) or a CSV export.
    #[value(name = "1password")]
    OnePassword,
    /// KeePassXC: an XML export (starts with `<`) or a CSV export.
    Keepass,
    /// The Chrome or Firefox password CSV.
    Csv,
}

/// A concrete file shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    BitwardenJson,
    OnePux,
    OnePasswordCsv,
    KeepassXml,
    KeepassCsv,
    BrowserCsv,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ImportError {
    /// What is wrong and where (`line N`, `item N ("title")`); never a field's value.
    #[error("{0}")]
    Bad(String),
}

pub(crate) fn bad(msg: impl Into<String>) -> ImportError {
    ImportError::Bad(msg.into())
}

/// One entry as read from an export, before it is an [`EntryInput`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Imported {
    /// Where it was in the file (`line 4`, `item 2`), for error messages.
    pub origin: String,
    pub title: String,
    pub entry_type: String,
    pub url: String,
    /// Name, kind, value; empty values are dropped by [`Imported::push`].
    pub fields: Vec<(String, FieldKind, String)>,
}

impl Imported {
    pub(crate) fn new(origin: String, entry_type: &str) -> Self {
        Self { origin, entry_type: entry_type.to_owned(), ..Self::default() }
    }

    /// Adds a field unless its value is empty; a second field of one name gets a number.
    pub(crate) fn push(&mut self, name: &str, kind: FieldKind, value: &str) {
        if value.trim().is_empty() {
            return;
        }
        let base = if name.trim().is_empty() { "field".to_owned() } else { name.trim().to_owned() };
        let mut name = base.clone();
        let mut n = 2;
        while self.fields.iter().any(|(f, _, _)| *f == name) {
            name = format!("{base} {n}");
            n += 1;
        }
        self.fields.push((name, kind, value.to_owned()));
    }

    /// The entry to create: every field L1, no scopes (owner-only), validated like any entry.
    pub fn into_input(self) -> Result<EntryInput, ImportError> {
        let origin = self.origin;
        let title = if !self.title.trim().is_empty() {
            self.title.trim().to_owned()
        } else if !self.url.trim().is_empty() {
            self.url.trim().to_owned()
        } else {
            format!("Imported ({origin})")
        };
        let label = format!("{origin} ({title:?})");
        let input = EntryInput {
            uuid: None,
            title,
            entry_type: self.entry_type,
            url: self.url.trim().to_owned(),
            scopes: Vec::new(),
            fields: self
                .fields
                .into_iter()
                .map(|(name, kind, value)| Field { name, kind, tier: Tier::L1, value })
                .collect(),
            inject: Vec::new(),
            inject_only: false,
        };
        input.clone().into_parts().map_err(|e| bad(format!("{label}: {e}")))?;
        Ok(input)
    }
}

/// Tells the two shapes of a source apart: a 1Password file starting with the zip signature
/// `PK\x03\x04` is a 1PUX archive, any other a CSV export; a KeePass file whose first
/// non-blank character (after a byte-order mark) is `<` is an XML export, any other a CSV.
pub fn detect(source: Source, bytes: &[u8]) -> Format {
    let text_start = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let first = text_start.iter().find(|b| !b.is_ascii_whitespace()).copied();
    match source {
        Source::Bitwarden => Format::BitwardenJson,
        Source::OnePassword if bytes.starts_with(b"PK\x03\x04") => Format::OnePux,
        Source::OnePassword => Format::OnePasswordCsv,
        Source::Keepass if first == Some(b'<') => Format::KeepassXml,
        Source::Keepass => Format::KeepassCsv,
        Source::Csv => Format::BrowserCsv,
    }
}

/// Parses a whole export into entries, every one validated; any problem fails the whole file.
pub fn parse(source: Source, bytes: &[u8]) -> Result<Vec<EntryInput>, ImportError> {
    let items = match detect(source, bytes) {
        Format::BitwardenJson => bitwarden::parse(text(bytes)?)?,
        Format::OnePux => onepux::parse(bytes)?,
        Format::OnePasswordCsv => onepassword_csv::parse(text(bytes)?)?,
        Format::KeepassXml => keepass_xml::parse(text(bytes)?)?,
        Format::KeepassCsv => keepass_csv::parse(text(bytes)?)?,
        Format::BrowserCsv => browser_csv::parse(text(bytes)?)?,
    };
    if items.is_empty() {
        return Err(bad("the file holds no entries"));
    }
    items.into_iter().map(Imported::into_input).collect()
}

/// UTF-8 text without a byte-order mark.
fn text(bytes: &[u8]) -> Result<&str, ImportError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    std::str::from_utf8(bytes).map_err(|e| {
        let line = bytes[..e.valid_up_to()].iter().filter(|b| **b == b'\n').count() + 1;
        bad(format!("line {line}: the file is not UTF-8 text"))
    })
}

/// The 1-based line of byte offset `pos` in `text`.
pub(crate) fn line_of(text: &str, pos: usize) -> usize {
    text.as_bytes()[..pos.min(text.len())].iter().filter(|b| **b == b'\n').count() + 1
}

/// A label for an item in error messages: `item 3 ("Mail")`.
pub(crate) fn item_label(n: usize, title: &str) -> String {
    if title.is_empty() { format!("item {n}") } else { format!("item {n} ({title:?})") }
}
