//! Faults of the control plane and of the controller's own process, small enough for CI (the
//! full sizes, with convergence times and API request rates, are `keyseal-bench faults`):
//! SIGKILLs at random moments of a reconcile, and a kube-apiserver restart in the middle of one.
//! After each: every Secret holds exactly the data it was sealed with, one sealing key, and the
//! unmanaged Secrets planted beforehand (one named like a SealedSecret) are untouched.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Secret;
use keyseal_api::{Scope, SealedSecret};
use keyseal_crypto::Certificate;
use keyseal_testenv::PrivatePlane;
use kube::api::{DeleteParams, ListParams, PostParams};

use crate::common::*;

/// SealedSecrets reconciled during each fault.
const COUNT: usize = 100;
/// How long the workload may take to converge after a fault.
const CONVERGE: Duration = Duration::from_secs(90);

/// What the namespace must look like after a fault.
struct Workload {
    /// Target Secret name → the items it must hold.
    expected: BTreeMap<String, BTreeMap<String, String>>,
    /// Unmanaged Secrets and their resourceVersion when planted.
    bystanders: Vec<(String, String)>,
}

impl Workload {
    /// Plants the unmanaged Secrets `bystander` and `colliding`, then creates `s-0` … `s-99`
    /// and a SealedSecret `colliding` (whose Secret must stay the unmanaged one).
    async fn create(env: &Env, cert: &Certificate) -> anyhow::Result<Self> {
        let mut bystanders = Vec::new();
        for name in ["bystander", "colliding"] {
            let secret = plain_secret(
                env.name(),
                name,
                &[("owner", "someone else")],
                Scope::Strict,
            );
            let created = env
                .secrets()
                .create(&PostParams::default(), &secret)
                .await?;
            bystanders.push((name.to_owned(), created.metadata.resource_version.unwrap()));
        }
        let mut workload = Self {
            expected: BTreeMap::new(),
            bystanders,
        };
        let names: Vec<String> = (0..COUNT).map(|i| format!("s-{i}")).collect();
        workload.put(env, cert, &names, 0).await?;
        env.create(&env.seal(cert, "colliding", &[("taken", "over")], Scope::Strict))
            .await?;
        Ok(workload)
    }

    /// Creates (or replaces) the SealedSecrets `names` with data of `version`.
    async fn put(
        &mut self,
        env: &Env,
        cert: &Certificate,
        names: &[String],
        version: u32,
    ) -> anyhow::Result<()> {
        let mut sealed = Vec::new();
        for name in names {
            let value = format!("{name}-v{version}");
            sealed.push(env.seal(cert, name, &[("value", &value)], Scope::Strict));
            self.expected
                .insert(name.clone(), strings(&[("value", &value)]));
        }
        let api = env.sealed_secrets();
        let results: Vec<anyhow::Result<()>> = futures::stream::iter(sealed)
            .map(|ss| replace(api.clone(), ss))
            .buffer_unordered(16)
            .collect()
            .await;
        results.into_iter().collect()
    }

    /// Waits until every target Secret holds its data and every SealedSecret of the workload
    /// is Synced at its generation.
    async fn converged(&self, env: &Env) -> anyhow::Result<()> {
        keyseal_testenv::await_condition(CONVERGE, "the workload converged", || async {
            let secrets = env.secrets().list(&ListParams::default()).await?;
            let sealed = env.sealed_secrets().list(&ListParams::default()).await?;
            let correct = secrets
                .items
                .iter()
                .filter(|s| {
                    self.expected
                        .get(s.metadata.name.as_deref().unwrap_or(""))
                        .is_some_and(|want| data(s) == *want)
                })
                .count();
            let synced = sealed
                .items
                .iter()
                .filter(|ss| {
                    self.expected
                        .contains_key(ss.metadata.name.as_deref().unwrap_or(""))
                })
                .filter(|ss| {
                    synced(ss).is_some_and(|c| c.status == "True")
                        && ss.status.as_ref().and_then(|s| s.observed_generation)
                            == ss.metadata.generation
                })
                .count();
            let n = self.expected.len();
            Ok((correct == n && synced == n).then_some(()))
        })
        .await
    }

    /// Asserts the properties every fault must keep.
    async fn assert_intact(&self, env: &Env) -> anyhow::Result<()> {
        let secrets: BTreeMap<String, Secret> = env
            .secrets()
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .map(|s| (s.metadata.name.clone().unwrap_or_default(), s))
            .collect();
        for (name, want) in &self.expected {
            assert_eq!(
                secrets.get(name).map(data).as_ref(),
                Some(want),
                "Secret {name} holds exactly what was sealed"
            );
        }
        for (name, rv) in &self.bystanders {
            assert_eq!(
                secrets[name].metadata.resource_version.as_ref(),
                Some(rv),
                "the unmanaged Secret {name} is untouched"
            );
        }
        assert_eq!(env.key_secrets().await?.len(), 1, "no duplicate key");
        Ok(())
    }
}

/// Creates `ss`, or replaces the SealedSecret of that name.
async fn replace(api: kube::Api<SealedSecret>, mut ss: SealedSecret) -> anyhow::Result<()> {
    let name = ss.metadata.name.clone().unwrap_or_default();
    match api.create(&PostParams::default(), &ss).await {
        Err(kube::Error::Api(e)) if e.code == 409 => {
            ss.metadata.resource_version = api.get(&name).await?.metadata.resource_version;
            api.replace(&name, &PostParams::default(), &ss).await?;
            Ok(())
        }
        other => other.map(|_| ()).map_err(Into::into),
    }
}

/// A seed for the kill moments: `KEYSEAL_FAULT_SEED`, or the clock (printed, to replay a run).
fn seed() -> u64 {
    let seed = std::env::var("KEYSEAL_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    eprintln!("kill moments from KEYSEAL_FAULT_SEED={seed}");
    seed
}

/// xorshift64: enough to spread kill moments.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// The controller is SIGKILLed five times at random moments (0–1.5 s after it leads) while it
/// reconciles 100 SealedSecrets, one of which changes and one of whose Secrets is deleted before
/// each restart. Each restart keeps the replica's Lease identity, as a restarted container of the
/// same pod does. After the last restart everything converges: nothing lost, nothing wrong, one
/// key, nothing unmanaged touched.
#[tokio::test]
async fn sigkill_at_random_moments_of_a_reconcile_loses_nothing() -> anyhow::Result<()> {
    let env = Env::new("faults-kill").await?;
    let id = ["--leader-election-id", "replica-0"];
    let first = env.start_controller(&id).await?;
    let cert = first.cert().await?;
    first.kill().await?;
    let mut workload = Workload::create(&env, &cert).await?;
    let mut rng = seed() | 1;
    for round in 1..=5u32 {
        let changed = format!("s-{}", next(&mut rng) % COUNT as u64);
        workload.put(&env, &cert, &[changed], round).await?;
        let deleted = format!("s-{}", next(&mut rng) % COUNT as u64);
        let _ = env
            .secrets()
            .delete(&deleted, &DeleteParams::default())
            .await;
        let c = env.start_controller(&id).await?;
        let deadline = Instant::now() + WAIT;
        while !c
            .metrics()
            .await
            .is_ok_and(|m| m.get("sealed_secrets_controller_is_leader", &[]) == Some(1.0))
        {
            anyhow::ensure!(Instant::now() < deadline, "not leading:\n{}", c.logs());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(next(&mut rng) % 1500)).await;
        c.kill().await?;
    }
    let last = env.start_controller(&id).await?;
    workload
        .converged(&env)
        .await
        .map_err(|e| e.context(last.logs()))?;
    workload.assert_intact(&env).await
}

/// kube-apiserver restarted (SIGTERM, SIGKILL after 5 s, then the same command line) while 100 SealedSecrets
/// created at once are being reconciled, on a plane of the test's own: the controller's watches
/// and requests fail, and it catches up once the API server is back.
#[tokio::test]
async fn an_api_server_restart_in_the_middle_of_a_reconcile_loses_nothing() -> anyhow::Result<()> {
    let plane = PrivatePlane::start().await?;
    let cluster = plane.cluster().await?;
    let ns = cluster.namespace("faults-apiserver").await?;
    let sa = cluster.controller_identity(ns.name()).await?;
    let env = Env { cluster, ns, sa };
    let mut controller = env.start_controller(&[]).await?;
    let cert = controller.cert().await?;
    let workload = Workload::create(&env, &cert).await?;
    plane.restart_apiserver(Duration::from_secs(5)).await?;
    workload
        .converged(&env)
        .await
        .map_err(|e| e.context(controller.logs()))?;
    workload.assert_intact(&env).await?;
    assert!(
        controller.try_wait()?.is_none(),
        "the controller rode out the restart without exiting"
    );
    Ok(())
}
