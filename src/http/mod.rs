//! warp filters and handlers. One function per route, state injected with
//! [`with_state`], one rejection handler ([`error::recover`]).

mod admin;
pub mod audit;
pub mod error;
mod ops;
pub mod server;

use std::convert::Infallible;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use warp::Filter;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::DynStore;
use crate::views::ViewsHandle;
pub use error::ApiError;

/// What every handler can reach.
pub struct AppState {
    pub config: Config,
    pub store: DynStore,
    pub views: ViewsHandle,
    pub metrics: Metrics,
    /// (name, SHA-256 of the token): compared in constant time.
    pub admin_tokens: Vec<(String, [u8; 32])>,
    /// Seals and opens sidecars.
    pub kek: crate::seal::Kek,
    /// The audit tree, indexes, checkpoint key and auditor tokens.
    pub audit: Arc<crate::audit::Audit>,
    /// The OIDC flows' in-memory helpers.
    pub oidc: crate::oidc::service::Oidc,
    /// Turns true when shutdown begins: long-lived responses end themselves.
    pub shutting_down: tokio::sync::watch::Receiver<bool>,
}

pub type State = Arc<AppState>;

pub fn with_state(state: State) -> impl Filter<Extract = (State,), Error = Infallible> + Clone {
    warp::any().map(move || state.clone())
}

/// A request header as text, if present. Bytes that are not UTF-8 become
/// U+FFFD instead of failing the request: a browser may carry a stray
/// non-ASCII cookie of another application on the host (`theme=café`) or a
/// UTF-8 User-Agent, and a sign-in must not answer 400 for a header it does
/// not even need.
pub fn header_lossy(
    name: &'static str,
) -> impl Filter<Extract = (Option<String>,), Error = Infallible> + Clone {
    warp::header::value(name)
        .map(|v: warp::http::HeaderValue| Some(String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .or(warp::any().map(|| None))
        .unify()
}

/// Refuses JSON whose objects repeat a key (at any depth): serde_json keeps
/// the last, so `{"scope":"a","scope":"b"}` would mean whatever a reader picks.
pub fn check_no_duplicate_keys(body: &[u8]) -> Result<(), String> {
    use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};
    struct Check;
    impl<'de> serde::de::DeserializeSeed<'de> for Check {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(Check)
        }
    }
    impl<'de> Visitor<'de> for Check {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("JSON")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let mut seen = std::collections::HashSet::new();
            while let Some(key) = map.next_key::<String>()? {
                if !seen.insert(key.clone()) {
                    return Err(serde::de::Error::custom(format!(
                        "the key {:?} appears more than once",
                        key.chars().take(64).collect::<String>()
                    )));
                }
                map.next_value_seed(Check)?;
            }
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            while seq.next_element_seed(Check)?.is_some() {}
            Ok(())
        }
        fn visit_bool<E>(self, _: bool) -> Result<(), E> {
            Ok(())
        }
        fn visit_i64<E>(self, _: i64) -> Result<(), E> {
            Ok(())
        }
        fn visit_u64<E>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
        fn visit_f64<E>(self, _: f64) -> Result<(), E> {
            Ok(())
        }
        fn visit_str<E>(self, _: &str) -> Result<(), E> {
            Ok(())
        }
        fn visit_unit<E>(self) -> Result<(), E> {
            Ok(())
        }
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    serde::de::DeserializeSeed::deserialize(Check, &mut de).map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())
}

/// The name of the admin token presented as `Authorization: Bearer …`.
/// Wrong tokens count against the caller's address: past ten, each further
/// attempt waits longer (429), so tokens cannot be guessed at line rate.
pub fn admin_auth(
    state: State,
) -> impl Filter<Extract = (String,), Error = warp::Rejection> + Clone {
    header_lossy("authorization")
        .and(oidc::client_ip(state.clone()))
        .and_then(move |header: Option<String>, ip: std::net::IpAddr| {
            let state = state.clone();
            async move {
                let guard = TokenGuard::new(&state, ip)?;
                let token = header.as_deref().and_then(|h| {
                    h.strip_prefix("Bearer ")
                        .or_else(|| h.strip_prefix("bearer "))
                });
                let found = token.and_then(|token| {
                    let presented: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
                    // Compare against every configured token without stopping early.
                    let mut found = None;
                    for (name, digest) in &state.admin_tokens {
                        if bool::from(digest.ct_eq(&presented)) {
                            found = Some(name.clone());
                        }
                    }
                    found
                });
                guard.outcome(token.is_some(), found.is_some());
                found.ok_or_else(|| warp::reject::custom(ApiError::InvalidToken))
            }
        })
}

/// The throttle on guessing bearer tokens (admin, auditor, initial access,
/// registration access) from one address.
pub struct TokenGuard<'a> {
    state: &'a AppState,
    key: String,
}

impl<'a> TokenGuard<'a> {
    /// Refuses at once (429) while the address must wait.
    pub fn new(
        state: &'a AppState,
        ip: std::net::IpAddr,
    ) -> Result<TokenGuard<'a>, warp::Rejection> {
        let key = crate::oidc::throttle::address_key(ip);
        if let Some(wait) = state.oidc.throttles.tokens.wait(&key) {
            return Err(warp::reject::custom(ApiError::Throttled(
                crate::oidc::throttle::wait_seconds(wait),
            )));
        }
        Ok(TokenGuard { state, key })
    }

    /// Counts a presented token that matched nothing (a missing one is not a guess).
    pub fn outcome(&self, presented: bool, matched: bool) {
        if presented && !matched {
            self.state.oidc.throttles.tokens.fail(&self.key);
        }
    }
}

/// The request body, at most `limit` bytes, with or without a Content-Length
/// (chunked bodies are counted as they arrive).
pub fn bounded_body(
    limit: u64,
) -> impl Filter<Extract = (bytes::Bytes,), Error = warp::Rejection> + Clone {
    warp::body::stream().and_then(move |body| collect_body(body, limit))
}

/// How long a request body may take to arrive: a client trickling a body a
/// byte at a time is cut off.
pub const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

async fn collect_body<S, B>(body: S, limit: u64) -> Result<bytes::Bytes, warp::Rejection>
where
    S: futures_util::Stream<Item = Result<B, warp::Error>>,
    B: bytes::Buf,
{
    match tokio::time::timeout(BODY_TIMEOUT, collect_body_now(body, limit)).await {
        Ok(out) => out,
        Err(_) => Err(warp::reject::custom(ApiError::InvalidRequest(format!(
            "the request body did not arrive within {} s",
            BODY_TIMEOUT.as_secs()
        )))),
    }
}

async fn collect_body_now<S, B>(body: S, limit: u64) -> Result<bytes::Bytes, warp::Rejection>
where
    S: futures_util::Stream<Item = Result<B, warp::Error>>,
    B: bytes::Buf,
{
    use futures_util::StreamExt;
    let mut body = Box::pin(body);
    let mut out = bytes::BytesMut::new();
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk.map_err(|e| {
            warp::reject::custom(ApiError::InvalidRequest(format!("reading the body: {e}")))
        })?;
        if (out.len() + chunk.remaining()) as u64 > limit {
            return Err(warp::reject::custom(ApiError::PayloadTooLarge(limit)));
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            let n = part.len();
            out.extend_from_slice(part);
            chunk.advance(n);
        }
    }
    Ok(out.freeze())
}

/// Refuses, before routing, any request whose declared body exceeds the limit.
/// Routes that read a body add `content_length_limit` as well.
fn body_limit(limit: u64) -> impl Filter<Extract = (), Error = warp::Rejection> + Clone {
    warp::header::optional::<u64>("content-length")
        .and_then(move |len: Option<u64>| async move {
            match len {
                Some(n) if n > limit => Err(warp::reject::custom(ApiError::PayloadTooLarge(limit))),
                _ => Ok(()),
            }
        })
        .untuple_one()
}

/// The route label for metrics: a fixed template, never the raw path.
fn route_label(path: &str) -> &'static str {
    match path {
        "/healthz" => "healthz",
        "/readyz" => "readyz",
        "/metrics" => "metrics",
        "/admin/events" => "admin_events",
        "/admin/store/check" => "admin_store_check",
        "/oidc/.well-known/openid-configuration" => "discovery",
        "/oidc/.well-known/jwks.json" => "jwks",
        "/oidc/oauth2/auth" => "authorize",
        "/oidc/oauth2/token" => "token",
        "/oidc/oauth2/introspect" => "introspect",
        "/oidc/oauth2/revoke" => "revoke",
        p if p.starts_with("/oidc/oauth2/register") => "registration",
        "/oidc/userinfo" => "userinfo",
        "/oidc/oauth2/sessions/logout" => "logout",
        "/oidc/login" => "login",
        "/oidc/consent" => "consent",
        "/oidc/register" => "register",
        p if p.starts_with("/admin/users") => "admin_users",
        p if p.starts_with("/admin/clients") => "admin_clients",
        p if p.starts_with("/admin/keys") => "admin_keys",
        p if p.starts_with("/admin/resource-servers") => "admin_resource_servers",
        "/admin/audit/events" => "audit_events",
        "/admin/audit/export" => "audit_export",
        "/admin/audit/verify" => "audit_verify",
        "/admin/audit/stats" => "audit_stats",
        p if p.starts_with("/admin/audit/users/") => "audit_history",
        p if p.starts_with("/admin/audit/proof/") => "audit_proof",
        p if p.starts_with("/admin/audit/checkpoint") || p == "/admin/audit/key" => {
            "audit_checkpoint"
        }
        p if p.starts_with("/admin/audit/ui") => "audit_ui",
        "/oidc/account/history" => "account_history",
        _ => "other",
    }
}

/// Every route, with metrics and the rejection handler.
pub fn routes(
    state: State,
) -> impl Filter<Extract = (impl warp::Reply,), Error = Infallible> + Clone {
    let metrics = state.metrics.clone();
    let log = warp::log::custom(move |info| {
        let route = route_label(info.path());
        metrics
            .http_requests
            .with_label_values(&[route, info.status().as_str()])
            .inc();
        metrics
            .http_seconds
            .with_label_values(&[route])
            .observe(info.elapsed().as_secs_f64());
    });
    body_limit(state.config.limits.body_bytes)
        .and(
            ops::healthz(state.clone())
                .or(ops::readyz(state.clone()))
                .or(ops::metrics(state.clone()))
                .or(admin::events(state.clone()))
                .or(admin::store_check(state.clone()))
                .or(oidc::routes(state.clone()))
                .or(registration::routes(state.clone()))
                .or(audit::routes(state.clone()))
                .or(resource_servers::routes(state.clone()))
                .or(admin_api::routes(state)),
        )
        .recover(error::recover)
        .with(log)
        .with(warp::reply::with::header(
            "x-content-type-options",
            "nosniff",
        ))
}
pub mod admin_api;
pub mod oidc;
pub mod registration;
pub mod resource_servers;

#[cfg(test)]
mod tests {
    #[test]
    fn repeated_json_keys_are_refused_at_any_depth() {
        assert!(super::check_no_duplicate_keys(br#"{"a":1,"b":[{"c":1,"d":2}]}"#).is_ok());
        let e = super::check_no_duplicate_keys(br#"{"scope":"a","scope":"b"}"#).unwrap_err();
        assert!(e.contains("\"scope\" appears more than once"), "{e}");
        assert!(super::check_no_duplicate_keys(br#"{"x":[{"k":1,"k":2}]}"#).is_err());
        assert!(super::check_no_duplicate_keys(br#"{"a":1} trailing"#).is_err());
    }
}
