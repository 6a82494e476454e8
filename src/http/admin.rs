//! Admin API over the log itself: the NDJSON event stream and the store check.

use std::collections::HashMap;

use authlog_schemas::Position;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use warp::Filter;

use super::{ApiError, State, admin_auth, with_state};
use crate::store::ReadFrom;

fn parse_from(query: &HashMap<String, String>) -> Result<ReadFrom, ApiError> {
    match query.get("from") {
        None => Ok(ReadFrom::Start),
        Some(p) => p
            .parse::<Position>()
            .map(ReadFrom::At)
            .map_err(|e| ApiError::InvalidRequest(format!("from: {e}"))),
    }
}

fn parse_follow(query: &HashMap<String, String>) -> Result<bool, ApiError> {
    match query.get("follow").map(String::as_str) {
        None | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") | Some("") => Ok(true),
        Some(other) => Err(ApiError::InvalidRequest(format!(
            "follow: expected true or false, got {other:?}"
        ))),
    }
}

/// `GET /admin/events?from=POSITION&follow=true`: the log as NDJSON, bodies as
/// stored with their store-assigned fields, never a sidecar. Without `follow`
/// it ends at the log's head as of the request. A read of the whole trail: it
/// is recorded (`audit.accessed`) before the first byte goes out.
pub fn events(
    state: State,
) -> impl Filter<Extract = (impl warp::Reply,), Error = warp::Rejection> + Clone {
    warp::path!("admin" / "events")
        .and(warp::get())
        .and(admin_auth(state.clone()))
        .and(warp::query::<HashMap<String, String>>())
        .and(super::oidc::ctx(state.clone()))
        .and(with_state(state))
        .and_then(
            |token: String, query: HashMap<String, String>, ctx, state: State| async move {
                let from = parse_from(&query)?;
                let follow = parse_follow(&query)?;
                let head = state.store.head().await.map_err(ApiError::from)?;
                tracing::info!(token = %token, ?from, follow, "admin: reading the event log");
                let mut filter = serde_json::Map::new();
                if let Some(f) = query.get("from") {
                    filter.insert("from".into(), serde_json::json!(f));
                }
                filter.insert("follow".into(), serde_json::json!(follow));
                // How many events up to the head as of now (the follow stream's
                // later events are not counted).
                let count = match (head, from) {
                    (None, _) => 0,
                    (Some(h), ReadFrom::Start) => h.seq + 1,
                    (Some(h), ReadFrom::At(p) | ReadFrom::After(p)) => {
                        (h.seq + 1).saturating_sub(p.commit)
                    }
                };
                let reader = super::audit::Reader {
                    name: token.clone(),
                    ctx,
                };
                super::audit::record(&state, &reader, "/admin/events", filter, count).await?;
                let (tx, mut rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(64);
                let store = state.store.clone();
                let mut shutting_down = state.shutting_down.clone();
                tokio::spawn(async move {
                    let line = |r: &authlog_schemas::Recorded| {
                        let mut line = r.to_export_line();
                        line.push(b'\n');
                        Ok(Bytes::from(line))
                    };
                    if follow {
                        let mut source = store.subscribe_all(from);
                        loop {
                            let item = tokio::select! {
                                item = source.next() => item,
                                _ = shutting_down.wait_for(|s| *s) => None,
                            };
                            let Some(item) = item else { return };
                            let failed = item.is_err();
                            let chunk = item
                                .map_err(|e| std::io::Error::other(e.to_string()))
                                .and_then(|r| line(&r));
                            if tx.send(chunk).await.is_err() || failed {
                                return;
                            }
                        }
                    }
                    // Up to the head as of the request, in short pages.
                    let Some(head) = head else { return };
                    let mut from = from;
                    loop {
                        let page = match store.read_all(from, 256).await {
                            Ok(p) => p,
                            Err(e) => {
                                let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                                return;
                            }
                        };
                        let Some(last) = page.last().map(|r| r.position) else {
                            return;
                        };
                        for r in &page {
                            if r.position > head.position || tx.send(line(r)).await.is_err() {
                                return;
                            }
                        }
                        from = ReadFrom::After(last);
                    }
                });
                let body = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
                Ok::<_, warp::Rejection>(warp::reply::with_header(
                    warp::reply::stream(body),
                    "content-type",
                    "application/x-ndjson",
                ))
            },
        )
}

/// `GET /admin/store/check`: `store check` through a running server.
pub fn store_check(
    state: State,
) -> impl Filter<Extract = (impl warp::Reply,), Error = warp::Rejection> + Clone {
    warp::path!("admin" / "store" / "check")
        .and(warp::get())
        .and(admin_auth(state.clone()))
        .and(with_state(state))
        .and_then(|token: String, state: State| async move {
            tracing::info!(token = %token, "admin: checking the store");
            let report = state.store.check().await.map_err(ApiError::from)?;
            Ok::<_, warp::Rejection>(warp::reply::json(&report))
        })
}
