//! The SigV4 `Authorization` reader: never panics on any header text, and what it reads is
//! a part of the header.
#![no_main]

use libfuzzer_sys::fuzz_target;
use retention_proxy::vendors::aws_sigv4::claimed_identity;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let id = claimed_identity(Some(text));
    for part in [&id.access_key_id, &id.region, &id.service].into_iter().flatten() {
        assert!(text.contains(part.as_str()));
    }
});
