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

/// Where and how often snapshots are written.
pub struct SnapshotPolicy {
    pub path: PathBuf,
    pub every: u64,
}

/// Loads a snapshot if it fits this log and projection version.
pub async fn load_snapshot(store: &DynStore, path: &std::path::Path) -> Views {
    let head = match store.head().await {
        Ok(h) => h.map(|h| h.position),
        Err(_) => return Views::initial(),
    };
    let Ok(bytes) = tokio::fs::read(path).await else {
        return Views::initial();
    };
    match serde_json::from_slice::<Snapshot>(&bytes) {
        Ok(snap) => match snap.into_views(&store.log_id(), head) {
            Some(v) => {
                tracing::info!(position = ?v.position, "views restored from snapshot");
                v
            }
            None => {
                tracing::warn!(path = %path.display(), "snapshot is from another log or projection version; rebuilding views from the log");
                Views::initial()
            }
        },
        Err(e) => {
            tracing::warn!(error = %e, "unreadable snapshot; rebuilding views from the log");
            Views::initial()
        }
    }
}

/// Writes a snapshot atomically (unique temporary file, mode 0600, fsync,
/// rename). The views hold personal data and sealed sidecars: the snapshot stays
/// in the data directory, readable by its owner only.
pub async fn save_snapshot(
    store_log_id: String,
    views: &ViewsHandle,
    path: &std::path::Path,
) -> std::io::Result<()> {
    let copy = views.read().await.clone();
    let final_path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let snapshot = Snapshot {
            log_id: store_log_id,
            projection_version: PROJECTION_VERSION,
            views: copy,
        };
        let bytes = serde_json::to_vec(&snapshot).map_err(std::io::Error::other)?;
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
                if let Err(e) = save_snapshot(store.log_id(), &task_handle, &policy.path).await {
                    tracing::warn!(error = %e, "writing the views snapshot failed");
                }
            }
        }
    });
    (handle, task)
}
