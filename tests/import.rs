//! `clavitor entry import --from bitwarden|1password|keepass|csv FILE` (issue 17): each format
//! from a file the test writes in that tool's published export shape (never a real vault's),
//! read back through the real server; malformed and unknown files import nothing and name the
//! line or item at fault.

mod common;
#[path = "common/passkey.rs"]
mod passkey;

use std::io::Write;
use std::path::PathBuf;

use common::{Vault, request};
use passkey::Admin;
use serde_json::{Value, json};

fn write(v: &Vault, name: &str, bytes: &[u8]) -> PathBuf {
    let p = v.tmp.path().join(name);
    std::fs::write(&p, bytes).expect("write sample");
    p
}

fn import(v: &Vault, from: &str, file: &std::path::Path) -> std::process::Output {
    v.cli(&["entry", "import", "--from", from, file.to_str().expect("utf-8 path")])
}

fn entry_count(v: &Vault) -> usize {
    v.cli_json(&["entry", "list", "--json"], None).as_array().map_or(0, Vec::len)
}

const BITWARDEN: &str = r#"{
  "encrypted": false,
  "folders": [{"id": "f1", "name": "Work"}],
  "items": [
    {"id": "i1", "organizationId": null, "folderId": "f1", "type": 1, "reprompt": 0, "name": "GitHub",
     "notes": "work account", "favorite": false,
     "fields": [{"name": "recovery code", "value": "rc-1111", "type": 1, "linkedId": null}],
     "login": {"uris": [{"match": null, "uri": "https://github.com/login"}], "username": "octo",
               "password": "bw-pass-1", "totp": "JBSWY3DPEHPK3PXP"},
     "collectionIds": null},
    {"id": "i2", "type": 2, "name": "Wifi note", "notes": "the wifi is upstairs", "secureNote": {"type": 0}},
    {"id": "i3", "type": 3, "name": "Visa", "notes": null,
     "card": {"cardholderName": "A Owner", "brand": "Visa", "number": "4111111111111111",
              "expMonth": "12", "expYear": "2030", "code": "123"}},
    {"id": "i4", "type": 4, "name": "Me", "identity": {"firstName": "Ada", "lastName": "Owner",
     "passportNumber": "P1234567", "ssn": null, "email": "ada@example.com"}}
  ]
}"#;

const ONEPASSWORD_CSV: &str = "Title,Url,Username,Password,OTPAuth,Favorite,Archived,Tags,Notes\n\
Mail,https://mail.example.com,ada,op-csv-pass,,false,false,,\"a note\nover two lines\"\n\
Bank,https://bank.example.com,ada.b,op-csv-bank,otpauth://totp/Bank:ada?secret=JBSWY3DPEHPK3PXP&issuer=Bank,true,false,money,\n";

const KEEPASS_XML: &str = r#"<?xml version="1.0" encoding="utf-8" standalone="yes"?>
<KeePassFile>
  <Meta><Generator>KeePassXC</Generator><DatabaseName>Passwords</DatabaseName></Meta>
  <Root>
    <Group>
      <UUID>AAAAAAAAAAAAAAAAAAAAAA==</UUID>
      <Name>Root</Name>
      <Entry>
        <UUID>BBBBBBBBBBBBBBBBBBBBBB==</UUID>
        <String><Key>Notes</Key><Value>router &amp; modem</Value></String>
        <String><Key>Password</Key><Value ProtectInMemory="True">kp-xml-pass</Value></String>
        <String><Key>Title</Key><Value>Router</Value></String>
        <String><Key>URL</Key><Value>http://192.168.1.1</Value></String>
        <String><Key>UserName</Key><Value>admin</Value></String>
        <String><Key>PIN</Key><Value ProtectInMemory="True">4321</Value></String>
        <History>
          <Entry>
            <UUID>BBBBBBBBBBBBBBBBBBBBBB==</UUID>
            <String><Key>Password</Key><Value ProtectInMemory="True">old-history-pass</Value></String>
            <String><Key>Title</Key><Value>Router (old)</Value></String>
          </Entry>
        </History>
      </Entry>
      <Group>
        <UUID>CCCCCCCCCCCCCCCCCCCCCC==</UUID>
        <Name>Email</Name>
        <Entry>
          <UUID>DDDDDDDDDDDDDDDDDDDDDD==</UUID>
          <String><Key>Password</Key><Value ProtectInMemory="True">kp-xml-mail</Value></String>
          <String><Key>Title</Key><Value>Fastmail</Value></String>
          <String><Key>UserName</Key><Value>ada@fastmail.example</Value></String>
          <String><Key>otp</Key><Value>otpauth://totp/Fastmail:ada?secret=JBSWY3DPEHPK3PXP&amp;period=30&amp;digits=6&amp;issuer=Fastmail</Value></String>
        </Entry>
      </Group>
    </Group>
    <DeletedObjects/>
  </Root>
</KeePassFile>
"#;

const KEEPASS_CSV: &str = "\"Group\",\"Title\",\"Username\",\"Password\",\"URL\",\"Notes\",\"TOTP\",\"Icon\",\"Last Modified\",\"Created\"\n\
\"Root\",\"Forum\",\"ada\",\"kp-csv-pass\",\"https://forum.example.org\",\"\",\"\",\"0\",\"2024-01-02T03:04:05Z\",\"2024-01-02T03:04:05Z\"\n\
\"Root/Shop\",\"Shop\",\"ada@shop\",\"kp-csv-shop\",\"https://shop.example\",\"quoted \"\"note\"\"\",\"\",\"0\",\"2024-01-02T03:04:05Z\",\"2024-01-02T03:04:05Z\"\n";

const CHROME_CSV: &str = "name,url,username,password,note\n\
example.com,https://example.com/login,ada,chrome-pass,\n";

const FIREFOX_CSV: &str = "\"url\",\"username\",\"password\",\"httpRealm\",\"formActionOrigin\",\"guid\",\"timeCreated\",\"timeLastUsed\",\"timePasswordChanged\"\n\
\"https://accounts.firefox.example\",\"ada\",\"firefox-pass\",,\"https://accounts.firefox.example\",\"{0b0d2a52-1a1b-4c5f-8a3d-2f5c5f1e2d3c}\",\"1700000000000\",\"1700000000000\",\"1700000000000\"\n";

/// A 1PUX archive: `export.attributes` and `export.data` (JSON) in a zip, deflated.
fn onepux(data: &Value) -> Vec<u8> {
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut zip = zip::ZipWriter::new(&mut buf);
        let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        zip.start_file("export.attributes", opts).unwrap();
        zip.write_all(br#"{"version":3,"description":"1Password Unencrypted Export","createdAt":1700000000}"#).unwrap();
        zip.start_file("export.data", opts).unwrap();
        zip.write_all(data.to_string().as_bytes()).unwrap();
        zip.finish().unwrap();
    }
    buf.into_inner()
}

fn onepux_data() -> Value {
    json!({"accounts": [{"attrs": {"accountName": "Ada", "name": "Ada", "email": "ada@example.com"},
    "vaults": [{"attrs": {"uuid": "v1", "name": "Personal", "type": "P"}, "items": [
      {"uuid": "u1", "favIndex": 0, "createdAt": 1700000000, "updatedAt": 1700000000, "state": "active",
       "categoryUuid": "001",
       "details": {"loginFields": [
           {"value": "ada", "id": "", "name": "username", "fieldType": "T", "designation": "username"},
           {"value": "1p-pass", "id": "", "name": "password", "fieldType": "P", "designation": "password"}],
         "notesPlain": "1p note",
         "sections": [{"title": "Security", "name": "sec", "fields": [
           {"title": "one-time password", "id": "TOTP_1", "value": {"totp": "JBSWY3DPEHPK3PXP"}},
           {"title": "recovery code", "id": "rc", "value": {"concealed": "1p-recovery"}}]}],
         "passwordHistory": []},
       "overview": {"subtitle": "ada", "urls": [{"label": "", "url": "https://app.example.com"}],
         "title": "App", "url": "https://app.example.com", "ps": 80, "pbe": 60.0, "pgrng": true}},
      {"uuid": "u2", "state": "active", "categoryUuid": "002",
       "details": {"loginFields": [], "sections": [{"title": "", "fields": [
           {"title": "cardholder name", "id": "cardholder", "value": {"string": "Ada Owner"}},
           {"title": "number", "id": "ccnum", "value": {"creditCardNumber": "5555444433331111"}},
           {"title": "expiry date", "id": "expiry", "value": {"monthYear": 203012}}]}]},
       "overview": {"title": "Mastercard", "url": ""}},
      {"uuid": "u3", "state": "archived", "categoryUuid": "001",
       "details": {"loginFields": [{"value": "gone", "designation": "password", "fieldType": "P"}]},
       "overview": {"title": "Archived thing"}}
    ]}]}]})
}

/// Every entry (owner's view) by title.
fn by_title(s: &common::Server, token: &str) -> std::collections::HashMap<String, Value> {
    let list = s.get("/api/entries", Some(token)).json();
    list.as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let full = s.get(&format!("/api/entries/{}", e["id"]), Some(token)).json();
            (e["title"].as_str().unwrap().to_owned(), full)
        })
        .collect()
}

fn field<'a>(e: &'a Value, name: &str) -> &'a Value {
    e["fields"].as_array().unwrap().iter().find(|f| f["name"] == name).unwrap_or_else(|| panic!("no {name} in {e}"))
}

#[test]
fn every_format_imports_owner_only_with_l1_fields() {
    let v = Vault::new();
    let files = [
        ("bitwarden", write(&v, "bitwarden.json", BITWARDEN.as_bytes()), 4),
        ("1password", write(&v, "export.1pux", &onepux(&onepux_data())), 2),
        ("1password", write(&v, "1password.csv", ONEPASSWORD_CSV.as_bytes()), 2),
        ("keepass", write(&v, "keepass.xml", KEEPASS_XML.as_bytes()), 2),
        ("keepass", write(&v, "keepass.csv", KEEPASS_CSV.as_bytes()), 2),
        ("csv", write(&v, "chrome.csv", CHROME_CSV.as_bytes()), 1),
        ("csv", write(&v, "firefox.csv", FIREFOX_CSV.as_bytes()), 1),
    ];
    let mut total = 0;
    for (from, file, n) in &files {
        let out = import(&v, from, file);
        assert!(out.status.success(), "{from} {file:?}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("imported {n} entries")), "{from} {file:?}");
        total += n;
        assert_eq!(entry_count(&v), total);
    }
    let listed = v.cli_json(&["entry", "list", "--json"], None);
    assert!(listed.as_array().unwrap().iter().all(|e| e["scopes"] == ""), "owner-only: {listed}");

    let (_, agent) = v.add_agent("scoped", &[]);
    let s = v.serve();
    assert_eq!(s.get("/api/entries", Some(&agent)).json(), json!([]), "a scoped agent sees no imported entry");
    let all = by_title(&s, &v.owner);
    assert!(all.values().all(|e| e["fields"].as_array().unwrap().iter().all(|f| f["tier"] == "l1")));
    let value = |title: &str, name: &str| field(&all[title], name)["value"].as_str().unwrap_or("").to_owned();
    // Bitwarden: login with TOTP (never handed out, but stored), a hidden custom field, note,
    // card, identity.
    assert_eq!(all["GitHub"]["url"], "https://github.com/login");
    assert_eq!((value("GitHub", "username"), value("GitHub", "password")), ("octo".into(), "bw-pass-1".into()));
    assert_eq!(field(&all["GitHub"], "totp")["kind"], "totp");
    assert_eq!((value("GitHub", "recovery code"), value("GitHub", "notes")), ("rc-1111".into(), "work account".into()));
    assert_eq!(
        (all["Wifi note"]["type"].clone(), value("Wifi note", "notes")),
        (json!("note"), "the wifi is upstairs".into())
    );
    assert_eq!(
        (all["Visa"]["type"].clone(), value("Visa", "number"), value("Visa", "expiry")),
        (json!("card"), "4111111111111111".into(), "12/2030".into())
    );
    assert_eq!((all["Me"]["type"].clone(), value("Me", "passport number")), (json!("identity"), "P1234567".into()));
    // 1PUX: login fields, sections, card; the archived item is left out.
    assert_eq!(
        (value("App", "username"), value("App", "password"), value("App", "recovery code")),
        ("ada".into(), "1p-pass".into(), "1p-recovery".into())
    );
    assert_eq!(field(&all["App"], "one-time password")["kind"], "totp");
    assert_eq!(
        (all["Mastercard"]["type"].clone(), value("Mastercard", "number")),
        (json!("card"), "5555444433331111".into())
    );
    assert!(!all.contains_key("Archived thing"));
    // 1Password CSV: a quoted note over two lines; an otpauth URI.
    assert_eq!(value("Mail", "notes"), "a note\nover two lines");
    assert_eq!(field(&all["Bank"], "totp")["kind"], "totp");
    // KeePass XML: entities, custom strings, group path; history skipped.
    assert_eq!(
        (value("Router", "notes"), value("Router", "PIN"), value("Router", "password")),
        ("router & modem".into(), "4321".into(), "kp-xml-pass".into())
    );
    assert_eq!(value("Fastmail", "group"), "Root/Email");
    assert!(!all.contains_key("Router (old)") && !serde_json::to_string(&all).unwrap().contains("old-history-pass"));
    // KeePass CSV, Chrome, Firefox (title from the URL's host).
    assert_eq!((value("Shop", "notes"), value("Shop", "group")), ("quoted \"note\"".into(), "Root/Shop".into()));
    assert_eq!(
        (value("example.com", "password"), all["example.com"]["url"].clone()),
        ("chrome-pass".into(), json!("https://example.com/login"))
    );
    assert_eq!(value("accounts.firefox.example", "password"), "firefox-pass");
    // Each import is one audited create per entry by the local operator.
    let creates = v.audit_rows(false).iter().filter(|r| r["action"] == "entry.create").count();
    assert_eq!(creates, total);
}

/// (format, file name, content, what the error must name)
fn malformed() -> Vec<(&'static str, &'static str, Vec<u8>, &'static str)> {
    let mut bad_1pux_item = onepux_data();
    bad_1pux_item["accounts"][0]["vaults"][0]["items"][1]["details"]["sections"][0]["fields"][0]["value"] =
        json!("flat");
    vec![
        ("bitwarden", "enc.json", br#"{"encrypted": true, "encKeyValidation_DO_NOT_EDIT": "2.x", "items": []}"#.to_vec(), "encrypted"),
        ("bitwarden", "broken.json", b"{\n  \"items\": [\n    {\"type\": 1, \"name\": \"x\",,}\n  ]\n}".to_vec(), "line 3"),
        ("bitwarden", "badtype.json", br#"{"items": [{"type": 1, "name": "ok", "login": {"password": "p"}}, {"type": 9, "name": "Odd"}]}"#.to_vec(), "item 2 (\"Odd\")"),
        ("bitwarden", "badtotp.json", br#"{"items": [{"type": 1, "name": "ok"}, {"type": 1, "name": "Bad TOTP", "login": {"totp": "not base32 !!"}}]}"#.to_vec(), "item 2 (\"Bad TOTP\")"),
        ("bitwarden", "csv-instead.csv", CHROME_CSV.as_bytes().to_vec(), "not a Bitwarden JSON export"),
        ("1password", "broken.1pux", b"PK\x03\x04 not really a zip".to_vec(), "not a 1PUX archive"),
        ("1password", "badfield.1pux", onepux(&bad_1pux_item), "item 2 (\"Mastercard\")"),
        ("1password", "short.csv", b"Title,Url,Username,Password,OTPAuth,Favorite,Archived,Tags,Notes\nA,,u,p,,false,false,,\nB,,u\n".to_vec(), "line 3"),
        ("1password", "other.csv", b"name,url,username,password\nx,y,z,w\n".to_vec(), "no \"title\" column"),
        ("keepass", "broken.xml", b"<KeePassFile>\n<Root>\n<Group><Entry></Group>\n</Root></KeePassFile>".to_vec(), "line 3"),
        ("keepass", "protected.xml", b"<KeePassFile><Root><Group><Entry>\n<String><Key>Password</Key><Value Protected=\"True\">AAAA</Value></String></Entry></Group></Root></KeePassFile>".to_vec(), "line 2"),
        ("keepass", "notkeepass.xml", b"<html><body>hi</body></html>".to_vec(), "no <KeePassFile>"),
        ("keepass", "quote.csv", b"\"Group\",\"Title\",\"Username\",\"Password\",\"URL\",\"Notes\"\n\"Root\",\"A\",\"u\",\"p\",\"\",\"\"\n\"Root\",\"B\",\"u\",\"p\",\"\"\n".to_vec(), "line 3"),
        ("csv", "nopassword.csv", b"url,username\nhttps://a.example,ada\n".to_vec(), "no \"password\" column"),
        ("csv", "binary.csv", b"url,username,password\nhttps://a.example,ada,\xff\xfe\n".to_vec(), "line 2"),
        ("csv", "empty.csv", b"url,username,password\n".to_vec(), "no entries"),
    ]
}

#[test]
fn malformed_files_import_nothing_and_name_the_line_or_item() {
    let v = Vault::new();
    let good = write(&v, "good.csv", CHROME_CSV.as_bytes());
    assert!(import(&v, "csv", &good).status.success());
    for (from, name, bytes, names) in malformed() {
        let file = write(&v, name, &bytes);
        let out = import(&v, from, &file);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{from} {name} was accepted");
        assert!(err.contains(names) && err.contains("nothing was imported"), "{from} {name}: {err}");
        assert_eq!(entry_count(&v), 1, "{from} {name} imported something");
    }
    // A missing file and a wrong --from are clear too.
    let out = v.cli(&["entry", "import", "--from", "lastpass", good.to_str().unwrap()]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("possible values"));
    let out = v.cli(&["entry", "import", "--from", "csv"]);
    assert!(!out.status.success());
    // The JSON-lines form still works.
    let out = v.cli_stdin(&["entry", "import", "--file", "-"], Some("{\"title\": \"jsonl\"}\n"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(entry_count(&v), 2);
}

const L2: &str = "v2.AAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAAAAAAAA";

/// The pages' import (`POST /api/entries/import`): one gated batch, owner-only, all or nothing;
/// and the audit API the views use: names (also of gone items), filters, CSV.
#[test]
fn api_import_is_one_gated_batch_and_the_audit_names_and_filters() {
    let v = Vault::uninitialised_owner();
    let s = v.serve();
    let mut owner = Admin::owner(&s, &v.setup_code);
    let count = |token: &str| s.get("/api/entries", Some(token)).json().as_array().map_or(0, Vec::len);

    // Scopes are refused (imported entries are owner-only), a bad entry anywhere refuses the
    // batch naming it, and no passkey means no import.
    let r = owner.write(&s, "POST", "/api/entries/import", &json!({"entries": [{"title": "a", "scopes": ["0002"]}]}));
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.json()["message"].as_str().unwrap().contains("entry 1: imported entries are owner-only"), "{}", r.body);
    let bad = json!({"entries": [{"title": "ok"}, {"title": "second", "fields": [{"name": "n", "kind": "text", "tier": "l2", "value": "plain"}]}]});
    let r = owner.write(&s, "POST", "/api/entries/import", &bad);
    assert!(matches!(r.status, 400 | 422), "{} {}", r.status, r.body);
    assert!(r.json()["message"].as_str().unwrap().contains("entry 2"), "{}", r.body);
    let good = json!({"entries": [
        {"title": "Card", "type": "card", "fields": [{"name": "number", "kind": "secret", "tier": "l2", "value": L2},
                                                      {"name": "holder", "kind": "text", "value": "Ada"}]},
        {"title": "Mail", "fields": [{"name": "password", "kind": "secret", "value": "m-pass"}]},
        {"title": "Old note 7f3a9c", "type": "note"}]});
    let unsigned =
        request(&s.url("/api/entries/import"), "POST", Some(&owner.token), Some(good.to_string().as_bytes()));
    assert_eq!(unsigned.status, 403, "{}", unsigned.body);
    assert_eq!(count(&owner.token), 0, "nothing was imported");
    let r = owner.write(&s, "POST", "/api/entries/import", &good);
    assert_eq!(r.status, 201, "{}", r.body);
    let ids: Vec<i64> = r.json()["ids"].as_array().unwrap().iter().map(|i| i.as_i64().unwrap()).collect();
    assert_eq!(ids.len(), 3);
    common::eventually("the import is served", || count(&owner.token) == 3);
    let card = s.get(&format!("/api/entries/{}", ids[0]), Some(&owner.token)).json();
    assert_eq!((field(&card, "number")["ciphertext"].clone(), card["scopes"].clone()), (json!(L2), json!([])));

    // An agent, shared one entry; it reads it; then it is revoked and another entry deleted.
    let r = owner.write(&s, "POST", "/api/agents", &json!({"name": "deploy-bot"}));
    let (bot_id, bot) = (r.json()["agent"]["id"].as_i64().unwrap(), r.json()["token"].as_str().unwrap().to_owned());
    assert_eq!(count(&bot), 0, "imported entries are owner-only");
    let r = owner.write(&s, "PUT", &format!("/api/entries/{}/scopes", ids[1]), &json!({"scopes": ["0002"]}));
    assert_eq!(r.status, 200, "{}", r.body);
    common::eventually("shared", || count(&bot) == 1);
    assert_eq!(s.get(&format!("/api/entries/{}", ids[1]), Some(&bot)).status, 200);
    let owner_token = owner.token.clone();
    let audit = |q: &str| {
        let r = s.get(&format!("/api/audit?{q}"), Some(&owner_token));
        assert_eq!(r.status, 200, "{q}: {}", r.body);
        r.json()["rows"].as_array().unwrap().clone()
    };
    let reads = audit(&format!("agent={bot_id}&action=entry.read"));
    assert_eq!(reads.len(), 1, "{reads:?}");
    assert_eq!((reads[0]["agent_name"].clone(), reads[0]["entry_title"].clone()), (json!("deploy-bot"), json!("Mail")));
    assert_eq!(audit(&format!("entry={}&action=entry.read&outcome=ok", ids[1])).len(), 1);
    assert_eq!(audit(&format!("agent={bot_id}&action=entry.read&outcome=denied")).len(), 0);
    assert_eq!(audit(&format!("since={}", 4_000_000_000_000i64)).len(), 0, "nothing from the future");
    assert!(!audit("until=1").iter().any(|r| r["ts"].as_i64().unwrap() >= 1));
    assert_eq!(audit("limit=2").len(), 2, "paging");

    assert_eq!(owner.write(&s, "DELETE", &format!("/api/agents/{bot_id}"), &Value::Null).status, 200);
    assert_eq!(owner.write(&s, "DELETE", &format!("/api/entries/{}", ids[2]), &Value::Null).status, 200);
    let reads = audit(&format!("agent={bot_id}&action=entry.read"));
    assert_eq!(
        (reads[0]["agent_name"].clone(), reads[0]["agent_gone"].clone()),
        (json!("deploy-bot"), json!(true)),
        "a revoked agent keeps its name"
    );
    let deleted = audit(&format!("entry={}&action=entry.delete", ids[2]));
    assert_eq!(
        (deleted[0]["entry_title"].clone(), deleted[0]["entry_gone"].clone()),
        (json!("Old note 7f3a9c"), json!(true)),
        "a deleted entry keeps its title"
    );
    // The title is kept sealed: it is not in the file in the clear (the other titles are not
    // either; the agent's name is, as in the agents table).
    let raw = std::fs::read(v.vault_file()).unwrap();
    assert!(!raw.windows(b"Old note 7f3a9c".len()).any(|w| w == b"Old note 7f3a9c"), "a gone title is sealed at rest");

    // CSV: the same page, with names.
    let r = s.get(&format!("/api/audit?agent={bot_id}&action=entry.read&format=csv"), Some(&owner.token));
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/csv"));
    let lines: Vec<&str> = r.body.lines().collect();
    assert_eq!(lines[0], "id,time_ms,actor,agent_id,agent_name,action,entry_id,entry_title,outcome,detail,client");
    assert_eq!(lines.len(), 2);
    assert!(lines[1].contains(",deploy-bot,entry.read,") && lines[1].contains(",Mail,ok,"), "{}", lines[1]);
    // Bad filters are a 400 with a JSON body.
    for q in ["action=Entry.Read", "since=-5", "agent=0", "entry=x", "format=xml", "outcome=a%20b"] {
        let r = s.get(&format!("/api/audit?{q}"), Some(&owner.token));
        assert_eq!(r.status, 400, "{q}: {}", r.body);
        assert!(r.json()["error"].is_string());
    }
}
