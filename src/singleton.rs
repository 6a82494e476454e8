//! Singletons: jobs that one node runs for the whole log (the sinks, the audit
//! checkpointer, key rotation). A node runs one only while it holds the job's
//! lease from the store; when the lease is lost the job is stopped, and another
//! node takes it at its next try. On the embedded store the process holds
//! every lease, since no other process can open the log.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::store::DynStore;

/// How often a node that does not hold a lease tries to take it.
pub const RETRY: Duration = Duration::from_secs(2);

/// This process's name as a lease holder: host, process id and a random tag.
pub fn holder_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "node".into());
    format!(
        "{host}:{}:{}",
        std::process::id(),
        &uuid::Uuid::now_v7().simple().to_string()[24..]
    )
}

/// Runs `job` while this node holds the lease `name`, until `stop`. The job is
/// given its own stop signal, raised when the lease is lost or at `stop`; it
/// must return promptly then (its progress is a compare-and-set checkpoint, so
/// a late write by a deposed holder is refused, not lost).
pub async fn run<F, Fut>(
    store: DynStore,
    name: &'static str,
    holder: String,
    metrics: Metrics,
    mut stop: watch::Receiver<bool>,
    job: F,
) where
    F: Fn(watch::Receiver<bool>) -> Fut,
    Fut: Future<Output = ()>,
{
    let gauge = metrics.lease_held.with_label_values(&[name]);
    gauge.set(0);
    loop {
        if *stop.borrow() {
            return;
        }
        match store.try_lease(name, &holder).await {
            Ok(Some(mut lease)) => {
                tracing::info!(lease = name, holder = %holder, "lease taken: running the singleton here");
                gauge.set(1);
                let (job_stop, job_stopped) = watch::channel(false);
                let running = job(job_stopped);
                tokio::pin!(running);
                let finished = tokio::select! {
                    () = &mut running => true,
                    () = lease.lost() => {
                        tracing::warn!(lease = name, "lease lost: stopping the singleton on this node");
                        false
                    }
                    _ = stop.wait_for(|s| *s) => false,
                };
                if !finished {
                    job_stop.send_replace(true);
                    running.await;
                }
                gauge.set(0);
                drop(lease);
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(lease = name, error = %e, "taking the lease"),
        }
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            () = tokio::time::sleep(RETRY) => {}
        }
    }
}
