//! What keyseal's fuzz targets share: the fixed test key, the label its values are sealed under,
//! and the items a template sees.
//!
//! The key in `keys/` is a throwaway 2048-bit test key made for fuzzing; nothing real is sealed
//! to it.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use keyseal_crypto::PrivateKey;

/// The fixed test key, PKCS#1 PEM.
pub const KEY_PEM: &[u8] = include_bytes!("../keys/test-key.pem");
/// A self-signed certificate for [`KEY_PEM`].
pub const CERT_PEM: &[u8] = include_bytes!("../keys/test-cert.pem");
/// Namespace and name of the SealedSecret seeds; strict scope, so the label is `fuzz/value`.
pub const NAMESPACE: &str = "fuzz";
/// See [`NAMESPACE`].
pub const NAME: &str = "value";
/// The OAEP label the `open` target opens values under.
pub const LABEL: &[u8] = b"fuzz/value";

/// The fixed test key, parsed once.
pub fn key() -> &'static PrivateKey {
    static KEY: OnceLock<PrivateKey> = OnceLock::new();
    KEY.get_or_init(|| PrivateKey::from_pem(KEY_PEM).expect("the fuzz test key parses"))
}

/// Splits at the first NUL byte: what comes before, and what comes after (`None` without NUL).
pub fn split_nul(data: &[u8]) -> (&[u8], Option<&[u8]>) {
    match data.iter().position(|b| *b == 0) {
        Some(at) => (&data[..at], Some(&data[at + 1..])),
        None => (data, None),
    }
}

/// Template items from `name=value` lines; without any, a fixed set that the template seeds use.
pub fn items(lines: Option<&[u8]>) -> BTreeMap<String, Vec<u8>> {
    let parsed: BTreeMap<String, Vec<u8>> = lines
        .unwrap_or_default()
        .split(|b| *b == b'\n')
        .filter_map(|line| {
            let (name, value) = split_at_byte(line, b'=')?;
            Some((String::from_utf8_lossy(name).into_owned(), value.to_vec()))
        })
        .collect();
    if !parsed.is_empty() {
        return parsed;
    }
    [
        ("user", &b"admin"[..]),
        ("pass", b"s3cr3t"),
        ("password", b"s3cr3t"),
        ("tls.crt", b"CERT"),
        ("n", b"42"),
        ("json", br#"{"a":[1,2],"b":"x"}"#),
        ("a", b"x"),
        ("empty", b""),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_vec()))
    .collect()
}

fn split_at_byte(data: &[u8], sep: u8) -> Option<(&[u8], &[u8])> {
    let at = data.iter().position(|b| *b == sep)?;
    Some((&data[..at], &data[at + 1..]))
}
