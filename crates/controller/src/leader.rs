//! Leader election: only the leader runs the reconciler and the key manager; every replica
//! serves HTTP and keeps its key ring current. A replica that loses its Lease stops its leader
//! work and stands by; on shutdown it releases the Lease so a standby takes over at once.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Api;
use kube::api::{Patch, PatchParams};
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
    let manager = LeaseManagerBuilder::new(client.clone(), config.lease.clone())
        .with_namespace(namespace.to_owned())
        .with_identity(identity.to_owned())
        .with_duration(duration)
        .with_grace((duration / 3).max(1))
        .build()
        .await
        .context("setting up leader election")?;
    let leases: Api<Lease> = Api::namespaced(client, namespace);
    match take_if_free(&leases, &config.lease, identity, duration).await {
        Ok(true) => tracing::debug!(identity = %identity, "took the free Lease"),
        Ok(false) => {}
        Err(e) => tracing::debug!(error = %e, "could not take the Lease at once; waiting for it"),
    }
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

/// Takes the Lease in one step when it is free: nobody holds it, or its holder's term has
/// expired (see [`is_free`]). kube_lease_manager would release an expired Lease, sleep 0.1–1 s
/// at random and only then take it; here the take is one patch conditional on the Lease's
/// `resourceVersion`, so that of replicas racing for it exactly one succeeds (the others get 409
/// and wait for the Lease as before). True when this replica holds it now.
async fn take_if_free(
    leases: &Api<Lease>,
    name: &str,
    identity: &str,
    duration: u64,
) -> anyhow::Result<bool> {
    let lease = leases.get(name).await?;
    let spec = lease.spec.unwrap_or_default();
    if !is_free(&spec, identity, jiff::Timestamp::now()) {
        return Ok(false);
    }
    let now = MicroTime(jiff::Timestamp::now());
    let patch = serde_json::json!({
        "metadata": { "resourceVersion": lease.metadata.resource_version },
        "spec": {
            "holderIdentity": identity,
            "acquireTime": now,
            "renewTime": now,
            "leaseDurationSeconds": duration,
            "leaseTransitions": spec.lease_transitions.unwrap_or(0).saturating_add(1),
        },
    });
    // The field manager kube_lease_manager uses for this identity: its later renewals and its
    // release then patch fields this replica already manages.
    let params = PatchParams {
        field_manager: Some(format!("kube-lease-manager-{identity}")),
        ..PatchParams::default()
    };
    match leases.patch(name, &params, &Patch::Merge(patch)).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Whether a replica may take a Lease with `spec` at `now` without waiting: it has no holder,
/// or its holder did not renew it within its duration (by the rule kube_lease_manager applies:
/// renew time plus duration, a missing one counting as expired). A Lease this replica holds
/// already is left to kube_lease_manager, which resumes it at once.
fn is_free(spec: &LeaseSpec, identity: &str, now: jiff::Timestamp) -> bool {
    let Some(holder) = spec.holder_identity.as_deref().filter(|h| !h.is_empty()) else {
        return true;
    };
    if holder == identity {
        return false;
    }
    let (Some(renewed), Some(seconds)) = (&spec.renew_time, spec.lease_duration_seconds) else {
        return true;
    };
    let expiry = renewed.0 + jiff::SignedDuration::from_secs(i64::from(seconds.max(0)));
    now > expiry
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

#[cfg(test)]
mod tests {
    use super::*;

    fn held(
        holder: Option<&str>,
        renewed_secs_ago: Option<i64>,
        duration: Option<i32>,
    ) -> LeaseSpec {
        let now = jiff::Timestamp::now();
        LeaseSpec {
            holder_identity: holder.map(str::to_owned),
            renew_time: renewed_secs_ago
                .map(|s| MicroTime(now - jiff::SignedDuration::from_secs(s))),
            lease_duration_seconds: duration,
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn only_a_lease_nobody_holds_or_whose_holder_lapsed_is_free() {
        let now = jiff::Timestamp::now();
        assert!(is_free(&LeaseSpec::default(), "me", now), "never held");
        assert!(is_free(&held(None, None, None), "me", now), "released");
        assert!(
            is_free(&held(Some(""), Some(0), Some(15)), "me", now),
            "released (empty holder)"
        );
        assert!(
            is_free(&held(Some("other"), Some(3600), Some(15)), "me", now),
            "expired an hour ago"
        );
        assert!(
            is_free(&held(Some("other"), Some(16), Some(15)), "me", now),
            "expired a second ago"
        );
        assert!(
            is_free(&held(Some("other"), None, Some(15)), "me", now),
            "no renew time"
        );
        assert!(
            !is_free(&held(Some("other"), Some(14), Some(15)), "me", now),
            "a live holder keeps it"
        );
        assert!(
            !is_free(&held(Some("other"), Some(0), Some(3600)), "me", now),
            "a live holder keeps it"
        );
        assert!(
            !is_free(&held(Some("me"), Some(3600), Some(15)), "me", now),
            "its own: left to the manager"
        );
    }
}
