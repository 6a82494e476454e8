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
