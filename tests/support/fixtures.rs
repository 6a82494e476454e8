//! Valid sample events of every catalogue type, as a coherent story.

use authlog::store::{DynStore, Expected, NewEvent};
use authlog_schemas::data::*;
use authlog_schemas::{Actor, ActorKind, Envelope, EventType, Source, Timestamp};

pub const T0: i64 = 1_795_673_394_000;

pub fn at(ms: i64) -> Timestamp {
    Timestamp::from_unix_millis(T0 + ms)
}

pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// A small valid event for `stream` (a `user.updated`), for store tests.
pub fn simple(stream: &str) -> NewEvent {
    let env = Envelope::new(
        new_id(),
        stream.to_string(),
        at(0),
        Actor::system("test"),
        &UserUpdated {
            user_id: stream.to_string(),
            email: None,
            name: Some("n".into()),
        },
    )
    .unwrap();
    NewEvent::new(env, None).unwrap()
}

/// One step of a story: where it goes, what it expects, the event and its sidecar.
pub struct Step {
    pub stream: String,
    pub expected: Expected,
    pub envelope: Envelope,
    pub sealed: Option<Vec<u8>>,
}

impl Step {
    pub fn event(&self) -> NewEvent {
        NewEvent::new(self.envelope.clone(), self.sealed.clone()).unwrap()
    }
}

struct Story {
    key: String,
    steps: Vec<Step>,
    clock: i64,
    revisions: std::collections::HashMap<String, u64>,
}

impl Story {
    fn push<D: EventData>(
        &mut self,
        stream: String,
        data: D,
        sealed: Option<&[u8]>,
        edit: impl FnOnce(Envelope) -> Envelope,
    ) {
        self.clock += 1000;
        let actor = Actor {
            kind: ActorKind::Admin,
            id: "ops".into(),
        };
        let env = Envelope::new(new_id(), stream.clone(), at(self.clock), actor, &data)
            .unwrap()
            .request(format!("req-{}-{}", self.key, self.steps.len()));
        let env = edit(env);
        let rule = D::TYPE.stream_rule().expected;
        let last = self.revisions.get(&stream).copied();
        let expected = match rule {
            // Failures for unknown usernames are recorded whatever came before.
            _ if stream == "login-unknown" => Expected::Any,
            authlog_schemas::ExpectedRule::Any => Expected::Any,
            _ => Expected::after(last),
        };
        self.revisions
            .insert(stream.clone(), last.map_or(0, |r| r + 1));
        // A stand-in for a real sealed sidecar: opaque bytes.
        let sealed = sealed.map(|s| [b"sealed:".as_slice(), s].concat());
        self.steps.push(Step {
            stream,
            expected,
            envelope: env,
            sealed,
        });
    }
}

fn src() -> Source {
    Source {
        ip: Some("192.0.2.10".into()),
        user_agent: Some("test-agent/1.0".into()),
    }
}

/// A story that emits every catalogue type at least once. `key` makes its ids
/// unique so several stories can share one log.
pub fn story(key: &str) -> Vec<Step> {
    let mut s = Story {
        key: key.into(),
        steps: Vec::new(),
        clock: 0,
        revisions: Default::default(),
    };
    let user = format!("u-{key}");
    let client = format!("c-{key}");
    let sid = format!("s-{key}");
    let grant = format!("g-{key}");
    let cc_grant = format!("g-cc-{key}");
    let ustream = format!("user-{user}");
    let cstream = format!("client-{client}");
    let gstream = format!("grant-{grant}");
    let meta = ClientMetadata {
        client_name: "Example".into(),
        redirect_uris: vec!["https://app.example/cb".into()],
        post_logout_redirect_uris: vec![],
        grant_types: vec!["authorization_code".into(), "refresh_token".into()],
        response_types: vec!["code".into()],
        token_endpoint_auth_method: "client_secret_basic".into(),
        scope: "openid profile email".into(),
        application_type: "web".into(),
        id_token_signed_response_alg: "RS256".into(),
        skip_consent: false,
    };
    let u = |x: &str| x.to_string();

    s.push(
        format!("username-alice-{key}"),
        UserRegistered {
            user_id: user.clone(),
            username: format!("Alice-{key}"),
            email: Some("alice@example.com".into()),
            name: Some("Alice".into()),
            registered_via: RegisteredVia::Admin,
        },
        Some(b"argon2id-hash"),
        |e| e.subject(&user),
    );
    s.push(
        ustream.clone(),
        UserUpdated {
            user_id: user.clone(),
            email: None,
            name: Some("Alice A.".into()),
        },
        None,
        |e| e.subject(&user),
    );
    s.push(
        ustream.clone(),
        UserPasswordChanged {
            user_id: user.clone(),
            changed_by: ChangedBy::Admin,
        },
        Some(b"argon2id-hash-2"),
        |e| e.subject(&user),
    );
    s.push(
        ustream.clone(),
        LoginFailed {
            user_id: Some(user.clone()),
            username_hash: None,
            failed_attempts: Some(1),
        },
        None,
        |e| {
            e.subject(&user)
                .source(src())
                .failure("invalid_credentials")
        },
    );
    s.push(
        u("login-unknown"),
        LoginFailed {
            user_id: None,
            username_hash: Some(
                "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
            ),
            failed_attempts: None,
        },
        None,
        |e| e.source(src()).failure("unknown_user"),
    );
    s.push(
        ustream.clone(),
        UserLocked {
            user_id: user.clone(),
            failed_attempts: 5,
            until: Some(at(s.clock + 60_000)),
        },
        None,
        |e| e.subject(&user),
    );
    s.push(
        ustream.clone(),
        UserUnlocked {
            user_id: user.clone(),
        },
        None,
        |e| e.subject(&user),
    );
    s.push(
        cstream.clone(),
        ClientRegistered {
            client_id: client.clone(),
            metadata: meta.clone(),
            registered_via: ClientRegisteredVia::Admin,
            client_secret_expires_at: Some(0),
        },
        Some(b"secret-hash"),
        |e| e.client(&client),
    );
    s.push(
        cstream.clone(),
        ClientUpdated {
            client_id: client.clone(),
            metadata: ClientMetadata {
                client_name: "Example 2".into(),
                ..meta.clone()
            },
        },
        None,
        |e| e.client(&client),
    );
    s.push(
        cstream.clone(),
        ClientSecretRotated {
            client_id: client.clone(),
            previous_valid_until: Some(at(s.clock + 3_600_000)),
            client_secret_expires_at: 0,
        },
        Some(b"secret-hash-2"),
        |e| e.client(&client),
    );
    s.push(
        cstream.clone(),
        ClientAuthenticationFailed {
            client_id: client.clone(),
            method: "client_secret_basic".into(),
        },
        None,
        |e| e.client(&client).source(src()).failure("invalid_secret"),
    );
    s.push(
        cstream.clone(),
        AuthorizationRejected {
            client_id: client.clone(),
            description: "redirect_uri is not registered".into(),
        },
        None,
        |e| e.client(&client).failure("invalid_request"),
    );
    s.push(
        format!("session-{sid}"),
        LoginSucceeded {
            session_id: sid.clone(),
            user_id: user.clone(),
            amr: vec!["pwd".into()],
            expires_at: at(s.clock + 86_400_000),
        },
        None,
        |e| e.subject(&user).session(&sid).client(&client).source(src()),
    );
    s.push(
        ustream.clone(),
        ConsentDenied {
            user_id: user.clone(),
            client_id: client.clone(),
            scopes: vec!["email".into()],
        },
        None,
        |e| e.subject(&user).client(&client),
    );
    s.push(
        ustream.clone(),
        ConsentGranted {
            user_id: user.clone(),
            client_id: client.clone(),
            scopes: vec!["openid".into(), "profile".into()],
        },
        None,
        |e| e.subject(&user).client(&client),
    );
    s.push(
        gstream.clone(),
        AuthorizationCodeIssued {
            grant_id: grant.clone(),
            code_id: u("k1"),
            client_id: client.clone(),
            user_id: user.clone(),
            session_id: sid.clone(),
            scopes: vec!["openid".into()],
            redirect_uri: "https://app.example/cb".into(),
            expires_at: at(s.clock + 60_000),
            resources: vec![],
        },
        Some(b"code-hash+challenge"),
        |e| e.subject(&user).client(&client).session(&sid),
    );
    let t = s.clock;
    s.push(
        gstream.clone(),
        TokenGranted {
            grant_id: grant.clone(),
            grant_type: GrantType::AuthorizationCode,
            client_id: client.clone(),
            user_id: Some(user.clone()),
            scopes: vec!["openid".into()],
            access_token_id: u("a1"),
            access_token_expires_at: at(t + 600_000),
            refresh_token_id: Some(u("r1")),
            refresh_token_expires_at: Some(at(t + 86_400_000)),
            id_token: true,
            consumed_code_id: Some(u("k1")),
            consumed_refresh_token_id: None,
            audience: vec!["authlog-resources".into()],
        },
        Some(b"r1-hash"),
        |e| e.subject(&user).client(&client),
    );
    s.push(
        gstream.clone(),
        AuthorizationCodeReplayDetected {
            grant_id: grant.clone(),
            code_id: u("k1"),
            client_id: client.clone(),
            revoked_token_ids: vec![u("a1"), u("r1")],
        },
        None,
        |e| e.client(&client).failure("code_replayed"),
    );
    s.push(
        gstream.clone(),
        TokenGranted {
            grant_id: grant.clone(),
            grant_type: GrantType::RefreshToken,
            client_id: client.clone(),
            user_id: Some(user.clone()),
            scopes: vec!["openid".into()],
            access_token_id: u("a2"),
            access_token_expires_at: at(t + 700_000),
            refresh_token_id: Some(u("r2")),
            refresh_token_expires_at: Some(at(t + 86_400_000)),
            id_token: false,
            consumed_code_id: None,
            consumed_refresh_token_id: Some(u("r1")),
            audience: vec![],
        },
        Some(b"r2-hash"),
        |e| e.subject(&user).client(&client),
    );
    s.push(
        gstream.clone(),
        RefreshTokenReuseDetected {
            grant_id: grant.clone(),
            refresh_token_id: u("r1"),
            client_id: client.clone(),
            revoked_token_ids: vec![u("a2"), u("r2")],
        },
        None,
        |e| e.client(&client).failure("refresh_token_reused"),
    );
    s.push(
        gstream.clone(),
        TokenRevoked {
            grant_id: grant.clone(),
            client_id: client.clone(),
            token_ids: vec![u("a2")],
            grant: true,
            cause: RevocationCause::RevocationEndpoint,
        },
        None,
        |e| e.client(&client),
    );
    s.push(
        format!("grant-{cc_grant}"),
        TokenGranted {
            grant_id: cc_grant.clone(),
            grant_type: GrantType::ClientCredentials,
            client_id: client.clone(),
            user_id: None,
            scopes: vec!["api".into()],
            access_token_id: u("a3"),
            access_token_expires_at: at(t + 600_000),
            refresh_token_id: None,
            refresh_token_expires_at: None,
            id_token: false,
            consumed_code_id: None,
            consumed_refresh_token_id: None,
            audience: vec![],
        },
        None,
        |e| e.subject(format!("client:{client}")).client(&client),
    );
    let jwk: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(r#"{"kty":"RSA","alg":"RS256","use":"sig","n":"sXchY","e":"AQAB"}"#)
            .unwrap();
    let keys = format!("keys-{key}");
    s.push(
        keys.clone(),
        KeyGenerated {
            kid: format!("k1-{key}"),
            alg: "RS256".into(),
            public_jwk: jwk.clone(),
        },
        Some(b"pkcs8"),
        |e| e,
    );
    s.push(
        keys.clone(),
        KeyActivated {
            kid: format!("k1-{key}"),
        },
        None,
        |e| e,
    );
    s.push(
        keys.clone(),
        KeyGenerated {
            kid: format!("k2-{key}"),
            alg: "RS256".into(),
            public_jwk: jwk,
        },
        Some(b"pkcs8-2"),
        |e| e,
    );
    s.push(
        keys.clone(),
        KeyActivated {
            kid: format!("k2-{key}"),
        },
        None,
        |e| e,
    );
    s.push(
        keys.clone(),
        KeyRetired {
            kid: format!("k1-{key}"),
            verify_until: at(s.clock + 30_000),
        },
        None,
        |e| e,
    );
    s.push(
        format!("session-{sid}"),
        SessionEnded {
            session_id: sid.clone(),
            user_id: user.clone(),
            cause: SessionEndCause::Logout,
        },
        None,
        |e| e.subject(&user).session(&sid),
    );
    s.push(
        ustream.clone(),
        UserDisabled {
            user_id: user.clone(),
        },
        None,
        |e| e.subject(&user),
    );
    s.push(
        ustream.clone(),
        UserEnabled {
            user_id: user.clone(),
        },
        None,
        |e| e.subject(&user),
    );
    s.push(
        u("audit-access"),
        AuditAccessed {
            token_name: "auditor".into(),
            endpoint: "/admin/audit/events".into(),
            filter: serde_json::from_str(r#"{"subject":"u1"}"#).unwrap(),
            result_count: 12,
        },
        None,
        |e| e,
    );
    s.push(
        format!("audit-checkpoints-{key}"),
        AuditCheckpoint {
            tree_size: 30,
            root_hash: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
            signature: "c2lnbmF0dXJl".into(),
            key_id: "audit-1".into(),
        },
        None,
        |e| e,
    );
    s.push(
        u("security"),
        SecurityThrottled {
            ip: "192.0.2.10".into(),
            reason: "invalid_client".into(),
            client_id: None,
            count: 50,
            window_start: at(0),
            window_end: at(60_000),
        },
        None,
        |e| e.source(src()),
    );
    s.push(
        cstream.clone(),
        ClientApproved {
            client_id: client.clone(),
        },
        None,
        |e| e.client(&client),
    );
    s.push(
        ustream.clone(),
        ConsentRevoked {
            user_id: user.clone(),
            client_id: client.clone(),
            scopes: vec!["openid".into(), "profile".into()],
        },
        None,
        |e| e.subject(&user).client(&client),
    );
    s.push(
        cstream.clone(),
        ClientDeleted {
            client_id: client.clone(),
        },
        None,
        |e| e.client(&client),
    );
    let rs = format!("https://api-{key}.example");
    let rstream = format!("resource-server-{rs}");
    let scope = |name: &str, machine: bool| ScopeDefinition {
        name: name.into(),
        description: format!("use {name}"),
        consent: !machine,
        machine,
        registrable: false,
    };
    s.push(
        rstream.clone(),
        ResourceServerRegistered {
            identifier: rs.clone(),
            name: "Reports API".into(),
            scopes: vec![scope(&format!("reports-{key}:read"), false)],
        },
        None,
        |e| e,
    );
    s.push(
        rstream.clone(),
        ResourceServerUpdated {
            identifier: rs.clone(),
            name: "Reports API".into(),
            scopes: vec![
                scope(&format!("reports-{key}:read"), false),
                scope(&format!("reports-{key}:sync"), true),
            ],
        },
        None,
        |e| e,
    );
    s.push(
        rstream,
        ResourceServerDeleted { identifier: rs },
        None,
        |e| e,
    );
    s.steps
}

/// Every type the story emits.
pub fn story_types() -> std::collections::BTreeSet<EventType> {
    story("x").iter().map(|s| s.envelope.event_type).collect()
}

/// Appends a story step by step with its expected revisions; returns the last position.
pub async fn append_story(store: &DynStore, key: &str) -> authlog_schemas::Position {
    let mut last = None;
    for step in story(key) {
        let r = store
            .append(&step.stream, step.expected, vec![step.event()])
            .await
            .unwrap();
        last = r.last_position();
    }
    last.unwrap()
}
