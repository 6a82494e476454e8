//! The real server on real sockets: health, readiness, metrics, the admin event
//! stream, limits, one server per data directory, graceful shutdown.

use std::time::Duration;

use authlog::app::{Application, StartError};
use reqwest::StatusCode;

use crate::support::fixtures::append_story;
use crate::support::{spawn_app_in, test_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_in(dir.path()).await;
    let r = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["status"],
        "ready"
    );

    let last = append_story(&app.store, "m").await;
    app.views
        .wait_for(last, Duration::from_secs(10))
        .await
        .unwrap();
    let text = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "authlog_http_requests_total{route=\"healthz\",status=\"200\"} 1",
        "authlog_http_request_seconds_bucket{route=\"readyz\"",
        "authlog_events_appended_total{type=\"user.registered\"} 1",
        "authlog_store_append_seconds_bucket",
        "authlog_store_commit_seconds_bucket",
        "authlog_store_commit_batch_size_bucket",
        &format!("authlog_projection_seq {}", last.commit),
        "authlog_projection_lag_events 0",
    ] {
        assert!(text.contains(name), "/metrics lacks {name}:\n{text}");
    }
    // Unknown paths are counted under one label, not by path.
    app.http
        .get(app.url("/no/such/thing"))
        .send()
        .await
        .unwrap();
    let text = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("route=\"other\",status=\"404\""));
    assert!(!text.contains("no/such"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_events_stream_the_stored_bodies() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_in(dir.path()).await;
    let last = append_story(&app.store, "e").await;

    // No token, a wrong token: 401 with a Bearer challenge, nothing streamed.
    let r = app.http.get(app.url("/admin/events")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer error=\"invalid_token\"")
    );
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["error"],
        "invalid_token"
    );
    let r = app
        .http
        .get(app.url("/admin/events"))
        .bearer_auth("not-the-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    let r = app
        .http
        .get(app.url("/admin/events"))
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "application/x-ndjson");
    let text = r.text().await.unwrap();
    let stored = app
        .store
        .read_all(authlog::store::ReadFrom::Start, 1000)
        .await
        .unwrap();
    // The stream ends at the head as of the request; the read itself was then
    // recorded as the next event.
    let (read, recorded) = stored.split_at(stored.len() - 1);
    let expected: String = read
        .iter()
        .map(|r| format!("{}\n", String::from_utf8(r.to_export_line()).unwrap()))
        .collect();
    assert_eq!(
        text, expected,
        "bodies as stored plus position, revision and seq"
    );
    assert_eq!(read.last().unwrap().position, last);
    let access = recorded[0].envelope().unwrap();
    assert_eq!(access.event_type.as_str(), "audit.accessed");
    assert_eq!(access.data["endpoint"], "/admin/events");
    assert_eq!(access.data["result_count"], read.len() as u64);
    assert!(
        !text.contains("sealed:"),
        "a sidecar leaked into the stream"
    );
    for line in text.lines() {
        crate::support::validating::SchemaSet::get()
            .validate(&serde_json::from_str(line).unwrap())
            .unwrap();
    }

    // from=POSITION starts there.
    let r = app
        .http
        .get(app.url(&format!("/admin/events?from={}", stored[5].position)))
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap().lines().count(), stored.len() - 5);

    // A bad position is a clear 400.
    let r = app
        .http
        .get(app.url("/admin/events?from=yesterday"))
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("yesterday")
    );

    // follow=true keeps the stream open and delivers new events.
    let mut r = app
        .http
        .get(app.url(&format!("/admin/events?follow=true&from={}", last)))
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .unwrap();
    let first = r.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains(&format!("\"position\":\"{last}\"")));
    let next = append_story(&app.store, "e2").await;
    let mut got = String::new();
    while !got.contains(&format!("\"position\":\"{next}\"")) {
        let chunk = tokio::time::timeout(Duration::from_secs(10), r.chunk())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        got.push_str(&String::from_utf8_lossy(&chunk));
    }
    drop(r);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_in(dir.path()).await;
    let r = app
        .http
        .post(app.url("/healthz"))
        .body(vec![b'x'; 70_000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["error"],
        "invalid_request"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_on_the_same_data_directory_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_in(dir.path()).await;
    let err = Application::build(test_config(dir.path(), &[]))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, StartError::DataDirInUse(_)));
    assert!(
        err.to_string()
            .contains("in use by another authlog process"),
        "{err}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_binary_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_authlog"))
        .arg("serve")
        .env("AUTHLOG_DATA_DIR", dir.path())
        .env("AUTHLOG_LISTEN", format!("127.0.0.1:{port}"))
        .env("AUTHLOG_LOG_LEVEL", "warn")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/readyz");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = client.get(&url).send().await
            && r.status() == StatusCode::OK
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the server did not come up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A follow stream is open while the signal arrives: it must not hold the
    // server up.
    let token = std::fs::read_to_string(dir.path().join("admin-token")).unwrap();
    let mut follow = client
        .get(format!("http://127.0.0.1:{port}/admin/events?follow=true"))
        .bearer_auth(token.trim())
        .send()
        .await
        .unwrap();
    assert_eq!(follow.status(), StatusCode::OK);
    let pid = child.id().unwrap().to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "authlog exited with {exit}");
    // The follow stream ended cleanly.
    // It may first deliver the events the server wrote at start (its signing key).
    let end = loop {
        match follow.chunk().await {
            Ok(Some(_)) => continue,
            other => break other,
        }
    };
    assert!(matches!(end, Ok(None)), "the follow stream ends cleanly");
    // It left a snapshot and released the store.
    assert!(dir.path().join(authlog::app::SNAPSHOT_FILE).exists());
    let reopened = authlog::store::embedded::EmbeddedStore::open(dir.path(), None);
    assert!(reopened.is_ok());
}

/// A log the views cannot fold (here: an event whose data lacks a required field,
/// written past validation) stops the view runner; the server then says so on
/// /readyz instead of serving stale views.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_reports_a_stopped_view_runner() {
    use authlog::store::{EventStore, Expected, NewEvent};
    use authlog_schemas::{Actor, Envelope};
    let dir = tempfile::tempdir().unwrap();
    {
        let store = authlog::store::embedded::EmbeddedStore::open(dir.path(), None).unwrap();
        let mut env = Envelope::new(
            crate::support::fixtures::new_id(),
            "user-u1".into(),
            crate::support::fixtures::at(0),
            Actor::system("test"),
            &authlog_schemas::data::UserDisabled {
                user_id: "u1".into(),
            },
        )
        .unwrap();
        env.event_type = authlog_schemas::EventType::UserRegistered;
        store
            .append(
                "user-u1",
                Expected::Any,
                vec![NewEvent::new(env, None).unwrap()],
            )
            .await
            .unwrap();
    }
    let app = spawn_app_in(dir.path()).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = app.http.get(app.url("/readyz")).send().await.unwrap();
        if r.status() == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(
                r.json::<serde_json::Value>().await.unwrap()["status"],
                "failed"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "readyz never reported the failure"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let text = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("authlog_projection_failed 1"));
    let lag: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("authlog_projection_lag_events "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(lag >= 1, "the stopped runner's lag shows: {text}");
    app.stop().await;
}

/// Slow clients cannot take the server down: 300 connections that never finish
/// their headers, from one address, under a 256-descriptor limit, leave the
/// server answering everyone else; the half-sent connections are closed after
/// the header timeout; and SIGTERM with an unfinished request still in flight
/// exits within the grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_neither_starve_the_server_nor_hold_up_shutdown() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -n 256 && exec '{}' serve",
            env!("CARGO_BIN_EXE_authlog")
        ))
        .env("AUTHLOG_DATA_DIR", dir.path())
        .env("AUTHLOG_LISTEN", format!("0.0.0.0:{port}"))
        .env("AUTHLOG_LOG_LEVEL", "info")
        .env("AUTHLOG_LIMITS_HEADER_TIMEOUT_S", "2")
        .env("AUTHLOG_LIMITS_SHUTDOWN_GRACE_S", "2")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let other = reqwest::Client::builder()
        .local_address(Some("127.0.0.2".parse().unwrap()))
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let health = format!("http://127.0.0.1:{port}/healthz");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = other.get(&health).send().await
            && r.status() == StatusCode::OK
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the server did not come up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // 300 requests that never finish their headers.
    let mut slow = Vec::new();
    for _ in 0..300 {
        let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
            continue;
        };
        let _ = s
            .write_all(b"POST /oidc/login HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            .await;
        slow.push(s);
    }
    // Everyone else is still served: health, and a write (a registration form
    // is a read; the admin API appends).
    let started = std::time::Instant::now();
    let r = other.get(&health).send().await.expect("/healthz answers");
    assert_eq!(r.status(), StatusCode::OK);
    let token = std::fs::read_to_string(dir.path().join("admin-token")).unwrap();
    let r = other
        .post(format!("http://127.0.0.1:{port}/admin/users"))
        .bearer_auth(token.trim())
        .json(&serde_json::json!({"username": "slowpoke", "password": "correct horse battery"}))
        .send()
        .await
        .expect("a write is served");
    assert!(r.status().is_success(), "{}", r.status());
    assert!(started.elapsed() < Duration::from_secs(2));

    // The half-sent connections are closed by the server within the header
    // timeout (plus scheduling slack): each read ends (EOF, a 408, or a reset).
    let mut closed = 0;
    for s in &mut slow {
        let mut buf = [0u8; 512];
        if tokio::time::timeout(Duration::from_secs(6), s.read(&mut buf))
            .await
            .is_ok()
        {
            closed += 1;
        }
    }
    assert_eq!(closed, slow.len(), "every slow connection was closed");
    drop(slow);

    // The metrics saw it.
    let metrics = other
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let refused: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("authlog_http_connections_refused_total "))
        .expect("the refusal counter")
        .parse()
        .unwrap();
    assert!(
        refused > 0.0,
        "connections over the per-address cap are refused"
    );
    assert!(metrics.contains("authlog_http_connection_errors_total{kind=\"timeout\"}"));

    // Malformed requests are answered 400 and logged at debug, not as errors.
    for _ in 0..20 {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        s.write_all(b"\x00\x01 NOT HTTP\r\n\r\n").await.unwrap();
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
        assert!(
            buf.is_empty() || buf.starts_with(b"HTTP/1.1 400"),
            "{}",
            String::from_utf8_lossy(&buf)
        );
    }
    // An unfinished request does not hold up shutdown.
    let mut pending = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    pending
        .write_all(b"POST /admin/users HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let pid = child.id().unwrap().to_string();
    let signalled = std::time::Instant::now();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let exit = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("the server exits despite the unfinished request")
        .unwrap();
    assert!(exit.success(), "authlog exited with {exit}");
    assert!(
        signalled.elapsed() < Duration::from_secs(8),
        "shutdown took {:?}",
        signalled.elapsed()
    );
    // Malformed and slow connections are not errors in the server's log.
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .await
        .unwrap();
    assert!(
        !stderr.contains("ERROR"),
        "slow clients wrote errors to the log:\n{stderr}"
    );
    drop(pending);
}

/// A store that can be made to refuse writes (a full disk) or stop answering
/// altogether.
struct Faulty {
    inner: authlog::store::DynStore,
    full: Arc<AtomicBool>,
    stopped: Arc<AtomicBool>,
}

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use authlog::store::StoreError;

impl Faulty {
    fn gate(&self) -> Result<(), StoreError> {
        if self.stopped.load(Ordering::SeqCst) {
            return Err(StoreError::Closed);
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl authlog::store::EventStore for Faulty {
    async fn append(
        &self,
        stream: &str,
        expected: authlog::store::Expected,
        events: Vec<authlog::store::NewEvent>,
    ) -> Result<authlog::store::Appended, StoreError> {
        self.gate()?;
        if self.full.load(Ordering::SeqCst) {
            return Err(StoreError::Io(
                "No space left on device (os error 28)".into(),
            ));
        }
        self.inner.append(stream, expected, events).await
    }
    async fn read_stream(
        &self,
        stream: &str,
        from: u64,
        limit: usize,
    ) -> Result<Vec<authlog_schemas::Recorded>, StoreError> {
        self.gate()?;
        self.inner.read_stream(stream, from, limit).await
    }
    async fn read_all(
        &self,
        from: authlog::store::ReadFrom,
        limit: usize,
    ) -> Result<Vec<authlog_schemas::Recorded>, StoreError> {
        self.gate()?;
        self.inner.read_all(from, limit).await
    }
    fn subscribe_all(
        &self,
        from: authlog::store::ReadFrom,
    ) -> futures_util::stream::BoxStream<'static, Result<authlog_schemas::Recorded, StoreError>>
    {
        self.inner.subscribe_all(from)
    }
    async fn head(&self) -> Result<Option<authlog::store::Head>, StoreError> {
        self.gate()?;
        self.inner.head().await
    }
    fn log_id(&self) -> String {
        self.inner.log_id()
    }
    async fn check(&self) -> Result<authlog::store::CheckReport, StoreError> {
        self.gate()?;
        self.inner.check().await
    }
    fn is_shared(&self) -> bool {
        self.inner.is_shared()
    }
    async fn try_lease(
        &self,
        name: &str,
        holder: &str,
    ) -> Result<Option<authlog::store::Lease>, StoreError> {
        self.inner.try_lease(name, holder).await
    }
    async fn load_checkpoint(&self, name: &str) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        self.inner.load_checkpoint(name).await
    }
    async fn save_checkpoint(
        &self,
        name: &str,
        expected: Option<u64>,
        value: Vec<u8>,
    ) -> Result<u64, StoreError> {
        self.inner.save_checkpoint(name, expected, value).await
    }
}

/// While the disk is full a sign-in is told the service cannot complete it
/// now (503 with Retry-After, a page saying nothing is wrong with the request),
/// not that the request is wrong; /healthz stays up while the store answers
/// reads, and fails once the store stops answering, so an orchestrator
/// restarts the process; /readyz fails too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_a_503_and_a_stopped_store_fails_healthz() {
    use crate::support::oidc::{browser, field, location, pkce, setup};
    let dir = tempfile::tempdir().unwrap();
    let full = Arc::new(AtomicBool::new(false));
    let stopped = Arc::new(AtomicBool::new(false));
    let (f, s) = (full.clone(), stopped.clone());
    let app = crate::support::spawn_app_wrapped(dir.path(), &[], move |inner| {
        Arc::new(Faulty {
            inner,
            full: f,
            stopped: s,
        })
    })
    .await;
    let rp = setup(&app.url(""), &app.admin_token, serde_json::json!({})).await;
    let (_, challenge) = pkce();
    let url = rp.auth_url(&challenge, "openid", &[]);
    let jar = browser();
    let r = jar.get(&url).send().await.unwrap();
    let login = location(&r);
    let page = jar
        .get(app.url(&login))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let before = app.log().await.len();
    full.store(true, Ordering::SeqCst);
    let r = jar
        .post(app.url("/oidc/login"))
        .form(&[
            ("username", rp.username.as_str()),
            ("password", crate::support::oidc::PASSWORD),
            ("tx", &field(&page, "tx")),
            ("csrf", &field(&page, "csrf")),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers()["retry-after"], "30");
    let text = r.text().await.unwrap();
    assert!(
        text.contains("cannot complete this right now") && text.contains("Try again"),
        "{text}"
    );
    assert!(!text.contains("Something is wrong"), "{text}");
    assert!(
        !text.contains("os error"),
        "no internals on the page: {text}"
    );
    // The process and its store still answer reads: alive, and ready.
    let health = reqwest::get(app.url("/healthz")).await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    // The disk has room again: the same form works (nothing half-done kept).
    full.store(false, Ordering::SeqCst);
    // Only the first read's own access record was appended since.
    assert_eq!(app.log().await.len(), before + 1, "nothing was appended");
    let r = jar
        .post(app.url("/oidc/login"))
        .form(&[
            ("username", rp.username.as_str()),
            ("password", crate::support::oidc::PASSWORD),
            ("tx", &field(&page, "tx")),
            ("csrf", &field(&page, "csrf")),
        ])
        .send()
        .await
        .unwrap();
    assert!(
        r.status() == StatusCode::FOUND || r.status() == StatusCode::OK,
        "{}",
        r.status()
    );
    // The store stops answering: liveness and readiness fail, saying why.
    stopped.store(true, Ordering::SeqCst);
    let health = reqwest::get(app.url("/healthz")).await.unwrap();
    assert_eq!(health.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: serde_json::Value = health.json().await.unwrap();
    assert_eq!(body["status"], "store_unavailable");
    let ready = reqwest::get(app.url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    stopped.store(false, Ordering::SeqCst);
    let health = reqwest::get(app.url("/healthz")).await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    app.stop().await;
}

/// With `metrics.token` set, `/metrics` answers only that bearer token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metrics_token_closes_metrics_to_everyone_else() {
    let dir = tempfile::tempdir().unwrap();
    let token = "metrics-0123456789abcdef";
    let app = crate::support::spawn_app_with(dir.path(), &[("AUTHLOG_METRICS_TOKEN", token)]).await;
    let r = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    let r = app
        .http
        .get(app.url("/metrics"))
        .bearer_auth("metrics-0123456789abcdeX")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = app
        .http
        .get(app.url("/metrics"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("authlog_http_requests_total")
    );
    app.stop().await;
}
