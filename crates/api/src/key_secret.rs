//! The Secrets that hold sealing keys, in upstream's exact layout (COMPAT §4), and key backups.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use keyseal_crypto::{Certificate, CryptoError, PrivateKey};

use crate::annotations::{SEALING_KEY_ACTIVE, SEALING_KEY_LABEL};

/// Default `--key-prefix`; also the name of the legacy single key Secret.
pub const DEFAULT_KEY_PREFIX: &str = "sealed-secrets-key";
/// Secret type of key Secrets.
pub const TLS_TYPE: &str = "kubernetes.io/tls";
/// Data item holding the PKCS#1 private key PEM.
pub const TLS_KEY: &str = "tls.key";
/// Data item holding the certificate PEM.
pub const TLS_CRT: &str = "tls.crt";

/// Why a key Secret could not be used. Never carries key bytes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeySecretError {
    /// A required data item is absent.
    #[error("key Secret {secret} has no {item} item")]
    MissingItem {
        /// `namespace/name` of the Secret.
        secret: String,
        /// The missing item.
        item: &'static str,
    },
    /// An item does not parse.
    #[error("key Secret {secret}: {item}: {source}")]
    Invalid {
        /// `namespace/name` of the Secret.
        secret: String,
        /// The unreadable item.
        item: &'static str,
        /// The cause.
        source: CryptoError,
    },
    /// The certificate does not belong to the private key.
    #[error("key Secret {secret}: tls.crt does not certify the key in tls.key")]
    Mismatch {
        /// `namespace/name` of the Secret.
        secret: String,
    },
}

/// A sealing key with its certificate, as loaded from a key Secret.
pub struct SealingKey {
    /// The private key.
    pub key: PrivateKey,
    /// Its self-signed certificate.
    pub certificate: Certificate,
}

/// A new key Secret, as upstream's controller writes it: `generateName: <prefix>`, type
/// `kubernetes.io/tls`, label `…sealed-secrets-key=active` plus `extra_labels`, annotations
/// `extra_annotations`, `tls.key` PKCS#1 PEM and `tls.crt` PEM.
pub fn new_key_secret(
    namespace: &str,
    prefix: &str,
    key: &PrivateKey,
    certificate: &Certificate,
    extra_labels: &BTreeMap<String, String>,
    extra_annotations: &BTreeMap<String, String>,
) -> Secret {
    let mut labels = extra_labels.clone();
    labels.insert(SEALING_KEY_LABEL.to_owned(), SEALING_KEY_ACTIVE.to_owned());
    Secret {
        metadata: ObjectMeta {
            generate_name: Some(prefix.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(labels),
            annotations: (!extra_annotations.is_empty()).then(|| extra_annotations.clone()),
            ..ObjectMeta::default()
        },
        type_: Some(TLS_TYPE.to_owned()),
        data: Some(BTreeMap::from([
            (
                TLS_KEY.to_owned(),
                ByteString(key.to_pkcs1_pem().as_bytes().to_vec()),
            ),
            (
                TLS_CRT.to_owned(),
                ByteString(certificate.to_pem().into_bytes()),
            ),
        ])),
        ..Secret::default()
    }
}

/// True for Secrets the controller loads keys from: labelled `…sealed-secrets-key=active`, or
/// the legacy Secret named exactly `prefix`. A key labelled anything else (e.g. `compromised`)
/// is ignored.
pub fn is_sealing_key_secret(secret: &Secret, prefix: &str) -> bool {
    let active = secret
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SEALING_KEY_LABEL))
        .is_some_and(|v| v == SEALING_KEY_ACTIVE);
    active || secret.metadata.name.as_deref() == Some(prefix)
}

fn display_name(secret: &Secret) -> String {
    format!(
        "{}/{}",
        secret.metadata.namespace.as_deref().unwrap_or(""),
        secret
            .metadata
            .name
            .as_deref()
            .or(secret.metadata.generate_name.as_deref())
            .unwrap_or("")
    )
}

/// Loads the key and certificate from a key Secret (PKCS#1 or PKCS#8 key).
pub fn parse_key_secret(secret: &Secret) -> Result<SealingKey, KeySecretError> {
    let name = display_name(secret);
    let item = |item: &'static str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(item))
            .map(|b| b.0.as_slice())
            .ok_or_else(|| KeySecretError::MissingItem {
                secret: name.clone(),
                item,
            })
    };
    let key = PrivateKey::from_pem(item(TLS_KEY)?).map_err(|source| KeySecretError::Invalid {
        secret: name.clone(),
        item: TLS_KEY,
        source,
    })?;
    let certificate =
        Certificate::from_pem(item(TLS_CRT)?).map_err(|source| KeySecretError::Invalid {
            secret: name.clone(),
            item: TLS_CRT,
            source,
        })?;
    if certificate.public_key() != key.public_key() {
        return Err(KeySecretError::Mismatch { secret: name });
    }
    Ok(SealingKey { key, certificate })
}

/// Private keys from a backup file: PEM keys (any number), or a key Secret / SecretList / List
/// in JSON or YAML, as `kubectl get secret -o yaml` writes it.
pub fn keys_from_backup(text: &[u8]) -> Result<Vec<PrivateKey>, String> {
    let pem_keys = PrivateKey::all_from_pem(text).map_err(|e| e.to_string())?;
    if !pem_keys.is_empty() {
        return Ok(pem_keys);
    }
    let text = std::str::from_utf8(text)
        .map_err(|_| "neither PEM nor a Secret in JSON or YAML".to_owned())?;
    let secrets = crate::input::secrets(text).map_err(|e| e.to_string())?;
    let mut keys = Vec::new();
    for secret in &secrets {
        if secret
            .data
            .as_ref()
            .is_some_and(|d| d.contains_key(TLS_KEY))
        {
            let pem = &secret.data.as_ref().expect("checked")[TLS_KEY].0;
            keys.push(
                PrivateKey::from_pem(pem)
                    .map_err(|e| format!("Secret {}: {TLS_KEY}: {e}", display_name(secret)))?,
            );
        }
    }
    if keys.is_empty() {
        return Err(
            "no private key found (expected PEM keys or Secrets with a tls.key item)".to_owned(),
        );
    }
    Ok(keys)
}
