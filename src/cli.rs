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
        } => match app::open_store(&config, None, app::OpenMode::Existing) {
            Ok(store) => {
                eprintln!(
                    "authlog: reading the embedded store in {} directly",
                    config.data_dir.display()
                );
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
        Command::Keys {
            command: KeysCommand::Rotate { alg, remote },
        } => {
            let alg = alg.unwrap_or_else(|| config.keys.algorithm.clone());
            match app::open_store(&config, None, app::OpenMode::Existing) {
                Ok(store) => {
                    eprintln!(
                        "authlog: the server is stopped; publishing the key in the embedded store in {} directly",
                        config.data_dir.display()
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
            command: StoreCommand::Check { remote },
        } => {
            let report = match app::open_store(&config, None, app::OpenMode::Existing) {
                Ok(store) => {
                    eprintln!(
                        "authlog: checking the embedded store in {} directly",
                        config.data_dir.display()
                    );
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
        app::open_store(config, None, app::OpenMode::Create)
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

/// `keys rotate` on a stopped server: the same `key.generated` the server
/// appends, expected after the `keys` stream's last revision.
async fn rotate_local(config: &Config, store: DynStore, alg: &str) -> Result<String, CliError> {
    use authlog_schemas::{Actor, Envelope};
    let other = |e: &dyn std::fmt::Display| CliError::Other(e.to_string());
    let kek = app::load_kek(config)?;
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
