//! Signing keys: generated, active, retired (verifying until a time).

use std::collections::BTreeMap;

use authlog_schemas::data;
use authlog_schemas::{EventType, Timestamp};
use serde::{Deserialize, Serialize};

use crate::expiry::Expiry;
use crate::{Event, Projection, ProjectionError, decode};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum KeyStatus {
    /// In the JWKS, not signing: newly generated, or superseded by a newer key.
    Published,
    /// The key that signs.
    Active,
    Retired {
        verify_until: Timestamp,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigningKey {
    pub kid: String,
    pub alg: String,
    pub public_jwk: serde_json::Map<String, serde_json::Value>,
    /// The sealed private key (ciphertext).
    pub private_key: Option<Vec<u8>>,
    pub status: KeyStatus,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeysView {
    by_kid: BTreeMap<String, SigningKey>,
    /// The signing key of each algorithm.
    active: BTreeMap<String, String>,
    /// The last revision of the `keys` stream.
    pub revision: Option<u64>,
    expiry: Expiry,
}

impl KeysView {
    /// The key that signs with `alg`.
    pub fn active(&self, alg: &str) -> Option<&SigningKey> {
        self.active.get(alg).and_then(|k| self.by_kid.get(k))
    }

    pub fn get(&self, kid: &str) -> Option<&SigningKey> {
        self.by_kid.get(kid)
    }

    /// Keys whose public half belongs in the JWKS: all but expired retired ones.
    pub fn published(&self) -> impl Iterator<Item = &SigningKey> {
        self.by_kid.values()
    }

    pub fn len(&self) -> usize {
        self.by_kid.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_kid.is_empty()
    }
}

impl Projection for KeysView {
    fn initial() -> Self {
        KeysView::default()
    }

    fn apply(&mut self, event: &Event<'_>, _now: Timestamp) -> Result<(), ProjectionError> {
        match event.envelope.event_type {
            EventType::KeyGenerated => {
                let d: data::KeyGenerated = decode(event)?;
                self.by_kid.insert(
                    d.kid.clone(),
                    SigningKey {
                        kid: d.kid,
                        alg: d.alg,
                        public_jwk: d.public_jwk,
                        private_key: event.sidecar.map(<[u8]>::to_vec),
                        status: KeyStatus::Published,
                    },
                );
            }
            EventType::KeyActivated => {
                let d: data::KeyActivated = decode(event)?;
                if let Some(alg) = self.by_kid.get(&d.kid).map(|k| k.alg.clone()) {
                    if let Some(previous) = self.active.remove(&alg)
                        && let Some(p) = self.by_kid.get_mut(&previous)
                        && p.status == KeyStatus::Active
                    {
                        p.status = KeyStatus::Published;
                    }
                    if let Some(k) = self.by_kid.get_mut(&d.kid) {
                        k.status = KeyStatus::Active;
                    }
                    self.active.insert(alg, d.kid);
                }
            }
            EventType::KeyRetired => {
                let d: data::KeyRetired = decode(event)?;
                if let Some(k) = self.by_kid.get_mut(&d.kid) {
                    let before = match k.status {
                        KeyStatus::Retired { verify_until } => Some(verify_until),
                        _ => None,
                    };
                    k.status = KeyStatus::Retired {
                        verify_until: d.verify_until,
                    };
                    self.expiry.set(&d.kid, before, Some(d.verify_until));
                    self.active.retain(|_, kid| *kid != d.kid);
                }
            }
            _ => {}
        }
        if event.stream == "keys" {
            self.revision = Some(event.revision);
        }
        Ok(())
    }

    fn expire(&mut self, now: Timestamp) {
        for kid in self.expiry.pop_expired(now) {
            self.by_kid.remove(&kid);
        }
    }
}
