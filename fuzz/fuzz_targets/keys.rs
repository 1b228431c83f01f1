//! Key and certificate parsing: PEM blocks, private and public keys (PEM, PKCS#1, PKCS#8, SPKI),
//! certificates (PEM, DER), key backups (`keys_from_backup`: PEM or Secrets in YAML/JSON), and a
//! key Secret (`tls.crt` before the first NUL, `tls.key` after) through `parse_key_secret`.

#![no_main]
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::time::SystemTime;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use keyseal_api::key_secret::{keys_from_backup, parse_key_secret};
use keyseal_crypto::{Certificate, PrivateKey, PublicKey, pem_blocks};
use keyseal_fuzz::split_nul;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = pem_blocks(data);
    let _ = PrivateKey::from_pem(data);
    let _ = PrivateKey::all_from_pem(data);
    let _ = PrivateKey::from_pkcs8_der(data);
    let _ = PrivateKey::from_pkcs1_der(data);
    let _ = PublicKey::from_pem(data);
    let _ = PublicKey::from_spki_der(data);
    let _ = PublicKey::from_pkcs1_der(data);
    for cert in [Certificate::from_pem(data), Certificate::from_der(data)]
        .into_iter()
        .flatten()
    {
        let _ = cert.sealing_key(SystemTime::now());
    }
    let _ = keys_from_backup(data);
    if let (crt, Some(key)) = split_nul(data) {
        let item = |bytes: &[u8]| ByteString(bytes.to_vec());
        let secret = Secret {
            data: Some(BTreeMap::from([
                ("tls.crt".to_owned(), item(crt)),
                ("tls.key".to_owned(), item(key)),
            ])),
            ..Secret::default()
        };
        let _ = parse_key_secret(&secret);
    }
});
