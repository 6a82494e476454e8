//! The audit trail: the RFC 9162 Merkle tree over the log's bodies in `seq`
//! order with its on-disk indexes ([`tree`]), queries over them ([`query`]),
//! signed checkpoints ([`checkpoint`]), verification of the stored log against
//! them ([`verify`]) and verifiable exports ([`export`]).

pub mod checkpoint;
pub mod export;
pub mod merkle;
pub mod query;
pub mod tree;
pub mod verify;

use std::sync::Arc;
use std::time::Duration;

use authlog_schemas::{Actor, Envelope, data};

use crate::store::{DynStore, Expected, NewEvent, ReadFrom, StoreError};
use checkpoint::{AuditKey, Checkpoint, TrustedKeys};
use tree::{Indexed, TreeStore};

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(
        "no audit signing key is configured (set AUTHLOG_AUDIT_SIGNING_KEY; `authlog audit keygen` makes one)"
    )]
    NoKey,
    #[error("the audit index is behind the log (at {0} of {1} events); try again")]
    Behind(u64, u64),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Tree(#[from] tree::TreeError),
    #[error("{0}")]
    Other(String),
}

/// The audit side of the server's state.
pub struct Audit {
    pub tree: Arc<TreeStore>,
    pub key: Option<Arc<AuditKey>>,
    pub trusted: TrustedKeys,
    /// (name, SHA-256 of the token) of the auditor tokens.
    pub auditor_tokens: Vec<(String, [u8; 32])>,
    /// The latest checkpoint in the log and the stream revision it is at.
    latest: tokio::sync::Mutex<Option<(u64, Checkpoint)>>,
    /// One full verification at a time.
    pub verifying: tokio::sync::Semaphore,
    /// The latest full verification: when it ran and what it found.
    last_report: std::sync::Mutex<Option<(String, verify::Report)>>,
    /// When each session last read its own history (bounded; see
    /// [`Audit::may_read_history`]).
    history_reads: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
}

/// How often a session may read its own sign-in history (each read is an event).
const HISTORY_EVERY: Duration = Duration::from_secs(2);

impl Audit {
    pub fn new(
        tree: Arc<TreeStore>,
        key: Option<Arc<AuditKey>>,
        trusted: TrustedKeys,
        auditor_tokens: Vec<(String, [u8; 32])>,
    ) -> Audit {
        Audit {
            tree,
            key,
            trusted,
            auditor_tokens,
            latest: tokio::sync::Mutex::new(None),
            verifying: tokio::sync::Semaphore::new(1),
            last_report: std::sync::Mutex::new(None),
            history_reads: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// Keeps the report of a full verification that ran at `time`.
    pub fn set_last_report(&self, time: String, report: verify::Report) {
        if let Ok(mut r) = self.last_report.lock() {
            *r = Some((time, report));
        }
    }

    pub fn last_report(&self) -> Option<(String, verify::Report)> {
        self.last_report.lock().ok().and_then(|r| r.clone())
    }

    /// Whether `session` may read its history now: users cannot grow the log
    /// faster than one read per [`HISTORY_EVERY`] and session.
    pub fn may_read_history(&self, session: &str) -> bool {
        let Ok(mut map) = self.history_reads.lock() else {
            return false;
        };
        let now = std::time::Instant::now();
        if map.len() > 100_000 {
            map.retain(|_, t| now.duration_since(*t) < HISTORY_EVERY);
        }
        match map.get(session) {
            Some(t) if now.duration_since(*t) < HISTORY_EVERY => false,
            _ => {
                map.insert(session.to_string(), now);
                true
            }
        }
    }

    /// Reads the checkpoints stream to learn the latest checkpoint.
    pub async fn load_latest(&self, store: &DynStore) -> Result<Option<Checkpoint>, AuditError> {
        let all = read_checkpoints(store).await?;
        let latest = all
            .into_iter()
            .enumerate()
            .next_back()
            .map(|(i, cp)| (i as u64, cp));
        let mut held = self.latest.lock().await;
        // Never back: a checkpoint signed here meanwhile may be newer than
        // what was read.
        if held
            .as_ref()
            .is_none_or(|(r, _)| latest.as_ref().is_some_and(|(n, _)| n >= r))
        {
            *held = latest;
        }
        Ok(held.as_ref().map(|(_, cp)| cp.clone()))
    }

    pub async fn latest(&self) -> Option<Checkpoint> {
        self.latest.lock().await.as_ref().map(|(_, cp)| cp.clone())
    }

    /// Signs and appends a checkpoint of the whole log as it is now, unless
    /// nothing but the latest checkpoint's own event was appended since it:
    /// then returns that one. The flag says whether a new one was signed.
    pub async fn checkpoint_now(
        &self,
        store: &DynStore,
        actor: Actor,
    ) -> Result<(Checkpoint, bool), AuditError> {
        let key = self.key.as_ref().ok_or(AuditError::NoKey)?;
        let mut latest = self.latest.lock().await;
        for _ in 0..5 {
            let Some(head) = store.head().await? else {
                return Err(AuditError::Other("the log is empty".into()));
            };
            // A checkpoint of size N is the event at seq N or later: if the head
            // is at N, the log holds nothing the checkpoint does not cover but
            // its own event.
            if let Some((_, cp)) = latest.as_ref()
                && (cp.seq == Some(head.seq) || cp.tree_size == head.seq)
            {
                return Ok((cp.clone(), false));
            }
            let want = head.seq + 1;
            let size = self.tree.wait_for(want, Duration::from_secs(10)).await;
            if size < want {
                return Err(AuditError::Behind(size, want));
            }
            let tree = self.tree.clone();
            let root = tokio::task::spawn_blocking(move || {
                let reader = tree.reader()?;
                Ok::<_, tree::TreeError>(merkle::root(&reader, 0, want))
            })
            .await
            .map_err(|e| AuditError::Other(e.to_string()))??;
            let time = crate::oidc::service::now();
            let mut cp = key.sign_checkpoint(want, &root, &time.to_string());
            let body = data::AuditCheckpoint {
                tree_size: cp.tree_size,
                root_hash: cp.root_hash.clone(),
                signature: cp.signature.clone(),
                key_id: cp.key_id.clone(),
            };
            let env = Envelope::new(
                crate::oidc::service::new_id(),
                checkpoint::STREAM.to_string(),
                time,
                actor.clone(),
                &body,
            )
            .map_err(|e| AuditError::Other(e.to_string()))?;
            let expected = Expected::after(latest.as_ref().map(|(rev, _)| *rev));
            let event = NewEvent::new(env, None)?;
            match store
                .append(checkpoint::STREAM, expected, vec![event])
                .await
            {
                Ok(appended) => {
                    // The seq of the checkpoint event: the tree learns it as it
                    // follows the log.
                    let size = self.tree.wait_for(want + 1, Duration::from_secs(5)).await;
                    if size > want
                        && let Some(p) = appended.last_position()
                    {
                        cp.seq = seq_of(&self.tree, want, size, p);
                    }
                    *latest = Some((appended.last_revision, cp.clone()));
                    tracing::info!(tree_size = cp.tree_size, root = %cp.root_hash, "audit: checkpoint signed");
                    return Ok((cp, true));
                }
                Err(StoreError::Conflict { .. }) => {
                    // Another writer checkpointed: learn the stream again.
                    drop(latest);
                    self.load_latest(store).await?;
                    latest = self.latest.lock().await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(AuditError::Other(
            "the checkpoint stream kept changing; try again".into(),
        ))
    }
}

/// The seq at `position` among leaves `from..to` (a short scan of the tail).
fn seq_of(
    tree: &TreeStore,
    from: u64,
    to: u64,
    position: authlog_schemas::Position,
) -> Option<u64> {
    (from..to).find(|s| tree.position_of(*s).ok().flatten() == Some(position))
}

/// Every checkpoint in the log, oldest first.
pub async fn read_checkpoints(store: &DynStore) -> Result<Vec<Checkpoint>, AuditError> {
    let records = crate::store::read_whole_stream(store.as_ref(), checkpoint::STREAM).await?;
    records
        .iter()
        .map(|r| Checkpoint::from_recorded(r).map_err(AuditError::Other))
        .collect()
}

/// Brings the tree and its indexes up to the log's head (at start-up, before
/// verifying and serving).
pub async fn catch_up(store: &DynStore, tree: &Arc<TreeStore>) -> Result<u64, AuditError> {
    let mut from = match tree.last_position()? {
        Some(p) => ReadFrom::After(p),
        None => ReadFrom::Start,
    };
    loop {
        let page = store
            .read_all(from, crate::store::embedded::MAX_READ)
            .await?;
        let Some(last) = page.last().map(|r| r.position) else {
            return Ok(tree.size()?);
        };
        let tree2 = tree.clone();
        tokio::task::spawn_blocking(move || {
            let size = tree2.size()?;
            if let Some(bad) = page
                .iter()
                .enumerate()
                .find(|(i, r)| r.seq != size + *i as u64)
            {
                return Err(tree::TreeError::Io(format!(
                    "seq {} arrived where leaf {} was due",
                    bad.1.seq,
                    size + bad.0 as u64
                )));
            }
            let indexed: Vec<Indexed> = page.iter().map(Indexed::of).collect();
            tree2.append_indexed(&indexed)
        })
        .await
        .map_err(|e| AuditError::Other(e.to_string()))??;
        from = ReadFrom::After(last);
    }
}

/// Appends a checkpoint every `every` while the log grows (the checkpointer).
pub async fn checkpointer(
    store: DynStore,
    audit: Arc<Audit>,
    every: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = audit
            .checkpoint_now(&store, Actor::system("checkpointer"))
            .await
        {
            tracing::warn!(error = %e, "audit: periodic checkpoint");
        }
    }
}
