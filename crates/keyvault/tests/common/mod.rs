#![allow(dead_code)]
//! Shared helpers of the Key Vault tests. Each test starts its own Key Vault test server
//! (`keyseal-kv-emulator`, HTTPS with its own test CA, real token checks) and talks to it through
//! the official Azure SDK exactly as a user's configuration would: a credential built from the
//! `AZURE_*` variables (`AZURE_AUTHORITY_HOST` pointed at the server), the server's CA added to
//! the roots (`--keyvault-ca-file`), and the challenge-resource check off, as for any vault
//! outside the public clouds (`--keyvault-disable-challenge-resource-verification`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use azure_core::credentials::TokenCredential;
use k8s_openapi::api::core::v1::Secret;
use keyseal_api::key_secret::new_key_secret;
use keyseal_crypto::{CertificateParams, PrivateKey, SystemRng, self_signed_certificate};
use keyseal_keyvault::credential::{
    ENV_AUTHORITY_HOST, ENV_CLIENT_ID, ENV_CLIENT_SECRET, ENV_FEDERATED_TOKEN_FILE, ENV_TENANT_ID,
};
use keyseal_keyvault::{
    AzureKeyVault, BackupConfig, CredentialConfig, CredentialKind, KeyBackups, VaultOptions,
};
pub use keyseal_testenv::keyvault::{KvEmulator, KvSetup};

/// An emulator with the default identities (`writer`, `reader`, `stranger`).
pub async fn emulator() -> KvEmulator {
    KvEmulator::start(KvSetup::default()).await.unwrap()
}

/// Connection options for `kv`: its CA added to the system's roots, the challenge-resource check
/// off (its host is not a `vault.azure.net` domain).
pub fn options(kv: &KvEmulator) -> VaultOptions {
    VaultOptions::default()
        .with_ca_file(&kv.ca_file())
        .map(|o| VaultOptions {
            verify_challenge_resource: false,
            ..o
        })
        .unwrap()
}

/// The variables a user would set for identity `name` with a client secret.
pub fn client_secret_env(kv: &KvEmulator, name: &str) -> HashMap<&'static str, String> {
    let id = kv.identity(name);
    HashMap::from([
        (ENV_TENANT_ID, kv.tenant().to_owned()),
        (ENV_CLIENT_ID, id.client_id),
        (
            ENV_CLIENT_SECRET,
            id.client_secret.expect("a client secret"),
        ),
        (ENV_AUTHORITY_HOST, kv.authority().to_owned()),
    ])
}

/// The credential `vars` select, as `CredentialConfig::from_env` would build it.
pub fn credential_from(
    kv: &KvEmulator,
    kind: Option<CredentialKind>,
    vars: &HashMap<&'static str, String>,
) -> Arc<dyn TokenCredential> {
    CredentialConfig::from_lookup(kind, |k| vars.get(k).cloned())
        .unwrap()
        .credential(&options(kv))
        .unwrap()
}

/// The vault as identity `name` (client secret) sees it.
pub fn store_as(kv: &KvEmulator, name: &str) -> AzureKeyVault {
    let credential = credential_from(kv, None, &client_secret_env(kv, name));
    AzureKeyVault::new(&kv.url, credential, &options(kv)).unwrap()
}

/// Workload-identity variables: `token_file` holds a Kubernetes service-account token.
pub fn workload_identity_env(
    kv: &KvEmulator,
    name: &str,
    token_file: &std::path::Path,
) -> HashMap<&'static str, String> {
    HashMap::from([
        (ENV_TENANT_ID, kv.tenant().to_owned()),
        (ENV_CLIENT_ID, kv.identity(name).client_id),
        (ENV_FEDERATED_TOKEN_FILE, token_file.display().to_string()),
        (ENV_AUTHORITY_HOST, kv.authority().to_owned()),
    ])
}

pub fn unique(prefix: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{prefix}{:x}{n}{:x}", std::process::id(), nanos)
}

/// Backups under `prefix`, as the `writer` identity.
pub fn backups(kv: &KvEmulator, prefix: &str) -> KeyBackups<AzureKeyVault> {
    backups_with(store_as(kv, "writer"), prefix)
}

pub fn backups_with(store: AzureKeyVault, prefix: &str) -> KeyBackups<AzureKeyVault> {
    KeyBackups::new(
        store,
        BackupConfig {
            prefix: prefix.to_owned(),
            cluster: format!("cluster-{prefix}"),
        },
    )
    .unwrap()
}

/// A key Secret as the controller creates it, with a name, labels and annotations.
pub fn key_secret(name: &str) -> (Secret, String) {
    let key = PrivateKey::generate(2048).unwrap();
    let cert =
        self_signed_certificate(&key, &CertificateParams::default(), &mut SystemRng).unwrap();
    let labels = BTreeMap::from([("app".to_owned(), "keyseal".to_owned())]);
    let annotations = BTreeMap::from([("keyseal.dev/note".to_owned(), "renewal 2".to_owned())]);
    let mut secret = new_key_secret(
        "kube-system",
        "sealed-secrets-key",
        &key,
        &cert,
        &labels,
        &annotations,
    );
    secret.metadata.name = Some(name.to_owned());
    secret.metadata.generate_name = None;
    (secret, key.public_key().fingerprint())
}

pub fn assert_no_key_material(text: &str) {
    for marker in ["-----BEGIN", "PRIVATE KEY", "LS0tLS1CRUdJTi"] {
        assert!(!text.contains(marker), "key material ({marker}) in: {text}");
    }
}
