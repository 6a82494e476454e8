//! Verifying the stored log: recompute the Merkle tree from the bodies exactly as
//! stored, in `seq` order, with O(log n) memory, and check
//! * every checkpoint's signature, and its root against the recomputed root at
//!   its size;
//! * every leaf against the leaf the audit tree recorded when the event was first
//!   seen (the witness), which names the first damaged event;
//! * that the log is as long as the longest checkpoint and the witness (a
//!   shorter log was truncated or rolled back).
//!
//! Nothing re-serialises a body through typed structs: leaves are hashes of the
//! stored bytes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::checkpoint::{Checkpoint, TrustedKeys};
use super::merkle::{Hash, leaf_hash, node_hash};
use super::tree::TreeStore;
use super::{AuditError, read_checkpoints};
use crate::store::{DynStore, ReadFrom};

/// The RFC 9162 root of a growing prefix of leaves, kept as the roots of its
/// complete subtrees (at most 64 hashes).
#[derive(Debug, Default, Clone)]
pub struct Accumulator {
    /// (leaves, hash), sizes strictly decreasing.
    stack: Vec<(u64, Hash)>,
    pub size: u64,
}

impl Accumulator {
    pub fn push(&mut self, leaf: Hash) {
        self.stack.push((1, leaf));
        self.size += 1;
        while self.stack.len() >= 2 {
            let n = self.stack.len();
            if self.stack[n - 1].0 != self.stack[n - 2].0 {
                break;
            }
            let (Some((s, right)), Some((_, left))) = (self.stack.pop(), self.stack.pop()) else {
                break;
            };
            self.stack.push((s * 2, node_hash(&left, &right)));
        }
    }

    /// MTH of the leaves pushed so far.
    pub fn root(&self) -> Hash {
        let mut it = self.stack.iter().rev();
        let Some((_, last)) = it.next() else {
            return super::merkle::root(&[] as &[Hash], 0, 0);
        };
        it.fold(*last, |acc, (_, left)| node_hash(left, &acc))
    }
}

/// What a verification found.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Report {
    /// Events read from the log.
    pub events: u64,
    /// Leaves the audit tree had recorded (the witness), if it was available.
    pub witness_leaves: Option<u64>,
    pub checkpoints: u64,
    /// Checkpoints whose signature verified with a trusted key.
    pub checkpoints_signed: u64,
    /// Checkpoints whose root equals the recomputed root at their size.
    pub checkpoints_matching: u64,
    pub latest_checkpoint: Option<Checkpoint>,
    /// The root over the whole log as read.
    pub root_hash: String,
    /// The first event that is missing, changed or out of place, if found.
    pub first_damaged_seq: Option<u64>,
    pub problems: Vec<String>,
    /// Findings that are not damage (e.g. no key to check signatures with).
    pub warnings: Vec<String>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    fn problem(&mut self, p: String) {
        if self.problems.len() < 50 {
            self.problems.push(p);
        }
    }

    fn damaged(&mut self, seq: u64) {
        self.first_damaged_seq = Some(self.first_damaged_seq.map_or(seq, |s| s.min(seq)));
    }
}

/// A short description of the event at `seq` for reports.
fn describe(r: &authlog_schemas::Recorded) -> String {
    #[derive(serde::Deserialize)]
    struct Head {
        id: String,
        #[serde(rename = "type")]
        event_type: String,
    }
    match serde_json::from_slice::<Head>(&r.body) {
        Ok(h) => format!("seq {} (event {}, {})", r.seq, h.id, h.event_type),
        Err(_) => format!("seq {} (unreadable body)", r.seq),
    }
}

/// Verifies the log in `store` against its checkpoints, `extra` checkpoints
/// (e.g. copies kept in a SIEM) and, if given, the audit tree's recorded leaves.
pub async fn verify_log(
    store: &DynStore,
    witness: Option<&TreeStore>,
    trusted: &TrustedKeys,
    extra: &[Checkpoint],
) -> Result<Report, AuditError> {
    let mut report = Report::default();
    let mut checkpoints = read_checkpoints(store).await.unwrap_or_else(|e| {
        report.problem(format!("the checkpoint stream is unreadable: {e}"));
        Vec::new()
    });
    report.latest_checkpoint = checkpoints.last().cloned();
    checkpoints.extend(extra.iter().cloned());
    report.checkpoints = checkpoints.len() as u64;
    // size → checkpoints of that size whose signature verified (or that cannot
    // be checked for want of keys: their roots are still compared).
    let mut due: BTreeMap<u64, Vec<Checkpoint>> = BTreeMap::new();
    for cp in checkpoints {
        if trusted.keys().is_empty() {
            due.entry(cp.tree_size).or_default().push(cp);
            continue;
        }
        match cp.verify(trusted.keys()) {
            Ok(()) => {
                report.checkpoints_signed += 1;
                due.entry(cp.tree_size).or_default().push(cp);
            }
            Err(e) => report.problem(e),
        }
    }
    if trusted.keys().is_empty() && report.checkpoints > 0 {
        report.warnings.push(
            "no audit key is configured: checkpoint signatures were not checked, only their roots"
                .into(),
        );
    }
    let witness_size = match witness {
        Some(w) => Some(w.size()?),
        None => None,
    };
    report.witness_leaves = witness_size;
    let mut acc = Accumulator::default();
    let mut next_seq = 0u64;
    let mut from = ReadFrom::Start;
    let check_due = |acc: &Accumulator,
                     report: &mut Report,
                     due: &mut BTreeMap<u64, Vec<Checkpoint>>| {
        if let Some(cps) = due.remove(&acc.size) {
            let root = hex::encode(acc.root());
            for cp in cps {
                if cp.root_hash == root {
                    report.checkpoints_matching += 1;
                } else {
                    report.problem(format!(
                        "the checkpoint of size {} signed at {} does not match the log: the first {} events were rewritten since (the log was forked or rolled back)",
                        cp.tree_size, cp.time, cp.tree_size
                    ));
                    // Without a witness the damage is somewhere below this size.
                    if report.first_damaged_seq.is_none() && witness.is_none() {
                        report.problem(format!(
                            "damage lies in seqs below {} (keep the audit tree for an exact event)",
                            cp.tree_size
                        ));
                    }
                }
            }
        }
    };
    check_due(&acc, &mut report, &mut due);
    loop {
        let page = store
            .read_all(from, crate::store::embedded::MAX_READ)
            .await?;
        let Some(last) = page.last().map(|r| r.position) else {
            break;
        };
        let reader = match witness {
            Some(w) => Some(w.reader()?),
            None => None,
        };
        for r in &page {
            if r.seq != next_seq {
                if r.seq > next_seq {
                    report.problem(format!(
                        "seq {next_seq} is missing: the log jumps to seq {}",
                        r.seq
                    ));
                } else {
                    report.problem(format!("{} is out of order", describe(r)));
                }
                report.damaged(acc.size);
            }
            next_seq = r.seq + 1;
            let leaf = leaf_hash(&r.body);
            if let (Some(reader), Some(ws)) = (&reader, witness_size)
                && acc.size < ws
                && report.first_damaged_seq.is_none()
            {
                use super::merkle::Leaves;
                if reader.leaf(acc.size) != leaf {
                    report.problem(format!(
                        "{} differs from the event recorded at that place when it was appended: changed, removed or moved",
                        describe(r)
                    ));
                    report.damaged(acc.size);
                }
            }
            acc.push(leaf);
            check_due(&acc, &mut report, &mut due);
        }
        from = ReadFrom::After(last);
    }
    report.events = acc.size;
    report.root_hash = hex::encode(acc.root());
    if let Some(ws) = witness_size
        && ws > acc.size
    {
        report.problem(format!(
            "the log holds {} events but the audit tree recorded {}: the tail from seq {} was removed (truncated or rolled back)",
            acc.size, ws, acc.size
        ));
        report.damaged(acc.size);
    }
    for (size, cps) in due {
        for cp in cps {
            report.problem(format!(
                "the checkpoint of size {} signed at {} covers more than the log's {} events: the log was truncated or rolled back",
                size, cp.time, acc.size
            ));
            report.damaged(acc.size);
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_accumulator_agrees_with_the_definition_at_every_size() {
        let leaves: Vec<Hash> = (0..70u32).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        let mut acc = Accumulator::default();
        assert_eq!(
            acc.root(),
            super::super::merkle::root(leaves.as_slice(), 0, 0)
        );
        for n in 1..=70u64 {
            acc.push(leaves[n as usize - 1]);
            assert_eq!(
                acc.root(),
                super::super::merkle::root(leaves.as_slice(), 0, n),
                "size {n}"
            );
        }
    }
}
