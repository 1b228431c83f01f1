//! `Secret` → `SealedSecret`, with upstream kubeseal's metadata rules (COMPAT §2, §7).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use keyseal_crypto::{CryptoError, PublicKey, encode_base64, seal};

use crate::annotations::LAST_APPLIED;
use crate::{Scope, SealedSecret, SealedSecretSpec, SecretTemplateSpec};

/// Why a Secret could not be sealed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// Strict and namespace-wide values are bound to a namespace.
    #[error("secret must declare a namespace (metadata.namespace) unless sealed cluster-wide")]
    MissingNamespace,
    /// Every SealedSecret needs a name.
    #[error("secret must declare a name (metadata.name)")]
    MissingName,
    /// Encryption failed.
    #[error("sealing item {item:?}: {source}")]
    Crypto {
        /// The item being sealed.
        item: String,
        /// The cause (never contains the value).
        source: CryptoError,
    },
}

/// Removes what the API server owns from object metadata, so a Secret fetched from a cluster
/// can be sealed and re-applied: uid, resourceVersion, generation, creationTimestamp, selfLink,
/// deletion fields and managedFields; also ownerReferences (the controller sets its own) and the
/// last-applied annotations that would leak the plaintext.
pub fn strip_server_fields(mut meta: ObjectMeta) -> ObjectMeta {
    meta.uid = None;
    meta.resource_version = None;
    meta.generation = None;
    meta.creation_timestamp = None;
    meta.self_link = None;
    meta.deletion_timestamp = None;
    meta.deletion_grace_period_seconds = None;
    meta.managed_fields = None;
    meta.owner_references = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        for key in LAST_APPLIED {
            annotations.remove(key);
        }
        if annotations.is_empty() {
            meta.annotations = None;
        }
    }
    meta
}

/// Seals `secret` for `key` in the scope its annotations record.
///
/// `stringData` wins over `data` on a clash, as the API server would do. The template keeps the
/// Secret's metadata (minus server fields), type and immutability; the top-level metadata holds
/// only name, namespace and the scope annotation.
pub fn seal_secret(secret: &Secret, key: &PublicKey) -> Result<SealedSecret, SealError> {
    let scope = Scope::from_annotations(secret.metadata.annotations.as_ref());
    seal_secret_in(secret, scope, key)
}

/// Seals `secret` for `key` in `scope` (its label and the top-level annotation), whatever the
/// Secret's own annotations say; otherwise as [`seal_secret`].
pub fn seal_secret_in(
    secret: &Secret,
    scope: Scope,
    key: &PublicKey,
) -> Result<SealedSecret, SealError> {
    let name = secret
        .metadata
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or(SealError::MissingName)?;
    let namespace = secret.metadata.namespace.clone().filter(|n| !n.is_empty());
    if namespace.is_none() && scope != Scope::ClusterWide {
        return Err(SealError::MissingNamespace);
    }
    let label = scope.label(namespace.as_deref().unwrap_or(""), &name);

    let mut encrypted_data = BTreeMap::new();
    let items = secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k, v.0.as_slice()));
    let string_items = secret
        .string_data
        .iter()
        .flatten()
        .map(|(k, v)| (k, v.as_bytes()));
    for (item, value) in items.chain(string_items) {
        let sealed = seal(key, &label, value).map_err(|source| SealError::Crypto {
            item: item.clone(),
            source,
        })?;
        encrypted_data.insert(item.clone(), encode_base64(&sealed));
    }

    let mut top_annotations = BTreeMap::new();
    scope.write_annotations(&mut top_annotations);
    Ok(SealedSecret {
        metadata: ObjectMeta {
            name: Some(name),
            namespace,
            annotations: (!top_annotations.is_empty()).then_some(top_annotations),
            ..ObjectMeta::default()
        },
        spec: SealedSecretSpec {
            template: SecretTemplateSpec {
                metadata: Some(strip_server_fields(secret.metadata.clone())),
                type_: secret.type_.clone(),
                immutable: secret.immutable,
                data: None,
            },
            data: None,
            encrypted_data,
        },
        status: None,
    })
}
