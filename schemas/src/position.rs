//! Store-assigned fields: position, revision and seq.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::envelope::{Envelope, EnvelopeError};

/// A point in the log. Opaque and totally ordered: the embedded store uses one
/// dense counter (`commit == prepare`), cluster stores hand out sparse or compound
/// positions (KurrentDB's commit/prepare pair), kept without loss. Written as
/// `"N"` when both halves agree and `"C/P"` otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Position {
    pub commit: u64,
    pub prepare: u64,
}

impl Position {
    pub const fn new(commit: u64, prepare: u64) -> Self {
        Position { commit, prepare }
    }

    /// A position of a store with contiguous positions.
    pub const fn dense(n: u64) -> Self {
        Position {
            commit: n,
            prepare: n,
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.commit == self.prepare {
            write!(f, "{}", self.commit)
        } else {
            write!(f, "{}/{}", self.commit, self.prepare)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PositionParseError(pub String);

impl fmt::Display for PositionParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not a log position (N or COMMIT/PREPARE): {:?}", self.0)
    }
}

impl std::error::Error for PositionParseError {}

impl FromStr for Position {
    type Err = PositionParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || PositionParseError(s.chars().take(48).collect());
        match s.split_once('/') {
            None => s.parse().map(Position::dense).map_err(|_| err()),
            Some((c, p)) => Ok(Position::new(
                c.parse().map_err(|_| err())?,
                p.parse().map_err(|_| err())?,
            )),
        }
    }
}

impl Serialize for Position {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Position {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A committed event as the store hands it out: the stored body bytes, the
/// store-assigned fields and, for those allowed to see it, the sealed sidecar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub position: Position,
    /// The event's number in its stream, from 0.
    pub revision: u64,
    /// Dense 0, 1, 2, … in log order: the audit Merkle leaf index.
    pub seq: u64,
    pub stream: String,
    /// The body exactly as stored: RFC 8785 canonical JSON of the envelope.
    pub body: Vec<u8>,
    /// The sealed sidecar (ciphertext), if the event has one. Never shipped.
    pub sidecar: Option<Vec<u8>>,
}

impl Recorded {
    pub fn envelope(&self) -> Result<Envelope, EnvelopeError> {
        Envelope::from_body(&self.body)
    }

    /// The line `events tail`, `/admin/events` and sinks ship: the stored body
    /// bytes with the store-assigned fields added around them, never the sidecar.
    /// The body's members are copied verbatim, so a consumer that drops
    /// `position`, `revision` and `seq` and re-canonicalises gets the body back.
    pub fn to_export_line(&self) -> Vec<u8> {
        let prefix = format!(
            "{{\"position\":\"{}\",\"revision\":{},\"seq\":{},",
            self.position, self.revision, self.seq
        );
        let mut out = Vec::with_capacity(prefix.len() + self.body.len());
        out.extend_from_slice(prefix.as_bytes());
        // The body is a canonical JSON object: drop its opening brace.
        out.extend_from_slice(self.body.get(1..).unwrap_or_default());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_order_and_round_trip() {
        assert!(Position::dense(2) < Position::dense(10));
        assert!(Position::new(5, 3) < Position::new(5, 4));
        for p in [
            Position::dense(0),
            Position::dense(42),
            Position::new(1234, 1200),
        ] {
            assert_eq!(p.to_string().parse::<Position>(), Ok(p));
        }
        assert!("x".parse::<Position>().is_err());
        assert!("1/".parse::<Position>().is_err());
    }

    #[test]
    fn export_line_is_body_plus_store_fields() {
        let r = Recorded {
            position: Position::dense(7),
            revision: 2,
            seq: 7,
            stream: "s".into(),
            body: br#"{"a":1}"#.to_vec(),
            sidecar: Some(vec![1, 2, 3]),
        };
        assert_eq!(
            String::from_utf8(r.to_export_line()).unwrap(),
            r#"{"position":"7","revision":2,"seq":7,"a":1}"#
        );
    }
}
