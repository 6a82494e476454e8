//! An index of entries by expiry time, so views drop what expired without a scan.

use std::collections::BTreeSet;

use authlog_schemas::Timestamp;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expiry {
    queue: BTreeSet<(Timestamp, String)>,
}

impl Expiry {
    pub fn set(&mut self, key: &str, old: Option<Timestamp>, new: Option<Timestamp>) {
        if let Some(old) = old {
            self.queue.remove(&(old, key.to_string()));
        }
        if let Some(new) = new {
            self.queue.insert((new, key.to_string()));
        }
    }

    /// Removes and returns the keys that expired at or before `now`.
    pub fn pop_expired(&mut self, now: Timestamp) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(first) = self.queue.first() {
            if first.0 > now {
                break;
            }
            if let Some((_, key)) = self.queue.pop_first() {
                out.push(key);
            }
        }
        out
    }
}
