//! Given these events, the view is this: no server, no store.

use authlog_schemas::data::*;
use authlog_schemas::{Actor, Envelope, Position, Recorded, Timestamp};

use crate::{KeyStatus, PROJECTION_VERSION, Snapshot, Views};

const T0: i64 = 1_795_673_394_000;

struct Log {
    events: Vec<Recorded>,
    revisions: std::collections::HashMap<String, u64>,
}

impl Log {
    fn new() -> Self {
        Log {
            events: Vec::new(),
            revisions: Default::default(),
        }
    }

    fn push<D: EventData>(&mut self, stream: &str, at_s: i64, data: D, sidecar: Option<&[u8]>) {
        let seq = self.events.len() as u64;
        let id = format!("01900000-0000-7000-8000-{seq:012x}");
        let env = Envelope::new(
            id,
            stream.to_string(),
            Timestamp::from_unix_millis(T0 + at_s * 1000),
            Actor::system("test"),
            &data,
        )
        .unwrap();
        let revision = {
            let r = self.revisions.entry(stream.to_string()).or_insert(0);
            *r += 1;
            *r - 1
        };
        self.events.push(Recorded {
            position: Position::dense(seq),
            revision,
            seq,
            stream: stream.to_string(),
            body: env.to_body().unwrap(),
            sidecar: sidecar.map(<[u8]>::to_vec),
        });
    }

    fn fold(&self) -> Views {
        let mut v = Views::initial();
        for e in &self.events {
            v.apply(e).unwrap();
        }
        v
    }
}

fn at(s: i64) -> Timestamp {
    Timestamp::from_unix_millis(T0 + s * 1000)
}

fn register(log: &mut Log, id: &str, name: &str, t: i64) {
    log.push(
        &format!("username-{name}"),
        t,
        UserRegistered {
            user_id: id.into(),
            username: name.into(),
            email: Some(format!("{name}@example.com")),
            name: None,
            registered_via: RegisteredVia::Admin,
        },
        Some(b"sealed-hash"),
    );
}

#[test]
fn users_follow_their_lifecycle() {
    let mut log = Log::new();
    register(&mut log, "u1", "Alice", 0);
    log.push(
        "user-u1",
        1,
        UserUpdated {
            user_id: "u1".into(),
            email: None,
            name: Some("Alice A".into()),
        },
        None,
    );
    log.push(
        "user-u1",
        2,
        UserPasswordChanged {
            user_id: "u1".into(),
            changed_by: ChangedBy::Admin,
        },
        Some(b"new"),
    );
    log.push(
        "user-u1",
        3,
        UserDisabled {
            user_id: "u1".into(),
        },
        None,
    );
    let v = log.fold();
    let u = v.users.by_username(" alice ").unwrap();
    assert_eq!(u.id, "u1");
    assert_eq!(u.name.as_deref(), Some("Alice A"));
    assert_eq!(u.email.as_deref(), Some("Alice@example.com"));
    assert_eq!(u.password.as_deref(), Some(&b"new"[..]));
    assert!(!u.enabled);
    assert_eq!(u.revision, Some(2));
}

#[test]
fn timed_locks_lift_by_log_time() {
    let mut log = Log::new();
    register(&mut log, "u1", "bob", 0);
    for n in 1..=3 {
        log.push(
            "user-u1",
            n,
            LoginFailed {
                user_id: Some("u1".into()),
                username_hash: None,
                failed_attempts: Some(n as u32),
            },
            None,
        );
    }
    log.push(
        "user-u1",
        4,
        UserLocked {
            user_id: "u1".into(),
            failed_attempts: 3,
            until: Some(at(64)),
        },
        None,
    );
    let v = log.fold();
    let u = v.users.get("u1").unwrap();
    assert!(u.is_locked(v.now));
    assert_eq!(u.failed_attempts, 3);

    // Any later event moves log time past the lock.
    register(&mut log, "u2", "carol", 65);
    let v = log.fold();
    let u = v.users.get("u1").unwrap();
    assert!(!u.is_locked(v.now));
    assert_eq!(u.locked, None);
    assert_eq!(u.failed_attempts, 0);
}

fn login(log: &mut Log, sid: &str, user: &str, t: i64, ttl: i64) {
    log.push(
        &format!("session-{sid}"),
        t,
        LoginSucceeded {
            session_id: sid.into(),
            user_id: user.into(),
            amr: vec!["pwd".into()],
            expires_at: at(t + ttl),
        },
        None,
    );
}

#[test]
fn sessions_end_and_expire_so_memory_follows_live_state() {
    let mut log = Log::new();
    register(&mut log, "u1", "dave", 0);
    login(&mut log, "s1", "u1", 1, 10);
    login(&mut log, "s2", "u1", 2, 100);
    login(&mut log, "s3", "u1", 3, 100);
    log.push(
        "session-s3",
        4,
        SessionEnded {
            session_id: "s3".into(),
            user_id: "u1".into(),
            cause: SessionEndCause::Logout,
        },
        None,
    );
    let v = log.fold();
    assert!(v.sessions.get("s1", v.now).is_some());
    assert!(v.sessions.get("s3", v.now).is_none());
    assert_eq!(v.sessions.len(), 2);

    // Log time passes s1's expiry: it leaves memory.
    log.push(
        "user-u1",
        20,
        UserUpdated {
            user_id: "u1".into(),
            email: None,
            name: None,
        },
        None,
    );
    let v = log.fold();
    assert_eq!(v.sessions.len(), 1);
    assert!(v.sessions.get("s2", v.now).is_some());

    // Disabling the user ends the rest.
    log.push(
        "user-u1",
        21,
        UserDisabled {
            user_id: "u1".into(),
        },
        None,
    );
    assert!(log.fold().sessions.is_empty());
}

fn granted(
    grant: &str,
    access: &str,
    refresh: Option<&str>,
    consumed_code: Option<&str>,
    consumed_refresh: Option<&str>,
    t: i64,
) -> TokenGranted {
    TokenGranted {
        grant_id: grant.into(),
        grant_type: if consumed_refresh.is_some() {
            GrantType::RefreshToken
        } else {
            GrantType::AuthorizationCode
        },
        client_id: "c1".into(),
        user_id: Some("u1".into()),
        scopes: vec!["openid".into()],
        access_token_id: access.into(),
        access_token_expires_at: at(t + 60),
        refresh_token_id: refresh.map(Into::into),
        refresh_token_expires_at: refresh.map(|_| at(t + 3600)),
        id_token: true,
        consumed_code_id: consumed_code.map(Into::into),
        consumed_refresh_token_id: consumed_refresh.map(Into::into),
        audience: vec![],
    }
}

#[test]
fn grants_track_codes_rotation_revocation_and_expiry() {
    let mut log = Log::new();
    log.push(
        "grant-g1",
        0,
        AuthorizationCodeIssued {
            grant_id: "g1".into(),
            code_id: "k1".into(),
            client_id: "c1".into(),
            user_id: "u1".into(),
            session_id: "s1".into(),
            scopes: vec!["openid".into()],
            redirect_uri: "https://app.example/cb".into(),
            expires_at: at(60),
            resources: vec![],
        },
        Some(b"code-hash"),
    );
    log.push(
        "grant-g1",
        1,
        granted("g1", "a1", Some("r1"), Some("k1"), None, 1),
        Some(b"r1-hash"),
    );
    log.push(
        "grant-g1",
        2,
        granted("g1", "a2", Some("r2"), None, Some("r1"), 2),
        Some(b"r2-hash"),
    );
    let v = log.fold();
    let g = v.grants.get("g1").unwrap();
    assert!(g.code.as_ref().unwrap().redeemed);
    assert_eq!(g.refresh.as_ref().unwrap().token_id, "r2");
    assert!(g.access_token_active("a2", v.now));
    assert_eq!(g.revision, 2);
    assert_eq!(g.expires_at, at(2 + 3600));

    log.push(
        "grant-g1",
        3,
        RefreshTokenReuseDetected {
            grant_id: "g1".into(),
            refresh_token_id: "r1".into(),
            client_id: "c1".into(),
            revoked_token_ids: vec!["a1".into(), "a2".into(), "r2".into()],
        },
        None,
    );
    let v = log.fold();
    let g = v.grants.get("g1").unwrap();
    assert!(g.revoked);
    assert!(!g.access_token_active("a2", v.now));

    // After the family's last expiry the grant leaves memory.
    register(&mut log, "u9", "erin", 2 + 3600);
    assert!(log.fold().grants.get("g1").is_none());
}

#[test]
fn keys_activate_and_retire() {
    let mut log = Log::new();
    let jwk: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(r#"{"kty":"RSA","n":"AQAB","e":"AQAB","kid":"k1"}"#).unwrap();
    log.push(
        "keys",
        0,
        KeyGenerated {
            kid: "k1".into(),
            alg: "RS256".into(),
            public_jwk: jwk.clone(),
        },
        Some(b"sealed-private"),
    );
    log.push("keys", 0, KeyActivated { kid: "k1".into() }, None);
    log.push(
        "keys",
        5,
        KeyGenerated {
            kid: "k2".into(),
            alg: "RS256".into(),
            public_jwk: jwk,
        },
        Some(b"sealed-private-2"),
    );
    log.push("keys", 5, KeyActivated { kid: "k2".into() }, None);
    log.push(
        "keys",
        5,
        KeyRetired {
            kid: "k1".into(),
            verify_until: at(100),
        },
        None,
    );
    let v = log.fold();
    assert_eq!(v.keys.active("RS256").unwrap().kid, "k2");
    assert!(v.keys.active("ES256").is_none());
    assert_eq!(
        v.keys.get("k1").unwrap().status,
        KeyStatus::Retired {
            verify_until: at(100)
        }
    );
    assert_eq!(v.keys.revision, Some(4));
    register(&mut log, "u1", "frank", 101);
    assert!(log.fold().keys.get("k1").is_none());
}

#[test]
fn a_key_retired_twice_stays_until_its_last_verify_until() {
    let mut log = Log::new();
    let jwk: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(r#"{"kty":"OKP"}"#).unwrap();
    log.push(
        "keys",
        0,
        KeyGenerated {
            kid: "k1".into(),
            alg: "EdDSA".into(),
            public_jwk: jwk,
        },
        Some(b"p"),
    );
    log.push(
        "keys",
        1,
        KeyRetired {
            kid: "k1".into(),
            verify_until: at(10),
        },
        None,
    );
    log.push(
        "keys",
        2,
        KeyRetired {
            kid: "k1".into(),
            verify_until: at(50),
        },
        None,
    );
    register(&mut log, "u1", "ivan", 20);
    assert!(
        log.fold().keys.get("k1").is_some(),
        "the first retirement's expiry must not remove it"
    );
    register(&mut log, "u2", "judy", 51);
    assert!(log.fold().keys.get("k1").is_none());
}

#[test]
fn events_apply_once_in_order() {
    let mut log = Log::new();
    register(&mut log, "u1", "gina", 0);
    let mut v = log.fold();
    let err = v.apply(&log.events[0]).unwrap_err();
    assert!(matches!(err, crate::ProjectionError::OutOfOrder { .. }));
}

#[test]
fn snapshots_only_fit_their_log_and_version() {
    let mut log = Log::new();
    register(&mut log, "u1", "hank", 0);
    let views = log.fold();
    let snap = |log_id: &str, version: u32| Snapshot {
        log_id: log_id.into(),
        projection_version: version,
        views: views.clone(),
    };
    assert_eq!(
        snap("log-a", PROJECTION_VERSION).into_views("log-a", Some(Position::dense(0))),
        Some(views.clone())
    );
    assert_eq!(
        snap("log-b", PROJECTION_VERSION).into_views("log-a", Some(Position::dense(0))),
        None
    );
    assert_eq!(
        snap("log-a", PROJECTION_VERSION + 1).into_views("log-a", Some(Position::dense(0))),
        None
    );
    // A snapshot ahead of the log (restored from elsewhere) is ignored too.
    assert_eq!(
        snap("log-a", PROJECTION_VERSION).into_views("log-a", None),
        None
    );
}

#[test]
fn a_long_refresh_family_holds_only_its_live_tokens() {
    let mut log = Log::new();
    log.push(
        "grant-g1",
        0,
        AuthorizationCodeIssued {
            grant_id: "g1".into(),
            code_id: "k1".into(),
            client_id: "c1".into(),
            user_id: "u1".into(),
            session_id: "s1".into(),
            scopes: vec!["openid".into()],
            redirect_uri: "https://app.example/cb".into(),
            expires_at: at(60),
            resources: vec![],
        },
        None,
    );
    log.push(
        "grant-g1",
        1,
        granted("g1", "a0", Some("r0"), Some("k1"), None, 1),
        None,
    );
    // A refresh every 100 s for a day: each access token lives 60 s.
    for i in 1..=864 {
        let t = i * 100;
        let access = format!("a{i}");
        let refresh = format!("r{i}");
        let previous = format!("r{}", i - 1);
        log.push(
            "grant-g1",
            t,
            granted("g1", &access, Some(&refresh), None, Some(&previous), t),
            None,
        );
    }
    let v = log.fold();
    let g = v.grants.get("g1").unwrap();
    assert_eq!(
        g.access_tokens.len(),
        1,
        "expired access tokens are forgotten"
    );
    assert!(g.access_token_active("a864", v.now));
    assert_eq!(g.refresh.as_ref().unwrap().token_id, "r864");
    log.push(
        "grant-g1",
        86_401,
        TokenRevoked {
            grant_id: "g1".into(),
            client_id: "c1".into(),
            token_ids: vec!["a864".into(), "a1".into()],
            grant: false,
            cause: RevocationCause::RevocationEndpoint,
        },
        None,
    );
    let v = log.fold();
    let g = v.grants.get("g1").unwrap();
    assert!(!g.access_token_active("a864", v.now));
    assert!(
        g.revoked_tokens.len() <= 1,
        "revocations of tokens that no longer exist are forgotten"
    );
}
