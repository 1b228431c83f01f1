//! The leader's key duty: a key exists, `--key-cutoff-time` is honoured, a new key every
//! `--key-renew-period` and on SIGUSR1. Old keys are never deleted.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::Secret;
use keyseal_api::annotations::SEALING_KEY_LABEL;
use keyseal_api::key_secret::{self, is_sealing_key_secret};
use keyseal_crypto::{CertificateParams, PrivateKey, SystemRng, self_signed_certificate};
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;

use super::{KeyRing, entry_from_secret};
use crate::backup::{Backup, PENDING_BACKUP, is_pending};
use crate::startup::{self, Phase};

/// How keys are made and renewed (from the flags).
#[derive(Clone, Debug)]
pub struct KeyConfig {
    /// `--key-prefix`: the key Secrets' `generateName`.
    pub prefix: String,
    /// `--key-size` in bits.
    pub size: usize,
    /// `--key-ttl`: validity of new certificates.
    pub ttl: Duration,
    /// `--key-renew-period` (zero: never).
    pub renew_period: Duration,
    /// `--key-cutoff-time`: a new key at start-up if the newest is older.
    pub cutoff: Option<SystemTime>,
    /// `--my-cn`: the certificates' common name.
    pub common_name: String,
    /// `--privatekey-labels`.
    pub labels: BTreeMap<String, String>,
    /// `--privatekey-annotations`.
    pub annotations: BTreeMap<String, String>,
}

/// Generates a key, stores it as a key Secret in upstream's format, and adds it to the ring —
/// unless `backup` requires a verified backup first: then the Secret is labelled
/// [`PENDING_BACKUP`], and the backup loop activates it (see `crate::backup`).
pub async fn generate_key(
    client: &Client,
    namespace: &str,
    config: &KeyConfig,
    ring: &KeyRing,
    backup: Option<&Backup>,
) -> anyhow::Result<String> {
    let (bits, params) = (
        config.size,
        CertificateParams {
            common_name: config.common_name.clone(),
            not_before: next_not_before(
                SystemTime::now(),
                ring.keys().iter().map(|k| k.certificate.not_before()).max(),
            ),
            validity: config.ttl,
        },
    );
    // Generating an RSA-4096 key takes up to a second or two: keep it off the async workers.
    let (key, cert) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let key = PrivateKey::generate(bits)?;
        let cert = self_signed_certificate(&key, &params, &mut SystemRng)?;
        Ok((key, cert))
    })
    .await??;
    let mut secret = key_secret::new_key_secret(
        namespace,
        &config.prefix,
        &key,
        &cert,
        &config.labels,
        &config.annotations,
    );
    let pending = backup.filter(|b| b.required);
    if pending.is_some() {
        secret
            .metadata
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(SEALING_KEY_LABEL.to_owned(), PENDING_BACKUP.to_owned());
    }
    let created = Api::<Secret>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &secret)
        .await?;
    startup::mark(Phase::KeyGenerated);
    let entry = entry_from_secret(&created).map_err(anyhow::Error::msg)?;
    let name = entry.secret_name.clone();
    if let Some(backup) = pending {
        tracing::info!(secret = %format!("{namespace}/{name}"), fingerprint = %entry.fingerprint, "generated a new sealing key; it seals once its backup is verified");
        backup.wake.notify_one();
    } else {
        tracing::info!(secret = %format!("{namespace}/{name}"), fingerprint = %entry.fingerprint, "generated a new sealing key");
        ring.insert(entry);
        if let Some(backup) = backup {
            backup.wake.notify_one();
        }
    }
    Ok(name)
}

/// Whether a key waits for its backup: then no other is generated (it would only wait too).
async fn a_key_is_pending(client: &Client, namespace: &str) -> anyhow::Result<bool> {
    let selector = format!("{SEALING_KEY_LABEL}={PENDING_BACKUP}");
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    Ok(!api
        .list(&ListParams::default().labels(&selector))
        .await?
        .items
        .is_empty())
}

/// NotBefore for a new key: now, or one second after the newest existing key's when that is not
/// earlier. X.509 times have whole seconds, so a key made in the same second as the previous one
/// (SIGUSR1 or `--key-cutoff-time` right after start, a short renewal period) would otherwise tie
/// with it and which one seals would be left to chance. Clients check only NotAfter.
fn next_not_before(now: SystemTime, newest: Option<SystemTime>) -> SystemTime {
    match newest {
        Some(latest) if latest + Duration::from_secs(1) > now => latest + Duration::from_secs(1),
        _ => now,
    }
}

/// The key Secrets stored right now (a fresh list, not the watch cache): active, waiting for
/// their backup, or the legacy Secret named `prefix`; each once.
pub async fn stored_key_secrets(
    client: &Client,
    namespace: &str,
    prefix: &str,
) -> kube::Result<Vec<Secret>> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let labelled = api
        .list(&ListParams::default().labels(SEALING_KEY_LABEL))
        .await?;
    let legacy = api.get_opt(prefix).await?;
    let mut keys: Vec<Secret> = labelled
        .items
        .into_iter()
        .filter(|s| s.metadata.name.as_deref() != Some(prefix))
        .chain(legacy)
        .filter(|s| is_sealing_key_secret(s, prefix) || is_pending(s))
        .collect();
    keys.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    Ok(keys)
}

/// Whether the key Secrets stored right now hold any usable key, active or waiting for its
/// backup: a new leader must not generate a key its predecessor just created. Stops at the
/// first key that loads: the key watch has loaded them all already, and each costs an RSA key
/// check.
pub async fn a_key_is_stored(
    client: &Client,
    namespace: &str,
    prefix: &str,
) -> anyhow::Result<bool> {
    let keys = stored_key_secrets(client, namespace, prefix).await?;
    Ok(keys.iter().any(|s| entry_from_secret(s).is_ok()))
}

/// What the leader's key duty works with.
pub struct KeyDuty {
    /// API client.
    pub client: Client,
    /// The controller's namespace.
    pub namespace: String,
    /// How keys are made.
    pub config: KeyConfig,
    /// The keys.
    pub ring: Arc<KeyRing>,
    /// The vault, when keys are backed up.
    pub backup: Option<Arc<Backup>>,
}

impl KeyDuty {
    /// Generates a key unless one waits for its backup; false when none was made.
    async fn generate(&self) -> bool {
        let backup = self.backup.as_deref();
        if backup.is_some_and(|b| b.required) {
            match a_key_is_pending(&self.client, &self.namespace).await {
                Ok(false) => {}
                Ok(true) => {
                    tracing::info!("a new key waits for its backup; generating none");
                    return false;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot list key Secrets; retrying in 10s");
                    return false;
                }
            }
        }
        let made = generate_key(
            &self.client,
            &self.namespace,
            &self.config,
            &self.ring,
            backup,
        );
        if let Err(e) = made.await {
            tracing::error!(error = %e, "could not generate a sealing key; retrying in 10s");
            return false;
        }
        true
    }

    /// A new leader first trusts only what is stored: it generates a key only if none is (and,
    /// with `--bootstrap-from-keyvault`, only if the vault holds none either).
    async fn ensure_a_key(&self, stop: &CancellationToken) -> bool {
        loop {
            match a_key_is_stored(&self.client, &self.namespace, &self.config.prefix).await {
                Ok(false) => {
                    if self.bootstrap_or_generate().await {
                        return true;
                    }
                }
                Ok(true) => return true,
                Err(e) => tracing::warn!(error = %e, "cannot list key Secrets; retrying"),
            }
            tokio::select! {
                () = stop.cancelled() => return false,
                () = tokio::time::sleep(Duration::from_secs(10)) => {}
            }
        }
    }
}

impl KeyDuty {
    /// The keys of an empty cluster: restored from the vault when asked to, else generated.
    async fn bootstrap_or_generate(&self) -> bool {
        let Some(backup) = self.backup.as_deref().filter(|b| b.bootstrap) else {
            return self.generate().await;
        };
        match backup.bootstrap(&self.client, &self.namespace).await {
            Ok(0) => {
                tracing::info!(
                    "the vault holds no key backups under this prefix; generating the first key"
                );
                self.generate().await
            }
            Ok(n) => {
                tracing::info!(keys = n, "restored the sealing keys from the vault");
                true
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "no sealing keys here and the vault cannot be read; waiting for it, generating none (--bootstrap-from-keyvault)");
                false
            }
        }
    }
}

/// The leader's key duty: make sure a key exists, honour --key-cutoff-time, renew every
/// --key-renew-period, and on SIGUSR1. Returns when `stop` fires.
pub async fn manage_keys(
    duty: KeyDuty,
    mut force: tokio::sync::mpsc::Receiver<()>,
    stop: CancellationToken,
) {
    if !duty.ensure_a_key(&stop).await {
        return;
    }
    let ring = &duty.ring;
    // Wait for the watch to show the stored keys before deciding about age.
    let mut changes = ring.subscribe();
    while ring.newest().is_none() {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = changes.changed() => {}
        }
    }
    if let Some(cutoff) = duty.config.cutoff
        && ring.newest_time().is_some_and(|t| t < cutoff)
    {
        tracing::info!("newest key is older than --key-cutoff-time; generating a new one");
        duty.generate().await;
    }
    let period = duty.config.renew_period;
    loop {
        let wait = if period.is_zero() {
            Duration::from_secs(u64::from(u32::MAX))
        } else {
            period.saturating_sub(ring.newest_age())
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {
                if !period.is_zero() && !duty.generate().await {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                }
            }
            Some(()) = force.recv() => {
                tracing::info!("SIGUSR1: generating a new sealing key");
                duty.generate().await;
            }
            _ = changes.changed() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_key_is_strictly_newer_than_the_newest() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(next_not_before(t, None), t);
        assert_eq!(next_not_before(t, Some(t - Duration::from_secs(60))), t);
        // Same second (the previous certificate's NotBefore is truncated to whole seconds).
        assert_eq!(
            next_not_before(t + Duration::from_millis(400), Some(t)),
            t + Duration::from_secs(1)
        );
        assert_eq!(
            next_not_before(t, Some(t + Duration::from_secs(1))),
            t + Duration::from_secs(2)
        );
    }
}
