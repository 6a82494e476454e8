//! Signed checkpoints: (tree size, root hash, time) signed with the dedicated
//! Ed25519 audit key, appended to the log as `audit.checkpoint`.
//!
//! The key comes from configuration only: never generated into, or kept in, the
//! data directory, so whoever can rewrite the store cannot re-sign it. What is
//! signed is a short text, so any Ed25519 implementation can check it:
//!
//! ```text
//! authlog audit checkpoint v1
//! size 1234
//! root 9f…(64 hex)
//! time 2026-11-26T08:30:00.000Z
//! ```

use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::merkle::Hash;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
const B64URL: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The stream checkpoints are appended to.
pub const STREAM: &str = "audit-checkpoints";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("audit signing key: {0}")]
    Bad(String),
}

/// The private audit signing key.
pub struct AuditKey {
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditKey")
            .field("key_id", &self.key_id())
            .finish_non_exhaustive()
    }
}

impl AuditKey {
    /// From base64 of the 32-byte seed.
    pub fn from_base64(text: &str) -> Result<AuditKey, KeyError> {
        let seed = B64
            .decode(text.trim())
            .map_err(|e| KeyError::Bad(format!("not base64: {e}")))?;
        if seed.len() != 32 {
            return Err(KeyError::Bad(format!(
                "expected a 32-byte Ed25519 seed, got {} bytes",
                seed.len()
            )));
        }
        let pair =
            Ed25519KeyPair::from_seed_unchecked(&seed).map_err(|e| KeyError::Bad(e.to_string()))?;
        Ok(AuditKey { pair })
    }

    /// A new random key: (base64 seed, key). For `authlog audit keygen` only;
    /// the server never generates its audit key.
    pub fn generate() -> Result<(String, AuditKey), KeyError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| KeyError::Bad(format!("randomness: {e}")))?;
        let text = B64.encode(seed);
        Ok((text.clone(), AuditKey::from_base64(&text)?))
    }

    pub fn public(&self) -> PublicKey {
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(self.pair.public_key().as_ref());
        PublicKey(bytes)
    }

    pub fn key_id(&self) -> String {
        self.public().key_id()
    }

    pub fn sign(&self, message: &[u8]) -> String {
        B64URL.encode(self.pair.sign(message).as_ref())
    }

    /// Signs a checkpoint of `size` leaves with root `root` at `time` (RFC 3339).
    pub fn sign_checkpoint(&self, size: u64, root: &Hash, time: &str) -> Checkpoint {
        let root_hash = hex::encode(root);
        let signature = self.sign(signed_text(size, &root_hash, time).as_bytes());
        Checkpoint {
            tree_size: size,
            root_hash,
            time: time.to_string(),
            key_id: self.key_id(),
            signature,
            seq: None,
        }
    }
}

/// An Ed25519 public key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    pub fn from_base64(text: &str) -> Result<PublicKey, KeyError> {
        let bytes = B64
            .decode(text.trim())
            .or_else(|_| B64URL.decode(text.trim()))
            .map_err(|e| KeyError::Bad(format!("public key is not base64: {e}")))?;
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|_| KeyError::Bad("an Ed25519 public key is 32 bytes".into()))?;
        Ok(PublicKey(bytes))
    }

    pub fn to_base64(self) -> String {
        B64.encode(self.0)
    }

    /// The first 8 bytes of the key's SHA-256, in hex.
    pub fn key_id(&self) -> String {
        hex::encode(&Sha256::digest(self.0)[..8])
    }

    pub fn verify(&self, message: &[u8], signature_b64url: &str) -> bool {
        let Ok(sig) = B64URL.decode(signature_b64url) else {
            return false;
        };
        UnparsedPublicKey::new(&ED25519, self.0)
            .verify(message, &sig)
            .is_ok()
    }
}

/// The text a checkpoint's signature covers.
pub fn signed_text(size: u64, root_hex: &str, time: &str) -> String {
    format!("authlog audit checkpoint v1\nsize {size}\nroot {root_hex}\ntime {time}\n")
}

/// A signed checkpoint as the API returns it and `verify-export` reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub tree_size: u64,
    /// Lower-case hex.
    pub root_hash: String,
    /// RFC 3339, as signed.
    pub time: String,
    pub key_id: String,
    /// Base64url Ed25519 signature over [`signed_text`].
    pub signature: String,
    /// The seq of the `audit.checkpoint` event that carries it, once appended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

impl Checkpoint {
    pub fn root(&self) -> Option<Hash> {
        let bytes = hex::decode(&self.root_hash).ok()?;
        bytes.try_into().ok()
    }

    /// Checks the signature with whichever of `keys` has the checkpoint's key id.
    pub fn verify(&self, keys: &[PublicKey]) -> Result<(), String> {
        let Some(key) = keys.iter().find(|k| k.key_id() == self.key_id) else {
            return Err(format!(
                "checkpoint of size {} is signed by key {}, which is not a trusted audit key",
                self.tree_size, self.key_id
            ));
        };
        if self.root().is_none() {
            return Err(format!(
                "checkpoint of size {}: root_hash is not 64 hex digits",
                self.tree_size
            ));
        }
        let text = signed_text(self.tree_size, &self.root_hash, &self.time);
        if key.verify(text.as_bytes(), &self.signature) {
            Ok(())
        } else {
            Err(format!(
                "checkpoint of size {} (time {}): the signature does not verify",
                self.tree_size, self.time
            ))
        }
    }

    /// The checkpoint an `audit.checkpoint` event carries.
    pub fn from_recorded(r: &authlog_schemas::Recorded) -> Result<Checkpoint, String> {
        let env = r.envelope().map_err(|e| e.to_string())?;
        let data: authlog_schemas::data::AuditCheckpoint =
            env.decode().map_err(|e| e.to_string())?;
        Ok(Checkpoint {
            tree_size: data.tree_size,
            root_hash: data.root_hash,
            time: env.time.to_string(),
            key_id: data.key_id,
            signature: data.signature,
            seq: Some(r.seq),
        })
    }
}

/// The keys checkpoints may be signed with: the current one and earlier ones.
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys(pub Vec<PublicKey>);

impl TrustedKeys {
    pub fn keys(&self) -> &[PublicKey] {
        &self.0
    }
}

/// The audit key from configuration, if any, and every key whose checkpoints
/// are trusted.
pub fn load(
    config: &crate::config::AuditConfig,
) -> Result<(Option<AuditKey>, TrustedKeys), KeyError> {
    let key = match (&config.signing_key, &config.signing_key_file) {
        (Some(k), _) => Some(AuditKey::from_base64(k.expose())?),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| KeyError::Bad(format!("{}: {e}", path.display())))?;
            Some(AuditKey::from_base64(&text)?)
        }
        (None, None) => None,
    };
    let mut trusted = Vec::new();
    if let Some(k) = &key {
        trusted.push(k.public());
    }
    for p in &config.previous_public_keys {
        trusted.push(PublicKey::from_base64(p)?);
    }
    Ok((key, TrustedKeys(trusted)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_verifies_with_its_key_only_and_not_once_changed() {
        let (_, key) = AuditKey::generate().unwrap();
        let (_, other) = AuditKey::generate().unwrap();
        let cp = key.sign_checkpoint(7, &[3u8; 32], "2026-11-26T08:00:00.000Z");
        assert_eq!(cp.verify(&[key.public()]), Ok(()));
        assert!(cp.verify(&[other.public()]).is_err());
        let mut moved = cp.clone();
        moved.tree_size = 6;
        assert!(moved.verify(&[key.public()]).is_err());
        let mut rerooted = cp.clone();
        rerooted.root_hash = hex::encode([4u8; 32]);
        assert!(rerooted.verify(&[key.public()]).is_err());
        let mut retimed = cp;
        retimed.time = "2026-11-26T08:00:00.001Z".into();
        assert!(retimed.verify(&[key.public()]).is_err());
    }

    #[test]
    fn keys_round_trip_through_base64_and_bad_keys_are_named() {
        let (seed, key) = AuditKey::generate().unwrap();
        let again = AuditKey::from_base64(&seed).unwrap();
        assert_eq!(key.public(), again.public());
        let public = PublicKey::from_base64(&key.public().to_base64()).unwrap();
        assert_eq!(public, key.public());
        assert!(
            AuditKey::from_base64("c2hvcnQ=")
                .unwrap_err()
                .to_string()
                .contains("32-byte")
        );
        // The Debug form never shows the seed.
        assert!(!format!("{key:?}").contains(&seed));
    }
}
