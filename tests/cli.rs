//! The CLI: `events tail` and `store check`, on the store directly when the
//! server is stopped and through the admin API when a server holds the store.

use std::process::Command;

use authlog::store::embedded::EmbeddedStore;
use authlog::store::{EventStore, Expected, ReadFrom};

use crate::support::fixtures::{append_story, simple};
use crate::support::{Validating, spawn_app_in};

fn authlog(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_authlog"))
        .args(args)
        .env("AUTHLOG_DATA_DIR", dir)
        .env("AUTHLOG_LOG_LEVEL", "warn")
        .output()
        .unwrap()
}

async fn expected_lines(store: &dyn EventStore, from: usize) -> String {
    store
        .read_all(ReadFrom::Start, 10_000)
        .await
        .unwrap()
        .iter()
        .skip(from)
        .map(|r| format!("{}\n", String::from_utf8(r.to_export_line()).unwrap()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_and_check_on_a_stopped_server_read_the_store_directly() {
    let dir = tempfile::tempdir().unwrap();
    let expected = {
        let store: authlog::store::DynStore = std::sync::Arc::new(Validating::new(
            EmbeddedStore::open(dir.path(), None).unwrap(),
        ));
        append_story(&store, "cli").await;
        let e = expected_lines(store.as_ref(), 0).await;
        drop(store);
        e
    };
    let out = authlog(dir.path(), &["events", "tail"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap(), expected);
    assert!(String::from_utf8_lossy(&out.stderr).contains("directly"));

    let out = authlog(dir.path(), &["events", "tail", "--from", "3"]);
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().lines().count(),
        expected.lines().count() - 3
    );

    let out = authlog(dir.path(), &["store", "check"]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains(&format!("events: {}", expected.lines().count())),
        "{stdout}"
    );
    assert!(stdout.contains("problems: 0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_running_server_the_cli_goes_through_the_admin_api() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_in(dir.path()).await;
    append_story(&app.store, "api").await;
    let expected = expected_lines(app.store.as_ref(), 0).await;
    let url = app.url("");
    // The token comes from DATA_DIR/admin-token by default.
    let out = authlog(dir.path(), &["events", "tail", "--url", &url]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap(), expected);
    assert!(String::from_utf8_lossy(&out.stderr).contains("admin API"));

    let out = authlog(dir.path(), &["store", "check", "--url", &url]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("problems: 0"));

    let out = authlog(
        dir.path(),
        &[
            "events",
            "tail",
            "--url",
            &url,
            "--token",
            "wrong-token-wrong-token",
        ],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_check_exits_non_zero_on_damage() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = EmbeddedStore::open(dir.path(), None).unwrap();
        store
            .append("user-ok", Expected::Any, vec![simple("user-ok")])
            .await
            .unwrap();
        // A sidecar that does not match the body's sealed_digest: damage the
        // store cannot see at append, which `store check` must find.
        let good = simple("user-bad");
        let bad = good.with_mismatched_sidecar_for_tests(b"swapped".to_vec());
        store
            .append("user-bad", Expected::Any, vec![bad])
            .await
            .unwrap();
    }
    let out = authlog(dir.path(), &["store", "check"]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(!out.status.success(), "{stdout}");
    assert!(stdout.contains("problems: 1"), "{stdout}");
    assert!(
        stdout.contains("sidecar does not match sealed_digest"),
        "{stdout}"
    );
}

#[test]
fn reading_commands_never_create_a_store() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("typo");
    for args in [&["store", "check"][..], &["events", "tail"][..]] {
        let out = authlog(&missing, args);
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("no authlog store"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(
        !missing.exists(),
        "a reading command created the data directory"
    );
}
