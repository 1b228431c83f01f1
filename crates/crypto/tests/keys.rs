//! Key import/export and upstream's certificate profile (COMPAT §4).

mod common;

use std::time::{Duration, SystemTime};

use common::*;
use der::{Decode, Encode};
use keyseal_crypto::{
    Certificate, CertificateParams, CryptoError, PrivateKey, PublicKey, SystemRng,
    self_signed_certificate,
};

static_assertions::assert_not_impl_any!(PrivateKey: std::fmt::Debug, std::fmt::Display, Clone);

#[test]
fn pkcs1_and_pkcs8_round_trip() {
    let key = PrivateKey::from_pem(key_pem().as_bytes()).unwrap();
    assert_eq!(
        key.to_pkcs1_pem().as_str(),
        key_pem(),
        "PKCS#1 export is byte-identical to the input"
    );
    let via8 = PrivateKey::from_pem(key.to_pkcs8_pem().as_bytes()).unwrap();
    assert_eq!(via8.public_key(), key.public_key());
    assert_eq!(*via8.to_pkcs1_der(), *key.to_pkcs1_der());
    let both = format!("{}{}", key.to_pkcs8_pem().as_str(), key_pem());
    assert_eq!(PrivateKey::all_from_pem(both.as_bytes()).unwrap().len(), 2);
    // openssl agrees the PKCS#8 export is the same key.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("k8.pem");
    std::fs::write(&p, key.to_pkcs8_pem().as_bytes()).unwrap();
    let out = std::process::Command::new("openssl")
        .args(["pkey", "-in", p.to_str().unwrap(), "-pubout"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(PublicKey::from_pem(&out.stdout).unwrap(), *key.public_key());
}

#[test]
fn public_key_forms() {
    let key = PrivateKey::from_pem(key_pem().as_bytes()).unwrap();
    let public = key.public_key();
    assert_eq!(
        PublicKey::from_pem(public.to_pem().as_bytes()).unwrap(),
        *public
    );
    let spki = spki::SubjectPublicKeyInfoRef::from_der(public.to_spki_der()).unwrap();
    let pkcs1 = spki.subject_public_key.raw_bytes();
    assert_eq!(PublicKey::from_pkcs1_der(pkcs1).unwrap(), *public);
    let dbg = format!("{public:?}");
    assert!(dbg.contains("2048") && dbg.contains("SHA256:"), "{dbg}");
}

#[test]
fn bad_keys_are_rejected_without_echoing_input() {
    for input in [
        &b"not pem"[..],
        b"-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n",
    ] {
        let err = PrivateKey::from_pem(input).err().expect("rejected");
        assert!(!err.to_string().contains("AAAA"));
    }
    assert!(matches!(
        PrivateKey::from_pem(cert_pem().as_bytes()),
        Err(CryptoError::MissingPem(_))
    ));
    assert!(matches!(
        PrivateKey::generate(1024),
        Err(CryptoError::UnsupportedKeySize(1024))
    ));
    // An EC key is not an RSA key.
    let ec = aws_lc_rs::signature::EcdsaKeyPair::generate(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
    )
    .unwrap();
    let der = ec.to_pkcs8v1().unwrap();
    assert!(matches!(
        PrivateKey::from_pkcs8_der(der.as_ref()),
        Err(CryptoError::InvalidPrivateKey("not an RSA key"))
    ));
}

#[test]
fn generated_4096_key_has_e_65537() {
    let key = PrivateKey::generate(4096).unwrap();
    assert_eq!(key.public_key().bits(), 4096);
    let pkcs1 = key.to_pkcs1_der();
    let parsed = pkcs1::RsaPrivateKeyRef::from_der(&pkcs1).unwrap();
    assert_eq!(parsed.public_exponent.as_bytes(), &[1, 0, 1]);
}

type X509 = x509_cert::Certificate;

fn extensions(cert: &X509) -> Vec<(String, bool, Vec<u8>)> {
    cert.tbs_certificate()
        .extensions()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e.extn_id.to_string(),
                e.critical,
                e.extn_value.as_bytes().to_vec(),
            )
        })
        .collect()
}

#[test]
fn certificate_has_upstreams_profile() {
    let key = PrivateKey::from_pem(key_pem().as_bytes()).unwrap();
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_735_689_600); // 2025-01-01
    let params = CertificateParams {
        common_name: String::new(),
        not_before: start,
        validity: Duration::from_secs(87_600 * 3600),
    };
    let ours = self_signed_certificate(&key, &params, &mut SystemRng).unwrap();
    let ours_x = X509::from_der(ours.to_der()).unwrap();
    let upstream_x = X509::from_der(
        Certificate::from_pem(cert_pem().as_bytes())
            .unwrap()
            .to_der(),
    )
    .unwrap();
    let (o, u) = (ours_x.tbs_certificate(), upstream_x.tbs_certificate());

    assert_eq!(o.version(), u.version());
    assert_eq!(
        o.subject().to_der().unwrap(),
        u.subject().to_der().unwrap(),
        "empty subject DN"
    );
    assert_eq!(o.issuer().to_der().unwrap(), u.issuer().to_der().unwrap());
    assert_eq!(
        o.validity().to_der().unwrap(),
        u.validity().to_der().unwrap(),
        "same dates for the same inputs"
    );
    assert_eq!(o.subject_public_key_info(), u.subject_public_key_info());
    assert_eq!(
        ours_x.signature_algorithm(),
        upstream_x.signature_algorithm()
    );
    // Same extensions, same order, same criticality, same values (SubjectKeyIdentifier included,
    // since it is derived from the key the same way Go derives it).
    assert_eq!(extensions(&ours_x), extensions(&upstream_x));
    let serial = o.serial_number().as_bytes();
    assert!(
        (15..=17).contains(&serial.len()),
        "128-bit positive serial, got {} bytes",
        serial.len()
    );
    assert_eq!(ours.not_after(), start + Duration::from_secs(87_600 * 3600));

    // The signature verifies under the certified key.
    let spki = o.subject_public_key_info();
    let public = aws_lc_rs::signature::UnparsedPublicKey::new(
        &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
        spki.subject_public_key.raw_bytes(),
    );
    public
        .verify(&o.to_der().unwrap(), ours_x.signature().raw_bytes())
        .expect("self-signature verifies");
}

#[test]
fn certificate_common_name_and_serials() {
    let key = PrivateKey::generate(2048).unwrap();
    let params = CertificateParams {
        common_name: "sealed-secret".into(),
        ..CertificateParams::default()
    };
    let a = self_signed_certificate(&key, &params, &mut SystemRng).unwrap();
    let b = self_signed_certificate(&key, &params, &mut SystemRng).unwrap();
    let ax = X509::from_der(a.to_der()).unwrap();
    let bx = X509::from_der(b.to_der()).unwrap();
    assert_eq!(
        ax.tbs_certificate().subject().to_string(),
        "CN=sealed-secret"
    );
    assert_eq!(
        ax.tbs_certificate().issuer(),
        ax.tbs_certificate().subject()
    );
    assert_ne!(
        ax.tbs_certificate().serial_number(),
        bx.tbs_certificate().serial_number()
    );
    assert_eq!(Certificate::from_pem(a.to_pem().as_bytes()).unwrap(), a);
    // openssl reads it.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.pem");
    std::fs::write(&p, a.to_pem()).unwrap();
    let out = std::process::Command::new("openssl")
        .args([
            "x509",
            "-in",
            p.to_str().unwrap(),
            "-noout",
            "-ext",
            "keyUsage,basicConstraints",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("critical") && text.contains("Encipher Only") && text.contains("CA:TRUE"),
        "{text}"
    );
}

#[test]
fn expired_certificate_is_refused_with_upstreams_message() {
    let key = PrivateKey::generate(2048).unwrap();
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_577_836_800); // 2020-01-01
    let params = CertificateParams {
        common_name: String::new(),
        not_before: start,
        validity: Duration::from_secs(86_400 * 45),
    };
    let cert = self_signed_certificate(&key, &params, &mut SystemRng).unwrap();
    let err = cert.sealing_key(SystemTime::now()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "failed to encrypt using an expired certificate on February 15, 2020"
    );
    assert!(
        cert.sealing_key(start + Duration::from_secs(86_400))
            .is_ok()
    );
    let valid = Certificate::from_pem(cert_pem().as_bytes()).unwrap();
    assert!(valid.sealing_key(SystemTime::now()).is_ok());
}

#[test]
fn garbage_certificates_are_rejected() {
    assert!(matches!(
        Certificate::from_pem(b"nothing"),
        Err(CryptoError::MissingPem("CERTIFICATE"))
    ));
    let err =
        Certificate::from_pem(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
            .unwrap_err();
    assert!(err.to_string().starts_with("invalid certificate"), "{err}");
}
