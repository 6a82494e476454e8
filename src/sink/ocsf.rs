//! The OCSF 1.3.0 mapping of authlog's events, exactly as `schemas/ocsf/README.md`
//! specifies it (with the JSON Schema subset of each class beside it). A pure
//! function of the record: nothing comes from the sink's clock, so a re-sent
//! event is the same event.

use authlog_schemas::Recorded;
use serde_json::{Map, Value, json};

/// The OCSF version the mapping follows.
pub const OCSF_VERSION: &str = "1.3.0";

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
        "user.unlocked" => (ACCOUNT_CHANGE, 99, "Unlock"),
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
        "authorization.rejected" => (API_ACTIVITY, 99, "Authorize"),
        "audit.accessed" => (API_ACTIVITY, 2, "Read"),
        "client.registered" | "key.generated" | "audit.checkpoint" => {
            (ENTITY_MANAGEMENT, 1, "Create")
        }
        "client.updated" | "client.secret_rotated" => (ENTITY_MANAGEMENT, 3, "Update"),
        "client.deleted" => (ENTITY_MANAGEMENT, 4, "Delete"),
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
                json!({"uid": uid, "name": name, "type_id": 99, "type": "OAuth Client"}),
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
            data.get("scopes")
                .and_then(Value::as_array)
                .map(|s| s
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(" "))
                .unwrap_or_default()
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
    put("type_name", json!(format!("{class_name}: {activity_name}")));
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
    Ok(Value::Object(out))
}
