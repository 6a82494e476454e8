//! Audit queries: a filter, a cursor and a page of events in log order, answered
//! from the on-disk indexes ([`super::tree`]) and checked event by event.
//!
//! One indexed field drives the scan (subject, then session, client, IP, then
//! the event types the `type` prefixes name); every other condition, and the
//! driving one too (index keys are hashes), is checked on the event itself. A
//! page examines at most [`SCAN_BUDGET`] candidates: a page may hold fewer than
//! `limit` events and still have a `next` cursor. Cursors are seqs, so pages
//! stay stable while events are appended.

use std::sync::Arc;

use authlog_schemas::{EventType, Recorded, Timestamp};
use serde::Deserialize;

use super::AuditError;
use super::tree::{Direction, Field, TreeStore, key_hash};
use crate::store::{DynStore, ReadFrom};

/// Candidates examined per page at most.
pub const SCAN_BUDGET: usize = 20_000;
/// The largest page.
pub const MAX_LIMIT: usize = 1000;
const CHUNK: usize = 256;

/// What to look for; empty fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub subject: Option<String>,
    pub client_id: Option<String>,
    pub session_id: Option<String>,
    /// Prefixes of event types (`login.` or `login.failed`).
    pub types: Vec<String>,
    /// `success` or `failure`.
    pub outcome: Option<String>,
    pub ip: Option<String>,
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct FilterError(pub String);

impl Filter {
    /// Builds a filter from query-string pairs (`type` may repeat). Unknown
    /// parameters other than `skip` are errors, so a typo never widens a query.
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
        skip: &[&str],
    ) -> Result<Filter, FilterError> {
        let mut f = Filter::default();
        for (k, v) in pairs {
            let one = |slot: &mut Option<String>| {
                if v.is_empty() {
                    return Err(FilterError(format!("{k} is empty")));
                }
                if slot.replace(v.to_string()).is_some() {
                    return Err(FilterError(format!("{k} is given twice")));
                }
                Ok(())
            };
            let time = |slot: &mut Option<Timestamp>| {
                let t = v
                    .parse::<Timestamp>()
                    .map_err(|e| FilterError(format!("{k}: {e}")))?;
                if slot.replace(t).is_some() {
                    return Err(FilterError(format!("{k} is given twice")));
                }
                Ok(())
            };
            match k {
                "subject" => one(&mut f.subject)?,
                "client_id" => one(&mut f.client_id)?,
                "session_id" => one(&mut f.session_id)?,
                "ip" => one(&mut f.ip)?,
                "outcome" => {
                    if !matches!(v, "success" | "failure") {
                        return Err(FilterError(format!(
                            "outcome must be success or failure, not {v:?}"
                        )));
                    }
                    one(&mut f.outcome)?
                }
                "type" => {
                    if !EventType::ALL.iter().any(|t| t.as_str().starts_with(v)) || v.is_empty() {
                        return Err(FilterError(format!(
                            "type {v:?} is not a prefix of any event type"
                        )));
                    }
                    f.types.push(v.to_string());
                }
                "from" => time(&mut f.from)?,
                "to" => time(&mut f.to)?,
                other if skip.contains(&other) => {}
                other => return Err(FilterError(format!("unknown parameter {other:?}"))),
            }
        }
        if let (Some(a), Some(b)) = (f.from, f.to)
            && a > b
        {
            return Err(FilterError("from is after to".into()));
        }
        Ok(f)
    }

    /// The filter [`Filter::to_json`] wrote (an export's header), read back.
    pub fn from_json(
        map: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Filter, FilterError> {
        let mut pairs: Vec<(&str, &str)> = Vec::new();
        for (k, v) in map {
            match v {
                serde_json::Value::String(s) => pairs.push((k, s)),
                serde_json::Value::Array(items) => {
                    for i in items {
                        let s = i
                            .as_str()
                            .ok_or_else(|| FilterError(format!("{k}: expected strings")))?;
                        pairs.push((k, s));
                    }
                }
                _ => return Err(FilterError(format!("{k}: expected a string"))),
            }
        }
        Filter::from_pairs(pairs, &[])
    }

    /// The filter as the `audit.accessed` event records it.
    pub fn to_json(&self) -> serde_json::Map<String, serde_json::Value> {
        use serde_json::Value;
        let mut m = serde_json::Map::new();
        let mut put = |k: &str, v: &Option<String>| {
            if let Some(v) = v {
                m.insert(k.into(), Value::String(v.clone()));
            }
        };
        put("subject", &self.subject);
        put("client_id", &self.client_id);
        put("session_id", &self.session_id);
        put("outcome", &self.outcome);
        put("ip", &self.ip);
        put("from", &self.from.map(|t| t.to_string()));
        put("to", &self.to.map(|t| t.to_string()));
        if !self.types.is_empty() {
            m.insert(
                "type".into(),
                Value::Array(self.types.iter().cloned().map(Value::String).collect()),
            );
        }
        m
    }

    /// The event types the `type` prefixes name.
    fn type_names(&self) -> Vec<&'static str> {
        EventType::ALL
            .iter()
            .map(|t| t.as_str())
            .filter(|name| self.types.iter().any(|p| name.starts_with(p.as_str())))
            .collect()
    }

    /// Whether a stored body matches (read without a typed decode).
    pub fn matches(&self, body: &[u8]) -> bool {
        #[derive(Deserialize)]
        struct Source<'a> {
            #[serde(default, borrow)]
            ip: Option<std::borrow::Cow<'a, str>>,
        }
        #[derive(Deserialize)]
        struct Fields<'a> {
            #[serde(rename = "type", borrow)]
            event_type: std::borrow::Cow<'a, str>,
            time: Timestamp,
            #[serde(default, borrow)]
            subject: Option<std::borrow::Cow<'a, str>>,
            #[serde(default, borrow)]
            client_id: Option<std::borrow::Cow<'a, str>>,
            #[serde(default, borrow)]
            session_id: Option<std::borrow::Cow<'a, str>>,
            #[serde(borrow)]
            outcome: std::borrow::Cow<'a, str>,
            #[serde(default, borrow)]
            source: Option<Source<'a>>,
        }
        let Ok(e) = serde_json::from_slice::<Fields>(body) else {
            return false;
        };
        let eq = |want: &Option<String>, got: Option<&str>| {
            want.as_deref().is_none_or(|w| got == Some(w))
        };
        eq(&self.subject, e.subject.as_deref())
            && eq(&self.client_id, e.client_id.as_deref())
            && eq(&self.session_id, e.session_id.as_deref())
            && eq(&self.outcome, Some(&e.outcome))
            && eq(&self.ip, e.source.as_ref().and_then(|s| s.ip.as_deref()))
            && (self.types.is_empty()
                || self
                    .types
                    .iter()
                    .any(|p| e.event_type.starts_with(p.as_str())))
            && self.from.is_none_or(|f| e.time >= f)
            && self.to.is_none_or(|t| e.time <= t)
    }
}

/// One page of results.
#[derive(Debug)]
pub struct Page {
    pub events: Vec<Recorded>,
    /// Where the next page starts (pass it as `after`), None at the end.
    pub next: Option<u64>,
}

/// The driving index of a query: the keys whose entries are the candidates.
fn driver(filter: &Filter) -> Option<(Field, Vec<u64>)> {
    let one =
        |field: Field, v: &Option<String>| v.as_ref().map(|v| (field, vec![key_hash(field, v)]));
    one(Field::Subject, &filter.subject)
        .or_else(|| one(Field::Session, &filter.session_id))
        .or_else(|| one(Field::Client, &filter.client_id))
        .or_else(|| one(Field::Ip, &filter.ip))
        .or_else(|| {
            (!filter.types.is_empty()).then(|| {
                (
                    Field::Type,
                    filter
                        .type_names()
                        .into_iter()
                        .map(|t| key_hash(Field::Type, t))
                        .collect(),
                )
            })
        })
}

/// The next candidates in `lo..hi` walking `direction`: the union of the
/// driving keys' entries, or every seq when nothing drives.
fn candidates(
    tree: &TreeStore,
    driver: &Option<(Field, Vec<u64>)>,
    lo: u64,
    hi: u64,
    direction: Direction,
) -> Result<Vec<u64>, AuditError> {
    if lo >= hi {
        return Ok(Vec::new());
    }
    let Some((field, keys)) = driver else {
        return Ok(match direction {
            Direction::Forward => (lo..hi.min(lo + CHUNK as u64)).collect(),
            Direction::Backward => (hi.saturating_sub(CHUNK as u64).max(lo)..hi)
                .rev()
                .collect(),
        });
    };
    let mut all = Vec::new();
    for k in keys {
        all.extend(tree.scan_key(*field, *k, lo, hi, direction, CHUNK)?);
    }
    all.sort_unstable();
    all.dedup();
    // The first CHUNK of the union are among the first CHUNK of each key.
    Ok(match direction {
        Direction::Forward => all.into_iter().take(CHUNK).collect(),
        Direction::Backward => all.into_iter().rev().take(CHUNK).collect(),
    })
}

/// Reads the events at `seqs` (in the order given): one ranged read when they
/// are consecutive, else one read each.
async fn fetch(
    store: &DynStore,
    tree: &Arc<TreeStore>,
    seqs: &[u64],
) -> Result<Vec<Recorded>, AuditError> {
    let (Some(&first), Some(&last)) = (seqs.first(), seqs.last()) else {
        return Ok(Vec::new());
    };
    let ascending_run = seqs.windows(2).all(|w| w[1] == w[0] + 1);
    let descending_run = seqs.windows(2).all(|w| w[0] == w[1] + 1);
    let position = |seq: u64| -> Result<authlog_schemas::Position, AuditError> {
        tree.position_of(seq)?.ok_or_else(|| {
            AuditError::Other(format!("the audit index has no position for seq {seq}"))
        })
    };
    let mut out = Vec::with_capacity(seqs.len());
    if ascending_run || descending_run {
        let lo = first.min(last);
        let mut from = ReadFrom::At(position(lo)?);
        while out.len() < seqs.len() {
            let page = store.read_all(from, seqs.len() - out.len()).await?;
            let Some(p) = page.last().map(|r| r.position) else {
                break;
            };
            out.extend(page);
            from = ReadFrom::After(p);
        }
        if descending_run {
            out.reverse();
        }
    } else {
        for &seq in seqs {
            let page = store.read_all(ReadFrom::At(position(seq)?), 1).await?;
            out.extend(page.into_iter().take(1));
        }
    }
    if out.len() != seqs.len() || out.iter().zip(seqs).any(|(r, s)| r.seq != *s) {
        return Err(AuditError::Other(
            "the audit index and the log disagree: run `authlog audit verify`".into(),
        ));
    }
    Ok(out)
}

/// One page of `filter`'s events among leaves `0..size`, after the cursor
/// `after` (a seq from an earlier page's `next`), walking `direction`.
pub async fn query(
    store: &DynStore,
    tree: &Arc<TreeStore>,
    filter: &Filter,
    after: Option<u64>,
    limit: usize,
    direction: Direction,
    size: u64,
) -> Result<Page, AuditError> {
    let limit = limit.clamp(1, MAX_LIMIT);
    let (from_ms, to_ms) = (
        filter.from.map(|t| t.unix_millis().max(0) as u64),
        filter.to.map(|t| t.unix_millis().max(0) as u64),
    );
    let t = tree.clone();
    let (mut lo, mut hi) = tokio::task::spawn_blocking(move || t.seq_bounds(from_ms, to_ms, size))
        .await
        .map_err(|e| AuditError::Other(e.to_string()))??;
    if let Some(a) = after {
        match direction {
            Direction::Forward => lo = lo.max(a.saturating_add(1)),
            Direction::Backward => hi = hi.min(a),
        }
    }
    let driver = driver(filter);
    let mut events = Vec::new();
    let mut scanned = 0usize;
    loop {
        let t = tree.clone();
        let d = driver.clone();
        let seqs = tokio::task::spawn_blocking(move || candidates(&t, &d, lo, hi, direction))
            .await
            .map_err(|e| AuditError::Other(e.to_string()))??;
        let Some(&last) = seqs.last() else {
            return Ok(Page { events, next: None });
        };
        for r in fetch(store, tree, &seqs).await? {
            scanned += 1;
            let seq = r.seq;
            if filter.matches(&r.body) {
                events.push(r);
                if events.len() == limit {
                    let more = match direction {
                        Direction::Forward => seq + 1 < hi,
                        Direction::Backward => seq > lo,
                    };
                    return Ok(Page {
                        events,
                        next: more.then_some(seq),
                    });
                }
            }
        }
        match direction {
            Direction::Forward => lo = last + 1,
            Direction::Backward => hi = last,
        }
        if scanned >= SCAN_BUDGET {
            let more = lo < hi;
            return Ok(Page {
                events,
                next: more.then_some(last),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_strictly() {
        let f = Filter::from_pairs(
            [
                ("type", "login."),
                ("type", "token.granted"),
                ("outcome", "failure"),
            ],
            &[],
        )
        .unwrap();
        assert_eq!(f.types, vec!["login.", "token.granted"]);
        assert!(Filter::from_pairs([("type", "nope.")], &[]).is_err());
        assert!(Filter::from_pairs([("outcome", "maybe")], &[]).is_err());
        assert!(Filter::from_pairs([("subject", "a"), ("subject", "b")], &[]).is_err());
        assert!(Filter::from_pairs([("subjet", "a")], &[]).is_err());
        assert!(Filter::from_pairs([("from", "yesterday")], &[]).is_err());
        assert!(
            Filter::from_pairs(
                [
                    ("from", "2026-11-02T00:00:00Z"),
                    ("to", "2026-11-01T00:00:00Z")
                ],
                &[]
            )
            .is_err()
        );
        assert!(Filter::from_pairs([("limit", "5")], &["limit"]).is_ok());
    }

    #[test]
    fn matching_reads_the_body() {
        let body = br#"{"actor":{"id":"x","kind":"user"},"client_id":"c1","data":{},"id":"i","outcome":"failure","reason":"invalid_credentials","schema_version":1,"source":{"ip":"10.0.0.1"},"stream":"user-1","subject":"u1","time":"2026-11-20T10:00:00.000Z","type":"login.failed"}"#;
        let f = |pairs: &[(&str, &str)]| Filter::from_pairs(pairs.iter().copied(), &[]).unwrap();
        assert!(f(&[("subject", "u1"), ("type", "login.")]).matches(body));
        assert!(f(&[("ip", "10.0.0.1"), ("outcome", "failure")]).matches(body));
        assert!(!f(&[("ip", "10.0.0.2")]).matches(body));
        assert!(!f(&[("type", "login.succeeded")]).matches(body));
        assert!(!f(&[("client_id", "c2")]).matches(body));
        assert!(!f(&[("session_id", "s")]).matches(body));
        assert!(
            f(&[
                ("from", "2026-11-20T10:00:00Z"),
                ("to", "2026-11-20T10:00:00Z")
            ])
            .matches(body)
        );
        assert!(!f(&[("from", "2026-11-20T10:00:00.001Z")]).matches(body));
        assert!(!f(&[("to", "2026-11-20T09:59:59.999Z")]).matches(body));
    }
}
