//! The audit Merkle tree the server keeps on disk follows the log: its root is
//! the RFC 9162 root over the bodies exactly as stored, in seq order.

use std::time::Duration;

use authlog::audit::merkle::{leaf_hash, root};
use authlog::store::{EventStore, ReadFrom};

use crate::support::fixtures::append_story;
use crate::support::{TestApp, spawn_app_in};

async fn leaves_from_the_log(store: &dyn EventStore) -> Vec<[u8; 32]> {
    let mut out = Vec::new();
    let mut from = ReadFrom::Start;
    loop {
        let page = store.read_all(from, 500).await.unwrap();
        let Some(last) = page.last() else { return out };
        out.extend(page.iter().map(|r| leaf_hash(&r.body)));
        from = ReadFrom::After(last.position);
    }
}

async fn wait_for_tree(app: &TestApp, size: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while app.tree.size().unwrap() < size {
        assert!(
            std::time::Instant::now() < deadline,
            "the tree stopped at {}",
            app.tree.size().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tree_on_disk_follows_the_log_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_in(dir.path()).await;
    append_story(&app.store, "a").await;
    let size = app.store.head().await.unwrap().unwrap().seq + 1;
    wait_for_tree(&app, size).await;
    let leaves = leaves_from_the_log(app.store.as_ref()).await;
    assert_eq!(leaves.len() as u64, size);
    assert_eq!(
        root(&app.tree.reader().unwrap(), 0, size),
        root(leaves.as_slice(), 0, size)
    );
    app.stop().await;

    // After a restart it resumes where it stopped, without gaps or repeats.
    let app = spawn_app_in(dir.path()).await;
    append_story(&app.store, "b").await;
    let size = app.store.head().await.unwrap().unwrap().seq + 1;
    wait_for_tree(&app, size).await;
    assert_eq!(app.tree.size().unwrap(), size);
    let leaves = leaves_from_the_log(app.store.as_ref()).await;
    assert_eq!(
        root(&app.tree.reader().unwrap(), 0, size),
        root(leaves.as_slice(), 0, size)
    );
    app.stop().await;
}

// ---- the audit API -----------------------------------------------------------------

use serde_json::{Value, json};

use crate::support::oidc::{PASSWORD, Rp, field, location, pkce, setup};
use crate::support::rfc9162;
use crate::support::spawn_app_with;

/// A fixed audit signing key for tests (never use a published key elsewhere).
pub const AUDIT_KEY: &str = "0QF4Wz9n7y6l0m1mBq7aGQbW2g8pJ3cY1r5Vx0uZl4E=";
pub const AUDITOR: &str = "auditor-token-0123456789";

pub async fn audit_app(dir: &std::path::Path) -> TestApp {
    spawn_app_with(
        dir,
        &[
            ("AUTHLOG_AUDITOR_TOKEN", AUDITOR),
            ("AUTHLOG_AUDIT_SIGNING_KEY", AUDIT_KEY),
            ("AUTHLOG_AUDIT_CHECKPOINT_EVERY_S", "0"),
            // Each test browser claims its own address through a trusted proxy.
            ("AUTHLOG_LOGIN_TRUSTED_PROXIES", "127.0.0.1"),
        ],
    )
    .await
}

/// A browser-like client with its own cookies, user agent and address (sent
/// as X-Forwarded-For through the trusted loopback proxy).
pub fn agent_at(user_agent: &str, ip: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("x-forwarded-for", ip.parse().unwrap());
    reqwest::Client::builder()
        .default_headers(headers)
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(user_agent)
        .build()
        .unwrap()
}

/// As [`agent_at`], from an address of its own.
fn agent(user_agent: &str) -> reqwest::Client {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    agent_at(user_agent, &format!("198.51.{}.{}", n / 250, n % 250 + 1))
}

/// A failed sign-in (wrong password) through the real login form.
pub async fn fail_login(rp: &Rp, client: &reqwest::Client) {
    let (_, challenge) = pkce();
    let r = client
        .get(rp.auth_url(&challenge, "openid", &[]))
        .send()
        .await
        .unwrap();
    let next = location(&r);
    let page = client
        .get(format!("{}{}", rp.base, next))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let r = client
        .post(format!("{}/oidc/login", rp.base))
        .form(&[
            ("username", rp.username.as_str()),
            ("password", "not the password"),
            ("tx", &field(&page, "tx")),
            ("csrf", &field(&page, "csrf")),
        ])
        .send()
        .await
        .unwrap();
    assert_ne!(r.status(), 302, "a wrong password signed in");
}

/// A successful sign-in and code redemption.
async fn sign_in(rp: &Rp, client: &reqwest::Client) {
    let (verifier, challenge) = pkce();
    let back = rp
        .sign_in(
            client,
            &rp.auth_url(&challenge, "openid email", &[]),
            PASSWORD,
        )
        .await;
    let code = crate::support::oidc::query(&back)["code"].clone();
    let r = rp.redeem(&code, &verifier).await;
    assert_eq!(r.status(), 200);
}

/// The test's own reading of a filter, over the envelope as JSON.
fn expected_match(e: &Value, q: &[(&str, &str)]) -> bool {
    q.iter().all(|(k, v)| match *k {
        "subject" | "client_id" | "session_id" | "outcome" => e[*k].as_str() == Some(*v),
        "ip" => e["source"]["ip"].as_str() == Some(*v),
        "from" => e["time"].as_str().unwrap() >= *v,
        "to" => e["time"].as_str().unwrap() <= *v,
        "type" => {
            let ty = e["type"].as_str().unwrap();
            q.iter()
                .filter(|(k, _)| *k == "type")
                .any(|(_, p)| ty.starts_with(p))
        }
        _ => true,
    })
}

/// Pages through `/admin/audit/events` with `limit`, returning every event.
async fn page_through(app: &TestApp, q: &[(&str, &str)], limit: usize) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..10_000 {
        let mut params: Vec<(String, String)> = q
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        params.push(("limit".into(), limit.to_string()));
        if let Some(a) = &after {
            params.push(("after".into(), a.clone()));
        }
        let qs: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params.iter())
            .finish();
        let r = app
            .http
            .get(app.url(&format!("/admin/audit/events?{qs}")))
            .bearer_auth(AUDITOR)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{q:?}: {}", r.text().await.unwrap());
        let page: Value = r.json().await.unwrap();
        let events = page["events"].as_array().unwrap();
        assert!(events.len() <= limit);
        out.extend(events.iter().cloned());
        match page["next"].as_str() {
            Some(n) => after = Some(n.to_string()),
            None => return out,
        }
    }
    panic!("pagination did not end");
}

fn seqs(events: &[Value]) -> Vec<u64> {
    events.iter().map(|e| e["seq"].as_u64().unwrap()).collect()
}

/// Two users, two clients, sign-ins from two browsers, failed attempts.
async fn activity(app: &TestApp) -> (Rp, Rp) {
    let a = setup(&app.url(""), &app.admin_token, json!({})).await;
    let b = setup(
        &app.url(""),
        &app.admin_token,
        json!({"client_name": "Other App"}),
    )
    .await;
    let (ua1, ua2) = (
        agent("Firefox/140 test"),
        agent_at("Chrome/142 test", "203.0.113.7"),
    );
    sign_in(&a, &ua1).await;
    fail_login(&a, &ua2).await;
    fail_login(&a, &ua2).await;
    sign_in(&a, &ua2).await;
    sign_in(&b, &agent("curl/8")).await;
    fail_login(&b, &agent("curl/8")).await;
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_filter_answers_what_the_log_holds_page_by_page() {
    let dir = tempfile::tempdir().unwrap();
    let app = audit_app(dir.path()).await;
    let (a, b) = activity(&app).await;
    let log = app.log().await;
    let snapshot = log.len() as u64;
    let session = log
        .iter()
        .find(|e| e["type"] == "login.succeeded" && e["subject"] == a.user_id.as_str())
        .unwrap()["session_id"]
        .as_str()
        .unwrap()
        .to_string();
    let t_mid = log[log.len() / 3]["time"].as_str().unwrap().to_string();
    let t_late = log[2 * log.len() / 3]["time"].as_str().unwrap().to_string();
    let cases: Vec<Vec<(&str, &str)>> = vec![
        vec![],
        vec![("subject", &a.user_id)],
        vec![("subject", &b.user_id)],
        vec![("client_id", &a.client_id)],
        vec![("session_id", &session)],
        vec![("type", "login.")],
        vec![("type", "login.failed"), ("type", "token.")],
        vec![("outcome", "failure")],
        vec![("ip", "203.0.113.7"), ("type", "login.")],
        vec![("ip", "10.9.9.9")],
        vec![("from", &t_mid), ("to", &t_late)],
        vec![
            ("subject", &a.user_id),
            ("type", "login."),
            ("outcome", "failure"),
        ],
        vec![
            ("client_id", &b.client_id),
            ("outcome", "success"),
            ("type", "token.granted"),
        ],
    ];
    for q in &cases {
        let want: Vec<u64> = log
            .iter()
            .filter(|e| expected_match(e, q))
            .map(|e| e["seq"].as_u64().unwrap())
            .collect();
        let got = page_through(&app, q, 2).await;
        // Reads are recorded as they happen: events past the snapshot can only
        // be those records, and they too must match.
        for e in got
            .iter()
            .filter(|e| e["seq"].as_u64().unwrap() >= snapshot)
        {
            assert_eq!(e["type"], "audit.accessed", "{q:?}");
            assert!(expected_match(e, q), "{q:?}: {e}");
        }
        let got: Vec<u64> = seqs(&got).into_iter().filter(|s| *s < snapshot).collect();
        assert_eq!(got, want, "filter {q:?}");
        // Envelopes carry their store-assigned fields and never a sidecar.
        if let Some(e) = page_through(&app, q, 1000).await.first() {
            assert!(e["position"].is_string() && e["revision"].is_u64() && e["seq"].is_u64());
            assert!(e.get("sidecar").is_none());
        }
    }
    // Non-trivial cases really select something.
    assert!(
        page_through(&app, &[("subject", &a.user_id), ("outcome", "failure")], 10)
            .await
            .len()
            >= 2
    );
    assert!(
        page_through(&app, &[("ip", "10.9.9.9")], 10)
            .await
            .is_empty()
    );

    // Newest first on request.
    let asc = seqs(&page_through(&app, &[("subject", &a.user_id)], 3).await);
    let mut desc =
        seqs(&page_through(&app, &[("subject", &a.user_id), ("order", "desc")], 3).await);
    desc.reverse();
    assert_eq!(asc, desc);

    // A user's history: by id or by username, newest first, with what a
    // compliance officer needs per line.
    for who in [a.user_id.as_str(), a.username.as_str()] {
        let h: Value = app
            .http
            .get(app.url(&format!("/admin/audit/users/{who}/history")))
            .bearer_auth(AUDITOR)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(h["user_id"], a.user_id.as_str());
        let entries = h["entries"].as_array().unwrap();
        let types: Vec<&str> = entries
            .iter()
            .map(|e| e["type"].as_str().unwrap())
            .collect();
        assert!(
            types.contains(&"login.succeeded") && types.contains(&"login.failed"),
            "{types:?}"
        );
        assert!(types.contains(&"token.granted"), "{types:?}");
        let s: Vec<u64> = entries.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
        assert!(s.windows(2).all(|w| w[0] > w[1]), "newest first: {s:?}");
        let failed = entries
            .iter()
            .find(|e| e["type"] == "login.failed")
            .unwrap();
        assert_eq!(failed["outcome"], "failure");
        assert_eq!(failed["ip"], "203.0.113.7");
        assert_eq!(failed["user_agent"], "Chrome/142 test");
        assert_eq!(failed["reason"], "invalid_credentials");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagination_stays_stable_while_events_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let app = audit_app(dir.path()).await;
    let create = |i: usize, base: String, token: String| async move {
        let r = reqwest::Client::new()
            .post(format!("{base}/admin/users"))
            .bearer_auth(token)
            .json(&json!({"username": format!("user{i}-{}", uuid::Uuid::now_v7().simple()), "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    };
    for i in 0..12 {
        create(i, app.url(""), app.admin_token.clone()).await;
    }
    let before: Vec<u64> = app
        .log()
        .await
        .iter()
        .filter(|e| e["type"] == "user.registered")
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    // Users keep registering while an auditor pages through registrations.
    let writer = {
        let (base, token) = (app.url(""), app.admin_token.clone());
        tokio::spawn(async move {
            for i in 100..130 {
                create(i, base.clone(), token.clone()).await;
            }
        })
    };
    let got = seqs(&page_through(&app, &[("type", "user.registered")], 2).await);
    writer.await.unwrap();
    assert!(
        got.windows(2).all(|w| w[0] < w[1]),
        "in log order, no repeats: {got:?}"
    );
    for s in &before {
        assert!(got.contains(s), "seq {s} was skipped while the log grew");
    }
    // Once the writers stop, a fresh walk sees exactly the log.
    let all: Vec<u64> = app
        .log()
        .await
        .iter()
        .filter(|e| e["type"] == "user.registered")
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(all.len(), 42);
    assert_eq!(
        seqs(&page_through(&app, &[("type", "user.registered")], 5).await),
        all
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_read_is_recorded_and_auditors_read_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let app = audit_app(dir.path()).await;
    let (a, _) = activity(&app).await;
    let n = page_through(&app, &[("subject", &a.user_id), ("type", "login.")], 100)
        .await
        .len();
    let last = app.log().await.into_iter().last().unwrap();
    assert_eq!(last["type"], "audit.accessed");
    assert_eq!(last["actor"]["id"], "auditor");
    assert_eq!(last["data"]["token_name"], "auditor");
    assert_eq!(last["data"]["endpoint"], "/admin/audit/events");
    assert_eq!(last["data"]["result_count"], n as u64);
    assert_eq!(last["data"]["filter"]["subject"], a.user_id.as_str());
    assert_eq!(last["data"]["filter"]["type"], json!(["login."]));
    assert_eq!(last["source"]["ip"], "127.0.0.1");

    // The auditor token reads the audit trail and nothing else.
    for path in ["/admin/clients", "/admin/events", "/admin/store/check"] {
        let r = app
            .http
            .get(app.url(path))
            .bearer_auth(AUDITOR)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{path}");
    }
    let r = app
        .http
        .post(app.url("/admin/users"))
        .bearer_auth(AUDITOR)
        .json(&json!({"username": "mallory", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = app
        .http
        .get(app.url("/admin/audit/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = app
        .http
        .get(app.url("/admin/audit/events"))
        .bearer_auth("not-a-token-at-all-000")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // The admin token reads it too.
    let r = app
        .http
        .get(app.url("/admin/audit/events?limit=1"))
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Bad filters: a specific error, and nothing appended.
    let head = app.store.head().await.unwrap().unwrap().seq;
    for (q, needle) in [
        ("type=nope.", "not a prefix"),
        ("outcome=maybe", "success or failure"),
        ("from=yesterday", "RFC 3339"),
        ("from=2026-11-02T00:00:00Z&to=2026-11-01T00:00:00Z", "after"),
        ("subjet=x", "unknown parameter"),
        ("limit=-1", "limit"),
        ("after=abc", "after"),
        ("order=sideways", "asc or desc"),
        ("subject=a&subject=b", "twice"),
    ] {
        let r = app
            .http
            .get(app.url(&format!("/admin/audit/events?{q}")))
            .bearer_auth(AUDITOR)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{q}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "invalid_request", "{q}");
        assert!(
            body["error_description"].as_str().unwrap().contains(needle),
            "{q}: {body}"
        );
    }
    assert_eq!(app.store.head().await.unwrap().unwrap().seq, head);
    app.stop().await;
}

async fn get_json(app: &TestApp, path: &str) -> Value {
    let r = app
        .http
        .get(app.url(path))
        .bearer_auth(AUDITOR)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{path}: {}", r.text().await.unwrap());
    r.json().await.unwrap()
}

async fn checkpoint(app: &TestApp) -> Value {
    let r = app
        .http
        .post(app.url("/admin/audit/checkpoint"))
        .bearer_auth(AUDITOR)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    r.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_and_proofs_verify_with_an_independent_verifier() {
    let dir = tempfile::tempdir().unwrap();
    let app = audit_app(dir.path()).await;
    let (a, _) = activity(&app).await;
    let key = get_json(&app, "/admin/audit/key").await;
    assert_eq!(key["algorithm"], "Ed25519");
    let public = key["public_key"].as_str().unwrap().to_string();
    let cp1 = checkpoint(&app).await;
    sign_in(&a, &agent("Safari/18 test")).await;
    let cp2 = checkpoint(&app).await;
    // Nothing new since: the same checkpoint, not another event.
    let r = app
        .http
        .post(app.url("/admin/audit/checkpoint"))
        .bearer_auth(AUDITOR)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap()["root_hash"],
        cp2["root_hash"]
    );
    for cp in [&cp1, &cp2] {
        assert!(rfc9162::checkpoint_signature_ok(cp, &public), "{cp}");
        let mut forged = cp.clone();
        forged["tree_size"] = json!(cp["tree_size"].as_u64().unwrap() - 1);
        assert!(!rfc9162::checkpoint_signature_ok(&forged, &public));
    }
    // Both are in the log, the latest is served, and they reach every reader
    // of the log as audit.checkpoint events.
    let listed = get_json(&app, "/admin/audit/checkpoints").await;
    let sizes: Vec<u64> = listed["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["tree_size"].as_u64().unwrap())
        .collect();
    assert_eq!(
        sizes,
        vec![
            cp1["tree_size"].as_u64().unwrap(),
            cp2["tree_size"].as_u64().unwrap()
        ]
    );
    assert_eq!(
        get_json(&app, "/admin/audit/checkpoint").await["root_hash"],
        cp2["root_hash"]
    );

    // Inclusion: every event of the first checkpoint's tree, from the bytes the
    // event stream ships, against the signed root.
    let (n1, n2) = (
        cp1["tree_size"].as_u64().unwrap(),
        cp2["tree_size"].as_u64().unwrap(),
    );
    let root1 = rfc9162::unhex(cp1["root_hash"].as_str().unwrap());
    let root2 = rfc9162::unhex(cp2["root_hash"].as_str().unwrap());
    let text = app
        .http
        .get(app.url("/admin/events"))
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let lines: Vec<&str> = text.lines().collect();
    // The signed roots are the roots of the bodies as shipped, computed here
    // from the definition.
    let leaves: Vec<rfc9162::Hash> = lines
        .iter()
        .map(|l| rfc9162::leaf(&rfc9162::body_of_line(l).1))
        .collect();
    assert_eq!(rfc9162::mth(&leaves[..n1 as usize]), root1);
    assert_eq!(rfc9162::mth(&leaves[..n2 as usize]), root2);
    for m in 0..n1 {
        let (seq, body) = rfc9162::body_of_line(lines[m as usize]);
        assert_eq!(seq, m);
        let p = get_json(
            &app,
            &format!("/admin/audit/proof/inclusion?seq={m}&tree_size={n1}"),
        )
        .await;
        let path: Vec<rfc9162::Hash> = p["inclusion"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| rfc9162::unhex(h.as_str().unwrap()))
            .collect();
        let leaf = rfc9162::leaf(&body);
        assert!(
            rfc9162::verify_inclusion(m, n1, leaf, &path, &root1),
            "seq {m} in {n1}"
        );
        // The same proof does not prove another event, or another tree.
        let other = rfc9162::leaf(b"{}");
        assert!(!rfc9162::verify_inclusion(m, n1, other, &path, &root1));
        assert!(!rfc9162::verify_inclusion(m, n1, leaf, &path, &root2));
    }
    // Consistency: the second checkpoint extends the first.
    let p = get_json(
        &app,
        &format!("/admin/audit/proof/consistency?from={n1}&to={n2}"),
    )
    .await;
    let path: Vec<rfc9162::Hash> = p["consistency"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| rfc9162::unhex(h.as_str().unwrap()))
        .collect();
    assert!(rfc9162::verify_consistency(n1, n2, &root1, &root2, &path));
    assert!(!rfc9162::verify_consistency(n1, n2, &root2, &root2, &path));
    for m in [1, 2, 3, 5, n1 / 2, n1 - 1] {
        let p = get_json(
            &app,
            &format!("/admin/audit/proof/consistency?from={m}&to={n2}"),
        )
        .await;
        let path: Vec<rfc9162::Hash> = p["consistency"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| rfc9162::unhex(h.as_str().unwrap()))
            .collect();
        let from_root = rfc9162::mth(&leaves[..m as usize]);
        assert_eq!(p["from_root"], hex::encode(from_root));
        assert!(
            rfc9162::verify_consistency(m, n2, &from_root, &root2, &path),
            "{m} → {n2}"
        );
    }
    // Proof requests beyond the tree are refused with a reason.
    for q in [
        format!("/admin/audit/proof/inclusion?seq={n2}&tree_size={n2}"),
        "/admin/audit/proof/inclusion?seq=0&tree_size=99999999".to_string(),
        "/admin/audit/proof/consistency?from=0&to=3".to_string(),
        "/admin/audit/proof/consistency?from=5&to=3".to_string(),
    ] {
        let r = app
            .http
            .get(app.url(&q))
            .bearer_auth(AUDITOR)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{q}");
    }
    // The whole log verifies.
    let v = get_json(&app, "/admin/audit/verify").await;
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["checkpoints_matching"], 2);
    app.stop().await;
}

fn authlog_cli(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_authlog"))
        .args(args)
        .env("AUTHLOG_DATA_DIR", dir)
        .env("AUTHLOG_LOG_LEVEL", "warn")
        .env("AUTHLOG_AUDIT_SIGNING_KEY", AUDIT_KEY)
        .output()
        .unwrap()
}

fn out(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_are_verifiable_offline_and_every_tampering_fails() {
    let dir = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let app = audit_app(dir.path()).await;
    let (a, _) = activity(&app).await;
    // A user agent a spreadsheet would run as a formula.
    fail_login(&a, &agent("=HYPERLINK(\"http://evil.example/\",\"x\")")).await;

    let r = app
        .http
        .get(app.url(&format!("/admin/audit/export?subject={}", a.user_id)))
        .bearer_auth(AUDITOR)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/x-ndjson");
    let export = r.text().await.unwrap();
    let lines: Vec<&str> = export.lines().collect();
    let header: Value = serde_json::from_str(lines[0]).unwrap();
    let cp = header["authlog_export"]["checkpoint"].clone();
    assert_eq!(
        get_json(&app, "/admin/audit/checkpoint").await["root_hash"],
        cp["root_hash"]
    );
    let key = get_json(&app, "/admin/audit/key").await;
    assert!(rfc9162::checkpoint_signature_ok(
        &cp,
        key["public_key"].as_str().unwrap()
    ));
    // Each event, independently: its body from the line, its inclusion proof
    // against the signed root.
    let root = rfc9162::unhex(cp["root_hash"].as_str().unwrap());
    let size = cp["tree_size"].as_u64().unwrap();
    let events = &lines[1..lines.len() - 1];
    assert!(events.len() >= 8, "{}", events.len());
    for l in events {
        let v: Value = serde_json::from_str(l).unwrap();
        assert_eq!(v["event"]["subject"], a.user_id.as_str());
        let raw = serde_json::to_string(&v["event"]).unwrap();
        let event_text = &l[l.find("{\"position\"").unwrap()..l.find(",\"inclusion\"").unwrap()];
        assert_eq!(
            serde_json::from_str::<Value>(event_text).unwrap(),
            serde_json::from_str::<Value>(&raw).unwrap()
        );
        let (seq, body) = rfc9162::body_of_line(event_text);
        let path: Vec<rfc9162::Hash> = v["inclusion"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| rfc9162::unhex(h.as_str().unwrap()))
            .collect();
        assert!(rfc9162::verify_inclusion(
            seq,
            size,
            rfc9162::leaf(&body),
            &path,
            &root
        ));
    }
    assert!(lines.last().unwrap().contains("authlog_export_end"));

    // The CLI verifies it offline with the checkpoint and the public key.
    let (file, cp_file, key_file) = (
        work.path().join("export.ndjson"),
        work.path().join("checkpoint.json"),
        work.path().join("audit-key.json"),
    );
    std::fs::write(&cp_file, cp.to_string()).unwrap();
    std::fs::write(&key_file, key.to_string()).unwrap();
    let verify = |text: &str| {
        std::fs::write(&file, text).unwrap();
        authlog_cli(
            work.path(),
            &[
                "audit",
                "verify-export",
                file.to_str().unwrap(),
                "--checkpoint",
                cp_file.to_str().unwrap(),
                "--key",
                key_file.to_str().unwrap(),
            ],
        )
    };
    let ok = verify(&export);
    assert!(ok.status.success(), "{}", out(&ok));
    assert!(
        out(&ok).contains(&format!("verified: {} events", events.len())),
        "{}",
        out(&ok)
    );

    // The four tamperings, each caught and placed.
    let join = |ls: Vec<&str>| ls.join("\n") + "\n";
    let mut flipped: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    flipped[3] = flipped[3].replacen("\"time\":\"20", "\"time\":\"19", 1);
    assert_ne!(flipped[3], lines[3]);
    let cases: Vec<(&str, String, &str)> = vec![
        ("flip", flipped.join("\n") + "\n", "line 4"),
        (
            "delete",
            join([&lines[..3], &lines[4..]].concat()),
            "line 4",
        ),
        (
            "swap",
            {
                let mut s = lines.clone();
                s.swap(2, 3);
                join(s)
            },
            "line 4",
        ),
        (
            "truncate",
            join(lines[..lines.len() - 3].to_vec()),
            "truncated",
        ),
        (
            "renumber",
            {
                let mut s: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
                s[3] = s[3].replacen("\"revision\":", "\"revision\":1", 1);
                s.join("\n") + "\n"
            },
            "line 4",
        ),
        (
            "extra field",
            {
                let mut s: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
                s[3] = s[3].replacen("{\"event\":", "{\"note\":\"ok\",\"event\":", 1);
                s.join("\n") + "\n"
            },
            "line 4",
        ),
    ];
    for (name, text, place) in cases {
        let o = verify(&text);
        assert!(!o.status.success(), "{name} passed verification");
        assert!(out(&o).contains(place), "{name}: {}", out(&o));
    }
    // Another checkpoint or key does not vouch for it.
    let mut other = cp.clone();
    other["root_hash"] = json!("00".repeat(32));
    std::fs::write(&cp_file, other.to_string()).unwrap();
    assert!(!verify(&export).status.success());

    // CSV: readable, and formula-looking cells are defused.
    let csv = app
        .http
        .get(app.url(&format!(
            "/admin/audit/export?format=csv&subject={}&type=login.",
            a.user_id
        )))
        .bearer_auth(AUDITOR)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(csv.starts_with("seq,position,time,type,outcome,reason,actor_kind,actor_id,subject,client_id,session_id,ip,user_agent"));
    assert!(
        csv.contains("\"'=HYPERLINK(\"\"http://evil.example/\"\",\"\"x\"\")\""),
        "{csv}"
    );
    assert!(!csv.contains(",=HYPERLINK") && !csv.contains(",\"=HYPERLINK"));
    assert!(csv.lines().skip(1).all(|l| l.contains("login.")));

    // Exports are reads: recorded before the first byte, and with their count
    // once complete (just after the last byte: poll for it).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let records = loop {
        let records: Vec<Value> = app
            .log()
            .await
            .into_iter()
            .filter(|e| {
                e["type"] == "audit.accessed" && e["data"]["endpoint"] == "/admin/audit/export"
            })
            .collect();
        if records
            .iter()
            .filter(|e| e["data"]["filter"]["stage"] == "ended")
            .count()
            == 2
        {
            break records;
        }
        assert!(std::time::Instant::now() < deadline, "{records:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let stages: Vec<&str> = records
        .iter()
        .map(|e| e["data"]["filter"]["stage"].as_str().unwrap())
        .collect();
    assert_eq!(stages, ["started", "ended", "started", "ended"]);
    let csv_done = &records[3];
    assert_eq!(csv_done["data"]["filter"]["format"], "csv");
    assert_eq!(csv_done["data"]["filter"]["complete"], true);
    assert_eq!(
        csv_done["data"]["result_count"],
        (csv.lines().count() - 1) as u64
    );
    assert_eq!(records[1]["data"]["result_count"], events.len() as u64);

    // No secret anywhere in what readers of the audit trail receive.
    let everything = app.log().await;
    let api = page_through(&app, &[], 1000).await;
    for (what, text) in [
        ("export", export.clone()),
        ("csv", csv.clone()),
        ("events", serde_json::to_string(&everything).unwrap()),
        ("audit api", serde_json::to_string(&api).unwrap()),
    ] {
        for secret in [
            PASSWORD,
            a.client_secret.as_deref().unwrap(),
            "$argon2id",
            "sidecar",
        ] {
            assert!(!text.contains(secret), "{what} holds {secret:?}");
        }
    }
    app.stop().await;
}

/// Copies a stopped server's data directory.
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

async fn leaves_of(dir: &std::path::Path) -> Vec<[u8; 32]> {
    let store = authlog::store::embedded::EmbeddedStore::open_existing(dir, None).unwrap();
    leaves_from_the_log(&store).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_every_tampering_and_the_server_refuses_a_rewritten_log() {
    use authlog::store::embedded::tamper_for_tests as tamper;
    let dir = tempfile::tempdir().unwrap();
    let app = audit_app(dir.path()).await;
    let (a, _) = activity(&app).await;
    let cp1 = checkpoint(&app).await;
    sign_in(&a, &agent("Edge/140 test")).await;
    checkpoint(&app).await;
    let n1 = cp1["tree_size"].as_u64().unwrap();
    app.stop().await;

    let ok = authlog_cli(dir.path(), &["audit", "verify"]);
    assert!(ok.status.success(), "{}", out(&ok));
    assert!(out(&ok).contains("2 matching the log"), "{}", out(&ok));

    // The damage is below the first checkpoint: that checkpoint came before it.
    let d = n1 / 2;
    type Damage = Box<dyn Fn(&std::path::Path)>;
    let cases: Vec<(&str, Damage, u64)> = vec![
        (
            "flip one byte",
            Box::new(move |p| {
                tamper::edit_body(p, d, |b| {
                    let i = b.iter().rposition(|c| c.is_ascii_digit()).unwrap();
                    b[i] = if b[i] == b'1' { b'2' } else { b'1' };
                })
                .unwrap()
            }),
            d,
        ),
        (
            "delete one event",
            Box::new(move |p| tamper::delete(p, d).unwrap()),
            d,
        ),
        (
            "swap two",
            Box::new(move |p| tamper::swap(p, d, d + 1).unwrap()),
            d,
        ),
        (
            "truncate the tail",
            Box::new(move |p| tamper::truncate(p, d).unwrap()),
            d,
        ),
    ];
    let root1 = rfc9162::unhex(cp1["root_hash"].as_str().unwrap());
    for (name, damage, first) in cases {
        let copy = tempfile::tempdir().unwrap();
        copy_dir(dir.path(), copy.path());
        damage(copy.path());
        // The store's own check does not see it (digests and indexes were kept
        // consistent), except that deleting or truncating shortens streams.
        let o = authlog_cli(copy.path(), &["audit", "verify"]);
        assert!(!o.status.success(), "{name}: verify passed:\n{}", out(&o));
        assert!(
            out(&o).contains(&format!("first damaged event: seq {first}")),
            "{name}:\n{}",
            out(&o)
        );
        // The checkpoint from before the damage is not consistent with the log
        // as it now is (independent verifier).
        let leaves = leaves_of(copy.path()).await;
        let now = leaves.len() as u64;
        if now >= n1 {
            let proof = authlog::audit::merkle::consistency_proof(leaves.as_slice(), n1, now);
            let now_root = authlog::audit::merkle::root(leaves.as_slice(), 0, now);
            assert!(
                !rfc9162::verify_consistency(n1, now, &root1, &now_root, &proof),
                "{name}: the old checkpoint is still consistent"
            );
        } else {
            // Shorter than the checkpoint: it covers events the log no longer has.
            assert_eq!(name, "truncate the tail");
        }
        // The server refuses to serve it.
        let config =
            crate::support::test_config(copy.path(), &[("AUTHLOG_AUDIT_SIGNING_KEY", AUDIT_KEY)]);
        let err = match authlog::app::Application::build(config).await {
            Ok(_) => panic!("{name}: the server started on a rewritten log"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains("rolled back, forked or rewritten"),
            "{name}: {err}"
        );
    }
    // Without the tree's record of the leaves, checkpoints alone still catch it.
    let copy = tempfile::tempdir().unwrap();
    copy_dir(dir.path(), copy.path());
    tamper::swap(copy.path(), d, d + 1).unwrap();
    std::fs::remove_file(copy.path().join(authlog::app::AUDIT_TREE_FILE)).unwrap();
    let o = authlog_cli(copy.path(), &["audit", "verify"]);
    assert!(!o.status.success());
    assert!(
        out(&o).contains(&format!("checkpoint of size {n1}")),
        "{}",
        out(&o)
    );

    // The undamaged original is consistent with its first checkpoint.
    let leaves = leaves_of(dir.path()).await;
    let now = leaves.len() as u64;
    let proof = authlog::audit::merkle::consistency_proof(leaves.as_slice(), n1, now);
    let now_root = authlog::audit::merkle::root(leaves.as_slice(), 0, now);
    assert!(rfc9162::verify_consistency(
        n1, now, &root1, &now_root, &proof
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_see_their_own_recent_sign_ins() {
    let dir = tempfile::tempdir().unwrap();
    let app = audit_app(dir.path()).await;
    let rp = setup(
        &app.url(""),
        &app.admin_token,
        json!({"client_name": "Payroll <b>App</b>"}),
    )
    .await;
    fail_login(&rp, &agent("<script>alert(1)</script> Evil/1")).await;
    let me = agent_at("MyLaptop/1.0", "192.0.2.10");
    sign_in(&rp, &me).await;
    let r = me
        .get(app.url("/oidc/account/history"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("script-src 'nonce-"));
    let page = r.text().await.unwrap();
    assert!(page.contains("MyLaptop/1.0"));
    assert!(page.contains("192.0.2.10"));
    assert!(page.contains("Payroll &lt;b&gt;App&lt;/b&gt;"), "{page}");
    assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt; Evil/1"));
    assert!(!page.contains("<script>alert(1)"));
    assert!(page.contains("Failed (invalid_credentials)"));
    // Newest first: the successful sign-in, then the failure.
    assert!(page.find("MyLaptop/1.0").unwrap() < page.find("Evil/1").unwrap());
    // Someone else's browser, or no session, sees nothing.
    let r = agent("x")
        .get(app.url("/oidc/account/history"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(!r.text().await.unwrap().contains("MyLaptop"));
    app.stop().await;
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// `n` sign-in events over many users, clients, sessions and addresses,
/// appended straight into a store (fast), as a large log to export.
async fn large_log(dir: &std::path::Path, n: u64) {
    use authlog::store::{EventStore, Expected, NewEvent};
    use authlog_schemas::data::LoginFailed;
    use authlog_schemas::{Actor, Envelope, Source};
    let store = authlog::store::embedded::EmbeddedStore::open(dir, None).unwrap();
    let mut batch = Vec::new();
    for i in 0..n {
        let user = format!("0190c0de-0000-7000-8000-{:012}", i % 5000);
        let env = Envelope::new(
            uuid::Uuid::now_v7().to_string(),
            format!("bulk-{}", i / 1000),
            crate::support::fixtures::at(i as i64),
            Actor::system("test"),
            &LoginFailed {
                user_id: Some(user.clone()),
                username_hash: None,
                failed_attempts: Some(1),
            },
        )
        .unwrap()
        .subject(user)
        .client(format!("client-{}", i % 50))
        .source(Source {
            ip: Some(format!("10.{}.{}.{}", i % 7, i % 250, i % 199)),
            user_agent: Some("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/142.0 Safari/537.36".into()),
        })
        .failure("invalid_credentials");
        batch.push(NewEvent::new(env, None).unwrap());
        if batch.len() == 1000 {
            store
                .append(
                    &format!("bulk-{}", i / 1000),
                    Expected::Any,
                    std::mem::take(&mut batch),
                )
                .await
                .unwrap();
        }
    }
    if !batch.is_empty() {
        store
            .append(&format!("bulk-{}", n / 1000), Expected::Any, batch)
            .await
            .unwrap();
    }
}

/// An export of a large log streams: the server's memory does not grow with
/// what it sends (the server runs as its own process, so its RSS is its own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_export_streams_in_bounded_memory() {
    const N: u64 = 150_000;
    let dir = tempfile::tempdir().unwrap();
    large_log(dir.path(), N).await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_authlog"))
        .arg("serve")
        .env("AUTHLOG_DATA_DIR", dir.path())
        .env("AUTHLOG_LISTEN", format!("127.0.0.1:{port}"))
        .env("AUTHLOG_LOG_LEVEL", "warn")
        .env("AUTHLOG_AUDITOR_TOKEN", AUDITOR)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !client
        .get(format!("{base}/readyz"))
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the server did not come up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before = rss_kib(pid);
    let mut r = client
        .get(format!("{base}/admin/audit/export?proofs=false"))
        .bearer_auth(AUDITOR)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (mut bytes, mut lines, mut peak) = (0u64, 0u64, before);
    let mut chunks = 0u64;
    while let Some(chunk) = r.chunk().await.unwrap() {
        bytes += chunk.len() as u64;
        lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
        chunks += 1;
        if chunks.is_multiple_of(20) {
            peak = peak.max(rss_kib(pid));
            // A slow reader: the server must wait for it, not buffer ahead.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    peak = peak.max(rss_kib(pid));
    // Every event of the log (the signing key's events come first).
    assert!((N..N + 10).contains(&lines), "{lines} lines");
    assert!(bytes > 50 << 20, "{bytes} bytes");
    let growth_mib = (peak.saturating_sub(before)) / 1024;
    eprintln!(
        "export of {lines} events, {} MiB: server RSS {} MiB before, {} MiB at most",
        bytes >> 20,
        before / 1024,
        peak / 1024
    );
    assert!(
        growth_mib < 48,
        "the server grew by {growth_mib} MiB (from {} MiB) while exporting {} MiB",
        before / 1024,
        bytes >> 20
    );
    child.kill().await.unwrap();
}
