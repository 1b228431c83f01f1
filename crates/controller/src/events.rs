//! Kubernetes Events, from the reporting controller `sealed-secrets` as upstream. Notes name
//! items and errors, never values.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Secret;
use keyseal_api::SealedSecret;
use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

/// Event reasons, upstream's names.
pub mod reason {
    /// The Secret was written.
    pub const UNSEALED: &str = "Unsealed";
    /// Unsealing failed.
    pub const UNSEAL_FAILED: &str = "ErrUnsealFailed";
    /// Writing the Secret failed.
    pub const UPDATE_FAILED: &str = "ErrUpdateFailed";
    /// A key Secret could not be loaded (keyseal).
    pub const KEY_INVALID: &str = "ErrKeyInvalid";
}

/// Publishes events; failures to publish are logged, never fatal.
#[derive(Clone)]
pub struct Events {
    recorder: Recorder,
    warned_keys: Arc<Mutex<HashSet<(String, String)>>>,
}

impl Events {
    /// A recorder reporting as `sealed-secrets` from `instance` (the pod).
    pub fn new(client: kube::Client, instance: String) -> Self {
        let reporter = Reporter {
            controller: "sealed-secrets".into(),
            instance: Some(instance),
        };
        Self {
            recorder: Recorder::new(client, reporter),
            warned_keys: Arc::default(),
        }
    }

    async fn publish(
        &self,
        reference: &k8s_openapi::api::core::v1::ObjectReference,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: reason.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, reference).await {
            tracing::warn!(error = %e, reason, "could not publish an event");
        }
    }

    /// `Normal Unsealed "SealedSecret unsealed successfully"`.
    pub async fn unsealed(&self, ss: &SealedSecret) {
        self.publish(
            &ss.object_ref(&()),
            EventType::Normal,
            reason::UNSEALED,
            "SealedSecret unsealed successfully".into(),
        )
        .await;
    }

    /// `Warning ErrUnsealFailed "Failed to unseal: <err>"`.
    pub async fn unseal_failed(&self, ss: &SealedSecret, error: &str) {
        self.publish(
            &ss.object_ref(&()),
            EventType::Warning,
            reason::UNSEAL_FAILED,
            format!("Failed to unseal: {error}"),
        )
        .await;
    }

    /// `Warning ErrUpdateFailed <message>`.
    pub async fn update_failed(&self, ss: &SealedSecret, message: &str) {
        self.publish(
            &ss.object_ref(&()),
            EventType::Warning,
            reason::UPDATE_FAILED,
            message.to_owned(),
        )
        .await;
    }

    /// A malformed key Secret was skipped.
    pub async fn invalid_key(&self, secret: &Secret, message: &str) {
        self.publish(
            &secret.object_ref(&()),
            EventType::Warning,
            reason::KEY_INVALID,
            format!("Skipped key Secret: {message}"),
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
