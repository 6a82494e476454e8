//! Exports of the audit trail, streamed page by page (memory does not grow with
//! the export), and their offline verification.
//!
//! A verifiable NDJSON export (`proofs`) is:
//!
//! ```text
//! {"authlog_export":{"version":1,"filter":{…},"checkpoint":{…signed checkpoint…}}}
//! {"event":{"position":"…","revision":0,"seq":41,…body…},"inclusion":["hex",…],"chain":"hex"}
//! …
//! {"authlog_export_end":{"count":N,"chain":"hex","key_id":"…","signature":"…"}}
//! ```
//!
//! * `event` is the stored body with its store-assigned fields put in front of
//!   its members ([`authlog_schemas::Recorded::to_export_line`]): removing them
//!   gives the stored bytes back exactly, and so the Merkle leaf;
//! * `inclusion` is the RFC 9162 inclusion proof of that leaf in the tree of the
//!   checkpoint's size;
//! * `chain` is SHA-256(previous chain ‖ the `event` bytes as sent), starting
//!   from SHA-256 of the header line: a line removed, added or moved, or a
//!   store-assigned field changed, breaks it from there on;
//! * the trailer's signature (the audit key) covers the checkpoint, the count
//!   and the final chain value: a truncated export has no valid trailer.
//!
//! Without proofs, NDJSON lines are the plain event lines; CSV is for reading
//! (cells that a spreadsheet would run as formulas are prefixed with `'`).

use std::io::BufRead;
use std::sync::Arc;

use bytes::Bytes;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::AuditError;
use super::checkpoint::{AuditKey, Checkpoint, PublicKey};
use super::merkle::{Hash, inclusion_proof, leaf_hash, verify_inclusion};
use super::query::{Filter, query};
use super::tree::{Direction, TreeStore};
use crate::store::DynStore;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Ndjson,
    Csv,
}

impl Format {
    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "ndjson" => Some(Format::Ndjson),
            "csv" => Some(Format::Csv),
            _ => None,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Ndjson => "application/x-ndjson",
            Format::Csv => "text/csv; charset=utf-8",
        }
    }
}

/// The CSV columns, in order.
pub const CSV_COLUMNS: &[&str] = &[
    "seq",
    "position",
    "time",
    "type",
    "outcome",
    "reason",
    "actor_kind",
    "actor_id",
    "subject",
    "client_id",
    "session_id",
    "ip",
    "user_agent",
    "request_id",
    "stream",
    "id",
    "data",
];

/// One CSV cell: quoted when needed (RFC 4180), and prefixed with `'` when a
/// spreadsheet would take it for a formula (`=`, `+`, `-`, `@`, tab, CR).
pub fn csv_cell(value: &str) -> String {
    let guarded = if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{value}")
    } else {
        value.to_string()
    };
    if guarded.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", guarded.replace('"', "\"\""))
    } else {
        guarded
    }
}

fn csv_row(r: &authlog_schemas::Recorded) -> String {
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
    let s = |path: &[&str]| -> String {
        let mut cur = &v;
        for p in path {
            match cur.get(p) {
                Some(x) => cur = x,
                None => return String::new(),
            }
        }
        match cur {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Null => String::new(),
            other => other.to_string(),
        }
    };
    let cells = [
        r.seq.to_string(),
        r.position.to_string(),
        s(&["time"]),
        s(&["type"]),
        s(&["outcome"]),
        s(&["reason"]),
        s(&["actor", "kind"]),
        s(&["actor", "id"]),
        s(&["subject"]),
        s(&["client_id"]),
        s(&["session_id"]),
        s(&["source", "ip"]),
        s(&["source", "user_agent"]),
        s(&["request_id"]),
        r.stream.clone(),
        s(&["id"]),
        s(&["data"]),
    ];
    let mut line = cells
        .iter()
        .map(|c| csv_cell(c))
        .collect::<Vec<_>>()
        .join(",");
    line.push_str("\r\n");
    line
}

/// The text an export trailer's signature covers.
pub fn trailer_text(checkpoint: &Checkpoint, count: u64, chain: &Hash) -> String {
    format!(
        "authlog audit export v1\nsize {}\nroot {}\ncount {count}\nchain {}\n",
        checkpoint.tree_size,
        checkpoint.root_hash,
        hex::encode(chain)
    )
}

fn chain_start(header_line: &[u8]) -> Hash {
    Sha256::digest(header_line).into()
}

fn chain_next(prev: &Hash, event_line: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(event_line);
    h.finalize().into()
}

/// What an export run needs.
pub struct ExportSpec {
    pub filter: Filter,
    pub format: Format,
    /// NDJSON with a checkpoint, inclusion proofs and a signed trailer.
    pub proofs: Option<(Checkpoint, Arc<AuditKey>)>,
    /// Leaves `0..size` are exported (the checkpoint's size with proofs).
    pub size: u64,
}

type Sender = mpsc::Sender<Result<Bytes, std::io::Error>>;

async fn send(tx: &Sender, bytes: impl Into<Bytes>) -> Result<(), AuditError> {
    tx.send(Ok(bytes.into()))
        .await
        .map_err(|_| AuditError::Other("the reader went away".into()))
}

/// Streams the export into `tx`, counting the events sent in `count` (also
/// when it ends early: a reader that went away).
pub async fn run(
    store: &DynStore,
    tree: &Arc<TreeStore>,
    spec: &ExportSpec,
    tx: &Sender,
    count: &mut u64,
) -> Result<(), AuditError> {
    *count = 0;
    let mut chain = [0u8; 32];
    match (&spec.proofs, spec.format) {
        (Some((cp, _)), Format::Ndjson) => {
            let header = serde_json::json!({"authlog_export": {
                "version": 1,
                "filter": spec.filter.to_json(),
                "checkpoint": cp,
            }});
            let line = header.to_string();
            chain = chain_start(line.as_bytes());
            send(tx, format!("{line}\n")).await?;
        }
        (_, Format::Csv) => send(tx, format!("{}\r\n", CSV_COLUMNS.join(","))).await?,
        (None, Format::Ndjson) => {}
    }
    let mut after = None;
    loop {
        let page = query(
            store,
            tree,
            &spec.filter,
            after,
            512,
            Direction::Forward,
            spec.size,
        )
        .await?;
        let proofs = match &spec.proofs {
            Some((cp, _)) if spec.format == Format::Ndjson => {
                let t = tree.clone();
                let seqs: Vec<u64> = page.events.iter().map(|r| r.seq).collect();
                let size = cp.tree_size;
                Some(
                    tokio::task::spawn_blocking(move || {
                        let reader = t.reader()?;
                        Ok::<_, super::tree::TreeError>(
                            seqs.iter()
                                .map(|s| inclusion_proof(&reader, *s, 0, size))
                                .collect::<Vec<_>>(),
                        )
                    })
                    .await
                    .map_err(|e| AuditError::Other(e.to_string()))??,
                )
            }
            _ => None,
        };
        let mut chunk = Vec::with_capacity(page.events.len() * 700);
        for (i, r) in page.events.iter().enumerate() {
            match (spec.format, &proofs) {
                (Format::Csv, _) => chunk.extend_from_slice(csv_row(r).as_bytes()),
                (Format::Ndjson, None) => {
                    chunk.extend_from_slice(&r.to_export_line());
                    chunk.push(b'\n');
                }
                (Format::Ndjson, Some(paths)) => {
                    let line = r.to_export_line();
                    chain = chain_next(&chain, &line);
                    let path: Vec<String> = paths[i].iter().map(hex::encode).collect();
                    chunk.extend_from_slice(b"{\"event\":");
                    chunk.extend_from_slice(&line);
                    chunk.extend_from_slice(
                        format!(
                            ",\"inclusion\":{},\"chain\":\"{}\"}}\n",
                            serde_json::to_string(&path).unwrap_or_default(),
                            hex::encode(chain)
                        )
                        .as_bytes(),
                    );
                }
            }
        }
        if !chunk.is_empty() {
            send(tx, chunk).await?;
        }
        *count += page.events.len() as u64;
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    if let (Some((cp, key)), Format::Ndjson) = (&spec.proofs, spec.format) {
        let signature = key.sign(trailer_text(cp, *count, &chain).as_bytes());
        let trailer = serde_json::json!({"authlog_export_end": {
            "count": *count,
            "chain": hex::encode(chain),
            "key_id": key.key_id(),
            "signature": signature,
        }});
        send(tx, format!("{trailer}\n")).await?;
    }
    Ok(())
}

/// Splits an event line into its seq and the stored body bytes.
pub fn split_event_line(line: &[u8]) -> Option<(u64, Vec<u8>)> {
    let rest = line.strip_prefix(b"{\"position\":\"")?;
    let end = rest.iter().position(|b| *b == b'"')?;
    let rest = rest[end..].strip_prefix(b"\",\"revision\":")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let rest = rest[digits..].strip_prefix(b",\"seq\":")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let seq: u64 = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
    let rest = rest[digits..].strip_prefix(b",")?;
    let mut body = Vec::with_capacity(rest.len() + 1);
    body.push(b'{');
    body.extend_from_slice(rest);
    Some((seq, body))
}

/// What `verify-export` found.
#[derive(Debug, Default, serde::Serialize)]
pub struct ExportReport {
    pub events: u64,
    /// The filter the export says it holds every event of.
    pub filter: serde_json::Map<String, serde_json::Value>,
    pub problems: Vec<String>,
}

impl ExportReport {
    fn problem(&mut self, p: String) {
        if self.problems.len() < 20 {
            self.problems.push(p);
        }
    }
}

/// Verifies an export offline against a checkpoint and the audit public key.
pub fn verify_export(
    input: impl BufRead,
    checkpoint: &Checkpoint,
    key: &PublicKey,
) -> ExportReport {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Header {
        authlog_export: HeaderBody,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct HeaderBody {
        version: u32,
        filter: serde_json::Map<String, serde_json::Value>,
        checkpoint: Checkpoint,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Line<'a> {
        #[serde(borrow)]
        event: &'a serde_json::value::RawValue,
        inclusion: Vec<String>,
        chain: String,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Trailer {
        authlog_export_end: TrailerBody,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct TrailerBody {
        count: u64,
        chain: String,
        key_id: String,
        signature: String,
    }
    let mut report = ExportReport::default();
    if let Err(e) = checkpoint.verify(&[*key]) {
        report.problem(format!("the checkpoint given: {e}"));
        return report;
    }
    let Some(root) = checkpoint.root() else {
        report.problem("the checkpoint given has no valid root".into());
        return report;
    };
    let mut lines = input.split(b'\n').enumerate();
    let mut filter = Filter::default();
    let header_ok = match lines.next() {
        Some((_, Ok(first))) => match serde_json::from_slice::<Header>(&first) {
            Ok(h) if h.authlog_export.version == 1 => {
                report.filter = h.authlog_export.filter.clone();
                match Filter::from_json(&h.authlog_export.filter) {
                    Ok(f) => filter = f,
                    Err(e) => report.problem(format!("line 1: the export's filter: {e}")),
                }
                let c = &h.authlog_export.checkpoint;
                if c.tree_size != checkpoint.tree_size || c.root_hash != checkpoint.root_hash {
                    report.problem(format!(
                        "the export is proven against the checkpoint of size {}, not the one given (size {}): export again with checkpoint={}",
                        c.tree_size, checkpoint.tree_size, checkpoint.tree_size
                    ));
                    None
                } else {
                    Some(chain_start(&first))
                }
            }
            _ => {
                report.problem("line 1 is not an authlog export header".into());
                None
            }
        },
        _ => {
            report.problem("the export is empty".into());
            None
        }
    };
    let Some(mut chain) = header_ok else {
        return report;
    };
    let mut last_seq: Option<u64> = None;
    let mut trailer_seen = false;
    for (i, line) in lines {
        let n = i + 1;
        let Ok(line) = line else {
            report.problem(format!("line {n}: unreadable"));
            break;
        };
        if line.is_empty() {
            continue;
        }
        if trailer_seen {
            report.problem(format!("line {n}: data after the signed trailer"));
            break;
        }
        if let Ok(t) = serde_json::from_slice::<Trailer>(&line) {
            trailer_seen = true;
            let t = t.authlog_export_end;
            if t.count != report.events {
                report.problem(format!(
                    "the trailer counts {} events but the export holds {}: events were removed or added",
                    t.count, report.events
                ));
            }
            if t.chain != hex::encode(chain) {
                report.problem("the trailer's chain does not match the events: they were changed, removed or reordered".into());
            }
            let text = trailer_text(checkpoint, t.count, &hex_hash(&t.chain).unwrap_or_default());
            if t.key_id != key.key_id() || !key.verify(text.as_bytes(), &t.signature) {
                report.problem("the trailer's signature does not verify".into());
            }
            continue;
        }
        let Ok(l) = serde_json::from_slice::<Line>(&line) else {
            report.problem(format!("line {n}: not an export event line"));
            continue;
        };
        let Some((seq, body)) = split_event_line(l.event.get().as_bytes()) else {
            report.problem(format!(
                "line {n}: the event does not start with its position, revision and seq"
            ));
            continue;
        };
        report.events += 1;
        if let Some(prev) = last_seq
            && seq <= prev
        {
            report.problem(format!(
                "line {n}: seq {seq} after seq {prev}: events are out of log order"
            ));
        }
        last_seq = Some(seq);
        let leaf = leaf_hash(&body);
        let path: Option<Vec<Hash>> = l.inclusion.iter().map(|h| hex_hash(h)).collect();
        let included = seq < checkpoint.tree_size
            && path.is_some_and(|p| verify_inclusion(&leaf, seq, checkpoint.tree_size, &p, &root));
        if !included {
            report.problem(format!(
                "line {n} (seq {seq}): the event is not in the log the checkpoint signs: it was changed"
            ));
        }
        if !filter.matches(&body) {
            report.problem(format!(
                "line {n} (seq {seq}): the event does not match the export's filter"
            ));
        }
        chain = chain_next(&chain, l.event.get().as_bytes());
        if l.chain != hex::encode(chain) {
            report.problem(format!(
                "line {n} (seq {seq}): the chain breaks here: an event before it was removed, added or moved"
            ));
            // Resynchronise on the line's own value so one gap is reported once.
            if let Some(h) = hex_hash(&l.chain) {
                chain = h;
            }
        }
    }
    if !trailer_seen {
        report.problem(format!(
            "the export ends after {} events without its signed trailer: it was truncated",
            report.events
        ));
    }
    report
}

fn hex_hash(s: &str) -> Option<Hash> {
    hex::decode(s).ok()?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_cells_are_defused_and_quoting_follows_rfc_4180() {
        assert_eq!(csv_cell("=1+1"), "'=1+1");
        assert_eq!(csv_cell("+cmd"), "'+cmd");
        assert_eq!(csv_cell("-2"), "'-2");
        assert_eq!(csv_cell("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(csv_cell("\tx"), "'\tx");
        assert_eq!(csv_cell("\rx"), "\"'\rx\"");
        assert_eq!(csv_cell("a,b"), "\"a,b\"");
        assert_eq!(csv_cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_cell("plain"), "plain");
        assert_eq!(csv_cell("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
    }

    #[test]
    fn event_lines_split_back_into_the_stored_body() {
        let r = authlog_schemas::Recorded {
            position: authlog_schemas::Position::dense(41),
            revision: 3,
            seq: 41,
            stream: "s".into(),
            body: br#"{"a":1,"b":"x"}"#.to_vec(),
            sidecar: None,
        };
        let (seq, body) = split_event_line(&r.to_export_line()).unwrap();
        assert_eq!(seq, 41);
        assert_eq!(body, r.body);
        assert!(split_event_line(br#"{"seq":1,"a":1}"#).is_none());
    }
}
