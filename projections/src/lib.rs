//! Pure folds of the event log into the views authlog's endpoints read.
//!
//! A [`Projection`] has an initial state and applies one event at a time. No
//! I/O, no clock, no randomness: time is the `time` of the events applied, which
//! keeps every view deterministic, so rebuilding from position 0 gives exactly the
//! live views. Views expire entries by that log time, so memory follows live
//! state, not history.

mod clients;
mod expiry;
mod grants;
mod keys;
mod resources;
mod sessions;
mod users;

use authlog_schemas::{Envelope, EnvelopeError, Position, Recorded, Timestamp};
use serde::{Deserialize, Serialize};

pub use clients::{Client, ClientsView};
pub use grants::{Code, Grant, GrantsView, Refresh};
pub use keys::{KeyStatus, KeysView, SigningKey};
pub use resources::{ResourceServer, ResourceServersView};
pub use sessions::{Session, SessionsView};
pub use users::{User, UsersView, normalize_username};

/// Bumped whenever a view's fold or shape changes: snapshots of another version
/// are ignored and the views rebuilt from the log.
pub const PROJECTION_VERSION: u32 = 2;

/// One event as projections see it: the parsed envelope (newest shape of data on
/// decode), the store-assigned fields and the sealed sidecar (still encrypted).
#[derive(Debug, Clone, Copy)]
pub struct Event<'a> {
    pub position: Position,
    pub revision: u64,
    pub stream: &'a str,
    pub envelope: &'a Envelope,
    pub sidecar: Option<&'a [u8]>,
}

#[derive(Debug)]
pub enum ProjectionError {
    /// The body or its data does not decode: a bug or a damaged log; the runner
    /// stops rather than skip an event.
    Decode {
        position: Position,
        error: EnvelopeError,
    },
    /// Events must arrive once, in order.
    OutOfOrder { last: Position, got: Position },
}

impl std::fmt::Display for ProjectionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProjectionError::Decode { position, error } => {
                write!(f, "event at position {position}: {error}")
            }
            ProjectionError::OutOfOrder { last, got } => {
                write!(f, "event at position {got} arrived after position {last}")
            }
        }
    }
}

impl std::error::Error for ProjectionError {}

/// A fold over the log.
pub trait Projection {
    /// The state before any event.
    fn initial() -> Self
    where
        Self: Sized;

    /// Applies one event. `now` is the log time: the latest event time seen.
    fn apply(&mut self, event: &Event<'_>, now: Timestamp) -> Result<(), ProjectionError>;

    /// Drops entries that expired at or before log time `now`.
    fn expire(&mut self, _now: Timestamp) {}
}

pub(crate) fn decode<D: authlog_schemas::data::EventData>(
    event: &Event<'_>,
) -> Result<D, ProjectionError> {
    event
        .envelope
        .decode::<D>()
        .map_err(|error| ProjectionError::Decode {
            position: event.position,
            error,
        })
}

/// Every view, the position they reflect and the log time they have reached.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Views {
    pub position: Option<Position>,
    pub now: Timestamp,
    pub users: UsersView,
    pub clients: ClientsView,
    pub sessions: SessionsView,
    pub grants: GrantsView,
    pub keys: KeysView,
    pub resource_servers: ResourceServersView,
}

impl Default for Views {
    fn default() -> Self {
        Views::initial()
    }
}

impl Views {
    pub fn initial() -> Views {
        Views {
            position: None,
            now: Timestamp::default(),
            users: UsersView::initial(),
            clients: ClientsView::initial(),
            sessions: SessionsView::initial(),
            grants: GrantsView::initial(),
            keys: KeysView::initial(),
            resource_servers: ResourceServersView::initial(),
        }
    }

    /// Applies one committed event to every view.
    pub fn apply(&mut self, recorded: &Recorded) -> Result<(), ProjectionError> {
        if let Some(last) = self.position
            && recorded.position <= last
        {
            return Err(ProjectionError::OutOfOrder {
                last,
                got: recorded.position,
            });
        }
        let envelope = recorded
            .envelope()
            .map_err(|error| ProjectionError::Decode {
                position: recorded.position,
                error,
            })?;
        // Log time never runs backwards, even if a node's clock did.
        self.now = self.now.max(envelope.time);
        let event = Event {
            position: recorded.position,
            revision: recorded.revision,
            stream: &recorded.stream,
            envelope: &envelope,
            sidecar: recorded.sidecar.as_deref(),
        };
        let now = self.now;
        self.users.apply(&event, now)?;
        self.clients.apply(&event, now)?;
        self.sessions.apply(&event, now)?;
        self.grants.apply(&event, now)?;
        self.keys.apply(&event, now)?;
        self.resource_servers.apply(&event, now)?;
        self.users.expire(now);
        self.clients.expire(now);
        self.sessions.expire(now);
        self.grants.expire(now);
        self.keys.expire(now);
        self.position = Some(recorded.position);
        Ok(())
    }

    /// Live entries across all views: what memory follows.
    pub fn len(&self) -> usize {
        self.users.len()
            + self.clients.len()
            + self.sessions.len()
            + self.grants.len()
            + self.keys.len()
            + self.resource_servers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A snapshot of the views: valid only for the same log and projection version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub log_id: String,
    pub projection_version: u32,
    pub views: Views,
}

impl Snapshot {
    /// The views if this snapshot belongs to `log_id` at the current projection
    /// version and does not claim a position beyond the log's head.
    pub fn into_views(self, log_id: &str, head: Option<Position>) -> Option<Views> {
        let fits = self.log_id == log_id
            && self.projection_version == PROJECTION_VERSION
            && match (self.views.position, head) {
                (None, _) => true,
                (Some(_), None) => false,
                (Some(p), Some(h)) => p <= h,
            };
        fits.then_some(self.views)
    }
}

#[cfg(test)]
mod tests;
