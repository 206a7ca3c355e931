//! The L2 keyring is never left without a way to unlock it (issue 12 §4): removing the passkey
//! whose PRF output is the only wrap of the L2 key is refused until another wrap exists, and a
//! keyring write that would drop every wrap is refused. Real binary, soft passkeys, genuine
//! assertions (as in `tests/webauthn.rs`).

mod common;

use common::{Server, Vault, request, request_with};
use serde_json::{Value, json};
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_authenticator_rs::softpasskey::SoftPasskey;
use webauthn_rs::prelude::{CreationChallengeResponse, RequestChallengeResponse, Url};

const ORIGIN: &str = "http://localhost:8080";

fn origin() -> Url {
    Url::parse(ORIGIN).unwrap()
}

fn post_json(s: &Server, path: &str, token: Option<&str>, body: &Value) -> common::Resp {
    request(&s.url(path), "POST", token, Some(body.to_string().as_bytes()))
}

struct Owned {
    _v: Vault,
    s: Server,
    token: String,
    key: SoftPasskey,
}

impl Owned {
    fn new() -> Self {
        let v = Vault::uninitialised_owner();
        let s = Server::start(&v.dir(), &[]);
        let mut key = SoftPasskey::new(true);
        let r = post_json(&s, "/api/setup/start", None, &json!({"code": v.setup_code}));
        assert_eq!(r.status, 200, "{}", r.body);
        let start = r.json();
        let ccr: CreationChallengeResponse = serde_json::from_value(start["options"].clone()).unwrap();
        let cred = key.do_registration(origin(), ccr).unwrap();
        let body = json!({"code": v.setup_code, "registration_id": start["registration_id"], "credential": cred});
        let r = post_json(&s, "/api/setup/finish", None, &body);
        assert_eq!(r.status, 200, "{}", r.body);
        let token = r.json()["token"].as_str().unwrap().to_owned();
        Owned { _v: v, s, token, key }
    }

    fn write(&mut self, method: &str, path: &str, body: &Value) -> common::Resp {
        let body = if body.is_null() { Vec::new() } else { body.to_string().into_bytes() };
        let req = json!({"method": method, "path": path, "body_sha256": clavitor::crypto::sha256_hex(&body)});
        let r = post_json(&self.s, "/api/webauthn/challenge", Some(&self.token), &req);
        assert_eq!(r.status, 200, "{}", r.body);
        let ch = r.json();
        let rcr: RequestChallengeResponse = serde_json::from_value(ch["options"].clone()).unwrap();
        let assertion = serde_json::to_string(&self.key.do_authentication(origin(), rcr).unwrap()).unwrap();
        let headers = [
            ("Content-Type", "application/json"),
            ("X-WebAuthn-Challenge", ch["challenge_id"].as_str().unwrap()),
            ("X-WebAuthn-Assertion", assertion.as_str()),
        ];
        request_with(&self.s.url(path), method, Some(&self.token), &headers, Some(&body))
    }

    fn passkey_ids(&self) -> Vec<String> {
        let list = self.s.get("/api/passkeys", Some(&self.token)).json();
        list["passkeys"].as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap().to_owned()).collect()
    }

    /// Enrolls a further passkey (approved by the current one); returns its id.
    fn add_passkey(&mut self, name: &str) -> String {
        let mut other = SoftPasskey::new(true);
        let r = post_json(&self.s, "/api/passkeys/options", Some(&self.token), &json!({}));
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
    assert_eq!(o.s.get("/api/keyring", Some(&o.token)).json()["keyring"], Value::Null, "nothing stored");

    let stored = ring(&[prf_wrap(&first, "PRFWRAP1")]);
    assert_eq!(o.write("PUT", "/api/keyring", &stored).status, 200);
    // A keyring that keeps none of the stored wraps means another L2 key: every value lost.
    let r = o.write("PUT", "/api/keyring", &ring(&[passphrase_wrap("OTHERKEY")]));
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.json()["message"].as_str().unwrap().contains("unreadable"));
    assert_eq!(o.s.get("/api/keyring", Some(&o.token)).json()["keyring"], stored, "unchanged");
    // Adding a wrap (keeping the stored one), then dropping the first, is fine.
    let both = ring(&[prf_wrap(&first, "PRFWRAP1"), passphrase_wrap("PASSWRAP")]);
    assert_eq!(o.write("PUT", "/api/keyring", &both).status, 200);
    let only_pass = ring(&[passphrase_wrap("PASSWRAP")]);
    assert_eq!(o.write("PUT", "/api/keyring", &only_pass).status, 200);
}
