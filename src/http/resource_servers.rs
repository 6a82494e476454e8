//! The resource-server registry: APIs access tokens are for, their scopes and
//! who may have each (admin token). `/admin/resource-servers`.

use authlog_projections::ResourceServer;
use authlog_schemas::data;
use authlog_schemas::{Actor, ActorKind};
use serde_json::json;
use warp::Filter;
use warp::http::StatusCode;
use warp::reply::{Reply, Response};

use super::{ApiError, State, admin_auth, with_state};
use crate::oidc::scopes::{self, ResourceServerRequest};
use crate::oidc::service::{self, Draft};
use crate::store::{Expected, StoreError};

fn json_status(value: serde_json::Value, status: StatusCode) -> Response {
    let mut res = warp::reply::json(&value).into_response();
    *res.status_mut() = status;
    res.headers_mut().insert(
        "cache-control",
        warp::http::HeaderValue::from_static("no-store"),
    );
    res
}

fn invalid(d: String) -> ApiError {
    ApiError::InvalidRequest(d)
}

pub fn resource_server_json(rs: &ResourceServer) -> serde_json::Value {
    json!({
        "identifier": rs.identifier,
        "name": rs.name,
        "scopes": rs.scopes,
        "created_at": rs.created_at,
    })
}

/// A path segment, percent-decoded (identifiers are URIs:
/// `/admin/resource-servers/https%3A%2F%2Fapi.example`).
fn decode_segment(segment: &str) -> Result<String, ApiError> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => return Err(invalid("bad percent-encoding in the path".into())),
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).map_err(|_| invalid("the path is not UTF-8".into()))
}

fn admin(name: String) -> Actor {
    Actor {
        kind: ActorKind::Admin,
        id: name,
    }
}

/// Clients (up to five) holding one of `removed`: a scope that leaves the
/// registry would otherwise fall back to being an undeclared administrator's
/// scope of the default resource server.
fn holders(views: &authlog_projections::Views, removed: &[String]) -> Vec<String> {
    views
        .clients
        .iter()
        .filter(|c| {
            c.metadata
                .scope
                .split(' ')
                .any(|s| removed.iter().any(|r| r == s))
        })
        .map(|c| c.client_id.clone())
        .take(5)
        .collect()
}

async fn create(
    state: State,
    token: String,
    body: ResourceServerRequest,
) -> Result<Response, warp::Rejection> {
    service::catch_up_views(&state).await;
    let (identifier, name, scopes) = {
        let views = state.views.read().await;
        scopes::validate_resource_server(
            body,
            None,
            &views.resource_servers,
            &state.config.tokens.audience,
        )
        .map_err(invalid)?
    };
    let stream = format!("resource-server-{identifier}");
    let d = data::ResourceServerRegistered {
        identifier: identifier.clone(),
        name,
        scopes,
    };
    let env = service::draft(&stream, admin(token), &d, None)?;
    match service::commit(
        &state,
        &stream,
        Expected::NoStream,
        vec![Draft {
            envelope: env,
            secret: None,
        }],
    )
    .await
    {
        Ok(_) => {}
        Err(StoreError::Conflict { .. }) => {
            return Ok(json_status(
                json!({"error": "already_exists", "error_description": format!("a resource server {identifier} exists already (or existed: identifiers are not reused)")}),
                StatusCode::CONFLICT,
            ));
        }
        Err(e) => return Err(ApiError::from(e).into()),
    }
    let views = state.views.read().await;
    let rs = views
        .resource_servers
        .get(&identifier)
        .ok_or_else(|| ApiError::Internal("the new resource server is not in the views".into()))?;
    Ok(json_status(resource_server_json(rs), StatusCode::CREATED))
}

async fn list(state: State) -> Result<Response, warp::Rejection> {
    let views = state.views.read().await;
    let all: Vec<serde_json::Value> = views
        .resource_servers
        .iter()
        .map(resource_server_json)
        .collect();
    Ok(json_status(
        json!({"default_audience": state.config.tokens.audience, "resource_servers": all}),
        StatusCode::OK,
    ))
}

async fn get(id: String, state: State) -> Result<Response, warp::Rejection> {
    let id = decode_segment(&id)?;
    let rs = service::view_lookup(&state, |v| v.resource_servers.get(&id).cloned())
        .await
        .ok_or_else(|| ApiError::Missing(format!("no resource server {id}")))?;
    Ok(json_status(resource_server_json(&rs), StatusCode::OK))
}

async fn update(
    id: String,
    state: State,
    token: String,
    body: ResourceServerRequest,
) -> Result<Response, warp::Rejection> {
    let id = decode_segment(&id)?;
    let stream = format!("resource-server-{id}");
    for _ in 0..4 {
        service::catch_up_views(&state).await;
        let (revision, d) = {
            let views = state.views.read().await;
            let current = views
                .resource_servers
                .get(&id)
                .ok_or_else(|| ApiError::Missing(format!("no resource server {id}")))?;
            let (identifier, name, scopes) = scopes::validate_resource_server(
                body.clone(),
                Some(&id),
                &views.resource_servers,
                &state.config.tokens.audience,
            )
            .map_err(invalid)?;
            let removed: Vec<String> = current
                .scopes
                .iter()
                .filter(|s| !scopes.iter().any(|n| n.name == s.name))
                .map(|s| s.name.clone())
                .collect();
            let held = holders(&views, &removed);
            if !held.is_empty() {
                return Err(ApiError::InvalidRequest(format!(
                    "clients still hold a scope this change removes ({}): take it off them first",
                    held.join(", ")
                ))
                .into());
            }
            (
                current.revision,
                data::ResourceServerUpdated {
                    identifier,
                    name,
                    scopes,
                },
            )
        };
        let env = service::draft(&stream, admin(token.clone()), &d, None)?;
        match service::commit(
            &state,
            &stream,
            Expected::Revision(revision),
            vec![Draft {
                envelope: env,
                secret: None,
            }],
        )
        .await
        {
            Ok(_) => {
                let views = state.views.read().await;
                let rs = views.resource_servers.get(&id).ok_or(ApiError::NotFound)?;
                return Ok(json_status(resource_server_json(rs), StatusCode::OK));
            }
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(ApiError::from(e).into()),
        }
    }
    Err(ApiError::Unavailable("the resource server is changing too fast; try again".into()).into())
}

async fn delete(id: String, state: State, token: String) -> Result<Response, warp::Rejection> {
    let id = decode_segment(&id)?;
    let stream = format!("resource-server-{id}");
    service::catch_up_views(&state).await;
    let revision = {
        let views = state.views.read().await;
        let current = views
            .resource_servers
            .get(&id)
            .ok_or_else(|| ApiError::Missing(format!("no resource server {id}")))?;
        let all: Vec<String> = current.scopes.iter().map(|s| s.name.clone()).collect();
        let held = holders(&views, &all);
        if !held.is_empty() {
            return Err(ApiError::InvalidRequest(format!(
                "clients still hold scopes of this resource server ({}): take them off first",
                held.join(", ")
            ))
            .into());
        }
        current.revision
    };
    let d = data::ResourceServerDeleted { identifier: id };
    let env = service::draft(&stream, admin(token), &d, None)?;
    service::commit(
        &state,
        &stream,
        Expected::Revision(revision),
        vec![Draft {
            envelope: env,
            secret: None,
        }],
    )
    .await
    .map_err(|e| match e {
        StoreError::Conflict { .. } => {
            ApiError::Unavailable("the resource server changed meanwhile; try again".into())
        }
        e => ApiError::from(e),
    })?;
    let mut res = Response::new(Default::default());
    *res.status_mut() = StatusCode::NO_CONTENT;
    Ok(res)
}

pub fn routes(state: State) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    let limit = state.config.limits.body_bytes.min(super::oidc::FORM_LIMIT);
    let body = move || {
        warp::body::content_length_limit(limit).and(warp::body::json::<ResourceServerRequest>())
    };
    let create = warp::path!("admin" / "resource-servers")
        .and(warp::post())
        .and(with_state(state.clone()))
        .and(admin_auth(state.clone()))
        .and(body())
        .and_then(create);
    let list = warp::path!("admin" / "resource-servers")
        .and(warp::get())
        .and(with_state(state.clone()))
        .and(admin_auth(state.clone()))
        .and_then(|state, _token: String| list(state));
    let get = warp::path!("admin" / "resource-servers" / String)
        .and(warp::get())
        .and(with_state(state.clone()))
        .and(admin_auth(state.clone()))
        .and_then(|id, state, _token: String| get(id, state));
    let update = warp::path!("admin" / "resource-servers" / String)
        .and(warp::put())
        .and(with_state(state.clone()))
        .and(admin_auth(state.clone()))
        .and(body())
        .and_then(update);
    let delete = warp::path!("admin" / "resource-servers" / String)
        .and(warp::delete())
        .and(with_state(state.clone()))
        .and(admin_auth(state))
        .and_then(delete);
    create
        .or(list)
        .unify()
        .or(get)
        .unify()
        .or(update)
        .unify()
        .or(delete)
        .unify()
}
