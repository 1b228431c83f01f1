//! Backups of keyseal's sealing keys in Azure Key Vault.
//!
//! Each sealing key is stored as one Key Vault **secret** whose value is the whole key Secret as
//! JSON (see `README.md` for the format), written and then read back and verified by the key's
//! fingerprint. Restores give back the key Secrets exactly as they were backed up. The current
//! public certificate can be published to the vault too, so `keyseal --cert
//! azurekeyvault://<vault>/<name>` can seal offline.
//!
//! - [`KeyBackupStore`]: the few Key Vault operations backups need (no delete, ever);
//!   [`AzureKeyVault`] implements it on the official Azure SDK for Rust.
//! - [`KeyBackups`]: backup with verification, listing, restore, certificate publication.
//! - [`CredentialConfig`]: workload identity, managed identity, client secret, client
//!   certificate or the Azure CLI, from flags or the standard `AZURE_*` variables.
//! - [`naming`]: Key Vault secret names under a per-cluster prefix.
//! - [`VaultReference`] parses `azurekeyvault://<vault-host>/<secret-name>` references.
//!
//! [`VaultOptions`] carries the TLS roots (a private CA besides the system's) and the SDK's
//! challenge-resource check, for vaults outside the public clouds; the credentials use the same
//! roots for the token service.
//!
//! No private key material appears in errors, logs or `Debug` output: key Secrets are wrapped in
//! [`KeySecret`] and values in [`SecretText`], both redacted and zeroized on drop.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod azure;
mod backup;
pub mod credential;
mod error;
pub mod naming;
mod reference;
mod store;

pub use azure::{AzureKeyVault, VaultOptions};
pub use backup::{
    BackupConfig, BackupRecord, CERT_CONTENT_TYPE, KEY_CONTENT_TYPE, KeyBackups, KeySecret,
    TAG_CLUSTER, TAG_CREATED, TAG_FINGERPRINT, TAG_NAME, TAG_NAMESPACE, TAG_PREFIX,
    fetch_certificate_from,
};
pub use credential::{CredentialConfig, CredentialKind};
pub use error::{BackupError, Result};
pub use naming::{backup_name, certificate_name};
pub use reference::{SCHEME as REFERENCE_SCHEME, VaultReference};
pub use store::{KeyBackupStore, SecretInfo, SecretMeta, SecretText, StoredSecret};
