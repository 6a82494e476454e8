//! Metrics as a decorator around any backend.

use std::time::Instant;

use async_trait::async_trait;
use authlog_schemas::Recorded;
use futures_util::stream::BoxStream;
use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

use super::{Appended, CheckReport, EventStore, Expected, Head, NewEvent, ReadFrom, StoreError};

/// The store's metrics. Backends that batch (group commit) also record batch size
/// and commit latency here.
#[derive(Clone)]
pub struct StoreMetrics {
    pub events_appended: IntCounterVec,
    pub append_seconds: HistogramVec,
    pub commit_seconds: Histogram,
    pub batch_size: Histogram,
}

fn latency_buckets() -> Vec<f64> {
    vec![
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    ]
}

impl StoreMetrics {
    pub fn new(registry: &Registry) -> Result<StoreMetrics, prometheus::Error> {
        let events_appended = IntCounterVec::new(
            Opts::new(
                "authlog_events_appended_total",
                "Events committed to the log, by type",
            ),
            &["type"],
        )?;
        let append_seconds = HistogramVec::new(
            HistogramOpts::new(
                "authlog_store_append_seconds",
                "Time from append call to durable answer, by result",
            )
            .buckets(latency_buckets()),
            &["result"],
        )?;
        let commit_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "authlog_store_commit_seconds",
                "Duration of one durable group commit",
            )
            .buckets(latency_buckets()),
        )?;
        let batch_size = Histogram::with_opts(
            HistogramOpts::new(
                "authlog_store_commit_batch_size",
                "Appends sharing one durable commit",
            )
            .buckets(vec![
                1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0, 4096.0,
            ]),
        )?;
        registry.register(Box::new(events_appended.clone()))?;
        registry.register(Box::new(append_seconds.clone()))?;
        registry.register(Box::new(commit_seconds.clone()))?;
        registry.register(Box::new(batch_size.clone()))?;
        Ok(StoreMetrics {
            events_appended,
            append_seconds,
            commit_seconds,
            batch_size,
        })
    }
}

/// Wraps a store and records append latency, results and events by type.
pub struct Instrumented<S> {
    inner: S,
    metrics: StoreMetrics,
}

impl<S> Instrumented<S> {
    pub fn new(inner: S, metrics: StoreMetrics) -> Self {
        Instrumented { inner, metrics }
    }
}

#[async_trait]
impl<S: EventStore> EventStore for Instrumented<S> {
    async fn append(
        &self,
        stream: &str,
        expected: Expected,
        events: Vec<NewEvent>,
    ) -> Result<Appended, StoreError> {
        let types: Vec<String> = events.iter().map(|e| e.event_type.clone()).collect();
        let started = Instant::now();
        let result = self.inner.append(stream, expected, events).await;
        let label = match &result {
            Ok(_) => "ok",
            Err(StoreError::Conflict { .. }) => "conflict",
            Err(_) => "error",
        };
        self.metrics
            .append_seconds
            .with_label_values(&[label])
            .observe(started.elapsed().as_secs_f64());
        if result.is_ok() {
            for t in &types {
                self.metrics
                    .events_appended
                    .with_label_values(&[t.as_str()])
                    .inc();
            }
        }
        result
    }

    async fn read_stream(
        &self,
        stream: &str,
        from_revision: u64,
        limit: usize,
    ) -> Result<Vec<Recorded>, StoreError> {
        self.inner.read_stream(stream, from_revision, limit).await
    }

    async fn read_all(&self, from: ReadFrom, limit: usize) -> Result<Vec<Recorded>, StoreError> {
        self.inner.read_all(from, limit).await
    }

    fn subscribe_all(&self, from: ReadFrom) -> BoxStream<'static, Result<Recorded, StoreError>> {
        self.inner.subscribe_all(from)
    }

    async fn head(&self) -> Result<Option<Head>, StoreError> {
        self.inner.head().await
    }

    fn log_id(&self) -> String {
        self.inner.log_id()
    }

    async fn check(&self) -> Result<CheckReport, StoreError> {
        self.inner.check().await
    }
    fn is_shared(&self) -> bool {
        self.inner.is_shared()
    }

    async fn try_lease(
        &self,
        name: &str,
        holder: &str,
    ) -> Result<Option<crate::store::Lease>, StoreError> {
        self.inner.try_lease(name, holder).await
    }

    async fn load_checkpoint(&self, name: &str) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        self.inner.load_checkpoint(name).await
    }

    async fn save_checkpoint(
        &self,
        name: &str,
        expected: Option<u64>,
        value: Vec<u8>,
    ) -> Result<u64, StoreError> {
        self.inner.save_checkpoint(name, expected, value).await
    }
}
