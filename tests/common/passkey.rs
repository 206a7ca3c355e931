//! A software passkey (webauthn-authenticator-rs' soft passkey) driving the real server: owner
//! setup through the one-time link, and complete gated writes (challenge → assertion → request).
//! Include with `#[path = "common/passkey.rs"] mod passkey;` next to `mod common;`.
#![allow(dead_code)]

use serde_json::{Value, json};
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_authenticator_rs::softpasskey::SoftPasskey;
use webauthn_rs::prelude::{CreationChallengeResponse, RequestChallengeResponse, Url};

use crate::common::{Resp, Server, request, try_request};

/// The origin the test servers are started with (`--origin` default).
pub const ORIGIN: &str = "http://localhost:8080";

pub fn origin() -> Url {
    Url::parse(ORIGIN).expect("origin")
}

/// Asks for a challenge bound to (method, path, body); returns (challenge id, options).
pub fn challenge(s: &Server, token: &str, method: &str, path: &str, body: &[u8]) -> (String, RequestChallengeResponse) {
    let ask = json!({"method": method, "path": path, "body_sha256": clavitor::crypto::sha256_hex(body)});
    let r = post_json(s, "/api/webauthn/challenge", Some(token), &ask);
    assert_eq!(r.status, 200, "challenge: {}", r.body);
    let v = r.json();
    (v["challenge_id"].as_str().expect("id").to_owned(), serde_json::from_value(v["options"].clone()).expect("options"))
}

/// Sends a gated write with its challenge id and assertion.
pub fn send(s: &Server, token: &str, method: &str, path: &str, body: &[u8], ch: &str, assertion: &str) -> Resp {
    let headers =
        [("Content-Type", "application/json"), ("X-WebAuthn-Challenge", ch), ("X-WebAuthn-Assertion", assertion)];
    crate::common::request_with(&s.url(path), method, Some(token), &headers, Some(body))
}

pub fn post_json(s: &Server, path: &str, token: Option<&str>, body: &Value) -> Resp {
    request(&s.url(path), "POST", token, Some(body.to_string().as_bytes()))
}

/// An admin token together with the passkey that approves its writes.
pub struct Admin {
    pub token: String,
    pub key: SoftPasskey,
}

impl Admin {
    /// Runs the setup ceremony for `code` with a fresh key; returns the key and the finish response.
    pub fn setup(s: &Server, code: &str) -> (SoftPasskey, Resp) {
        let mut key = SoftPasskey::new(true);
        let r = post_json(s, "/api/setup/start", None, &json!({"code": code}));
        assert_eq!(r.status, 200, "setup start: {}", r.body);
        let start = r.json();
        let ccr: CreationChallengeResponse = serde_json::from_value(start["options"].clone()).expect("options");
        let cred = key.do_registration(origin(), ccr).expect("soft passkey registers");
        let r = post_json(
            s,
            "/api/setup/finish",
            None,
            &json!({"code": code, "registration_id": start["registration_id"], "credential": cred}),
        );
        (key, r)
    }

    /// Sets up a vault's owner through its setup link; returns the owner.
    pub fn owner(s: &Server, code: &str) -> Admin {
        let (key, r) = Self::setup(s, code);
        assert_eq!(r.status, 200, "setup finish: {}", r.body);
        let token = r.json()["token"].as_str().expect("owner token").to_owned();
        Admin { token, key }
    }

    /// A complete gated write: challenge bound to (method, path, body), assertion, request.
    pub fn write(&mut self, s: &Server, method: &str, path: &str, body: &Value) -> Resp {
        self.try_write(&s.url(""), method, path, body).expect("HTTP request")
    }

    /// Like [`Admin::write`] against a base URL; `None` once the server is unreachable.
    pub fn try_write(&mut self, base: &str, method: &str, path: &str, body: &Value) -> Option<Resp> {
        let body = if body.is_null() { Vec::new() } else { body.to_string().into_bytes() };
        let ask = json!({"method": method, "path": path, "body_sha256": clavitor::crypto::sha256_hex(&body)});
        let r = try_request(
            &format!("{base}/api/webauthn/challenge"),
            "POST",
            Some(&self.token),
            &[],
            Some(ask.to_string().as_bytes()),
        )?;
        assert_eq!(r.status, 200, "challenge: {}", r.body);
        let v = r.json();
        let rcr: RequestChallengeResponse = serde_json::from_value(v["options"].clone()).expect("options");
        let assertion = serde_json::to_string(&self.key.do_authentication(origin(), rcr).expect("soft passkey signs"))
            .expect("json");
        let id = v["challenge_id"].as_str().expect("challenge id");
        let headers = [
            ("Content-Type", "application/json"),
            ("X-WebAuthn-Challenge", id),
            ("X-WebAuthn-Assertion", assertion.as_str()),
        ];
        try_request(&format!("{base}{path}"), method, Some(&self.token), &headers, Some(&body))
    }
}
