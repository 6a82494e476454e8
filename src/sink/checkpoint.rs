//! Where a sink is: the position and seq of the last event it knows was
//! delivered, and the log it belongs to. Written atomically (a new file, fsync,
//! rename, fsync of the directory), so a crash leaves the old or the new one.

use std::path::{Path, PathBuf};

use authlog_schemas::Position;
use serde::{Deserialize, Serialize};

use super::{SinkError, io};
use std::sync::Arc;

use crate::store::{DynStore, ReadFrom};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivered {
    pub position: Position,
    pub seq: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct OnDisk {
    log_id: String,
    /// Where the events went (brokers and topic, or file, format and personal
    /// data): a checkpoint for another destination does not apply.
    #[serde(default)]
    target: String,
    delivered: Option<Delivered>,
}

/// Where a checkpoint lives: a file under the data directory (a store only
/// one process opens), or the store itself (a log shared by several nodes, so
/// the node that takes the sink over resumes where the last one stopped).
#[derive(Clone)]
enum Backend {
    File(PathBuf),
    Store {
        store: DynStore,
        name: String,
        /// The version this holder last read or wrote: the next write is a
        /// compare-and-set against it.
        version: Arc<std::sync::Mutex<Option<u64>>>,
    },
}

/// A sink's checkpoint.
#[derive(Clone)]
pub struct CheckpointFile {
    backend: Backend,
    log_id: String,
    target: String,
}

impl std::fmt::Debug for CheckpointFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointFile")
            .field("at", &self.describe())
            .field("target", &self.target)
            .finish()
    }
}

impl CheckpointFile {
    /// `data_dir/sink-{name}.checkpoint` for the log `log_id` and the
    /// destination described by `target`.
    pub fn new(data_dir: &Path, name: &str, log_id: String, target: String) -> CheckpointFile {
        CheckpointFile {
            backend: Backend::File(data_dir.join(format!("sink-{name}.checkpoint"))),
            log_id,
            target,
        }
    }

    /// The checkpoint `sink-{name}` kept in the store, moved by compare-and-set.
    pub fn in_store(store: DynStore, name: &str, target: String) -> CheckpointFile {
        CheckpointFile {
            log_id: store.log_id(),
            backend: Backend::Store {
                store,
                name: format!("sink-{name}"),
                version: Arc::new(std::sync::Mutex::new(None)),
            },
            target,
        }
    }

    /// In the store when the log is shared by several nodes, else in a file.
    pub fn for_sink(
        store: &DynStore,
        data_dir: &Path,
        name: &str,
        target: String,
    ) -> CheckpointFile {
        if store.is_shared() {
            CheckpointFile::in_store(store.clone(), name, target)
        } else {
            CheckpointFile::new(data_dir, name, store.log_id(), target)
        }
    }

    fn describe(&self) -> String {
        match &self.backend {
            Backend::File(p) => p.display().to_string(),
            Backend::Store { name, .. } => format!("store checkpoint {name}"),
        }
    }

    async fn read_raw(&self) -> Result<Option<Vec<u8>>, SinkError> {
        match &self.backend {
            Backend::File(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || match std::fs::read(&path) {
                    Ok(t) => Ok(Some(t)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(SinkError::Io(format!("{}: {e}", path.display()))),
                })
                .await
                .map_err(io)?
            }
            Backend::Store {
                store,
                name,
                version,
            } => {
                let loaded = store.load_checkpoint(name).await?;
                if let Ok(mut v) = version.lock() {
                    *v = loaded.as_ref().map(|(v, _)| *v);
                }
                Ok(loaded.map(|(_, value)| value))
            }
        }
    }

    /// The last delivered event, if any. A checkpoint of another log (a data
    /// directory restored next to another store) or another destination (a new
    /// topic, cluster or file) is ignored with a warning: the sink starts again
    /// from the beginning rather than skip events.
    pub async fn load(&self) -> Result<Option<Delivered>, SinkError> {
        let Some(raw) = self.read_raw().await? else {
            return Ok(None);
        };
        let at = self.describe();
        let disk: OnDisk =
            serde_json::from_slice(&raw).map_err(|e| SinkError::Io(format!("{at}: {e}")))?;
        if disk.log_id != self.log_id {
            tracing::warn!(checkpoint = %at, "sink checkpoint of another log: starting from the beginning");
            return Ok(None);
        }
        if disk.target != self.target {
            tracing::warn!(checkpoint = %at, was = %disk.target, now = %self.target, "sink checkpoint of another destination: sending the whole log to the new one");
            return Ok(None);
        }
        Ok(disk.delivered)
    }

    /// Where the sink resumes, given the log's last seq: a checkpoint beyond the
    /// log (a store restored from an older backup) would skip the events
    /// appended since, so the sink starts over instead.
    pub async fn resume_from(&self, head_seq: Option<u64>) -> Result<ReadFrom, SinkError> {
        Ok(match self.load().await? {
            Some(d) if head_seq.is_some_and(|h| d.seq <= h) => ReadFrom::After(d.position),
            Some(d) => {
                tracing::warn!(checkpoint = %self.describe(), checkpoint_seq = d.seq, ?head_seq, "sink checkpoint beyond the log: sending the whole log again");
                ReadFrom::Start
            }
            None => ReadFrom::Start,
        })
    }

    /// Records `delivered`. In the store this is a compare-and-set against the
    /// version this holder last saw: a holder that lost its lease and was
    /// replaced cannot move the checkpoint behind its successor's back.
    pub async fn store(&self, delivered: Delivered) -> Result<(), SinkError> {
        let text = serde_json::to_vec(&OnDisk {
            log_id: self.log_id.clone(),
            target: self.target.clone(),
            delivered: Some(delivered),
        })
        .map_err(io)?;
        match &self.backend {
            Backend::File(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || write_atomically(&path, &text))
                    .await
                    .map_err(io)?
            }
            Backend::Store {
                store,
                name,
                version,
            } => {
                let expected = version
                    .lock()
                    .map_err(|_| SinkError::Io("poisoned".into()))?
                    .to_owned();
                let new = store.save_checkpoint(name, expected, text).await?;
                if let Ok(mut v) = version.lock() {
                    *v = Some(new);
                }
                Ok(())
            }
        }
    }
}

fn write_atomically(path: &Path, text: &[u8]) -> Result<(), SinkError> {
    use std::io::Write;
    let tmp = path.with_extension("checkpoint.tmp");
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(text).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn checkpoints_survive_reopening_and_other_logs_start_over() {
        let dir = tempfile::tempdir().unwrap();
        let cp = CheckpointFile::new(dir.path(), "ndjson", "log-a".into(), "t".into());
        assert_eq!(cp.load().await.unwrap(), None);
        let d = Delivered {
            position: Position::dense(41),
            seq: 41,
        };
        cp.store(d).await.unwrap();
        assert_eq!(
            CheckpointFile::new(dir.path(), "ndjson", "log-a".into(), "t".into())
                .load()
                .await
                .unwrap(),
            Some(d)
        );
        for (log, target) in [("log-b", "t"), ("log-a", "elsewhere")] {
            assert_eq!(
                CheckpointFile::new(dir.path(), "ndjson", log.into(), target.into())
                    .load()
                    .await
                    .unwrap(),
                None
            );
        }
        // Beyond the log: start over.
        assert_eq!(
            cp.resume_from(Some(41)).await.unwrap(),
            ReadFrom::After(d.position)
        );
        assert_eq!(cp.resume_from(Some(40)).await.unwrap(), ReadFrom::Start);
        assert_eq!(cp.resume_from(None).await.unwrap(), ReadFrom::Start);
    }
}
