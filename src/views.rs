//! The view runner: catches the views up from a snapshot, follows the live tail,
//! and lets a request wait until the views reach its own write.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use authlog_projections::{PROJECTION_VERSION, Snapshot, Views};
use authlog_schemas::Position;
use futures_util::StreamExt;
use tokio::sync::{RwLock, RwLockReadGuard, watch};

use crate::metrics::Metrics;
use crate::store::{DynStore, ReadFrom, StoreError};

/// What the runner has reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    Running {
        position: Option<Position>,
        caught_up: bool,
    },
    /// Stopped on an event it could not apply: the views are stale.
    Failed { position: Option<Position> },
}

/// Shared handle on the live views.
#[derive(Clone)]
pub struct ViewsHandle {
    views: Arc<RwLock<Views>>,
    progress: watch::Receiver<Progress>,
}

#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    #[error("the views did not reach position {0} in time")]
    Timeout(Position),
    #[error("the view runner has stopped")]
    Stopped,
}

impl ViewsHandle {
    pub async fn read(&self) -> RwLockReadGuard<'_, Views> {
        self.views.read().await
    }

    pub fn progress(&self) -> Progress {
        *self.progress.borrow()
    }

    /// Ready once the views have caught up with the log as it was at start.
    pub fn is_ready(&self) -> bool {
        matches!(
            self.progress(),
            Progress::Running {
                caught_up: true,
                ..
            }
        )
    }

    /// Waits until the views include `position` (read-your-writes).
    pub async fn wait_for(&self, position: Position, timeout: Duration) -> Result<(), WaitError> {
        let mut rx = self.progress.clone();
        let reached = rx.wait_for(|p| match p {
            Progress::Running {
                position: Some(p), ..
            } => *p >= position,
            Progress::Running { position: None, .. } => false,
            Progress::Failed { .. } => true,
        });
        match tokio::time::timeout(timeout, reached).await {
            Err(_) => Err(WaitError::Timeout(position)),
            Ok(Err(_)) => Err(WaitError::Stopped),
            Ok(Ok(p)) => match *p {
                Progress::Failed { .. } => Err(WaitError::Stopped),
                Progress::Running { .. } => Ok(()),
            },
        }
    }
}

/// Where and how often snapshots are written, and the key that seals them.
pub struct SnapshotPolicy {
    pub path: PathBuf,
    pub every: u64,
    pub key: SnapshotKey,
}

/// The key that authenticates snapshots: derived from the KEK, so someone who
/// can edit the data directory but does not hold the KEK (a KEK kept in a
/// secret store, not beside the data) cannot write a snapshot the server
/// trusts.
#[derive(Clone)]
pub struct SnapshotKey([u8; 32]);

impl SnapshotKey {
    pub fn new(kek: &crate::seal::Kek) -> SnapshotKey {
        SnapshotKey(kek.derive("authlog views snapshot mac v1"))
    }

    /// HMAC-SHA256 over the snapshot's bytes and its anchor: the SHA-256 of
    /// the stored body of the event at the snapshot's position (the value
    /// the audit tree's leaf for that event commits to), so a snapshot only
    /// fits the log it was folded from, not a rewritten one.
    fn mac(&self, anchor: Option<&[u8; 32]>, bytes: &[u8]) -> [u8; 32] {
        let mut message = b"authlog views snapshot v1\0".to_vec();
        match anchor {
            Some(a) => message.extend_from_slice(hex::encode(a).as_bytes()),
            None => message.push(b'-'),
        }
        message.push(0);
        message.extend_from_slice(bytes);
        crate::seal::hmac_sha256(&self.0, &message)
    }
}

/// The first line of a snapshot file; the snapshot's JSON follows it.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotSeal {
    sealed: u32,
    /// Hex SHA-256 of the stored body at the snapshot's position.
    anchor: Option<String>,
    /// Hex HMAC-SHA256 (see [`SnapshotKey::mac`]).
    mac: String,
}

/// The SHA-256 of the stored body of the event at `position`, if the store
/// has one there.
async fn anchor_at(
    store: &DynStore,
    position: Option<Position>,
) -> Result<Option<[u8; 32]>, StoreError> {
    use sha2::{Digest, Sha256};
    let Some(p) = position else {
        return Ok(None);
    };
    let found = store.read_all(ReadFrom::At(p), 1).await?;
    Ok(found
        .first()
        .filter(|r| r.position == p)
        .map(|r| Sha256::digest(&r.body).into()))
}

/// Why a snapshot is not used.
fn distrust(path: &std::path::Path, why: &str) -> Views {
    tracing::warn!(path = %path.display(), "{why}; rebuilding the views from the log");
    Views::initial()
}

/// Loads a snapshot if it is sealed with this KEK, fits this log (its anchor
/// is the stored body at its position) and the projection version. Anything
/// else is said and ignored: the views are folded from the log instead, which
/// is always right, only slower.
pub async fn load_snapshot(store: &DynStore, path: &std::path::Path, key: &SnapshotKey) -> Views {
    let head = match store.head().await {
        Ok(h) => h.map(|h| h.position),
        Err(_) => return Views::initial(),
    };
    let Ok(bytes) = tokio::fs::read(path).await else {
        return Views::initial();
    };
    let Some(newline) = bytes.iter().position(|b| *b == b'\n') else {
        return distrust(
            path,
            "the views snapshot is not sealed (written by an older authlog, or edited)",
        );
    };
    let (first, body) = (&bytes[..newline], &bytes[newline + 1..]);
    let Ok(seal) = serde_json::from_slice::<SnapshotSeal>(first) else {
        return distrust(
            path,
            "the views snapshot is not sealed (written by an older authlog, or edited)",
        );
    };
    let anchor = match seal.anchor.as_deref().map(hex::decode) {
        None => None,
        Some(Ok(a)) if a.len() == 32 => a.try_into().ok(),
        Some(_) => return distrust(path, "the views snapshot's seal is damaged"),
    };
    let expected = key.mac(anchor.as_ref(), body);
    let given = hex::decode(&seal.mac).unwrap_or_default();
    if seal.sealed != 1 || !crate::crypto::ct_eq(&expected, &given) {
        return distrust(
            path,
            "the views snapshot does not match its seal: it was changed after authlog wrote it, or sealed under another KEK",
        );
    }
    let snap = match serde_json::from_slice::<Snapshot>(body) {
        Ok(snap) => snap,
        Err(e) => {
            tracing::warn!(error = %e, "unreadable snapshot; rebuilding views from the log");
            return Views::initial();
        }
    };
    let position = snap.views.position;
    let Some(views) = snap.into_views(&store.log_id(), head) else {
        return distrust(
            path,
            "the views snapshot is from another log or projection version",
        );
    };
    match anchor_at(store, position).await {
        Ok(found) if found == anchor => {
            tracing::info!(position = ?views.position, "views restored from snapshot");
            views
        }
        Ok(_) => distrust(
            path,
            "the views snapshot was folded from another history than the log's at its position",
        ),
        Err(e) => {
            tracing::warn!(error = %e, "could not read the snapshot's position in the log; rebuilding the views from the log");
            Views::initial()
        }
    }
}

/// Writes a snapshot atomically (unique temporary file, mode 0600, fsync,
/// rename), sealed with `key` and anchored to the stored body at its
/// position. The views hold personal data and sealed sidecars: the snapshot
/// stays in the data directory, readable by its owner only.
pub async fn save_snapshot(
    store: &DynStore,
    key: &SnapshotKey,
    views: &ViewsHandle,
    path: &std::path::Path,
) -> std::io::Result<()> {
    let copy = views.read().await.clone();
    let anchor = anchor_at(store, copy.position)
        .await
        .map_err(std::io::Error::other)?;
    let final_path = path.to_path_buf();
    let (log_id, key) = (store.log_id(), key.clone());
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let snapshot = Snapshot {
            log_id,
            projection_version: PROJECTION_VERSION,
            views: copy,
        };
        let body = serde_json::to_vec(&snapshot).map_err(std::io::Error::other)?;
        let seal = SnapshotSeal {
            sealed: 1,
            anchor: anchor.map(hex::encode),
            mac: hex::encode(key.mac(anchor.as_ref(), &body)),
        };
        let mut bytes = serde_json::to_vec(&seal).map_err(std::io::Error::other)?;
        bytes.push(b'\n');
        bytes.extend_from_slice(&body);
        let tmp = final_path.with_extension(format!("tmp-{}", uuid::Uuid::now_v7().simple()));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &final_path)
    })
    .await
    .map_err(std::io::Error::other)?
}

async fn fail(why: String, views: &RwLock<Views>, tx: &watch::Sender<Progress>, metrics: &Metrics) {
    tracing::error!(error = %why, "view runner stopped; the views are stale until restart");
    metrics.projection_failed.set(1);
    let position = views.read().await.position;
    tx.send_replace(Progress::Failed { position });
}

/// Starts the runner from `initial`; it stops between two events when `stop`
/// turns true. Returns the handle and the task.
pub async fn start(
    store: DynStore,
    initial: Views,
    metrics: Metrics,
    snapshots: Option<SnapshotPolicy>,
    mut stop: watch::Receiver<bool>,
) -> (ViewsHandle, tokio::task::JoinHandle<()>) {
    let start_head = store.head().await.ok().flatten();
    let from = initial.position;
    let caught_up = match (start_head, from) {
        (None, _) => true,
        (Some(h), Some(p)) => p >= h.position,
        (Some(_), None) => false,
    };
    let (tx, rx) = watch::channel(Progress::Running {
        position: from,
        caught_up,
    });
    let views = Arc::new(RwLock::new(initial));
    let handle = ViewsHandle {
        views: views.clone(),
        progress: rx,
    };
    let task_handle = handle.clone();
    let task = tokio::spawn(async move {
        let read_from = from.map_or(ReadFrom::Start, ReadFrom::After);
        let mut events = store.subscribe_all(read_from);
        let mut last = from;
        let mut backoff = std::time::Duration::from_millis(100);
        let mut caught_up = caught_up;
        let mut since_snapshot = 0u64;
        loop {
            let item = tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => return,
                item = events.next() => item,
            };
            let recorded = match item {
                Some(Ok(r)) => r,
                // A cluster store that failed over, or a dropped connection: follow
                // again from the last applied event, without skipping one.
                Some(Err(e)) if !matches!(e, StoreError::Closed | StoreError::Corrupt(_)) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "views: reading the log failed; following it again");
                    tokio::select! {
                        _ = stop.wait_for(|s| *s) => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(std::time::Duration::from_secs(5));
                    events = store.subscribe_all(last.map_or(ReadFrom::Start, ReadFrom::After));
                    continue;
                }
                Some(Err(e)) => {
                    return fail(format!("reading the log: {e}"), &views, &tx, &metrics).await;
                }
                None => {
                    return fail(
                        "the log closed its subscription".into(),
                        &views,
                        &tx,
                        &metrics,
                    )
                    .await;
                }
            };
            let applied = views.write().await.apply(&recorded);
            if let Err(e) = applied {
                return fail(format!("applying an event: {e}"), &views, &tx, &metrics).await;
            }
            metrics.projection_seq.set(recorded.seq as i64);
            last = Some(recorded.position);
            backoff = std::time::Duration::from_millis(100);
            if !caught_up && start_head.is_some_and(|h| recorded.position >= h.position) {
                caught_up = true;
                tracing::info!(position = %recorded.position, "views caught up with the log");
            }
            tx.send_replace(Progress::Running {
                position: Some(recorded.position),
                caught_up,
            });
            since_snapshot += 1;
            if let Some(policy) = &snapshots
                && since_snapshot >= policy.every
            {
                since_snapshot = 0;
                if let Err(e) = save_snapshot(&store, &policy.key, &task_handle, &policy.path).await
                {
                    tracing::warn!(error = %e, "writing the views snapshot failed");
                }
            }
        }
    });
    (handle, task)
}
