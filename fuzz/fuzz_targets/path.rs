//! Path normalisation: `classify_any` never panics, agrees with the strict reading when that
//! matches, and anything the lenient reading matches is marked as an odd path.
#![no_main]

use libfuzzer_sys::fuzz_target;
use retention_proxy::vendors::{self, Family};

const FAMILIES: [Family; 4] = [
    Family::Chime,
    Family::ChimeMessaging,
    Family::ChimeIdentity,
    Family::Slack,
];
const METHODS: [&str; 5] = ["GET", "PUT", "POST", "put", "Get"];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else { return };
    let Ok(path) = std::str::from_utf8(rest) else { return };
    let family = FAMILIES[usize::from(sel) % FAMILIES.len()];
    let Ok(method) = http::Method::from_bytes(METHODS[usize::from(sel / 4) % METHODS.len()].as_bytes()) else {
        return;
    };
    let strict = vendors::classify(family, &method, path);
    let any = vendors::classify_any(family, &method, path);
    match (&strict, &any) {
        (Some(s), Some((a, odd))) => {
            assert_eq!(s, a);
            assert!(!odd, "a strict match is not an odd path");
        }
        (Some(_), None) => panic!("classify_any missed a strict match"),
        (None, Some((_, odd))) => assert!(odd, "only the lenient reading matched, so the path is odd"),
        (None, None) => {}
    }
});
