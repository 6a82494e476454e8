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
}

fn io<E: std::fmt::Display>(e: E) -> SinkError {
    SinkError::Io(e.to_string())
}

/// What `/metrics` shows of a sink: the seq of the last event delivered, the
/// events not delivered yet (kept current every second, also while a broker is
/// down), and delivery errors.
#[derive(Clone)]
pub struct SinkMetrics {
    seq: prometheus::IntGauge,
    lag: prometheus::IntGauge,
    pub errors: prometheus::IntCounter,
    /// The last delivered seq, -1 before the first.
    delivered: std::sync::Arc<std::sync::atomic::AtomicI64>,
}

impl SinkMetrics {
    pub fn new(metrics: &crate::metrics::Metrics, sink: &str) -> SinkMetrics {
        SinkMetrics {
            seq: metrics.sink_seq.with_label_values(&[sink]),
            lag: metrics.sink_lag.with_label_values(&[sink]),
            errors: metrics.sink_errors.with_label_values(&[sink]),
            delivered: std::sync::Arc::new(std::sync::atomic::AtomicI64::new(-1)),
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
