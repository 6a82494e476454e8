//! A real PostgreSQL for the PostgreSQL store and the two-node tests:
//! `tests/run.sh` starts one and sets `AUTHLOG_TEST_POSTGRES_URL`; every test
//! gets a database of its own.

use std::sync::Arc;

use authlog::store::postgres::PostgresStore;

use super::{TestStore, Validating};

fn admin_url() -> String {
    std::env::var("AUTHLOG_TEST_POSTGRES_URL").unwrap_or_else(|_| {
        panic!("AUTHLOG_TEST_POSTGRES_URL is not set: run ./tests/run.sh, which installs and starts PostgreSQL for these tests")
    })
}

/// A new, empty database; its URL.
pub async fn fresh_database() -> String {
    let admin = admin_url();
    let (client, connection) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let name = format!("authlog_t_{}", uuid::Uuid::now_v7().simple());
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    let base = admin.rsplit_once('/').unwrap().0;
    format!("{base}/{name}")
}

/// A PostgreSQL store on a fresh database, every append schema-validated.
pub async fn postgres_store() -> TestStore {
    let url = fresh_database().await;
    let store = PostgresStore::open(&url, None).await.unwrap();
    TestStore {
        store: Arc::new(Validating::new(store)),
        _dir: tempfile::tempdir().unwrap(),
    }
}
