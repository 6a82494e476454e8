//! The HTTP server loop: warp's filters on hyper, with the bounds a public
//! listener needs and warp's own `serve` does not set.
//!
//! * A header-read timeout, which is also the idle timeout of a kept-alive
//!   connection: a client that sends half a request, or nothing, is cut off.
//! * A cap on open connections (never more than the process's descriptors
//!   allow): beyond it new connections are closed at once, counted, and
//!   logged (rate-limited), so a flood of slow clients cannot starve
//!   `/healthz` or the store of descriptors.
//! * A bounded shutdown: after the signal no connection is accepted,
//!   in-flight requests get `limits.shutdown_grace_s` to finish, then the
//!   rest are cut.
//! * Malformed or timed-out connections are logged at debug, with one
//!   warning a minute saying how many there were, so nobody can flood the
//!   error log.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use prometheus::{IntCounterVec, IntGauge, Opts, Registry};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// The peer address of a request's connection, for [`peer_addr`].
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// The connection's peer address.
pub fn peer_addr()
-> impl warp::Filter<Extract = (Option<SocketAddr>,), Error = std::convert::Infallible> + Clone {
    use warp::Filter;
    warp::ext::optional::<PeerAddr>().map(|p: Option<PeerAddr>| p.map(|p| p.0))
}

/// How the server treats connections.
#[derive(Debug, Clone)]
pub struct Limits {
    pub header_timeout: Duration,
    pub max_connections: usize,
    /// Connections one peer address may hold at most (a quarter of the cap),
    /// so one client cannot take them all; trusted proxies are exempt (every
    /// user arrives through them).
    pub per_peer: usize,
    pub proxies: Vec<crate::config::Cidr>,
    pub shutdown_grace: Duration,
}

/// Open connections per peer address.
#[derive(Default)]
struct PerPeer {
    map: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
}

struct PeerSlot {
    owner: Arc<PerPeer>,
    ip: Option<std::net::IpAddr>,
}

impl PerPeer {
    fn take(self: &Arc<Self>, ip: std::net::IpAddr, cap: usize) -> Option<PeerSlot> {
        let mut map = self.map.lock().ok()?;
        let n = map.entry(ip).or_insert(0);
        if *n >= cap {
            return None;
        }
        *n += 1;
        Some(PeerSlot {
            owner: self.clone(),
            ip: Some(ip),
        })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        if let (Some(ip), Ok(mut map)) = (self.ip, self.owner.map.lock())
            && let Some(n) = map.get_mut(&ip)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&ip);
            }
        }
    }
}

/// Connection metrics.
#[derive(Clone)]
pub struct ServerMetrics {
    open: IntGauge,
    refused: prometheus::IntCounter,
    errors: IntCounterVec,
}

impl ServerMetrics {
    pub fn new(registry: &Registry) -> Result<ServerMetrics, prometheus::Error> {
        let open = IntGauge::new("authlog_http_connections", "Open HTTP connections")?;
        let refused = prometheus::IntCounter::new(
            "authlog_http_connections_refused_total",
            "Connections closed at once because the connection cap was reached",
        )?;
        let errors = IntCounterVec::new(
            Opts::new(
                "authlog_http_connection_errors_total",
                "Connections that ended in an error: header timeout, malformed request, reset",
            ),
            &["kind"],
        )?;
        registry.register(Box::new(open.clone()))?;
        registry.register(Box::new(refused.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        Ok(ServerMetrics {
            open,
            refused,
            errors,
        })
    }
}

/// The soft limit on open descriptors (`/proc/self/limits`), if known.
fn descriptor_limit() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// The connection cap: the configured one, but never more than leaves a
/// quarter of the descriptors (at least 64) for the store, the sinks and
/// everything else.
pub fn connection_cap(configured: usize) -> usize {
    match descriptor_limit() {
        Some(limit) => {
            let reserve = (limit / 4).max(64);
            let most = limit.saturating_sub(reserve).max(1);
            if configured > most {
                tracing::warn!(
                    configured,
                    descriptors = limit,
                    cap = most,
                    "limits.max_connections is more than the open-file limit allows; capping it (raise the limit with ulimit -n or LimitNOFILE)"
                );
            }
            configured.min(most)
        }
        None => configured,
    }
}

/// One warning a minute for a kind of noise, with the count since the last.
struct RateLimitedWarning {
    what: &'static str,
    count: AtomicU64,
    last: std::sync::Mutex<Instant>,
}

impl RateLimitedWarning {
    fn new(what: &'static str) -> RateLimitedWarning {
        RateLimitedWarning {
            what,
            count: AtomicU64::new(0),
            last: std::sync::Mutex::new(Instant::now() - Duration::from_secs(3600)),
        }
    }

    fn note(&self) {
        self.count.fetch_add(1, Ordering::Relaxed);
        let Ok(mut last) = self.last.lock() else {
            return;
        };
        if last.elapsed() >= Duration::from_secs(60) {
            *last = Instant::now();
            let n = self.count.swap(0, Ordering::Relaxed);
            tracing::warn!(
                count = n,
                "{} (logged at debug; counted in authlog_http_connection_errors_total)",
                self.what
            );
        }
    }
}

fn error_kind(e: &(dyn std::error::Error + 'static)) -> &'static str {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(h) = err.downcast_ref::<hyper::Error>() {
            if h.is_timeout() {
                return "timeout";
            }
            if h.is_parse() || h.is_parse_status() {
                return "malformed";
            }
            if h.is_incomplete_message() {
                return "incomplete";
            }
        }
        if err.downcast_ref::<std::io::Error>().is_some() {
            return "io";
        }
        cur = err.source();
    }
    "other"
}

/// Serves `filter` on `listener` until `shutdown` resolves, then for at most
/// `limits.shutdown_grace` more.
pub async fn serve<F, R>(
    filter: F,
    listener: tokio::net::TcpListener,
    limits: Limits,
    metrics: ServerMetrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) where
    F: warp::Filter<Extract = (R,), Error = std::convert::Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    R: warp::Reply,
{
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let per_peer = Arc::new(PerPeer::default());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let refusals = Arc::new(RateLimitedWarning::new(
        "connections were refused: the connection cap is reached",
    ));
    let failures = Arc::new(RateLimitedWarning::new(
        "connections ended in an error (header timeout, malformed or cut requests)",
    ));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(limits.header_timeout))
        .keep_alive_timeout(limits.header_timeout);
    let builder = Arc::new(builder);
    let mut tasks = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        // Reap finished connection tasks as we go.
        while tasks.try_join_next().is_some() {}
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of descriptors (EMFILE) or a connection reset before
                // accept: wait a moment rather than spin.
                tracing::debug!(error = %e, "accept failed");
                failures.note();
                metrics.errors.with_label_values(&["accept"]).inc();
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let ip = peer.ip();
        let slot = if limits.proxies.iter().any(|c| c.contains(ip)) {
            Some(PeerSlot {
                owner: per_peer.clone(),
                ip: None,
            })
        } else {
            per_peer.take(ip, limits.per_peer.max(1))
        };
        let (Some(slot), Ok(permit)) = (slot, permits.clone().try_acquire_owned()) else {
            metrics.refused.inc();
            refusals.note();
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let svc = warp::service(filter.clone());
        let svc = tower_service_fn(svc, peer);
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), svc)
            .into_owned();
        let conn = graceful.watch(conn);
        let (metrics, failures) = (metrics.clone(), failures.clone());
        metrics.open.inc();
        tasks.spawn(async move {
            if let Err(e) = conn.await {
                let kind = error_kind(&*e);
                tracing::debug!(error = %e, %peer, kind, "connection error");
                metrics.errors.with_label_values(&[kind]).inc();
                failures.note();
            }
            metrics.open.dec();
            drop(permit);
            drop(slot);
        });
    }
    drop(listener);
    // In-flight requests finish within the grace period; the rest are cut.
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace = ?limits.shutdown_grace,
            open = tasks.len(),
            "shutdown grace period over; cutting the connections still open"
        );
    }
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
}

/// A hyper service around warp's, putting the peer address in the request's
/// extensions.
fn tower_service_fn<S>(
    inner: S,
    peer: SocketAddr,
) -> hyper_util::service::TowerToHyperService<PeerService<S>> {
    hyper_util::service::TowerToHyperService::new(PeerService { inner, peer })
}

#[derive(Clone)]
pub struct PeerService<S> {
    inner: S,
    peer: SocketAddr,
}

impl<S, B> tower_service::Service<warp::http::Request<B>> for PeerService<S>
where
    S: tower_service::Service<warp::http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: warp::http::Request<B>) -> Self::Future {
        req.extensions_mut().insert(PeerAddr(self.peer));
        self.inner.call(req)
    }
}
