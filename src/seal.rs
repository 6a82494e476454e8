//! Sealed sidecars: secrets the state needs but nobody may read, encrypted under
//! the key-encryption key (KEK) with XChaCha20-Poly1305.
//!
//! Layout: `0x01 || nonce (24 bytes) || ciphertext+tag`. The event body carries
//! only the SHA-256 of these bytes (`sealed_digest`).

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

const VERSION: u8 = 1;
const AAD: &[u8] = b"authlog sealed sidecar v1";

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("the key-encryption key must be 32 bytes, base64-encoded")]
    BadKey,
    #[error("no randomness available: {0}")]
    Random(String),
    #[error("sealed sidecar does not open with this key-encryption key (wrong KEK or damaged)")]
    Open,
}

/// The key-encryption key. Its `Debug` never shows the key.
#[derive(Clone)]
pub struct Kek(XChaCha20Poly1305, [u8; 32]);

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Kek([redacted])")
    }
}

impl Kek {
    pub fn from_bytes(bytes: &[u8]) -> Result<Kek, SealError> {
        if bytes.len() != 32 {
            return Err(SealError::BadKey);
        }
        let mut raw = [0u8; 32];
        raw.copy_from_slice(bytes);
        XChaCha20Poly1305::new_from_slice(bytes)
            .map(|c| Kek(c, raw))
            .map_err(|_| SealError::BadKey)
    }

    pub fn from_base64(text: &str) -> Result<Kek, SealError> {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| SealError::BadKey)?;
        Kek::from_bytes(&bytes)
    }

    /// A fresh random key, base64-encoded.
    pub fn generate_base64() -> Result<String, SealError> {
        use base64::Engine;
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| SealError::Random(e.to_string()))?;
        Ok(base64::engine::general_purpose::STANDARD.encode(key))
    }

    /// A key for another purpose, derived from the KEK and a label
    /// (HMAC-SHA-256(KEK, label)): one secret to configure, separate keys in use.
    pub fn derive(&self, label: &str) -> [u8; 32] {
        hmac_sha256(&self.1, label.as_bytes())
    }

    pub fn seal(&self, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; 24];
        getrandom::fill(&mut nonce).map_err(|e| SealError::Random(e.to_string()))?;
        let ct = self
            .0
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: AAD,
                },
            )
            .map_err(|_| SealError::Open)?;
        let mut out = Vec::with_capacity(1 + 24 + ct.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        if sealed.len() < 1 + 24 + 16 || sealed[0] != VERSION {
            return Err(SealError::Open);
        }
        self.0
            .decrypt(
                XNonce::from_slice(&sealed[1..25]),
                Payload {
                    msg: &sealed[25..],
                    aad: AAD,
                },
            )
            .map_err(|_| SealError::Open)
    }
}

/// HMAC-SHA-256 (RFC 2104).
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(message);
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc4231_test_case_2() {
        assert_eq!(
            hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn seals_and_opens_and_refuses_other_keys() {
        let kek = Kek::from_base64(&Kek::generate_base64().unwrap()).unwrap();
        let other = Kek::from_base64(&Kek::generate_base64().unwrap()).unwrap();
        let sealed = kek.seal(b"$argon2id$v=19$...").unwrap();
        assert!(!sealed.windows(9).any(|w| w == b"$argon2id"));
        assert_eq!(kek.open(&sealed).unwrap(), b"$argon2id$v=19$...");
        assert!(other.open(&sealed).is_err());
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(kek.open(&tampered).is_err());
        assert!(format!("{kek:?}").contains("redacted"));
        assert!(Kek::from_base64("c2hvcnQ=").is_err());
    }
}
