//! The SigV4 verifier on a whole request: never panics, and accepts nothing but a signature
//! made with the listed key. Input layout: `METHOD SP TARGET LF`, header lines
//! `name: value LF` (values as raw bytes, so non-UTF-8 ones reach the verifier), an empty
//! line, the body. The key is the AWS test suite's example key (AKIDEXAMPLE), `now` the
//! suite's signing time, so the seed corpus holds requests that verify.
#![no_main]

use std::sync::LazyLock;
use std::time::{Duration, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use retention_proxy::vendors::sigv4_verify::{ClientKeys, verify};

static KEYS: LazyLock<ClientKeys> = LazyLock::new(|| {
    ClientKeys::from_toml_str(
        "[[client]]\nname = \"suite\"\naccess_key_id = \"AKIDEXAMPLE\"\nsecret_access_key = \"wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY\"\n",
        "fuzz",
    )
    .expect("the fuzz key file parses")
});

fuzz_target!(|data: &[u8]| {
    let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&data[..i], &data[i + 2..]),
        None => (data, &[][..]),
    };
    let mut lines = head.split(|&b| b == b'\n');
    let Some(first) = lines.next() else { return };
    let Some(sp) = first.iter().position(|&b| b == b' ') else {
        return;
    };
    let Ok(method) = http::Method::from_bytes(&first[..sp]) else {
        return;
    };
    let Ok(uri) = http::Uri::try_from(&first[sp + 1..]) else {
        return;
    };
    let mut headers = http::HeaderMap::new();
    for l in lines {
        let Some(colon) = l.iter().position(|&b| b == b':') else {
            continue;
        };
        let (k, v) = (&l[..colon], l[colon + 1..].trim_ascii());
        if let (Ok(k), Ok(v)) = (
            http::HeaderName::from_bytes(k.trim_ascii()),
            http::HeaderValue::from_bytes(v),
        ) {
            headers.append(k, v);
        }
    }
    // 20150830T123600Z, the suite's signing time.
    let now = UNIX_EPOCH + Duration::from_secs(1_440_938_160);
    if let Ok(v) = verify(&KEYS, &method, &uri, &headers, body, now) {
        assert_eq!(v.access_key_id, "AKIDEXAMPLE");
        assert_eq!(v.name, "suite");
    }
});
