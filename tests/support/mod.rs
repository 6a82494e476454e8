//! Shared test support: sample events, schema validation, test stores and servers.

pub mod fixtures;
pub mod kafka;
pub mod ocsf;
pub mod oidc;
pub mod postgres;
pub mod rfc9162;
pub mod validating;

use std::net::SocketAddr;
use std::sync::Arc;

use authlog::app::{ADMIN_TOKEN_FILE, Application};
use authlog::config::Config;
use authlog::store::DynStore;
use authlog::store::embedded::EmbeddedStore;
use authlog::views::ViewsHandle;
use tempfile::TempDir;
use tokio::sync::oneshot;

pub use validating::Validating;

/// A fresh embedded store in its own directory, every append schema-validated.
pub struct TestStore {
    pub store: DynStore,
    /// Removed when the test store is dropped.
    pub(crate) _dir: TempDir,
}

pub fn embedded_store() -> TestStore {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path(), None).unwrap();
    TestStore {
        store: Arc::new(Validating::new(store)),
        _dir: dir,
    }
}

/// The test configuration: port 0, the given data directory, nothing from the
/// environment except `extra`.
pub fn test_config(data_dir: &std::path::Path, extra: &[(&str, &str)]) -> Config {
    let mut env: Vec<(String, String)> = vec![
        ("AUTHLOG_LISTEN".into(), "127.0.0.1:0".into()),
        ("AUTHLOG_DATA_DIR".into(), data_dir.display().to_string()),
        ("AUTHLOG_LOG_LEVEL".into(), "warn".into()),
    ];
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Config::load(None, env).unwrap()
}

/// A running server.
pub struct TestApp {
    pub addr: SocketAddr,
    pub tree: Arc<authlog::audit::tree::TreeStore>,
    pub store: DynStore,
    pub views: ViewsHandle,
    pub admin_token: String,
    pub http: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The whole log as `/admin/events` ships it (the read is recorded after
    /// it, as the next event).
    pub async fn log(&self) -> Vec<serde_json::Value> {
        self.http
            .get(self.url("/admin/events"))
            .bearer_auth(&self.admin_token)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Shuts the server down gracefully and waits for it.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }
}

/// Starts the real server on port 0 over `data_dir`, its store schema-validated.
pub async fn spawn_app_in(data_dir: &std::path::Path) -> TestApp {
    spawn_app_with(data_dir, &[]).await
}

/// As [`spawn_app_in`], with extra `AUTHLOG_*` settings. The issuer names the
/// port the server was given.
pub async fn spawn_app_with(data_dir: &std::path::Path, extra: &[(&str, &str)]) -> TestApp {
    spawn_app_wrapped(data_dir, extra, |s| s).await
}

/// As [`spawn_app_with`], with the store also wrapped by `wrap` (inside the
/// schema validation).
pub async fn spawn_app_wrapped(
    data_dir: &std::path::Path,
    extra: &[(&str, &str)],
    wrap: impl FnOnce(DynStore) -> DynStore,
) -> TestApp {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let issuer = format!("http://127.0.0.1:{port}/oidc");
    let mut settings = vec![("AUTHLOG_ISSUER", issuer.as_str())];
    settings.extend_from_slice(extra);
    let config = test_config(data_dir, &settings);
    let app = Application::build_on(config, Some(listener), |s| {
        wrap(Arc::new(Validating::new(s)))
    })
    .await
    .unwrap();
    let addr: SocketAddr = ([127, 0, 0, 1], app.port()).into();
    let store = app.store();
    let views = app.views();
    let tree = app.audit_tree();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(app.run_until(async {
        let _ = rx.await;
    }));
    let admin_token = std::fs::read_to_string(data_dir.join(ADMIN_TOKEN_FILE))
        .unwrap()
        .trim()
        .to_string();
    TestApp {
        addr,
        tree,
        store,
        views,
        admin_token,
        http: reqwest::Client::new(),
        shutdown: Some(tx),
        task: Some(task),
    }
}
