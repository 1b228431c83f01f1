//! Upstream's published vectors: byte-exact sealing, opening, and the scope matrix (COMPAT §1-2).

mod common;

use common::*;
use keyseal_crypto::{
    Certificate, PrivateKey, decode_base64, encode_base64, open, seal_with_rng, seal_with_wrapper,
};

fn key() -> PrivateKey {
    PrivateKey::from_pem(key_pem().as_bytes()).expect("vector key parses")
}

#[test]
fn vector_key_and_certificate_match() {
    let key = key();
    let cert = Certificate::from_pem(cert_pem().as_bytes()).unwrap();
    assert_eq!(cert.public_key(), key.public_key());
    assert_eq!(key.public_key().bits(), 2048);
    assert_eq!(key.public_key().fingerprint(), fingerprint());
    assert_eq!(cert.public_key().fingerprint(), fingerprint());
}

fn plaintext_for(v: &Vector) -> &'static [u8] {
    if v.kind == "DET-EMPTY" {
        b""
    } else {
        b"supersecret"
    }
}

#[test]
fn deterministic_vectors_are_reproduced_byte_for_byte() {
    let key = key();
    let reference_public = reference_key(&key.to_pkcs1_der()).to_public_key();
    let det: Vec<_> = vectors()
        .into_iter()
        .filter(|v| v.kind.starts_with("DET"))
        .collect();
    assert_eq!(det.len(), 4, "three scopes plus the empty plaintext");
    for v in &det {
        // The RNG stream is consumed in upstream's order: session key first, OAEP seed second.
        let mut rng = StreamRng::upstream();
        let sealed = seal_with_wrapper(
            &mut rng,
            |session_key| {
                Ok(reference_wrap(
                    &reference_public,
                    &mut StreamRng::new((0xa0..=0xbf).collect()),
                    &v.label,
                    session_key,
                ))
            },
            plaintext_for(v),
        )
        .unwrap();
        assert_eq!(
            encode_base64(&sealed),
            v.b64,
            "{} scope={}",
            v.kind,
            v.scope
        );
    }
}

#[test]
fn production_sealing_with_the_same_session_key_differs_only_in_the_oaep_seed() {
    // AWS-LC draws the OAEP seed itself, so the RSA block differs; everything after it (the GCM
    // ciphertext and tag, determined by the injected session key) must be identical.
    let key = key();
    for v in vectors().iter().filter(|v| v.kind.starts_with("DET")) {
        let expected = decode_base64(&v.b64).unwrap();
        let sealed = seal_with_rng(
            &mut StreamRng::upstream(),
            key.public_key(),
            v.label.as_bytes(),
            plaintext_for(v),
        )
        .unwrap();
        assert_eq!(sealed.len(), expected.len());
        assert_eq!(sealed[..2], expected[..2]);
        assert_eq!(
            sealed[2 + 256..],
            expected[2 + 256..],
            "GCM part of {}",
            v.scope
        );
        assert_ne!(sealed[2..2 + 256], expected[2..2 + 256]);
        let opened = open([&key], v.label.as_bytes(), &sealed).unwrap();
        assert_eq!(&opened.plaintext[..], plaintext_for(v));
    }
}

#[test]
fn every_vector_opens_under_its_label() {
    let key = key();
    let all = vectors();
    assert_eq!(all.len(), 7);
    for v in &all {
        let sealed = decode_base64(&v.b64).unwrap();
        let opened = open([&key], v.label.as_bytes(), &sealed)
            .unwrap_or_else(|e| panic!("{} {}: {e}", v.kind, v.scope));
        assert_eq!(&opened.plaintext[..], plaintext_for(v));
        assert_eq!(opened.key_index, 0);
        // Size rule: 2 + modulus bytes + plaintext + 16.
        assert_eq!(sealed.len(), 2 + 256 + plaintext_for(v).len() + 16);
    }
}

#[test]
fn scope_matrix_matches_upstream() {
    let key = key();
    let cases = matrix();
    assert_eq!(cases.len(), 27);
    for c in &cases {
        let v = vectors()
            .into_iter()
            .find(|v| v.kind == "DET" && v.scope == c.sealed_scope)
            .expect("vector for scope");
        let sealed = decode_base64(&v.b64).unwrap();
        let label = label_for(&c.as_scope, &c.namespace, &c.name);
        let got = open([&key], label.as_bytes(), &sealed);
        assert_eq!(
            got.is_ok(),
            c.ok,
            "sealed({}) as {} {}/{}",
            c.sealed_scope,
            c.as_scope,
            c.namespace,
            c.name
        );
        if let Err(e) = got {
            assert_eq!(e.to_string(), "no key could decrypt secret");
        }
    }
}

#[test]
fn tampering_anywhere_fails_with_the_one_opaque_error() {
    let key = key();
    let v = &vectors()[0];
    let sealed = decode_base64(&v.b64).unwrap();
    for i in [0, 1, 2, 100, 257, 258, sealed.len() - 1] {
        let mut bad = sealed.clone();
        bad[i] ^= 0x01;
        let err = open([&key], v.label.as_bytes(), &bad).unwrap_err();
        assert_eq!(err.to_string(), "no key could decrypt secret", "byte {i}");
    }
    for len in [0, 1, 2, 257, 258 + 15] {
        assert!(
            open([&key], v.label.as_bytes(), &sealed[..len]).is_err(),
            "truncated to {len}"
        );
    }
}

#[test]
fn open_tries_keys_in_order_and_reports_the_one_that_worked() {
    let other = PrivateKey::generate(2048).unwrap();
    let key = key();
    let v = &vectors()[0];
    let sealed = decode_base64(&v.b64).unwrap();
    let opened = open([&other, &other, &key], v.label.as_bytes(), &sealed).unwrap();
    assert_eq!(opened.key_index, 2);
    assert!(open([&other], v.label.as_bytes(), &sealed).is_err());
    assert!(open(std::iter::empty(), v.label.as_bytes(), &sealed).is_err());
    assert!(!format!("{opened:?}").contains("supersecret"));
}
