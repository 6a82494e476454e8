//! Randomness, hashing, password hashing off the executor, and signing keys.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256, Sha512};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("no randomness available: {0}")]
    Random(String),
    #[error("the password hashing queue is full")]
    Busy,
    #[error("key: {0}")]
    Key(String),
    #[error("password hashing: {0}")]
    Hash(String),
}

pub fn random_bytes<const N: usize>() -> Result<[u8; N], CryptoError> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| CryptoError::Random(e.to_string()))?;
    Ok(b)
}

pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn b64url_decode(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text).ok()
}

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

pub fn sha512(bytes: &[u8]) -> Vec<u8> {
    Sha512::digest(bytes).to_vec()
}

/// Constant-time equality of two byte strings.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// A 256-bit random secret, base64url.
pub fn secret_token() -> Result<String, CryptoError> {
    Ok(b64url(&random_bytes::<32>()?))
}

// ---- passwords -------------------------------------------------------------------

/// CPU-heavy work (password hashing, signing) on the blocking pool: at most
/// `workers` at once, at most `queue` waiting, beyond which calls fail fast
/// ([`CryptoError::Busy`], answered with 503) instead of piling up.
#[derive(Clone)]
pub struct BoundedPool {
    permits: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
    queue: usize,
}

impl BoundedPool {
    pub fn new(workers: usize, queue: usize) -> BoundedPool {
        BoundedPool {
            permits: Arc::new(Semaphore::new(workers)),
            waiting: Arc::new(AtomicUsize::new(0)),
            queue,
        }
    }

    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, CryptoError> {
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.queue {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(CryptoError::Busy);
        }
        let permit = self.permits.clone().acquire_owned().await;
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        let permit = permit.map_err(|_| CryptoError::Busy)?;
        tokio::task::spawn_blocking(move || {
            let out = f();
            drop(permit);
            out
        })
        .await
        .map_err(|e| CryptoError::Hash(e.to_string()))
    }
}

/// argon2id with OWASP's parameters (19 MiB, 2 iterations, 1 lane), in a
/// [`BoundedPool`].
#[derive(Clone)]
pub struct Passwords {
    pool: BoundedPool,
    /// A hash of a random password: verifying against it makes an unknown username
    /// cost what a wrong password costs.
    dummy: Arc<String>,
}

fn argon2() -> Result<argon2::Argon2<'static>, CryptoError> {
    let params =
        argon2::Params::new(19 * 1024, 2, 1, None).map_err(|e| CryptoError::Hash(e.to_string()))?;
    Ok(argon2::Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        params,
    ))
}

fn hash_now(password: &[u8]) -> Result<String, CryptoError> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let salt = SaltString::encode_b64(&random_bytes::<16>()?)
        .map_err(|e| CryptoError::Hash(e.to_string()))?;
    Ok(argon2()?
        .hash_password(password, &salt)
        .map_err(|e| CryptoError::Hash(e.to_string()))?
        .to_string())
}

fn verify_now(password: &[u8], phc: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    argon2().is_ok_and(|a| a.verify_password(password, &parsed).is_ok())
}

impl Passwords {
    pub fn new(workers: usize, queue: usize) -> Result<Passwords, CryptoError> {
        let dummy = hash_now(&random_bytes::<16>()?)?;
        Ok(Passwords {
            pool: BoundedPool::new(workers, queue),
            dummy: Arc::new(dummy),
        })
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, CryptoError> {
        self.pool.run(f).await
    }

    pub async fn hash(&self, password: String) -> Result<String, CryptoError> {
        self.run(move || hash_now(password.as_bytes())).await?
    }

    /// Verifies `password` against `phc`, or against a dummy hash when there is
    /// no user (same cost either way; the answer is then false).
    pub async fn verify(&self, password: String, phc: Option<String>) -> Result<bool, CryptoError> {
        let real = phc.is_some();
        let phc = phc.unwrap_or_else(|| self.dummy.as_str().to_string());
        let ok = self
            .run(move || verify_now(password.as_bytes(), &phc))
            .await?;
        Ok(ok && real)
    }
}

// ---- signing keys -----------------------------------------------------------------

/// A freshly generated signing key: the private key as the signer loads it, and
/// the public JWK.
pub struct GeneratedKey {
    pub private_der: Vec<u8>,
    pub public_jwk: serde_json::Map<String, serde_json::Value>,
}

/// The PKCS#1 `RSAPrivateKey` inside a PKCS#8 `PrivateKeyInfo`.
fn pkcs8_to_pkcs1(der: &[u8]) -> Option<Vec<u8>> {
    // SEQUENCE { INTEGER version, SEQUENCE algorithm, OCTET STRING privateKey }
    fn header(b: &[u8]) -> Option<(u8, usize, usize)> {
        let tag = *b.first()?;
        let first = *b.get(1)? as usize;
        if first < 0x80 {
            return Some((tag, 2, first));
        }
        let n = first & 0x7f;
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | *b.get(2 + i)? as usize;
        }
        Some((tag, 2 + n, len))
    }
    let (tag, h, _) = header(der)?;
    if tag != 0x30 {
        return None;
    }
    let mut rest = der.get(h..)?;
    for expected in [0x02u8, 0x30] {
        let (tag, h, len) = header(rest)?;
        if tag != expected {
            return None;
        }
        rest = rest.get(h + len..)?;
    }
    let (tag, h, len) = header(rest)?;
    (tag == 0x04).then(|| rest.get(h..h + len).map(<[u8]>::to_vec))?
}

pub fn jwt_algorithm(alg: &str) -> Result<jsonwebtoken::Algorithm, CryptoError> {
    match alg {
        "RS256" => Ok(jsonwebtoken::Algorithm::RS256),
        "ES256" => Ok(jsonwebtoken::Algorithm::ES256),
        "EdDSA" => Ok(jsonwebtoken::Algorithm::EdDSA),
        other => Err(CryptoError::Key(format!("unsupported algorithm {other}"))),
    }
}

pub fn encoding_key(alg: &str, der: &[u8]) -> Result<jsonwebtoken::EncodingKey, CryptoError> {
    Ok(match alg {
        "RS256" => jsonwebtoken::EncodingKey::from_rsa_der(der),
        "ES256" => jsonwebtoken::EncodingKey::from_ec_der(der),
        "EdDSA" => jsonwebtoken::EncodingKey::from_ed_der(der),
        other => return Err(CryptoError::Key(format!("unsupported algorithm {other}"))),
    })
}

/// Generates a key for `alg` (RS256: RSA 2048; ES256: P-256; EdDSA: Ed25519).
pub fn generate_key(alg: &str, kid: &str) -> Result<GeneratedKey, CryptoError> {
    use aws_lc_rs::encoding::AsDer;
    let err = |e: &dyn std::fmt::Display| CryptoError::Key(e.to_string());
    let private_der = match alg {
        "RS256" => {
            let kp = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                .map_err(|e| err(&e))?;
            let pkcs8 = kp.as_der().map_err(|e| err(&e))?;
            pkcs8_to_pkcs1(pkcs8.as_ref())
                .ok_or_else(|| CryptoError::Key("RSA key encoding".into()))?
        }
        "ES256" => {
            let kp = aws_lc_rs::signature::EcdsaKeyPair::generate(
                &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            )
            .map_err(|e| err(&e))?;
            kp.to_pkcs8v1().map_err(|e| err(&e))?.as_ref().to_vec()
        }
        "EdDSA" => {
            let kp = aws_lc_rs::signature::Ed25519KeyPair::generate().map_err(|e| err(&e))?;
            kp.to_pkcs8v1().map_err(|e| err(&e))?.as_ref().to_vec()
        }
        other => return Err(CryptoError::Key(format!("unsupported algorithm {other}"))),
    };
    let key = encoding_key(alg, &private_der)?;
    let jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&key, jwt_algorithm(alg)?)
        .map_err(|e| err(&e))?;
    let mut public_jwk = match serde_json::to_value(&jwk) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => return Err(CryptoError::Key("JWK encoding".into())),
    };
    public_jwk.insert("kid".into(), kid.into());
    public_jwk.insert("use".into(), "sig".into());
    public_jwk.insert("alg".into(), alg.into());
    Ok(GeneratedKey {
        private_der,
        public_jwk,
    })
}

/// The verification key of a public JWK.
pub fn decoding_key(
    jwk: &serde_json::Map<String, serde_json::Value>,
) -> Result<jsonwebtoken::DecodingKey, CryptoError> {
    let parsed: jsonwebtoken::jwk::Jwk =
        serde_json::from_value(serde_json::Value::Object(jwk.clone()))
            .map_err(|e| CryptoError::Key(e.to_string()))?;
    jsonwebtoken::DecodingKey::from_jwk(&parsed).map_err(|e| CryptoError::Key(e.to_string()))
}

/// `at_hash` / `c_hash`: the left half of the hash of the ASCII value, base64url,
/// with the hash of the signing algorithm (SHA-512 for EdDSA with Ed25519).
pub fn half_hash(alg: &str, value: &str) -> String {
    let digest = if alg == "EdDSA" {
        sha512(value.as_bytes())
    } else {
        sha256(value.as_bytes()).to_vec()
    };
    b64url(&digest[..digest.len() / 2])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_each_algorithm_sign_and_verify() {
        for alg in ["RS256", "ES256", "EdDSA"] {
            let key = generate_key(alg, "k1").unwrap();
            assert_eq!(key.public_jwk["kid"], "k1");
            assert!(
                !serde_json::to_string(&key.public_jwk)
                    .unwrap()
                    .contains("\"d\""),
                "{alg}: private part in the JWK"
            );
            let enc = encoding_key(alg, &key.private_der).unwrap();
            let mut header = jsonwebtoken::Header::new(jwt_algorithm(alg).unwrap());
            header.kid = Some("k1".into());
            let claims = serde_json::json!({"sub": "x", "exp": 4_000_000_000u64});
            let token = jsonwebtoken::encode(&header, &claims, &enc).unwrap();
            let dec = decoding_key(&key.public_jwk).unwrap();
            let mut v = jsonwebtoken::Validation::new(jwt_algorithm(alg).unwrap());
            v.required_spec_claims.clear();
            let back = jsonwebtoken::decode::<serde_json::Value>(&token, &dec, &v).unwrap();
            assert_eq!(back.claims["sub"], "x");
        }
    }

    #[test]
    fn half_hash_matches_an_independent_computation() {
        // Known answers computed with Python's hashlib: left half of SHA-256
        // (RS256, ES256) and of SHA-512 (EdDSA), base64url without padding.
        let token = "jHkWEdUXMU1BwAsC4vtUsZwnNQ1VBZaMw_CaxDkJBgk";
        assert_eq!(half_hash("RS256", token), "5wkr4yn_xyrV_NrvEkc8Bg");
        assert_eq!(
            half_hash("EdDSA", token),
            "42wmnpEOBTGkRH51vhoFcYBF7tJ6GbIFK3Gk4NOD9d0"
        );
    }

    #[tokio::test]
    async fn passwords_hash_verify_and_refuse_when_busy() {
        let p = Passwords::new(1, 0).unwrap();
        // queue 0: every call is refused, fast.
        assert!(matches!(p.hash("x".into()).await, Err(CryptoError::Busy)));
        let p = Passwords::new(1, 4).unwrap();
        let h = p.hash("correct horse".into()).await.unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(
            p.verify("correct horse".into(), Some(h.clone()))
                .await
                .unwrap()
        );
        assert!(!p.verify("wrong".into(), Some(h)).await.unwrap());
        assert!(!p.verify("anything".into(), None).await.unwrap());
    }
}
