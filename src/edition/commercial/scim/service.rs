//! What a SCIM request does to a vault, on its file (one transaction per request): Users are
//! agents, Groups stand for scopes, memberships wait for the owner's passkey.
//!
//! THE RULE kept here: nothing an identity provider sends widens what any agent reads. A
//! provisioned agent is created scoped to itself alone (never admin, never all access) with a
//! token nobody ever sees; a group maps only to a scope that already exists (on a live entry or
//! as an agent's own scope) and never touches an entry; an added membership is only recorded
//! (pending) until [`approve`] runs inside the owner's WebAuthn-gated write. Deactivating,
//! deleting, removing a member or deleting a group only ever narrows, within the request.

use serde_json::{Map, Value, json};

use super::types::{self, GROUP_ATTRS, GROUP_URN, ScimError, USER_ATTRS, USER_URN};
use crate::audit::{Action, Actor, AuditEvent, Outcome};
use crate::auth::{AgentId, Scope, ScopeSet};
use crate::store::StoreError;
use crate::store::idp_db::{IdpFilter, IdpGroupRow, IdpUserRow};
use crate::store::vault_db::VaultDb;
use crate::vault::{VaultError, ops};

/// A failure inside a SCIM change: a SCIM refusal, or the vault's.
#[derive(Debug)]
pub enum Fail {
    Scim(ScimError),
    Vault(VaultError),
}

impl From<ScimError> for Fail {
    fn from(e: ScimError) -> Self {
        Fail::Scim(e)
    }
}
impl From<VaultError> for Fail {
    fn from(e: VaultError) -> Self {
        Fail::Vault(e)
    }
}
impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Self {
        Fail::Vault(VaultError::from_store(e))
    }
}

impl Fail {
    pub fn into_scim(self) -> ScimError {
        match self {
            Fail::Scim(e) => e,
            Fail::Vault(VaultError::NotFound) => ScimError::not_found(),
            Fail::Vault(VaultError::Conflict(m)) => ScimError::new(409, None, m),
            Fail::Vault(VaultError::Invalid(m)) => ScimError::bad("invalidValue", m),
            Fail::Vault(VaultError::Scope(e)) => ScimError::bad("invalidValue", e.to_string()),
            Fail::Vault(VaultError::CapExceeded(body)) => ScimError::new(
                403,
                None,
                body.get("message").and_then(Value::as_str).unwrap_or("license cap reached").to_owned(),
            ),
            Fail::Vault(e) => {
                tracing::error!(error = %e, "provisioning failed");
                ScimError::new(500, None, "internal error")
            }
        }
    }
}

/// Who is asking (for audit rows) and where the resources live (for `meta.location`).
pub struct Ctx {
    pub base: String,
    pub client: String,
}

impl Ctx {
    fn event(&self, action: Action, detail: impl Into<String>) -> AuditEvent {
        AuditEvent::new(Actor::IdentityProvider, action, Outcome::Ok).client(self.client.clone()).detail(detail)
    }
}

fn now() -> i64 {
    crate::store::now_ms()
}

fn rfc3339(ms: i64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_seconds(at).to_string()
}

fn attrs_of(text: &str) -> Map<String, Value> {
    serde_json::from_str(text).unwrap_or_default()
}

fn meta(ctx: &Ctx, kind: &str, id: &str, created: i64, updated: i64, version: i64) -> Value {
    json!({
        "resourceType": kind,
        "created": rfc3339(created),
        "lastModified": rfc3339(updated),
        "location": format!("{}/{kind}s/{id}", ctx.base),
        "version": format!("W/\"{version}\""),
    })
}

pub fn render_user(ctx: &Ctx, row: &IdpUserRow) -> Value {
    let mut m = attrs_of(&row.attributes);
    let id = row.agent_id.to_string();
    m.insert("schemas".into(), json!([USER_URN]));
    m.insert("meta".into(), meta(ctx, "User", &id, row.created_at, row.updated_at, row.version));
    m.insert("id".into(), json!(id));
    Value::Object(m)
}

fn render_group(ctx: &Ctx, db: &VaultDb, row: &IdpGroupRow) -> Result<Value, Fail> {
    let mut m = attrs_of(&row.attributes);
    // Members as the identity provider stated them, less those whose user is gone.
    if let Some(Value::Array(items)) = m.remove("members") {
        let mut kept = Vec::new();
        for item in items {
            if member_id(&item).is_some_and(|id| db.idp_user(id).ok().flatten().is_some()) {
                kept.push(item);
            }
        }
        if !kept.is_empty() {
            m.insert("members".into(), Value::Array(kept));
        }
    }
    let id = group_id_text(row.id);
    m.insert("schemas".into(), json!([GROUP_URN]));
    m.insert("meta".into(), meta(ctx, "Group", &id, row.created_at, row.updated_at, row.version));
    m.insert("id".into(), json!(id));
    Ok(Value::Object(m))
}

fn member_id(item: &Value) -> Option<i64> {
    item.get("value").and_then(Value::as_str).and_then(|s| s.parse::<i64>().ok()).filter(|n| *n > 0)
}

/// A User's SCIM id: its agent id.
pub fn parse_id(raw: &str) -> Result<i64, ScimError> {
    crate::api::parse_positive_id(raw).ok_or_else(ScimError::not_found)
}

/// A Group's SCIM id is `g<n>`: RFC 7643 §3.1 wants ids unique across all resources, and
/// Users' are their agents' ids.
fn group_id_text(id: i64) -> String {
    format!("g{id}")
}

pub fn parse_group_id(raw: &str) -> Result<i64, ScimError> {
    raw.strip_prefix('g').and_then(crate::api::parse_positive_id).ok_or_else(ScimError::not_found)
}

/// The `filter` query parameter: `attr eq "value"` on the attributes a list can match.
pub fn parse_filter(filter: Option<&str>, name_attr: &str) -> Result<IdpFilter, ScimError> {
    let mut out = IdpFilter::default();
    let Some(text) = filter.map(str::trim).filter(|f| !f.is_empty()) else { return Ok(out) };
    let bad = || {
        ScimError::bad(
            "invalidFilter",
            format!("only `{name_attr} eq \"...\"`, `externalId eq` and `id eq` filters are supported"),
        )
    };
    let (attr, value) = types::parse_eq(text).ok_or_else(bad)?;
    let value = value.as_str().map(str::to_owned).ok_or_else(bad)?;
    if attr.eq_ignore_ascii_case(name_attr) {
        out.name = Some(value);
    } else if attr.eq_ignore_ascii_case("externalId") {
        out.external_id = Some(value);
    } else if attr.eq_ignore_ascii_case("id") {
        // An id that is not ours matches nothing.
        let id = if name_attr == "userName" { parse_id(&value) } else { parse_group_id(&value) };
        out.id = Some(id.unwrap_or(-1));
    } else {
        return Err(bad());
    }
    Ok(out)
}

fn user_name(attrs: &Map<String, Value>) -> Result<String, ScimError> {
    let name = attrs.get("userName").and_then(Value::as_str).unwrap_or_default().trim().to_owned();
    if name.is_empty() || name.len() > ops::MAX_AGENT_NAME || name.chars().any(char::is_control) {
        return Err(ScimError::bad(
            "invalidValue",
            format!("userName must be 1 to {} characters", ops::MAX_AGENT_NAME),
        ));
    }
    Ok(name)
}

fn external_id(attrs: &Map<String, Value>) -> Option<String> {
    attrs.get("externalId").and_then(Value::as_str).map(str::to_owned)
}

fn active(attrs: &Map<String, Value>) -> bool {
    attrs.get("active") != Some(&Value::Bool(false))
}

fn to_text(attrs: &Map<String, Value>) -> String {
    Value::Object(attrs.clone()).to_string()
}

pub fn list_users(
    db: &VaultDb,
    ctx: &Ctx,
    filter: &IdpFilter,
    start: i64,
    count: i64,
) -> Result<(i64, Vec<Value>), Fail> {
    let (total, rows) = db.idp_users(filter, start - 1, count)?;
    Ok((total, rows.iter().map(|r| render_user(ctx, r)).collect()))
}

pub fn get_user(db: &VaultDb, ctx: &Ctx, id: i64) -> Result<Value, Fail> {
    let row = db.idp_user(id)?.ok_or_else(ScimError::not_found)?;
    Ok(render_user(ctx, &row))
}

/// POST /Users: a new agent holding only its own scope, not admin, not all access, with a token
/// that is dropped here unseen: it can read nothing until the owner issues it a token.
pub fn create_user(db: &mut VaultDb, ctx: &Ctx, doc: &Map<String, Value>) -> Result<Value, Fail> {
    let attrs = types::sanitize(USER_ATTRS, doc)?;
    let name = user_name(&attrs)?;
    db.in_one_transaction(|db| {
        if db.idp_user_name_taken(&name, None)? {
            return Err(ScimError::new(409, Some("uniqueness"), "userName is taken").into());
        }
        let event = ctx.event(Action::AgentCreate, "provisioned");
        let (agent, unseen_token) = ops::add_agent(db, &name, &[], (false, false), None, false, &event)?;
        drop(unseen_token);
        let t = now();
        let row = IdpUserRow {
            agent_id: agent.id.0,
            user_name: name.clone(),
            external_id: external_id(&attrs),
            active: active(&attrs),
            attributes: to_text(&attrs),
            created_at: t,
            updated_at: t,
            version: 1,
        };
        db.idp_user_upsert(&row)?;
        Ok(render_user(ctx, &row))
    })
}

/// PUT or PATCH /Users/{id}: `patch` is a PatchOp body, else `doc` replaces the resource.
pub fn change_user(
    db: &mut VaultDb,
    ctx: &Ctx,
    id: i64,
    doc: &Map<String, Value>,
    patch: Option<&Value>,
) -> Result<Value, Fail> {
    db.in_one_transaction(|db| {
        let row = db.idp_user(id)?.ok_or_else(ScimError::not_found)?;
        let attrs = match patch {
            Some(body) => {
                let mut current = attrs_of(&row.attributes);
                types::apply_patch(USER_ATTRS, USER_URN, &mut current, body)?;
                types::sanitize(USER_ATTRS, &current)?
            }
            None => types::sanitize(USER_ATTRS, doc)?,
        };
        let name = user_name(&attrs)?;
        if name != row.user_name {
            if db.idp_user_name_taken(&name, Some(id))? {
                return Err(ScimError::new(409, Some("uniqueness"), "userName is taken").into());
            }
            let update = ops::AgentUpdate { name: Some(name.clone()), ..Default::default() };
            ops::update_agent(db, AgentId(id), &update, &ctx.event(Action::AgentUpdate, "provisioned: renamed"))?;
        }
        let now_active = active(&attrs);
        if row.active && !now_active {
            deactivate(db, ctx, AgentId(id))?;
        }
        let new = IdpUserRow {
            user_name: name,
            external_id: external_id(&attrs),
            active: now_active,
            attributes: to_text(&attrs),
            updated_at: now(),
            version: row.version + 1,
            ..row
        };
        db.idp_user_upsert(&new)?;
        Ok(render_user(ctx, &new))
    })
}

/// `active=false`: the agent's token is replaced by one nobody ever sees (so the old one stops
/// at once) and every token derived from it is revoked, in this transaction.
fn deactivate(db: &mut VaultDb, ctx: &Ctx, id: AgentId) -> Result<(), Fail> {
    let update = ops::AgentUpdate { rotate_token: true, ..Default::default() };
    let (_, unseen_token) =
        ops::update_agent(db, id, &update, &ctx.event(Action::AgentUpdate, "provisioned: deactivated"))?;
    drop(unseen_token);
    let children: Vec<i64> = db.agents()?.iter().filter(|a| a.parent_id == Some(id.0)).map(|a| a.id).collect();
    for child in children {
        // A child may already be gone with an earlier sibling's subtree.
        if db.agent(child)?.is_some() {
            ops::revoke_agent(db, AgentId(child), &ctx.event(Action::AgentRevoke, "provisioned: parent deactivated"))?;
        }
    }
    Ok(())
}

/// DELETE /Users/{id}: revokes the agent (and its derived tokens) in this transaction.
pub fn delete_user(db: &mut VaultDb, ctx: &Ctx, id: i64) -> Result<(), Fail> {
    db.in_one_transaction(|db| {
        db.idp_user(id)?.ok_or_else(ScimError::not_found)?;
        ops::revoke_agent(db, AgentId(id), &ctx.event(Action::AgentRevoke, "provisioned: deleted"))?;
        db.idp_user_forget(id)?;
        Ok(())
    })
}

/// The scope a group name stands for: only one that exists already, on a live entry or as an
/// agent's own scope. SCIM never creates a scope and never attaches one to an entry.
fn existing_scope(db: &VaultDb, name: &str) -> Result<Option<String>, Fail> {
    let Ok(scope) = Scope::parse(name.trim()) else { return Ok(None) };
    let on_entry = db
        .live_entry_scopes()?
        .iter()
        .any(|(_, s)| ScopeSet::parse(s).is_ok_and(|set| set.iter().any(|x| x == scope.as_str())));
    let own = db.agents()?.iter().any(|a| AgentId(a.id).own_scope() == scope);
    Ok((on_entry || own).then(|| scope.as_str().to_owned()))
}

/// The provisioned agents a member list names; anything else is refused.
fn member_ids(db: &VaultDb, attrs: &Map<String, Value>) -> Result<Vec<i64>, Fail> {
    let mut ids = Vec::new();
    for item in attrs.get("members").and_then(Value::as_array).into_iter().flatten() {
        let id = member_id(item)
            .filter(|id| db.idp_user(*id).ok().flatten().is_some())
            .ok_or_else(|| ScimError::bad("invalidValue", "a member is not a User provisioned here"))?;
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    Ok(ids)
}

/// Takes `scope` from an agent, unless it is the agent's own or another approved group of the
/// same scope still grants it. Only ever narrows.
fn strip_scope(db: &mut VaultDb, ctx: &Ctx, agent: i64, scope: &str, group: i64) -> Result<(), Fail> {
    if AgentId(agent).own_scope().as_str() == scope || db.idp_scope_held_elsewhere(agent, scope, group)? {
        return Ok(());
    }
    let Some(row) = db.agent(agent)? else { return Ok(()) };
    let held = ScopeSet::parse(&row.scopes).map_err(VaultError::from)?;
    if !held.iter().any(|s| s == scope) {
        return Ok(());
    }
    let rest: Vec<String> = held.iter().filter(|s| *s != scope).map(str::to_owned).collect();
    let update = ops::AgentUpdate { scopes: Some(rest), ..Default::default() };
    ops::update_agent(
        db,
        AgentId(agent),
        &update,
        &ctx.event(Action::AgentUpdate, format!("provisioned: scope {scope} removed")),
    )?;
    Ok(())
}

pub fn list_groups(
    db: &VaultDb,
    ctx: &Ctx,
    filter: &IdpFilter,
    start: i64,
    count: i64,
) -> Result<(i64, Vec<Value>), Fail> {
    let (total, rows) = db.idp_groups(filter, start - 1, count)?;
    let out = rows.iter().map(|r| render_group(ctx, db, r)).collect::<Result<_, _>>()?;
    Ok((total, out))
}

pub fn get_group(db: &VaultDb, ctx: &Ctx, id: i64) -> Result<Value, Fail> {
    let row = db.idp_group(id)?.ok_or_else(ScimError::not_found)?;
    render_group(ctx, db, &row)
}

fn display_name(attrs: &Map<String, Value>) -> String {
    attrs.get("displayName").and_then(Value::as_str).unwrap_or_default().to_owned()
}

/// POST /Groups: memberships are recorded pending; nothing is granted.
pub fn create_group(db: &mut VaultDb, ctx: &Ctx, doc: &Map<String, Value>) -> Result<Value, Fail> {
    let attrs = types::sanitize(GROUP_ATTRS, doc)?;
    db.in_one_transaction(|db| {
        let members = member_ids(db, &attrs)?;
        let name = display_name(&attrs);
        let t = now();
        let mut row = IdpGroupRow {
            id: 0,
            scope: existing_scope(db, &name)?,
            display_name: name,
            external_id: external_id(&attrs),
            attributes: to_text(&attrs),
            created_at: t,
            updated_at: t,
            version: 1,
        };
        row.id = db.idp_group_upsert(&row, &ctx.event(Action::IdpGroupChange, "created").record())?;
        for m in members {
            db.idp_member_add(row.id, m)?;
        }
        render_group(ctx, db, &row)
    })
}

/// PUT or PATCH /Groups/{id}: removed members lose the scope now; added ones wait for the owner;
/// a new name (so a new scope) sends every membership back to pending, taking the old scope.
pub fn change_group(
    db: &mut VaultDb,
    ctx: &Ctx,
    id: i64,
    doc: &Map<String, Value>,
    patch: Option<&Value>,
) -> Result<Value, Fail> {
    db.in_one_transaction(|db| {
        let row = db.idp_group(id)?.ok_or_else(ScimError::not_found)?;
        let attrs = match patch {
            Some(body) => {
                let mut current = attrs_of(&row.attributes);
                types::apply_patch(GROUP_ATTRS, GROUP_URN, &mut current, body)?;
                types::sanitize(GROUP_ATTRS, &current)?
            }
            None => types::sanitize(GROUP_ATTRS, doc)?,
        };
        let wanted = member_ids(db, &attrs)?;
        let name = display_name(&attrs);
        let scope = existing_scope(db, &name)?;
        let current = db.idp_members(id)?;
        for m in &current {
            let stays = wanted.contains(&m.agent_id);
            if m.approved_at.is_some()
                && let Some(old) = &row.scope
                && (!stays || scope.as_deref() != Some(old.as_str()))
            {
                // Forget this approval first, so `strip_scope` does not count it as held.
                db.idp_member_remove(id, m.agent_id)?;
                strip_scope(db, ctx, m.agent_id, old, id)?;
                if stays {
                    db.idp_member_add(id, m.agent_id)?;
                }
            } else if !stays {
                db.idp_member_remove(id, m.agent_id)?;
            }
        }
        if scope != row.scope {
            db.idp_members_unapprove(id)?;
        }
        for m in &wanted {
            db.idp_member_add(id, *m)?;
        }
        let new = IdpGroupRow {
            display_name: name,
            external_id: external_id(&attrs),
            scope,
            attributes: to_text(&attrs),
            updated_at: now(),
            version: row.version + 1,
            ..row
        };
        db.idp_group_upsert(&new, &ctx.event(Action::IdpGroupChange, "changed").record())?;
        render_group(ctx, db, &new)
    })
}

/// DELETE /Groups/{id}: every approved member loses the group's scope in this transaction.
pub fn delete_group(db: &mut VaultDb, ctx: &Ctx, id: i64) -> Result<(), Fail> {
    db.in_one_transaction(|db| {
        let row = db.idp_group(id)?.ok_or_else(ScimError::not_found)?;
        let members = db.idp_members(id)?;
        db.idp_group_delete(id, &ctx.event(Action::IdpGroupChange, "deleted").record())?;
        if let Some(scope) = &row.scope {
            for m in members.iter().filter(|m| m.approved_at.is_some()) {
                strip_scope(db, ctx, m.agent_id, scope, id)?;
            }
        }
        Ok(())
    })
}

/// The owner's approval of pending memberships, run inside the owner's WebAuthn-gated write:
/// each named membership must be pending in a group whose scope still exists, and its agent a
/// provisioned one; all are checked before anything is written, then each agent gets the scope.
pub fn approve(db: &mut VaultDb, grants: &[(i64, i64)], event: &AuditEvent) -> Result<Vec<(i64, String)>, VaultError> {
    let mut plan = Vec::new();
    for &(group, agent) in grants {
        let refuse = |why: &str| VaultError::Invalid(format!("group {group}, agent {agent}: {why}"));
        let row = db.idp_group(group)?.ok_or_else(|| refuse("no such group"))?;
        let scope = row.scope.clone().ok_or_else(|| refuse("the group stands for no scope"))?;
        if existing_scope(db, &scope).map_err(|_| refuse("scope check failed"))?.is_none() {
            return Err(refuse("the scope no longer exists"));
        }
        let pending = db.idp_members(group)?.iter().any(|m| m.agent_id == agent && m.approved_at.is_none());
        if !pending || db.idp_user(agent)?.is_none() {
            return Err(refuse("no such pending membership"));
        }
        plan.push((group, agent, scope));
    }
    let t = now();
    let mut granted = Vec::new();
    for (group, agent, scope) in plan {
        let row = db.agent(agent)?.ok_or(VaultError::NotFound)?;
        let mut held: Vec<String> = ScopeSet::parse(&row.scopes)?.to_vec();
        if !held.contains(&scope) {
            held.push(scope.clone());
            let update = ops::AgentUpdate { scopes: Some(held), ..Default::default() };
            let ev = event.clone().detail(format!("grant approved: scope {scope} to agent {agent} (group {group})"));
            ops::update_agent(db, AgentId(agent), &update, &ev)?;
        }
        db.idp_member_approve(group, agent, t).map_err(VaultError::from_store)?;
        granted.push((agent, scope));
    }
    Ok(granted)
}
