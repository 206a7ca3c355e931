//! The OpenAPI 3.1 document served at `GET /api/openapi.json`, generated from the router.
//!
//! Each handler carries its own `#[utoipa::path]` (method, path, parameters with their bounds,
//! body, responses, security) and is registered with `routes!` in
//! [`super::documented_routes`], which adds the route and its operation together: the document
//! and the router come from one place. This module only adds what is global (info, the bearer
//! scheme) and holds the schemas of responses that handlers build as JSON values. Request types
//! and entry views derive their schemas where they are defined. A test fuzzes the live server
//! against this document (`tests/schemathesis/run.sh`), so a schema here that drifts from what a
//! handler really sends fails there.

use std::sync::OnceLock;

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{InfoBuilder, OpenApi};

/// The 4XX description of every vault API operation: `(status = "4XX", description = API_ERRORS, ...)`.
pub const API_ERRORS: &str =
    "error: 400 bad input, 401 no valid token, 403 refused, 404 missing or not visible, 415 body not JSON, 422 invalid";

/// Schemas of JSON bodies that handlers assemble with `json!` (documentation only: nothing
/// serializes these types).
#[allow(dead_code)]
pub mod schemas {
    use std::collections::HashMap;

    use utoipa::ToSchema;

    /// The `id` of every `/{id}` route (`super::super::extract::PositiveId` enforces it):
    /// `params(IdPath)`.
    #[derive(utoipa::IntoParams)]
    #[into_params(parameter_in = Path)]
    pub struct IdPath {
        /// a positive integer id
        #[param(minimum = 1, maximum = 9223372036854775807i64)]
        pub id: i64,
    }

    /// The two headers of a passkey-approved write (`super::super::extract::Signed`):
    /// `params(SignedHeaders)`.
    #[derive(utoipa::IntoParams)]
    #[into_params(parameter_in = Header)]
    pub struct SignedHeaders {
        /// id of a challenge from POST /api/webauthn/challenge bound to this exact request
        #[param(rename = "X-WebAuthn-Challenge")]
        pub challenge: String,
        /// the assertion (PublicKeyCredential JSON) over that challenge
        #[param(rename = "X-WebAuthn-Assertion")]
        pub assertion: String,
    }

    /// Every error: a stable code and a message for people.
    #[derive(ToSchema)]
    pub struct ErrorBody {
        /// A stable code, e.g. `not_found`, `forbidden`, `unsupported_media_type`.
        pub error: String,
        pub message: String,
        /// On a 403: the stable code of the rule that refused (a WebAuthn check, `not_admin`, a
        /// scoped-admin rule, a setup refusal).
        pub reason: Option<String>,
    }

    #[derive(ToSchema)]
    pub struct Health {
        /// `ok`, or `degraded` (503) while a vault cannot be opened (at start or at first open).
        #[schema(pattern = "^(ok|degraded)$")]
        pub status: String,
        /// `community` or `commercial`.
        pub edition: String,
        pub version: String,
        #[schema(minimum = 0)]
        pub vaults: u64,
        /// Registered vaults this node could not open at start (their tokens get 503).
        #[schema(minimum = 0)]
        pub vaults_unavailable: u64,
        #[schema(minimum = 0)]
        pub uptime_s: u64,
    }

    /// The methods a WebAuthn-gated write uses.
    #[derive(ToSchema)]
    pub enum WriteMethod {
        #[allow(clippy::upper_case_acronyms)]
        POST,
        #[allow(clippy::upper_case_acronyms)]
        PUT,
        #[allow(clippy::upper_case_acronyms)]
        PATCH,
        #[allow(clippy::upper_case_acronyms)]
        DELETE,
    }

    #[derive(ToSchema)]
    #[schema(rename_all = "snake_case")]
    pub enum Role {
        Scoped,
        ReadAll,
        ScopedAdmin,
        Owner,
    }

    #[derive(ToSchema)]
    pub struct Agent {
        pub id: i64,
        pub name: String,
        /// The agent's own scope (its id as 4 hex digits).
        pub scope: String,
        pub scopes: Vec<String>,
        pub all_access: bool,
        pub admin: bool,
        pub role: Role,
        pub created_at: i64,
        /// Unix seconds from which the token no longer authenticates; null: never.
        #[schema(required = true)]
        pub expires_at: Option<i64>,
        /// The agent this one's token was derived from (revoked with it); null for others.
        #[schema(required = true)]
        pub parent_id: Option<i64>,
        /// Whether the MCP server may hand this agent's L1 values to the model.
        pub reveal_to_model: bool,
        /// Whether the proxy refuses this agent's requests to hosts no inject rule names.
        pub proxy_only_listed: bool,
        /// In the agents list: whether this agent is a browser-extension session (`POST
        /// /api/sessions`).
        pub extension_session: Option<bool>,
    }

    /// The calling agent, as `GET /api/whoami` describes it.
    #[derive(ToSchema)]
    pub struct WhoAmI {
        pub id: i64,
        pub name: String,
        pub scopes: Vec<String>,
        pub all_access: bool,
        pub admin: bool,
        pub reveal_to_model: bool,
        /// The proxy refuses this agent's requests to hosts no inject rule names.
        pub proxy_only_listed: bool,
        /// Unix seconds; null: never expires.
        #[schema(required = true)]
        pub expires_at: Option<i64>,
        #[schema(required = true)]
        pub parent_id: Option<i64>,
    }

    /// A derived token; `token` is shown only here.
    #[derive(ToSchema)]
    pub struct DerivedToken {
        pub id: i64,
        pub name: String,
        pub token: String,
        pub scopes: Vec<String>,
        pub all_access: bool,
        pub reveal_to_model: bool,
        /// Inherited from the caller.
        pub proxy_only_listed: bool,
        /// Unix seconds.
        pub expires_at: i64,
        pub parent_id: i64,
    }

    #[derive(ToSchema)]
    pub struct AgentList {
        pub agents: Vec<Agent>,
    }

    /// A new agent; its token is shown only here.
    #[derive(ToSchema)]
    pub struct AgentWithToken {
        pub agent: Agent,
        pub token: String,
    }

    /// A changed agent; `token` is present only when it was rotated.
    #[derive(ToSchema)]
    pub struct AgentUpdated {
        pub agent: Agent,
        pub token: Option<String>,
    }

    /// A dismissed access request.
    #[derive(ToSchema)]
    pub struct Dismissed {
        pub dismissed: i64,
        pub host: String,
        pub agent_id: i64,
    }

    #[derive(ToSchema)]
    pub struct Revoked {
        pub revoked: i64,
        /// The tokens derived from it (recursively), revoked in the same transaction.
        pub derived_revoked: Vec<i64>,
    }

    #[derive(ToSchema)]
    pub struct AuditRow {
        pub id: i64,
        pub ts: i64,
        pub actor: String,
        pub agent_id: Option<i64>,
        pub action: String,
        pub entry_id: Option<i64>,
        pub client: String,
        pub outcome: String,
        pub detail: String,
        /// The agent's name as the caller may see it (null: not the caller's to see, or unknown).
        pub agent_name: Option<String>,
        /// The entry's title as the caller may see it (null: not the caller's to see, or unknown).
        pub entry_title: Option<String>,
        /// The agent is revoked: `agent_name` is what it was called then.
        pub agent_gone: bool,
        /// The entry is deleted: `entry_title` is what it was called then.
        pub entry_gone: bool,
    }

    #[derive(ToSchema)]
    pub struct AuditPage {
        /// Newest first.
        pub rows: Vec<AuditRow>,
        /// Pass as `before` for the next page; null at the end.
        #[schema(required = true)]
        pub next_before: Option<i64>,
    }

    #[derive(ToSchema)]
    pub struct Created {
        pub id: i64,
    }

    #[derive(ToSchema)]
    pub struct EntryVersion {
        pub id: i64,
        pub version: i64,
    }

    #[derive(ToSchema)]
    pub struct Deleted {
        pub deleted: i64,
    }

    /// A challenge bound to one operation; `options` are WebAuthn request options.
    #[derive(ToSchema)]
    pub struct Challenge {
        pub challenge_id: String,
        pub expires_at: i64,
        #[schema(value_type = Object)]
        pub options: serde_json::Value,
    }

    /// A registration in progress; `options` are WebAuthn creation options.
    #[derive(ToSchema)]
    pub struct Registration {
        pub registration_id: String,
        #[schema(value_type = Object)]
        pub options: serde_json::Value,
    }

    #[derive(ToSchema)]
    pub struct Passkey {
        pub id: String,
        pub name: String,
        pub sign_count: i64,
        pub created_at: i64,
    }

    #[derive(ToSchema)]
    pub struct PasskeyList {
        pub passkeys: Vec<Passkey>,
    }

    #[derive(ToSchema)]
    pub struct PasskeyAdded {
        pub id: String,
    }

    #[derive(ToSchema)]
    pub struct PasskeyRemoved {
        pub removed: String,
    }

    /// The owner's wrapped L2 keyring: an opaque JSON object of at most 16 KiB, written and
    /// read only by the owner's browser.
    #[derive(ToSchema)]
    pub struct Keyring(pub HashMap<String, serde_json::Value>);

    #[derive(ToSchema)]
    pub struct KeyringHolder {
        /// Null until the owner has set one.
        #[schema(required = true)]
        pub keyring: Option<Keyring>,
    }

    #[derive(ToSchema)]
    pub struct Ok {
        pub ok: bool,
    }

    /// The owner after setup; both null when the vault already had an owner (only the passkey
    /// was enrolled).
    #[derive(ToSchema)]
    pub struct SetupDone {
        #[schema(required = true)]
        pub agent: Option<Agent>,
        #[schema(required = true)]
        pub token: Option<String>,
    }

    #[derive(ToSchema)]
    pub struct RelyingParty {
        pub rp_id: String,
        pub origin: String,
    }
}

/// The document of this edition's routes, with the global parts added.
fn build() -> OpenApi {
    let mut doc = super::documented_routes().into_openapi();
    doc.info = InfoBuilder::new()
        .title("Clavitor")
        .version(env!("CARGO_PKG_VERSION"))
        .description(Some(
            "A credential vault for AI agents. Errors are always {\"error\", \"message\"} JSON. \
             Request bodies must be sent with Content-Type: application/json (else 415).",
        ))
        .build();
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    close_variants(components, "Placement");
    doc
}

/// Marks each object of a tagged enum's `oneOf` `additionalProperties: false`: the enum is
/// `deny_unknown_fields`, which utoipa states for structs but not for enum variants, and a
/// document that admits extra keys the server refuses is wrong about the API.
fn close_variants(components: &mut utoipa::openapi::Components, name: &str) {
    use utoipa::openapi::RefOr;
    use utoipa::openapi::schema::{AdditionalProperties, Schema};
    if let Some(RefOr::T(Schema::OneOf(one_of))) = components.schemas.get_mut(name) {
        for item in &mut one_of.items {
            if let RefOr::T(Schema::Object(object)) = item {
                object.additional_properties = Some(Box::new(AdditionalProperties::FreeForm(false)));
            }
        }
    }
}

/// The document (built once).
pub fn document() -> &'static OpenApi {
    static DOC: OnceLock<OpenApi> = OnceLock::new();
    DOC.get_or_init(build)
}

/// The document as served (serialized once).
pub fn json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| document().to_json().unwrap_or_else(|_| "{}".to_owned()))
}

#[utoipa::path(
    get,
    path = "/api/openapi.json",
    summary = "This document",
    responses(
        (status = 200, description = "the OpenAPI document", body = Object),
        (status = "4XX", description = "error", body = schemas::ErrorBody),
    )
)]
pub async fn serve() -> Response {
    let mut resp = json().into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}
