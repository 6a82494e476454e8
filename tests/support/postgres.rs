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
    let (url, query) = admin.split_once('?').unwrap_or((admin.as_str(), ""));
    let base = url.rsplit_once('/').unwrap().0;
    if query.is_empty() {
        format!("{base}/{name}")
    } else {
        format!("{base}/{name}?{query}")
    }
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

/// A KurrentDB store under a log name of its own (streams `t…-*`), on the
/// server `AUTHLOG_TEST_KURRENTDB_URL` names. No KurrentDB server can be
/// installed on the test machines: `tests/run.sh` skips these tests, and says
/// so, when the variable is not set.
pub async fn kurrentdb_store() -> TestStore {
    let url = std::env::var("AUTHLOG_TEST_KURRENTDB_URL").unwrap_or_else(|_| {
        panic!("AUTHLOG_TEST_KURRENTDB_URL is not set: these tests need a KurrentDB server (kurrentdb://host:2113?tls=false)")
    });
    let name = format!("t{}", uuid::Uuid::now_v7().simple());
    let store = authlog::store::kurrentdb::KurrentStore::open(&url, &name)
        .await
        .unwrap();
    TestStore {
        store: Arc::new(Validating::new(store)),
        _dir: tempfile::tempdir().unwrap(),
    }
}
