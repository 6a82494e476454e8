//! The shell of the OIDC flows: reads views and streams, calls the pure
//! deciders, seals secrets, appends with the right expectation (retrying a
//! decision on conflict), and waits for the views to include its own writes.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use authlog_projections::{Client, Session, User, normalize_username};
use authlog_schemas::data::{self, EventData};
use authlog_schemas::{Actor, ActorKind, Envelope, Position, Source, Timestamp};
use serde::Serialize;

use crate::crypto::{self, Passwords, b64url, ct_eq};
use crate::http::{ApiError, AppState};
use crate::oidc::grant::{
    self, CodeSecret, Decision, GrantError, GrantEvent, GrantState, RefreshSecret,
};
use crate::oidc::request::AuthRequest;
use crate::oidc::runtime::{Budget, EventBudget, InFlight, Transactions};
use crate::oidc::scopes;
use crate::oidc::throttle::{Policy, Throttle, address_key};
use crate::oidc::tokens::{self, AccessClaims, IdClaims};
use crate::store::{Appended, Expected, NewEvent, StoreError, read_whole_stream};

/// The throttles of unauthenticated callers, one per kind of key.
pub struct Throttles {
    /// (account, address): a guesser at one account from one place.
    pub pair: Throttle,
    /// An account, from anywhere (unknown usernames too, so throttling says
    /// nothing about which accounts exist).
    pub account: Throttle,
    /// A bare address (IPv6 by /64): loose, since an office behind NAT shares it.
    pub address: Throttle,
    /// Self-registration and open dynamic client registration, per address.
    pub registration: Throttle,
    /// Wrong admin, auditor, initial-access and registration-access tokens, per address.
    pub tokens: Throttle,
}

/// A few free registrations per address, then waits doubling from a second.
const REGISTRATION: Policy = Policy {
    free: 3.0,
    base: Duration::from_secs(1),
    max: Duration::from_secs(300),
    half_life: Duration::from_secs(30 * 60),
};

/// Bearer tokens are 128 bits or more: ten wrong ones from one address are
/// typos, more is guessing.
const TOKEN_GUESSES: Policy = Policy {
    free: 10.0,
    base: Duration::from_secs(1),
    max: Duration::from_secs(60),
    half_life: Duration::from_secs(10 * 60),
};

impl Throttles {
    fn new() -> Throttles {
        Throttles {
            pair: Throttle::new(Policy::HARD, 100_000),
            account: Throttle::new(Policy::HARD, 100_000),
            address: Throttle::new(Policy::LOOSE, 100_000),
            registration: Throttle::new(REGISTRATION, 100_000),
            tokens: Throttle::new(TOKEN_GUESSES, 100_000),
        }
    }
}

/// The provider's in-memory helpers.
pub struct Oidc {
    pub passwords: Passwords,
    /// JWT signing (RSA is the slow one) off the executor, bounded like hashing.
    pub signer: crypto::BoundedPool,
    pub transactions: Transactions,
    pub throttles: Throttles,
    /// Password verifications in flight per account.
    pub in_flight: InFlight,
    pub budget: EventBudget,
    username_key: [u8; 32],
    /// Keys the CSRF token of forms shown without a transaction (a direct
    /// visit to the login or registration page) to the browser binding.
    form_key: [u8; 32],
    signing: Mutex<std::collections::HashMap<String, jsonwebtoken::EncodingKey>>,
}

impl Oidc {
    pub fn new(
        config: &crate::config::Config,
        kek: &crate::seal::Kek,
    ) -> Result<Oidc, crypto::CryptoError> {
        Ok(Oidc {
            passwords: Passwords::new(config.login.hash_workers, config.login.hash_queue)?,
            signer: crypto::BoundedPool::new(2, 256),
            transactions: Transactions::default(),
            throttles: Throttles::new(),
            in_flight: InFlight::default(),
            budget: EventBudget::new(20, Duration::from_secs(60)),
            username_key: kek.derive("authlog username hash v1"),
            form_key: kek.derive("authlog form csrf v1"),
            signing: Mutex::new(Default::default()),
        })
    }

    /// The CSRF token of a form `purpose` shown without a server-side
    /// transaction: an HMAC of the browser binding, so the form is good in
    /// that browser only and nothing is stored for an anonymous visit.
    pub fn form_csrf(&self, purpose: &str, browser: &str) -> String {
        crypto::b64url(&crate::seal::hmac_sha256(
            &self.form_key,
            format!("{purpose}\n{browser}").as_bytes(),
        ))
    }

    /// Whether `csrf` is the token of form `purpose` for this browser.
    pub fn check_form_csrf(&self, purpose: &str, browser: &str, csrf: &str) -> bool {
        ct_eq(self.form_csrf(purpose, browser).as_bytes(), csrf.as_bytes())
    }

    /// The keyed hash stored for an unknown username (never the name itself).
    pub fn username_hash(&self, username: &str) -> String {
        hex::encode(crate::seal::hmac_sha256(
            &self.username_key,
            username.as_bytes(),
        ))
    }
}

/// Who is asking, for the envelope.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub request_id: String,
    pub ip: IpAddr,
    pub user_agent: Option<String>,
    /// The browser binding cookie's value (new when `browser_fresh`).
    pub browser: String,
    pub browser_fresh: bool,
}

impl Ctx {
    pub fn source(&self) -> Source {
        Source {
            ip: Some(self.ip.to_string()),
            user_agent: self
                .user_agent
                .as_ref()
                .map(|u| u.chars().take(512).collect()),
        }
    }
}

pub fn now() -> Timestamp {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    Timestamp::from_unix_millis(ms)
}

pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// An event about to be sealed and appended.
pub struct Draft {
    pub envelope: Envelope,
    /// Plaintext of the sidecar; sealed under the KEK before the append.
    pub secret: Option<Vec<u8>>,
}

pub fn draft<D: EventData>(
    stream: &str,
    actor: Actor,
    data: &D,
    ctx: Option<&Ctx>,
) -> Result<Envelope, ApiError> {
    let mut env = Envelope::new(new_id(), stream.to_string(), now(), actor, data)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    if let Some(ctx) = ctx {
        env = env.source(ctx.source()).request(ctx.request_id.clone());
    }
    Ok(env)
}

fn secret_json<T: Serialize>(value: &T) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(value).map_err(|e| ApiError::Internal(e.to_string()))
}

/// Seals, appends, and waits until the views include the append.
pub async fn commit(
    state: &AppState,
    stream: &str,
    expected: Expected,
    drafts: Vec<Draft>,
) -> Result<Appended, StoreError> {
    let mut events = Vec::with_capacity(drafts.len());
    for d in drafts {
        let sealed = match d.secret {
            Some(s) => Some(
                state
                    .kek
                    .seal(&s)
                    .map_err(|e| StoreError::InvalidEvent(e.to_string()))?,
            ),
            None => None,
        };
        events.push(NewEvent::new(d.envelope, sealed)?);
    }
    let appended = state.store.append(stream, expected, events).await?;
    if let Some(p) = appended.last_position() {
        wait_views(state, p).await;
    }
    Ok(appended)
}

pub async fn wait_views(state: &AppState, position: Position) {
    let timeout = Duration::from_millis(state.config.views.wait_ms);
    if let Err(e) = state.views.wait_for(position, timeout).await {
        tracing::warn!(error = %e, "views behind the log");
    }
}

/// Looks `f` up in the views. On a log shared by several nodes a miss may only
/// mean that this node has not yet applied what another node committed (a
/// client registered on node B, used at once on node A): the views catch up
/// to the log's head, bounded by `views.wait_ms`, and `f` looks again. One
/// mechanism for every view, and each node's views stay one consistent prefix
/// of the log rather than a mix of a view and a stream read.
pub async fn view_lookup<T>(
    state: &AppState,
    f: impl Fn(&authlog_projections::Views) -> Option<T>,
) -> Option<T> {
    if let Some(found) = f(&*state.views.read().await) {
        return Some(found);
    }
    if !state.store.is_shared() {
        return None;
    }
    catch_up_views(state).await;
    f(&*state.views.read().await)
}

/// Waits (bounded) until the views have applied everything committed so far,
/// by any node. On a store only this process writes, the views already have
/// every committed event when an append returns: nothing to wait for.
pub async fn catch_up_views(state: &AppState) {
    if !state.store.is_shared() {
        return;
    }
    match state.store.head().await {
        Ok(Some(head)) => wait_views(state, head.position).await,
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "reading the log head"),
    }
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::Internal(e.to_string())
}

// ---- failures from callers not yet identified ----------------------------------------

/// Records a failure attributable to a registered client, within the budget
/// for (ip, reason, client); beyond it, one `security.throttled` per window.
pub async fn record_failure(
    state: &AppState,
    ctx: &Ctx,
    reason: &str,
    client_id: &str,
    draft_fn: impl FnOnce() -> Result<(String, Envelope), ApiError>,
) {
    state
        .metrics
        .http_requests
        .with_label_values(&["failure", reason])
        .inc();
    let outcome = match state.oidc.budget.spend(ctx.ip, reason, client_id) {
        Budget::Event => match draft_fn() {
            Ok((stream, env)) => commit(
                state,
                &stream,
                Expected::Any,
                vec![Draft {
                    envelope: env,
                    secret: None,
                }],
            )
            .await
            .map(|_| ()),
            Err(e) => Err(StoreError::InvalidEvent(e.to_string())),
        },
        Budget::Throttled {
            count,
            window_start,
        } => {
            let started = now().plus_millis(-(window_start.elapsed().as_millis() as i64));
            let data = data::SecurityThrottled {
                ip: ctx.ip.to_string(),
                reason: reason.to_string(),
                client_id: Some(client_id.to_string()),
                count,
                window_start: started,
                window_end: started.plus_seconds(60),
            };
            match draft("security", Actor::system("throttle"), &data, Some(ctx)) {
                Ok(env) => commit(
                    state,
                    "security",
                    Expected::Any,
                    vec![Draft {
                        envelope: env,
                        secret: None,
                    }],
                )
                .await
                .map(|_| ()),
                Err(e) => Err(StoreError::InvalidEvent(e.to_string())),
            }
        }
        Budget::MetricsOnly => Ok(()),
    };
    if let Err(e) = outcome {
        tracing::error!(error = %e, "recording a failure event");
    }
}

pub async fn reject_authorization(
    state: &AppState,
    ctx: &Ctx,
    client_id: &str,
    error: &str,
    description: &str,
) {
    let client = client_id.to_string();
    let error_s = error.to_string();
    // Descriptions may quote what the caller sent: bounded before they are stored.
    let d: String = description.chars().take(200).collect();
    record_failure(state, ctx, error, client_id, move || {
        let data = data::AuthorizationRejected {
            client_id: client.clone(),
            description: d,
        };
        let env = draft(
            &format!("client-{client}"),
            Actor {
                kind: ActorKind::Client,
                id: client.clone(),
            },
            &data,
            Some(ctx),
        )?
        .client(client.clone())
        .failure(error_s);
        Ok((format!("client-{client}"), env))
    })
    .await;
}

// ---- sessions ------------------------------------------------------------------------

pub const SESSION_COOKIE: &str = "authlog_session";

#[derive(Serialize, serde::Deserialize)]
struct SessionSecret {
    secret_sha256: String,
}

/// The cookie name: `__Host-` prefixed on https issuers.
pub fn cookie_name(state: &AppState) -> String {
    if state.config.issuer.starts_with("https://") {
        format!("__Host-{SESSION_COOKIE}")
    } else {
        SESSION_COOKIE.to_string()
    }
}

pub fn session_cookie(state: &AppState, value: &str, max_age: i64) -> String {
    let secure = if state.config.issuer.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    format!(
        "{}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}",
        cookie_name(state)
    )
}

/// The live session the cookie names, if its secret matches. The cookie carries
/// the position the session was created at: a node whose views are behind waits
/// (bounded) for it before deciding the session is unknown.
pub async fn current_session(
    state: &AppState,
    cookie: Option<&str>,
) -> Result<Option<Session>, ViewsBehind> {
    Ok(match session_of(state, cookie).await {
        Lookup::Found(s) => Some(s),
        Lookup::None => None,
        Lookup::Behind => return Err(ViewsBehind),
    })
}

/// This node's views did not reach the position a session cookie names
/// within `views.wait_ms`: the request is answered 503, not taken for a
/// signed-out one.
#[derive(Debug, Clone, Copy)]
pub struct ViewsBehind;

enum Lookup {
    Found(Session),
    None,
    Behind,
}

async fn session_of(state: &AppState, cookie: Option<&str>) -> Lookup {
    let Some(cookie) = cookie else {
        return Lookup::None;
    };
    let mut parts = cookie.splitn(3, '.');
    let (Some(sid), Some(secret)) = (parts.next(), parts.next()) else {
        return Lookup::None;
    };
    let position: Option<Position> = parts.next().and_then(|p| p.parse().ok());
    if let Some(p) = position {
        // Only a position the log has reached is worth waiting for: a forged
        // one must not hold the request for the whole wait.
        let head = match state.store.head().await {
            Ok(Some(head)) => head,
            Ok(None) => return Lookup::None,
            // The store cannot say where the log is: not "signed out".
            Err(e) => {
                tracing::warn!(error = %e, "reading the log head for a session");
                return Lookup::Behind;
            }
        };
        if p > head.position {
            return Lookup::None;
        }
        let timeout = Duration::from_millis(state.config.views.wait_ms);
        if let Err(crate::views::WaitError::Timeout(_)) = state.views.wait_for(p, timeout).await {
            tracing::warn!(position = %p, "views behind the session's position");
            return Lookup::Behind;
        }
    }
    match check_session(state, sid, secret).await {
        Some(s) => Lookup::Found(s),
        None => Lookup::None,
    }
}

async fn check_session(state: &AppState, sid: &str, secret: &str) -> Option<Session> {
    let views = state.views.read().await;
    let session = views.sessions.get(sid, now())?.clone();
    drop(views);
    let sealed = session.sealed.as_ref()?;
    let opened = state.kek.open(sealed).ok()?;
    let s: SessionSecret = serde_json::from_slice(&opened).ok()?;
    ct_eq(
        grant::hex_sha256(secret).as_bytes(),
        s.secret_sha256.as_bytes(),
    )
    .then_some(session)
}

// ---- users -------------------------------------------------------------------------

/// A username prepared for storage and comparison ([`crate::oidc::username`]).
pub fn prepare_username(input: &str) -> Result<String, &'static str> {
    crate::oidc::username::prepare(input)
}

#[derive(Serialize, serde::Deserialize)]
struct PasswordSecret {
    password: String,
}

pub fn check_password_rules(password: &str) -> Result<(), &'static str> {
    let n = password.chars().count();
    if n < 8 {
        return Err("passwords are at least 8 characters");
    }
    if n > 256 {
        return Err("passwords are at most 256 characters");
    }
    Ok(())
}

pub enum RegisterError {
    Taken,
    Invalid(&'static str),
    Busy,
    Internal(String),
}

/// Registers a user: `user.registered` on `username-{normalized}` with NoStream,
/// so the first claim wins across nodes.
pub async fn register_user(
    state: &AppState,
    actor: Actor,
    via: data::RegisteredVia,
    username: &str,
    password: String,
    email: Option<String>,
    name: Option<String>,
    ctx: Option<&Ctx>,
) -> Result<String, RegisterError> {
    let username = prepare_username(username).map_err(RegisterError::Invalid)?;
    check_password_rules(&password).map_err(RegisterError::Invalid)?;
    if let Some(e) = &email
        && (e.len() > 254 || !e.contains('@') || e.chars().any(char::is_whitespace))
    {
        return Err(RegisterError::Invalid("email is not an address"));
    }
    if name.as_ref().is_some_and(|n| n.chars().count() > 128) {
        return Err(RegisterError::Invalid("name is at most 128 characters"));
    }
    if state
        .views
        .read()
        .await
        .users
        .by_username(&username)
        .is_some()
    {
        return Err(RegisterError::Taken);
    }
    let phc = match state.oidc.passwords.hash(password).await {
        Ok(h) => h,
        Err(crypto::CryptoError::Busy) => return Err(RegisterError::Busy),
        Err(e) => return Err(RegisterError::Internal(e.to_string())),
    };
    let user_id = new_id();
    let data = data::UserRegistered {
        user_id: user_id.clone(),
        username: username.clone(),
        email,
        name,
        registered_via: via,
    };
    let stream = format!("username-{}", normalize_username(&username));
    let env = draft(&stream, actor, &data, ctx)
        .map_err(|e| RegisterError::Internal(e.to_string()))?
        .subject(user_id.clone());
    let secret = secret_json(&PasswordSecret { password: phc })
        .map_err(|e| RegisterError::Internal(e.to_string()))?;
    match commit(
        state,
        &stream,
        Expected::NoStream,
        vec![Draft {
            envelope: env,
            secret: Some(secret),
        }],
    )
    .await
    {
        Ok(_) => Ok(user_id),
        Err(StoreError::Conflict { .. }) => Err(RegisterError::Taken),
        Err(e) => Err(RegisterError::Internal(e.to_string())),
    }
}

/// Appends events about a user on `user-{id}`, deciding again on conflict.
pub async fn change_user(
    state: &AppState,
    user_id: &str,
    mut decide: impl FnMut(&User) -> Result<Vec<Draft>, ApiError>,
) -> Result<Option<Appended>, ApiError> {
    let stream = format!("user-{user_id}");
    for _ in 0..4 {
        let Some(user) = view_lookup(state, |v| v.users.get(user_id).cloned()).await else {
            return Err(ApiError::NotFound);
        };
        let expected = Expected::after(user.revision);
        let drafts = decide(&user)?;
        if drafts.is_empty() {
            return Ok(None);
        }
        match commit(state, &stream, expected, drafts).await {
            Ok(a) => return Ok(Some(a)),
            Err(StoreError::Conflict { .. }) => {
                // The view was behind the stream: let it catch up and decide again.
                if let Ok(Some(h)) = state.store.head().await {
                    wait_views(state, h.position).await;
                }
            }
            Err(e) => return Err(internal(e)),
        }
    }
    Err(ApiError::Unavailable(
        "the user is changing too fast; try again".into(),
    ))
}

pub fn user_password(state: &AppState, user: &User) -> Option<String> {
    let sealed = user.password.as_ref()?;
    let opened = state.kek.open(sealed).ok()?;
    serde_json::from_slice::<PasswordSecret>(&opened)
        .ok()
        .map(|p| p.password)
}

pub fn password_secret(phc: String) -> Result<Vec<u8>, ApiError> {
    secret_json(&PasswordSecret { password: phc })
}

/// The outcome of a sign-in attempt. Every failure looks the same to someone
/// without the password; with the right one, a locked or disabled account
/// says so.
pub enum LoginOutcome {
    Success {
        session_id: String,
        cookie: String,
    },
    Failed,
    /// The password was right, but the account is locked until then (None:
    /// until an administrator unlocks it).
    Locked(Option<Timestamp>),
    /// The password was right, but the account is disabled.
    Disabled,
    Throttled(Duration),
    Busy,
}

/// The throttle keys of one attempt.
struct LoginKeys {
    pair: String,
    account: String,
    address: String,
}

/// How many more password checks an account may have in flight. A lock stops
/// checks from counting, not from happening: during a lock the password is
/// still verified (so its owner can be told the account is locked), at most
/// `max_failures` more times per lock; beyond that, attempts are refused
/// unverified until the lock lifts. So a guesser gets at most
/// `2 × max_failures` verified guesses per lock window, and the first
/// `max_failures` of them are exactly what locks the account.
pub fn verification_budget(user: &User, max_failures: u32, t: Timestamp) -> usize {
    // A lock that has run out leaves no count behind (the next failure
    // starts again from one).
    if matches!(user.locked, Some(Some(until)) if until <= t) {
        return max_failures as usize;
    }
    let limit = if user.is_locked(t) {
        2 * max_failures
    } else {
        max_failures
    };
    limit.saturating_sub(user.failed_attempts) as usize
}

/// Checks a username and password and records the outcome.
pub async fn login(
    state: &AppState,
    ctx: &Ctx,
    username: &str,
    password: String,
    client_id: Option<&str>,
) -> Result<LoginOutcome, ApiError> {
    let prepared = prepare_username(username).unwrap_or_else(|_| username.trim().to_string());
    let account = normalize_username(&prepared);
    let address = address_key(ctx.ip);
    let keys = LoginKeys {
        pair: format!("{account}|{address}"),
        account: account.clone(),
        address,
    };
    let th = &state.oidc.throttles;
    // Throttling comes before any event is decided: the account and the
    // (account, address) pair hard, the bare address loosely.
    let waits = [
        th.pair.wait(&keys.pair),
        th.account.wait(&keys.account),
        th.address.wait(&keys.address),
    ];
    if let Some(wait) = waits.into_iter().flatten().max() {
        return Ok(LoginOutcome::Throttled(wait));
    }
    let user = view_lookup(state, |v| v.users.by_username(&prepared).cloned()).await;
    let max = state.config.login.max_failures;
    // At most the account's remaining budget of checks at once: a burst of
    // parallel guesses cannot all be verified against the state read before
    // the first of them was counted.
    let _in_flight = match &user {
        Some(u) => {
            let budget = verification_budget(u, max, now());
            match state.oidc.in_flight.admit(&u.id, budget) {
                Some(g) => Some(g),
                None => return Ok(LoginOutcome::Throttled(Duration::from_secs(1))),
            }
        }
        None => None,
    };
    // Count the attempt before the slow check, so parallel guesses meet the
    // delay too; a success takes it back.
    th.pair.fail(&keys.pair);
    th.account.fail(&keys.account);
    th.address.fail(&keys.address);
    let phc = user.as_ref().and_then(|u| user_password(state, u));
    // Unknown users, disabled and locked accounts cost what a wrong password costs.
    let verified = match state.oidc.passwords.verify(password, phc).await {
        Ok(v) => v,
        Err(crypto::CryptoError::Busy) => return Ok(LoginOutcome::Busy),
        Err(e) => return Err(internal(e)),
    };
    let Some(user) = user else {
        let hash = state.oidc.username_hash(&account);
        let client = client_id.unwrap_or("-").to_string();
        record_failure(state, ctx, "unknown_user", &client, || {
            let data = data::LoginFailed {
                user_id: None,
                username_hash: Some(hash),
                failed_attempts: None,
            };
            let mut env = draft("login-unknown", Actor::system("login"), &data, Some(ctx))?
                .failure("unknown_user");
            if let Some(c) = client_id {
                env = env.client(c);
            }
            Ok(("login-unknown".to_string(), env))
        })
        .await;
        return Ok(LoginOutcome::Failed);
    };
    // Decide on the account as it is now, after the hash: a lock or a
    // disabling that landed while the password was being checked counts.
    let lock_s = state.config.login.lock_s;
    let client = client_id.map(str::to_string);
    let mut refused: Option<LoginOutcome> = None;
    let mut succeeded: Option<User> = None;
    change_user(state, &user.id, |u| {
        let t = now();
        let reason = if !u.enabled {
            Some("user_disabled")
        } else if u.is_locked(t) {
            Some("user_locked")
        } else if !verified {
            Some("invalid_credentials")
        } else {
            None
        };
        let Some(reason) = reason else {
            refused = None;
            succeeded = Some(u.clone());
            return Ok(vec![]);
        };
        succeeded = None;
        refused = Some(match (reason, verified) {
            ("user_disabled", true) => LoginOutcome::Disabled,
            ("user_locked", true) => LoginOutcome::Locked(u.locked.unwrap_or_default()),
            _ => LoginOutcome::Failed,
        });
        // A lock that has run out leaves no count behind.
        let expired_lock = matches!(u.locked, Some(Some(until)) if until <= t);
        let attempts = if expired_lock {
            1
        } else {
            u.failed_attempts.saturating_add(1)
        };
        let data = data::LoginFailed {
            user_id: Some(u.id.clone()),
            username_hash: None,
            failed_attempts: Some(attempts),
        };
        let mut env = draft(
            &format!("user-{}", u.id),
            Actor {
                kind: ActorKind::User,
                id: u.id.clone(),
            },
            &data,
            Some(ctx),
        )?
        .subject(u.id.clone())
        .failure(reason);
        if let Some(c) = &client {
            env = env.client(c.clone());
        }
        let mut drafts = vec![Draft {
            envelope: env,
            secret: None,
        }];
        if reason == "invalid_credentials" && attempts >= max && !u.is_locked(t) {
            let lock = data::UserLocked {
                user_id: u.id.clone(),
                failed_attempts: attempts,
                until: Some(t.plus_seconds(lock_s)),
            };
            let env = draft(
                &format!("user-{}", u.id),
                Actor::system("lockout"),
                &lock,
                Some(ctx),
            )?
            .subject(u.id.clone());
            drafts.push(Draft {
                envelope: env,
                secret: None,
            });
        }
        Ok(drafts)
    })
    .await?;
    if let Some(outcome) = refused {
        return Ok(outcome);
    }
    let Some(user) = succeeded else {
        return Ok(LoginOutcome::Failed);
    };
    th.pair.forgive(&keys.pair);
    th.account.forgive(&keys.account);
    th.address.undo(&keys.address);
    // A new session id at every sign-in: no fixation.
    let t = now();
    let sid = new_id();
    let secret = crypto::secret_token().map_err(internal)?;
    let ttl = state.config.tokens.session_ttl_s;
    let data = data::LoginSucceeded {
        session_id: sid.clone(),
        user_id: user.id.clone(),
        amr: vec!["pwd".into()],
        expires_at: t.plus_seconds(ttl),
    };
    let stream = format!("session-{sid}");
    let mut env = draft(
        &stream,
        Actor {
            kind: ActorKind::User,
            id: user.id.clone(),
        },
        &data,
        Some(ctx),
    )?
    .subject(user.id.clone())
    .session(sid.clone());
    if let Some(c) = client_id {
        env = env.client(c);
    }
    let sealed = secret_json(&SessionSecret {
        secret_sha256: grant::hex_sha256(&secret),
    })?;
    let appended = commit(
        state,
        &stream,
        Expected::NoStream,
        vec![Draft {
            envelope: env,
            secret: Some(sealed),
        }],
    )
    .await
    .map_err(internal)?;
    let position = appended
        .last_position()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let cookie = session_cookie(state, &format!("{sid}.{secret}.{position}"), ttl);
    Ok(LoginOutcome::Success {
        session_id: sid,
        cookie,
    })
}

// ---- consent and codes ---------------------------------------------------------------

/// Whether the user must be asked: `prompt=consent`, `offline_access` (always real
/// consent, Core §11), or scopes not yet consented to, unless an administrator
/// marked the client `skip_consent`.
pub fn needs_consent(req: &AuthRequest, client: &Client, user: &User) -> bool {
    if req.prompt.contains("consent") || req.scopes.iter().any(|s| s == "offline_access") {
        return true;
    }
    if client.metadata.skip_consent {
        return false;
    }
    let granted: BTreeSet<&String> = user
        .consents
        .get(&client.client_id)
        .map(|s| s.iter().collect())
        .unwrap_or_default();
    !req.scopes.iter().all(|s| granted.contains(s))
}

pub async fn record_consent(
    state: &AppState,
    ctx: &Ctx,
    user_id: &str,
    req: &AuthRequest,
    allow: bool,
) -> Result<(), ApiError> {
    let stream = format!("user-{user_id}");
    let actor = Actor {
        kind: ActorKind::User,
        id: user_id.to_string(),
    };
    let env = if allow {
        let d = data::ConsentGranted {
            user_id: user_id.into(),
            client_id: req.client_id.clone(),
            scopes: req.scopes.clone(),
        };
        draft(&stream, actor, &d, Some(ctx))?
    } else {
        let d = data::ConsentDenied {
            user_id: user_id.into(),
            client_id: req.client_id.clone(),
            scopes: req.scopes.clone(),
        };
        draft(&stream, actor, &d, Some(ctx))?
    }
    .subject(user_id.to_string())
    .client(req.client_id.clone());
    commit(
        state,
        &stream,
        Expected::Any,
        vec![Draft {
            envelope: env,
            secret: None,
        }],
    )
    .await
    .map_err(internal)?;
    Ok(())
}

/// Issues an authorization code: a new grant stream, claimed with NoStream.
pub async fn issue_code(
    state: &AppState,
    ctx: &Ctx,
    req: &AuthRequest,
    session: &Session,
) -> Result<String, ApiError> {
    let grant_id = new_id();
    let code = format!("{grant_id}.{}", crypto::secret_token().map_err(internal)?);
    let data = data::AuthorizationCodeIssued {
        grant_id: grant_id.clone(),
        code_id: new_id(),
        client_id: req.client_id.clone(),
        user_id: session.user_id.clone(),
        session_id: session.id.clone(),
        scopes: req.scopes.clone(),
        redirect_uri: req.redirect_uri.clone(),
        expires_at: now().plus_seconds(state.config.tokens.code_ttl_s),
        resources: req.resources.clone(),
    };
    let stream = format!("grant-{grant_id}");
    let env = draft(
        &stream,
        Actor {
            kind: ActorKind::User,
            id: session.user_id.clone(),
        },
        &data,
        Some(ctx),
    )?
    .subject(session.user_id.clone())
    .client(req.client_id.clone())
    .session(session.id.clone());
    let secret = secret_json(&CodeSecret {
        code_sha256: grant::hex_sha256(&code),
        code_challenge: req.code_challenge.clone(),
        nonce: req.nonce.clone(),
        auth_time_ms: session.auth_time.unix_millis(),
    })?;
    commit(
        state,
        &stream,
        Expected::NoStream,
        vec![Draft {
            envelope: env,
            secret: Some(secret),
        }],
    )
    .await
    .map_err(internal)?;
    Ok(code)
}

// ---- keys ----------------------------------------------------------------------------

/// Makes sure an active signing key exists for `alg`: `key.generated` and
/// `key.activated` on `keys`, the first with NoStream so one node wins.
pub async fn ensure_signing_key(state: &AppState, alg: &str) -> Result<(), ApiError> {
    for _ in 0..4 {
        let revision = {
            let views = state.views.read().await;
            if views.keys.active(alg).is_some() {
                return Ok(());
            }
            views.keys.revision
        };
        let kid = new_id();
        let alg_owned = alg.to_string();
        let kid_owned = kid.clone();
        let key = tokio::task::spawn_blocking(move || crypto::generate_key(&alg_owned, &kid_owned))
            .await
            .map_err(internal)?
            .map_err(internal)?;
        let generated = data::KeyGenerated {
            kid: kid.clone(),
            alg: alg.to_string(),
            public_jwk: key.public_jwk,
        };
        let activated = data::KeyActivated { kid: kid.clone() };
        let drafts = vec![
            Draft {
                envelope: draft("keys", Actor::system("keys"), &generated, None)?,
                secret: Some(key.private_der),
            },
            Draft {
                envelope: draft("keys", Actor::system("keys"), &activated, None)?,
                secret: None,
            },
        ];
        match commit(state, "keys", Expected::after(revision), drafts).await {
            Ok(_) => {
                tracing::info!(kid = %kid, alg, "signing key generated and activated");
                return Ok(());
            }
            Err(StoreError::Conflict { .. }) => {
                if let Ok(Some(h)) = state.store.head().await {
                    wait_views(state, h.position).await;
                }
            }
            Err(e) => return Err(internal(e)),
        }
    }
    Err(ApiError::Internal("could not create a signing key".into()))
}

/// Signs `claims` with the active key for `alg` (on the blocking pool).
pub async fn sign<T: Serialize + Send + 'static>(
    state: &AppState,
    alg: &str,
    typ: &str,
    claims: T,
) -> Result<String, ApiError> {
    let (kid, sealed) = {
        let views = state.views.read().await;
        let key = views
            .keys
            .active(alg)
            .ok_or_else(|| ApiError::Internal(format!("no active {alg} key")))?;
        (key.kid.clone(), key.private_key.clone())
    };
    let cached = state
        .oidc
        .signing
        .lock()
        .ok()
        .and_then(|m| m.get(&kid).cloned());
    let key = match cached {
        Some(k) => k,
        None => {
            let der = state
                .kek
                .open(sealed.as_deref().unwrap_or_default())
                .map_err(internal)?;
            let k = crypto::encoding_key(alg, &der).map_err(internal)?;
            if let Ok(mut m) = state.oidc.signing.lock() {
                m.insert(kid.clone(), k.clone());
            }
            k
        }
    };
    let mut header = jsonwebtoken::Header::new(crypto::jwt_algorithm(alg).map_err(internal)?);
    header.kid = Some(kid);
    header.typ = Some(typ.to_string());
    match state
        .oidc
        .signer
        .run(move || jsonwebtoken::encode(&header, &claims, &key))
        .await
    {
        Ok(signed) => signed.map_err(internal),
        Err(crypto::CryptoError::Busy) => {
            Err(ApiError::Unavailable("signing is busy; try again".into()))
        }
        Err(e) => Err(internal(e)),
    }
}

/// Verifies a JWT signed by one of our published keys; `validate_exp` false
/// accepts expired tokens (logout hints).
pub async fn verify<T: serde::de::DeserializeOwned>(
    state: &AppState,
    token: &str,
    typ: Option<&str>,
    audience: Option<&str>,
    validate_exp: bool,
) -> Option<T> {
    let header = jsonwebtoken::decode_header(token).ok()?;
    if let Some(t) = typ
        && header.typ.as_deref().map(str::to_ascii_lowercase) != Some(t.to_ascii_lowercase())
    {
        return None;
    }
    let kid = header.kid?;
    let (alg, jwk) = {
        let views = state.views.read().await;
        let k = views.keys.get(&kid)?;
        (k.alg.clone(), k.public_jwk.clone())
    };
    let algorithm = crypto::jwt_algorithm(&alg).ok()?;
    if header.alg != algorithm {
        return None;
    }
    let key = crypto::decoding_key(&jwk).ok()?;
    let mut v = jsonwebtoken::Validation::new(algorithm);
    v.set_issuer(&[state.config.issuer.as_str()]);
    v.leeway = state.config.tokens.leeway_s as u64;
    v.validate_exp = validate_exp;
    v.required_spec_claims.clear();
    match audience {
        Some(a) => v.set_audience(&[a]),
        None => v.validate_aud = false,
    }
    jsonwebtoken::decode::<T>(token, &key, &v)
        .ok()
        .map(|d| d.claims)
}

// ---- the token endpoint ----------------------------------------------------------------

/// An RFC 6749 §5.2 error.
#[derive(Debug)]
pub struct TokenError {
    pub status: u16,
    pub error: &'static str,
    pub description: String,
}

impl TokenError {
    pub fn new(error: &'static str, description: impl Into<String>) -> TokenError {
        TokenError {
            status: 400,
            error,
            description: description.into(),
        }
    }
}

impl From<ApiError> for TokenError {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::Unavailable(d) => TokenError {
                status: 503,
                error: "temporarily_unavailable",
                description: d,
            },
            other => {
                tracing::error!(error = %other, "token endpoint");
                TokenError {
                    status: 500,
                    error: "server_error",
                    description: "the server could not complete the request".into(),
                }
            }
        }
    }
}

#[derive(Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: i64,
    pub scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
}

/// Whether session `sid` has neither ended nor expired, from its stream.
async fn session_live(state: &AppState, sid: &str, t: Timestamp) -> Result<bool, ApiError> {
    let events = read_whole_stream(state.store.as_ref(), &format!("session-{sid}"))
        .await
        .map_err(internal)?;
    let mut live = false;
    for r in events {
        let env = r.envelope().map_err(internal)?;
        match env.event_type {
            authlog_schemas::EventType::LoginSucceeded => {
                let d: data::LoginSucceeded = env.decode().map_err(internal)?;
                live = t < d.expires_at;
            }
            authlog_schemas::EventType::SessionEnded => live = false,
            _ => {}
        }
    }
    Ok(live)
}

async fn read_grant(state: &AppState, grant_id: &str) -> Result<Vec<GrantEvent>, ApiError> {
    let records = read_whole_stream(state.store.as_ref(), &format!("grant-{grant_id}"))
        .await
        .map_err(internal)?;
    let mut out = Vec::with_capacity(records.len());
    for r in records {
        let envelope = r.envelope().map_err(internal)?;
        let opened = match &r.sidecar {
            Some(s) => Some(state.kek.open(s).map_err(internal)?),
            None => None,
        };
        let (code, refresh) = match (envelope.event_type, opened) {
            (authlog_schemas::EventType::AuthorizationCodeIssued, Some(o)) => {
                (serde_json::from_slice::<CodeSecret>(&o).ok(), None)
            }
            (authlog_schemas::EventType::TokenGranted, Some(o)) => {
                (None, serde_json::from_slice::<RefreshSecret>(&o).ok())
            }
            _ => (None, None),
        };
        out.push(GrantEvent {
            envelope,
            revision: r.revision,
            code,
            refresh,
        });
    }
    Ok(out)
}

/// Exchanges a code or a refresh token. `client` is authenticated already.
pub async fn exchange(
    state: &AppState,
    ctx: &Ctx,
    client: &Client,
    form: &std::collections::HashMap<String, String>,
    resources: &[String],
) -> Result<TokenResponse, TokenError> {
    let grant_type = form.get("grant_type").map(String::as_str);
    if grant_type == Some("client_credentials") {
        return client_credentials(state, ctx, client, form, resources).await;
    }
    if let Some(g @ ("authorization_code" | "refresh_token")) = grant_type
        && !client.metadata.grant_types.iter().any(|x| x == g)
    {
        return Err(TokenError::new(
            "unauthorized_client",
            "this client may not use this grant type",
        ));
    }
    let (grant_id, refresh_presented) = match grant_type {
        Some("authorization_code") => {
            let code = form
                .get("code")
                .ok_or_else(|| TokenError::new("invalid_request", "code is missing"))?;
            (
                tokens::parse_code(code)
                    .ok_or_else(|| TokenError::new("invalid_grant", "the code is invalid"))?
                    .to_string(),
                None,
            )
        }
        Some("refresh_token") => {
            let token = form
                .get("refresh_token")
                .ok_or_else(|| TokenError::new("invalid_request", "refresh_token is missing"))?;
            let (g, id) = tokens::parse_refresh(token)
                .ok_or_else(|| TokenError::new("invalid_grant", "the refresh token is invalid"))?;
            (g.to_string(), Some((id.to_string(), token.clone())))
        }
        Some(other) => {
            return Err(TokenError::new(
                "unsupported_grant_type",
                format!("grant_type {other} is not supported here"),
            ));
        }
        None => return Err(TokenError::new("invalid_request", "grant_type is missing")),
    };
    if !client
        .metadata
        .grant_types
        .iter()
        .any(|g| Some(g.as_str()) == grant_type)
    {
        return Err(TokenError::new(
            "unauthorized_client",
            "this client may not use this grant type",
        ));
    }
    let requested_scopes: Option<Vec<String>> = form.get("scope").map(|s| {
        s.split(' ')
            .filter(|x| !x.is_empty())
            .map(str::to_string)
            .collect()
    });
    let stream = format!("grant-{grant_id}");
    for _ in 0..4 {
        let events = read_grant(state, &grant_id).await?;
        if events.is_empty() {
            return Err(TokenError::new("invalid_grant", "unknown or expired grant"));
        }
        let st = GrantState::fold(&events)
            .map_err(|_| TokenError::new("invalid_grant", "unknown grant"))?;
        let t = now();
        let cfg = &state.config.tokens;
        let may_refresh = client
            .metadata
            .grant_types
            .iter()
            .any(|g| g == "refresh_token");
        let grant_ends_at = st.issued_at.plus_seconds(cfg.grant_ttl_s);
        let effective: &[String] = match (&refresh_presented, &requested_scopes) {
            (Some(_), Some(req)) => req,
            _ => &st.scopes,
        };
        let issue = grant::Issue {
            access_token_id: new_id(),
            access_expires_at: t.plus_seconds(cfg.access_ttl_s),
            refresh: may_refresh.then(|| {
                (
                    new_id(),
                    t.plus_seconds(cfg.refresh_ttl_s).min(grant_ends_at),
                )
            }),
            id_token: effective.iter().any(|s| s == "openid"),
            grant_ends_at,
            audience: Vec::new(),
        };
        // A disabled or deleted user gets nothing more from old grants.
        if !state
            .views
            .read()
            .await
            .users
            .get(&st.issued.user_id)
            .is_some_and(|u| u.enabled)
        {
            return Err(TokenError::new("invalid_grant", "the user is disabled"));
        }
        let decision = match &refresh_presented {
            None => grant::redeem_code(
                &st,
                form.get("code").map(String::as_str).unwrap_or_default(),
                &client.client_id,
                form.get("redirect_uri").map(String::as_str),
                form.get("code_verifier").map(String::as_str),
                t,
                issue,
            ),
            Some((id, token)) => {
                // Whether the session still lives is read from its own stream,
                // not from a view that may lag behind a logout on another node.
                let live = session_live(state, &st.issued.session_id, t).await?;
                grant::refresh(
                    &st,
                    id,
                    token,
                    &client.client_id,
                    requested_scopes.as_deref(),
                    live,
                    t,
                    issue,
                )
            }
        };
        let decision = decision.map_err(|e| match e {
            GrantError::InvalidGrant(d) => TokenError::new("invalid_grant", d),
            GrantError::NotAGrant => TokenError::new("invalid_grant", "unknown grant"),
            GrantError::InvalidScope(d) => TokenError::new("invalid_scope", d),
        })?;
        let actor = Actor {
            kind: ActorKind::Client,
            id: client.client_id.clone(),
        };
        let user = st.issued.user_id.clone();
        match decision {
            Decision::Replay(_) | Decision::Reuse(_) => {
                let (env, message) = match decision {
                    Decision::Replay(d) => (
                        draft(&stream, actor, &d, Some(ctx))?.failure("code_replayed"),
                        "the code was already used; every token from it is revoked",
                    ),
                    Decision::Reuse(d) => (
                        draft(&stream, actor, &d, Some(ctx))?.failure("refresh_token_reused"),
                        "the refresh token was already used; the grant is revoked",
                    ),
                    Decision::Grant(_) => continue, // matched by the arm below
                };
                let env = env.client(client.client_id.clone()).subject(user);
                let drafts = vec![Draft {
                    envelope: env,
                    secret: None,
                }];
                match commit(state, &stream, Expected::Revision(st.last_revision), drafts).await {
                    Ok(_) => return Err(TokenError::new("invalid_grant", message)),
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(e) => return Err(ApiError::Internal(e.to_string()).into()),
                }
            }
            Decision::Grant(mut d) => {
                // RFC 8707: the token is for the resources the grant covers,
                // or those this request names, with their scopes only.
                let (audience, scopes) = {
                    let views = state.views.read().await;
                    scopes::token_audience(
                        &d.scopes,
                        &st.issued.resources,
                        resources,
                        &views.resource_servers,
                        &cfg.audience,
                    )
                }
                .map_err(|e| TokenError::new("invalid_target", e))?;
                d.audience = audience;
                d.scopes = scopes;
                let refresh_token = match &d.refresh_token_id {
                    Some(id) => Some(format!(
                        "{grant_id}.{id}.{}",
                        crypto::secret_token().map_err(|e| TokenError::from(internal(e)))?
                    )),
                    None => None,
                };
                let secret = match &refresh_token {
                    Some(rt) => Some(secret_json(&RefreshSecret {
                        refresh_sha256: grant::hex_sha256(rt),
                    })?),
                    None => None,
                };
                let env = draft(&stream, actor, &d, Some(ctx))?
                    .client(client.client_id.clone())
                    .subject(user.clone())
                    .session(st.issued.session_id.clone());
                match commit(
                    state,
                    &stream,
                    Expected::Revision(st.last_revision),
                    vec![Draft {
                        envelope: env,
                        secret,
                    }],
                )
                .await
                {
                    Ok(_) => {}
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(e) => return Err(ApiError::Internal(e.to_string()).into()),
                }
                return tokens_for(state, client, &st, &d, refresh_token)
                    .await
                    .map_err(TokenError::from);
            }
        }
    }
    Err(ApiError::Unavailable("the grant is busy; try again".into()).into())
}

async fn tokens_for(
    state: &AppState,
    client: &Client,
    st: &GrantState,
    d: &data::TokenGranted,
    refresh_token: Option<String>,
) -> Result<TokenResponse, ApiError> {
    let cfg = &state.config.tokens;
    let iat = now().unix_seconds();
    let auth_time = st.code.auth_time_ms.div_euclid(1000);
    let scope = d.scopes.join(" ");
    let access = AccessClaims {
        iss: state.config.issuer.clone(),
        sub: st.issued.user_id.clone(),
        aud: tokens::Audience(if d.audience.is_empty() {
            vec![cfg.audience.clone()]
        } else {
            d.audience.clone()
        }),
        exp: d.access_token_expires_at.unix_seconds(),
        iat,
        jti: d.access_token_id.clone(),
        client_id: client.client_id.clone(),
        scope: scope.clone(),
        auth_time: Some(auth_time),
        gid: Some(st.grant_id.clone()),
        sid: Some(st.issued.session_id.clone()),
    };
    let default_alg = state.config.keys.algorithm.clone();
    let access_token = sign(state, &default_alg, "at+jwt", access).await?;
    let id_token = if d.id_token {
        let alg = client.metadata.id_token_signed_response_alg.clone();
        ensure_signing_key(state, &alg).await?;
        let session = state
            .views
            .read()
            .await
            .sessions
            .get(&st.issued.session_id, now())
            .cloned();
        let claims = IdClaims {
            iss: state.config.issuer.clone(),
            sub: st.issued.user_id.clone(),
            aud: client.client_id.clone(),
            exp: iat + cfg.id_token_ttl_s,
            iat,
            auth_time,
            // Core §12.2: a refreshed ID token carries no nonce.
            nonce: if d.consumed_code_id.is_some() {
                st.code.nonce.clone()
            } else {
                None
            },
            at_hash: Some(crypto::half_hash(&alg, &access_token)),
            sid: Some(st.issued.session_id.clone()),
            amr: session.map(|s| s.amr).unwrap_or_else(|| vec!["pwd".into()]),
        };
        Some(sign(state, &alg, "JWT", claims).await?)
    } else {
        None
    };
    Ok(TokenResponse {
        access_token,
        token_type: "Bearer",
        expires_in: cfg.access_ttl_s,
        scope,
        id_token,
        refresh_token,
    })
}

// ---- clients ---------------------------------------------------------------------------

#[derive(Serialize, serde::Deserialize)]
pub struct ClientSecret {
    /// Empty for public clients (which have a sidecar only for their
    /// registration access token).
    #[serde(default)]
    pub secret_sha256: String,
    /// RFC 7592: the hash of the registration access token, for clients
    /// registered dynamically.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_sha256: Option<String>,
}

/// Authenticates a client at the token endpoint with its registered method.
pub fn authenticate_client(
    state: &AppState,
    client: &Client,
    method: &str,
    secret: Option<&str>,
) -> Result<(), &'static str> {
    if client.metadata.token_endpoint_auth_method != method {
        return Err("method_not_allowed");
    }
    if method == "none" {
        return Ok(());
    }
    let Some(secret) = secret else {
        return Err("invalid_secret");
    };
    let Some(sealed) = client.secret.as_ref() else {
        return Err("invalid_secret");
    };
    let Ok(opened) = state.kek.open(sealed) else {
        return Err("invalid_secret");
    };
    let Ok(stored) = serde_json::from_slice::<ClientSecret>(&opened) else {
        return Err("invalid_secret");
    };
    if let Some(exp) = client.client_secret_expires_at
        && exp != 0
        && now().unix_seconds() >= exp
    {
        return Err("secret_expired");
    }
    let presented = grant::hex_sha256(secret);
    let current = !stored.secret_sha256.is_empty()
        && ct_eq(presented.as_bytes(), stored.secret_sha256.as_bytes());
    let previous = stored
        .previous_sha256
        .as_ref()
        .is_some_and(|p| ct_eq(presented.as_bytes(), p.as_bytes()))
        && client
            .previous_secret_valid_until
            .is_some_and(|until| now() < until);
    if current || previous {
        Ok(())
    } else {
        Err("invalid_secret")
    }
}

pub fn random_client_secret() -> Result<String, ApiError> {
    Ok(b64url(&crypto::random_bytes::<32>().map_err(internal)?))
}

// ---- logout ----------------------------------------------------------------------------

/// Ends a session: `session.ended`, then the session's grants that were not
/// issued for offline access are revoked.
pub async fn end_session(
    state: &AppState,
    ctx: &Ctx,
    session: &Session,
    actor: Actor,
) -> Result<(), ApiError> {
    // Grants made on other nodes during the session end with it too.
    catch_up_views(state).await;
    let stream = format!("session-{}", session.id);
    let d = data::SessionEnded {
        session_id: session.id.clone(),
        user_id: session.user_id.clone(),
        cause: data::SessionEndCause::Logout,
    };
    let env = draft(&stream, actor.clone(), &d, Some(ctx))?
        .subject(session.user_id.clone())
        .session(session.id.clone());
    match commit(
        state,
        &stream,
        Expected::Revision(session.revision),
        vec![Draft {
            envelope: env,
            secret: None,
        }],
    )
    .await
    {
        Ok(_) | Err(StoreError::Conflict { .. }) => {}
        Err(e) => return Err(internal(e)),
    }
    let grants: Vec<(String, String, u64)> = {
        let views = state.views.read().await;
        views
            .grants
            .of_session(&session.id)
            .filter(|g| !g.revoked && !g.scopes.iter().any(|s| s == "offline_access"))
            .map(|g| (g.grant_id.clone(), g.client_id.clone(), g.revision))
            .collect()
    };
    for (gid, client_id, revision) in grants {
        let stream = format!("grant-{gid}");
        let d = data::TokenRevoked {
            grant_id: gid.clone(),
            client_id: client_id.clone(),
            token_ids: vec![],
            grant: true,
            cause: data::RevocationCause::Logout,
        };
        let env = draft(&stream, actor.clone(), &d, Some(ctx))?
            .subject(session.user_id.clone())
            .client(client_id)
            .session(session.id.clone());
        // The revision comes from the view; if the grant moved on, the conflict
        // tells its actual revision and the revocation follows that.
        append_following(state, &stream, revision, env).await?;
    }
    Ok(())
}

// ---- key rotation --------------------------------------------------------------------

/// Starts a rotation: a new key for `alg` is generated and published in the
/// JWKS, but signs nothing until relying parties have had one JWKS cache
/// lifetime to fetch it ([`advance_key_rotation`] activates it then).
pub async fn rotate_key(state: &AppState, alg: &str, actor: Actor) -> Result<String, ApiError> {
    crypto::jwt_algorithm(alg).map_err(|e| ApiError::InvalidRequest(e.to_string()))?;
    for _ in 0..4 {
        let revision = state.views.read().await.keys.revision;
        let kid = new_id();
        let (a, k) = (alg.to_string(), kid.clone());
        let key = tokio::task::spawn_blocking(move || crypto::generate_key(&a, &k))
            .await
            .map_err(internal)?
            .map_err(internal)?;
        let generated = data::KeyGenerated {
            kid: kid.clone(),
            alg: alg.to_string(),
            public_jwk: key.public_jwk,
        };
        let env = draft("keys", actor.clone(), &generated, None)?;
        match commit(
            state,
            "keys",
            Expected::after(revision),
            vec![Draft {
                envelope: env,
                secret: Some(key.private_der),
            }],
        )
        .await
        {
            Ok(_) => return Ok(kid),
            Err(StoreError::Conflict { .. }) => {
                if let Ok(Some(h)) = state.store.head().await {
                    wait_views(state, h.position).await;
                }
            }
            Err(e) => return Err(internal(e)),
        }
    }
    Err(ApiError::Unavailable(
        "the keys stream is busy; try again".into(),
    ))
}

/// Activates keys that have been published for a whole JWKS cache lifetime and
/// retires the keys they replace: those verify until the longest token lifetime
/// plus leeway has passed, then leave the JWKS. Run periodically by the server.
pub async fn advance_key_rotation(state: &AppState) -> Result<usize, ApiError> {
    let t = now();
    let cfg = &state.config;
    let (due, revision) = {
        let views = state.views.read().await;
        let due: Vec<(String, String, Option<String>)> = views
            .keys
            .pending()
            .filter(|k| k.generated_at.plus_seconds(cfg.keys.jwks_cache_s) <= t)
            .map(|k| {
                (
                    k.kid.clone(),
                    k.alg.clone(),
                    views.keys.active(&k.alg).map(|a| a.kid.clone()),
                )
            })
            .collect();
        (due, views.keys.revision)
    };
    if due.is_empty() {
        return Ok(0);
    }
    let longest = cfg.tokens.access_ttl_s.max(cfg.tokens.id_token_ttl_s) + cfg.tokens.leeway_s;
    let mut drafts = Vec::new();
    for (kid, _alg, old) in &due {
        drafts.push(Draft {
            envelope: draft(
                "keys",
                Actor::system("key-rotation"),
                &data::KeyActivated { kid: kid.clone() },
                None,
            )?,
            secret: None,
        });
        if let Some(old) = old {
            let retired = data::KeyRetired {
                kid: old.clone(),
                verify_until: t.plus_seconds(longest),
            };
            drafts.push(Draft {
                envelope: draft("keys", Actor::system("key-rotation"), &retired, None)?,
                secret: None,
            });
        }
    }
    // A conflict means another node did it first; the next round sees that.
    match commit(state, "keys", Expected::after(revision), drafts).await {
        Ok(_) => Ok(due.len()),
        Err(StoreError::Conflict { .. }) => Ok(0),
        Err(e) => Err(internal(e)),
    }
}

/// Revokes every live grant of a user (disabled, password changed, or an
/// administrator's "revoke all grants"): their access and refresh tokens stop
/// working at once. Returns how many grants were revoked.
pub async fn revoke_user_grants(
    state: &AppState,
    user_id: &str,
    actor: Actor,
    cause: data::RevocationCause,
) -> Result<usize, ApiError> {
    catch_up_views(state).await;
    let grants: Vec<(String, String, u64)> = {
        let views = state.views.read().await;
        views
            .grants
            .of_user(user_id)
            .filter(|g| !g.revoked)
            .map(|g| (g.grant_id.clone(), g.client_id.clone(), g.revision))
            .collect()
    };
    let n = grants.len();
    for (gid, client_id, revision) in grants {
        let stream = format!("grant-{gid}");
        let d = data::TokenRevoked {
            grant_id: gid.clone(),
            client_id: client_id.clone(),
            token_ids: vec![],
            grant: true,
            cause,
        };
        let env = draft(&stream, actor.clone(), &d, None)?
            .subject(user_id.to_string())
            .client(client_id);
        append_following(state, &stream, revision, env).await?;
    }
    Ok(n)
}

/// Ends every live session of a user (`session.ended` on each session's own
/// stream, at the revision read: a session already ended elsewhere stays
/// ended once). Returns how many sessions ended.
pub async fn end_user_sessions(
    state: &AppState,
    user_id: &str,
    actor: Actor,
    cause: data::SessionEndCause,
) -> Result<usize, ApiError> {
    catch_up_views(state).await;
    let sessions: Vec<Session> = {
        let views = state.views.read().await;
        let t = now();
        views.sessions.of_user(user_id, t).cloned().collect()
    };
    let mut ended = 0;
    for s in sessions {
        let stream = format!("session-{}", s.id);
        let d = data::SessionEnded {
            session_id: s.id.clone(),
            user_id: user_id.to_string(),
            cause,
        };
        let env = draft(&stream, actor.clone(), &d, None)?
            .subject(user_id.to_string())
            .session(s.id.clone());
        match commit(
            state,
            &stream,
            Expected::Revision(s.revision),
            vec![Draft {
                envelope: env,
                secret: None,
            }],
        )
        .await
        {
            Ok(_) => ended += 1,
            // It ended meanwhile (a logout): nothing more to do.
            Err(StoreError::Conflict { .. }) => {}
            Err(e) => return Err(internal(e)),
        }
    }
    Ok(ended)
}

/// What ends when the credentials behind a user's sessions no longer hold
/// (disabled, password changed): every session and every grant, offline ones
/// included, in one decision.
pub async fn end_everything(
    state: &AppState,
    user_id: &str,
    actor: Actor,
    session_cause: data::SessionEndCause,
    grant_cause: data::RevocationCause,
) -> Result<(usize, usize), ApiError> {
    let sessions = end_user_sessions(state, user_id, actor.clone(), session_cause).await?;
    let grants = revoke_user_grants(state, user_id, actor, grant_cause).await?;
    Ok((sessions, grants))
}

// ---- client credentials, introspection, revocation ----------------------------------------

/// The `sub` of tokens a client gets for itself: never a user's (user ids are
/// bare UUIDs), RFC 9068 §2.2.
pub fn client_subject(client_id: &str) -> String {
    format!("client:{client_id}")
}

/// RFC 6749 §4.4: confidential clients only; an access token only; scopes
/// within those registered (user scopes such as `openid` make no sense here).
pub async fn client_credentials(
    state: &AppState,
    ctx: &Ctx,
    client: &Client,
    form: &std::collections::HashMap<String, String>,
    resources: &[String],
) -> Result<TokenResponse, TokenError> {
    if client.metadata.token_endpoint_auth_method == "none" {
        return Err(TokenError::new(
            "unauthorized_client",
            "public clients cannot use client_credentials",
        ));
    }
    if !client
        .metadata
        .grant_types
        .iter()
        .any(|g| g == "client_credentials")
    {
        return Err(TokenError::new(
            "unauthorized_client",
            "this client may not use client_credentials",
        ));
    }
    let cfg = &state.config.tokens;
    let (scopes, audience) = {
        let views = state.views.read().await;
        let servers = &views.resource_servers;
        for r in resources {
            scopes::check_resource_syntax(r, &cfg.audience)
                .map_err(|e| TokenError::new("invalid_target", e))?;
            if !scopes::is_resource(r, servers, &cfg.audience) {
                return Err(TokenError::new(
                    "invalid_target",
                    format!(
                        "resource {} is not a resource server of this provider",
                        r.chars().take(64).collect::<String>()
                    ),
                ));
            }
        }
        // Only scopes for machine clients that this client holds: never a
        // user's (openid…), never one the client gave itself without an
        // administrator's say.
        let scopes: Vec<String> = match form.get("scope") {
            Some(req) => {
                let req: Vec<String> = req
                    .split(' ')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect();
                if req.is_empty() {
                    return Err(TokenError::new("invalid_scope", "scope is empty"));
                }
                if let Some(bad) = req
                    .iter()
                    .find(|s| !scopes::machine_allows(client, s, servers))
                {
                    return Err(TokenError::new(
                        "invalid_scope",
                        format!(
                            "scope {} is not available to this client for client_credentials",
                            bad.chars().take(64).collect::<String>()
                        ),
                    ));
                }
                req
            }
            None => scopes::default_machine_scopes(client, servers),
        };
        let (audience, scopes) =
            scopes::token_audience(&scopes, &[], resources, servers, &cfg.audience)
                .map_err(|e| TokenError::new("invalid_target", e))?;
        if form.contains_key("scope") && scopes.is_empty() {
            return Err(TokenError::new(
                "invalid_scope",
                "none of the scopes asked for belongs to the resources asked for",
            ));
        }
        (scopes, audience)
    };
    let t = now();
    let grant_id = new_id();
    let d = data::TokenGranted {
        grant_id: grant_id.clone(),
        grant_type: data::GrantType::ClientCredentials,
        client_id: client.client_id.clone(),
        user_id: None,
        scopes: scopes.clone(),
        access_token_id: new_id(),
        access_token_expires_at: t.plus_seconds(cfg.access_ttl_s),
        refresh_token_id: None,
        refresh_token_expires_at: None,
        id_token: false,
        consumed_code_id: None,
        consumed_refresh_token_id: None,
        audience: audience.clone(),
    };
    let stream = format!("grant-{grant_id}");
    let actor = Actor {
        kind: ActorKind::Client,
        id: client.client_id.clone(),
    };
    let env = draft(&stream, actor, &d, Some(ctx))?
        .client(client.client_id.clone())
        .subject(client_subject(&client.client_id));
    commit(
        state,
        &stream,
        Expected::NoStream,
        vec![Draft {
            envelope: env,
            secret: None,
        }],
    )
    .await
    .map_err(|e| TokenError::from(internal(e)))?;
    let scope = scopes.join(" ");
    let claims = AccessClaims {
        iss: state.config.issuer.clone(),
        sub: client_subject(&client.client_id),
        aud: tokens::Audience(audience),
        exp: d.access_token_expires_at.unix_seconds(),
        iat: t.unix_seconds(),
        jti: d.access_token_id.clone(),
        client_id: client.client_id.clone(),
        scope: scope.clone(),
        auth_time: None,
        gid: Some(grant_id),
        sid: None,
    };
    let alg = state.config.keys.algorithm.clone();
    let access_token = sign(state, &alg, "at+jwt", claims).await?;
    Ok(TokenResponse {
        access_token,
        token_type: "Bearer",
        expires_in: cfg.access_ttl_s,
        scope,
        id_token: None,
        refresh_token: None,
    })
}

/// The claims of an access token that is live right now: signed by us, of
/// type `at+jwt`, for our resource audience, unexpired, its grant not revoked
/// and its client not deleted.
pub async fn active_access_token(
    state: &AppState,
    token: &str,
    audience: Option<&str>,
) -> Option<AccessClaims> {
    let claims = verify::<AccessClaims>(state, token, Some("at+jwt"), audience, true).await?;
    let t = now();
    // A token minted on another node a moment ago: catch up before saying no.
    let live = view_lookup(state, |v| {
        claims
            .gid
            .as_ref()
            .and_then(|g| v.grants.get(g))
            .is_some_and(|g| g.access_token_active(&claims.jti, t))
            .then_some(())
    })
    .await
    .is_some();
    let client = live
        && view_lookup(state, |v| v.clients.get(&claims.client_id).map(|_| ()))
            .await
            .is_some();
    (live && client).then_some(claims)
}

/// RFC 7662: what an authenticated client may learn about a token. A client
/// sees its own tokens; tokens of other clients only if an administrator
/// registered it with the `introspection` scope (a resource server). Anything
/// else is `active: false`, as RFC 7662 §2.2 allows.
pub async fn introspect(state: &AppState, caller: &Client, token: &str) -> serde_json::Value {
    let may_see_all = caller
        .metadata
        .scope
        .split(' ')
        .any(|s| s == scopes::INTROSPECTION_SCOPE);
    // Tokens for any resource server: a resource server introspects the
    // tokens sent to it, whichever audience they name.
    match active_access_token(state, token, None)
        .await
        .filter(|c| may_see_all || c.client_id == caller.client_id)
    {
        Some(c) => serde_json::json!({
            "active": true,
            "scope": c.scope,
            "client_id": c.client_id,
            "sub": c.sub,
            "aud": c.aud,
            "exp": c.exp,
            "iat": c.iat,
            "iss": c.iss,
            "token_type": "Bearer",
            "jti": c.jti,
        }),
        None => serde_json::json!({"active": false}),
    }
}

/// RFC 7009: revokes `token` if it was issued to `client`. A refresh token
/// revokes its whole grant (the access tokens from it included); an access token
/// is revoked by its `jti`. Anything else — unknown, another client's, malformed —
/// is quietly ignored (the endpoint answers 200 either way).
pub async fn revoke(
    state: &AppState,
    ctx: &Ctx,
    client: &Client,
    token: &str,
    hint: Option<&str>,
) -> Result<bool, ApiError> {
    // Decide on everything committed so far, by any node: a grant issued on
    // another node a moment ago is revoked, not taken for unknown.
    catch_up_views(state).await;
    let as_refresh = || async {
        let (gid, tid) = tokens::parse_refresh(token)?;
        let events = read_grant(state, gid).await.ok()?;
        let st = GrantState::fold(&events).ok()?;
        let issued = st.refreshes.iter().find(|r| r.token_id == tid)?;
        let ours = st.issued.client_id == client.client_id
            && ct_eq(
                grant::hex_sha256(token).as_bytes(),
                issued.sha256.as_bytes(),
            );
        ours.then(|| {
            (
                st.grant_id.clone(),
                st.issued.user_id.clone(),
                vec![tid.to_string()],
                true,
                st.last_revision,
            )
        })
    };
    let as_access = || async {
        let c = verify::<AccessClaims>(state, token, Some("at+jwt"), None, true).await?;
        if c.client_id != client.client_id {
            return None;
        }
        let gid = c.gid.clone()?;
        let revision = state
            .views
            .read()
            .await
            .grants
            .get(&gid)
            .map(|g| g.revision)?;
        Some((gid, c.sub.clone(), vec![c.jti.clone()], false, revision))
    };
    // The hint picks the first lookup; the other is tried too (RFC 7009 §2.1).
    let found = if hint == Some("access_token") {
        match as_access().await {
            Some(f) => Some(f),
            None => as_refresh().await,
        }
    } else {
        match as_refresh().await {
            Some(f) => Some(f),
            None => as_access().await,
        }
    };
    let Some((gid, subject, token_ids, whole, revision)) = found else {
        return Ok(false);
    };
    // Revoking what is already revoked writes nothing: the log does not grow
    // however often a token is sent back.
    {
        let views = state.views.read().await;
        let done = views.grants.get(&gid).is_none_or(|g| {
            g.revoked || (!whole && token_ids.iter().all(|t| g.revoked_tokens.contains(t)))
        });
        if done {
            return Ok(false);
        }
    }
    let stream = format!("grant-{gid}");
    let d = data::TokenRevoked {
        grant_id: gid,
        client_id: client.client_id.clone(),
        token_ids,
        grant: whole,
        cause: data::RevocationCause::RevocationEndpoint,
    };
    let env = draft(
        &stream,
        Actor {
            kind: ActorKind::Client,
            id: client.client_id.clone(),
        },
        &d,
        Some(ctx),
    )?
    .client(client.client_id.clone())
    .subject(subject);
    append_following(state, &stream, revision, env).await?;
    Ok(true)
}

/// The opened sidecar of a client, if it has one.
pub fn client_secrets(state: &AppState, client: &Client) -> Option<ClientSecret> {
    let opened = state.kek.open(client.secret.as_ref()?).ok()?;
    serde_json::from_slice(&opened).ok()
}

/// Appends events about a client on `client-{id}` with its revision, deciding
/// again on conflict.
pub async fn change_client(
    state: &AppState,
    client_id: &str,
    mut decide: impl FnMut(&Client) -> Result<Vec<Draft>, ApiError>,
) -> Result<(), ApiError> {
    let stream = format!("client-{client_id}");
    for _ in 0..4 {
        let client = view_lookup(state, |v| v.clients.get(client_id).cloned())
            .await
            .ok_or(ApiError::NotFound)?;
        let drafts = decide(&client)?;
        if drafts.is_empty() {
            return Ok(());
        }
        match commit(state, &stream, Expected::Revision(client.revision), drafts).await {
            Ok(_) => return Ok(()),
            Err(StoreError::Conflict { .. }) => {
                if let Ok(Some(h)) = state.store.head().await {
                    wait_views(state, h.position).await;
                }
            }
            Err(e) => return Err(internal(e)),
        }
    }
    Err(ApiError::Unavailable(
        "the client is changing too fast; try again".into(),
    ))
}

/// Appends one event to a stream whose revision was read from a view: if the
/// stream moved on meanwhile, the conflict tells its actual revision and the
/// event follows that (for facts that hold whatever came before, such as a
/// revocation).
async fn append_following(
    state: &AppState,
    stream: &str,
    revision: u64,
    env: Envelope,
) -> Result<(), ApiError> {
    let mut expected = Expected::Revision(revision);
    for _ in 0..4 {
        match commit(
            state,
            stream,
            expected,
            vec![Draft {
                envelope: env.clone(),
                secret: None,
            }],
        )
        .await
        {
            Ok(_) => return Ok(()),
            Err(StoreError::Conflict { actual, .. }) => expected = Expected::after(actual),
            Err(e) => return Err(internal(e)),
        }
    }
    Err(ApiError::Unavailable(format!(
        "{stream} is busy; try again"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(failed: u32, locked: Option<Option<Timestamp>>) -> User {
        User {
            id: "u".into(),
            username: "alice".into(),
            email: None,
            name: None,
            enabled: true,
            locked,
            failed_attempts: failed,
            password: None,
            revision: None,
            created_at: Timestamp::default(),
            consents: Default::default(),
            self_registered: false,
        }
    }

    #[test]
    fn the_verification_budget_is_what_is_left_before_the_lock_then_as_much_again() {
        let t = Timestamp::from_unix_millis(1_000_000);
        assert_eq!(verification_budget(&user(0, None), 5, t), 5);
        assert_eq!(verification_budget(&user(4, None), 5, t), 1);
        assert_eq!(verification_budget(&user(5, None), 5, t), 0);
        let until = Some(t.plus_seconds(900));
        assert_eq!(verification_budget(&user(5, Some(until)), 5, t), 5);
        assert_eq!(verification_budget(&user(9, Some(until)), 5, t), 1);
        assert_eq!(verification_budget(&user(10, Some(until)), 5, t), 0);
        assert_eq!(verification_budget(&user(12, Some(until)), 5, t), 0);
        // A lock that ran out is no lock.
        let past = Some(t.plus_seconds(-1));
        assert_eq!(verification_budget(&user(5, Some(past)), 5, t), 5);
    }
}
