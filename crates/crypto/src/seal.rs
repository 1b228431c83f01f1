//! Sealing and opening single values in upstream's hybrid format.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use base64::Engine as _;
use zeroize::Zeroizing;

use crate::{CryptoError, PrivateKey, PublicKey, Result, SealRng, SystemRng};

/// Length of the AES-256 session key.
pub const SESSION_KEY_LEN: usize = 32;
const TAG_LEN: usize = 16;
/// One session key encrypts exactly one value, so a fixed nonce is safe (upstream does the same).
const ZERO_NONCE: [u8; 12] = [0; 12];

/// A value opened by one of the keys offered to [`open`].
pub struct Opened {
    /// The plaintext, zeroized when dropped.
    pub plaintext: Zeroizing<Vec<u8>>,
    /// Index (in the order offered) of the key that opened it, so callers can try it first next
    /// time.
    pub key_index: usize,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened")
            .field(
                "plaintext",
                &format_args!("<redacted {} bytes>", self.plaintext.len()),
            )
            .field("key_index", &self.key_index)
            .finish()
    }
}

/// Seals `plaintext` for `key` under the OAEP `label`, with fresh randomness.
pub fn seal(key: &PublicKey, label: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
    seal_with_rng(&mut SystemRng, key, label, plaintext)
}

/// Seals with the session key drawn from `rng` (the OAEP seed always comes from AWS-LC, whose
/// OAEP implementation takes no caller randomness).
pub fn seal_with_rng(
    rng: &mut dyn SealRng,
    key: &PublicKey,
    label: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>> {
    seal_with_wrapper(rng, |session_key| key.wrap(session_key, label), plaintext)
}

/// Seals with the session key drawn from `rng` and wrapped by `wrap`.
///
/// This is the whole format minus the RSA step, for callers that wrap the session key elsewhere
/// (an HSM, or a test that reproduces upstream's deterministic vectors with a seeded OAEP).
pub fn seal_with_wrapper(
    rng: &mut dyn SealRng,
    wrap: impl FnOnce(&[u8]) -> Result<Vec<u8>>,
    plaintext: &[u8],
) -> Result<Vec<u8>> {
    let mut session_key = Zeroizing::new([0u8; SESSION_KEY_LEN]);
    rng.fill(&mut session_key[..])?;
    let wrapped = wrap(&session_key[..])?;
    let wrapped_len = u16::try_from(wrapped.len()).map_err(|_| CryptoError::Encryption)?;

    let mut out = Vec::with_capacity(2 + wrapped.len() + plaintext.len() + TAG_LEN);
    out.extend_from_slice(&wrapped_len.to_be_bytes());
    out.extend_from_slice(&wrapped);
    let mut body = plaintext.to_vec();
    gcm_key(&session_key[..])?
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(ZERO_NONCE),
            Aad::empty(),
            &mut body,
        )
        .map_err(|_| CryptoError::PlaintextTooLarge)?;
    out.extend_from_slice(&body);
    Ok(out)
}

/// Opens a sealed value with the first of `keys` that can, trying them in order.
///
/// Every failure (truncated input, no key's OAEP accepts it, GCM tag mismatch) is the one
/// opaque [`CryptoError::DecryptionFailed`].
pub fn open<'k>(
    keys: impl IntoIterator<Item = &'k PrivateKey>,
    label: &[u8],
    sealed: &[u8],
) -> Result<Opened> {
    let (wrapped, body) = split(sealed)?;
    for (key_index, key) in keys.into_iter().enumerate() {
        if wrapped.len() != key.public_key().modulus_len() {
            continue;
        }
        let Ok(session_key) = key.unwrap_session_key(wrapped, label) else {
            continue;
        };
        if session_key.len() != SESSION_KEY_LEN {
            continue;
        }
        let mut buf = Zeroizing::new(body.to_vec());
        let Ok(plain) = gcm_key(&session_key)?.open_in_place(
            Nonce::assume_unique_for_key(ZERO_NONCE),
            Aad::empty(),
            &mut buf,
        ) else {
            continue;
        };
        let len = plain.len();
        buf.truncate(len);
        return Ok(Opened {
            plaintext: buf,
            key_index,
        });
    }
    Err(CryptoError::DecryptionFailed)
}

fn split(sealed: &[u8]) -> Result<(&[u8], &[u8])> {
    let (len, rest) = sealed
        .split_first_chunk::<2>()
        .ok_or(CryptoError::DecryptionFailed)?;
    let len = usize::from(u16::from_be_bytes(*len));
    if rest.len() < len + TAG_LEN {
        return Err(CryptoError::DecryptionFailed);
    }
    Ok(rest.split_at(len))
}

fn gcm_key(session_key: &[u8]) -> Result<LessSafeKey> {
    UnboundKey::new(&AES_256_GCM, session_key)
        .map(LessSafeKey::new)
        .map_err(|_| CryptoError::DecryptionFailed)
}

/// Standard base64 with padding, the text form of sealed values.
pub fn encode_base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Decodes standard base64, ignoring embedded `\r` and `\n` as Go's decoder does.
pub fn decode_base64(text: &str) -> Result<Vec<u8>> {
    let engine = &base64::engine::general_purpose::STANDARD;
    if text.contains(['\r', '\n']) {
        let compact: String = text.chars().filter(|c| *c != '\r' && *c != '\n').collect();
        Ok(engine.decode(compact)?)
    } else {
        Ok(engine.decode(text)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_rejects_short_input() {
        assert!(split(&[]).is_err());
        assert!(split(&[0]).is_err());
        assert!(split(&[0, 4, 1, 2, 3, 4]).is_err());
        let mut ok = vec![0, 2, 9, 9];
        ok.extend_from_slice(&[0; 16]);
        let (w, b) = split(&ok).unwrap();
        assert_eq!(w, &[9, 9]);
        assert_eq!(b.len(), 16);
    }

    #[test]
    fn base64_tolerates_crlf() {
        assert_eq!(decode_base64("AAEC\r\nAw==").unwrap(), vec![0, 1, 2, 3]);
        assert!(decode_base64("AA EC").is_err());
    }
}
