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
