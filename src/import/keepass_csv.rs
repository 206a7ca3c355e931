//! KeePassXC's CSV export: `"Group","Title","Username","Password","URL","Notes"` and, from
//! 2.6 on, `"TOTP","Icon","Last Modified","Created"` after them.

use super::table::Table;
use super::{ImportError, Imported};
use crate::vault::entry::FieldKind;

pub(super) fn parse(text: &str) -> Result<Vec<Imported>, ImportError> {
    let t = Table::read(text)?;
    let title = t.require("KeePassXC CSV", &["title"])?;
    let user = t.require("KeePassXC CSV", &["username", "user name"])?;
    let pass = t.require("KeePassXC CSV", &["password"])?;
    let (url, notes, otp, group) =
        (t.column(&["url"]), t.column(&["notes"]), t.column(&["totp"]), t.column(&["group"]));
    Ok(t.rows
        .iter()
        .map(|r| {
            let mut e = Imported::new(format!("line {}", r.line), "login");
            e.title = r.get(Some(title)).to_owned();
            e.url = r.get(url).to_owned();
            e.push("username", FieldKind::Text, r.get(Some(user)));
            e.push("password", FieldKind::Secret, r.get(Some(pass)));
            e.push("totp", FieldKind::Totp, r.get(otp));
            e.push("notes", FieldKind::Note, r.get(notes));
            e.push("group", FieldKind::Text, r.get(group));
            e
        })
        .collect())
}
