//! Sinks ship every event of the log out of authlog, at least once and in log
//! order, each from its own durable checkpoint: after a crash or restart a sink
//! resumes after the last event it knows was delivered, so nothing is lost and
//! consumers drop the few repeats by `event_id` (or `seq`, the dense audit
//! ordinal, which also shows them any gap).
//!
//! [`shape`] turns a stored event into what a sink sends (native or OCSF, with
//! personal data as configured); [`checkpoint`] keeps where a sink is;
//! [`ndjson`] appends NDJSON to a file or standard output for a log shipper.

pub mod checkpoint;
pub mod kafka;
pub mod ndjson;
pub mod ocsf;
pub mod shape;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("sink: {0}")]
    Io(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("sink: event at seq {seq}: {error}")]
    Shape { seq: u64, error: String },
}

fn io<E: std::fmt::Display>(e: E) -> SinkError {
    SinkError::Io(e.to_string())
}
