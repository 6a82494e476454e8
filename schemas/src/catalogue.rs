//! The event catalogue: every type authlog emits, its current schema version,
//! the stream it is appended to and the expected-state rule of that append.
//!
//! The names are a public contract for SIEM consumers; the README carries the same
//! table and a test keeps the two in step.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// How an append of this type states the stream's expected revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedRule {
    /// The stream must not exist: the append is the claim (one node wins).
    NoStream,
    /// The revision the decider read from the stream itself (no stream when empty):
    /// a concurrent change makes the append conflict and the decision is redone.
    Revision,
    /// No expectation: the fact is recorded whatever came before.
    Any,
}

impl ExpectedRule {
    pub fn as_str(self) -> &'static str {
        match self {
            ExpectedRule::NoStream => "no stream",
            ExpectedRule::Revision => "revision read",
            ExpectedRule::Any => "any",
        }
    }
}

/// Where events of one type go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamRule {
    /// The stream name pattern, `{…}` standing for an identifier.
    pub stream: &'static str,
    pub expected: ExpectedRule,
    /// Why, in a few words.
    pub note: &'static str,
}

macro_rules! catalogue {
    ($( $variant:ident = $name:literal, $stream:literal, $rule:ident, $note:literal; )*) => {
        /// Every event type authlog emits.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum EventType { $( $variant, )* }

        impl EventType {
            /// The whole catalogue, in the order the README lists it.
            pub const ALL: &'static [EventType] = &[ $( EventType::$variant, )* ];

            /// The wire name, e.g. `login.succeeded`.
            pub fn as_str(self) -> &'static str {
                match self { $( EventType::$variant => $name, )* }
            }

            /// Looks a wire name up in the catalogue.
            pub fn parse(name: &str) -> Option<EventType> {
                match name { $( $name => Some(EventType::$variant), )* _ => None }
            }

            /// This type's current JSON Schema (`json/<type>/v1.json`), compiled in.
            pub fn json_schema(self) -> &'static str {
                match self { $( EventType::$variant => include_str!(concat!("../json/", $name, "/v1.json")), )* }
            }

            /// The stream and expected-state rule of this type.
            pub fn stream_rule(self) -> StreamRule {
                match self {
                    $( EventType::$variant => StreamRule {
                        stream: $stream,
                        expected: ExpectedRule::$rule,
                        note: $note,
                    }, )*
                }
            }
        }
    };
}

catalogue! {
    UserRegistered = "user.registered", "username-{normalized username}", NoStream,
        "the registration is the username's uniqueness claim";
    UserUpdated = "user.updated", "user-{user id}", Revision, "profile change";
    UserPasswordChanged = "user.password_changed", "user-{user id}", Revision,
        "new argon2id hash in the sealed sidecar";
    UserDisabled = "user.disabled", "user-{user id}", Revision, "";
    UserEnabled = "user.enabled", "user-{user id}", Revision, "";
    UserLocked = "user.locked", "user-{user id}", Revision,
        "decided from the failures on the same stream";
    UserUnlocked = "user.unlocked", "user-{user id}", Revision, "";
    LoginSucceeded = "login.succeeded", "session-{session id}", NoStream,
        "starts the session named in data";
    LoginFailed = "login.failed", "user-{user id}, or login-unknown", Revision,
        "known users: counts toward lockout on the user's stream; unknown usernames (keyed hash only) go to login-unknown with any";
    SessionEnded = "session.ended", "session-{session id}", Revision, "ends a session once";
    ConsentGranted = "consent.granted", "user-{user id}", Any, "";
    ConsentDenied = "consent.denied", "user-{user id}", Any, "";
    ConsentRevoked = "consent.revoked", "user-{user id}", Any,
        "by the user or an administrator; the client's grants for the user are revoked";
    AuthorizationRejected = "authorization.rejected", "client-{client id}", Any,
        "only once the client is identified; earlier failures count in metrics";
    AuthorizationCodeIssued = "authorization_code.issued", "grant-{grant id}", NoStream,
        "a grant starts with its code";
    TokenGranted = "token.granted", "grant-{grant id}", Revision,
        "code redemption and each refresh rotation are one-time; client_credentials starts a new grant (no stream)";
    AuthorizationCodeReplayDetected = "authorization_code.replay_detected", "grant-{grant id}", Revision,
        "revokes the grant's tokens in the same append";
    RefreshTokenReuseDetected = "refresh_token.reuse_detected", "grant-{grant id}", Revision,
        "revokes the refresh family in the same append";
    TokenRevoked = "token.revoked", "grant-{grant id}", Revision, "";
    ClientRegistered = "client.registered", "client-{client id}", NoStream,
        "secret hash in the sealed sidecar";
    ClientUpdated = "client.updated", "client-{client id}", Revision, "";
    ClientSecretRotated = "client.secret_rotated", "client-{client id}", Revision,
        "new secret hash in the sealed sidecar";
    ClientDeleted = "client.deleted", "client-{client id}", Revision, "";
    ClientApproved = "client.approved", "client-{client id}", Revision,
        "an administrator vouches for a self-registered client: its errors may redirect";
    ClientAuthenticationFailed = "client.authentication_failed", "client-{client id}", Any, "";
    ResourceServerRegistered = "resource_server.registered", "resource-server-{identifier}", NoStream,
        "the identifier's uniqueness claim";
    ResourceServerUpdated = "resource_server.updated", "resource-server-{identifier}", Revision, "";
    ResourceServerDeleted = "resource_server.deleted", "resource-server-{identifier}", Revision, "";
    KeyGenerated = "key.generated", "keys", Revision,
        "the first key with no stream, so one node wins; private key in the sealed sidecar";
    KeyActivated = "key.activated", "keys", Revision, "";
    KeyRetired = "key.retired", "keys", Revision, "";
    AuditAccessed = "audit.accessed", "audit-access", Any, "every read of the audit trail";
    AuditCheckpoint = "audit.checkpoint", "audit-checkpoints", Revision,
        "each signed checkpoint follows the previous one";
    SecurityThrottled = "security.throttled", "security", Any,
        "one event per (ip, reason, client) and window";
}

impl EventType {
    /// The newest schema version of this type; older versions are upcast to it.
    pub fn current_version(self) -> u32 {
        1
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for EventType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EventType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        EventType::parse(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown event type {s:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_round_trip() {
        let mut names: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(*t));
        }
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), EventType::ALL.len());
        assert_eq!(EventType::ALL.len(), 34);
    }
}
