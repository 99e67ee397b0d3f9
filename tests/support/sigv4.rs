//! An independent, hand-written AWS Signature Version 4 verifier and signer for tests.
//!
//! It deliberately does not use the `aws-sigv4` crate (the proxy may): the point is a second,
//! independent implementation that follows botocore's behaviour for non-S3 services:
//!
//! - canonical URI: the raw path as received, dot segments and empty segments removed, then
//!   URI-encoded *again* (every byte outside `A-Za-z0-9-_.~` and `/` becomes `%XX`, so an
//!   ARN's `%3A` becomes `%253A`);
//! - canonical query string: pairs split on `&`, key and value percent-decoded and re-encoded
//!   with the unreserved set, sorted by key then value;
//! - canonical headers: exactly the `SignedHeaders` list, lowercase names, values trimmed with
//!   inner whitespace runs collapsed to one space, repeated headers joined with `,`;
//! - payload hash: the `x-amz-content-sha256` header if present (it must then match the body),
//!   otherwise hex SHA-256 of the body.

use std::collections::HashMap;

use hmac::{Hmac, KeyInit, Mac};
use http::{HeaderMap, HeaderName, HeaderValue};
use sha2::{Digest, Sha256};

/// What a successfully verified `Authorization` header said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedSig {
    pub access_key_id: String,
    pub region: String,
    pub service: String,
    pub signed_headers: Vec<String>,
}

/// The parsed parts of an `AWS4-HMAC-SHA256` `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedAuthorization {
    pub access_key_id: String,
    pub date: String,
    pub region: String,
    pub service: String,
    pub signed_headers: Vec<String>,
    pub signature: String,
}

/// Hex SHA-256 of the empty string.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Headers botocore never signs (hop-by-hop and a few volatile ones).
const UNSIGNABLE_HEADERS: &[&str] = &[
    "authorization",
    "connection",
    "expect",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "x-amzn-trace-id",
];

type HmacSha256 = Hmac<Sha256>;

/// Hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// The SigV4 signing key: `HMAC(HMAC(HMAC(HMAC("AWS4"+secret, date), region), service), "aws4_request")`.
pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> Vec<u8> {
    let k_date = hmac_sha256(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k_region = hmac_sha256(&k_date, region.as_bytes());
    let k_service = hmac_sha256(&k_region, service.as_bytes());
    hmac_sha256(&k_service, b"aws4_request")
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~')
}

/// Percent-encodes every byte outside the unreserved set (and outside `/` when `keep_slash`),
/// with uppercase hex, as SigV4 requires.
pub fn uri_encode(input: &[u8], keep_slash: bool) -> String {
    let mut out = String::with_capacity(input.len() * 3);
    for &b in input {
        if is_unreserved(b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes `%XX` escapes (a `+` stays a `+`; malformed escapes are kept literally).
fn percent_decode(input: &str) -> Vec<u8> {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hi = (bytes[i + 1] as char).to_digit(16);
            let lo = (bytes[i + 2] as char).to_digit(16);
            if let (Some(hi), Some(lo)) = (hi, lo) {
                out.push((hi * 16 + lo) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

/// RFC 3986 dot-segment removal plus removal of empty segments, as botocore's
/// `normalize_url_path` does (`""` becomes `/`).
fn normalize_path(path: &str) -> String {
    if path.is_empty() {
        return "/".to_string();
    }
    let mut segments: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let first = if path.starts_with('/') { "/" } else { "" };
    let last = if path.ends_with('/') && !segments.is_empty() {
        "/"
    } else {
        ""
    };
    format!("{first}{}{last}", segments.join("/"))
}

/// Splits a request target into (path, query). An absolute-form target
/// (`http://host/path?q`) is reduced to its path and query first.
fn split_target(raw_path_and_query: &str) -> (&str, &str) {
    let mut target = raw_path_and_query;
    if let Some(idx) = target.find("://") {
        let rest = &target[idx + 3..];
        target = match rest.find(['/', '?']) {
            Some(p) => &rest[p..],
            None => "",
        };
    }
    let target = target.split('#').next().unwrap_or("");
    match target.split_once('?') {
        Some((p, q)) => (p, q),
        None => (target, ""),
    }
}

/// The canonical URI for a non-S3 service: normalized raw path, URI-encoded again.
pub fn canonical_uri(raw_path: &str) -> String {
    uri_encode(normalize_path(raw_path).as_bytes(), true)
}

/// The canonical query string: decoded, re-encoded, sorted by key then value.
pub fn canonical_query(raw_query: &str) -> String {
    let mut pairs: Vec<(String, String)> = raw_query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                uri_encode(&percent_decode(k), false),
                uri_encode(&percent_decode(v), false),
            )
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// Trims a header value and collapses runs of whitespace to one space.
pub fn trim_all(value: &[u8]) -> String {
    let text = String::from_utf8_lossy(value);
    text.split_ascii_whitespace().collect::<Vec<_>>().join(" ")
}

/// Builds the canonical request. `signed_headers` must be lowercase names, in the order they
/// are listed in `SignedHeaders`. Returns an error naming a signed header that is missing.
pub fn canonical_request(
    method: &str,
    raw_path_and_query: &str,
    headers: &HeaderMap,
    signed_headers: &[String],
    payload_hash: &str,
) -> Result<String, String> {
    let (path, query) = split_target(raw_path_and_query);
    let mut canonical_headers = String::new();
    for name in signed_headers {
        let values: Vec<String> = headers
            .get_all(name.as_str())
            .iter()
            .map(|v| trim_all(v.as_bytes()))
            .collect();
        if values.is_empty() {
            return Err(format!(
                "header '{name}' is listed in SignedHeaders but is not present in the request"
            ));
        }
        canonical_headers.push_str(&format!("{name}:{}\n", values.join(",")));
    }
    Ok(format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        method.to_ascii_uppercase(),
        canonical_uri(path),
        canonical_query(query),
        canonical_headers,
        signed_headers.join(";"),
        payload_hash
    ))
}

/// The string to sign for a canonical request.
pub fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &str) -> String {
    format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        sha256_hex(canonical_request.as_bytes())
    )
}

/// Parses `AWS4-HMAC-SHA256 Credential=AKID/DATE/REGION/SERVICE/aws4_request,
/// SignedHeaders=a;b, Signature=hex`.
pub fn parse_authorization(value: &str) -> Result<ParsedAuthorization, String> {
    let rest = value
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or_else(|| format!("Authorization is not AWS4-HMAC-SHA256: {value:?}"))?;
    let mut credential = None;
    let mut signed_headers = None;
    let mut signature = None;
    for part in rest.split(',') {
        let part = part.trim();
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("malformed Authorization component {part:?}"))?;
        let slot = match k {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed_headers,
            "Signature" => &mut signature,
            other => return Err(format!("unknown Authorization component {other:?}")),
        };
        if slot.replace(v.to_string()).is_some() {
            return Err(format!("Authorization component {k} given twice"));
        }
    }
    let credential = credential.ok_or("Authorization lacks Credential=")?;
    let signed_headers = signed_headers.ok_or("Authorization lacks SignedHeaders=")?;
    let signature = signature.ok_or("Authorization lacks Signature=")?;
    let scope: Vec<&str> = credential.split('/').collect();
    if scope.len() != 5 || scope[4] != "aws4_request" || scope.iter().any(|s| s.is_empty()) {
        return Err(format!(
            "Credential {credential:?} is not AKID/YYYYMMDD/region/service/aws4_request"
        ));
    }
    let signed: Vec<String> = signed_headers.split(';').map(str::to_string).collect();
    if signed.iter().any(|h| h.is_empty() || *h != h.to_ascii_lowercase()) {
        return Err(format!(
            "SignedHeaders {signed_headers:?} must be non-empty lowercase names"
        ));
    }
    if signature.len() != 64 || !signature.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("Signature {signature:?} is not 64 hex digits"));
    }
    Ok(ParsedAuthorization {
        access_key_id: scope[0].to_string(),
        date: scope[1].to_string(),
        region: scope[2].to_string(),
        service: scope[3].to_string(),
        signed_headers: signed,
        signature: signature.to_ascii_lowercase(),
    })
}

fn single_header<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, String> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(format!("header '{name}' appears more than once"));
    }
    first
        .to_str()
        .map(Some)
        .map_err(|_| format!("header '{name}' is not visible ASCII"))
}

/// Whether `s` is an `X-Amz-Date` (`YYYYMMDDTHHMMSSZ`).
pub fn is_amz_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 16
        && b[8] == b'T'
        && b[15] == b'Z'
        && b[..8].iter().all(u8::is_ascii_digit)
        && b[9..15].iter().all(u8::is_ascii_digit)
}

/// Verifies a SigV4-signed request whose whole body is in hand.
pub fn verify(
    method: &str,
    raw_path_and_query: &str,
    headers: &HeaderMap,
    body: &[u8],
    secrets: &HashMap<String, String>,
) -> Result<VerifiedSig, String> {
    verify_with_body_hash(method, raw_path_and_query, headers, &sha256_hex(body), secrets)
}

/// Verifies a SigV4-signed request given the hex SHA-256 of its body (for bodies that were
/// hashed while streaming instead of being kept).
pub fn verify_with_body_hash(
    method: &str,
    raw_path_and_query: &str,
    headers: &HeaderMap,
    body_sha256: &str,
    secrets: &HashMap<String, String>,
) -> Result<VerifiedSig, String> {
    let auth = single_header(headers, "authorization")?.ok_or("request has no Authorization header")?;
    let parsed = parse_authorization(auth)?;
    let secret = secrets.get(&parsed.access_key_id).ok_or_else(|| {
        format!(
            "unknown access key id {:?} (the fake vendor knows {:?})",
            parsed.access_key_id,
            {
                let mut keys: Vec<&String> = secrets.keys().collect();
                keys.sort();
                keys
            }
        )
    })?;
    if !parsed.signed_headers.iter().any(|h| h == "host") {
        return Err(format!(
            "SignedHeaders {:?} does not include host",
            parsed.signed_headers.join(";")
        ));
    }
    let amz_date = single_header(headers, "x-amz-date")?.ok_or("request has no X-Amz-Date header")?;
    if !is_amz_date(amz_date) {
        return Err(format!("X-Amz-Date {amz_date:?} is not YYYYMMDDTHHMMSSZ"));
    }
    if amz_date[..8] != parsed.date {
        return Err(format!(
            "credential scope date {} does not match X-Amz-Date {amz_date}",
            parsed.date
        ));
    }
    let payload_hash = match single_header(headers, "x-amz-content-sha256")? {
        Some(claimed) => {
            if claimed == "UNSIGNED-PAYLOAD" || claimed.starts_with("STREAMING-") {
                return Err(format!(
                    "x-amz-content-sha256 {claimed:?} (unsigned or streaming payload) is not accepted by this service"
                ));
            }
            if !claimed.eq_ignore_ascii_case(body_sha256) {
                return Err(format!(
                    "x-amz-content-sha256 {claimed} does not match the SHA-256 of the body received ({body_sha256})"
                ));
            }
            claimed.to_string()
        }
        None => body_sha256.to_string(),
    };
    let creq = canonical_request(
        method,
        raw_path_and_query,
        headers,
        &parsed.signed_headers,
        &payload_hash,
    )?;
    let scope = format!("{}/{}/{}/aws4_request", parsed.date, parsed.region, parsed.service);
    let sts = string_to_sign(amz_date, &scope, &creq);
    let key = signing_key(secret, &parsed.date, &parsed.region, &parsed.service);
    let expected = hex::encode(hmac_sha256(&key, sts.as_bytes()));
    if expected != parsed.signature {
        return Err(format!(
            "signature mismatch: request carries {} but the expected signature is {expected}.\n\
             Canonical request:\n{creq}\n\nString to sign:\n{sts}",
            parsed.signature
        ));
    }
    Ok(VerifiedSig {
        access_key_id: parsed.access_key_id,
        region: parsed.region,
        service: parsed.service,
        signed_headers: parsed.signed_headers,
    })
}

/// Credentials and scope for [`sign`].
#[derive(Debug, Clone)]
pub struct SigningParams<'a> {
    pub access_key_id: &'a str,
    pub secret_access_key: &'a str,
    pub session_token: Option<&'a str>,
    pub region: &'a str,
    pub service: &'a str,
    /// `YYYYMMDDTHHMMSSZ`; see [`amz_date_now`].
    pub amz_date: &'a str,
}

/// The current UTC time as an `X-Amz-Date` value.
pub fn amz_date_now() -> String {
    let fmt = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    time::OffsetDateTime::now_utc()
        .format(&fmt)
        .expect("formatting a UTC timestamp cannot fail")
}

/// Signs a request the way botocore does, acting as a client in tests.
///
/// `headers` must already contain `Host` (and everything else the request will carry). This
/// sets `X-Amz-Date`, `X-Amz-Security-Token` (when `params.session_token` is set) and
/// `Authorization`, signing every header present except the ones botocore never signs.
/// Returns the `Authorization` value.
pub fn sign(
    method: &str,
    raw_path_and_query: &str,
    headers: &mut HeaderMap,
    body: &[u8],
    params: &SigningParams<'_>,
) -> Result<String, String> {
    if !headers.contains_key(http::header::HOST) {
        return Err("sign: the request must carry a Host header".to_string());
    }
    if !is_amz_date(params.amz_date) {
        return Err(format!("sign: amz_date {:?} is not YYYYMMDDTHHMMSSZ", params.amz_date));
    }
    headers.remove(http::header::AUTHORIZATION);
    headers.insert(
        HeaderName::from_static("x-amz-date"),
        HeaderValue::from_str(params.amz_date).map_err(|e| e.to_string())?,
    );
    headers.remove("x-amz-security-token");
    if let Some(token) = params.session_token {
        headers.insert(
            HeaderName::from_static("x-amz-security-token"),
            HeaderValue::from_str(token).map_err(|e| format!("session token: {e}"))?,
        );
    }
    let mut signed: Vec<String> = headers
        .keys()
        .map(|k| k.as_str().to_string())
        .filter(|k| !UNSIGNABLE_HEADERS.contains(&k.as_str()))
        .collect();
    signed.sort();
    signed.dedup();
    let payload_hash = match single_header(headers, "x-amz-content-sha256")? {
        Some(h) => h.to_string(),
        None => sha256_hex(body),
    };
    let creq = canonical_request(method, raw_path_and_query, headers, &signed, &payload_hash)?;
    let date = &params.amz_date[..8];
    let scope = format!("{date}/{}/{}/aws4_request", params.region, params.service);
    let sts = string_to_sign(params.amz_date, &scope, &creq);
    let key = signing_key(params.secret_access_key, date, params.region, params.service);
    let signature = hex::encode(hmac_sha256(&key, sts.as_bytes()));
    let auth = format!(
        "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={}, Signature={signature}",
        params.access_key_id,
        signed.join(";")
    );
    headers.insert(
        http::header::AUTHORIZATION,
        HeaderValue::from_str(&auth).map_err(|e| e.to_string())?,
    );
    Ok(auth)
}

/// Builds a signed `http::Request` for tests: `host` becomes the `Host` header, `headers` are
/// added as given, then the request is signed with [`sign`].
pub fn signed_request(
    method: &str,
    host: &str,
    raw_path_and_query: &str,
    headers: &[(&str, &str)],
    body: impl Into<bytes::Bytes>,
    params: &SigningParams<'_>,
) -> Result<http::Request<bytes::Bytes>, String> {
    let body = body.into();
    let mut map = HeaderMap::new();
    map.insert(
        http::header::HOST,
        HeaderValue::from_str(host).map_err(|e| format!("host: {e}"))?,
    );
    for (name, value) in headers {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).map_err(|e| format!("{name}: {e}"))?,
            HeaderValue::from_str(value).map_err(|e| format!("{name}: {e}"))?,
        );
    }
    sign(method, raw_path_and_query, &mut map, &body, params)?;
    let mut req = http::Request::builder()
        .method(method)
        .uri(raw_path_and_query)
        .body(body)
        .map_err(|e| format!("request: {e}"))?;
    *req.headers_mut() = map;
    Ok(req)
}
