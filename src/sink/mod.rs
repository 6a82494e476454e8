//! Sinks ship every event of the log out of authlog, at least once and in log
//! order, each from its own durable checkpoint: after a crash or restart a sink
//! resumes after the last event it knows was delivered, so nothing is lost and
//! consumers drop the few repeats by `event_id` (or `seq`, the dense audit
//! ordinal, which also shows them any gap).
//!
//! [`shape`] turns a stored event into what a sink sends (native or OCSF, with
//! personal data as configured); [`checkpoint`] keeps where a sink is;
//! [`ndjson`] appends NDJSON to a file or standard output for a log shipper.

pub mod checkpoint;
pub mod kafka;
pub mod ndjson;
pub mod ocsf;
pub mod shape;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("sink: {0}")]
    Io(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("sink: event at seq {seq}: {error}")]
    Shape { seq: u64, error: String },
    /// The brokers answer that the Kafka sink's topic does not exist. The sink
    /// does not create topics: the operator does, with the partitions wanted.
    #[error(
        "sink: the Kafka topic {topic:?} does not exist on the brokers {brokers}: create it (the sink does not create topics)"
    )]
    TopicMissing { topic: String, brokers: String },
}

fn io<E: std::fmt::Display>(e: E) -> SinkError {
    SinkError::Io(e.to_string())
}

/// What `/readyz` says of a sink running on this node (the Kafka sink's; the
/// NDJSON sink reports none). A sink that is down never makes the node
/// unready: sign-ins go on and the sink catches up from its checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum SinkStatus {
    /// Started; not yet known to reach its destination.
    Starting,
    /// Its destination answers: the topic exists, or a delivery succeeded
    /// since the last error.
    Delivering,
    /// Its last attempt failed; it retries from its checkpoint with backoff.
    Retrying,
    /// The brokers say its Kafka topic does not exist: create it.
    TopicMissing { topic: String },
}

/// The status of each sink running on this node, by sink name.
pub type SinkStatuses =
    std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<String, SinkStatus>>>;

/// What `/metrics` shows of a sink: the seq of the last event delivered, the
/// events not delivered yet (kept current every second, also while a broker is
/// down), and delivery errors; what `/readyz` shows of it (its status).
#[derive(Clone)]
pub struct SinkMetrics {
    sink: String,
    seq: prometheus::IntGauge,
    lag: prometheus::IntGauge,
    pub errors: prometheus::IntCounter,
    /// The per-sink family of `authlog_sink_topic_missing`: only the Kafka
    /// sink has a topic, so only it makes a series.
    topic_missing: prometheus::IntGaugeVec,
    statuses: SinkStatuses,
    /// The last delivered seq, -1 before the first.
    delivered: std::sync::Arc<std::sync::atomic::AtomicI64>,
}

impl SinkMetrics {
    pub fn new(metrics: &crate::metrics::Metrics, sink: &str) -> SinkMetrics {
        SinkMetrics {
            sink: sink.to_string(),
            seq: metrics.sink_seq.with_label_values(&[sink]),
            lag: metrics.sink_lag.with_label_values(&[sink]),
            errors: metrics.sink_errors.with_label_values(&[sink]),
            topic_missing: metrics.sink_topic_missing.clone(),
            statuses: metrics.sink_statuses.clone(),
            delivered: std::sync::Arc::new(std::sync::atomic::AtomicI64::new(-1)),
        }
    }

    /// `authlog_sink_topic_missing{sink}`: 1 while the brokers say the topic
    /// does not exist.
    pub fn topic_missing(&self, missing: bool) {
        self.topic_missing
            .with_label_values(&[self.sink.as_str()])
            .set(i64::from(missing));
    }

    /// What `/readyz` shows of this sink; `None` once it stopped on this node.
    pub fn status(&self, status: Option<SinkStatus>) {
        if let Ok(mut all) = self.statuses.lock() {
            match status {
                Some(s) => {
                    all.insert(self.sink.clone(), s);
                }
                None => {
                    all.remove(&self.sink);
                }
            }
        }
    }

    /// Everything up to `seq` is delivered.
    pub fn delivered(&self, seq: u64) {
        self.delivered
            .store(seq as i64, std::sync::atomic::Ordering::Relaxed);
        self.seq.set(seq as i64);
    }

    /// Keeps the lag current until `stop`.
    pub async fn track_lag(
        self,
        store: crate::store::DynStore,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = tick.tick() => {}
            }
            if let Ok(head) = store.head().await {
                let head = head.map_or(-1, |h| h.seq as i64);
                let done = self.delivered.load(std::sync::atomic::Ordering::Relaxed);
                self.lag.set((head - done).max(0));
            }
        }
    }
}
