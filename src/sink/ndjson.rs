//! The NDJSON sink: one message per line, appended to a file (or written to
//! standard output with `-`), for a log shipper (Vector, Fluent Bit, Filebeat)
//! to pick up. Lines are written and fsynced before the checkpoint moves past
//! them, so after a crash the sink repeats at most the lines of one batch and
//! never skips one.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;

use super::checkpoint::{CheckpointFile, Delivered};
use super::shape::{Outgoing, Shaper};
use super::{SinkError, io};
use crate::store::{DynStore, ReadFrom};

/// The most events written per fsync.
const BATCH: usize = 1024;

/// Where lines go.
pub enum Target {
    File(PathBuf),
    Stdout,
}

impl Target {
    pub fn from_path(path: &std::path::Path) -> Target {
        if path.as_os_str() == "-" {
            Target::Stdout
        } else {
            Target::File(path.to_path_buf())
        }
    }
}

struct Writer {
    target: Target,
    file: Option<std::fs::File>,
}

impl Writer {
    fn write(&mut self, batch: &[Outgoing]) -> Result<(), SinkError> {
        let mut buf = Vec::with_capacity(batch.len() * 700);
        for m in batch {
            buf.extend_from_slice(&m.value);
            buf.push(b'\n');
        }
        match &self.target {
            Target::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(&buf).and_then(|_| out.flush()).map_err(io)
            }
            Target::File(path) => {
                let named = |e: std::io::Error| SinkError::Io(format!("{}: {e}", path.display()));
                // A log rotation that renamed the file away: open the new one.
                if let Some(f) = &self.file
                    && !same_file(f, path)
                {
                    self.file = None;
                }
                if self.file.is_none() {
                    drop_partial_line(path).map_err(named)?;
                    let created = !path.exists();
                    use std::os::unix::fs::OpenOptionsExt;
                    self.file = Some(
                        std::fs::OpenOptions::new()
                            .create(true)
                            .append(true)
                            .mode(0o640)
                            .open(path)
                            .map_err(named)?,
                    );
                    // A new file's name must be as durable as its lines.
                    if created
                        && let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
                    {
                        std::fs::File::open(dir)
                            .and_then(|d| d.sync_all())
                            .map_err(named)?;
                    }
                }
                let f = self
                    .file
                    .as_mut()
                    .ok_or_else(|| SinkError::Io("no file".into()))?;
                let written = f.write_all(&buf).and_then(|_| f.sync_data());
                if written.is_err() {
                    // Reopen next time (the file may have been rotated away).
                    self.file = None;
                }
                written.map_err(io)
            }
        }
    }
}

/// Whether the open file is still the one at `path` (same device and inode).
fn same_file(file: &std::fs::File, path: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// A crash in the middle of a write can leave half a line at the end of the
/// file. Its event was not checkpointed and will be written again, so the
/// half line is cut off rather than glued to the next one.
fn drop_partial_line(path: &std::path::Path) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    if len == 0 {
        return Ok(());
    }
    let tail = len.min(1 << 20);
    f.seek(SeekFrom::Start(len - tail))?;
    let mut buf = Vec::with_capacity(tail as usize);
    f.read_to_end(&mut buf)?;
    if buf.last() == Some(&b'\n') {
        return Ok(());
    }
    let keep = match buf.iter().rposition(|b| *b == b'\n') {
        Some(i) => len - tail + i as u64 + 1,
        None if tail == len => 0,
        None => return Ok(()),
    };
    tracing::warn!(path = %path.display(), cut = len - keep, "ndjson sink: cutting a half-written line left by a crash");
    f.set_len(keep)?;
    f.sync_all()
}

pub use super::SinkMetrics;

/// Ships the log from `from` (and the live tail) until `stop`, advancing
/// `checkpoint` (if any) after each durable batch. Errors are retried with
/// backoff from the checkpoint: the sink never skips an event and never stops
/// the server.
pub async fn run(
    store: DynStore,
    shaper: Arc<Shaper>,
    target: Target,
    checkpoint: Option<CheckpointFile>,
    metrics: Option<SinkMetrics>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut writer = Arc::new(std::sync::Mutex::new(Writer { target, file: None }));
    let mut backoff = Duration::from_millis(200);
    let lag = metrics
        .clone()
        .map(|m| tokio::spawn(m.track_lag(store.clone(), stop.clone())));
    loop {
        let head = store.head().await.ok().flatten().map(|h| h.seq);
        let from = match &checkpoint {
            Some(c) => c.resume_from(head).await,
            None => Ok(ReadFrom::Start),
        };
        let outcome = match from {
            Ok(from) => {
                follow(
                    &store,
                    &shaper,
                    &mut writer,
                    from,
                    None,
                    checkpoint.as_ref(),
                    metrics.as_ref(),
                    &mut stop,
                )
                .await
            }
            Err(e) => Err(e),
        };
        match outcome {
            Ok(()) => {
                if let Some(l) = lag {
                    l.abort();
                }
                return;
            }
            Err(e) => {
                if let Some(m) = &metrics {
                    m.errors.inc();
                }
                tracing::warn!(error = %e, retry_in = ?backoff, "ndjson sink: retrying from its checkpoint");
            }
        }
        let stopped = tokio::select! {
            _ = stop.wait_for(|s| *s) => true,
            _ = tokio::time::sleep(backoff) => false,
        };
        if stopped {
            if let Some(l) = lag {
                l.abort();
            }
            return;
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// Ships events from `from` up to `to` (inclusive; None: follow the log until
/// `stop`). Used by the server's sink and by `authlog sink replay`.
#[allow(clippy::too_many_arguments)]
async fn follow(
    store: &DynStore,
    shaper: &Arc<Shaper>,
    writer: &mut Arc<std::sync::Mutex<Writer>>,
    from: ReadFrom,
    to: Option<authlog_schemas::Position>,
    checkpoint: Option<&CheckpointFile>,
    metrics: Option<&SinkMetrics>,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<(), SinkError> {
    let mut events = store.subscribe_all(from);
    loop {
        let first = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return Ok(()),
            item = events.next() => item,
        };
        let Some(first) = first else { return Ok(()) };
        let mut batch = vec![first?];
        while batch.len() < BATCH {
            match futures_util::FutureExt::now_or_never(events.next()) {
                Some(Some(r)) => batch.push(r?),
                _ => break,
            }
        }
        let mut done = false;
        if let Some(to) = to {
            batch.retain(|r| r.position <= to);
            done = batch.is_empty() || batch.last().is_some_and(|r| r.position >= to);
        }
        let Some(last) = batch.last().map(|r| Delivered {
            position: r.position,
            seq: r.seq,
        }) else {
            return Ok(());
        };
        let messages: Vec<Outgoing> = batch
            .iter()
            .map(|r| shaper.shape(r))
            .collect::<Result<_, _>>()?;
        let w = writer.clone();
        tokio::task::spawn_blocking(move || {
            w.lock()
                .map_err(|_| SinkError::Io("writer poisoned".into()))?
                .write(&messages)
        })
        .await
        .map_err(io)??;
        if let Some(c) = checkpoint {
            c.store(last).await?;
        }
        if let Some(m) = metrics {
            m.delivered(last.seq);
        }
        if done {
            return Ok(());
        }
    }
}

/// Shapes and writes `records` once (a replay read through the admin API).
pub fn write_records(
    shaper: &Shaper,
    target: Target,
    records: &[authlog_schemas::Recorded],
) -> Result<(), SinkError> {
    let messages: Vec<Outgoing> = records
        .iter()
        .map(|r| shaper.shape(r))
        .collect::<Result<_, _>>()?;
    let mut writer = Writer { target, file: None };
    for chunk in messages.chunks(BATCH) {
        writer.write(chunk)?;
    }
    Ok(())
}

/// Re-sends the events in `from..=to` (or to the head as of now) to `target`,
/// without touching any checkpoint: `authlog sink replay`.
pub async fn replay(
    store: DynStore,
    shaper: Arc<Shaper>,
    target: Target,
    from: ReadFrom,
    to: Option<authlog_schemas::Position>,
) -> Result<(), SinkError> {
    // Never past the head: the replay ends instead of waiting for new events.
    let head = store.head().await?.map(|h| h.position);
    let to = match (to, head) {
        (_, None) => return Ok(()),
        (Some(t), Some(h)) => t.min(h),
        (None, Some(h)) => h,
    };
    let empty = match from {
        ReadFrom::Start => false,
        ReadFrom::At(p) => p > to,
        ReadFrom::After(p) => p >= to,
    };
    if empty {
        return Ok(());
    }
    let mut writer = Arc::new(std::sync::Mutex::new(Writer { target, file: None }));
    let (_keep, mut stop) = tokio::sync::watch::channel(false);
    follow(
        &store,
        &shaper,
        &mut writer,
        from,
        Some(to),
        None,
        None,
        &mut stop,
    )
    .await
}
