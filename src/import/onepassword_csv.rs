//! 1Password's CSV export (1Password 8: `Title,Url,Username,Password,OTPAuth,Favorite,Archived,
//! Tags,Notes`; 1Password 7's lowercase `title,website,username,password,notes` also reads).

use super::table::Table;
use super::{ImportError, Imported};
use crate::vault::entry::FieldKind;

pub(super) fn parse(text: &str) -> Result<Vec<Imported>, ImportError> {
    let t = Table::read(text)?;
    let title = t.require("1Password CSV", &["title"])?;
    let url = t.column(&["url", "website", "login url"]);
    let user = t.column(&["username", "login username"]);
    let pass = t.column(&["password", "login password"]);
    let otp = t.column(&["otpauth", "one-time password", "totp"]);
    let notes = t.column(&["notes", "notesplain"]);
    if user.is_none() && pass.is_none() && notes.is_none() {
        return Err(super::bad("line 1: not a 1Password CSV export: no Username, Password or Notes column"));
    }
    Ok(t.rows
        .iter()
        .map(|r| {
            let mut e = Imported::new(format!("line {}", r.line), "login");
            e.title = r.get(Some(title)).to_owned();
            e.url = r.get(url).to_owned();
            e.push("username", FieldKind::Text, r.get(user));
            e.push("password", FieldKind::Secret, r.get(pass));
            e.push("totp", FieldKind::Totp, r.get(otp));
            e.push("notes", FieldKind::Note, r.get(notes));
            if r.get(user).is_empty() && r.get(pass).is_empty() {
                e.entry_type = "note".into();
            }
            e
        })
        .collect())
}
