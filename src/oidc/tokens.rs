//! Token formats and JWTs.
//!
//! Codes and refresh tokens carry their grant id, so the token endpoint reads
//! exactly that grant's stream: code = `{grant id}.{secret}`, refresh token =
//! `{grant id}.{token id}.{secret}`; the secret is 256 random bits and only its
//! SHA-256 is kept, sealed. Access tokens are RFC 9068 JWTs (`typ: at+jwt`).

use serde::{Deserialize, Serialize};

/// Splits a code into (grant id, whole code) if it has the right shape.
pub fn parse_code(code: &str) -> Option<&str> {
    let (grant, secret) = code.split_once('.')?;
    (uuid::Uuid::parse_str(grant).is_ok() && secret.len() == 43).then_some(grant)
}

/// Splits a refresh token into (grant id, token id).
pub fn parse_refresh(token: &str) -> Option<(&str, &str)> {
    let mut parts = token.splitn(3, '.');
    let grant = parts.next()?;
    let id = parts.next()?;
    let secret = parts.next()?;
    (uuid::Uuid::parse_str(grant).is_ok()
        && uuid::Uuid::parse_str(id).is_ok()
        && secret.len() == 43)
        .then_some((grant, id))
}

/// A JWT `aud` (RFC 7519 §4.1.3): one audience as a string, several as an array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audience(pub Vec<String>);

impl Audience {
    pub fn contains(&self, aud: &str) -> bool {
        self.0.iter().any(|a| a == aud)
    }
}

impl Serialize for Audience {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0.as_slice() {
            [one] => s.serialize_str(one),
            many => many.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Audience {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
        }
        Ok(match OneOrMany::deserialize(d)? {
            OneOrMany::One(a) => Audience(vec![a]),
            OneOrMany::Many(v) => Audience(v),
        })
    }
}

/// RFC 9068 access token claims.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AccessClaims {
    pub iss: String,
    pub sub: String,
    /// The resource servers the token is for.
    pub aud: Audience,
    pub exp: i64,
    pub iat: i64,
    pub jti: String,
    pub client_id: String,
    pub scope: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<i64>,
    /// The grant, so a resource server's introspection and revocation find it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
}

/// OIDC Core §2 ID token claims.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IdClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
    pub auth_time: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    pub amr: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_shapes() {
        let g = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";
        let secret = "a".repeat(43);
        assert_eq!(parse_code(&format!("{g}.{secret}")), Some(g));
        assert_eq!(parse_code(&format!("{g}.short")), None);
        assert_eq!(parse_code("nonsense"), None);
        assert_eq!(parse_refresh(&format!("{g}.{g}.{secret}")), Some((g, g)));
        assert_eq!(parse_refresh(&format!("{g}.{secret}")), None);
    }

    #[test]
    fn one_audience_is_a_string_several_an_array() {
        let one = Audience(vec!["api".into()]);
        assert_eq!(serde_json::to_string(&one).unwrap(), "\"api\"");
        let two = Audience(vec!["a".into(), "b".into()]);
        assert_eq!(serde_json::to_string(&two).unwrap(), "[\"a\",\"b\"]");
        for text in ["\"api\"", "[\"a\",\"b\"]"] {
            let back: Audience = serde_json::from_str(text).unwrap();
            assert_eq!(serde_json::to_string(&back).unwrap(), text);
        }
    }
}
