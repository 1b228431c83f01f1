//! Least privilege, proven: keyseal-controller runs on a control plane of its own, installed as
//! in a cluster (`manifests/rbac.yaml` applied, the ServiceAccount
//! `kube-system/sealed-secrets-controller`, every namespace watched), through everything that
//! needs a permission. The API server's audit log (`scripts/cluster up` turns it on) then says
//! which (verb, resource, scope) that ServiceAccount used; the test fails if the manifest grants
//! anything beyond them that [`ALLOWED_UNUSED`] does not explain, or if any request of the
//! controller was refused (403).
//!
//! What it runs: two replicas with Key Vault backups (the first key created pending, backed up,
//! activated; a renewal by `--key-renew-period`), a third replica in the network namespace behind
//! the Service kubeseal's `--fetch-cert` uses; SealedSecrets unsealed into new Secrets, updated,
//! refused (undecryptable; a name held by an unmanaged Secret) and deleted, with their status
//! and events; `/v1/verify` and `/v1/rotate`; the leader stopped and a standby taking over.

#[path = "common/mod.rs"]
mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context as _, Result};
use common::*;
use k8s_openapi::api::core::v1::Secret;
use keyseal_api::{Scope, SealedSecret};
use keyseal_crypto::Certificate;
use keyseal_testenv::audit::{self, Permission};
use keyseal_testenv::keyvault::{KvEmulator, KvSetup};
use keyseal_testenv::{
    CONTROLLER_SA, Cluster, PrivatePlane, ServiceAccountIdentity, await_condition, expose_in_netns,
    proxy_get, repo_root,
};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};

/// The controller's namespace in the manifests.
const CONTROLLER_NS: &str = "kube-system";

/// Grants the manifest may hold although this test does not see them used: the grant as
/// [`Permission`] prints it, and why it is kept. Keep each reason to one line.
const ALLOWED_UNUSED: &[(&str, &str)] = &[
    (
        "get bitnami.com/sealedsecrets cluster-wide",
        "upstream's controller GETs the SealedSecret of a deleted Secret (same manifest for both)",
    ),
    (
        "create core/events cluster-wide",
        "upstream's controller records core/v1 Events (keyseal records events.k8s.io/v1 ones)",
    ),
    (
        "patch core/events cluster-wide",
        "upstream's controller patches a repeated core/v1 Event's count (keyseal never patches)",
    ),
];

#[tokio::test]
async fn the_manifests_grant_nothing_the_controller_does_not_use() -> Result<()> {
    let plane = PrivatePlane::start().await?;
    let cluster = plane.cluster().await?;
    cluster.install_crd().await?;
    let rbac = repo_root().join("manifests/rbac.yaml");
    cluster.apply_file(&rbac).await?;
    let identity = cluster.identity(CONTROLLER_NS, CONTROLLER_SA).await?;
    // Refused requests are reported even when they made the run fail.
    let exercised = exercise(&cluster, &identity).await;

    let user = audit::service_account_user(CONTROLLER_NS, CONTROLLER_SA);
    let requests = audit::requests_by(&plane.logs().join("audit.log"), &user)?;
    let forbidden: BTreeSet<String> = requests
        .iter()
        .filter(|r| r.code == 403)
        .map(|r| format!("{} ({})", r.permission, r.uri))
        .collect();
    let used: BTreeSet<Permission> = requests
        .iter()
        .filter(|r| r.code != 403)
        .map(|r| r.permission.clone())
        .collect();
    let grants = audit::granted_to(
        &std::fs::read_to_string(&rbac)?,
        CONTROLLER_NS,
        CONTROLLER_SA,
    )?;
    let unused = audit::unused_grants(&grants, &used, CONTROLLER_NS);

    println!("{} requests by {user}; permissions used:", requests.len());
    for p in &used {
        println!("  {p}");
    }
    println!("granted by manifests/rbac.yaml but not used:");
    for p in &unused {
        let reason = allowed(p).unwrap_or("NOT ALLOWED");
        println!("  {p}: {reason}");
    }
    assert!(forbidden.is_empty(), "refused requests: {forbidden:#?}");
    exercised?;
    let unexplained: Vec<String> = unused
        .iter()
        .filter(|p| allowed(p).is_none())
        .map(|p| p.to_string())
        .collect();
    assert!(
        unexplained.is_empty(),
        "manifests/rbac.yaml grants more than the controller uses: {unexplained:#?}"
    );
    let stale: Vec<&str> = ALLOWED_UNUSED
        .iter()
        .map(|(grant, _)| *grant)
        .filter(|grant| !unused.iter().any(|p| p.to_string() == *grant))
        .collect();
    assert!(
        stale.is_empty(),
        "allowed as unused, but used (or no longer granted): {stale:?}"
    );
    Ok(())
}

/// The reason [`ALLOWED_UNUSED`] gives for `grant`.
fn allowed(grant: &Permission) -> Option<&'static str> {
    let grant = grant.to_string();
    ALLOWED_UNUSED
        .iter()
        .find(|(g, _)| *g == grant)
        .map(|(_, reason)| *reason)
}

/// Everything the controller does that needs a permission, until all replicas have stopped.
async fn exercise(cluster: &Cluster, identity: &ServiceAccountIdentity) -> Result<()> {
    let started = std::time::Instant::now();
    let phase = |what: &str| println!("{:>6.1?}  {what}", started.elapsed());
    let kv = KvEmulator::start(KvSetup::default()).await?;
    // The first replica leads: it creates the first key (pending, backed up, then activated).
    let a = start(identity, Network::Host, Some(&kv)).await?;
    await_leader(&a).await?;
    let first = a.cert().await?;
    let b = start(identity, Network::Host, Some(&kv)).await?;
    // kubeseal's path: the certificate through the API server's service proxy.
    let c = start(identity, Network::Netns, None).await?;
    let admin = cluster.client();
    expose_in_netns(&admin, CONTROLLER_NS, CONTROLLER_SA, "http", c.api_port).await?;
    let service = format!("http:{CONTROLLER_SA}:http");
    let pem = proxy_get(&admin, CONTROLLER_NS, &service, "/v1/cert.pem").await?;
    assert_eq!(Certificate::from_pem(pem.as_bytes())?, first);
    phase("three replicas up, the first key backed up and served through the Service");

    let app = cluster.namespace("least-privilege").await?;
    unseal_everything(cluster, app.name(), &a, &first).await?;
    phase("SealedSecrets unsealed, updated, refused and deleted; verify and rotate");

    // Renewal by --key-renew-period, with its backup.
    let renewed = await_condition(Duration::from_secs(90), "a renewed key", || async {
        Ok(a.cert().await.ok().filter(|c| *c != first))
    })
    .await
    .map_err(|e| e.context(a.logs()))?;
    phase("the key renewed");

    // The leader stops (releasing the Lease); a standby takes over and unseals.
    a.stop().await?;
    let new_leader = await_condition(WAIT, "a standby leads", || async {
        for standby in [&b, &c] {
            if is_leader(standby).await? {
                return Ok(Some(standby));
            }
        }
        Ok(None)
    })
    .await?;
    let api: Api<SealedSecret> = Api::namespaced(admin.clone(), app.name());
    let ss = seal_for(
        &renewed,
        app.name(),
        "after-failover",
        &[("k", "v")],
        Scope::Strict,
    );
    api.create(&PostParams::default(), &ss).await?;
    await_synced(&api, "after-failover", "True")
        .await
        .map_err(|e| e.context(new_leader.logs()))?;
    phase("the leader stopped, a standby took over and unsealed");
    b.stop().await?;
    c.stop().await?;
    // The audit backend writes each event before the response; leave it a moment for the
    // watches the replicas closed.
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok(())
}

/// Starts a replica watching every namespace, renewing its key every 20 s, with `kv` as its
/// backup vault (the writer identity's client secret).
async fn start(
    identity: &ServiceAccountIdentity,
    network: Network,
    kv: Option<&KvEmulator>,
) -> Result<ControllerProcess> {
    let mut launch = Launch::new(controller_binary(), CONTROLLER_NS)
        .network(network)
        .watch(Watch::All)
        .args(["--log-format", "json", "--log-level", "debug"])
        .args(["--leader-election-lease-duration", "6s"])
        .args(["--key-renew-period", "20s"]);
    if let Some(kv) = kv {
        launch = launch
            .keyvault(kv, "least-privilege")
            .keyvault_identity(kv, "writer");
    }
    let mut c = launch.spawn_keyseal(identity)?;
    c.wait_healthy(WAIT).await?;
    Ok(c)
}

async fn is_leader(c: &ControllerProcess) -> Result<bool> {
    let metrics = c.metrics().await?;
    Ok(metrics.get("sealed_secrets_controller_is_leader", &[]) == Some(1.0))
}

async fn await_leader(c: &ControllerProcess) -> Result<()> {
    await_condition(WAIT, "the first replica leads", || async {
        Ok(is_leader(c).await?.then_some(()))
    })
    .await
}

/// In `ns`: a SealedSecret unsealed, updated and deleted (its Secret collected); one that does
/// not decrypt; one whose name an unmanaged Secret holds; `/v1/verify` and `/v1/rotate`.
async fn unseal_everything(
    cluster: &Cluster,
    ns: &str,
    controller: &ControllerProcess,
    cert: &Certificate,
) -> Result<()> {
    let admin = cluster.client();
    let api: Api<SealedSecret> = Api::namespaced(admin.clone(), ns);
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), ns);
    let pp = PostParams::default();
    let app = seal_for(cert, ns, "app", &[("password", "one")], Scope::Strict);
    api.create(&pp, &app).await?;
    await_secret_in(admin.clone(), ns, "app", |s| data(s)["password"] == "one").await?;
    let update = seal_for(cert, ns, "app", &[("password", "two")], Scope::Strict);
    let patch = serde_json::json!({"spec": {"encryptedData": update.spec.encrypted_data}});
    api.patch("app", &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    await_secret_in(admin.clone(), ns, "app", |s| data(s)["password"] == "two").await?;
    await_synced(&api, "app", "True").await?;

    let mut foreign = seal_for(cert, ns, "elsewhere", &[("k", "v")], Scope::Strict);
    foreign.metadata.name = Some("undecryptable".into());
    api.create(&pp, &foreign).await?;
    await_synced(&api, "undecryptable", "False").await?;
    secrets
        .create(
            &pp,
            &plain_secret(ns, "taken", &[("k", "mine")], Scope::Strict),
        )
        .await?;
    api.create(
        &pp,
        &seal_for(cert, ns, "taken", &[("k", "v")], Scope::Strict),
    )
    .await?;
    await_synced(&api, "taken", "False").await?;
    let events = await_condition(WAIT, "events about the SealedSecrets", || async {
        let events = events_about(admin.clone(), ns, "undecryptable").await?;
        Ok((!events.is_empty()).then_some(events))
    })
    .await?;
    assert!(events.iter().any(|e| e.type_.as_deref() == Some("Warning")));

    let body = serde_json::to_vec(&update)?;
    assert_eq!(controller.post("/v1/verify", body.clone()).await?.0, 200);
    assert_eq!(controller.post("/v1/rotate", body).await?.0, 200);

    api.delete("app", &DeleteParams::default()).await?;
    await_condition(
        Duration::from_secs(90),
        "the Secret of a deleted SealedSecret collected",
        || async { Ok(secrets.get_opt("app").await?.is_none().then_some(())) },
    )
    .await
    .context("garbage collection")?;
    Ok(())
}
