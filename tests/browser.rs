//! The sign-in pages in a real browser: headless Chromium driven by
//! playwright-core (tests/browser/signin.mjs) goes from the authorization URL
//! through the login and consent forms to the redirect back to the client, with
//! the pages' Content-Security-Policy enforced as users' browsers enforce it.
//! `tests/run.sh` installs Chromium and playwright-core and sets
//! `AUTHLOG_TEST_CHROMIUM` and `AUTHLOG_TEST_NODE`.

use serde_json::json;

use crate::support::oidc::{PASSWORD, pkce, query, setup};
use crate::support::spawn_app_in;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run ./tests/run.sh, which installs the browser for this test")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_signs_in_with_chromium() {
    let (chromium, node) = (env("AUTHLOG_TEST_CHROMIUM"), env("AUTHLOG_TEST_NODE"));
    let dir = tempfile::tempdir().unwrap();
    let shots = tempfile::tempdir().unwrap();
    let app = spawn_app_in(dir.path()).await;
    // A native-style loopback redirect: nothing listens there; the browser's
    // request to it is what the script waits for.
    let rp = setup(
        &app.url(""),
        &app.admin_token,
        json!({"redirect_uris": ["http://127.0.0.1/cb"], "application_type": "native"}),
    )
    .await;
    let (verifier, challenge) = pkce();
    let redirect = "http://127.0.0.1:9/cb";
    let auth = format!(
        "{}/oidc/oauth2/auth?response_type=code&client_id={}&redirect_uri={}&scope=openid%20email&state=s1&nonce=n1&code_challenge={challenge}&code_challenge_method=S256",
        app.url(""),
        rp.client_id,
        form_urlencoded::byte_serialize(redirect.as_bytes()).collect::<String>()
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/signin.mjs");
    let out = tokio::process::Command::new(node)
        .args([
            script,
            &chromium,
            &auth,
            &rp.username,
            PASSWORD,
            redirect,
            &shots.path().display().to_string(),
        ])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "the browser run failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        seen["csp_violations"],
        json!([]),
        "the pages' CSP blocked something"
    );
    let back = seen["redirect"].as_str().unwrap();
    let q = query(back);
    assert_eq!(q["state"], "s1");
    assert_eq!(q["iss"], app.url("/oidc"));
    // The code the browser carried back is good.
    let r = rp
        .token(&[
            ("grant_type", "authorization_code"),
            ("code", &q["code"]),
            ("redirect_uri", redirect),
            ("code_verifier", &verifier),
        ])
        .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    for shot in ["login.png", "consent.png"] {
        assert!(
            std::fs::metadata(shots.path().join(shot)).unwrap().len() > 1000,
            "{shot} was rendered"
        );
    }
    app.stop().await;
}

/// The compliance officer's page in headless Chromium (tests/browser/audit.mjs):
/// sign in with an auditor token (an HttpOnly, SameSite=Strict cookie, nothing
/// in storage), CSRF-checked requests, a user's timeline with failures
/// highlighted, the chart, the export download and the integrity panel — with
/// markup planted in a username and a user agent that must show as text and
/// never run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auditor_reviews_sign_ins_in_chromium() {
    use crate::audit::{AUDITOR, agent_at, audit_app, fail_login};
    let (chromium, node) = (env("AUTHLOG_TEST_CHROMIUM"), env("AUTHLOG_TEST_NODE"));
    let dir = tempfile::tempdir().unwrap();
    let shots = tempfile::tempdir().unwrap();
    let app = audit_app(dir.path()).await;
    // Usernames cannot hold spaces; this one needs none.
    let evil_user = "\"><img/src=x/onerror=alert(1)>";
    let evil_agent = "\"><img src=x onerror=alert(1)>";
    let rp = setup(&app.url(""), &app.admin_token, json!({})).await;
    let r = app
        .http
        .post(app.url("/admin/users"))
        .bearer_auth(&app.admin_token)
        .json(&json!({"username": evil_user, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let user: serde_json::Value = r.json().await.unwrap();
    let evil = crate::support::oidc::Rp {
        username: evil_user.to_string(),
        user_id: user["id"].as_str().unwrap().to_string(),
        ..rp
    };
    let browser = agent_at(evil_agent, "203.0.113.66");
    fail_login(&evil, &browser).await;
    let (_, challenge) = pkce();
    evil.sign_in(
        &browser,
        &evil.auth_url(&challenge, "openid", &[]),
        PASSWORD,
    )
    .await;
    let r = app
        .http
        .post(app.url("/admin/audit/checkpoint"))
        .bearer_auth(AUDITOR)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/audit.mjs");
    let out = tokio::process::Command::new(node)
        .args([
            script,
            &chromium,
            &app.url(""),
            AUDITOR,
            evil_user,
            evil_agent,
            &shots.path().display().to_string(),
        ])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "the audit page run failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("audit page: ok"));
    assert!(
        std::fs::metadata(shots.path().join("audit.png"))
            .unwrap()
            .len()
            > 1000
    );
    // What the page read was recorded as the auditor's.
    let log = app
        .http
        .get(app.url("/admin/events"))
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let reads: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["type"] == "audit.accessed" && e["actor"]["id"] == "auditor")
        .collect();
    for endpoint in [
        "/admin/audit/users/{id}/history",
        "/admin/audit/stats",
        "/admin/audit/export",
    ] {
        assert!(
            reads.iter().any(|e| e["data"]["endpoint"] == endpoint),
            "no recorded read of {endpoint}"
        );
    }
    app.stop().await;
}
