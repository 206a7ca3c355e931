//! The OpenAPI 3.1 document of every route, served at `GET /api/openapi.json`.
//!
//! One table ([`ROUTES`]) lists each operation with its authentication; the request and response
//! types derive their schemas (utoipa), so the document follows the code. A test checks the table
//! against the live router, route by route.

use std::sync::OnceLock;

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, OpenApiBuilder, PathsBuilder, Ref, Required, ResponseBuilder,
};

/// Who may call an operation.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// No token.
    Open,
    /// Any agent's bearer token.
    Agent,
    /// An admin agent's bearer token.
    Admin,
    /// An admin token plus an operation-bound WebAuthn assertion.
    AdminWebAuthn,
}

/// One operation of the API.
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    pub auth: Auth,
    /// The schema name of the JSON request body, if any.
    pub body: Option<&'static str>,
    /// The schema name of the success body, if it has a named schema.
    pub returns: Option<&'static str>,
}

const fn r(
    method: &'static str,
    path: &'static str,
    auth: Auth,
    body: Option<&'static str>,
    returns: Option<&'static str>,
    summary: &'static str,
) -> Route {
    Route { method, path, summary, auth, body, returns }
}

use Auth::{Admin, AdminWebAuthn, Agent, Open};

pub const ROUTES: &[Route] = &[
    r("get", "/healthz", Open, None, None, "Liveness, edition and version"),
    r("get", "/api/openapi.json", Open, None, None, "This document"),
    r("get", "/api/entries", Agent, None, Some("EntrySummary"), "Metadata of the entries the caller may see"),
    r("post", "/api/entries", AdminWebAuthn, Some("EntryInput"), None, "Create an entry"),
    r("get", "/api/entries/{id}", Agent, None, Some("EntryView"), "One entry: L1 values, L2 ciphertexts"),
    r("put", "/api/entries/{id}", AdminWebAuthn, Some("EntryInput"), None, "Replace an entry"),
    r("delete", "/api/entries/{id}", AdminWebAuthn, None, None, "Delete an entry (tombstone)"),
    r("put", "/api/entries/{id}/scopes", AdminWebAuthn, Some("ScopesRequest"), None, "Change an entry's scopes"),
    r("get", "/api/search", Agent, None, Some("EntrySummary"), "Search title, URL and type (?q=, &limit=)"),
    r("get", "/api/ext/totp/{id}", Agent, None, Some("TotpCode"), "The current TOTP code of an entry"),
    r("get", "/api/agents", Admin, None, None, "List agents"),
    r("post", "/api/agents", AdminWebAuthn, Some("NewAgentRequest"), None, "Create an agent; its token is shown once"),
    r("put", "/api/agents/{id}", AdminWebAuthn, Some("UpdateAgentRequest"), None, "Change or rotate an agent"),
    r("delete", "/api/agents/{id}", AdminWebAuthn, None, None, "Revoke an agent"),
    r("get", "/api/audit", Admin, None, None, "The audit log, newest first (?before=, &limit=)"),
    r("post", "/api/webauthn/challenge", Admin, Some("ChallengeRequest"), None, "A challenge bound to one operation"),
    r("get", "/api/webauthn/info", Open, None, None, "Relying party id and origin"),
    r("get", "/api/passkeys", Admin, None, None, "List passkeys"),
    r("post", "/api/passkeys", AdminWebAuthn, Some("AddPasskeyRequest"), None, "Enroll a further passkey"),
    r("post", "/api/passkeys/options", Admin, None, None, "Registration options for a further passkey"),
    r("delete", "/api/passkeys/{id}", AdminWebAuthn, None, None, "Remove a passkey (never the last)"),
    r("get", "/api/keyring", Admin, None, None, "The wrapped L2 keyring"),
    r("put", "/api/keyring", AdminWebAuthn, None, None, "Replace the wrapped L2 keyring"),
    r("post", "/api/setup/start", Open, Some("StartRequest"), None, "Begin owner setup with a one-time code"),
    r(
        "post",
        "/api/setup/finish",
        Open,
        Some("FinishRequest"),
        None,
        "Finish owner setup; the owner token is shown once",
    ),
];

fn method_of(m: &str) -> HttpMethod {
    match m {
        "post" => HttpMethod::Post,
        "put" => HttpMethod::Put,
        "delete" => HttpMethod::Delete,
        _ => HttpMethod::Get,
    }
}

fn json_ref(name: &str) -> ContentBuilder {
    ContentBuilder::new().schema(Some(Ref::from_schema_name(name)))
}

fn build() -> utoipa::openapi::OpenApi {
    let mut paths = PathsBuilder::new().build();
    for route in ROUTES {
        let mut op = OperationBuilder::new().summary(Some(route.summary)).operation_id(Some(format!(
            "{}_{}",
            route.method,
            route.path.trim_start_matches('/').replace(['/', '{', '}', '.'], "_")
        )));
        if route.path.contains("{id}") {
            op = op.parameter(
                ParameterBuilder::new()
                    .name("id")
                    .parameter_in(ParameterIn::Path)
                    .required(Required::True)
                    .schema(Some(ObjectBuilder::new().schema_type(Type::String))),
            );
        }
        if route.auth != Open {
            op = op.security(SecurityRequirement::new("bearer", Vec::<String>::new()));
        }
        if route.auth == AdminWebAuthn {
            for (name, what) in [
                ("X-WebAuthn-Challenge", "id of a challenge from POST /api/webauthn/challenge bound to this request"),
                ("X-WebAuthn-Assertion", "the assertion (PublicKeyCredential JSON) over that challenge"),
            ] {
                op = op.parameter(
                    ParameterBuilder::new()
                        .name(name)
                        .parameter_in(ParameterIn::Header)
                        .required(Required::True)
                        .description(Some(what))
                        .schema(Some(ObjectBuilder::new().schema_type(Type::String))),
                );
            }
        }
        if let Some(body) = route.body {
            op = op.request_body(Some(
                RequestBodyBuilder::new()
                    .content("application/json", json_ref(body).build())
                    .required(Some(Required::True))
                    .build(),
            ));
        }
        let mut ok = ResponseBuilder::new().description("success");
        if let Some(name) = route.returns {
            ok = ok.content("application/json", json_ref(name).build());
        }
        let error =
            || ResponseBuilder::new().description("error").content("application/json", json_ref("Error").build());
        // Creating routes answer 201.
        let created = route.method == "post" && matches!(route.path, "/api/entries" | "/api/agents" | "/api/passkeys");
        op = op.response(if created { "201" } else { "200" }, ok.build()).response("4XX", error().build());
        paths.add_path_operation(route.path, vec![method_of(route.method)], op.build());
    }
    let error_schema = ObjectBuilder::new()
        .property("error", ObjectBuilder::new().schema_type(Type::String).description(Some("a stable code")))
        .property("message", ObjectBuilder::new().schema_type(Type::String).description(Some("for people")))
        .required("error")
        .required("message");
    let mut components = ComponentsBuilder::new()
        .schema("Error", error_schema)
        .security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    macro_rules! with {
        ($($t:ty),*) => { $( components = components.schema_from::<$t>(); )* };
    }
    with!(
        crate::vault::entry::EntryInput,
        crate::vault::entry::Field,
        crate::vault::entry::FieldKind,
        crate::vault::entry::Tier,
        crate::vault::entry::FieldView<'static>,
        crate::vault::totp::TotpCode,
        crate::vault::view::EntrySummary<'static>,
        crate::vault::view::EntryView<'static>,
        crate::api::write::ScopesRequest,
        crate::api::write::NewAgentRequest,
        crate::api::write::UpdateAgentRequest,
        crate::api::write::ChallengeRequest,
        crate::api::write::AddPasskeyRequest,
        crate::api::setup::StartRequest,
        crate::api::setup::FinishRequest
    );
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new().title("Clavitor").version(env!("CARGO_PKG_VERSION")).description(Some(
                "A credential vault for AI agents. Errors are always {\"error\", \"message\"} JSON.",
            )),
        )
        .paths(paths)
        .components(Some(components.build()))
        .build()
}

/// The document as served (built once).
pub fn json() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| build().to_json().unwrap_or_else(|_| "{}".to_owned()))
}

pub async fn serve() -> Response {
    let mut resp = json().into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}
