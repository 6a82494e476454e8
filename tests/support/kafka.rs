//! A real Kafka-protocol broker for the sink tests: tansu (`tests/run.sh`
//! installs it and sets `AUTHLOG_TEST_TANSU`), on a free loopback port, its
//! topics in SQLite in its own directory so they survive a broker restart; and
//! a consumer that reads a topic back.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};

pub struct Broker {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<std::process::Child>,
}

fn tansu() -> String {
    std::env::var("AUTHLOG_TEST_TANSU").unwrap_or_else(|_| {
        panic!("AUTHLOG_TEST_TANSU is not set: run ./tests/run.sh, which installs the tansu broker for the Kafka tests")
    })
}

impl Broker {
    pub fn start() -> Broker {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut b = Broker {
            port,
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        b.up();
        b
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn up(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let child = std::process::Command::new(tansu())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                "sqlite://tansu.db",
            ])
            .current_dir(self.dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(self.dir.path().join("tansu.log")).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("the tansu broker did not start: {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "the tansu broker exited ({status}):\n{}",
                    std::fs::read_to_string(self.dir.path().join("tansu.log")).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "the tansu broker did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.up();
    }

    pub async fn create_topic(&self, topic: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", self.brokers())
            .create()
            .unwrap();
        let results = admin
            .create_topics(
                &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
            )
            .await
            .unwrap();
        for r in results {
            r.unwrap_or_else(|e| panic!("creating {topic}: {e:?}"));
        }
    }

    pub async fn delete_topic(&self, topic: &str) {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", self.brokers())
            .create()
            .unwrap();
        let results = admin
            .delete_topics(
                &[topic],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
            )
            .await
            .unwrap();
        for r in results {
            r.unwrap_or_else(|e| panic!("deleting {topic}: {e:?}"));
        }
    }

    /// Whether the broker says `topic` exists (tansu 0.6 never creates a
    /// topic a client asks about: its metadata answers
    /// `UNKNOWN_TOPIC_OR_PARTITION`).
    pub fn has_topic(&self, topic: &str) -> bool {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.brokers())
            .create()
            .unwrap();
        let m = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .unwrap();
        m.topics()
            .iter()
            .any(|t| t.name() == topic && t.error().is_none())
    }

    /// Reads `topic` from the beginning until `done` says it has what it needs
    /// (or `timeout`), then `linger` longer to catch anything more.
    pub fn consume(
        &self,
        topic: &str,
        timeout: Duration,
        linger: Duration,
        done: impl Fn(&[Msg]) -> bool,
    ) -> Vec<Msg> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.brokers())
            .set("group.id", format!("test-{}", uuid::Uuid::now_v7()))
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        consumer.subscribe(&[topic]).unwrap();
        let mut deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        let mut lingering = false;
        while Instant::now() < deadline {
            if !lingering && done(&out) {
                lingering = true;
                deadline = Instant::now() + linger;
            }
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    let mut headers = HashMap::new();
                    if let Some(h) = m.headers() {
                        for i in 0..h.count() {
                            let hd = h.get(i);
                            headers.insert(
                                hd.key.to_string(),
                                String::from_utf8_lossy(hd.value.unwrap_or_default()).to_string(),
                            );
                        }
                    }
                    out.push(Msg {
                        key: String::from_utf8_lossy(m.key().unwrap_or_default()).to_string(),
                        value: m.payload().unwrap_or_default().to_vec(),
                        headers,
                        partition: m.partition(),
                    });
                }
                Some(Err(e)) => eprintln!("consumer: {e}"),
                None => {}
            }
        }
        out
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

#[derive(Debug, Clone)]
pub struct Msg {
    pub key: String,
    pub value: Vec<u8>,
    pub headers: HashMap<String, String>,
    pub partition: i32,
}

impl Msg {
    pub fn event_id(&self) -> &str {
        &self.headers["event_id"]
    }

    pub fn seq(&self) -> u64 {
        self.headers["seq"].parse().unwrap()
    }
}
