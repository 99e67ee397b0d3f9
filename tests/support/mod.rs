//! Shared helpers for every integration test, declared the same way by each test file
//! (`mod support;`). Not every test uses every helper, hence the `dead_code` allowance.
//!
//! - [`fixtures`]: vendor hosts, resource ids, tokens and keys the tests share;
//! - [`fake_vendor`] and [`sigv4`]: an in-process fake vendor and a SigV4 signer/verifier;
//! - [`in_process`]: the real proxy run in-process ([`in_process::InProcessProxy`]);
//! - [`binary`]: the built binary run as a child process ([`binary::BinaryProxy`]) and the
//!   offline commands;
//! - [`clients`]: requests as real clients make them, in forward or reverse mode;
//! - [`modes`]: the fake vendor + in-process proxy environment of the forward/reverse tests;
//! - [`trail`]: the shared trail of the compliance-query tests;
//! - [`tls`]: test CAs, a TLS front for the fake vendor, tunnels;
//! - [`checks`]: soft assertions that must be finished;
//! - [`receivers`]: alert receivers (webhook, Splunk HEC, a real rsyslogd, a black hole);
//! - [`postgres`]: a throw-away PostgreSQL cluster for the central audit store;
//! - [`fleet`]: proxies of one fleet shipping to it, and what it holds;
//! - [`seeded`]: audit databases of thousands of calls, written through the library.

#![allow(dead_code)]

pub mod binary;
pub mod checks;
pub mod clients;
pub mod fake_vendor;
pub mod fixtures;
pub mod fleet;
pub mod in_process;
pub mod modes;
pub mod postgres;
pub mod receivers;
pub mod seeded;
pub mod sigv4;
pub mod tls;
pub mod trail;

use fake_vendor::SimpleResponse;

/// A TOML basic string (JSON string escapes are valid TOML escapes).
pub fn toml_str(s: &str) -> String {
    serde_json::to_string(s).expect("a string serialises")
}

/// Whether `needle` occurs in `haystack`.
pub fn contains_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// A response body as text (lossily decoded).
pub fn body_text(r: &SimpleResponse) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}
