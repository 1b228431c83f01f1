//! Interop with an independent implementation (`rsa` + `aes-gcm`) in both directions, and with
//! the `openssl` command line for the RSA-OAEP step.

mod common;

use std::process::Command;

use common::*;
use keyseal_crypto::{PrivateKey, open, seal};
use proptest::prelude::*;

fn keys_2048() -> &'static (PrivateKey, rsa::PrivateKey) {
    static KEYS: std::sync::OnceLock<(PrivateKey, rsa::PrivateKey)> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        let ours = PrivateKey::generate(2048).unwrap();
        let theirs = reference_key(&ours.to_pkcs1_der());
        (ours, theirs)
    })
}

#[test]
fn rsa_4096_both_directions() {
    let ours = PrivateKey::generate(4096).unwrap();
    let theirs = reference_key(&ours.to_pkcs1_der());
    let plaintext = b"a value sealed for a 4096-bit key";
    let sealed = seal(ours.public_key(), b"ns/name", plaintext).unwrap();
    assert_eq!(sealed.len(), 2 + 512 + plaintext.len() + 16);
    assert_eq!(
        keyseal_crypto::encode_base64(&sealed)[..2],
        *"Ag",
        "RSA-4096 values start with Ag"
    );
    assert_eq!(
        reference_open(&theirs, "ns/name", &sealed).as_deref(),
        Some(&plaintext[..])
    );
    assert_eq!(reference_open(&theirs, "ns/other", &sealed), None);

    let sealed = reference_seal(&theirs.to_public_key(), "ns", plaintext);
    assert_eq!(
        &open([&ours], b"ns", &sealed).unwrap().plaintext[..],
        plaintext
    );
    assert!(open([&ours], b"ns/name", &sealed).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    #[test]
    fn ours_to_reference(plaintext in proptest::collection::vec(any::<u8>(), 0..2048), label in "[a-z0-9/-]{0,40}") {
        let (ours, theirs) = keys_2048();
        let sealed = seal(ours.public_key(), label.as_bytes(), &plaintext).unwrap();
        prop_assert_eq!(reference_open(theirs, &label, &sealed), Some(plaintext));
    }

    #[test]
    fn reference_to_ours(plaintext in proptest::collection::vec(any::<u8>(), 0..2048), label in "[a-z0-9/-]{0,40}") {
        let (ours, theirs) = keys_2048();
        let sealed = reference_seal(&theirs.to_public_key(), &label, &plaintext);
        let opened = open([ours], label.as_bytes(), &sealed).unwrap();
        prop_assert_eq!(&opened.plaintext[..], &plaintext[..]);
    }
}

fn openssl(args: &[&str], stdin: Option<&[u8]>) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("openssl is installed");
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

const OAEP_OPTS: [&str; 6] = [
    "-pkeyopt",
    "rsa_padding_mode:oaep",
    "-pkeyopt",
    "rsa_oaep_md:sha256",
    "-pkeyopt",
    "rsa_mgf1_md:sha256",
];

#[test]
fn openssl_unwraps_our_session_key_and_we_unwrap_its() {
    use aes_gcm::aead::Aead;
    let dir = tempfile::tempdir().unwrap();
    let ours = PrivateKey::generate(4096).unwrap();
    let key_path = dir.path().join("key.pem");
    std::fs::write(&key_path, ours.to_pkcs1_pem().as_bytes()).unwrap();
    let pub_path = dir.path().join("pub.pem");
    std::fs::write(&pub_path, ours.public_key().to_pem()).unwrap();
    let label = "myns/mysecret";
    let label_opt = format!("rsa_oaep_label:{}", hex(label.as_bytes()));

    // Ours → openssl: openssl recovers the session key, which opens our GCM body.
    let sealed = seal(ours.public_key(), label.as_bytes(), b"from keyseal").unwrap();
    let wrapped = &sealed[2..2 + 512];
    let mut args = vec!["pkeyutl", "-decrypt", "-inkey", key_path.to_str().unwrap()];
    args.extend(OAEP_OPTS);
    args.extend(["-pkeyopt", &label_opt]);
    let session_key = openssl(&args, Some(wrapped));
    assert_eq!(session_key.len(), 32);
    let body = reference_gcm(&session_key)
        .decrypt(&[0u8; 12].into(), &sealed[2 + 512..])
        .unwrap();
    assert_eq!(body, b"from keyseal");

    // openssl → ours: openssl wraps a session key; we frame it with an aes-gcm body and open it.
    let session_key = [7u8; 32];
    let mut args = vec![
        "pkeyutl",
        "-encrypt",
        "-pubin",
        "-inkey",
        pub_path.to_str().unwrap(),
    ];
    args.extend(OAEP_OPTS);
    args.extend(["-pkeyopt", &label_opt]);
    let wrapped = openssl(&args, Some(&session_key));
    let mut framed = (wrapped.len() as u16).to_be_bytes().to_vec();
    framed.extend(&wrapped);
    framed.extend(
        reference_gcm(&session_key)
            .encrypt(&[0u8; 12].into(), &b"from openssl"[..])
            .unwrap(),
    );
    assert_eq!(
        &open([&ours], label.as_bytes(), &framed).unwrap().plaintext[..],
        b"from openssl"
    );
    assert!(open([&ours], b"myns", &framed).is_err());
}
