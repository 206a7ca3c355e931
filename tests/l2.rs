//! What the server enforces for L2 (browser-encrypted) data (issue 12 §4): the keyring is never
//! left without a way to unlock it (removing the passkey whose PRF output is the only wrap of
//! the L2 key is refused until another wrap exists; a keyring write that would drop every wrap
//! is refused); L2 values must be well-formed `v1.`/`v2.` envelopes; a new entry may carry the
//! uuid its v2 values are bound to. Real binary, soft passkeys, genuine assertions (as in
//! `tests/webauthn.rs`). The binding itself is checked by the browser (`tests/browser`).

mod common;
#[path = "common/passkey.rs"]
mod passkey;

use common::{Server, Vault};
use passkey::post_json;
use serde_json::{Value, json};
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_authenticator_rs::softpasskey::SoftPasskey;
use webauthn_rs::prelude::{CreationChallengeResponse, Url};

fn origin() -> Url {
    Url::parse(passkey::ORIGIN).unwrap()
}

/// A vault whose owner was set up through its link with a soft passkey.
struct Owned {
    _v: Vault,
    s: Server,
    owner: passkey::Admin,
}

impl Owned {
    fn new() -> Self {
        let v = Vault::uninitialised_owner();
        let s = Server::start(&v.dir(), &[]);
        let owner = passkey::Admin::owner(&s, &v.setup_code);
        Owned { _v: v, s, owner }
    }

    fn write(&mut self, method: &str, path: &str, body: &Value) -> common::Resp {
        self.owner.write(&self.s, method, path, body)
    }

    fn passkey_ids(&self) -> Vec<String> {
        let list = self.s.get("/api/passkeys", Some(&self.owner.token)).json();
        list["passkeys"].as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap().to_owned()).collect()
    }

    /// Enrolls a further passkey (approved by the current one); returns its id.
    fn add_passkey(&mut self, name: &str) -> String {
        let mut other = SoftPasskey::new(true);
        let r = post_json(&self.s, "/api/passkeys/options", Some(&self.owner.token), &json!({}));
        assert_eq!(r.status, 200, "{}", r.body);
        let start = r.json();
        let ccr: CreationChallengeResponse = serde_json::from_value(start["options"].clone()).unwrap();
        let cred = other.do_registration(origin(), ccr).unwrap();
        let body = json!({"registration_id": start["registration_id"], "name": name, "credential": cred});
        let r = self.write("POST", "/api/passkeys", &body);
        assert_eq!(r.status, 201, "{}", r.body);
        r.json()["id"].as_str().unwrap().to_owned()
    }
}

fn prf_wrap(credential_id: &str, wrapped: &str) -> Value {
    json!({"kind": "prf", "credential_id": credential_id, "iv": "AAAAAAAAAAAAAAAA", "wrapped": wrapped})
}

fn passphrase_wrap(wrapped: &str) -> Value {
    json!({"kind": "passphrase", "salt": "AAAA", "iterations": 600000, "iv": "AAAAAAAAAAAAAAAA", "wrapped": wrapped})
}

fn ring(wraps: &[Value]) -> Value {
    json!({"version": 1, "alg": "AES-GCM-256", "prf_salt": "AAAA", "wraps": wraps})
}

#[test]
fn the_only_wrap_of_the_l2_key_cannot_be_removed() {
    let mut o = Owned::new();
    let first = o.passkey_ids().remove(0);
    let backup = o.add_passkey("backup without a wrap");
    let r = o.write("PUT", "/api/keyring", &ring(&[prf_wrap(&first, "PRFWRAP1")]));
    assert_eq!(r.status, 200, "{}", r.body);

    // The first passkey's PRF output is the only wrap: refused, with the way out in the message.
    let r = o.write("DELETE", &format!("/api/passkeys/{first}"), &Value::Null);
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(r.json()["error"], "conflict");
    let msg = r.json()["message"].as_str().unwrap().to_owned();
    assert!(msg.contains("only key to your L2") && msg.contains("recovery passphrase"), "{msg}");
    assert_eq!(o.passkey_ids().len(), 2, "nothing removed");

    // A wrap for a passkey that is not registered does not count as another way in.
    let r =
        o.write("PUT", "/api/keyring", &ring(&[prf_wrap(&first, "PRFWRAP1"), prf_wrap("bm90LXJlZ2lzdGVyZWQ", "X")]));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(o.write("DELETE", &format!("/api/passkeys/{first}"), &Value::Null).status, 409);

    // Once a recovery passphrase wraps the key too, the first passkey may go.
    let r = o.write("PUT", "/api/keyring", &ring(&[prf_wrap(&first, "PRFWRAP1"), passphrase_wrap("PASSWRAP")]));
    assert_eq!(r.status, 200, "{}", r.body);
    let r = o.write("DELETE", &format!("/api/passkeys/{first}"), &Value::Null);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(o.passkey_ids(), vec![backup]);
}

#[test]
fn a_keyring_write_never_drops_every_wrap() {
    let mut o = Owned::new();
    let first = o.passkey_ids().remove(0);
    let r = o.write("PUT", "/api/keyring", &ring(&[]));
    assert_eq!(r.status, 422, "no wrap at all: {}", r.body);
    let r = o.write("PUT", "/api/keyring", &json!({"version": 1}));
    assert_eq!(r.status, 422, "no wraps field: {}", r.body);
    let r = o.write("PUT", "/api/keyring", &ring(&[json!({"kind": "mystery", "wrapped": "X"})]));
    assert_eq!(r.status, 422, "no usable wrap: {}", r.body);
    assert_eq!(o.s.get("/api/keyring", Some(&o.owner.token)).json()["keyring"], Value::Null, "nothing stored");

    let stored = ring(&[prf_wrap(&first, "PRFWRAP1")]);
    assert_eq!(o.write("PUT", "/api/keyring", &stored).status, 200);
    // A keyring that keeps none of the stored wraps means another L2 key: every value lost.
    let r = o.write("PUT", "/api/keyring", &ring(&[passphrase_wrap("OTHERKEY")]));
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.json()["message"].as_str().unwrap().contains("unreadable"));
    assert_eq!(o.s.get("/api/keyring", Some(&o.owner.token)).json()["keyring"], stored, "unchanged");
    // Adding a wrap (keeping the stored one), then dropping the first, is fine.
    let both = ring(&[prf_wrap(&first, "PRFWRAP1"), passphrase_wrap("PASSWRAP")]);
    assert_eq!(o.write("PUT", "/api/keyring", &both).status, 200);
    let only_pass = ring(&[passphrase_wrap("PASSWRAP")]);
    assert_eq!(o.write("PUT", "/api/keyring", &only_pass).status, 200);
}

const IV: &str = "AAAAAAAAAAAAAAAA";
const CT: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAA";

fn l2_entry(uuid: Option<&str>, value: &str) -> Value {
    let mut e = json!({"title": "L2", "fields": [{"name": "note", "kind": "note", "tier": "l2", "value": value}]});
    if let Some(u) = uuid {
        e["uuid"] = json!(u);
    }
    e
}

#[test]
fn a_new_entry_carries_the_uuid_its_l2_values_are_bound_to() {
    let mut o = Owned::new();
    let uuid = "0b7d5c1e-2f3a-4b6c-8d9e-0f1a2b3c4d5e";
    let v2 = format!("v2.{IV}.{CT}");
    let r = o.write("POST", "/api/entries", &l2_entry(Some(uuid), &v2));
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["id"].as_i64().unwrap();
    let e = o.s.get(&format!("/api/entries/{id}"), Some(&o.owner.token)).json();
    assert_eq!(e["uuid"], uuid, "the server uses the browser's uuid");
    assert_eq!(e["fields"][0]["ciphertext"], v2.as_str());

    // A uuid is used once per vault, also after the entry is deleted.
    let r = o.write("POST", "/api/entries", &l2_entry(Some(uuid), &v2));
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(o.write("DELETE", &format!("/api/entries/{id}"), &Value::Null).status, 200);
    assert_eq!(o.write("POST", "/api/entries", &l2_entry(Some(uuid), &v2)).status, 409);

    // Replacing an entry never changes its uuid; giving its own uuid is fine.
    let r = o.write("POST", "/api/entries", &l2_entry(None, &v2));
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["id"].as_i64().unwrap();
    let own = o.s.get(&format!("/api/entries/{id}"), Some(&o.owner.token)).json()["uuid"].as_str().unwrap().to_owned();
    let other = "1b7d5c1e-2f3a-4b6c-8d9e-0f1a2b3c4d5e";
    let r = o.write("PUT", &format!("/api/entries/{id}"), &l2_entry(Some(other), &v2));
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(o.write("PUT", &format!("/api/entries/{id}"), &l2_entry(Some(&own), &v2)).status, 200);

    // Malformed uuids and L2 values that are not envelopes are refused with a reason.
    for (uuid, value) in [
        (Some("0B7D5C1E-2F3A-4B6C-8D9E-0F1A2B3C4D5E"), v2.clone()),
        (Some("0b7d5c1e-2f3a-1b6c-8d9e-0f1a2b3c4d5e"), v2.clone()),
        (None, "c2VjcmV0Y2lwaGVydGV4dA==".to_owned()),
        (None, format!("v9.{IV}.{CT}")),
        (None, format!("v2.{IV}")),
    ] {
        let r = o.write("POST", "/api/entries", &l2_entry(uuid, &value));
        assert_eq!(r.status, 422, "{uuid:?} {value}: {}", r.body);
        assert!(!r.json()["message"].as_str().unwrap().is_empty());
    }
}
