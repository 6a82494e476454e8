//! Typed configuration in layers: defaults → a TOML file → `AUTHLOG_*`
//! environment variables. Unknown keys and unknown `AUTHLOG_*` variables are
//! errors; secrets are [`Secret`]s whose `Debug` is redacted.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// A configured secret. `Debug` shows `[redacted]`.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NamedToken {
    /// Recorded as the `actor.id` of what the token does.
    pub name: String,
    pub token: Secret,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    #[serde(default)]
    pub tokens: Vec<NamedToken>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// The largest request body accepted, in bytes.
    pub body_bytes: u64,
    /// How long a client has to send a request's headers; also how long a
    /// kept-alive connection may sit idle.
    pub header_timeout_s: u64,
    /// Open connections at most (capped by the open-file limit).
    pub max_connections: usize,
    /// After a shutdown signal, how long in-flight requests have to finish
    /// before their connections are cut.
    pub shutdown_grace_s: u64,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ViewsConfig {
    /// Write a snapshot of the views after this many events (and at shutdown).
    pub snapshot_every: u64,
    /// How long a request waits for the views to reach its own write.
    pub wait_ms: u64,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub listen: SocketAddr,
    /// The OIDC issuer URL. Unset: `http://{listen}/oidc` (a wildcard listen
    /// address becomes 127.0.0.1).
    #[serde(default)]
    pub issuer: String,
    pub data_dir: PathBuf,
    /// A store URL: `embedded` or `embedded://PATH`.
    pub store: String,
    /// Base64 of 32 bytes. Absent: generated once into `data_dir/kek` (single node).
    #[serde(default)]
    pub kek: Option<Secret>,
    /// `error`, `warn`, `info`, `debug` or `trace`.
    pub log_level: String,
    #[serde(default)]
    pub admin: AdminConfig,
    pub limits: LimitsConfig,
    pub views: ViewsConfig,
    pub registration: RegistrationConfig,
    pub tokens: TokensConfig,
    pub keys: KeysConfig,
    pub login: LoginConfig,
    pub audit: AuditConfig,
    #[serde(default)]
    pub sink: SinkConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
}

/// Who may read `/metrics`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// When set, `/metrics` answers only requests bearing this token
    /// (Prometheus' `authorization` / `bearer_token_file`). Unset: public.
    #[serde(default)]
    pub token: Option<Secret>,
}

/// Where the log is shipped (each sink is off unless configured).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    #[serde(default)]
    pub kafka: Option<KafkaSinkConfig>,
    #[serde(default)]
    pub ndjson: Option<NdjsonSinkConfig>,
}

/// The Kafka sink.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkConfig {
    /// `host:port,host:port`.
    pub brokers: String,
    #[serde(default = "default_topic")]
    pub topic: String,
    #[serde(default)]
    pub format: SinkFormat,
    #[serde(default)]
    pub personal: Personal,
    /// librdkafka properties passed through (`security.protocol`,
    /// `sasl.password`, …; values are redacted in `Debug`)
    /// `sasl.mechanism`, `ssl.ca.location`, …).
    #[serde(default)]
    pub properties: BTreeMap<String, Secret>,
}

fn default_topic() -> String {
    "authlog.events".into()
}

/// What a sink sends: the envelope as stored (`native`) or OCSF.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SinkFormat {
    #[default]
    Native,
    Ocsf,
}

/// What a sink does with fields the schemas mark personal.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Personal {
    /// As stored.
    #[default]
    Full,
    /// Replaced by a keyed hash, the same for the same value.
    Pseudonymised,
    /// Removed.
    None,
}

/// NDJSON appended to a file (or standard output with `-`), for a log shipper.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NdjsonSinkConfig {
    pub path: PathBuf,
    #[serde(default)]
    pub format: SinkFormat,
    #[serde(default)]
    pub personal: Personal,
}

/// The audit trail: who may read it and how its checkpoints are signed.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Tokens that read the audit trail (`/admin/audit/…`) and nothing else.
    #[serde(default)]
    pub auditor_tokens: Vec<NamedToken>,
    /// Base64 of the 32-byte Ed25519 seed that signs checkpoints. Never
    /// generated: it comes from outside the data directory, so whoever can
    /// rewrite the store cannot re-sign it.
    #[serde(default)]
    pub signing_key: Option<Secret>,
    /// A file holding the same (e.g. a mounted secret); not in the data directory.
    #[serde(default)]
    pub signing_key_file: Option<PathBuf>,
    /// Public keys (base64) of earlier signing keys whose checkpoints still verify.
    #[serde(default)]
    pub previous_public_keys: Vec<String>,
    /// A signed checkpoint this often when the log has grown (0: only on demand).
    pub checkpoint_every_s: u64,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RegistrationConfig {
    /// Self-registration at `/oidc/register`.
    pub enabled: bool,
    /// RFC 7591 initial access tokens for `/oidc/oauth2/register`.
    #[serde(default)]
    pub initial_access_tokens: Vec<Secret>,
    /// Dynamic client registration without an initial access token
    /// (rate-limited per IP). Off by default.
    pub open_dynamic: bool,
}

/// Lifetimes in seconds, and what access tokens are for.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TokensConfig {
    pub code_ttl_s: i64,
    pub access_ttl_s: i64,
    pub id_token_ttl_s: i64,
    pub refresh_ttl_s: i64,
    /// A grant (and every refresh token of it) ends this long after its code.
    pub grant_ttl_s: i64,
    pub session_ttl_s: i64,
    /// The `aud` of access tokens (RFC 9068): the resource servers, never a client.
    pub audience: String,
    /// Clock leeway when checking token times.
    pub leeway_s: i64,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KeysConfig {
    /// The default signing algorithm: RS256, ES256 or EdDSA.
    pub algorithm: String,
    /// How long relying parties may cache the JWKS: a new key is published this
    /// long before it signs.
    pub jwks_cache_s: i64,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LoginConfig {
    /// Consecutive failures that lock an account.
    pub max_failures: u32,
    /// How long a lock lasts.
    pub lock_s: i64,
    /// Proxies whose `Forwarded` / `X-Forwarded-For` are believed: addresses
    /// or CIDR ranges (an ingress's pod network, `10.0.0.0/8`).
    pub trusted_proxies: Vec<Cidr>,
    /// The header those proxies set: `x-forwarded-for` or `forwarded`.
    pub proxy_header: String,
    /// Password hashes computed at once at most; more wait in a queue of this
    /// size, beyond which requests get 503.
    pub hash_workers: usize,
    pub hash_queue: usize,
}

/// An address range: `192.0.2.0/24`, `2001:db8::/32`, or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: std::net::IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` is in the range (an IPv4-mapped IPv6 address counts as
    /// its IPv4 address).
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.network, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let network: std::net::IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| "not an IP address or CIDR range".to_string())?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("the prefix length must be 0 to {max}"))?,
        };
        Ok(Cidr { network, prefix })
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Cidr, D::Error> {
        let s = String::deserialize(d)?;
        s.parse()
            .map_err(|e: String| serde::de::Error::custom(format!("trusted proxy: {e}")))
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// The issuer a server listening on `listen` answers as when none is set.
fn default_issuer(listen: SocketAddr) -> String {
    let ip = match listen.ip() {
        ip if ip.is_unspecified() => std::net::IpAddr::from([127, 0, 0, 1]),
        ip => ip,
    };
    format!("http://{}/oidc", SocketAddr::new(ip, listen.port()))
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: {error}")]
    Parse { path: String, error: String },
    #[error("unknown environment variable {0}; known: {1}")]
    UnknownEnv(String, String),
    #[error("environment variable {name}: {error}")]
    BadEnv { name: String, error: String },
}

const DEFAULTS: &str = r#"
listen = "127.0.0.1:8080"
data_dir = "./data"
store = "embedded"
log_level = "info"

[admin]
tokens = []

[limits]
body_bytes = 65536
header_timeout_s = 10
max_connections = 4096
shutdown_grace_s = 5

[views]
snapshot_every = 10000
wait_ms = 5000

[registration]
enabled = false
initial_access_tokens = []
open_dynamic = false

[tokens]
code_ttl_s = 60
access_ttl_s = 600
id_token_ttl_s = 600
refresh_ttl_s = 2592000
grant_ttl_s = 7776000
session_ttl_s = 86400
audience = "authlog-resources"
leeway_s = 60

[keys]
algorithm = "RS256"
jwks_cache_s = 600

[login]
max_failures = 5
lock_s = 900
trusted_proxies = []
proxy_header = "x-forwarded-for"
hash_workers = 2
hash_queue = 64

[audit]
auditor_tokens = []
previous_public_keys = []
checkpoint_every_s = 3600
"#;

/// `AUTHLOG_*` variables and the key each sets. `AUTHLOG_ADMIN_TOKEN` adds a token
/// named `default`; `AUTHLOG_TEST_*` belong to the test suite.
const ENV_KEYS: &[(&str, &str, Kind)] = &[
    ("AUTHLOG_LISTEN", "listen", Kind::Str),
    ("AUTHLOG_ISSUER", "issuer", Kind::Str),
    ("AUTHLOG_DATA_DIR", "data_dir", Kind::Str),
    ("AUTHLOG_STORE", "store", Kind::Str),
    ("AUTHLOG_KEK", "kek", Kind::Str),
    ("AUTHLOG_METRICS_TOKEN", "metrics.token", Kind::Str),
    ("AUTHLOG_LOG_LEVEL", "log_level", Kind::Str),
    ("AUTHLOG_LIMITS_BODY_BYTES", "limits.body_bytes", Kind::Int),
    (
        "AUTHLOG_LIMITS_HEADER_TIMEOUT_S",
        "limits.header_timeout_s",
        Kind::Int,
    ),
    (
        "AUTHLOG_LIMITS_MAX_CONNECTIONS",
        "limits.max_connections",
        Kind::Int,
    ),
    (
        "AUTHLOG_LIMITS_SHUTDOWN_GRACE_S",
        "limits.shutdown_grace_s",
        Kind::Int,
    ),
    (
        "AUTHLOG_REGISTRATION_ENABLED",
        "registration.enabled",
        Kind::Bool,
    ),
    (
        "AUTHLOG_REGISTRATION_OPEN_DYNAMIC",
        "registration.open_dynamic",
        Kind::Bool,
    ),
    ("AUTHLOG_TOKENS_AUDIENCE", "tokens.audience", Kind::Str),
    (
        "AUTHLOG_TOKENS_ACCESS_TTL_S",
        "tokens.access_ttl_s",
        Kind::Int,
    ),
    (
        "AUTHLOG_TOKENS_REFRESH_TTL_S",
        "tokens.refresh_ttl_s",
        Kind::Int,
    ),
    (
        "AUTHLOG_TOKENS_SESSION_TTL_S",
        "tokens.session_ttl_s",
        Kind::Int,
    ),
    (
        "AUTHLOG_TOKENS_GRANT_TTL_S",
        "tokens.grant_ttl_s",
        Kind::Int,
    ),
    ("AUTHLOG_KEYS_ALGORITHM", "keys.algorithm", Kind::Str),
    ("AUTHLOG_KEYS_JWKS_CACHE_S", "keys.jwks_cache_s", Kind::Int),
    (
        "AUTHLOG_LOGIN_MAX_FAILURES",
        "login.max_failures",
        Kind::Int,
    ),
    ("AUTHLOG_LOGIN_LOCK_S", "login.lock_s", Kind::Int),
    (
        "AUTHLOG_LOGIN_TRUSTED_PROXIES",
        "login.trusted_proxies",
        Kind::List,
    ),
    (
        "AUTHLOG_VIEWS_SNAPSHOT_EVERY",
        "views.snapshot_every",
        Kind::Int,
    ),
    ("AUTHLOG_VIEWS_WAIT_MS", "views.wait_ms", Kind::Int),
    ("AUTHLOG_AUDIT_SIGNING_KEY", "audit.signing_key", Kind::Str),
    (
        "AUTHLOG_AUDIT_SIGNING_KEY_FILE",
        "audit.signing_key_file",
        Kind::Str,
    ),
    (
        "AUTHLOG_AUDIT_CHECKPOINT_EVERY_S",
        "audit.checkpoint_every_s",
        Kind::Int,
    ),
    (
        "AUTHLOG_SINK_KAFKA_BROKERS",
        "sink.kafka.brokers",
        Kind::Str,
    ),
    ("AUTHLOG_SINK_KAFKA_TOPIC", "sink.kafka.topic", Kind::Str),
    ("AUTHLOG_SINK_KAFKA_FORMAT", "sink.kafka.format", Kind::Str),
    (
        "AUTHLOG_SINK_KAFKA_PERSONAL",
        "sink.kafka.personal",
        Kind::Str,
    ),
    ("AUTHLOG_SINK_NDJSON_PATH", "sink.ndjson.path", Kind::Str),
    (
        "AUTHLOG_SINK_NDJSON_FORMAT",
        "sink.ndjson.format",
        Kind::Str,
    ),
    (
        "AUTHLOG_SINK_NDJSON_PERSONAL",
        "sink.ndjson.personal",
        Kind::Str,
    ),
];

#[derive(Clone, Copy)]
enum Kind {
    Str,
    Int,
    Bool,
    /// Comma-separated.
    List,
}

fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// A TOML syntax error as a line and column and what is wrong, never the
/// line itself: it may hold an admin token or a KEK.
fn parse_table(text: &str, origin: &str) -> Result<toml::Table, ConfigError> {
    text.parse::<toml::Table>().map_err(|e| {
        let at = e
            .span()
            .map(|span| {
                let before = &text[..span.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
                format!("line {line}, column {column}: ")
            })
            .unwrap_or_default();
        ConfigError::Parse {
            path: origin.to_string(),
            error: format!("{at}{}", redact_values(e.message(), &scalars_of_text(text))),
        }
    })
}

/// Every scalar a configuration holds (strings, numbers), so that error
/// messages can be scrubbed of them.
fn scalars_of_table(table: &toml::Table, out: &mut Vec<String>) {
    fn walk(v: &toml::Value, out: &mut Vec<String>) {
        match v {
            toml::Value::String(s) => out.push(s.clone()),
            toml::Value::Integer(i) => out.push(i.to_string()),
            toml::Value::Float(f) => out.push(f.to_string()),
            toml::Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            toml::Value::Table(t) => t.values().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    table.values().for_each(|v| walk(v, out));
}

/// The quoted strings and bare values of a text that does not parse: what
/// its values could be.
fn scalars_of_text(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        if let Some((_, value)) = line.split_once('=') {
            out.push(value.trim().to_string());
            out.extend(
                value
                    .split(['"', '\'', ' ', ',', '[', ']', '{', '}'])
                    .filter(|t| !t.is_empty())
                    .map(str::to_string),
            );
        }
    }
    out
}

/// `message` with every configured value of four characters or more
/// replaced by `[redacted]` (serde's messages quote the value they could not
/// take: `invalid type: string "…"`).
fn redact_values(message: &str, values: &[String]) -> String {
    let mut values: Vec<&String> = values.iter().filter(|v| v.chars().count() >= 4).collect();
    // Longest first, so a secret containing another value goes whole.
    values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    let mut out = message.to_string();
    for v in values {
        if out.contains(v.as_str()) {
            out = out.replace(v.as_str(), "[redacted]");
        }
    }
    out
}

impl Config {
    /// Loads defaults, then `file` if given, then the environment `env`.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut table = parse_table(DEFAULTS, "defaults")?;
        let origin = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
                    path: path.to_path_buf(),
                    error,
                })?;
                merge(&mut table, parse_table(&text, &path.display().to_string())?);
                path.display().to_string()
            }
            None => "configuration".to_string(),
        };
        let env: BTreeMap<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("AUTHLOG_"))
            .collect();
        for (name, value) in &env {
            if name.starts_with("AUTHLOG_TEST_") {
                continue;
            }
            if name == "AUTHLOG_REGISTRATION_INITIAL_ACCESS_TOKEN" {
                if let Some(toml::Value::Table(reg)) = table.get_mut("registration")
                    && let Some(toml::Value::Array(tokens)) = reg.get_mut("initial_access_tokens")
                {
                    tokens.push(toml::Value::String(value.clone()));
                }
                continue;
            }
            // AUTHLOG_SINK_KAFKA_PROPERTY_SASL_MECHANISM → sink.kafka.properties
            // "sasl.mechanism" (librdkafka property names use dots only).
            if let Some(prop) = name.strip_prefix("AUTHLOG_SINK_KAFKA_PROPERTY_") {
                let prop = prop.to_ascii_lowercase().replace('_', ".");
                let sink = table
                    .entry("sink".to_string())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                if let toml::Value::Table(sink) = sink {
                    let kafka = sink
                        .entry("kafka".to_string())
                        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                    if let toml::Value::Table(kafka) = kafka {
                        let props = kafka
                            .entry("properties".to_string())
                            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                        if let toml::Value::Table(props) = props {
                            props.insert(prop, toml::Value::String(value.clone()));
                        }
                    }
                }
                continue;
            }
            let named = match name.as_str() {
                "AUTHLOG_ADMIN_TOKEN" => Some(("admin", "tokens", "default")),
                "AUTHLOG_AUDITOR_TOKEN" => Some(("audit", "auditor_tokens", "auditor")),
                _ => None,
            };
            if let Some((section, list, token_name)) = named {
                let mut token = toml::Table::new();
                token.insert("name".into(), toml::Value::String(token_name.into()));
                token.insert("token".into(), toml::Value::String(value.clone()));
                if let Some(toml::Value::Table(t)) = table.get_mut(section)
                    && let Some(toml::Value::Array(tokens)) = t.get_mut(list)
                {
                    tokens.push(toml::Value::Table(token));
                }
                continue;
            }
            let Some((_, key, kind)) = ENV_KEYS.iter().find(|(n, _, _)| n == name) else {
                let mut known: Vec<&str> = ENV_KEYS.iter().map(|(n, _, _)| *n).collect();
                known.push("AUTHLOG_ADMIN_TOKEN");
                known.push("AUTHLOG_AUDITOR_TOKEN");
                known.push("AUTHLOG_REGISTRATION_INITIAL_ACCESS_TOKEN");
                return Err(ConfigError::UnknownEnv(name.clone(), known.join(", ")));
            };
            let v = match kind {
                Kind::Str => toml::Value::String(value.clone()),
                Kind::List => toml::Value::Array(
                    value
                        .split(',')
                        .map(str::trim)
                        .filter(|v| !v.is_empty())
                        .map(|v| toml::Value::String(v.to_string()))
                        .collect(),
                ),
                Kind::Bool => toml::Value::Boolean(match value.as_str() {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    _ => {
                        return Err(ConfigError::BadEnv {
                            name: name.clone(),
                            error: "expected true or false".into(),
                        });
                    }
                }),
                Kind::Int => {
                    toml::Value::Integer(value.parse().map_err(|_| ConfigError::BadEnv {
                        name: name.clone(),
                        error: "expected an integer".into(),
                    })?)
                }
            };
            // `a.b.c`: tables `a` and `a.b`, created as needed.
            let mut parts: Vec<&str> = key.split('.').collect();
            let field = parts.pop().unwrap_or_default();
            let mut at = &mut table;
            for section in parts {
                let entry = at
                    .entry(section.to_string())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                match entry {
                    toml::Value::Table(inner) => at = inner,
                    _ => {
                        return Err(ConfigError::BadEnv {
                            name: name.clone(),
                            error: format!("{section} is not a table"),
                        });
                    }
                }
            }
            at.insert(field.to_string(), v);
        }
        let mut values = Vec::new();
        scalars_of_table(&table, &mut values);
        values.extend(env.values().cloned());
        let config: Config = toml::Value::Table(table)
            .try_into()
            // No source text here, so no line is quoted: the message and
            // the key path (`in tokens.access_ttl_s`), values redacted.
            .map_err(|e: toml::de::Error| ConfigError::Parse {
                path: origin,
                error: redact_values(&e.to_string().replace('\n', " "), &values),
            })?;
        let mut config = config;
        if config.issuer.is_empty() {
            config.issuer = default_issuer(config.listen);
        }
        config.validate()?;
        Ok(config)
    }

    /// Why the issuer may not reach this server, if it plainly cannot: an
    /// `http://` issuer on this machine's own address but another port than
    /// the one authlog listens on (discovery would send clients to a port
    /// nothing serves, unless something forwards it).
    pub fn issuer_mismatch(&self) -> Option<String> {
        let rest = self.issuer.strip_prefix("http://")?;
        let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (h, p.parse::<u16>().ok()?),
            _ => (authority, 80),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let local = host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback() || ip == self.listen.ip());
        (local && port != self.listen.port()).then(|| {
            format!(
                "the issuer {} names port {port}, but authlog listens on {}: discovery will point clients at a port nothing serves unless a proxy forwards it (set AUTHLOG_ISSUER, or leave it unset to follow AUTHLOG_LISTEN)",
                self.issuer, self.listen
            )
        })
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |error: &str| ConfigError::Parse {
            path: "configuration".into(),
            error: error.into(),
        };
        if !matches!(
            self.log_level.as_str(),
            "error" | "warn" | "info" | "debug" | "trace"
        ) {
            return Err(bad("log_level must be error, warn, info, debug or trace"));
        }
        if !(self.issuer.starts_with("https://") || self.issuer.starts_with("http://")) {
            return Err(bad("issuer must be an http(s) URL"));
        }
        if !matches!(self.keys.algorithm.as_str(), "RS256" | "ES256" | "EdDSA") {
            return Err(bad("keys.algorithm must be RS256, ES256 or EdDSA"));
        }
        let t = &self.tokens;
        if [
            t.code_ttl_s,
            t.access_ttl_s,
            t.id_token_ttl_s,
            t.refresh_ttl_s,
            t.grant_ttl_s,
            t.session_ttl_s,
        ]
        .iter()
        .any(|v| *v <= 0)
        {
            return Err(bad("token and session lifetimes must be positive"));
        }
        if !matches!(
            self.login.proxy_header.as_str(),
            "x-forwarded-for" | "forwarded"
        ) {
            return Err(bad(
                "login.proxy_header must be x-forwarded-for or forwarded",
            ));
        }
        if self.login.max_failures == 0 || self.login.hash_workers == 0 {
            return Err(bad(
                "login.max_failures and login.hash_workers must be positive",
            ));
        }
        if self.limits.body_bytes == 0 {
            return Err(bad("limits.body_bytes must be positive"));
        }
        if self.limits.header_timeout_s == 0 || self.limits.max_connections == 0 {
            return Err(bad(
                "limits.header_timeout_s and limits.max_connections must be positive",
            ));
        }
        // Admin and auditor tokens share one namespace: the name is what the
        // log records as the actor.
        let all = || self.admin.tokens.iter().chain(&self.audit.auditor_tokens);
        let mut names: Vec<&str> = all().map(|t| t.name.as_str()).collect();
        names.sort_unstable();
        if names.windows(2).any(|w| w[0] == w[1]) {
            return Err(bad("admin and auditor token names must be unique"));
        }
        if all().any(|t| t.token.expose().len() < 16) {
            return Err(bad(
                "admin and auditor tokens must be at least 16 characters",
            ));
        }
        if let Some(k) = &self.sink.kafka {
            if k.brokers.trim().is_empty() {
                return Err(bad("sink.kafka.brokers is empty"));
            }
            if ["enable.idempotence", "enable.gapless.guarantee"]
                .iter()
                .any(|p| k.properties.get(*p).is_some_and(|v| v.expose() != "true"))
                || k.properties
                    .get("acks")
                    .is_some_and(|v| v.expose() != "all" && v.expose() != "-1")
            {
                return Err(bad(
                    "sink.kafka.properties may not turn off enable.idempotence, enable.gapless.guarantee or acks=all: the sink would lose, duplicate or reorder events",
                ));
            }
        }
        // An initial access token lets its holder register clients: as
        // unguessable as an admin token.
        if self
            .registration
            .initial_access_tokens
            .iter()
            .any(|t| t.expose().len() < 16)
        {
            return Err(bad(
                "registration.initial_access_tokens must each be at least 16 characters",
            ));
        }
        if self
            .metrics
            .token
            .as_ref()
            .is_some_and(|t| t.expose().len() < 16)
        {
            return Err(bad("metrics.token must be at least 16 characters"));
        }
        if self.audit.signing_key.is_some() && self.audit.signing_key_file.is_some() {
            return Err(bad(
                "give audit.signing_key or audit.signing_key_file, not both",
            ));
        }
        if let Some(file) = &self.audit.signing_key_file {
            // Resolved where they exist (symlinks), else made absolute: a
            // relative path must not slip past the comparison.
            let resolve = |p: &Path| {
                p.canonicalize()
                    .or_else(|_| std::path::absolute(p))
                    .unwrap_or_else(|_| p.to_path_buf())
            };
            let inside = resolve(file).starts_with(resolve(&self.data_dir));
            if inside {
                return Err(bad(
                    "audit.signing_key_file must not be in the data directory: whoever can rewrite the log could then re-sign it",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn layers_defaults_file_and_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("authlog.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9000\"\n[limits]\nbody_bytes = 1024\n[[admin.tokens]]\nname = \"ops\"\ntoken = \"0123456789abcdef-ops\"\n",
        )
        .unwrap();
        let c = Config::load(
            Some(&file),
            env(&[
                ("AUTHLOG_LISTEN", "127.0.0.1:9100"),
                ("AUTHLOG_ADMIN_TOKEN", "0123456789abcdef-env"),
                ("PATH", "/bin"),
            ]),
        )
        .unwrap();
        assert_eq!(c.listen.port(), 9100);
        assert_eq!(c.limits.body_bytes, 1024);
        assert_eq!(c.views.snapshot_every, 10000);
        assert_eq!(c.admin.tokens.len(), 2);
        assert_eq!(c.admin.tokens[1].name, "default");
        let debug = format!("{c:?}");
        assert!(
            !debug.contains("0123456789abcdef"),
            "secrets leak into Debug: {debug}"
        );
    }

    #[test]
    fn short_initial_access_and_metrics_tokens_are_refused() {
        let e = Config::load(
            None,
            env(&[("AUTHLOG_REGISTRATION_INITIAL_ACCESS_TOKEN", "short-iat")]),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("at least 16 characters"), "{e}");
        assert!(!e.contains("short-iat"), "the value is not quoted: {e}");
        let e = Config::load(None, env(&[("AUTHLOG_METRICS_TOKEN", "tiny")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("metrics.token"), "{e}");
        let c = Config::load(
            None,
            env(&[("AUTHLOG_METRICS_TOKEN", "metrics-0123456789abcdef")]),
        )
        .unwrap();
        assert_eq!(
            c.metrics.token.as_ref().map(|t| t.expose()),
            Some("metrics-0123456789abcdef")
        );
    }

    #[test]
    fn the_deploy_example_loads() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/authlog.example.toml");
        let c = Config::load(Some(&file), env(&[])).unwrap();
        assert_eq!(c.listen.port(), 8080);
        assert_eq!(c.store, "embedded");
    }

    #[test]
    fn kafka_properties_pass_through_but_cannot_weaken_delivery() {
        let c = Config::load(
            None,
            env(&[
                ("AUTHLOG_SINK_KAFKA_BROKERS", "k1:9092,k2:9092"),
                ("AUTHLOG_SINK_KAFKA_PROPERTY_SECURITY_PROTOCOL", "SASL_SSL"),
                (
                    "AUTHLOG_SINK_KAFKA_PROPERTY_SASL_MECHANISM",
                    "SCRAM-SHA-512",
                ),
            ]),
        )
        .unwrap();
        let k = c.sink.kafka.unwrap();
        assert_eq!(k.topic, "authlog.events");
        assert_eq!(k.properties["security.protocol"].expose(), "SASL_SSL");
        assert_eq!(k.properties["sasl.mechanism"].expose(), "SCRAM-SHA-512");
        let c = Config::load(
            None,
            env(&[
                ("AUTHLOG_SINK_KAFKA_BROKERS", "k1:9092"),
                ("AUTHLOG_SINK_KAFKA_PROPERTY_SASL_PASSWORD", "hunter2-kafka"),
            ]),
        )
        .unwrap();
        assert!(
            !format!("{c:?}").contains("hunter2-kafka"),
            "a password in Debug"
        );
        for (name, value) in [
            ("AUTHLOG_SINK_KAFKA_PROPERTY_ACKS", "1"),
            ("AUTHLOG_SINK_KAFKA_PROPERTY_ENABLE_IDEMPOTENCE", "false"),
            (
                "AUTHLOG_SINK_KAFKA_PROPERTY_ENABLE_GAPLESS_GUARANTEE",
                "false",
            ),
        ] {
            let err = Config::load(
                None,
                env(&[("AUTHLOG_SINK_KAFKA_BROKERS", "k1:9092"), (name, value)]),
            )
            .unwrap_err()
            .to_string();
            assert!(err.contains("may not turn off"), "{name}: {err}");
        }
    }

    #[test]
    fn trusted_proxies_take_addresses_and_cidr_ranges() {
        let c = Config::load(
            None,
            env(&[(
                "AUTHLOG_LOGIN_TRUSTED_PROXIES",
                "10.0.0.0/8, 192.0.2.7, 2001:db8::/32",
            )]),
        )
        .unwrap();
        let t = &c.login.trusted_proxies;
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        assert!(t[0].contains(ip("10.200.3.4")));
        assert!(!t[0].contains(ip("11.0.0.1")));
        assert!(t[0].contains(ip("::ffff:10.1.1.1")));
        assert!(t[1].contains(ip("192.0.2.7")) && !t[1].contains(ip("192.0.2.8")));
        assert!(t[2].contains(ip("2001:db8:ffff::1")) && !t[2].contains(ip("2001:db9::1")));
        assert!(
            "0.0.0.0/0"
                .parse::<Cidr>()
                .unwrap()
                .contains(ip("203.0.113.9"))
        );
        for bad in ["10.0.0.0/33", "10.0.0/8", "proxy.example", "::/129"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
        assert!(
            Config::load(
                None,
                env(&[("AUTHLOG_LOGIN_TRUSTED_PROXIES", "10.0.0.0/99")])
            )
            .is_err()
        );
    }

    #[test]
    fn the_default_issuer_follows_the_listen_address() {
        let c = Config::load(None, env(&[])).unwrap();
        assert_eq!(c.issuer, "http://127.0.0.1:8080/oidc");
        assert!(c.issuer_mismatch().is_none());
        let c = Config::load(None, env(&[("AUTHLOG_LISTEN", "127.0.0.1:9090")])).unwrap();
        assert_eq!(c.issuer, "http://127.0.0.1:9090/oidc");
        let c = Config::load(None, env(&[("AUTHLOG_LISTEN", "0.0.0.0:9090")])).unwrap();
        assert_eq!(c.issuer, "http://127.0.0.1:9090/oidc");
        let c = Config::load(None, env(&[("AUTHLOG_LISTEN", "[::1]:9091")])).unwrap();
        assert_eq!(c.issuer, "http://[::1]:9091/oidc");
        assert!(c.issuer_mismatch().is_none());
        // Set by hand to another port on this machine: said at start.
        let c = Config::load(
            None,
            env(&[
                ("AUTHLOG_LISTEN", "127.0.0.1:9090"),
                ("AUTHLOG_ISSUER", "http://127.0.0.1:8080/oidc"),
            ]),
        )
        .unwrap();
        assert!(c.issuer_mismatch().unwrap().contains("names port 8080"));
        // A public https issuer behind a proxy is not second-guessed.
        let c = Config::load(None, env(&[("AUTHLOG_ISSUER", "https://id.example/oidc")])).unwrap();
        assert!(c.issuer_mismatch().is_none());
    }

    #[test]
    fn no_error_message_quotes_a_configured_value() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("authlog.toml");
        let secret = "hunter2-s3cret-admin-token";
        // A syntax error on the line holding a secret.
        std::fs::write(
            &file,
            format!("[[admin.tokens]]\nname = \"ops\"\ntoken = \"{secret}\" oops\n"),
        )
        .unwrap();
        let err = Config::load(Some(&file), env(&[])).unwrap_err().to_string();
        assert!(!err.contains(secret), "{err}");
        assert!(err.contains("line 3"), "{err}");
        // A type error on a secret's value.
        std::fs::write(&file, format!("kek = [\"{secret}\"]\n")).unwrap();
        let err = Config::load(Some(&file), env(&[])).unwrap_err().to_string();
        assert!(!err.contains(secret), "{err}");
        assert!(err.contains("in `kek`"), "the key is named: {err}");
        // A wrong variant, from the environment.
        let err = Config::load(
            None,
            env(&[
                ("AUTHLOG_SINK_KAFKA_BROKERS", "k:9092"),
                ("AUTHLOG_SINK_KAFKA_FORMAT", "ocsf-with-hunter2-inside"),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn unknown_keys_and_variables_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("authlog.toml");
        std::fs::write(&file, "lisen = \"127.0.0.1:9000\"\n").unwrap();
        let err = Config::load(Some(&file), env(&[])).unwrap_err().to_string();
        assert!(err.contains("lisen"), "{err}");
        let err = Config::load(None, env(&[("AUTHLOG_LISTN", "x")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("AUTHLOG_LISTN"), "{err}");
        assert!(Config::load(None, env(&[("AUTHLOG_LISTEN", "nowhere")])).is_err());
        assert!(Config::load(None, env(&[("AUTHLOG_TEST_ANYTHING", "x")])).is_ok());
    }
}
