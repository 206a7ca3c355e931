//! The MCP tools: one vault API call (or a few) each, through the blocking client on tokio's
//! blocking pool. Every failure is a tool error whose text is the client's message (never a
//! token or a value); nothing here panics on what the model sends.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::sync::Arc;

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock, Implementation, ServerCapabilities, ServerConfig};
use rmcp::{ErrorData, ServerHandler, tool, tool_handler, tool_router};
use schemars::JsonSchema;
use serde::Deserialize;

use zeroize::Zeroizing;

use super::{MAX_RUN_OUTPUT, McpOptions};
use crate::client::run::{self, CaptureLimits, Var};
use crate::client::{ClientError, EntryRef, REF_PREFIX, SecretRef, VaultClient};

pub(super) const RUN_TOOL: &str = "run_with_secrets";

const LIST_DESC: &str = "List the vault entries this agent may read: id, title, type, URL and \
    scopes. Reveals metadata only, never a field value. The vault audits the call as this agent's read.";
const SEARCH_DESC: &str = "Search the entries this agent may read by title, URL and type. Reveals \
    metadata only (id, title, type, URL, scopes), never a field value. Audited as this agent's read.";
const TOTP_DESC: &str = "Get the current one-time code (TOTP) of an entry, given its id or exact \
    title. Reveals the short-lived code and how many seconds it stays valid; never the TOTP seed. \
    Audited as this agent's read.";
const FIELD_DESC: &str = "Get the value of one field (password, API key, ...) of an entry, given \
    the entry's id or exact title and the field's name. Reveals the secret value to the model ONLY \
    if the vault's owner marked this agent `reveal_to_model`; otherwise it refuses and explains how \
    to hand the value to a program with `clavitor run` (or run_with_secrets, when enabled), so that \
    it never passes through the model. Audited as this agent's read.";
const RUN_DESC: &str = "Run one of the commands the operator allowed (no shell) with environment \
    variables set from clavitor:// references (`clavitor://<entry id or exact title>/<field>`). The \
    secret values go to the program, not to the model: this returns only the exit code and the \
    program's stdout/stderr, with every resolved value replaced by a mask (exact matches only: a \
    program that transforms a value, e.g. encodes it, defeats the mask). Output is cut at 64 KiB \
    per stream; the program is killed at the time limit. Each resolved value is an audited read.";

#[derive(Debug, Deserialize, JsonSchema)]
pub struct SearchArgs {
    /// Text to look for in titles, URLs and types (1 to 256 characters).
    pub query: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct EntryArgs {
    /// The entry's id (digits) or its exact title.
    pub entry: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct FieldArgs {
    /// The entry's id (digits) or its exact title.
    pub entry: String,
    /// The field's name, e.g. `password`.
    pub field: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct RunArgs {
    /// The program to run: exactly one of the allowed commands.
    pub command: String,
    /// Its arguments (passed as they are; no shell).
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment variables to set, each to a `clavitor://<entry id or exact title>/<field>`
    /// reference that is resolved for the program only.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// The server: the agent's client and what the operator allowed.
#[derive(Clone)]
pub struct VaultTools {
    client: Arc<VaultClient>,
    opts: Arc<McpOptions>,
    tool_router: ToolRouter<Self>,
}

fn tool_error(text: impl Into<String>) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(text.into())])
}

fn ok_text(text: impl Into<String>) -> CallToolResult {
    CallToolResult::success(vec![ContentBlock::text(text.into())])
}

fn ok_json<T: serde::Serialize>(v: &T) -> CallToolResult {
    match serde_json::to_string_pretty(v) {
        Ok(s) => ok_text(s),
        Err(e) => tool_error(format!("could not encode the answer: {e}")),
    }
}

impl VaultTools {
    pub fn new(client: Arc<VaultClient>, opts: Arc<McpOptions>) -> Self {
        let mut tool_router = Self::tool_router();
        if opts.allow_run.is_empty() {
            tool_router.remove_route(RUN_TOOL);
        } else if let Some(route) = tool_router.map.get_mut(RUN_TOOL) {
            let allowed = opts.allow_run.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", ");
            route.attr.description = Some(
                format!("{RUN_DESC} Allowed commands: {allowed}. Time limit: {} s.", opts.run_timeout.as_secs()).into(),
            );
        }
        Self { client, opts, tool_router }
    }

    /// Runs a blocking client call on tokio's blocking pool.
    async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&VaultClient) -> Result<T, ClientError> + Send + 'static,
    ) -> Result<T, String> {
        let client = Arc::clone(&self.client);
        match tokio::task::spawn_blocking(move || f(&client)).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err("the vault call was interrupted".to_owned()),
        }
    }

    /// Whether the vault lets this agent's values reach the model. A vault too old to know
    /// `GET /api/whoami` knows no such mark either: no.
    async fn reveal_to_model(&self) -> Result<bool, String> {
        let client = Arc::clone(&self.client);
        match tokio::task::spawn_blocking(move || client.whoami()).await {
            Ok(Ok(me)) => Ok(me.reveal_to_model),
            Ok(Err(ClientError::Refused { status: 404, .. })) => Ok(false),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("the vault call was interrupted".to_owned()),
        }
    }
}

/// The refusal of `get_field`: where the value should go instead, and how. `allowed` are the
/// commands `run_with_secrets` may run (empty: the tool is not offered).
fn not_revealed(entry: &str, field: &str, allowed: &[String]) -> String {
    let var = env_name_for(field);
    let reference = format!("{REF_PREFIX}{entry}/{field}");
    let mut text = format!(
        "Refused: the value of field {field:?} of entry {entry:?} does not pass through the model. The vault's \
         owner has not marked this agent `reveal_to_model`.\n\
         Hand the value to the program that needs it instead; it then goes straight into that program's \
         environment and is masked in its output:\n\
         \n  {var}='{reference}' clavitor run -- <command> [args...]\n\
         \nor put `{var}={reference}` in an env file and run `clavitor run --env-file <file> -- <command>`.\n\
         (An inject-only entry's values leave the vault by no tool or command: send the program's HTTPS \
         requests through the vault's proxy instead, with HTTPS_PROXY, and the vault adds the credential.)"
    );
    if !allowed.is_empty() {
        text.push_str(&format!(
            " Or call the `{RUN_TOOL}` tool with env {{\"{var}\": \"{reference}\"}} and one of its allowed \
             commands: {}.",
            allowed.join(", ")
        ));
    }
    text
}

/// A plausible environment variable name for a field (`api key` → `API_KEY`), for examples.
fn env_name_for(field: &str) -> String {
    let s: String =
        field.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect();
    if s.is_empty() || s.starts_with(|c: char| c.is_ascii_digit()) { format!("SECRET_{s}") } else { s }
}

#[tool_router]
impl VaultTools {
    #[tool(description = LIST_DESC, annotations(read_only_hint = true))]
    async fn list_entries(&self) -> Result<CallToolResult, ErrorData> {
        Ok(match self.call(|c| c.list()).await {
            Ok(entries) => ok_json(&entries),
            Err(e) => tool_error(e),
        })
    }

    #[tool(description = SEARCH_DESC, annotations(read_only_hint = true))]
    async fn search_entries(&self, Parameters(args): Parameters<SearchArgs>) -> Result<CallToolResult, ErrorData> {
        let q = args.query;
        Ok(match self.call(move |c| c.search(&q)).await {
            Ok(entries) => ok_json(&entries),
            Err(e) => tool_error(e),
        })
    }

    #[tool(description = TOTP_DESC, annotations(read_only_hint = true))]
    async fn get_totp(&self, Parameters(args): Parameters<EntryArgs>) -> Result<CallToolResult, ErrorData> {
        let entry = match EntryRef::from_text(args.entry.trim()) {
            Ok(e) => e,
            Err(e) => return Ok(tool_error(e.to_string())),
        };
        Ok(match self.call(move |c| c.totp(&entry)).await {
            Ok(code) => ok_json(&code),
            Err(e) => tool_error(e),
        })
    }

    #[tool(description = FIELD_DESC, annotations(read_only_hint = true))]
    async fn get_field(&self, Parameters(args): Parameters<FieldArgs>) -> Result<CallToolResult, ErrorData> {
        let entry = match EntryRef::from_text(args.entry.trim()) {
            Ok(e) => e,
            Err(e) => return Ok(tool_error(e.to_string())),
        };
        if args.field.is_empty() {
            return Ok(tool_error("the field name is empty"));
        }
        // Asked before the value is read: a refused call reads nothing.
        match self.reveal_to_model().await {
            Ok(true) => {}
            Ok(false) => return Ok(tool_error(not_revealed(&args.entry, &args.field, &self.opts.allow_run))),
            // Not knowing is not a yes.
            Err(e) => {
                let why = format!("The vault could not be asked whether this agent may see values: {e}.");
                return Ok(tool_error(format!(
                    "{why}\n\n{}",
                    not_revealed(&args.entry, &args.field, &self.opts.allow_run)
                )));
            }
        }
        let r = SecretRef { entry, field: args.field };
        Ok(match self.call(move |c| c.field(&r)).await {
            // The one place a value goes to the model, because the vault said so.
            Ok(value) => ok_text(value.as_str()),
            Err(e) => tool_error(e),
        })
    }

    #[tool(description = RUN_DESC)]
    async fn run_with_secrets(&self, Parameters(args): Parameters<RunArgs>) -> Result<CallToolResult, ErrorData> {
        if !self.opts.allow_run.contains(&args.command) {
            let allowed = self.opts.allow_run.join(", ");
            return Ok(tool_error(format!(
                "Refused: {:?} is not an allowed command. Allowed (exactly as written): {allowed}",
                args.command
            )));
        }
        let mut vars: Vec<Var> = Vec::with_capacity(args.env.len());
        for (name, value) in args.env {
            if let Err(why) = check_env_name(&name) {
                return Ok(tool_error(format!("Refused: environment variable {name:?}: {why}")));
            }
            // Only references: a plain value chosen by the model has no business here.
            if let Err(e) = SecretRef::parse(&value) {
                return Ok(tool_error(format!(
                    "Refused: environment variable {name}: {e}. Every value must be a clavitor:// reference."
                )));
            }
            vars.push((name, Zeroizing::new(value)));
        }
        let limits = CaptureLimits { max_output: MAX_RUN_OUTPUT, timeout: self.opts.run_timeout };
        let program = OsString::from(args.command);
        let argv: Vec<OsString> = args.args.into_iter().map(OsString::from).collect();
        let captured = self
            .call(move |c| {
                let resolved = run::resolve(c, vars)?;
                // The child never gets the token (`pass_token: false` removes CLAVITOR_TOKEN).
                let cmd = resolved.command(c, &program, &argv, false);
                run::run_captured(cmd, resolved.secrets(), limits)
            })
            .await;
        Ok(match captured {
            Ok(out) => ok_json(&out),
            Err(e) => tool_error(e),
        })
    }
}

/// Names the model may set: shell-style names, and none that change how a program is loaded.
fn check_env_name(name: &str) -> Result<(), &'static str> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err("a name is letters, digits and _ and does not start with a digit");
    }
    let upper = name.to_ascii_uppercase();
    if upper.starts_with("LD_") || upper.starts_with("DYLD_") || upper == "PATH" || upper.starts_with("CLAVITOR_") {
        return Err("this name changes how programs are loaded or how clavitor runs; it cannot be set here");
    }
    Ok(())
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for VaultTools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("clavitor", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Clavitor: a credential vault. Entries hold fields (passwords, API keys, TOTP seeds). \
                 Prefer getting secrets to programs without seeing them: `run_with_secrets` (when listed) \
                 or `clavitor run` with clavitor://<entry>/<field> references. Every call is audited.",
            )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names_that_change_loading_are_refused() {
        for bad in
            ["LD_PRELOAD", "ld_library_path", "DYLD_INSERT_LIBRARIES", "PATH", "CLAVITOR_TOKEN", "", "1X", "A-B", "A B"]
        {
            assert!(check_env_name(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["API_KEY", "_x", "DB_PASSWORD2"] {
            assert!(check_env_name(good).is_ok(), "{good:?} refused");
        }
    }

    #[test]
    fn refusal_shows_a_clavitor_run_example() {
        let text = not_revealed("GitHub", "api key", &[]);
        assert!(text.contains("API_KEY='clavitor://GitHub/api key' clavitor run -- "), "{text}");
        assert!(text.contains("reveal_to_model") && !text.contains(RUN_TOOL), "{text}");
        let text = not_revealed("7", "password", &["psql".to_owned()]);
        assert!(text.contains(r#"`run_with_secrets` tool with env {"PASSWORD": "clavitor://7/password"}"#), "{text}");
        assert!(text.contains("allowed commands: psql."), "{text}");
    }
}
