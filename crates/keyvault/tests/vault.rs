//! Backups against a real Key Vault API over HTTPS: the vault `KEYSEAL_KEYVAULT_URL` names (with
//! `KEYSEAL_KEYVAULT_CA`), or the one `scripts/keyvault up` starts (Lowkey Vault, or the
//! emulator where Lowkey Vault's jar is not available). Each test uses its own prefix.

mod common;

use std::time::{Duration, Instant};

use common::{assert_no_key_material, backups, key_secret, unique, vault};
use keyseal_crypto::{CertificateParams, PrivateKey, SystemRng, self_signed_certificate};
use keyseal_keyvault::{
    AzureKeyVault, BackupConfig, BackupError, KEY_CONTENT_TYPE, KeyBackupStore, KeyBackups,
    SecretMeta, SecretText, VaultOptions, VaultReference, fetch_certificate_from,
};

#[tokio::test]
#[ignore = "needs a real Key Vault emulator: Lowkey Vault is not served by Maven Central (see crates/keyvault/README.md)"]
async fn backup_is_read_back_verified_and_idempotent() {
    let prefix = unique("t");
    let b = backups(&prefix);
    let (secret, fingerprint) = key_secret("sealed-secrets-keyabcde");
    let record = b.backup_key(&secret).await.unwrap();
    assert_eq!(record.name, format!("{prefix}-sealed-secrets-keyabcde"));
    assert_eq!(record.fingerprint, fingerprint);
    assert_eq!(record.namespace, "kube-system");
    assert_eq!(record.secret_name, "sealed-secrets-keyabcde");
    assert_eq!(record.cluster, format!("cluster-{prefix}"));
    assert!(record.version.is_some());
    assert!(record.created.len() >= 20, "{}", record.created);

    // What is in the vault: the content type and tags of the format.
    let stored = b.store().get(&record.name).await.unwrap().unwrap();
    assert_eq!(stored.meta.content_type.as_deref(), Some(KEY_CONTENT_TYPE));
    assert_eq!(stored.meta.tags["keyseal-fingerprint"], fingerprint);
    assert_eq!(stored.meta.tags["keyseal-secret-namespace"], "kube-system");
    assert_no_key_material(&format!("{stored:?}"));

    // A second backup of the same key writes nothing new.
    let again = b.backup_key(&secret).await.unwrap();
    assert_eq!(again.version, record.version);

    let listed = b.list_backups().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, record.name);
    assert_eq!(listed[0].fingerprint, fingerprint);
}

#[tokio::test]
#[ignore = "needs a real Key Vault emulator: Lowkey Vault is not served by Maven Central (see crates/keyvault/README.md)"]
async fn restore_gives_back_identical_secrets() {
    let b = backups(&unique("r"));
    let mut originals = Vec::new();
    for name in [
        "sealed-secrets-key11111",
        "sealed-secrets-key22222",
        "keys.v1",
    ] {
        let (secret, _) = key_secret(name);
        b.backup_key(&secret).await.unwrap();
        originals.push(secret);
    }
    let restored = b.restore_all().await.unwrap();
    assert_eq!(restored.len(), 3);
    for original in &originals {
        let back = restored
            .iter()
            .find(|r| r.as_secret().metadata.name == original.metadata.name)
            .expect("restored");
        assert_eq!(
            serde_json::to_vec(back.as_secret()).unwrap(),
            serde_json::to_vec(original).unwrap(),
            "{}",
            back.display_name()
        );
        assert_eq!(back.as_secret().data, original.data);
        assert_no_key_material(&format!("{back:?}"));
    }
}

#[tokio::test]
#[ignore = "needs a real Key Vault emulator: Lowkey Vault is not served by Maven Central (see crates/keyvault/README.md)"]
async fn clusters_sharing_a_vault_do_not_collide() {
    // The second prefix starts with the first: names alone would mix them up.
    let p1 = unique("c");
    let p2 = format!("{p1}-eu");
    let (b1, b2) = (backups(&p1), backups(&p2));
    let (s1, f1) = key_secret("sealed-secrets-keyzzzzz");
    let (s2, f2) = key_secret("sealed-secrets-keyzzzzz");
    let r1 = b1.backup_key(&s1).await.unwrap();
    let r2 = b2.backup_key(&s2).await.unwrap();
    assert_ne!(r1.name, r2.name);
    let l1 = b1.list_backups().await.unwrap();
    let l2 = b2.list_backups().await.unwrap();
    assert_eq!(l1.iter().map(|r| &r.fingerprint).collect::<Vec<_>>(), [&f1]);
    assert_eq!(l2.iter().map(|r| &r.fingerprint).collect::<Vec<_>>(), [&f2]);
    let back1 = b1.restore_all().await.unwrap();
    assert_eq!(back1.len(), 1);
    assert_eq!(back1[0].as_secret().data, s1.data);

    // Same prefix, same Secret name, another key: refused, the backup stays.
    let (other, _) = key_secret("sealed-secrets-keyzzzzz");
    let err = b1.backup_key(&other).await.unwrap_err();
    assert!(matches!(err, BackupError::Conflict { .. }), "{err}");
    assert!(!err.is_transient());
    assert_no_key_material(&format!("{err} {err:?}"));
    assert_eq!(b1.restore_all().await.unwrap()[0].as_secret().data, s1.data);
}

#[tokio::test]
#[ignore = "needs a real Key Vault emulator: Lowkey Vault is not served by Maven Central (see crates/keyvault/README.md)"]
async fn public_certificate_is_published_and_fetched() {
    let prefix = unique("p");
    let b = backups(&prefix);
    let key = PrivateKey::generate(2048).unwrap();
    let cert = self_signed_certificate(&key, &CertificateParams::default(), &mut SystemRng)
        .unwrap()
        .to_pem();
    let reference = b.publish_certificate(&cert).await.unwrap();
    assert_eq!(reference.secret_name, format!("{prefix}-sealing-cert"));
    assert_eq!(b.fetch_certificate().await.unwrap(), cert);
    // Publishing the same certificate again writes no new version.
    let before = b
        .store()
        .get(&reference.secret_name)
        .await
        .unwrap()
        .unwrap()
        .version;
    b.publish_certificate(&cert).await.unwrap();
    let after = b
        .store()
        .get(&reference.secret_name)
        .await
        .unwrap()
        .unwrap()
        .version;
    assert_eq!(before, after);

    // What `keyseal --cert azurekeyvault://…` will do: parse, connect, fetch.
    let parsed = VaultReference::parse(&reference.to_string()).unwrap();
    assert_eq!(parsed, reference);
    let by_ref =
        AzureKeyVault::emulator(&parsed.vault_url, &vault().ca, &VaultOptions::default()).unwrap();
    let fetched = fetch_certificate_from(&by_ref, &parsed.secret_name, None)
        .await
        .unwrap();
    assert_eq!(fetched, cert);
    let versioned = fetch_certificate_from(&by_ref, &parsed.secret_name, after.as_deref())
        .await
        .unwrap();
    assert_eq!(versioned, cert);

    // A private key is never handed out as a certificate.
    let (secret, _) = key_secret("sealed-secrets-keyqqqqq");
    let record = b.backup_key(&secret).await.unwrap();
    let err = fetch_certificate_from(&by_ref, &record.name, None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("private key"), "{err}");
    assert_no_key_material(&format!("{err} {err:?}"));
    let missing = fetch_certificate_from(&by_ref, &unique("nope"), None)
        .await
        .unwrap_err();
    assert!(matches!(missing, BackupError::NotFound { .. }), "{missing}");
}

#[tokio::test]
#[ignore = "needs a real Key Vault emulator: Lowkey Vault is not served by Maven Central (see crates/keyvault/README.md)"]
async fn a_foreign_secret_under_the_name_is_not_overwritten() {
    let b = backups(&unique("f"));
    let name = b.backup_name("sealed-secrets-keyfffff").unwrap();
    b.store()
        .put(
            &name,
            &SecretText::new("not a key".to_owned()),
            &SecretMeta::default(),
        )
        .await
        .unwrap();
    let (secret, _) = key_secret("sealed-secrets-keyfffff");
    let err = b.backup_key(&secret).await.unwrap_err();
    assert!(matches!(err, BackupError::Conflict { .. }), "{err}");
    assert_eq!(
        b.store().get(&name).await.unwrap().unwrap().value.expose(),
        "not a key"
    );
}

#[tokio::test]
#[ignore = "needs a real Key Vault emulator: Lowkey Vault is not served by Maven Central (see crates/keyvault/README.md)"]
async fn unreachable_vault_is_a_transient_error() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let options = VaultOptions {
        max_retries: 1,
        max_total_elapsed: Duration::from_secs(5),
        timeout: Duration::from_secs(5),
    };
    let store =
        AzureKeyVault::emulator(&format!("https://127.0.0.1:{port}"), &vault().ca, &options)
            .unwrap();
    let b = KeyBackups::new(
        store,
        BackupConfig {
            prefix: "down".to_owned(),
            cluster: "c".to_owned(),
        },
    )
    .unwrap();
    let (secret, _) = key_secret("sealed-secrets-keydddd");
    let started = Instant::now();
    let err = b.backup_key(&secret).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(matches!(err, BackupError::Unreachable { .. }), "{err:?}");
    assert!(err.is_transient());
    assert_eq!(err.reason(), "VaultUnreachable");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
    assert_no_key_material(&format!("{err} {err:?}"));
    assert!(b.list_backups().await.unwrap_err().is_transient());
}

#[tokio::test]
#[ignore = "needs a real Key Vault emulator: Lowkey Vault is not served by Maven Central (see crates/keyvault/README.md)"]
async fn wrong_ca_is_refused() {
    let other_ca = self_signed_certificate(
        &PrivateKey::generate(2048).unwrap(),
        &CertificateParams::default(),
        &mut SystemRng,
    )
    .unwrap()
    .to_pem();
    let store = AzureKeyVault::emulator(
        &vault().url,
        other_ca.as_bytes(),
        &VaultOptions {
            max_retries: 0,
            ..VaultOptions::default()
        },
    )
    .unwrap();
    let err = store.get("anything").await.unwrap_err();
    assert!(matches!(err, BackupError::Unreachable { .. }), "{err:?}");
}
