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
pub struct Kek(XChaCha20Poly1305);

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
        XChaCha20Poly1305::new_from_slice(bytes)
            .map(Kek)
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

#[cfg(test)]
mod tests {
    use super::*;

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
