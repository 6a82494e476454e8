//! The store contract: generic async functions every backend runs. The embedded
//! backend runs them below; cluster backends add one `contract_suite!` line each.

use std::collections::{HashMap, HashSet};

use authlog::store::{DynStore, Expected, ReadFrom, StoreError};
use futures_util::StreamExt;

use crate::support::fixtures::simple;

pub async fn expected_revision_conflicts(store: DynStore) {
    let r = store
        .append("user-a", Expected::NoStream, vec![simple("user-a")])
        .await
        .unwrap();
    assert_eq!(r.last_revision, 0);
    let err = store
        .append("user-a", Expected::NoStream, vec![simple("user-a")])
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Conflict {
                actual: Some(0),
                expected: Expected::NoStream,
                ..
            }
        ),
        "{err}"
    );
    let r = store
        .append(
            "user-a",
            Expected::Revision(0),
            vec![simple("user-a"), simple("user-a")],
        )
        .await
        .unwrap();
    assert_eq!(r.last_revision, 2);
    assert_eq!(r.positions.len(), 2);
    let err = store
        .append("user-a", Expected::Revision(0), vec![simple("user-a")])
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Conflict {
                actual: Some(2),
                ..
            }
        ),
        "{err}"
    );
    let err = store
        .append("user-b", Expected::Revision(0), vec![simple("user-b")])
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict { actual: None, .. }),
        "{err}"
    );
    let r = store
        .append("user-a", Expected::Any, vec![simple("user-a")])
        .await
        .unwrap();
    assert_eq!(r.last_revision, 3);
    // A failed append wrote nothing.
    assert_eq!(store.read_stream("user-a", 0, 100).await.unwrap().len(), 4);
    assert!(
        store
            .read_stream("user-b", 0, 100)
            .await
            .unwrap()
            .is_empty()
    );
    let err = store
        .append("user-a", Expected::Any, vec![])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidEvent(_)), "{err}");
}

pub async fn idempotent_retries(store: DynStore) {
    let events = vec![simple("user-a"), simple("user-a")];
    let first = store
        .append("user-a", Expected::NoStream, events.clone())
        .await
        .unwrap();
    let head = store.head().await.unwrap();
    // The same ids after the same expectation: the original result, nothing written.
    let again = store
        .append("user-a", Expected::NoStream, events.clone())
        .await
        .unwrap();
    assert_eq!(first, again);
    assert_eq!(store.head().await.unwrap(), head);
    // Another append in between does not change the answer to the retry.
    store
        .append("user-a", Expected::Revision(1), vec![simple("user-a")])
        .await
        .unwrap();
    let again = store
        .append("user-a", Expected::NoStream, events.clone())
        .await
        .unwrap();
    assert_eq!(first, again);
    let again = store
        .append("user-a", Expected::Any, events.clone())
        .await
        .unwrap();
    assert_eq!(first, again);
    // The same ids with another expectation, out of order, or mixed with new ids
    // are not a retry: refused, nothing written.
    let before = store.head().await.unwrap();
    for (stream, expected, evs) in [
        ("user-a", Expected::Revision(7), events.clone()),
        (
            "user-a",
            Expected::NoStream,
            vec![events[1].clone(), events[0].clone()],
        ),
        (
            "user-a",
            Expected::Revision(2),
            vec![events[1].clone(), simple("user-a")],
        ),
    ] {
        let err = store.append(stream, expected, evs).await.unwrap_err();
        assert!(matches!(err, StoreError::IdReused { .. }), "{err}");
    }
    assert_eq!(store.head().await.unwrap(), before);
    // An event whose body names another stream is refused.
    let err = store
        .append("user-z", Expected::Any, vec![simple("user-a")])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidEvent(_)), "{err}");
    // One id twice in one append is refused.
    let dup = simple("user-q");
    let err = store
        .append("user-q", Expected::Any, vec![dup.clone(), dup])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidEvent(_)), "{err}");
}

pub async fn total_order(store: DynStore) {
    for i in 0..50 {
        let stream = format!("user-{}", i % 7);
        store
            .append(&stream, Expected::Any, vec![simple(&stream)])
            .await
            .unwrap();
    }
    let all = store.read_all(ReadFrom::Start, 1000).await.unwrap();
    assert_eq!(all.len(), 50);
    let mut revisions: HashMap<String, u64> = HashMap::new();
    for (i, r) in all.iter().enumerate() {
        assert_eq!(r.seq, i as u64, "seq is dense");
        if i > 0 {
            assert!(r.position > all[i - 1].position, "positions increase");
        }
        let next = revisions.entry(r.stream.clone()).or_insert(0);
        assert_eq!(r.revision, *next, "revisions are contiguous per stream");
        *next += 1;
        let env = r.envelope().unwrap();
        assert_eq!(env.stream, r.stream);
    }
    // Paging: At and After.
    let page = store
        .read_all(ReadFrom::At(all[10].position), 5)
        .await
        .unwrap();
    assert_eq!(page, all[10..15].to_vec());
    let page = store
        .read_all(ReadFrom::After(all[10].position), 5)
        .await
        .unwrap();
    assert_eq!(page, all[11..16].to_vec());
    let s3 = store.read_stream("user-3", 2, 2).await.unwrap();
    assert_eq!(
        s3.iter().map(|r| r.revision).collect::<Vec<_>>(),
        vec![2, 3]
    );
    assert_eq!(
        store.head().await.unwrap().unwrap().position,
        all[49].position
    );
}

pub async fn subscription_catches_up_then_follows(store: DynStore) {
    for i in 0..300 {
        let stream = format!("user-{}", i % 3);
        store
            .append(&stream, Expected::Any, vec![simple(&stream)])
            .await
            .unwrap();
    }
    let mut sub = store.subscribe_all(ReadFrom::Start);
    let mut seen = Vec::new();
    for _ in 0..300 {
        seen.push(sub.next().await.unwrap().unwrap());
    }
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for _ in 0..50 {
                store
                    .append("user-live", Expected::Any, vec![simple("user-live")])
                    .await
                    .unwrap();
            }
        })
    };
    for _ in 0..50 {
        let r = tokio::time::timeout(std::time::Duration::from_secs(10), sub.next())
            .await
            .expect("the live tail stalled")
            .unwrap()
            .unwrap();
        seen.push(r);
    }
    writer.await.unwrap();
    for (i, r) in seen.iter().enumerate() {
        assert_eq!(r.seq, i as u64, "no gaps, no repeats, in order");
    }
    assert!(seen[300..].iter().all(|r| r.stream == "user-live"));
    // From a position: At includes it, After does not.
    let mut at = store.subscribe_all(ReadFrom::At(seen[120].position));
    assert_eq!(at.next().await.unwrap().unwrap(), seen[120]);
    let mut after = store.subscribe_all(ReadFrom::After(seen[120].position));
    assert_eq!(after.next().await.unwrap().unwrap(), seen[121]);
}

pub async fn concurrent_writers(store: DynStore) {
    let mut tasks = Vec::new();
    // 32 writers on their own streams.
    for w in 0..32 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let stream = format!("user-w{w}");
            let mut ids = Vec::new();
            for i in 0..20u64 {
                let e = simple(&stream);
                ids.push(e.id());
                let r = store
                    .append(&stream, Expected::after(i.checked_sub(1)), vec![e])
                    .await
                    .unwrap();
                assert_eq!(r.last_revision, i);
            }
            ids
        }));
    }
    // 8 writers contending for one stream: read, decide, append, retry on conflict.
    for _ in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for _ in 0..10 {
                loop {
                    let last = store
                        .read_stream("user-shared", 0, 10_000)
                        .await
                        .unwrap()
                        .last()
                        .map(|r| r.revision);
                    let e = simple("user-shared");
                    match store
                        .append("user-shared", Expected::after(last), vec![e.clone()])
                        .await
                    {
                        Ok(_) => {
                            ids.push(e.id());
                            break;
                        }
                        Err(StoreError::Conflict { .. }) => continue,
                        Err(e) => panic!("{e}"),
                    }
                }
            }
            ids
        }));
    }
    let mut all_ids = HashSet::new();
    for t in tasks {
        for id in t.await.unwrap() {
            assert!(all_ids.insert(id.to_string()));
        }
    }
    let log = store.read_all(ReadFrom::Start, 10_000).await.unwrap();
    assert_eq!(log.len(), 32 * 20 + 8 * 10);
    let logged: HashSet<String> = log.iter().map(|r| r.envelope().unwrap().id).collect();
    assert_eq!(
        logged, all_ids,
        "every acknowledged append is in the log exactly once"
    );
    let shared = store.read_stream("user-shared", 0, 10_000).await.unwrap();
    assert_eq!(shared.len(), 80);
    assert!(
        shared
            .iter()
            .enumerate()
            .all(|(i, r)| r.revision == i as u64)
    );
}

/// Many appends in flight at once (so they share commits), half of them with a
/// wrong expectation: exactly those fail, the others are all there.
pub async fn conflict_inside_a_batch(store: DynStore) {
    for i in 0..64 {
        let stream = format!("user-b{i}");
        store
            .append(&stream, Expected::NoStream, vec![simple(&stream)])
            .await
            .unwrap();
    }
    let mut tasks = Vec::new();
    for i in 0..64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let stream = format!("user-b{i}");
            let expected = if i % 2 == 0 {
                Expected::Revision(0)
            } else {
                Expected::Revision(5)
            };
            let e = simple(&stream);
            (
                i,
                e.id(),
                store
                    .append(&stream, expected, vec![e, simple(&stream)])
                    .await,
            )
        }));
    }
    for t in tasks {
        let (i, id, result) = t.await.unwrap();
        let events = store
            .read_stream(&format!("user-b{i}"), 0, 10)
            .await
            .unwrap();
        if i % 2 == 0 {
            assert_eq!(result.unwrap().last_revision, 2);
            assert_eq!(events.len(), 3);
            assert_eq!(events[1].envelope().unwrap().id, id.to_string());
        } else {
            assert!(matches!(result, Err(StoreError::Conflict { .. })));
            assert_eq!(events.len(), 1, "a failed append wrote nothing");
        }
    }
    let report = store.check().await.unwrap();
    assert_eq!(report.problems, Vec::<String>::new());
    assert_eq!(report.events, 64 + 32 * 2);
}

pub async fn check_finds_a_clean_log_clean(store: DynStore) {
    crate::support::fixtures::append_story(&store, "chk").await;
    let report = store.check().await.unwrap();
    assert_eq!(report.problems, Vec::<String>::new());
    assert_eq!(report.events, store.head().await.unwrap().unwrap().seq + 1);
    assert!(report.with_sidecar >= 6);
}

/// Singletons' checkpoints move by compare-and-set only.
pub async fn checkpoints_compare_and_set(store: DynStore) {
    assert_eq!(store.load_checkpoint("sink-x").await.unwrap(), None);
    let v1 = store
        .save_checkpoint("sink-x", None, b"one".to_vec())
        .await
        .unwrap();
    let err = store
        .save_checkpoint("sink-x", None, b"again".to_vec())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
    let v2 = store
        .save_checkpoint("sink-x", Some(v1), b"two".to_vec())
        .await
        .unwrap();
    assert!(v2 > v1);
    let err = store
        .save_checkpoint("sink-x", Some(v1), b"stale".to_vec())
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict { actual: Some(a), .. } if a == v2),
        "{err}"
    );
    assert_eq!(
        store.load_checkpoint("sink-x").await.unwrap(),
        Some((v2, b"two".to_vec()))
    );
    assert_eq!(store.load_checkpoint("sink-y").await.unwrap(), None);
}

macro_rules! contract_suite {
    ($backend:ident, $make:path, [$($test:ident),* $(,)?]) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let made = $make().await;
                    super::$test(made.store.clone()).await;
                }
            )*
        }
    };
}

async fn embedded_store() -> crate::support::TestStore {
    crate::support::embedded_store()
}

contract_suite!(
    embedded,
    super::embedded_store,
    [
        expected_revision_conflicts,
        idempotent_retries,
        total_order,
        subscription_catches_up_then_follows,
        concurrent_writers,
        conflict_inside_a_batch,
        check_finds_a_clean_log_clean,
        checkpoints_compare_and_set,
    ]
);

contract_suite!(
    postgres,
    crate::support::postgres::postgres_store,
    [
        expected_revision_conflicts,
        idempotent_retries,
        total_order,
        subscription_catches_up_then_follows,
        concurrent_writers,
        conflict_inside_a_batch,
        check_finds_a_clean_log_clean,
        checkpoints_compare_and_set,
    ]
);

// Runs only where a KurrentDB server is reachable (`AUTHLOG_TEST_KURRENTDB_URL`);
// `tests/run.sh` skips it otherwise and prints that it did not run.
contract_suite!(
    kurrentdb,
    crate::support::postgres::kurrentdb_store,
    [
        expected_revision_conflicts,
        idempotent_retries,
        total_order,
        subscription_catches_up_then_follows,
        concurrent_writers,
        conflict_inside_a_batch,
        check_finds_a_clean_log_clean,
        checkpoints_compare_and_set,
    ]
);

/// Group commit, made deterministic: the writer is held while appends queue up,
/// so they share one commit. Inside that one batch, a conflicting append, a
/// second claim of the same stream and a retry of an append of the same batch
/// are each decided on their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_of_one_commit_are_decided_one_by_one() {
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let registry = prometheus::Registry::new();
    let metrics = authlog::store::StoreMetrics::new(&registry).unwrap();
    let embedded =
        authlog::store::embedded::EmbeddedStore::open(dir.path(), Some(metrics.clone())).unwrap();
    let store: DynStore = Arc::new(crate::support::Validating::new(embedded.clone()));
    store
        .append("user-x", Expected::NoStream, vec![simple("user-x")])
        .await
        .unwrap();
    let commits_before = metrics.batch_size.get_sample_count();

    let release = embedded.pause_writer().await.unwrap();
    let claim = vec![simple("user-new")];
    let mut handles = Vec::new();
    let spawn =
        |stream: &'static str, expected: Expected, events: Vec<authlog::store::NewEvent>| {
            let store = store.clone();
            tokio::spawn(async move { store.append(stream, expected, events).await })
        };
    // Submitted in this order; the writer takes them in this order.
    handles.push(spawn("user-new", Expected::NoStream, claim.clone()));
    tokio::task::yield_now().await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    handles.push(spawn(
        "user-new",
        Expected::NoStream,
        vec![simple("user-new")],
    ));
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    handles.push(spawn("user-new", Expected::NoStream, claim.clone()));
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    handles.push(spawn(
        "user-x",
        Expected::Revision(9),
        vec![simple("user-x")],
    ));
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    handles.push(spawn(
        "user-x",
        Expected::Revision(0),
        vec![simple("user-x")],
    ));
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    drop(release);

    let mut results = Vec::new();
    for h in handles {
        results.push(h.await.unwrap());
    }
    assert_eq!(
        metrics.batch_size.get_sample_count(),
        commits_before + 1,
        "all five shared one commit"
    );
    assert_eq!(metrics.batch_size.get_sample_sum(), 1.0 + 5.0);
    let first = results[0].as_ref().unwrap();
    assert_eq!(first.last_revision, 0);
    assert!(
        matches!(
            results[1],
            Err(StoreError::Conflict {
                actual: Some(0),
                ..
            })
        ),
        "the second claim loses"
    );
    assert_eq!(
        results[2].as_ref().unwrap(),
        first,
        "a retry inside the same commit gets the original answer"
    );
    assert!(matches!(results[3], Err(StoreError::Conflict { .. })));
    assert_eq!(results[4].as_ref().unwrap().last_revision, 1);
    assert_eq!(store.read_stream("user-new", 0, 10).await.unwrap().len(), 1);
    assert_eq!(store.read_stream("user-x", 0, 10).await.unwrap().len(), 2);
    assert_eq!(store.check().await.unwrap().problems, Vec::<String>::new());
}

/// Two nodes on one PostgreSQL log: their appends interleave into one
/// contiguous order, and each node's subscription sees every event of both, in
/// that order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_nodes_share_one_order() {
    use authlog::store::postgres::PostgresStore;
    let url = crate::support::postgres::fresh_database().await;
    let a: DynStore = std::sync::Arc::new(PostgresStore::open(&url, None).await.unwrap());
    let b: DynStore = std::sync::Arc::new(PostgresStore::open(&url, None).await.unwrap());
    assert_eq!(a.log_id(), b.log_id());
    let mut sub_a = a.subscribe_all(ReadFrom::Start);
    let mut sub_b = b.subscribe_all(ReadFrom::Start);
    let mut writers = Vec::new();
    for (n, store) in [a.clone(), b.clone()].into_iter().enumerate() {
        for w in 0..4 {
            let store = store.clone();
            writers.push(tokio::spawn(async move {
                let stream = format!("user-n{n}w{w}");
                for _ in 0..25 {
                    store
                        .append(&stream, Expected::Any, vec![simple(&stream)])
                        .await
                        .unwrap();
                }
            }));
        }
    }
    for w in writers {
        w.await.unwrap();
    }
    let log = a.read_all(ReadFrom::Start, 1000).await.unwrap();
    assert_eq!(log.len(), 200);
    for sub in [&mut sub_a, &mut sub_b] {
        for (i, want) in log.iter().enumerate() {
            let got = tokio::time::timeout(std::time::Duration::from_secs(10), sub.next())
                .await
                .expect("a subscription stalled")
                .unwrap()
                .unwrap();
            assert_eq!(got.seq, i as u64);
            assert_eq!(&got, want);
        }
    }
    assert_eq!(b.check().await.unwrap().problems, Vec::<String>::new());
}

/// The bug that loses events in stores that number rows before commit: an
/// append that commits late must never land behind a reader. Here a raw
/// transaction calls `authlog_append` and stays open; another node's append
/// waits for it (the head row is locked until commit), so no reader can see a
/// later position before the earlier one exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_late_commit_is_never_skipped() {
    use authlog::store::postgres::PostgresStore;
    let url = crate::support::postgres::fresh_database().await;
    let node: DynStore = std::sync::Arc::new(PostgresStore::open(&url, None).await.unwrap());
    node.append("user-first", Expected::Any, vec![simple("user-first")])
        .await
        .unwrap();
    let mut sub = node.subscribe_all(ReadFrom::Start);
    assert_eq!(sub.next().await.unwrap().unwrap().stream, "user-first");

    let (mut raw, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let slow = simple("user-slow");
    let txn = raw.transaction().await.unwrap();
    let row = txn
        .query_one(
            "SELECT status, first_pos FROM authlog_append(ARRAY['user-slow'], ARRAY[-1::bigint], ARRAY[1], $1, $2, ARRAY[NULL::bytea])",
            &[&vec![slow.id()], &vec![slow.body()]],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 0);
    assert_eq!(row.get::<_, i64>(1), 1);

    let fast = {
        let node = node.clone();
        tokio::spawn(async move {
            node.append("user-fast", Expected::Any, vec![simple("user-fast")])
                .await
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(!fast.is_finished(), "the second append waits for the first");
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(300), sub.next())
            .await
            .is_err(),
        "nothing is visible before the open transaction commits"
    );
    txn.commit().await.unwrap();
    let fast = fast.await.unwrap().unwrap();
    assert_eq!(fast.positions[0].commit, 2);
    let next = sub.next().await.unwrap().unwrap();
    assert_eq!((next.stream.as_str(), next.seq), ("user-slow", 1));
    let next = sub.next().await.unwrap().unwrap();
    assert_eq!((next.stream.as_str(), next.seq), ("user-fast", 2));
}

/// TLS to PostgreSQL: with `sslmode=verify-full` and the CA the test server's
/// certificate comes from, every connection of the store is encrypted; a
/// server whose certificate another CA (or no system root) vouches for is
/// refused, not used in the clear.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_over_tls_checks_the_server_certificate() {
    use authlog::store::EventStore;
    use authlog::store::postgres::PostgresStore;
    let ca = std::env::var("AUTHLOG_TEST_POSTGRES_CA").expect(
        "AUTHLOG_TEST_POSTGRES_CA is not set: run ./tests/run.sh, which starts PostgreSQL with TLS",
    );
    let other_ca = std::env::var("AUTHLOG_TEST_POSTGRES_OTHER_CA").unwrap();
    let url = crate::support::postgres::fresh_database().await;
    let base = url.split('?').next().unwrap();
    let db = base.rsplit('/').next().unwrap().to_string();
    let store = PostgresStore::open(
        &format!("{base}?sslmode=verify-full&sslrootcert={ca}"),
        None,
    )
    .await
    .unwrap();
    store
        .append("user-tls", Expected::NoStream, vec![simple("user-tls")])
        .await
        .unwrap();
    assert_eq!(store.read_all(ReadFrom::Start, 10).await.unwrap().len(), 1);
    // No sslmode: libpq's `prefer`, encrypted when the server offers TLS
    // (its certificate unchecked in that mode, as libpq does).
    let preferring = PostgresStore::open(base, None).await.unwrap();
    assert_eq!(
        preferring
            .read_all(ReadFrom::Start, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    let (admin, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let row = admin
        .query_one(
            "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl) \
             FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.datname = $1 AND a.application_name = 'authlog'",
            &[&db],
        )
        .await
        .unwrap();
    let (encrypted, plain): (i64, i64) = (row.get(0), row.get(1));
    assert!(
        encrypted >= 4,
        "both stores' writer and follower over TLS: {encrypted}"
    );
    assert_eq!(plain, 0, "no connection of the store in the clear");
    for refused in [
        format!("{base}?sslmode=require&sslrootcert={other_ca}"),
        format!("{base}?sslmode=require"),
    ] {
        let err = PostgresStore::open(&refused, None).await.unwrap_err();
        assert!(matches!(err, StoreError::Io(_)), "{err}");
    }
}
