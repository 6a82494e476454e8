//! Interoperability with code authlog did not write: authlib (PyPI) signs in
//! through authlog as any relying party would. `tests/run.sh` installs it into
//! `target/interop-venv` and points `AUTHLOG_TEST_PYTHON` at that interpreter.

use serde_json::json;

use crate::support::oidc::{PASSWORD, REDIRECT, setup};
use crate::support::spawn_app_in;

fn python() -> String {
    std::env::var("AUTHLOG_TEST_PYTHON").unwrap_or_else(|_| {
        panic!("AUTHLOG_TEST_PYTHON is not set: run ./tests/run.sh, which installs authlib for this test")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authlib_signs_in_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_in(dir.path()).await;
    let rp = setup(&app.url(""), &app.admin_token, json!({})).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/authlib_rp.py");
    let out = tokio::process::Command::new(python())
        .args([
            script,
            &app.url(""),
            &rp.client_id,
            rp.client_secret.as_deref().unwrap(),
            REDIRECT,
            &rp.username,
            PASSWORD,
        ])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "authlib's relying party failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(seen["sub"], rp.user_id);
    assert_eq!(seen["userinfo"]["preferred_username"], rp.username);
    assert_eq!(seen["refreshed"], true);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authlib_gets_introspects_and_revokes_machine_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_in(dir.path()).await;
    let http = reqwest::Client::new();
    let mut clients = Vec::new();
    for scope in ["reports:read", "introspection"] {
        let c: serde_json::Value = http
            .post(app.url("/admin/clients"))
            .bearer_auth(&app.admin_token)
            .json(&json!({"client_name": "m2m", "redirect_uris": [], "grant_types": ["client_credentials"], "scope": scope}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        clients.push((
            c["client_id"].as_str().unwrap().to_string(),
            c["client_secret"].as_str().unwrap().to_string(),
        ));
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/authlib_m2m.py");
    let out = tokio::process::Command::new(python())
        .args([
            script,
            &app.url(""),
            &clients[0].0,
            &clients[0].1,
            &clients[1].0,
            &clients[1].1,
        ])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "authlib failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(seen["sub"], format!("client:{}", clients[0].0));
    assert_eq!(seen["scope"], "reports:read");
    app.stop().await;
}
