//! SealedSecret and Secret input as the CLI and the controller parse it: `input::secrets` and
//! `input::sealed_secrets` (CLI files and stdin, `/v1/verify` and `/v1/rotate` bodies), a
//! SealedSecret and a bare spec from JSON (watch events, the controller's spec cache), then
//! unsealing what parsed with the fixed test key (templates rendered, as the controller does)
//! and sealing the Secrets that parsed (as the CLI does).

#![no_main]
#![forbid(unsafe_code)]

use keyseal_api::input::{sealed_secrets, secrets};
use keyseal_api::{SealedSecret, SealedSecretSpec, UnsealOptions, seal_secret, unseal, verify};
use keyseal_fuzz::key;
use libfuzzer_sys::fuzz_target;

/// Objects per input that are unsealed or sealed: parsing is the target; RSA is not.
const MAX_OBJECTS: usize = 4;
/// Items per object that are sealed (one RSA public-key operation each).
const MAX_ITEMS: usize = 16;

fuzz_target!(|data: &[u8]| {
    if let Ok(ss) = serde_json::from_slice::<SealedSecret>(data) {
        unseal_both(&ss);
    }
    let _ = serde_json::from_slice::<SealedSecretSpec>(data);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(all) = sealed_secrets(text) {
        all.iter().take(MAX_OBJECTS).for_each(unseal_both);
    }
    if let Ok(all) = secrets(text) {
        for secret in all.iter().take(MAX_OBJECTS) {
            let items = secret.data.as_ref().map_or(0, |d| d.len())
                + secret.string_data.as_ref().map_or(0, |d| d.len());
            if items <= MAX_ITEMS {
                let _ = seal_secret(secret, key().public_key());
            }
        }
    }
});

fn unseal_both(ss: &SealedSecret) {
    let keys = [key()];
    let _ = unseal(ss, &keys, UnsealOptions::default());
    let _ = verify(ss, &keys, true);
}
