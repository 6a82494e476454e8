//! The token endpoint's one-time decisions, made on the grant's own stream.
//!
//! The shell reads `grant-{id}` from the store, opens the sidecars into
//! [`GrantSecrets`], folds them with [`GrantState::fold`] and asks [`redeem_code`]
//! or [`refresh`] for the events; it appends them with the stream's revision as
//! the expectation, so single use holds across nodes. Pure: time and ids come in.

use authlog_schemas::data::{self, GrantType};
use authlog_schemas::{Envelope, EventType, Timestamp};

use crate::crypto::{b64url, ct_eq, sha256};

/// What the sidecars of a grant's events hold, opened.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct CodeSecret {
    /// Lower-case hex SHA-256 of the whole code.
    pub code_sha256: String,
    pub code_challenge: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// When the user really signed in (the session's `auth_time`), ms.
    pub auth_time_ms: i64,
}

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct RefreshSecret {
    pub refresh_sha256: String,
}

/// One event of a grant's stream with its opened sidecar.
#[derive(Debug, Clone)]
pub struct GrantEvent {
    pub envelope: Envelope,
    pub revision: u64,
    pub code: Option<CodeSecret>,
    pub refresh: Option<RefreshSecret>,
}

#[derive(Debug, Clone)]
pub struct IssuedRefresh {
    pub token_id: String,
    pub expires_at: Timestamp,
    pub sha256: String,
}

/// A grant as its stream tells it.
#[derive(Debug, Clone)]
pub struct GrantState {
    pub grant_id: String,
    pub issued: data::AuthorizationCodeIssued,
    pub code: CodeSecret,
    pub redeemed: bool,
    pub revoked: bool,
    /// Every access and refresh token id issued.
    pub token_ids: Vec<String>,
    /// Every refresh token issued, oldest first; the last one is current.
    pub refreshes: Vec<IssuedRefresh>,
    /// The scopes granted at authorization: refreshes may narrow a token's
    /// scope, never the grant's.
    pub scopes: Vec<String>,
    /// When the grant began (the code's issuance).
    pub issued_at: Timestamp,
    pub last_revision: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    #[error("{0}")]
    InvalidGrant(&'static str),
    #[error("the stream does not hold an authorization grant")]
    NotAGrant,
    #[error("{0}")]
    InvalidScope(&'static str),
}

impl GrantState {
    pub fn fold(events: &[GrantEvent]) -> Result<GrantState, GrantError> {
        let first = events.first().ok_or(GrantError::NotAGrant)?;
        if first.envelope.event_type != EventType::AuthorizationCodeIssued {
            return Err(GrantError::NotAGrant);
        }
        let issued: data::AuthorizationCodeIssued =
            first.envelope.decode().map_err(|_| GrantError::NotAGrant)?;
        let code = first.code.clone().ok_or(GrantError::NotAGrant)?;
        let mut state = GrantState {
            grant_id: issued.grant_id.clone(),
            scopes: issued.scopes.clone(),
            issued_at: first.envelope.time,
            issued,
            code,
            redeemed: false,
            revoked: false,
            token_ids: Vec::new(),
            refreshes: Vec::new(),
            last_revision: first.revision,
        };
        for e in &events[1..] {
            state.last_revision = e.revision;
            match e.envelope.event_type {
                EventType::TokenGranted => {
                    let d: data::TokenGranted =
                        e.envelope.decode().map_err(|_| GrantError::NotAGrant)?;
                    if d.consumed_code_id.is_some() {
                        state.redeemed = true;
                    }
                    state.token_ids.push(d.access_token_id.clone());
                    if let (Some(id), Some(exp), Some(secret)) = (
                        d.refresh_token_id.clone(),
                        d.refresh_token_expires_at,
                        e.refresh.clone(),
                    ) {
                        state.token_ids.push(id.clone());
                        state.refreshes.push(IssuedRefresh {
                            token_id: id,
                            expires_at: exp,
                            sha256: secret.refresh_sha256,
                        });
                    }
                }
                EventType::AuthorizationCodeReplayDetected
                | EventType::RefreshTokenReuseDetected => state.revoked = true,
                EventType::TokenRevoked => {
                    let d: data::TokenRevoked =
                        e.envelope.decode().map_err(|_| GrantError::NotAGrant)?;
                    if d.grant {
                        state.revoked = true;
                    }
                    // Revoking the current refresh token ends the family too.
                    if let Some(current) = state.refreshes.last()
                        && d.token_ids.contains(&current.token_id)
                    {
                        state.revoked = true;
                    }
                }
                _ => {}
            }
        }
        Ok(state)
    }
}

/// What a decision produced: the events to append (data + envelope tweaks are
/// the shell's), and the outcome.
#[derive(Debug)]
pub enum Decision {
    /// Issue tokens: a `token.granted` with these fields.
    Grant(data::TokenGranted),
    /// Refuse and revoke the whole grant in the same append.
    Replay(data::AuthorizationCodeReplayDetected),
    Reuse(data::RefreshTokenReuseDetected),
}

/// New ids and lifetimes for what a grant issues.
pub struct Issue {
    pub access_token_id: String,
    pub access_expires_at: Timestamp,
    /// A refresh token to issue (id, expiry), if the client may refresh.
    pub refresh: Option<(String, Timestamp)>,
    pub id_token: bool,
    /// The grant ends then, whatever its refresh tokens say.
    pub grant_ends_at: Timestamp,
    /// The access token's audience (the shell narrows it and the scopes to
    /// the RFC 8707 resources asked for).
    pub audience: Vec<String>,
}

pub fn hex_sha256(value: &str) -> String {
    hex::encode(sha256(value.as_bytes()))
}

/// PKCE S256: BASE64URL(SHA256(ASCII(verifier))) == challenge (RFC 7636 §4.6).
pub fn pkce_s256_matches(verifier: &str, challenge: &str) -> bool {
    ct_eq(
        b64url(&sha256(verifier.as_bytes())).as_bytes(),
        challenge.as_bytes(),
    )
}

/// RFC 7636 §4.1: 43 to 128 characters of [A-Z a-z 0-9 - . _ ~].
pub fn valid_verifier(verifier: &str) -> bool {
    (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// Redeems an authorization code.
#[allow(clippy::too_many_arguments)]
pub fn redeem_code(
    state: &GrantState,
    code: &str,
    client_id: &str,
    redirect_uri: Option<&str>,
    code_verifier: Option<&str>,
    now: Timestamp,
    issue: Issue,
) -> Result<Decision, GrantError> {
    if state.issued.client_id != client_id {
        return Err(GrantError::InvalidGrant(
            "the code was issued to another client",
        ));
    }
    if !ct_eq(
        hex_sha256(code).as_bytes(),
        state.code.code_sha256.as_bytes(),
    ) {
        return Err(GrantError::InvalidGrant("the code is invalid"));
    }
    if state.revoked {
        // Only the first replay is an event: a revoked grant answers
        // invalid_grant and writes nothing, however often it is presented.
        return Err(GrantError::InvalidGrant("the grant was revoked"));
    }
    if state.redeemed {
        // RFC 6749 §4.1.2: a second redemption revokes what the first issued.
        return Ok(Decision::Replay(data::AuthorizationCodeReplayDetected {
            grant_id: state.grant_id.clone(),
            code_id: state.issued.code_id.clone(),
            client_id: client_id.to_string(),
            revoked_token_ids: state.token_ids.clone(),
        }));
    }
    if now >= state.issued.expires_at {
        return Err(GrantError::InvalidGrant("the code has expired"));
    }
    if redirect_uri != Some(state.issued.redirect_uri.as_str()) {
        return Err(GrantError::InvalidGrant(
            "redirect_uri does not match the authorization request",
        ));
    }
    let Some(verifier) = code_verifier else {
        return Err(GrantError::InvalidGrant("code_verifier is required (PKCE)"));
    };
    if !valid_verifier(verifier) {
        return Err(GrantError::InvalidGrant(
            "code_verifier must be 43 to 128 unreserved characters",
        ));
    }
    if !pkce_s256_matches(verifier, &state.code.code_challenge) {
        return Err(GrantError::InvalidGrant(
            "code_verifier does not match the code_challenge",
        ));
    }
    Ok(Decision::Grant(data::TokenGranted {
        grant_id: state.grant_id.clone(),
        grant_type: GrantType::AuthorizationCode,
        client_id: client_id.to_string(),
        user_id: Some(state.issued.user_id.clone()),
        scopes: state.scopes.clone(),
        access_token_id: issue.access_token_id,
        access_token_expires_at: issue.access_expires_at,
        refresh_token_id: issue.refresh.as_ref().map(|r| r.0.clone()),
        refresh_token_expires_at: issue.refresh.as_ref().map(|r| r.1),
        id_token: issue.id_token,
        consumed_code_id: Some(state.issued.code_id.clone()),
        consumed_refresh_token_id: None,
        audience: issue.audience,
    }))
}

/// Rotates a refresh token, or detects the reuse of a rotated-out one.
pub fn refresh(
    state: &GrantState,
    token_id: &str,
    token: &str,
    client_id: &str,
    requested_scopes: Option<&[String]>,
    session_live: bool,
    now: Timestamp,
    issue: Issue,
) -> Result<Decision, GrantError> {
    if state.issued.client_id != client_id {
        return Err(GrantError::InvalidGrant(
            "the refresh token was issued to another client",
        ));
    }
    let Some(position) = state.refreshes.iter().position(|r| r.token_id == token_id) else {
        return Err(GrantError::InvalidGrant("the refresh token is invalid"));
    };
    let presented = &state.refreshes[position];
    // Only the holder of the secret may trigger anything, reuse detection included.
    if !ct_eq(hex_sha256(token).as_bytes(), presented.sha256.as_bytes()) {
        return Err(GrantError::InvalidGrant("the refresh token is invalid"));
    }
    if state.revoked {
        return Err(GrantError::InvalidGrant("the grant was revoked"));
    }
    if position + 1 != state.refreshes.len() {
        return Ok(Decision::Reuse(data::RefreshTokenReuseDetected {
            grant_id: state.grant_id.clone(),
            refresh_token_id: token_id.to_string(),
            client_id: client_id.to_string(),
            revoked_token_ids: state.token_ids.clone(),
        }));
    }
    if now >= presented.expires_at || now >= issue.grant_ends_at {
        return Err(GrantError::InvalidGrant("the refresh token has expired"));
    }
    let offline = state.scopes.iter().any(|s| s == "offline_access");
    if !offline && !session_live {
        return Err(GrantError::InvalidGrant(
            "the session this refresh token belongs to has ended",
        ));
    }
    let scopes = match requested_scopes {
        None => state.scopes.clone(),
        Some(req) => {
            if req.is_empty() {
                return Err(GrantError::InvalidScope("scope is empty"));
            }
            if !req.iter().all(|s| state.scopes.contains(s)) {
                return Err(GrantError::InvalidScope(
                    "a refresh may only narrow the scope",
                ));
            }
            req.to_vec()
        }
    };
    Ok(Decision::Grant(data::TokenGranted {
        grant_id: state.grant_id.clone(),
        grant_type: GrantType::RefreshToken,
        client_id: client_id.to_string(),
        user_id: Some(state.issued.user_id.clone()),
        scopes,
        access_token_id: issue.access_token_id,
        access_token_expires_at: issue.access_expires_at,
        refresh_token_id: issue.refresh.as_ref().map(|r| r.0.clone()),
        refresh_token_expires_at: issue.refresh.as_ref().map(|r| r.1),
        id_token: issue.id_token,
        consumed_code_id: None,
        consumed_refresh_token_id: Some(token_id.to_string()),
        audience: issue.audience,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use authlog_schemas::Actor;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_unix_millis(1_795_673_394_000 + s * 1000)
    }

    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    fn code_event() -> GrantEvent {
        let d = data::AuthorizationCodeIssued {
            grant_id: "g1".into(),
            code_id: "k1".into(),
            client_id: "c1".into(),
            user_id: "u1".into(),
            session_id: "s1".into(),
            scopes: vec!["openid".into()],
            redirect_uri: "https://app/cb".into(),
            expires_at: at(60),
            resources: vec![],
        };
        GrantEvent {
            envelope: Envelope::new(
                "01900000-0000-7000-8000-000000000001".into(),
                "grant-g1".into(),
                at(0),
                Actor::system("t"),
                &d,
            )
            .unwrap(),
            revision: 0,
            code: Some(CodeSecret {
                code_sha256: hex_sha256("g1.secret"),
                code_challenge: CHALLENGE.into(),
                nonce: None,
                auth_time_ms: 0,
            }),
            refresh: None,
        }
    }

    fn issue(n: u32) -> Issue {
        Issue {
            access_token_id: format!("a{n}"),
            access_expires_at: at(600),
            refresh: Some((format!("r{n}"), at(3600))),
            id_token: true,
            grant_ends_at: at(7200),
            audience: vec!["authlog-resources".into()],
        }
    }

    fn granted(d: data::TokenGranted, revision: u64, refresh_secret: &str) -> GrantEvent {
        GrantEvent {
            envelope: Envelope::new(
                format!("01900000-0000-7000-8000-{revision:012}"),
                "grant-g1".into(),
                at(1),
                Actor::system("t"),
                &d,
            )
            .unwrap(),
            revision,
            code: None,
            refresh: Some(RefreshSecret {
                refresh_sha256: hex_sha256(refresh_secret),
            }),
        }
    }

    #[test]
    fn rfc7636_appendix_b_verifier_matches_its_challenge() {
        assert!(pkce_s256_matches(VERIFIER, CHALLENGE));
        assert!(!pkce_s256_matches("x".repeat(43).as_str(), CHALLENGE));
        assert!(valid_verifier(VERIFIER));
        assert!(!valid_verifier(&"a".repeat(42)));
        assert!(!valid_verifier(&"a".repeat(129)));
        assert!(!valid_verifier(&format!("{}+", "a".repeat(43))));
    }

    #[test]
    fn a_code_is_redeemed_once_then_replay_revokes() {
        let events = vec![code_event()];
        let state = GrantState::fold(&events).unwrap();
        let r = redeem_code(
            &state,
            "g1.secret",
            "c1",
            Some("https://app/cb"),
            Some(VERIFIER),
            at(10),
            issue(1),
        )
        .unwrap();
        let Decision::Grant(d) = r else {
            panic!("expected a grant")
        };
        assert_eq!(d.consumed_code_id.as_deref(), Some("k1"));
        let events = vec![code_event(), granted(d, 1, "g1.r1.s")];
        let state = GrantState::fold(&events).unwrap();
        let again = redeem_code(
            &state,
            "g1.secret",
            "c1",
            Some("https://app/cb"),
            Some(VERIFIER),
            at(11),
            issue(2),
        )
        .unwrap();
        let Decision::Replay(replay) = again else {
            panic!("expected replay")
        };
        assert_eq!(
            replay.revoked_token_ids,
            vec!["a1".to_string(), "r1".to_string()]
        );
        // Recorded once: after it the grant is revoked and answers without an event.
        let replayed = GrantEvent {
            envelope: Envelope::new(
                "01900000-0000-7000-8000-000000000009".into(),
                "grant-g1".into(),
                at(11),
                Actor::system("t"),
                &replay,
            )
            .unwrap(),
            revision: 2,
            code: None,
            refresh: None,
        };
        let mut events = events;
        events.push(replayed);
        let state = GrantState::fold(&events).unwrap();
        assert!(matches!(
            redeem_code(
                &state,
                "g1.secret",
                "c1",
                Some("https://app/cb"),
                Some(VERIFIER),
                at(12),
                issue(3)
            ),
            Err(GrantError::InvalidGrant(_))
        ));
    }

    #[test]
    fn codes_refuse_every_mismatch() {
        let state = GrantState::fold(&[code_event()]).unwrap();
        let wrong_verifier = "x".repeat(43);
        type Case<'a> = (
            &'a str,
            &'a str,
            Option<&'a str>,
            Option<&'a str>,
            Timestamp,
        );
        let cases: Vec<Case> = vec![
            (
                "g1.wrong",
                "c1",
                Some("https://app/cb"),
                Some(VERIFIER),
                at(1),
            ),
            (
                "g1.secret",
                "c2",
                Some("https://app/cb"),
                Some(VERIFIER),
                at(1),
            ),
            (
                "g1.secret",
                "c1",
                Some("https://app/other"),
                Some(VERIFIER),
                at(1),
            ),
            ("g1.secret", "c1", None, Some(VERIFIER), at(1)),
            ("g1.secret", "c1", Some("https://app/cb"), None, at(1)),
            (
                "g1.secret",
                "c1",
                Some("https://app/cb"),
                Some("short"),
                at(1),
            ),
            (
                "g1.secret",
                "c1",
                Some("https://app/cb"),
                Some(&wrong_verifier),
                at(1),
            ),
            (
                "g1.secret",
                "c1",
                Some("https://app/cb"),
                Some(VERIFIER),
                at(60),
            ),
        ];
        for (code, client, uri, verifier, now) in cases {
            let r = redeem_code(&state, code, client, uri, verifier, now, issue(1));
            assert!(
                matches!(r, Err(GrantError::InvalidGrant(_))),
                "{code} {client} {uri:?} {verifier:?}"
            );
        }
    }

    #[test]
    fn refresh_rotates_narrows_and_detects_reuse() {
        let state = GrantState::fold(&[code_event()]).unwrap();
        let Decision::Grant(g1) = redeem_code(
            &state,
            "g1.secret",
            "c1",
            Some("https://app/cb"),
            Some(VERIFIER),
            at(1),
            issue(1),
        )
        .unwrap() else {
            panic!()
        };
        let mut events = vec![code_event(), granted(g1, 1, "t-r1")];
        let state = GrantState::fold(&events).unwrap();
        let wider = vec!["openid".to_string(), "email".to_string()];
        assert!(
            refresh(
                &state,
                "r1",
                "t-r1",
                "c1",
                Some(&wider),
                true,
                at(2),
                issue(2)
            )
            .is_err(),
            "widening refused"
        );
        assert!(refresh(&state, "r1", "wrong", "c1", None, true, at(2), issue(2)).is_err());
        assert!(
            refresh(&state, "r1", "t-r1", "c1", None, false, at(2), issue(2)).is_err(),
            "no offline_access: ends with the session"
        );
        let Decision::Grant(g2) =
            refresh(&state, "r1", "t-r1", "c1", None, true, at(2), issue(2)).unwrap()
        else {
            panic!()
        };
        assert_eq!(g2.consumed_refresh_token_id.as_deref(), Some("r1"));
        events.push(granted(g2, 2, "t-r2"));
        let state = GrantState::fold(&events).unwrap();
        // The rotated-out token again: reuse, the family is revoked.
        let Decision::Reuse(reuse) =
            refresh(&state, "r1", "t-r1", "c1", None, true, at(3), issue(3)).unwrap()
        else {
            panic!()
        };
        assert!(reuse.revoked_token_ids.contains(&"r2".to_string()));
        // A wrong secret for an old id triggers nothing.
        assert!(matches!(
            refresh(&state, "r1", "guess", "c1", None, true, at(3), issue(3)),
            Err(GrantError::InvalidGrant(_))
        ));
    }
}
