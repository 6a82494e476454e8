//! Crash safety of the embedded store: a child process appends under load and is
//! killed with SIGKILL at a different moment each round; after each kill the log
//! must hold every append that had returned, nothing half-written, in order.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use authlog::store::embedded::EmbeddedStore;
use authlog::store::{EventStore, Expected, ReadFrom, StoreError};

use crate::support::Validating;
use crate::support::fixtures::simple;

const WRITERS: usize = 16;
const EVENTS_PER_APPEND: usize = 3;
const ROUNDS: u64 = 12;

fn open_retrying(dir: &std::path::Path) -> EmbeddedStore {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match EmbeddedStore::open(dir, None) {
            Ok(s) => return s,
            Err(StoreError::Locked(_)) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("opening the store after a crash: {e}"),
        }
    }
}

/// The child: appends until killed, printing one ACK line per append that returned.
#[test]
#[ignore = "the child process of store_survives_sigkill; run by that test"]
fn crash_child() {
    let Ok(dir) = std::env::var("AUTHLOG_TEST_CRASH_DIR") else {
        return;
    };
    let run = std::env::var("AUTHLOG_TEST_CRASH_RUN").unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let store = Arc::new(Validating::new(open_retrying(std::path::Path::new(&dir))));
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            let store = store.clone();
            let run = run.clone();
            tasks.push(tokio::spawn(async move {
                let stream = format!("user-crash{run}-{w}");
                let mut last: Option<u64> = None;
                loop {
                    let events: Vec<_> = (0..EVENTS_PER_APPEND).map(|_| simple(&stream)).collect();
                    let ids: Vec<String> = events.iter().map(|e| e.id().to_string()).collect();
                    let r = store
                        .append(&stream, Expected::after(last), events)
                        .await
                        .unwrap();
                    last = Some(r.last_revision);
                    use std::io::Write;
                    let mut out = std::io::stdout().lock();
                    writeln!(
                        out,
                        "ACK {stream} {} {} {}",
                        r.last_revision,
                        r.positions[0],
                        ids.join(",")
                    )
                    .unwrap();
                    out.flush().unwrap();
                }
            }));
        }
        // The writers run until the parent kills this process.
        futures_util::future::join_all(tasks).await;
    });
}

struct Ack {
    stream: String,
    last_revision: u64,
    ids: Vec<String>,
}

fn parse_ack(line: &str) -> Option<Ack> {
    let mut parts = line.strip_prefix("ACK ")?.split(' ');
    let stream = parts.next()?.to_string();
    let last_revision = parts.next()?.parse().ok()?;
    let _position = parts.next()?;
    let ids: Vec<String> = parts.next()?.split(',').map(str::to_string).collect();
    (ids.len() == EVENTS_PER_APPEND && ids.iter().all(|i| i.len() == 36)).then_some(Ack {
        stream,
        last_revision,
        ids,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut total_acked = 0usize;
    for run in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .args([
                "crash::crash_child",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("AUTHLOG_TEST_CRASH_DIR", dir.path())
            .env("AUTHLOG_TEST_CRASH_RUN", run.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        let reader = {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    lines.lock().unwrap().push(line);
                }
            })
        };
        // Wait for the load to be under way, then kill at a different moment each round.
        let started = Instant::now();
        while lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.starts_with("ACK "))
            .count()
            < 20
        {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the child never got going"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(20 + (run * 37) % 250));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();

        let acks: Vec<Ack> = lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| parse_ack(l))
            .collect();
        assert!(!acks.is_empty());
        total_acked += acks.len();

        let store = open_retrying(dir.path());
        let report = store.check().await.unwrap();
        assert_eq!(
            report.problems,
            Vec::<String>::new(),
            "round {run}: the log is damaged"
        );

        // Every append that returned is there, at the revisions it was told.
        let mut streams: HashMap<String, Vec<String>> = HashMap::new();
        for ack in &acks {
            if !streams.contains_key(&ack.stream) {
                let events = store.read_stream(&ack.stream, 0, 100_000).await.unwrap();
                let ids = events.iter().map(|r| r.envelope().unwrap().id).collect();
                streams.insert(ack.stream.clone(), ids);
            }
            let ids = &streams[&ack.stream];
            let first = ack.last_revision as usize + 1 - EVENTS_PER_APPEND;
            assert_eq!(
                &ids[first..=ack.last_revision as usize],
                ack.ids.as_slice(),
                "round {run}: an acknowledged append is missing"
            );
        }
        // Nothing half-written: every append of this round's streams is whole.
        let mut all = Vec::new();
        loop {
            let from = all
                .last()
                .map_or(ReadFrom::Start, |r: &authlog_schemas::Recorded| {
                    ReadFrom::After(r.position)
                });
            let page = store.read_all(from, 1000).await.unwrap();
            if page.is_empty() {
                break;
            }
            all.extend(page);
        }
        let mut per_stream: HashMap<&str, usize> = HashMap::new();
        for (i, r) in all.iter().enumerate() {
            assert_eq!(r.seq, i as u64);
            *per_stream.entry(r.stream.as_str()).or_default() += 1;
        }
        assert!(
            per_stream.values().all(|n| n % EVENTS_PER_APPEND == 0),
            "round {run}: a partial append is visible"
        );
        drop(store);
    }
    assert!(total_acked > ROUNDS as usize * 20);
}
