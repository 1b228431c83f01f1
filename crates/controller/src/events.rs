//! Kubernetes Events, from the reporting controller `sealed-secrets` as upstream. Notes name
//! items and errors, never values.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event as EventV1;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use keyseal_api::SealedSecret;
use kube::Api;
use kube::Resource;
use kube::api::PostParams;
use kube::runtime::events::EventType;

use crate::conditions::event;

/// Publishes `events.k8s.io/v1` Events; failures to publish are logged, never fatal.
///
/// Each Event is created directly and nothing is kept afterwards: kube-runtime's `Recorder`
/// caches every Event it published for six minutes, which made memory grow with the number of
/// SealedSecrets unsealed (measured: ~15 KiB per SealedSecret during a start-up sweep). Repeats
/// are already rare, since a permanent failure is not processed again until something changes.
#[derive(Clone)]
pub struct Events {
    client: kube::Client,
    instance: String,
    warned_keys: Arc<Mutex<HashSet<(String, String)>>>,
}

/// `<object>.<time><random>` as client-go names events: a valid DNS subdomain (object names
/// already are), unique without a round trip (`generateName` would reject the trailing dot).
fn event_name(object: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut random = [0u8; 3];
    let _ = keyseal_crypto::SealRng::fill(&mut keyseal_crypto::SystemRng, &mut random);
    let suffix = format!(
        "{nanos:x}{}",
        random
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let keep = object.len().min(253 - 1 - suffix.len());
    let mut cut = keep;
    while !object.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}.{suffix}", object[..cut].trim_end_matches(['.', '-']))
}

/// The `events.k8s.io` limit on `note`.
const MAX_NOTE: usize = 1024;

impl Events {
    /// A publisher reporting as controller `sealed-secrets` from `instance` (the pod).
    pub fn new(client: kube::Client, instance: String) -> Self {
        let mut instance = instance;
        instance.truncate(128);
        Self {
            client,
            instance,
            warned_keys: Arc::default(),
        }
    }

    async fn publish(
        &self,
        reference: &k8s_openapi::api::core::v1::ObjectReference,
        type_: EventType,
        reason: &str,
        mut note: String,
    ) {
        if note.len() > MAX_NOTE {
            let mut cut = MAX_NOTE - 3;
            while !note.is_char_boundary(cut) {
                cut -= 1;
            }
            note.truncate(cut);
            note.push_str("...");
        }
        let namespace = reference
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_owned());
        let event = EventV1 {
            metadata: ObjectMeta {
                name: Some(event_name(
                    reference.name.as_deref().unwrap_or("sealed-secrets"),
                )),
                namespace: Some(namespace.clone()),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(jiff::Timestamp::now())),
            reporting_controller: Some("sealed-secrets".to_owned()),
            reporting_instance: Some(self.instance.clone()),
            action: Some(reason.to_owned()),
            reason: Some(reason.to_owned()),
            note: Some(note),
            regarding: Some(reference.clone()),
            type_: Some(
                match type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .to_owned(),
            ),
            ..EventV1::default()
        };
        let api: Api<EventV1> = Api::namespaced(self.client.clone(), &namespace);
        if let Err(e) = api.create(&PostParams::default(), &event).await {
            tracing::warn!(error = %e, reason, "could not publish an event");
        }
    }

    /// `Normal Unsealed "SealedSecret unsealed successfully"`.
    pub async fn unsealed(&self, ss: &SealedSecret) {
        self.publish(
            &ss.object_ref(&()),
            EventType::Normal,
            event::UNSEALED,
            "SealedSecret unsealed successfully".into(),
        )
        .await;
    }

    /// A failure: `Warning ErrUnsealFailed "Failed to unseal: <err>"` or
    /// `Warning ErrUpdateFailed <err>` (`reason` is one of [`event`]'s).
    pub async fn failed(&self, ss: &SealedSecret, reason: &'static str, error: &str) {
        let note = if reason == event::UNSEAL_FAILED {
            format!("Failed to unseal: {error}")
        } else {
            error.to_owned()
        };
        self.publish(&ss.object_ref(&()), EventType::Warning, reason, note)
            .await;
    }

    /// A malformed key Secret was skipped.
    pub async fn invalid_key(&self, secret: &Secret, message: &str) {
        self.publish(
            &secret.object_ref(&()),
            EventType::Warning,
            event::KEY_INVALID,
            format!("Skipped key Secret: {message}"),
        )
        .await;
    }

    /// A key was backed up, verified and activated.
    pub async fn key_backed_up(&self, secret: &Secret, message: &str) {
        self.publish(
            &secret.object_ref(&()),
            EventType::Normal,
            event::KEY_BACKED_UP,
            message.to_owned(),
        )
        .await;
    }

    /// A key's backup failed (retried).
    pub async fn key_backup_failed(&self, secret: &Secret, message: &str) {
        self.publish(
            &secret.object_ref(&()),
            EventType::Warning,
            event::KEY_BACKUP_FAILED,
            format!("Key backup to Azure Key Vault failed (retrying; the active keys keep serving): {message}"),
        )
        .await;
    }

    /// True if this key problem was already reported (so a watch relist does not repeat it).
    pub fn already_warned_key(&self, name: &str, message: &str) -> bool {
        !self
            .warned_keys
            .lock()
            .expect("events lock")
            .insert((name.to_owned(), message.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn event_names_are_unique_valid_subdomains() {
        let a = super::event_name("app");
        let b = super::event_name("app");
        assert_ne!(a, b);
        assert!(
            a.starts_with("app.")
                && a.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
        );
        let long = "x".repeat(253);
        assert!(super::event_name(&long).len() <= 253);
    }
}
