//! Admin API for users and clients (admin bearer token; the token's name is the
//! actor of every event it causes).

use authlog_projections::{Client, User};
use authlog_schemas::data::{self, ClientMetadata, ClientRegisteredVia, RegisteredVia};
use authlog_schemas::{Actor, ActorKind};
use serde::Deserialize;
use serde_json::json;
use warp::Filter;
use warp::http::StatusCode;
use warp::reply::{Reply, Response};

use super::{ApiError, State, admin_auth, with_state};
use crate::oidc::grant::hex_sha256;
use crate::oidc::service::{self, ClientSecret, Draft, RegisterError};
use crate::store::{Expected, StoreError};

fn admin(name: String) -> Actor {
    Actor {
        kind: ActorKind::Admin,
        id: name,
    }
}

fn json_status(value: serde_json::Value, status: StatusCode) -> Response {
    let mut res = warp::reply::json(&value).into_response();
    *res.status_mut() = status;
    res.headers_mut().insert(
        "cache-control",
        warp::http::HeaderValue::from_static("no-store"),
    );
    res.headers_mut()
        .insert("pragma", warp::http::HeaderValue::from_static("no-cache"));
    res
}

fn metadata_error(code: &str, description: &str) -> Response {
    json_status(
        json!({"error": code, "error_description": description}),
        StatusCode::BAD_REQUEST,
    )
}

pub fn user_json(u: &User, now: authlog_schemas::Timestamp) -> serde_json::Value {
    json!({
        "id": u.id,
        "username": u.username,
        "email": u.email,
        "name": u.name,
        "enabled": u.enabled,
        "locked": u.is_locked(now),
        "failed_attempts": u.failed_attempts,
        "created_at": u.created_at,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    username: String,
    password: String,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewPassword {
    password: String,
}

fn json_body<T: serde::de::DeserializeOwned + Send>(
    limit: u64,
) -> impl Filter<Extract = (T,), Error = warp::Rejection> + Clone {
    warp::body::content_length_limit(limit).and(warp::body::json())
}

async fn create_user(
    state: State,
    token: String,
    body: NewUser,
) -> Result<Response, warp::Rejection> {
    let NewUser {
        username,
        password,
        email,
        name,
    } = body;
    match service::register_user(
        &state,
        admin(token),
        RegisteredVia::Admin,
        &username,
        password,
        email,
        name,
        None,
    )
    .await
    {
        Ok(id) => {
            let views = state.views.read().await;
            let u = views.users.get(&id).ok_or(ApiError::Internal(
                "the new user is not in the views".into(),
            ))?;
            Ok(json_status(
                user_json(u, service::now()),
                StatusCode::CREATED,
            ))
        }
        Err(RegisterError::Taken) => Ok(json_status(
            json!({"error": "username_taken", "error_description": "that username is taken"}),
            StatusCode::CONFLICT,
        )),
        Err(RegisterError::Invalid(why)) => Err(ApiError::InvalidRequest(why.into()).into()),
        Err(RegisterError::Busy) => {
            Err(ApiError::Unavailable("password hashing is busy".into()).into())
        }
        Err(RegisterError::Internal(e)) => Err(ApiError::Internal(e).into()),
    }
}

/// The user a path names: by id, else by username.
async fn resolve_user(state: &State, id_or_name: &str) -> Result<User, ApiError> {
    service::view_lookup(state, |v| {
        v.users
            .get(id_or_name)
            .or_else(|| v.users.by_username(id_or_name))
            .cloned()
    })
    .await
    .ok_or_else(|| {
        ApiError::Missing(format!(
            "no such user: {}",
            id_or_name.chars().take(64).collect::<String>()
        ))
    })
}

async fn get_user(id: String, state: State) -> Result<Response, warp::Rejection> {
    let u = resolve_user(&state, &id).await?;
    Ok(json_status(user_json(&u, service::now()), StatusCode::OK))
}

async fn user_action(
    id: String,
    action: String,
    state: State,
    token: String,
    body: Option<NewPassword>,
) -> Result<Response, warp::Rejection> {
    if !matches!(
        &action[..],
        "disable" | "enable" | "unlock" | "password" | "end-sessions" | "revoke-grants"
    ) {
        return Err(ApiError::NotFound.into());
    }
    let id = resolve_user(&state, &id).await?.id;
    let stream = format!("user-{id}");
    let phc = match (&action[..], body) {
        ("password", Some(p)) => {
            service::check_password_rules(&p.password)
                .map_err(|e| ApiError::InvalidRequest(e.into()))?;
            Some(
                state
                    .oidc
                    .passwords
                    .hash(p.password)
                    .await
                    .map_err(|e| match e {
                        crate::crypto::CryptoError::Busy => {
                            ApiError::Unavailable("password hashing is busy".into())
                        }
                        other => ApiError::Internal(other.to_string()),
                    })?,
            )
        }
        ("password", None) => {
            return Err(ApiError::InvalidRequest(
                "a JSON body {\"password\": …} is required".into(),
            )
            .into());
        }
        _ => None,
    };
    let token_name = token.clone();
    let actor = admin(token);
    let admin_actor = actor.clone();
    // Actions on what the user holds rather than on the user's own stream.
    if action == "end-sessions" || action == "revoke-grants" {
        let out = if action == "end-sessions" {
            let n =
                service::end_user_sessions(&state, &id, admin_actor, data::SessionEndCause::Admin)
                    .await?;
            json!({"user_id": id, "sessions_ended": n})
        } else {
            let n =
                service::revoke_user_grants(&state, &id, admin_actor, data::RevocationCause::Admin)
                    .await?;
            json!({"user_id": id, "grants_revoked": n})
        };
        return Ok(json_status(out, StatusCode::OK));
    }
    // Disabling ends the sessions first, as events (the views also drop any
    // session that slips in before the disabling lands).
    let ended_first = if action == "disable" {
        service::end_user_sessions(
            &state,
            &id,
            admin(token_name.clone()),
            data::SessionEndCause::UserDisabled,
        )
        .await?
    } else {
        0
    };
    service::change_user(&state, &id, |u| {
        let env = match &action[..] {
            "disable" if u.enabled => service::draft(
                &stream,
                actor.clone(),
                &data::UserDisabled {
                    user_id: u.id.clone(),
                },
                None,
            )?,
            "enable" if !u.enabled => service::draft(
                &stream,
                actor.clone(),
                &data::UserEnabled {
                    user_id: u.id.clone(),
                },
                None,
            )?,
            "unlock" if u.locked.is_some() || u.failed_attempts > 0 => service::draft(
                &stream,
                actor.clone(),
                &data::UserUnlocked {
                    user_id: u.id.clone(),
                },
                None,
            )?,
            "password" => service::draft(
                &stream,
                actor.clone(),
                &data::UserPasswordChanged {
                    user_id: u.id.clone(),
                    changed_by: data::ChangedBy::Admin,
                },
                None,
            )?,
            "disable" | "enable" | "unlock" => return Ok(vec![]),
            _ => return Err(ApiError::NotFound),
        };
        let secret = match &phc {
            Some(h) => Some(service::password_secret(h.clone())?),
            None => None,
        };
        Ok(vec![Draft {
            envelope: env.subject(u.id.clone()),
            secret,
        }])
    })
    .await?;
    // A disabled user, or one whose password changed, keeps nothing that the
    // old state signed in: every session ends and every grant is revoked.
    let ended = match &action[..] {
        "disable" => Some((
            ended_first,
            service::revoke_user_grants(
                &state,
                &id,
                admin(token_name.clone()),
                data::RevocationCause::UserDisabled,
            )
            .await?,
        )),
        "password" => Some(
            service::end_everything(
                &state,
                &id,
                admin(token_name.clone()),
                data::SessionEndCause::PasswordChanged,
                data::RevocationCause::PasswordChanged,
            )
            .await?,
        ),
        _ => None,
    };
    let u = service::view_lookup(&state, |v| v.users.get(&id).cloned())
        .await
        .ok_or(ApiError::NotFound)?;
    let mut out = user_json(&u, service::now());
    if let Some((sessions, grants)) = ended {
        out["sessions_ended"] = sessions.into();
        out["grants_revoked"] = grants.into();
    }
    Ok(json_status(out, StatusCode::OK))
}

// ---- clients ------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientRequest {
    #[serde(default)]
    pub client_name: String,
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    #[serde(default)]
    pub post_logout_redirect_uris: Vec<String>,
    #[serde(default)]
    pub grant_types: Option<Vec<String>>,
    #[serde(default)]
    pub response_types: Option<Vec<String>>,
    #[serde(default)]
    pub token_endpoint_auth_method: Option<String>,
    #[serde(default)]
    pub scope: Option<String>,
    #[serde(default)]
    pub id_token_signed_response_alg: Option<String>,
    #[serde(default)]
    pub application_type: Option<String>,
    #[serde(default)]
    pub skip_consent: Option<bool>,
}

pub use crate::oidc::scopes::INTROSPECTION_SCOPE;

pub fn client_json(c: &Client) -> serde_json::Value {
    let mut v = serde_json::to_value(&c.metadata).unwrap_or(json!({}));
    if let Some(o) = v.as_object_mut() {
        o.insert("client_id".into(), c.client_id.clone().into());
        o.insert("approved".into(), c.approved.into());
        o.insert(
            "registered_via".into(),
            serde_json::to_value(c.registered_via).unwrap_or_default(),
        );
        if let Some(exp) = c.client_secret_expires_at {
            o.insert("client_secret_expires_at".into(), exp.into());
        }
        o.insert(
            "client_id_issued_at".into(),
            c.created_at.unix_seconds().into(),
        );
    }
    v
}

/// What client validation depends on besides the metadata itself.
#[derive(Debug, Clone, Copy)]
pub struct ClientRules<'a> {
    /// An administrator is registering or changing the client.
    pub admin: bool,
    /// The issuer is `http://` on a loopback address (a developer's machine):
    /// web clients may use loopback http redirect URIs.
    pub dev_loopback: bool,
    /// The resource servers and the scopes they define.
    pub servers: &'a authlog_projections::ResourceServersView,
    /// The client's metadata before this change (updates only): omitted
    /// fields keep it, and a client keeps the scopes an administrator gave it.
    pub current: Option<&'a ClientMetadata>,
}

impl<'a> ClientRules<'a> {
    pub fn new(
        state: &State,
        admin: bool,
        views: &'a authlog_projections::Views,
        current: Option<&'a ClientMetadata>,
    ) -> ClientRules<'a> {
        ClientRules {
            admin,
            dev_loopback: crate::oidc::redirect_uri::is_dev_issuer(&state.config.issuer),
            servers: &views.resource_servers,
            current,
        }
    }
}

/// Validates client metadata with RFC 7591 error codes; fills defaults.
pub fn validate_client(
    req: ClientRequest,
    rules: ClientRules,
) -> Result<ClientMetadata, (&'static str, String)> {
    let admin = rules.admin;
    let bad = |d: String| ("invalid_client_metadata", d);
    let name = req.client_name.trim().to_string();
    if name.is_empty() || name.chars().count() > 128 {
        return Err(bad("client_name is 1 to 128 characters".into()));
    }
    let application_type = req.application_type.unwrap_or_else(|| "web".into());
    if application_type != "web" && application_type != "native" {
        return Err(bad("application_type is web or native".into()));
    }
    let method = req
        .token_endpoint_auth_method
        .unwrap_or_else(|| "client_secret_basic".into());
    if !matches!(
        method.as_str(),
        "client_secret_basic" | "client_secret_post" | "none"
    ) {
        return Err(bad(format!(
            "token_endpoint_auth_method {method} is not supported"
        )));
    }
    let grant_types = req
        .grant_types
        .unwrap_or_else(|| vec!["authorization_code".into(), "refresh_token".into()]);
    for g in &grant_types {
        if !matches!(
            g.as_str(),
            "authorization_code" | "refresh_token" | "client_credentials"
        ) {
            return Err(bad(format!(
                "grant type {} is not supported",
                g.chars().take(64).collect::<String>()
            )));
        }
    }
    if grant_types.is_empty() {
        return Err(bad("grant_types is empty".into()));
    }
    let user_flow = grant_types.iter().any(|g| g == "authorization_code");
    if grant_types.iter().any(|g| g == "refresh_token") && !user_flow {
        return Err(bad("refresh_token goes with authorization_code".into()));
    }
    if grant_types.iter().any(|g| g == "client_credentials") && method == "none" {
        return Err(bad("client_credentials needs a confidential client (a token_endpoint_auth_method other than none)".into()));
    }
    let default_response = if user_flow {
        vec!["code".to_string()]
    } else {
        vec![]
    };
    let response_types = req.response_types.unwrap_or(default_response);
    if response_types.iter().any(|r| r != "code") {
        return Err(bad("only the code response type is supported".into()));
    }
    if grant_types.iter().any(|g| g == "authorization_code")
        != response_types.iter().any(|r| r == "code")
    {
        return Err(bad(
            "the authorization_code grant goes with the code response type".into(),
        ));
    }
    let has_redirects = !req.redirect_uris.is_empty() || !req.post_logout_redirect_uris.is_empty();
    if !user_flow && has_redirects {
        return Err((
            "invalid_redirect_uri",
            "a client without the authorization_code grant has no redirect URIs".into(),
        ));
    }
    if req.redirect_uris.is_empty() && response_types.iter().any(|r| r == "code") {
        return Err((
            "invalid_redirect_uri",
            "at least one redirect URI is required".into(),
        ));
    }
    if req.redirect_uris.len() > 32 || req.post_logout_redirect_uris.len() > 32 {
        return Err(bad("at most 32 redirect URIs".into()));
    }
    for uri in req
        .redirect_uris
        .iter()
        .chain(req.post_logout_redirect_uris.iter())
    {
        crate::oidc::redirect_uri::check(uri, &application_type, rules.dev_loopback)
            .map_err(|d| ("invalid_redirect_uri", d))?;
    }
    // An update that omits the scope keeps the client's scope: it never
    // silently widens to the defaults.
    let scope = match (req.scope, rules.current) {
        (Some(s), _) => s,
        (None, Some(current)) => current.scope.clone(),
        (None, None) => "openid profile email offline_access".into(),
    };
    if scope.len() > 1000
        || scope.split(' ').any(|s| {
            s.is_empty()
                || !s
                    .chars()
                    .all(|c| c.is_ascii_graphic() && c != '"' && c != '\\')
        })
    {
        return Err(bad("scope is a space-separated list of scope tokens".into()));
    }
    if !admin {
        // A client registering or changing itself holds only the OpenID
        // Connect scopes, those an administrator marked registrable, and those
        // it already held.
        let held: Vec<&str> = rules
            .current
            .map(|c| c.scope.split(' ').collect())
            .unwrap_or_default();
        let wanted: Vec<&str> = scope.split(' ').collect();
        crate::oidc::scopes::check_self_registered(&wanted, &held, rules.servers)
            .map_err(|e| ("invalid_client_metadata", e))?;
    }
    let alg = req
        .id_token_signed_response_alg
        .unwrap_or_else(|| "RS256".into());
    if !matches!(alg.as_str(), "RS256" | "ES256" | "EdDSA") {
        return Err(bad(format!(
            "id_token_signed_response_alg {alg} is not supported"
        )));
    }
    if !admin
        && scope.split(' ').any(|s| s == INTROSPECTION_SCOPE)
        && !rules
            .current
            .is_some_and(|c| c.scope.split(' ').any(|s| s == INTROSPECTION_SCOPE))
    {
        return Err(bad(format!(
            "the {INTROSPECTION_SCOPE} scope is granted by an administrator only"
        )));
    }
    if req.skip_consent.is_some() && !admin {
        return Err(bad(
            "skip_consent can only be set by an administrator".into()
        ));
    }
    Ok(ClientMetadata {
        client_name: name,
        redirect_uris: req.redirect_uris,
        post_logout_redirect_uris: req.post_logout_redirect_uris,
        grant_types,
        response_types,
        token_endpoint_auth_method: method,
        scope,
        application_type,
        id_token_signed_response_alg: alg,
        skip_consent: req.skip_consent.unwrap_or(false),
    })
}

/// A registered client's one-time secrets.
pub struct Registered {
    pub client_id: String,
    pub client_secret: Option<String>,
    pub registration_access_token: Option<String>,
}

/// Registers a client (`client.registered`, claimed with no stream). Secrets are
/// generated here, 256 bits, and kept only as SHA-256 hashes in the sealed sidecar.
pub async fn register_client(
    state: &State,
    actor: Actor,
    metadata: ClientMetadata,
    via: ClientRegisteredVia,
) -> Result<Registered, ApiError> {
    if metadata.id_token_signed_response_alg != state.config.keys.algorithm {
        service::ensure_signing_key(state, &metadata.id_token_signed_response_alg).await?;
    }
    let client_id = service::new_id();
    let confidential = metadata.token_endpoint_auth_method != "none";
    let client_secret = if confidential {
        Some(service::random_client_secret()?)
    } else {
        None
    };
    let registration_access_token = if via.is_dynamic() {
        Some(service::random_client_secret()?)
    } else {
        None
    };
    let sealed = if client_secret.is_some() || registration_access_token.is_some() {
        Some(
            serde_json::to_vec(&ClientSecret {
                secret_sha256: client_secret.as_deref().map(hex_sha256).unwrap_or_default(),
                registration_sha256: registration_access_token.as_deref().map(hex_sha256),
                previous_sha256: None,
            })
            .map_err(|e| ApiError::Internal(e.to_string()))?,
        )
    } else {
        None
    };
    let stream = format!("client-{client_id}");
    let d = data::ClientRegistered {
        client_id: client_id.clone(),
        metadata,
        registered_via: via,
        client_secret_expires_at: confidential.then_some(0),
    };
    let env = service::draft(&stream, actor, &d, None)?.client(client_id.clone());
    match service::commit(
        state,
        &stream,
        Expected::NoStream,
        vec![Draft {
            envelope: env,
            secret: sealed,
        }],
    )
    .await
    {
        Ok(_) => Ok(Registered {
            client_id,
            client_secret,
            registration_access_token,
        }),
        Err(StoreError::Conflict { .. }) => Err(ApiError::Internal("client id collision".into())),
        Err(e) => Err(ApiError::from(e)),
    }
}

async fn create_client(
    state: State,
    token: String,
    body: ClientRequest,
) -> Result<Response, warp::Rejection> {
    let validated = {
        let views = state.views.read().await;
        validate_client(body, ClientRules::new(&state, true, &views, None))
    };
    let metadata = match validated {
        Ok(m) => m,
        Err((code, d)) => return Ok(metadata_error(code, &d)),
    };
    let reg = register_client(&state, admin(token), metadata, ClientRegisteredVia::Admin).await?;
    let views = state.views.read().await;
    let c = views.clients.get(&reg.client_id).ok_or(ApiError::Internal(
        "the new client is not in the views".into(),
    ))?;
    let mut out = client_json(c);
    if let (Some(s), Some(o)) = (reg.client_secret, out.as_object_mut()) {
        // Shown once; only its SHA-256 is kept, sealed.
        o.insert("client_secret".into(), s.into());
    }
    Ok(json_status(out, StatusCode::CREATED))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Page {
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
}

/// `GET /admin/clients?after=ID&limit=N`: clients in id order, a page at a time;
/// `next` is the cursor for the following page (stable while clients are added).
async fn list_clients(state: State, page: Page) -> Result<Response, warp::Rejection> {
    let limit = page.limit.unwrap_or(50).clamp(1, 200);
    let views = state.views.read().await;
    let mut items: Vec<serde_json::Value> = Vec::new();
    let mut next = None;
    for c in views.clients.iter().filter(|c| {
        page.after
            .as_ref()
            .is_none_or(|a| c.client_id.as_str() > a.as_str())
    }) {
        if items.len() == limit {
            next = items
                .last()
                .and_then(|v| v["client_id"].as_str().map(str::to_string));
            break;
        }
        items.push(client_json(c));
    }
    Ok(json_status(
        json!({"clients": items, "next": next}),
        StatusCode::OK,
    ))
}

/// What an update did.
pub enum Updated {
    /// The metadata was refused: the RFC 7591 error response.
    Invalid(Response),
    /// `client.updated` was appended; a client that became confidential got
    /// a secret, shown this once.
    Done { client_secret: Option<String> },
}

/// `PUT /admin/clients/{id}` and RFC 7592: replaces the metadata
/// (`client.updated`). Omitted fields are defaults, but an omitted scope keeps
/// the client's. A client that becomes confidential gets a secret in the same
/// append (`client.secret_rotated`). `skip_consent` is the administrator's:
/// a client's own change keeps it only if the redirect URIs and scopes stay
/// within what the administrator saw.
pub async fn update_client(
    state: &State,
    actor: Actor,
    id: &str,
    body: ClientRequest,
    admin_call: bool,
) -> Result<Updated, ApiError> {
    let skip_given = body.skip_consent.is_some();
    let current = service::view_lookup(state, |v| v.clients.get(id).cloned())
        .await
        .ok_or(ApiError::NotFound)?;
    let validated = {
        let views = state.views.read().await;
        validate_client(
            body,
            ClientRules::new(state, admin_call, &views, Some(&current.metadata)),
        )
    };
    let metadata = match validated {
        Ok(m) => m,
        Err((code, d)) => return Ok(Updated::Invalid(metadata_error(code, &d))),
    };
    if metadata.id_token_signed_response_alg != state.config.keys.algorithm {
        service::ensure_signing_key(state, &metadata.id_token_signed_response_alg).await?;
    }
    let stream = format!("client-{id}");
    let new_secret = service::random_client_secret()?;
    let mut issued = None;
    service::change_client(state, id, |c| {
        let mut m = metadata.clone();
        if !admin_call || !skip_given {
            let widened = m
                .scope
                .split(' ')
                .any(|s| !c.metadata.scope.split(' ').any(|x| x == s));
            m.skip_consent = c.metadata.skip_consent
                && (admin_call || (m.redirect_uris == c.metadata.redirect_uris && !widened));
        }
        let d = data::ClientUpdated {
            client_id: c.client_id.clone(),
            metadata: m.clone(),
        };
        let mut drafts = vec![Draft {
            envelope: service::draft(&stream, actor.clone(), &d, None)?.client(c.client_id.clone()),
            secret: None,
        }];
        issued = None;
        if c.metadata.token_endpoint_auth_method == "none" && m.token_endpoint_auth_method != "none"
        {
            let old = service::client_secrets(state, c);
            let sealed = ClientSecret {
                secret_sha256: hex_sha256(&new_secret),
                registration_sha256: old.and_then(|o| o.registration_sha256),
                previous_sha256: None,
            };
            let rotated = data::ClientSecretRotated {
                client_id: c.client_id.clone(),
                previous_valid_until: None,
                client_secret_expires_at: 0,
            };
            drafts.push(Draft {
                envelope: service::draft(&stream, actor.clone(), &rotated, None)?
                    .client(c.client_id.clone()),
                secret: Some(
                    serde_json::to_vec(&sealed).map_err(|e| ApiError::Internal(e.to_string()))?,
                ),
            });
            issued = Some(new_secret.clone());
        }
        Ok(drafts)
    })
    .await?;
    Ok(Updated::Done {
        client_secret: issued,
    })
}

/// `DELETE /admin/clients/{id}`: `client.deleted`; its tokens stop working at once.
pub async fn delete_client(state: &State, actor: Actor, id: &str) -> Result<(), ApiError> {
    let stream = format!("client-{id}");
    service::change_client(state, id, |c| {
        let d = data::ClientDeleted {
            client_id: c.client_id.clone(),
        };
        Ok(vec![Draft {
            envelope: service::draft(&stream, actor.clone(), &d, None)?.client(c.client_id.clone()),
            secret: None,
        }])
    })
    .await
}

/// `POST /admin/clients/{id}/approve`: an administrator vouches for a client
/// that registered itself without an initial access token (`client.approved`):
/// its authorization errors may now redirect to its redirect URIs.
async fn approve_client(
    state: State,
    token: String,
    id: String,
) -> Result<Response, warp::Rejection> {
    let stream = format!("client-{id}");
    let actor = admin(token);
    service::change_client(&state, &id, |c| {
        if c.approved {
            return Ok(vec![]);
        }
        let d = data::ClientApproved {
            client_id: c.client_id.clone(),
        };
        Ok(vec![Draft {
            envelope: service::draft(&stream, actor.clone(), &d, None)?.client(c.client_id.clone()),
            secret: None,
        }])
    })
    .await?;
    let c = service::view_lookup(&state, |v| v.clients.get(&id).cloned())
        .await
        .ok_or(ApiError::NotFound)?;
    Ok(json_status(client_json(&c), StatusCode::OK))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RotateSecret {
    /// Seconds the old secret keeps working; absent or 0: it stops at once.
    #[serde(default)]
    grace_seconds: Option<i64>,
}

/// `POST /admin/clients/{id}/secret`: a new secret, shown once.
async fn rotate_secret(
    state: State,
    token: String,
    id: String,
    body: bytes::Bytes,
) -> Result<Response, warp::Rejection> {
    let req: RotateSecret = if body.is_empty() {
        RotateSecret::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::InvalidRequest(format!("body: {e}")))?
    };
    let grace = req.grace_seconds.unwrap_or(0);
    if !(0..=30 * 86_400).contains(&grace) {
        return Err(ApiError::InvalidRequest("grace_seconds is 0 to 2592000".into()).into());
    }
    let secret = service::random_client_secret()?;
    let stream = format!("client-{id}");
    let actor = admin(token);
    service::change_client(&state, &id, |c| {
        if c.metadata.token_endpoint_auth_method == "none" {
            return Err(ApiError::InvalidRequest(
                "a public client has no secret".into(),
            ));
        }
        let old = service::client_secrets(&state, c);
        let sealed = ClientSecret {
            secret_sha256: hex_sha256(&secret),
            registration_sha256: old.as_ref().and_then(|o| o.registration_sha256.clone()),
            previous_sha256: (grace > 0)
                .then(|| old.as_ref().map(|o| o.secret_sha256.clone()))
                .flatten(),
        };
        let d = data::ClientSecretRotated {
            client_id: c.client_id.clone(),
            previous_valid_until: (grace > 0).then(|| service::now().plus_seconds(grace)),
            client_secret_expires_at: 0,
        };
        Ok(vec![Draft {
            envelope: service::draft(&stream, actor.clone(), &d, None)?.client(c.client_id.clone()),
            secret: Some(
                serde_json::to_vec(&sealed).map_err(|e| ApiError::Internal(e.to_string()))?,
            ),
        }])
    })
    .await?;
    Ok(json_status(
        json!({"client_id": id, "client_secret": secret, "client_secret_expires_at": 0}),
        StatusCode::OK,
    ))
}

async fn get_client(id: String, state: State) -> Result<Response, warp::Rejection> {
    let c = service::view_lookup(&state, |v| v.clients.get(&id).cloned())
        .await
        .ok_or(ApiError::NotFound)?;
    Ok(json_status(client_json(&c), StatusCode::OK))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Rotate {
    #[serde(default)]
    alg: Option<String>,
}

async fn rotate(
    state: State,
    token: String,
    body: bytes::Bytes,
) -> Result<Response, warp::Rejection> {
    let req: Rotate = if body.is_empty() {
        Rotate::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::InvalidRequest(format!("body: {e}")))?
    };
    let alg = req
        .alg
        .unwrap_or_else(|| state.config.keys.algorithm.clone());
    let kid = service::rotate_key(&state, &alg, admin(token)).await?;
    Ok(json_status(
        json!({"kid": kid, "alg": alg, "status": "published", "signs_after_s": state.config.keys.jwks_cache_s}),
        StatusCode::ACCEPTED,
    ))
}

async fn list_keys(state: State) -> Result<Response, warp::Rejection> {
    let views = state.views.read().await;
    let keys: Vec<serde_json::Value> = views
        .keys
        .published()
        .map(|k| json!({"kid": k.kid, "alg": k.alg, "status": k.status, "generated_at": k.generated_at}))
        .collect();
    Ok(json_status(json!({"keys": keys}), StatusCode::OK))
}

pub fn routes(state: State) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    let rotate = warp::path!("admin" / "keys" / "rotate")
        .and(warp::post())
        .and(with_state(state.clone()))
        .and(admin_auth(state.clone()))
        .and(super::bounded_body(state.config.limits.body_bytes))
        .and_then(rotate);
    let list_keys = warp::path!("admin" / "keys")
        .and(warp::get())
        .and(with_state(state.clone()))
        .and(admin_auth(state.clone()))
        .and_then(|state, _token: String| list_keys(state));
    let limit = state.config.limits.body_bytes.min(super::oidc::FORM_LIMIT);
    let create_user = warp::path!("admin" / "users")
        .and(warp::post())
        .and(with_state(state.clone()))
        .and(admin_auth(state.clone()))
        .and(json_body::<NewUser>(limit))
        .and_then(create_user);
    let get_user = warp::path!("admin" / "users" / String)
        .and(warp::get())
        .and(with_state(state.clone()))
        .and(admin_auth(state.clone()))
        .and_then(|id, state, _token: String| get_user(id, state));
    let action_plain = warp::path!("admin" / "users" / String / String)
        .and(warp::post())
        .and(with_state(state.clone()))
        .and(admin_auth(state.clone()))
        .and(super::header_lossy("content-type"))
        .and(super::bounded_body(limit))
        .and_then(
            |id: String,
             action: String,
             state: State,
             token: String,
             _ct: Option<String>,
             body: bytes::Bytes| async move {
                let parsed = if body.is_empty() {
                    None
                } else {
                    Some(
                        serde_json::from_slice::<NewPassword>(&body)
                            .map_err(|e| ApiError::InvalidRequest(format!("body: {e}")))?,
                    )
                };
                user_action(id, action, state, token, parsed).await
            },
        );
    let create_client = warp::path!("admin" / "clients")
        .and(warp::post())
        .and(with_state(state.clone()))
        .and(admin_auth(state.clone()))
        .and(json_body::<ClientRequest>(limit))
        .and_then(create_client);
    let get_client = warp::path!("admin" / "clients" / String)
        .and(warp::get())
        .and(with_state(state.clone()))
        .and(admin_auth(state.clone()))
        .and_then(|id, state, _token: String| get_client(id, state));
    let list_clients = warp::path!("admin" / "clients")
        .and(warp::get())
        .and(with_state(state.clone()))
        .and(admin_auth(state.clone()))
        .and(warp::query::<Page>())
        .and_then(|state, _token: String, page| list_clients(state, page));
    let put_client = warp::path!("admin" / "clients" / String)
        .and(warp::put())
        .and(with_state(state.clone()))
        .and(admin_auth(state.clone()))
        .and(json_body::<ClientRequest>(limit))
        .and_then(|id: String, state: State, token: String, body| async move {
            match update_client(&state, admin(token), &id, body, true).await {
                Ok(Updated::Invalid(res)) => Ok::<_, warp::Rejection>(res),
                Ok(Updated::Done { client_secret }) => {
                    let views = state.views.read().await;
                    let c = views.clients.get(&id).ok_or(ApiError::NotFound)?;
                    let mut out = client_json(c);
                    if let Some(s) = client_secret {
                        out["client_secret"] = s.into();
                    }
                    Ok(json_status(out, StatusCode::OK))
                }
                Err(e) => Err(warp::reject::custom(e)),
            }
        });
    let delete = warp::path!("admin" / "clients" / String)
        .and(warp::delete())
        .and(with_state(state.clone()))
        .and(admin_auth(state.clone()))
        .and_then(|id: String, state: State, token: String| async move {
            delete_client(&state, admin(token), &id)
                .await
                .map_err(warp::reject::custom)?;
            let mut res = Response::new(Default::default());
            *res.status_mut() = StatusCode::NO_CONTENT;
            Ok::<_, warp::Rejection>(res)
        });
    let rotate_secret = warp::path!("admin" / "clients" / String / "secret")
        .and(warp::post())
        .and(with_state(state.clone()))
        .and(admin_auth(state.clone()))
        .and(super::bounded_body(limit))
        .and_then(|id, state, token, body| rotate_secret(state, token, id, body));
    let approve = warp::path!("admin" / "clients" / String / "approve")
        .and(warp::post())
        .and(with_state(state.clone()))
        .and(admin_auth(state.clone()))
        .and_then(|id, state, token| approve_client(state, token, id));
    rotate
        .or(list_keys)
        .unify()
        .or(approve)
        .unify()
        .or(create_user)
        .unify()
        .or(get_user)
        .unify()
        .or(action_plain)
        .unify()
        .or(create_client)
        .unify()
        .or(get_client)
        .unify()
        .or(list_clients)
        .unify()
        .or(put_client)
        .unify()
        .or(delete)
        .unify()
        .or(rotate_secret)
        .unify()
}
