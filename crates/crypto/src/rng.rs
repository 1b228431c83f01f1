//! Randomness for sealing, injectable so that test vectors are reproducible.

use crate::CryptoError;

/// A source of random bytes for session keys and certificate serials.
///
/// Production code uses [`SystemRng`]; tests inject a deterministic stream to reproduce vectors.
pub trait SealRng {
    /// Fills `dest` completely with random bytes.
    fn fill(&mut self, dest: &mut [u8]) -> Result<(), CryptoError>;
}

/// AWS-LC's CPU-jitter-seeded DRBG.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemRng;

impl SealRng for SystemRng {
    fn fill(&mut self, dest: &mut [u8]) -> Result<(), CryptoError> {
        aws_lc_rs::rand::fill(dest).map_err(|_| CryptoError::Rng)
    }
}
