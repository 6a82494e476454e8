//! The event store: one trait with optimistic concurrency in its signature, its
//! backends, and the decorators that wrap it.
//!
//! Backends are chosen at run time by URL ([`StoreUrl`]) and compiled in by Cargo
//! features; one that is not compiled in is [`StoreError::FeatureNotEnabled`].

pub mod copy;
pub mod embedded;
mod instrumented;
pub mod kurrentdb;
pub mod postgres;
mod url;

use std::sync::Arc;

use async_trait::async_trait;
use authlog_schemas::{Envelope, Position, Recorded};
use futures_util::stream::BoxStream;
use sha2::{Digest, Sha256};

pub use instrumented::{Instrumented, StoreMetrics};
pub use url::StoreUrl;

/// What the appender expects of the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    /// Whatever the stream holds.
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream's last event must have this revision.
    Revision(u64),
}

impl Expected {
    /// The expectation that follows having read `last` (None: an empty stream).
    pub fn after(last: Option<u64>) -> Self {
        last.map_or(Expected::NoStream, Expected::Revision)
    }
}

impl std::fmt::Display for Expected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expected::Any => f.write_str("any"),
            Expected::NoStream => f.write_str("no stream"),
            Expected::Revision(r) => write!(f, "revision {r}"),
        }
    }
}

/// An event about to be appended: its id, the body as canonical JSON bytes, and
/// the sealed sidecar if any. Built from an [`Envelope`] so the three agree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub(crate) id: uuid::Uuid,
    /// The stream the body names: an append to any other stream is refused.
    pub(crate) stream: String,
    pub(crate) event_type: String,
    pub(crate) body: Vec<u8>,
    pub(crate) sidecar: Option<Vec<u8>>,
}

/// How far ahead of this node's clock an event's time may be. Views run on log
/// time (the latest event time), so one event stamped far in the future would
/// expire every session and code at once; such events are refused.
pub const MAX_CLOCK_SKEW_MS: i64 = 5 * 60 * 1000;

impl NewEvent {
    /// Serialises `envelope` once, as RFC 8785 canonical JSON. If `sealed` is given
    /// (already encrypted, see [`crate::seal`]), its SHA-256 goes into the body as
    /// `sealed_digest` and the ciphertext travels beside it.
    pub fn new(mut envelope: Envelope, sealed: Option<Vec<u8>>) -> Result<NewEvent, StoreError> {
        let id = uuid::Uuid::parse_str(&envelope.id)
            .map_err(|e| StoreError::InvalidEvent(format!("event id: {e}")))?;
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        if envelope.time.unix_millis() > now_ms + MAX_CLOCK_SKEW_MS {
            return Err(StoreError::InvalidEvent(format!(
                "event time {} is more than {} s ahead of this node's clock",
                envelope.time,
                MAX_CLOCK_SKEW_MS / 1000
            )));
        }
        envelope.sealed_digest = sealed.as_ref().map(|s| hex::encode(Sha256::digest(s)));
        let body = envelope
            .to_body()
            .map_err(|e| StoreError::InvalidEvent(e.to_string()))?;
        Ok(NewEvent {
            id,
            stream: envelope.stream.clone(),
            event_type: envelope.event_type.as_str().to_string(),
            body,
            sidecar: sealed,
        })
    }
}

impl NewEvent {
    /// The event `rec` exactly as stored, to copy a log into another store:
    /// the body bytes verbatim (never re-serialised, so the audit tree's leaves
    /// stay the same) and the sidecar as sealed.
    pub fn from_recorded(rec: &Recorded) -> Result<NewEvent, StoreError> {
        let env = rec
            .envelope()
            .map_err(|e| StoreError::InvalidEvent(format!("seq {}: {e}", rec.seq)))?;
        let id = uuid::Uuid::parse_str(&env.id)
            .map_err(|e| StoreError::InvalidEvent(format!("seq {}: event id: {e}", rec.seq)))?;
        Ok(NewEvent {
            id,
            stream: rec.stream.clone(),
            event_type: env.event_type.as_str().to_string(),
            body: rec.body.clone(),
            sidecar: rec.sidecar.clone(),
        })
    }

    pub fn id(&self) -> uuid::Uuid {
        self.id
    }

    pub fn stream(&self) -> &str {
        &self.stream
    }

    pub fn event_type(&self) -> &str {
        &self.event_type
    }

    /// The canonical JSON body, exactly as it will be stored.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    pub fn sidecar(&self) -> Option<&[u8]> {
        self.sidecar.as_deref()
    }

    /// Replaces the sidecar without updating the body's `sealed_digest`: makes a
    /// damaged record, for tests of `store check` only.
    #[doc(hidden)]
    pub fn with_mismatched_sidecar_for_tests(mut self, sidecar: Vec<u8>) -> NewEvent {
        self.sidecar = Some(sidecar);
        self
    }
}

/// What a successful append committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// One per event, in order.
    pub positions: Vec<Position>,
    /// The stream revision of the last event appended.
    pub last_revision: u64,
}

impl Appended {
    pub fn last_position(&self) -> Option<Position> {
        self.positions.last().copied()
    }
}

/// The end of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub position: Position,
    pub seq: u64,
}

/// Where a read of the whole log starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadFrom {
    Start,
    /// This position and after.
    At(Position),
    /// Strictly after this position.
    After(Position),
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("wrong expected revision on stream {stream}: expected {expected}, actual {}", actual.map_or("no stream".to_string(), |r| format!("revision {r}")))]
    Conflict {
        stream: String,
        expected: Expected,
        /// The stream's last revision, None if it does not exist.
        actual: Option<u64>,
    },
    #[error(
        "event {id} was already appended, but not as this append describes it (stream {stream}, {expected})"
    )]
    IdReused {
        id: uuid::Uuid,
        stream: String,
        expected: Expected,
    },
    #[error("invalid event: {0}")]
    InvalidEvent(String),
    #[error("no authlog store at {0}")]
    NotFound(String),
    #[error("the store {0} is in use by another process")]
    Locked(String),
    #[error("store backend `{0}` is not compiled into this build (enable Cargo feature `{0}`)")]
    FeatureNotEnabled(String),
    #[error("unsupported store URL: {0}")]
    BadUrl(String),
    #[error("the store is shutting down")]
    Closed,
    #[error("the store's data is damaged: {0}")]
    Corrupt(String),
    #[error("store I/O: {0}")]
    Io(String),
}

/// The log. Positions are opaque and totally ordered; `seq` is dense.
#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Appends `events` to `stream` if it is as `expected`, atomically, and returns
    /// once they are durable. Idempotent: if these ids already follow `expected` in
    /// this stream, returns the original result and writes nothing.
    async fn append(
        &self,
        stream: &str,
        expected: Expected,
        events: Vec<NewEvent>,
    ) -> Result<Appended, StoreError>;

    /// Up to `limit` events of `stream` from `from_revision` on, in order. A
    /// backend may return fewer (reads stay short): page until a short page.
    async fn read_stream(
        &self,
        stream: &str,
        from_revision: u64,
        limit: usize,
    ) -> Result<Vec<Recorded>, StoreError>;

    /// Up to `limit` events of the whole log, in log order; a backend may return
    /// fewer, never zero unless the log has nothing from there.
    async fn read_all(&self, from: ReadFrom, limit: usize) -> Result<Vec<Recorded>, StoreError>;

    /// Committed events from `from`, in order, then the live tail, without gaps.
    fn subscribe_all(&self, from: ReadFrom) -> BoxStream<'static, Result<Recorded, StoreError>>;

    /// The last committed event's position and seq, None on an empty log.
    async fn head(&self) -> Result<Option<Head>, StoreError>;

    /// The identity of this log: snapshots and checkpoints from another log are
    /// ignored.
    fn log_id(&self) -> String;

    /// Reads the whole log and checks order, revisions and body digests.
    async fn check(&self) -> Result<CheckReport, StoreError>;

    /// Whether other processes may share this log (cluster stores). A shared
    /// log needs shared secrets, and leases for its singletons.
    fn is_shared(&self) -> bool;

    /// Tries to take the lease `name` for `holder`: one holder across every node
    /// on this log. None: another holder has it. Held until dropped or lost.
    async fn try_lease(&self, name: &str, holder: &str) -> Result<Option<Lease>, StoreError>;

    /// The named checkpoint (a singleton's progress) with its version.
    async fn load_checkpoint(&self, name: &str) -> Result<Option<(u64, Vec<u8>)>, StoreError>;

    /// Writes the named checkpoint if it is still at `expected` (None: absent)
    /// and returns the new version; [`StoreError::Conflict`] otherwise.
    async fn save_checkpoint(
        &self,
        name: &str,
        expected: Option<u64>,
        value: Vec<u8>,
    ) -> Result<u64, StoreError>;
}

/// A lease on a singleton (a sink, the checkpointer, key rotation) across every
/// node on one log. Dropping it gives it up; [`Lease::lost`] resolves when the
/// backend can no longer vouch for it (its connection or renewal failed).
pub struct Lease {
    lost: tokio::sync::watch::Receiver<bool>,
    _hold: Box<dyn std::any::Any + Send + Sync>,
}

impl Lease {
    /// A lease that lasts while `hold` lives and ends when `lost` turns true.
    pub fn new(
        lost: tokio::sync::watch::Receiver<bool>,
        hold: impl std::any::Any + Send + Sync,
    ) -> Lease {
        Lease {
            lost,
            _hold: Box::new(hold),
        }
    }

    /// The lease of a store only one process can open: never lost.
    pub fn exclusive() -> Lease {
        let (tx, rx) = tokio::sync::watch::channel(false);
        Lease::new(rx, tx)
    }

    pub fn is_lost(&self) -> bool {
        *self.lost.borrow()
    }

    /// Resolves once the lease is lost.
    pub async fn lost(&mut self) {
        if self.lost.wait_for(|l| *l).await.is_err() {
            // The backend dropped its side: it can no longer vouch for the lease.
        }
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("lost", &self.is_lost())
            .finish()
    }
}

/// The conflict a checkpoint compare-and-set reports.
pub fn checkpoint_conflict(name: &str, expected: Option<u64>, actual: Option<u64>) -> StoreError {
    StoreError::Conflict {
        stream: format!("checkpoint {name}"),
        expected: Expected::after(expected),
        actual,
    }
}

/// What `store check` found.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CheckReport {
    pub events: u64,
    pub streams: u64,
    pub with_sidecar: u64,
    pub problems: Vec<String>,
}

pub type DynStore = Arc<dyn EventStore>;

#[async_trait]
impl<S: EventStore + ?Sized> EventStore for Arc<S> {
    async fn append(
        &self,
        stream: &str,
        expected: Expected,
        events: Vec<NewEvent>,
    ) -> Result<Appended, StoreError> {
        (**self).append(stream, expected, events).await
    }
    async fn read_stream(
        &self,
        stream: &str,
        from_revision: u64,
        limit: usize,
    ) -> Result<Vec<Recorded>, StoreError> {
        (**self).read_stream(stream, from_revision, limit).await
    }
    async fn read_all(&self, from: ReadFrom, limit: usize) -> Result<Vec<Recorded>, StoreError> {
        (**self).read_all(from, limit).await
    }
    fn subscribe_all(&self, from: ReadFrom) -> BoxStream<'static, Result<Recorded, StoreError>> {
        (**self).subscribe_all(from)
    }
    async fn head(&self) -> Result<Option<Head>, StoreError> {
        (**self).head().await
    }
    fn log_id(&self) -> String {
        (**self).log_id()
    }
    async fn check(&self) -> Result<CheckReport, StoreError> {
        (**self).check().await
    }
    fn is_shared(&self) -> bool {
        (**self).is_shared()
    }
    async fn try_lease(&self, name: &str, holder: &str) -> Result<Option<Lease>, StoreError> {
        (**self).try_lease(name, holder).await
    }
    async fn load_checkpoint(&self, name: &str) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        (**self).load_checkpoint(name).await
    }
    async fn save_checkpoint(
        &self,
        name: &str,
        expected: Option<u64>,
        value: Vec<u8>,
    ) -> Result<u64, StoreError> {
        (**self).save_checkpoint(name, expected, value).await
    }
}

/// Reads a whole stream (paged).
pub async fn read_whole_stream(
    store: &dyn EventStore,
    stream: &str,
) -> Result<Vec<Recorded>, StoreError> {
    const PAGE: usize = 512;
    let mut out = Vec::new();
    loop {
        let page = store.read_stream(stream, out.len() as u64, PAGE).await?;
        if page.is_empty() {
            return Ok(out);
        }
        out.extend(page);
    }
}

/// What no backend may store, refused before anything is sent: an empty
/// append, a bad stream name, an event naming another stream, one id twice, an
/// empty sidecar.
pub(crate) fn validate_append(stream: &str, events: &[NewEvent]) -> Result<(), StoreError> {
    if events.is_empty() {
        return Err(StoreError::InvalidEvent(
            "an append needs at least one event".into(),
        ));
    }
    if stream.is_empty() || stream.len() > 512 {
        return Err(StoreError::InvalidEvent(
            "stream names are 1 to 512 bytes".into(),
        ));
    }
    if let Some(e) = events.iter().find(|e| e.stream != stream) {
        return Err(StoreError::InvalidEvent(format!(
            "event {} names stream {:?}, not {stream:?}",
            e.id, e.stream
        )));
    }
    let mut ids: Vec<uuid::Uuid> = events.iter().map(|e| e.id).collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.len() != events.len() {
        return Err(StoreError::InvalidEvent(
            "an event id appears twice in one append".into(),
        ));
    }
    if events
        .iter()
        .any(|e| e.sidecar.as_ref().is_some_and(Vec::is_empty))
    {
        return Err(StoreError::InvalidEvent(
            "an empty sidecar cannot be stored (it would read back as none)".into(),
        ));
    }
    Ok(())
}

/// `store check` for backends that hand out records through [`EventStore`]
/// reads only: the whole log in order, with dense seqs, increasing positions,
/// each stream's revisions contiguous from 0, bodies that parse and name their
/// stream, and sidecars that match their `sealed_digest`. Memory grows with
/// the number of streams (one counter each), not with the log.
pub async fn check_by_reading(store: &dyn EventStore) -> Result<CheckReport, StoreError> {
    const PAGE: usize = 1024;
    let mut report = CheckReport::default();
    let problem = |report: &mut CheckReport, p: String| {
        if report.problems.len() < 100 {
            report.problems.push(p);
        }
    };
    let mut next_revision: std::collections::HashMap<String, u64> =
        std::collections::HashMap::new();
    let mut from = ReadFrom::Start;
    let mut last: Option<Position> = None;
    loop {
        let page = store.read_all(from, PAGE).await?;
        for rec in &page {
            let seq = rec.seq;
            let want_seq = report.events;
            if seq != want_seq {
                problem(
                    &mut report,
                    format!("gap: seq {seq} where {want_seq} was expected"),
                );
            }
            if last.is_some_and(|l| rec.position <= l) {
                problem(
                    &mut report,
                    format!("seq {seq}: position {} does not increase", rec.position),
                );
            }
            last = Some(rec.position);
            report.events += 1;
            let want = next_revision.entry(rec.stream.clone()).or_insert(0);
            if rec.revision != *want {
                problem(
                    &mut report,
                    format!(
                        "stream {}: revision {} where {} was expected",
                        rec.stream, rec.revision, want
                    ),
                );
            }
            *want = rec.revision + 1;
            match rec.envelope() {
                Err(e) => problem(&mut report, format!("seq {seq}: {e}")),
                Ok(env) => {
                    if env.stream != rec.stream {
                        problem(
                            &mut report,
                            format!("seq {seq}: body names stream {}", env.stream),
                        );
                    }
                    let digest = rec.sidecar.as_ref().map(|s| hex::encode(Sha256::digest(s)));
                    if digest != env.sealed_digest {
                        problem(
                            &mut report,
                            format!("seq {seq}: sidecar does not match sealed_digest"),
                        );
                    }
                }
            }
            if rec.sidecar.is_some() {
                report.with_sidecar += 1;
            }
        }
        match page.last() {
            Some(r) => from = ReadFrom::After(r.position),
            None => break,
        }
    }
    report.streams = next_revision.len() as u64;
    Ok(report)
}

/// A store URL fit for messages and logs: any password is masked.
pub fn redact_url(url: &str) -> String {
    match url.split("://").next() {
        Some("postgres" | "postgresql") => postgres::redact(url),
        Some("kurrentdb" | "esdb" | "esdb+discover" | "kurrentdb+discover") => {
            kurrentdb::redact(url)
        }
        _ => url.to_string(),
    }
}

/// A stable 64-bit key for a name (PostgreSQL advisory locks, lease streams).
pub fn name_key(name: &str) -> i64 {
    let d = Sha256::digest(name.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    i64::from_be_bytes(b)
}
