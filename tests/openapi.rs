//! The OpenAPI document: served, complete against the route table, and the table true to the
//! live router (every listed operation is routed, with that method).

mod common;

use clavitor::api::openapi::ROUTES;
use common::Vault;

#[test]
fn the_document_lists_every_route_and_every_route_exists() {
    let v = Vault::new();
    let s = common::Server::start_env(&v.dir(), &[], &[("CLAVITOR_TARPIT_HOLD_SECS", "1")]);
    let r = s.get("/api/openapi.json", None);
    assert_eq!(r.status, 200);
    let doc = r.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for route in ROUTES {
        let op = &paths[route.path][route.method];
        assert!(op.is_object(), "{} {} missing from the document", route.method, route.path);
        // Every schema an operation refers to is defined.
        for reference in op.to_string().match_indices("#/components/schemas/") {
            let rest = &op.to_string()[reference.0 + reference.1.len()..];
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            assert!(schemas.contains_key(&name), "{name} is referenced but not defined");
        }
        // The live router has this operation: not a 405, not the unknown-route answer.
        let path = route.path.replace("{id}", "1");
        let resp = common::request(&s.url(&path), &route.method.to_uppercase(), None, None);
        assert_ne!(resp.status, 405, "{} {} is not routed", route.method, route.path);
        assert!(!resp.body.contains("no such route"), "{} {} is not routed", route.method, route.path);
    }
    // And the unknown-route answer does say so (so the check above can fail).
    if !cfg!(feature = "commercial") {
        assert!(s.get("/api/definitely-not-a-route", None).body.contains("no such route"));
    }
}
