//! The sign-in pages in a real browser: headless Chromium driven by
//! playwright-core (tests/browser/signin.mjs) goes from the authorization URL
//! through the login and consent forms to the redirect back to the client, with
//! the pages' Content-Security-Policy enforced as users' browsers enforce it.
//! `tests/run.sh` installs Chromium and playwright-core and sets
//! `AUTHLOG_TEST_CHROMIUM` and `AUTHLOG_TEST_NODE`.

use serde_json::json;

use crate::support::oidc::{PASSWORD, pkce, setup};
use crate::support::spawn_app_in;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run ./tests/run.sh, which installs the browser for this test")
    })
}

/// A person signs in the way client applications send them: from a link on
/// the application's own site, another site than authlog's (the application
/// runs at `http://localhost:PORT`, authlog at `http://127.0.0.1:PORT`), in
/// headless Chromium with authlog's cookies under the browser's SameSite rules
/// and the pages' CSP enforced. tests/browser/crosssite.mjs plays the
/// application (it redeems the code itself) and the person: sign-in with login
/// and consent, SSO from the application's page, RP-initiated logout POSTed by
/// the application's form, and a plain logout link with its confirmation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_signs_in_and_out_from_the_client_site_in_chromium() {
    let (chromium, node) = (env("AUTHLOG_TEST_CHROMIUM"), env("AUTHLOG_TEST_NODE"));
    let dir = tempfile::tempdir().unwrap();
    let shots = shots_dir("crosssite");
    let app = spawn_app_in(dir.path()).await;
    let rp_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let rp_origin = format!("http://localhost:{rp_port}");
    let rp = setup(
        &app.url(""),
        &app.admin_token,
        json!({
            "redirect_uris": [format!("{rp_origin}/cb")],
            "post_logout_redirect_uris": [format!("{rp_origin}/bye")],
        }),
    )
    .await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/crosssite.mjs");
    let out = tokio::process::Command::new(node)
        .args([
            script,
            &chromium,
            &app.url("/oidc"),
            &rp_port.to_string(),
            &rp.client_id,
            rp.client_secret.as_deref().unwrap(),
            &rp.username,
            PASSWORD,
            &shots.display().to_string(),
        ])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the browser run failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(seen["errors"], json!([]), "{seen:#}");
    assert_eq!(
        seen["csp_violations"],
        json!([]),
        "the pages' CSP blocked something: {seen:#}"
    );
    let steps = seen["steps"].as_array().unwrap();
    for width in [1280, 375] {
        let step = |name: &str| {
            steps
                .iter()
                .find(|s| s["name"] == name && s["width"] == width)
                .unwrap_or_else(|| panic!("no step {name} at {width}: {seen:#}"))
                .clone()
        };
        let signin = step("sign-in");
        assert_eq!(
            signin["who"],
            json!(rp.user_id),
            "signed in from the client's site: {signin}"
        );
        assert_eq!(signin["nonce_ok"], "true");
        // The first pass asks for consent; the second (another browser) has it.
        assert_eq!(signin["consented"], json!(width == 1280), "{signin}");
        let sso = step("sso");
        assert_eq!(sso["url_path"], "/cb", "SSO went straight back: {sso}");
        assert_eq!(sso["who"], json!(rp.user_id));
        assert_eq!(step("logout-post")["state"], "bye-state");
        assert_eq!(
            step("after-logout")["url_path"],
            "/oidc/login",
            "the POSTed logout ended the session"
        );
        assert_eq!(step("sign-in-again")["who"], json!(rp.user_id));
        assert_eq!(step("logout-confirmed")["text"], "Signed out");
        assert_eq!(step("after-confirmed-logout")["url_path"], "/oidc/login");
    }
    // Each logout ended a session in the log, by the user.
    let log = app.log().await;
    let ended: Vec<&serde_json::Value> = log
        .iter()
        .filter(|e| e["type"] == "session.ended" && e["subject"] == json!(rp.user_id))
        .collect();
    assert_eq!(ended.len(), 4, "two logouts in each of two browsers");
    for shot in [
        "login-1280",
        "login-375",
        "consent-1280",
        "signed-in-375",
        "logout-confirm-375",
    ] {
        assert!(
            std::fs::metadata(shots.join(format!("{shot}.png")))
                .unwrap()
                .len()
                > 1000,
            "{shot} was rendered"
        );
    }
    app.stop().await;
}

/// Where a browser test keeps its screenshots: `target/screenshots/NAME`, kept
/// after the run so people can look at them.
fn shots_dir(name: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/screenshots")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
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
