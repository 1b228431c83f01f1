//! Start-up: the `start-up:` log line and what it shows — a replica takes a Lease nobody holds
//! any more in one step, and a standby fills its SealedSecret cache before it leads. Order of
//! events, never wall time.

use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use futures::StreamExt as _;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use keyseal_api::Scope;
use keyseal_crypto::{Certificate, PrivateKey, SystemRng, self_signed_certificate};
use keyseal_testenv::await_condition;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use serde_json::Value;

use crate::common::*;

const LEASE: &str = "sealed-secrets-controller-leader";

/// The phases of the `start-up:` line (JSON logs), in ms since process start (-1: not reached).
struct Phases(Value);

impl Phases {
    fn ms(&self, phase: &str) -> i64 {
        self.0[format!("{phase}_ms")]
            .as_i64()
            .unwrap_or_else(|| panic!("no {phase}_ms in {}", self.0))
    }
}

/// Waits for the controller's `start-up:` line.
async fn phases(controller: &ControllerProcess) -> Result<Phases> {
    await_condition(WAIT, "the start-up line", || async {
        let logs = controller.logs();
        let Some(line) = logs
            .lines()
            .find(|l| l.contains("start-up: first Secret written"))
        else {
            return Ok(None);
        };
        Ok(Some(Phases(
            serde_json::from_str(line).context("a JSON log line")?,
        )))
    })
    .await
}

/// A key Secret in `env`'s namespace and its certificate (RSA-2048: quicker to make).
async fn add_key(env: &Env) -> Result<Certificate> {
    let (key, cert) = tokio::task::spawn_blocking(|| -> Result<_> {
        let key = PrivateKey::generate(2048)?;
        let cert = self_signed_certificate(&key, &Default::default(), &mut SystemRng)?;
        Ok((key, cert))
    })
    .await??;
    let secret = keyseal_api::key_secret::new_key_secret(
        env.name(),
        keyseal_api::key_secret::DEFAULT_KEY_PREFIX,
        &key,
        &cert,
        &Default::default(),
        &Default::default(),
    );
    env.secrets()
        .create(&PostParams::default(), &secret)
        .await?;
    Ok(cert)
}

/// A test namespace with a key Secret and the SealedSecrets `app-0`, `app-1`, … (`count`).
async fn with_sealed_secrets(prefix: &str, count: usize) -> Result<Env> {
    let env = Env::new(prefix).await?;
    let cert = add_key(&env).await?;
    for i in 0..count {
        env.create(&env.seal(&cert, &format!("app-{i}"), &[("k", "v")], Scope::Strict))
            .await?;
    }
    Ok(env)
}

/// A Lease held by `holder`, last renewed `renewed_ago` ago, for `seconds`.
fn lease(holder: &str, renewed_ago: Duration, seconds: i32) -> Lease {
    let renewed = jiff::Timestamp::now() - jiff::SignedDuration::try_from(renewed_ago).unwrap();
    Lease {
        metadata: ObjectMeta {
            name: Some(LEASE.into()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(seconds),
            acquire_time: Some(MicroTime(renewed)),
            renew_time: Some(MicroTime(renewed)),
            lease_transitions: Some(3),
            ..LeaseSpec::default()
        }),
    }
}

#[tokio::test]
async fn the_start_up_line_shows_every_phase_in_order() -> Result<()> {
    let env = with_sealed_secrets("startup-line", 1).await?;
    let controller = env.start_controller(&[]).await?;
    env.await_secret("app-0", |_| true).await?;
    let p = phases(&controller).await?;
    assert_eq!(p.ms("key_generated"), -1, "the key was loaded, not made");
    let order = [
        "client",
        "http",
        "leading",
        "first_reconcile",
        "first_secret",
    ];
    for pair in order.windows(2) {
        assert!(p.ms(pair[0]) <= p.ms(pair[1]), "{pair:?} in {}", p.0);
    }
    for before_reconcile in ["keys_listed", "first_key", "cache_ready"] {
        let at = p.ms(before_reconcile);
        assert!(
            (0..=p.ms("first_reconcile")).contains(&at),
            "{before_reconcile} in {}",
            p.0
        );
    }
    assert!(p.ms("client") >= 0);
    assert_eq!(
        controller
            .logs()
            .matches("start-up: first Secret written")
            .count(),
        1,
        "logged once"
    );

    // A cluster without keys: the leader makes one.
    let fresh = Env::new("startup-fresh").await?;
    let controller = fresh.start_controller(&[]).await?;
    let cert = controller.cert().await?;
    fresh
        .create(&fresh.seal(&cert, "app", &[("k", "v")], Scope::Strict))
        .await?;
    let p = phases(&controller).await?;
    assert!(p.ms("key_generated") >= p.ms("leading"), "{}", p.0);
    Ok(())
}

/// A Lease whose holder stopped renewing it long ago (a crashed replica, a cluster restored
/// from a backup) is taken in one step: its holder goes straight from the departed replica to
/// the new one, never through an empty holder (kube_lease_manager's way: release, sleep up to a
/// second, take).
#[tokio::test]
async fn a_lapsed_lease_is_taken_in_one_step() -> Result<()> {
    let env = with_sealed_secrets("startup-lapsed", 1).await?;
    let leases: Api<Lease> = Api::namespaced(env.admin(), env.name());
    let created = leases
        .create(
            &PostParams::default(),
            &lease("departed-replica", Duration::from_secs(3600), 15),
        )
        .await?;
    let version = created
        .metadata
        .resource_version
        .clone()
        .unwrap_or_default();
    let mut events = leases
        .watch(
            &WatchParams::default().fields(&format!("metadata.name={LEASE}")),
            &version,
        )
        .await?
        .boxed();
    let controller = env
        .start_controller(&["--leader-election-id", "taker"])
        .await?;
    let mut holders = Vec::new();
    tokio::time::timeout(WAIT, async {
        while let Some(event) = events.next().await {
            if let WatchEvent::Modified(lease) = event? {
                let spec = lease.spec.unwrap_or_default();
                holders.push(spec.holder_identity.unwrap_or_default());
                if holders.last().is_some_and(|h| h == "taker") {
                    return Ok(());
                }
            }
        }
        bail!("the Lease watch ended")
    })
    .await
    .with_context(|| format!("holders so far: {holders:?}"))??;
    assert_eq!(holders, ["taker"], "one change, straight to the new holder");
    let lease = leases.get(LEASE).await?.spec.unwrap_or_default();
    assert_eq!(lease.lease_transitions, Some(4));
    env.await_secret("app-0", |_| true).await?;
    drop(controller);
    Ok(())
}

/// Renews the Lease as its holder would until `stop`.
async fn renew_until(leases: Api<Lease>, stop: tokio_util::sync::CancellationToken) -> Result<()> {
    while !stop.is_cancelled() {
        let now = MicroTime(jiff::Timestamp::now());
        let renew = serde_json::json!({"spec": {"renewTime": now}});
        leases
            .patch(LEASE, &PatchParams::default(), &Patch::Merge(renew))
            .await?;
        tokio::select! {
            () = stop.cancelled() => {}
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
    Ok(())
}

/// A standby lists the SealedSecrets while another replica leads: when it takes over, its cache
/// is ready already.
#[tokio::test]
async fn a_standby_fills_its_cache_before_it_leads() -> Result<()> {
    let env = with_sealed_secrets("startup-standby", 3).await?;
    let leases: Api<Lease> = Api::namespaced(env.admin(), env.name());
    leases
        .create(&PostParams::default(), &lease("leader", Duration::ZERO, 4))
        .await?;
    // Another replica leads (renews the Lease) until the standby says its cache is filled;
    // then it goes away and the standby takes over when the Lease lapses.
    let leading = tokio_util::sync::CancellationToken::new();
    let renewer = tokio::spawn(renew_until(leases.clone(), leading.clone()));
    let controller = env.start_controller(&[]).await?;
    let listed = await_condition(WAIT, "the standby's cache", || async {
        Ok(controller
            .logs()
            .contains("SealedSecrets listed")
            .then_some(()))
    })
    .await;
    leading.cancel();
    renewer.await??;
    listed?;
    for i in 0..3 {
        env.await_secret(&format!("app-{i}"), |_| true).await?;
    }
    let p = phases(&controller).await?;
    assert!(
        p.ms("cache_ready") < p.ms("leading"),
        "listed before leading: {}",
        p.0
    );
    Ok(())
}
