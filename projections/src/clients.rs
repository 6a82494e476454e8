//! Clients: metadata and the sealed secret hash.

use std::collections::BTreeMap;

use authlog_schemas::data::{self, ClientMetadata, ClientRegisteredVia};
use authlog_schemas::{EventType, Timestamp};
use serde::{Deserialize, Serialize};

use crate::{Event, Projection, ProjectionError, decode};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Client {
    pub client_id: String,
    pub metadata: ClientMetadata,
    /// The sealed sidecar holding the secret hash(es); None for public clients.
    pub secret: Option<Vec<u8>>,
    /// The previous secret (in the same sidecar) is accepted until then.
    pub previous_secret_valid_until: Option<Timestamp>,
    /// RFC 7591: 0 means never.
    pub client_secret_expires_at: Option<i64>,
    pub revision: u64,
    pub created_at: Timestamp,
    /// How the client came to be.
    pub registered_via: ClientRegisteredVia,
    /// Someone vouches for the client: an administrator registered or
    /// approved it, or issued the initial access token it registered with.
    /// Until then its authorization errors are shown, never redirected.
    pub approved: bool,
}

impl Client {
    /// The client registered itself (RFC 7591): an administrator grants it
    /// what it may not give itself.
    pub fn self_registered(&self) -> bool {
        self.registered_via.is_dynamic()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientsView {
    by_id: BTreeMap<String, Client>,
}

impl ClientsView {
    pub fn get(&self, client_id: &str) -> Option<&Client> {
        self.by_id.get(client_id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Client> {
        self.by_id.values()
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

impl Projection for ClientsView {
    fn initial() -> Self {
        ClientsView::default()
    }

    fn apply(&mut self, event: &Event<'_>, _now: Timestamp) -> Result<(), ProjectionError> {
        match event.envelope.event_type {
            EventType::ClientRegistered => {
                let d: data::ClientRegistered = decode(event)?;
                self.by_id.insert(
                    d.client_id.clone(),
                    Client {
                        client_id: d.client_id,
                        metadata: d.metadata,
                        secret: event.sidecar.map(<[u8]>::to_vec),
                        previous_secret_valid_until: None,
                        client_secret_expires_at: d.client_secret_expires_at,
                        revision: event.revision,
                        created_at: event.envelope.time,
                        registered_via: d.registered_via,
                        approved: d.registered_via != ClientRegisteredVia::OpenRegistration,
                    },
                );
            }
            EventType::ClientApproved => {
                let d: data::ClientApproved = decode(event)?;
                if let Some(c) = self.by_id.get_mut(&d.client_id) {
                    c.approved = true;
                    c.revision = event.revision;
                }
            }
            EventType::ClientUpdated => {
                let d: data::ClientUpdated = decode(event)?;
                if let Some(c) = self.by_id.get_mut(&d.client_id) {
                    c.metadata = d.metadata;
                    c.revision = event.revision;
                }
            }
            EventType::ClientSecretRotated => {
                let d: data::ClientSecretRotated = decode(event)?;
                if let Some(c) = self.by_id.get_mut(&d.client_id) {
                    c.secret = event.sidecar.map(<[u8]>::to_vec);
                    c.previous_secret_valid_until = d.previous_valid_until;
                    c.client_secret_expires_at = Some(d.client_secret_expires_at);
                    c.revision = event.revision;
                }
            }
            EventType::ClientDeleted => {
                let d: data::ClientDeleted = decode(event)?;
                self.by_id.remove(&d.client_id);
            }
            _ => {
                if let Some(id) = event.stream.strip_prefix("client-")
                    && let Some(c) = self.by_id.get_mut(id)
                {
                    c.revision = event.revision;
                }
            }
        }
        Ok(())
    }
}
