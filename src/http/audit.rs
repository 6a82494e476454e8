//! The audit API (`/admin/audit/…`) and the compliance officer's page.
//!
//! Readers are admin tokens or auditor tokens (which read the audit trail and
//! nothing else), presented as a bearer token, or — on the page — a session
//! cookie (HttpOnly, SameSite=Strict, sealed under the KEK) together with an
//! `x-csrf-token` header on every request. Every read of the trail's contents
//! appends an `audit.accessed` event naming the token, the filter and the count.

use std::time::Duration;

use authlog_schemas::{Actor, ActorKind, Timestamp, data};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::mpsc;
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::{HeaderValue, StatusCode};
use warp::reply::{Reply, Response};

use super::{ApiError, State, with_state};
use crate::audit::export::{self, ExportSpec, Format};
use crate::audit::merkle;
use crate::audit::query::{Filter as AuditFilter, Page, query};
use crate::audit::tree::Direction;
use crate::audit::{AuditError, read_checkpoints};
use crate::oidc::html::Text;
use crate::oidc::service::{self, Ctx, Draft};
use crate::store::Expected;

/// The stream `audit.accessed` events go to.
const ACCESS_STREAM: &str = "audit-access";
const COOKIE: &str = "authlog_audit";
const LOGIN_COOKIE: &str = "authlog_audit_login";
const SESSION_MS: i64 = 2 * 3600 * 1000;
/// How long a query waits for the audit index to reach the log's head.
const INDEX_WAIT: Duration = Duration::from_secs(3);

const UI_PAGE: &str = include_str!("audit_ui.html");
const LOGIN_PAGE: &str = include_str!("audit_login.html");

impl From<AuditError> for ApiError {
    fn from(e: AuditError) -> Self {
        match e {
            AuditError::NoKey => ApiError::Missing(e.to_string()),
            AuditError::Behind(..) => ApiError::Unavailable(e.to_string()),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

/// Who reads the audit trail: a configured token's name.
#[derive(Debug, Clone)]
pub struct Reader {
    pub name: String,
    pub ctx: Ctx,
}

/// The page's session, sealed into its cookie.
#[derive(Serialize, Deserialize)]
struct UiSession {
    /// Token name.
    n: String,
    /// Expiry, Unix ms.
    e: i64,
    /// CSRF token.
    c: String,
    /// The first 16 bytes of the token's SHA-256, hex: a replaced token ends
    /// the sessions it opened even if its name stays.
    t: String,
}

fn cookie_value(header: Option<&str>, name: &str) -> Option<String> {
    header?.split(';').find_map(|c| {
        let (k, v) = c.trim().split_once('=')?;
        (k == name && !v.is_empty()).then(|| v.to_string())
    })
}

/// The name of the admin or auditor token whose SHA-256 is `presented`,
/// comparing with every one in constant time.
fn token_name(state: &State, presented: &[u8; 32]) -> Option<String> {
    let mut found = None;
    for (name, digest) in state.admin_tokens.iter().chain(&state.audit.auditor_tokens) {
        if bool::from(digest.ct_eq(presented)) {
            found = Some(name.clone());
        }
    }
    found
}

fn open_session(state: &State, cookie: Option<&str>) -> Option<UiSession> {
    let value = cookie_value(cookie, COOKIE)?;
    let sealed = crate::crypto::b64url_decode(&value)?;
    let opened = state.kek.open(&sealed).ok()?;
    let s: UiSession = serde_json::from_slice(&opened).ok()?;
    let still_configured = state
        .admin_tokens
        .iter()
        .chain(&state.audit.auditor_tokens)
        .any(|(n, d)| {
            *n == s.n && bool::from(hex::encode(&d[..16]).as_bytes().ct_eq(s.t.as_bytes()))
        });
    (s.e > service::now().unix_millis() && still_configured).then_some(s)
}

/// An admin or auditor token (bearer), or the page's cookie with its CSRF header.
fn reader(state: State) -> impl Filter<Extract = (Reader,), Error = warp::Rejection> + Clone {
    super::header_lossy("authorization")
        .and(super::header_lossy("cookie"))
        .and(super::header_lossy("x-csrf-token"))
        .and(super::oidc::ctx(state.clone()))
        .and(with_state(state))
        .and_then(
            |auth: Option<String>,
             cookie: Option<String>,
             csrf: Option<String>,
             ctx: Ctx,
             state: State| async move {
                if let Some(h) = auth {
                    let token = h
                        .strip_prefix("Bearer ")
                        .or_else(|| h.strip_prefix("bearer "))
                        .ok_or_else(|| warp::reject::custom(ApiError::InvalidToken))?;
                    let guard = super::TokenGuard::new(&state, ctx.ip)?;
                    let presented: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
                    let found = token_name(&state, &presented);
                    guard.outcome(true, found.is_some());
                    return found
                        .map(|name| Reader { name, ctx })
                        .ok_or_else(|| warp::reject::custom(ApiError::InvalidToken));
                }
                let Some(session) = open_session(&state, cookie.as_deref()) else {
                    return Err(warp::reject::custom(ApiError::InvalidToken));
                };
                let ok = csrf.is_some_and(|c| bool::from(c.as_bytes().ct_eq(session.c.as_bytes())));
                if !ok {
                    return Err(warp::reject::custom(ApiError::Forbidden(
                        "missing or wrong x-csrf-token header".into(),
                    )));
                }
                Ok(Reader {
                    name: session.n,
                    ctx,
                })
            },
        )
}

/// Appends `audit.accessed` (durably, before the answer goes out).
pub(super) async fn record(
    state: &State,
    reader: &Reader,
    endpoint: &str,
    filter: serde_json::Map<String, serde_json::Value>,
    count: u64,
) -> Result<(), ApiError> {
    let actor = Actor {
        kind: ActorKind::Admin,
        id: reader.name.clone(),
    };
    let body = data::AuditAccessed {
        token_name: reader.name.clone(),
        endpoint: endpoint.to_string(),
        filter,
        result_count: count,
    };
    let envelope = service::draft(ACCESS_STREAM, actor, &body, Some(&reader.ctx))?;
    service::commit(
        state,
        ACCESS_STREAM,
        Expected::Any,
        vec![Draft {
            envelope,
            secret: None,
        }],
    )
    .await
    .map_err(ApiError::from)?;
    Ok(())
}

/// The indexed size once the index has caught up with the log's head as of
/// now; 503 if it does not within [`INDEX_WAIT`] (never a stale answer).
pub(super) async fn indexed_size(state: &State) -> Result<u64, ApiError> {
    let want = state.store.head().await?.map_or(0, |h| h.seq + 1);
    let size = state.audit.tree.wait_for(want, INDEX_WAIT).await;
    if size < want {
        return Err(AuditError::Behind(size, want).into());
    }
    Ok(size)
}

fn pairs()
-> impl Filter<Extract = (Vec<(String, String)>,), Error = std::convert::Infallible> + Clone {
    warp::query::raw()
        .or(warp::any().map(String::new))
        .unify()
        .map(|q: String| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
}

fn param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn number<T: std::str::FromStr>(
    pairs: &[(String, String)],
    name: &str,
) -> Result<Option<T>, ApiError> {
    param(pairs, name)
        .map(|v| {
            v.parse::<T>().map_err(|_| {
                ApiError::InvalidRequest(format!("{name} must be a non-negative integer"))
            })
        })
        .transpose()
}

fn filter_of(pairs: &[(String, String)], skip: &[&str]) -> Result<AuditFilter, ApiError> {
    AuditFilter::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())), skip)
        .map_err(|e| ApiError::InvalidRequest(e.0))
}

fn direction(pairs: &[(String, String)], default: Direction) -> Result<Direction, ApiError> {
    match param(pairs, "order") {
        None => Ok(default),
        Some("asc") => Ok(Direction::Forward),
        Some("desc") => Ok(Direction::Backward),
        Some(o) => Err(ApiError::InvalidRequest(format!(
            "order must be asc or desc, not {o:?}"
        ))),
    }
}

fn json_response(body: Vec<u8>) -> Response {
    let mut res = Response::new(body.into());
    let h = res.headers_mut();
    h.insert("content-type", HeaderValue::from_static("application/json"));
    h.insert("cache-control", HeaderValue::from_static("no-store"));
    res
}

/// One page of a query from the request's `limit`, `after` and `order`, with
/// the filter as `audit.accessed` records it (cursor included).
async fn page_of(
    state: &State,
    pairs: &[(String, String)],
    filter: &AuditFilter,
    default_order: Direction,
) -> Result<(Page, serde_json::Map<String, serde_json::Value>), ApiError> {
    let limit = number::<usize>(pairs, "limit")?.unwrap_or(100);
    let after = number::<u64>(pairs, "after")?;
    let dir = direction(pairs, default_order)?;
    let size = indexed_size(state).await?;
    let page = query(
        &state.store,
        &state.audit.tree,
        filter,
        after,
        limit,
        dir,
        size,
    )
    .await?;
    let mut recorded = filter.to_json();
    if let Some(a) = after {
        recorded.insert("after".into(), json!(a.to_string()));
    }
    Ok((page, recorded))
}

/// `GET /admin/audit/events`.
async fn events(
    reader: Reader,
    pairs: Vec<(String, String)>,
    state: State,
) -> Result<Response, warp::Rejection> {
    let filter = filter_of(&pairs, &["limit", "after", "order"])?;
    let (page, f) = page_of(&state, &pairs, &filter, Direction::Forward).await?;
    record(
        &state,
        &reader,
        "/admin/audit/events",
        f,
        page.events.len() as u64,
    )
    .await?;
    let mut out = b"{\"events\":[".to_vec();
    for (i, r) in page.events.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&r.to_export_line());
    }
    out.extend_from_slice(b"],\"next\":");
    out.extend_from_slice(
        json!(page.next.map(|n| n.to_string()))
            .to_string()
            .as_bytes(),
    );
    out.push(b'}');
    Ok(json_response(out))
}

/// The user a history is asked for: a user id, a username, or (for users since
/// erased from the views) the subject as given.
async fn resolve_user(state: &State, id: &str) -> (String, Option<String>) {
    let views = state.views.read().await;
    if let Some(u) = views.users.get(id) {
        return (u.id.clone(), Some(u.username.clone()));
    }
    if let Some(u) = views
        .users
        .by_username(&authlog_projections::normalize_username(id))
    {
        return (u.id.clone(), Some(u.username.clone()));
    }
    (id.to_string(), None)
}

/// `GET /admin/audit/users/{id}/history`: newest first by default.
async fn history(
    id: String,
    reader: Reader,
    pairs: Vec<(String, String)>,
    state: State,
) -> Result<Response, warp::Rejection> {
    let id = percent_decode(&id);
    if pairs.iter().any(|(k, _)| k == "subject") {
        return Err(
            ApiError::InvalidRequest("the user is in the path, not in subject".into()).into(),
        );
    }
    let (user_id, username) = resolve_user(&state, &id).await;
    let mut filter = filter_of(&pairs, &["limit", "after", "order"])?;
    filter.subject = Some(user_id.clone());
    let (page, f) = page_of(&state, &pairs, &filter, Direction::Backward).await?;
    let entries: Vec<serde_json::Value> = page
        .events
        .iter()
        .filter_map(|r| {
            let env = r.envelope().ok()?;
            let source = env.source.clone().unwrap_or_default();
            Some(json!({
                "seq": r.seq,
                "time": env.time.to_string(),
                "type": env.event_type.as_str(),
                "outcome": env.outcome,
                "reason": env.reason,
                "ip": source.ip,
                "user_agent": source.user_agent,
                "client_id": env.client_id,
                "session_id": env.session_id,
                "data": env.data,
            }))
        })
        .collect();
    record(
        &state,
        &reader,
        "/admin/audit/users/{id}/history",
        f,
        entries.len() as u64,
    )
    .await?;
    let body = json!({
        "user_id": user_id,
        "username": username,
        "entries": entries,
        "next": page.next.map(|n| n.to_string()),
    });
    Ok(json_response(body.to_string().into_bytes()))
}

fn percent_decode(s: &str) -> String {
    form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// `GET /admin/audit/export?format=ndjson|csv&proofs=true|false&checkpoint=SIZE`.
async fn export_route(
    reader: Reader,
    pairs: Vec<(String, String)>,
    state: State,
) -> Result<Response, warp::Rejection> {
    let filter = filter_of(&pairs, &["format", "proofs", "checkpoint"])?;
    let format = match param(&pairs, "format") {
        None => Format::Ndjson,
        Some(f) => Format::parse(f).ok_or_else(|| {
            ApiError::InvalidRequest(format!("format must be ndjson or csv, not {f:?}"))
        })?,
    };
    let proofs = match param(&pairs, "proofs") {
        None => format == Format::Ndjson && state.audit.key.is_some(),
        Some("true") => true,
        Some("false") => false,
        Some(p) => {
            return Err(ApiError::InvalidRequest(format!(
                "proofs must be true or false, not {p:?}"
            ))
            .into());
        }
    };
    if proofs && format != Format::Ndjson {
        return Err(ApiError::InvalidRequest("proofs come with format=ndjson only".into()).into());
    }
    let key = match (proofs, &state.audit.key) {
        (false, _) => None,
        (true, Some(k)) => Some(k.clone()),
        (true, None) => {
            return Err(ApiError::InvalidRequest(format!(
                "{}; or export with proofs=false",
                AuditError::NoKey
            ))
            .into());
        }
    };
    let spec = match key {
        None => ExportSpec {
            filter,
            format,
            proofs: None,
            size: indexed_size(&state).await?,
        },
        Some(key) => {
            let cp = match number::<u64>(&pairs, "checkpoint")? {
                Some(size) => read_checkpoints(&state.store)
                    .await
                    .map_err(ApiError::from)?
                    .into_iter()
                    .rev()
                    .find(|c| c.tree_size == size)
                    .ok_or_else(|| {
                        ApiError::InvalidRequest(format!(
                            "the log has no checkpoint of size {size}"
                        ))
                    })?,
                None => {
                    state
                        .audit
                        .checkpoint_now(&state.store, reader_actor(&reader))
                        .await
                        .map_err(ApiError::from)?
                        .0
                }
            };
            // The trailer is signed with the current key: the checkpoint must be
            // too, so one public key verifies the whole export.
            if cp.key_id != key.key_id() {
                return Err(ApiError::InvalidRequest(format!(
                    "the checkpoint of size {} is signed by an earlier audit key ({}); export against a checkpoint of the current key",
                    cp.tree_size, cp.key_id
                ))
                .into());
            }
            ExportSpec {
                filter,
                format,
                size: cp.tree_size,
                proofs: Some((cp, key)),
            }
        }
    };
    // Recorded before the first byte goes out, and again with the count at the end.
    let format_name = if format == Format::Csv {
        "csv"
    } else {
        "ndjson"
    };
    let mut f = spec.filter.to_json();
    f.insert("format".into(), json!(format_name));
    f.insert("stage".into(), json!("started"));
    record(&state, &reader, "/admin/audit/export", f, 0).await?;
    let (tx, mut rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    let st = state.clone();
    tokio::spawn(async move {
        let mut count = 0;
        let outcome = export::run(&st.store, &st.audit.tree, &spec, &tx, &mut count).await;
        if let Err(e) = &outcome {
            tracing::warn!(error = %e, "audit export ended early");
            let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
        }
        let mut f = spec.filter.to_json();
        f.insert(
            "format".into(),
            json!(if spec.format == Format::Csv {
                "csv"
            } else {
                "ndjson"
            }),
        );
        f.insert("stage".into(), json!("ended"));
        f.insert("complete".into(), json!(outcome.is_ok()));
        if let Err(e) = record(&st, &reader, "/admin/audit/export", f, count).await {
            tracing::error!(error = %e, "recording an audit export");
        }
    });
    let body = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let mut res = warp::reply::stream(body).into_response();
    let ext = if format == Format::Csv {
        "csv"
    } else {
        "ndjson"
    };
    let h = res.headers_mut();
    h.insert(
        "content-type",
        HeaderValue::from_static(format.content_type()),
    );
    h.insert("cache-control", HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"authlog-audit.{ext}\"")) {
        h.insert("content-disposition", v);
    }
    Ok(res)
}

fn reader_actor(reader: &Reader) -> Actor {
    Actor {
        kind: ActorKind::Admin,
        id: reader.name.clone(),
    }
}

/// `GET /admin/audit/checkpoint`: the latest.
async fn latest_checkpoint(_reader: Reader, state: State) -> Result<Response, warp::Rejection> {
    // On a shared log another node may have signed a newer one; if the store
    // cannot say, the one known here is still a signed checkpoint.
    if state.store.is_shared()
        && let Err(e) = state.audit.load_latest(&state.store).await
    {
        tracing::warn!(error = %e, "reading the latest audit checkpoint");
    }
    match state.audit.latest().await {
        Some(cp) => Ok(warp::reply::json(&cp).into_response()),
        None if state.audit.key.is_none() => {
            Err(ApiError::Missing(AuditError::NoKey.to_string()).into())
        }
        None => Err(ApiError::Missing("no checkpoint has been signed yet".into()).into()),
    }
}

/// `POST /admin/audit/checkpoint`: sign one now.
/// Signs one now (201), or answers the latest when the log has not grown since
/// it (200): no reader can grow the log with this.
async fn new_checkpoint(reader: Reader, state: State) -> Result<Response, warp::Rejection> {
    let (cp, new) = state
        .audit
        .checkpoint_now(&state.store, reader_actor(&reader))
        .await
        .map_err(ApiError::from)?;
    let status = if new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(warp::reply::with_status(warp::reply::json(&cp), status).into_response())
}

/// `GET /admin/audit/checkpoints`: every one, oldest first.
async fn all_checkpoints(_reader: Reader, state: State) -> Result<Response, warp::Rejection> {
    let all = read_checkpoints(&state.store)
        .await
        .map_err(ApiError::from)?;
    Ok(warp::reply::json(&json!({ "checkpoints": all })).into_response())
}

/// `GET /admin/audit/key`: the public key checkpoints verify with.
async fn public_key(_reader: Reader, state: State) -> Result<Response, warp::Rejection> {
    let Some(key) = &state.audit.key else {
        return Err(ApiError::Missing(AuditError::NoKey.to_string()).into());
    };
    let previous: Vec<serde_json::Value> = state
        .audit
        .trusted
        .keys()
        .iter()
        .filter(|k| **k != key.public())
        .map(|k| json!({"key_id": k.key_id(), "public_key": k.to_base64()}))
        .collect();
    Ok(warp::reply::json(&json!({
        "algorithm": "Ed25519",
        "key_id": key.key_id(),
        "public_key": key.public().to_base64(),
        "previous": previous,
    }))
    .into_response())
}

fn hexes(hashes: &[merkle::Hash]) -> Vec<String> {
    hashes.iter().map(hex::encode).collect()
}

/// `GET /admin/audit/proof/inclusion?seq=N&tree_size=M`.
async fn inclusion(
    _reader: Reader,
    pairs: Vec<(String, String)>,
    state: State,
) -> Result<Response, warp::Rejection> {
    let seq = number::<u64>(&pairs, "seq")?
        .ok_or_else(|| ApiError::InvalidRequest("seq is required".into()))?;
    let size = number::<u64>(&pairs, "tree_size")?
        .ok_or_else(|| ApiError::InvalidRequest("tree_size is required".into()))?;
    let have = state
        .audit
        .tree
        .size()
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    if size > have {
        return Err(ApiError::InvalidRequest(format!(
            "tree_size {size} is beyond the tree's {have} leaves"
        ))
        .into());
    }
    if seq >= size {
        return Err(
            ApiError::InvalidRequest(format!("seq {seq} is not below tree_size {size}")).into(),
        );
    }
    let tree = state.audit.tree.clone();
    let (leaf, root, path) = tokio::task::spawn_blocking(move || {
        let r = tree.reader()?;
        use merkle::Leaves;
        Ok::<_, crate::audit::tree::TreeError>((
            r.leaf(seq),
            merkle::root(&r, 0, size),
            merkle::inclusion_proof(&r, seq, 0, size),
        ))
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(warp::reply::json(&json!({
        "seq": seq,
        "tree_size": size,
        "leaf_hash": hex::encode(leaf),
        "root_hash": hex::encode(root),
        "inclusion": hexes(&path),
    }))
    .into_response())
}

/// `GET /admin/audit/proof/consistency?from=M1&to=M2`.
async fn consistency(
    _reader: Reader,
    pairs: Vec<(String, String)>,
    state: State,
) -> Result<Response, warp::Rejection> {
    let from = number::<u64>(&pairs, "from")?
        .ok_or_else(|| ApiError::InvalidRequest("from is required".into()))?;
    let to = number::<u64>(&pairs, "to")?
        .ok_or_else(|| ApiError::InvalidRequest("to is required".into()))?;
    let have = state
        .audit
        .tree
        .size()
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    if from == 0 || from > to || to > have {
        return Err(ApiError::InvalidRequest(format!(
            "need 0 < from <= to <= {have} (the tree's size)"
        ))
        .into());
    }
    let tree = state.audit.tree.clone();
    let (a, b, path) = tokio::task::spawn_blocking(move || {
        let r = tree.reader()?;
        Ok::<_, crate::audit::tree::TreeError>((
            merkle::root(&r, 0, from),
            merkle::root(&r, 0, to),
            merkle::consistency_proof(&r, from, to),
        ))
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(warp::reply::json(&json!({
        "from": from,
        "to": to,
        "from_root": hex::encode(a),
        "to_root": hex::encode(b),
        "consistency": hexes(&path),
    }))
    .into_response())
}

/// `GET /admin/audit/verify`: the whole log against its checkpoints and the
/// leaves recorded as it grew (one at a time).
async fn verify(reader: Reader, state: State) -> Result<Response, warp::Rejection> {
    let Ok(_permit) = state.audit.verifying.try_acquire() else {
        return Err(ApiError::Unavailable("a verification is already running".into()).into());
    };
    let report = crate::audit::verify::verify_log(
        &state.store,
        Some(&state.audit.tree),
        &state.audit.trusted,
        &[],
    )
    .await
    .map_err(ApiError::from)?;
    record(
        &state,
        &reader,
        "/admin/audit/verify",
        serde_json::Map::new(),
        report.events,
    )
    .await?;
    let checked_at = service::now().to_string();
    state
        .audit
        .set_last_report(checked_at.clone(), report.clone());
    Ok(warp::reply::json(&report_json(&report, &checked_at)).into_response())
}

fn report_json(report: &crate::audit::verify::Report, checked_at: &str) -> serde_json::Value {
    let mut body = serde_json::to_value(report).unwrap_or_default();
    body["ok"] = json!(report.ok());
    body["checked_at"] = json!(checked_at);
    body
}

/// `GET /admin/audit/verify/last`: the latest full verification (at start-up or
/// on request), without reading the log again.
async fn last_verification(_reader: Reader, state: State) -> Result<Response, warp::Rejection> {
    let Some((at, report)) = state.audit.last_report() else {
        return Err(ApiError::Missing("no verification has run yet".into()).into());
    };
    Ok(warp::reply::json(&report_json(&report, &at)).into_response())
}

/// `GET /admin/audit/stats?from&to`: sign-ins per hour (default: the last 7 days).
async fn stats(
    reader: Reader,
    pairs: Vec<(String, String)>,
    state: State,
) -> Result<Response, warp::Rejection> {
    let time = |name: &str| -> Result<Option<Timestamp>, ApiError> {
        param(&pairs, name)
            .map(|v| {
                v.parse::<Timestamp>()
                    .map_err(|e| ApiError::InvalidRequest(format!("{name}: {e}")))
            })
            .transpose()
    };
    let to = time("to")?.unwrap_or_else(service::now);
    let from = time("from")?.unwrap_or_else(|| to.plus_millis(-7 * 24 * 3600 * 1000));
    if from > to {
        return Err(ApiError::InvalidRequest("from is after to".into()).into());
    }
    if let Some((k, _)) = pairs.iter().find(|(k, _)| k != "from" && k != "to") {
        return Err(ApiError::InvalidRequest(format!("unknown parameter {k:?}")).into());
    }
    indexed_size(&state).await?;
    let tree = state.audit.tree.clone();
    let (a, b) = (
        from.unix_millis().max(0) as u64,
        to.unix_millis().max(0) as u64,
    );
    let hours = tokio::task::spawn_blocking(move || tree.signins(a, b.saturating_add(1)))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let total: u64 = hours.iter().map(|(_, s, f)| s + f).sum();
    let mut f = serde_json::Map::new();
    f.insert("from".into(), json!(from.to_string()));
    f.insert("to".into(), json!(to.to_string()));
    record(&state, &reader, "/admin/audit/stats", f, total).await?;
    let hours: Vec<serde_json::Value> = hours
        .into_iter()
        .map(|(h, s, f)| {
            json!({
                "hour": Timestamp::from_unix_millis(h as i64).to_string(),
                "succeeded": s,
                "failed": f,
            })
        })
        .collect();
    Ok(warp::reply::json(&json!({
        "from": from.to_string(),
        "to": to.to_string(),
        "hours": hours,
    }))
    .into_response())
}

// ---- the page -------------------------------------------------------------------

fn secure(state: &State) -> &'static str {
    if state.config.issuer.starts_with("https://") {
        "; Secure"
    } else {
        ""
    }
}

fn html(page: &str, nonce: &str, values: &[(&str, &str)]) -> Response {
    let mut body = page.replace("__NONCE__", nonce);
    for (k, v) in values {
        body = body.replace(k, &Text(v).to_string());
    }
    let csp = format!(
        "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; connect-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    );
    let mut res = Response::new(body.into());
    let h = res.headers_mut();
    h.insert(
        "content-type",
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(&csp) {
        h.insert("content-security-policy", v);
    }
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert("cache-control", HeaderValue::from_static("no-store"));
    res
}

fn random() -> Result<String, ApiError> {
    crate::crypto::secret_token().map_err(|e| ApiError::Internal(e.to_string()))
}

fn set_cookie(mut res: Response, cookie: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(cookie) {
        res.headers_mut().append("set-cookie", v);
    }
    res
}

fn login_page(state: &State, error: &str) -> Result<Response, ApiError> {
    let csrf = random()?;
    let nonce = random()?;
    let mut res = html(
        LOGIN_PAGE,
        &nonce,
        &[("__LOGIN_CSRF__", &csrf), ("__ERROR__", error)],
    );
    if !error.is_empty() {
        *res.status_mut() = StatusCode::UNAUTHORIZED;
    }
    Ok(set_cookie(
        res,
        &format!(
            "{LOGIN_COOKIE}={csrf}; Path=/admin/audit; HttpOnly; SameSite=Strict; Max-Age=3600{}",
            secure(state)
        ),
    ))
}

/// `GET /admin/audit/ui`: the page, or its sign-in form.
async fn ui(cookie: Option<String>, state: State) -> Result<Response, warp::Rejection> {
    match open_session(&state, cookie.as_deref()) {
        Some(s) => {
            let nonce = random()?;
            Ok(html(
                UI_PAGE,
                &nonce,
                &[("__CSRF__", &s.c), ("__NAME__", &s.n)],
            ))
        }
        None => Ok(login_page(&state, "")?),
    }
}

/// `POST /admin/audit/ui/session`: a token exchanged for the page's cookie.
async fn ui_sign_in(
    cookie: Option<String>,
    form: Vec<(String, String)>,
    state: State,
    ip: std::net::IpAddr,
) -> Result<Response, warp::Rejection> {
    let guard = match super::TokenGuard::new(&state, ip) {
        Ok(g) => g,
        Err(_) => {
            let mut res = login_page(
                &state,
                "Too many wrong tokens from this address; wait a minute and try again.",
            )?;
            *res.status_mut() = warp::http::StatusCode::TOO_MANY_REQUESTS;
            return Ok(res);
        }
    };
    let field = |n: &str| form.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
    let expected = cookie_value(cookie.as_deref(), LOGIN_COOKIE);
    let csrf_ok = match (expected, field("csrf")) {
        (Some(a), Some(b)) => bool::from(a.as_bytes().ct_eq(b.as_bytes())),
        _ => false,
    };
    if !csrf_ok {
        return Ok(login_page(&state, "The sign-in form expired; try again.")?);
    }
    let token = field("token").unwrap_or_default().trim();
    let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    let found = token_name(&state, &presented);
    guard.outcome(!token.is_empty(), found.is_some());
    let Some(name) = found else {
        state
            .metrics
            .http_requests
            .with_label_values(&["failure", "audit_ui_sign_in"])
            .inc();
        return Ok(login_page(
            &state,
            "That token is not an admin or auditor token.",
        )?);
    };
    let session = UiSession {
        n: name,
        e: service::now().unix_millis() + SESSION_MS,
        c: random()?,
        t: hex::encode(&presented[..16]),
    };
    let sealed = state
        .kek
        .seal(&serde_json::to_vec(&session).map_err(|e| ApiError::Internal(e.to_string()))?)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut res = Response::new(Vec::<u8>::new().into());
    *res.status_mut() = StatusCode::SEE_OTHER;
    res.headers_mut()
        .insert("location", HeaderValue::from_static("/admin/audit/ui"));
    let res = set_cookie(
        res,
        &format!(
            "{COOKIE}={}; Path=/admin/audit; HttpOnly; SameSite=Strict; Max-Age={}{}",
            crate::crypto::b64url(&sealed),
            SESSION_MS / 1000,
            secure(&state)
        ),
    );
    Ok(set_cookie(
        res,
        &format!("{LOGIN_COOKIE}=; Path=/admin/audit; HttpOnly; SameSite=Strict; Max-Age=0"),
    ))
}

/// `POST /admin/audit/ui/logout`.
async fn ui_sign_out(_reader: Reader, state: State) -> Result<Response, warp::Rejection> {
    let mut res = Response::new(Vec::<u8>::new().into());
    *res.status_mut() = StatusCode::NO_CONTENT;
    Ok(set_cookie(
        res,
        &format!(
            "{COOKIE}=; Path=/admin/audit; HttpOnly; SameSite=Strict; Max-Age=0{}",
            secure(&state)
        ),
    ))
}

fn form() -> impl Filter<Extract = (Vec<(String, String)>,), Error = warp::Rejection> + Clone {
    super::bounded_body(4096).map(|body: Bytes| {
        form_urlencoded::parse(&body)
            .into_owned()
            .collect::<Vec<_>>()
    })
}

pub fn routes(state: State) -> BoxedFilter<(Response,)> {
    let r = || reader(state.clone());
    let s = || with_state(state.clone());
    let get = warp::get();
    let events = warp::path!("admin" / "audit" / "events")
        .and(get)
        .and(r())
        .and(pairs())
        .and(s())
        .and_then(events);
    let history = warp::path!("admin" / "audit" / "users" / String / "history")
        .and(get)
        .and(r())
        .and(pairs())
        .and(s())
        .and_then(history);
    let export = warp::path!("admin" / "audit" / "export")
        .and(get)
        .and(r())
        .and(pairs())
        .and(s())
        .and_then(export_route);
    let checkpoint = warp::path!("admin" / "audit" / "checkpoint")
        .and(get)
        .and(r())
        .and(s())
        .and_then(latest_checkpoint)
        .or(warp::path!("admin" / "audit" / "checkpoint")
            .and(warp::post())
            .and(r())
            .and(s())
            .and_then(new_checkpoint))
        .unify();
    let checkpoints = warp::path!("admin" / "audit" / "checkpoints")
        .and(get)
        .and(r())
        .and(s())
        .and_then(all_checkpoints);
    let key = warp::path!("admin" / "audit" / "key")
        .and(get)
        .and(r())
        .and(s())
        .and_then(public_key);
    let inclusion = warp::path!("admin" / "audit" / "proof" / "inclusion")
        .and(get)
        .and(r())
        .and(pairs())
        .and(s())
        .and_then(inclusion);
    let consistency = warp::path!("admin" / "audit" / "proof" / "consistency")
        .and(get)
        .and(r())
        .and(pairs())
        .and(s())
        .and_then(consistency);
    let verify = warp::path!("admin" / "audit" / "verify")
        .and(get)
        .and(r())
        .and(s())
        .and_then(verify);
    let last_verification = warp::path!("admin" / "audit" / "verify" / "last")
        .and(get)
        .and(r())
        .and(s())
        .and_then(last_verification);
    let stats = warp::path!("admin" / "audit" / "stats")
        .and(get)
        .and(r())
        .and(pairs())
        .and(s())
        .and_then(stats);
    let ui = warp::path!("admin" / "audit" / "ui")
        .and(get)
        .and(super::header_lossy("cookie"))
        .and(s())
        .and_then(ui);
    let sign_in = warp::path!("admin" / "audit" / "ui" / "session")
        .and(warp::post())
        .and(super::header_lossy("cookie"))
        .and(form())
        .and(s())
        .and(super::oidc::client_ip(state.clone()))
        .and_then(ui_sign_in);
    let sign_out = warp::path!("admin" / "audit" / "ui" / "logout")
        .and(warp::post())
        .and(r())
        .and(s())
        .and_then(ui_sign_out);
    events
        .or(history)
        .unify()
        .or(export)
        .unify()
        .or(checkpoint)
        .unify()
        .or(checkpoints)
        .unify()
        .or(key)
        .unify()
        .or(inclusion)
        .unify()
        .or(consistency)
        .unify()
        .or(verify)
        .unify()
        .or(last_verification)
        .unify()
        .or(stats)
        .unify()
        .or(ui)
        .unify()
        .or(sign_in)
        .unify()
        .or(sign_out)
        .unify()
        .boxed()
}
