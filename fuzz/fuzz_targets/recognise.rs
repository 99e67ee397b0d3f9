//! The recogniser on a whole request: method, path, headers and body, for every family,
//! through the same `classify_any` → `policy::read` the proxy runs. Input layout: one byte of
//! family, then `METHOD SP PATH LF`, header lines `name: value LF`, an empty line, the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use retention_proxy::policy;
use retention_proxy::vendors::{self, Family, RequestParts};

const FAMILIES: [Family; 4] = [
    Family::Chime,
    Family::ChimeMessaging,
    Family::ChimeIdentity,
    Family::Slack,
];

fuzz_target!(|data: &[u8]| {
    let Some((&f, rest)) = data.split_first() else { return };
    let family = FAMILIES[usize::from(f) % FAMILIES.len()];
    let (head, body) = match rest.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&rest[..i], &rest[i + 2..]),
        None => (rest, &[][..]),
    };
    let Ok(head) = std::str::from_utf8(head) else { return };
    let mut lines = head.split('\n');
    let Some((method, target)) = lines.next().and_then(|l| l.split_once(' ')) else {
        return;
    };
    let Ok(method) = http::Method::from_bytes(method.as_bytes()) else {
        return;
    };
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let mut headers = http::HeaderMap::new();
    for l in lines {
        if let Some((k, v)) = l.split_once(':')
            && let (Ok(k), Ok(v)) = (
                http::HeaderName::from_bytes(k.trim().as_bytes()),
                http::HeaderValue::from_str(v.trim()),
            )
        {
            headers.append(k, v);
        }
    }
    let Some((m, odd_path)) = vendors::classify_any(family, &method, path) else {
        return;
    };
    let parts = RequestParts {
        method: &method,
        query,
        headers: &headers,
    };
    let (call, problem) = policy::read(&m, odd_path, &parts, Ok(body));
    // What a call reports must name the operation it was classified as.
    assert_eq!(call.op, m.op);
    let _ = policy::judge(&[], &call, problem, &[]);
});
