//! Sealing-key backups to Azure Key Vault, end to end: keyseal-controller under the manifests'
//! RBAC, the Key Vault test server over HTTPS with real token checks, the client-secret
//! credential from the `AZURE_*` variables as a user would set them.

use std::time::{Duration, Instant};

use keyseal_api::Scope;
use keyseal_keyvault::{
    AzureKeyVault, BackupConfig, BackupRecord, CredentialConfig, KeyBackups, VaultOptions,
};
use keyseal_testenv::keyvault::{Fault, FaultMode, KvEmulator, KvSetup};

use crate::common::*;

const PREFIX: &str = "test-cluster";

/// Starts keyseal-controller for `env` backing its keys up to `kv` as the writer identity.
async fn start_with_vault(env: &Env, kv: &KvEmulator) -> anyhow::Result<ControllerProcess> {
    let writer = kv.identity("writer");
    let ca = kv.ca_file();
    let mut c = Launch::new(controller_binary(), env.name())
        .args(["--log-format", "json", "--log-level", "debug"])
        .args(["--keyvault-url", &kv.url, "--keyvault-prefix", PREFIX])
        .args(["--keyvault-ca-file".as_ref(), ca.as_os_str()])
        .args(["--keyvault-disable-challenge-resource-verification"])
        .env("AZURE_TENANT_ID", kv.tenant())
        .env("AZURE_AUTHORITY_HOST", kv.authority())
        .env("AZURE_CLIENT_ID", &writer.client_id)
        .env(
            "AZURE_CLIENT_SECRET",
            writer.client_secret.unwrap_or_default(),
        )
        .spawn_keyseal(&env.sa)?;
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
    let cert = eventually(WAIT, "the certificate", async || {
        Ok(controller.cert().await.ok())
    })
    .await
    .map_err(|e| e.context(controller.logs()))?;
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
    // No private key material in what it logged.
    let logs = controller.logs();
    assert!(
        !logs.contains("PRIVATE KEY") && !logs.contains("tls.key\":\""),
        "key material in logs"
    );
    Ok(())
}

#[tokio::test]
async fn a_vault_outage_during_renewal_keeps_the_old_key_sealing() -> anyhow::Result<()> {
    let env = Env::new("backup-outage").await?;
    let kv = KvEmulator::start(KvSetup::default()).await?;
    let controller = start_with_vault(&env, &kv).await?;
    let old = eventually(WAIT, "the certificate", async || {
        Ok(controller.cert().await.ok())
    })
    .await?;

    kv.set_fault(&Fault {
        mode: FaultMode::Unavailable,
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
    let new = eventually(
        Duration::from_secs(120),
        "the new key sealing",
        async || {
            let cert = controller.cert().await?;
            Ok((cert != old).then_some(cert))
        },
    )
    .await
    .map_err(|e| e.context(controller.logs()))?;
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
