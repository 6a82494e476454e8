//! The OCSF 1.8.0 mapping of authlog's events, exactly as `schemas/ocsf/README.md`
//! specifies it. Every event it produces validates against the OCSF server's
//! compiled export of 1.8.0 with the OCSF validator's rules (the tests check it
//! with `tests/interop/ocsf_validate.py`). A pure function of the record:
//! nothing comes from the sink's clock, so a re-sent event is the same event.

use authlog_schemas::Recorded;
use serde_json::{Map, Value, json};

/// The OCSF version the mapping follows.
pub const OCSF_VERSION: &str = "1.8.0";

const AUTHENTICATION: (u64, &str) = (3002, "Authentication");
const ACCOUNT_CHANGE: (u64, &str) = (3001, "Account Change");
const AUTHORIZE_SESSION: (u64, &str) = (3003, "Authorize Session");
const ENTITY_MANAGEMENT: (u64, &str) = (3004, "Entity Management");
const API_ACTIVITY: (u64, &str) = (6003, "API Activity");
const DETECTION_FINDING: (u64, &str) = (2004, "Detection Finding");

fn text<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str)
}

fn ms(t: &str) -> Option<i64> {
    t.parse::<authlog_schemas::Timestamp>()
        .ok()
        .map(|t| t.unix_millis())
}

/// (class, activity_id, activity_name) of a type.
fn activity(event_type: &str, data: &Value) -> ((u64, &'static str), u64, &'static str) {
    let grant = text(data, "grant_type");
    match event_type {
        "user.registered" => (ACCOUNT_CHANGE, 1, "Create"),
        "user.updated" => (ACCOUNT_CHANGE, 99, "Update"),
        "user.password_changed" if text(data, "changed_by") == Some("user") => {
            (ACCOUNT_CHANGE, 3, "Password Change")
        }
        "user.password_changed" => (ACCOUNT_CHANGE, 4, "Password Reset"),
        "user.disabled" => (ACCOUNT_CHANGE, 5, "Disable"),
        "user.enabled" => (ACCOUNT_CHANGE, 2, "Enable"),
        "user.locked" => (ACCOUNT_CHANGE, 9, "Lock"),
        "user.unlocked" => (ACCOUNT_CHANGE, 12, "Unlock"),
        "login.succeeded" | "login.failed" | "client.authentication_failed" => {
            (AUTHENTICATION, 1, "Logon")
        }
        "session.ended" => (AUTHENTICATION, 2, "Logoff"),
        "authorization_code.issued" => (AUTHENTICATION, 4, "Service Ticket Request"),
        "token.granted" if grant == Some("refresh_token") => {
            (AUTHENTICATION, 5, "Service Ticket Renew")
        }
        "token.granted" | "authorization_code.replay_detected" => {
            (AUTHENTICATION, 3, "Authentication Ticket")
        }
        "refresh_token.reuse_detected" => (AUTHENTICATION, 5, "Service Ticket Renew"),
        "token.revoked" => (AUTHENTICATION, 99, "Token Revocation"),
        "consent.granted" | "consent.denied" => (AUTHORIZE_SESSION, 1, "Assign Privileges"),
        "consent.revoked" => (AUTHORIZE_SESSION, 99, "Revoke Privileges"),
        "authorization.rejected" => (API_ACTIVITY, 99, "Authorize"),
        "audit.accessed" => (API_ACTIVITY, 2, "Read"),
        "client.registered"
        | "key.generated"
        | "audit.checkpoint"
        | "resource_server.registered" => (ENTITY_MANAGEMENT, 1, "Create"),
        "client.updated" | "client.secret_rotated" | "resource_server.updated" => {
            (ENTITY_MANAGEMENT, 3, "Update")
        }
        "client.deleted" | "resource_server.deleted" => (ENTITY_MANAGEMENT, 4, "Delete"),
        "client.approved" => (ENTITY_MANAGEMENT, 8, "Enable"),
        "key.activated" => (ENTITY_MANAGEMENT, 10, "Activate"),
        "key.retired" => (ENTITY_MANAGEMENT, 11, "Deactivate"),
        // security.throttled, and anything a later catalogue adds.
        _ => (DETECTION_FINDING, 1, "Create"),
    }
}

fn severity(event_type: &str) -> (u64, &'static str) {
    match event_type {
        "authorization_code.replay_detected" | "refresh_token.reuse_detected" | "user.locked" => {
            (4, "High")
        }
        "login.failed" | "client.authentication_failed" | "security.throttled" => (3, "Medium"),
        "authorization.rejected" => (2, "Low"),
        _ => (1, "Informational"),
    }
}

/// An address: `ip` when it is one, else (a pseudonym) `uid`.
fn endpoint(address: &str) -> Value {
    if address.parse::<std::net::IpAddr>().is_ok() {
        json!({"ip": address})
    } else {
        json!({"uid": address})
    }
}

fn is_pseudonym(v: &str) -> bool {
    v.starts_with("pseudonym:")
}

fn actor(envelope: &Value) -> Value {
    let a = envelope.get("actor").cloned().unwrap_or(Value::Null);
    let id = text(&a, "id").unwrap_or_default();
    match text(&a, "kind") {
        Some("user") => json!({"user": {"uid": id, "type_id": 1, "type": "User"}}),
        Some("admin") => json!({"user": {"name": id, "type_id": 2, "type": "Admin"}}),
        Some("client") => json!({"app_uid": id, "app_name": id}),
        _ => json!({"app_name": format!("authlog/{id}")}),
    }
}

/// The principal of an Authentication event, and whether it is a client.
fn auth_user(envelope: &Value, data: &Value) -> (Value, bool) {
    let client = text(envelope, "client_id")
        .or_else(|| text(data, "client_id"))
        .filter(|c| *c != "-");
    let principal = text(envelope, "subject")
        .map(|s| (s.to_string(), false))
        .or_else(|| text(data, "user_id").map(|s| (s.to_string(), false)))
        .or_else(|| text(data, "username_hash").map(|s| (s.to_string(), true)))
        .or_else(|| client.map(|c| (format!("client:{c}"), false)));
    match principal {
        Some((hash, true)) => (json!({"uid": hash, "type_id": 0, "type": "Unknown"}), false),
        Some((uid, false)) if uid.starts_with("client:") => {
            let name = uid.trim_start_matches("client:").to_string();
            (
                json!({"uid": uid, "name": name, "type_id": 4, "type": "Service"}),
                true,
            )
        }
        Some((uid, false)) => (json!({"uid": uid, "type_id": 1, "type": "User"}), false),
        None => (
            json!({"uid": "unknown", "type_id": 0, "type": "Unknown"}),
            false,
        ),
    }
}

/// `auth_factors` from RFC 8176 `amr` values, without repeated factor types.
fn auth_factors(amr: &[Value]) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    for v in amr.iter().filter_map(Value::as_str) {
        let f = match v {
            "pwd" => (11, "Password"),
            "otp" => (7, "OTP"),
            "sms" => (1, "SMS"),
            "tel" => (3, "Phone Call"),
            "hwk" => (6, "Hardware Token"),
            "kba" => (2, "Security Question"),
            "face" | "fpt" | "iris" | "retina" | "vbm" => (4, "Biometric"),
            _ => continue,
        };
        if !out.iter().any(|o| o["factor_type_id"] == f.0) {
            out.push(json!({"factor_type_id": f.0, "factor_type": f.1}));
        }
    }
    out
}

/// `data.scopes` joined by spaces.
fn scopes(data: &Value) -> String {
    data.get("scopes")
        .and_then(Value::as_array)
        .map(|s| {
            s.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

/// `data.scopes` of a resource server as OCSF `entity.data`: the names and
/// flags as authlog keeps them.
fn scope_list(data: &Value) -> Value {
    data.get("scopes").cloned().unwrap_or_else(|| json!([]))
}

/// Drops `null` members and elements (OCSF has no null: an absent source is an
/// absent attribute), except inside `unmapped`, which is authlog's own JSON.
fn prune_nulls(v: &mut Value) {
    match v {
        Value::Object(o) => {
            o.retain(|_, m| !m.is_null());
            for m in o.values_mut() {
                prune_nulls(m);
            }
        }
        Value::Array(a) => {
            a.retain(|m| !m.is_null());
            for m in a.iter_mut() {
                prune_nulls(m);
            }
        }
        _ => {}
    }
}

/// The sentence of a type.
fn message(event_type: &str, env: &Value, data: &Value) -> String {
    let d = |k: &str| -> String {
        match data.get(k) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => String::new(),
            Some(v) => v.to_string(),
        }
    };
    let client = text(env, "client_id")
        .map(str::to_string)
        .unwrap_or_else(|| d("client_id"));
    match event_type {
        "user.registered" => format!(
            "User {} registered via {}",
            d("user_id"),
            d("registered_via")
        ),
        "user.updated" => format!("User {} updated", d("user_id")),
        "user.password_changed" => format!(
            "Password of user {} changed by {}",
            d("user_id"),
            d("changed_by")
        ),
        "user.disabled" => format!("User {} disabled", d("user_id")),
        "user.enabled" => format!("User {} enabled", d("user_id")),
        "user.locked" if data.get("until").is_some_and(|u| !u.is_null()) => format!(
            "User {} locked after {} failed sign-ins until {}",
            d("user_id"),
            d("failed_attempts"),
            d("until")
        ),
        "user.locked" => format!(
            "User {} locked after {} failed sign-ins until an admin unlocks it",
            d("user_id"),
            d("failed_attempts")
        ),
        "user.unlocked" => format!("User {} unlocked", d("user_id")),
        "login.succeeded" if !client.is_empty() => {
            format!("User {} signed in for client {client}", d("user_id"))
        }
        "login.succeeded" => format!("User {} signed in", d("user_id")),
        "login.failed" if data.get("user_id").is_some() => format!(
            "Sign-in failed for user {}: {}",
            d("user_id"),
            text(env, "reason").unwrap_or_default()
        ),
        "login.failed" => format!(
            "Sign-in failed for an unknown username: {}",
            text(env, "reason").unwrap_or_default()
        ),
        "session.ended" => format!(
            "Session {} of user {} ended: {}",
            d("session_id"),
            d("user_id"),
            d("cause")
        ),
        "authorization_code.issued" => format!(
            "Authorization code issued to client {} for user {}",
            d("client_id"),
            d("user_id")
        ),
        "token.granted" if data.get("user_id").is_some() => format!(
            "Tokens issued to client {} ({}) for user {}",
            d("client_id"),
            d("grant_type"),
            d("user_id")
        ),
        "token.granted" => format!(
            "Tokens issued to client {} ({})",
            d("client_id"),
            d("grant_type")
        ),
        "authorization_code.replay_detected" => format!(
            "Authorization code replayed by client {}; grant {} revoked",
            d("client_id"),
            d("grant_id")
        ),
        "refresh_token.reuse_detected" => format!(
            "Rotated-out refresh token reused by client {}; grant {} revoked",
            d("client_id"),
            d("grant_id")
        ),
        "token.revoked" => format!("Tokens of grant {} revoked: {}", d("grant_id"), d("cause")),
        "client.authentication_failed" => format!(
            "Client {} failed to authenticate ({}): {}",
            d("client_id"),
            d("method"),
            text(env, "reason").unwrap_or_default()
        ),
        "consent.granted" | "consent.denied" => format!(
            "User {} {} client {} consent to {}",
            d("user_id"),
            if event_type == "consent.granted" {
                "granted"
            } else {
                "denied"
            },
            d("client_id"),
            scopes(data)
        ),
        "consent.revoked" => format!(
            "Consent of user {} to client {} for {} revoked",
            d("user_id"),
            d("client_id"),
            scopes(data)
        ),
        "authorization.rejected" => format!(
            "Authorization request of client {} rejected: {}: {}",
            d("client_id"),
            text(env, "reason").unwrap_or_default(),
            d("description")
        ),
        "audit.accessed" => format!(
            "Audit trail read by {} via {}: {} events",
            d("token_name"),
            d("endpoint"),
            d("result_count")
        ),
        "client.registered" => format!(
            "Client {} registered via {}",
            d("client_id"),
            d("registered_via")
        ),
        "client.updated" => format!("Client {} updated", d("client_id")),
        "client.secret_rotated" => format!("Client {} secret rotated", d("client_id")),
        "client.deleted" => format!("Client {} deleted", d("client_id")),
        "client.approved" => format!("Client {} approved", d("client_id")),
        "resource_server.registered" => format!(
            "Resource server {} ({}) registered",
            d("identifier"),
            d("name")
        ),
        "resource_server.updated" => format!("Resource server {} updated", d("identifier")),
        "resource_server.deleted" => format!("Resource server {} deleted", d("identifier")),
        "key.generated" => format!("Signing key {} generated ({})", d("kid"), d("alg")),
        "key.activated" => format!("Signing key {} activated", d("kid")),
        "key.retired" => format!(
            "Signing key {} retired; tokens verify until {}",
            d("kid"),
            d("verify_until")
        ),
        "audit.checkpoint" => format!(
            "Audit checkpoint signed: size {}, root {}, key {}",
            d("tree_size"),
            d("root_hash"),
            d("key_id")
        ),
        "security.throttled" => {
            let mut m = format!("{} {} failures", d("count"), d("reason"));
            if data.get("ip").is_some() {
                m.push_str(&format!(" from {}", d("ip")));
            }
            let c = d("client_id");
            if !c.is_empty() && c != "-" {
                m.push_str(&format!(" for client {c}"));
            }
            m.push_str(" in one window; further ones are counted in metrics only");
            m
        }
        other => other.to_string(),
    }
}

/// The OCSF event of an envelope (its personal data already as the sink wants
/// it) and its record.
pub fn map(envelope: &Value, r: &Recorded) -> Result<Value, String> {
    let event_type = text(envelope, "type").ok_or("no type")?;
    let data = envelope.get("data").cloned().unwrap_or(Value::Null);
    let time_text = text(envelope, "time").ok_or("no time")?;
    let time = ms(time_text).ok_or("bad time")?;
    let failed = text(envelope, "outcome") == Some("failure");
    let ((class_uid, class_name), activity_id, activity_name) = activity(event_type, &data);
    let (severity_id, severity_name) = severity(event_type);
    let finding = class_uid == DETECTION_FINDING.0;
    let category = match class_uid {
        6003 => (6, "Application Activity"),
        2004 => (2, "Findings"),
        _ => (3, "Identity & Access Management"),
    };
    let (status_id, status_name, status_detail) = match event_type {
        "consent.denied" => (2, "Failure", Some("access_denied".to_string())),
        "security.throttled" => (1, "New", None),
        "session.ended" | "token.revoked" => {
            (1, "Success", text(&data, "cause").map(str::to_string))
        }
        _ if failed => (2, "Failure", text(envelope, "reason").map(str::to_string)),
        _ => (1, "Success", None),
    };
    let mut out = Map::new();
    let mut put = |k: &str, v: Value| {
        out.insert(k.to_string(), v);
    };
    put("class_uid", json!(class_uid));
    put("class_name", json!(class_name));
    put("category_uid", json!(category.0));
    put("category_name", json!(category.1));
    put("activity_id", json!(activity_id));
    put("activity_name", json!(activity_name));
    put("type_uid", json!(class_uid * 100 + activity_id));
    // The caption of `type_uid`: for 99 Other it is `{class}: Other`
    // (`activity_name` carries authlog's name of the activity).
    let type_caption = if activity_id == 99 {
        "Other"
    } else {
        activity_name
    };
    put("type_name", json!(format!("{class_name}: {type_caption}")));
    put("time", json!(time));
    put("timezone_offset", json!(0));
    put("severity_id", json!(severity_id));
    put("severity", json!(severity_name));
    put("status_id", json!(status_id));
    put("status", json!(status_name));
    if let Some(detail) = status_detail {
        put("status_detail", json!(detail));
    }
    put("message", json!(message(event_type, envelope, &data)));
    let mut metadata = json!({
        "version": OCSF_VERSION,
        "product": {"name": "authlog", "vendor_name": "authlog", "version": env!("CARGO_PKG_VERSION")},
        "uid": text(envelope, "id"),
        "event_code": event_type,
        "log_name": text(envelope, "stream"),
        "log_provider": "authlog",
        "original_time": time_text,
    });
    if let Some(req) = text(envelope, "request_id") {
        metadata["correlation_uid"] = json!(req);
    }
    if r.seq <= i32::MAX as u64 {
        metadata["sequence"] = json!(r.seq);
    }
    if finding {
        // Detection Finding has `actor` only through the host profile.
        metadata["profiles"] = json!(["host"]);
    }
    put("metadata", metadata);
    put("actor", actor(envelope));
    let source = envelope.get("source").cloned().unwrap_or(Value::Null);
    let ip = text(&source, "ip");
    if !finding {
        match ip {
            Some(ip) => put("src_endpoint", endpoint(ip)),
            None if class_uid == API_ACTIVITY.0 => {
                let system = envelope.get("actor").and_then(|a| text(a, "kind")) == Some("system");
                put(
                    "src_endpoint",
                    if system {
                        json!({"hostname": "localhost"})
                    } else {
                        json!({"name": "unknown"})
                    },
                );
            }
            None => {}
        }
        let mut http = Map::new();
        if let Some(ua) = text(&source, "user_agent") {
            http.insert("user_agent".into(), json!(ua));
        }
        if let Some(req) = text(envelope, "request_id") {
            http.insert("uid".into(), json!(req));
        }
        if !http.is_empty() {
            put("http_request", Value::Object(http));
        }
    }
    let client = text(envelope, "client_id")
        .or_else(|| text(&data, "client_id"))
        .filter(|c| *c != "-");
    let session_uid = text(envelope, "session_id").or_else(|| text(&data, "session_id"));
    let account = |uid: Option<&str>| json!({"uid": uid, "type_id": 1, "type": "User"});
    match class_uid {
        3002 => {
            let (user, is_client) = auth_user(envelope, &data);
            put("user", user);
            put(
                "service",
                match client {
                    Some(c) => json!({"uid": c, "name": c}),
                    None => json!({"name": "authlog"}),
                },
            );
            if is_client {
                put("auth_protocol_id", json!(6));
                put("auth_protocol", json!("OAUTH 2.0"));
            } else {
                put("auth_protocol_id", json!(4));
                put("auth_protocol", json!("OpenID"));
            }
            if ip.is_some() {
                put("is_remote", json!(true));
            }
            if activity_id == 1 {
                put("logon_type_id", json!(3));
                put("logon_type", json!("Network"));
            }
            let mut session = session_uid.map(|s| json!({"uid": s}));
            if event_type == "login.succeeded" {
                let amr: Vec<Value> = data
                    .get("amr")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                let factors = auth_factors(&amr);
                let mfa = amr.iter().any(|a| a == "mfa") || factors.len() >= 2;
                put("is_mfa", json!(mfa));
                if !factors.is_empty() {
                    put("auth_factors", Value::Array(factors));
                }
                if let Some(s) = session.as_mut() {
                    s["created_time"] = json!(time);
                    if let Some(exp) = text(&data, "expires_at").and_then(ms) {
                        s["expiration_time"] = json!(exp);
                    }
                    s["is_mfa"] = json!(mfa);
                }
            }
            if event_type == "session.ended"
                && let (Some(s), Some(cause)) = (session.as_mut(), text(&data, "cause"))
            {
                s["expiration_reason"] = json!(cause);
            }
            if let Some(s) = session {
                put("session", s);
            }
        }
        3001 => {
            let uid = text(&data, "user_id");
            let mut user = account(uid);
            if event_type == "user.registered" {
                if let Some(n) = text(&data, "username") {
                    user["name"] = json!(n);
                }
                if let Some(e) = text(&data, "email").filter(|e| !is_pseudonym(e)) {
                    user["email_addr"] = json!(e);
                }
                if let Some(n) = text(&data, "name") {
                    user["full_name"] = json!(n);
                }
            }
            put("user", user);
            if event_type == "user.updated" {
                let mut result = account(uid);
                if let Some(e) = text(&data, "email").filter(|e| !is_pseudonym(e)) {
                    result["email_addr"] = json!(e);
                }
                if let Some(n) = text(&data, "name") {
                    result["full_name"] = json!(n);
                }
                put("user_result", result);
            }
        }
        3003 => {
            // consent.granted, consent.denied, consent.revoked.
            put("user", account(text(&data, "user_id")));
            put(
                "privileges",
                data.get("scopes").cloned().unwrap_or_else(|| json!([])),
            );
            if let Some(c) = client {
                put("dst_endpoint", json!({"uid": c, "name": c}));
            }
            if let Some(s) = text(envelope, "session_id") {
                put("session", json!({"uid": s}));
            }
        }
        3004 => {
            let entity = |uid: Option<&str>, name: Option<&str>, kind: &str| {
                let mut e = json!({"uid": uid, "type": kind, "type_id": 99});
                if let Some(n) = name {
                    e["name"] = json!(n);
                }
                e
            };
            let client_name = data.get("metadata").and_then(|m| text(m, "client_name"));
            match event_type {
                "client.registered" => {
                    let mut e = entity(text(&data, "client_id"), client_name, "OAuth Client");
                    e["data"] = data.get("metadata").cloned().unwrap_or(Value::Null);
                    put("entity", e);
                    put(
                        "comment",
                        json!(format!(
                            "registered via {}",
                            text(&data, "registered_via").unwrap_or_default()
                        )),
                    );
                }
                "client.updated" => {
                    put(
                        "entity",
                        entity(text(&data, "client_id"), client_name, "OAuth Client"),
                    );
                    let mut e = entity(text(&data, "client_id"), client_name, "OAuth Client");
                    e["data"] = data.get("metadata").cloned().unwrap_or(Value::Null);
                    put("entity_result", e);
                }
                "client.secret_rotated" => {
                    put(
                        "entity",
                        entity(text(&data, "client_id"), None, "OAuth Client"),
                    );
                    put("comment", json!("client secret rotated"));
                }
                "client.deleted" => {
                    put(
                        "entity",
                        entity(text(&data, "client_id"), None, "OAuth Client"),
                    );
                }
                "client.approved" => {
                    put(
                        "entity",
                        entity(text(&data, "client_id"), None, "OAuth Client"),
                    );
                    put("comment", json!("client approved by an administrator"));
                }
                "resource_server.registered" => {
                    let mut e = entity(
                        text(&data, "identifier"),
                        text(&data, "name"),
                        "Resource Server",
                    );
                    e["data"] = json!({"scopes": scope_list(&data)});
                    put("entity", e);
                }
                "resource_server.updated" => {
                    put(
                        "entity",
                        entity(
                            text(&data, "identifier"),
                            text(&data, "name"),
                            "Resource Server",
                        ),
                    );
                    let mut e = entity(
                        text(&data, "identifier"),
                        text(&data, "name"),
                        "Resource Server",
                    );
                    e["data"] = json!({"scopes": scope_list(&data)});
                    put("entity_result", e);
                }
                "resource_server.deleted" => {
                    put(
                        "entity",
                        entity(text(&data, "identifier"), None, "Resource Server"),
                    );
                }
                "key.generated" => {
                    let mut e = entity(text(&data, "kid"), text(&data, "kid"), "Signing Key");
                    e["data"] =
                        json!({"alg": data.get("alg"), "public_jwk": data.get("public_jwk")});
                    put("entity", e);
                }
                "key.retired" => {
                    let mut e = entity(text(&data, "kid"), text(&data, "kid"), "Signing Key");
                    e["data"] = json!({"verify_until": data.get("verify_until")});
                    put("entity", e);
                }
                "key.activated" => {
                    put(
                        "entity",
                        entity(text(&data, "kid"), text(&data, "kid"), "Signing Key"),
                    );
                }
                _ => {
                    // audit.checkpoint
                    let name = format!(
                        "checkpoint {}",
                        data.get("tree_size").unwrap_or(&Value::Null)
                    );
                    let mut e = entity(text(&data, "root_hash"), Some(&name), "Audit Checkpoint");
                    e["data"] = data.clone();
                    put("entity", e);
                }
            }
        }
        6003 => {
            if event_type == "audit.accessed" {
                let mut api = json!({
                    "operation": text(&data, "endpoint"),
                    "service": {"name": "authlog audit"},
                });
                if let Some(req) = text(envelope, "request_id") {
                    api["request"] = json!({"uid": req});
                }
                put("api", api);
                let mut res_data = json!({"result_count": data.get("result_count")});
                if let Some(f) = data.get("filter") {
                    res_data["filter"] = f.clone();
                }
                put(
                    "resources",
                    json!([{"uid": "audit-trail", "name": "authlog audit trail", "type": "Audit Trail", "data": res_data}]),
                );
            } else {
                let mut response = json!({"error": text(envelope, "reason")});
                // The description may be removed as personal data.
                if let Some(d) = text(&data, "description") {
                    response["error_message"] = json!(d);
                }
                let mut api = json!({"operation": "authorize", "response": response});
                if let Some(req) = text(envelope, "request_id") {
                    api["request"] = json!({"uid": req});
                }
                put("api", api);
                put(
                    "resources",
                    json!([{"uid": text(&data, "client_id"), "name": text(&data, "client_id"), "type": "OAuth Client"}]),
                );
            }
        }
        _ => {
            // Detection Finding: security.throttled.
            let start = text(&data, "window_start").and_then(ms);
            put("count", data.get("count").cloned().unwrap_or(json!(0)));
            if let Some(s) = start {
                put("start_time", json!(s));
            }
            put("end_time", json!(time));
            let msg = message(event_type, envelope, &data);
            let mut info = json!({
                "uid": text(envelope, "id"),
                "title": format!("Failure budget exceeded: {}", text(&data, "reason").unwrap_or_default()),
                "desc": msg,
                "created_time": time,
                "last_seen_time": time,
                "analytic": {"name": "authlog failure budget", "type_id": 1, "type": "Rule"},
            });
            if let Some(s) = start {
                info["first_seen_time"] = json!(s);
            }
            put("finding_info", info);
            // An alertable signal; not a type a later catalogue adds that
            // lands here unmapped.
            if event_type == "security.throttled" {
                put("is_alert", json!(true));
            }
            let evidence = match text(&data, "ip") {
                Some(ip) => endpoint(ip),
                None => json!({"name": "unknown"}),
            };
            put("evidences", json!([{"src_endpoint": evidence}]));
            if let Some(c) = text(&data, "client_id").filter(|c| *c != "-") {
                put(
                    "resources",
                    json!([{"uid": c, "name": c, "type": "OAuth Client"}]),
                );
            }
        }
    }
    // The envelope minus what the attributes above carry, plus the record's
    // store-assigned fields: the mapped envelope can be rebuilt.
    let mut rest = envelope.as_object().cloned().unwrap_or_default();
    for k in ["id", "time", "outcome", "reason"] {
        rest.remove(k);
    }
    if !finding {
        rest.remove("source");
    }
    for k in ["position", "revision", "seq"] {
        rest.remove(k);
    }
    rest.insert("position".into(), json!(r.position.to_string()));
    rest.insert("revision".into(), json!(r.revision));
    rest.insert("seq".into(), json!(r.seq));
    put("unmapped", json!({"authlog": rest}));
    for (k, v) in out.iter_mut() {
        if k != "unmapped" {
            prune_nulls(v);
        }
    }
    Ok(Value::Object(out))
}

#[cfg(test)]
mod tests {
    //! Types and values the catalogue is about to gain, mapped before they
    //! exist: hand-built envelopes in the three personal-data modes, checked
    //! against the official OCSF export like every sink line
    //! (`tests/interop/ocsf_validate.py`; `tests/run.sh` sets
    //! `AUTHLOG_TEST_PYTHON`).

    use super::*;
    use authlog_schemas::Position;

    const USER: &str = "01937a4e-0000-7000-8000-0000000000a1";

    fn record(seq: u64, stream: &str) -> Recorded {
        Recorded {
            position: Position::dense(seq),
            revision: 0,
            seq,
            stream: stream.to_string(),
            body: Vec::new(),
            sidecar: None,
        }
    }

    /// A full envelope (personal data as stored) of `event_type`.
    fn envelope(n: u64, event_type: &str, stream: &str, actor: Value, data: Value) -> Value {
        let mut e = json!({
            "id": format!("01937a4e-1c2b-7d3e-8f40-{n:012x}"),
            "type": event_type,
            "schema_version": 1,
            "stream": stream,
            "time": "2026-11-26T06:09:54.123Z",
            "actor": actor,
            "outcome": "success",
            "source": {"ip": "203.0.113.9", "user_agent": "Mozilla/5.0 (X11; Linux x86_64)"},
            "request_id": format!("req-{n}"),
            "data": data,
        });
        if let Some(c) = e["data"].get("client_id").cloned() {
            e["client_id"] = c;
        }
        if let Some(u) = e["data"].get("user_id").cloned() {
            e["subject"] = u;
        }
        if let Some(s) = e["data"].get("session_id").cloned() {
            e["session_id"] = s;
        }
        e
    }

    /// The envelope as each personal-data mode sends it: none of these types
    /// has a personal field in `data`, so only `source` changes.
    fn modes(full: &Value) -> Vec<(&'static str, Value)> {
        let mut pseudonymised = full.clone();
        pseudonymised["source"] = json!({
            "ip": "pseudonym:00112233445566778899aabbccddeeff",
            "user_agent": "pseudonym:ffeeddccbbaa99887766554433221100",
        });
        let mut none = full.clone();
        if let Some(o) = none.as_object_mut() {
            o.remove("source");
        }
        vec![
            ("full", full.clone()),
            ("pseudonymised", pseudonymised),
            ("none", none),
        ]
    }

    fn admin() -> Value {
        json!({"kind": "admin", "id": "ops"})
    }

    fn samples() -> Vec<Value> {
        let scopes = json!([
            {"name": "reports:read", "description": "Read reports", "consent": true, "machine": true, "registrable": true},
            {"name": "reports:write", "description": "Write reports", "consent": true, "machine": false, "registrable": false},
        ]);
        let mut out = vec![
            envelope(
                1,
                "client.approved",
                "client-shop-web",
                admin(),
                json!({"client_id": "shop-web"}),
            ),
            envelope(
                2,
                "resource_server.registered",
                "resource-server-https://api.example.com",
                admin(),
                json!({"identifier": "https://api.example.com", "name": "Reports API", "scopes": scopes}),
            ),
            envelope(
                3,
                "resource_server.updated",
                "resource-server-https://api.example.com",
                admin(),
                json!({"identifier": "https://api.example.com", "name": "Reports API v2", "scopes": scopes}),
            ),
            envelope(
                4,
                "resource_server.deleted",
                "resource-server-https://api.example.com",
                admin(),
                json!({"identifier": "https://api.example.com"}),
            ),
            envelope(
                5,
                "consent.revoked",
                &format!("user-{USER}"),
                json!({"kind": "user", "id": USER}),
                json!({"user_id": USER, "client_id": "shop-web", "scopes": ["openid", "profile"]}),
            ),
            envelope(
                6,
                "consent.revoked",
                &format!("user-{USER}"),
                admin(),
                json!({"user_id": USER, "client_id": "shop-web", "scopes": ["openid"]}),
            ),
        ];
        for (i, cause) in ["password_changed", "idle", "admin"].iter().enumerate() {
            out.push(envelope(
                10 + i as u64,
                "session.ended",
                "session-01937a4e-0000-7000-8000-0000000000b1",
                json!({"kind": "system", "id": "sessions"}),
                json!({"session_id": "01937a4e-0000-7000-8000-0000000000b1", "user_id": USER, "cause": cause}),
            ));
        }
        for (i, cause) in ["password_changed", "consent_revoked", "admin"]
            .iter()
            .enumerate()
        {
            out.push(envelope(
                20 + i as u64,
                "token.revoked",
                "grant-01937a4e-0000-7000-8000-0000000000c1",
                json!({"kind": "system", "id": "grants"}),
                json!({"grant_id": "01937a4e-0000-7000-8000-0000000000c1", "client_id": "shop-web", "token_ids": ["at-1", "rt-1"], "grant": true, "cause": cause}),
            ));
        }
        out
    }

    /// Every (label, event) through the official check, in one run.
    fn official_check(events: &[(String, Value)]) {
        let python = std::env::var("AUTHLOG_TEST_PYTHON").unwrap_or_else(|_| {
            panic!("AUTHLOG_TEST_PYTHON is not set: run ./tests/run.sh, which installs ocsf-json-schema for this test")
        });
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/interop/ocsf_validate.py"
        );
        let file = std::env::temp_dir().join(format!(
            "authlog-ocsf-unit-{}-{}.json",
            std::process::id(),
            events.len()
        ));
        let items: Vec<Value> = events
            .iter()
            .map(|(label, event)| json!({"label": label, "event": event}))
            .collect();
        std::fs::write(&file, serde_json::to_vec(&items).unwrap()).unwrap();
        let out = std::process::Command::new(python)
            .args([script, "--version", OCSF_VERSION])
            .arg(&file)
            .output()
            .unwrap();
        let _ = std::fs::remove_file(&file);
        assert!(
            out.status.success(),
            "not valid OCSF {OCSF_VERSION}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn new_types_and_causes_map_to_valid_ocsf_in_every_personal_mode() {
        let mut events = Vec::new();
        for (n, full) in samples().iter().enumerate() {
            let stream = full["stream"].as_str().unwrap().to_string();
            for (mode, envelope) in modes(full) {
                let v = map(&envelope, &record(100 + n as u64, &stream)).unwrap();
                events.push((mode.to_string(), v));
            }
        }
        let find = |t: &str, mode: &str| {
            events
                .iter()
                .find(|(m, v)| m == mode && v["metadata"]["event_code"] == t)
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        let approved = find("client.approved", "full");
        assert_eq!(approved["type_uid"], 300408);
        assert_eq!(approved["entity"]["uid"], "shop-web");
        assert_eq!(approved["actor"]["user"]["type_id"], 2);
        let registered = find("resource_server.registered", "none");
        assert_eq!(registered["type_uid"], 300401);
        assert_eq!(registered["entity"]["type"], "Resource Server");
        assert_eq!(
            registered["entity"]["data"]["scopes"][0]["name"],
            "reports:read"
        );
        assert!(registered.get("src_endpoint").is_none());
        let updated = find("resource_server.updated", "pseudonymised");
        assert_eq!(updated["type_uid"], 300403);
        assert_eq!(updated["entity_result"]["name"], "Reports API v2");
        assert_eq!(
            updated["src_endpoint"]["uid"],
            "pseudonym:00112233445566778899aabbccddeeff"
        );
        assert_eq!(find("resource_server.deleted", "full")["type_uid"], 300404);
        let revoked = find("consent.revoked", "full");
        assert_eq!(revoked["class_uid"], 3003);
        assert_eq!(revoked["activity_name"], "Revoke Privileges");
        assert_eq!(revoked["type_name"], "Authorize Session: Other");
        assert_eq!(revoked["privileges"], json!(["openid", "profile"]));
        assert_eq!(revoked["status_id"], 1);
        let ended = find("session.ended", "full");
        assert_eq!(ended["status_detail"], "password_changed");
        assert_eq!(ended["session"]["expiration_reason"], "password_changed");
        official_check(&events);
    }

    #[test]
    fn no_attribute_is_null() {
        // A resource server deleted with nothing but its identifier, and one
        // without even that: absent sources are absent attributes.
        let mut e = envelope(
            1,
            "resource_server.deleted",
            "resource-server-x",
            admin(),
            json!({}),
        );
        e.as_object_mut().unwrap().remove("request_id");
        let v = map(&e, &record(1, "resource-server-x")).unwrap();
        fn has_null(v: &Value) -> bool {
            match v {
                Value::Null => true,
                Value::Object(o) => o.values().any(has_null),
                Value::Array(a) => a.iter().any(has_null),
                _ => false,
            }
        }
        let mut outside = v.clone();
        outside.as_object_mut().unwrap().remove("unmapped");
        assert!(!has_null(&outside), "{outside:#}");
    }
}
