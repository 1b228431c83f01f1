//! Helpers shared by the crypto integration tests: the upstream vector file and a second,
//! independent implementation of the format built on the `rsa` and `aes-gcm` crates.
#![allow(dead_code)]

use aes_gcm::aead::{Aead, KeyInit};
use keyseal_crypto::{CryptoError, SealRng};
use rsa::pkcs1::DecodeRsaPrivateKey;

/// The upstream vectors, copied from the project's spec into test data.
pub const VECTORS: &str = include_str!("../data/vectors-rsa2048.txt");

pub struct Vector {
    pub kind: String,
    pub scope: String,
    pub label: String,
    pub b64: String,
}

pub struct MatrixCase {
    pub sealed_scope: String,
    pub as_scope: String,
    pub namespace: String,
    pub name: String,
    pub ok: bool,
}

pub fn key_pem() -> String {
    block(VECTORS, "RSA PRIVATE KEY")
}

pub fn cert_pem() -> String {
    block(VECTORS, "CERTIFICATE")
}

fn block(text: &str, label: &str) -> String {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin).expect("begin marker");
    let stop = text.find(&end).expect("end marker") + end.len();
    format!("{}\n", &text[start..stop])
}

pub fn fingerprint() -> String {
    VECTORS
        .lines()
        .find_map(|l| l.strip_prefix("fingerprint "))
        .expect("fingerprint line")
        .to_owned()
}

fn field<'a>(line: &'a str, name: &str) -> &'a str {
    let start = line.find(&format!("{name}=")).expect(name) + name.len() + 1;
    let rest = &line[start..];
    if let Some(quoted) = rest.strip_prefix('"') {
        &quoted[..quoted.find('"').expect("closing quote")]
    } else {
        rest.split_whitespace().next().unwrap_or("")
    }
}

pub fn vectors() -> Vec<Vector> {
    VECTORS
        .lines()
        .filter(|l| l.starts_with("DET") || l.starts_with("RND"))
        .map(|l| Vector {
            kind: l.split_whitespace().next().unwrap().to_owned(),
            scope: field(l, "scope").to_owned(),
            label: if l.contains("label=") {
                field(l, "label").to_owned()
            } else {
                "myns/mysecret".to_owned()
            },
            b64: field(l, "b64").to_owned(),
        })
        .collect()
}

/// Lines like `decrypt sealed(strict) as namespace-wide myns/othername -> ok=false`.
pub fn matrix() -> Vec<MatrixCase> {
    VECTORS
        .lines()
        .filter_map(|l| l.trim().strip_prefix("decrypt sealed("))
        .map(|l| {
            let (sealed_scope, rest) = l.split_once(") as ").unwrap();
            let mut words = rest.split_whitespace();
            let as_scope = words.next().unwrap().to_owned();
            let (namespace, name) = words.next().unwrap().split_once('/').unwrap();
            let ok = rest.ends_with("ok=true");
            MatrixCase {
                sealed_scope: sealed_scope.to_owned(),
                as_scope,
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                ok,
            }
        })
        .collect()
}

/// The OAEP label upstream derives for a scope (COMPAT §2).
pub fn label_for(scope: &str, namespace: &str, name: &str) -> String {
    match scope {
        "strict" => format!("{namespace}/{name}"),
        "namespace-wide" => namespace.to_owned(),
        "cluster-wide" => String::new(),
        other => panic!("unknown scope {other}"),
    }
}

/// A byte stream RNG: yields the given bytes in order, then panics.
pub struct StreamRng {
    bytes: Vec<u8>,
    pos: usize,
}

impl StreamRng {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self { bytes, pos: 0 }
    }
    /// Upstream's deterministic stream: session key 00..1f, then OAEP seed a0..bf.
    pub fn upstream() -> Self {
        Self::new((0x00..=0x1f).chain(0xa0..=0xbf).collect())
    }
    fn take(&mut self, dest: &mut [u8]) {
        let end = self.pos + dest.len();
        dest.copy_from_slice(&self.bytes[self.pos..end]);
        self.pos = end;
    }
}

impl SealRng for StreamRng {
    fn fill(&mut self, dest: &mut [u8]) -> Result<(), CryptoError> {
        self.take(dest);
        Ok(())
    }
}

impl rand_core::TryRng for StreamRng {
    type Error = std::convert::Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        let mut b = [0; 4];
        self.take(&mut b);
        Ok(u32::from_le_bytes(b))
    }
    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        let mut b = [0; 8];
        self.take(&mut b);
        Ok(u64::from_le_bytes(b))
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        self.take(dst);
        Ok(())
    }
}
impl rand_core::TryCryptoRng for StreamRng {}

/// OS randomness for the reference implementation.
pub struct OsRng;
impl rand_core::TryRng for OsRng {
    type Error = std::convert::Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        let mut b = [0; 4];
        self.try_fill_bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        let mut b = [0; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        keyseal_crypto::SystemRng.fill(dst).expect("system rng");
        Ok(())
    }
}
impl rand_core::TryCryptoRng for OsRng {}

/// The reference implementation's private key, from PKCS#1 DER.
pub fn reference_key(pkcs1_der: &[u8]) -> rsa::PrivateKey {
    rsa::PrivateKey::from_pkcs1_der(pkcs1_der).expect("reference key parses")
}

/// Reference OAEP-SHA256 wrap with caller randomness for the seed.
pub fn reference_wrap(
    public: &rsa::PublicKey,
    rng: &mut impl rand_core::TryCryptoRng,
    label: &str,
    session_key: &[u8],
) -> Vec<u8> {
    let padding = rsa::Oaep::<sha2::Sha256>::new_with_label(label.as_bytes().to_vec());
    public
        .encrypt(rng, padding, session_key)
        .expect("reference OAEP encrypt")
}

/// Reference sealing: the whole format with `rsa` + `aes-gcm`.
pub fn reference_seal(public: &rsa::PublicKey, label: &str, plaintext: &[u8]) -> Vec<u8> {
    let mut rng = OsRng;
    let mut session_key = [0u8; 32];
    rand_core::TryRng::try_fill_bytes(&mut rng, &mut session_key).unwrap();
    let wrapped = reference_wrap(public, &mut rng, label, &session_key);
    let mut out = (wrapped.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(&wrapped);
    out.extend(
        reference_gcm(&session_key)
            .encrypt(&[0u8; 12].into(), plaintext)
            .unwrap(),
    );
    out
}

/// Reference opening; `None` on any failure.
pub fn reference_open(private: &rsa::PrivateKey, label: &str, sealed: &[u8]) -> Option<Vec<u8>> {
    let len = u16::from_be_bytes([*sealed.first()?, *sealed.get(1)?]) as usize;
    let wrapped = sealed.get(2..2 + len)?;
    let body = sealed.get(2 + len..)?;
    let padding = rsa::Oaep::<sha2::Sha256>::new_with_label(label.as_bytes().to_vec());
    let session_key = private.decrypt(padding, wrapped).ok()?;
    reference_gcm(&session_key)
        .decrypt(&[0u8; 12].into(), body)
        .ok()
}

pub fn reference_gcm(session_key: &[u8]) -> aes_gcm::Aes256Gcm {
    aes_gcm::Aes256Gcm::new_from_slice(session_key).expect("32-byte key")
}
