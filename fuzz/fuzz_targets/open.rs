//! The wire-format decoder: `keyseal_crypto::open` of arbitrary bytes, and of the base64 text
//! form, with the fixed test key. A value that opens must open with key 0 and survive a
//! seal/open round trip.

#![no_main]
#![forbid(unsafe_code)]

use keyseal_crypto::{decode_base64, open, seal};
use keyseal_fuzz::{LABEL, key};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    check_open(data);
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(bytes) = decode_base64(text)
    {
        check_open(&bytes);
    }
});

fn check_open(sealed: &[u8]) {
    let Ok(opened) = open([key()], LABEL, sealed) else {
        return;
    };
    assert_eq!(opened.key_index, 0);
    let again = seal(key().public_key(), LABEL, &opened.plaintext).expect("reseal");
    let reopened = open([key()], LABEL, &again).expect("reopen");
    assert_eq!(reopened.plaintext, opened.plaintext);
}
