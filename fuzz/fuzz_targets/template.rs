//! Template parsing and rendering: the text before the first NUL is the template, `name=value`
//! lines after it are the items (a fixed set without any). Output never exceeds the documented
//! bound.

#![no_main]
#![forbid(unsafe_code)]

use keyseal_fuzz::{items, split_nul};
use keyseal_template::{MAX_OUTPUT_BYTES, render};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (template, lines) = split_nul(data);
    let Ok(template) = std::str::from_utf8(template) else {
        return;
    };
    if let Ok(out) = render(template, &items(lines)) {
        assert!(out.len() <= MAX_OUTPUT_BYTES.max(template.len()));
    }
});
