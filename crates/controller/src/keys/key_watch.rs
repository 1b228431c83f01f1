//! Every replica's key watch: the ring follows the active key Secrets.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Secret;
use keyseal_api::annotations::SEALING_KEY_LABEL;
use keyseal_api::key_secret::is_sealing_key_secret;
use kube::runtime::watcher;
use kube::{Api, Client};

use super::{KeyEntry, KeyRing, entry_from_secret};
use crate::events::Events;
use crate::startup::{self, Phase};

/// Keeps `ring` equal to the active key Secrets in `namespace` until the stream ends. A key
/// Secret that does not parse is skipped with a warning (never a crash); one relabelled away
/// from `active` or deleted is dropped.
pub async fn watch_keys(
    client: Client,
    namespace: String,
    prefix: String,
    ring: Arc<KeyRing>,
    events: Events,
) {
    let api: Api<Secret> = Api::namespaced(client, &namespace);
    let labelled = watcher::watcher(
        api.clone(),
        watcher::Config::default().labels(SEALING_KEY_LABEL),
    );
    let legacy = watcher::watcher(
        api,
        watcher::Config::default().fields(&format!("metadata.name={prefix}")),
    );
    let mut stream =
        futures::stream::select(labelled.map_ok(|e| (0u8, e)), legacy.map_ok(|e| (1u8, e))).boxed();
    // Each watch (re)lists independently; entries remember which one produced them.
    let mut sources: [Source; 2] = Default::default();
    while let Some(item) = stream.next().await {
        let (source, event) = match item {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(error = %e, "watching key Secrets failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if !sources[usize::from(source)].apply(event) {
            continue; // wait for the relist to finish before changing the ring
        }
        let secrets = sources.iter().flat_map(|s| s.seen.values());
        let entries = load(secrets, &namespace, &prefix, &ring, &events).await;
        startup::mark(Phase::KeysListed);
        update(&ring, entries);
    }
}

/// What one watch has shown.
#[derive(Default)]
struct Source {
    seen: BTreeMap<String, Secret>,
    /// A relist in progress.
    pending: Option<BTreeMap<String, Secret>>,
}

impl Source {
    /// Applies `event`; false while a relist is in progress.
    fn apply(&mut self, event: watcher::Event<Secret>) -> bool {
        let name = |s: &Secret| s.metadata.name.clone().unwrap_or_default();
        match event {
            watcher::Event::Init => self.pending = Some(BTreeMap::new()),
            watcher::Event::InitApply(s) => {
                if let Some(p) = self.pending.as_mut() {
                    p.insert(name(&s), s);
                }
            }
            watcher::Event::InitDone => {
                if let Some(p) = self.pending.take() {
                    self.seen = p;
                }
            }
            watcher::Event::Apply(s) => {
                self.seen.insert(name(&s), s);
            }
            watcher::Event::Delete(s) => {
                self.seen.remove(&name(&s));
            }
        }
        self.pending.is_none()
    }
}

/// The key entries of `secrets`; a malformed one is reported once (log and event) and skipped.
async fn load(
    secrets: impl Iterator<Item = &Secret>,
    namespace: &str,
    prefix: &str,
    ring: &KeyRing,
    events: &Events,
) -> BTreeMap<String, KeyEntry> {
    let mut entries = BTreeMap::new();
    for secret in secrets.filter(|s| is_sealing_key_secret(s, prefix)) {
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
    entries
}

/// Puts `entries` in the ring if they differ from what it holds.
fn update(ring: &KeyRing, entries: BTreeMap<String, KeyEntry>) {
    if !ring.holds(&entries) {
        ring.replace(entries.into_values().collect());
        let keys = ring.keys();
        tracing::info!(
            keys = keys.len(),
            newest = keys.first().map(|k| k.fingerprint.as_str()).unwrap_or(""),
            "key ring updated"
        );
    }
}
