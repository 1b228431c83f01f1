#![allow(dead_code)]
//! Shared helpers of the Key Vault tests: the vault under test is: the vault `KEYSEAL_KEYVAULT_URL` names (with
//! `KEYSEAL_KEYVAULT_CA`), or the one `scripts/keyvault up` starts (Lowkey Vault, or the
//! emulator where Lowkey Vault's jar is not available). Each test uses its own prefix.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use k8s_openapi::api::core::v1::Secret;
use keyseal_api::key_secret::new_key_secret;
use keyseal_crypto::{CertificateParams, PrivateKey, SystemRng, self_signed_certificate};
use keyseal_keyvault::{AzureKeyVault, BackupConfig, KeyBackups, VaultOptions};

/// The vault under test.
pub struct Vault {
    /// Its URL.
    pub url: String,
    /// The test CA that signed its certificate (PEM).
    pub ca: Vec<u8>,
}

pub fn vault() -> &'static Vault {
    static VAULT: OnceLock<Vault> = OnceLock::new();
    VAULT.get_or_init(|| {
        let (url, ca) = match (
            std::env::var("KEYSEAL_KEYVAULT_URL"),
            std::env::var("KEYSEAL_KEYVAULT_CA"),
        ) {
            (Ok(url), Ok(ca)) if !url.is_empty() => (url, PathBuf::from(ca)),
            _ => {
                let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
                let out = Command::new(root.join("scripts/keyvault"))
                    .arg("up")
                    .output()
                    .expect("running scripts/keyvault up");
                assert!(
                    out.status.success(),
                    "scripts/keyvault up failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let text = String::from_utf8(out.stdout).unwrap();
                let get = |var: &str| {
                    text.lines()
                        .find_map(|l| l.strip_prefix(&format!("export {var}=")))
                        .unwrap_or_else(|| panic!("no {var} in: {text}"))
                        .to_owned()
                };
                (
                    get("KEYSEAL_KEYVAULT_URL"),
                    PathBuf::from(get("KEYSEAL_KEYVAULT_CA")),
                )
            }
        };
        Vault {
            url,
            ca: std::fs::read(&ca).unwrap_or_else(|e| panic!("{}: {e}", ca.display())),
        }
    })
}

pub fn store() -> AzureKeyVault {
    AzureKeyVault::emulator(&vault().url, &vault().ca, &VaultOptions::default()).unwrap()
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

pub fn backups(prefix: &str) -> KeyBackups<AzureKeyVault> {
    KeyBackups::new(
        store(),
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
