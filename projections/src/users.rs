//! Users: profile, status, lockout, and the sealed password hash.

use std::collections::BTreeMap;

use authlog_schemas::data;
use authlog_schemas::{EventType, Timestamp};
use serde::{Deserialize, Serialize};

use crate::expiry::Expiry;
use crate::{Event, Projection, ProjectionError, decode};

/// How usernames are compared and named in `username-{…}` streams: trimmed and
/// lower-cased.
pub fn normalize_username(username: &str) -> String {
    username.trim().to_lowercase()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: String,
    pub username: String,
    pub email: Option<String>,
    pub name: Option<String>,
    pub enabled: bool,
    /// Locked until this time (None: not locked; `Some(None)`: until unlocked).
    pub locked: Option<Option<Timestamp>>,
    pub failed_attempts: u32,
    /// The sealed sidecar holding the password hash (ciphertext).
    pub password: Option<Vec<u8>>,
    /// The last revision of `user-{id}`, None while that stream is empty.
    pub revision: Option<u64>,
    pub created_at: Timestamp,
    /// Scopes consented to, per client, until revoked.
    pub consents: BTreeMap<String, std::collections::BTreeSet<String>>,
    /// How the user came to be (self-registered emails are unverified).
    pub self_registered: bool,
}

impl User {
    pub fn is_locked(&self, now: Timestamp) -> bool {
        match self.locked {
            None => false,
            Some(None) => true,
            Some(Some(until)) => now < until,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsersView {
    by_id: BTreeMap<String, User>,
    by_username: BTreeMap<String, String>,
    lock_expiry: Expiry,
}

impl UsersView {
    pub fn get(&self, id: &str) -> Option<&User> {
        self.by_id.get(id)
    }

    pub fn by_username(&self, username: &str) -> Option<&User> {
        self.by_username
            .get(&normalize_username(username))
            .and_then(|id| self.by_id.get(id))
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    fn with_user(&mut self, event: &Event<'_>, user_id: &str, f: impl FnOnce(&mut User)) {
        if let Some(u) = self.by_id.get_mut(user_id) {
            if event.stream == format!("user-{user_id}") {
                u.revision = Some(event.revision);
            }
            f(u);
        }
    }

    fn set_lock(&mut self, user_id: &str, lock: Option<Option<Timestamp>>) {
        if let Some(u) = self.by_id.get_mut(user_id) {
            let old = u.locked.flatten();
            u.locked = lock;
            self.lock_expiry.set(user_id, old, lock.flatten());
        }
    }
}

impl Projection for UsersView {
    fn initial() -> Self {
        UsersView::default()
    }

    fn apply(&mut self, event: &Event<'_>, _now: Timestamp) -> Result<(), ProjectionError> {
        match event.envelope.event_type {
            EventType::UserRegistered => {
                let d: data::UserRegistered = decode(event)?;
                self.by_username
                    .insert(normalize_username(&d.username), d.user_id.clone());
                self.by_id.insert(
                    d.user_id.clone(),
                    User {
                        id: d.user_id,
                        username: d.username,
                        email: d.email,
                        name: d.name,
                        enabled: true,
                        locked: None,
                        failed_attempts: 0,
                        password: event.sidecar.map(<[u8]>::to_vec),
                        revision: None,
                        created_at: event.envelope.time,
                        consents: BTreeMap::new(),
                        self_registered: d.registered_via == data::RegisteredVia::SelfRegistration,
                    },
                );
            }
            EventType::UserUpdated => {
                let d: data::UserUpdated = decode(event)?;
                self.with_user(event, &d.user_id, |u| {
                    if d.email.is_some() {
                        u.email = d.email;
                    }
                    if d.name.is_some() {
                        u.name = d.name;
                    }
                });
            }
            EventType::UserPasswordChanged => {
                let d: data::UserPasswordChanged = decode(event)?;
                let sealed = event.sidecar.map(<[u8]>::to_vec);
                self.with_user(event, &d.user_id, |u| u.password = sealed);
            }
            EventType::UserDisabled => {
                let d: data::UserDisabled = decode(event)?;
                self.with_user(event, &d.user_id, |u| u.enabled = false);
            }
            EventType::UserEnabled => {
                let d: data::UserEnabled = decode(event)?;
                self.with_user(event, &d.user_id, |u| u.enabled = true);
            }
            EventType::UserLocked => {
                let d: data::UserLocked = decode(event)?;
                self.with_user(event, &d.user_id, |u| u.failed_attempts = d.failed_attempts);
                self.set_lock(&d.user_id, Some(d.until));
            }
            EventType::UserUnlocked => {
                let d: data::UserUnlocked = decode(event)?;
                self.with_user(event, &d.user_id, |u| u.failed_attempts = 0);
                self.set_lock(&d.user_id, None);
            }
            EventType::LoginFailed => {
                let d: data::LoginFailed = decode(event)?;
                if let (Some(id), Some(n)) = (d.user_id, d.failed_attempts) {
                    self.with_user(event, &id, |u| u.failed_attempts = n);
                }
            }
            EventType::LoginSucceeded => {
                let d: data::LoginSucceeded = decode(event)?;
                self.with_user(event, &d.user_id, |u| u.failed_attempts = 0);
            }
            EventType::ConsentGranted => {
                let d: data::ConsentGranted = decode(event)?;
                self.with_user(event, &d.user_id, |u| {
                    u.consents
                        .entry(d.client_id.clone())
                        .or_default()
                        .extend(d.scopes.iter().cloned());
                });
            }
            EventType::ConsentRevoked => {
                let d: data::ConsentRevoked = decode(event)?;
                self.with_user(event, &d.user_id, |u| {
                    u.consents.remove(&d.client_id);
                });
            }
            EventType::ConsentDenied => {
                let d: data::ConsentDenied = decode(event)?;
                self.with_user(event, &d.user_id, |_| {});
            }
            _ => {}
        }
        // Keep the stream revision current for any other event on a user's stream.
        if let Some(id) = event.stream.strip_prefix("user-")
            && let Some(u) = self.by_id.get_mut(id)
        {
            u.revision = Some(event.revision);
        }
        Ok(())
    }

    /// Timed locks lift by log time.
    fn expire(&mut self, now: Timestamp) {
        for id in self.lock_expiry.pop_expired(now) {
            if let Some(u) = self.by_id.get_mut(&id) {
                u.locked = None;
                u.failed_attempts = 0;
            }
        }
    }
}
