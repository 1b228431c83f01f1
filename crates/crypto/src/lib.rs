//! The Sealed Secrets wire format and the keys behind it.
//!
//! A sealed value is a fresh AES-256 session key wrapped with RSA-OAEP (SHA-256 for both the
//! OAEP hash and MGF1, RFC 8017) under a label chosen by the caller's scope, followed by the
//! value encrypted with AES-256-GCM (NIST SP 800-38D) under that session key with an all-zero
//! nonce. Bytes: `u16be len(rsa_ct) ‖ rsa_ct ‖ gcm_ct ‖ tag`, exactly as Bitnami Sealed Secrets
//! writes them, so values sealed by either implementation open in the other.
//!
//! This crate knows bytes and keys only: no Kubernetes, no I/O, no logging. Every failure to
//! open a value collapses into [`CryptoError::DecryptionFailed`], so errors are not an oracle.
//! RSA decryption runs on AWS-LC, which is constant-time and blinded.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod cert;
mod error;
mod keys;
mod pem;
mod rng;
mod seal;

pub use cert::{Certificate, CertificateParams, self_signed_certificate};
pub use error::CryptoError;
pub use keys::{PrivateKey, PublicKey};
pub use pem::{PemBlock, pem_blocks};
pub use rng::{SealRng, SystemRng};
pub use seal::{
    Opened, SESSION_KEY_LEN, decode_base64, encode_base64, open, seal, seal_with_rng,
    seal_with_wrapper,
};

/// Result type of this crate.
pub type Result<T, E = CryptoError> = std::result::Result<T, E>;
