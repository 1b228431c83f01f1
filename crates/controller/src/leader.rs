//! Leader election: only the leader runs the reconciler and the key manager; every replica
//! serves HTTP and keeps its key ring current. A replica that loses its Lease stops its leader
//! work and stands by; on shutdown it releases the Lease so a standby takes over at once.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::{Mutex, mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::startup::{self, Phase};

/// Leader election (from the flags).
#[derive(Clone, Debug)]
pub struct LeaderConfig {
    /// `--leader-elect`: false makes this replica the leader at once.
    pub enabled: bool,
    /// `--leader-election-lease`: the Lease's name.
    pub lease: String,
    /// `--leader-election-lease-duration`.
    pub lease_duration: Duration,
    /// `--leader-election-id` (default: pod name and a random suffix).
    pub identity: Option<String>,
}

/// Who runs for leader, and where the Lease is.
pub struct Candidate<'a> {
    /// API client.
    pub client: kube::Client,
    /// Namespace of the Lease.
    pub namespace: &'a str,
    /// This replica's identity in the Lease.
    pub identity: &'a str,
}

/// Runs `lead` for each term of leadership until `shutdown` fires. `lead` gets a token that
/// ends the term and the SIGUSR1 requests made during it.
pub async fn run<F, Fut>(
    config: &LeaderConfig,
    Candidate {
        client,
        namespace,
        identity,
    }: Candidate<'_>,
    metrics: &Metrics,
    force: mpsc::Receiver<()>,
    shutdown: CancellationToken,
    lead: F,
) -> anyhow::Result<()>
where
    F: Fn(CancellationToken, mpsc::Receiver<()>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    if !config.enabled {
        startup::mark(Phase::Leading);
        metrics.leader.set(1);
        lead(shutdown, force).await;
        return Ok(());
    }
    let duration = config.lease_duration.as_secs().max(3);
    let manager = LeaseManagerBuilder::new(client, config.lease.clone())
        .with_namespace(namespace.to_owned())
        .with_identity(identity.to_owned())
        .with_duration(duration)
        .with_grace((duration / 3).max(1))
        .build()
        .await
        .context("setting up leader election")?;
    let (mut leading, lease_task) = manager.watch().await;
    // The key manager's SIGUSR1 channel moves from one term of leadership to the next.
    let force = Arc::new(Mutex::new(force));
    while wait_for_leadership(&mut leading, &shutdown).await? {
        startup::mark(Phase::Leading);
        tracing::info!(identity = %identity, "became the leader");
        metrics.leader.set(1);
        let term = shutdown.child_token();
        let (relay_tx, relay_rx) = mpsc::channel(1);
        let relay = tokio::spawn(relay(force.clone(), relay_tx, term.clone()));
        let work = tokio::spawn(lead(term.clone(), relay_rx));
        while *leading.borrow_and_update() && !shutdown.is_cancelled() {
            tokio::select! {
                () = shutdown.cancelled() => {}
                changed = leading.changed() => { if changed.is_err() { break; } }
            }
        }
        term.cancel();
        if tokio::time::timeout(Duration::from_secs(10), work)
            .await
            .is_err()
        {
            tracing::warn!("the leader's work did not stop within 10s; abandoning it");
        }
        relay.abort();
        metrics.leader.set(0);
        if shutdown.is_cancelled() {
            break;
        }
        tracing::warn!("lost leadership; standing by");
    }
    drop(leading); // releases the Lease so a standby takes over at once
    let _ = tokio::time::timeout(Duration::from_secs(5), lease_task).await;
    Ok(())
}

/// Waits until this replica leads (true) or shuts down (false).
async fn wait_for_leadership(
    leading: &mut watch::Receiver<bool>,
    shutdown: &CancellationToken,
) -> anyhow::Result<bool> {
    while !*leading.borrow_and_update() {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(false),
            changed = leading.changed() => { changed.context("leader election stopped")?; }
        }
    }
    Ok(!shutdown.is_cancelled())
}

/// Passes SIGUSR1 requests on to this term's key manager until the term ends.
async fn relay(
    force: Arc<Mutex<mpsc::Receiver<()>>>,
    to: mpsc::Sender<()>,
    term: CancellationToken,
) {
    let mut rx = force.lock().await;
    loop {
        tokio::select! {
            () = term.cancelled() => return,
            Some(()) = rx.recv() => { let _ = to.try_send(()); }
        }
    }
}
