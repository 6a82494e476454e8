//! authlog's public event contract.
//!
//! Everything a consumer of authlog's log codes against lives here: the event
//! [`Envelope`], the [`EventType`] catalogue with the stream rule of each type, the
//! typed `data` of each type ([`data`]), the canonical JSON (RFC 8785) that bodies
//! are stored as ([`canonical`]), the store-assigned fields ([`Recorded`],
//! [`Position`]) and the upcasters that map old versions to the newest shape.
//!
//! This crate depends on serde only: no I/O, no clock, no randomness.

pub mod canonical;
pub mod catalogue;
pub mod data;
mod envelope;
mod position;
mod time;
pub mod upcast;

pub use catalogue::{EventType, ExpectedRule, StreamRule};

/// The envelope's JSON Schema (`json/envelope.json`), compiled in.
pub const ENVELOPE_SCHEMA: &str = include_str!("../json/envelope.json");
pub use envelope::{Actor, ActorKind, Envelope, EnvelopeError, Outcome, Source};
pub use position::{Position, PositionParseError, Recorded};
pub use time::{Timestamp, TimestampParseError};
