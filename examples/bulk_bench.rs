//! Timer for bench/bulk.sh (issue 16 §2): against a running commercial server whose owner is
//! not set up yet, runs the setup ceremony with a soft passkey, then creates 500 agents in one
//! `POST /api/mgmt/agents/bulk` and revokes them in one `DELETE`, each under one assertion.
//!
//!   bulk_bench license DIR
//!       writes DIR/vendor.pub.pem (a throwaway vendor key made here) and prints a license token
//!       for tenant "bench" allowing 10,000 of everything, signed with it.
//!   bulk_bench BASE_URL SETUP_CODE [ROUNDS]
//!       prints `key value` lines: per round the milliseconds of the whole create (challenge,
//!       assertion, request) and of the request alone, then the same for the revoke.
//!
//! The server must run with `--origin http://localhost:8080` (the default) and a license that
//! allows more than 500 agents (bench/bulk.sh makes one). Commercial builds only.

#[cfg(feature = "commercial")]
fn main() {
    bench::run();
}

#[cfg(not(feature = "commercial"))]
fn main() {
    eprintln!("bulk_bench needs a --features commercial build (bulk agents are commercial)");
    std::process::exit(2);
}

#[cfg(feature = "commercial")]
mod bench {
    use std::time::Instant;

    use serde_json::{Value, json};
    use webauthn_authenticator_rs::WebauthnAuthenticator;
    use webauthn_authenticator_rs::softpasskey::SoftPasskey;
    use webauthn_rs::prelude::{CreationChallengeResponse, RequestChallengeResponse, Url};

    const BULK: &str = "/api/mgmt/agents/bulk";

    struct Client {
        base: String,
        http: ureq::Agent,
    }

    impl Client {
        fn call(
            &self,
            method: &str,
            path: &str,
            token: Option<&str>,
            headers: &[(&str, &str)],
            body: &[u8],
        ) -> (u16, Value) {
            let mut req = ureq::http::Request::builder().method(method).uri(format!("{}{path}", self.base));
            req = req.header("Content-Type", "application/json");
            if let Some(t) = token {
                req = req.header("Authorization", format!("Bearer {t}"));
            }
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            let req = req.body(body.to_vec()).expect("request");
            let mut resp = self.http.run(req).expect("HTTP request");
            let status = resp.status().as_u16();
            let text = resp.body_mut().with_config().limit(16 << 20).read_to_string().expect("body");
            (status, serde_json::from_str(&text).unwrap_or(Value::Null))
        }
    }

    fn origin() -> Url {
        Url::parse("http://localhost:8080").expect("origin")
    }

    /// One gated write; returns (whole ms, request-only ms, status, answer).
    fn gated(c: &Client, token: &str, key: &mut SoftPasskey, method: &str, body: &Value) -> (f64, f64, u16, Value) {
        let started = Instant::now();
        let bytes = body.to_string().into_bytes();
        let ask = json!({"method": method, "path": BULK, "body_sha256": clavitor::crypto::sha256_hex(&bytes)});
        let (st, ch) = c.call("POST", "/api/webauthn/challenge", Some(token), &[], ask.to_string().as_bytes());
        assert_eq!(st, 200, "challenge: {ch}");
        let rcr: RequestChallengeResponse = serde_json::from_value(ch["options"].clone()).expect("options");
        let assertion = serde_json::to_string(&key.do_authentication(origin(), rcr).expect("signs")).expect("json");
        let id = ch["challenge_id"].as_str().expect("id").to_owned();
        let sent = Instant::now();
        let headers = [("X-WebAuthn-Challenge", id.as_str()), ("X-WebAuthn-Assertion", assertion.as_str())];
        let (status, answer) = c.call(method, BULK, Some(token), &headers, &bytes);
        let ms = |t: Instant| t.elapsed().as_secs_f64() * 1000.0;
        (ms(started), ms(sent), status, answer)
    }

    fn license(dir: &std::path::Path) {
        use base64::Engine;
        use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
        use clavitor::license::{LicenseInfo, Limit, Limits, canonical_payload};
        use ed25519_dalek::Signer;

        let key = ed25519_dalek::SigningKey::from_bytes(&rand::random::<[u8; 32]>());
        // The RFC 8410 SubjectPublicKeyInfo prefix of an Ed25519 key, then the key.
        let mut der = vec![0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];
        der.extend_from_slice(key.verifying_key().as_bytes());
        let pem = format!("-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n", STANDARD.encode(&der));
        std::fs::write(dir.join("vendor.pub.pem"), pem).expect("write public key");
        let info = LicenseInfo {
            license_id: uuid::Uuid::new_v4(),
            tenant_id: "bench".into(),
            label: Some("bench".into()),
            iat: 0,
            exp: 4_000_000_000,
            grace_period_days: 0,
            limits: Limits(Limit::ALL.iter().map(|l| (*l, 10_000)).collect()),
        };
        let payload = canonical_payload(&info);
        println!("{}.{}", URL_SAFE_NO_PAD.encode(&payload), URL_SAFE_NO_PAD.encode(key.sign(&payload).to_bytes()));
    }

    pub fn run() {
        let args: Vec<String> = std::env::args().collect();
        if args.get(1).map(String::as_str) == Some("license") {
            let Some(dir) = args.get(2) else {
                eprintln!("usage: bulk_bench license DIR");
                std::process::exit(2);
            };
            license(std::path::Path::new(dir));
            return;
        }
        let (Some(base), Some(code)) = (args.get(1), args.get(2)) else {
            eprintln!("usage: bulk_bench BASE_URL SETUP_CODE [ROUNDS]");
            std::process::exit(2);
        };
        let rounds: usize = args.get(3).and_then(|r| r.parse().ok()).unwrap_or(3);
        let http: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        let c = Client { base: base.clone(), http };

        let mut key = SoftPasskey::new(true);
        let (st, start) = c.call("POST", "/api/setup/start", None, &[], json!({"code": code}).to_string().as_bytes());
        assert_eq!(st, 200, "setup start: {start}");
        let ccr: CreationChallengeResponse = serde_json::from_value(start["options"].clone()).expect("options");
        let cred = key.do_registration(origin(), ccr).expect("registers");
        let finish = json!({"code": code, "registration_id": start["registration_id"], "credential": cred});
        let (st, owner) = c.call("POST", "/api/setup/finish", None, &[], finish.to_string().as_bytes());
        assert_eq!(st, 200, "setup finish: {owner}");
        let token = owner["token"].as_str().expect("owner token").to_owned();

        for round in 1..=rounds {
            let agents: Vec<Value> =
                (1..=500).map(|i| json!({"name": format!("r{round}-agent-{i}"), "scopes": ["beef"]})).collect();
            let (whole, request, status, answer) = gated(&c, &token, &mut key, "POST", &json!({ "agents": agents }));
            assert_eq!(status, 201, "bulk create: {answer}");
            let ids: Vec<i64> = answer["agents"]
                .as_array()
                .expect("agents")
                .iter()
                .map(|a| a["agent"]["id"].as_i64().expect("id"))
                .collect();
            assert_eq!(ids.len(), 500);
            println!("create_500_total_ms {whole:.1}");
            println!("create_500_request_ms {request:.1}");
            let (whole, request, status, answer) = gated(&c, &token, &mut key, "DELETE", &json!({ "ids": ids }));
            assert_eq!(status, 200, "bulk revoke: {answer}");
            println!("revoke_500_total_ms {whole:.1}");
            println!("revoke_500_request_ms {request:.1}");
        }
    }
}
