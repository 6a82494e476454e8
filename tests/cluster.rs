//! Several authlog processes on one PostgreSQL log: one-time things stay
//! one-time across nodes, each node reads what the others wrote, views
//! converge, a killed node catches up, and exactly one node runs the sink, with
//! a takeover that loses and reorders nothing.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::oidc::{PASSWORD, Rp, browser, pkce, query, setup};

const ADMIN: &str = "cluster-admin-token-0123456789";
const KEK: &str = "3q2+7wABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGho=";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One authlog process.
struct Node {
    child: tokio::process::Child,
    base: String,
    port: u16,
    data: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl Node {
    async fn start(store: &str, issuer: &str, extra: &[(&str, &str)]) -> Node {
        let port = free_port();
        let data = tempfile::tempdir().unwrap();
        let mut env: Vec<(String, String)> = vec![
            ("AUTHLOG_STORE".into(), store.into()),
            ("AUTHLOG_KEK".into(), KEK.into()),
            ("AUTHLOG_ADMIN_TOKEN".into(), ADMIN.into()),
            ("AUTHLOG_ISSUER".into(), issuer.into()),
            ("AUTHLOG_LOG_LEVEL".into(), "info".into()),
        ];
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let mut node = Node {
            child: spawn(data.path(), port, &env),
            base: format!("http://127.0.0.1:{port}"),
            port,
            data,
            env,
        };
        node.wait_ready().await;
        node
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = reqwest::get(format!("{}/readyz", self.base)).await
                && r.status() == StatusCode::OK
            {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "node on port {} exited ({status}): {}",
                    self.port,
                    std::fs::read_to_string(self.data.path().join("stderr.log"))
                        .unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "node {} never ready", self.port);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn kill(&mut self) {
        self.child.start_kill().unwrap();
        self.child.wait().await.unwrap();
    }

    async fn restart(&mut self) {
        self.child = spawn(self.data.path(), self.port, &self.env);
        self.wait_ready().await;
    }

    fn rp(&self, rp: &Rp) -> Rp {
        Rp {
            base: self.base.clone(),
            admin_token: rp.admin_token.clone(),
            client_id: rp.client_id.clone(),
            client_secret: rp.client_secret.clone(),
            username: rp.username.clone(),
            user_id: rp.user_id.clone(),
        }
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        reqwest::Client::new()
            .get(format!("{}{path}", self.base))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap()
    }
}

fn spawn(data: &std::path::Path, port: u16, env: &[(String, String)]) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_authlog"))
        .arg("serve")
        .env("AUTHLOG_DATA_DIR", data)
        .env("AUTHLOG_LISTEN", format!("127.0.0.1:{port}"))
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(data.join("stderr.log"))
                .unwrap(),
        )
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// Two nodes on a fresh database, with one issuer (as behind a load balancer).
async fn two_nodes(extra: &[(&str, &str)]) -> (String, Node, Node) {
    let url = crate::support::postgres::fresh_database().await;
    let issuer_port = free_port();
    let issuer = format!("http://127.0.0.1:{issuer_port}/oidc");
    let a = Node::start(&url, &issuer, extra).await;
    let b = Node::start(&url, &issuer, extra).await;
    (url, a, b)
}

async fn code_on(node: &Node, rp: &Rp, jar: &reqwest::Client) -> (String, String) {
    let (verifier, challenge) = pkce();
    let rp = node.rp(rp);
    let back = rp
        .sign_in(
            jar,
            &rp.auth_url(&challenge, "openid profile offline_access", &[]),
            PASSWORD,
        )
        .await;
    (query(&back)["code"].clone(), verifier)
}

async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f().await {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_time_things_stay_one_time_across_nodes() {
    let (_url, a, b) = two_nodes(&[]).await;
    // A client and a user registered on B sign in on A at once.
    let rp = setup(&b.base, ADMIN, json!({})).await;
    let jar = browser();
    let (code, verifier) = code_on(&a, &rp, &jar).await;

    // The code issued on A is redeemed on B, immediately.
    let r = b.rp(&rp).redeem(&code, &verifier).await;
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    let tokens: Value = r.json().await.unwrap();
    let access = tokens["access_token"].as_str().unwrap().to_string();
    let userinfo = |node: &Node| {
        let (base, access) = (node.base.clone(), access.clone());
        async move {
            reqwest::Client::new()
                .get(format!("{base}/oidc/userinfo"))
                .bearer_auth(&access)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(userinfo(&a).await, StatusCode::OK);

    // A second redemption, on A, fails and revokes what the first one got.
    let r = a.rp(&rp).redeem(&code, &verifier).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "invalid_grant");
    assert_eq!(userinfo(&a).await, StatusCode::UNAUTHORIZED);
    eventually("B sees the revocation", || async {
        userinfo(&b).await == StatusCode::UNAUTHORIZED
    })
    .await;

    // A refresh token rotated on A and replayed on B is caught.
    let (code, verifier) = code_on(&a, &rp, &jar).await;
    let r = a.rp(&rp).redeem(&code, &verifier).await;
    let first: Value = r.json().await.unwrap();
    let r1 = first["refresh_token"].as_str().unwrap().to_string();
    let r = a
        .rp(&rp)
        .token(&[("grant_type", "refresh_token"), ("refresh_token", &r1)])
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let rotated: Value = r.json().await.unwrap();
    let r2 = rotated["refresh_token"].as_str().unwrap().to_string();
    let r = b
        .rp(&rp)
        .token(&[("grant_type", "refresh_token"), ("refresh_token", &r1)])
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "invalid_grant");
    // Reuse revoked the grant: the rotated token is dead on every node.
    for node in [&a, &b] {
        let r = node
            .rp(&rp)
            .token(&[("grant_type", "refresh_token"), ("refresh_token", &r2)])
            .await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    }
    // Both detections are in the log, once each.
    let log = b.get("/admin/events").await.text().await.unwrap();
    let count = |t: &str| {
        log.lines()
            .filter(|l| serde_json::from_str::<Value>(l).unwrap()["type"] == t)
            .count()
    };
    assert_eq!(count("authorization_code.replay_detected"), 1);
    assert_eq!(count("refresh_token.reuse_detected"), 1);

    // Who signed in on A is in B's audit trail.
    let r = b
        .get(&format!("/admin/audit/users/{}/history", rp.user_id))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let history: Value = r.json().await.unwrap();
    let items = history["entries"].as_array().unwrap();
    assert!(
        items.iter().any(|e| e["type"] == "login.succeeded"),
        "{history}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_converge_and_a_killed_node_catches_up() {
    let (url, a, mut b) = two_nodes(&[]).await;
    let http = reqwest::Client::new();
    let create = |node: &Node, name: String| {
        let (http, base) = (http.clone(), node.base.clone());
        async move {
            let r = http
                .post(format!("{base}/admin/users"))
                .bearer_auth(ADMIN)
                .json(&json!({"username": name, "password": PASSWORD}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::CREATED);
            r.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(create(&a, format!("ua{i}")).await);
        ids.push(create(&b, format!("ub{i}")).await);
    }
    // One username, claimed on both nodes at once: exactly one wins.
    let (x, y) = tokio::join!(
        http.post(format!("{}/admin/users", a.base))
            .bearer_auth(ADMIN)
            .json(&json!({"username": "same", "password": PASSWORD}))
            .send(),
        http.post(format!("{}/admin/users", b.base))
            .bearer_auth(ADMIN)
            .json(&json!({"username": "same", "password": PASSWORD}))
            .send(),
    );
    let mut statuses = [x.unwrap().status(), y.unwrap().status()];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::CREATED, StatusCode::CONFLICT]);

    let store = authlog::store::postgres::PostgresStore::open(&url, None)
        .await
        .unwrap();
    use authlog::store::EventStore;
    let converged = |a: &Node, b: &Node| {
        let (a, b) = (a.base.clone(), b.base.clone());
        let store = store.clone();
        async move {
            let head = store.head().await.unwrap().unwrap().seq as f64;
            let seq = |base: String| async move {
                let n = Node::metric_at(&base, "authlog_projection_seq").await;
                n.unwrap_or(-1.0)
            };
            seq(a).await == head && seq(b).await == head
        }
    };
    eventually("both nodes' views reach the head", || converged(&a, &b)).await;
    for id in &ids {
        let (x, y) = (
            a.get(&format!("/admin/users/{id}")).await,
            b.get(&format!("/admin/users/{id}")).await,
        );
        assert_eq!(x.status(), StatusCode::OK);
        assert_eq!(
            x.json::<Value>().await.unwrap(),
            y.json::<Value>().await.unwrap()
        );
    }

    // B is killed; A goes on; B comes back and catches up.
    b.kill().await;
    let mut later = Vec::new();
    for i in 0..5 {
        later.push(create(&a, format!("late{i}")).await);
    }
    b.restart().await;
    for id in &later {
        let r = b.get(&format!("/admin/users/{id}")).await;
        assert_eq!(r.status(), StatusCode::OK, "B does not know {id}");
    }
    eventually("views converge after the restart", || converged(&a, &b)).await;
}

impl Node {
    async fn metric_at(base: &str, name: &str) -> Option<f64> {
        let text = reqwest::get(format!("{base}/metrics"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_one_node_runs_the_sink_and_the_other_takes_over() {
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("events.ndjson");
    let path = file.display().to_string();
    let (_url, mut a, mut b) = two_nodes(&[("AUTHLOG_SINK_NDJSON_PATH", path.as_str())]).await;
    let held = |node: &Node| {
        let base = node.base.clone();
        async move {
            Node::metric_at(&base, "authlog_lease_held{lease=\"sink-ndjson\"}")
                .await
                .unwrap_or(0.0)
        }
    };
    eventually("one node holds the sink lease", || async {
        held(&a).await + held(&b).await == 1.0
    })
    .await;
    // Still exactly one a few lease retries later.
    tokio::time::sleep(authlog::singleton::RETRY * 2).await;
    assert_eq!(held(&a).await + held(&b).await, 1.0);
    let (holder, other) = if held(&a).await == 1.0 {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    let http = reqwest::Client::new();
    // Users are created through the other node while the holder is killed.
    let writer = {
        let (http, base) = (http.clone(), other.base.clone());
        tokio::spawn(async move {
            for i in 0..60 {
                let r = http
                    .post(format!("{base}/admin/users"))
                    .bearer_auth(ADMIN)
                    .json(&json!({"username": format!("s{i}"), "password": PASSWORD}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), StatusCode::CREATED);
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    holder.kill().await;
    writer.await.unwrap();
    eventually("the other node takes the sink over", || async {
        held(other).await == 1.0
    })
    .await;
    let log: Vec<Value> = other
        .get("/admin/events")
        .await
        .text()
        .await
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ids: Vec<String> = log.iter().map(crate::sink::native_id).collect();
    crate::sink::wait_for_ids(&file, &ids, crate::sink::native_id).await;
    let lines = crate::sink::lines_of(&file);
    crate::sink::assert_delivered_in_order(&lines, &log, crate::sink::native_id);
    // At least once: a takeover may repeat what the dead node wrote after its
    // last checkpoint, but only as a repeat of a run of the log in order.
    let seqs: Vec<u64> = lines.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
    for w in seqs.windows(2) {
        assert!(
            w[1] == w[0] + 1 || w[1] <= w[0],
            "a gap in the sink: {} then {}",
            w[0],
            w[1]
        );
    }
    holder.restart().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_store_refuses_per_node_secrets() {
    let url = crate::support::postgres::fresh_database().await;
    let data = tempfile::tempdir().unwrap();
    let run = |env: &[(&str, &str)]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_authlog"))
            .arg("serve")
            .env("AUTHLOG_DATA_DIR", data.path())
            .env("AUTHLOG_LISTEN", "127.0.0.1:0")
            .env("AUTHLOG_STORE", &url)
            .envs(env.iter().copied())
            .output()
            .unwrap()
    };
    let o = run(&[("AUTHLOG_ADMIN_TOKEN", ADMIN)]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("AUTHLOG_KEK"), "{err}");
    let o = run(&[("AUTHLOG_KEK", KEK)]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("admin token"), "{err}");
    // A node with another KEK than the log's first node is refused.
    let issuer = format!("http://127.0.0.1:{}/oidc", free_port());
    let mut first = Node::start(&url, &issuer, &[]).await;
    let other = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let o = run(&[("AUTHLOG_ADMIN_TOKEN", ADMIN), ("AUTHLOG_KEK", other)]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("key-encryption key differs"), "{err}");
    assert!(!err.contains(other) && !err.contains(KEK), "{err}");
    first.kill().await;
}

fn cli(data: &std::path::Path, store: &str, args: &[&str]) -> (bool, String) {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_authlog"))
        .args(args)
        .env("AUTHLOG_DATA_DIR", data)
        .env("AUTHLOG_STORE", store)
        .env("AUTHLOG_LOG_LEVEL", "warn")
        .env("AUTHLOG_KEK", KEK)
        .env("AUTHLOG_AUDIT_SIGNING_KEY", crate::audit::AUDIT_KEY)
        .output()
        .unwrap();
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

/// The embedded log moves to PostgreSQL and back, byte for byte: the signed
/// checkpoints verify on each copy, and a copy that stopped resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_copy_moves_a_log_between_backends_and_its_proofs_hold() {
    let dir = tempfile::tempdir().unwrap();
    let app = crate::audit::audit_app(dir.path()).await;
    let checkpoint = |app: &crate::support::TestApp| {
        let (http, url, token) = (
            app.http.clone(),
            app.url("/admin/audit/checkpoint"),
            app.admin_token.clone(),
        );
        async move {
            let r = http.post(url).bearer_auth(token).send().await.unwrap();
            assert!(r.status().is_success(), "{}", r.status());
        }
    };
    let rp = setup(&app.url(""), &app.admin_token, json!({})).await;
    let jar = browser();
    let (verifier, challenge) = pkce();
    let back = rp
        .sign_in(&jar, &rp.auth_url(&challenge, "openid", &[]), PASSWORD)
        .await;
    let r = rp.redeem(&query(&back)["code"], &verifier).await;
    assert_eq!(r.status(), StatusCode::OK);
    checkpoint(&app).await;
    let first_part = app.log().await;
    app.stop().await;

    // A first copy into PostgreSQL.
    let pg = crate::support::postgres::fresh_database().await;
    let work = tempfile::tempdir().unwrap();
    let from = format!("embedded://{}", dir.path().display());
    let (ok, out) = cli(
        work.path(),
        &pg,
        &["store", "copy", "--from", &from, "--to", &pg],
    );
    assert!(ok, "{out}");
    let copied = first_part.len() + 1; // and the log read's own record
    assert!(
        out.contains(&format!("copied {copied} events (0 were already there)")),
        "{out}"
    );
    assert!(
        out.contains(&format!("{copied}/{copied} events")),
        "a progress line: {out}"
    );

    // The source grows (another checkpoint); the copy is run again and
    // resumes after what it already has.
    let app = crate::audit::audit_app(dir.path()).await;
    setup(&app.url(""), &app.admin_token, json!({})).await;
    checkpoint(&app).await;
    let whole = app.log().await;
    app.stop().await;
    let (ok, out) = cli(
        work.path(),
        &pg,
        &["store", "copy", "--from", &from, "--to", &pg],
    );
    assert!(ok, "{out}");
    let total = whole.len() + 1;
    assert!(
        out.contains(&format!(
            "copied {} events ({copied} were already there)",
            total - copied
        )),
        "{out}"
    );

    // Every event is there with its id, stream, revision, body and seq.
    use authlog::store::{EventStore, ReadFrom};
    let src = authlog::store::embedded::EmbeddedStore::open_existing(dir.path(), None).unwrap();
    let dst = authlog::store::postgres::PostgresStore::open(&pg, None)
        .await
        .unwrap();
    let a = src.read_all(ReadFrom::Start, 100_000).await.unwrap();
    let b = dst.read_all(ReadFrom::Start, 100_000).await.unwrap();
    assert_eq!(a.len(), total);
    assert_eq!(a, b, "the copy is the log, byte for byte");
    drop(src);

    // Into a store that holds another log: refused, nothing written.
    let other = crate::support::postgres::fresh_database().await;
    let o = authlog::store::postgres::PostgresStore::open(&other, None)
        .await
        .unwrap();
    o.append(
        "user-x",
        authlog::store::Expected::Any,
        vec![crate::support::fixtures::simple("user-x")],
    )
    .await
    .unwrap();
    let (ok, out) = cli(
        work.path(),
        &other,
        &["store", "copy", "--from", &from, "--to", &other],
    );
    assert!(!ok);
    assert!(out.contains("not the source's"), "{out}");

    // The signed checkpoints verify on the PostgreSQL copy (no local audit
    // tree: the roots are recomputed from the copied bodies).
    let (ok, out) = cli(work.path(), &pg, &["audit", "verify"]);
    assert!(ok, "{out}");
    assert!(out.contains("2 matching the log"), "{out}");

    // And back into a new embedded store, which verifies too.
    let back_dir = tempfile::tempdir().unwrap();
    let to = format!("embedded://{}", back_dir.path().join("log").display());
    let (ok, out) = cli(
        work.path(),
        &pg,
        &["store", "copy", "--from", &pg, "--to", &to],
    );
    assert!(ok, "{out}");
    let (ok, out) = cli(back_dir.path(), &to, &["audit", "verify"]);
    assert!(ok, "{out}");
    assert!(out.contains("2 matching the log"), "{out}");
    let _ = b;
}

/// `authlog sink run`: the sinks in a process of their own, beside a server
/// that runs none, on the same log; it takes the lease and delivers everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_run_delivers_from_a_process_of_its_own() {
    let (url, a, _b) = two_nodes(&[]).await;
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("events.ndjson");
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut sink = tokio::process::Command::new(env!("CARGO_BIN_EXE_authlog"))
        .args([
            "sink",
            "run",
            "--metrics-listen",
            &format!("127.0.0.1:{port}"),
        ])
        .env("AUTHLOG_DATA_DIR", data.path())
        .env("AUTHLOG_STORE", &url)
        .env("AUTHLOG_KEK", KEK)
        .env("AUTHLOG_LOG_LEVEL", "warn")
        .env("AUTHLOG_SINK_NDJSON_PATH", &file)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    setup(&a.base, ADMIN, json!({})).await;
    let log: Vec<Value> = a
        .get("/admin/events")
        .await
        .text()
        .await
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ids: Vec<String> = log.iter().map(crate::sink::native_id).collect();
    crate::sink::wait_for_ids(&file, &ids, crate::sink::native_id).await;
    crate::sink::assert_delivered_in_order(
        &crate::sink::lines_of(&file),
        &log,
        crate::sink::native_id,
    );
    let base = format!("http://127.0.0.1:{port}");
    eventually("the sink process reports its lease", || {
        let base = base.clone();
        async move {
            Node::metric_at(&base, "authlog_lease_held{lease=\"sink-ndjson\"}").await == Some(1.0)
        }
    })
    .await;
    // The servers run no sink: they do not even report the lease.
    assert_eq!(
        Node::metric_at(&a.base, "authlog_lease_held{lease=\"sink-ndjson\"}").await,
        None
    );
    sink.kill().await.unwrap();
}

/// PostgreSQL drops every connection of both nodes (a failover, a restarted
/// pooler): the nodes connect again, appends go on, and each node's views and
/// subscriptions follow what the other writes afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_recover_when_the_database_drops_their_connections() {
    let (url, a, b) = two_nodes(&[]).await;
    let http = reqwest::Client::new();
    let create = |node: &Node, name: &str| {
        let (http, base, name) = (http.clone(), node.base.clone(), name.to_string());
        async move {
            http.post(format!("{base}/admin/users"))
                .bearer_auth(ADMIN)
                .json(&json!({"username": name, "password": PASSWORD}))
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(create(&a, "before").await.status(), StatusCode::CREATED);
    let (admin, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let killed: i64 = admin
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(killed >= 4, "only {killed} connections of two nodes");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut ids = Vec::new();
    for (i, node) in [&a, &b, &a, &b].into_iter().enumerate() {
        let r = create(node, &format!("after{i}")).await;
        assert_eq!(r.status(), StatusCode::CREATED, "append after the drop");
        ids.push(
            r.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    // Each node sees the other's users: views and followers reconnected.
    for id in &ids {
        for node in [&a, &b] {
            let r = node.get(&format!("/admin/users/{id}")).await;
            assert_eq!(r.status(), StatusCode::OK);
        }
    }
    for node in [&a, &b] {
        let r = reqwest::get(format!("{}/readyz", node.base)).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
}

/// A store whose subscriptions stop at a gate: a node whose views fall behind
/// the log, made deterministic.
struct Gated {
    inner: authlog::store::DynStore,
    open: tokio::sync::watch::Receiver<bool>,
}

#[async_trait::async_trait]
impl authlog::store::EventStore for Gated {
    async fn append(
        &self,
        stream: &str,
        expected: authlog::store::Expected,
        events: Vec<authlog::store::NewEvent>,
    ) -> Result<authlog::store::Appended, authlog::store::StoreError> {
        self.inner.append(stream, expected, events).await
    }
    async fn read_stream(
        &self,
        stream: &str,
        from: u64,
        limit: usize,
    ) -> Result<Vec<authlog_schemas::Recorded>, authlog::store::StoreError> {
        self.inner.read_stream(stream, from, limit).await
    }
    async fn read_all(
        &self,
        from: authlog::store::ReadFrom,
        limit: usize,
    ) -> Result<Vec<authlog_schemas::Recorded>, authlog::store::StoreError> {
        self.inner.read_all(from, limit).await
    }
    fn subscribe_all(
        &self,
        from: authlog::store::ReadFrom,
    ) -> futures_util::stream::BoxStream<
        'static,
        Result<authlog_schemas::Recorded, authlog::store::StoreError>,
    > {
        use futures_util::StreamExt;
        let open = self.open.clone();
        self.inner
            .subscribe_all(from)
            .then(move |item| {
                let mut open = open.clone();
                async move {
                    let _ = open.wait_for(|o| *o).await;
                    item
                }
            })
            .boxed()
    }
    async fn head(&self) -> Result<Option<authlog::store::Head>, authlog::store::StoreError> {
        self.inner.head().await
    }
    fn log_id(&self) -> String {
        self.inner.log_id()
    }
    async fn check(&self) -> Result<authlog::store::CheckReport, authlog::store::StoreError> {
        self.inner.check().await
    }
    fn is_shared(&self) -> bool {
        self.inner.is_shared()
    }
    async fn try_lease(
        &self,
        name: &str,
        holder: &str,
    ) -> Result<Option<authlog::store::Lease>, authlog::store::StoreError> {
        self.inner.try_lease(name, holder).await
    }
    async fn load_checkpoint(
        &self,
        name: &str,
    ) -> Result<Option<(u64, Vec<u8>)>, authlog::store::StoreError> {
        self.inner.load_checkpoint(name).await
    }
    async fn save_checkpoint(
        &self,
        name: &str,
        expected: Option<u64>,
        value: Vec<u8>,
    ) -> Result<u64, authlog::store::StoreError> {
        self.inner.save_checkpoint(name, expected, value).await
    }
}

/// A session cookie names the position its session was created at. A node
/// whose views have not reached it within `views.wait_ms` answers 503 with
/// Retry-After, never "signed out"; once the views catch up, the session works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_behind_a_session_cookie_answers_503_then_serves_it() {
    let dir = tempfile::tempdir().unwrap();
    let (gate, open) = tokio::sync::watch::channel(true);
    let app = crate::support::spawn_app_wrapped(
        dir.path(),
        &[("AUTHLOG_VIEWS_WAIT_MS", "300")],
        move |s| std::sync::Arc::new(Gated { inner: s, open }),
    )
    .await;
    let rp = setup(&app.url(""), &app.admin_token, json!({})).await;
    let (_, challenge) = pkce();
    let url = rp.auth_url(&challenge, "openid", &[]);
    // A first sign-in while the views follow (the user consents).
    let back = rp.sign_in(&browser(), &url, PASSWORD).await;
    assert!(back.starts_with("https://app.example/cb"), "{back}");
    // The views stop following the log; then the user signs in from another
    // browser: a new session at a position the views have not applied.
    gate.send_replace(false);
    let jar = browser();
    let r = jar.get(&url).send().await.unwrap();
    let login = crate::support::oidc::location(&r);
    let page = jar
        .get(app.url(&login))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let field = crate::support::oidc::field;
    let r = jar
        .post(app.url("/oidc/login"))
        .form(&[
            ("username", rp.username.as_str()),
            ("password", PASSWORD),
            ("tx", &field(&page, "tx")),
            ("csrf", &field(&page, "csrf")),
        ])
        .send()
        .await
        .unwrap();
    // Signed in (the cookie is set), but this node cannot see the session yet.
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.headers().get("set-cookie").is_some());
    // The browser comes back: its session is at a position beyond the views.
    let r = jar.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers()["retry-after"], "1");
    // The views catch up: the session is recognised, no sign-in page.
    gate.send_replace(true);
    let r = jar.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    let to = crate::support::oidc::location(&r);
    assert!(to.starts_with("https://app.example/cb"), "{to}");
    app.stop().await;
}

/// A checkpoint signed on one node is the latest on the other, and the other
/// node verifies the shared log against it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_signed_on_one_node_verifies_on_the_other() {
    let (_url, a, b) = two_nodes(&[
        ("AUTHLOG_AUDIT_SIGNING_KEY", crate::audit::AUDIT_KEY),
        ("AUTHLOG_AUDIT_CHECKPOINT_EVERY_S", "0"),
    ])
    .await;
    setup(&b.base, ADMIN, json!({})).await;
    let signed: Value = reqwest::Client::new()
        .post(format!("{}/admin/audit/checkpoint", a.base))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let seen: Value = b.get("/admin/audit/checkpoint").await.json().await.unwrap();
    assert_eq!(seen["tree_size"], signed["tree_size"], "{seen}");
    assert_eq!(seen["root_hash"], signed["root_hash"]);
    let v: Value = b.get("/admin/audit/verify").await.json().await.unwrap();
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["checkpoints_matching"], 1, "{v}");
}
