//! Resource servers: the APIs access tokens are for, and the scopes each one
//! defines, as administrators register them.

use std::collections::BTreeMap;

use authlog_schemas::data::{self, ScopeDefinition};
use authlog_schemas::{EventType, Timestamp};
use serde::{Deserialize, Serialize};

use crate::{Event, Projection, ProjectionError, decode};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceServer {
    /// What access tokens for it carry as `aud` (RFC 9068), and what clients
    /// name in `resource` (RFC 8707).
    pub identifier: String,
    pub name: String,
    pub scopes: Vec<ScopeDefinition>,
    /// The last revision of `resource-server-{identifier}`.
    pub revision: u64,
    pub created_at: Timestamp,
}

impl ResourceServer {
    pub fn scope(&self, name: &str) -> Option<&ScopeDefinition> {
        self.scopes.iter().find(|s| s.name == name)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceServersView {
    by_id: BTreeMap<String, ResourceServer>,
    /// scope name → the resource server that defines it (the first one to).
    by_scope: BTreeMap<String, String>,
}

impl ResourceServersView {
    pub fn get(&self, identifier: &str) -> Option<&ResourceServer> {
        self.by_id.get(identifier)
    }

    pub fn iter(&self) -> impl Iterator<Item = &ResourceServer> {
        self.by_id.values()
    }

    /// The resource server defining `scope`, and the definition.
    pub fn scope(&self, scope: &str) -> Option<(&ResourceServer, &ScopeDefinition)> {
        let rs = self.by_id.get(self.by_scope.get(scope)?)?;
        Some((rs, rs.scope(scope)?))
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    fn index(&mut self) {
        // Rebuilt from the servers in identifier order: a scope two servers
        // define (which the admin API refuses) maps to the first.
        self.by_scope.clear();
        for rs in self.by_id.values() {
            for s in &rs.scopes {
                self.by_scope
                    .entry(s.name.clone())
                    .or_insert_with(|| rs.identifier.clone());
            }
        }
    }
}

impl Projection for ResourceServersView {
    fn initial() -> Self {
        ResourceServersView::default()
    }

    fn apply(&mut self, event: &Event<'_>, _now: Timestamp) -> Result<(), ProjectionError> {
        match event.envelope.event_type {
            EventType::ResourceServerRegistered => {
                let d: data::ResourceServerRegistered = decode(event)?;
                self.by_id.insert(
                    d.identifier.clone(),
                    ResourceServer {
                        identifier: d.identifier,
                        name: d.name,
                        scopes: d.scopes,
                        revision: event.revision,
                        created_at: event.envelope.time,
                    },
                );
                self.index();
            }
            EventType::ResourceServerUpdated => {
                let d: data::ResourceServerUpdated = decode(event)?;
                if let Some(rs) = self.by_id.get_mut(&d.identifier) {
                    rs.name = d.name;
                    rs.scopes = d.scopes;
                    rs.revision = event.revision;
                }
                self.index();
            }
            EventType::ResourceServerDeleted => {
                let d: data::ResourceServerDeleted = decode(event)?;
                self.by_id.remove(&d.identifier);
                self.index();
            }
            _ => {}
        }
        Ok(())
    }
}
