//! Prometheus metrics: one registry per running server.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

use crate::store::StoreMetrics;

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_seconds: HistogramVec,
    pub store: StoreMetrics,
    /// seq of the last event the views applied.
    pub projection_seq: IntGauge,
    /// Committed events the views have not applied yet.
    pub projection_lag: IntGauge,
    pub projection_failed: IntGauge,
    /// Per sink: seq of the last event delivered, events not yet delivered,
    /// delivery errors.
    pub sink_seq: prometheus::IntGaugeVec,
    pub sink_lag: prometheus::IntGaugeVec,
    pub sink_errors: IntCounterVec,
    /// Per sink with a topic (Kafka): 1 while the brokers say it does not exist.
    pub sink_topic_missing: prometheus::IntGaugeVec,
    /// Per sink running on this node: what `/readyz` says of it.
    pub sink_statuses: crate::sink::SinkStatuses,
    /// Per singleton (sinks, checkpointer, key rotation): 1 on the node that
    /// holds its lease.
    pub lease_held: prometheus::IntGaugeVec,
}

impl Metrics {
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let http_requests = IntCounterVec::new(
            Opts::new(
                "authlog_http_requests_total",
                "HTTP requests by route and status",
            ),
            &["route", "status"],
        )?;
        let http_seconds = HistogramVec::new(
            HistogramOpts::new(
                "authlog_http_request_seconds",
                "HTTP request latency by route",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
            &["route"],
        )?;
        let projection_seq = IntGauge::new(
            "authlog_projection_seq",
            "seq of the last event applied to the views",
        )?;
        let projection_lag = IntGauge::new(
            "authlog_projection_lag_events",
            "Committed events not yet applied to the views",
        )?;
        let projection_failed = IntGauge::new(
            "authlog_projection_failed",
            "1 if the view runner stopped on an event it could not apply",
        )?;
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(http_seconds.clone()))?;
        registry.register(Box::new(projection_seq.clone()))?;
        registry.register(Box::new(projection_lag.clone()))?;
        registry.register(Box::new(projection_failed.clone()))?;
        let sink_seq = prometheus::IntGaugeVec::new(
            Opts::new("authlog_sink_seq", "seq of the last event a sink delivered"),
            &["sink"],
        )?;
        let sink_lag = prometheus::IntGaugeVec::new(
            Opts::new(
                "authlog_sink_lag_events",
                "Committed events a sink has not delivered yet",
            ),
            &["sink"],
        )?;
        let lease_held = prometheus::IntGaugeVec::new(
            Opts::new(
                "authlog_lease_held",
                "1 while this node holds the lease of a singleton (sink, checkpointer, key rotation)",
            ),
            &["lease"],
        )?;
        registry.register(Box::new(lease_held.clone()))?;
        let sink_errors = IntCounterVec::new(
            Opts::new(
                "authlog_sink_errors_total",
                "Sink delivery errors (each retried from the sink's checkpoint)",
            ),
            &["sink"],
        )?;
        registry.register(Box::new(sink_seq.clone()))?;
        registry.register(Box::new(sink_lag.clone()))?;
        registry.register(Box::new(sink_errors.clone()))?;
        let sink_topic_missing = prometheus::IntGaugeVec::new(
            Opts::new(
                "authlog_sink_topic_missing",
                "1 while the brokers say a sink's topic does not exist (the sink does not create it)",
            ),
            &["sink"],
        )?;
        registry.register(Box::new(sink_topic_missing.clone()))?;
        let store = StoreMetrics::new(&registry)?;
        Ok(Metrics {
            registry,
            http_requests,
            http_seconds,
            store,
            projection_seq,
            projection_lag,
            projection_failed,
            sink_seq,
            sink_lag,
            sink_errors,
            sink_topic_missing,
            sink_statuses: Default::default(),
            lease_held,
        })
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let encoder = TextEncoder::new();
        if let Err(e) = encoder.encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "encoding metrics");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}
