//! The `authlog` command line.

use std::io::Write;
use std::path::PathBuf;

use authlog_schemas::Position;
use clap::{Parser, Subcommand};
use futures_util::StreamExt;

use crate::app::{self, ADMIN_TOKEN_FILE, Application, StartError};
use crate::config::Config;
use crate::store::{CheckReport, DynStore, ReadFrom};

#[derive(Debug, Parser)]
#[command(
    name = "authlog",
    version,
    about = "An OpenID Connect provider whose whole state is an append-only event log"
)]
pub struct Cli {
    /// A TOML configuration file (defaults, then this file, then AUTHLOG_* variables).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve,
    /// Read the event log.
    Events {
        #[command(subcommand)]
        command: EventsCommand,
    },
    /// Inspect the store.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
    /// Manage signing keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Manage clients (relying parties).
    Client {
        #[command(subcommand)]
        command: ClientCommand,
    },
    /// Manage resource servers: the APIs access tokens are for, and their scopes.
    ResourceServer {
        #[command(subcommand)]
        command: ResourceServerCommand,
    },
    /// Act on a user's sessions and grants.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Query, export and verify the audit trail.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Ship the log to a sink.
    Sink {
        #[command(subcommand)]
        command: SinkCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum SinkCommand {
    /// Run the configured sinks (Kafka, NDJSON) in this process, without the
    /// HTTP server: for operators who keep the sink in one replica of its own.
    /// On a shared store each sink still takes its lease, so it never runs
    /// twice; on the embedded store the server must be stopped.
    Run {
        /// Serve Prometheus metrics (sink lag, errors, lease) on this address.
        #[arg(long, value_name = "ADDR")]
        metrics_listen: Option<std::net::SocketAddr>,
    },
    /// Re-send history (for a SIEM that lost data, or a new consumer), in the
    /// configured sink's format, without moving its checkpoint.
    Replay {
        /// First position to send.
        #[arg(long)]
        from: Position,
        /// Last position to send (default: the head as of now).
        #[arg(long)]
        to: Option<Position>,
        /// Write NDJSON here (`-`: standard output) instead of sending to the
        /// configured sink (Kafka if configured, else the NDJSON file).
        #[arg(long, short)]
        output: Option<PathBuf>,
        #[command(flatten)]
        remote: Remote,
    },
}

// Parsed once per run: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Recompute the Merkle tree from the stored log, check every checkpoint's
    /// signature and root, and name the first damaged event.
    Verify {
        /// A checkpoint kept outside the log (JSON from /admin/audit/checkpoint,
        /// e.g. a copy from the SIEM). Repeatable; needs the server stopped.
        #[arg(long = "checkpoint", value_name = "FILE")]
        checkpoints: Vec<PathBuf>,
        /// A trusted audit public key (base64, a file, or the JSON of
        /// /admin/audit/key); repeatable. Default: the configured signing key's.
        #[arg(long = "key", value_name = "KEY")]
        keys: Vec<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Export the audit trail: NDJSON with inclusion proofs against a signed
    /// checkpoint (verifiable offline with `verify-export`), or CSV.
    Export {
        #[arg(long)]
        subject: Option<String>,
        #[arg(long = "client-id")]
        client_id: Option<String>,
        #[arg(long = "session-id")]
        session_id: Option<String>,
        /// An event type or prefix (`login.`); repeatable.
        #[arg(long = "type")]
        types: Vec<String>,
        /// success or failure.
        #[arg(long)]
        outcome: Option<String>,
        #[arg(long)]
        ip: Option<String>,
        /// RFC 3339.
        #[arg(long)]
        from: Option<String>,
        /// RFC 3339.
        #[arg(long)]
        to: Option<String>,
        /// ndjson (default) or csv.
        #[arg(long, default_value = "ndjson")]
        format: String,
        /// Plain NDJSON event lines, without proofs.
        #[arg(long = "no-proofs")]
        no_proofs: bool,
        /// Prove against the existing checkpoint of this tree size (default: a
        /// new checkpoint of the whole log).
        #[arg(long = "checkpoint-size")]
        checkpoint_size: Option<u64>,
        /// Write here instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Verify an exported slice offline: every event's inclusion proof against
    /// the checkpoint, the checkpoint's signature, and the signed trailer that
    /// makes a removed, reordered or truncated export fail.
    VerifyExport {
        file: PathBuf,
        /// The checkpoint (JSON from /admin/audit/checkpoint, or your copy).
        #[arg(long)]
        checkpoint: PathBuf,
        /// The audit public key: base64, or a file holding it or the JSON from
        /// /admin/audit/key.
        #[arg(long)]
        key: String,
    },
    /// Make a new audit signing key (printed once; keep it out of the data
    /// directory).
    Keygen,
}

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Register a client; prints its client_id and, for a confidential client,
    /// its secret (shown this once).
    Create {
        #[arg(long)]
        name: String,
        /// Repeatable.
        #[arg(long = "redirect-uri")]
        redirect_uris: Vec<String>,
        /// Repeatable: authorization_code, refresh_token, client_credentials
        /// (default: authorization_code and refresh_token).
        #[arg(long = "grant-type")]
        grant_types: Vec<String>,
        /// A public client (no secret; PKCE only).
        #[arg(long)]
        public: bool,
        /// Space-separated scopes.
        #[arg(long)]
        scope: Option<String>,
        /// `native` for apps using loopback or private-use scheme redirects.
        #[arg(long = "application-type")]
        application_type: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// List clients.
    List {
        #[command(flatten)]
        remote: Remote,
    },
    /// Show one client.
    Show {
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Issue a new secret (shown once); the old one stops at once, or after
    /// --grace-seconds.
    RotateSecret {
        id: String,
        #[arg(long = "grace-seconds")]
        grace_seconds: Option<i64>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Delete a client; its tokens stop working.
    Delete {
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
}

/// A resource server's description, as the admin API takes it:
/// `{"identifier": "https://api.example", "name": "Reports API", "scopes":
/// [{"name": "reports:read", "description": "Read your reports",
/// "consent": true, "machine": false, "registrable": false}]}`.
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
pub struct ResourceServerBody {
    /// The JSON description inline.
    #[arg(long)]
    json: Option<String>,
    /// A file holding the JSON description.
    #[arg(long)]
    file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum ResourceServerCommand {
    /// Register a resource server.
    Create {
        #[command(flatten)]
        body: ResourceServerBody,
        #[command(flatten)]
        remote: Remote,
    },
    /// List resource servers (and the default audience).
    List {
        #[command(flatten)]
        remote: Remote,
    },
    /// Show one resource server.
    Show {
        /// Its identifier.
        identifier: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Replace a resource server's name and scopes.
    Update {
        identifier: String,
        #[command(flatten)]
        body: ResourceServerBody,
        #[command(flatten)]
        remote: Remote,
    },
    /// Delete a resource server (refused while clients hold its scopes).
    Delete {
        identifier: String,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Sign a user out everywhere: every live session ends (`session.ended`,
    /// cause admin); grants issued for offline access stay.
    EndSessions {
        /// The user's id or username.
        user: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Revoke every live grant of a user (`token.revoked`, cause admin): their
    /// access and refresh tokens stop working at once.
    RevokeGrants {
        /// The user's id or username.
        user: String,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Publish a new signing key now; it signs after one JWKS cache lifetime and
    /// the key it replaces is retired after the longest token lifetime.
    Rotate {
        /// RS256, ES256 or EdDSA (default: the configured algorithm).
        #[arg(long)]
        alg: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
}

/// How to reach a running server when the store is locked by it.
#[derive(Debug, clap::Args)]
pub struct Remote {
    /// The server's base URL (default: http:// + the configured listen address).
    #[arg(long)]
    pub url: Option<String>,
    /// An admin token (default: the configured one, or DATA_DIR/admin-token).
    #[arg(long)]
    pub token: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Print events as NDJSON: bodies as stored plus position, revision and seq.
    Tail {
        /// Start at this position (default: the beginning of the log).
        #[arg(long)]
        from: Option<Position>,
        /// Keep following new events.
        #[arg(long)]
        follow: bool,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Read the whole log; check order, revisions and body digests.
    Check {
        #[command(flatten)]
        remote: Remote,
    },
    /// Copy a log into another store (`embedded://DIR`, `postgres://…`,
    /// `kurrentdb://…`), keeping ids, bodies, revisions and seq order, so the
    /// audit proofs hold on the copy. Stop the servers first; run it again to
    /// resume a copy that stopped.
    Copy {
        /// The store to copy from; `env:NAME` reads the URL from the
        /// environment variable NAME (keeps a password out of `ps`).
        #[arg(long, value_name = "URL")]
        from: String,
        /// The store to copy into: empty, or a copy this command started
        /// (`env:NAME` as for --from).
        #[arg(long, value_name = "URL")]
        to: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("{0}")]
    Other(String),
    #[error("the store check found {0} problem(s)")]
    Damaged(usize),
    #[error("verification failed: {0} problem(s)")]
    NotVerified(usize),
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    let config = Config::load(cli.config.as_deref(), std::env::vars())?;
    let level = config
        .log_level
        .parse::<tracing::Level>()
        .unwrap_or(tracing::Level::INFO);
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .try_init();
    match cli.command {
        Command::Serve => {
            let app = Application::build(config).await?;
            app.run_until(app::shutdown_signal()).await;
            Ok(())
        }
        Command::Events {
            command:
                EventsCommand::Tail {
                    from,
                    follow,
                    remote,
                },
        } => match app::open_store(&config, None, app::OpenMode::Existing).await {
            Ok(store) => {
                eprintln!("authlog: reading {} directly", describe_store(&config));
                tail_local(store, from, follow).await
            }
            Err(StartError::DataDirInUse(_)) => {
                let (url, token) = remote_target(&config, &remote)?;
                eprintln!(
                    "authlog: the store is locked by a running server; reading through its admin API at {url}"
                );
                tail_remote(&url, &token, from, follow).await
            }
            Err(e) => Err(e.into()),
        },
        Command::Client { command } => client_command(&config, command).await,
        Command::User { command } => user_command(&config, command).await,
        Command::ResourceServer { command } => resource_server_command(&config, command).await,
        Command::Audit { command } => audit_command(&config, command).await,
        Command::Sink {
            command: SinkCommand::Run { metrics_listen },
        } => sink_run(&config, metrics_listen).await,
        Command::Sink {
            command:
                SinkCommand::Replay {
                    from,
                    to,
                    output,
                    remote,
                },
        } => sink_replay(&config, from, to, output, remote).await,
        Command::Keys {
            command: KeysCommand::Rotate { alg, remote },
        } => {
            let alg = alg.unwrap_or_else(|| config.keys.algorithm.clone());
            match app::open_store(&config, None, app::OpenMode::Existing).await {
                Ok(store) => {
                    eprintln!(
                        "authlog: publishing the key in {} directly",
                        describe_store(&config)
                    );
                    let kid = rotate_local(&config, store, &alg).await?;
                    println!("{kid}");
                    Ok(())
                }
                Err(StartError::DataDirInUse(_)) => {
                    let (url, token) = remote_target(&config, &remote)?;
                    eprintln!(
                        "authlog: the store is locked by a running server; rotating through its admin API at {url}"
                    );
                    let response = reqwest::Client::new()
                        .post(format!("{url}/admin/keys/rotate"))
                        .bearer_auth(token)
                        .header("content-type", "application/json")
                        .body(serde_json::json!({"alg": alg}).to_string())
                        .send()
                        .await
                        .map_err(|e| CliError::Other(format!("{url}: {e}")))?;
                    let status = response.status();
                    let body = response.text().await.unwrap_or_default();
                    if !status.is_success() {
                        return Err(CliError::Other(format!(
                            "{url}/admin/keys/rotate: {status}: {body}"
                        )));
                    }
                    println!("{body}");
                    Ok(())
                }
                Err(e) => Err(e.into()),
            }
        }
        Command::Store {
            command: StoreCommand::Copy { from, to },
        } => store_copy(&config, &from, &to).await,
        Command::Store {
            command: StoreCommand::Check { remote },
        } => {
            let report = match app::open_store(&config, None, app::OpenMode::Existing).await {
                Ok(store) => {
                    eprintln!("authlog: checking {} directly", describe_store(&config));
                    store
                        .check()
                        .await
                        .map_err(|e| CliError::Other(e.to_string()))?
                }
                Err(StartError::DataDirInUse(_)) => {
                    let (url, token) = remote_target(&config, &remote)?;
                    eprintln!(
                        "authlog: the store is locked by a running server; checking through its admin API at {url}"
                    );
                    check_remote(&url, &token).await?
                }
                Err(e) => return Err(e.into()),
            };
            println!(
                "events: {}\nstreams: {}\nwith sealed sidecar: {}\nproblems: {}",
                report.events,
                report.streams,
                report.with_sidecar,
                report.problems.len()
            );
            for p in &report.problems {
                println!("  {p}");
            }
            if report.problems.is_empty() {
                Ok(())
            } else {
                Err(CliError::Damaged(report.problems.len()))
            }
        }
    }
}

fn remote_target(config: &Config, remote: &Remote) -> Result<(String, String), CliError> {
    let url = remote
        .url
        .clone()
        .unwrap_or_else(|| format!("http://{}", config.listen))
        .trim_end_matches('/')
        .to_string();
    let token = match (&remote.token, config.admin.tokens.first()) {
        (Some(t), _) => t.clone(),
        (None, Some(t)) => t.token.expose().to_string(),
        (None, None) => {
            let path = config.data_dir.join(ADMIN_TOKEN_FILE);
            std::fs::read_to_string(&path)
                .map_err(|e| {
                    CliError::Other(format!(
                        "no admin token given and {} is unreadable: {e}",
                        path.display()
                    ))
                })?
                .trim()
                .to_string()
        }
    };
    Ok((url, token))
}

/// Runs `f` against an admin API: the running server's when it holds the store,
/// otherwise an instance of the server started in this process on a loopback
/// port over the data directory (so both paths run the same code), stopped after.
async fn with_admin_api<T, F, Fut>(config: &Config, remote: &Remote, f: F) -> Result<T, CliError>
where
    F: FnOnce(String, String) -> Fut,
    Fut: std::future::Future<Output = Result<T, CliError>>,
{
    // An explicit --url always means that server: never a local data directory.
    let opened = if remote.url.is_some() {
        Err(StartError::DataDirInUse(config.data_dir.clone()))
    } else {
        app::open_store(config, None, app::OpenMode::Create).await
    };
    match opened {
        Err(StartError::DataDirInUse(_)) => {
            let (url, token) = remote_target(config, remote)?;
            eprintln!(
                "authlog: the store is locked by a running server; going through its admin API at {url}"
            );
            f(url, token).await
        }
        Err(e) => Err(e.into()),
        Ok(store) => {
            drop(store);
            eprintln!(
                "authlog: no server holds the store; working on the data directory {} directly",
                config.data_dir.display()
            );
            let listener = std::net::TcpListener::bind("127.0.0.1:0")
                .map_err(|e| CliError::Other(e.to_string()))?;
            let url = format!(
                "http://{}",
                listener
                    .local_addr()
                    .map_err(|e| CliError::Other(e.to_string()))?
            );
            let app = Application::build_on(config.clone(), Some(listener), |s| s).await?;
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let server = tokio::spawn(app.run_until(async {
                let _ = stopped.await;
            }));
            let (_, token) = remote_target(config, remote)?;
            let out = f(url, token).await;
            let _ = stop.send(());
            let _ = server.await;
            out
        }
    }
}

async fn admin_call(
    url: &str,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<serde_json::Value, CliError> {
    let mut req = reqwest::Client::new()
        .request(method, format!("{url}{path}"))
        .bearer_auth(token);
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let res = req
        .send()
        .await
        .map_err(|e| CliError::Other(format!("{url}: {e}")))?;
    let status = res.status();
    let text = res.text().await.unwrap_or_default();
    if !status.is_success() {
        return Err(CliError::Other(format!("{path}: {status}: {text}")));
    }
    if text.is_empty() {
        return Ok(serde_json::Value::Null);
    }
    serde_json::from_str(&text).map_err(|e| CliError::Other(format!("{path}: {e}")))
}

async fn client_command(config: &Config, command: ClientCommand) -> Result<(), CliError> {
    use reqwest::Method;
    let print =
        |v: &serde_json::Value| println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    match command {
        ClientCommand::Create {
            name,
            redirect_uris,
            grant_types,
            public,
            scope,
            application_type,
            remote,
        } => {
            let mut body = serde_json::json!({"client_name": name, "redirect_uris": redirect_uris});
            if let Some(o) = body.as_object_mut() {
                if !grant_types.is_empty() {
                    o.insert("grant_types".into(), grant_types.clone().into());
                }
                if public {
                    o.insert("token_endpoint_auth_method".into(), "none".into());
                }
                if let Some(s) = scope {
                    o.insert("scope".into(), s.into());
                }
                if let Some(a) = application_type {
                    o.insert("application_type".into(), a.into());
                }
            }
            let v = with_admin_api(config, &remote, |url, token| async move {
                admin_call(&url, &token, Method::POST, "/admin/clients", Some(body)).await
            })
            .await?;
            println!("client_id: {}", v["client_id"].as_str().unwrap_or_default());
            if let Some(secret) = v["client_secret"].as_str() {
                println!("client_secret: {secret}");
                eprintln!("authlog: the secret is shown this once; only its hash is kept");
            }
            Ok(())
        }
        ClientCommand::List { remote } => {
            let v = with_admin_api(config, &remote, |url, token| async move {
                let mut all = Vec::new();
                let mut after: Option<String> = None;
                loop {
                    let path = match &after {
                        Some(a) => format!("/admin/clients?limit=200&after={a}"),
                        None => "/admin/clients?limit=200".to_string(),
                    };
                    let page = admin_call(&url, &token, Method::GET, &path, None).await?;
                    all.extend(page["clients"].as_array().cloned().unwrap_or_default());
                    match page["next"].as_str() {
                        Some(n) => after = Some(n.to_string()),
                        None => break,
                    }
                }
                Ok(all)
            })
            .await?;
            for c in &v {
                println!(
                    "{}\t{}\t{}",
                    c["client_id"].as_str().unwrap_or_default(),
                    c["token_endpoint_auth_method"].as_str().unwrap_or_default(),
                    c["client_name"].as_str().unwrap_or_default()
                );
            }
            Ok(())
        }
        ClientCommand::Show { id, remote } => {
            let path = format!("/admin/clients/{id}");
            let v = with_admin_api(config, &remote, |url, token| async move {
                admin_call(&url, &token, Method::GET, &path, None).await
            })
            .await?;
            print(&v);
            Ok(())
        }
        ClientCommand::RotateSecret {
            id,
            grace_seconds,
            remote,
        } => {
            let path = format!("/admin/clients/{id}/secret");
            let body = serde_json::json!({"grace_seconds": grace_seconds.unwrap_or(0)});
            let v = with_admin_api(config, &remote, |url, token| async move {
                admin_call(&url, &token, Method::POST, &path, Some(body)).await
            })
            .await?;
            println!(
                "client_secret: {}",
                v["client_secret"].as_str().unwrap_or_default()
            );
            eprintln!("authlog: the secret is shown this once; only its hash is kept");
            Ok(())
        }
        ClientCommand::Delete { id, remote } => {
            let path = format!("/admin/clients/{id}");
            with_admin_api(config, &remote, |url, token| async move {
                admin_call(&url, &token, Method::DELETE, &path, None).await
            })
            .await?;
            println!("deleted {id}");
            Ok(())
        }
    }
}

fn read_body(body: ResourceServerBody) -> Result<serde_json::Value, CliError> {
    let text = match (body.json, body.file) {
        (Some(j), _) => j,
        (None, Some(f)) => std::fs::read_to_string(&f)
            .map_err(|e| CliError::Other(format!("reading {}: {e}", f.display())))?,
        (None, None) => return Err(CliError::Other("give --json or --file".into())),
    };
    serde_json::from_str(&text)
        .map_err(|e| CliError::Other(format!("the description is not JSON: {e}")))
}

async fn resource_server_command(
    config: &Config,
    command: ResourceServerCommand,
) -> Result<(), CliError> {
    use reqwest::Method;
    let segment = |id: &str| form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>();
    let (method, path, body, remote) = match command {
        ResourceServerCommand::Create { body, remote } => (
            Method::POST,
            "/admin/resource-servers".to_string(),
            Some(read_body(body)?),
            remote,
        ),
        ResourceServerCommand::List { remote } => (
            Method::GET,
            "/admin/resource-servers".to_string(),
            None,
            remote,
        ),
        ResourceServerCommand::Show { identifier, remote } => (
            Method::GET,
            format!("/admin/resource-servers/{}", segment(&identifier)),
            None,
            remote,
        ),
        ResourceServerCommand::Update {
            identifier,
            body,
            remote,
        } => (
            Method::PUT,
            format!("/admin/resource-servers/{}", segment(&identifier)),
            Some(read_body(body)?),
            remote,
        ),
        ResourceServerCommand::Delete { identifier, remote } => (
            Method::DELETE,
            format!("/admin/resource-servers/{}", segment(&identifier)),
            None,
            remote,
        ),
    };
    let deleting = method == Method::DELETE;
    let v = with_admin_api(config, &remote, |url, token| async move {
        admin_call(&url, &token, method, &path, body).await
    })
    .await?;
    if deleting {
        println!("deleted");
    } else {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    }
    Ok(())
}

async fn user_command(config: &Config, command: UserCommand) -> Result<(), CliError> {
    let (user, action, remote) = match command {
        UserCommand::EndSessions { user, remote } => (user, "end-sessions", remote),
        UserCommand::RevokeGrants { user, remote } => (user, "revoke-grants", remote),
    };
    let path = format!(
        "/admin/users/{}/{action}",
        form_urlencoded::byte_serialize(user.as_bytes()).collect::<String>()
    );
    let v = with_admin_api(config, &remote, |url, token| async move {
        admin_call(&url, &token, reqwest::Method::POST, &path, None).await
    })
    .await?;
    match (v["sessions_ended"].as_u64(), v["grants_revoked"].as_u64()) {
        (Some(n), _) => println!("{user}: {n} session(s) ended"),
        (_, Some(n)) => println!("{user}: {n} grant(s) revoked"),
        _ => println!("{v}"),
    }
    Ok(())
}

/// `keys rotate` on a stopped server: the same `key.generated` the server
/// appends, expected after the `keys` stream's last revision.
async fn rotate_local(config: &Config, store: DynStore, alg: &str) -> Result<String, CliError> {
    use authlog_schemas::{Actor, Envelope};
    let other = |e: &dyn std::fmt::Display| CliError::Other(e.to_string());
    // On a shared store: the KEK every node uses, never one generated here.
    let kek = app::load_shared_kek(config, &store).await?;
    let last = crate::store::read_whole_stream(store.as_ref(), "keys")
        .await
        .map_err(|e| other(&e))?
        .last()
        .map(|r| r.revision);
    let kid = uuid::Uuid::now_v7().to_string();
    let key = crate::crypto::generate_key(alg, &kid).map_err(|e| other(&e))?;
    let data = authlog_schemas::data::KeyGenerated {
        kid: kid.clone(),
        alg: alg.to_string(),
        public_jwk: key.public_jwk,
    };
    let env = Envelope::new(
        uuid::Uuid::now_v7().to_string(),
        "keys".into(),
        crate::oidc::service::now(),
        Actor::system("cli"),
        &data,
    )
    .map_err(|e| other(&e))?;
    let sealed = kek.seal(&key.private_der).map_err(|e| other(&e))?;
    let event = crate::store::NewEvent::new(env, Some(sealed)).map_err(|e| other(&e))?;
    store
        .append("keys", crate::store::Expected::after(last), vec![event])
        .await
        .map_err(|e| other(&e))?;
    Ok(kid)
}

async fn tail_local(store: DynStore, from: Option<Position>, follow: bool) -> Result<(), CliError> {
    let head = store
        .head()
        .await
        .map_err(|e| CliError::Other(e.to_string()))?;
    if !follow && (head.is_none() || from.is_some_and(|f| head.is_some_and(|h| f > h.position))) {
        return Ok(());
    }
    let mut events = store.subscribe_all(from.map_or(ReadFrom::Start, ReadFrom::At));
    let mut out = std::io::stdout().lock();
    while let Some(item) = events.next().await {
        let r = item.map_err(|e| CliError::Other(e.to_string()))?;
        out.write_all(&r.to_export_line())
            .and_then(|_| out.write_all(b"\n"))
            .map_err(|e| CliError::Other(e.to_string()))?;
        if follow {
            out.flush().map_err(|e| CliError::Other(e.to_string()))?;
        } else if head.is_some_and(|h| r.position >= h.position) {
            break;
        }
    }
    out.flush().map_err(|e| CliError::Other(e.to_string()))
}

async fn tail_remote(
    url: &str,
    token: &str,
    from: Option<Position>,
    follow: bool,
) -> Result<(), CliError> {
    // Positions are digits and `/`, which need no escaping in a query.
    let mut target = format!("{url}/admin/events?follow={follow}");
    if let Some(p) = from {
        target.push_str(&format!("&from={p}"));
    }
    let response = reqwest::Client::new()
        .get(target)
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| CliError::Other(format!("{url}: {e}")))?;
    if !response.status().is_success() {
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        return Err(CliError::Other(format!(
            "{url}/admin/events: {status}: {body}"
        )));
    }
    let mut body = response.bytes_stream();
    let mut out = std::io::stdout();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| CliError::Other(e.to_string()))?;
        out.write_all(&chunk)
            .and_then(|_| out.flush())
            .map_err(|e| CliError::Other(e.to_string()))?;
    }
    Ok(())
}

async fn check_remote(url: &str, token: &str) -> Result<CheckReport, CliError> {
    let response = reqwest::Client::new()
        .get(format!("{url}/admin/store/check"))
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| CliError::Other(format!("{url}: {e}")))?;
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|e| CliError::Other(e.to_string()))?;
    if !status.is_success() {
        return Err(CliError::Other(format!(
            "{url}/admin/store/check: {status}: {}",
            String::from_utf8_lossy(&body)
        )));
    }
    serde_json::from_slice(&body)
        .map_err(|e| CliError::Other(format!("{url}/admin/store/check: {e}")))
}

/// For `audit` commands, the token defaults to the configured auditor token:
/// reads are recorded under the auditor's name, not an administrator's.
fn auditor_remote(config: &Config, remote: Remote) -> Remote {
    Remote {
        url: remote.url,
        token: remote.token.or_else(|| {
            config
                .audit
                .auditor_tokens
                .first()
                .map(|t| t.token.expose().to_string())
        }),
    }
}

async fn audit_command(config: &Config, command: AuditCommand) -> Result<(), CliError> {
    use crate::audit::checkpoint::{AuditKey, Checkpoint};
    let other = |e: &dyn std::fmt::Display| CliError::Other(e.to_string());
    match command {
        AuditCommand::Keygen => {
            let (seed, key) = AuditKey::generate().map_err(|e| other(&e))?;
            println!(
                "# The audit signing key. Keep it in a secret store, never in the data directory:\nAUTHLOG_AUDIT_SIGNING_KEY={seed}\n# Its public key (key id {}), for whoever verifies checkpoints and exports:\n{}",
                key.key_id(),
                key.public().to_base64()
            );
            Ok(())
        }
        AuditCommand::VerifyExport {
            file,
            checkpoint,
            key,
        } => {
            let cp_text = std::fs::read_to_string(&checkpoint)
                .map_err(|e| CliError::Other(format!("{}: {e}", checkpoint.display())))?;
            let cp: Checkpoint = serde_json::from_str(&cp_text)
                .map_err(|e| CliError::Other(format!("{}: {e}", checkpoint.display())))?;
            let key = read_public_key(&key)?;
            let input = std::fs::File::open(&file)
                .map_err(|e| CliError::Other(format!("{}: {e}", file.display())))?;
            let report =
                crate::audit::export::verify_export(std::io::BufReader::new(input), &cp, &key);
            println!(
                "filter: {}",
                serde_json::Value::Object(report.filter.clone())
            );
            for p in &report.problems {
                println!("  {p}");
            }
            if report.problems.is_empty() {
                println!(
                    "verified: {} events, each included in the log of checkpoint {} (size {}, signed {} by key {}); the export is complete and in order",
                    report.events, cp.root_hash, cp.tree_size, cp.time, cp.key_id
                );
                Ok(())
            } else {
                Err(CliError::NotVerified(report.problems.len()))
            }
        }
        AuditCommand::Verify {
            checkpoints,
            keys,
            remote,
        } => {
            let remote = auditor_remote(config, remote);
            let mut extra = Vec::new();
            for path in &checkpoints {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| CliError::Other(format!("{}: {e}", path.display())))?;
                extra.extend(
                    checkpoints_in(&text)
                        .map_err(|e| CliError::Other(format!("{}: {e}", path.display())))?,
                );
            }
            let report = match app::open_store(config, None, app::OpenMode::Existing).await {
                Ok(store) => {
                    eprintln!("authlog: verifying {} directly", describe_store(config));
                    let (_, mut trusted) =
                        crate::audit::checkpoint::load(&config.audit).map_err(|e| other(&e))?;
                    for k in &keys {
                        trusted.0.push(read_public_key(k)?);
                    }
                    let tree_path = config.data_dir.join(app::AUDIT_TREE_FILE);
                    let witness = if tree_path.exists() {
                        Some(
                            crate::audit::tree::TreeStore::open(&tree_path)
                                .map_err(|e| other(&e))?,
                        )
                    } else {
                        eprintln!(
                            "authlog: no audit tree at {}: checking against checkpoints only",
                            tree_path.display()
                        );
                        None
                    };
                    let report = crate::audit::verify::verify_log(
                        &store,
                        witness.as_ref(),
                        &trusted,
                        &extra,
                    )
                    .await
                    .map_err(|e| other(&e))?;
                    // A damaged store is evidence: leave it as found.
                    if report.ok() {
                        record_local_access(&store, report.events).await;
                    } else {
                        eprintln!(
                            "authlog: the store did not verify; this read was not recorded in it, to leave it as found"
                        );
                    }
                    report
                }
                Err(StartError::DataDirInUse(_)) => {
                    if !extra.is_empty() {
                        return Err(CliError::Other(
                            "--checkpoint needs the server stopped (it reads the store directly)"
                                .into(),
                        ));
                    }
                    let (url, token) = remote_target(config, &remote)?;
                    eprintln!(
                        "authlog: the store is locked by a running server; verifying through its admin API at {url}"
                    );
                    let v = admin_call(
                        &url,
                        &token,
                        reqwest::Method::GET,
                        "/admin/audit/verify",
                        None,
                    )
                    .await?;
                    serde_json::from_value(v).map_err(|e| other(&e))?
                }
                Err(e) => return Err(e.into()),
            };
            print_verify_report(&report);
            if !report.ok() {
                return Err(CliError::NotVerified(report.problems.len()));
            }
            if report.checkpoints > 0 && report.checkpoints_signed == 0 {
                println!(
                    "the checkpoints' signatures were NOT checked: give --key, or configure the audit key"
                );
                return Err(CliError::NotVerified(1));
            }
            Ok(())
        }
        AuditCommand::Export {
            subject,
            client_id,
            session_id,
            types,
            outcome,
            ip,
            from,
            to,
            format,
            no_proofs,
            checkpoint_size,
            output,
            remote,
        } => {
            let remote = auditor_remote(config, remote);
            let mut query: Vec<(&str, String)> = Vec::new();
            let mut put = |k: &'static str, v: Option<String>| {
                if let Some(v) = v {
                    query.push((k, v));
                }
            };
            put("subject", subject);
            put("client_id", client_id);
            put("session_id", session_id);
            put("outcome", outcome);
            put("ip", ip);
            put("from", from);
            put("to", to);
            put("format", Some(format.clone()));
            put("checkpoint", checkpoint_size.map(|s| s.to_string()));
            if no_proofs || format == "csv" {
                put("proofs", Some("false".into()));
            }
            for t in types {
                query.push(("type", t));
            }
            let qs: String = form_urlencoded::Serializer::new(String::new())
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())))
                .finish();
            with_admin_api(config, &remote, |url, token| async move {
                let response = reqwest::Client::new()
                    .get(format!("{url}/admin/audit/export?{qs}"))
                    .bearer_auth(token)
                    .send()
                    .await
                    .map_err(|e| CliError::Other(format!("{url}: {e}")))?;
                if !response.status().is_success() {
                    let status = response.status();
                    let body = response.text().await.unwrap_or_default();
                    return Err(CliError::Other(format!(
                        "/admin/audit/export: {status}: {body}"
                    )));
                }
                let mut out: Box<dyn Write> = match &output {
                    Some(path) => Box::new(std::io::BufWriter::new(
                        std::fs::File::create(path)
                            .map_err(|e| CliError::Other(format!("{}: {e}", path.display())))?,
                    )),
                    None => Box::new(std::io::stdout().lock()),
                };
                let mut body = response.bytes_stream();
                let mut bytes = 0u64;
                while let Some(chunk) = body.next().await {
                    let chunk =
                        chunk.map_err(|e| CliError::Other(format!("the export broke off: {e}")))?;
                    bytes += chunk.len() as u64;
                    out.write_all(&chunk)
                        .map_err(|e| CliError::Other(e.to_string()))?;
                }
                out.flush().map_err(|e| CliError::Other(e.to_string()))?;
                if let Some(path) = &output {
                    eprintln!("authlog: wrote {bytes} bytes to {}", path.display());
                }
                Ok(())
            })
            .await
        }
    }
}

/// The audit public key from base64, a file holding it, or the JSON of
/// `/admin/audit/key`.
fn read_public_key(arg: &str) -> Result<crate::audit::checkpoint::PublicKey, CliError> {
    use crate::audit::checkpoint::PublicKey;
    let text = match std::fs::read_to_string(arg) {
        Ok(t) => t,
        Err(_) => arg.to_string(),
    };
    let text = text.trim();
    let b64 = match serde_json::from_str::<serde_json::Value>(text) {
        Ok(v) => v
            .get("public_key")
            .and_then(|k| k.as_str())
            .map(str::to_string)
            .ok_or_else(|| CliError::Other("the key JSON has no public_key".into()))?,
        Err(_) => text.to_string(),
    };
    PublicKey::from_base64(&b64).map_err(|e| CliError::Other(e.to_string()))
}

fn print_verify_report(r: &crate::audit::verify::Report) {
    println!("events: {}", r.events);
    if let Some(w) = r.witness_leaves {
        println!("leaves recorded by the audit tree: {w}");
    }
    println!(
        "checkpoints: {} ({} signed by a trusted key, {} matching the log)",
        r.checkpoints, r.checkpoints_signed, r.checkpoints_matching
    );
    println!("root of the whole log: {}", r.root_hash);
    if let Some(s) = r.first_damaged_seq {
        println!("first damaged event: seq {s}");
    }
    for w in &r.warnings {
        println!("warning: {w}");
    }
    for p in &r.problems {
        println!("  {p}");
    }
    println!("{}", if r.ok() { "verified" } else { "NOT VERIFIED" });
}

/// Records a direct read of the stored trail (the server is stopped).
async fn record_local_access(store: &DynStore, count: u64) {
    use authlog_schemas::{Actor, Envelope, data};
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    let body = data::AuditAccessed {
        token_name: format!("local:{user}"),
        endpoint: "authlog audit verify".into(),
        filter: serde_json::Map::new(),
        result_count: count,
    };
    let event = Envelope::new(
        crate::oidc::service::new_id(),
        "audit-access".into(),
        crate::oidc::service::now(),
        Actor::system("cli"),
        &body,
    )
    .map_err(|e| e.to_string())
    .and_then(|env| crate::store::NewEvent::new(env, None).map_err(|e| e.to_string()));
    let result = match event {
        Ok(e) => store
            .append("audit-access", crate::store::Expected::Any, vec![e])
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        eprintln!("authlog: could not record this read of the audit trail: {e}");
    }
}

/// `authlog sink replay`: the events in `from..=to` through the NDJSON sink's
/// shaping, read from the store (server stopped) or through the admin API.
async fn store_copy(config: &Config, from: &str, to: &str) -> Result<(), CliError> {
    use std::io::{IsTerminal, Write};
    let other = |e: &dyn std::fmt::Display| CliError::Other(e.to_string());
    let resolve = |v: &str| -> Result<String, CliError> {
        match v.strip_prefix("env:") {
            Some(name) => std::env::var(name).map_err(|_| {
                CliError::Other(format!("the environment variable {name} is not set"))
            }),
            None => Ok(v.to_string()),
        }
    };
    let (from, to) = (resolve(from)?, resolve(to)?);
    let (from, to) = (from.as_str(), to.as_str());
    let source = app::open_store_at(from, &config.data_dir, None, app::OpenMode::Existing)
        .await
        .map_err(|e| match e {
            StartError::DataDirInUse(d) => CliError::Other(format!(
                "the embedded store in {} is in use by a running server: stop it before copying",
                d.display()
            )),
            e => e.into(),
        })?;
    let dest = app::open_store_at(to, &config.data_dir, None, app::OpenMode::Create).await?;
    if source.log_id() == dest.log_id() {
        return Err(CliError::Other("--from and --to are the same log".into()));
    }
    eprintln!(
        "authlog: copying {} into {}",
        crate::store::redact_url(from),
        crate::store::redact_url(to)
    );
    let tty = std::io::stderr().is_terminal();
    let started = std::time::Instant::now();
    let mut last_line = std::time::Instant::now();
    let report = crate::store::copy::copy_log(source.as_ref(), dest.as_ref(), |done, total| {
        if !tty && last_line.elapsed() < std::time::Duration::from_secs(5) && done < total {
            return;
        }
        last_line = std::time::Instant::now();
        let width = 30usize;
        let filled = (done * width as u64)
            .checked_div(total)
            .unwrap_or(width as u64) as usize;
        let rate = done as f64 / started.elapsed().as_secs_f64().max(0.001);
        let mut err = std::io::stderr();
        let _ = write!(
            err,
            "{}[{}{}] {done}/{total} events ({:.0}/s){}",
            if tty { "\r" } else { "" },
            "#".repeat(filled),
            " ".repeat(width - filled.min(width)),
            rate,
            if tty { "" } else { "\n" }
        );
        let _ = err.flush();
    })
    .await
    .map_err(|e| other(&e))?;
    if tty {
        eprintln!();
    }
    let check = dest.check().await.map_err(|e| other(&e))?;
    if !check.problems.is_empty() {
        return Err(CliError::Other(format!(
            "the copy does not check clean: {}",
            check.problems.join("; ")
        )));
    }
    println!(
        "copied {} events ({} were already there); the copy holds {} events in {} streams and checks clean",
        report.copied, report.resumed_at, check.events, check.streams
    );
    if let Some(h) = source.head().await.map_err(|e| other(&e))?
        && h.seq + 1 > report.total
    {
        eprintln!(
            "authlog: {} events were appended to the source during the copy; run the copy again to bring them over",
            h.seq + 1 - report.total
        );
    }
    Ok(())
}

/// The store the configuration names, for messages (no password).
fn describe_store(config: &Config) -> String {
    match crate::store::StoreUrl::parse(&config.store) {
        Ok(crate::store::StoreUrl::Embedded(p)) => format!(
            "the embedded store in {}",
            p.unwrap_or_else(|| config.data_dir.clone()).display()
        ),
        _ => format!("the store {}", crate::store::redact_url(&config.store)),
    }
}

async fn sink_run(
    config: &Config,
    metrics_listen: Option<std::net::SocketAddr>,
) -> Result<(), CliError> {
    if config.sink.kafka.is_none() && config.sink.ndjson.is_none() {
        return Err(CliError::Other(
            "no sink configured: configure sink.kafka or sink.ndjson".into(),
        ));
    }
    // As `serve` does: properties librdkafka refuses stop it now.
    if let Some(k) = &config.sink.kafka {
        crate::sink::kafka::check(k).map_err(|e| CliError::Other(format!("sink.kafka: {e}")))?;
    }
    let metrics = crate::metrics::Metrics::new().map_err(|e| CliError::Other(e.to_string()))?;
    let store = app::open_store(config, Some(&metrics), app::OpenMode::Create).await?;
    let kek = app::load_shared_kek(config, &store).await?;
    let (stop_tx, _) = tokio::sync::watch::channel(false);
    let holder = crate::singleton::holder_name();
    let server = match metrics_listen {
        Some(addr) => {
            use warp::Filter;
            let m = metrics.clone();
            let route = warp::path!("metrics").and(warp::get()).map(move || {
                warp::reply::with_header(m.render(), "content-type", "text/plain; version=0.0.4")
            });
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| CliError::Other(format!("binding {addr}: {e}")))?;
            let mut stopped = stop_tx.subscribe();
            Some(tokio::spawn(
                warp::serve(route)
                    .incoming(listener)
                    .graceful(async move {
                        let _ = stopped.wait_for(|s| *s).await;
                    })
                    .run(),
            ))
        }
        None => None,
    };
    let tasks = app::start_sinks(&store, config, &kek, &metrics, &holder, &stop_tx);
    eprintln!(
        "authlog: running {} sink(s) on {} as {holder}",
        tasks.len(),
        crate::store::redact_url(&config.store)
    );
    app::shutdown_signal().await;
    stop_tx.send_replace(true);
    for t in tasks {
        let _ = t.await;
    }
    if let Some(s) = server {
        let _ = s.await;
    }
    Ok(())
}

async fn sink_replay(
    config: &Config,
    from: Position,
    to: Option<Position>,
    output: Option<PathBuf>,
    remote: Remote,
) -> Result<(), CliError> {
    use crate::sink::ndjson::Target;
    use crate::sink::shape::Shaper;
    let other = |e: &dyn std::fmt::Display| CliError::Other(e.to_string());
    let explicit_output = output.is_some();
    let kafka = config.sink.kafka.clone().filter(|_| output.is_none());
    let cfg = config.sink.ndjson.clone();
    let path = output
        .or_else(|| cfg.as_ref().map(|c| c.path.clone()))
        .unwrap_or_default();
    if kafka.is_none() && path.as_os_str().is_empty() {
        return Err(CliError::Other(
            "no sink configured: give --output, or configure sink.kafka or sink.ndjson".into(),
        ));
    }
    // The configured sinks' shaping, also for `-o`: a replay never carries more
    // personal data than the sink it stands in for (Kafka's settings first).
    let (format, personal) = match (&config.sink.kafka, &cfg) {
        (Some(k), _) => (k.format, k.personal),
        (None, Some(c)) => (c.format, c.personal),
        (None, None) => Default::default(),
    };
    // A shared store's KEK is checked against the store: pseudonyms must be
    // the live sink's.
    let kek = if crate::store::StoreUrl::parse(&config.store)
        .is_ok_and(|u| !matches!(u, crate::store::StoreUrl::Embedded(_)))
    {
        let store = app::open_store(config, None, app::OpenMode::Existing).await?;
        app::load_shared_kek(config, &store).await?
    } else {
        app::load_kek(config)?
    };
    let shaper = std::sync::Arc::new(Shaper::new(format, personal, &kek));
    if let Some(k) = kafka {
        let records = replay_records(config, from, to, &remote).await?;
        let n = crate::sink::kafka::replay(&shaper, &k, records)
            .await
            .map_err(|e| other(&e))?;
        eprintln!(
            "authlog: re-sent {n} events to {} on {}",
            k.topic, k.brokers
        );
        return Ok(());
    }
    match app::open_store(config, None, app::OpenMode::Existing).await {
        Ok(store) => crate::sink::ndjson::replay(
            store,
            shaper,
            Target::from_path(&path),
            ReadFrom::At(from),
            to,
        )
        .await
        .map_err(|e| other(&e)),
        Err(StartError::DataDirInUse(_)) => {
            if !explicit_output {
                // The running server's sink appends to that file: two writers
                // would interleave lines.
                return Err(CliError::Other(format!(
                    "the server is running and its NDJSON sink writes {}: give -o with another file",
                    path.display()
                )));
            }
            let (url, token) = remote_target(config, &remote)?;
            eprintln!(
                "authlog: the store is locked by a running server; reading through its admin API at {url}"
            );
            let response = reqwest::Client::new()
                .get(format!("{url}/admin/events?from={from}"))
                .bearer_auth(token)
                .send()
                .await
                .map_err(|e| CliError::Other(format!("{url}: {e}")))?;
            if !response.status().is_success() {
                let status = response.status();
                let body = response.text().await.unwrap_or_default();
                return Err(CliError::Other(format!("/admin/events: {status}: {body}")));
            }
            let text = response.text().await.map_err(|e| other(&e))?;
            let mut records = Vec::new();
            for line in text.lines() {
                let r = record_of_line(line)?;
                if to.is_some_and(|t| r.position > t) {
                    break;
                }
                records.push(r);
            }
            crate::sink::ndjson::write_records(&shaper, Target::from_path(&path), &records)
                .map_err(|e| other(&e))
        }
        Err(e) => Err(e.into()),
    }
}

/// The events in `from..=to` (or to the head), from the store when the server
/// is stopped, else through `/admin/events`.
async fn replay_records(
    config: &Config,
    from: Position,
    to: Option<Position>,
    remote: &Remote,
) -> Result<Vec<authlog_schemas::Recorded>, CliError> {
    let other = |e: &dyn std::fmt::Display| CliError::Other(e.to_string());
    let mut out = Vec::new();
    match app::open_store(config, None, app::OpenMode::Existing).await {
        Ok(store) => {
            let to = match to {
                Some(t) => t,
                None => match store.head().await.map_err(|e| other(&e))? {
                    Some(h) => h.position,
                    None => return Ok(out),
                },
            };
            let mut at = ReadFrom::At(from);
            loop {
                let page = store.read_all(at, 512).await.map_err(|e| other(&e))?;
                let Some(last) = page.last().map(|r| r.position) else {
                    return Ok(out);
                };
                for r in page {
                    if r.position > to {
                        return Ok(out);
                    }
                    out.push(r);
                }
                at = ReadFrom::After(last);
            }
        }
        Err(StartError::DataDirInUse(_)) => {
            let (url, token) = remote_target(config, remote)?;
            let text = reqwest::Client::new()
                .get(format!("{url}/admin/events?from={from}"))
                .bearer_auth(token)
                .send()
                .await
                .and_then(|r| r.error_for_status())
                .map_err(|e| CliError::Other(format!("{url}/admin/events: {e}")))?
                .text()
                .await
                .map_err(|e| other(&e))?;
            for line in text.lines() {
                let r = record_of_line(line)?;
                if to.is_some_and(|t| r.position > t) {
                    break;
                }
                out.push(r);
            }
            Ok(out)
        }
        Err(e) => Err(e.into()),
    }
}

/// A stored event back from a line of `/admin/events`.
fn record_of_line(line: &str) -> Result<authlog_schemas::Recorded, CliError> {
    #[derive(serde::Deserialize)]
    struct Head {
        position: Position,
        revision: u64,
        stream: String,
    }
    let bad = |e: &dyn std::fmt::Display| CliError::Other(format!("an event line: {e}"));
    let head: Head = serde_json::from_str(line).map_err(|e| bad(&e))?;
    let (seq, body) = crate::audit::export::split_event_line(line.as_bytes())
        .ok_or_else(|| bad(&"not position, revision and seq first"))?;
    Ok(authlog_schemas::Recorded {
        position: head.position,
        revision: head.revision,
        seq,
        stream: head.stream,
        body,
        sidecar: None,
    })
}

/// The checkpoints in a file: the JSON of `/admin/audit/checkpoint`, or
/// `audit.checkpoint` events as a sink delivered them (native NDJSON lines, one
/// or many: the copies a SIEM keeps).
fn checkpoints_in(text: &str) -> Result<Vec<crate::audit::checkpoint::Checkpoint>, String> {
    use crate::audit::checkpoint::Checkpoint;
    if let Ok(cp) = serde_json::from_str::<Checkpoint>(text.trim()) {
        return Ok(vec![cp]);
    }
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
        if v["type"] != "audit.checkpoint" {
            continue;
        }
        let d = &v["data"];
        let s = |x: &serde_json::Value| x.as_str().map(str::to_string).unwrap_or_default();
        out.push(Checkpoint {
            tree_size: d["tree_size"].as_u64().ok_or("tree_size")?,
            root_hash: s(&d["root_hash"]),
            time: s(&v["time"]),
            key_id: s(&d["key_id"]),
            signature: s(&d["signature"]),
            seq: v["seq"].as_u64(),
        });
    }
    if out.is_empty() {
        return Err("no checkpoint: expected the JSON of /admin/audit/checkpoint or audit.checkpoint event lines".into());
    }
    Ok(out)
}
