//! Where a sink is: the position and seq of the last event it knows was
//! delivered, and the log it belongs to. Written atomically (a new file, fsync,
//! rename, fsync of the directory), so a crash leaves the old or the new one.

use std::path::{Path, PathBuf};

use authlog_schemas::Position;
use serde::{Deserialize, Serialize};

use super::{SinkError, io};
use crate::store::ReadFrom;

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

/// A sink's checkpoint file.
#[derive(Debug, Clone)]
pub struct CheckpointFile {
    path: PathBuf,
    log_id: String,
    target: String,
}

impl CheckpointFile {
    /// `data_dir/sink-{name}.checkpoint` for the log `log_id` and the
    /// destination described by `target`.
    pub fn new(data_dir: &Path, name: &str, log_id: String, target: String) -> CheckpointFile {
        CheckpointFile {
            path: data_dir.join(format!("sink-{name}.checkpoint")),
            log_id,
            target,
        }
    }

    /// The last delivered event, if any. A checkpoint of another log (a data
    /// directory restored next to another store) or another destination (a new
    /// topic, cluster or file) is ignored with a warning: the sink starts again
    /// from the beginning rather than skip events.
    pub fn load(&self) -> Result<Option<Delivered>, SinkError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(SinkError::Io(format!("{}: {e}", self.path.display()))),
        };
        let disk: OnDisk = serde_json::from_str(&text)
            .map_err(|e| SinkError::Io(format!("{}: {e}", self.path.display())))?;
        if disk.log_id != self.log_id {
            tracing::warn!(path = %self.path.display(), "sink checkpoint of another log: starting from the beginning");
            return Ok(None);
        }
        if disk.target != self.target {
            tracing::warn!(path = %self.path.display(), was = %disk.target, now = %self.target, "sink checkpoint of another destination: sending the whole log to the new one");
            return Ok(None);
        }
        Ok(disk.delivered)
    }

    /// Where the sink resumes, given the log's last seq: a checkpoint beyond the
    /// log (a store restored from an older backup) would skip the events
    /// appended since, so the sink starts over instead.
    pub fn resume_from(&self, head_seq: Option<u64>) -> Result<ReadFrom, SinkError> {
        Ok(match self.load()? {
            Some(d) if head_seq.is_some_and(|h| d.seq <= h) => ReadFrom::After(d.position),
            Some(d) => {
                tracing::warn!(path = %self.path.display(), checkpoint_seq = d.seq, ?head_seq, "sink checkpoint beyond the log: sending the whole log again");
                ReadFrom::Start
            }
            None => ReadFrom::Start,
        })
    }

    pub fn store(&self, delivered: Delivered) -> Result<(), SinkError> {
        use std::io::Write;
        let text = serde_json::to_vec(&OnDisk {
            log_id: self.log_id.clone(),
            target: self.target.clone(),
            delivered: Some(delivered),
        })
        .map_err(io)?;
        let tmp = self.path.with_extension("checkpoint.tmp");
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(&text).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &self.path).map_err(io)?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_survive_reopening_and_other_logs_start_over() {
        let dir = tempfile::tempdir().unwrap();
        let cp = CheckpointFile::new(dir.path(), "ndjson", "log-a".into(), "t".into());
        assert_eq!(cp.load().unwrap(), None);
        let d = Delivered {
            position: Position::dense(41),
            seq: 41,
        };
        cp.store(d).unwrap();
        assert_eq!(
            CheckpointFile::new(dir.path(), "ndjson", "log-a".into(), "t".into())
                .load()
                .unwrap(),
            Some(d)
        );
        for (log, target) in [("log-b", "t"), ("log-a", "elsewhere")] {
            assert_eq!(
                CheckpointFile::new(dir.path(), "ndjson", log.into(), target.into())
                    .load()
                    .unwrap(),
                None
            );
        }
        // Beyond the log: start over.
        assert_eq!(
            cp.resume_from(Some(41)).unwrap(),
            ReadFrom::After(d.position)
        );
        assert_eq!(cp.resume_from(Some(40)).unwrap(), ReadFrom::Start);
        assert_eq!(cp.resume_from(None).unwrap(), ReadFrom::Start);
    }
}
