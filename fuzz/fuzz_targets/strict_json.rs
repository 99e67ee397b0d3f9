//! The strict JSON reader: never panics, and whatever it accepts, serde_json reads the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use retention_proxy::vendors::strict_json;

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = strict_json::parse(data) {
        let lax: serde_json::Value = serde_json::from_slice(data).expect("strict accepted what serde_json refuses");
        assert_eq!(v, lax, "strict and serde_json read the same text differently");
    }
});
