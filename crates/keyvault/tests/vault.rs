//! Backups through the official Azure SDK against the Key Vault test server (HTTPS, its own CA,
//! tokens from its Entra ID endpoint, roles checked): see `common`. Each test starts its own.

mod common;

use std::time::{Duration, Instant};

use common::{
    assert_no_key_material, backups, backups_with, emulator, key_secret, options, store_as, unique,
};
use keyseal_crypto::{CertificateParams, PrivateKey, SystemRng, self_signed_certificate};
use keyseal_keyvault::{
    AzureKeyVault, BackupError, KEY_CONTENT_TYPE, KeyBackupStore, SecretMeta, SecretText,
    VaultOptions, VaultReference, fetch_certificate_from,
};

#[tokio::test]
async fn backup_is_read_back_verified_and_idempotent() {
    let kv = emulator().await;
    let prefix = unique("t");
    let b = backups(&kv, &prefix);
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
async fn restore_gives_back_identical_secrets() {
    let kv = emulator().await;
    let b = backups(&kv, &unique("r"));
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
async fn clusters_sharing_a_vault_do_not_collide() {
    let kv = emulator().await;
    // The second prefix starts with the first: names alone would mix them up.
    let p1 = unique("c");
    let p2 = format!("{p1}-eu");
    let (b1, b2) = (backups(&kv, &p1), backups(&kv, &p2));
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
async fn public_certificate_is_published_and_fetched() {
    let kv = emulator().await;
    let prefix = unique("p");
    let b = backups(&kv, &prefix);
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
    // A CI job that may only read the published certificate.
    assert_eq!(parsed.vault_url, kv.url);
    let by_ref = store_as(&kv, "reader");
    let fetched = fetch_certificate_from(&by_ref, &parsed.secret_name, None)
        .await
        .unwrap();
    assert_eq!(fetched, cert);
    let versioned = fetch_certificate_from(&by_ref, &parsed.secret_name, after.as_deref())
        .await
        .unwrap();
    assert_eq!(versioned, cert);

    // A private key is never handed out as a certificate (the writer may read it; the reader may
    // not even do that).
    let (secret, _) = key_secret("sealed-secrets-keyqqqqq");
    let record = b.backup_key(&secret).await.unwrap();
    let err = fetch_certificate_from(b.store(), &record.name, None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("private key"), "{err}");
    assert_no_key_material(&format!("{err} {err:?}"));
    let denied = fetch_certificate_from(&by_ref, &record.name, None)
        .await
        .unwrap_err();
    assert!(
        matches!(denied, BackupError::Service { status: 403, .. }),
        "{denied}"
    );
    assert_no_key_material(&format!("{denied} {denied:?}"));
    let missing = fetch_certificate_from(b.store(), &unique("nope"), None)
        .await
        .unwrap_err();
    assert!(matches!(missing, BackupError::NotFound { .. }), "{missing}");
}

#[tokio::test]
async fn a_foreign_secret_under_the_name_is_not_overwritten() {
    let kv = emulator().await;
    let b = backups(&kv, &unique("f"));
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
async fn unreachable_vault_is_a_transient_error() {
    // A port nobody listens on.
    let port = keyseal_testenv::free_port().unwrap();
    let kv = emulator().await;
    let options = VaultOptions {
        max_retries: 1,
        max_total_elapsed: Duration::from_secs(5),
        timeout: Duration::from_secs(5),
        ..options(&kv)
    };
    let credential = common::credential_from(&kv, None, &common::client_secret_env(&kv, "writer"));
    let store =
        AzureKeyVault::new(&format!("https://127.0.0.1:{port}"), credential, &options).unwrap();
    let b = backups_with(store, "down");
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
async fn wrong_ca_is_refused() {
    let other_ca = self_signed_certificate(
        &PrivateKey::generate(2048).unwrap(),
        &CertificateParams::default(),
        &mut SystemRng,
    )
    .unwrap()
    .to_pem();
    let kv = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("other-ca.pem"), other_ca).unwrap();
    let wrong = VaultOptions {
        max_retries: 0,
        verify_challenge_resource: false,
        ..VaultOptions::default()
    }
    .with_ca_file(&dir.path().join("other-ca.pem"))
    .unwrap();
    let credential = common::credential_from(&kv, None, &common::client_secret_env(&kv, "writer"));
    let store = AzureKeyVault::new(&kv.url, credential, &wrong).unwrap();
    let err = store.get("anything").await.unwrap_err();
    assert!(
        matches!(
            err,
            BackupError::Unreachable { .. } | BackupError::Credential { .. }
        ),
        "{err:?}"
    );
}

/// The production path of the controller in AKS: workload identity. A Kubernetes
/// service-account token (audience `api://AzureADTokenExchange`) in `AZURE_FEDERATED_TOKEN_FILE`
/// is exchanged for a Key Vault token at `AZURE_AUTHORITY_HOST`; the server checks it against the
/// cluster's published keys and the identity's federated credential. Another service account of
/// the same cluster is refused.
#[tokio::test]
async fn workload_identity_backs_up_and_others_are_refused() {
    use k8s_openapi::api::core::v1::ServiceAccount;
    use keyseal_keyvault::CredentialKind;
    use keyseal_testenv::Cluster;
    use keyseal_testenv::keyvault::TOKEN_EXCHANGE_AUDIENCE;

    let cluster = Cluster::connect().await.unwrap();
    let ns = cluster.namespace("kv-wi").await.unwrap();
    let sa_api = kube::Api::<ServiceAccount>::namespaced(cluster.client(), ns.name());
    for name in ["sealed-secrets-controller", "other"] {
        let mut sa = ServiceAccount::default();
        sa.metadata.name = Some(name.to_owned());
        sa_api.create(&Default::default(), &sa).await.unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let setup = common::KvSetup::default()
        .federate(
            &cluster,
            "writer",
            ns.name(),
            "sealed-secrets-controller",
            dir.path(),
        )
        .await
        .unwrap();
    let kv = common::KvEmulator::start(setup).await.unwrap();

    let token_file = dir.path().join("azure-identity-token");
    let token = cluster
        .token(
            ns.name(),
            "sealed-secrets-controller",
            &[TOKEN_EXCHANGE_AUDIENCE],
        )
        .await
        .unwrap();
    std::fs::write(&token_file, token).unwrap();
    let vars = common::workload_identity_env(&kv, "writer", &token_file);
    // Inferred from the variables, as Azure's SDKs infer it.
    let credential = common::credential_from(&kv, None, &vars);
    let store = AzureKeyVault::new(&kv.url, credential, &options(&kv)).unwrap();
    let b = backups_with(store, "wi");
    let (secret, fingerprint) = key_secret("sealed-secrets-keywwwww");
    assert_eq!(
        b.backup_key(&secret).await.unwrap().fingerprint,
        fingerprint
    );

    // A token of another service account: no federated credential matches it.
    let other_file = dir.path().join("other-token");
    let other = cluster
        .token(ns.name(), "other", &[TOKEN_EXCHANGE_AUDIENCE])
        .await
        .unwrap();
    std::fs::write(&other_file, other).unwrap();
    let vars = common::workload_identity_env(&kv, "writer", &other_file);
    let credential = common::credential_from(&kv, Some(CredentialKind::WorkloadIdentity), &vars);
    let store = AzureKeyVault::new(&kv.url, credential, &options(&kv)).unwrap();
    let err = store.get("wi-sealed-secrets-keywwwww").await.unwrap_err();
    assert!(matches!(err, BackupError::Credential { .. }), "{err:?}");
    assert!(err.to_string().contains("AADSTS70021"), "{err}");
    // The right account's token for another audience is refused too.
    let wrong_audience = cluster
        .token(
            ns.name(),
            "sealed-secrets-controller",
            &["https://kubernetes.default.svc"],
        )
        .await
        .unwrap();
    std::fs::write(&other_file, wrong_audience).unwrap();
    let credential = common::credential_from(&kv, Some(CredentialKind::WorkloadIdentity), &vars);
    let store = AzureKeyVault::new(&kv.url, credential, &options(&kv)).unwrap();
    let err = store.get("wi-sealed-secrets-keywwwww").await.unwrap_err();
    assert!(err.to_string().contains("AADSTS70021"), "{err}");
    assert_eq!(
        kv.requests().await.unwrap().get("set").copied(),
        Some(1),
        "only the federated identity wrote"
    );
}

/// An identity without a role is refused with Key Vault's 403; a token past its expiry with
/// the 401 challenge, also after the SDK's one retry with a fresh token from a credential that
/// only has that expired one.
#[tokio::test]
async fn a_stranger_and_an_expired_token_are_refused() {
    let kv = emulator().await;
    let b = backups(&kv, "s");
    let (secret, _) = key_secret("sealed-secrets-keysssss");
    let record = b.backup_key(&secret).await.unwrap();

    let stranger = store_as(&kv, "stranger");
    for err in [
        stranger.get(&record.name).await.unwrap_err(),
        stranger.list().await.unwrap_err(),
        stranger
            .put("s-x", &SecretText::new("v".into()), &SecretMeta::default())
            .await
            .unwrap_err(),
    ] {
        assert!(
            matches!(err, BackupError::Service { status: 403, .. }),
            "{err:?}"
        );
        assert!(!err.is_transient());
    }

    #[derive(Debug)]
    struct Fixed(String);
    #[async_trait::async_trait]
    impl azure_core::credentials::TokenCredential for Fixed {
        async fn get_token(
            &self,
            _: &[&str],
            _: Option<azure_core::credentials::TokenRequestOptions<'_>>,
        ) -> azure_core::Result<azure_core::credentials::AccessToken> {
            Ok(azure_core::credentials::AccessToken::new(
                self.0.clone(),
                time::OffsetDateTime::now_utc() + time::Duration::hours(1),
            ))
        }
    }
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let expired = kv
        .sign_token(&kv.token_claims("writer", now - 7200, 3600))
        .unwrap();
    let store =
        AzureKeyVault::new(&kv.url, std::sync::Arc::new(Fixed(expired)), &options(&kv)).unwrap();
    let err = store.get(&record.name).await.unwrap_err();
    assert!(
        matches!(err, BackupError::Service { status: 401, .. }),
        "{err:?}"
    );
    // The same claims, still valid, are accepted: only the expiry made the difference.
    let valid = kv
        .sign_token(&kv.token_claims("writer", now, 3600))
        .unwrap();
    let store =
        AzureKeyVault::new(&kv.url, std::sync::Arc::new(Fixed(valid)), &options(&kv)).unwrap();
    assert!(store.get(&record.name).await.unwrap().is_some());
}
