//! Grants: one authorization from code to last refresh, with what is revoked.

use std::collections::{BTreeMap, BTreeSet};

use authlog_schemas::data::{self, GrantType};
use authlog_schemas::{EventType, Timestamp};
use serde::{Deserialize, Serialize};

use crate::expiry::Expiry;
use crate::{Event, Projection, ProjectionError, decode};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Code {
    pub code_id: String,
    pub redirect_uri: String,
    pub expires_at: Timestamp,
    pub redeemed: bool,
    /// Sealed: the code's hash and the PKCE challenge.
    pub sealed: Option<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refresh {
    pub token_id: String,
    pub expires_at: Timestamp,
    /// Sealed: the refresh token's hash.
    pub sealed: Option<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub grant_id: String,
    pub client_id: String,
    pub user_id: Option<String>,
    pub session_id: Option<String>,
    pub scopes: Vec<String>,
    pub code: Option<Code>,
    /// The current refresh token of the family.
    pub refresh: Option<Refresh>,
    /// Live access tokens by id (`jti`) and expiry.
    pub access_tokens: BTreeMap<String, Timestamp>,
    /// Token ids revoked one by one.
    pub revoked_tokens: BTreeSet<String>,
    /// The whole grant is revoked.
    pub revoked: bool,
    /// The last revision of `grant-{id}`.
    pub revision: u64,
    /// When the last thing in the grant expires: the grant leaves memory then.
    pub expires_at: Timestamp,
}

impl Grant {
    fn recompute_expiry(&mut self) {
        let mut latest = self.code.as_ref().map(|c| c.expires_at).unwrap_or_default();
        if let Some(r) = &self.refresh {
            latest = latest.max(r.expires_at);
        }
        for exp in self.access_tokens.values() {
            latest = latest.max(*exp);
        }
        self.expires_at = latest;
    }

    /// Whether the access token `jti` is live at `now`.
    pub fn access_token_active(&self, jti: &str, now: Timestamp) -> bool {
        !self.revoked
            && !self.revoked_tokens.contains(jti)
            && self.access_tokens.get(jti).is_some_and(|exp| now < *exp)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantsView {
    by_id: BTreeMap<String, Grant>,
    expiry: Expiry,
    /// session id → the grants issued in it (logout ends them).
    by_session: BTreeMap<String, BTreeSet<String>>,
}

impl GrantsView {
    pub fn get(&self, grant_id: &str) -> Option<&Grant> {
        self.by_id.get(grant_id)
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// The live grants of user `user_id` (a scan: for rare operations such as
    /// disabling a user).
    pub fn of_user<'a>(&'a self, user_id: &'a str) -> impl Iterator<Item = &'a Grant> + 'a {
        self.by_id
            .values()
            .filter(move |g| g.user_id.as_deref() == Some(user_id))
    }

    /// The live grants issued in session `sid`.
    pub fn of_session(&self, sid: &str) -> impl Iterator<Item = &Grant> {
        self.by_session
            .get(sid)
            .into_iter()
            .flatten()
            .filter_map(|id| self.by_id.get(id))
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Applies `f`, then forgets what has expired by `now`, so a long-lived
    /// refresh family holds its live tokens only, not its history. (Reuse of a
    /// rotated-out refresh token is decided from the grant's stream, not here.)
    fn update(
        &mut self,
        grant_id: &str,
        revision: u64,
        now: Timestamp,
        f: impl FnOnce(&mut Grant),
    ) {
        if let Some(g) = self.by_id.get_mut(grant_id) {
            let old = g.expires_at;
            f(g);
            g.revision = revision;
            g.access_tokens.retain(|_, exp| *exp > now);
            let refresh_id = g.refresh.as_ref().map(|r| r.token_id.clone());
            let live = &g.access_tokens;
            g.revoked_tokens
                .retain(|id| live.contains_key(id) || refresh_id.as_deref() == Some(id.as_str()));
            g.recompute_expiry();
            self.expiry.set(grant_id, Some(old), Some(g.expires_at));
        }
    }
}

impl Projection for GrantsView {
    fn initial() -> Self {
        GrantsView::default()
    }

    fn apply(&mut self, event: &Event<'_>, now: Timestamp) -> Result<(), ProjectionError> {
        let sealed = event.sidecar.map(<[u8]>::to_vec);
        match event.envelope.event_type {
            EventType::AuthorizationCodeIssued => {
                let d: data::AuthorizationCodeIssued = decode(event)?;
                let g = Grant {
                    grant_id: d.grant_id.clone(),
                    client_id: d.client_id,
                    user_id: Some(d.user_id),
                    session_id: Some(d.session_id.clone()),
                    scopes: d.scopes,
                    code: Some(Code {
                        code_id: d.code_id,
                        redirect_uri: d.redirect_uri,
                        expires_at: d.expires_at,
                        redeemed: false,
                        sealed,
                    }),
                    refresh: None,
                    access_tokens: BTreeMap::new(),
                    revoked_tokens: BTreeSet::new(),
                    revoked: false,
                    revision: event.revision,
                    expires_at: d.expires_at,
                };
                self.expiry.set(&d.grant_id, None, Some(g.expires_at));
                self.by_session
                    .entry(d.session_id.clone())
                    .or_default()
                    .insert(d.grant_id.clone());
                self.by_id.insert(d.grant_id, g);
            }
            EventType::TokenGranted => {
                let d: data::TokenGranted = decode(event)?;
                if d.grant_type == GrantType::ClientCredentials
                    && !self.by_id.contains_key(&d.grant_id)
                {
                    self.by_id.insert(
                        d.grant_id.clone(),
                        Grant {
                            grant_id: d.grant_id.clone(),
                            client_id: d.client_id.clone(),
                            user_id: None,
                            session_id: None,
                            scopes: d.scopes.clone(),
                            code: None,
                            refresh: None,
                            access_tokens: BTreeMap::new(),
                            revoked_tokens: BTreeSet::new(),
                            revoked: false,
                            revision: event.revision,
                            expires_at: d.access_token_expires_at,
                        },
                    );
                    self.expiry
                        .set(&d.grant_id, None, Some(d.access_token_expires_at));
                }
                self.update(&d.grant_id, event.revision, now, |g| {
                    if d.consumed_code_id.is_some()
                        && let Some(c) = g.code.as_mut()
                    {
                        c.redeemed = true;
                    }
                    g.scopes = d.scopes.clone();
                    g.access_tokens
                        .insert(d.access_token_id.clone(), d.access_token_expires_at);
                    if let (Some(id), Some(exp)) =
                        (d.refresh_token_id.clone(), d.refresh_token_expires_at)
                    {
                        g.refresh = Some(Refresh {
                            token_id: id,
                            expires_at: exp,
                            sealed,
                        });
                    }
                });
            }
            EventType::AuthorizationCodeReplayDetected => {
                let d: data::AuthorizationCodeReplayDetected = decode(event)?;
                self.update(&d.grant_id, event.revision, now, |g| {
                    g.revoked = true;
                    g.revoked_tokens.extend(d.revoked_token_ids);
                });
            }
            EventType::RefreshTokenReuseDetected => {
                let d: data::RefreshTokenReuseDetected = decode(event)?;
                self.update(&d.grant_id, event.revision, now, |g| {
                    g.revoked = true;
                    g.revoked_tokens.extend(d.revoked_token_ids);
                });
            }
            EventType::TokenRevoked => {
                let d: data::TokenRevoked = decode(event)?;
                self.update(&d.grant_id, event.revision, now, |g| {
                    if d.grant {
                        g.revoked = true;
                    }
                    g.revoked_tokens.extend(d.token_ids);
                });
            }
            _ => {}
        }
        Ok(())
    }

    fn expire(&mut self, now: Timestamp) {
        for id in self.expiry.pop_expired(now) {
            if let Some(g) = self.by_id.remove(&id)
                && let Some(sid) = g.session_id
                && let Some(set) = self.by_session.get_mut(&sid)
            {
                set.remove(&id);
                if set.is_empty() {
                    self.by_session.remove(&sid);
                }
            }
        }
    }
}
