//! The canonical request of SigV4, rebuilt from the request exactly as it arrived: path and
//! query percent-encoded as AWS encodes them, the signed headers with their values trimmed and
//! folded, the payload hash.

use std::borrow::Cow;

use http::{HeaderMap, Method, Uri};

use super::request::{Param, single_header};
use super::{Refusal, X_AMZ_SIGNATURE, incomplete};

/// RFC 3986 unreserved: letters, digits, `-`, `.`, `_`, `~`.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~')
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

pub(super) fn hex_lower(bytes: &[u8; 32]) -> [u8; 64] {
    const LOWER: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 64];
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = LOWER[usize::from(b >> 4)];
        out[2 * i + 1] = LOWER[usize::from(b & 15)];
    }
    out
}

/// Appends `bytes` with everything but RFC 3986 unreserved characters (and `/` when
/// `keep_slash`) percent-encoded in upper-case hex.
fn push_encoded(out: &mut Vec<u8>, bytes: &[u8], keep_slash: bool) {
    let mut rest = bytes;
    while !rest.is_empty() {
        // Copy the run of bytes that stay as they are in one go.
        let run = rest
            .iter()
            .position(|&b| !(is_unreserved(b) || (keep_slash && b == b'/')))
            .unwrap_or(rest.len());
        out.extend_from_slice(&rest[..run]);
        if let Some(&b) = rest.get(run) {
            out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
            rest = &rest[run + 1..];
        } else {
            rest = &[];
        }
    }
}

/// The canonical URI: the path as it came on the wire, dot segments and empty segments
/// removed (RFC 3986 §5.2.4, as AWS does), then every byte but unreserved ones and `/`
/// encoded again — so `%3A` becomes `%253A`, the double encoding of AWS's non-S3 services.
pub(super) fn push_canonical_uri(out: &mut Vec<u8>, path: &str) {
    if path.is_empty() {
        out.push(b'/');
        return;
    }
    if path.starts_with('/') && !path.contains("//") && !path.split('/').any(|s| s == "." || s == "..") {
        push_encoded(out, path.as_bytes(), true);
        return;
    }
    let mut segments: Vec<&str> = Vec::new();
    for s in path.split('/') {
        match s {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    out.push(b'/');
    for (i, s) in segments.iter().enumerate() {
        if i > 0 {
            out.push(b'/');
        }
        push_encoded(out, s.as_bytes(), false);
    }
    let ends_with_slash = ["/", "/.", "/..", "/./", "/../"].iter().any(|e| path.ends_with(e));
    if ends_with_slash && !segments.is_empty() {
        out.push(b'/');
    }
}

/// `bytes` strictly percent-encoded, borrowed when that changes nothing.
pub(super) fn encoded(bytes: &[u8]) -> Cow<'_, [u8]> {
    if bytes.iter().all(|&b| is_unreserved(b)) {
        return Cow::Borrowed(bytes);
    }
    let mut out = Vec::with_capacity(bytes.len() + 16);
    push_encoded(&mut out, bytes, false);
    Cow::Owned(out)
}

/// The canonical query: every parameter (but a presigned request's `X-Amz-Signature`)
/// decoded, encoded strictly, sorted by name then value.
fn push_canonical_query(out: &mut Vec<u8>, params: &[Param<'_>], presigned: bool) {
    let mut pairs: Vec<_> = params
        .iter()
        .filter(|p| !(presigned && *p.name == *X_AMZ_SIGNATURE))
        .map(|p| (encoded(&p.name), encoded(&p.value)))
        .collect();
    pairs.sort_unstable();
    for (i, (n, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(b'&');
        }
        out.extend_from_slice(n);
        out.push(b'=');
        out.extend_from_slice(v);
    }
}

/// A header value trimmed of spaces and tabs, inner runs of them collapsed to one space.
pub(super) fn push_header_value(out: &mut Vec<u8>, value: &[u8]) {
    let blank = |b: &u8| *b == b' ' || *b == b'\t';
    let tidy = !value.first().is_some_and(blank)
        && !value.last().is_some_and(blank)
        && !value
            .windows(2)
            .any(|w| blank(&w[0]) && (blank(&w[1]) || w[0] == b'\t'));
    if tidy {
        out.extend_from_slice(value);
        return;
    }
    let mut pending_space = false;
    let mut started = false;
    for &b in value {
        if b == b' ' || b == b'\t' {
            pending_space = started;
        } else {
            if pending_space {
                out.push(b' ');
                pending_space = false;
            }
            out.push(b);
            started = true;
        }
    }
}

/// The canonical headers: each signed header, `name:value\n`, repeated values joined by `,`.
fn push_canonical_headers(
    out: &mut Vec<u8>,
    uri: &Uri,
    headers: &HeaderMap,
    signed_headers: &str,
    akid: &str,
) -> Result<(), Refusal> {
    for name in signed_headers.split(';') {
        out.extend_from_slice(name.as_bytes());
        out.push(b':');
        if name == "host" {
            // HTTP/1.1 has a Host header; an HTTP/2 request may carry `:authority` only.
            let host = match single_header(headers, "host", Some(akid))? {
                Some(h) => h.as_bytes(),
                None => match uri.authority() {
                    Some(a) if !a.as_str().contains('@') => a.as_str().as_bytes(),
                    _ => return Err(incomplete(Some(akid), "The request has no Host header.")),
                },
            };
            push_header_value(out, host);
        } else {
            let mut values = headers.get_all(name).iter().peekable();
            if values.peek().is_none() {
                return Err(incomplete(
                    Some(akid),
                    format!("SignedHeaders lists '{name}', which the request does not carry."),
                ));
            }
            for (i, v) in values.enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                push_header_value(out, v.as_bytes());
            }
        }
        out.push(b'\n');
    }
    Ok(())
}

/// The canonical request (AWS: "Create a canonical request for Signature Version 4").
#[allow(clippy::too_many_arguments)]
pub(super) fn canonical_request(
    out: &mut Vec<u8>,
    method: &Method,
    uri: &Uri,
    params: &[Param<'_>],
    presigned: bool,
    headers: &HeaderMap,
    signed_headers: &str,
    payload_hash: &[u8],
    akid: &str,
) -> Result<(), Refusal> {
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b'\n');
    push_canonical_uri(out, uri.path());
    out.push(b'\n');
    push_canonical_query(out, params, presigned);
    out.push(b'\n');
    push_canonical_headers(out, uri, headers, signed_headers, akid)?;
    out.push(b'\n');
    out.extend_from_slice(signed_headers.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(payload_hash);
    Ok(())
}
