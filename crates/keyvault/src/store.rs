//! The storage seam: a few operations on Key Vault secrets, behind a trait so that the backup
//! logic (and the controller's) can be tested without a vault. There is no delete: backups are
//! never removed by keyseal.

use std::collections::BTreeMap;
use std::fmt;

use async_trait::async_trait;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::error::Result;

/// A secret value held in memory: zeroized on drop, redacted in `Debug`.
#[derive(Clone, Default)]
pub struct SecretText(Zeroizing<String>);

impl SecretText {
    /// Wraps `value`.
    pub fn new(value: String) -> Self {
        SecretText(Zeroizing::new(value))
    }

    /// The value itself. Callers must not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretText(<{} bytes redacted>)", self.0.len())
    }
}

/// What is written with a secret besides its value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SecretMeta {
    /// The secret's content type.
    pub content_type: Option<String>,
    /// Its tags (Key Vault allows 15, values up to 256 characters).
    pub tags: BTreeMap<String, String>,
}

/// A secret's latest version as read from the vault.
#[derive(Clone, Debug)]
pub struct StoredSecret {
    /// The Key Vault secret name.
    pub name: String,
    /// The version identifier, when the vault reports one.
    pub version: Option<String>,
    /// The value.
    pub value: SecretText,
    /// Content type and tags.
    pub meta: SecretMeta,
    /// When this version was written, when the vault reports it.
    pub updated: Option<OffsetDateTime>,
}

/// A secret's properties as listed (no value).
#[derive(Clone, Debug)]
pub struct SecretInfo {
    /// The Key Vault secret name.
    pub name: String,
    /// Content type and tags.
    pub meta: SecretMeta,
    /// Whether the secret is enabled.
    pub enabled: bool,
}

/// Key Vault secrets, as much as backups need: write a new version, read the latest, list.
#[async_trait]
pub trait KeyBackupStore: Send + Sync {
    /// The vault's URL, for messages.
    fn vault(&self) -> &str;

    /// Writes a new version of secret `name`; returns the version written.
    async fn put(&self, name: &str, value: &SecretText, meta: &SecretMeta) -> Result<StoredSecret>;

    /// Reads the latest version of `name`, or `None` if there is no such secret.
    async fn get(&self, name: &str) -> Result<Option<StoredSecret>>;

    /// Reads a given version of `name`, or `None` if there is no such secret or version.
    async fn get_version(&self, name: &str, version: &str) -> Result<Option<StoredSecret>>;

    /// Lists every secret in the vault (properties only).
    async fn list(&self) -> Result<Vec<SecretInfo>>;
}
