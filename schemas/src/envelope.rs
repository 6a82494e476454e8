//! The event envelope: what every event says about itself.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::canonical::{self, CanonicalError};
use crate::catalogue::EventType;
use crate::data::EventData;
use crate::time::Timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActorKind {
    User,
    Client,
    Admin,
    System,
}

/// Who caused the event: a user id, a client id, an admin token's name, or a
/// system component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Actor {
    pub kind: ActorKind,
    pub id: String,
}

impl Actor {
    pub fn system(component: &str) -> Self {
        Actor {
            kind: ActorKind::System,
            id: component.to_string(),
        }
    }
}

/// Where the request came from. Both fields are personal data.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Success,
    Failure,
}

/// An event as stored: the body. The store-assigned `position`, `revision` and
/// `seq` live beside it in [`crate::Recorded`], never inside.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    /// UUIDv7, lower-case, hyphenated.
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: EventType,
    pub schema_version: u32,
    pub stream: String,
    pub time: Timestamp,
    pub actor: Actor,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    pub outcome: Outcome,
    /// Machine-readable, on failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub data: Value,
    /// Lower-case hex SHA-256 of the sealed sidecar, when the event has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed_digest: Option<String>,
}

#[derive(Debug)]
pub enum EnvelopeError {
    Canonical(CanonicalError),
    Json(serde_json::Error),
    /// The body does not satisfy the envelope's own rules.
    Invalid(String),
}

impl std::fmt::Display for EnvelopeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EnvelopeError::Canonical(e) => e.fmt(f),
            EnvelopeError::Json(e) => write!(f, "event body: {e}"),
            EnvelopeError::Invalid(e) => write!(f, "event body: {e}"),
        }
    }
}

impl std::error::Error for EnvelopeError {}

impl From<CanonicalError> for EnvelopeError {
    fn from(e: CanonicalError) -> Self {
        EnvelopeError::Canonical(e)
    }
}

impl From<serde_json::Error> for EnvelopeError {
    fn from(e: serde_json::Error) -> Self {
        EnvelopeError::Json(e)
    }
}

impl Envelope {
    /// A new successful event of `D`'s type on `stream`; the caller supplies the id
    /// and the time (this crate reads neither clock nor random source).
    pub fn new<D: EventData>(
        id: String,
        stream: String,
        time: Timestamp,
        actor: Actor,
        data: &D,
    ) -> Result<Envelope, EnvelopeError> {
        Ok(Envelope {
            id,
            event_type: D::TYPE,
            schema_version: D::TYPE.current_version(),
            stream,
            time,
            actor,
            subject: None,
            client_id: None,
            session_id: None,
            source: None,
            request_id: None,
            outcome: Outcome::Success,
            reason: None,
            data: serde_json::to_value(data)?,
            sealed_digest: None,
        })
    }

    pub fn subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }

    pub fn client(mut self, client_id: impl Into<String>) -> Self {
        self.client_id = Some(client_id.into());
        self
    }

    pub fn session(mut self, session_id: impl Into<String>) -> Self {
        self.session_id = Some(session_id.into());
        self
    }

    pub fn source(mut self, source: Source) -> Self {
        self.source = Some(source);
        self
    }

    pub fn request(mut self, request_id: impl Into<String>) -> Self {
        self.request_id = Some(request_id.into());
        self
    }

    /// Marks the event a failure with a machine-readable reason.
    pub fn failure(mut self, reason: impl Into<String>) -> Self {
        self.outcome = Outcome::Failure;
        self.reason = Some(reason.into());
        self
    }

    /// Checks the envelope's own rules: a reason exactly on failure, data an object.
    pub fn validate(&self) -> Result<(), EnvelopeError> {
        match (self.outcome, &self.reason) {
            (Outcome::Failure, None) => {
                return Err(EnvelopeError::Invalid("a failure needs a reason".into()));
            }
            (Outcome::Success, Some(_)) => {
                return Err(EnvelopeError::Invalid("only a failure has a reason".into()));
            }
            _ => {}
        }
        if !self.data.is_object() {
            return Err(EnvelopeError::Invalid("data must be an object".into()));
        }
        if !is_uuid_v7(&self.id) {
            return Err(EnvelopeError::Invalid(
                "id must be a lower-case hyphenated UUIDv7".into(),
            ));
        }
        Ok(())
    }

    /// The body bytes: RFC 8785 canonical JSON of this envelope.
    pub fn to_body(&self) -> Result<Vec<u8>, EnvelopeError> {
        self.validate()?;
        Ok(canonical::to_canonical(&serde_json::to_value(self)?)?)
    }

    /// Parses a stored body.
    pub fn from_body(body: &[u8]) -> Result<Envelope, EnvelopeError> {
        Ok(serde_json::from_slice(body)?)
    }

    /// Decodes `data` as the newest version of `D`, upcasting older versions.
    pub fn decode<D: EventData>(&self) -> Result<D, EnvelopeError> {
        if self.event_type != D::TYPE {
            return Err(EnvelopeError::Invalid(format!(
                "{} is not {}",
                self.event_type,
                D::TYPE
            )));
        }
        let data = crate::upcast::upcast(self.event_type, self.schema_version, self.data.clone())
            .map_err(EnvelopeError::Invalid)?;
        Ok(serde_json::from_value(data)?)
    }
}

/// `xxxxxxxx-xxxx-7xxx-[89ab]xxx-xxxxxxxxxxxx`, lower-case hex.
fn is_uuid_v7(id: &str) -> bool {
    let b = id.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_digit() || (b'a'..=b'f').contains(c),
        })
        && b[14] == b'7'
        && matches!(b[19], b'8' | b'9' | b'a' | b'b')
}
