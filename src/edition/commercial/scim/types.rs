//! The SCIM 2.0 vocabulary (RFC 7643/7644), in one module: URNs, the attribute definitions this
//! server publishes (the subset of the core User and Group schemas it keeps), the discovery
//! documents, the error schema, and the pure operations on resource documents (sanitising,
//! PATCH, `attributes`/`excludedAttributes`, the `eq` filter).
//!
//! Hand-written serde_json types: the Rust SCIM crates in the registry are either unmaintained
//! or model the full RFC schemas as fixed structs, which would make us store attributes we do
//! not publish. Nothing here touches a vault, a token or an agent's rights.

use serde_json::{Map, Value, json};

pub const USER_URN: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub const GROUP_URN: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
pub const ERROR_URN: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
pub const LIST_URN: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
pub const PATCH_URN: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
const SPC_URN: &str = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig";
const RT_URN: &str = "urn:ietf:params:scim:schemas:core:2.0:ResourceType";
const SCHEMA_URN: &str = "urn:ietf:params:scim:schemas:core:2.0:Schema";

/// The media type of every SCIM answer.
pub const MEDIA_TYPE: &str = "application/scim+json";
/// Most resources one list answer carries (`count` is capped to it).
pub const MAX_RESULTS: i64 = 1000;
/// Most members one group may list.
pub const MAX_MEMBERS: usize = 1000;
/// Largest stored attribute document of one resource.
pub const MAX_ATTRIBUTES_BYTES: usize = 16 * 1024;

/// A SCIM error: status, `scimType` (RFC 7644 §3.12) and a human-readable detail.
#[derive(Debug)]
pub struct ScimError {
    pub status: u16,
    pub scim_type: Option<&'static str>,
    pub detail: String,
}

impl ScimError {
    pub fn new(status: u16, scim_type: Option<&'static str>, detail: impl Into<String>) -> Self {
        Self { status, scim_type, detail: detail.into() }
    }
    pub fn bad(scim_type: &'static str, detail: impl Into<String>) -> Self {
        Self::new(400, Some(scim_type), detail)
    }
    pub fn not_found() -> Self {
        Self::new(404, None, "no such resource")
    }
    pub fn body(&self) -> Value {
        let mut v = json!({"schemas": [ERROR_URN], "status": self.status.to_string(), "detail": self.detail});
        if let Some(t) = self.scim_type {
            v["scimType"] = json!(t);
        }
        v
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    String,
    Boolean,
    Complex,
    Reference,
}

/// One attribute definition as published under `/Schemas`.
pub struct Attr {
    pub name: &'static str,
    pub kind: Kind,
    pub multi: bool,
    pub required: bool,
    pub mutability: &'static str,
    pub unique: bool,
    pub sub: &'static [Attr],
    pub description: &'static str,
}

const fn simple(name: &'static str, kind: Kind, description: &'static str) -> Attr {
    Attr { name, kind, multi: false, required: false, mutability: "readWrite", unique: false, sub: &[], description }
}

const NAME_SUB: &[Attr] = &[
    simple("formatted", Kind::String, "The full name."),
    simple("familyName", Kind::String, "The family name."),
    simple("givenName", Kind::String, "The given name."),
];
const EMAIL_SUB: &[Attr] = &[
    simple("value", Kind::String, "The e-mail address."),
    simple("type", Kind::String, "work, home or other."),
    simple("primary", Kind::Boolean, "The primary address."),
];
const MEMBER_SUB: &[Attr] = &[
    Attr { mutability: "immutable", ..simple("value", Kind::String, "The id of a provisioned User.") },
    Attr { mutability: "immutable", ..simple("$ref", Kind::Reference, "The URI of the member.") },
    Attr { mutability: "immutable", ..simple("type", Kind::String, "User.") },
];

/// The User attributes kept (besides `id`, `externalId` and `meta`). `userName` becomes the
/// agent's name; nothing here can name a scope, a role or a right.
pub const USER_ATTRS: &[Attr] = &[
    Attr { required: true, unique: true, ..simple("userName", Kind::String, "Unique identifier; the agent's name.") },
    Attr { sub: NAME_SUB, ..simple("name", Kind::Complex, "The components of the user's name.") },
    simple("displayName", Kind::String, "The name to display."),
    Attr { multi: true, sub: EMAIL_SUB, ..simple("emails", Kind::Complex, "E-mail addresses.") },
    simple("active", Kind::Boolean, "false revokes the agent's token at once."),
];

/// The Group attributes kept. A group stands for the scope its `displayName` names, if the
/// owner made that scope; membership grants it only after the owner's passkey approves.
pub const GROUP_ATTRS: &[Attr] = &[
    Attr { required: true, ..simple("displayName", Kind::String, "The scope this group stands for (4-8 hex digits).") },
    Attr { multi: true, sub: MEMBER_SUB, ..simple("members", Kind::Complex, "Provisioned Users in the group.") },
];

fn attr_json(a: &Attr) -> Value {
    let mut v = json!({
        "name": a.name,
        "type": match a.kind { Kind::String => "string", Kind::Boolean => "boolean", Kind::Complex => "complex", Kind::Reference => "reference" },
        "multiValued": a.multi,
        "description": a.description,
        "required": a.required,
        "caseExact": false,
        "mutability": a.mutability,
        "returned": "default",
        "uniqueness": if a.unique { "server" } else { "none" },
    });
    if a.kind == Kind::Reference {
        v["referenceTypes"] = json!(["User", "Group"]);
    }
    if !a.sub.is_empty() {
        v["subAttributes"] = Value::Array(a.sub.iter().map(attr_json).collect());
    }
    v
}

fn schema_json(id: &str, name: &str, description: &str, attrs: &[Attr], base: &str) -> Value {
    json!({
        "schemas": [SCHEMA_URN],
        "id": id,
        "name": name,
        "description": description,
        "attributes": attrs.iter().map(attr_json).collect::<Vec<_>>(),
        "meta": {"resourceType": "Schema", "location": format!("{base}/Schemas/{id}")},
    })
}

const CORE_SPC: &[Attr] = &[simple("documentationUri", Kind::Reference, "Help about this service.")];
const CORE_RT: &[Attr] = &[
    simple("name", Kind::String, "The resource type's name."),
    simple("endpoint", Kind::Reference, "The resource type's endpoint."),
    simple("schema", Kind::Reference, "The resource type's base schema."),
];
const CORE_SCHEMA: &[Attr] =
    &[simple("name", Kind::String, "The schema's name."), simple("description", Kind::String, "What it is.")];

/// Every schema `/Schemas` publishes (RFC 7644 §4: the resources' and the three discovery ones).
pub fn schemas(base: &str) -> Vec<Value> {
    vec![
        schema_json(USER_URN, "User", "A provisioned user: one Clavitor agent.", USER_ATTRS, base),
        schema_json(GROUP_URN, "Group", "A group: one scope the owner created.", GROUP_ATTRS, base),
        schema_json(SPC_URN, "ServiceProviderConfig", "What this service supports.", CORE_SPC, base),
        schema_json(RT_URN, "ResourceType", "A resource type.", CORE_RT, base),
        schema_json(SCHEMA_URN, "Schema", "A schema.", CORE_SCHEMA, base),
    ]
}

pub fn resource_types(base: &str) -> Vec<Value> {
    let rt = |id: &str, endpoint: &str, schema: &str, description: &str| {
        json!({
            "schemas": [RT_URN],
            "id": id,
            "name": id,
            "endpoint": endpoint,
            "description": description,
            "schema": schema,
            "meta": {"resourceType": "ResourceType", "location": format!("{base}/ResourceTypes/{id}")},
        })
    };
    vec![
        rt("User", "/Users", USER_URN, "Agents provisioned by the identity provider"),
        rt("Group", "/Groups", GROUP_URN, "Groups standing for scopes the owner created"),
    ]
}

pub fn service_provider_config(base: &str) -> Value {
    json!({
        "schemas": [SPC_URN],
        "documentationUri": "https://clavitor.com/docs/scim",
        "patch": {"supported": true},
        "bulk": {"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
        "filter": {"supported": true, "maxResults": MAX_RESULTS},
        "changePassword": {"supported": false},
        "sort": {"supported": false},
        "etag": {"supported": false},
        "authenticationSchemes": [{
            "type": "oauthbearertoken",
            "name": "Provisioning token",
            "description": "A per-vault bearer token the owner creates with a passkey (cvs_...)",
            "primary": true,
        }],
        "meta": {"resourceType": "ServiceProviderConfig", "location": format!("{base}/ServiceProviderConfig")},
    })
}

pub fn list_response(total: i64, start_index: i64, resources: Vec<Value>) -> Value {
    json!({
        "schemas": [LIST_URN],
        "totalResults": total,
        "startIndex": start_index,
        "itemsPerPage": resources.len(),
        "Resources": resources,
    })
}

fn find<'a>(attrs: &'a [Attr], name: &str) -> Option<&'a Attr> {
    attrs.iter().find(|a| a.name.eq_ignore_ascii_case(name))
}

/// Coerces a value to an attribute's type, or says why it cannot. `"True"`/`"False"` strings
/// count as booleans (Microsoft Entra sends them so in PATCH).
fn coerce(a: &Attr, v: &Value, single: bool) -> Result<Value, ScimError> {
    let invalid = || ScimError::bad("invalidValue", format!("attribute {} has the wrong type", a.name));
    if a.multi && !single {
        let items: Vec<Value> = match v {
            Value::Array(items) => items.clone(),
            Value::Null => return Ok(Value::Null),
            other => vec![other.clone()],
        };
        if items.len() > MAX_MEMBERS {
            return Err(ScimError::bad("invalidValue", format!("at most {MAX_MEMBERS} values in {}", a.name)));
        }
        let out = items.iter().map(|i| coerce(a, i, true)).collect::<Result<Vec<_>, _>>()?;
        return Ok(Value::Array(out));
    }
    match (a.kind, v) {
        (_, Value::Null) => Ok(Value::Null),
        (Kind::String | Kind::Reference, Value::String(_)) => Ok(v.clone()),
        (Kind::Boolean, Value::Bool(_)) => Ok(v.clone()),
        (Kind::Boolean, Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(Value::Bool(true)),
        (Kind::Boolean, Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(Value::Bool(false)),
        (Kind::Complex, Value::Object(m)) => {
            let mut out = Map::new();
            for (k, val) in m {
                if let Some(sub) = find(a.sub, k) {
                    let val = coerce(sub, val, false)?;
                    if !val.is_null() {
                        out.insert(sub.name.to_owned(), val);
                    }
                }
            }
            Ok(Value::Object(out))
        }
        _ => Err(invalid()),
    }
}

/// Keeps only the published attributes of a resource (plus `externalId`), each coerced to its
/// type; unknown attributes are dropped (RFC 7644 §3.3 lets a server ignore them), read-only
/// ones (`id`, `meta`, `schemas`) too.
pub fn sanitize(attrs: &[Attr], doc: &Map<String, Value>) -> Result<Map<String, Value>, ScimError> {
    let mut out = Map::new();
    for (k, v) in doc {
        if k.eq_ignore_ascii_case("externalId") {
            match v {
                Value::String(s) => {
                    out.insert("externalId".into(), Value::String(s.clone()));
                }
                Value::Null => {}
                _ => return Err(ScimError::bad("invalidValue", "externalId must be a string")),
            }
            continue;
        }
        // Extension attributes arrive under their schema URN; this server publishes none.
        let Some(a) = find(attrs, k) else { continue };
        let v = coerce(a, v, false)?;
        if !v.is_null() && v != Value::Array(vec![]) {
            out.insert(a.name.to_owned(), v);
        }
    }
    for a in attrs.iter().filter(|a| a.required) {
        match out.get(a.name) {
            Some(Value::String(s)) if !s.trim().is_empty() => {}
            _ => return Err(ScimError::bad("invalidValue", format!("{} is required", a.name))),
        }
    }
    if serde_json::to_vec(&out).map(|b| b.len()).unwrap_or(usize::MAX) > MAX_ATTRIBUTES_BYTES {
        return Err(ScimError::new(413, None, "the resource is too large"));
    }
    Ok(out)
}

/// A PATCH path: `attr`, `attr.sub`, `attr[sub eq "v"]` or `attr[sub eq "v"].sub`, optionally
/// behind the resource's schema URN.
struct PatchPath {
    attr: String,
    filter: Option<(String, Value)>,
    sub: Option<String>,
}

fn parse_path(raw: &str, urn: &str) -> Result<PatchPath, ScimError> {
    let bad = || ScimError::bad("invalidPath", "the PATCH path is not understood");
    let mut p = raw.trim();
    if p.len() > urn.len() && p[..urn.len()].eq_ignore_ascii_case(urn) && p.as_bytes()[urn.len()] == b':' {
        p = &p[urn.len() + 1..];
    }
    let (head, filter, rest) = match p.find('[') {
        Some(open) => {
            let close = p.find(']').filter(|c| *c > open).ok_or_else(bad)?;
            let f = parse_eq(&p[open + 1..close]).ok_or_else(bad)?;
            (&p[..open], Some(f), &p[close + 1..])
        }
        None => (p, None, ""),
    };
    let (attr, sub) = if filter.is_some() {
        let sub = rest.strip_prefix('.').filter(|s| !s.is_empty());
        if !rest.is_empty() && sub.is_none() {
            return Err(bad());
        }
        (head, sub)
    } else {
        match head.split_once('.') {
            Some((a, s)) => (a, Some(s)),
            None => (head, None),
        }
    };
    if attr.is_empty() || attr.contains(['[', ']', ' ', '"']) {
        return Err(bad());
    }
    Ok(PatchPath { attr: attr.to_owned(), filter, sub: sub.map(str::to_owned) })
}

/// `name eq "value"` (or `eq true/false/number`): the one filter form this server evaluates.
pub fn parse_eq(text: &str) -> Option<(String, Value)> {
    let text = text.trim();
    let (name, rest) = text.split_once(char::is_whitespace)?;
    let rest = rest.trim_start();
    let (op, value) = rest.split_once(char::is_whitespace)?;
    if !op.eq_ignore_ascii_case("eq") {
        return None;
    }
    let value: Value = serde_json::from_str(value.trim()).ok()?;
    if !(value.is_string() || value.is_boolean() || value.is_number()) {
        return None;
    }
    Some((name.to_owned(), value))
}

fn matches(item: &Value, (name, want): &(String, Value)) -> bool {
    item.as_object().and_then(|m| m.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v)).is_some_and(
        |v| match (v, want) {
            (Value::String(a), Value::String(b)) => a == b,
            (a, b) => a == b,
        },
    )
}

/// Applies a PatchOp request body to `doc` (RFC 7644 §3.5.2): add, remove and replace, with or
/// without a path. The result still has to pass [`sanitize`].
pub fn apply_patch(attrs: &[Attr], urn: &str, doc: &mut Map<String, Value>, body: &Value) -> Result<(), ScimError> {
    let schemas_ok = body["schemas"].as_array().is_some_and(|s| s.iter().any(|u| u.as_str() == Some(PATCH_URN)));
    let ops = body.get("Operations").or_else(|| body.get("operations")).and_then(Value::as_array);
    let (true, Some(ops)) = (schemas_ok, ops) else {
        return Err(ScimError::bad("invalidSyntax", "expected a PatchOp with Operations"));
    };
    if ops.len() > 100 {
        return Err(ScimError::bad("invalidValue", "at most 100 operations per PATCH"));
    }
    for op in ops {
        let name = op["op"].as_str().unwrap_or_default().to_ascii_lowercase();
        let value = op.get("value").cloned().unwrap_or(Value::Null);
        match (name.as_str(), op.get("path").and_then(Value::as_str)) {
            ("add" | "replace", None) => {
                let Value::Object(m) = value else {
                    return Err(ScimError::bad("invalidValue", "an operation without a path needs an object value"));
                };
                for (k, v) in m {
                    let path = parse_path(&k, urn)?;
                    apply_one(attrs, doc, &name, &path, v)?;
                }
            }
            ("add" | "replace" | "remove", Some(raw)) => {
                let path = parse_path(raw, urn)?;
                apply_one(attrs, doc, &name, &path, value)?;
            }
            ("remove", None) => return Err(ScimError::bad("noTarget", "remove needs a path")),
            _ => return Err(ScimError::bad("invalidSyntax", "op must be add, remove or replace")),
        }
    }
    Ok(())
}

fn apply_one(
    attrs: &[Attr],
    doc: &mut Map<String, Value>,
    op: &str,
    path: &PatchPath,
    value: Value,
) -> Result<(), ScimError> {
    let key = if path.attr.eq_ignore_ascii_case("externalId") {
        "externalId".to_owned()
    } else {
        match find(attrs, &path.attr) {
            Some(a) => a.name.to_owned(),
            None if op == "remove" => return Ok(()),
            // An attribute this server does not keep is ignored, as on create.
            None => return Ok(()),
        }
    };
    let multi = find(attrs, &key).is_some_and(|a| a.multi);
    match (&path.filter, &path.sub) {
        (None, None) => match op {
            "remove" => {
                doc.remove(&key);
            }
            "add" if multi => {
                let mut items = match doc.remove(&key) {
                    Some(Value::Array(v)) => v,
                    _ => Vec::new(),
                };
                let new = match value {
                    Value::Array(v) => v,
                    other => vec![other],
                };
                for n in new {
                    if !items.contains(&n) {
                        items.push(n);
                    }
                }
                doc.insert(key, Value::Array(items));
            }
            "add" if value.is_object() => {
                // Adding to a complex attribute merges its sub-attributes.
                let mut current = match doc.remove(&key) {
                    Some(Value::Object(m)) => m,
                    _ => Map::new(),
                };
                if let Value::Object(m) = value {
                    current.extend(m);
                }
                doc.insert(key, Value::Object(current));
            }
            _ => {
                doc.insert(key, value);
            }
        },
        (None, Some(sub)) => {
            let entry = doc.entry(key).or_insert_with(|| Value::Object(Map::new()));
            let Value::Object(m) = entry else {
                return Err(ScimError::bad("invalidPath", "the path names a sub-attribute of a simple attribute"));
            };
            if op == "remove" {
                m.retain(|k, _| !k.eq_ignore_ascii_case(sub));
            } else {
                m.retain(|k, _| !k.eq_ignore_ascii_case(sub));
                m.insert(sub.clone(), value);
            }
        }
        (Some(filter), sub) => {
            let Some(Value::Array(items)) = doc.get_mut(&key) else {
                return if op == "remove" {
                    Ok(())
                } else {
                    Err(ScimError::bad("noTarget", "no value matches the filter"))
                };
            };
            let hits = items.iter().filter(|i| matches(i, filter)).count();
            if hits == 0 && op != "remove" {
                return Err(ScimError::bad("noTarget", "no value matches the filter"));
            }
            match (op, sub) {
                ("remove", None) => items.retain(|i| !matches(i, filter)),
                (_, None) => {
                    for i in items.iter_mut().filter(|i| matches(i, filter)) {
                        *i = value.clone();
                    }
                }
                (_, Some(sub)) => {
                    for i in items.iter_mut().filter(|i| matches(i, filter)) {
                        if let Value::Object(m) = i {
                            m.retain(|k, _| !k.eq_ignore_ascii_case(sub));
                            if op != "remove" {
                                m.insert(sub.clone(), value.clone());
                            }
                        }
                    }
                }
            }
            if items.is_empty() {
                doc.remove(&key);
            }
        }
    }
    Ok(())
}

/// Applies `attributes` / `excludedAttributes` (comma-separated, top-level names, URN prefix
/// allowed) to a rendered resource. `schemas` and `id` are always returned.
pub fn project(mut resource: Value, attributes: Option<&str>, excluded: Option<&str>, urn: &str) -> Value {
    let names = |list: &str| -> Vec<String> {
        list.split(',')
            .map(|n| {
                let n = n.trim();
                let n = if n.len() > urn.len() && n[..urn.len()].eq_ignore_ascii_case(urn) {
                    &n[urn.len() + 1..]
                } else {
                    n
                };
                n.split('.').next().unwrap_or_default().to_ascii_lowercase()
            })
            .filter(|n| !n.is_empty())
            .collect()
    };
    let Value::Object(m) = &mut resource else { return resource };
    let always = |k: &str| k == "schemas" || k == "id";
    if let Some(list) = attributes.filter(|s| !s.trim().is_empty()) {
        let keep = names(list);
        m.retain(|k, _| always(k) || keep.contains(&k.to_ascii_lowercase()));
    } else if let Some(list) = excluded.filter(|s| !s.trim().is_empty()) {
        let drop = names(list);
        m.retain(|k, _| always(k) || !drop.contains(&k.to_ascii_lowercase()));
    }
    resource
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn sanitize_keeps_only_published_attributes() {
        let d = doc(json!({"userName": "ann", "admin": true, "scopes": ["00ff"], "active": "False",
                           "roles": [{"value": "admin"}], "externalId": "x"}));
        let out = sanitize(USER_ATTRS, &d).unwrap();
        assert_eq!(Value::Object(out), json!({"userName": "ann", "active": false, "externalId": "x"}));
        assert_eq!(sanitize(USER_ATTRS, &doc(json!({"displayName": "x"}))).unwrap_err().status, 400);
        assert_eq!(sanitize(USER_ATTRS, &doc(json!({"userName": 5}))).unwrap_err().status, 400);
    }

    #[test]
    fn patch_forms() {
        let mut d = doc(json!({"userName": "ann", "emails": [{"value": "a@x", "type": "work"}]}));
        let ops = |ops: Value| json!({"schemas": [PATCH_URN], "Operations": ops});
        apply_patch(USER_ATTRS, USER_URN, &mut d, &ops(json!([{"op": "Replace", "value": {"active": "False"}}])))
            .unwrap();
        assert_eq!(d["active"], json!("False")); // coerced by sanitize afterwards
        apply_patch(USER_ATTRS, USER_URN, &mut d, &ops(json!([{"op": "add", "path": "name.givenName", "value": "A"}])))
            .unwrap();
        assert_eq!(d["name"], json!({"givenName": "A"}));
        let p = json!([{"op": "replace", "path": "emails[type eq \"work\"].value", "value": "b@x"}]);
        apply_patch(USER_ATTRS, USER_URN, &mut d, &ops(p)).unwrap();
        assert_eq!(d["emails"], json!([{"value": "b@x", "type": "work"}]));
        let p = json!([{"op": "remove", "path": "emails[value eq \"b@x\"]"}]);
        apply_patch(USER_ATTRS, USER_URN, &mut d, &ops(p)).unwrap();
        assert!(!d.contains_key("emails"));
        let p = json!([{"op": "remove", "path": format!("{USER_URN}:name")}]);
        apply_patch(USER_ATTRS, USER_URN, &mut d, &ops(p)).unwrap();
        assert!(!d.contains_key("name"));
        assert!(apply_patch(USER_ATTRS, USER_URN, &mut d, &ops(json!([{"op": "remove"}]))).is_err());
        assert!(apply_patch(USER_ATTRS, USER_URN, &mut d, &json!({"Operations": []})).is_err());
    }

    #[test]
    fn eq_filter_and_projection() {
        assert_eq!(parse_eq("userName eq \"a b\""), Some(("userName".into(), json!("a b"))));
        assert_eq!(parse_eq("userName co \"a\""), None);
        assert_eq!(parse_eq("userName eq a"), None);
        let r = json!({"schemas": [], "id": "1", "userName": "a", "displayName": "b"});
        assert_eq!(
            project(r.clone(), Some("displayName"), None, USER_URN),
            json!({"schemas": [], "id": "1", "displayName": "b"})
        );
        assert_eq!(project(r, None, Some("userName"), USER_URN), json!({"schemas": [], "id": "1", "displayName": "b"}));
    }
}
