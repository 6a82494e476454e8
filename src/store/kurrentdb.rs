//! The KurrentDB backend: several authlog nodes on one log kept in a KurrentDB
//! (EventStoreDB) cluster, through the official gRPC client.
//!
//! # Streams
//! authlog stream `user-x` is KurrentDB stream `authlog-user-x`: the log name
//! and a dash. The log is `$all` with a server-side filter on that prefix.
//! authlog's own bookkeeping lives outside the prefix, so the filter skips it:
//! `authlog_meta-log` (the log id), `authlog_lease-NAME` and
//! `authlog_checkpoint-NAME`. Log names are letters and digits only, so no
//! log's prefix is the start of another log's stream names.
//!
//! Bodies are stored as `application/octet-stream`, so KurrentDB never
//! re-encodes the bytes the audit trail hashes; the sealed sidecar travels in
//! the event's custom metadata (an empty sidecar is refused: it would read back
//! as none). Positions are KurrentDB's (commit, prepare) pair, kept whole.
//!
//! # Seq
//! KurrentDB has no dense counter over a filtered `$all`, so each node counts.
//! At open it reads the filtered `$all` once from the start (the start-up cost:
//! one pass over the log, filtered by the server) and keeps every event's
//! position in memory, 16 bytes per event (160 MB for ten million events, up to
//! twice that while the vector grows). A follower task subscribes from the last
//! indexed position and extends the index; an event's seq is its place there.
//! Every node following the same `$all` counts the same seqs.
//!
//! Read-your-writes: `append` returns once the follower has indexed what it
//! wrote; `head` asks the leader for the log's last event and waits for the
//! follower to reach it; `read_all` serves what is indexed and, when that is
//! nothing, first does what `head` does.
//!
//! # Idempotent retries
//! KurrentDB keeps no index by event id, so a retry is recognised by reading
//! the target stream: its last `RETRY_WINDOW` events, plus the revisions the
//! retry's expectation points at. A retry with `Expected::Any` older than that
//! window is not recognised (KurrentDB's own best-effort check may still catch
//! it), and an id reused in another stream is not detected here; bodies name
//! their stream, so such an event is refused before it gets this far.
//!
//! # Leases and checkpoints
//! A lease is a stream of `{"holder", "until_ms"}` records written with the
//! expected revision of the record read, so two nodes cannot both take it; its
//! holder renews it every third of [`LEASE_TTL`]. A checkpoint is a stream
//! whose version is its last revision + 1. Both streams are kept short with
//! `$maxCount` metadata (best effort).
//!
//! Every request asks for the leader (`requires-leader`): the follower and the
//! reads that decide must see everything appends on the leader committed.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ::kurrentdb as kdb;
use async_trait::async_trait;
use authlog_schemas::{Position, Recorded};
use bytes::Bytes;
use futures_util::stream::{self, BoxStream, StreamExt};
use tokio::sync::{oneshot, watch};

use super::{
    Appended, CheckReport, EventStore, Expected, Head, Lease, NewEvent, ReadFrom, StoreError,
};

/// The log name used when none is configured.
pub const DEFAULT_LOG_NAME: &str = "authlog";
/// The URL schemes this backend answers to.
const SCHEMES: [&str; 4] = ["kurrentdb", "kurrentdb+discover", "esdb", "esdb+discover"];
/// The most events one read returns.
const MAX_READ: usize = 1024;
/// Events a subscription reads per page.
const SUBSCRIPTION_PAGE: usize = 256;
/// How many of a stream's last events are searched for a retry's ids.
const RETRY_WINDOW: usize = 64;
/// Events the server scans between two checkpoints of the follower's filtered
/// subscription: they keep it moving through long runs of foreign events.
const CHECKPOINT_WINDOW: u32 = 64;
/// How long a wait for the follower may go without progress, at run time and
/// at open (where it reads the whole log).
const FOLLOW_STALL: Duration = Duration::from_secs(10);
const OPEN_STALL: Duration = Duration::from_secs(60);
/// How long a request keeps being sent again after transient failures (a
/// leader election, a node gone, a server-side timeout): longer than an
/// election usually takes.
const RETRY_FOR: Duration = Duration::from_secs(10);
/// How long a lease lasts without renewal.
pub const LEASE_TTL: Duration = Duration::from_secs(15);
/// How long before its TTL a holder gives a lease up: covers clock skew
/// between nodes, and the time a renewal takes.
const LEASE_MARGIN: Duration = Duration::from_secs(5);
/// Records kept in a lease stream and a checkpoint stream.
const LEASE_KEEP: u64 = 16;
const CHECKPOINT_KEEP: u64 = 4;
/// Event types of authlog's bookkeeping streams.
const LOG_CREATED: &str = "authlog.log-created";
const LEASE_EVENT: &str = "authlog.lease";
const CHECKPOINT_EVENT: &str = "authlog.checkpoint";

fn io(e: kdb::Error) -> StoreError {
    StoreError::Io(format!("kurrentdb: {e}"))
}

/// Failures after which the same request may succeed: the client reconnects
/// (to the new leader) and the request is sent again. Appends are safe to
/// resend: their event ids make a second write idempotent.
fn is_transient(e: &kdb::Error) -> bool {
    matches!(
        e,
        kdb::Error::NotLeaderException(_)
            | kdb::Error::ServerError(_)
            | kdb::Error::ConnectionClosed
            | kdb::Error::GrpcConnectionError(_)
            | kdb::Error::DeadlineExceeded
    ) || matches!(e, kdb::Error::Grpc { code, .. } if *code as i32 == GRPC_ABORTED)
}

/// gRPC status `Aborted`: how the server reports its own commit, prepare and
/// forward timeouts (the write may or may not have landed; resending it is
/// idempotent).
const GRPC_ABORTED: i32 = 10;

async fn retrying<T, F, Fut>(mut op: F) -> kdb::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = kdb::Result<T>>,
{
    let deadline = tokio::time::Instant::now() + RETRY_FOR;
    let mut backoff = Duration::from_millis(100);
    loop {
        match op().await {
            Err(e) if is_transient(&e) && tokio::time::Instant::now() + backoff < deadline => {
                tracing::debug!(error = %e, retry_in = ?backoff, "KurrentDB request failed; sending it again");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
            other => return other,
        }
    }
}

// ---- URLs and names ----------------------------------------------------------

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    // The userinfo ends at the last `@` before the query (a password may hold
    // an unencoded `/`).
    let (authority, tail) = rest.split_at(rest.find(['?', '#']).unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{hosts}{tail}")
        }
        None => url.to_string(),
    }
}

fn password(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let (authority, _) = rest.split_at(rest.find(['?', '#']).unwrap_or(rest.len()));
    let (userinfo, _) = authority.rsplit_once('@')?;
    userinfo
        .split_once(':')
        .map(|(_, p)| p)
        .filter(|p| !p.is_empty())
}

/// `message` with the URL's password masked: the client quotes the whole
/// connection string in some of its errors.
fn scrub(message: &str, url: &str) -> String {
    match password(url) {
        Some(p) => message.replace(p, "***"),
        None => message.to_string(),
    }
}

/// Parses a `kurrentdb://`, `esdb://` or `+discover` connection string.
pub fn parse_url(url: &str) -> Result<kdb::ClientSettings, StoreError> {
    let scheme = url.split_once("://").map(|(s, _)| s);
    if !scheme.is_some_and(|s| SCHEMES.contains(&s)) {
        return Err(StoreError::BadUrl(format!(
            "{}: expected kurrentdb://, kurrentdb+discover://, esdb:// or esdb+discover://",
            redact(url)
        )));
    }
    url.parse::<kdb::ClientSettings>()
        .map_err(|e| StoreError::BadUrl(format!("{}: {}", redact(url), scrub(&e.to_string(), url))))
}

fn check_log_name(name: &str) -> Result<(), StoreError> {
    if name.is_empty() || name.len() > 64 || !name.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(StoreError::BadUrl(format!(
            "log name {name:?}: a log name is 1 to 64 letters and digits"
        )));
    }
    Ok(())
}

/// The KurrentDB stream names of one log.
#[derive(Debug, Clone)]
struct Names {
    log: String,
}

impl Names {
    fn prefix(&self) -> String {
        format!("{}-", self.log)
    }

    fn stream(&self, stream: &str) -> String {
        format!("{}-{stream}", self.log)
    }

    /// The authlog stream a KurrentDB stream holds; None outside this log.
    fn authlog<'a>(&self, kstream: &'a str) -> Option<&'a str> {
        kstream
            .strip_prefix(self.log.as_str())?
            .strip_prefix('-')
            .filter(|s| !s.is_empty())
    }

    /// Where KurrentDB keeps the metadata of this log's streams.
    fn metadata_prefix(&self) -> String {
        format!("$${}-", self.log)
    }

    fn meta(&self) -> String {
        format!("{}_meta-log", self.log)
    }

    fn lease(&self, name: &str) -> String {
        format!("{}_lease-{name}", self.log)
    }

    fn checkpoint(&self, name: &str) -> String {
        format!("{}_checkpoint-{name}", self.log)
    }
}

// ---- mappings ----------------------------------------------------------------

fn stream_state(expected: Expected) -> kdb::StreamState {
    match expected {
        Expected::Any => kdb::StreamState::Any,
        Expected::NoStream => kdb::StreamState::NoStream,
        Expected::Revision(r) => kdb::StreamState::StreamRevision(r),
    }
}

fn actual_revision(current: kdb::CurrentRevision) -> Option<u64> {
    match current {
        kdb::CurrentRevision::Current(r) => Some(r),
        kdb::CurrentRevision::NoStream => None,
    }
}

fn to_kdb(p: Position) -> kdb::Position {
    kdb::Position {
        commit: p.commit,
        prepare: p.prepare,
    }
}

/// An event's position; KurrentDB sends -1 (u64::MAX) where it has none, as
/// servers before 22.10 did on stream reads.
fn from_kdb(p: kdb::Position) -> Result<Position, StoreError> {
    if p.commit == u64::MAX || p.prepare == u64::MAX {
        return Err(StoreError::Io(
            "KurrentDB sent an event without its $all position; authlog needs KurrentDB 22.10 or later".into(),
        ));
    }
    Ok(Position::new(p.commit, p.prepare))
}

/// The expectation a checkpoint save appends with; None for version 0, which
/// never exists.
fn checkpoint_state(expected: Option<u64>) -> Option<kdb::StreamState> {
    match expected {
        None => Some(kdb::StreamState::NoStream),
        Some(v) => v.checked_sub(1).map(kdb::StreamState::StreamRevision),
    }
}

fn event_data(e: &NewEvent) -> kdb::EventData {
    let data =
        kdb::EventData::binary(e.event_type.as_str(), Bytes::copy_from_slice(&e.body)).id(e.id);
    match &e.sidecar {
        Some(s) => data.metadata(Bytes::copy_from_slice(s)),
        None => data,
    }
}

/// What a stream says about an append's ids.
#[derive(Debug, PartialEq, Eq)]
enum Replay {
    /// None of them is there: a new append.
    New,
    /// All of them, consecutively, in order, right after the expectation.
    Original(Appended),
    /// Some of them, but not as this append describes them.
    Reused,
}

/// Decides a retry from the ids found in the stream (id → revision, position),
/// as embedded.rs does from its id index.
fn decide_replay(
    ids: &[uuid::Uuid],
    stored: &HashMap<uuid::Uuid, (u64, Position)>,
    expected: Expected,
) -> Replay {
    let hits: Vec<Option<&(u64, Position)>> = ids.iter().map(|id| stored.get(id)).collect();
    if hits.iter().all(Option::is_none) {
        return Replay::New;
    }
    let mut positions = Vec::with_capacity(ids.len());
    let mut first = None;
    for (i, hit) in hits.into_iter().enumerate() {
        let Some(&(revision, position)) = hit else {
            return Replay::Reused;
        };
        let start = *first.get_or_insert(revision);
        if start.checked_add(i as u64) != Some(revision) {
            return Replay::Reused;
        }
        positions.push(position);
    }
    let Some(first) = first else {
        return Replay::New;
    };
    let follows = match expected {
        Expected::Any => true,
        Expected::NoStream => first == 0,
        Expected::Revision(n) => n.checked_add(1) == Some(first),
    };
    if !follows {
        return Replay::Reused;
    }
    Replay::Original(Appended {
        positions,
        last_revision: first + (ids.len() as u64 - 1),
    })
}

/// Problems with a stream's KurrentDB metadata (its JSON): any retention
/// setting lets the server remove events, which breaks the audit trail.
fn retention_problems(stream: &str, metadata: &serde_json::Value) -> Vec<String> {
    [
        ("$maxAge", "a maximum age"),
        ("$maxCount", "a maximum count"),
        ("$tb", "a truncate-before revision"),
    ]
    .into_iter()
    .filter_map(|(key, what)| {
        metadata.get(key).filter(|v| !v.is_null()).map(|v| {
            format!(
                "stream {stream}: its KurrentDB metadata sets {what} ({key} = {v}), so the server may remove events the audit trail needs"
            )
        })
    })
    .collect()
}

// ---- the seq index -----------------------------------------------------------

/// The seq of the event at `p`, if indexed.
fn seq_at(positions: &[Position], p: Position) -> Option<u64> {
    positions.binary_search(&p).ok().map(|i| i as u64)
}

/// The seq a read from `from` starts at (the index length if nothing is there).
fn first_seq(positions: &[Position], from: ReadFrom) -> usize {
    match from {
        ReadFrom::Start => 0,
        ReadFrom::At(p) => positions.partition_point(|x| *x < p),
        ReadFrom::After(p) => positions.partition_point(|x| *x <= p),
    }
}

/// Every event's position in log order (seq → position), the follower's length
/// published for waiters (each checkpoint republishes it: progress without
/// events), and the follower's last failure for their messages.
struct Index {
    positions: RwLock<Vec<Position>>,
    count: watch::Sender<u64>,
    follower_error: Mutex<Option<String>>,
}

impl Index {
    fn new() -> Index {
        Index {
            positions: RwLock::new(Vec::new()),
            count: watch::channel(0).0,
            follower_error: Mutex::new(None),
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Vec<Position>> {
        self.positions
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds the next event. A position not past the last is one seen already
    /// (a resubscription may repeat its start) and is skipped.
    fn push(&self, p: Position) {
        let len = {
            let mut v = self
                .positions
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            if v.last().is_some_and(|last| p <= *last) {
                return;
            }
            v.push(p);
            v.len() as u64
        };
        self.count.send_replace(len);
    }

    /// Wakes waiters without indexing anything.
    fn touch(&self) {
        self.count.send_modify(|_| {});
    }

    fn len(&self) -> usize {
        self.read().len()
    }

    fn head(&self) -> Option<Head> {
        let v = self.read();
        v.last().map(|p| Head {
            position: *p,
            seq: v.len() as u64 - 1,
        })
    }

    fn covers(&self, p: Position) -> bool {
        self.read().last().is_some_and(|last| *last >= p)
    }

    /// Events indexed from `from` on.
    fn available(&self, from: ReadFrom) -> usize {
        let v = self.read();
        v.len() - first_seq(&v, from)
    }

    fn set_error(&self, e: Option<String>) {
        *self
            .follower_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = e;
    }

    fn error(&self) -> Option<String> {
        self.follower_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Keeps a follower running: one that died (a panic in the client on an
/// unexpected reply) is started again, and its death is reported to waiters.
async fn supervise(client: kdb::Client, prefix: String, index: Arc<Index>) {
    struct AbortOnDrop(tokio::task::JoinHandle<()>);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    loop {
        let mut task = AbortOnDrop(tokio::spawn(follow(
            client.clone(),
            prefix.clone(),
            index.clone(),
        )));
        match (&mut task.0).await {
            Ok(()) => return,
            Err(e) if e.is_cancelled() => return,
            Err(e) => {
                tracing::error!(error = %e, "KurrentDB $all follower died; starting it again");
                index.set_error(Some(format!("the $all follower died: {e}")));
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Follows the filtered `$all` into the index, resubscribing from the last
/// indexed position after a failure. Subscriptions start after their position.
async fn follow(client: kdb::Client, prefix: String, index: Arc<Index>) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let from = index.read().last().copied();
        let options = kdb::SubscribeToAllOptions::default()
            .position(from.map_or(kdb::StreamPosition::Start, |p| {
                kdb::StreamPosition::Position(to_kdb(p))
            }))
            .filter(
                kdb::SubscriptionFilter::on_stream_name()
                    .add_prefix(&prefix)
                    .max(CHECKPOINT_WINDOW),
            )
            .requires_leader(true);
        let mut subscription = client.subscribe_to_all(&options).await;
        let mut failing = index.error().is_some();
        loop {
            match subscription.next_subscription_event().await {
                Ok(kdb::SubscriptionEvent::EventAppeared(event)) => {
                    let Some(rec) = event.event.or(event.link) else {
                        continue;
                    };
                    match from_kdb(rec.position) {
                        Ok(p) => index.push(p),
                        Err(e) => {
                            index.set_error(Some(e.to_string()));
                            break;
                        }
                    }
                    if failing {
                        index.set_error(None);
                        failing = false;
                    }
                    backoff = Duration::from_millis(200);
                }
                // The server scanned on without finding authlog events: waiters
                // count that as progress, so a long run of foreign events does
                // not look like a stalled follower.
                Ok(kdb::SubscriptionEvent::Checkpoint(_)) => {
                    index.touch();
                    if failing {
                        index.set_error(None);
                        failing = false;
                    }
                }
                // Confirmations, caught-up and fell-behind notices: the new
                // subscription works, whether or not authlog events follow.
                Ok(_) => {
                    if failing {
                        index.set_error(None);
                        failing = false;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "KurrentDB $all follower: resubscribing");
                    index.set_error(Some(e.to_string()));
                    break;
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

// ---- reads and appends -------------------------------------------------------

async fn drain(mut events: kdb::ReadStream) -> kdb::Result<Vec<kdb::RecordedEvent>> {
    let mut out = Vec::new();
    while let Some(e) = events.next().await? {
        if let Some(rec) = e.event.or(e.link) {
            out.push(rec);
        }
    }
    Ok(out)
}

/// A stream's events as `options` select them; a missing stream is empty.
async fn read_stream_events(
    client: &kdb::Client,
    kstream: &str,
    options: &kdb::ReadStreamOptions,
) -> Result<Vec<kdb::RecordedEvent>, StoreError> {
    let read =
        retrying(move || async move { drain(client.read_stream(kstream, options).await?).await })
            .await;
    match read {
        Ok(events) => Ok(events),
        Err(kdb::Error::ResourceNotFound) => Ok(Vec::new()),
        Err(kdb::Error::ResourceDeleted) => Err(StoreError::Corrupt(format!(
            "KurrentDB stream {kstream} was deleted"
        ))),
        Err(e) => Err(io(e)),
    }
}

fn forward(from_revision: u64, count: usize) -> kdb::ReadStreamOptions {
    kdb::ReadStreamOptions::default()
        .position(kdb::StreamPosition::Position(from_revision))
        .max_count(count)
        .requires_leader(true)
}

/// The last `count` events, newest first.
fn last_events(count: usize) -> kdb::ReadStreamOptions {
    kdb::ReadStreamOptions::default()
        .position(kdb::StreamPosition::End)
        .max_count(count)
        .requires_leader(true)
}

async fn read_all_events(
    client: &kdb::Client,
    options: &kdb::ReadAllOptions,
) -> Result<Vec<kdb::RecordedEvent>, StoreError> {
    retrying(move || async move { drain(client.read_all(options).await?).await })
        .await
        .map_err(io)
}

/// Up to `count` events of the streams named `prefix…`, forward from `from`
/// (inclusive) or the start.
fn all_from(prefix: &str, from: Option<Position>, count: usize) -> kdb::ReadAllOptions {
    kdb::ReadAllOptions::default()
        .position(from.map_or(kdb::StreamPosition::Start, |p| {
            kdb::StreamPosition::Position(to_kdb(p))
        }))
        .filter(kdb::SubscriptionFilter::on_stream_name().add_prefix(prefix))
        .max_count(count)
        .requires_leader(true)
}

async fn append_events(
    client: &kdb::Client,
    kstream: &str,
    state: kdb::StreamState,
    events: &[kdb::EventData],
) -> kdb::Result<kdb::WriteResult> {
    let options = kdb::AppendToStreamOptions::default()
        .stream_state(state)
        .requires_leader(true);
    let options = &options;
    retrying(move || async move {
        client
            .append_to_stream(kstream, options, events.to_vec())
            .await
    })
    .await
}

/// Bounds a bookkeeping stream's length. Best effort: a longer stream is only
/// bigger.
async fn keep_last(client: &kdb::Client, kstream: &str, count: u64) {
    let metadata = kdb::StreamMetadata::builder().max_count(count).build();
    let options = kdb::AppendToStreamOptions::default().requires_leader(true);
    if let Err(e) = client
        .set_stream_metadata(kstream, &options, &metadata)
        .await
    {
        tracing::debug!(stream = %kstream, error = %e, "could not set $maxCount (best effort)");
    }
}

fn log_id_from(data: &[u8]) -> Option<String> {
    let meta: serde_json::Value = serde_json::from_slice(data).ok()?;
    meta.get("log_id")?.as_str().map(str::to_string)
}

/// The log id: the first event of the meta stream, written by whichever node
/// opens the log first.
async fn load_log_id(client: &kdb::Client, names: &Names) -> Result<String, StoreError> {
    let kstream = names.meta();
    for _ in 0..3 {
        let first = read_stream_events(client, &kstream, &forward(0, 1)).await?;
        if let Some(e) = first.first() {
            return log_id_from(&e.data)
                .ok_or_else(|| StoreError::Corrupt(format!("{kstream} holds no log id")));
        }
        let id = uuid::Uuid::now_v7().to_string();
        let event = kdb::EventData::json(LOG_CREATED, &serde_json::json!({ "log_id": id }))
            .map_err(|e| StoreError::Io(e.to_string()))?
            .id(uuid::Uuid::now_v7());
        match append_events(client, &kstream, kdb::StreamState::NoStream, &[event]).await {
            Ok(_) => return Ok(id),
            // Another node created it first: read theirs.
            Err(kdb::Error::WrongExpectedVersion { .. }) => continue,
            Err(e) => return Err(io(e)),
        }
    }
    Err(StoreError::Io(format!(
        "could not read or create {kstream}"
    )))
}

// ---- the store ---------------------------------------------------------------

struct Inner {
    client: kdb::Client,
    names: Names,
    index: Arc<Index>,
    log_id: String,
    /// The URL without its password.
    url: String,
    follower: tokio::task::AbortHandle,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.follower.abort();
    }
}

/// The KurrentDB event store. Cheap to clone.
#[derive(Clone)]
pub struct KurrentStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for KurrentStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KurrentStore")
            .field("url", &self.inner.url)
            .field("log", &self.inner.names.log)
            .finish()
    }
}

impl KurrentStore {
    /// Connects, reads or creates the log id of log `log_name` (see
    /// [`DEFAULT_LOG_NAME`]), and indexes the log: returns once the follower
    /// has reached the log's last event.
    pub async fn open(url: &str, log_name: &str) -> Result<KurrentStore, StoreError> {
        check_log_name(log_name)?;
        let settings = parse_url(url)?;
        let shown = redact(url);
        let client = kdb::Client::new(settings).map_err(|e| {
            StoreError::Io(format!("kurrentdb {shown}: {}", scrub(&e.to_string(), url)))
        })?;
        let names = Names {
            log: log_name.to_string(),
        };
        let log_id = load_log_id(&client, &names).await?;
        let index = Arc::new(Index::new());
        let follower = tokio::spawn(supervise(client.clone(), names.prefix(), index.clone()));
        let inner = Arc::new(Inner {
            client,
            names,
            index,
            log_id,
            url: shown,
            follower: follower.abort_handle(),
        });
        let started = std::time::Instant::now();
        inner.sync(OPEN_STALL).await?;
        tracing::info!(
            url = %inner.url,
            log = %inner.names.log,
            events = inner.index.len(),
            seconds = started.elapsed().as_secs_f64(),
            "indexed the KurrentDB log"
        );
        Ok(KurrentStore { inner })
    }
}

impl Inner {
    fn filter_prefix(&self) -> String {
        self.names.prefix()
    }

    /// The position of the log's last event on the leader; None if empty.
    async fn server_end(&self) -> Result<Option<Position>, StoreError> {
        let options = kdb::ReadAllOptions::default()
            .position(kdb::StreamPosition::End)
            .filter(kdb::SubscriptionFilter::on_stream_name().add_prefix(self.filter_prefix()))
            .max_count(1)
            .requires_leader(true);
        let events = read_all_events(&self.client, &options).await?;
        events.first().map(|e| from_kdb(e.position)).transpose()
    }

    /// Waits until this node has indexed everything the leader has committed.
    async fn sync(&self, stall: Duration) -> Result<(), StoreError> {
        match self.server_end().await? {
            Some(end) => self.wait_indexed(end, stall).await,
            None => Ok(()),
        }
    }

    /// Waits until the follower has indexed `target`, failing after `stall`
    /// without progress.
    async fn wait_indexed(&self, target: Position, stall: Duration) -> Result<(), StoreError> {
        let mut count = self.index.count.subscribe();
        loop {
            if self.index.covers(target) {
                return Ok(());
            }
            match tokio::time::timeout(stall, count.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(StoreError::Closed),
                Err(_) => {
                    let cause = self
                        .index
                        .error()
                        .map(|e| format!(" (last error: {e})"))
                        .unwrap_or_default();
                    return Err(StoreError::Io(format!(
                        "the $all follower of {} made no progress towards position {target} for {} s{cause}",
                        self.url,
                        stall.as_secs()
                    )));
                }
            }
        }
    }

    fn recorded(
        &self,
        seq: u64,
        position: Position,
        rec: kdb::RecordedEvent,
    ) -> Result<Recorded, StoreError> {
        let stream = self
            .names
            .authlog(rec.stream_id())
            .ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "KurrentDB stream {} is not a stream of log {}",
                    rec.stream_id(),
                    self.names.log
                ))
            })?
            .to_string();
        let sidecar = (!rec.custom_metadata.is_empty()).then(|| rec.custom_metadata.to_vec());
        Ok(Recorded {
            position,
            revision: rec.revision,
            seq,
            stream,
            body: rec.data.to_vec(),
            sidecar,
        })
    }

    /// Up to `limit` indexed events from `from`, each checked against the
    /// position indexed for its seq.
    async fn read_indexed(
        &self,
        from: ReadFrom,
        limit: usize,
    ) -> Result<Vec<Recorded>, StoreError> {
        let (start, expected) = {
            let v = self.index.read();
            let start = first_seq(&v, from);
            let end = start + limit.min(MAX_READ).min(v.len() - start);
            (start, v[start..end].to_vec())
        };
        let mut out: Vec<Recorded> = Vec::with_capacity(expected.len());
        while let Some(&at) = expected.get(out.len()) {
            let want = expected.len() - out.len();
            let options = all_from(&self.filter_prefix(), Some(at), want);
            let page = read_all_events(&self.client, &options).await?;
            if page.is_empty() {
                break;
            }
            for rec in page.into_iter().take(want) {
                let i = out.len();
                let seq = (start + i) as u64;
                let position = from_kdb(rec.position)?;
                if expected.get(i) != Some(&position) {
                    return Err(StoreError::Corrupt(format!(
                        "seq {seq}: KurrentDB's $all holds position {position} where {} was indexed; events were removed from the log",
                        expected
                            .get(i)
                            .map_or("nothing".to_string(), |p| p.to_string())
                    )));
                }
                out.push(self.recorded(seq, position, rec)?);
            }
        }
        if out.len() < expected.len() {
            return Err(StoreError::Corrupt(format!(
                "seq {}: an event this node indexed is gone from KurrentDB",
                start + out.len()
            )));
        }
        Ok(out)
    }

    /// Records of stream events, with their seqs (waiting, bounded, for the
    /// follower to index events other nodes have just appended).
    async fn stream_records(
        &self,
        events: Vec<kdb::RecordedEvent>,
    ) -> Result<Vec<Recorded>, StoreError> {
        let positions = events
            .iter()
            .map(|e| from_kdb(e.position))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(last) = positions.iter().max().copied() {
            self.wait_indexed(last, FOLLOW_STALL).await?;
        }
        let seqs: Vec<Option<u64>> = {
            let v = self.index.read();
            positions.iter().map(|p| seq_at(&v, *p)).collect()
        };
        events
            .into_iter()
            .zip(positions)
            .zip(seqs)
            .map(|((rec, position), seq)| {
                let seq = seq.ok_or_else(|| {
                    StoreError::Corrupt(format!(
                        "the event at position {position} of {} is missing from the filtered $all",
                        rec.stream_id()
                    ))
                })?;
                self.recorded(seq, position, rec)
            })
            .collect()
    }

    /// The stream's tail, and the revisions `expected` points at: where a
    /// retry of `count` events would be.
    async fn find_ids(
        &self,
        kstream: &str,
        expected: Expected,
        count: usize,
    ) -> Result<HashMap<uuid::Uuid, (u64, Position)>, StoreError> {
        let mut events =
            read_stream_events(&self.client, kstream, &last_events(RETRY_WINDOW)).await?;
        let spot = match expected {
            Expected::Any => None,
            Expected::NoStream => Some(0),
            Expected::Revision(n) => n.checked_add(1),
        };
        if let Some(spot) = spot {
            let whole = events.len() < RETRY_WINDOW;
            let reaches = events
                .iter()
                .map(|e| e.revision)
                .min()
                .is_some_and(|o| o <= spot);
            if !whole && !reaches {
                events.extend(
                    read_stream_events(&self.client, kstream, &forward(spot, count)).await?,
                );
            }
        }
        let mut out = HashMap::with_capacity(events.len());
        for e in events {
            let position = from_kdb(e.position)?;
            out.entry(e.id).or_insert((e.revision, position));
        }
        Ok(out)
    }

    /// The original result if this append already happened; IdReused if its
    /// ids are there but not as it describes them.
    async fn replay(
        &self,
        stream: &str,
        kstream: &str,
        expected: Expected,
        ids: &[uuid::Uuid],
    ) -> Result<Option<Appended>, StoreError> {
        let stored = self.find_ids(kstream, expected, ids.len()).await?;
        match decide_replay(ids, &stored, expected) {
            Replay::New => Ok(None),
            Replay::Original(appended) => Ok(Some(appended)),
            Replay::Reused => Err(StoreError::IdReused {
                id: ids.first().copied().unwrap_or_default(),
                stream: stream.to_string(),
                expected,
            }),
        }
    }

    /// What a successful append wrote, read back from the stream (positions
    /// as reads report them). If KurrentDB's own idempotence answered for an
    /// earlier append of these ids, that append is found instead.
    async fn read_back(
        &self,
        stream: &str,
        kstream: &str,
        expected: Expected,
        ids: &[uuid::Uuid],
        last: u64,
    ) -> Result<Appended, StoreError> {
        if let Some(first) = last
            .checked_add(1)
            .and_then(|e| e.checked_sub(ids.len() as u64))
        {
            let events =
                read_stream_events(&self.client, kstream, &forward(first, ids.len())).await?;
            if events.len() == ids.len() && events.iter().zip(ids).all(|(e, id)| e.id == *id) {
                let positions = events
                    .iter()
                    .map(|e| from_kdb(e.position))
                    .collect::<Result<Vec<_>, _>>()?;
                return Ok(Appended {
                    positions,
                    last_revision: last,
                });
            }
        }
        self.replay(stream, kstream, expected, ids).await?.ok_or_else(|| {
            StoreError::Io(format!(
                "KurrentDB acknowledged the append to {kstream}, but its events are not in the stream"
            ))
        })
    }

    /// `appended`, once the follower has indexed it.
    async fn indexed(&self, appended: Appended) -> Result<Appended, StoreError> {
        if let Some(last) = appended.last_position() {
            self.wait_indexed(last, FOLLOW_STALL).await?;
        }
        Ok(appended)
    }

    /// The latest metadata of every stream of this log that has any, read from
    /// the `$$` streams in `$all`: one pass, however many streams there are.
    async fn retention_problems(&self) -> Result<Vec<String>, StoreError> {
        const PAGE: usize = 1024;
        let prefix = self.names.metadata_prefix();
        let mut latest: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut from: Option<Position> = None;
        loop {
            let options = all_from(&prefix, from, PAGE + usize::from(from.is_some()));
            let page = read_all_events(&self.client, &options).await?;
            let mut fresh = 0;
            for rec in page {
                let position = from_kdb(rec.position)?;
                if Some(position) == from {
                    continue;
                }
                fresh += 1;
                from = Some(position);
                let Some(name) = rec
                    .stream_id()
                    .strip_prefix("$$")
                    .and_then(|s| self.names.authlog(s))
                else {
                    continue;
                };
                let problems = serde_json::from_slice::<serde_json::Value>(&rec.data)
                    .map(|m| retention_problems(name, &m))
                    .unwrap_or_default();
                latest.insert(name.to_string(), problems);
            }
            if fresh == 0 {
                break;
            }
        }
        Ok(latest.into_values().flatten().collect())
    }
}

#[async_trait]
impl EventStore for KurrentStore {
    async fn append(
        &self,
        stream: &str,
        expected: Expected,
        events: Vec<NewEvent>,
    ) -> Result<Appended, StoreError> {
        crate::store::validate_append(stream, &events)?;
        let inner = &self.inner;
        let kstream = inner.names.stream(stream);
        let ids: Vec<uuid::Uuid> = events.iter().map(|e| e.id).collect();
        // A retry? (With NoStream the stream is empty or the append conflicts,
        // and the conflict is looked into below.)
        if expected != Expected::NoStream
            && let Some(original) = inner.replay(stream, &kstream, expected, &ids).await?
        {
            return inner.indexed(original).await;
        }
        let data: Vec<kdb::EventData> = events.iter().map(event_data).collect();
        // The server makes a resent append idempotent only when it names the
        // revision it follows: an `Any` append is sent as "after the revision
        // the stream has now", learnt from the conflict when it moved on.
        let mut state = match expected {
            Expected::Any => kdb::StreamState::NoStream,
            e => stream_state(e),
        };
        let mut tries = 0;
        let appended = loop {
            tries += 1;
            match append_events(&inner.client, &kstream, state, &data).await {
                Ok(written) => {
                    break inner
                        .read_back(
                            stream,
                            &kstream,
                            expected,
                            &ids,
                            written.next_expected_version,
                        )
                        .await?;
                }
                Err(kdb::Error::WrongExpectedVersion { current, .. }) => {
                    if let Some(original) = inner.replay(stream, &kstream, expected, &ids).await? {
                        break original;
                    }
                    let actual = actual_revision(current);
                    if expected == Expected::Any && tries < 32 {
                        state = actual
                            .map_or(kdb::StreamState::NoStream, kdb::StreamState::StreamRevision);
                        continue;
                    }
                    return Err(StoreError::Conflict {
                        stream: stream.to_string(),
                        expected,
                        actual,
                    });
                }
                Err(e) => return Err(io(e)),
            }
        };
        inner.indexed(appended).await
    }

    async fn read_stream(
        &self,
        stream: &str,
        from_revision: u64,
        limit: usize,
    ) -> Result<Vec<Recorded>, StoreError> {
        let limit = limit.min(MAX_READ);
        if limit == 0 {
            return Ok(Vec::new());
        }
        let kstream = self.inner.names.stream(stream);
        let events =
            read_stream_events(&self.inner.client, &kstream, &forward(from_revision, limit))
                .await?;
        self.inner.stream_records(events).await
    }

    async fn read_all(&self, from: ReadFrom, limit: usize) -> Result<Vec<Recorded>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let page = self.inner.read_indexed(from, limit).await?;
        if !page.is_empty() {
            return Ok(page);
        }
        // Nothing indexed from there: catch up with the leader, then look again.
        self.inner.sync(FOLLOW_STALL).await?;
        self.inner.read_indexed(from, limit).await
    }

    fn subscribe_all(&self, from: ReadFrom) -> BoxStream<'static, Result<Recorded, StoreError>> {
        struct State {
            store: KurrentStore,
            count: watch::Receiver<u64>,
            next: ReadFrom,
            buffer: VecDeque<Recorded>,
            failed: bool,
        }
        let state = State {
            store: self.clone(),
            count: self.inner.index.count.subscribe(),
            next: from,
            buffer: VecDeque::new(),
            failed: false,
        };
        stream::unfold(state, |mut st| async move {
            if st.failed {
                return None;
            }
            loop {
                if let Some(r) = st.buffer.pop_front() {
                    st.next = ReadFrom::After(r.position);
                    return Some((Ok(r), st));
                }
                st.count.mark_unchanged();
                if st.store.inner.index.available(st.next) > 0 {
                    match st
                        .store
                        .inner
                        .read_indexed(st.next, SUBSCRIPTION_PAGE)
                        .await
                    {
                        Ok(page) if !page.is_empty() => st.buffer.extend(page),
                        Ok(_) => {
                            st.failed = true;
                            let e = StoreError::Corrupt("an indexed page read empty".into());
                            return Some((Err(e), st));
                        }
                        Err(e) => {
                            st.failed = true;
                            return Some((Err(e), st));
                        }
                    }
                    continue;
                }
                // Caught up: wait for the follower to index more. A quiet log is
                // no error; a follower that keeps failing is, so that the
                // subscriber (the views) can follow again and /readyz can say so.
                match tokio::time::timeout(FOLLOW_STALL, st.count.changed()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return None,
                    Err(_) => {
                        if let Some(e) = st.store.inner.index.error() {
                            st.failed = true;
                            return Some((Err(StoreError::Io(format!("kurrentdb: {e}"))), st));
                        }
                    }
                }
            }
        })
        .boxed()
    }

    async fn head(&self) -> Result<Option<Head>, StoreError> {
        self.inner.sync(FOLLOW_STALL).await?;
        Ok(self.inner.index.head())
    }

    fn log_id(&self) -> String {
        self.inner.log_id.clone()
    }

    /// The whole log through [`super::check_by_reading`], plus every stream
    /// whose KurrentDB metadata would let the server remove events.
    async fn check(&self) -> Result<CheckReport, StoreError> {
        let mut report = super::check_by_reading(self).await?;
        for p in self.inner.retention_problems().await? {
            if report.problems.len() < 100 {
                report.problems.push(p);
            }
        }
        Ok(report)
    }

    fn is_shared(&self) -> bool {
        true
    }

    async fn try_lease(&self, name: &str, holder: &str) -> Result<Option<Lease>, StoreError> {
        let client = &self.inner.client;
        let kstream = self.inner.names.lease(name);
        let last = read_stream_events(client, &kstream, &last_events(1)).await?;
        let (revision, current) = match last.first() {
            Some(e) => (Some(e.revision), decode_lease(&e.data)),
            None => (None, None),
        };
        let now = now_ms();
        if !lease_takeable(current.as_ref(), holder, now) {
            return Ok(None);
        }
        let started = tokio::time::Instant::now();
        let record = LeaseRecord {
            holder: holder.to_string(),
            until_ms: now + ttl_ms(),
        };
        let state = revision.map_or(kdb::StreamState::NoStream, kdb::StreamState::StreamRevision);
        let written = match append_events(client, &kstream, state, &[lease_event(&record)?]).await {
            Ok(w) => w,
            // Another node moved first.
            Err(kdb::Error::WrongExpectedVersion { .. }) => return Ok(None),
            Err(e) => return Err(io(e)),
        };
        if revision.is_none() {
            keep_last(client, &kstream, LEASE_KEEP).await;
        }
        let (lost_tx, lost_rx) = watch::channel(false);
        let (release, released) = oneshot::channel::<()>();
        tokio::spawn(hold_lease(
            client.clone(),
            kstream,
            record,
            written.next_expected_version,
            started + LEASE_TTL - LEASE_MARGIN,
            lost_tx,
            released,
        ));
        Ok(Some(Lease::new(lost_rx, release)))
    }

    async fn load_checkpoint(&self, name: &str) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        let kstream = self.inner.names.checkpoint(name);
        let last = read_stream_events(&self.inner.client, &kstream, &last_events(1)).await?;
        Ok(last
            .into_iter()
            .next()
            .map(|e| (e.revision + 1, e.data.to_vec())))
    }

    async fn save_checkpoint(
        &self,
        name: &str,
        expected: Option<u64>,
        value: Vec<u8>,
    ) -> Result<u64, StoreError> {
        let client = &self.inner.client;
        let kstream = self.inner.names.checkpoint(name);
        let Some(state) = checkpoint_state(expected) else {
            let actual = self.load_checkpoint(name).await?.map(|(v, _)| v);
            return Err(super::checkpoint_conflict(name, expected, actual));
        };
        // An explicit id: a resent save is idempotent in KurrentDB.
        let event =
            kdb::EventData::binary(CHECKPOINT_EVENT, Bytes::from(value)).id(uuid::Uuid::now_v7());
        match append_events(client, &kstream, state, &[event]).await {
            Ok(written) => {
                if expected.is_none() {
                    keep_last(client, &kstream, CHECKPOINT_KEEP).await;
                }
                Ok(written.next_expected_version + 1)
            }
            Err(kdb::Error::WrongExpectedVersion { current, .. }) => Err(
                super::checkpoint_conflict(name, expected, actual_revision(current).map(|r| r + 1)),
            ),
            Err(e) => Err(io(e)),
        }
    }
}

// ---- leases ------------------------------------------------------------------

/// A lease as its stream records it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct LeaseRecord {
    holder: String,
    /// Unix milliseconds; 0 once given up.
    until_ms: i64,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn ttl_ms() -> i64 {
    LEASE_TTL.as_millis() as i64
}

/// An unreadable record holds nothing.
fn decode_lease(data: &[u8]) -> Option<LeaseRecord> {
    serde_json::from_slice(data).ok()
}

fn lease_event(record: &LeaseRecord) -> Result<kdb::EventData, StoreError> {
    Ok(kdb::EventData::json(LEASE_EVENT, record)
        .map_err(|e| StoreError::Io(e.to_string()))?
        .id(uuid::Uuid::now_v7()))
}

/// Whether `holder` may take a lease whose last record is `current`: nobody
/// holds it, it has expired, or `holder` holds it already.
fn lease_takeable(current: Option<&LeaseRecord>, holder: &str, now_ms: i64) -> bool {
    current.is_none_or(|r| r.holder == holder || r.until_ms <= now_ms)
}

/// Renews the lease every third of its TTL until it is released (the
/// [`Lease`] dropped, which drops `released`'s sender) or lost: another holder
/// wrote to the stream, or renewals failed until the lease would expire
/// before the next try. A released lease is written as expired, so the next
/// holder need not wait out the TTL.
#[allow(clippy::too_many_arguments)]
async fn hold_lease(
    client: kdb::Client,
    kstream: String,
    mut record: LeaseRecord,
    mut revision: u64,
    mut valid_until: tokio::time::Instant,
    lost: watch::Sender<bool>,
    mut released: oneshot::Receiver<()>,
) {
    let every = LEASE_TTL / 3;
    loop {
        tokio::select! {
            _ = &mut released => {
                record.until_ms = 0;
                if let Ok(event) = lease_event(&record) {
                    let state = kdb::StreamState::StreamRevision(revision);
                    let _ = append_events(&client, &kstream, state, &[event]).await;
                }
                return;
            }
            () = tokio::time::sleep(every) => {}
            () = tokio::time::sleep_until(valid_until) => {
                tracing::warn!(lease = %kstream, "lease ran out before it was renewed");
                lost.send_replace(true);
                return;
            }
        }
        // This node's own clock bounds the lease: it is given up before the
        // record could look expired to another node (with LEASE_MARGIN for
        // clock skew between nodes), however long a renewal hangs.
        let started = tokio::time::Instant::now();
        let now = now_ms();
        let renewed = LeaseRecord {
            holder: record.holder.clone(),
            until_ms: now + ttl_ms(),
        };
        let Ok(event) = lease_event(&renewed) else {
            lost.send_replace(true);
            return;
        };
        let state = kdb::StreamState::StreamRevision(revision);
        let attempt = tokio::time::timeout_at(
            valid_until,
            append_events(&client, &kstream, state, &[event]),
        )
        .await;
        let Ok(attempt) = attempt else {
            tracing::warn!(lease = %kstream, "lease renewal did not answer before the lease ran out");
            lost.send_replace(true);
            return;
        };
        match attempt {
            Ok(written) => {
                revision = written.next_expected_version;
                record = renewed;
                valid_until = started + LEASE_TTL - LEASE_MARGIN;
            }
            Err(kdb::Error::WrongExpectedVersion { .. }) => {
                tracing::warn!(lease = %kstream, "lease taken over by another holder");
                lost.send_replace(true);
                return;
            }
            Err(e) if tokio::time::Instant::now() + every >= valid_until => {
                tracing::warn!(lease = %kstream, error = %e, "lease renewal failed; it can no longer be vouched for");
                lost.send_replace(true);
                return;
            }
            Err(e) => {
                tracing::debug!(lease = %kstream, error = %e, "lease renewal failed; trying again");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_accepted_and_redacted() {
        for url in [
            "kurrentdb://localhost:2113?tls=false",
            "kurrentdb://admin:changeit@localhost:2113?tls=false",
            "esdb://localhost:2113?tls=false",
            "kurrentdb+discover://cluster.example.com:2113",
            "esdb+discover://cluster.example.com:2113",
            "kurrentdb://h1:2113,h2:2113,h3:2113?tls=false",
        ] {
            assert!(parse_url(url).is_ok(), "{url}");
        }
        let s = parse_url("kurrentdb://h1:2113,h2:2113,h3:2113?tls=false").unwrap();
        assert_eq!(s.hosts().len(), 3);
        assert!(!s.is_secure_mode_enabled());
        assert!(
            parse_url("esdb+discover://c.example.com:2113")
                .unwrap()
                .is_dns_discovery_enabled()
        );
        for url in [
            "postgres://x/y",
            "kurrent://localhost:2113",
            "localhost:2113",
            "",
        ] {
            assert!(
                matches!(parse_url(url), Err(StoreError::BadUrl(_))),
                "{url}"
            );
        }
        let err = parse_url("kurrentdb://admin:s3cret@host:notaport").unwrap_err();
        assert!(!err.to_string().contains("s3cret"), "{err}");
        assert_eq!(
            redact("kurrentdb://admin:s3cret@db:2113?tls=false"),
            "kurrentdb://admin:***@db:2113?tls=false"
        );
        assert_eq!(redact("esdb://db:2113"), "esdb://db:2113");
        assert_eq!(scrub("bad 'x://a:pw@h'", "x://a:pw@h"), "bad 'x://a:***@h'");
    }

    #[test]
    fn log_names_and_streams() {
        assert!(check_log_name("authlog").is_ok());
        assert!(check_log_name("t0189abc").is_ok());
        let long = "x".repeat(65);
        for bad in ["", "a-b", "a_b", "a b", long.as_str()] {
            assert!(check_log_name(bad).is_err(), "{bad:?}");
        }
        let n = Names {
            log: "authlog".into(),
        };
        assert_eq!(n.stream("user-x"), "authlog-user-x");
        assert_eq!(n.authlog("authlog-user-x"), Some("user-x"));
        for other in [
            "authlog2-user-x",
            "other-user-x",
            "authlog-",
            "authlog",
            "$$authlog-user-x",
        ] {
            assert_eq!(n.authlog(other), None, "{other}");
        }
        for own in [n.meta(), n.lease("sink"), n.checkpoint("audit")] {
            assert!(!own.starts_with(&n.prefix()), "{own}");
            assert_eq!(n.authlog(&own), None);
        }
        assert_eq!(n.metadata_prefix(), "$$authlog-");
    }

    #[test]
    fn expectations_and_revisions_map() {
        assert_eq!(stream_state(Expected::Any), kdb::StreamState::Any);
        assert_eq!(stream_state(Expected::NoStream), kdb::StreamState::NoStream);
        assert_eq!(
            stream_state(Expected::Revision(7)),
            kdb::StreamState::StreamRevision(7)
        );
        assert_eq!(actual_revision(kdb::CurrentRevision::Current(3)), Some(3));
        assert_eq!(actual_revision(kdb::CurrentRevision::NoStream), None);
        assert_eq!(checkpoint_state(None), Some(kdb::StreamState::NoStream));
        assert_eq!(
            checkpoint_state(Some(4)),
            Some(kdb::StreamState::StreamRevision(3))
        );
        assert_eq!(checkpoint_state(Some(0)), None);
    }

    #[test]
    fn positions_round_trip() {
        for p in [
            Position::new(0, 0),
            Position::new(1234, 1200),
            Position::dense(99),
        ] {
            assert_eq!(from_kdb(to_kdb(p)).unwrap(), p);
        }
        assert!(from_kdb(kdb::Position::end()).is_err());
    }

    #[test]
    fn positions_map_to_seqs() {
        let v = [
            Position::dense(10),
            Position::dense(20),
            Position::new(20, 25),
            Position::dense(40),
        ];
        assert_eq!(seq_at(&v, Position::new(20, 25)), Some(2));
        assert_eq!(seq_at(&v, Position::dense(10)), Some(0));
        assert_eq!(seq_at(&v, Position::dense(30)), None);
        assert_eq!(first_seq(&v, ReadFrom::Start), 0);
        assert_eq!(first_seq(&v, ReadFrom::At(Position::dense(20))), 1);
        assert_eq!(first_seq(&v, ReadFrom::After(Position::dense(20))), 2);
        assert_eq!(first_seq(&v, ReadFrom::At(Position::dense(30))), 3);
        assert_eq!(first_seq(&v, ReadFrom::After(Position::dense(40))), 4);
        let index = Index::new();
        assert_eq!(index.head(), None);
        for p in [
            Position::dense(10),
            Position::dense(20),
            Position::dense(20),
        ] {
            index.push(p);
        }
        assert_eq!(
            index.head(),
            Some(Head {
                position: Position::dense(20),
                seq: 1
            })
        );
        assert!(index.covers(Position::new(15, 15)));
        assert!(!index.covers(Position::dense(21)));
        assert_eq!(index.available(ReadFrom::After(Position::dense(10))), 1);
    }

    #[test]
    fn retries_are_recognised() {
        let (a, b, c) = (
            uuid::Uuid::now_v7(),
            uuid::Uuid::now_v7(),
            uuid::Uuid::now_v7(),
        );
        let stored: HashMap<_, _> = [
            (a, (0, Position::dense(100))),
            (b, (1, Position::dense(200))),
            (c, (2, Position::dense(300))),
        ]
        .into();
        let original = Replay::Original(Appended {
            positions: vec![Position::dense(100), Position::dense(200)],
            last_revision: 1,
        });
        assert_eq!(
            decide_replay(&[a, b], &stored, Expected::NoStream),
            original
        );
        assert_eq!(decide_replay(&[a, b], &stored, Expected::Any), original);
        assert_eq!(
            decide_replay(&[a, b], &stored, Expected::Revision(7)),
            Replay::Reused
        );
        assert_eq!(
            decide_replay(&[b, a], &stored, Expected::NoStream),
            Replay::Reused
        );
        let new = uuid::Uuid::now_v7();
        assert_eq!(
            decide_replay(&[b, new], &stored, Expected::Revision(2)),
            Replay::Reused
        );
        assert_eq!(decide_replay(&[new], &stored, Expected::Any), Replay::New);
        assert_eq!(
            decide_replay(&[c], &stored, Expected::Revision(1)),
            Replay::Original(Appended {
                positions: vec![Position::dense(300)],
                last_revision: 2
            })
        );
    }

    #[test]
    fn appends_are_validated() {
        let event = |stream: &str| NewEvent {
            id: uuid::Uuid::now_v7(),
            stream: stream.into(),
            event_type: "t".into(),
            body: b"{}".to_vec(),
            sidecar: None,
        };
        assert!(crate::store::validate_append("user-a", &[event("user-a")]).is_ok());
        let invalid = |r: Result<(), StoreError>| matches!(r, Err(StoreError::InvalidEvent(_)));
        assert!(invalid(crate::store::validate_append("user-a", &[])));
        assert!(invalid(crate::store::validate_append(
            "user-z",
            &[event("user-a")]
        )));
        let e = event("user-a");
        assert!(invalid(crate::store::validate_append(
            "user-a",
            &[e.clone(), e]
        )));
        let mut empty = event("user-a");
        empty.sidecar = Some(Vec::new());
        assert!(invalid(crate::store::validate_append("user-a", &[empty])));
    }

    #[test]
    fn lease_records_and_expiry() {
        let r = LeaseRecord {
            holder: "node-1".into(),
            until_ms: 1_000,
        };
        let bytes = serde_json::to_vec(&r).unwrap();
        assert_eq!(decode_lease(&bytes), Some(r.clone()));
        assert_eq!(decode_lease(b"not json"), None);
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            r#"{"holder":"node-1","until_ms":1000}"#
        );
        assert!(lease_takeable(None, "node-2", 500));
        assert!(!lease_takeable(Some(&r), "node-2", 999));
        assert!(lease_takeable(Some(&r), "node-2", 1_000));
        assert!(lease_takeable(Some(&r), "node-1", 500));
    }

    #[test]
    fn retention_settings_are_problems() {
        let none = serde_json::json!({ "$acl": { "$r": "$admins" }, "$cacheControl": 10 });
        assert!(retention_problems("user-a", &none).is_empty());
        assert!(retention_problems("user-a", &serde_json::json!({ "$maxCount": null })).is_empty());
        let one = retention_problems("user-a", &serde_json::json!({ "$maxCount": 5 }));
        assert_eq!(one.len(), 1);
        assert!(
            one[0].contains("user-a") && one[0].contains("$maxCount"),
            "{}",
            one[0]
        );
        let two = serde_json::json!({ "$maxAge": 3600, "$tb": 12 });
        assert_eq!(retention_problems("client-b", &two).len(), 2);
    }
}
