//! The OpenID Connect endpoints under `/oidc`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use authlog_projections::{Client, Session};
use authlog_schemas::data::{self, RegisteredVia};
use authlog_schemas::{Actor, ActorKind};
use bytes::Bytes;
use serde_json::json;
use warp::Filter;
use warp::http::{HeaderValue, StatusCode};
use warp::reply::{Reply, Response};

use super::{State, header_lossy, with_state};
use crate::oidc::html;
use crate::oidc::request::{self, AuthError, AuthRequest, ResponseMode};
use crate::oidc::runtime::LogoutTx;
use crate::oidc::service::{self, Ctx, LoginOutcome, RegisterError, TokenError};
use crate::oidc::tokens::IdClaims;

/// Every POST body under /oidc is at most this large.
pub const FORM_LIMIT: u64 = 16 * 1024;

// ---- request context -------------------------------------------------------------------

fn forwarded_for(element: &str) -> Option<IpAddr> {
    element.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        if !k.eq_ignore_ascii_case("for") {
            return None;
        }
        let v = v.trim_matches('"');
        let v = v
            .strip_prefix('[')
            .map_or(v, |x| x.split(']').next().unwrap_or(x));
        v.parse::<IpAddr>()
            .ok()
            .or_else(|| v.rsplit_once(':').and_then(|(h, _)| h.parse().ok()))
    })
}

/// The client's address. Proxy headers count only when the peer is a trusted
/// proxy, and only the header the proxies set (`login.proxy_header`); its hops
/// are walked from the right, skipping trusted proxies, so a client cannot
/// choose its address by sending the header itself.
fn client_ip_of(
    remote: Option<SocketAddr>,
    forwarded: Option<String>,
    xff: Option<String>,
    trusted: &[crate::config::Cidr],
    header: &str,
) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|c| c.contains(*ip));
    let peer = remote.map_or(IpAddr::from([0, 0, 0, 0]), |a| a.ip());
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<IpAddr> = match header {
        "forwarded" => forwarded
            .map(|f| f.split(',').filter_map(forwarded_for).collect())
            .unwrap_or_default(),
        _ => xff
            .map(|x| x.split(',').filter_map(|h| h.trim().parse().ok()).collect())
            .unwrap_or_default(),
    };
    hops.into_iter()
        .rev()
        .find(|ip| !is_trusted(ip))
        .unwrap_or(peer)
}

/// The client's address (proxy headers believed only from trusted proxies).
pub fn client_ip(
    state: State,
) -> impl Filter<Extract = (IpAddr,), Error = std::convert::Infallible> + Clone {
    super::server::peer_addr()
        .and(header_lossy("forwarded"))
        .and(header_lossy("x-forwarded-for"))
        .map(move |remote, forwarded, xff| {
            client_ip_of(
                remote,
                forwarded,
                xff,
                &state.config.login.trusted_proxies,
                &state.config.login.proxy_header,
            )
        })
}

pub fn ctx(state: State) -> impl Filter<Extract = (Ctx,), Error = warp::Rejection> + Clone {
    let binding_name = browser_cookie_name(&state);
    client_ip(state)
        .and(header_lossy("user-agent"))
        .and(header_lossy("cookie"))
        .and_then(
            move |ip: IpAddr, ua: Option<String>, cookies: Option<String>| {
                let existing = cookies.and_then(|h| {
                    h.split(';').find_map(|c| {
                        let (k, v) = c.trim().split_once('=')?;
                        (k == binding_name && v.len() >= 32 && v.is_ascii()).then(|| v.to_string())
                    })
                });
                // A browser without a binding gets a fresh one; without
                // randomness the request fails rather than share a guessable one.
                let browser = match existing {
                    Some(v) => Ok((v, false)),
                    None => crate::crypto::secret_token().map(|t| (t, true)),
                };
                async move {
                    let (browser, browser_fresh) = browser.map_err(|e| {
                        warp::reject::custom(super::ApiError::Internal(e.to_string()))
                    })?;
                    Ok::<_, warp::Rejection>(Ctx {
                        request_id: service::new_id(),
                        ip,
                        user_agent: ua,
                        browser,
                        browser_fresh,
                    })
                }
            },
        )
}

/// The cookie binding a browser's sign-in forms to it (login-CSRF defence).
fn browser_cookie_name(state: &State) -> String {
    if state.config.issuer.starts_with("https://") {
        "__Host-authlog_browser".into()
    } else {
        "authlog_browser".into()
    }
}

/// Sets the browser binding cookie if this request minted it.
///
/// `SameSite=Lax`, not `Strict`: a sign-in starts with a cross-site
/// navigation (the user clicks "Sign in" on the client's page), and browsers
/// withhold Strict cookies for that whole redirect chain, so the form would be
/// bound to a value its own POST never carries. Lax cookies travel on
/// top-level GET navigations and on authlog's own form posts, and are
/// withheld from cross-site POSTs, which is all login-CSRF defence needs: a
/// forged cross-site form post arrives without the binding.
fn bind(state: &State, ctx: &Ctx, res: Response) -> Response {
    if !ctx.browser_fresh {
        return res;
    }
    let secure = if state.config.issuer.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    with_cookie(
        res,
        &format!(
            "{}={}; Path=/; HttpOnly; SameSite=Lax{secure}",
            browser_cookie_name(state),
            ctx.browser
        ),
    )
}

fn cookie(
    state: &State,
) -> impl Filter<Extract = (Option<String>,), Error = std::convert::Infallible> + Clone + use<> {
    let name = service::cookie_name(state);
    header_lossy("cookie").map(move |header: Option<String>| {
        header.and_then(|h| {
            h.split(';').find_map(|c| {
                let (k, v) = c.trim().split_once('=')?;
                (k == name).then(|| v.to_string())
            })
        })
    })
}

/// A form body (`application/x-www-form-urlencoded`, at most 16 KiB) as sent,
/// repeated names included.
fn form() -> impl Filter<Extract = (Vec<(String, String)>,), Error = warp::Rejection> + Clone {
    header_lossy("content-type")
        .and(super::bounded_body(FORM_LIMIT))
        .and_then(|ct: Option<String>, body: Bytes| async move {
            let ok = ct.as_deref().is_some_and(|c| {
                c.to_ascii_lowercase()
                    .starts_with("application/x-www-form-urlencoded")
            });
            // An empty body is an empty form (a userinfo POST with the token in
            // the header has none).
            if !ok && !body.is_empty() {
                return Err(warp::reject::custom(super::ApiError::InvalidRequest(
                    "the body must be application/x-www-form-urlencoded".into(),
                )));
            }
            parse_pairs(&body).map_err(|e| warp::reject::custom(super::ApiError::InvalidRequest(e)))
        })
}

/// The query string's pairs, as sent.
fn query_pairs() -> impl Filter<Extract = (Vec<(String, String)>,), Error = warp::Rejection> + Clone
{
    warp::query::raw()
        .or(warp::any().map(String::new))
        .unify()
        .and_then(|q: String| async move {
            parse_pairs(q.as_bytes())
                .map_err(|e| warp::reject::custom(super::ApiError::InvalidRequest(e)))
        })
}

/// `application/x-www-form-urlencoded` pairs, refusing bytes that are not
/// UTF-8 once percent-decoded: replacing them with U+FFFD would make
/// different passwords (or codes, or states) one and the same.
pub fn parse_pairs(input: &[u8]) -> Result<Vec<(String, String)>, String> {
    fn decode(part: &[u8]) -> Result<String, String> {
        let mut out = Vec::with_capacity(part.len());
        let mut i = 0;
        while i < part.len() {
            match part[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < part.len() => {
                    let hex = |b: u8| (b as char).to_digit(16);
                    match (hex(part[i + 1]), hex(part[i + 2])) {
                        (Some(h), Some(l)) => {
                            out.push((h * 16 + l) as u8);
                            i += 2;
                        }
                        _ => out.push(b'%'),
                    }
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8(out)
            .map_err(|_| "a parameter is not valid UTF-8 once percent-decoded".to_string())
    }
    input
        .split(|b| *b == b'&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = match pair.iter().position(|b| *b == b'=') {
                Some(i) => (&pair[..i], &pair[i + 1..]),
                None => (pair, &pair[pair.len()..]),
            };
            Ok((decode(k)?, decode(v)?))
        })
        .collect()
}

fn first(pairs: &[(String, String)], name: &str) -> Option<String> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
}

fn redirect(location: &str) -> Response {
    let mut res = Response::new(Default::default());
    *res.status_mut() = StatusCode::FOUND;
    if let Ok(v) = HeaderValue::from_str(location) {
        res.headers_mut().insert("location", v);
    }
    res.headers_mut()
        .insert("cache-control", HeaderValue::from_static("no-store"));
    res.headers_mut()
        .insert("pragma", HeaderValue::from_static("no-cache"));
    res
}

fn with_cookie(mut res: Response, cookie: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(cookie) {
        res.headers_mut().append("set-cookie", v);
    }
    res
}

fn no_store(mut res: Response) -> Response {
    let h = res.headers_mut();
    h.insert("cache-control", HeaderValue::from_static("no-store"));
    h.insert("pragma", HeaderValue::from_static("no-cache"));
    res
}

fn cors(mut res: Response) -> Response {
    res.headers_mut()
        .insert("access-control-allow-origin", HeaderValue::from_static("*"));
    res
}

fn json_error(status: u16, error: &str, description: &str) -> Response {
    let mut res = warp::reply::json(&json!({"error": error, "error_description": description}))
        .into_response();
    *res.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    no_store(res)
}

fn oidc_path(state: &State, path: &str) -> String {
    // Paths relative to the issuer, so a deployment under a prefix still works.
    let base = state
        .config
        .issuer
        .split_once("://")
        .and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]))
        .unwrap_or("/oidc");
    format!("{}{path}", base.trim_end_matches('/'))
}

// ---- discovery and JWKS --------------------------------------------------------------

fn discovery(state: State) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("oidc" / ".well-known" / "openid-configuration").and(warp::get()).and(with_state(state)).then(|state: State| async move {
        // The OpenID Connect scopes and every scope a resource server declares.
        let mut scopes: Vec<String> = crate::oidc::scopes::OIDC_SCOPES.iter().map(|(s, _)| s.to_string()).collect();
        for rs in state.views.read().await.resource_servers.iter() {
            scopes.extend(rs.scopes.iter().map(|s| s.name.clone()));
        }
        let iss = state.config.issuer.clone();
        let mut algs = vec![state.config.keys.algorithm.clone()];
        for a in ["RS256", "ES256", "EdDSA"] {
            if !algs.iter().any(|x| x == a) {
                algs.push(a.to_string());
            }
        }
        let doc = json!({
            "issuer": iss,
            "authorization_endpoint": format!("{iss}/oauth2/auth"),
            "token_endpoint": format!("{iss}/oauth2/token"),
            "userinfo_endpoint": format!("{iss}/userinfo"),
            "jwks_uri": format!("{iss}/.well-known/jwks.json"),
            "end_session_endpoint": format!("{iss}/oauth2/sessions/logout"),
            "scopes_supported": scopes,
            "response_types_supported": ["code"],
            "response_modes_supported": ["query", "form_post"],
            "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
            "registration_endpoint": format!("{iss}/oauth2/register"),
            "introspection_endpoint": format!("{iss}/oauth2/introspect"),
            "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "revocation_endpoint": format!("{iss}/oauth2/revoke"),
            "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": algs,
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "code_challenge_methods_supported": ["S256"],
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "at_hash", "sid", "amr", "name", "preferred_username", "email", "email_verified"],
            "prompt_values_supported": ["none", "login", "consent", "select_account"],
            "authorization_response_iss_parameter_supported": true,
            "request_parameter_supported": false,
            "request_uri_parameter_supported": false,
            "claims_parameter_supported": false,
            "frontchannel_logout_supported": false,
            "backchannel_logout_supported": false,
        });
        cors(warp::reply::json(&doc).into_response())
    })
}

fn jwks(state: State) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("oidc" / ".well-known" / "jwks.json")
        .and(warp::get())
        .and(with_state(state))
        .then(|state: State| async move {
            let views = state.views.read().await;
            let keys: Vec<_> = views
                .keys
                .published()
                .map(|k| serde_json::Value::Object(k.public_jwk.clone()))
                .collect();
            let mut res = warp::reply::json(&json!({"keys": keys})).into_response();
            if let Ok(v) = HeaderValue::from_str(&format!(
                "public, max-age={}",
                state.config.keys.jwks_cache_s.min(3600)
            )) {
                res.headers_mut().insert("cache-control", v);
            }
            cors(res)
        })
}

/// CORS preflight for the endpoints browsers may call cross-origin; never with
/// credentials.
fn preflight() -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("oidc" / "oauth2" / "token")
        .or(warp::path!("oidc" / "oauth2" / "revoke"))
        .unify()
        .or(warp::path!("oidc" / "userinfo"))
        .unify()
        .or(warp::path!("oidc" / ".well-known" / "jwks.json"))
        .unify()
        .or(warp::path!("oidc" / ".well-known" / "openid-configuration"))
        .unify()
        .and(warp::options())
        .map(|| {
            let mut res = Response::new(Default::default());
            *res.status_mut() = StatusCode::NO_CONTENT;
            let h = res.headers_mut();
            h.insert("access-control-allow-origin", HeaderValue::from_static("*"));
            h.insert(
                "access-control-allow-methods",
                HeaderValue::from_static("GET, POST"),
            );
            h.insert(
                "access-control-allow-headers",
                HeaderValue::from_static("authorization, content-type"),
            );
            h.insert("access-control-max-age", HeaderValue::from_static("600"));
            res
        })
}

// ---- the authorization endpoint --------------------------------------------------------

/// Sends the result of an authorization request to the client, with `iss`.
fn to_client(
    state: &State,
    uri: &str,
    mode: ResponseMode,
    mut params: Vec<(&str, String)>,
) -> Response {
    params.push(("iss", state.config.issuer.clone()));
    let pairs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
    match mode {
        ResponseMode::Query => redirect(&request::with_query(uri, &pairs)),
        ResponseMode::FormPost => html::form_post(uri, &pairs),
    }
}

async fn error_to_client(
    state: &State,
    req: &AuthRequest,
    error: &str,
    description: &str,
) -> Response {
    let mut params = vec![
        ("error", error.to_string()),
        ("error_description", description.to_string()),
    ];
    if let Some(s) = &req.state {
        params.push(("state", s.clone()));
    }
    error_to(
        state,
        &req.client_id,
        &req.redirect_uri,
        req.response_mode,
        params,
    )
    .await
}

/// Sends an authorization error to the client's redirect URI — unless nobody
/// vouches for the client (it registered itself without an initial access
/// token and no administrator approved it): then an error page names the
/// target and the user chooses to go there, so open registration cannot turn
/// authlog into an open redirector (RFC 9700 §4.11.2).
async fn error_to(
    state: &State,
    client_id: &str,
    uri: &str,
    mode: ResponseMode,
    mut params: Vec<(&str, String)>,
) -> Response {
    let client = state.views.read().await.clients.get(client_id).cloned();
    match client {
        Some(c) if c.approved => to_client(state, uri, mode, params),
        other => {
            params.push(("iss", state.config.issuer.clone()));
            let pairs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let name = other.map(|c| c.metadata.client_name).unwrap_or_default();
            html::unvouched_error(&name, uri, mode == ResponseMode::FormPost, &pairs)
        }
    }
}

async fn reject(
    state: &State,
    ctx: &Ctx,
    req: &AuthRequest,
    error: &'static str,
    description: &str,
) -> Response {
    service::reject_authorization(state, ctx, &req.client_id, error, description).await;
    error_to_client(state, req, error, description).await
}

async fn lookup_client(state: &State, client_id: &str) -> Option<Client> {
    service::view_lookup(state, |v| v.clients.get(client_id).cloned()).await
}

async fn authorize(
    state: State,
    ctx: Ctx,
    cookie: Option<String>,
    params: Vec<(String, String)>,
) -> Response {
    // A client registered on another node a moment ago: catch up first.
    if let Some((_, id)) = params.iter().find(|(k, _)| k == "client_id") {
        let _ = lookup_client(&state, id).await;
    }
    let validated = {
        let views = state.views.read().await;
        request::validate(
            &params,
            |id| views.clients.get(id).cloned(),
            request::Registry {
                servers: &views.resource_servers,
                default_audience: &state.config.tokens.audience,
            },
        )
    };
    let req = match validated {
        Ok(r) => r,
        Err(AuthError::Page {
            client_id,
            description,
        }) => {
            if let Some(c) = client_id {
                service::reject_authorization(&state, &ctx, &c, "invalid_request", &description)
                    .await;
            } else {
                state
                    .metrics
                    .http_requests
                    .with_label_values(&["authorize_untrusted", "400"])
                    .inc();
            }
            return html::error_page(&description);
        }
        Err(AuthError::Redirect {
            client_id,
            redirect_uri,
            response_mode,
            state: st,
            error,
            description,
        }) => {
            service::reject_authorization(&state, &ctx, &client_id, error, &description).await;
            let mut params = vec![
                ("error", error.to_string()),
                ("error_description", description),
            ];
            if let Some(s) = st {
                params.push(("state", s));
            }
            return error_to(&state, &client_id, &redirect_uri, response_mode, params).await;
        }
    };
    let Ok(session) = service::current_session(&state, cookie.as_deref()).await else {
        return views_behind();
    };
    let c = ctx.clone();
    let res = continue_authorization(state.clone(), ctx, req, session, None, false).await;
    bind(&state, &c, res)
}

/// Decides the next step of an authorization request: login, consent, or a code.
async fn continue_authorization(
    state: State,
    ctx: Ctx,
    req: AuthRequest,
    session: Option<Session>,
    tx: Option<String>,
    fresh_login: bool,
) -> Response {
    let Some(client) = lookup_client(&state, &req.client_id).await else {
        return html::error_page("unknown client");
    };
    let t = service::now();
    let hinted_sub = match &req.id_token_hint {
        Some(h) => match service::verify::<IdClaims>(&state, h, None, None, false).await {
            Some(c) => Some(c.sub),
            None => {
                return reject(
                    &state,
                    &ctx,
                    &req,
                    "invalid_request",
                    "id_token_hint is not an ID token issued by this provider",
                )
                .await;
            }
        },
        None => None,
    };
    let mut must_login = session.is_none();
    if let Some(s) = &session
        && !fresh_login
    {
        if req.prompt.contains("login") {
            must_login = true;
        }
        if let Some(max_age) = req.max_age
            && (max_age == 0 || t.unix_seconds() - s.auth_time.unix_seconds() > max_age)
        {
            must_login = true;
        }
        if hinted_sub.as_ref().is_some_and(|sub| *sub != s.user_id) {
            must_login = true;
        }
    }
    if must_login && !fresh_login {
        if req.prompt.contains("none") {
            return reject(
                &state,
                &ctx,
                &req,
                "login_required",
                "the user is not signed in",
            )
            .await;
        }
        let Some(id) = tx.or_else(|| {
            state
                .oidc
                .transactions
                .start(ctx.ip, &ctx.browser, Some(req.clone()), None)
        }) else {
            return html::error_page("could not start the sign-in");
        };
        return redirect(&format!("{}?tx={id}", oidc_path(&state, "/login")));
    }
    let Some(session) = session else {
        return html::error_page("no session");
    };
    let Some(user) = state
        .views
        .read()
        .await
        .users
        .get(&session.user_id)
        .cloned()
    else {
        return html::error_page("unknown user");
    };
    if !user.enabled {
        return reject(
            &state,
            &ctx,
            &req,
            "access_denied",
            "the account is disabled",
        )
        .await;
    }
    if service::needs_consent(&req, &client, &user) {
        if req.prompt.contains("none") {
            return reject(
                &state,
                &ctx,
                &req,
                "consent_required",
                "the user has not consented to these scopes",
            )
            .await;
        }
        let id = match tx {
            Some(id) => id,
            None => {
                match state
                    .oidc
                    .transactions
                    .start(ctx.ip, &ctx.browser, Some(req.clone()), None)
                {
                    Some(id) => id,
                    None => return html::error_page("could not start the consent"),
                }
            }
        };
        state.oidc.transactions.set_session(&id, &session.id);
        return redirect(&format!("{}?tx={id}", oidc_path(&state, "/consent")));
    }
    if let Some(id) = tx {
        state.oidc.transactions.take(&id);
    }
    finish(&state, &ctx, &req, &session).await
}

async fn finish(state: &State, ctx: &Ctx, req: &AuthRequest, session: &Session) -> Response {
    match service::issue_code(state, ctx, req, session).await {
        Ok(code) => {
            let mut params = vec![("code", code)];
            if let Some(s) = &req.state {
                params.push(("state", s.clone()));
            }
            to_client(state, &req.redirect_uri, req.response_mode, params)
        }
        Err(e) => {
            tracing::error!(error = %e, "issuing a code");
            // RFC 6749 §4.1.2.1: a condition that may pass.
            error_to_client(
                state,
                req,
                "temporarily_unavailable",
                "the code could not be issued; try again",
            )
            .await
        }
    }
}

fn authorize_route(
    state: State,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    let get = warp::get().and(query_pairs());
    let post = warp::post().and(form());
    warp::path!("oidc" / "oauth2" / "auth")
        .and(get.or(post).unify())
        .and(with_state(state.clone()))
        .and(ctx(state.clone()))
        .and(cookie(&state))
        .then(|params, state, ctx, cookie| authorize(state, ctx, cookie, params))
}

// ---- login -----------------------------------------------------------------------------

fn login_page_for(
    state: &State,
    tx: &str,
    csrf: &str,
    client: Option<&Client>,
    username: &str,
    error: Option<&str>,
) -> Response {
    let page = html::login_page(
        &oidc_path(state, "/login"),
        tx,
        csrf,
        client.map(|c| c.metadata.client_name.as_str()),
        username,
        error,
    );
    // A successful sign-in may answer with a redirect to the client.
    let target = state
        .oidc
        .transactions
        .get(tx)
        .and_then(|t| t.request.map(|r| r.redirect_uri));
    html::allow_form_target(page, target.as_deref())
}

/// The form purpose of a sign-in shown without an authorization request.
const PLAIN_LOGIN: &str = "login";

/// What a failed or refused sign-in tells the person, and its status.
fn login_refusal(outcome: &LoginOutcome) -> Option<(String, StatusCode, Option<u64>)> {
    use crate::oidc::throttle::{wait_seconds, wait_text};
    Some(match outcome {
        LoginOutcome::Failed => (
            "Wrong username or password.".into(),
            StatusCode::UNAUTHORIZED,
            None,
        ),
        LoginOutcome::Locked(Some(until)) => (
            format!(
                "This account is locked after too many failed sign-ins, until {} UTC. Try again then, or ask your administrator to unlock it.",
                until.to_string().get(11..16).unwrap_or("later")
            ),
            StatusCode::FORBIDDEN,
            None,
        ),
        LoginOutcome::Locked(None) => (
            "This account is locked. Ask your administrator to unlock it.".into(),
            StatusCode::FORBIDDEN,
            None,
        ),
        LoginOutcome::Disabled => (
            "This account is disabled. Contact your administrator.".into(),
            StatusCode::FORBIDDEN,
            None,
        ),
        LoginOutcome::Throttled(wait) => (
            format!("Too many attempts. Try again in {}.", wait_text(*wait)),
            StatusCode::TOO_MANY_REQUESTS,
            Some(wait_seconds(*wait)),
        ),
        LoginOutcome::Success { .. } | LoginOutcome::Busy => return None,
    })
}

fn login_route(
    state: State,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    let get = warp::path!("oidc" / "login")
        .and(warp::get())
        .and(query_pairs())
        .and(with_state(state.clone()))
        .and(ctx(state.clone()))
        .then(
            |q: Vec<(String, String)>, state: State, ctx: Ctx| async move {
                // With an authorization request: its transaction. Without (a
                // direct visit): a plain sign-in whose form is bound to this
                // browser by an HMAC, so an anonymous visit stores nothing.
                let t = first(&q, "tx")
                    .and_then(|id| state.oidc.transactions.get(&id).map(|t| (id, t)));
                let page = match t {
                    Some((id, t)) => {
                        let client = match &t.request {
                            Some(r) => lookup_client(&state, &r.client_id).await,
                            None => None,
                        };
                        let hint = t
                            .request
                            .as_ref()
                            .and_then(|r| r.login_hint.clone())
                            .unwrap_or_default();
                        login_page_for(&state, &id, &t.csrf, client.as_ref(), &hint, None)
                    }
                    None => {
                        let csrf = state.oidc.form_csrf(PLAIN_LOGIN, &ctx.browser);
                        login_page_for(&state, "", &csrf, None, "", None)
                    }
                };
                bind(&state, &ctx, page)
            },
        );
    let post = warp::path!("oidc" / "login")
        .and(warp::post())
        .and(form())
        .and(with_state(state.clone()))
        .and(ctx(state))
        .then(
            |f: Vec<(String, String)>, state: State, ctx: Ctx| async move {
                let (Some(tx), Some(csrf)) = (first(&f, "tx"), first(&f, "csrf")) else {
                    return html::error_page("the form is incomplete");
                };
                let expired = || {
                    html::error_page(
                        "the sign-in form expired or was not issued by this server; start again",
                    )
                };
                let t = if tx.is_empty() {
                    if !state.oidc.check_form_csrf(PLAIN_LOGIN, &ctx.browser, &csrf) {
                        return expired();
                    }
                    None
                } else {
                    match state
                        .oidc
                        .transactions
                        .check(&tx, &csrf, &ctx.browser)
                        .filter(|t| t.logout.is_none())
                    {
                        Some(t) => Some(t),
                        None => return expired(),
                    }
                };
                let request = t.as_ref().and_then(|t| t.request.clone());
                let username = first(&f, "username").unwrap_or_default();
                let password = first(&f, "password").unwrap_or_default();
                let client = match &request {
                    Some(r) => lookup_client(&state, &r.client_id).await,
                    None => None,
                };
                let client_id = client.as_ref().map(|c| c.client_id.clone());
                let outcome =
                    service::login(&state, &ctx, &username, password, client_id.as_deref()).await;
                let again = |message: &str, status: StatusCode, retry: Option<u64>| {
                    let mut res = login_page_for(
                        &state,
                        &tx,
                        &csrf,
                        client.as_ref(),
                        &username,
                        Some(message),
                    );
                    *res.status_mut() = status;
                    if let Some(v) = retry.and_then(|r| HeaderValue::from_str(&r.to_string()).ok())
                    {
                        res.headers_mut().insert("retry-after", v);
                    }
                    res
                };
                match outcome {
                    Ok(LoginOutcome::Success { session_id, cookie }) => {
                        let session = state
                            .views
                            .read()
                            .await
                            .sessions
                            .get(&session_id, service::now())
                            .cloned();
                        let res = match (request, session) {
                            (Some(req), Some(session)) => {
                                continue_authorization(
                                    state.clone(),
                                    ctx,
                                    req,
                                    Some(session),
                                    Some(tx),
                                    true,
                                )
                                .await
                            }
                            // Committed, but this node's views did not reach the
                            // new session in time: the browser keeps its cookie and
                            // is asked to try again, not shown a dead end.
                            (Some(_), None) => views_behind(),
                            (None, _) => {
                                if !tx.is_empty() {
                                    state.oidc.transactions.take(&tx);
                                }
                                html::message_page("Signed in", "You are signed in.")
                            }
                        };
                        with_cookie(res, &cookie)
                    }
                    Ok(LoginOutcome::Busy) => html::Page::new(
                        "Busy",
                        "<h1>The server is busy</h1><p>Try again in a moment.</p>".into(),
                    )
                    .status(StatusCode::SERVICE_UNAVAILABLE)
                    .render(),
                    Ok(other) => match login_refusal(&other) {
                        Some((message, status, retry)) => again(&message, status, retry),
                        None => html::error_page("the sign-in could not be completed"),
                    },
                    Err(e) => {
                        tracing::error!(error = %e, "login");
                        html::unavailable_page("Your sign-in")
                    }
                }
            },
        );
    get.or(post).unify()
}

// ---- consent ---------------------------------------------------------------------------

fn consent_route(
    state: State,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    let get = warp::path!("oidc" / "consent")
        .and(warp::get())
        .and(query_pairs())
        .and(with_state(state.clone()))
        .then(|q: Vec<(String, String)>, state: State| async move {
            let Some(tx) = first(&q, "tx") else {
                return html::error_page("no consent in progress");
            };
            let Some(t) = state.oidc.transactions.get(&tx) else {
                return html::error_page("the consent expired; start again");
            };
            let (Some(req), Some(_)) = (t.request.as_ref(), t.session_id.as_ref()) else {
                return html::error_page("no consent in progress");
            };
            let Some(client) = lookup_client(&state, &req.client_id).await else {
                return html::error_page("unknown client");
            };
            let described: Vec<(String, Option<String>)> = {
                let views = state.views.read().await;
                req.scopes
                    .iter()
                    .map(|s| {
                        (
                            s.clone(),
                            crate::oidc::scopes::description(s, &views.resource_servers),
                        )
                    })
                    .collect()
            };
            let page = html::consent_page(
                &oidc_path(&state, "/consent"),
                &tx,
                &t.csrf,
                &client.metadata.client_name,
                &described,
            );
            html::allow_form_target(page, Some(&req.redirect_uri))
        });
    let post = warp::path!("oidc" / "consent")
        .and(warp::post())
        .and(form())
        .and(with_state(state.clone()))
        .and(ctx(state.clone()))
        .and(cookie(&state))
        .then(
            |f: Vec<(String, String)>, state: State, ctx: Ctx, cookie: Option<String>| async move {
                let (Some(tx), Some(csrf)) = (first(&f, "tx"), first(&f, "csrf")) else {
                    return html::error_page("the form is incomplete");
                };
                // Checked and taken at once: a double submit issues one code.
                let Some(t) = state
                    .oidc
                    .transactions
                    .take_checked(&tx, &csrf, &ctx.browser)
                else {
                    return html::error_page(
                        "the consent form expired or was not issued by this server; start again",
                    );
                };
                let (Some(req), Some(sid)) = (t.request.clone(), t.session_id.clone()) else {
                    return html::error_page("no consent in progress");
                };
                // The session must still be the browser's own.
                let Ok(session) = service::current_session(&state, cookie.as_deref()).await else {
                    return views_behind();
                };
                let Some(session) = session.filter(|s| s.id == sid) else {
                    return html::error_page("your session ended; sign in again");
                };
                let allow = match first(&f, "decision").as_deref() {
                    Some("allow") => true,
                    Some("deny") => false,
                    _ => return html::error_page("decision must be allow or deny"),
                };
                if let Err(e) =
                    service::record_consent(&state, &ctx, &session.user_id, &req, allow).await
                {
                    tracing::error!(error = %e, "recording consent");
                    return error_to_client(
                        &state,
                        &req,
                        "temporarily_unavailable",
                        "the consent could not be recorded; try again",
                    )
                    .await;
                }
                if !allow {
                    return error_to_client(
                        &state,
                        &req,
                        "access_denied",
                        "the user denied access",
                    )
                    .await;
                }
                finish(&state, &ctx, &req, &session).await
            },
        );
    get.or(post).unify()
}

// ---- the token endpoint ----------------------------------------------------------------

fn token_error(e: TokenError, basic: bool) -> Response {
    let mut res = json_error(e.status, e.error, &e.description);
    if e.error == "invalid_client" && basic {
        *res.status_mut() = StatusCode::UNAUTHORIZED;
        res.headers_mut().insert(
            "www-authenticate",
            HeaderValue::from_static("Basic realm=\"authlog\", error=\"invalid_client\""),
        );
    }
    cors(res)
}

fn decode_basic(header: &str) -> Option<(String, String)> {
    use base64::Engine;
    let b64 = header
        .strip_prefix("Basic ")
        .or_else(|| header.strip_prefix("basic "))?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (id, secret) = text.split_once(':')?;
    // RFC 6749 §2.3.1: both parts are form-urlencoded before base64.
    let dec = |s: &str| {
        form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
    };
    Some((dec(id)?, dec(secret)?))
}

/// What a client sent to the token, introspection or revocation endpoint:
/// every parameter once, but RFC 8707 `resource`, which may repeat.
pub struct ClientForm {
    pub form: HashMap<String, String>,
    pub resources: Vec<String>,
}

/// A client request to the token, introspection or revocation endpoint:
/// repeated parameters refused, then the client authenticated with exactly one
/// method, its registered one. Failures are the RFC 6749 §5.2 responses.
async fn authenticated_client(
    state: &State,
    ctx: &Ctx,
    auth: Option<String>,
    pairs: Vec<(String, String)>,
) -> Result<(Client, ClientForm, bool), Response> {
    let basic = auth
        .as_deref()
        .is_some_and(|a| a.to_ascii_lowercase().starts_with("basic "));
    if let Some((name, _)) = pairs
        .iter()
        .find(|(k, _)| k != "resource" && pairs.iter().filter(|(x, _)| x == k).count() > 1)
    {
        return Err(token_error(
            TokenError::new("invalid_request", format!("{name} appears more than once")),
            basic,
        ));
    }
    let mut resources: Vec<String> = Vec::new();
    let mut form: HashMap<String, String> = HashMap::new();
    for (k, v) in pairs {
        if k == "resource" {
            if !resources.contains(&v) {
                resources.push(v);
            }
        } else {
            form.insert(k, v);
        }
    }
    // Client authentication: exactly one method.
    let (client_id, secret, method) = match (&auth, form.get("client_secret")) {
        (Some(_), Some(_)) => {
            return Err(token_error(
                TokenError::new("invalid_request", "use one client authentication method"),
                basic,
            ));
        }
        (Some(h), None) if basic => match decode_basic(h) {
            Some((id, s)) => (id, Some(s), "client_secret_basic"),
            None => {
                return Err(token_error(
                    TokenError {
                        status: 401,
                        error: "invalid_client",
                        description: "malformed Basic credentials".into(),
                    },
                    true,
                ));
            }
        },
        (_, Some(s)) => match form.get("client_id") {
            Some(id) => (id.clone(), Some(s.clone()), "client_secret_post"),
            None => {
                return Err(token_error(
                    TokenError::new("invalid_request", "client_id is missing"),
                    basic,
                ));
            }
        },
        _ => match form.get("client_id") {
            Some(id) => (id.clone(), None, "none"),
            None => {
                return Err(token_error(
                    TokenError {
                        status: 401,
                        error: "invalid_client",
                        description: "client authentication is missing".into(),
                    },
                    basic,
                ));
            }
        },
    };
    if basic && form.get("client_id").is_some_and(|id| *id != client_id) {
        return Err(token_error(
            TokenError::new(
                "invalid_request",
                "client_id differs from the authenticated client",
            ),
            basic,
        ));
    }
    let Some(client) = lookup_client(state, &client_id).await else {
        state
            .metrics
            .http_requests
            .with_label_values(&["token_unknown_client", "401"])
            .inc();
        return Err(token_error(
            TokenError {
                status: 401,
                error: "invalid_client",
                description: "client authentication failed".into(),
            },
            basic,
        ));
    };
    // A secret rotated on another node a moment ago: catch up once before failing.
    let mut client = client;
    if state.store.is_shared()
        && service::authenticate_client(state, &client, method, secret.as_deref()).is_err()
    {
        service::catch_up_views(state).await;
        if let Some(c) = lookup_client(state, &client_id).await {
            client = c;
        }
    }
    if let Err(reason) = service::authenticate_client(state, &client, method, secret.as_deref()) {
        let cid = client.client_id.clone();
        let m = method.to_string();
        service::record_failure(state, ctx, reason, &client.client_id, || {
            let d = data::ClientAuthenticationFailed {
                client_id: cid.clone(),
                method: m,
            };
            let env = service::draft(
                &format!("client-{cid}"),
                Actor {
                    kind: ActorKind::Client,
                    id: cid.clone(),
                },
                &d,
                Some(ctx),
            )?
            .client(cid.clone())
            .failure(reason);
            Ok((format!("client-{cid}"), env))
        })
        .await;
        // The registered method is no secret, and naming it saves a developer
        // an afternoon; which part of a secret was wrong is never said.
        let description = if reason == "method_not_allowed" {
            format!(
                "client authentication failed: this client is registered for {}, not {method}",
                client.metadata.token_endpoint_auth_method
            )
        } else {
            "client authentication failed".to_string()
        };
        return Err(token_error(
            TokenError {
                status: 401,
                error: "invalid_client",
                description,
            },
            basic,
        ));
    }
    Ok((client, ClientForm { form, resources }, basic))
}

async fn token(
    state: State,
    ctx: Ctx,
    auth: Option<String>,
    pairs: Vec<(String, String)>,
) -> Response {
    let (client, form, basic) = match authenticated_client(&state, &ctx, auth, pairs).await {
        Ok(c) => c,
        Err(res) => return res,
    };
    match service::exchange(&state, &ctx, &client, &form.form, &form.resources).await {
        Ok(t) => cors(no_store(warp::reply::json(&t).into_response())),
        Err(e) => token_error(e, basic),
    }
}

/// RFC 7662 introspection, for authenticated clients (resource servers).
async fn introspect(
    state: State,
    ctx: Ctx,
    auth: Option<String>,
    pairs: Vec<(String, String)>,
) -> Response {
    let (client, form, basic) = match authenticated_client(&state, &ctx, auth, pairs).await {
        Ok(c) => c,
        Err(res) => return res,
    };
    let form = form.form;
    if client.metadata.token_endpoint_auth_method == "none" {
        return token_error(
            TokenError {
                status: 401,
                error: "invalid_client",
                description: "introspection is for confidential clients".into(),
            },
            basic,
        );
    }
    let Some(token) = form.get("token") else {
        return json_error(400, "invalid_request", "token is missing");
    };
    let answer = service::introspect(&state, &client, token).await;
    let label = if answer["active"] == true {
        "active"
    } else {
        "inactive"
    };
    state
        .metrics
        .http_requests
        .with_label_values(&["introspection", label])
        .inc();
    no_store(warp::reply::json(&answer).into_response())
}

/// RFC 7009 revocation: 200 whether or not there was anything to revoke.
async fn revoke(
    state: State,
    ctx: Ctx,
    auth: Option<String>,
    pairs: Vec<(String, String)>,
) -> Response {
    let (client, form, basic) = match authenticated_client(&state, &ctx, auth, pairs).await {
        Ok(c) => c,
        Err(res) => return res,
    };
    let form = form.form;
    let Some(token) = form.get("token") else {
        return token_error(
            TokenError::new("invalid_request", "token is missing"),
            basic,
        );
    };
    // An unknown hint is ignored (RFC 7009 §2.1): both lookups are tried anyway.
    let hint = form.get("token_type_hint").map(String::as_str);
    match service::revoke(&state, &ctx, &client, token, hint).await {
        Ok(_) => cors(no_store(Response::new(Default::default()))),
        Err(e) => token_error(e.into(), basic),
    }
}

fn client_endpoint<F, Fut>(
    state: State,
    path: &'static str,
    handler: F,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone
where
    F: Fn(State, Ctx, Option<String>, Vec<(String, String)>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response> + Send,
{
    warp::path("oidc")
        .and(warp::path("oauth2"))
        .and(warp::path(path))
        .and(warp::path::end())
        .and(warp::post())
        .and(with_state(state.clone()))
        .and(ctx(state))
        .and(header_lossy("authorization"))
        .and(form())
        .then(handler)
}

fn token_route(
    state: State,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("oidc" / "oauth2" / "token")
        .and(warp::post())
        .and(with_state(state.clone()))
        .and(ctx(state))
        .and(header_lossy("authorization"))
        .and(form())
        .then(token)
}

// ---- userinfo ----------------------------------------------------------------------------

fn bearer_error(error: &str, description: &str, status: StatusCode) -> Response {
    let mut res = json_error(status.as_u16(), error, description);
    if let Ok(v) = HeaderValue::from_str(&format!(
        "Bearer error=\"{error}\", error_description=\"{description}\""
    )) {
        res.headers_mut().insert("www-authenticate", v);
    }
    cors(res)
}

async fn userinfo(state: State, auth: Option<String>, body: Vec<(String, String)>) -> Response {
    let from_header = auth
        .as_deref()
        .and_then(|a| {
            a.strip_prefix("Bearer ")
                .or_else(|| a.strip_prefix("bearer "))
        })
        .map(str::to_string);
    let from_body = first(&body, "access_token");
    let token = match (from_header, from_body) {
        (Some(_), Some(_)) => {
            return bearer_error(
                "invalid_request",
                "send the token once",
                StatusCode::BAD_REQUEST,
            );
        }
        (Some(t), None) | (None, Some(t)) => t,
        (None, None) => {
            let mut res = cors(no_store(Response::new(Default::default())));
            *res.status_mut() = StatusCode::UNAUTHORIZED;
            res.headers_mut()
                .insert("www-authenticate", HeaderValue::from_static("Bearer"));
            return res;
        }
    };
    // Userinfo is a resource of the default resource server: a token for
    // another API is not accepted here (RFC 8707 audience restriction).
    let Some(claims) =
        service::active_access_token(&state, &token, Some(&state.config.tokens.audience)).await
    else {
        return bearer_error(
            "invalid_token",
            "the access token is invalid, expired or revoked",
            StatusCode::UNAUTHORIZED,
        );
    };
    let user = service::view_lookup(&state, |v| {
        v.users.get(&claims.sub).filter(|u| u.enabled).cloned()
    })
    .await;
    let Some(user) = user else {
        return bearer_error(
            "invalid_token",
            "the user no longer exists or is disabled",
            StatusCode::UNAUTHORIZED,
        );
    };
    let scopes: Vec<&str> = claims.scope.split(' ').collect();
    if !scopes.contains(&"openid") {
        return bearer_error(
            "insufficient_scope",
            "userinfo needs the openid scope",
            StatusCode::FORBIDDEN,
        );
    }
    let mut out = serde_json::Map::new();
    out.insert("sub".into(), user.id.clone().into());
    if scopes.contains(&"profile") {
        out.insert("preferred_username".into(), user.username.clone().into());
        if let Some(n) = &user.name {
            out.insert("name".into(), n.clone().into());
        }
    }
    if scopes.contains(&"email")
        && let Some(e) = &user.email
    {
        out.insert("email".into(), e.clone().into());
        // Self-registered addresses are unverified; an administrator's are vouched for.
        out.insert("email_verified".into(), (!user.self_registered).into());
    }
    cors(no_store(warp::reply::json(&out).into_response()))
}

fn userinfo_route(
    state: State,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    let get = warp::get().map(Vec::new);
    let post = warp::post().and(form());
    warp::path!("oidc" / "userinfo")
        .and(get.or(post).unify())
        .and(with_state(state))
        .and(header_lossy("authorization"))
        .then(|body, state, auth| userinfo(state, auth, body))
}

// ---- the user's own sign-in history -------------------------------------------------------

/// How many recent sign-ins `/oidc/account/history` shows.
const HISTORY_ENTRIES: usize = 30;

/// `GET /oidc/account/history`: the signed-in user's recent sign-ins and failed
/// attempts (time, IP, user agent, client, outcome), newest first, so they can
/// spot one that was not theirs. The read is recorded like any audit read.
async fn account_history(state: State, ctx: Ctx, cookie: Option<String>) -> Response {
    let Ok(session) = service::current_session(&state, cookie.as_deref()).await else {
        return views_behind();
    };
    let Some(session) = session else {
        let mut res = html::message_page(
            "Sign-in history",
            "Sign in first: this page shows the sign-ins of the account you are signed in with.",
        );
        *res.status_mut() = warp::http::StatusCode::UNAUTHORIZED;
        return res;
    };
    let filter = crate::audit::query::Filter {
        subject: Some(session.user_id.clone()),
        types: vec!["login.".into()],
        ..Default::default()
    };
    let want = match state.store.head().await {
        Ok(h) => h.map_or(0, |h| h.seq + 1),
        Err(e) => return history_unavailable(&e.to_string()),
    };
    if !state.audit.may_read_history(&session.id) {
        let mut res = html::message_page(
            "Sign-in history",
            "You just looked at your sign-in history; wait a moment before reloading it.",
        );
        *res.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        return res;
    }
    let size = state
        .audit
        .tree
        .wait_for(want, std::time::Duration::from_secs(3))
        .await;
    if size < want {
        return history_unavailable(&format!("the audit index is at {size} of {want} events"));
    }
    let page = match crate::audit::query::query(
        &state.store,
        &state.audit.tree,
        &filter,
        None,
        HISTORY_ENTRIES,
        crate::audit::tree::Direction::Backward,
        size,
    )
    .await
    {
        Ok(p) => p,
        Err(e) => return history_unavailable(&e.to_string()),
    };
    let record = data::AuditAccessed {
        token_name: "account:self".into(),
        endpoint: "/oidc/account/history".into(),
        filter: filter.to_json(),
        result_count: page.events.len() as u64,
    };
    let actor = Actor {
        kind: ActorKind::User,
        id: session.user_id.clone(),
    };
    let recorded = match service::draft("audit-access", actor, &record, Some(&ctx)) {
        Ok(env) => service::commit(
            &state,
            "audit-access",
            crate::store::Expected::Any,
            vec![service::Draft {
                envelope: env.subject(session.user_id.clone()),
                secret: None,
            }],
        )
        .await
        .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = recorded {
        return history_unavailable(&e);
    }
    let views = state.views.read().await;
    let rows: Vec<html::HistoryRow> = page
        .events
        .iter()
        .filter_map(|r| r.envelope().ok())
        .map(|env| {
            let source = env.source.clone().unwrap_or_default();
            let client = env.client_id.as_ref().map(|c| {
                views
                    .clients
                    .get(c)
                    .map(|cl| cl.metadata.client_name.clone())
                    .unwrap_or_else(|| c.clone())
            });
            html::HistoryRow {
                time: env.time.to_string(),
                succeeded: env.outcome == authlog_schemas::Outcome::Success,
                reason: env.reason.clone(),
                ip: source.ip,
                user_agent: source.user_agent,
                client,
            }
        })
        .collect();
    let username = views
        .users
        .get(&session.user_id)
        .map(|u| u.username.clone())
        .unwrap_or_default();
    drop(views);
    html::history_page(&username, &rows)
}

/// The session cookie names a position this node's views have not reached in
/// `views.wait_ms` (a node far behind the others): try again, rather than
/// treat the browser as signed out.
fn views_behind() -> Response {
    let mut res = html::Page::new(
        "Busy",
        "<h1>This server is catching up</h1><p>Try again in a moment.</p>".into(),
    )
    .status(StatusCode::SERVICE_UNAVAILABLE)
    .render();
    res.headers_mut()
        .insert("retry-after", warp::http::HeaderValue::from_static("1"));
    res
}

fn history_unavailable(detail: &str) -> Response {
    tracing::error!(error = %detail, "sign-in history");
    let mut res = html::message_page(
        "Sign-in history",
        "Your sign-in history cannot be shown right now; try again in a moment.",
    );
    *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    res
}

fn account_history_route(
    state: State,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("oidc" / "account" / "history")
        .and(warp::get())
        .and(with_state(state.clone()))
        .and(ctx(state.clone()))
        .and(cookie(&state))
        .then(account_history)
}

// ---- logout ----------------------------------------------------------------------------

async fn logout(
    state: State,
    ctx: Ctx,
    cookie: Option<String>,
    params: Vec<(String, String)>,
) -> Response {
    let hint = first(&params, "id_token_hint");
    let hinted = match &hint {
        Some(h) => match service::verify::<IdClaims>(&state, h, None, None, false).await {
            Some(c) => Some(c),
            None => {
                return html::error_page(
                    "id_token_hint is not an ID token issued by this provider",
                );
            }
        },
        None => None,
    };
    let client_id = first(&params, "client_id").or_else(|| hinted.as_ref().map(|c| c.aud.clone()));
    if let (Some(h), Some(c)) = (&hinted, first(&params, "client_id"))
        && h.aud != c
    {
        return html::error_page("client_id does not match the id_token_hint");
    }
    let client = match &client_id {
        Some(id) => lookup_client(&state, id).await,
        None => None,
    };
    let post_logout = first(&params, "post_logout_redirect_uri");
    let redirect_to = match (&post_logout, &client) {
        (Some(uri), Some(c))
            if c.metadata
                .post_logout_redirect_uris
                .iter()
                .any(|r| r == uri) =>
        {
            let mut target = uri.clone();
            if let Some(s) = first(&params, "state") {
                target = request::with_query(&target, &[("state", &s)]);
            }
            Some(target)
        }
        (Some(_), _) => {
            return html::error_page("post_logout_redirect_uri is not registered for this client");
        }
        _ => None,
    };
    let Ok(session) = service::current_session(&state, cookie.as_deref()).await else {
        return views_behind();
    };
    // The session the hint names. A client's logout form POSTs across sites,
    // and browsers withhold the SameSite=Lax session cookie from such a POST:
    // the hint's `sid` is then the only way to find the session to end.
    let hinted_session = match hinted
        .as_ref()
        .and_then(|h| h.sid.clone().map(|sid| (sid, h.sub.clone())))
    {
        Some((sid, sub)) => {
            service::view_lookup(&state, |v| {
                v.sessions
                    .get(&sid, service::now())
                    .filter(|s| s.user_id == sub)
                    .cloned()
            })
            .await
        }
        None => None,
    };
    // Without a valid hint naming this session's user, ask the user first; and
    // with a hint but no session to end (the browser's cookie was withheld, the
    // hinted one is over), ask too rather than claim a sign-out that did not
    // happen: the confirmation is a same-site form, which carries the cookie.
    let trusted = hinted
        .as_ref()
        .is_some_and(|h| session.as_ref().is_none_or(|s| s.user_id == h.sub))
        && (session.is_some() || hinted_session.is_some());
    if !trusted {
        let Some(tx) = state.oidc.transactions.start(
            ctx.ip,
            &ctx.browser,
            None,
            Some(LogoutTx {
                redirect: redirect_to,
            }),
        ) else {
            return html::error_page("could not start the sign-out");
        };
        let Some(t) = state.oidc.transactions.get(&tx) else {
            return html::error_page("could not start the sign-out");
        };
        let page =
            html::logout_confirm_page(&oidc_path(&state, "/oauth2/sessions/logout"), &tx, &t.csrf);
        let target = t.logout.and_then(|l| l.redirect);
        return html::allow_form_target(page, target.as_deref());
    }
    // The browser's session and the one the hint names (the same, or another
    // session of the same user that the client took part in) both end.
    let mut sessions: Vec<Session> = session.into_iter().collect();
    if let Some(h) = hinted_session
        && !sessions.iter().any(|s| s.id == h.id)
    {
        sessions.push(h);
    }
    finish_logout(&state, &ctx, sessions, redirect_to).await
}

async fn finish_logout(
    state: &State,
    ctx: &Ctx,
    sessions: Vec<Session>,
    redirect_to: Option<String>,
) -> Response {
    let mut res = match &redirect_to {
        Some(uri) => redirect(uri),
        None => html::message_page("Signed out", "You are signed out."),
    };
    for s in sessions {
        let actor = Actor {
            kind: ActorKind::User,
            id: s.user_id.clone(),
        };
        if let Err(e) = service::end_session(state, ctx, &s, actor).await {
            tracing::error!(error = %e, "ending a session");
            return html::unavailable_page("Your sign-out");
        }
    }
    res = with_cookie(res, &service::session_cookie(state, "", 0));
    res
}

fn logout_route(
    state: State,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    let get = warp::path!("oidc" / "oauth2" / "sessions" / "logout")
        .and(warp::get())
        .and(query_pairs())
        .and(with_state(state.clone()))
        .and(ctx(state.clone()))
        .and(cookie(&state))
        .then(|q, state: State, ctx: Ctx, cookie| async move {
            let (s, c) = (state.clone(), ctx.clone());
            bind(&s, &c, logout(state, ctx, cookie, q).await)
        });
    let post = warp::path!("oidc" / "oauth2" / "sessions" / "logout")
        .and(warp::post())
        .and(form())
        .and(with_state(state.clone()))
        .and(ctx(state.clone()))
        .and(cookie(&state))
        .then(
            |f: Vec<(String, String)>, state: State, ctx: Ctx, cookie: Option<String>| async move {
                // The confirmation form, or an RP's POSTed logout request.
                match (first(&f, "tx"), first(&f, "csrf")) {
                    (Some(tx), Some(csrf)) => {
                        let Some(t) = state
                            .oidc
                            .transactions
                            .take_checked(&tx, &csrf, &ctx.browser)
                            .filter(|t| t.logout.is_some())
                        else {
                            return html::error_page(
                                "the sign-out form expired or was not issued by this server",
                            );
                        };
                        let Ok(session) = service::current_session(&state, cookie.as_deref()).await
                        else {
                            return views_behind();
                        };
                        finish_logout(
                            &state,
                            &ctx,
                            session.into_iter().collect(),
                            t.logout.and_then(|l| l.redirect),
                        )
                        .await
                    }
                    _ => logout(state, ctx, cookie, f).await,
                }
            },
        );
    get.or(post).unify()
}

// ---- self-registration -------------------------------------------------------------------

fn register_route(
    state: State,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    let enabled = {
        let state = state.clone();
        warp::any().and_then(move || {
            let on = state.config.registration.enabled;
            async move {
                if on {
                    Ok(())
                } else {
                    Err(warp::reject::custom(super::ApiError::NotFound))
                }
            }
        })
    }
    .untuple_one();
    let get = warp::path!("oidc" / "register")
        .and(warp::get())
        .and(enabled.clone())
        .and(with_state(state.clone()))
        .and(ctx(state.clone()))
        .map(|state: State, ctx: Ctx| {
            // No server-side state for an anonymous visit: the form's token is
            // an HMAC of the browser binding.
            let csrf = state.oidc.form_csrf(REGISTRATION_FORM, &ctx.browser);
            let res = html::register_page(&oidc_path(&state, "/register"), &csrf, "", "", None);
            bind(&state, &ctx, res)
        });
    let post = warp::path!("oidc" / "register")
        .and(warp::post())
        .and(enabled)
        .and(form())
        .and(with_state(state.clone()))
        .and(ctx(state))
        .then(
            |f: Vec<(String, String)>, state: State, ctx: Ctx| async move {
                use crate::oidc::throttle::{address_key, wait_seconds, wait_text};
                let csrf = first(&f, "csrf").unwrap_or_default();
                if !state
                    .oidc
                    .check_form_csrf(REGISTRATION_FORM, &ctx.browser, &csrf)
                {
                    return html::error_page(
                        "the registration form expired or was not issued by this server",
                    );
                }
                let username = first(&f, "username").unwrap_or_default();
                let email = first(&f, "email").unwrap_or_default();
                let password = first(&f, "password").unwrap_or_default();
                let again = |msg: &str, status: StatusCode| {
                    let mut res = html::register_page(
                        &oidc_path(&state, "/register"),
                        &csrf,
                        &username,
                        &email,
                        Some(msg),
                    );
                    *res.status_mut() = status;
                    res
                };
                // Every registration attempt counts, successful or not: past three
                // from one address, each waits longer (unauthenticated callers
                // cannot grow the log quickly).
                let key = format!("register|{}", address_key(ctx.ip));
                if let Some(wait) = state.oidc.throttles.registration.wait(&key) {
                    let mut res = again(
                        &format!("Too many attempts. Try again in {}.", wait_text(wait)),
                        StatusCode::TOO_MANY_REQUESTS,
                    );
                    if let Ok(v) = HeaderValue::from_str(&wait_seconds(wait).to_string()) {
                        res.headers_mut().insert("retry-after", v);
                    }
                    return res;
                }
                state.oidc.throttles.registration.fail(&key);
                let actor = Actor {
                    kind: ActorKind::User,
                    id: "self-registration".into(),
                };
                match service::register_user(
                    &state,
                    actor,
                    RegisteredVia::SelfRegistration,
                    &username,
                    password,
                    Some(email.clone()),
                    None,
                    Some(&ctx),
                )
                .await
                {
                    Ok(_) => html::message_page(
                        "Account created",
                        "Your account is ready. You can sign in now.",
                    ),
                    Err(RegisterError::Taken) => {
                        again("That username is taken.", StatusCode::CONFLICT)
                    }
                    Err(RegisterError::Invalid(why)) => again(why, StatusCode::BAD_REQUEST),
                    Err(RegisterError::Busy) => again(
                        "The server is busy; try again in a moment.",
                        StatusCode::SERVICE_UNAVAILABLE,
                    ),
                    Err(RegisterError::Internal(e)) => {
                        tracing::error!(error = %e, "registration");
                        html::unavailable_page("Your registration")
                    }
                }
            },
        );
    get.or(post).unify()
}

/// The form purpose of self-registration.
const REGISTRATION_FORM: &str = "register";

/// All `/oidc` routes.
pub fn routes(state: State) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    preflight()
        .or(discovery(state.clone()))
        .unify()
        .or(jwks(state.clone()))
        .unify()
        .or(authorize_route(state.clone()))
        .unify()
        .or(login_route(state.clone()))
        .unify()
        .or(consent_route(state.clone()))
        .unify()
        .or(token_route(state.clone()))
        .unify()
        .or(client_endpoint(state.clone(), "introspect", introspect))
        .unify()
        .or(client_endpoint(state.clone(), "revoke", revoke))
        .unify()
        .or(userinfo_route(state.clone()))
        .unify()
        .or(logout_route(state.clone()))
        .unify()
        .or(account_history_route(state.clone()))
        .unify()
        .or(register_route(state))
        .unify()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_pairs_decode_as_urlencoded_and_refuse_invalid_utf8() {
        for input in [
            "a=1&b=x+y&c=%2B%26%3D&d=&e&=f",
            "name=caf%C3%A9&x=%zz&y=%4",
            "&&a=1&&",
            "k=\u{e9}",
        ] {
            let ours = parse_pairs(input.as_bytes()).unwrap();
            let theirs: Vec<(String, String)> = form_urlencoded::parse(input.as_bytes())
                .into_owned()
                .collect();
            assert_eq!(ours, theirs, "{input}");
        }
        // Two different passwords must not become one.
        assert!(parse_pairs(b"password=%FF").is_err());
        assert!(parse_pairs(b"password=%FE").is_err());
        assert!(parse_pairs(b"a=%C3").is_err());
        assert!(parse_pairs(&[b'a', b'=', 0xff]).is_err());
    }

    #[test]
    fn basic_credentials_are_form_decoded() {
        use base64::Engine;
        let h = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("my%3Aclient:s%2Bcret")
        );
        assert_eq!(
            decode_basic(&h),
            Some(("my:client".into(), "s+cret".into()))
        );
    }

    #[test]
    fn forwarded_headers_only_from_trusted_proxies() {
        let cidr = |s: &str| s.parse::<crate::config::Cidr>().unwrap();
        let proxy = cidr("10.0.0.1");
        let peer = Some(SocketAddr::from(([10, 0, 0, 1], 5000)));
        let other = Some(SocketAddr::from(([198, 51, 100, 7], 5000)));
        let fwd = Some("for=192.0.2.60;proto=https".to_string());
        let xff = |v: &str| Some(v.to_string());
        assert_eq!(
            client_ip_of(peer, fwd.clone(), None, &[proxy], "forwarded"),
            IpAddr::from([192, 0, 2, 60])
        );
        assert_eq!(
            client_ip_of(other, fwd.clone(), None, &[proxy], "forwarded"),
            IpAddr::from([198, 51, 100, 7])
        );
        // The proxy appends to X-Forwarded-For: what the client wrote is on the left.
        assert_eq!(
            client_ip_of(
                peer,
                None,
                xff("203.0.113.9, 192.0.2.1"),
                &[proxy],
                "x-forwarded-for"
            ),
            IpAddr::from([192, 0, 2, 1])
        );
        // A Forwarded header the client sent is ignored when the proxy sets X-Forwarded-For.
        assert_eq!(
            client_ip_of(peer, fwd, xff("192.0.2.1"), &[proxy], "x-forwarded-for"),
            IpAddr::from([192, 0, 2, 1])
        );
        // Chains of trusted proxies are skipped from the right.
        let p2 = cidr("10.0.0.2");
        assert_eq!(
            client_ip_of(
                peer,
                None,
                xff("192.0.2.7, 10.0.0.2"),
                &[proxy, p2],
                "x-forwarded-for"
            ),
            IpAddr::from([192, 0, 2, 7])
        );
        assert_eq!(
            client_ip_of(
                peer,
                Some("for=\"[2001:db8::1]:4711\"".into()),
                None,
                &[proxy],
                "forwarded"
            ),
            "2001:db8::1".parse::<IpAddr>().unwrap()
        );
        // An ingress's whole pod network, as a range.
        let pods = cidr("10.0.0.0/8");
        let from_pod = Some(SocketAddr::from(([10, 42, 7, 9], 5000)));
        assert_eq!(
            client_ip_of(
                from_pod,
                None,
                xff("198.51.100.4, 10.42.0.3"),
                &[pods],
                "x-forwarded-for"
            ),
            IpAddr::from([198, 51, 100, 4])
        );
    }
}
