//! The audit database on disk (`data_dir/audit-tree.redb`, a redb database of
//! its own): the Merkle tree — every leaf hash and the hash of every complete,
//! aligned subtree, so roots and proofs over millions of events take O(log n)
//! reads — and the audit indexes, written in the same transaction as the leaves
//! they describe. Memory does not grow with the log; everything here can be
//! rebuilt from the log.
//!
//! The indexes:
//! * `by_key`: (field, 64-bit hash of the value, seq) for the subject, client,
//!   session, source IP and type of every event. Fixed-width keys keep the index
//!   small whatever the values; a hash collision only adds a candidate, which the
//!   query drops when it checks the event itself.
//! * `time`: the log's time watermark (the latest event time so far, in whole
//!   seconds) → the first seq that reached it. Event times are stamped just before the append, so an
//!   event's time is never far below the watermark at its seq; a time range
//!   becomes a seq range with a margin ([`TIME_MARGIN_MS`]) and exact filtering.
//! * `positions`: seq → log position, to fetch an event found by seq (only where
//!   the position is not the seq itself).
//! * `signins`: (hour, outcome) → count of sign-ins, for the audit page's chart.

use std::path::Path;
use std::time::Duration;

use authlog_schemas::{Position, Recorded};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use super::merkle::{Hash, Leaves, node_hash};

/// (level, index) → hash: level 0 holds the leaves.
const NODES: TableDefinition<(u8, u64), &[u8; 32]> = TableDefinition::new("nodes");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// (field, value hash, seq) → ().
const BY_KEY: TableDefinition<(u8, u64, u64), ()> = TableDefinition::new("by_key");
/// time watermark (ms) → first seq at it.
const TIME: TableDefinition<u64, u64> = TableDefinition::new("time");
/// seq → (commit, prepare), for events whose position is not their seq (stores
/// with compound positions); dense positions are not stored.
const POSITIONS: TableDefinition<u64, (u64, u64)> = TableDefinition::new("positions");
/// (hour start ms, 0 success | 1 failure) → sign-ins.
const SIGNINS: TableDefinition<(u64, u8), u64> = TableDefinition::new("signins");

/// How far below the watermark an event's time may be: events are stamped
/// just before their append (and the store refuses times more than
/// [`crate::store::MAX_CLOCK_SKEW_MS`] ahead), so ten minutes covers any
/// request that waited behind a slow commit.
pub const TIME_MARGIN_MS: u64 = 10 * 60 * 1000;

/// The indexed fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Field {
    Subject = 1,
    Client = 2,
    Session = 3,
    Ip = 4,
    Type = 5,
}

/// The 64-bit index key of a field's value.
pub fn key_hash(field: Field, value: &str) -> u64 {
    let mut h = Sha256::new();
    h.update([field as u8]);
    h.update(value.as_bytes());
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_be_bytes(b)
}

/// What one event adds to the audit database.
#[derive(Debug, Clone)]
pub struct Indexed {
    pub seq: u64,
    pub position: Position,
    pub leaf: Hash,
    keys: Vec<(u8, u64)>,
    time_ms: u64,
    /// For sign-in events: true on success.
    signin: Option<bool>,
}

/// The fields the indexes read, borrowed from the body (no typed decode).
#[derive(serde::Deserialize)]
struct Fields<'a> {
    #[serde(rename = "type", borrow)]
    event_type: std::borrow::Cow<'a, str>,
    time: authlog_schemas::Timestamp,
    #[serde(default, borrow)]
    subject: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    client_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    session_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    source: Option<SourceFields<'a>>,
}

#[derive(serde::Deserialize)]
struct SourceFields<'a> {
    #[serde(default, borrow)]
    ip: Option<std::borrow::Cow<'a, str>>,
}

impl Indexed {
    /// The leaf and index keys of a stored event. A body the indexes cannot read
    /// still gets its leaf (the tree never skips an event), just no index keys.
    pub fn of(r: &Recorded) -> Indexed {
        let leaf = super::merkle::leaf_hash(&r.body);
        let mut out = Indexed {
            seq: r.seq,
            position: r.position,
            leaf,
            keys: Vec::new(),
            time_ms: 0,
            signin: None,
        };
        let Ok(f) = serde_json::from_slice::<Fields>(&r.body) else {
            tracing::warn!(
                seq = r.seq,
                "audit index: unreadable body, indexed by seq only"
            );
            return out;
        };
        out.time_ms = f.time.unix_millis().max(0) as u64;
        let mut add = |field: Field, v: Option<&str>| {
            if let Some(v) = v {
                out.keys.push((field as u8, key_hash(field, v)));
            }
        };
        add(Field::Type, Some(&f.event_type));
        add(Field::Subject, f.subject.as_deref());
        add(Field::Client, f.client_id.as_deref());
        add(Field::Session, f.session_id.as_deref());
        add(Field::Ip, f.source.as_ref().and_then(|s| s.ip.as_deref()));
        out.signin = match &*f.event_type {
            "login.succeeded" => Some(true),
            "login.failed" => Some(false),
            _ => None,
        };
        out
    }
}

/// Which way a scan walks the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Forward,
    Backward,
}

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
    /// The number of leaves, announced after each commit.
    size: watch::Sender<u64>,
}

impl TreeStore {
    pub fn open(path: &Path) -> Result<TreeStore, TreeError> {
        // A bounded page cache: memory does not grow with the log.
        let db = Database::builder()
            .set_cache_size(32 << 20)
            .create(path)
            .map_err(io)?;
        let txn = db.begin_write().map_err(io)?;
        txn.open_table(NODES).map_err(io)?;
        txn.open_table(META).map_err(io)?;
        txn.open_table(BY_KEY).map_err(io)?;
        txn.open_table(TIME).map_err(io)?;
        txn.open_table(POSITIONS).map_err(io)?;
        txn.open_table(SIGNINS).map_err(io)?;
        txn.commit().map_err(io)?;
        let tree = TreeStore {
            db,
            size: watch::channel(0).0,
        };
        tree.size.send_replace(tree.size()?);
        Ok(tree)
    }

    /// Waits until the tree holds at least `size` leaves, at most `timeout`;
    /// returns the size reached.
    pub async fn wait_for(&self, size: u64, timeout: Duration) -> u64 {
        let mut rx = self.size.subscribe();
        let _ = tokio::time::timeout(timeout, rx.wait_for(|s| *s >= size)).await;
        *rx.borrow()
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
    pub fn append_indexed(&self, events: &[Indexed]) -> Result<u64, TreeError> {
        let leaves: Vec<Hash> = events.iter().map(|e| e.leaf).collect();
        let last = events.last().map(|e| e.position);
        self.append_inner(&leaves, last, events)
    }

    /// Appends leaf hashes without recording a log position or index (tests).
    pub fn append(&self, leaves: &[Hash]) -> Result<u64, TreeError> {
        self.append_inner(leaves, None, &[])
    }

    fn append_inner(
        &self,
        leaves: &[Hash],
        last: Option<authlog_schemas::Position>,
        events: &[Indexed],
    ) -> Result<u64, TreeError> {
        let txn = self.db.begin_write().map_err(io)?;
        let size;
        {
            let mut nodes = txn.open_table(NODES).map_err(io)?;
            let mut meta = txn.open_table(META).map_err(io)?;
            let mut by_key = txn.open_table(BY_KEY).map_err(io)?;
            let mut time = txn.open_table(TIME).map_err(io)?;
            let mut positions = txn.open_table(POSITIONS).map_err(io)?;
            let mut signins = txn.open_table(SIGNINS).map_err(io)?;
            let mut watermark = meta.get("watermark").map_err(io)?.map_or(0, |v| v.value());
            for e in events {
                for (field, hash) in &e.keys {
                    by_key.insert((*field, *hash, e.seq), ()).map_err(io)?;
                }
                if e.position != Position::dense(e.seq) {
                    positions
                        .insert(e.seq, (e.position.commit, e.position.prepare))
                        .map_err(io)?;
                }
                // One entry per second the watermark reaches, not per event.
                let second = e.time_ms - e.time_ms % 1000;
                if second > watermark {
                    watermark = second;
                    time.insert(watermark, e.seq).map_err(io)?;
                }
                if let Some(ok) = e.signin {
                    let hour = e.time_ms - e.time_ms % 3_600_000;
                    let key = (hour, u8::from(!ok));
                    let n = signins.get(key).map_err(io)?.map_or(0, |v| v.value());
                    signins.insert(key, n + 1).map_err(io)?;
                }
            }
            meta.insert("watermark", watermark).map_err(io)?;
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
        self.size.send_replace(size);
        Ok(size)
    }

    /// Seqs in `lo..hi` whose `field` hashes to `hash`, walking `direction`, at
    /// most `max`.
    pub fn scan_key(
        &self,
        field: Field,
        hash: u64,
        lo: u64,
        hi: u64,
        direction: Direction,
        max: usize,
    ) -> Result<Vec<u64>, TreeError> {
        if lo >= hi {
            return Ok(Vec::new());
        }
        let txn = self.db.begin_read().map_err(io)?;
        let t = txn.open_table(BY_KEY).map_err(io)?;
        let f = field as u8;
        let range = t.range((f, hash, lo)..(f, hash, hi)).map_err(io)?;
        let keys: Box<dyn Iterator<Item = _>> = match direction {
            Direction::Forward => Box::new(range),
            Direction::Backward => Box::new(range.rev()),
        };
        let mut out = Vec::new();
        for item in keys.take(max) {
            let (k, _) = item.map_err(io)?;
            out.push(k.value().2);
        }
        Ok(out)
    }

    /// The seq range `lo..hi` that holds every event with a time in
    /// `from..=to` (milliseconds), within the tree's `size`.
    pub fn seq_bounds(
        &self,
        from_ms: Option<u64>,
        to_ms: Option<u64>,
        size: u64,
    ) -> Result<(u64, u64), TreeError> {
        let txn = self.db.begin_read().map_err(io)?;
        let t = txn.open_table(TIME).map_err(io)?;
        let first_at = |ms: u64| -> Result<Option<u64>, TreeError> {
            Ok(t.range(ms..)
                .map_err(io)?
                .next()
                .transpose()
                .map_err(io)?
                .map(|(_, v)| v.value()))
        };
        // Entries are whole seconds: look up the second `from` falls in.
        let lo = match from_ms {
            None => 0,
            Some(ms) => first_at(ms - ms % 1000)?.unwrap_or(size),
        };
        let hi = match to_ms {
            None => size,
            Some(ms) => first_at(ms.saturating_add(TIME_MARGIN_MS + 1))?.unwrap_or(size),
        };
        Ok((lo.min(size), hi.min(size)))
    }

    /// The log position of leaf `seq`.
    pub fn position_of(&self, seq: u64) -> Result<Option<Position>, TreeError> {
        let txn = self.db.begin_read().map_err(io)?;
        let meta = txn.open_table(META).map_err(io)?;
        let size = meta.get("size").map_err(io)?.map_or(0, |v| v.value());
        if seq >= size {
            return Ok(None);
        }
        let t = txn.open_table(POSITIONS).map_err(io)?;
        Ok(Some(t.get(seq).map_err(io)?.map_or(
            Position::dense(seq),
            |v| {
                let (c, p) = v.value();
                Position::new(c, p)
            },
        )))
    }

    /// Sign-ins per hour in `from..to` (ms): (hour start, successes, failures).
    pub fn signins(&self, from_ms: u64, to_ms: u64) -> Result<Vec<(u64, u64, u64)>, TreeError> {
        let txn = self.db.begin_read().map_err(io)?;
        let t = txn.open_table(SIGNINS).map_err(io)?;
        let start = from_ms - from_ms % 3_600_000;
        let mut out: Vec<(u64, u64, u64)> = Vec::new();
        for item in t
            .range((start, 0u8)..(to_ms, 0u8))
            .map_err(io)?
            .take(24 * 400 * 2)
        {
            let (k, v) = item.map_err(io)?;
            let ((hour, outcome), n) = (k.value(), v.value());
            match out.last_mut() {
                Some(last) if last.0 == hour => {}
                _ => out.push((hour, 0, 0)),
            }
            if let Some(last) = out.last_mut() {
                if outcome == 0 {
                    last.1 += n;
                } else {
                    last.2 += n;
                }
            }
        }
        Ok(out)
    }

    /// A read view for the Merkle algorithms (one short read transaction).
    pub fn reader(&self) -> Result<TreeReader, TreeError> {
        // A reader sees one snapshot: leaves committed later are not in it.
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

/// Feeds the tree from the log, in `seq` order, from where it stopped, until
/// `stop`. A seq that is not the next leaf, or a failed read or write, is
/// logged and the feed starts again from the tree's own position a moment later:
/// the tree never skips an event, and queries answer 503 while it is behind.
pub async fn feed(
    store: crate::store::DynStore,
    tree: std::sync::Arc<TreeStore>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        match follow(&store, &tree, &mut stop).await {
            Ok(()) => return,
            Err(e) => tracing::error!(error = %e, "audit tree: the feed failed; restarting it"),
        }
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Follows the log into the tree: Ok when asked to stop (or the store closed).
async fn follow(
    store: &crate::store::DynStore,
    tree: &std::sync::Arc<TreeStore>,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<(), TreeError> {
    use futures_util::StreamExt;
    let from = match tree.last_position()? {
        Some(p) => crate::store::ReadFrom::After(p),
        None => crate::store::ReadFrom::Start,
    };
    let mut events = store.subscribe_all(from);
    loop {
        let first = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return Ok(()),
            item = events.next() => item,
        };
        let first = match first {
            None => return Ok(()),
            Some(r) => r.map_err(io)?,
        };
        // Take whatever else is ready, to commit many leaves at once.
        let mut batch = vec![first];
        while batch.len() < 1024 {
            match futures_util::FutureExt::now_or_never(events.next()) {
                Some(Some(r)) => batch.push(r.map_err(io)?),
                _ => break,
            }
        }
        let tree2 = tree.clone();
        tokio::task::spawn_blocking(move || {
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
            let indexed: Vec<Indexed> = batch.iter().map(Indexed::of).collect();
            tree2.append_indexed(&indexed)
        })
        .await
        .map_err(io)??;
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

    fn at(seq: u64, ms: i64) -> Indexed {
        let body = format!(
            r#"{{"id":"e{seq}","subject":"u","time":"{}","type":"login.failed"}}"#,
            authlog_schemas::Timestamp::from_unix_millis(ms)
        );
        Indexed::of(&Recorded {
            position: Position::dense(seq),
            revision: 0,
            seq,
            stream: "s".into(),
            body: body.into_bytes(),
            sidecar: None,
        })
    }

    #[test]
    fn time_bounds_hold_every_event_of_the_period_even_stamped_late() {
        let dir = tempfile::tempdir().unwrap();
        let tree = TreeStore::open(&dir.path().join("t.redb")).unwrap();
        let s = 1_795_000_000_000i64;
        // Times as a busy log sees them: several per second, one stamped late
        // (seq 3 waited behind a slow commit), a quiet gap, then more.
        let times = [
            s + 100,
            s + 900,
            s + 1_200,
            s + 400,
            s + 3_000,
            s + 3_000,
            s + 700_000,
            s + 700_001,
        ];
        let events: Vec<Indexed> = times
            .iter()
            .enumerate()
            .map(|(i, t)| at(i as u64, *t))
            .collect();
        tree.append_indexed(&events).unwrap();
        let size = tree.size().unwrap();
        for from in [
            s,
            s + 100,
            s + 101,
            s + 400,
            s + 999,
            s + 1_000,
            s + 3_000,
            s + 3_001,
            s + 700_001,
        ] {
            for to in [
                s + 100,
                s + 400,
                s + 1_199,
                s + 3_000,
                s + 699_999,
                s + 700_001,
                s + 900_000,
            ] {
                if from > to {
                    continue;
                }
                let (lo, hi) = tree
                    .seq_bounds(Some(from as u64), Some(to as u64), size)
                    .unwrap();
                for (seq, t) in times.iter().enumerate() {
                    if (from..=to).contains(t) {
                        assert!(
                            (lo..hi).contains(&(seq as u64)),
                            "seq {seq} at {t} outside {lo}..{hi} for {from}..={to}"
                        );
                    }
                }
            }
        }
        // The bounds do narrow: the quiet hour after seq 5 is not scanned.
        assert_eq!(
            tree.seq_bounds(Some((s + 700_000) as u64), None, size)
                .unwrap(),
            (6, 8)
        );
        assert_eq!(tree.seq_bounds(None, Some(s as u64), size).unwrap().0, 0);
        assert!(
            tree.seq_bounds(None, Some((s + 3_000) as u64), size)
                .unwrap()
                .1
                <= 6
        );
        // Indexed by each field, and by type.
        let subject = tree
            .scan_key(
                Field::Subject,
                key_hash(Field::Subject, "u"),
                0,
                size,
                Direction::Backward,
                3,
            )
            .unwrap();
        assert_eq!(subject, vec![7, 6, 5]);
        let none = tree
            .scan_key(
                Field::Subject,
                key_hash(Field::Subject, "v"),
                0,
                size,
                Direction::Forward,
                9,
            )
            .unwrap();
        assert!(none.is_empty());
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
