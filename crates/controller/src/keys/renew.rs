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

/// Generates a key, stores it as a key Secret in upstream's format, and adds it to the ring.
pub async fn generate_key(
    client: &Client,
    namespace: &str,
    config: &KeyConfig,
    ring: &KeyRing,
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
    let secret = key_secret::new_key_secret(
        namespace,
        &config.prefix,
        &key,
        &cert,
        &config.labels,
        &config.annotations,
    );
    let created = Api::<Secret>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &secret)
        .await?;
    let entry = entry_from_secret(&created).map_err(anyhow::Error::msg)?;
    let name = entry.secret_name.clone();
    tracing::info!(secret = %format!("{namespace}/{name}"), fingerprint = %entry.fingerprint, "generated a new sealing key");
    ring.insert(entry);
    Ok(name)
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

/// Whether the key Secrets stored right now (a fresh list, not the watch cache) hold any usable
/// key: a new leader must not generate a key its predecessor just created.
pub async fn stored_key_count(
    client: &Client,
    namespace: &str,
    prefix: &str,
) -> anyhow::Result<usize> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let labelled = api
        .list(&ListParams::default().labels(SEALING_KEY_LABEL))
        .await?;
    let legacy = api
        .list(&ListParams::default().fields(&format!("metadata.name={prefix}")))
        .await?;
    Ok(labelled
        .items
        .iter()
        .chain(legacy.items.iter())
        .filter(|s| is_sealing_key_secret(s, prefix) && entry_from_secret(s).is_ok())
        .count())
}

/// The leader's key duty: make sure a key exists, honour --key-cutoff-time, renew every
/// --key-renew-period, and on SIGUSR1. Returns when `stop` fires.
pub async fn manage_keys(
    client: Client,
    namespace: String,
    config: KeyConfig,
    ring: Arc<KeyRing>,
    mut force: tokio::sync::mpsc::Receiver<()>,
    stop: CancellationToken,
) {
    let generate = || async {
        if let Err(e) = generate_key(&client, &namespace, &config, &ring).await {
            tracing::error!(error = %e, "could not generate a sealing key; retrying in 10s");
            false
        } else {
            true
        }
    };
    // A new leader first trusts only what is stored.
    loop {
        match stored_key_count(&client, &namespace, &config.prefix).await {
            Ok(0) => {
                if generate().await {
                    break;
                }
            }
            Ok(_) => break,
            Err(e) => tracing::warn!(error = %e, "cannot list key Secrets; retrying"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
    }
    // Wait for the watch to show the stored keys before deciding about age.
    let mut changes = ring.subscribe();
    while ring.newest().is_none() {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = changes.changed() => {}
        }
    }
    if let Some(cutoff) = config.cutoff
        && ring.newest_time().is_some_and(|t| t < cutoff)
    {
        tracing::info!("newest key is older than --key-cutoff-time; generating a new one");
        generate().await;
    }
    let renew = !config.renew_period.is_zero();
    loop {
        let wait = if renew {
            config.renew_period.saturating_sub(ring.newest_age())
        } else {
            Duration::from_secs(u64::from(u32::MAX))
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {
                if renew && !generate().await {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                }
            }
            Some(()) = force.recv() => {
                tracing::info!("SIGUSR1: generating a new sealing key");
                generate().await;
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
