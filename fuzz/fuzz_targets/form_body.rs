//! Slack retention calls with an arbitrary body and query, form-encoded or JSON by the first
//! byte: the parser never panics, and the token parameter never survives into
//! `requestParameters`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use retention_proxy::vendors::{self, Family, RequestParts};

fuzz_target!(|data: &[u8]| {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    let (query, body) = match rest.iter().position(|&b| b == 0) {
        Some(i) => (std::str::from_utf8(&rest[..i]).ok(), &rest[i + 1..]),
        None => (None, rest),
    };
    let ctype = if kind % 2 == 0 {
        "application/x-www-form-urlencoded"
    } else {
        "application/json"
    };
    let mut headers = http::HeaderMap::new();
    headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(ctype));
    for path in [
        "/api/admin.conversations.setCustomRetention",
        "/api/admin.conversations.getCustomRetention",
        "/api/admin.conversations.removeCustomRetention",
    ] {
        let method = http::Method::POST;
        let Some(m) = vendors::classify(Family::Slack, &method, path) else {
            panic!("{path} is a retention call")
        };
        let parts = RequestParts {
            method: &method,
            query,
            headers: &headers,
        };
        let call = match vendors::parse(&m, &parts, body) {
            Ok(c) => c,
            Err(r) => *r.partial,
        };
        // The token parameter is never stored as the client sent it (a fingerprint replaces
        // it later); the same text inside another parameter is that parameter's value.
        if let Some(tok) = &call.slack_token {
            let stored = call.request_parameters.get("token").and_then(|v| v.as_str());
            assert_ne!(stored, Some(tok.as_str()), "the token is stored in requestParameters");
        }
    }
});
