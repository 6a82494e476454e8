//! The audit trail on a log of 1,000,000 events: indexing, query latency by
//! subject, client and session (target: under 50 ms), memory while querying and
//! exporting, export throughput, and the start-up verification of the whole log.
//! Run with `cargo bench --bench audit` (`AUTHLOG_BENCH_EVENTS` changes the size;
//! `AUTHLOG_BENCH_DIR` keeps the log and its audit database in that directory,
//! for `benches/audit_server.sh` to serve).
//!
//! The log is a realistic mix: per sign-in a `login.succeeded` (user, session,
//! client, IP, user agent), an `authorization_code.issued` and a `token.granted`,
//! and one failed sign-in in six; 20,000 users, 200 clients; events 31 s apart,
//! so 1,000,000 of them span a year.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use authlog::audit::query::{Filter, query};
use authlog::audit::tree::{Direction, TreeStore};
use authlog::store::embedded::EmbeddedStore;
use authlog::store::{DynStore, EventStore, Expected, NewEvent};
use authlog_schemas::data::{LoginFailed, LoginSucceeded};
use authlog_schemas::{Actor, ActorKind, Envelope, Source, Timestamp};

const USERS: u64 = 20_000;
const CLIENTS: u64 = 200;

fn user(i: u64) -> String {
    format!("0190c0de-0000-7000-8000-{:012}", i % USERS)
}

fn session(i: u64) -> String {
    format!("0190d00d-0000-7000-8000-{i:012}")
}

/// Milliseconds between events: 1,000,000 events span about a year, so sessions
/// and codes expire as they would (views hold live state, not history).
const SPACING_MS: i64 = 31_000;

/// The event at `seq` of the synthetic log, on `stream`; events are
/// [`SPACING_MS`] apart from `t0`.
fn event(i: u64, stream: &str, t0: i64) -> NewEvent {
    let t = Timestamp::from_unix_millis(t0 + (i as i64) * SPACING_MS);
    let sign_in = i / 3;
    let u = user(sign_in.wrapping_mul(7919));
    let actor = Actor {
        kind: ActorKind::User,
        id: u.clone(),
    };
    let source = Source {
        ip: Some(format!("198.51.{}.{}", sign_in % 200, sign_in % 250)),
        user_agent: Some(
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/142.0 Safari/537.36"
                .into(),
        ),
    };
    let client = format!("client-{}", sign_in % CLIENTS);
    let env = if sign_in.is_multiple_of(6) && i % 3 == 2 {
        Envelope::new(
            uuid::Uuid::now_v7().to_string(),
            stream.into(),
            t,
            actor,
            &LoginFailed {
                user_id: Some(u.clone()),
                username_hash: None,
                failed_attempts: Some(1),
            },
        )
        .unwrap()
        .failure("invalid_credentials")
    } else {
        Envelope::new(
            uuid::Uuid::now_v7().to_string(),
            stream.into(),
            t,
            actor,
            &LoginSucceeded {
                session_id: session(sign_in),
                user_id: u.clone(),
                amr: vec!["pwd".into()],
                expires_at: t.plus_seconds(86_400),
            },
        )
        .unwrap()
        .session(session(sign_in))
    };
    NewEvent::new(env.subject(u).client(client).source(source), None).unwrap()
}

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap()
        / 1024.0
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn file_mib(path: &std::path::Path) -> f64 {
    std::fs::metadata(path).map_or(0.0, |m| m.len() as f64 / 1048576.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: u64 = std::env::var("AUTHLOG_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let temp = tempfile::tempdir().unwrap();
    let kept = std::env::var("AUTHLOG_BENCH_DIR")
        .ok()
        .map(std::path::PathBuf::from);
    let path = kept.clone().unwrap_or_else(|| temp.path().to_path_buf());
    std::fs::create_dir_all(&path).unwrap();
    struct Dir(std::path::PathBuf);
    impl Dir {
        fn path(&self) -> &std::path::Path {
            &self.0
        }
    }
    let dir = Dir(path);
    println!("audit bench: {n} events in {}", dir.path().display());

    // The log, appended in batches of 1,000 (one stream each).
    let start = Instant::now();
    let store: DynStore = Arc::new(EmbeddedStore::open(dir.path(), None).unwrap());
    // The log ends now: events may not be stamped in the future.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let t0 = now_ms - (n as i64) * SPACING_MS;
    let mut i = 0;
    while i < n {
        let stream = format!("bench-{}", i / 1000);
        let batch: Vec<NewEvent> = (i..(i + 1000).min(n))
            .map(|j| event(j, &stream, t0))
            .collect();
        i += batch.len() as u64;
        store.append(&stream, Expected::Any, batch).await.unwrap();
    }
    println!(
        "log written: {:.1} s, events.redb {:.0} MiB",
        start.elapsed().as_secs_f64(),
        file_mib(&dir.path().join("events.redb"))
    );

    // Indexing: the tree and the indexes, as the server does at start-up.
    let tree_path = dir.path().join("audit-tree.redb");
    let tree = Arc::new(TreeStore::open(&tree_path).unwrap());
    let start = Instant::now();
    authlog::audit::catch_up(&store, &tree).await.unwrap();
    let secs = start.elapsed().as_secs_f64();
    println!(
        "indexed: {:.1} s ({:.0} events/s), audit-tree.redb {:.0} MiB",
        secs,
        n as f64 / secs,
        file_mib(&tree_path)
    );

    // Start-up verification of the whole log.
    let start = Instant::now();
    let report = authlog::audit::verify::verify_log(&store, Some(&tree), &Default::default(), &[])
        .await
        .unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    println!(
        "verification of the whole log (start-up check): {:.1} s",
        start.elapsed().as_secs_f64()
    );

    // Queries: the first page (100 events) by subject, client and session, and
    // a user's newest-first history; random keys.
    let size = tree.size().unwrap();
    let rss_before = rss_mib();
    let mut rng = 0x9e3779b97f4a7c15u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    println!("| query (first page, limit 100) | runs | events/page | p50 ms | p99 ms | max ms |");
    println!("|---|---|---|---|---|---|");
    let mut worst: f64 = 0.0;
    for (name, dir_) in [
        ("subject", Direction::Forward),
        ("subject, newest first", Direction::Backward),
        ("client_id", Direction::Forward),
        ("session_id", Direction::Forward),
        ("subject + type login.failed", Direction::Forward),
    ] {
        let mut times = Vec::new();
        let mut found = 0usize;
        let runs = 300;
        for _ in 0..runs {
            let k = next();
            let filter = match name {
                "client_id" => Filter {
                    client_id: Some(format!("client-{}", k % CLIENTS)),
                    ..Default::default()
                },
                "session_id" => Filter {
                    session_id: Some(session(k % (n / 3))),
                    ..Default::default()
                },
                "subject + type login.failed" => Filter {
                    subject: Some(user(k)),
                    types: vec!["login.failed".into()],
                    ..Default::default()
                },
                _ => Filter {
                    subject: Some(user(k)),
                    ..Default::default()
                },
            };
            let t = Instant::now();
            let page = query(&store, &tree, &filter, None, 100, dir_, size)
                .await
                .unwrap();
            times.push(t.elapsed());
            found += page.events.len();
        }
        times.sort();
        worst = worst.max(percentile(&times, 0.99));
        println!(
            "| {name} | {runs} | {:.0} | {:.2} | {:.2} | {:.2} |",
            found as f64 / runs as f64,
            percentile(&times, 0.5),
            percentile(&times, 0.99),
            percentile(&times, 1.0)
        );
    }
    println!(
        "query p99 worst case {:.2} ms against the 50 ms target: {}",
        worst,
        if worst < 50.0 { "met" } else { "NOT met" }
    );
    println!(
        "RSS: {:.0} MiB before the queries, {:.0} MiB after",
        rss_before,
        rss_mib()
    );

    // Export of the whole log (NDJSON, no proofs) into a counting reader, and
    // one user's export with inclusion proofs.
    for (label, filter, proofs) in [
        ("whole log, NDJSON", Filter::default(), false),
        (
            "one user, NDJSON with inclusion proofs",
            Filter {
                subject: Some(user(42)),
                ..Default::default()
            },
            true,
        ),
    ] {
        let (key_text, key) = authlog::audit::checkpoint::AuditKey::generate().unwrap();
        drop(key_text);
        let root = {
            let r = tree.reader().unwrap();
            authlog::audit::merkle::root(&r, 0, size)
        };
        let cp = key.sign_checkpoint(size, &root, "2026-11-26T00:00:00.000Z");
        let spec = authlog::audit::export::ExportSpec {
            filter,
            format: authlog::audit::export::Format::Ndjson,
            proofs: proofs.then(|| (cp, Arc::new(key))),
            size,
        };
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(16);
        let rss0 = rss_mib();
        let reader = tokio::spawn(async move {
            let (mut bytes, mut peak) = (0u64, 0f64);
            let mut chunks = 0u64;
            while let Some(chunk) = rx.recv().await {
                let chunk = chunk.unwrap();
                bytes += chunk.len() as u64;
                chunks += 1;
                if chunks.is_multiple_of(50) {
                    peak = peak.max(rss_mib());
                }
            }
            (bytes, peak)
        });
        let start = Instant::now();
        let mut count = 0;
        authlog::audit::export::run(&store, &tree, &spec, &tx, &mut count)
            .await
            .unwrap();
        drop(tx);
        let (bytes, peak) = reader.await.unwrap();
        let secs = start.elapsed().as_secs_f64();
        println!(
            "export, {label}: {count} events, {:.0} MiB in {:.1} s ({:.0} events/s); RSS {:.0} MiB before, {:.0} MiB at most",
            bytes as f64 / 1048576.0,
            secs,
            count as f64 / secs,
            rss0,
            peak.max(rss_mib())
        );
    }
}
