//! RSA keys: generation, PKCS#1 / PKCS#8 / SPKI import and export, fingerprints.

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::rsa::{
    KeySize, OAEP_SHA256_MGF1SHA256, OaepPrivateDecryptingKey, OaepPublicEncryptingKey,
    PrivateDecryptingKey, PublicEncryptingKey,
};
use der::asn1::{AnyRef, OctetStringRef};
use der::{Decode, Encode};
use pkcs8::PrivateKeyInfoRef;
use spki::{AlgorithmIdentifier, ObjectIdentifier, SubjectPublicKeyInfoRef};
use zeroize::Zeroizing;

use crate::{CryptoError, Result, pem};

/// rsaEncryption, RFC 8017 appendix C.
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

/// An RSA public key that can seal values.
#[derive(Clone)]
pub struct PublicKey {
    spki_der: Vec<u8>,
    modulus: Vec<u8>,
    exponent: Vec<u8>,
    oaep: std::sync::Arc<OaepPublicEncryptingKey>,
}

impl PublicKey {
    /// Reads an X.509 SubjectPublicKeyInfo (DER) holding an RSA key.
    pub fn from_spki_der(der: &[u8]) -> Result<Self> {
        let spki = SubjectPublicKeyInfoRef::from_der(der)
            .map_err(|_| CryptoError::InvalidPublicKey("not a DER SubjectPublicKeyInfo"))?;
        if spki.algorithm.oid != RSA_ENCRYPTION {
            return Err(CryptoError::InvalidPublicKey("not an RSA key"));
        }
        let bits = spki
            .subject_public_key
            .as_bytes()
            .ok_or(CryptoError::InvalidPublicKey("malformed key bit string"))?;
        let rsa = pkcs1::RsaPublicKeyRef::from_der(bits)
            .map_err(|_| CryptoError::InvalidPublicKey("malformed RSA public key"))?;
        let modulus = rsa.modulus.as_bytes().to_vec();
        let exponent = rsa.public_exponent.as_bytes().to_vec();
        let key = PublicEncryptingKey::from_der(der).map_err(|_| {
            CryptoError::InvalidPublicKey("key rejected (RSA keys must be at least 2048 bits)")
        })?;
        let oaep = OaepPublicEncryptingKey::new(key)
            .map_err(|_| CryptoError::InvalidPublicKey("key rejected"))?;
        Ok(Self {
            spki_der: der.to_vec(),
            modulus,
            exponent,
            oaep: std::sync::Arc::new(oaep),
        })
    }

    /// Reads a PEM `PUBLIC KEY` (SPKI) or `RSA PUBLIC KEY` (PKCS#1) block.
    pub fn from_pem(text: &[u8]) -> Result<Self> {
        for block in pem::pem_blocks(text) {
            match block.label.as_str() {
                "PUBLIC KEY" => return Self::from_spki_der(&block.der),
                "RSA PUBLIC KEY" => return Self::from_pkcs1_der(&block.der),
                _ => {}
            }
        }
        Err(CryptoError::MissingPem("PUBLIC KEY"))
    }

    /// Reads a PKCS#1 `RSAPublicKey` (DER).
    pub fn from_pkcs1_der(der: &[u8]) -> Result<Self> {
        pkcs1::RsaPublicKeyRef::from_der(der)
            .map_err(|_| CryptoError::InvalidPublicKey("malformed RSA public key"))?;
        Self::from_spki_der(&wrap_spki(der)?)
    }

    /// The SubjectPublicKeyInfo DER encoding.
    pub fn to_spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// The SPKI as PEM (`PUBLIC KEY`).
    pub fn to_pem(&self) -> String {
        pem::encode("PUBLIC KEY", &self.spki_der).to_string()
    }

    /// Size of the modulus in bytes, which is also the size of the wrapped session key.
    pub fn modulus_len(&self) -> usize {
        self.oaep.ciphertext_size()
    }

    /// Size of the modulus in bits.
    pub fn bits(&self) -> usize {
        self.oaep.key_size_bits()
    }

    /// The OpenSSH-style SHA-256 fingerprint (`SHA256:<unpadded base64>`) of the key, the same
    /// string `ssh-keygen -lf` prints, so operators can compare keys with standard tools.
    pub fn fingerprint(&self) -> String {
        fn put(buf: &mut Vec<u8>, bytes: &[u8]) {
            buf.extend_from_slice(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_be_bytes());
            buf.extend_from_slice(bytes);
        }
        fn mpint(buf: &mut Vec<u8>, unsigned_be: &[u8]) {
            let trimmed: &[u8] = {
                let first = unsigned_be
                    .iter()
                    .position(|b| *b != 0)
                    .unwrap_or(unsigned_be.len());
                &unsigned_be[first..]
            };
            if trimmed.first().is_some_and(|b| b & 0x80 != 0) {
                let mut v = Vec::with_capacity(trimmed.len() + 1);
                v.push(0);
                v.extend_from_slice(trimmed);
                put(buf, &v);
            } else {
                put(buf, trimmed);
            }
        }
        let mut wire = Vec::new();
        put(&mut wire, b"ssh-rsa");
        mpint(&mut wire, &self.exponent);
        mpint(&mut wire, &self.modulus);
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &wire);
        use base64::Engine as _;
        format!(
            "SHA256:{}",
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest.as_ref())
        )
    }

    /// Wraps a session key with RSA-OAEP-SHA256 under `label`. The OAEP seed comes from AWS-LC.
    pub(crate) fn wrap(&self, session_key: &[u8], label: &[u8]) -> Result<Vec<u8>> {
        let mut out = vec![0u8; self.modulus_len()];
        let len = self
            .oaep
            .encrypt(&OAEP_SHA256_MGF1SHA256, session_key, &mut out, Some(label))
            .map_err(|_| CryptoError::Encryption)?
            .len();
        out.truncate(len);
        Ok(out)
    }
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.spki_der == other.spki_der
    }
}
impl Eq for PublicKey {}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublicKey")
            .field("bits", &self.bits())
            .field("fingerprint", &self.fingerprint())
            .finish()
    }
}

/// An RSA private key that can open sealed values.
///
/// Deliberately has no `Debug`, `Display` or `Clone`: it cannot end up in a log by accident.
/// AWS-LC clears the key's big numbers when it is dropped; the PKCS#8 copy kept for export is
/// zeroized.
pub struct PrivateKey {
    oaep: OaepPrivateDecryptingKey,
    pkcs8: Zeroizing<Vec<u8>>,
    public: PublicKey,
}

impl PrivateKey {
    /// Generates a new key of `bits` bits (4096 for sealing keys; 2048 is for tests).
    pub fn generate(bits: usize) -> Result<Self> {
        let size = match bits {
            2048 => KeySize::Rsa2048,
            3072 => KeySize::Rsa3072,
            4096 => KeySize::Rsa4096,
            8192 => KeySize::Rsa8192,
            other => return Err(CryptoError::UnsupportedKeySize(other)),
        };
        let key = PrivateDecryptingKey::generate(size).map_err(|_| CryptoError::KeyGeneration)?;
        let pkcs8: Pkcs8V1Der<'static> = key.as_der().map_err(|_| CryptoError::KeyGeneration)?;
        Self::from_pkcs8_der(pkcs8.as_ref())
    }

    /// Reads a PKCS#8 `PrivateKeyInfo` (DER) holding an RSA key.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self> {
        let info = PrivateKeyInfoRef::from_der(der)
            .map_err(|_| CryptoError::InvalidPrivateKey("not a DER PKCS#8 PrivateKeyInfo"))?;
        if info.algorithm.oid != RSA_ENCRYPTION {
            return Err(CryptoError::InvalidPrivateKey("not an RSA key"));
        }
        let key = PrivateDecryptingKey::from_pkcs8(der).map_err(|_| {
            CryptoError::InvalidPrivateKey("key rejected (RSA keys must be at least 2048 bits)")
        })?;
        let spki: PublicKeyX509Der<'static> = key
            .public_key()
            .as_der()
            .map_err(|_| CryptoError::InvalidPrivateKey("cannot derive public key"))?;
        let public = PublicKey::from_spki_der(spki.as_ref())?;
        let oaep = OaepPrivateDecryptingKey::new(key)
            .map_err(|_| CryptoError::InvalidPrivateKey("key rejected"))?;
        Ok(Self {
            oaep,
            pkcs8: Zeroizing::new(der.to_vec()),
            public,
        })
    }

    /// Reads a PKCS#1 `RSAPrivateKey` (DER), the form upstream stores in `tls.key`.
    pub fn from_pkcs1_der(der: &[u8]) -> Result<Self> {
        pkcs1::RsaPrivateKeyRef::from_der(der)
            .map_err(|_| CryptoError::InvalidPrivateKey("not a DER PKCS#1 RSAPrivateKey"))?;
        let pkcs8 = wrap_pkcs8(der)?;
        Self::from_pkcs8_der(&pkcs8)
    }

    /// Reads the first private key in PEM text: `RSA PRIVATE KEY` (PKCS#1) or `PRIVATE KEY`
    /// (PKCS#8). Other blocks (for example a certificate in the same file) are ignored.
    pub fn from_pem(text: &[u8]) -> Result<Self> {
        for block in pem::pem_blocks(text) {
            match block.label.as_str() {
                "RSA PRIVATE KEY" => return Self::from_pkcs1_der(&block.der),
                "PRIVATE KEY" => return Self::from_pkcs8_der(&block.der),
                _ => {}
            }
        }
        Err(CryptoError::MissingPem("RSA PRIVATE KEY"))
    }

    /// Reads every private key in PEM text (a file may hold several backed-up keys).
    pub fn all_from_pem(text: &[u8]) -> Result<Vec<Self>> {
        let mut keys = Vec::new();
        for block in pem::pem_blocks(text) {
            match block.label.as_str() {
                "RSA PRIVATE KEY" => keys.push(Self::from_pkcs1_der(&block.der)?),
                "PRIVATE KEY" => keys.push(Self::from_pkcs8_der(&block.der)?),
                _ => {}
            }
        }
        Ok(keys)
    }

    /// The PKCS#8 DER encoding.
    pub fn to_pkcs8_der(&self) -> Zeroizing<Vec<u8>> {
        self.pkcs8.clone()
    }

    /// The PKCS#1 DER encoding.
    pub fn to_pkcs1_der(&self) -> Zeroizing<Vec<u8>> {
        // Parsed successfully at construction, so this cannot fail.
        let info = PrivateKeyInfoRef::from_der(&self.pkcs8).expect("validated PKCS#8");
        Zeroizing::new(info.private_key.as_bytes().to_vec())
    }

    /// PKCS#1 PEM (`RSA PRIVATE KEY`), upstream's `tls.key` format.
    pub fn to_pkcs1_pem(&self) -> Zeroizing<String> {
        pem::encode("RSA PRIVATE KEY", &self.to_pkcs1_der())
    }

    /// PKCS#8 PEM (`PRIVATE KEY`).
    pub fn to_pkcs8_pem(&self) -> Zeroizing<String> {
        pem::encode("PRIVATE KEY", &self.pkcs8)
    }

    /// The matching public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// Unwraps a session key. Any failure is [`CryptoError::DecryptionFailed`].
    pub(crate) fn unwrap_session_key(
        &self,
        wrapped: &[u8],
        label: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        let mut out = Zeroizing::new(vec![0u8; self.oaep.min_output_size()]);
        let len = self
            .oaep
            .decrypt(&OAEP_SHA256_MGF1SHA256, wrapped, &mut out, Some(label))
            .map_err(|_| CryptoError::DecryptionFailed)?
            .len();
        out.truncate(len);
        Ok(out)
    }
}

fn rsa_algorithm() -> AlgorithmIdentifier<AnyRef<'static>> {
    AlgorithmIdentifier {
        oid: RSA_ENCRYPTION,
        parameters: Some(AnyRef::NULL),
    }
}

fn wrap_pkcs8(pkcs1_der: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    let octets = OctetStringRef::new(pkcs1_der)
        .map_err(|_| CryptoError::InvalidPrivateKey("key too large"))?;
    let info = PrivateKeyInfoRef::new(rsa_algorithm(), octets);
    info.to_der()
        .map(Zeroizing::new)
        .map_err(|_| CryptoError::InvalidPrivateKey("cannot encode PKCS#8"))
}

fn wrap_spki(pkcs1_der: &[u8]) -> Result<Vec<u8>> {
    let spki = spki::SubjectPublicKeyInfo::<AnyRef<'_>, der::asn1::BitStringRef<'_>> {
        algorithm: rsa_algorithm(),
        subject_public_key: der::asn1::BitStringRef::from_bytes(pkcs1_der)
            .map_err(|_| CryptoError::InvalidPublicKey("key too large"))?,
    };
    spki.to_der()
        .map_err(|_| CryptoError::InvalidPublicKey("cannot encode SPKI"))
}
