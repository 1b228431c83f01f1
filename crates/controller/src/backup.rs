//! Sealing-key backups to Azure Key Vault (the leader's duty when `--keyvault-url` is set).
//!
//! Every key Secret the controller uses is written to the vault as a secret, read back and
//! verified by fingerprint (`keyseal_keyvault::KeyBackups`). With `--backup-required` (the
//! default) a new key is created labelled `sealedsecrets.bitnami.com/sealed-secrets-key:
//! pending-backup`, which neither this controller nor upstream's loads; only once its backup is
//! verified is it relabelled `active` and becomes the sealing key. The order of writes —
//! create pending, back up and verify, relabel — leaves no active key without a verified
//! backup and loses no key whatever step a crash interrupts: a restarted leader finds the
//! pending Secret, backs it up (again: the write is idempotent) and activates it.
//!
//! The sealing certificate is published beside the backups as `<prefix>-sealing-cert`, so CI jobs
//! can seal with `keyseal --cert azurekeyvault://<vault>/<prefix>-sealing-cert` and a role on
//! that secret alone.
//!
//! The vault never stops unsealing: failures are retried with capped exponential backoff,
//! reported once per key and reason as a Warning event on the key Secret, and counted in the
//! metrics; the keys already active keep serving.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use k8s_openapi::api::core::v1::Secret;
use keyseal_api::annotations::{SEALING_KEY_ACTIVE, SEALING_KEY_LABEL};
use keyseal_api::key_secret::parse_key_secret;
use keyseal_keyvault::{
    AzureKeyVault, BackupConfig, BackupError, CredentialConfig, CredentialKind, KeyBackups,
    VaultOptions,
};
use kube::Api;
use kube::api::PostParams;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::events::Events;
use crate::keys::{KeyRing, stored_key_secrets};
use crate::metrics::Metrics;

/// The label value of a key waiting for its backup.
pub const PENDING_BACKUP: &str = "pending-backup";

/// Where and how keys are backed up (from the flags).
#[derive(Clone, Debug)]
pub struct BackupSettings {
    /// `--keyvault-url`.
    pub url: String,
    /// `--keyvault-prefix`: this cluster's names in a shared vault.
    pub prefix: String,
    /// `--keyvault-credential` (default: inferred from the `AZURE_*` variables).
    pub credential: Option<CredentialKind>,
    /// `--keyvault-ca-file`.
    pub ca_file: Option<PathBuf>,
    /// Not `--keyvault-disable-challenge-resource-verification`.
    pub verify_challenge_resource: bool,
    /// `--backup-required`: a new key waits for its verified backup before it seals.
    pub required: bool,
    /// `--bootstrap-from-keyvault`: restore the keys of an empty cluster before generating.
    pub bootstrap: bool,
}

/// The vault client and what has been verified so far.
pub struct Backup {
    backups: KeyBackups<AzureKeyVault>,
    /// Whether new keys wait for their backup.
    pub required: bool,
    /// Whether an empty cluster's keys are restored from the vault first.
    pub bootstrap: bool,
    /// Wakes the backup loop (a key was generated).
    pub wake: Notify,
}

impl Backup {
    /// Connects (no request yet): a bad CA file or credential configuration stops the start.
    pub fn connect(settings: &BackupSettings, cluster: &str) -> anyhow::Result<Self> {
        let mut options = VaultOptions {
            verify_challenge_resource: settings.verify_challenge_resource,
            ..VaultOptions::default()
        };
        if let Some(ca) = &settings.ca_file {
            options = options.with_ca_file(ca).context("--keyvault-ca-file")?;
        }
        let credential = CredentialConfig::from_env(settings.credential)
            .and_then(|c| c.credential(&options))
            .context("the Key Vault credential (--keyvault-credential, AZURE_*)")?;
        let store =
            AzureKeyVault::new(&settings.url, credential, &options).context("--keyvault-url")?;
        let backups = KeyBackups::new(
            store,
            BackupConfig {
                prefix: settings.prefix.clone(),
                cluster: cluster.to_owned(),
            },
        )
        .context("--keyvault-prefix")?;
        Ok(Self {
            backups,
            required: settings.required,
            bootstrap: settings.bootstrap,
            wake: Notify::new(),
        })
    }
}

impl Backup {
    /// `--bootstrap-from-keyvault` on a cluster without keys: creates every key Secret backed up
    /// under the prefix in `namespace` (one already there is left alone) and returns how many
    /// there were; 0 means the vault holds none and the first key may be generated.
    pub async fn bootstrap(&self, client: &kube::Client, namespace: &str) -> anyhow::Result<usize> {
        let restored = self
            .backups
            .restore_all()
            .await
            .context("reading the key backups")?;
        let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
        for key in &restored {
            let mut secret = key.as_secret().clone();
            secret.metadata.namespace = Some(namespace.to_owned());
            let name = secret.metadata.name.clone().unwrap_or_default();
            match api.create(&PostParams::default(), &secret).await {
                Ok(_) => {
                    tracing::info!(secret = %format!("{namespace}/{name}"), "restored a sealing key from the vault")
                }
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => return Err(e).context(format!("creating {namespace}/{name}")),
            }
        }
        Ok(restored.len())
    }
}

/// What the loop needs from the rest of the controller.
pub struct BackupDuty {
    /// API client.
    pub client: kube::Client,
    /// The controller's namespace.
    pub namespace: String,
    /// `--key-prefix` (the legacy key Secret's name).
    pub key_prefix: String,
    /// The vault.
    pub backup: Arc<Backup>,
    /// Key changes wake the loop.
    pub ring: Arc<KeyRing>,
    /// Warnings on key Secrets.
    pub events: Events,
    /// Backup metrics.
    pub metrics: Arc<Metrics>,
}

/// Backs up every key until `stop` fires: at once, on every key change, when woken, and after a
/// failure with backoff (1 s doubling to 5 min).
pub async fn run(duty: BackupDuty, stop: CancellationToken) {
    let mut verified = HashSet::new();
    let mut warned = HashSet::new();
    let mut changes = duty.ring.subscribe();
    let mut delay = Duration::from_secs(1);
    loop {
        let wait = match pass(&duty, &mut verified, &mut warned).await {
            Ok(()) => {
                delay = Duration::from_secs(1);
                Duration::from_secs(600)
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), retry_in = ?delay, "key backup incomplete; the active keys keep serving");
                let wait = delay;
                delay = (delay * 2).min(Duration::from_secs(300));
                wait
            }
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
            () = duty.backup.wake.notified() => {}
            _ = changes.changed() => {}
        }
    }
}

/// One round: every key Secret not verified yet is backed up; pending ones are activated.
async fn pass(
    duty: &BackupDuty,
    verified: &mut HashSet<String>,
    warned: &mut HashSet<(String, &'static str)>,
) -> anyhow::Result<()> {
    let api: Api<Secret> = Api::namespaced(duty.client.clone(), &duty.namespace);
    let keys = stored_key_secrets(&duty.client, &duty.namespace, &duty.key_prefix)
        .await
        .context("listing key Secrets")?;
    let mut not_backed_up = 0usize;
    for secret in &keys {
        let Ok(loaded) = parse_key_secret(secret) else {
            continue; // reported by the key watch; nothing to back up
        };
        let fingerprint = loaded.key.public_key().fingerprint();
        drop(loaded);
        if verified.contains(&fingerprint) && !is_pending(secret) {
            continue;
        }
        match back_up(duty, &api, secret).await {
            Ok(()) => {
                verified.insert(fingerprint);
            }
            Err(e) => {
                not_backed_up += 1;
                report(duty, secret, &e, warned).await;
            }
        }
    }
    let gauge = i64::try_from(not_backed_up).unwrap_or(i64::MAX);
    duty.metrics.keys_not_backed_up.set(gauge);
    anyhow::ensure!(not_backed_up == 0, "{not_backed_up} key(s) not backed up");
    publish_certificate(duty).await
}

/// Publishes the sealing certificate as `<prefix>-sealing-cert` (nothing is written when the
/// vault serves it already), for `keyseal --cert azurekeyvault://…` in CI jobs.
async fn publish_certificate(duty: &BackupDuty) -> anyhow::Result<()> {
    let Some(newest) = duty.ring.newest() else {
        return Ok(());
    };
    duty.backup
        .backups
        .publish_certificate(&newest.certificate.to_pem())
        .await
        .context("publishing the sealing certificate")?;
    Ok(())
}

/// Backs up `secret` in its active form, verifies it, and activates it if it was pending.
async fn back_up(duty: &BackupDuty, api: &Api<Secret>, secret: &Secret) -> Result<(), Failure> {
    let name = secret.metadata.name.clone().unwrap_or_default();
    let mut active = secret.clone();
    active
        .metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert(SEALING_KEY_LABEL.to_owned(), SEALING_KEY_ACTIVE.to_owned());
    let outcome = duty.backup.backups.backup_key(&active).await;
    duty.metrics.backup_attempt(outcome.is_ok());
    let record = outcome.map_err(Failure::Vault)?;
    duty.metrics.last_backup.set(unix_now());
    if is_pending(secret) {
        api.replace(&name, &PostParams::default(), &active)
            .await
            .map_err(Failure::Activate)?;
        tracing::info!(secret = %format!("{}/{name}", duty.namespace), fingerprint = %record.fingerprint, backup = %record.name, "key backed up and verified; now active");
        duty.events
            .key_backed_up(
                secret,
                &format!(
                    "backed up to {} and verified; the key is active",
                    record.name
                ),
            )
            .await;
    }
    Ok(())
}

/// Why one key is not backed up.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("{0}")]
    Vault(BackupError),
    #[error("backed up, but activating it failed: {0}")]
    Activate(kube::Error),
}

impl Failure {
    fn reason(&self) -> &'static str {
        match self {
            Failure::Vault(e) => e.reason(),
            Failure::Activate(_) => "ActivationFailed",
        }
    }
}

/// A Warning on the key Secret, once per key and reason (a retry loop must not flood events).
async fn report(
    duty: &BackupDuty,
    secret: &Secret,
    e: &Failure,
    warned: &mut HashSet<(String, &'static str)>,
) {
    let name = secret.metadata.name.clone().unwrap_or_default();
    tracing::warn!(secret = %format!("{}/{name}", duty.namespace), reason = e.reason(), error = %e, "key backup failed; retrying");
    if warned.insert((name, e.reason())) {
        duty.events.key_backup_failed(secret, &e.to_string()).await;
    }
}

/// Whether `secret` is a key waiting for its backup.
pub fn is_pending(secret: &Secret) -> bool {
    secret
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SEALING_KEY_LABEL))
        .is_some_and(|v| v == PENDING_BACKUP)
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
