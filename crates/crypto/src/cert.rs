//! Sealing certificates: upstream's self-signed format, parsing and the expiry check.

use std::time::{Duration, SystemTime};

use der::{Decode, Encode};
use rcgen::{
    CertificateParams as RcgenParams, CustomExtension, DistinguishedName, DnType, IsCa, KeyPair,
    KeyUsagePurpose, PKCS_RSA_SHA256, SerialNumber,
};
use time::OffsetDateTime;

use crate::{CryptoError, PrivateKey, PublicKey, Result, SealRng, pem};

/// A parsed X.509 certificate carrying an RSA sealing key.
#[derive(Clone)]
pub struct Certificate {
    der: Vec<u8>,
    public_key: PublicKey,
    not_before: SystemTime,
    not_after: SystemTime,
}

impl std::fmt::Debug for Certificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificate")
            .field("public_key", &self.public_key)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .finish()
    }
}

impl PartialEq for Certificate {
    fn eq(&self, other: &Self) -> bool {
        self.der == other.der
    }
}

impl Certificate {
    /// Parses a DER certificate.
    pub fn from_der(der: &[u8]) -> Result<Self> {
        let cert = x509_cert::Certificate::from_der(der)
            .map_err(|e| CryptoError::InvalidCertificate(e.to_string()))?;
        let tbs = cert.tbs_certificate();
        let spki = tbs
            .subject_public_key_info()
            .to_der()
            .map_err(|e| CryptoError::InvalidCertificate(e.to_string()))?;
        let public_key = PublicKey::from_spki_der(&spki).map_err(|e| {
            CryptoError::InvalidCertificate(format!("its public key is unusable: {e}"))
        })?;
        Ok(Self {
            der: der.to_vec(),
            public_key,
            not_before: tbs.validity().not_before.to_system_time(),
            not_after: tbs.validity().not_after.to_system_time(),
        })
    }

    /// Parses the first `CERTIFICATE` block of PEM text (later blocks are ignored, as kubeseal
    /// does).
    pub fn from_pem(text: &[u8]) -> Result<Self> {
        let block = pem::pem_blocks(text)
            .into_iter()
            .find(|b| b.label == "CERTIFICATE")
            .ok_or(CryptoError::MissingPem("CERTIFICATE"))?;
        Self::from_der(&block.der)
    }

    /// DER encoding.
    pub fn to_der(&self) -> &[u8] {
        &self.der
    }

    /// PEM encoding (`CERTIFICATE`).
    pub fn to_pem(&self) -> String {
        pem::encode("CERTIFICATE", &self.der).to_string()
    }

    /// The certified public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.public_key
    }

    /// Start of validity.
    pub fn not_before(&self) -> SystemTime {
        self.not_before
    }

    /// End of validity.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// The public key for sealing, refused as kubeseal does when the certificate has expired:
    /// `failed to encrypt using an expired certificate on <Month D, YYYY>`.
    pub fn sealing_key(&self, now: SystemTime) -> Result<&PublicKey> {
        if now > self.not_after {
            let at = OffsetDateTime::from(self.not_after);
            let date = format!("{} {}, {}", at.month(), at.day(), at.year());
            return Err(CryptoError::CertificateExpired(date));
        }
        Ok(&self.public_key)
    }
}

/// What goes into a new sealing certificate.
#[derive(Debug, Clone)]
pub struct CertificateParams {
    /// Subject and issuer common name (`--my-cn`); empty means an empty DN, upstream's default.
    pub common_name: String,
    /// Validity start (upstream: now).
    pub not_before: SystemTime,
    /// Validity length (`--key-ttl`, upstream default 87600h).
    pub validity: Duration,
}

impl Default for CertificateParams {
    fn default() -> Self {
        Self {
            common_name: String::new(),
            not_before: SystemTime::now(),
            validity: Duration::from_secs(87_600 * 3600),
        }
    }
}

/// Creates the self-signed certificate upstream creates for a sealing key: X.509 v3, random
/// 128-bit serial, KeyUsage encipherOnly (critical), BasicConstraints CA:TRUE (critical),
/// SubjectKeyIdentifier = SHA-1 of the public key bits (as Go computes it), subject = issuer =
/// `CN=<common_name>` or the empty DN, signed with sha256WithRSAEncryption.
pub fn self_signed_certificate(
    key: &PrivateKey,
    params: &CertificateParams,
    rng: &mut dyn SealRng,
) -> Result<Certificate> {
    let generation = |e: rcgen::Error| CryptoError::CertificateGeneration(e.to_string());
    let pkcs8 = key.to_pkcs8_der();
    let signer = KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8.as_slice().into(), &PKCS_RSA_SHA256)
        .map_err(generation)?;

    let mut p = RcgenParams::default();
    let mut dn = DistinguishedName::new();
    if !params.common_name.is_empty() {
        dn.push(DnType::CommonName, params.common_name.as_str());
    }
    p.distinguished_name = dn;
    p.not_before = OffsetDateTime::from(params.not_before);
    p.not_after = OffsetDateTime::from(params.not_before + params.validity);
    let mut serial = [0u8; 16];
    rng.fill(&mut serial)?;
    p.serial_number = Some(SerialNumber::from_slice(&serial));
    p.key_usages = vec![KeyUsagePurpose::EncipherOnly];
    // Go writes KeyUsage, BasicConstraints, SubjectKeyIdentifier in that order; rcgen would put
    // the key identifier before BasicConstraints, so both go in as custom extensions instead.
    p.is_ca = IsCa::NoCa;
    let mut basic_constraints =
        CustomExtension::from_oid_content(OID_BASIC_CONSTRAINTS, BASIC_CONSTRAINTS_CA.to_vec());
    basic_constraints.set_criticality(true);
    let mut ski = vec![0x04, 20];
    ski.extend(subject_key_id(key.public_key())?);
    p.custom_extensions = vec![
        basic_constraints,
        CustomExtension::from_oid_content(OID_SUBJECT_KEY_ID, ski),
    ];
    let cert = p.self_signed(&signer).map_err(generation)?;
    Certificate::from_der(cert.der())
}

const OID_BASIC_CONSTRAINTS: &[u64] = &[2, 5, 29, 19];
const OID_SUBJECT_KEY_ID: &[u64] = &[2, 5, 29, 14];
/// `SEQUENCE { BOOLEAN TRUE }`: cA with no path length constraint.
const BASIC_CONSTRAINTS_CA: [u8; 5] = [0x30, 0x03, 0x01, 0x01, 0xff];

/// RFC 5280 §4.2.1.2 method (1): SHA-1 of the subjectPublicKey BIT STRING contents.
fn subject_key_id(public: &PublicKey) -> Result<[u8; 20]> {
    let spki = spki::SubjectPublicKeyInfoRef::from_der(public.to_spki_der())
        .map_err(|_| CryptoError::InvalidPublicKey("not a DER SubjectPublicKeyInfo"))?;
    let bits = spki.subject_public_key.raw_bytes();
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, bits);
    digest
        .as_ref()
        .try_into()
        .map_err(|_| CryptoError::CertificateGeneration("SHA-1 length".into()))
}
