//! Key Secrets in upstream's layout, and key backups in every form kubeseal accepts.

use std::collections::BTreeMap;

use keyseal_api::key_secret::*;
use keyseal_crypto::{CertificateParams, PrivateKey, SystemRng, self_signed_certificate};

#[test]
fn key_secret_layout_and_round_trip() {
    let key = PrivateKey::generate(2048).unwrap();
    let cert =
        self_signed_certificate(&key, &CertificateParams::default(), &mut SystemRng).unwrap();
    let labels = BTreeMap::from([("team".to_string(), "x".to_string())]);
    let secret = new_key_secret(
        "kube-system",
        DEFAULT_KEY_PREFIX,
        &key,
        &cert,
        &labels,
        &BTreeMap::new(),
    );
    assert_eq!(
        secret.metadata.generate_name.as_deref(),
        Some("sealed-secrets-key")
    );
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
    let l = secret.metadata.labels.as_ref().unwrap();
    assert_eq!(l["sealedsecrets.bitnami.com/sealed-secrets-key"], "active");
    assert_eq!(l["team"], "x");
    let data = secret.data.as_ref().unwrap();
    assert!(
        data["tls.key"]
            .0
            .starts_with(b"-----BEGIN RSA PRIVATE KEY-----\n")
    );
    assert!(
        data["tls.crt"]
            .0
            .starts_with(b"-----BEGIN CERTIFICATE-----\n")
    );
    assert!(is_sealing_key_secret(&secret, DEFAULT_KEY_PREFIX));
    let loaded = parse_key_secret(&secret).unwrap();
    assert_eq!(loaded.key.public_key(), key.public_key());
    assert_eq!(loaded.certificate, cert);

    let yaml = serde_saphyr::to_string(&secret).unwrap();
    let from_yaml = keys_from_backup(yaml.as_bytes()).unwrap();
    assert_eq!(from_yaml[0].public_key(), key.public_key());
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": [secret.clone(), secret.clone()]});
    assert_eq!(
        keys_from_backup(list.to_string().as_bytes()).unwrap().len(),
        2
    );
    let pems = format!(
        "{}{}",
        key.to_pkcs1_pem().as_str(),
        PrivateKey::generate(2048).unwrap().to_pkcs8_pem().as_str()
    );
    assert_eq!(keys_from_backup(pems.as_bytes()).unwrap().len(), 2);
    assert!(keys_from_backup(b"kind: Secret\nmetadata: {name: x}\n").is_err());
}

#[test]
fn which_secrets_are_keys() {
    let mut s = k8s_openapi::api::core::v1::Secret::default();
    s.metadata.name = Some("sealed-secrets-key".into());
    assert!(
        is_sealing_key_secret(&s, "sealed-secrets-key"),
        "legacy name"
    );
    s.metadata.name = Some("sealed-secrets-keyabcde".into());
    assert!(!is_sealing_key_secret(&s, "sealed-secrets-key"));
    s.metadata.labels = Some(BTreeMap::from([(
        "sealedsecrets.bitnami.com/sealed-secrets-key".into(),
        "compromised".into(),
    )]));
    assert!(
        !is_sealing_key_secret(&s, "sealed-secrets-key"),
        "only active keys load"
    );
}

#[test]
fn malformed_key_secrets_name_the_item_without_key_bytes() {
    let key = PrivateKey::generate(2048).unwrap();
    let other = PrivateKey::generate(2048).unwrap();
    let cert =
        self_signed_certificate(&other, &CertificateParams::default(), &mut SystemRng).unwrap();
    let mut secret = new_key_secret("ks", "p", &key, &cert, &BTreeMap::new(), &BTreeMap::new());
    secret.metadata.name = Some("p1".into());
    let e = parse_key_secret(&secret).err().unwrap();
    assert_eq!(
        e.to_string(),
        "key Secret ks/p1: tls.crt does not certify the key in tls.key"
    );
    secret.data.as_mut().unwrap().insert(
        "tls.key".into(),
        k8s_openapi::ByteString(b"garbage".to_vec()),
    );
    let e = parse_key_secret(&secret).err().unwrap();
    assert!(
        e.to_string().starts_with("key Secret ks/p1: tls.key:"),
        "{e}"
    );
    secret.data.as_mut().unwrap().remove("tls.crt");
    secret.data.as_mut().unwrap().insert(
        "tls.key".into(),
        k8s_openapi::ByteString(key.to_pkcs1_pem().as_bytes().to_vec()),
    );
    let e = parse_key_secret(&secret).err().unwrap();
    assert_eq!(e.to_string(), "key Secret ks/p1 has no tls.crt item");
}
