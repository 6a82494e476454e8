//! Sessions: who is signed in, since when, until when.

use std::collections::BTreeMap;

use authlog_schemas::data;
use authlog_schemas::{EventType, Timestamp};
use serde::{Deserialize, Serialize};

use crate::expiry::Expiry;
use crate::{Event, Projection, ProjectionError, decode};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub id: String,
    pub user_id: String,
    pub auth_time: Timestamp,
    pub expires_at: Timestamp,
    pub amr: Vec<String>,
    /// The last revision of `session-{id}`.
    pub revision: u64,
    /// The sealed sidecar holding the hash of the cookie secret.
    pub sealed: Option<Vec<u8>>,
    /// The client the sign-in was for, if any.
    pub client_id: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionsView {
    by_id: BTreeMap<String, Session>,
    expiry: Expiry,
}

impl SessionsView {
    /// The session if it exists and has not expired at `now`.
    pub fn get(&self, id: &str, now: Timestamp) -> Option<&Session> {
        self.by_id.get(id).filter(|s| now < s.expires_at)
    }

    /// The live sessions of user `user_id` at `now` (a scan: for rare
    /// operations such as ending all of a user's sessions).
    pub fn of_user<'a>(
        &'a self,
        user_id: &'a str,
        now: Timestamp,
    ) -> impl Iterator<Item = &'a Session> + 'a {
        self.by_id
            .values()
            .filter(move |s| s.user_id == user_id && now < s.expires_at)
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

impl Projection for SessionsView {
    fn initial() -> Self {
        SessionsView::default()
    }

    fn apply(&mut self, event: &Event<'_>, now: Timestamp) -> Result<(), ProjectionError> {
        match event.envelope.event_type {
            EventType::LoginSucceeded => {
                let d: data::LoginSucceeded = decode(event)?;
                if d.expires_at > now {
                    self.expiry.set(&d.session_id, None, Some(d.expires_at));
                    self.by_id.insert(
                        d.session_id.clone(),
                        Session {
                            id: d.session_id,
                            user_id: d.user_id,
                            auth_time: event.envelope.time,
                            expires_at: d.expires_at,
                            amr: d.amr,
                            revision: event.revision,
                            sealed: event.sidecar.map(<[u8]>::to_vec),
                            client_id: event.envelope.client_id.clone(),
                        },
                    );
                }
            }
            EventType::SessionEnded => {
                let d: data::SessionEnded = decode(event)?;
                if let Some(s) = self.by_id.remove(&d.session_id) {
                    self.expiry.set(&s.id, Some(s.expires_at), None);
                }
            }
            EventType::UserDisabled => {
                // A disabled user's sessions end with it.
                let d: data::UserDisabled = decode(event)?;
                let ended: Vec<Session> = self
                    .by_id
                    .values()
                    .filter(|s| s.user_id == d.user_id)
                    .cloned()
                    .collect();
                for s in ended {
                    self.by_id.remove(&s.id);
                    self.expiry.set(&s.id, Some(s.expires_at), None);
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn expire(&mut self, now: Timestamp) {
        for id in self.expiry.pop_expired(now) {
            self.by_id.remove(&id);
        }
    }
}
