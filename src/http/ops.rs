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

/// `GET /readyz`: ready once the views have caught up with the log.
pub fn readyz(
    state: State,
) -> impl Filter<Extract = (impl warp::Reply,), Error = warp::Rejection> + Clone {
    warp::path!("readyz")
        .and(warp::get())
        .and(with_state(state))
        .map(|state: State| {
            let (status, body) = match state.views.progress() {
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
        .map(|state: State| {
            warp::reply::with_header(
                state.metrics.render(),
                "content-type",
                "text/plain; version=0.0.4; charset=utf-8",
            )
        })
}
