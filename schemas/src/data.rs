//! The `data` of each event type, newest version. `schemas/json/<type>/v<N>.json`
//! is the public JSON Schema of each; fields marked `personal` there are personal
//! data (a later version encrypts them per user).
//!
//! No secret appears here: password hashes, client-secret hashes, code and token
//! hashes and private keys travel in the sealed sidecar, named only by
//! `sealed_digest` in the envelope.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::catalogue::EventType;
use crate::time::Timestamp;

/// Ties a data struct to its event type.
pub trait EventData: Serialize + DeserializeOwned {
    const TYPE: EventType;
}

macro_rules! event_data {
    ($($ty:ident => $variant:ident),* $(,)?) => {
        $( impl EventData for $ty { const TYPE: EventType = EventType::$variant; } )*
    };
}

event_data! {
    UserRegistered => UserRegistered,
    UserUpdated => UserUpdated,
    UserPasswordChanged => UserPasswordChanged,
    UserDisabled => UserDisabled,
    UserEnabled => UserEnabled,
    UserLocked => UserLocked,
    UserUnlocked => UserUnlocked,
    LoginSucceeded => LoginSucceeded,
    LoginFailed => LoginFailed,
    SessionEnded => SessionEnded,
    ConsentGranted => ConsentGranted,
    ConsentDenied => ConsentDenied,
    ConsentRevoked => ConsentRevoked,
    AuthorizationRejected => AuthorizationRejected,
    AuthorizationCodeIssued => AuthorizationCodeIssued,
    TokenGranted => TokenGranted,
    AuthorizationCodeReplayDetected => AuthorizationCodeReplayDetected,
    RefreshTokenReuseDetected => RefreshTokenReuseDetected,
    TokenRevoked => TokenRevoked,
    ClientRegistered => ClientRegistered,
    ClientUpdated => ClientUpdated,
    ClientSecretRotated => ClientSecretRotated,
    ClientDeleted => ClientDeleted,
    ClientApproved => ClientApproved,
    ClientAuthenticationFailed => ClientAuthenticationFailed,
    ResourceServerRegistered => ResourceServerRegistered,
    ResourceServerUpdated => ResourceServerUpdated,
    ResourceServerDeleted => ResourceServerDeleted,
    KeyGenerated => KeyGenerated,
    KeyActivated => KeyActivated,
    KeyRetired => KeyRetired,
    AuditAccessed => AuditAccessed,
    AuditCheckpoint => AuditCheckpoint,
    SecurityThrottled => SecurityThrottled,
}

// ---- users -------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegisteredVia {
    Admin,
    SelfRegistration,
}

/// Sidecar: the argon2id password hash (PHC string).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserRegistered {
    pub user_id: String,
    /// personal
    pub username: String,
    /// personal
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// personal
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub registered_via: RegisteredVia,
}

/// The new values of the fields that changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserUpdated {
    pub user_id: String,
    /// personal
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// personal
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangedBy {
    User,
    Admin,
}

/// Sidecar: the new argon2id password hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserPasswordChanged {
    pub user_id: String,
    pub changed_by: ChangedBy,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserDisabled {
    pub user_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserEnabled {
    pub user_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserLocked {
    pub user_id: String,
    pub failed_attempts: u32,
    /// The lock lifts by itself at this time; absent: until an admin unlocks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserUnlocked {
    pub user_id: String,
}

// ---- authentication ---------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginSucceeded {
    /// The session this sign-in starts.
    pub session_id: String,
    pub user_id: String,
    /// RFC 8176 authentication method references, e.g. `["pwd"]`.
    pub amr: Vec<String>,
    pub expires_at: Timestamp,
}

/// Envelope `reason`: `invalid_credentials`, `unknown_user`, `user_disabled`,
/// `user_locked`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginFailed {
    /// For a known user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// For an unknown username: a keyed hash (HMAC-SHA-256, hex), never the
    /// username itself — people type passwords into the username field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username_hash: Option<String>,
    /// Consecutive failures on this user's stream, this one included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_attempts: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionEndCause {
    Logout,
    Expired,
    /// An administrator ended the user's sessions.
    Admin,
    UserDisabled,
    /// The user's password changed: every session signed in with the old one ends.
    PasswordChanged,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionEnded {
    pub session_id: String,
    pub user_id: String,
    pub cause: SessionEndCause,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentGranted {
    pub user_id: String,
    pub client_id: String,
    pub scopes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentDenied {
    pub user_id: String,
    pub client_id: String,
    pub scopes: Vec<String>,
}

/// A user (or an administrator for them) withdrew a consent: the client must
/// ask again, and its grants for the user are revoked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentRevoked {
    pub user_id: String,
    pub client_id: String,
    /// The scopes the consent covered.
    pub scopes: Vec<String>,
}

/// Envelope `reason`: the OAuth error code returned (`invalid_request`, …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorizationRejected {
    pub client_id: String,
    /// personal
    /// What was wrong, for people; never a secret. It may quote what the
    /// caller sent.
    pub description: String,
}

// ---- grants -----------------------------------------------------------------

/// Sidecar: the SHA-256 of the code and the PKCE challenge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorizationCodeIssued {
    pub grant_id: String,
    pub code_id: String,
    pub client_id: String,
    pub user_id: String,
    pub session_id: String,
    pub scopes: Vec<String>,
    pub redirect_uri: String,
    pub expires_at: Timestamp,
    /// RFC 8707 resource indicators the authorization request named (absent:
    /// none); the grant's tokens are for these resource servers only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantType {
    AuthorizationCode,
    RefreshToken,
    ClientCredentials,
}

/// One event per grant. Sidecar: the SHA-256 of the refresh token issued, if any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenGranted {
    pub grant_id: String,
    pub grant_type: GrantType,
    pub client_id: String,
    /// Absent for client_credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    pub scopes: Vec<String>,
    /// The access token's `jti`.
    pub access_token_id: String,
    pub access_token_expires_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token_expires_at: Option<Timestamp>,
    pub id_token: bool,
    /// The code (for authorization_code) consumed by this grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumed_code_id: Option<String>,
    /// The refresh token (for refresh_token) consumed by this grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumed_refresh_token_id: Option<String>,
    /// The access token's `aud`: the resource servers it is for (absent in
    /// events from before resource servers were recorded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audience: Vec<String>,
}

/// A second redemption of a code: the whole grant is revoked in the same append.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorizationCodeReplayDetected {
    pub grant_id: String,
    pub code_id: String,
    pub client_id: String,
    /// Access and refresh token ids revoked as a result.
    pub revoked_token_ids: Vec<String>,
}

/// A rotated-out refresh token presented again: the family is revoked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshTokenReuseDetected {
    pub grant_id: String,
    pub refresh_token_id: String,
    pub client_id: String,
    pub revoked_token_ids: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevocationCause {
    RevocationEndpoint,
    Logout,
    ClientDeleted,
    UserDisabled,
    /// An administrator revoked the user's grants.
    Admin,
    /// The user's password changed.
    PasswordChanged,
    /// The user withdrew the consent the grant rested on.
    ConsentRevoked,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRevoked {
    pub grant_id: String,
    pub client_id: String,
    /// The token ids revoked; the whole grant when `grant` is true.
    pub token_ids: Vec<String>,
    pub grant: bool,
    pub cause: RevocationCause,
}

// ---- clients ----------------------------------------------------------------

/// RFC 7591 client metadata as authlog keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientMetadata {
    pub client_name: String,
    pub redirect_uris: Vec<String>,
    #[serde(default)]
    pub post_logout_redirect_uris: Vec<String>,
    pub grant_types: Vec<String>,
    pub response_types: Vec<String>,
    pub token_endpoint_auth_method: String,
    pub scope: String,
    pub application_type: String,
    pub id_token_signed_response_alg: String,
    #[serde(default)]
    pub skip_consent: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientRegisteredVia {
    Admin,
    Cli,
    /// RFC 7591 with an initial access token an administrator issued.
    DynamicRegistration,
    /// RFC 7591 without one (`registration.open_dynamic`): nobody vouched for
    /// the client until an administrator approves it.
    OpenRegistration,
}

impl ClientRegisteredVia {
    /// The client registered itself (RFC 7591), with or without a token.
    pub fn is_dynamic(self) -> bool {
        matches!(
            self,
            ClientRegisteredVia::DynamicRegistration | ClientRegisteredVia::OpenRegistration
        )
    }
}

/// Sidecar (confidential clients): the SHA-256 of the client secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientRegistered {
    pub client_id: String,
    pub metadata: ClientMetadata,
    pub registered_via: ClientRegisteredVia,
    /// 0: never expires (RFC 7591).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_expires_at: Option<i64>,
}

/// The full metadata after the change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientUpdated {
    pub client_id: String,
    pub metadata: ClientMetadata,
}

/// Sidecar: the SHA-256 of the new secret (and of the old one while it is in grace).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSecretRotated {
    pub client_id: String,
    /// The previous secret keeps working until then; absent: it stopped at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_valid_until: Option<Timestamp>,
    pub client_secret_expires_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientDeleted {
    pub client_id: String,
}

/// An administrator approved a client that registered itself (RFC 7591
/// without an initial access token): from now on its errors may redirect to
/// its redirect URIs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientApproved {
    pub client_id: String,
}

// ---- resource servers -------------------------------------------------------

/// A scope a resource server defines, and who may have it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeDefinition {
    pub name: String,
    /// What the consent page says it lets the client do.
    #[serde(default)]
    pub description: String,
    /// Users may grant it to a client on the consent page (sign-ins).
    pub consent: bool,
    /// `client_credentials` may issue it (machine clients).
    pub machine: bool,
    /// Clients may give it to themselves (RFC 7591/7592); otherwise only an
    /// administrator puts it on a client.
    pub registrable: bool,
}

/// An API access tokens can be for: its `aud` and its scopes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceServerRegistered {
    /// The `aud` of its tokens and the RFC 8707 `resource` clients name.
    pub identifier: String,
    pub name: String,
    pub scopes: Vec<ScopeDefinition>,
}

/// The resource server's name and scopes after the change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceServerUpdated {
    pub identifier: String,
    pub name: String,
    pub scopes: Vec<ScopeDefinition>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceServerDeleted {
    pub identifier: String,
}

/// Envelope `reason`: `invalid_secret`, `secret_expired`, `method_not_allowed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientAuthenticationFailed {
    pub client_id: String,
    pub method: String,
}

// ---- keys -------------------------------------------------------------------

/// Sidecar: the private key (PKCS#8 DER), sealed under the KEK.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyGenerated {
    pub kid: String,
    pub alg: String,
    /// The public key as a JWK (RFC 7517), as it will appear in the JWKS.
    pub public_jwk: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyActivated {
    pub kid: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRetired {
    pub kid: String,
    /// Tokens signed with the key verify until then; after it the key leaves the JWKS.
    pub verify_until: Timestamp,
}

// ---- audit and security -----------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditAccessed {
    /// The admin or auditor token's configured name.
    pub token_name: String,
    /// The API path or CLI command that read the trail.
    pub endpoint: String,
    /// personal
    /// The filter as given (it may name a subject or an IP address).
    pub filter: serde_json::Map<String, serde_json::Value>,
    pub result_count: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditCheckpoint {
    pub tree_size: u64,
    /// Lower-case hex SHA-256 Merkle root (RFC 9162) over leaves `0..tree_size`.
    pub root_hash: String,
    /// Base64url Ed25519 signature over the checkpoint's signed text.
    pub signature: String,
    pub key_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityThrottled {
    /// personal
    pub ip: String,
    /// What was repeated, e.g. `invalid_client`, `login_failed`.
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    pub count: u64,
    pub window_start: Timestamp,
    pub window_end: Timestamp,
}
