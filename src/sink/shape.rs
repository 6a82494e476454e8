//! What a sink sends for one stored event.
//!
//! * `native`, personal data in full: the stored body with its store-assigned
//!   fields, byte for byte ([`Recorded::to_export_line`]), so a consumer can
//!   recompute the Merkle leaf and ask for an inclusion proof;
//! * personal data `pseudonymised` or `none`: the same envelope with every field
//!   the JSON Schemas mark `x-authlog-personal` replaced by a keyed hash
//!   (HMAC-SHA-256 under a key derived from the KEK: the same value gives the
//!   same pseudonym, so correlation still works) or removed. Such a message is no
//!   longer the stored body: its leaf cannot be recomputed;
//! * `ocsf`: the OCSF mapping ([`super::ocsf`]) of that envelope.
//!
//! The message key is the event's subject, else its client, else its stream, so
//! each user's events stay in order within a Kafka partition.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use authlog_schemas::{EventType, Recorded};
use serde_json::Value;

use super::SinkError;
use crate::config::{Personal, SinkFormat};

/// One message, ready for any transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub seq: u64,
    pub position: authlog_schemas::Position,
    pub event_id: String,
    pub event_type: String,
    pub key: String,
    pub value: Vec<u8>,
}

/// Paths (from the envelope root) of the personal fields of each event type,
/// read from the compiled-in JSON Schemas.
fn personal_paths() -> &'static BTreeMap<&'static str, Vec<Vec<String>>> {
    static PATHS: OnceLock<BTreeMap<&'static str, Vec<Vec<String>>>> = OnceLock::new();
    PATHS.get_or_init(|| {
        fn walk(schema: &Value, at: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
            if schema.get("x-authlog-personal") == Some(&Value::Bool(true)) {
                out.push(at.clone());
            }
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (k, v) in props {
                    at.push(k.clone());
                    walk(v, at, out);
                    at.pop();
                }
            }
        }
        let mut envelope = Vec::new();
        if let Ok(schema) = serde_json::from_str::<Value>(authlog_schemas::ENVELOPE_SCHEMA) {
            walk(&schema, &mut Vec::new(), &mut envelope);
        }
        EventType::ALL
            .iter()
            .map(|t| {
                let mut paths = envelope.clone();
                if let Ok(schema) = serde_json::from_str::<Value>(t.json_schema()) {
                    walk(&schema, &mut Vec::new(), &mut paths);
                }
                paths.sort();
                paths.dedup();
                (t.as_str(), paths)
            })
            .collect()
    })
}

/// The personal fields of `event_type`, as dotted paths (for documentation and
/// tests).
pub fn personal_fields(event_type: &str) -> Vec<String> {
    personal_paths()
        .get(event_type)
        .map(|p| p.iter().map(|p| p.join(".")).collect())
        .unwrap_or_default()
}

/// Turns stored events into messages for one sink.
pub struct Shaper {
    format: SinkFormat,
    personal: Personal,
    /// The key of the pseudonyms.
    key: [u8; 32],
}

impl Shaper {
    pub fn new(format: SinkFormat, personal: Personal, kek: &crate::seal::Kek) -> Shaper {
        Shaper {
            format,
            personal,
            key: kek.derive("authlog sink pseudonyms v1"),
        }
    }

    /// The pseudonym of a personal value.
    pub fn pseudonym(&self, value: &str) -> String {
        let mac = crate::seal::hmac_sha256(&self.key, value.as_bytes());
        format!("pseudonym:{}", hex::encode(&mac[..16]))
    }

    fn apply_personal(&self, envelope: &mut Value, event_type: &str) {
        // A registration's stream is named after the username it claims.
        if let Some(Value::String(stream)) = envelope.get_mut("stream")
            && let Some(name) = stream.strip_prefix("username-")
        {
            *stream = match self.personal {
                Personal::Full => return self.apply_paths(envelope, event_type),
                Personal::Pseudonymised => format!("username-{}", self.pseudonym(name)),
                Personal::None => "username-".to_string(),
            };
        }
        self.apply_paths(envelope, event_type);
    }

    fn apply_paths(&self, envelope: &mut Value, event_type: &str) {
        let Some(paths) = personal_paths().get(event_type) else {
            return;
        };
        for path in paths {
            let Some((last, parents)) = path.split_last() else {
                continue;
            };
            let mut at = Some(&mut *envelope);
            for p in parents {
                at = at.and_then(|v| v.get_mut(p.as_str()));
            }
            let Some(obj) = at.and_then(Value::as_object_mut) else {
                continue;
            };
            match self.personal {
                Personal::Full => {}
                Personal::None => {
                    obj.remove(last.as_str());
                }
                Personal::Pseudonymised => {
                    if let Some(v) = obj.get_mut(last.as_str()) {
                        let text = match &*v {
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        };
                        *v = Value::String(self.pseudonym(&text));
                    }
                }
            }
        }
    }

    pub fn shape(&self, r: &Recorded) -> Result<Outgoing, SinkError> {
        let bad = |error: String| SinkError::Shape { seq: r.seq, error };
        let mut envelope: Value =
            serde_json::from_slice(&r.body).map_err(|e| bad(e.to_string()))?;
        let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let event_type = text(&envelope, "type").ok_or_else(|| bad("no type".into()))?;
        let event_id = text(&envelope, "id").ok_or_else(|| bad("no id".into()))?;
        let key = text(&envelope, "subject")
            .or_else(|| text(&envelope, "client_id"))
            .unwrap_or_else(|| r.stream.clone());
        let key = match self.personal {
            // The key is a subject or client id, not a personal field, but a
            // sink that hides personal data does not key by raw user ids either.
            Personal::Full => key,
            _ => self.pseudonym(&key),
        };
        let value = match (self.format, self.personal) {
            (SinkFormat::Native, Personal::Full) => r.to_export_line(),
            (format, _) => {
                self.apply_personal(&mut envelope, &event_type);
                match format {
                    SinkFormat::Native => {
                        if let Some(o) = envelope.as_object_mut() {
                            o.insert("position".into(), Value::String(r.position.to_string()));
                            o.insert("revision".into(), Value::from(r.revision));
                            o.insert("seq".into(), Value::from(r.seq));
                        }
                        serde_json::to_vec(&envelope).map_err(|e| bad(e.to_string()))?
                    }
                    SinkFormat::Ocsf => {
                        let ocsf = super::ocsf::map(&envelope, r).map_err(bad)?;
                        serde_json::to_vec(&ocsf).map_err(|e| bad(e.to_string()))?
                    }
                }
            }
        };
        Ok(Outgoing {
            seq: r.seq,
            position: r.position,
            event_id,
            event_type,
            key,
            value,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn personal_fields_come_from_the_schemas() {
        let registered = personal_fields("user.registered");
        for f in [
            "data.username",
            "data.email",
            "source.ip",
            "source.user_agent",
        ] {
            assert!(registered.contains(&f.to_string()), "{f}: {registered:?}");
        }
        assert!(!registered.contains(&"data.user_id".to_string()));
        assert!(personal_fields("key.activated").contains(&"source.ip".to_string()));
    }
}
