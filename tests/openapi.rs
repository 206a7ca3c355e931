//! The OpenAPI document is the router: every documented operation is routed, no other method is
//! routed on a documented path, nothing is routed outside the document but the owner's pages,
//! and the document says what the routes really take and give (arrays, integer ids, bounds,
//! bodies, 201s, the error body, the WebAuthn headers, bearer security). Both editions: the
//! commercial tarpit's answer is recognised, so every check here can fail there too.
//! Also: JSON routes refuse bodies not declared as JSON (415) without spending a challenge.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::{Resp, Server, Vault, request, request_with};
use serde_json::{Value, json};
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_authenticator_rs::softpasskey::SoftPasskey;
use webauthn_rs::prelude::{CreationChallengeResponse, RequestChallengeResponse, Url};

const METHODS: &[&str] = &["get", "post", "put", "delete", "patch"];

/// Routes that are deliberately not in the document: the owner's HTML pages and their assets.
const PAGES: &[(&str, &str)] =
    &[("get", "/"), ("get", "/setup"), ("get", "/extension"), ("get", "/assets/style.css"), ("get", "/favicon.ico")];

fn start(v: &Vault) -> Server {
    // The commercial edition tarpits unmatched requests: hold them 1 s, not 30. The probes run
    // all at once from one address: more than the default per-address connection cap.
    Server::start_env(&v.dir(), &[], &[("CLAVITOR_TARPIT_HOLD_SECS", "1"), ("CLAVITOR_MAX_CONNECTIONS_PER_IP", "512")])
}

/// Whether a response is the edition's answer for an unrouted request (not a handler's):
/// community answers 404 "no such route" or 405; commercial holds it and drips spaces first.
fn is_unrouted(r: &Resp) -> bool {
    r.status == 405 || (r.status == 404 && (r.body.contains("no such route") || r.body.starts_with(' ')))
}

fn concrete(path: &str) -> String {
    // "AA" is valid base64url (a passkey id); "1" a valid integer id.
    let id = if path.starts_with("/api/passkeys/") { "AA" } else { "1" };
    path.replace("{id}", id)
}

fn probe(s: &Server, method: &str, path: &str) -> Resp {
    request(&s.url(&concrete(path)), &method.to_uppercase(), None, None)
}

/// Every (method, path) in the served document.
fn operations(doc: &Value) -> Vec<(String, String)> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for m in METHODS {
            if item.get(*m).is_some() {
                ops.push(((*m).to_owned(), path.clone()));
            }
        }
    }
    ops
}

#[test]
fn the_document_is_the_router() {
    let v = Vault::new();
    let s = start(&v);
    let r = s.get("/api/openapi.json", None);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let doc = r.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    // The served document is the one built from this build's router.
    assert_eq!(doc, serde_json::from_str::<Value>(clavitor::api::openapi::json()).unwrap());

    // The probes below can tell an unrouted request from a routed one, in this edition.
    assert!(is_unrouted(&s.get("/api/definitely-not-a-route", None)), "unknown routes are not recognised");
    assert!(is_unrouted(&probe(&s, "patch", "/api/entries")), "wrong methods are not recognised");
    assert!(!is_unrouted(&s.get("/api/entries/1", None)), "a routed request looks unrouted");

    let ops = operations(&doc);
    assert!(ops.len() >= 25, "only {} operations documented", ops.len());
    let documented: BTreeSet<(String, String)> = ops.iter().cloned().collect();
    let paths: BTreeSet<&String> = ops.iter().map(|(_, p)| p).collect();
    // Every documented operation is routed; every other method on a documented path is not.
    // Probed in parallel: each unrouted probe is held a second in the commercial edition.
    let probes: Vec<(String, String)> =
        paths.iter().flat_map(|p| METHODS.iter().map(move |m| ((*m).to_owned(), (*p).clone()))).collect();
    let answers: Vec<((String, String), Resp)> = std::thread::scope(|scope| {
        let handles: Vec<_> = probes
            .iter()
            .map(|(m, p)| {
                let s = &s;
                scope.spawn(move || ((m.clone(), p.clone()), probe(s, m, p)))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for ((m, p), resp) in &answers {
        if documented.contains(&(m.clone(), p.clone())) {
            assert!(!is_unrouted(resp), "{m} {p} is documented but not routed: {} {}", resp.status, resp.body);
            // Every answer of a documented operation is JSON (the error body included).
            // SCIM (commercial) answers in its own JSON media type (RFC 7644 §3.1).
            let json = if p.starts_with("/api/scim/v2/") { "application/scim+json" } else { "application/json" };
            assert_eq!(resp.header("content-type"), Some(json), "{m} {p}");
        } else {
            assert!(is_unrouted(resp), "{m} {p} is routed but not documented: {} {}", resp.status, resp.body);
        }
    }
    // The owner's pages are the only routes outside the document.
    for (m, p) in PAGES {
        assert!(!documented.contains(&((*m).to_owned(), (*p).to_owned())));
        assert!(!is_unrouted(&probe(&s, m, p)), "page {p} is not routed");
    }
}

/// Routes can be added only through `routes!` (documented) or as the owner's pages: no bare
/// `.route(...)` anywhere else in the source (but the MCP server's own listener), so no route
/// can bypass the document.
#[test]
fn no_route_is_added_outside_the_document() {
    fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&root, &mut files);
    assert!(files.len() > 20);
    let mut found = Vec::new();
    for f in &files {
        // The owner's pages are not API; `clavitor mcp --http` is the agent-side MCP server, a
        // different process and listener whose one route is the MCP transport, not the vault API.
        if f.ends_with("web/mod.rs") || f.ends_with("mcp/http.rs") {
            continue;
        }
        let text = std::fs::read_to_string(f).unwrap();
        for bypass in [".route(", ".route_service(", ".nest(", ".nest_service("] {
            if text.contains(bypass) {
                found.push(format!("{} uses {bypass}", f.display()));
            }
        }
    }
    assert!(found.is_empty(), "routes added outside `routes!`: {found:?}");
}

fn op<'a>(doc: &'a Value, method: &str, path: &str) -> &'a Value {
    let o = &doc["paths"][path][method];
    assert!(o.is_object(), "{method} {path} is not documented");
    o
}

fn schema_of(doc: &Value, s: &Value) -> Value {
    match s["$ref"].as_str() {
        Some(r) => {
            let name = r.strip_prefix("#/components/schemas/").expect("local ref");
            let found = &doc["components"]["schemas"][name];
            assert!(found.is_object(), "{name} is referenced but not defined");
            schema_of(doc, found)
        }
        None => s.clone(),
    }
}

fn ok_schema(doc: &Value, method: &str, path: &str, status: &str) -> Value {
    let s = &op(doc, method, path)["responses"][status]["content"]["application/json"]["schema"];
    assert!(s.is_object(), "{method} {path} has no {status} JSON schema");
    schema_of(doc, s)
}

fn param<'a>(o: &'a Value, name: &str) -> &'a Value {
    o["parameters"].as_array().and_then(|ps| ps.iter().find(|p| p["name"] == name)).unwrap_or(&Value::Null)
}

#[test]
fn the_document_says_what_the_routes_take_and_give() {
    let doc: Value = serde_json::from_str(clavitor::api::openapi::json()).unwrap();
    // The replication apply route (commercial) needs no bearer: a source POP's Ed25519 signature.
    // The proxy's CA certificate is public (an agent needs it before it trusts anything).
    let open = [
        "/healthz",
        "/api/openapi.json",
        "/api/setup/start",
        "/api/setup/finish",
        "/api/webauthn/info",
        "/api/replication/apply",
        "/api/proxy/ca.pem",
    ];
    for (m, p) in operations(&doc) {
        let o = op(&doc, &m, &p);
        // Every $ref resolves.
        let text = o.to_string();
        for (at, _) in text.match_indices("#/components/schemas/") {
            let name: String = text[at + 21..].chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            assert!(doc["components"]["schemas"][&name].is_object(), "{name} is referenced but not defined");
        }
        // Bearer security exactly where a token is needed.
        let secured = o["security"] == json!([{"bearer": []}]);
        assert_eq!(secured, !open.contains(&p.as_str()), "{m} {p} security");
        // Errors are the one JSON shape (SCIM's own error schema on SCIM routes).
        if p.starts_with("/api/scim/v2/") {
            let err = schema_of(&doc, &o["responses"]["4XX"]["content"]["application/scim+json"]["schema"]);
            assert_eq!(err["required"], json!(["schemas", "status", "detail"]), "{m} {p}");
            continue;
        }
        let err = schema_of(&doc, &o["responses"]["4XX"]["content"]["application/json"]["schema"]);
        assert_eq!(err["required"], json!(["error", "message"]), "{m} {p}");
        // Path ids are positive integers (passkey ids are base64url, vault ids hex).
        if p.contains("{id}") {
            let id = &param(o, "id")["schema"];
            if p.starts_with("/api/passkeys/") || p.starts_with("/api/mgmt/vaults/") {
                assert_eq!(id["type"], "string");
                assert!(id["pattern"].is_string());
            } else {
                assert_eq!(id["type"], "integer", "{m} {p}");
                assert_eq!(id["minimum"], 1, "{m} {p}");
            }
        }
        // Every write but the two that prepare one, an agent's own token derivation (bearer
        // only: it can only narrow), an agent's access request (bearer only: it grants nothing)
        // and the node operator's management routes (a `cvm_` token, commercial; they grant no
        // access to any vault) is gated, and says so.
        // Autoscope (commercial) only suggests: it changes nothing, so an admin token suffices.
        let prepares = [
            "/api/webauthn/challenge",
            "/api/passkeys/options",
            "/api/tokens/derive",
            "/api/license",
            "/api/autoscope",
            "/api/mgmt/vaults",
            "/api/mgmt/vaults/{id}",
        ];
        let prepares = if m == "post" { [&prepares[..], &["/api/proxy/requests"]].concat() } else { prepares.to_vec() };
        let gated = m != "get" && !open.contains(&p.as_str()) && !prepares.contains(&p.as_str());
        for h in ["X-WebAuthn-Challenge", "X-WebAuthn-Assertion"] {
            let hp = param(o, h);
            assert_eq!(hp["in"] == "header" && hp["required"] == true, gated, "{m} {p} header {h}");
        }
        // Bodies are declared JSON wherever one is taken.
        // (Creating a hosted vault takes no body: the node chooses everything.)
        if (m == "post" || m == "put" || m == "patch") && p != "/api/passkeys/options" && p != "/api/mgmt/vaults" {
            assert!(o["requestBody"]["content"]["application/json"]["schema"].is_object(), "{m} {p} body");
            assert_eq!(o["requestBody"]["required"], true, "{m} {p} body");
        }
    }
    // List and search return arrays of entry summaries.
    for p in ["/api/entries", "/api/search"] {
        let s = ok_schema(&doc, "get", p, "200");
        assert_eq!(s["type"], "array", "{p}");
        assert!(schema_of(&doc, &s["items"])["properties"]["id"].is_object(), "{p}");
    }
    // Creating answers 201.
    for p in ["/api/entries", "/api/agents", "/api/passkeys"] {
        ok_schema(&doc, "post", p, "201");
        assert!(op(&doc, "post", p)["responses"]["200"].is_null(), "{p}");
    }
    // Query parameters with their bounds.
    let search = op(&doc, "get", "/api/search");
    assert_eq!(param(search, "q")["required"], true);
    assert_eq!(param(search, "q")["schema"]["maxLength"], 256);
    assert_eq!(param(search, "limit")["schema"]["maximum"], 500);
    let audit = op(&doc, "get", "/api/audit");
    assert_eq!(param(audit, "limit")["schema"]["maximum"], 1000);
    assert_eq!(param(audit, "before")["schema"]["minimum"], 1);
    // A challenge names one of the write methods.
    let body = &op(&doc, "post", "/api/webauthn/challenge")["requestBody"]["content"]["application/json"]["schema"];
    let method = schema_of(&doc, &schema_of(&doc, body)["properties"]["method"]);
    assert_eq!(method["enum"], json!(["POST", "PUT", "PATCH", "DELETE"]));
    // Inject rules (issue 18): a host is a DNS name or a one-label wildcard, as the server
    // parses it; a placement admits no keys but its kind's (the server refuses others).
    let host = &doc["components"]["schemas"]["InjectRule"]["properties"]["host"];
    assert!(host["pattern"].as_str().is_some_and(|p| p.starts_with(r"^(\*\.")), "{host}");
    let places = doc["components"]["schemas"]["Placement"]["oneOf"].as_array().cloned().unwrap_or_default();
    assert_eq!(places.len(), 3);
    assert!(places.iter().all(|p| p["additionalProperties"] == false), "{places:?}");
    let ask = &op(&doc, "post", "/api/proxy/requests")["requestBody"]["content"]["application/json"]["schema"];
    assert_eq!(schema_of(&doc, ask)["properties"]["host"]["pattern"], host["pattern"]);
    // The keyring is an object.
    let body = &op(&doc, "put", "/api/keyring")["requestBody"]["content"]["application/json"]["schema"];
    assert_eq!(schema_of(&doc, body)["type"], "object");
}

#[test]
fn path_ids_are_positive_integers() {
    let v = Vault::new();
    let s = start(&v);
    for bad in ["0", "-1", "%2B1", "1.0", "abc", "9223372036854775808", "0x1"] {
        for path in ["/api/entries/{}", "/api/ext/totp/{}", "/api/entries/{}/scopes", "/api/agents/{}"] {
            let method = if path.starts_with("/api/agents") || path.ends_with("scopes") { "PUT" } else { "GET" };
            let body = if method == "PUT" { Some(&b"{}"[..]) } else { None };
            let r = request(&s.url(&path.replace("{}", bad)), method, Some(&v.owner), body);
            assert_eq!(r.status, 400, "{method} {path} with {bad:?}: {}", r.body);
            assert_eq!(r.json()["error"], "bad_request");
        }
    }
    assert_eq!(s.get("/api/entries/1", Some(&v.owner)).status, 404);
}

// --- content types: a soft passkey owner, as in tests/webauthn.rs ---

const ORIGIN: &str = "http://localhost:8080";

fn origin() -> Url {
    Url::parse(ORIGIN).unwrap()
}

fn open_challenges(v: &Vault) -> i64 {
    let conn = rusqlite::Connection::open(v.vault_file()).unwrap();
    conn.query_row("SELECT count(*) FROM webauthn_challenges", [], |r| r.get(0)).unwrap()
}

/// A vault whose owner was set up through the setup link with a soft passkey; also returns the
/// answer of `/api/setup/finish`.
fn owner_with_passkey(v: &Vault, s: &Server) -> (String, SoftPasskey, Value) {
    let body = json!({"code": v.setup_code}).to_string();
    let r = request(&s.url("/api/setup/start"), "POST", None, Some(body.as_bytes()));
    assert_eq!(r.status, 200, "{}", r.body);
    let start = r.json();
    let mut key = SoftPasskey::new(true);
    let ccr: CreationChallengeResponse = serde_json::from_value(start["options"].clone()).unwrap();
    let cred = key.do_registration(origin(), ccr).unwrap();
    let finish = json!({"code": v.setup_code, "registration_id": start["registration_id"], "credential": cred});
    let r = request(&s.url("/api/setup/finish"), "POST", None, Some(finish.to_string().as_bytes()));
    assert_eq!(r.status, 200, "{}", r.body);
    let done = r.json();
    (done["token"].as_str().unwrap().to_owned(), key, done)
}

#[test]
fn json_routes_refuse_other_content_types_without_spending_a_challenge() {
    let v = Vault::uninitialised_owner();
    let s = start(&v);
    let text = [("Content-Type", "text/plain")];
    // Setup: 415 before the code is looked at.
    let body = json!({"code": v.setup_code}).to_string();
    let r = request_with(&s.url("/api/setup/start"), "POST", None, &text, Some(body.as_bytes()));
    assert_eq!(r.status, 415, "{}", r.body);
    assert_eq!(r.json()["error"], "unsupported_media_type");
    let (token, mut key, _) = owner_with_passkey(&v, &s);

    // Asking for a challenge is a JSON route too.
    let entry = json!({"title": "T", "fields": [{"name": "p", "kind": "secret", "value": "x"}]}).to_string();
    let ask = json!({"method": "POST", "path": "/api/entries", "body_sha256": clavitor::crypto::sha256_hex(entry.as_bytes())})
        .to_string();
    let r = request_with(&s.url("/api/webauthn/challenge"), "POST", Some(&token), &text, Some(ask.as_bytes()));
    assert_eq!(r.status, 415, "{}", r.body);
    assert_eq!(open_challenges(&v), 0);
    let r = request(&s.url("/api/webauthn/challenge"), "POST", Some(&token), Some(ask.as_bytes()));
    assert_eq!(r.status, 200, "{}", r.body);
    let ch = r.json();
    let id = ch["challenge_id"].as_str().unwrap().to_owned();
    let rcr: RequestChallengeResponse = serde_json::from_value(ch["options"].clone()).unwrap();
    let assertion = serde_json::to_string(&key.do_authentication(origin(), rcr).unwrap()).unwrap();
    assert_eq!(open_challenges(&v), 1);

    // A genuine assertion on a body sent as text/plain, or with no content type: 415, and the
    // challenge is still there to be used.
    let url = s.url("/api/entries");
    for ct in [Some("text/plain"), Some("application/x-www-form-urlencoded"), None] {
        let mut headers = vec![("X-WebAuthn-Challenge", id.as_str()), ("X-WebAuthn-Assertion", assertion.as_str())];
        // `request_with` adds application/json when no content type is given; send the bare
        // request by hand for "none".
        let r = match ct {
            Some(c) => {
                headers.push(("Content-Type", c));
                request_with(&url, "POST", Some(&token), &headers, Some(entry.as_bytes()))
            }
            None => bare_post(&s, "/api/entries", &token, &headers, entry.as_bytes()),
        };
        assert_eq!(r.status, 415, "{ct:?}: {}", r.body);
        assert_eq!(r.json()["error"], "unsupported_media_type", "{ct:?}");
        assert_eq!(open_challenges(&v), 1, "{ct:?}: the challenge was spent");
    }
    assert!(v.cli_json(&["entry", "list", "--json"], None).as_array().unwrap().is_empty());
    // The same challenge and assertion, sent as JSON, still work.
    let headers = [("X-WebAuthn-Challenge", id.as_str()), ("X-WebAuthn-Assertion", assertion.as_str())];
    let r = request_with(&url, "POST", Some(&token), &headers, Some(entry.as_bytes()));
    assert_eq!(r.status, 201, "{}", r.body);
}

/// A POST with no Content-Type header at all (the HTTP client adds none for a raw body).
fn bare_post(s: &Server, path: &str, token: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    let (status, raw) = s.raw(&bytes);
    let body = raw.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    Resp { status, headers: Vec::new(), body }
}

// --- every success answer as documented, writes included (the fuzzer has no passkey) ---

/// Checks `value` against the subset of JSON Schema the document uses ($ref, allOf, oneOf,
/// type, enum, pattern-free properties, required, items, additionalProperties: false).
fn conforms(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.trim_start_matches("#/components/schemas/");
        return conforms(doc, &doc["components"]["schemas"][name], value, at);
    }
    if let Some(all) = schema["allOf"].as_array() {
        return all.iter().try_for_each(|s| conforms(doc, s, value, at));
    }
    if let Some(any) = schema["oneOf"].as_array() {
        let ok = any.iter().filter(|s| conforms(doc, s, value, at).is_ok()).count();
        return if ok == 1 { Ok(()) } else { Err(format!("{at}: {value} matches {ok} of oneOf")) };
    }
    if let Some(options) = schema["enum"].as_array()
        && !options.contains(value)
    {
        return Err(format!("{at}: {value} not in {options:?}"));
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    let type_ok = |t: &str| match t {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        _ => false,
    };
    if !types.is_empty() && !types.iter().any(|t| type_ok(t)) {
        return Err(format!("{at}: {value} is not {types:?}"));
    }
    if let Some(obj) = value.as_object() {
        for r in schema["required"].as_array().into_iter().flatten() {
            let k = r.as_str().unwrap();
            if !obj.contains_key(k) {
                return Err(format!("{at}: missing {k}"));
            }
        }
        let props = schema["properties"].as_object();
        for (k, v) in obj {
            match props.and_then(|p| p.get(k)) {
                Some(ps) => conforms(doc, ps, v, &format!("{at}.{k}"))?,
                None if schema["additionalProperties"] == false => return Err(format!("{at}: unexpected {k}")),
                None => {}
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), value.as_array()) {
        for (i, v) in arr.iter().enumerate() {
            conforms(doc, items, v, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

/// Asserts that `r` is the documented success answer of (method, path).
fn documented(doc: &Value, method: &str, path: &str, r: &Resp) {
    let resp = &doc["paths"][path][method.to_lowercase()]["responses"][r.status.to_string()];
    assert!(resp.is_object(), "{method} {path} answered {}, which is not documented: {}", r.status, r.body);
    let schema = &resp["content"]["application/json"]["schema"];
    let body: Value = serde_json::from_str(&r.body).unwrap_or_else(|_| panic!("{method} {path}: not JSON: {}", r.body));
    if let Err(e) = conforms(doc, schema, &body, "body") {
        panic!("{method} {path}: {e}\n{}", r.body);
    }
}

#[test]
fn every_success_answer_is_as_documented() {
    let doc: Value = serde_json::from_str(clavitor::api::openapi::json()).unwrap();
    // The checker itself can say no.
    let list = &doc["paths"]["/api/entries"]["get"]["responses"]["200"]["content"]["application/json"]["schema"];
    assert!(conforms(&doc, list, &json!([]), "x").is_ok());
    assert!(conforms(&doc, list, &json!({"entries": []}), "x").is_err());
    assert!(conforms(&doc, list, &json!([{"id": 1}]), "x").is_err());
    let v = Vault::uninitialised_owner();
    let s = start(&v);
    let (token, mut key, done) = owner_with_passkey(&v, &s);
    documented(&doc, "POST", "/api/setup/finish", &Resp { status: 200, headers: vec![], body: done.to_string() });
    let t = Some(token.as_str());
    // (method, concrete path, documented path, body)
    let mut write = |method: &str, path: &str, template: &str, body: &Value| -> Resp {
        let bytes = if body.is_null() { Vec::new() } else { body.to_string().into_bytes() };
        let ask = json!({"method": method, "path": path, "body_sha256": clavitor::crypto::sha256_hex(&bytes)});
        let r = request(&s.url("/api/webauthn/challenge"), "POST", t, Some(ask.to_string().as_bytes()));
        documented(&doc, "POST", "/api/webauthn/challenge", &r);
        let ch = r.json();
        let rcr: RequestChallengeResponse = serde_json::from_value(ch["options"].clone()).unwrap();
        let a = serde_json::to_string(&key.do_authentication(origin(), rcr).unwrap()).unwrap();
        let headers = [("X-WebAuthn-Challenge", ch["challenge_id"].as_str().unwrap()), ("X-WebAuthn-Assertion", &a)];
        let r = request_with(&s.url(path), method, t, &headers, if bytes.is_empty() { None } else { Some(&bytes) });
        documented(&doc, method, template, &r);
        r
    };
    let entry = json!({"title": "GitHub", "url": "https://github.com", "fields": [
        {"name": "user", "kind": "text", "value": "octo"},
        {"name": "totp", "kind": "totp", "value": "JBSWY3DPEHPK3PXP"},
        {"name": "pin", "kind": "secret", "tier": "l2", "value": "v2.AAAAAAAAAAAAAAAA.c2VjcmV0Y2lwaGVydGV4dA"}]});
    let id = write("POST", "/api/entries", "/api/entries", &entry).json()["id"].as_i64().unwrap();
    assert_eq!(id, 1, "the probes below use id 1");
    write("PUT", "/api/entries/1", "/api/entries/{id}", &entry);
    write("PUT", "/api/entries/1/scopes", "/api/entries/{id}/scopes", &json!({"scopes": []}));
    let agent = write("POST", "/api/agents", "/api/agents", &json!({"name": "bot"})).json();
    assert_eq!(agent["agent"]["id"], 2, "the probes below use agent 2");
    write("PUT", "/api/agents/2", "/api/agents/{id}", &json!({"name": "bot2", "rotate_token": true}));
    write(
        "PUT",
        "/api/keyring",
        "/api/keyring",
        &json!({"version": 1, "wraps": [{"kind": "passphrase", "salt": "AAAA", "iterations": 600000, "iv": "AAAA", "wrapped": "AAAA"}]}),
    );
    for p in [
        "/healthz",
        "/api/webauthn/info",
        "/api/entries",
        "/api/entries/1",
        "/api/search?q=git",
        "/api/ext/totp/1",
        "/api/agents",
        "/api/audit?limit=2",
        "/api/passkeys",
        "/api/keyring",
    ] {
        let r = s.get(p, t);
        let template = p.split('?').next().unwrap().replace("/1", "/{id}");
        documented(&doc, "GET", &template, &r);
    }
    let r = request(&s.url("/api/passkeys/options"), "POST", t, None);
    documented(&doc, "POST", "/api/passkeys/options", &r);
    let start = r.json();
    let mut second = SoftPasskey::new(true);
    let ccr: CreationChallengeResponse = serde_json::from_value(start["options"].clone()).unwrap();
    let cred = second.do_registration(origin(), ccr).unwrap();
    let added = write(
        "POST",
        "/api/passkeys",
        "/api/passkeys",
        &json!({"registration_id": start["registration_id"], "name": "backup", "credential": cred}),
    );
    let pk = added.json()["id"].as_str().unwrap().to_owned();
    let r = write("DELETE", &format!("/api/passkeys/{pk}"), "/api/passkeys/{id}", &Value::Null);
    assert_eq!(r.status, 200);
    write("DELETE", "/api/agents/2", "/api/agents/{id}", &Value::Null);
    write("DELETE", "/api/entries/1", "/api/entries/{id}", &Value::Null);
    // Commercial (issue 16): bulk agents and autoscope answer as documented too.
    #[cfg(feature = "commercial")]
    {
        let bulk = "/api/mgmt/agents/bulk";
        let made = write("POST", bulk, bulk, &json!({"agents": [{"name": "a"}, {"name": "b", "scopes": ["beef"]}]}));
        let ids: Vec<Value> =
            made.json()["agents"].as_array().unwrap().iter().map(|a| a["agent"]["id"].clone()).collect();
        write("DELETE", bulk, bulk, &json!({ "ids": ids }));
        let ask = json!({"title": "GitHub", "url": "https://github.com", "fields": [{"name": "user", "kind": "text"}]});
        let r = request(&s.url("/api/autoscope"), "POST", t, Some(ask.to_string().as_bytes()));
        documented(&doc, "POST", "/api/autoscope", &r);
    }
}
