//! The key ring: every sealing key the controller can unseal with, loaded from key Secrets in the
//! controller's namespace and kept current by watches; and the leader's duty of generating and
//! renewing keys.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Secret;
use keyseal_api::annotations::SEALING_KEY_LABEL;
use keyseal_api::key_secret::{self, is_sealing_key_secret, parse_key_secret};
use keyseal_crypto::{
    Certificate, CertificateParams, PrivateKey, SystemRng, self_signed_certificate,
};
use kube::api::{ListParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, Client};
use tokio::sync::watch;

use crate::flags::{Flags, KeyOrder};

/// One loaded sealing key.
pub struct KeyEntry {
    /// Name of the key Secret.
    pub secret_name: String,
    /// The private key (no Debug, zeroized by AWS-LC on drop).
    pub key: PrivateKey,
    /// Its certificate, served by /v1/cert.pem when this key is the newest.
    pub certificate: Certificate,
    /// OpenSSH-style fingerprint, used in metrics and logs.
    pub fingerprint: String,
    /// When the key Secret was created.
    pub created: SystemTime,
}

impl KeyEntry {
    fn ordering_time(&self, order: KeyOrder) -> SystemTime {
        match order {
            KeyOrder::CertNotBefore => self.certificate.not_before(),
            KeyOrder::SecretCreationTimestamp => self.created,
        }
    }
}

/// A consistent view of the keys, newest first.
pub type Keys = Arc<Vec<Arc<KeyEntry>>>;

/// The shared key ring. Readers take cheap snapshots; writers swap the whole list.
pub struct KeyRing {
    by_name: RwLock<BTreeMap<String, Arc<KeyEntry>>>,
    sorted: RwLock<Keys>,
    order: KeyOrder,
    version: watch::Sender<u64>,
}

impl KeyRing {
    /// An empty ring ordering keys by `order`.
    pub fn new(order: KeyOrder) -> Self {
        Self {
            by_name: RwLock::default(),
            sorted: RwLock::new(Arc::new(Vec::new())),
            order,
            version: watch::channel(0).0,
        }
    }

    /// All keys, newest first.
    pub fn keys(&self) -> Keys {
        self.sorted.read().expect("key ring lock").clone()
    }

    /// The sealing key: the newest.
    pub fn newest(&self) -> Option<Arc<KeyEntry>> {
        self.keys().first().cloned()
    }

    /// Keys in the order to try: the key that last opened this SealedSecret (`hint`), then the
    /// keys that have opened the most SealedSecrets so far (`uses`), newest first among equals.
    /// With a hint, unsealing costs one RSA operation however many keys exist; without one (a
    /// cold start) the first success makes that key the first try for the rest.
    pub fn ordered_for(
        &self,
        hint: Option<&str>,
        uses: &std::collections::HashMap<String, u64>,
    ) -> Vec<Arc<KeyEntry>> {
        let mut out: Vec<Arc<KeyEntry>> = self.keys().iter().cloned().collect();
        // Stable: keys arrive newest first, and stay so among equally used ones.
        out.sort_by_key(|k| {
            let is_hint = Some(k.fingerprint.as_str()) == hint;
            (
                !is_hint,
                std::cmp::Reverse(uses.get(&k.fingerprint).copied().unwrap_or(0)),
            )
        });
        out
    }

    /// Notified whenever the set of keys changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Adds or replaces a key.
    pub fn insert(&self, entry: KeyEntry) {
        self.by_name
            .write()
            .expect("key ring lock")
            .insert(entry.secret_name.clone(), Arc::new(entry));
        self.publish();
    }

    /// Replaces the whole set (after a watch (re)list).
    pub fn replace(&self, entries: Vec<KeyEntry>) {
        *self.by_name.write().expect("key ring lock") = entries
            .into_iter()
            .map(|e| (e.secret_name.clone(), Arc::new(e)))
            .collect();
        self.publish();
    }

    fn publish(&self) {
        let mut all: Vec<Arc<KeyEntry>> = self
            .by_name
            .read()
            .expect("key ring lock")
            .values()
            .cloned()
            .collect();
        all.sort_by(|a, b| {
            b.ordering_time(self.order)
                .cmp(&a.ordering_time(self.order))
                .then_with(|| b.certificate.not_before().cmp(&a.certificate.not_before()))
                .then_with(|| b.secret_name.cmp(&a.secret_name))
        });
        *self.sorted.write().expect("key ring lock") = Arc::new(all);
        self.version.send_modify(|v| *v += 1);
    }

    /// Time at which the newest key was made (by the configured order), if any.
    pub fn newest_time(&self) -> Option<SystemTime> {
        self.newest().map(|k| k.ordering_time(self.order))
    }
}

/// Loads a key Secret into an entry; `Err` carries a message without key bytes.
pub fn entry_from_secret(secret: &Secret) -> Result<KeyEntry, String> {
    let loaded = parse_key_secret(secret).map_err(|e| e.to_string())?;
    let created = secret
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| SystemTime::from(t.0))
        .unwrap_or_else(|| loaded.certificate.not_before());
    Ok(KeyEntry {
        secret_name: secret.metadata.name.clone().unwrap_or_default(),
        fingerprint: loaded.key.public_key().fingerprint(),
        key: loaded.key,
        certificate: loaded.certificate,
        created,
    })
}

/// Keeps `ring` equal to the active key Secrets in `namespace` until the stream ends. A key
/// Secret that does not parse is skipped with a warning (never a crash); one relabelled away
/// from `active` or deleted is dropped.
pub async fn watch_keys(
    client: Client,
    namespace: String,
    prefix: String,
    ring: Arc<KeyRing>,
    events: crate::events::Events,
) {
    let api: Api<Secret> = Api::namespaced(client, &namespace);
    let labelled = watcher(
        api.clone(),
        watcher::Config::default().labels(SEALING_KEY_LABEL),
    );
    let legacy = watcher(
        api,
        watcher::Config::default().fields(&format!("metadata.name={prefix}")),
    );
    let mut stream =
        futures::stream::select(labelled.map_ok(|e| (0u8, e)), legacy.map_ok(|e| (1u8, e))).boxed();
    // Each watch (re)lists independently; entries remember which one produced them.
    let mut seen: [BTreeMap<String, Secret>; 2] = Default::default();
    let mut pending: [Option<BTreeMap<String, Secret>>; 2] = Default::default();
    while let Some(item) = stream.next().await {
        let (source, event) = match item {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(error = %e, "watching key Secrets failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let i = usize::from(source);
        match event {
            watcher::Event::Init => pending[i] = Some(BTreeMap::new()),
            watcher::Event::InitApply(s) => {
                if let Some(p) = pending[i].as_mut() {
                    p.insert(s.metadata.name.clone().unwrap_or_default(), s);
                }
            }
            watcher::Event::InitDone => {
                if let Some(p) = pending[i].take() {
                    seen[i] = p;
                }
            }
            watcher::Event::Apply(s) => {
                seen[i].insert(s.metadata.name.clone().unwrap_or_default(), s);
            }
            watcher::Event::Delete(s) => {
                seen[i].remove(s.metadata.name.as_deref().unwrap_or_default());
            }
        }
        if pending[i].is_some() {
            continue; // wait for the relist to finish before changing the ring
        }
        let mut entries = BTreeMap::new();
        for secret in seen.iter().flat_map(|m| m.values()) {
            if !is_sealing_key_secret(secret, &prefix) {
                continue;
            }
            let name = secret.metadata.name.clone().unwrap_or_default();
            match entry_from_secret(secret) {
                Ok(entry) => {
                    entries.insert(name, entry);
                }
                Err(message) => {
                    if ring.keys().iter().all(|k| k.secret_name != name)
                        && !events.already_warned_key(&name, &message)
                    {
                        tracing::warn!(secret = %format!("{namespace}/{name}"), error = %message, "skipping malformed key Secret");
                        events.invalid_key(secret, &message).await;
                    }
                }
            }
        }
        let changed = {
            let current = ring.keys();
            current.len() != entries.len()
                || current.iter().any(|k| {
                    entries
                        .get(&k.secret_name)
                        .is_none_or(|e| e.fingerprint != k.fingerprint)
                })
        };
        if changed {
            ring.replace(entries.into_values().collect());
            let keys = ring.keys();
            tracing::info!(
                keys = keys.len(),
                newest = keys.first().map(|k| k.fingerprint.as_str()).unwrap_or(""),
                "key ring updated"
            );
        }
    }
}

/// Generates a key, stores it as a key Secret in upstream's format, and adds it to the ring.
pub async fn generate_key(
    client: &Client,
    namespace: &str,
    flags: &Flags,
    ring: &KeyRing,
) -> anyhow::Result<String> {
    let (bits, params) = (
        flags.key_size,
        CertificateParams {
            common_name: flags.my_cn.clone(),
            not_before: next_not_before(
                SystemTime::now(),
                ring.keys().iter().map(|k| k.certificate.not_before()).max(),
            ),
            validity: flags.key_ttl,
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
        &flags.key_prefix,
        &key,
        &cert,
        &flags.privatekey_labels,
        &flags.privatekey_annotations,
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
    flags: Arc<Flags>,
    ring: Arc<KeyRing>,
    mut force: tokio::sync::mpsc::Receiver<()>,
    stop: tokio_util::sync::CancellationToken,
) {
    let generate = || async {
        if let Err(e) = generate_key(&client, &namespace, &flags, &ring).await {
            tracing::error!(error = %e, "could not generate a sealing key; retrying in 10s");
            false
        } else {
            true
        }
    };
    // A new leader first trusts only what is stored.
    loop {
        match stored_key_count(&client, &namespace, &flags.key_prefix).await {
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
    if let Some(cutoff) = flags
        .key_cutoff_time
        .as_deref()
        .and_then(|c| crate::flags::parse_cutoff(c).ok())
    {
        let cutoff = SystemTime::from(cutoff);
        if ring.newest_time().is_some_and(|t| t < cutoff) {
            tracing::info!("newest key is older than --key-cutoff-time; generating a new one");
            generate().await;
        }
    }
    loop {
        let wait = if flags.key_renew_period.is_zero() {
            Duration::from_secs(u64::from(u32::MAX))
        } else {
            let age = ring
                .newest_time()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .unwrap_or_default();
            flags.key_renew_period.saturating_sub(age)
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {
                if !flags.key_renew_period.is_zero() && !generate().await {
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
    use std::collections::HashMap;
    use std::time::Duration;

    use super::*;

    fn entry(name: &str, days_old: u64) -> KeyEntry {
        let key = PrivateKey::generate(2048).unwrap();
        let params = CertificateParams {
            common_name: String::new(),
            not_before: SystemTime::now() - Duration::from_secs(days_old * 86_400),
            validity: Duration::from_secs(365 * 86_400),
        };
        let certificate = self_signed_certificate(&key, &params, &mut SystemRng).unwrap();
        KeyEntry {
            secret_name: name.into(),
            fingerprint: key.public_key().fingerprint(),
            created: certificate.not_before(),
            key,
            certificate,
        }
    }

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

    #[test]
    fn keys_are_tried_hint_first_then_by_use_then_newest_first() {
        let ring = KeyRing::new(KeyOrder::CertNotBefore);
        ring.replace(vec![entry("old", 30), entry("mid", 20), entry("new", 10)]);
        let names = |keys: Vec<Arc<KeyEntry>>| {
            keys.iter()
                .map(|k| k.secret_name.clone())
                .collect::<Vec<_>>()
        };
        let fp = |name: &str| {
            ring.keys()
                .iter()
                .find(|k| k.secret_name == name)
                .unwrap()
                .fingerprint
                .clone()
        };
        let none = HashMap::new();
        assert_eq!(
            names(ring.ordered_for(None, &none)),
            ["new", "mid", "old"],
            "newest first"
        );
        assert_eq!(ring.newest().unwrap().secret_name, "new");
        let uses = HashMap::from([(fp("old"), 5), (fp("mid"), 1)]);
        assert_eq!(
            names(ring.ordered_for(None, &uses)),
            ["old", "mid", "new"],
            "most used first"
        );
        assert_eq!(
            names(ring.ordered_for(Some(&fp("new")), &uses)),
            ["new", "old", "mid"],
            "the hint beats use"
        );
    }
}
