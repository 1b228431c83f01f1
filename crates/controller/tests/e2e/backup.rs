//! Sealing-key backups to Azure Key Vault, end to end: keyseal-controller under the manifests'
//! RBAC, the Key Vault test server over HTTPS with real token checks, the client-secret
//! credential from the `AZURE_*` variables as a user would set them.

use std::time::{Duration, Instant};

use keyseal_api::Scope;
use keyseal_crypto::Certificate;
use keyseal_keyvault::{
    AzureKeyVault, BackupConfig, BackupRecord, CredentialConfig, KeyBackups, VaultOptions,
};
use keyseal_testenv::keyvault::{Fault, FaultMode, KvEmulator, KvSetup};

use crate::common::*;

const PREFIX: &str = "test-cluster";

/// Starts keyseal-controller for `env` backing its keys up to `kv` as the writer identity.
async fn start_with_vault(env: &Env, kv: &KvEmulator) -> anyhow::Result<ControllerProcess> {
    start_with_vault_and(env, kv, &[]).await
}

/// [`start_with_vault`] with more flags.
async fn start_with_vault_and(
    env: &Env,
    kv: &KvEmulator,
    extra: &[&str],
) -> anyhow::Result<ControllerProcess> {
    let writer = kv.identity("writer");
    let secret = writer.client_secret.unwrap_or_default();
    let credential = [
        ("AZURE_CLIENT_ID", writer.client_id.as_str()),
        ("AZURE_CLIENT_SECRET", secret.as_str()),
    ];
    start_as(env, kv, &credential, extra).await
}

/// Starts keyseal-controller with `credential` (AZURE_* variables besides the tenant and the
/// authority host) and `extra` flags.
async fn start_as(
    env: &Env,
    kv: &KvEmulator,
    credential: &[(&str, &str)],
    extra: &[&str],
) -> anyhow::Result<ControllerProcess> {
    let mut launch = Launch::new(controller_binary(), env.name())
        .args(["--log-format", "json", "--log-level", "debug"])
        .keyvault(kv, PREFIX)
        .args(extra);
    for (k, v) in credential {
        launch = launch.env(k, v);
    }
    let mut c = launch.spawn_keyseal(&env.sa)?;
    c.wait_healthy(WAIT).await?;
    Ok(c)
}

/// The backups under [`PREFIX`], read as the writer.
async fn backups(kv: &KvEmulator) -> anyhow::Result<Vec<BackupRecord>> {
    Ok(vault(kv).await?.list_backups().await?)
}

/// [`PREFIX`]'s backups in `kv`, as the writer sees them.
async fn vault(kv: &KvEmulator) -> anyhow::Result<KeyBackups<AzureKeyVault>> {
    let options = VaultOptions {
        verify_challenge_resource: false,
        ..VaultOptions::default()
    }
    .with_ca_file(&kv.ca_file())?;
    let writer = kv.identity("writer");
    let vars = [
        ("AZURE_TENANT_ID", kv.tenant().to_owned()),
        ("AZURE_CLIENT_ID", writer.client_id),
        (
            "AZURE_CLIENT_SECRET",
            writer.client_secret.unwrap_or_default(),
        ),
        ("AZURE_AUTHORITY_HOST", kv.authority().to_owned()),
    ];
    let credential = CredentialConfig::from_lookup(None, |k| {
        vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())
    })?
    .credential(&options)?;
    let store = AzureKeyVault::new(&kv.url, credential, &options)?;
    let config = BackupConfig {
        prefix: PREFIX.into(),
        cluster: "unused".into(),
    };
    Ok(KeyBackups::new(store, config)?)
}

/// Polls `check` every 200 ms for up to `limit`.
async fn eventually<T>(
    limit: Duration,
    what: &str,
    mut check: impl AsyncFnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        anyhow::ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The certificate `controller` serves, once it serves one (its log on failure).
async fn served(controller: &ControllerProcess) -> anyhow::Result<Certificate> {
    eventually(WAIT, "the certificate", async || {
        Ok(controller.cert().await.ok())
    })
    .await
    .map_err(|e| e.context(controller.logs()))
}

/// The certificate `controller` serves once it is no longer `old`, within `limit`.
async fn renewed(
    controller: &ControllerProcess,
    old: &Certificate,
    limit: Duration,
) -> anyhow::Result<Certificate> {
    eventually(limit, "the new key sealing", async || {
        let cert = controller.cert().await?;
        Ok((cert != *old).then_some(cert))
    })
    .await
    .map_err(|e| e.context(controller.logs()))
}

fn label(secret: &k8s_openapi::api::core::v1::Secret) -> &str {
    secret
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(keyseal_api::annotations::SEALING_KEY_LABEL))
        .map_or("", String::as_str)
}

#[tokio::test]
async fn the_first_key_seals_only_once_its_backup_is_verified() -> anyhow::Result<()> {
    let env = Env::new("backup-first").await?;
    let kv = KvEmulator::start(KvSetup::default()).await?;
    let controller = start_with_vault(&env, &kv).await?;
    let cert = served(&controller).await?;
    let fingerprint = cert.public_key().fingerprint();
    // Served only after the vault had it, verified: the backup is there now.
    let records = backups(&kv).await?;
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].fingerprint, fingerprint);
    let keys = env.key_secrets().await?;
    assert_eq!(keys.len(), 1);
    assert_eq!(label(&keys[0]), "active");
    assert_eq!(
        records[0].secret_name,
        keys[0].metadata.name.clone().unwrap()
    );
    let m = controller.metrics().await?;
    assert_eq!(
        m.get("sealed_secrets_controller_keys_not_backed_up", &[]),
        Some(0.0)
    );
    assert!(
        m.get(
            "sealed_secrets_controller_key_backup_attempts_total",
            &[("result", "success")]
        ) >= Some(1.0)
    );
    assert!(
        m.get(
            "sealed_secrets_controller_last_key_backup_timestamp_seconds",
            &[]
        ) > Some(0.0)
    );
    // The certificate is published beside the backups, for CI jobs.
    let published = eventually(WAIT, "the published certificate", async || {
        Ok(vault(&kv).await?.fetch_certificate().await.ok())
    })
    .await?;
    assert_eq!(published, cert.to_pem());
    // It unseals as ever.
    env.create(&env.seal(&cert, "app", &[("k", "v")], Scope::Strict))
        .await?;
    assert_eq!(data(&env.await_secret("app", |_| true).await?)["k"], "v");
    // No private key material in what it logged at debug level, the Azure SDK's requests
    // included (key Secret data is base64 of "-----BEGIN …").
    let logs = controller.logs();
    assert!(
        logs.contains("key backed up and verified"),
        "debug logs captured"
    );
    assert!(
        !logs.contains("PRIVATE KEY") && !logs.contains("LS0tLS1CRUdJTi"),
        "key material in logs"
    );
    Ok(())
}

#[tokio::test]
async fn a_vault_outage_during_renewal_keeps_the_old_key_sealing() -> anyhow::Result<()> {
    fault_during_renewal(FaultMode::Unavailable, "backup-503").await
}

#[tokio::test]
async fn vault_throttling_during_renewal_keeps_the_old_key_sealing() -> anyhow::Result<()> {
    fault_during_renewal(FaultMode::Throttle, "backup-429").await
}

/// The vault answers `mode` (503, or 429 with `Retry-After`) while a new key is generated.
async fn fault_during_renewal(mode: FaultMode, prefix: &str) -> anyhow::Result<()> {
    let env = Env::new(prefix).await?;
    let kv = KvEmulator::start(KvSetup::default()).await?;
    let controller = start_with_vault(&env, &kv).await?;
    let old = served(&controller).await?;

    kv.set_fault(&Fault {
        mode,
        retry_after_secs: Some(1),
        token_endpoint: false,
    })
    .await?;
    controller.signal("USR1"); // a renewal, now
    let pending = eventually(WAIT, "a key waiting for its backup", async || {
        let keys = env.key_secrets().await?;
        Ok(keys.into_iter().find(|k| label(k) == "pending-backup"))
    })
    .await?;
    let pending_name = pending.metadata.name.clone().unwrap();
    // Reported: the metric and a Warning on the key Secret; the old key keeps sealing and
    // unsealing meanwhile, and another renewal makes no second key.
    eventually(
        Duration::from_secs(90),
        "the pending backup reported",
        async || {
            let m = controller.metrics().await?;
            let events = env.events_about(&pending_name).await?;
            let warned = events
                .iter()
                .any(|e| e.reason.as_deref() == Some("ErrKeyBackupFailed"));
            let counted = m.get("sealed_secrets_controller_keys_not_backed_up", &[]) == Some(1.0);
            Ok((warned && counted).then_some(()))
        },
    )
    .await
    .map_err(|e| e.context(controller.logs()))?;
    assert_eq!(controller.cert().await?, old, "the old key still seals");
    let (ready, _) = controller.get("/readyz").await?;
    assert_eq!(ready, 200, "readiness does not depend on the vault");
    controller.signal("USR1");
    env.create(&env.seal(&old, "during", &[("k", "outage")], Scope::Strict))
        .await?;
    assert_eq!(
        data(&env.await_secret("during", |_| true).await?)["k"],
        "outage"
    );
    assert_eq!(env.key_secrets().await?.len(), 2, "one new key, waiting");

    // The vault is back: the backup completes and the new key becomes the sealing key.
    kv.set_fault(&Fault {
        mode: FaultMode::None,
        retry_after_secs: None,
        token_endpoint: false,
    })
    .await?;
    let new = renewed(&controller, &old, Duration::from_secs(120)).await?;
    let records = backups(&kv).await?;
    assert!(
        records
            .iter()
            .any(|r| r.fingerprint == new.public_key().fingerprint()),
        "{records:?}"
    );
    assert_eq!(records.len(), 2);
    let keys = env.key_secrets().await?;
    assert_eq!(keys.len(), 2, "no duplicate key");
    assert!(keys.iter().all(|k| label(k) == "active"));
    let m = controller.metrics().await?;
    assert_eq!(
        m.get("sealed_secrets_controller_keys_not_backed_up", &[]),
        Some(0.0)
    );
    Ok(())
}

/// The order of writes holds under SIGKILL: the controller is killed at a different moment of a
/// renewal with backup, ten times. After each kill no active key lacks a verified backup and at
/// most one key waits; after a restart every key is active and backed up, one per renewal that
/// got as far as creating its key, and none twice.
#[tokio::test]
async fn sigkill_during_renewal_never_leaves_an_active_key_without_backup() -> anyhow::Result<()> {
    let env = Env::new("backup-kill").await?;
    let kv = KvEmulator::start(KvSetup::default()).await?;
    let fingerprint = |s: &k8s_openapi::api::core::v1::Secret| -> anyhow::Result<String> {
        Ok(keyseal_api::key_secret::parse_key_secret(s)?
            .key
            .public_key()
            .fingerprint())
    };
    let check = |keys: &[k8s_openapi::api::core::v1::Secret],
                 backed_up: &[BackupRecord],
                 when: &str|
     -> anyhow::Result<()> {
        let pending = keys.iter().filter(|k| label(k) == "pending-backup").count();
        anyhow::ensure!(pending <= 1, "{when}: {pending} keys wait for a backup");
        for key in keys.iter().filter(|k| label(k) == "active") {
            let fp = fingerprint(key)?;
            anyhow::ensure!(
                backed_up.iter().any(|r| r.fingerprint == fp),
                "{when}: active key {fp} has no backup"
            );
        }
        Ok(())
    };
    let settled = async |controller: &ControllerProcess| -> anyhow::Result<()> {
        eventually(Duration::from_secs(60), "every key active", async || {
            let keys = env.key_secrets().await?;
            let served = controller.cert().await.is_ok();
            Ok(
                (served && !keys.is_empty() && keys.iter().all(|k| label(k) == "active"))
                    .then_some(()),
            )
        })
        .await
    };
    let nanos = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
    };
    let mut delays = Vec::new();
    // The leader at once (no Lease left by the killed process to wait out); 2048-bit keys are
    // generated sooner.
    let leader = ["--leader-elect=false", "--key-size", "2048"];
    for run in 0..10 {
        let controller = start_with_vault_and(&env, &kv, &leader).await?;
        settled(&controller)
            .await
            .map_err(|e| e.context(controller.logs()))?;
        let before = env.key_secrets().await?.len();
        controller.signal("USR1");
        // Kill while the key is generated (every third run), or 0–150 ms after its pending
        // Secret appears: before, during or after the backup, its verification, the relabel.
        let delay = Duration::from_millis(u64::from(nanos() % 150));
        if run % 3 == 0 {
            tokio::time::sleep(delay * 4).await;
        } else {
            eventually(WAIT, "the new key's Secret", async || {
                let keys = env.key_secrets().await?;
                Ok((keys.len() > before).then_some(()))
            })
            .await?;
            tokio::time::sleep(delay).await;
        }
        delays.push(delay);
        controller.kill().await?;
        let when = format!("run {run}, killed after {delay:?}");
        check(&env.key_secrets().await?, &backups(&kv).await?, &when)?;
    }
    let controller = start_with_vault_and(&env, &kv, &leader).await?;
    settled(&controller).await?;
    let keys = env.key_secrets().await?;
    let backed_up = backups(&kv).await?;
    check(&keys, &backed_up, "after the last restart")?;
    assert_eq!(backed_up.len(), keys.len(), "every key backed up once");
    let mut prints: Vec<String> = keys
        .iter()
        .map(fingerprint)
        .collect::<anyhow::Result<_>>()?;
    prints.sort();
    prints.dedup();
    assert_eq!(prints.len(), keys.len(), "no key twice");
    eprintln!("{} keys after 10 kills at {delays:?}", keys.len());
    // The first key, and one per run killed after its key's Secret was created (6 or 7 runs).
    assert!(
        (7..=11).contains(&keys.len()),
        "{} keys after 10 renewals (delays {delays:?})",
        keys.len()
    );
    Ok(())
}

/// `--bootstrap-from-keyvault`: a new cluster (namespace) gets the lost one's keys from the vault
/// before it would generate any — and waits, generating none, while the vault cannot be read.
#[tokio::test]
async fn a_new_cluster_bootstraps_its_keys_from_the_vault() -> anyhow::Result<()> {
    let kv = KvEmulator::start(KvSetup::default()).await?;
    let lost = Env::new("bootstrap-lost").await?;
    let first = start_with_vault(&lost, &kv).await?;
    let cert = served(&first).await?;
    first.stop().await?;
    let sealed = lost.seal(&cert, "kept", &[("k", "sealed before")], Scope::ClusterWide);

    // The vault is down when the new cluster starts: no key is generated meanwhile.
    kv.set_fault(&Fault {
        mode: FaultMode::Unavailable,
        retry_after_secs: Some(1),
        token_endpoint: false,
    })
    .await?;
    let rebuilt = Env::new("bootstrap-new").await?;
    let bootstrap = ["--bootstrap-from-keyvault"];
    let controller = start_with_vault_and(&rebuilt, &kv, &bootstrap).await?;
    eventually(Duration::from_secs(60), "the wait reported", async || {
        Ok(controller
            .logs()
            .contains("the vault cannot be read; waiting for it")
            .then_some(()))
    })
    .await?;
    assert!(rebuilt.key_secrets().await?.is_empty(), "no fresh key");
    kv.set_fault(&Fault {
        mode: FaultMode::None,
        retry_after_secs: None,
        token_endpoint: false,
    })
    .await?;
    let served = eventually(Duration::from_secs(60), "the restored key", async || {
        Ok(controller.cert().await.ok())
    })
    .await
    .map_err(|e| e.context(controller.logs()))?;
    assert_eq!(served, cert, "the lost cluster's key seals again");
    assert_eq!(
        rebuilt.key_secrets().await?.len(),
        1,
        "restored, none generated"
    );
    let mut ss = sealed;
    ss.metadata.namespace = Some(rebuilt.name().to_owned());
    rebuilt.create(&ss).await?;
    let s = rebuilt.await_secret("kept", |_| true).await?;
    assert_eq!(data(&s)["k"], "sealed before");
    Ok(())
}

/// The production credential path on AKS: workload identity. The controller's ServiceAccount
/// token (audience `api://AzureADTokenExchange`, from the real API server) is exchanged at the
/// token endpoint, which trusts the cluster's issuer for that ServiceAccount only.
#[tokio::test]
async fn workload_identity_backs_the_keys_up() -> anyhow::Result<()> {
    use keyseal_testenv::CONTROLLER_SA;
    use keyseal_testenv::keyvault::TOKEN_EXCHANGE_AUDIENCE;
    let env = Env::new("backup-wi").await?;
    let dir = tempfile::tempdir()?;
    let setup = KvSetup::default()
        .federate(
            &env.cluster,
            "writer",
            env.name(),
            CONTROLLER_SA,
            dir.path(),
        )
        .await?;
    let kv = KvEmulator::start(setup).await?;
    let token = env
        .cluster
        .token(env.name(), CONTROLLER_SA, &[TOKEN_EXCHANGE_AUDIENCE])
        .await?;
    let token_file = dir.path().join("azure-identity-token");
    std::fs::write(&token_file, token)?;
    let client_id = kv.identity("writer").client_id;
    let token_path = token_file.display().to_string();
    let credential = [
        ("AZURE_CLIENT_ID", client_id.as_str()),
        ("AZURE_FEDERATED_TOKEN_FILE", token_path.as_str()),
    ];
    let controller = start_as(&env, &kv, &credential, &[]).await?;
    let cert = served(&controller).await?;
    let records = backups(&kv).await?;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].fingerprint, cert.public_key().fingerprint());
    assert!(
        kv.requests().await?.get("token").copied().unwrap_or(0) > 0,
        "a token was issued"
    );
    Ok(())
}

/// Disaster recovery with a whole control plane lost: SealedSecrets sealed under the keys of two
/// renewals, the plane destroyed (etcd data and all); on a fresh plane the controller starts with
/// `--bootstrap-from-keyvault` and restores the three keys before generating any; on another,
/// `keyseal keys restore` writes them before the controller starts. Every SealedSecret unseals.
#[tokio::test]
async fn a_lost_control_plane_is_rebuilt_from_the_vault() -> anyhow::Result<()> {
    use keyseal_testenv::PrivatePlane;
    let kv = KvEmulator::start(KvSetup::default()).await?;
    let on = async |plane: &PrivatePlane, prefix: &str| -> anyhow::Result<Env> {
        let cluster = plane.cluster().await?;
        let ns = cluster.namespace(prefix).await?;
        let sa = cluster.controller_identity(ns.name()).await?;
        Ok(Env { cluster, ns, sa })
    };
    let mut sealed = Vec::new();
    {
        let plane = PrivatePlane::start().await?;
        let env = on(&plane, "dr-before").await?;
        let controller = start_with_vault(&env, &kv).await?;
        let mut cert = served(&controller).await?;
        for renewal in 0..3 {
            let name = format!("sealed-{renewal}");
            sealed.push(env.seal(&cert, &name, &[("n", &name)], Scope::ClusterWide));
            if renewal < 2 {
                controller.signal("USR1");
                let old = cert.clone();
                cert = renewed(&controller, &old, Duration::from_secs(60)).await?;
            }
        }
        assert_eq!(backups(&kv).await?.len(), 3);
        controller.stop().await?;
        drop(env);
    } // the plane is stopped and its state directory, etcd's data with it, removed

    let plane = PrivatePlane::start().await?;
    let env = on(&plane, "dr-after").await?;
    let controller = start_with_vault_and(&env, &kv, &["--bootstrap-from-keyvault"]).await?;
    eventually(WAIT, "the restored keys", async || {
        Ok(controller.cert().await.ok())
    })
    .await
    .map_err(|e| e.context(controller.logs()))?;
    let sealed_again = sealed.clone();
    for mut ss in sealed {
        ss.metadata.namespace = Some(env.name().to_owned());
        let name = ss.metadata.name.clone().unwrap();
        env.create(&ss).await?;
        let s = env.await_secret(&name, |_| true).await?;
        assert_eq!(data(&s)["n"], name);
    }
    let keys = env.key_secrets().await?;
    assert_eq!(keys.len(), 3, "the three restored keys, none generated");
    let backed_up: Vec<String> = backups(&kv)
        .await?
        .into_iter()
        .map(|r| r.fingerprint)
        .collect();
    for key in &keys {
        let fp = keyseal_api::key_secret::parse_key_secret(key)?
            .key
            .public_key()
            .fingerprint();
        assert!(backed_up.contains(&fp), "{fp} was not in the vault");
    }
    controller.stop().await?;
    drop(env);
    drop(plane);

    // Again on another fresh plane, restored by `keyseal keys restore` before any controller
    // runs; then a controller without --bootstrap-from-keyvault finds the keys and makes none.
    let plane = PrivatePlane::start().await?;
    let env = on(&plane, "dr-restored").await?;
    let writer = kv.identity("writer");
    let out = std::process::Command::new(Env::keyseal_cli()?)
        .args(["keys", "restore", "--controller-namespace", env.name()])
        .args(["--keyvault-url", &kv.url, "--keyvault-prefix", PREFIX])
        .args(["--keyvault-ca-file".as_ref(), kv.ca_file().as_os_str()])
        .arg("--keyvault-disable-challenge-resource-verification")
        .env("KUBECONFIG", plane.kubeconfig())
        .env("AZURE_TENANT_ID", kv.tenant())
        .env("AZURE_AUTHORITY_HOST", kv.authority())
        .env("AZURE_CLIENT_ID", &writer.client_id)
        .env(
            "AZURE_CLIENT_SECRET",
            writer.client_secret.unwrap_or_default(),
        )
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "keys restore: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.matches(" created").count(), 3, "{stdout}");
    let controller = start_with_vault(&env, &kv).await?;
    for mut ss in sealed_again {
        ss.metadata.namespace = Some(env.name().to_owned());
        let name = ss.metadata.name.clone().unwrap();
        env.create(&ss).await?;
        let s = env
            .await_secret(&name, |_| true)
            .await
            .map_err(|e| e.context(controller.logs()))?;
        assert_eq!(data(&s)["n"], name);
    }
    assert_eq!(env.key_secrets().await?.len(), 3, "none generated");
    Ok(())
}

/// Two replicas: only the leader talks to the vault; the standby does once it leads.
#[tokio::test]
async fn only_the_leader_writes_backups() -> anyhow::Result<()> {
    let env = Env::new("backup-ha").await?;
    let kv = KvEmulator::start(KvSetup::default()).await?;
    let lease = ["--leader-election-lease-duration", "6s"];
    let first = start_with_vault_and(&env, &kv, &lease).await?;
    let cert = served(&first).await?;
    let standby = start_with_vault_and(&env, &kv, &lease).await?;
    assert_eq!(
        eventually(WAIT, "the standby serving", async || Ok(standby
            .cert()
            .await
            .ok()))
        .await?,
        cert
    );
    // The Azure SDK logs every request it sends at debug level.
    let vault_traffic = |c: &ControllerProcess| c.logs().contains("typespec_client_core");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(vault_traffic(&first), "the leader backs up");
    assert!(
        !vault_traffic(&standby),
        "the standby leaves the vault alone"
    );
    first.kill().await?;
    eventually(
        Duration::from_secs(60),
        "the new leader's backup pass",
        async || {
            Ok(standby
                .logs()
                .contains("key already backed up")
                .then_some(()))
        },
    )
    .await
    .map_err(|e| e.context(standby.logs()))?;
    assert_eq!(backups(&kv).await?.len(), 1, "one key, one backup");
    Ok(())
}

/// Renewal on its schedule: each certificate the controller serves is, the moment it is first
/// seen, already backed up in the vault (polling both).
#[tokio::test]
async fn every_renewed_certificate_is_backed_up_before_it_is_served() -> anyhow::Result<()> {
    let env = Env::new("backup-renew").await?;
    let kv = KvEmulator::start(KvSetup::default()).await?;
    let flags = ["--key-renew-period", "3s", "--key-size", "2048"];
    let controller = start_with_vault_and(&env, &kv, &flags).await?;
    let mut seen: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.len() < 3 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "{} certificates in 60 s:\n{}",
            seen.len(),
            controller.logs()
        );
        if let Ok(cert) = controller.cert().await {
            let fingerprint = cert.public_key().fingerprint();
            if !seen.contains(&fingerprint) {
                let backed_up = backups(&kv).await?;
                assert!(
                    backed_up.iter().any(|r| r.fingerprint == fingerprint),
                    "{fingerprint} served before its backup"
                );
                seen.push(fingerprint);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Nothing of a key in what the controller published: events and metrics.
    let api: kube::Api<k8s_openapi::api::events::v1::Event> =
        kube::Api::namespaced(env.admin(), env.name());
    let all = api.list(&Default::default()).await?.items;
    assert!(
        all.iter()
            .any(|e| e.reason.as_deref() == Some("KeyBackedUp")),
        "the activations were reported"
    );
    let events = serde_json::to_string(&all)?;
    let metrics = controller.scrape().await?;
    for text in [&events, &metrics] {
        assert!(!text.contains("PRIVATE KEY") && !text.contains("LS0tLS1CRUdJTi"));
    }
    Ok(())
}

/// The vault process stopped (not a fault answer: connections refused) during a renewal, then
/// started again with its data: the backup completes and the new key seals.
#[tokio::test]
async fn a_stopped_vault_delays_the_new_key_until_it_is_back() -> anyhow::Result<()> {
    let env = Env::new("backup-stopped").await?;
    let mut kv = KvEmulator::start(KvSetup::default()).await?;
    let flags = ["--key-size", "2048"];
    let controller = start_with_vault_and(&env, &kv, &flags).await?;
    let old = served(&controller).await?;
    kv.stop().await?;
    controller.signal("USR1");
    eventually(
        Duration::from_secs(90),
        "the pending backup reported",
        async || {
            let m = controller.metrics().await?;
            Ok(
                (m.get("sealed_secrets_controller_keys_not_backed_up", &[]) == Some(1.0))
                    .then_some(()),
            )
        },
    )
    .await
    .map_err(|e| e.context(controller.logs()))?;
    assert_eq!(controller.cert().await?, old);
    kv.restart().await?;
    let new = renewed(&controller, &old, Duration::from_secs(120)).await?;
    let fingerprint = new.public_key().fingerprint();
    assert!(
        backups(&kv)
            .await?
            .iter()
            .any(|r| r.fingerprint == fingerprint)
    );
    Ok(())
}
