//! The Kafka sink, on rdkafka (librdkafka built from source).
//!
//! * The idempotent producer (`enable.idempotence=true`, `acks=all`): librdkafka
//!   retries within its delivery timeout without reordering or duplicating
//!   within a partition.
//! * The message key is the event's subject, else its client, else its stream
//!   ([`super::shape`]), so each user's events stay in order within a partition;
//!   headers `event_id`, `event_type`, `seq` and `position`; the value is the
//!   shaped message (never a sidecar).
//! * Delivery reports arrive out of order across partitions. The sink keeps the
//!   pending deliveries in log order and moves its checkpoint to the last event
//!   of the delivered prefix: everything up to it is in Kafka.
//! * On any delivery error (a broker down past the delivery timeout, a fatal
//!   producer error) the sink drops the producer, waits with backoff, creates a
//!   new one and resumes from its checkpoint: at least once, never a gap. The
//!   server keeps serving meanwhile.
//! * The sink does not create its topic. Before it follows the log, and again
//!   while deliveries make no progress, it asks the brokers for the topic's
//!   metadata: a topic they say does not exist is an error (logged, counted,
//!   `authlog_sink_topic_missing`, `/readyz`), retried with the same backoff
//!   until the topic appears.
//! * No error message shows a configured property value ([`describe`]): a
//!   value may be a secret (`sasl.password`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaConfRes;
use rdkafka::types::RDKafkaErrorCode;

use super::checkpoint::{CheckpointFile, Delivered};
use super::ndjson::SinkMetrics;
use super::shape::{Outgoing, Shaper};
use super::{SinkError, SinkStatus};
use crate::config::KafkaSinkConfig;
use crate::store::DynStore;

/// Deliveries in flight at most: beyond it the sink waits for reports.
const IN_FLIGHT: usize = 10_000;
/// How often the checkpoint is written while deliveries complete.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);
/// How long one request for the topic's metadata may take.
const METADATA_TIMEOUT: Duration = Duration::from_secs(5);
/// Deliveries pending this long without a report make the sink ask the
/// brokers about its topic again.
const STALLED: Duration = Duration::from_secs(5);

/// The producer configuration: authlog's delivery guarantees, then the
/// operator's pass-through librdkafka properties (TLS, SASL, timeouts, …),
/// which may not weaken them.
pub fn client_config(config: &KafkaSinkConfig) -> Result<ClientConfig, SinkError> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &config.brokers)
        .set("client.id", "authlog")
        .set("message.timeout.ms", "30000")
        .set("socket.keepalive.enable", "true");
    for (k, v) in &config.properties {
        c.set(k, v.expose());
    }
    // Gapless: if one message of a partition fails for good, the producer stops
    // (a fatal error) instead of writing the ones after it, so the sink's
    // rewind resends in order and no key's events are reordered.
    for (k, v) in [
        ("enable.idempotence", "true"),
        ("acks", "all"),
        ("enable.gapless.guarantee", "true"),
    ] {
        if config
            .properties
            .get(k)
            .is_some_and(|given| given.expose() != v && !(k == "acks" && given.expose() == "-1"))
        {
            return Err(SinkError::Io(format!(
                "sink.kafka.properties.{k} must stay {v}: the sink does not lose or duplicate within a partition otherwise"
            )));
        }
        c.set(k, v);
    }
    Ok(c)
}

fn producer(config: &KafkaSinkConfig) -> Result<FutureProducer, SinkError> {
    client_config(config)?
        .create()
        .map_err(|e| SinkError::Io(describe(&e, config)))
}

/// Refuses properties librdkafka does not accept, at start (`serve`, `sink
/// run`) rather than retried forever in the background: a producer is created
/// and dropped. The error never shows a value.
pub fn check(config: &KafkaSinkConfig) -> Result<(), SinkError> {
    producer(config).map(drop)
}

/// A librdkafka error, said without any configured property value: a value may
/// be a secret (`sasl.password`). rdkafka's `ClientConfig` error carries the
/// value it refused (its `Display` prints it), and librdkafka's own texts quote
/// values (`Invalid value "…" for configuration property "…"`, `Unsupported
/// SASL mechanism: …`). Each value becomes `<value of KEY>`, and the quoted
/// parts of a refused property's description other than its name are dropped.
pub fn describe(e: &KafkaError, config: &KafkaSinkConfig) -> String {
    match e {
        KafkaError::ClientConfig(RDKafkaConfRes::RD_KAFKA_CONF_UNKNOWN, _, key, _) => {
            format!("no such librdkafka property: {key:?}")
        }
        KafkaError::ClientConfig(_, description, key, value) => {
            let text = redact(description, config, Some((key, value)));
            format!("{key}: {}", unquote_all_but(&text, key))
        }
        other => redact(&other.to_string(), config, None),
    }
}

/// `text` with every value of the operator's properties (and `extra`'s)
/// replaced by `<value of KEY>`, where it stands as a word of its own (so that
/// `PLAIN` is not cut out of `SASL_PLAINTEXT`). `true` and `false` are not
/// secrets and librdkafka's texts use them as words.
fn redact(text: &str, config: &KafkaSinkConfig, extra: Option<(&str, &str)>) -> String {
    let mut values: Vec<(&str, &str)> = config
        .properties
        .iter()
        .map(|(k, v)| (k.as_str(), v.expose()))
        .chain(extra)
        .filter(|(_, v)| !v.is_empty() && *v != "true" && *v != "false")
        .collect();
    // The longest first: a value that contains another is replaced whole.
    values.sort_by_key(|(_, v)| std::cmp::Reverse(v.len()));
    let mut out = text.to_string();
    for (key, value) in values {
        out = replace_words(&out, value, &format!("<value of {key}>"));
    }
    out
}

/// `text` with each occurrence of `word` that is not glued to a letter, digit
/// or `_` on a side where `word` itself begins or ends with one replaced.
fn replace_words(text: &str, word: &str, with: &str) -> String {
    let is_word = |c: char| c.is_alphanumeric() || c == '_';
    let glued_before = word.chars().next().is_some_and(is_word);
    let glued_after = word.chars().next_back().is_some_and(is_word);
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(word) {
        let (before, after) = (&rest[..at], &rest[at + word.len()..]);
        let bounded = !(glued_before && before.chars().next_back().is_some_and(is_word)
            || glued_after && after.chars().next().is_some_and(is_word));
        out.push_str(before);
        if bounded {
            out.push_str(with);
        } else {
            out.push_str(word);
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

/// `text` without its double-quoted parts (and the space before each) other
/// than `"name"`: what librdkafka quotes in a property's error is the property
/// and (parts of) its value.
fn unquote_all_but(text: &str, name: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('"') {
        let Some(len) = rest[open + 1..].find('"') else {
            break;
        };
        let quoted = &rest[open + 1..open + 1 + len];
        let before = &rest[..open];
        if quoted == name {
            out.push_str(&rest[..open + len + 2]);
        } else {
            out.push_str(before.strip_suffix(' ').unwrap_or(before));
        }
        rest = &rest[open + len + 2..];
    }
    // An unpaired quote: what follows it may be a value.
    match rest.find('"') {
        Some(open) => out.push_str(&rest[..open]),
        None => out.push_str(rest),
    }
    out
}

/// What the brokers say of the sink's topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Topic {
    Found,
    /// They answered that it does not exist.
    Missing,
    /// They refuse this client the topic.
    Forbidden,
    /// No answer (the brokers are down or slow): deliveries will tell.
    Unknown,
}

/// Asks the brokers for the topic's metadata (blocking: not on the async
/// executor). librdkafka does not ask brokers to create a topic for a metadata
/// request the application makes (`allow.auto.create.topics` is false unless
/// configured).
fn look_up_topic(producer: &FutureProducer, topic: &str) -> Topic {
    match producer
        .client()
        .fetch_metadata(Some(topic), METADATA_TIMEOUT)
    {
        Ok(m) => match m.topics().iter().find(|t| t.name() == topic) {
            None => Topic::Missing,
            Some(t) => match t.error().map(RDKafkaErrorCode::from) {
                None => Topic::Found,
                Some(
                    RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic,
                ) => Topic::Missing,
                Some(RDKafkaErrorCode::TopicAuthorizationFailed) => Topic::Forbidden,
                // Leader elections and the like: deliveries will tell.
                Some(_) => Topic::Unknown,
            },
        },
        Err(_) => Topic::Unknown,
    }
}

/// [`look_up_topic`] on a blocking thread.
fn spawn_look_up(producer: &FutureProducer, topic: &str) -> tokio::task::JoinHandle<Topic> {
    let (p, topic) = (producer.clone(), topic.to_string());
    tokio::task::spawn_blocking(move || look_up_topic(&p, &topic))
}

/// The error for a topic the brokers do not give this sink, if they do not.
fn topic_error(found: Topic, config: &KafkaSinkConfig) -> Option<SinkError> {
    match found {
        Topic::Found | Topic::Unknown => None,
        Topic::Missing => Some(SinkError::TopicMissing {
            topic: config.topic.clone(),
            brokers: config.brokers.clone(),
        }),
        Topic::Forbidden => Some(SinkError::Io(format!(
            "the brokers {} do not authorize this client for the Kafka topic {:?}",
            config.brokers, config.topic
        ))),
    }
}

/// Before sending anything: an error if the brokers say the topic does not
/// exist (or refuse it); Ok also when they do not answer, as deliveries then
/// wait for them within their timeout.
async fn check_topic(
    producer: &FutureProducer,
    config: &KafkaSinkConfig,
) -> Result<Topic, SinkError> {
    let found = spawn_look_up(producer, &config.topic)
        .await
        .unwrap_or(Topic::Unknown);
    match topic_error(found, config) {
        Some(e) => Err(e),
        None => Ok(found),
    }
}

fn record<'a>(
    topic: &'a str,
    m: &'a Outgoing,
    seq: &'a str,
    position: &'a str,
) -> FutureRecord<'a, str, [u8]> {
    let headers = OwnedHeaders::new_with_capacity(4)
        .insert(Header {
            key: "event_id",
            value: Some(m.event_id.as_str()),
        })
        .insert(Header {
            key: "event_type",
            value: Some(m.event_type.as_str()),
        })
        .insert(Header {
            key: "seq",
            value: Some(seq),
        })
        .insert(Header {
            key: "position",
            value: Some(position),
        });
    FutureRecord::to(topic)
        .key(m.key.as_str())
        .payload(m.value.as_slice())
        .headers(headers)
}

/// Sends one message, waiting while librdkafka's queue is full.
async fn send(
    producer: &FutureProducer,
    config: &KafkaSinkConfig,
    m: &Outgoing,
) -> Result<DeliveryFuture, SinkError> {
    let (seq, position) = (m.seq.to_string(), m.position.to_string());
    loop {
        match producer.send_result(record(&config.topic, m, &seq, &position)) {
            Ok(f) => return Ok(f),
            Err((
                rdkafka::error::KafkaError::MessageProduction(
                    rdkafka::types::RDKafkaErrorCode::QueueFull,
                ),
                _,
            )) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err((e, _)) => return Err(SinkError::Io(describe(&e, config))),
        }
    }
}

/// Waits for one delivery report.
async fn delivered(f: DeliveryFuture, config: &KafkaSinkConfig) -> Result<(), SinkError> {
    match f.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((e, _))) => Err(SinkError::Io(format!(
            "delivery failed: {}",
            describe(&e, config)
        ))),
        Err(_) => Err(SinkError::Io("the producer went away".into())),
    }
}

/// Runs the sink until `stop`, recreating the producer and rewinding to the
/// checkpoint after any error.
pub async fn run(
    store: DynStore,
    shaper: Arc<Shaper>,
    config: KafkaSinkConfig,
    checkpoint: CheckpointFile,
    metrics: SinkMetrics,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(500);
    let lag = tokio::spawn(metrics.clone().track_lag(store.clone(), stop.clone()));
    metrics.topic_missing(false);
    metrics.status(Some(SinkStatus::Starting));
    loop {
        let started = Instant::now();
        let outcome = match producer(&config) {
            Ok(p) => {
                let outcome = match check_topic(&p, &config).await {
                    Ok(found) => {
                        metrics.topic_missing(false);
                        if found == Topic::Found {
                            metrics.status(Some(SinkStatus::Delivering));
                        }
                        follow(
                            &p,
                            &store,
                            &shaper,
                            &config,
                            &checkpoint,
                            &metrics,
                            &mut stop,
                        )
                        .await
                    }
                    Err(e) => Err(e),
                };
                // Destroying a producer purges, flushes and joins its threads:
                // not on the async executor.
                let _ = tokio::task::spawn_blocking(move || drop(p)).await;
                outcome
            }
            Err(e) => Err(e),
        };
        match outcome {
            Ok(()) => break,
            Err(e @ SinkError::TopicMissing { .. }) => {
                metrics.errors.inc();
                metrics.topic_missing(true);
                metrics.status(Some(SinkStatus::TopicMissing {
                    topic: config.topic.clone(),
                }));
                tracing::error!(error = %e, retry_in = ?backoff, "kafka sink: nothing is delivered until the topic exists; retrying from the checkpoint");
            }
            Err(e) => {
                metrics.errors.inc();
                metrics.status(Some(SinkStatus::Retrying));
                // Events are not reaching the topic: an error, naming where
                // they should go (a topic deleted under the sink shows here
                // when the brokers do not answer for it).
                tracing::error!(error = %e, topic = ?config.topic, brokers = %config.brokers, retry_in = ?backoff, "kafka sink: delivery stopped; recreating the producer and resuming from its checkpoint");
            }
        }
        // A sink that ran a while before failing starts over with a short wait.
        if started.elapsed() > Duration::from_secs(60) {
            backoff = Duration::from_millis(500);
        }
        let stopped = tokio::select! {
            _ = stop.wait_for(|s| *s) => true,
            _ = tokio::time::sleep(backoff) => false,
        };
        if stopped {
            break;
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
    lag.abort();
    // Another node may run the sink now: this one shows nothing of it.
    metrics.topic_missing(false);
    metrics.status(None);
}

async fn follow(
    producer: &FutureProducer,
    store: &DynStore,
    shaper: &Arc<Shaper>,
    config: &KafkaSinkConfig,
    checkpoint: &CheckpointFile,
    metrics: &SinkMetrics,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<(), SinkError> {
    let head = store.head().await?.map(|h| h.seq);
    let from = checkpoint.resume_from(head).await?;
    let mut events = store.subscribe_all(from);
    // Pending deliveries in log order: the front completing means everything
    // before it is delivered.
    let mut pending: VecDeque<(Delivered, DeliveryFuture)> = VecDeque::new();
    let mut done: Option<Delivered> = None;
    let mut saved: Option<Delivered> = None;
    let mut last_save = Instant::now();
    // When a delivery last completed (or the first pending one was sent):
    // deliveries pending longer than STALLED without one make the sink ask the
    // brokers about its topic, which may not exist (any more).
    let mut progress = Instant::now();
    let mut stalled = tokio::time::interval(STALLED);
    stalled.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut probe: Option<tokio::task::JoinHandle<Topic>> = None;
    let mut delivering = false;
    loop {
        if let Some((code, reason)) = producer.client().fatal_error() {
            return Err(SinkError::Io(format!(
                "fatal producer error: {code:?}: {}",
                redact(&reason, config, None)
            )));
        }
        let room = pending.len() < IN_FLIGHT;
        let waiting = !pending.is_empty();
        let front = async {
            match pending.front_mut() {
                Some((_, f)) => Some(f.await),
                None => std::future::pending().await,
            }
        };
        let mut stopping = false;
        tokio::select! {
            biased;
            // The guard `wait_for` returns is not Send: keep it inside.
            _ = async { let _ = stop.wait_for(|s| *s).await; } => stopping = true,
            report = front => {
                let Some(report) = report else { continue };
                let (d, _) = pending.pop_front().ok_or_else(|| SinkError::Io("no pending delivery".into()))?;
                match report {
                    Ok(Ok(_)) => done = Some(d),
                    Ok(Err((e, _))) => return Err(SinkError::Io(format!("delivery failed: {}", describe(&e, config)))),
                    Err(_) => return Err(SinkError::Io("the producer went away".into())),
                }
                progress = Instant::now();
                if !delivering {
                    delivering = true;
                    metrics.status(Some(SinkStatus::Delivering));
                }
            }
            found = async {
                match probe.as_mut() {
                    Some(p) => p.await.unwrap_or(Topic::Unknown),
                    None => std::future::pending().await,
                }
            }, if probe.is_some() => {
                probe = None;
                if let Some(e) = topic_error(found, config) {
                    return Err(e);
                }
                // The topic is there: the brokers are slow or partly down, and
                // librdkafka retries within its delivery timeout. Ask again
                // if it stays so.
                progress = Instant::now();
            }
            _ = stalled.tick(), if probe.is_none() && waiting && progress.elapsed() >= STALLED => {
                probe = Some(spawn_look_up(producer, &config.topic));
            }
            item = events.next(), if room => {
                let Some(item) = item else { return Ok(()) };
                let r = item?;
                let m = shaper.shape(&r)?;
                let f = send(producer, config, &m).await?;
                if pending.is_empty() {
                    progress = Instant::now();
                }
                pending.push_back((Delivered { position: r.position, seq: r.seq }, f));
            }
        }
        if stopping {
            // Give what is in flight a moment, keep what was delivered.
            let deadline = Instant::now() + Duration::from_secs(5);
            while let Some((d, f)) = pending.pop_front() {
                match tokio::time::timeout_at(deadline.into(), delivered(f, config)).await {
                    Ok(Ok(())) => done = Some(d),
                    _ => break,
                }
            }
            if let Some(d) = done.filter(|d| Some(*d) != saved) {
                checkpoint.store(d).await?;
                metrics.delivered(d.seq);
            }
            return Ok(());
        }
        if let Some(d) = done
            && Some(d) != saved
            && (last_save.elapsed() >= CHECKPOINT_EVERY || pending.is_empty())
        {
            checkpoint.store(d).await?;
            saved = Some(d);
            last_save = Instant::now();
            metrics.delivered(d.seq);
        }
    }
}

/// Sends `records` once and waits for every delivery (`authlog sink replay`):
/// no checkpoint moves.
pub async fn replay(
    shaper: &Shaper,
    config: &KafkaSinkConfig,
    records: impl IntoIterator<Item = authlog_schemas::Recorded>,
) -> Result<u64, SinkError> {
    let producer = producer(config)?;
    // A topic that does not exist is said now, not after the delivery timeout.
    check_topic(&producer, config).await?;
    let mut pending = VecDeque::new();
    let mut sent = 0u64;
    for r in records {
        let m = shaper.shape(&r)?;
        pending.push_back(send(&producer, config, &m).await?);
        sent += 1;
        while pending.len() >= IN_FLIGHT {
            if let Some(f) = pending.pop_front() {
                delivered(f, config).await?;
            }
        }
    }
    for f in pending {
        delivered(f, config).await?;
    }
    producer
        .flush(Duration::from_secs(30))
        .map_err(|e| SinkError::Io(describe(&e, config)))?;
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    const SECRET: &str = "hunter2-planted-secret";

    fn config(properties: &[(&str, &str)]) -> KafkaSinkConfig {
        KafkaSinkConfig {
            brokers: "127.0.0.1:9".into(),
            topic: "authlog.events".into(),
            format: Default::default(),
            personal: Default::default(),
            properties: properties
                .iter()
                .map(|(k, v)| (k.to_string(), Secret::new(*v)))
                .collect(),
        }
    }

    /// librdkafka's own errors for a misspelled property, an invalid value of
    /// a real one and a value it refuses only when creating the client: none
    /// shows the value, each names the property.
    #[test]
    fn refused_properties_are_named_without_their_values() {
        for (properties, names) in [
            (vec![("sasl.passwrod", SECRET)], "sasl.passwrod"),
            (vec![("security.protocol", SECRET)], "security.protocol"),
            (
                vec![
                    ("security.protocol", "SASL_PLAINTEXT"),
                    ("sasl.mechanism", SECRET),
                ],
                "sasl.mechanism",
            ),
        ] {
            let c = config(&properties);
            let raw = match client_config(&c).and_then(|cc| {
                cc.create::<FutureProducer>()
                    .map_err(|e| SinkError::Io(format!("{e} / {e:?}")))
            }) {
                Err(SinkError::Io(raw)) => raw,
                _ => panic!("{names}: librdkafka accepted it"),
            };
            assert!(
                raw.contains(SECRET),
                "the test needs an error quoting the value: {raw}"
            );
            let e = check(&c)
                .map(|()| "accepted".to_string())
                .unwrap_err()
                .to_string();
            assert!(!e.contains(SECRET), "{e}");
            assert!(!e.contains("hunter2"), "{e}");
            assert!(e.contains(names), "{e}");
        }
    }

    #[test]
    fn values_are_replaced_where_they_stand_as_words() {
        let c = config(&[
            ("sasl.mechanism", "PLAIN"),
            ("sasl.password", "s3cret"),
            ("enable.ssl.certificate.verification", "true"),
        ]);
        assert_eq!(
            redact(
                "SASL_PLAINTEXT with PLAIN: s3cret, \"s3cret\"; true or false",
                &c,
                None
            ),
            "SASL_PLAINTEXT with <value of sasl.mechanism>: <value of sasl.password>, \"<value of sasl.password>\"; true or false"
        );
        // A value that does not begin or end with a letter is replaced also
        // next to one.
        assert_eq!(replace_words("x!pw!y", "!pw!", "<v>"), "x<v>y");
        assert_eq!(
            unquote_all_but(
                "Invalid value \"a,b\" for configuration property \"debug\"",
                "debug"
            ),
            "Invalid value for configuration property \"debug\""
        );
        assert_eq!(unquote_all_but("x \"a\"b\" y", "k"), "xb");
    }
}
