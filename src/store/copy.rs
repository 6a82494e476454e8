//! `authlog store copy`: moves a log between backends (the embedded store to
//! PostgreSQL or KurrentDB, or back), keeping every event's id, stream,
//! revision, body bytes and sidecar, in `seq` order, so the audit tree of the
//! copy has the same leaves and every signed checkpoint still verifies.
//!
//! Resumable: the destination is always a prefix of the source (each append
//! names the revision it follows), so a copy that stopped is run again and
//! goes on after the destination's last event, once that event is checked to
//! be the source's event at the same seq.

use authlog_schemas::{Position, Recorded};

use super::{EventStore, Expected, NewEvent, ReadFrom, StoreError};

/// What a copy did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyReport {
    /// Events already in the destination when the copy started (a resumed copy).
    pub resumed_at: u64,
    /// Events appended by this run.
    pub copied: u64,
    /// Events in the source when the copy started: the copy ends there.
    pub total: u64,
}

const PAGE: usize = 1024;

fn damaged(msg: String) -> StoreError {
    StoreError::InvalidEvent(msg)
}

/// The source record with this seq.
async fn record_at(store: &dyn EventStore, seq: u64) -> Result<Option<Recorded>, StoreError> {
    // Dense stores: the position is the seq.
    if let Some(r) = store
        .read_all(ReadFrom::At(Position::dense(seq)), 1)
        .await?
        .into_iter()
        .next()
        && r.seq == seq
    {
        return Ok(Some(r));
    }
    // Compound positions (KurrentDB): walk the log.
    let mut from = ReadFrom::Start;
    loop {
        let page = store.read_all(from, PAGE).await?;
        let Some(last) = page.last() else {
            return Ok(None);
        };
        if last.seq >= seq {
            return Ok(page.into_iter().find(|r| r.seq == seq));
        }
        from = ReadFrom::After(last.position);
    }
}

/// Copies `from` into `to` up to `from`'s head as of the start, calling
/// `progress(done, total)` after every page.
pub async fn copy_log(
    from: &dyn EventStore,
    to: &dyn EventStore,
    mut progress: impl FnMut(u64, u64),
) -> Result<CopyReport, StoreError> {
    let total = from.head().await?.map_or(0, |h| h.seq + 1);
    let resumed_at = to.head().await?.map_or(0, |h| h.seq + 1);
    if resumed_at > total {
        return Err(damaged(format!(
            "the destination holds {resumed_at} events, the source only {total}: it is another log"
        )));
    }
    // The destination must be a prefix of the source, event for event.
    if resumed_at > 0 {
        let same = |a: &Recorded, b: &Recorded| {
            a.seq == b.seq
                && a.stream == b.stream
                && a.revision == b.revision
                && a.body == b.body
                && a.sidecar == b.sidecar
        };
        let (mut at_src, mut at_dst) = (ReadFrom::Start, ReadFrom::Start);
        let mut checked = 0u64;
        while checked < resumed_at {
            let dst = to.read_all(at_dst, PAGE).await?;
            let src = from.read_all(at_src, dst.len().max(1)).await?;
            if dst.is_empty() || src.len() < dst.len() {
                break;
            }
            if let Some((d, _)) = dst.iter().zip(&src).find(|(d, s)| !same(d, s)) {
                return Err(damaged(format!(
                    "the destination's event at seq {} is not the source's: it already holds another log; copy into an empty store",
                    d.seq
                )));
            }
            checked += dst.len() as u64;
            at_dst = ReadFrom::After(dst[dst.len() - 1].position);
            at_src = ReadFrom::After(src[dst.len() - 1].position);
        }
        if checked < resumed_at {
            return Err(damaged(format!(
                "the destination holds {resumed_at} events that are not the source's first {resumed_at}: copy into an empty store"
            )));
        }
    }
    progress(resumed_at, total);
    let mut copied = 0u64;
    let mut cursor = match record_at(from, resumed_at).await? {
        Some(r) => ReadFrom::At(r.position),
        None => {
            return Ok(CopyReport {
                resumed_at,
                copied,
                total,
            });
        }
    };
    let mut next_seq = resumed_at;
    'pages: loop {
        let page = from.read_all(cursor, PAGE).await?;
        let Some(last) = page.last() else { break };
        cursor = ReadFrom::After(last.position);
        // Consecutive events of one stream go in one append.
        let mut i = 0;
        while i < page.len() {
            if page[i].seq >= total {
                break 'pages;
            }
            let mut j = i + 1;
            while j < page.len()
                && page[j].stream == page[i].stream
                && page[j].seq < total
                && j - i < 256
            {
                j += 1;
            }
            let group = &page[i..j];
            for (k, r) in group.iter().enumerate() {
                if r.seq != next_seq + k as u64 {
                    return Err(damaged(format!(
                        "the source skips from seq {} to {}",
                        next_seq + k as u64,
                        r.seq
                    )));
                }
            }
            let first = &group[0];
            let expected = match first.revision {
                0 => Expected::NoStream,
                r => Expected::Revision(r - 1),
            };
            let events = group
                .iter()
                .map(NewEvent::from_recorded)
                .collect::<Result<Vec<_>, _>>()?;
            let appended = to.append(&first.stream, expected, events).await?;
            if appended.last_revision != group[group.len() - 1].revision {
                return Err(damaged(format!(
                    "stream {}: the copy got revision {} where the source has {}",
                    first.stream,
                    appended.last_revision,
                    group[group.len() - 1].revision
                )));
            }
            next_seq += group.len() as u64;
            copied += group.len() as u64;
            i = j;
        }
        progress(next_seq, total);
        if next_seq >= total {
            break;
        }
    }
    Ok(CopyReport {
        resumed_at,
        copied,
        total,
    })
}
