//! What an agent is shown of an entry: the summary (list, search) and the full view (fetch),
//! with L1 values in the clear, L2 values as the owner's ciphertext, and L1 TOTP secrets never
//! (agents get codes from the TOTP route instead). An inject-only entry's view names its fields
//! (name, kind, tier) and shows its inject rules, but carries none of its L1 values.
//!
//! The full view is serialized once per entry version when the cache is refreshed and kept
//! sealed under the process's memory key, so a read only unseals bytes. These structs are the
//! one definition of that JSON: the API returns them and the OpenAPI document names them.

use serde::Serialize;

use super::CachedEntry;
use super::entry::{EntryData, FieldView};
use super::inject::InjectRule;

#[derive(Serialize, utoipa::ToSchema)]
pub struct EntrySummary<'a> {
    id: i64,
    uuid: &'a str,
    title: &'a str,
    #[serde(rename = "type")]
    entry_type: &'a str,
    url: &'a str,
    scopes: Vec<&'a str>,
    created_at: i64,
    updated_at: i64,
    version: i64,
}

impl<'a> EntrySummary<'a> {
    pub fn of(e: &'a CachedEntry) -> Self {
        Self {
            id: e.id,
            uuid: e.uuid(),
            title: e.title(),
            entry_type: e.entry_type(),
            url: e.url(),
            scopes: e.scopes.iter().collect(),
            created_at: e.created_at,
            updated_at: e.updated_at,
            version: e.version,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct EntryView<'a> {
    #[serde(flatten)]
    summary: EntrySummary<'a>,
    fields: Vec<FieldView<'a>>,
    /// Where the proxy injects this entry's credential; absent when there are no rules.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    inject: &'a [InjectRule],
    /// Present (true) when the L1 values are only injected: `fields` then carry no `value`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    inject_only: bool,
}

/// The full view's JSON. The caller seals it and wipes this buffer.
pub(super) fn render(entry: &CachedEntry, data: &EntryData) -> Result<zeroize::Zeroizing<Vec<u8>>, serde_json::Error> {
    let view = EntryView {
        summary: EntrySummary::of(entry),
        fields: data.fields.iter().map(|f| FieldView::of(f, data.inject_only)).collect(),
        inject: &data.inject,
        inject_only: data.inject_only,
    };
    // Sized for the worst case (every character escaped as \u00XX) so the buffer never grows:
    // growing would free copies of the secrets that nothing wipes.
    let texts: usize = [entry.uuid(), entry.title(), entry.entry_type(), entry.url()]
        .iter()
        .map(|t| t.len())
        .chain(data.fields.iter().map(|f| f.name.len() + f.value.len()))
        .sum();
    // Rules hold no secret; their JSON is copied as it is.
    let rules = if data.inject.is_empty() { 0 } else { serde_json::to_vec(&data.inject)?.len() + 32 };
    let mut out = zeroize::Zeroizing::new(Vec::with_capacity(512 + 64 * data.fields.len() + 6 * texts + rules));
    serde_json::to_writer(&mut *out, &view)?;
    Ok(out)
}
