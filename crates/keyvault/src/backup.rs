//! Sealing-key backups: each key Secret is one Key Vault secret holding the whole Secret as JSON,
//! written, then read back and verified by fingerprint. See the crate README for the format.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use keyseal_api::key_secret::parse_key_secret;
use keyseal_crypto::Certificate;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use zeroize::Zeroize;

use crate::error::{BackupError, Result};
use crate::naming::{backup_name, certificate_name, validate_prefix};
use crate::reference::VaultReference;
use crate::store::{KeyBackupStore, SecretMeta, SecretText, StoredSecret};

/// Content type of a key backup: a key Secret (`v1/Secret`) as JSON.
pub const KEY_CONTENT_TYPE: &str = "application/vnd.keyseal.key-secret+json";
/// Content type of the published public certificate.
pub const CERT_CONTENT_TYPE: &str = "application/x-pem-file";
/// Tag: the key's OpenSSH-style fingerprint, `SHA256:…`.
pub const TAG_FINGERPRINT: &str = "keyseal-fingerprint";
/// Tag: when the key Secret was created (RFC 3339, UTC), or when it was first backed up.
pub const TAG_CREATED: &str = "keyseal-created";
/// Tag: the cluster name given in [`BackupConfig`].
pub const TAG_CLUSTER: &str = "keyseal-cluster";
/// Tag: the backup prefix, so listings never mix clusters whose prefixes share a beginning.
pub const TAG_PREFIX: &str = "keyseal-prefix";
/// Tag: the key Secret's namespace.
pub const TAG_NAMESPACE: &str = "keyseal-secret-namespace";
/// Tag: the key Secret's name.
pub const TAG_NAME: &str = "keyseal-secret-name";

/// A key Secret whose private key must not leak: `Debug` shows only its name, the data is
/// zeroized on drop.
pub struct KeySecret(Secret);

impl KeySecret {
    /// The Secret (contains the private key).
    pub fn as_secret(&self) -> &Secret {
        &self.0
    }

    /// Takes the Secret out (the caller becomes responsible for not logging it).
    pub fn into_secret(mut self) -> Secret {
        std::mem::take(&mut self.0)
    }

    /// `namespace/name`.
    pub fn display_name(&self) -> String {
        display_name(&self.0)
    }
}

impl fmt::Debug for KeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySecret")
            .field("name", &self.display_name())
            .field("data", &"<redacted>")
            .finish()
    }
}

impl Drop for KeySecret {
    fn drop(&mut self) {
        zeroize_secret_data(&mut self.0);
    }
}

fn zeroize_secret_data(secret: &mut Secret) {
    for v in secret.data.iter_mut().flat_map(|d| d.values_mut()) {
        v.0.zeroize();
    }
    for v in secret.string_data.iter_mut().flat_map(|d| d.values_mut()) {
        v.zeroize();
    }
}

/// One backup in the vault, described without its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupRecord {
    /// The Key Vault secret name.
    pub name: String,
    /// The version read back (the one verified), when the vault reports versions.
    pub version: Option<String>,
    /// The key's fingerprint, `SHA256:…`.
    pub fingerprint: String,
    /// The `created` tag (RFC 3339).
    pub created: String,
    /// The cluster name tag.
    pub cluster: String,
    /// The key Secret's namespace.
    pub namespace: String,
    /// The key Secret's name.
    pub secret_name: String,
}

impl BackupRecord {
    fn from_meta(name: &str, version: Option<String>, meta: &SecretMeta) -> Self {
        let tag = |k: &str| meta.tags.get(k).cloned().unwrap_or_default();
        BackupRecord {
            name: name.to_owned(),
            version,
            fingerprint: tag(TAG_FINGERPRINT),
            created: tag(TAG_CREATED),
            cluster: tag(TAG_CLUSTER),
            namespace: tag(TAG_NAMESPACE),
            secret_name: tag(TAG_NAME),
        }
    }
}

/// Where backups go: the prefix that scopes this cluster's secrets in a shared vault, and the
/// cluster name recorded in each backup.
#[derive(Clone, Debug)]
pub struct BackupConfig {
    /// Prefix of every Key Vault secret name (see [`crate::naming::validate_prefix`]).
    pub prefix: String,
    /// Cluster name written into the `keyseal-cluster` tag.
    pub cluster: String,
}

/// Backups of sealing keys in one vault, under one prefix.
pub struct KeyBackups<S> {
    store: S,
    config: BackupConfig,
}

impl<S: KeyBackupStore> KeyBackups<S> {
    /// Checks the prefix and wraps `store`.
    pub fn new(store: S, config: BackupConfig) -> Result<Self> {
        validate_prefix(&config.prefix)?;
        Ok(KeyBackups { store, config })
    }

    /// The underlying store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The Key Vault secret name used for key Secret `secret_name`.
    pub fn backup_name(&self, secret_name: &str) -> Result<String> {
        backup_name(&self.config.prefix, secret_name)
    }

    /// Backs up one key Secret and verifies it: loads the key (refusing a Secret that does not
    /// hold a matching key and certificate), writes the Secret as JSON unless the vault already
    /// holds the same key under its name, reads it back and compares the fingerprint of the key
    /// it loads with the original's. A different key already stored under the name is a
    /// [`BackupError::Conflict`]: backups are never overwritten.
    pub async fn backup_key(&self, secret: &Secret) -> Result<BackupRecord> {
        let display = display_name(secret);
        let fingerprint = fingerprint_of(secret, &display)?;
        let secret_name =
            secret
                .metadata
                .name
                .as_deref()
                .ok_or_else(|| BackupError::InvalidKeySecret {
                    secret: display.clone(),
                    reason: "has no name (create it before backing it up)".to_owned(),
                })?;
        let name = self.backup_name(secret_name)?;
        let document = KeySecret(restorable(secret));
        let json = SecretText::new(serde_json::to_string(&document.0).map_err(|e| {
            BackupError::InvalidKeySecret {
                secret: display.clone(),
                reason: format!("cannot serialise: {:?} error", e.classify()),
            }
        })?);
        drop(document);

        if let Some(existing) = self.store.get(&name).await? {
            let record = self.verify(&existing, &fingerprint)?;
            tracing::debug!(name = %name, fingerprint = %fingerprint, "key already backed up");
            return Ok(record);
        }

        let created = secret
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.to_string())
            .unwrap_or_else(now_rfc3339);
        let meta = SecretMeta {
            content_type: Some(KEY_CONTENT_TYPE.to_owned()),
            tags: BTreeMap::from([
                (TAG_FINGERPRINT.to_owned(), fingerprint.clone()),
                (TAG_CREATED.to_owned(), created),
                (TAG_CLUSTER.to_owned(), self.config.cluster.clone()),
                (TAG_PREFIX.to_owned(), self.config.prefix.clone()),
                (
                    TAG_NAMESPACE.to_owned(),
                    secret.metadata.namespace.clone().unwrap_or_default(),
                ),
                (TAG_NAME.to_owned(), secret_name.to_owned()),
            ]),
        };
        let written = self.store.put(&name, &json, &meta).await?;
        // Read back what the vault now serves, not what the write echoed.
        let read = match &written.version {
            Some(v) => self.store.get_version(&name, v).await?,
            None => self.store.get(&name).await?,
        }
        .ok_or_else(|| BackupError::Verification {
            vault: self.store.vault().to_owned(),
            name: name.clone(),
            reason: "not found right after writing it".to_owned(),
        })?;
        if read.value.expose() != json.expose() {
            return Err(BackupError::Verification {
                vault: self.store.vault().to_owned(),
                name,
                reason: "the value read back differs from the value written".to_owned(),
            });
        }
        let record = self.verify(&read, &fingerprint)?;
        tracing::info!(name = %name, fingerprint = %fingerprint, vault = %self.store.vault(), "key backed up and verified");
        Ok(record)
    }

    /// Checks that `stored` is a key backup of the key with `fingerprint`.
    fn verify(&self, stored: &StoredSecret, fingerprint: &str) -> Result<BackupRecord> {
        let vault = self.store.vault().to_owned();
        if stored.meta.content_type.as_deref() != Some(KEY_CONTENT_TYPE) {
            return Err(BackupError::Conflict {
                vault,
                name: stored.name.clone(),
                existing: format!(
                    "content type {:?}",
                    stored.meta.content_type.as_deref().unwrap_or("")
                ),
            });
        }
        let restored = parse_document(stored, &vault)?;
        let actual =
            fingerprint_of(restored.as_secret(), &restored.display_name()).map_err(|e| {
                BackupError::Verification {
                    vault: vault.clone(),
                    name: stored.name.clone(),
                    reason: e.to_string(),
                }
            })?;
        if actual != fingerprint {
            return Err(BackupError::Conflict {
                vault,
                name: stored.name.clone(),
                existing: format!("key {actual}, not {fingerprint}"),
            });
        }
        if stored.meta.tags.get(TAG_FINGERPRINT).map(String::as_str) != Some(fingerprint) {
            return Err(BackupError::Verification {
                vault,
                name: stored.name.clone(),
                reason: format!("the {TAG_FINGERPRINT} tag does not match the key {fingerprint}"),
            });
        }
        Ok(BackupRecord::from_meta(
            &stored.name,
            stored.version.clone(),
            &stored.meta,
        ))
    }

    /// Every key backup under this prefix (by the `keyseal-prefix` tag and content type), sorted
    /// by `created` then name.
    pub async fn list_backups(&self) -> Result<Vec<BackupRecord>> {
        let mut records: Vec<BackupRecord> = self
            .store
            .list()
            .await?
            .into_iter()
            .filter(|s| {
                s.enabled
                    && s.meta.content_type.as_deref() == Some(KEY_CONTENT_TYPE)
                    && s.meta.tags.get(TAG_PREFIX) == Some(&self.config.prefix)
            })
            .map(|s| BackupRecord::from_meta(&s.name, None, &s.meta))
            .collect();
        records.sort_by(|a, b| a.created.cmp(&b.created).then(a.name.cmp(&b.name)));
        Ok(records)
    }

    /// Reads one backup and returns the key Secret it holds, checked: it must load and its
    /// fingerprint must match the backup's tag.
    pub async fn restore(&self, record: &BackupRecord) -> Result<KeySecret> {
        let stored = self
            .store
            .get(&record.name)
            .await?
            .ok_or_else(|| BackupError::NotFound {
                vault: self.store.vault().to_owned(),
                name: record.name.clone(),
            })?;
        self.verify(&stored, &record.fingerprint)?;
        parse_document(&stored, self.store.vault())
    }

    /// Every key Secret backed up under this prefix, oldest first, exactly as it was backed up
    /// (name, namespace, labels, annotations, type, data), ready to create in a cluster.
    pub async fn restore_all(&self) -> Result<Vec<KeySecret>> {
        let mut out = Vec::new();
        for record in self.list_backups().await? {
            out.push(self.restore(&record).await?);
        }
        Ok(out)
    }

    /// Publishes the current public certificate (PEM) as `<prefix>-sealing-cert`, unless the
    /// vault already serves exactly this PEM there; returns the reference to give `--cert`.
    pub async fn publish_certificate(&self, pem: &str) -> Result<VaultReference> {
        let cert = Certificate::from_pem(pem.as_bytes()).map_err(|e| BackupError::Invalid {
            what: "certificate",
            value: "<PEM>".to_owned(),
            reason: e.to_string(),
        })?;
        let name = certificate_name(&self.config.prefix)?;
        let value = SecretText::new(pem.to_owned());
        let current = self.store.get(&name).await?;
        if current.as_ref().is_none_or(|c| c.value.expose() != pem) {
            {
                let meta = SecretMeta {
                    content_type: Some(CERT_CONTENT_TYPE.to_owned()),
                    tags: BTreeMap::from([
                        (TAG_FINGERPRINT.to_owned(), cert.public_key().fingerprint()),
                        (TAG_CREATED.to_owned(), now_rfc3339()),
                        (TAG_CLUSTER.to_owned(), self.config.cluster.clone()),
                        (TAG_PREFIX.to_owned(), self.config.prefix.clone()),
                    ]),
                };
                self.store.put(&name, &value, &meta).await?;
            }
        }
        Ok(VaultReference {
            vault_url: self.store.vault().trim_end_matches('/').to_owned(),
            secret_name: name,
            version: None,
        })
    }

    /// The public certificate published under this prefix (PEM).
    pub async fn fetch_certificate(&self) -> Result<String> {
        let name = certificate_name(&self.config.prefix)?;
        fetch_certificate_from(&self.store, &name, None).await
    }
}

/// Reads a published certificate by name (and version), checking that it parses; for
/// `keyseal --cert <vault reference>` with a store built from the reference's vault URL.
pub async fn fetch_certificate_from<S: KeyBackupStore + ?Sized>(
    store: &S,
    name: &str,
    version: Option<&str>,
) -> Result<String> {
    let stored = match version {
        Some(v) => store.get_version(name, v).await?,
        None => store.get(name).await?,
    }
    .ok_or_else(|| BackupError::NotFound {
        vault: store.vault().to_owned(),
        name: name.to_owned(),
    })?;
    let pem = stored.value.expose();
    // A key backup under this name must never be handed out as a "certificate".
    if stored.meta.content_type.as_deref() == Some(KEY_CONTENT_TYPE) || pem.contains("PRIVATE KEY")
    {
        return Err(BackupError::Invalid {
            what: "vault secret",
            value: name.to_owned(),
            reason: "holds a private key, not a public certificate".to_owned(),
        });
    }
    Certificate::from_pem(pem.as_bytes()).map_err(|e| BackupError::Invalid {
        what: "vault secret",
        value: name.to_owned(),
        reason: format!("is not a PEM certificate: {e}"),
    })?;
    Ok(pem.to_owned())
}

/// The Secret as it is backed up: what a restore must reproduce, without the server's fields.
fn restorable(secret: &Secret) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: secret.metadata.name.clone(),
            namespace: secret.metadata.namespace.clone(),
            labels: secret.metadata.labels.clone(),
            annotations: secret.metadata.annotations.clone(),
            ..ObjectMeta::default()
        },
        type_: secret.type_.clone(),
        data: secret.data.clone(),
        immutable: secret.immutable,
        ..Secret::default()
    }
}

fn parse_document(stored: &StoredSecret, vault: &str) -> Result<KeySecret> {
    let secret: Secret =
        serde_json::from_str(stored.value.expose()).map_err(|e| BackupError::Verification {
            vault: vault.to_owned(),
            name: stored.name.clone(),
            // classify, not the message: serde's messages may quote the input.
            reason: format!("not a key Secret in JSON ({:?} error)", e.classify()),
        })?;
    Ok(KeySecret(secret))
}

fn fingerprint_of(secret: &Secret, display: &str) -> Result<String> {
    let key = parse_key_secret(secret).map_err(|e| BackupError::InvalidKeySecret {
        secret: display.to_owned(),
        reason: e.to_string(),
    })?;
    Ok(key.key.public_key().fingerprint())
}

fn display_name(secret: &Secret) -> String {
    format!(
        "{}/{}",
        secret.metadata.namespace.as_deref().unwrap_or(""),
        secret.metadata.name.as_deref().unwrap_or("")
    )
}

fn now_rfc3339() -> String {
    OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or_else(|_| OffsetDateTime::now_utc())
        .format(&Rfc3339)
        .unwrap_or_default()
}
