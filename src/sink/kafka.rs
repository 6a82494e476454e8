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

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};

use super::checkpoint::{CheckpointFile, Delivered};
use super::ndjson::SinkMetrics;
use super::shape::{Outgoing, Shaper};
use super::{SinkError, io};
use crate::config::KafkaSinkConfig;
use crate::store::DynStore;

/// Deliveries in flight at most: beyond it the sink waits for reports.
const IN_FLIGHT: usize = 10_000;
/// How often the checkpoint is written while deliveries complete.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);

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
    client_config(config)?.create().map_err(io)
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
    topic: &str,
    m: &Outgoing,
) -> Result<DeliveryFuture, SinkError> {
    let (seq, position) = (m.seq.to_string(), m.position.to_string());
    loop {
        match producer.send_result(record(topic, m, &seq, &position)) {
            Ok(f) => return Ok(f),
            Err((
                rdkafka::error::KafkaError::MessageProduction(
                    rdkafka::types::RDKafkaErrorCode::QueueFull,
                ),
                _,
            )) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err((e, _)) => return Err(io(e)),
        }
    }
}

/// Waits for one delivery report.
async fn delivered(f: DeliveryFuture) -> Result<(), SinkError> {
    match f.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((e, _))) => Err(SinkError::Io(format!("delivery failed: {e}"))),
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
    loop {
        let started = Instant::now();
        let outcome = match producer(&config) {
            Ok(p) => {
                let outcome = follow(
                    &p,
                    &store,
                    &shaper,
                    &config,
                    &checkpoint,
                    &metrics,
                    &mut stop,
                )
                .await;
                // Destroying a producer purges, flushes and joins its threads:
                // not on the async executor.
                let _ = tokio::task::spawn_blocking(move || drop(p)).await;
                outcome
            }
            Err(e) => Err(e),
        };
        match outcome {
            Ok(()) => {
                lag.abort();
                return;
            }
            Err(e) => {
                metrics.errors.inc();
                tracing::warn!(error = %e, retry_in = ?backoff, "kafka sink: recreating the producer and resuming from its checkpoint");
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
            lag.abort();
            return;
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
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
    loop {
        if let Some(fatal) = producer.client().fatal_error() {
            return Err(SinkError::Io(format!("fatal producer error: {fatal:?}")));
        }
        let room = pending.len() < IN_FLIGHT;
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
                    Ok(Err((e, _))) => return Err(SinkError::Io(format!("delivery failed: {e}"))),
                    Err(_) => return Err(SinkError::Io("the producer went away".into())),
                }
            }
            item = events.next(), if room => {
                let Some(item) = item else { return Ok(()) };
                let r = item?;
                let m = shaper.shape(&r)?;
                let f = send(producer, &config.topic, &m).await?;
                pending.push_back((Delivered { position: r.position, seq: r.seq }, f));
            }
        }
        if stopping {
            // Give what is in flight a moment, keep what was delivered.
            let deadline = Instant::now() + Duration::from_secs(5);
            while let Some((d, f)) = pending.pop_front() {
                match tokio::time::timeout_at(deadline.into(), delivered(f)).await {
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
    let mut pending = VecDeque::new();
    let mut sent = 0u64;
    for r in records {
        let m = shaper.shape(&r)?;
        pending.push_back(send(&producer, &config.topic, &m).await?);
        sent += 1;
        while pending.len() >= IN_FLIGHT {
            if let Some(f) = pending.pop_front() {
                delivered(f).await?;
            }
        }
    }
    for f in pending {
        delivered(f).await?;
    }
    producer.flush(Duration::from_secs(30)).map_err(io)?;
    Ok(sent)
}
