//! The Merkle tree on disk: every leaf hash and the hash of every complete,
//! aligned subtree, in a redb database of its own (`data_dir/audit-tree.redb`),
//! so roots and proofs over millions of events take O(log n) reads and memory
//! does not grow with the log. The tree can always be rebuilt from the log.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::merkle::{Hash, Leaves, node_hash};

/// (level, index) → hash: level 0 holds the leaves.
const NODES: TableDefinition<(u8, u64), &[u8; 32]> = TableDefinition::new("nodes");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("audit tree: {0}")]
    Io(String),
    #[error("audit tree: node ({0}, {1}) is missing")]
    Missing(u8, u64),
}

fn io<E: std::fmt::Display>(e: E) -> TreeError {
    TreeError::Io(e.to_string())
}

pub struct TreeStore {
    db: Database,
}

impl TreeStore {
    pub fn open(path: &Path) -> Result<TreeStore, TreeError> {
        let db = Database::create(path).map_err(io)?;
        let txn = db.begin_write().map_err(io)?;
        txn.open_table(NODES).map_err(io)?;
        txn.open_table(META).map_err(io)?;
        txn.commit().map_err(io)?;
        Ok(TreeStore { db })
    }

    /// Leaves in the tree.
    pub fn size(&self) -> Result<u64, TreeError> {
        let txn = self.db.begin_read().map_err(io)?;
        let meta = txn.open_table(META).map_err(io)?;
        Ok(meta.get("size").map_err(io)?.map_or(0, |v| v.value()))
    }

    /// The log position of the last leaf, as `(commit, prepare)`.
    pub fn last_position(&self) -> Result<Option<authlog_schemas::Position>, TreeError> {
        let txn = self.db.begin_read().map_err(io)?;
        let meta = txn.open_table(META).map_err(io)?;
        let c = meta.get("commit").map_err(io)?.map(|v| v.value());
        let p = meta.get("prepare").map_err(io)?.map(|v| v.value());
        Ok(c.zip(p).map(|(c, p)| authlog_schemas::Position::new(c, p)))
    }

    /// Appends leaf hashes (the next seqs, in order) in one transaction, storing
    /// each subtree the moment it is complete; `last` is the log position of the
    /// last of them, where the feed resumes.
    pub fn append_at(
        &self,
        leaves: &[Hash],
        last: authlog_schemas::Position,
    ) -> Result<u64, TreeError> {
        self.append_inner(leaves, Some(last))
    }

    /// Appends leaf hashes without recording a log position (tests).
    pub fn append(&self, leaves: &[Hash]) -> Result<u64, TreeError> {
        self.append_inner(leaves, None)
    }

    fn append_inner(
        &self,
        leaves: &[Hash],
        last: Option<authlog_schemas::Position>,
    ) -> Result<u64, TreeError> {
        let txn = self.db.begin_write().map_err(io)?;
        let size;
        {
            let mut nodes = txn.open_table(NODES).map_err(io)?;
            let mut meta = txn.open_table(META).map_err(io)?;
            let mut n = meta.get("size").map_err(io)?.map_or(0, |v| v.value());
            for leaf in leaves {
                nodes.insert((0u8, n), leaf).map_err(io)?;
                // Leaf n completes a subtree at each level l where n+1 is a
                // multiple of 2^l.
                let (mut level, mut index) = (0u8, n);
                while index & 1 == 1 {
                    let left = nodes
                        .get((level, index - 1))
                        .map_err(io)?
                        .map(|v| *v.value())
                        .ok_or(TreeError::Missing(level, index - 1))?;
                    let right = nodes
                        .get((level, index))
                        .map_err(io)?
                        .map(|v| *v.value())
                        .ok_or(TreeError::Missing(level, index))?;
                    level += 1;
                    index >>= 1;
                    nodes
                        .insert((level, index), &node_hash(&left, &right))
                        .map_err(io)?;
                }
                n += 1;
            }
            meta.insert("size", n).map_err(io)?;
            if let Some(p) = last {
                meta.insert("commit", p.commit).map_err(io)?;
                meta.insert("prepare", p.prepare).map_err(io)?;
            }
            size = n;
        }
        txn.commit().map_err(io)?;
        Ok(size)
    }

    /// A read view for the Merkle algorithms (one short read transaction).
    pub fn reader(&self) -> Result<TreeReader, TreeError> {
        let txn = self.db.begin_read().map_err(io)?;
        let nodes = txn.open_table(NODES).map_err(io)?;
        Ok(TreeReader { nodes })
    }
}

pub struct TreeReader {
    nodes: redb::ReadOnlyTable<(u8, u64), &'static [u8; 32]>,
}

impl TreeReader {
    fn node(&self, level: u8, index: u64) -> Option<Hash> {
        self.nodes
            .get((level, index))
            .ok()
            .flatten()
            .map(|v| *v.value())
    }
}

impl Leaves for TreeReader {
    fn leaf(&self, index: u64) -> Hash {
        // Callers ask only for leaves below the tree's size.
        self.node(0, index).unwrap_or([0u8; 32])
    }

    fn complete_subtree(&self, lo: u64, hi: u64) -> Option<Hash> {
        let n = hi - lo;
        let level = n.trailing_zeros() as u8;
        self.node(level, lo >> level)
    }
}

/// Feeds the tree from the log, in `seq` order, from where it stopped, until the
/// subscription ends. A seq that is not the next leaf stops the feed: the tree
/// never skips an event.
pub async fn feed(
    store: crate::store::DynStore,
    tree: std::sync::Arc<TreeStore>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    use futures_util::StreamExt;
    let from = match tree.last_position() {
        Ok(Some(p)) => crate::store::ReadFrom::After(p),
        Ok(None) => crate::store::ReadFrom::Start,
        Err(e) => {
            tracing::error!(error = %e, "audit tree: cannot read where to resume");
            return;
        }
    };
    let mut events = store.subscribe_all(from);
    loop {
        let first = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return,
            item = events.next() => item,
        };
        let Some(Ok(first)) = first else { return };
        // Take whatever else is ready, to commit many leaves at once.
        let mut batch = vec![first];
        while batch.len() < 1024 {
            match futures_util::FutureExt::now_or_never(events.next()) {
                Some(Some(Ok(r))) => batch.push(r),
                _ => break,
            }
        }
        let tree2 = tree.clone();
        let result = tokio::task::spawn_blocking(move || {
            let size = tree2.size()?;
            for (i, r) in batch.iter().enumerate() {
                if r.seq != size + i as u64 {
                    return Err(TreeError::Io(format!(
                        "seq {} arrived where leaf {} was due",
                        r.seq,
                        size + i as u64
                    )));
                }
            }
            let hashes: Vec<Hash> = batch
                .iter()
                .map(|r| super::merkle::leaf_hash(&r.body))
                .collect();
            let last = batch.last().map(|r| r.position).unwrap_or_default();
            tree2.append_at(&hashes, last)
        })
        .await;
        match result {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %e, "audit tree: feed stopped");
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "audit tree: feed stopped");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::merkle::{
        consistency_proof, inclusion_proof, leaf_hash, root, verify_consistency, verify_inclusion,
    };
    use super::*;

    #[test]
    fn the_tree_on_disk_agrees_with_the_definition_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit-tree.redb");
        let leaves: Vec<Hash> = (0..300u32).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        {
            let tree = TreeStore::open(&path).unwrap();
            // In uneven batches, as a subscriber sees them.
            let mut at = 0;
            for chunk in [1usize, 2, 5, 64, 100, 28] {
                tree.append(&leaves[at..at + chunk]).unwrap();
                at += chunk;
            }
            assert_eq!(tree.size().unwrap(), 200);
        }
        let tree = TreeStore::open(&path).unwrap();
        tree.append(&leaves[200..]).unwrap();
        let r = tree.reader().unwrap();
        for n in [1u64, 2, 3, 7, 64, 65, 199, 256, 257, 300] {
            let on_disk = root(&r, 0, n);
            assert_eq!(on_disk, root(leaves.as_slice(), 0, n), "root of {n}");
            for m in [0, n / 2, n - 1] {
                let p = inclusion_proof(&r, m, 0, n);
                assert!(verify_inclusion(&leaves[m as usize], m, n, &p, &on_disk));
            }
            if n > 1 {
                let p = consistency_proof(&r, n / 2, n);
                assert!(verify_consistency(
                    n / 2,
                    n,
                    &p,
                    &root(leaves.as_slice(), 0, n / 2),
                    &on_disk
                ));
            }
        }
    }

    #[test]
    fn roots_read_stored_subtrees_not_every_leaf() {
        struct Counting<'a>(&'a TreeReader, std::cell::Cell<u64>);
        impl Leaves for Counting<'_> {
            fn leaf(&self, index: u64) -> Hash {
                self.1.set(self.1.get() + 1);
                self.0.leaf(index)
            }
            fn complete_subtree(&self, lo: u64, hi: u64) -> Option<Hash> {
                self.1.set(self.1.get() + 1);
                self.0.complete_subtree(lo, hi)
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let tree = TreeStore::open(&dir.path().join("t.redb")).unwrap();
        let leaves: Vec<Hash> = (0..5000u32).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        tree.append(&leaves).unwrap();
        let r = tree.reader().unwrap();
        let c = Counting(&r, std::cell::Cell::new(0));
        assert_eq!(root(&c, 0, 5000), root(leaves.as_slice(), 0, 5000));
        // 5000 = 4096 + 512 + 256 + 128 + 8: a handful of reads, not 5000.
        assert!(c.1.get() <= 16, "{} reads", c.1.get());
    }
}
