//! Health, readiness and metrics.

use serde_json::json;
use warp::Filter;
use warp::Reply;
use warp::http::StatusCode;

use super::{State, with_state};
use crate::views::Progress;

/// `GET /healthz`: liveness. The process answers, and its store answers a
/// read within two seconds (on the embedded store, which lives in this
/// process, a store that stopped answering means this process must be
/// restarted). A shared store that is down is not this process's fault, and
/// restarting every node would not bring it back: `/readyz` says so instead.
pub fn healthz(
    state: State,
) -> impl Filter<Extract = (impl warp::Reply,), Error = warp::Rejection> + Clone {
    warp::path!("healthz")
        .and(warp::get())
        .and(with_state(state))
        .then(|state: State| async move {
            if state.store.is_shared() {
                return warp::reply::with_status(
                    warp::reply::json(&json!({"status": "ok"})),
                    StatusCode::OK,
                );
            }
            match store_answers(&state).await {
                Ok(()) => warp::reply::with_status(
                    warp::reply::json(&json!({"status": "ok"})),
                    StatusCode::OK,
                ),
                Err(why) => warp::reply::with_status(
                    warp::reply::json(&json!({"status": "store_unavailable", "detail": why})),
                    StatusCode::SERVICE_UNAVAILABLE,
                ),
            }
        })
}

/// The store answers a read of its head within two seconds.
async fn store_answers(state: &State) -> Result<(), String> {
    match tokio::time::timeout(std::time::Duration::from_secs(2), state.store.head()).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("the store failed: {e}")),
        Err(_) => Err("the store did not answer within 2 s".into()),
    }
}

/// `GET /readyz`: ready once the views have caught up with the log. The body
/// also names the status of each sink running on this node (`sinks`), which
/// never makes the node unready: sign-ins go on while a sink is down.
pub fn readyz(
    state: State,
) -> impl Filter<Extract = (impl warp::Reply,), Error = warp::Rejection> + Clone {
    warp::path!("readyz")
        .and(warp::get())
        .and(with_state(state))
        .then(|state: State| async move {
            let (status, mut body) = match state.views.progress() {
                Progress::Running {
                    position,
                    caught_up: true,
                } => (
                    StatusCode::OK,
                    json!({"status": "ready", "position": position}),
                ),
                Progress::Running {
                    position,
                    caught_up: false,
                } => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({"status": "catching_up", "position": position}),
                ),
                Progress::Failed { position } => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({"status": "failed", "position": position}),
                ),
            };
            // A store that does not answer (a database that went away) makes
            // the node unready, whatever the views say.
            let (status, body0) = match store_answers(&state).await {
                Ok(()) => (status, body),
                Err(why) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({"status": "store_unavailable", "detail": why, "position": body["position"]}),
                ),
            };
            body = body0;
            let sinks = match state.metrics.sink_statuses.lock() {
                Ok(s) => serde_json::to_value(&*s).unwrap_or_default(),
                Err(_) => serde_json::Value::Null,
            };
            if sinks.as_object().is_some_and(|s| !s.is_empty()) {
                body["sinks"] = sinks;
            }
            warp::reply::with_status(warp::reply::json(&body), status)
        })
}

/// `GET /metrics`: Prometheus text format.
pub fn metrics(
    state: State,
) -> impl Filter<Extract = (impl warp::Reply,), Error = warp::Rejection> + Clone {
    warp::path!("metrics")
        .and(warp::get())
        .and(with_state(state))
        .and(super::header_lossy("authorization"))
        .then(|state: State, auth: Option<String>| async move {
            if let Some(token) = &state.config.metrics.token {
                let given = auth
                    .as_deref()
                    .and_then(|a| a.strip_prefix("Bearer "))
                    .unwrap_or("");
                if !crate::crypto::ct_eq(given.as_bytes(), token.expose().as_bytes()) {
                    let mut res = warp::reply::with_status(
                        "metrics.token is set: send it as a bearer token\n".to_string(),
                        StatusCode::UNAUTHORIZED,
                    )
                    .into_response();
                    res.headers_mut().insert(
                        "www-authenticate",
                        warp::http::HeaderValue::from_static("Bearer realm=\"authlog metrics\""),
                    );
                    return res;
                }
            }
            // Lag is computed when scraped, so a stalled or stopped runner shows it.
            let head = state.store.head().await.ok().flatten();
            let applied = match state.views.progress() {
                Progress::Running { position, .. } | Progress::Failed { position } => position,
            };
            let lag = match (head, applied) {
                (None, _) => 0,
                (Some(h), None) => h.seq + 1,
                (Some(h), Some(_)) => h
                    .seq
                    .saturating_sub(state.metrics.projection_seq.get() as u64),
            };
            state.metrics.projection_lag.set(lag as i64);
            warp::reply::with_header(
                state.metrics.render(),
                "content-type",
                "text/plain; version=0.0.4; charset=utf-8",
            )
            .into_response()
        })
}
