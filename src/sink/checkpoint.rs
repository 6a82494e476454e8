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
    delivered: Option<Delivered>,
}

/// A sink's checkpoint file.
#[derive(Debug, Clone)]
pub struct CheckpointFile {
    path: PathBuf,
    log_id: String,
}

impl CheckpointFile {
    /// `data_dir/sink-{name}.checkpoint` for the log `log_id`.
    pub fn new(data_dir: &Path, name: &str, log_id: String) -> CheckpointFile {
        CheckpointFile {
            path: data_dir.join(format!("sink-{name}.checkpoint")),
            log_id,
        }
    }

    /// The last delivered event, if any. A checkpoint of another log (a data
    /// directory restored next to another store) is ignored with a warning:
    /// the sink starts again from the beginning rather than skip events.
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
        Ok(disk.delivered)
    }

    /// Where the sink resumes.
    pub fn resume_from(&self) -> Result<ReadFrom, SinkError> {
        Ok(match self.load()? {
            Some(d) => ReadFrom::After(d.position),
            None => ReadFrom::Start,
        })
    }

    pub fn store(&self, delivered: Delivered) -> Result<(), SinkError> {
        use std::io::Write;
        let text = serde_json::to_vec(&OnDisk {
            log_id: self.log_id.clone(),
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
        let cp = CheckpointFile::new(dir.path(), "ndjson", "log-a".into());
        assert_eq!(cp.load().unwrap(), None);
        let d = Delivered {
            position: Position::dense(41),
            seq: 41,
        };
        cp.store(d).unwrap();
        assert_eq!(
            CheckpointFile::new(dir.path(), "ndjson", "log-a".into())
                .load()
                .unwrap(),
            Some(d)
        );
        assert_eq!(
            CheckpointFile::new(dir.path(), "ndjson", "log-b".into())
                .load()
                .unwrap(),
            None
        );
    }
}
