//! Health, readiness and metrics.

use serde_json::json;
use warp::Filter;
use warp::http::StatusCode;

use super::{State, with_state};
use crate::views::Progress;

/// `GET /healthz`: the process answers.
pub fn healthz() -> impl Filter<Extract = (impl warp::Reply,), Error = warp::Rejection> + Clone {
    warp::path!("healthz")
        .and(warp::get())
        .map(|| warp::reply::json(&json!({"status": "ok"})))
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
        .map(|state: State| {
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
        .then(|state: State| async move {
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
        })
}
