//! The embedded backend, the default: a redb database under the data directory.
//!
//! redb is a well-kept pure-Rust B-tree store with ACID transactions, crash-safe
//! commits (checksummed, copy-on-write pages) and an exclusive file lock, so a
//! second process cannot open the same log. authlog adds what an event store needs
//! on top:
//!
//! * one writer thread that takes every append waiting when it is free and commits
//!   them together (group commit, no timer): each append's expected revision is
//!   checked on its own, so a conflict fails only that append; every caller is
//!   answered after the one durable commit (fsync) that holds its events;
//! * an on-disk id index for idempotent retries;
//! * short, paged read transactions, so a long export or subscription never pins
//!   old pages and stalls space reuse.
//!
//! Positions are dense: position = seq.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use authlog_schemas::{Position, Recorded};
use futures_util::stream::{self, BoxStream, StreamExt};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot, watch};

use super::{
    Appended, CheckReport, EventStore, Expected, Head, NewEvent, ReadFrom, StoreError, StoreMetrics,
};

/// seq → encoded record.
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
/// (stream, revision) → seq; a stream's current revision is its last entry.
const STREAM_INDEX: TableDefinition<(&str, u64), u64> = TableDefinition::new("stream_index");
/// event id → seq: the idempotency index.
const IDS: TableDefinition<u128, u64> = TableDefinition::new("ids");
/// log identity and format.
const META: TableDefinition<&str, &str> = TableDefinition::new("meta");
/// Singletons' checkpoints: name → (version, value).
const CHECKPOINTS: TableDefinition<&str, (u64, &[u8])> = TableDefinition::new("checkpoints");

const FORMAT_VERSION: &str = "1";
const RECORD_VERSION: u8 = 1;
/// Appends taken into one commit at most.
const MAX_BATCH: usize = 4096;
/// Events read per read transaction.
const READ_PAGE: usize = 256;

/// redb's page cache for the log.
const CACHE_BYTES: usize = 64 << 20;

/// The file name of the database under its directory.
pub const DB_FILE: &str = "events.redb";

fn io<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Io(e.to_string())
}

struct AppendRequest {
    stream: String,
    expected: Expected,
    events: Vec<NewEvent>,
    reply: oneshot::Sender<Result<Appended, StoreError>>,
}

struct Inner {
    db: Arc<Database>,
    /// Taken on drop: closing the channel lets the writer finish and exit.
    sender: Option<mpsc::Sender<Request>>,
    writer: Option<std::thread::JoinHandle<()>>,
    /// The seq of the last committed event.
    head: watch::Receiver<Option<u64>>,
    log_id: String,
    path: PathBuf,
}

/// The embedded event store. Cheap to clone.
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.inner.path)
            .finish()
    }
}

impl EmbeddedStore {
    /// Opens (creating if needed) the store in `dir`. Fails with
    /// [`StoreError::Locked`] when another process has it open.
    pub fn open(dir: &Path, metrics: Option<StoreMetrics>) -> Result<EmbeddedStore, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Io(format!("creating {}: {e}", dir.display())))?;
        let path = dir.join(DB_FILE);
        // A bounded page cache: memory does not grow with the log.
        let db = match Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
        {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(StoreError::Locked(path.display().to_string()));
            }
            Err(e) => return Err(StoreError::Io(format!("opening {}: {e}", path.display()))),
        };
        let (log_id, last_seq) = init(&db)?;
        let db = Arc::new(db);
        let (head_tx, head_rx) = watch::channel(last_seq);
        let (sender, receiver) = mpsc::channel::<Request>(MAX_BATCH * 2);
        let writer_db = db.clone();
        let writer = std::thread::Builder::new()
            .name("authlog-writer".into())
            .spawn(move || writer(writer_db, receiver, head_tx, metrics))
            .map_err(io)?;
        Ok(EmbeddedStore {
            inner: Arc::new(Inner {
                db,
                sender: Some(sender),
                writer: Some(writer),
                head: head_rx,
                log_id,
                path,
            }),
        })
    }

    /// Opens the store in `dir` only if one exists there (commands that read must
    /// not create an empty log in a mistyped directory).
    pub fn open_existing(
        dir: &Path,
        metrics: Option<StoreMetrics>,
    ) -> Result<EmbeddedStore, StoreError> {
        let path = dir.join(DB_FILE);
        if !path.is_file() {
            return Err(StoreError::NotFound(path.display().to_string()));
        }
        EmbeddedStore::open(dir, metrics)
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Holds the writer until the returned sender is dropped: appends made
    /// meanwhile queue up and share the next commit. For tests of group commit.
    #[doc(hidden)]
    pub async fn pause_writer(&self) -> Result<oneshot::Sender<()>, StoreError> {
        let (release, until) = oneshot::channel();
        let sender = self.inner.sender.as_ref().ok_or(StoreError::Closed)?;
        sender
            .send(Request::Pause(until))
            .await
            .map_err(|_| StoreError::Closed)?;
        Ok(release)
    }
}

impl Drop for Inner {
    /// Closes the store deterministically: the writer commits what it has been
    /// given, exits, and releases the database (and its file lock) before the
    /// last handle is gone.
    fn drop(&mut self) {
        drop(self.sender.take());
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

fn init(db: &Database) -> Result<(String, Option<u64>), StoreError> {
    let txn = db.begin_write().map_err(io)?;
    let log_id;
    let last;
    {
        let mut meta = txn.open_table(META).map_err(io)?;
        let existing = meta
            .get("log_id")
            .map_err(io)?
            .map(|v| v.value().to_string());
        log_id = match existing {
            Some(id) => id,
            None => {
                let id = uuid::Uuid::now_v7().to_string();
                meta.insert("log_id", id.as_str()).map_err(io)?;
                meta.insert("format", FORMAT_VERSION).map_err(io)?;
                id
            }
        };
        let format = meta
            .get("format")
            .map_err(io)?
            .map(|v| v.value().to_string());
        if format.as_deref() != Some(FORMAT_VERSION) {
            return Err(StoreError::Corrupt(format!(
                "unknown store format {format:?}; this build reads format {FORMAT_VERSION}"
            )));
        }
        let log = txn.open_table(LOG).map_err(io)?;
        last = log.last().map_err(io)?.map(|(k, _)| k.value());
        txn.open_table(STREAM_INDEX).map_err(io)?;
        txn.open_table(IDS).map_err(io)?;
    }
    txn.commit().map_err(io)?;
    Ok((log_id, last))
}

// ---- record encoding ----------------------------------------------------------

/// A record as stored under its seq.
struct StoredRecord {
    revision: u64,
    stream: String,
    body_sha256: [u8; 32],
    body: Vec<u8>,
    sidecar: Option<Vec<u8>>,
}

fn encode(revision: u64, stream: &str, body: &[u8], sidecar: Option<&[u8]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + stream.len() + body.len());
    out.push(RECORD_VERSION);
    out.extend_from_slice(&revision.to_be_bytes());
    out.extend_from_slice(&(stream.len() as u32).to_be_bytes());
    out.extend_from_slice(stream.as_bytes());
    out.extend_from_slice(&Sha256::digest(body));
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    match sidecar {
        None => out.push(0),
        Some(s) => {
            out.push(1);
            out.extend_from_slice(&(s.len() as u32).to_be_bytes());
            out.extend_from_slice(s);
        }
    }
    out
}

struct Reader<'a>(&'a [u8], u64);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        if self.0.len() < n {
            return Err(StoreError::Corrupt(format!(
                "record at seq {} is truncated",
                self.1
            )));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u32(&mut self) -> Result<u32, StoreError> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4)?);
        Ok(u32::from_be_bytes(b))
    }
    fn u64(&mut self) -> Result<u64, StoreError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(b))
    }
}

fn decode(seq: u64, bytes: &[u8]) -> Result<StoredRecord, StoreError> {
    let mut r = Reader(bytes, seq);
    let version = r.take(1)?[0];
    if version != RECORD_VERSION {
        return Err(StoreError::Corrupt(format!(
            "record at seq {seq} has version {version}"
        )));
    }
    let revision = r.u64()?;
    let len = r.u32()? as usize;
    let stream = String::from_utf8(r.take(len)?.to_vec())
        .map_err(|_| StoreError::Corrupt(format!("stream name at seq {seq} is not UTF-8")))?;
    let mut body_sha256 = [0u8; 32];
    body_sha256.copy_from_slice(r.take(32)?);
    let len = r.u32()? as usize;
    let body = r.take(len)?.to_vec();
    let sidecar = match r.take(1)?[0] {
        0 => None,
        1 => {
            let len = r.u32()? as usize;
            Some(r.take(len)?.to_vec())
        }
        _ => {
            return Err(StoreError::Corrupt(format!(
                "record at seq {seq}: bad sidecar flag"
            )));
        }
    };
    if !r.0.is_empty() {
        return Err(StoreError::Corrupt(format!(
            "record at seq {seq} has trailing bytes"
        )));
    }
    Ok(StoredRecord {
        revision,
        stream,
        body_sha256,
        body,
        sidecar,
    })
}

fn to_recorded(seq: u64, rec: StoredRecord) -> Recorded {
    Recorded {
        position: Position::dense(seq),
        revision: rec.revision,
        seq,
        stream: rec.stream,
        body: rec.body,
        sidecar: rec.sidecar,
    }
}

// ---- the writer -----------------------------------------------------------------

/// What the writer thread receives.
enum Request {
    Append(AppendRequest),
    /// Hold the writer until the sender is dropped or fires (tests use it to
    /// make appends queue up and share one commit).
    Pause(oneshot::Receiver<()>),
}

fn writer(
    db: Arc<Database>,
    mut receiver: mpsc::Receiver<Request>,
    head: watch::Sender<Option<u64>>,
    metrics: Option<StoreMetrics>,
) {
    while let Some(first) = receiver.blocking_recv() {
        let first = match first {
            Request::Append(req) => req,
            Request::Pause(until) => {
                let _ = until.blocking_recv();
                continue;
            }
        };
        let mut batch = vec![first];
        let mut paused = None;
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(Request::Append(req)) => batch.push(req),
                Ok(Request::Pause(until)) => {
                    paused = Some(until);
                    break;
                }
                Err(_) => break,
            }
        }
        let started = Instant::now();
        let outcome = commit_batch(&db, &batch);
        if let Some(m) = &metrics {
            m.batch_size.observe(batch.len() as f64);
            m.commit_seconds.observe(started.elapsed().as_secs_f64());
        }
        match outcome {
            Ok((results, last_seq)) => {
                // Publish the new head before answering: a caller that waits for
                // its position can count on the subscription having it.
                head.send_replace(last_seq);
                for (req, result) in batch.into_iter().zip(results) {
                    let _ = req.reply.send(result);
                }
            }
            Err(e) => {
                // redb refuses further writes after a failed commit: stop. Pending
                // and later appends fail with `Closed`, subscriptions end, and the
                // view runner reports the failure on /readyz.
                tracing::error!(error = %e, appends = batch.len(), "commit failed; nothing in the batch was written; the store stops accepting appends");
                for req in batch {
                    let _ = req.reply.send(Err(StoreError::Io(e.to_string())));
                }
                return;
            }
        }
        if let Some(until) = paused {
            let _ = until.blocking_recv();
        }
    }
}

type BatchResult = (Vec<Result<Appended, StoreError>>, Option<u64>);

/// Applies each append of the batch on its own inside one write transaction and
/// commits once. A failed check fails that append only; a storage error fails all.
fn commit_batch(db: &Database, batch: &[AppendRequest]) -> Result<BatchResult, StoreError> {
    let txn = db.begin_write().map_err(io)?;
    let mut results = Vec::with_capacity(batch.len());
    let last_seq;
    {
        let mut tables = Tables {
            log: txn.open_table(LOG).map_err(io)?,
            index: txn.open_table(STREAM_INDEX).map_err(io)?,
            ids: txn.open_table(IDS).map_err(io)?,
        };
        // The next seq comes from the log itself, never from a counter that could
        // drift from it.
        let mut seq = tables.log.last().map_err(io)?.map(|(k, _)| k.value());
        for req in batch {
            results.push(tables.apply(req, &mut seq)?);
        }
        last_seq = seq;
    }
    txn.commit().map_err(io)?;
    Ok((results, last_seq))
}

struct Tables<'t> {
    log: redb::Table<'t, u64, &'static [u8]>,
    index: redb::Table<'t, (&'static str, u64), u64>,
    ids: redb::Table<'t, u128, u64>,
}

impl Tables<'_> {
    /// Ok(Err(_)) is this append's own failure; Err(_) is a storage failure.
    fn apply(
        &mut self,
        req: &AppendRequest,
        last_seq: &mut Option<u64>,
    ) -> Result<Result<Appended, StoreError>, StoreError> {
        let stream = req.stream.as_str();
        if req.events.is_empty() {
            return Ok(Err(StoreError::InvalidEvent(
                "an append needs at least one event".into(),
            )));
        }
        if stream.is_empty() || stream.len() > 512 {
            return Ok(Err(StoreError::InvalidEvent(
                "stream names are 1 to 512 bytes".into(),
            )));
        }
        if let Some(e) = req.events.iter().find(|e| e.stream != stream) {
            return Ok(Err(StoreError::InvalidEvent(format!(
                "event {} names stream {:?}, not {stream:?}",
                e.id, e.stream
            ))));
        }
        let current = self
            .index
            .range((stream, 0)..=(stream, u64::MAX))
            .map_err(io)?
            .next_back()
            .transpose()
            .map_err(io)?
            .map(|(k, _)| k.value().1);

        // Idempotency: are these ids already in the log?
        let mut seen = Vec::with_capacity(req.events.len());
        for e in &req.events {
            seen.push(self.ids.get(e.id.as_u128()).map_err(io)?.map(|v| v.value()));
        }
        if seen.iter().any(Option::is_some) {
            return self
                .replayed(req, &seen)
                .map(|r| r.ok_or_else(|| id_reused(req)));
        }
        let mut distinct: Vec<u128> = req.events.iter().map(|e| e.id.as_u128()).collect();
        distinct.sort_unstable();
        distinct.dedup();
        if distinct.len() != req.events.len() {
            return Ok(Err(StoreError::InvalidEvent(
                "an event id appears twice in one append".into(),
            )));
        }

        let ok = match req.expected {
            Expected::Any => true,
            Expected::NoStream => current.is_none(),
            Expected::Revision(n) => current == Some(n),
        };
        if !ok {
            return Ok(Err(StoreError::Conflict {
                stream: stream.to_string(),
                expected: req.expected,
                actual: current,
            }));
        }

        let mut revision = current.map_or(0, |r| r + 1);
        let mut positions = Vec::with_capacity(req.events.len());
        for e in &req.events {
            let seq = last_seq.map_or(0, |s| s + 1);
            let record = encode(revision, stream, &e.body, e.sidecar.as_deref());
            let clobbered = self
                .log
                .insert(seq, record.as_slice())
                .map_err(io)?
                .is_some()
                | self
                    .index
                    .insert((stream, revision), seq)
                    .map_err(io)?
                    .is_some()
                | self.ids.insert(e.id.as_u128(), seq).map_err(io)?.is_some();
            if clobbered {
                return Err(StoreError::Corrupt(format!(
                    "seq {seq} or {stream} revision {revision} was already taken"
                )));
            }
            positions.push(Position::dense(seq));
            *last_seq = Some(seq);
            revision += 1;
        }
        let last_revision = revision - 1;
        Ok(Ok(Appended {
            positions,
            last_revision,
        }))
    }

    /// The original result if every id already follows `expected` in this stream,
    /// consecutively and in order; None otherwise.
    fn replayed(
        &self,
        req: &AppendRequest,
        seen: &[Option<u64>],
    ) -> Result<Option<Appended>, StoreError> {
        let mut positions = Vec::with_capacity(seen.len());
        let mut first_revision = None;
        for (i, seq) in seen.iter().enumerate() {
            let Some(seq) = *seq else { return Ok(None) };
            let Some(raw) = self.log.get(seq).map_err(io)? else {
                return Err(StoreError::Corrupt(format!(
                    "id index points at missing seq {seq}"
                )));
            };
            let rec = decode(seq, raw.value())?;
            if rec.stream != req.stream {
                return Ok(None);
            }
            let first = *first_revision.get_or_insert(rec.revision);
            if rec.revision != first + i as u64 {
                return Ok(None);
            }
            positions.push(Position::dense(seq));
        }
        let Some(first) = first_revision else {
            return Ok(None);
        };
        let follows = match req.expected {
            Expected::Any => true,
            Expected::NoStream => first == 0,
            Expected::Revision(n) => first == n + 1,
        };
        Ok(follows.then(|| Appended {
            positions,
            last_revision: first + seen.len() as u64 - 1,
        }))
    }
}

fn id_reused(req: &AppendRequest) -> StoreError {
    StoreError::IdReused {
        id: req.events.first().map(|e| e.id).unwrap_or_default(),
        stream: req.stream.clone(),
        expected: req.expected,
    }
}

// ---- reads ----------------------------------------------------------------------

/// The most events one read transaction returns: reads stay short.
pub const MAX_READ: usize = 1024;

fn read_range(db: &Database, from_seq: u64, limit: usize) -> Result<Vec<Recorded>, StoreError> {
    let limit = limit.min(MAX_READ);
    let txn = db.begin_read().map_err(io)?;
    let log = txn.open_table(LOG).map_err(io)?;
    let mut out = Vec::with_capacity(limit.min(READ_PAGE));
    for item in log.range(from_seq..).map_err(io)?.take(limit) {
        let (k, v) = item.map_err(io)?;
        let seq = k.value();
        out.push(to_recorded(seq, decode(seq, v.value())?));
    }
    Ok(out)
}

fn read_stream_range(
    db: &Database,
    stream: &str,
    from_revision: u64,
    limit: usize,
) -> Result<Vec<Recorded>, StoreError> {
    let limit = limit.min(MAX_READ);
    let txn = db.begin_read().map_err(io)?;
    let index = txn.open_table(STREAM_INDEX).map_err(io)?;
    let log = txn.open_table(LOG).map_err(io)?;
    let mut out = Vec::new();
    for item in index
        .range((stream, from_revision)..=(stream, u64::MAX))
        .map_err(io)?
        .take(limit)
    {
        let (_, seq) = item.map_err(io)?;
        let seq = seq.value();
        let Some(raw) = log.get(seq).map_err(io)? else {
            return Err(StoreError::Corrupt(format!(
                "stream index points at missing seq {seq}"
            )));
        };
        out.push(to_recorded(seq, decode(seq, raw.value())?));
    }
    Ok(out)
}

fn start_seq(from: ReadFrom) -> u64 {
    match from {
        ReadFrom::Start => 0,
        ReadFrom::At(p) => p.commit,
        ReadFrom::After(p) => p.commit.saturating_add(1),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f).await.map_err(io)?
}

#[async_trait]
impl EventStore for EmbeddedStore {
    async fn append(
        &self,
        stream: &str,
        expected: Expected,
        events: Vec<NewEvent>,
    ) -> Result<Appended, StoreError> {
        let (reply, answer) = oneshot::channel();
        let req = AppendRequest {
            stream: stream.to_string(),
            expected,
            events,
            reply,
        };
        let sender = self.inner.sender.as_ref().ok_or(StoreError::Closed)?;
        sender
            .send(Request::Append(req))
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    async fn read_stream(
        &self,
        stream: &str,
        from_revision: u64,
        limit: usize,
    ) -> Result<Vec<Recorded>, StoreError> {
        let db = self.inner.db.clone();
        let stream = stream.to_string();
        blocking(move || read_stream_range(&db, &stream, from_revision, limit)).await
    }

    async fn read_all(&self, from: ReadFrom, limit: usize) -> Result<Vec<Recorded>, StoreError> {
        let db = self.inner.db.clone();
        blocking(move || read_range(&db, start_seq(from), limit)).await
    }

    fn subscribe_all(&self, from: ReadFrom) -> BoxStream<'static, Result<Recorded, StoreError>> {
        struct State {
            db: Arc<Database>,
            head: watch::Receiver<Option<u64>>,
            next: u64,
            buffer: VecDeque<Recorded>,
            failed: bool,
        }
        let state = State {
            db: self.inner.db.clone(),
            head: self.inner.head.clone(),
            next: start_seq(from),
            buffer: VecDeque::new(),
            failed: false,
        };
        stream::unfold(state, |mut st| async move {
            if st.failed {
                return None;
            }
            loop {
                if let Some(r) = st.buffer.pop_front() {
                    st.next = r.seq + 1;
                    return Some((Ok(r), st));
                }
                let head = *st.head.borrow_and_update();
                if head.is_some_and(|h| h >= st.next) {
                    let db = st.db.clone();
                    let from = st.next;
                    match blocking(move || read_range(&db, from, READ_PAGE)).await {
                        Ok(page) => st.buffer.extend(page),
                        Err(e) => {
                            st.failed = true;
                            return Some((Err(e), st));
                        }
                    }
                    continue;
                }
                // Caught up: wait for the next commit (or the store closing).
                if st.head.changed().await.is_err() {
                    return None;
                }
            }
        })
        .boxed()
    }

    async fn head(&self) -> Result<Option<Head>, StoreError> {
        Ok((*self.inner.head.borrow()).map(|seq| Head {
            position: Position::dense(seq),
            seq,
        }))
    }

    fn log_id(&self) -> String {
        self.inner.log_id.clone()
    }

    /// Reads the whole log in short pages and checks it: seqs dense from 0, each
    /// stream's revisions contiguous from 0 and matching the stream index, each
    /// body's SHA-256 as recorded, each body a parseable envelope naming its
    /// stream, each sidecar matching the body's `sealed_digest`.
    async fn check(&self) -> Result<CheckReport, StoreError> {
        let db = self.inner.db.clone();
        blocking(move || check_db(&db)).await
    }

    fn is_shared(&self) -> bool {
        false
    }

    /// One process opens the store at a time, so it holds every lease.
    async fn try_lease(
        &self,
        _name: &str,
        _holder: &str,
    ) -> Result<Option<super::Lease>, StoreError> {
        Ok(Some(super::Lease::exclusive()))
    }

    async fn load_checkpoint(&self, name: &str) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        let db = self.inner.db.clone();
        let name = name.to_string();
        blocking(move || {
            let txn = db.begin_read().map_err(io)?;
            let table = match txn.open_table(CHECKPOINTS) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
                Err(e) => return Err(io(e)),
            };
            Ok(table.get(name.as_str()).map_err(io)?.map(|v| {
                let (version, value) = v.value();
                (version, value.to_vec())
            }))
        })
        .await
    }

    async fn save_checkpoint(
        &self,
        name: &str,
        expected: Option<u64>,
        value: Vec<u8>,
    ) -> Result<u64, StoreError> {
        let db = self.inner.db.clone();
        let name = name.to_string();
        blocking(move || {
            let txn = db.begin_write().map_err(io)?;
            let version = {
                let mut table = txn.open_table(CHECKPOINTS).map_err(io)?;
                let actual = table.get(name.as_str()).map_err(io)?.map(|v| v.value().0);
                if actual != expected {
                    return Err(super::checkpoint_conflict(&name, expected, actual));
                }
                let version = actual.map_or(1, |v| v + 1);
                table
                    .insert(name.as_str(), (version, value.as_slice()))
                    .map_err(io)?;
                version
            };
            txn.commit().map_err(io)?;
            Ok(version)
        })
        .await
    }
}

fn check_db(db: &Database) -> Result<CheckReport, StoreError> {
    const PAGE: usize = 1024;
    let mut report = CheckReport::default();
    let problem = |report: &mut CheckReport, p: String| {
        if report.problems.len() < 100 {
            report.problems.push(p);
        }
    };
    // Pass 1, the log in seq order: dense seqs, whole records, digests, bodies
    // naming their stream, sidecars matching `sealed_digest`, each record indexed.
    let mut expected_seq = 0u64;
    loop {
        let txn = db.begin_read().map_err(io)?;
        let log = txn.open_table(LOG).map_err(io)?;
        let index = txn.open_table(STREAM_INDEX).map_err(io)?;
        let mut n = 0;
        for item in log.range(expected_seq..).map_err(io)?.take(PAGE) {
            let (k, v) = item.map_err(io)?;
            let seq = k.value();
            n += 1;
            if seq != expected_seq {
                problem(
                    &mut report,
                    format!("gap: seq {expected_seq} missing before {seq}"),
                );
            }
            expected_seq = seq + 1;
            report.events += 1;
            let rec = match decode(seq, v.value()) {
                Ok(r) => r,
                Err(e) => {
                    problem(&mut report, e.to_string());
                    continue;
                }
            };
            match index.get((rec.stream.as_str(), rec.revision)).map_err(io)? {
                Some(s) if s.value() == seq => {}
                _ => problem(
                    &mut report,
                    format!("seq {seq}: stream index does not point here"),
                ),
            }
            let digest: [u8; 32] = Sha256::digest(&rec.body).into();
            if digest != rec.body_sha256 {
                problem(&mut report, format!("seq {seq}: body digest mismatch"));
            }
            match authlog_schemas::Envelope::from_body(&rec.body) {
                Err(e) => problem(&mut report, format!("seq {seq}: {e}")),
                Ok(env) => {
                    if env.stream != rec.stream {
                        problem(
                            &mut report,
                            format!("seq {seq}: body names stream {}", env.stream),
                        );
                    }
                    let sidecar_digest =
                        rec.sidecar.as_ref().map(|s| hex::encode(Sha256::digest(s)));
                    if sidecar_digest != env.sealed_digest {
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
        if n < PAGE {
            break;
        }
    }
    // Pass 2, the stream index in key order: each stream's revisions contiguous
    // from 0, and exactly one index entry per event. Constant memory however many
    // streams there are.
    let mut last: Option<(String, u64)> = None;
    let mut entries = 0u64;
    loop {
        let txn = db.begin_read().map_err(io)?;
        let index = txn.open_table(STREAM_INDEX).map_err(io)?;
        let range = match &last {
            None => index.range::<(&str, u64)>(..).map_err(io)?,
            Some((stream, rev)) => index
                .range((stream.as_str(), rev.saturating_add(1))..)
                .map_err(io)?,
        };
        let mut n = 0;
        for item in range.take(PAGE) {
            let (k, _) = item.map_err(io)?;
            let (stream, rev) = k.value();
            n += 1;
            entries += 1;
            let want = match &last {
                Some((s, r)) if s == stream => r + 1,
                _ => {
                    report.streams += 1;
                    0
                }
            };
            if rev != want {
                problem(
                    &mut report,
                    format!("stream {stream}: revision {rev} where {want} was expected"),
                );
            }
            last = Some((stream.to_string(), rev));
        }
        if n < PAGE {
            break;
        }
    }
    if entries != report.events {
        let events = report.events;
        problem(
            &mut report,
            format!("{entries} stream index entries for {events} events"),
        );
    }
    Ok(report)
}

/// Rewrites a stopped store's records behind its back, as an intruder with
/// write access to the data directory would (keeping each record's digest and
/// the stream index consistent, so `store check` alone does not notice). For
/// the audit trail's tamper tests only.
#[doc(hidden)]
pub mod tamper_for_tests {
    use super::*;

    fn open(dir: &Path) -> Result<Database, StoreError> {
        Database::open(dir.join(DB_FILE)).map_err(io)
    }

    /// Re-points the indexes of the record now at `seq`.
    fn reindex(
        txn: &redb::WriteTransaction,
        seq: u64,
        rec: &StoredRecord,
        remove: bool,
    ) -> Result<(), StoreError> {
        let mut index = txn.open_table(STREAM_INDEX).map_err(io)?;
        let mut ids = txn.open_table(IDS).map_err(io)?;
        let id = authlog_schemas::Envelope::from_body(&rec.body)
            .ok()
            .and_then(|e| uuid::Uuid::parse_str(&e.id).ok())
            .map(|u| u.as_u128());
        if remove {
            index
                .remove((rec.stream.as_str(), rec.revision))
                .map_err(io)?;
            if let Some(id) = id {
                ids.remove(id).map_err(io)?;
            }
        } else {
            index
                .insert((rec.stream.as_str(), rec.revision), seq)
                .map_err(io)?;
            if let Some(id) = id {
                ids.insert(id, seq).map_err(io)?;
            }
        }
        Ok(())
    }

    fn read(txn: &redb::WriteTransaction, seq: u64) -> Result<StoredRecord, StoreError> {
        let log = txn.open_table(LOG).map_err(io)?;
        let raw = log
            .get(seq)
            .map_err(io)?
            .ok_or_else(|| StoreError::Corrupt(format!("no seq {seq}")))?;
        decode(seq, raw.value())
    }

    fn write(txn: &redb::WriteTransaction, seq: u64, rec: &StoredRecord) -> Result<(), StoreError> {
        let mut log = txn.open_table(LOG).map_err(io)?;
        log.insert(
            seq,
            encode(rec.revision, &rec.stream, &rec.body, rec.sidecar.as_deref()).as_slice(),
        )
        .map_err(io)?;
        Ok(())
    }

    fn last_seq(txn: &redb::WriteTransaction) -> Result<u64, StoreError> {
        let log = txn.open_table(LOG).map_err(io)?;
        let last = log.last().map_err(io)?.map(|(k, _)| k.value());
        last.ok_or_else(|| StoreError::Corrupt("empty log".into()))
    }

    /// Changes the body of `seq` with `f` (its digest recomputed).
    pub fn edit_body(dir: &Path, seq: u64, f: impl FnOnce(&mut Vec<u8>)) -> Result<(), StoreError> {
        let db = open(dir)?;
        let txn = db.begin_write().map_err(io)?;
        let mut rec = read(&txn, seq)?;
        f(&mut rec.body);
        write(&txn, seq, &rec)?;
        txn.commit().map_err(io)
    }

    /// Removes `seq` and moves every later record down one place.
    pub fn delete(dir: &Path, seq: u64) -> Result<(), StoreError> {
        let db = open(dir)?;
        let txn = db.begin_write().map_err(io)?;
        let last = last_seq(&txn)?;
        let gone = read(&txn, seq)?;
        reindex(&txn, seq, &gone, true)?;
        for s in seq + 1..=last {
            let rec = read(&txn, s)?;
            write(&txn, s - 1, &rec)?;
            reindex(&txn, s - 1, &rec, false)?;
        }
        txn.open_table(LOG).map_err(io)?.remove(last).map_err(io)?;
        txn.commit().map_err(io)
    }

    /// Swaps the records at `a` and `b`.
    pub fn swap(dir: &Path, a: u64, b: u64) -> Result<(), StoreError> {
        let db = open(dir)?;
        let txn = db.begin_write().map_err(io)?;
        let (ra, rb) = (read(&txn, a)?, read(&txn, b)?);
        write(&txn, a, &rb)?;
        write(&txn, b, &ra)?;
        reindex(&txn, a, &rb, false)?;
        reindex(&txn, b, &ra, false)?;
        txn.commit().map_err(io)
    }

    /// Removes every record from `seq` on.
    pub fn truncate(dir: &Path, seq: u64) -> Result<(), StoreError> {
        let db = open(dir)?;
        let txn = db.begin_write().map_err(io)?;
        let last = last_seq(&txn)?;
        for s in (seq..=last).rev() {
            let rec = read(&txn, s)?;
            reindex(&txn, s, &rec, true)?;
            txn.open_table(LOG).map_err(io)?.remove(s).map_err(io)?;
        }
        txn.commit().map_err(io)
    }
}
