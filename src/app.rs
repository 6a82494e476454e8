//! Building and running the server: what `authlog serve` and the tests share.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::http::{self, AppState};
use crate::metrics::Metrics;
use crate::seal::Kek;
use crate::store::embedded::EmbeddedStore;
use crate::store::{DynStore, Instrumented, StoreError, StoreUrl};
use crate::views::{self, SnapshotPolicy, ViewsHandle};

/// The views snapshot under the data directory.
pub const SNAPSHOT_FILE: &str = "views.snapshot.json";
/// The audit Merkle tree under the data directory.
pub const AUDIT_TREE_FILE: &str = "audit-tree.redb";
/// The admin token generated at first start when none is configured.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";
/// The key-encryption key generated at first start when none is configured.
pub const KEK_FILE: &str = "kek";

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "the data directory {0} is in use by another authlog process (stop it, or give this one another AUTHLOG_DATA_DIR)"
    )]
    DataDirInUse(PathBuf),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("binding {addr}: {error}")]
    Bind {
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error("{0}")]
    Setup(String),
}

/// Whether opening a store may create it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// The server: create the log on first start.
    Create,
    /// Commands that read: fail if there is no log.
    Existing,
}

/// Opens the store the configuration names, wrapped with metrics.
pub async fn open_store(
    config: &Config,
    metrics: Option<&Metrics>,
    mode: OpenMode,
) -> Result<DynStore, StartError> {
    open_store_at(&config.store, &config.data_dir, metrics, mode).await
}

/// Opens the store `url` names (`embedded` alone means `data_dir`).
pub async fn open_store_at(
    url: &str,
    data_dir: &Path,
    metrics: Option<&Metrics>,
    mode: OpenMode,
) -> Result<DynStore, StartError> {
    let instrument = |store: DynStore| -> DynStore {
        match metrics {
            Some(m) => Arc::new(Instrumented::new(store, m.store.clone())),
            None => store,
        }
    };
    match StoreUrl::parse(url)? {
        StoreUrl::Postgres(url) => {
            let store =
                crate::store::postgres::PostgresStore::open(&url, metrics.map(|m| m.store.clone()))
                    .await?;
            Ok(instrument(Arc::new(store)))
        }
        StoreUrl::Kurrent(url) => {
            let store = crate::store::kurrentdb::KurrentStore::open(
                &url,
                crate::store::kurrentdb::DEFAULT_LOG_NAME,
            )
            .await?;
            Ok(instrument(Arc::new(store)))
        }
        StoreUrl::Embedded(path) => {
            let dir = path.unwrap_or_else(|| data_dir.to_path_buf());
            let m = metrics.map(|m| m.store.clone());
            let opened = match mode {
                OpenMode::Create => EmbeddedStore::open(&dir, m),
                OpenMode::Existing => EmbeddedStore::open_existing(&dir, m),
            };
            let store = opened.map_err(|e| match e {
                StoreError::Locked(_) => StartError::DataDirInUse(dir.clone()),
                other => StartError::Store(other),
            })?;
            Ok(match metrics {
                Some(m) => Arc::new(Instrumented::new(store, m.store.clone())),
                None => Arc::new(store),
            })
        }
    }
}

/// Creates the data directory readable by its owner only.
fn create_data_dir(dir: &Path) -> Result<(), StartError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let setup =
        |e: std::io::Error| StartError::Setup(format!("data directory {}: {e}", dir.display()));
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(setup)?;
    }
    let mode = std::fs::metadata(dir).map_err(setup)?.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::warn!(dir = %dir.display(), mode = format!("{:o}", mode & 0o777), "the data directory is readable by others; authlog keeps secrets there (chmod 700)");
    }
    Ok(())
}

/// Writes `contents` to a new file readable by its owner only.
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()
}

fn random_token() -> Result<String, StartError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| StartError::Setup(format!("randomness: {e}")))?;
    Ok(hex::encode(bytes))
}

/// The configured admin tokens, or the one in `data_dir/admin-token`, generated
/// at first start (its path is printed, never the token).
fn admin_tokens(config: &Config) -> Result<Vec<(String, [u8; 32])>, StartError> {
    let mut tokens: Vec<(String, [u8; 32])> = config
        .admin
        .tokens
        .iter()
        .map(|t| {
            (
                t.name.clone(),
                Sha256::digest(t.token.expose().as_bytes()).into(),
            )
        })
        .collect();
    if tokens.is_empty() {
        let path = config.data_dir.join(ADMIN_TOKEN_FILE);
        if !path.exists() {
            write_private(&path, &random_token()?)
                .map_err(|e| StartError::Setup(format!("writing {}: {e}", path.display())))?;
            eprintln!(
                "authlog: no admin token configured; generated one into {}",
                path.display()
            );
        }
        let token = std::fs::read_to_string(&path)
            .map_err(|e| StartError::Setup(format!("reading {}: {e}", path.display())))?;
        tokens.push((
            "default".into(),
            Sha256::digest(token.trim().as_bytes()).into(),
        ));
    }
    Ok(tokens)
}

/// The configured KEK, or the one in `data_dir/kek`, generated at first start.
/// Either way it must open `data_dir/kek.check`, sealed with the KEK this data
/// directory started with: a lost or changed KEK is refused at start, not found
/// out later when a sidecar will not open.
pub fn load_kek(config: &Config) -> Result<Kek, StartError> {
    let setup = |path: &Path, e: &dyn std::fmt::Display| {
        StartError::Setup(format!("{}: {e}", path.display()))
    };
    let kek = match &config.kek {
        Some(k) => {
            Kek::from_base64(k.expose()).map_err(|e| StartError::Setup(format!("kek: {e}")))?
        }
        None => {
            let path = config.data_dir.join(KEK_FILE);
            if !path.exists() {
                let key = Kek::generate_base64().map_err(|e| StartError::Setup(e.to_string()))?;
                write_private(&path, &key).map_err(|e| setup(&path, &e))?;
                tracing::warn!(path = %path.display(), "no KEK configured; generated one next to the data (fine for one node; several nodes, and backups kept apart from their key, need AUTHLOG_KEK)");
            }
            let text = std::fs::read_to_string(&path).map_err(|e| setup(&path, &e))?;
            Kek::from_base64(&text).map_err(|e| setup(&path, &e))?
        }
    };
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let check_path = config.data_dir.join(KEK_CHECK_FILE);
    if check_path.exists() {
        let text = std::fs::read_to_string(&check_path).map_err(|e| setup(&check_path, &e))?;
        let sealed = b64
            .decode(text.trim())
            .map_err(|e| setup(&check_path, &e))?;
        if kek.open(&sealed).ok().as_deref() != Some(KEK_CHECK_TEXT) {
            return Err(StartError::Setup(format!(
                "the key-encryption key is not the one this data directory was sealed with ({} does not open); restore the original KEK",
                check_path.display()
            )));
        }
    } else {
        let sealed = kek
            .seal(KEK_CHECK_TEXT)
            .map_err(|e| StartError::Setup(e.to_string()))?;
        write_private(&check_path, &b64.encode(sealed)).map_err(|e| setup(&check_path, &e))?;
    }
    Ok(kek)
}

/// The KEK, checked against the data directory and, on a shared store, against
/// the other nodes' (and refused if generated per node).
pub async fn load_shared_kek(config: &Config, store: &DynStore) -> Result<Kek, StartError> {
    if store.is_shared() {
        refuse_per_node_secrets(config, false)?;
    }
    let kek = load_kek(config)?;
    if store.is_shared() {
        check_kek_in_store(store, &kek).await?;
    }
    Ok(kek)
}

/// On a log several nodes share, every secret that decides or seals something
/// must be the same on every node: a KEK or admin token generated into one
/// node's data directory would split the cluster (sidecars one node cannot
/// open, tokens one node does not know).
fn refuse_per_node_secrets(config: &Config, server: bool) -> Result<(), StartError> {
    let mut missing = Vec::new();
    if config.kek.is_none() {
        missing.push("the key-encryption key (AUTHLOG_KEK)");
    }
    if server && config.admin.tokens.is_empty() {
        missing.push("an admin token (AUTHLOG_ADMIN_TOKEN or [[admin.tokens]])");
    }
    if missing.is_empty() {
        return Ok(());
    }
    Err(StartError::Setup(format!(
        "the store {} is shared by several nodes, so secrets must come from shared configuration, not be generated per node: set {}",
        crate::store::redact_url(&config.store),
        missing.join(" and ")
    )))
}

/// The shared-store form of `kek.check`: the first node seals a known text
/// into a store checkpoint; every node must open it, so a node started with
/// another KEK is refused before it writes a sidecar no other node can open.
async fn check_kek_in_store(store: &DynStore, kek: &Kek) -> Result<(), StartError> {
    const NAME: &str = "kek-check";
    let refused = || {
        StartError::Setup(
            "the key-encryption key differs from the one the other nodes of this log use (the store's kek-check does not open); give every node the same AUTHLOG_KEK".into(),
        )
    };
    let check = |sealed: &[u8]| kek.open(sealed).ok().as_deref() == Some(KEK_CHECK_TEXT);
    match store.load_checkpoint(NAME).await? {
        Some((_, sealed)) => check(&sealed).then_some(()).ok_or_else(refused),
        None => {
            let sealed = kek
                .seal(KEK_CHECK_TEXT)
                .map_err(|e| StartError::Setup(e.to_string()))?;
            match store.save_checkpoint(NAME, None, sealed).await {
                Ok(_) => Ok(()),
                // Another node wrote it first: it must open with this KEK too.
                Err(StoreError::Conflict { .. }) => match store.load_checkpoint(NAME).await? {
                    Some((_, sealed)) if check(&sealed) => Ok(()),
                    _ => Err(refused()),
                },
                Err(e) => Err(e.into()),
            }
        }
    }
}

const KEK_CHECK_FILE: &str = "kek.check";
const KEK_CHECK_TEXT: &[u8] = b"authlog key-encryption key check v1";

/// A built server, bound to its port, not yet serving.
pub struct Application {
    state: Arc<AppState>,
    tree: Arc<crate::audit::tree::TreeStore>,
    listener: tokio::net::TcpListener,
    runner: tokio::task::JoinHandle<()>,
    stop_runner: tokio::sync::watch::Sender<bool>,
    port: u16,
    shutdown_tx: tokio::sync::watch::Sender<bool>,
}

impl Application {
    /// Opens the store, restores or rebuilds the views and binds the listener.
    pub async fn build(config: Config) -> Result<Application, StartError> {
        Application::build_with(config, |store| store).await
    }

    /// As [`Application::build`], with the opened store wrapped by `wrap` (tests
    /// add decorators such as schema validation or fault injection).
    pub async fn build_with(
        config: Config,
        wrap: impl FnOnce(DynStore) -> DynStore,
    ) -> Result<Application, StartError> {
        Application::build_on(config, None, wrap).await
    }

    /// As [`Application::build_with`], serving on an already bound `listener`
    /// (tests bind port 0 first so the issuer can name the port).
    pub async fn build_on(
        config: Config,
        listener: Option<std::net::TcpListener>,
        wrap: impl FnOnce(DynStore) -> DynStore,
    ) -> Result<Application, StartError> {
        create_data_dir(&config.data_dir)?;
        if let Some(why) = config.issuer_mismatch() {
            tracing::warn!("{why}");
        }
        if config.issuer.starts_with("https://") && config.login.trusted_proxies.is_empty() {
            tracing::warn!(
                "the issuer is https but login.trusted_proxies is empty: behind the TLS-terminating proxy this implies, every user shares the proxy's address, so per-address throttles and the audit trail see one address; trust the proxy (an address or CIDR range)"
            );
        }
        let metrics = Metrics::new().map_err(|e| StartError::Setup(e.to_string()))?;
        let store = wrap(open_store(&config, Some(&metrics), OpenMode::Create).await?);
        if store.is_shared() {
            refuse_per_node_secrets(&config, true)?;
        }
        let kek = load_shared_kek(&config, &store).await?;
        let tree = Arc::new(
            crate::audit::tree::TreeStore::open(&config.data_dir.join(AUDIT_TREE_FILE))
                .map_err(|e| StartError::Setup(e.to_string()))?,
        );
        let admin_tokens = admin_tokens(&config)?;
        let auditor_tokens: Vec<(String, [u8; 32])> = config
            .audit
            .auditor_tokens
            .iter()
            .map(|t| {
                (
                    t.name.clone(),
                    Sha256::digest(t.token.expose().as_bytes()).into(),
                )
            })
            .collect();
        let (audit_key, trusted) = crate::audit::checkpoint::load(&config.audit)
            .map_err(|e| StartError::Setup(e.to_string()))?;
        if audit_key.is_none() {
            tracing::warn!(
                "no audit signing key configured: the log is not checkpointed (set AUTHLOG_AUDIT_SIGNING_KEY; `authlog audit keygen` makes one)"
            );
        }
        // A Kafka sink whose librdkafka properties do not parse is refused now,
        // not retried forever in the background (the error shows no value).
        if let Some(k) = &config.sink.kafka {
            crate::sink::kafka::check(k)
                .map_err(|e| StartError::Setup(format!("sink.kafka: {e}")))?;
        }
        // Bind before starting anything that would outlive a failed start.
        let bind_error = |error| StartError::Bind {
            addr: config.listen,
            error,
        };
        let listener = match listener {
            Some(l) => {
                l.set_nonblocking(true).map_err(bind_error)?;
                tokio::net::TcpListener::from_std(l).map_err(bind_error)?
            }
            None => tokio::net::TcpListener::bind(config.listen)
                .await
                .map_err(bind_error)?,
        };
        let port = listener
            .local_addr()
            .map_err(|e| StartError::Setup(e.to_string()))?
            .port();
        // The audit tree and indexes reach the log's head, then the whole log is
        // checked against its signed checkpoints and the leaves recorded as it
        // grew: a log rolled back or forked is refused, not served.
        crate::audit::catch_up(&store, &tree)
            .await
            .map_err(|e| StartError::Setup(format!("audit tree: {e}")))?;
        let report = crate::audit::verify::verify_log(&store, Some(&tree), &trusted, &[])
            .await
            .map_err(|e| StartError::Setup(format!("audit verification: {e}")))?;
        if !report.ok() {
            return Err(StartError::Setup(format!(
                "the log does not verify against its signed checkpoints: it was rolled back, forked or rewritten; authlog refuses to serve it. {} (run `authlog audit verify` for the full report)",
                report.problems.join("; ")
            )));
        }
        for w in &report.warnings {
            tracing::warn!("audit: {w}");
        }
        let verified_at = crate::oidc::service::now().to_string();
        let audit = Arc::new(crate::audit::Audit::new(
            tree.clone(),
            audit_key.map(Arc::new),
            trusted,
            auditor_tokens,
        ));
        audit
            .load_latest(&store)
            .await
            .map_err(|e| StartError::Setup(format!("audit checkpoints: {e}")))?;
        audit.set_last_report(verified_at, report);
        let snapshot_path = config.data_dir.join(SNAPSHOT_FILE);
        let snapshot_key = views::SnapshotKey::new(&kek);
        let initial = views::load_snapshot(&store, &snapshot_path, &snapshot_key).await;
        let (stop_runner, stop) = tokio::sync::watch::channel(false);
        let (views, runner) = views::start(
            store.clone(),
            initial,
            metrics.clone(),
            Some(SnapshotPolicy {
                path: snapshot_path,
                every: config.views.snapshot_every,
                key: snapshot_key,
            }),
            stop,
        )
        .await;
        let (shutdown_tx, shutting_down) = tokio::sync::watch::channel(false);
        let config_for_oidc = config.clone();
        let state = Arc::new(AppState {
            config,
            store,
            views,
            metrics,
            admin_tokens,
            oidc: crate::oidc::service::Oidc::new(&config_for_oidc, &kek)
                .map_err(|e| StartError::Setup(e.to_string()))?,
            kek,
            audit,
            shutting_down,
        });
        // The views must be current before deciding whether a signing key exists.
        if let Ok(Some(head)) = state.store.head().await {
            let _ = state
                .views
                .wait_for(head.position, std::time::Duration::from_secs(600))
                .await;
        }
        let alg = state.config.keys.algorithm.clone();
        crate::oidc::service::ensure_signing_key(&state, &alg)
            .await
            .map_err(|e| StartError::Setup(format!("signing key: {e}")))?;
        Ok(Application {
            state,
            tree,
            listener,
            runner,
            stop_runner,
            port,
            shutdown_tx,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn store(&self) -> DynStore {
        self.state.store.clone()
    }

    pub fn views(&self) -> ViewsHandle {
        self.state.views.clone()
    }

    /// The audit Merkle tree the server keeps on disk.
    pub fn audit_tree(&self) -> Arc<crate::audit::tree::TreeStore> {
        self.tree.clone()
    }

    /// Serves until `shutdown` resolves, then lets in-flight requests (and their
    /// appends) finish, stops the view runner and writes a final snapshot.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) {
        let Application {
            state,
            tree,
            listener,
            runner,
            stop_runner,
            shutdown_tx,
            ..
        } = self;
        // The audit tree follows the log on its own task, from where it stopped.
        let feeder = tokio::spawn(crate::audit::tree::feed(
            state.store.clone(),
            tree,
            stop_runner.subscribe(),
        ));
        // Singletons run on the node that holds their lease (on the embedded
        // store: this process, always).
        let holder = crate::singleton::holder_name();
        let singleton = |name: &'static str| {
            (
                state.store.clone(),
                name,
                holder.clone(),
                state.metrics.clone(),
                stop_runner.subscribe(),
            )
        };
        let sinks = start_sinks(
            &state.store,
            &state.config,
            &state.kek,
            &state.metrics,
            &holder,
            &stop_runner,
        );
        let checkpointer = (state.audit.key.is_some() && state.config.audit.checkpoint_every_s > 0)
            .then(|| {
                let store = state.store.clone();
                let audit = state.audit.clone();
                let every = std::time::Duration::from_secs(state.config.audit.checkpoint_every_s);
                let (s, name, h, m, stop) = singleton("audit-checkpointer");
                tokio::spawn(crate::singleton::run(s, name, h, m, stop, move |stop| {
                    crate::audit::checkpointer(store.clone(), audit.clone(), every, stop)
                }))
            });
        tracing::info!(addr = ?listener.local_addr().ok(), issuer = %state.config.issuer, "authlog serving");
        let shutdown = async move {
            shutdown.await;
            // End long-lived responses (followed event streams) so the graceful
            // shutdown only waits for ordinary requests and their appends.
            shutdown_tx.send_replace(true);
        };
        // Key rotation advances on a timer: a published key starts signing one
        // JWKS cache lifetime after it appeared.
        let scheduler = {
            let state = state.clone();
            let every = std::time::Duration::from_secs(
                (state.config.keys.jwks_cache_s / 4).clamp(1, 30) as u64,
            );
            let (s, name, h, m, stop) = singleton("key-rotation");
            tokio::spawn(crate::singleton::run(
                s,
                name,
                h,
                m,
                stop,
                move |mut stop| {
                    let state = state.clone();
                    async move {
                        let mut tick = tokio::time::interval(every);
                        loop {
                            tokio::select! {
                                _ = stop.wait_for(|s| *s) => return,
                                _ = tick.tick() => {}
                            }
                            if let Err(e) = crate::oidc::service::advance_key_rotation(&state).await
                            {
                                tracing::warn!(error = %e, "key rotation");
                            }
                        }
                    }
                },
            ))
        };
        let max_connections = http::server::connection_cap(state.config.limits.max_connections);
        let limits = http::server::Limits {
            header_timeout: std::time::Duration::from_secs(state.config.limits.header_timeout_s),
            max_connections,
            per_peer: (max_connections / 4).max(1),
            proxies: state.config.login.trusted_proxies.clone(),
            shutdown_grace: std::time::Duration::from_secs(state.config.limits.shutdown_grace_s),
        };
        match http::server::ServerMetrics::new(&state.metrics.registry) {
            Ok(server_metrics) => {
                http::server::serve(
                    http::routes(state.clone()),
                    listener,
                    limits,
                    server_metrics,
                    shutdown,
                )
                .await
            }
            Err(e) => tracing::error!(error = %e, "registering the server metrics; not serving"),
        }
        scheduler.abort();
        let _ = scheduler.await;
        // Stop the runner between events (never mid-snapshot), then write the
        // final snapshot.
        stop_runner.send_replace(true);
        let _ = runner.await;
        let _ = feeder.await;
        if let Some(c) = checkpointer {
            let _ = c.await;
        }
        for s in sinks {
            let _ = s.await;
        }
        let path = state.config.data_dir.join(SNAPSHOT_FILE);
        if let Err(e) = views::save_snapshot(
            &state.store,
            &views::SnapshotKey::new(&state.kek),
            &state.views,
            &path,
        )
        .await
        {
            tracing::warn!(error = %e, "writing the final views snapshot failed");
        }
        tracing::info!("authlog stopped");
    }
}

/// Starts the configured sinks, each a singleton under its lease (`serve`, and
/// `authlog sink run` for operators who run the sinks as a process of their own).
pub fn start_sinks(
    store: &DynStore,
    config: &Config,
    kek: &Kek,
    metrics: &Metrics,
    holder: &str,
    stop_runner: &tokio::sync::watch::Sender<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let singleton = |name: &'static str| {
        (
            store.clone(),
            name,
            holder.to_string(),
            metrics.clone(),
            stop_runner.subscribe(),
        )
    };
    let mut tasks = Vec::new();
    // The Kafka sink follows the log from its own checkpoint.
    if let Some(cfg) = config.sink.kafka.clone() {
        let metrics = crate::sink::SinkMetrics::new(metrics, "kafka");
        let target = format!(
            "kafka {} {} {:?} {:?}",
            cfg.brokers, cfg.topic, cfg.format, cfg.personal
        );
        let shaper = Arc::new(crate::sink::shape::Shaper::new(
            cfg.format,
            cfg.personal,
            kek,
        ));
        let checkpoint = crate::sink::checkpoint::CheckpointFile::for_sink(
            store,
            &config.data_dir,
            "kafka",
            target,
        );
        let store = store.clone();
        let (s, name, h, m, stop) = singleton("sink-kafka");
        tasks.push(tokio::spawn(crate::singleton::run(
            s,
            name,
            h,
            m,
            stop,
            move |stop| {
                crate::sink::kafka::run(
                    store.clone(),
                    shaper.clone(),
                    cfg.clone(),
                    checkpoint.clone(),
                    metrics.clone(),
                    stop,
                )
            },
        )));
    }
    // The NDJSON sink follows the log from its own checkpoint.
    if let Some(cfg) = config.sink.ndjson.clone() {
        let metrics = crate::sink::SinkMetrics::new(metrics, "ndjson");
        let target = format!(
            "ndjson {} {:?} {:?}",
            cfg.path.display(),
            cfg.format,
            cfg.personal
        );
        let shaper = Arc::new(crate::sink::shape::Shaper::new(
            cfg.format,
            cfg.personal,
            kek,
        ));
        let checkpoint = crate::sink::checkpoint::CheckpointFile::for_sink(
            store,
            &config.data_dir,
            "ndjson",
            target,
        );
        let store = store.clone();
        let (s, name, h, m, stop) = singleton("sink-ndjson");
        tasks.push(tokio::spawn(crate::singleton::run(
            s,
            name,
            h,
            m,
            stop,
            move |stop| {
                crate::sink::ndjson::run(
                    store.clone(),
                    shaper.clone(),
                    crate::sink::ndjson::Target::from_path(&cfg.path),
                    Some(checkpoint.clone()),
                    Some(metrics.clone()),
                    stop,
                )
            },
        )));
    }
    tasks
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown requested; finishing in-flight requests");
}
