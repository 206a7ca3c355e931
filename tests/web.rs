//! The owner's pages as served by the binary: embedded, strict CSP, no inline script.

mod common;

use common::Vault;

#[test]
fn pages_are_embedded_with_a_strict_csp_and_no_inline_script() {
    let v = Vault::new();
    let s = v.serve();
    for (path, kind) in [
        ("/", "text/html"),
        ("/setup", "text/html"),
        ("/extension", "text/html"),
        ("/assets/app.js", "text/javascript"),
        ("/assets/extension.js", "text/javascript"),
        ("/assets/common.js", "text/javascript"),
        ("/assets/setup.js", "text/javascript"),
        ("/assets/style.css", "text/css"),
        ("/assets/edition.js", "text/javascript"),
    ] {
        let r = s.get(path, None);
        assert_eq!(r.status, 200, "{path}");
        assert!(r.header("content-type").unwrap_or_default().starts_with(kind), "{path}");
        let csp = r.header("content-security-policy").unwrap_or_default();
        assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe"), "{path}: {csp}");
        assert_eq!(r.header("x-frame-options"), Some("DENY"));
        assert_eq!(r.header("cache-control"), Some("no-store"));
        if kind == "text/html" {
            // Every script is an external file of this origin; no handler attributes.
            for tag in r.body.split("<script").skip(1) {
                assert!(tag.trim_start().starts_with("src=\"/assets/"), "{path}: inline script {tag:.60}");
            }
            assert!(!r.body.contains(" onclick="), "{path}");
            assert!(!r.body.contains("http://") && !r.body.contains("https://"), "{path}: no other origin");
        }
    }
    // The edition's controls: the commercial bulk-agents and autoscope UI; nothing in community.
    let edition = s.get("/assets/edition.js", None).body;
    if cfg!(feature = "commercial") {
        assert!(edition.contains("/api/mgmt/agents/bulk") && edition.contains("/api/autoscope"));
    } else {
        assert!(edition.is_empty(), "{edition:.80}");
    }
    let r = s.get("/assets/nope.js", None);
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "not_found");
    assert_eq!(s.get("/assets/..%2fapp.html", None).status, 404);
    let info = s.get("/api/webauthn/info", None).json();
    assert_eq!(info["rp_id"], "localhost");
    assert_eq!(info["origin"], "http://localhost:8080");
}
