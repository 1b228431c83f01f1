//! `keyseal --cert azurekeyvault://<vault>/<secret>`: sealing with a certificate published in
//! Azure Key Vault, against the Key Vault test server (HTTPS, its own CA and Entra endpoint), with
//! the credential and TLS settings a user of a vault outside the public clouds would give.

mod util;

use keyseal_keyvault::{AzureKeyVault, BackupConfig, KeyBackups, VaultOptions};
use keyseal_testenv::keyvault::{KvEmulator, KvSetup};
use util::*;

/// An emulator where `writer` has published the test certificate as `ci-sealing-cert`, and a
/// key backup sits beside it.
async fn vault_with_certificate() -> (KvEmulator, String) {
    let kv = KvEmulator::start(KvSetup::default()).await.unwrap();
    let options = VaultOptions {
        verify_challenge_resource: false,
        ..VaultOptions::default()
    }
    .with_ca_file(&kv.ca_file())
    .unwrap();
    let writer = kv.identity("writer");
    let vars = [
        ("AZURE_TENANT_ID", kv.tenant().to_owned()),
        ("AZURE_CLIENT_ID", writer.client_id),
        ("AZURE_CLIENT_SECRET", writer.client_secret.unwrap()),
        ("AZURE_AUTHORITY_HOST", kv.authority().to_owned()),
    ];
    let credential = keyseal_keyvault::CredentialConfig::from_lookup(None, |k| {
        vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())
    })
    .unwrap()
    .credential(&options)
    .unwrap();
    let backups = KeyBackups::new(
        AzureKeyVault::new(&kv.url, credential, &options).unwrap(),
        BackupConfig {
            prefix: "ci".into(),
            cluster: "test".into(),
        },
    )
    .unwrap();
    let reference = backups
        .publish_certificate(&key().1.to_pem())
        .await
        .unwrap();
    let key_secret = keyseal_api::key_secret::new_key_secret(
        "kube-system",
        "sealed-secrets-key",
        &key().0,
        &key().1,
        &Default::default(),
        &Default::default(),
    );
    let mut key_secret = key_secret;
    key_secret.metadata.name = Some("sealed-secrets-keyabcde".into());
    backups.backup_key(&key_secret).await.unwrap();
    let url = format!(
        "azurekeyvault://{}/{}",
        kv.url.trim_start_matches("https://"),
        reference.secret_name
    );
    (kv, url)
}

/// The environment of a CI job signed in as `identity`.
fn env_as(kv: &KvEmulator, identity: &str) -> Env {
    let mut env = Env::new();
    let id = kv.identity(identity);
    env.set("AZURE_TENANT_ID", kv.tenant());
    env.set("AZURE_CLIENT_ID", &id.client_id);
    env.set("AZURE_CLIENT_SECRET", &id.client_secret.unwrap());
    env.set("AZURE_AUTHORITY_HOST", kv.authority());
    env
}

#[tokio::test]
async fn a_reader_seals_with_the_published_certificate() {
    let (kv, url) = vault_with_certificate().await;
    let ca = kv.ca_file().display().to_string();
    let env = env_as(&kv, "reader");
    let secret = secret("app", Some("ns"), &[("k", "from the vault's cert")]);
    let flags = [
        "--cert",
        &url,
        "--keyvault-ca-file",
        &ca,
        "--keyvault-disable-challenge-resource-verification",
    ];
    let run = env.run(&flags, &secret).ok();
    let sealed = keyseal_api::input::sealed_secrets(&run.stdout)
        .unwrap()
        .remove(0);
    assert_eq!(
        open_value(&sealed.spec.encrypted_data["k"], "ns/app").as_deref(),
        Some("from the vault's cert")
    );

    // SSL_CERT_FILE instead of the flag (it replaces the system's roots), and the flags as
    // environment variables.
    let mut env = env_as(&kv, "reader");
    env.set("SSL_CERT_FILE", &ca);
    env.set(
        "KEYSEAL_KEYVAULT_DISABLE_CHALLENGE_RESOURCE_VERIFICATION",
        "true",
    );
    env.run(&["--cert", &url], &secret).ok();

    // `keyseal keys publish-cert` as the writer: the same certificate again writes nothing and
    // prints the same reference; the reader may not publish.
    let mut writer = env_as(&kv, "writer");
    writer.set(
        "KEYSEAL_KEYVAULT_DISABLE_CHALLENGE_RESOURCE_VERIFICATION",
        "true",
    );
    writer.set("KEYSEAL_KEYVAULT_CA_FILE", &ca);
    let publish = [
        "keys",
        "publish-cert",
        "--cert",
        "cert.pem",
        "--keyvault-url",
        &kv.url,
        "--prefix",
        "ci",
    ];
    let printed = writer.run(&publish, "").ok().stdout;
    assert_eq!(printed.trim(), url);
    let before = kv.requests().await.unwrap().get("set").copied();
    writer.run(&publish, "").ok();
    assert_eq!(kv.requests().await.unwrap().get("set").copied(), before);
    // The reader sees that the same certificate is there (it may read it), but may not write
    // another.
    env.run(&publish, "").ok();
    env.write("other.pem", &expired_cert_pem());
    let mut other = publish;
    other[3] = "other.pem";
    env.run(&other, "").fails_with("HTTP 403");

    // A specific version.
    let versioned = format!("{url}/{}", "0".repeat(32));
    env.run(&["--cert", &versioned], &secret)
        .fails_with("has no secret ci-sealing-cert");
}

#[tokio::test]
async fn refusals_are_explained() {
    let (kv, url) = vault_with_certificate().await;
    let ca = kv.ca_file().display().to_string();
    let trusted = ["--keyvault-ca-file", ca.as_str()];
    let secret = secret("app", Some("ns"), &[("k", "v")]);
    let with = |extra: &[&str]| -> Vec<String> {
        let mut flags: Vec<String> = vec!["--cert".into(), url.clone()];
        flags.extend(extra.iter().map(|s| s.to_string()));
        flags
    };
    let run = |env: &Env, flags: &[String]| {
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        env.run(&flags, &secret)
    };
    let off = "--keyvault-disable-challenge-resource-verification";

    // No role on the certificate.
    let r = run(
        &env_as(&kv, "stranger"),
        &with(&[trusted[0], trusted[1], off]),
    )
    .fails_with("HTTP 403");
    assert!(
        r.stderr.contains("hint: the identity has no role"),
        "{}",
        r.stderr
    );
    // The reader may read certificates only, not the key backup beside them.
    let key_url = url.replace("ci-sealing-cert", "ci-sealed-secrets-keyabcde");
    let mut flags = with(&[trusted[0], trusted[1], off]);
    flags[1] = key_url;
    run(&env_as(&kv, "reader"), &flags).fails_with("HTTP 403");
    // The vault's own CA not trusted.
    let r = run(&env_as(&kv, "reader"), &with(&[off])).fails_with("cannot read the certificate");
    assert!(r.stderr.contains("--keyvault-ca-file"), "{}", r.stderr);
    // The SDK's challenge check is on by default: this host is not a vault domain.
    let r = run(&env_as(&kv, "reader"), &with(&trusted)).fails_with("cannot read the certificate");
    assert!(r.stderr.contains(off), "{}", r.stderr);
    // A wrong client secret.
    let mut env = env_as(&kv, "reader");
    env.set("AZURE_CLIENT_SECRET", "wrong");
    let r = run(&env, &with(&[trusted[0], trusted[1], off])).fails_with("AADSTS7000215");
    assert!(
        !r.stderr.contains("wrong"),
        "no secret in errors: {}",
        r.stderr
    );
    // A malformed reference.
    env.run(&["--cert", "azurekeyvault://vault.example"], &secret)
        .fails_with("no secret name");
}

/// Disaster recovery from the vault: `--recovery-private-key azurekeyvault://<vault>/<prefix>`
/// reads every key backed up under the prefix, as an identity allowed to read them; others are
/// refused with the reason, and a prefix without backups says so.
#[tokio::test]
async fn recovery_unseal_reads_the_keys_backed_up_in_the_vault() {
    let (kv, cert_url) = vault_with_certificate().await;
    let ca = kv.ca_file().display().to_string();
    let keys_url = cert_url.replace("/ci-sealing-cert", "/ci");
    let env = env_as(&kv, "writer");
    // Sealed offline with the certificate of the backed-up key.
    env.write("cert.pem", &key().1.to_pem());
    let sealed = env
        .run(
            &["--cert", env.path("cert.pem").to_str().unwrap()],
            &secret("db", Some("shop"), &[("password", "back from the vault")]),
        )
        .ok()
        .stdout;
    let recover = |env: &Env, from: &str| {
        env.run(
            &[
                "--recovery-unseal",
                "--recovery-private-key",
                from,
                "--keyvault-ca-file",
                &ca,
                "--keyvault-disable-challenge-resource-verification",
            ],
            &sealed,
        )
    };
    let secret = recover(&env, &keys_url).ok().one_secret();
    assert_eq!(
        secret.data.unwrap()["password"].0,
        b"back from the vault".to_vec()
    );

    // The reader may read the certificate only, not the key backups.
    let r = recover(&env_as(&kv, "reader"), &keys_url).fails_with("cannot read the key backups");
    assert!(r.stderr.contains("HTTP 403"), "{}", r.stderr);
    // Another cluster's prefix: nothing there.
    let other = cert_url.replace("/ci-sealing-cert", "/other");
    recover(&env, &other).fails_with("no key backups under the prefix \"other\"");
    // A version is not a prefix.
    recover(
        &env,
        &format!("{keys_url}/0123456789abcdef0123456789abcdef"),
    )
    .fails_with("key backups are read by their prefix");
}

/// A key Secret of the controller's layout in `namespace`, named by the API server.
async fn create_key_secret(api: &kube::Api<k8s_openapi::api::core::v1::Secret>) -> String {
    let key = keyseal_crypto::PrivateKey::generate(2048).unwrap();
    let params = keyseal_crypto::CertificateParams {
        common_name: String::new(),
        not_before: std::time::SystemTime::now(),
        validity: std::time::Duration::from_secs(86_400),
    };
    let cert =
        keyseal_crypto::self_signed_certificate(&key, &params, &mut keyseal_crypto::SystemRng)
            .unwrap();
    let secret = keyseal_api::key_secret::new_key_secret(
        "ignored",
        "sealed-secrets-key",
        &key,
        &cert,
        &Default::default(),
        &Default::default(),
    );
    let mut secret = secret;
    secret.metadata.namespace = None;
    let created = api
        .create(&kube::api::PostParams::default(), &secret)
        .await
        .unwrap();
    created.metadata.name.unwrap()
}

/// The key Secrets of `api`'s namespace: name → (labels, type, data).
async fn key_secrets_in(
    api: &kube::Api<k8s_openapi::api::core::v1::Secret>,
) -> std::collections::BTreeMap<String, String> {
    api.list(&kube::api::ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|s| s.type_.as_deref() == Some("kubernetes.io/tls"))
        .map(|s| {
            let summary = serde_json::to_string(&(&s.metadata.labels, &s.type_, &s.data)).unwrap();
            (s.metadata.name.unwrap(), summary)
        })
        .collect()
}

/// `keyseal keys backup` and `keyseal keys restore`: a cluster's key Secrets to the vault (read
/// back and verified) or a file, and back into another namespace exactly as they were, all or
/// nothing, never overwriting a different key; identities without the role are refused.
#[tokio::test]
async fn keys_are_backed_up_and_restored_exactly() {
    use k8s_openapi::api::core::v1::Secret;
    let (kv, _) = vault_with_certificate().await;
    let cluster = keyseal_testenv::Cluster::connect().await.unwrap();
    let kubeconfig = cluster.kubeconfig_path().unwrap().display().to_string();
    let source = cluster.namespace("keys-backup").await.unwrap();
    let sapi: kube::Api<Secret> = kube::Api::namespaced(cluster.client(), source.name());
    let names = [
        create_key_secret(&sapi).await,
        create_key_secret(&sapi).await,
    ];
    let original = key_secrets_in(&sapi).await;
    assert_eq!(original.len(), 2);

    let ca = kv.ca_file().display().to_string();
    let vault = |env: &mut Env| {
        env.set("KUBECONFIG", &kubeconfig);
        env.set("KEYSEAL_KEYVAULT_URL", &kv.url);
        env.set("KEYSEAL_KEYVAULT_PREFIX", "prod");
        env.set("KEYSEAL_KEYVAULT_CA_FILE", &ca);
        env.set(
            "KEYSEAL_KEYVAULT_DISABLE_CHALLENGE_RESOURCE_VERIFICATION",
            "true",
        );
    };
    let mut writer = env_as(&kv, "writer");
    vault(&mut writer);
    let keys = |line: &str| -> Vec<String> { args(line).iter().map(|s| s.to_string()).collect() };
    let run = |env: &Env, line: String| {
        let owned = keys(&line);
        let argv: Vec<&str> = owned.iter().map(String::as_str).collect();
        env.run(&argv, "")
    };
    let ns = |n: &str| format!("--controller-namespace {n}");

    // To the vault, verified; again: nothing new is written, nothing fails.
    let out = run(&writer, format!("keys backup {}", ns(source.name())))
        .ok()
        .stdout;
    for name in &names {
        assert!(
            out.lines()
                .any(|l| l.starts_with(name.as_str()) && l.ends_with("(verified)")),
            "{out}"
        );
    }
    run(&writer, format!("keys backup {}", ns(source.name()))).ok();
    // The inventory: both keys in the cluster, the newer sealing, each verified in the vault.
    let inventory = run(&writer, format!("keys list {}", ns(source.name())))
        .ok()
        .stdout;
    for name in &names {
        let line = inventory
            .lines()
            .find(|l| l.contains(name.as_str()))
            .unwrap_or_else(|| panic!("{name} missing:\n{inventory}"));
        assert!(line.ends_with(" verified"), "{line}");
    }
    assert_eq!(inventory.matches("\tsealing\t").count(), 1, "{inventory}");
    assert_eq!(inventory.matches("\tactive\t").count(), 1, "{inventory}");
    // To a file, as `kubectl get secret -o yaml` lists them, for the owner only.
    run(
        &writer,
        format!("keys backup {} --to-file keys.yaml", ns(source.name())),
    )
    .ok();
    assert_eq!(writer.mode("keys.yaml") & 0o777, 0o600);
    let from_file =
        keyseal_api::key_secret::keys_from_backup(writer.read("keys.yaml").as_bytes()).unwrap();
    assert_eq!(from_file.len(), 2);

    // Into an empty namespace: the dry run writes nothing, the restore writes them exactly.
    let fresh = cluster.namespace("keys-restore").await.unwrap();
    let fapi: kube::Api<Secret> = kube::Api::namespaced(cluster.client(), fresh.name());
    let dry = run(
        &writer,
        format!("keys restore --dry-run {}", ns(fresh.name())),
    )
    .ok()
    .stdout;
    assert_eq!(
        dry.matches("would be created (dry run)").count(),
        2,
        "{dry}"
    );
    assert!(
        key_secrets_in(&fapi).await.is_empty(),
        "a dry run writes nothing"
    );
    let out = run(&writer, format!("keys restore {}", ns(fresh.name())))
        .ok()
        .stdout;
    assert_eq!(out.matches(" created").count(), 2, "{out}");
    assert_eq!(key_secrets_in(&fapi).await, original, "restored exactly");
    let again = run(&writer, format!("keys restore {}", ns(fresh.name())))
        .ok()
        .stdout;
    assert_eq!(again.matches("already there").count(), 2, "{again}");

    // From the file, into another namespace.
    let other = cluster.namespace("keys-from-file").await.unwrap();
    let oapi: kube::Api<Secret> = kube::Api::namespaced(cluster.client(), other.name());
    run(
        &writer,
        format!("keys restore --from-file keys.yaml {}", ns(other.name())),
    )
    .ok();
    assert_eq!(key_secrets_in(&oapi).await, original);

    // A different key under a backed-up name: refused, and nothing written at all.
    let clash = cluster.namespace("keys-clash").await.unwrap();
    let capi: kube::Api<Secret> = kube::Api::namespaced(cluster.client(), clash.name());
    let stranger_key = create_key_secret(&capi).await;
    let mut taken: Secret = capi.get(&stranger_key).await.unwrap();
    taken.metadata = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        name: Some(names[1].clone()),
        labels: taken.metadata.labels,
        ..Default::default()
    };
    capi.create(&kube::api::PostParams::default(), &taken)
        .await
        .unwrap();
    run(&writer, format!("keys restore {}", ns(clash.name())))
        .fails_with("does not hold the backed-up key");
    assert!(
        !key_secrets_in(&capi).await.contains_key(&names[0]),
        "all or nothing"
    );

    // The reader may read the published certificate only.
    let mut reader = env_as(&kv, "reader");
    vault(&mut reader);
    let r = run(&reader, format!("keys backup {}", ns(source.name())))
        .fails_with("cannot back up the key Secret");
    assert!(r.stderr.contains("HTTP 403"), "{}", r.stderr);
    run(
        &reader,
        format!("keys restore --dry-run {}", ns(fresh.name())),
    )
    .fails_with("HTTP 403");
    // Nothing to back up.
    let empty = cluster.namespace("keys-none").await.unwrap();
    run(&writer, format!("keys backup {}", ns(empty.name())))
        .fails_with("no sealing key Secrets in the namespace");
}
