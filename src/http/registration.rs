//! Dynamic client registration (RFC 7591) and management (RFC 7592) at
//! `/oidc/oauth2/register`.

use authlog_schemas::data::ClientRegisteredVia;
use authlog_schemas::{Actor, ActorKind};
use serde_json::json;
use warp::Filter;
use warp::http::{HeaderValue, StatusCode};
use warp::reply::{Reply, Response};

use super::admin_api::{self, ClientRequest};
use super::oidc::{FORM_LIMIT, ctx};
use super::{State, with_state};
use crate::crypto::{ct_eq, sha256};
use crate::oidc::grant::hex_sha256;
use crate::oidc::service::{self, Ctx};

fn json_status(value: serde_json::Value, status: StatusCode) -> Response {
    let mut res = warp::reply::json(&value).into_response();
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert("cache-control", HeaderValue::from_static("no-store"));
    h.insert("pragma", HeaderValue::from_static("no-cache"));
    res
}

fn unauthorized(description: &str) -> Response {
    let mut res = json_status(
        json!({"error": "invalid_token", "error_description": description}),
        StatusCode::UNAUTHORIZED,
    );
    res.headers_mut().insert(
        "www-authenticate",
        HeaderValue::from_static("Bearer error=\"invalid_token\""),
    );
    res
}

fn too_many() -> Response {
    json_status(
        json!({"error": "too_many_requests", "error_description": "too many wrong tokens from this address; try again later"}),
        StatusCode::TOO_MANY_REQUESTS,
    )
}

fn bearer(auth: &Option<String>) -> Option<&str> {
    auth.as_deref()
        .and_then(|a| {
            a.strip_prefix("Bearer ")
                .or_else(|| a.strip_prefix("bearer "))
        })
        .map(str::trim)
}

fn registration_uri(state: &State, client_id: &str) -> String {
    format!("{}/oauth2/register/{client_id}", state.config.issuer)
}

// The error is the finished HTTP response: it is returned once, not passed around.
#[allow(clippy::result_large_err)]
fn parse_metadata(body: &[u8], client_id: Option<&str>) -> Result<ClientRequest, Response> {
    let bad = |d: String| {
        json_status(
            json!({"error": "invalid_client_metadata", "error_description": d}),
            StatusCode::BAD_REQUEST,
        )
    };
    super::check_no_duplicate_keys(body).map_err(|e| bad(format!("the body is not JSON: {e}")))?;
    let mut value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| bad(format!("the body is not JSON: {e}")))?;
    let Some(obj) = value.as_object_mut() else {
        return Err(bad("the body must be a JSON object".into()));
    };
    if let Some(id) = client_id {
        // RFC 7592 §2.2: the body names the client; the server's own fields are
        // accepted only unchanged.
        if obj
            .remove("client_id")
            .and_then(|v| v.as_str().map(str::to_string))
            .as_deref()
            != Some(id)
        {
            return Err(bad("client_id must be present and match".into()));
        }
        for f in [
            "client_secret",
            "registration_access_token",
            "registration_client_uri",
            "client_secret_expires_at",
            "client_id_issued_at",
        ] {
            obj.remove(f);
        }
    }
    // RFC 7591 §2: metadata the server does not understand is ignored, not refused.
    const KNOWN: &[&str] = &[
        "client_name",
        "redirect_uris",
        "post_logout_redirect_uris",
        "grant_types",
        "response_types",
        "token_endpoint_auth_method",
        "scope",
        "id_token_signed_response_alg",
        "application_type",
        "skip_consent",
    ];
    obj.retain(|k, _| KNOWN.contains(&k.as_str()));
    serde_json::from_value(value).map_err(|e| bad(e.to_string()))
}

async fn register(state: State, ctx: Ctx, auth: Option<String>, body: bytes::Bytes) -> Response {
    let cfg = &state.config.registration;
    // With an initial access token an administrator vouched for the client;
    // without one (open registration) nobody has until an administrator approves it.
    let via = if bearer(&auth).is_some() {
        ClientRegisteredVia::DynamicRegistration
    } else {
        ClientRegisteredVia::OpenRegistration
    };
    match bearer(&auth) {
        Some(t) => {
            let Ok(guard) = super::TokenGuard::new(&state, ctx.ip) else {
                return too_many();
            };
            let presented = sha256(t.as_bytes());
            let mut ok = false;
            for iat in &cfg.initial_access_tokens {
                ok |= ct_eq(&sha256(iat.expose().as_bytes()), &presented);
            }
            guard.outcome(true, ok);
            if !ok {
                return unauthorized("the initial access token is not valid");
            }
        }
        None if cfg.open_dynamic => {
            // Open registration: every attempt from an address counts.
            let key = format!("dcr|{}", crate::oidc::throttle::address_key(ctx.ip));
            let th = &state.oidc.throttles.registration;
            if let Some(wait) = th.wait(&key) {
                let mut res = json_status(
                    json!({"error": "slow_down", "error_description": "too many registrations from this address"}),
                    StatusCode::TOO_MANY_REQUESTS,
                );
                let secs = crate::oidc::throttle::wait_seconds(wait);
                if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                    res.headers_mut().insert("retry-after", v);
                }
                return res;
            }
            th.fail(&key);
        }
        None => return unauthorized("an initial access token is required"),
    }
    let req = match parse_metadata(&body, None) {
        Ok(r) => r,
        Err(res) => return res,
    };
    let validated = {
        let views = state.views.read().await;
        admin_api::validate_client(
            req,
            admin_api::ClientRules::new(&state, false, &views, None),
        )
    };
    let metadata = match validated {
        Ok(m) => m,
        Err((code, d)) => {
            return json_status(
                json!({"error": code, "error_description": d}),
                StatusCode::BAD_REQUEST,
            );
        }
    };
    let actor = Actor {
        kind: ActorKind::System,
        id: "dynamic-registration".into(),
    };
    let reg = match admin_api::register_client(&state, actor, metadata, via).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "dynamic registration");
            return json_status(
                json!({"error": "server_error"}),
                StatusCode::INTERNAL_SERVER_ERROR,
            );
        }
    };
    let views = state.views.read().await;
    let Some(c) = views.clients.get(&reg.client_id) else {
        return json_status(
            json!({"error": "server_error"}),
            StatusCode::INTERNAL_SERVER_ERROR,
        );
    };
    let mut out = admin_api::client_json(c);
    if let Some(o) = out.as_object_mut() {
        o.remove("skip_consent");
        o.remove("approved");
        o.remove("registered_via");
        if let Some(s) = reg.client_secret {
            o.insert("client_secret".into(), s.into());
        }
        o.insert("client_secret_expires_at".into(), 0.into());
        if let Some(t) = reg.registration_access_token {
            o.insert("registration_access_token".into(), t.into());
        }
        o.insert(
            "registration_client_uri".into(),
            registration_uri(&state, &c.client_id).into(),
        );
    }
    json_status(out, StatusCode::CREATED)
}

/// The client if `auth` carries its registration access token; deleted and
/// unknown clients, and wrong tokens, all look the same (401).
async fn managed(
    state: &State,
    ip: std::net::IpAddr,
    client_id: &str,
    auth: &Option<String>,
) -> Result<authlog_projections::Client, Response> {
    let token =
        bearer(auth).ok_or_else(|| unauthorized("the registration access token is missing"))?;
    let guard = super::TokenGuard::new(state, ip).map_err(|_| too_many())?;
    let client = service::view_lookup(state, |v| v.clients.get(client_id).cloned()).await;
    let ok = client
        .as_ref()
        .and_then(|c| service::client_secrets(state, c))
        .and_then(|s| s.registration_sha256)
        .is_some_and(|h| ct_eq(hex_sha256(token).as_bytes(), h.as_bytes()));
    guard.outcome(true, ok);
    match (ok, client) {
        (true, Some(c)) => Ok(c),
        _ => Err(unauthorized(
            "the registration access token is not valid for this client",
        )),
    }
}

/// RFC 7592 §3: the client information response carries the registration
/// access token — the one just presented and verified (authlog keeps only its
/// hash, so it echoes rather than stores it).
fn client_view(state: &State, c: &authlog_projections::Client, token: &str) -> serde_json::Value {
    let mut out = admin_api::client_json(c);
    if let Some(o) = out.as_object_mut() {
        o.remove("skip_consent");
        o.remove("approved");
        o.remove("registered_via");
        o.insert("registration_access_token".into(), token.into());
        o.insert(
            "registration_client_uri".into(),
            registration_uri(state, &c.client_id).into(),
        );
    }
    out
}

pub fn routes(state: State) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    let create = warp::path!("oidc" / "oauth2" / "register")
        .and(warp::post())
        .and(with_state(state.clone()))
        .and(ctx(state.clone()))
        .and(super::header_lossy("authorization"))
        .and(super::bounded_body(FORM_LIMIT))
        .then(register);
    let read = warp::path!("oidc" / "oauth2" / "register" / String)
        .and(warp::get())
        .and(with_state(state.clone()))
        .and(super::header_lossy("authorization"))
        .and(super::oidc::client_ip(state.clone()))
        .then(
            |id: String, state: State, auth: Option<String>, ip: std::net::IpAddr| async move {
                match managed(&state, ip, &id, &auth).await {
                    Ok(c) => json_status(
                        client_view(&state, &c, bearer(&auth).unwrap_or_default()),
                        StatusCode::OK,
                    ),
                    Err(res) => res,
                }
            },
        );
    let update = warp::path!("oidc" / "oauth2" / "register" / String)
        .and(warp::put())
        .and(with_state(state.clone()))
        .and(super::header_lossy("authorization"))
        .and(super::oidc::client_ip(state.clone()))
        .and(super::bounded_body(FORM_LIMIT))
        .then(
            |id: String,
             state: State,
             auth: Option<String>,
             ip: std::net::IpAddr,
             body: bytes::Bytes| async move {
                let c = match managed(&state, ip, &id, &auth).await {
                    Ok(c) => c,
                    Err(res) => return res,
                };
                let req = match parse_metadata(&body, Some(&id)) {
                    Ok(r) => r,
                    Err(res) => return res,
                };
                let actor = Actor {
                    kind: ActorKind::Client,
                    id: c.client_id.clone(),
                };
                match admin_api::update_client(&state, actor, &id, req, false).await {
                    Ok(admin_api::Updated::Invalid(res)) => res,
                    Ok(admin_api::Updated::Done { client_secret }) => {
                        match state.views.read().await.clients.get(&id) {
                            Some(c) => {
                                let mut out =
                                    client_view(&state, c, bearer(&auth).unwrap_or_default());
                                if let Some(s) = client_secret {
                                    // RFC 7591 §3.2.1: shown this once.
                                    out["client_secret"] = s.into();
                                    out["client_secret_expires_at"] = 0.into();
                                }
                                json_status(out, StatusCode::OK)
                            }
                            None => unauthorized("the client is gone"),
                        }
                    }
                    Err(crate::http::ApiError::NotFound) => unauthorized("the client is gone"),
                    Err(e) => {
                        tracing::error!(error = %e, "client update");
                        json_status(
                            json!({"error": "server_error"}),
                            StatusCode::INTERNAL_SERVER_ERROR,
                        )
                    }
                }
            },
        );
    let delete = warp::path!("oidc" / "oauth2" / "register" / String)
        .and(warp::delete())
        .and(with_state(state.clone()))
        .and(super::header_lossy("authorization"))
        .and(super::oidc::client_ip(state.clone()))
        .then(
            |id: String, state: State, auth: Option<String>, ip: std::net::IpAddr| async move {
                let c = match managed(&state, ip, &id, &auth).await {
                    Ok(c) => c,
                    Err(res) => return res,
                };
                let actor = Actor {
                    kind: ActorKind::Client,
                    id: c.client_id.clone(),
                };
                match admin_api::delete_client(&state, actor, &id).await {
                    Ok(()) => {
                        let mut res = Response::new(Default::default());
                        *res.status_mut() = StatusCode::NO_CONTENT;
                        res
                    }
                    Err(crate::http::ApiError::NotFound) => unauthorized("the client is gone"),
                    Err(e) => {
                        tracing::error!(error = %e, "client delete");
                        json_status(
                            json!({"error": "server_error"}),
                            StatusCode::INTERNAL_SERVER_ERROR,
                        )
                    }
                }
            },
        );
    create
        .or(read)
        .unify()
        .or(update)
        .unify()
        .or(delete)
        .unify()
}
