//! The one error type of the crate. No variant ever carries key material or plaintext.

/// Errors from sealing, opening, key and certificate handling.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// No key opened the value. Deliberately says nothing about why (too short, OAEP, GCM).
    #[error("no key could decrypt secret")]
    DecryptionFailed,
    /// A sealed value's text form is not standard base64.
    #[error("sealed value is not valid base64: {0}")]
    InvalidBase64(#[from] base64::DecodeError),
    /// A private key could not be read; the reason is a fixed phrase, never key bytes.
    #[error("invalid private key: {0}")]
    InvalidPrivateKey(&'static str),
    /// A public key could not be read or is not usable for sealing.
    #[error("invalid public key: {0}")]
    InvalidPublicKey(&'static str),
    /// A certificate could not be read.
    #[error("invalid certificate: {0}")]
    InvalidCertificate(String),
    /// The certificate's NotAfter is in the past (upstream's exact wording).
    #[error("failed to encrypt using an expired certificate on {0}")]
    CertificateExpired(String),
    /// Input held no PEM block of the wanted kind.
    #[error("no {0} PEM block found")]
    MissingPem(&'static str),
    /// A key of an unsupported size was requested.
    #[error("unsupported RSA key size {0} bits (use 2048, 3072, 4096 or 8192)")]
    UnsupportedKeySize(usize),
    /// The plaintext is larger than the AEAD allows.
    #[error("value too large to seal")]
    PlaintextTooLarge,
    /// The operating system's random number generator failed.
    #[error("random number generator failed")]
    Rng,
    /// Key generation failed inside the crypto library.
    #[error("RSA key generation failed")]
    KeyGeneration,
    /// Certificate generation failed.
    #[error("certificate generation failed: {0}")]
    CertificateGeneration(String),
    /// The RSA encryption step failed (for example a modulus too small for OAEP-SHA256).
    #[error("RSA-OAEP encryption failed")]
    Encryption,
}
