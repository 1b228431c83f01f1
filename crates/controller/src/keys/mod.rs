//! The key ring: every sealing key the controller can unseal with, loaded from key Secrets in the
//! controller's namespace and kept current by a watch (`key_watch`); and the leader's duty of
//! generating and renewing keys (`renew`).

mod key_watch;
mod renew;

pub use key_watch::watch_keys;
pub use renew::{KeyConfig, KeyDuty, manage_keys, stored_key_secrets};

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::Secret;
use keyseal_api::key_secret::parse_key_secret;
use keyseal_crypto::{Certificate, PrivateKey};
use tokio::sync::watch;

use crate::flags::KeyOrder;

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

    /// Whether the ring holds exactly `entries` (same names, same keys), duplicates included.
    pub fn holds(&self, entries: &BTreeMap<String, KeyEntry>) -> bool {
        let by_name = self.by_name.read().expect("key ring lock");
        by_name.len() == entries.len()
            && by_name.iter().all(|(name, k)| {
                entries
                    .get(name)
                    .is_some_and(|e| e.fingerprint == k.fingerprint)
            })
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
        // One key under two names (a backup restored beside the original): keep the newest
        // entry, whose certificate is the one served, so that a value no key opens does not pay
        // for the same RSA key twice.
        let mut seen = std::collections::HashSet::new();
        all.retain(|k| seen.insert(k.fingerprint.clone()));
        *self.sorted.write().expect("key ring lock") = Arc::new(all);
        self.version.send_modify(|v| *v += 1);
    }

    /// Time at which the newest key was made (by the configured order), if any.
    pub fn newest_time(&self) -> Option<SystemTime> {
        self.newest().map(|k| k.ordering_time(self.order))
    }

    /// Age of the newest key (zero with none, or one from the future).
    pub fn newest_age(&self) -> Duration {
        self.newest_time()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .unwrap_or_default()
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use keyseal_crypto::{CertificateParams, SystemRng, self_signed_certificate};

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
    fn a_key_under_two_names_is_tried_once_by_its_newest_entry() {
        let ring = KeyRing::new(KeyOrder::CertNotBefore);
        let (original, other) = (entry("original", 20), entry("other", 30));
        let copy_key = PrivateKey::from_pem(original.key.to_pkcs1_pem().as_bytes()).unwrap();
        let params = CertificateParams {
            not_before: SystemTime::now() - Duration::from_secs(86_400),
            ..CertificateParams::default()
        };
        let copy_cert = self_signed_certificate(&copy_key, &params, &mut SystemRng).unwrap();
        let copy = KeyEntry {
            secret_name: "restored".into(),
            fingerprint: original.fingerprint.clone(),
            created: copy_cert.not_before(),
            key: copy_key,
            certificate: copy_cert,
        };
        ring.replace(vec![original, other, copy]);
        let names: Vec<String> = ring.keys().iter().map(|k| k.secret_name.clone()).collect();
        assert_eq!(names, ["restored", "other"]);
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
