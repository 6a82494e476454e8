//! Invariant 1: rebuilding every view from position 0 gives exactly the live views;
//! snapshots restore the same views and are ignored when they do not fit.

use std::time::Duration;

use authlog::app::SNAPSHOT_FILE;
use authlog::store::{EventStore, ReadFrom};
use authlog_projections::{PROJECTION_VERSION, Snapshot, Views};

use crate::support::fixtures::append_story;
use crate::support::spawn_app_in;

async fn rebuild(store: &dyn EventStore) -> Views {
    let mut views = Views::initial();
    let mut from = ReadFrom::Start;
    loop {
        let page = store.read_all(from, 100).await.unwrap();
        let Some(last) = page.last() else {
            return views;
        };
        for r in &page {
            views.apply(r).unwrap();
        }
        from = ReadFrom::After(last.position);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuilding_from_zero_equals_the_live_views() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_in(dir.path()).await;
    let mut last = None;
    for key in ["a", "b", "c"] {
        last = Some(append_story(&app.store, key).await);
    }
    let last = last.unwrap();
    app.views
        .wait_for(last, Duration::from_secs(10))
        .await
        .unwrap();
    let live = app.views.read().await.clone();
    assert_eq!(live.position, Some(last));
    assert!(live.users.get("u-a").is_some(), "the views saw the story");
    assert!(
        live.clients.get("c-a").is_none(),
        "deleted clients leave the view"
    );
    let rebuilt = rebuild(app.store.as_ref()).await;
    assert_eq!(rebuilt, live);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_restore_the_views_and_foreign_ones_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_in(dir.path()).await;
    append_story(&app.store, "snap").await;
    // A client that stays (the story deletes its own).
    let r = reqwest::Client::new()
        .post(app.url("/admin/clients"))
        .bearer_auth(&app.admin_token)
        .json(&serde_json::json!({"client_name": "kept", "redirect_uris": ["https://app.example/cb"]}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let last = app.store.head().await.unwrap().unwrap().position;
    app.views
        .wait_for(last, Duration::from_secs(10))
        .await
        .unwrap();
    let live = app.views.read().await.clone();
    let log_id = app.store.log_id();
    app.stop().await;

    // Graceful stop wrote a snapshot of this log at the current version.
    let path = dir.path().join(SNAPSHOT_FILE);
    // The file is a seal line, then the snapshot's JSON.
    let file = std::fs::read(&path).unwrap();
    let newline = file.iter().position(|b| *b == b'\n').unwrap();
    let (seal, body) = (file[..=newline].to_vec(), &file[newline + 1..]);
    let seal_json: serde_json::Value = serde_json::from_slice(&seal).unwrap();
    assert_eq!(seal_json["sealed"], 1);
    assert_eq!(seal_json["mac"].as_str().unwrap().len(), 64);
    let snap: Snapshot = serde_json::from_slice(body).unwrap();
    assert_eq!(snap.log_id, log_id);
    assert_eq!(snap.projection_version, PROJECTION_VERSION);
    assert_eq!(snap.views, live);

    // Restart: the views come back from the snapshot and are ready at once.
    let app = spawn_app_in(dir.path()).await;
    assert!(app.views.is_ready());
    assert_eq!(*app.views.read().await, live);
    app.stop().await;

    // Edited while the server was stopped (a redirect URI and skip_consent
    // slipped into a client, no event for it), under the old seal: it does
    // not match its seal, and the views are rebuilt from the log.
    let mut edited: serde_json::Value = serde_json::from_slice(body).unwrap();
    let clients = edited["views"]["clients"]["by_id"]
        .as_object_mut()
        .expect("clients in the snapshot");
    let (_, client) = clients.iter_mut().next().expect("a client in the story");
    client["metadata"]["redirect_uris"]
        .as_array_mut()
        .expect("redirect_uris")
        .push("https://evil.example/cb".into());
    client["metadata"]["skip_consent"] = true.into();
    let mut tampered = seal.clone();
    tampered.extend(serde_json::to_vec(&edited).unwrap());
    std::fs::write(&path, &tampered).unwrap();
    let app = spawn_app_in(dir.path()).await;
    app.views
        .wait_for(last, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(*app.views.read().await, live, "the edit is not believed");
    app.stop().await;
    // Nor is the same edit written without a seal (as an older authlog wrote
    // its snapshots, which it trusted).
    std::fs::write(&path, serde_json::to_vec(&edited).unwrap()).unwrap();
    let app = spawn_app_in(dir.path()).await;
    app.views
        .wait_for(last, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(*app.views.read().await, live);
    app.stop().await;

    // A snapshot from another log is ignored: the views are rebuilt from the log.
    let mut foreign = snap.clone();
    foreign.log_id = "another-log".into();
    foreign.views = Views::initial();
    std::fs::write(&path, serde_json::to_vec(&foreign).unwrap()).unwrap();
    let app = spawn_app_in(dir.path()).await;
    app.views
        .wait_for(last, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(*app.views.read().await, live);
    app.stop().await;

    // So is one from another projection version.
    let mut old = snap;
    old.projection_version = PROJECTION_VERSION + 1;
    old.views = Views::initial();
    std::fs::write(&path, serde_json::to_vec(&old).unwrap()).unwrap();
    let app = spawn_app_in(dir.path()).await;
    app.views
        .wait_for(last, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(*app.views.read().await, live);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_keep_up_with_concurrent_writers() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_in(dir.path()).await;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = app.store.clone();
        let views = app.views.clone();
        tasks.push(tokio::spawn(async move {
            let last = append_story(&store, &format!("w{i}")).await;
            // Read-your-writes: once waited for, the write is visible.
            views.wait_for(last, Duration::from_secs(10)).await.unwrap();
            assert!(views.read().await.users.get(&format!("u-w{i}")).is_some());
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let live = app.views.read().await.clone();
    assert_eq!(rebuild(app.store.as_ref()).await, live);
    app.stop().await;
}
