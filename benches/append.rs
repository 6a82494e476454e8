//! Durable append throughput and latency of the embedded store, next to this
//! disk's fsync latency. Run with `cargo bench --bench append`. With
//! `AUTHLOG_BENCH_POSTGRES_URL=postgres://…/postgres` the same writers then run
//! against the PostgreSQL store (a fresh database each), in the same process.
//!
//! Every append here returns only after its commit is durable (fsync). With one
//! writer each append pays a whole commit; with 64 concurrent writers the writer
//! thread takes all appends waiting and commits them together (group commit).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use authlog::store::embedded::EmbeddedStore;
use authlog::store::{EventStore, Expected, NewEvent, StoreMetrics};
use authlog_schemas::data::LoginSucceeded;
use authlog_schemas::{Actor, ActorKind, Envelope, Source, Timestamp};

fn event(stream: &str, n: u64) -> NewEvent {
    let t = Timestamp::from_unix_millis(1_795_673_394_000 + n as i64);
    let data = LoginSucceeded {
        session_id: format!("s-{n}"),
        user_id: "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b".into(),
        amr: vec!["pwd".into()],
        expires_at: t.plus_seconds(86_400),
    };
    let env = Envelope::new(
        uuid::Uuid::now_v7().to_string(),
        stream.into(),
        t,
        Actor {
            kind: ActorKind::User,
            id: "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b".into(),
        },
        &data,
    )
    .unwrap()
    .client("web-app")
    .session(format!("s-{n}"))
    .source(Source {
        ip: Some("203.0.113.7".into()),
        user_agent: Some("Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0".into()),
    })
    .request(uuid::Uuid::now_v7().to_string());
    NewEvent::new(env, None).unwrap()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn fsync_latency(dir: &std::path::Path) -> (Duration, Duration) {
    let path = dir.join("fsync-probe");
    let mut f = std::fs::File::create(&path).unwrap();
    let block = vec![7u8; 4096];
    let mut samples = Vec::new();
    for _ in 0..300 {
        let t = Instant::now();
        f.write_all(&block).unwrap();
        f.sync_data().unwrap();
        samples.push(t.elapsed());
    }
    samples.sort();
    (percentile(&samples, 0.5), percentile(&samples, 0.99))
}

struct Run {
    name: String,
    events: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
    mean_batch: f64,
    file_bytes: u64,
}

/// How the streams of a run are named.
#[derive(Clone, Copy)]
enum Streams {
    /// A new `session-{UUIDv7}` stream per append, as each sign-in starts one:
    /// time-ordered ids, so new streams land next to each other in the index.
    NewSessions,
    /// A new stream per append named by a random key: the index's worst case,
    /// every append touching another page.
    RandomNames,
}

fn random_hex() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).unwrap();
    hex::encode(b)
}

/// Where a run appends.
enum Target<'a> {
    Embedded(&'a std::path::Path),
    /// The PostgreSQL server's admin URL: each run gets a database of its own.
    Postgres(&'a str),
}

async fn open(target: &Target<'_>, metrics: StoreMetrics) -> Arc<dyn EventStore> {
    match target {
        Target::Embedded(dir) => Arc::new(EmbeddedStore::open(dir, Some(metrics)).unwrap()),
        Target::Postgres(admin) => {
            let (client, connection) = tokio_postgres::connect(admin, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(connection);
            let name = format!("authlog_bench_{}", uuid::Uuid::now_v7().simple());
            client
                .batch_execute(&format!("CREATE DATABASE {name}"))
                .await
                .unwrap();
            let (base, query) = admin.split_once('?').unwrap_or((admin, ""));
            let base = base.rsplit_once('/').unwrap().0;
            let url = if query.is_empty() {
                format!("{base}/{name}")
            } else {
                format!("{base}/{name}?{query}")
            };
            Arc::new(
                authlog::store::postgres::PostgresStore::open(&url, Some(metrics))
                    .await
                    .unwrap(),
            )
        }
    }
}

async fn run(
    target: Target<'_>,
    name: &str,
    streams: Streams,
    writers: usize,
    per_writer: usize,
) -> Run {
    let registry = prometheus::Registry::new();
    let metrics = StoreMetrics::new(&registry).unwrap();
    let store = open(&target, metrics.clone()).await;
    // Each append builds its event when it runs, as a request would: stream ids
    // are minted at that moment.
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per_writer);
            for i in 0..per_writer {
                let t = Instant::now();
                let stream = match streams {
                    Streams::NewSessions => format!("session-{}", uuid::Uuid::now_v7()),
                    Streams::RandomNames => format!("grant-{}", random_hex()),
                };
                let e = event(&stream, (w * per_writer + i) as u64);
                store
                    .append(&stream, Expected::NoStream, vec![e])
                    .await
                    .unwrap();
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let mean_batch =
        metrics.batch_size.get_sample_sum() / metrics.batch_size.get_sample_count() as f64;
    drop(store);
    let file_bytes = match target {
        Target::Embedded(dir) => std::fs::metadata(dir.join(authlog::store::embedded::DB_FILE))
            .unwrap()
            .len(),
        Target::Postgres(_) => 0,
    };
    Run {
        name: name.into(),
        events: writers * per_writer,
        elapsed,
        latencies,
        mean_batch,
        file_bytes,
    }
}

fn main() {
    let base = std::env::var("AUTHLOG_BENCH_DIR")
        .unwrap_or_else(|_| env!("CARGO_TARGET_TMPDIR").to_string());
    std::fs::create_dir_all(&base).unwrap();
    let dir = tempfile::tempdir_in(&base).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (f50, f99) = fsync_latency(dir.path());
    println!(
        "disk: 4 KiB write + fdatasync p50 {:.3} ms, p99 {:.3} ms ({})",
        ms(f50),
        ms(f99),
        dir.path().display()
    );
    println!(
        "event body: {} bytes (login.succeeded with source and ids)",
        event("session-x", 0).body().len()
    );
    let runs = rt.block_on(async {
        vec![
            run(
                Target::Embedded(&dir.path().join("a")),
                "1, new session streams",
                Streams::NewSessions,
                1,
                2_000,
            )
            .await,
            run(
                Target::Embedded(&dir.path().join("b")),
                "16, new session streams",
                Streams::NewSessions,
                16,
                500,
            )
            .await,
            run(
                Target::Embedded(&dir.path().join("c")),
                "64, new session streams",
                Streams::NewSessions,
                64,
                400,
            )
            .await,
            run(
                Target::Embedded(&dir.path().join("d")),
                "64, random stream names",
                Streams::RandomNames,
                64,
                400,
            )
            .await,
        ]
    });
    let pg = std::env::var("AUTHLOG_BENCH_POSTGRES_URL").ok();
    let pg_runs = match &pg {
        None => Vec::new(),
        Some(url) => rt.block_on(async {
            let mut out = Vec::new();
            for (name, writers, per) in [
                ("postgres: 1", 1, 1_000),
                ("postgres: 16", 16, 250),
                ("postgres: 64", 64, 200),
                ("postgres: 256", 256, 100),
            ] {
                out.push(
                    run(
                        Target::Postgres(url),
                        name,
                        Streams::NewSessions,
                        writers,
                        per,
                    )
                    .await,
                );
            }
            out
        }),
    };
    let runs: Vec<Run> = runs.into_iter().chain(pg_runs).collect();
    println!(
        "\n| writers | events | durable events/s | p50 ms | p99 ms | mean appends per commit | file bytes per event |"
    );
    println!("|---|---|---|---|---|---|---|");
    for r in &runs {
        println!(
            "| {} | {} | {:.0} | {:.3} | {:.3} | {:.1} | {} |",
            r.name,
            r.events,
            r.events as f64 / r.elapsed.as_secs_f64(),
            ms(percentile(&r.latencies, 0.5)),
            ms(percentile(&r.latencies, 0.99)),
            r.mean_batch,
            r.file_bytes / r.events as u64
        );
    }
    if pg.is_some() {
        let one = &runs[4];
        let many = &runs[6];
        println!(
            "\npostgres, 64 writers vs 1 writer: {:.1}x the throughput in the same run",
            (many.events as f64 / many.elapsed.as_secs_f64())
                / (one.events as f64 / one.elapsed.as_secs_f64())
        );
    }
    let one = &runs[0];
    let many = &runs[2];
    println!(
        "\n64 writers vs 1 writer: {:.1}x the throughput in the same run",
        (many.events as f64 / many.elapsed.as_secs_f64())
            / (one.events as f64 / one.elapsed.as_secs_f64())
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
