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
fn trim_all(value: &[u8]) -> String {
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

fn is_amz_date(s: &str) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

    const AKID: &str = "AKIAIOSFODNN7EXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

    fn secrets() -> HashMap<String, String> {
        HashMap::from([(AKID.to_string(), SECRET.to_string())])
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    const PUT_RETENTION_PATH: &str = "/accounts/12a3456b-7c89-012d-3456-78901e23fg45/retention-settings";
    const PUT_RETENTION_BODY: &str = r#"{"RetentionSettings": {"RoomRetentionSettings": {"RetentionDays": 365}, "ConversationRetentionSettings": {"RetentionDays": 180}}}"#;

    /// boto3 chime.put_retention_settings, exactly as captured.
    fn put_retention_headers() -> HeaderMap {
        headers(&[
            ("Host", "127.0.0.1:18080"),
            ("Accept-Encoding", "identity"),
            ("Content-Type", "application/json"),
            (
                "User-Agent",
                "Boto3/1.44.5 md/Botocore#1.44.5 ua/2.1 os/linux#6.18.44-fc-v669 md/arch#x86_64 lang/python#3.11.7 md/pyimpl#CPython m/E,Z,N,g,b cfg/retry-mode#standard Botocore/1.44.5",
            ),
            ("X-Amz-Date", "20261122T043147Z"),
            (
                "Authorization",
                "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20261122/us-east-1/chime/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=6f9dd1f64f8823f0dfae1a3b9e2d3defdd5e83a83aae8987a17d5128488ea26c",
            ),
            ("amz-sdk-invocation-id", "f96bebaf-5f66-43d4-a6ec-41c8823ea12d"),
            ("amz-sdk-request", "attempt=1; max=3"),
            ("Content-Length", "129"),
        ])
    }

    const CHANNEL_PATH: &str = "/channels/arn%3Aaws%3Achime%3Aus-east-1%3A111122223333%3Aapp-instance%2F87654321-4321-4321-4321-210987654321%2Fchannel%2Fch-0001/expiration-settings";
    const BEARER: &str =
        "arn:aws:chime:us-east-1:111122223333:app-instance/87654321-4321-4321-4321-210987654321/user/admin-user-1";
    const CHANNEL_BODY: &str =
        r#"{"ExpirationSettings": {"ExpirationDays": 30, "ExpirationCriterion": "CREATED_TIMESTAMP"}}"#;

    /// boto3 chime-sdk-messaging.put_channel_expiration_settings (CREATED_TIMESTAMP), as captured.
    fn channel_headers() -> HeaderMap {
        headers(&[
            ("Host", "127.0.0.1:18080"),
            ("Accept-Encoding", "identity"),
            ("x-amz-chime-bearer", BEARER),
            ("Content-Type", "application/json"),
            ("User-Agent", "Boto3/1.44.5 md/Botocore#1.44.5"),
            ("X-Amz-Date", "20261122T043147Z"),
            (
                "Authorization",
                "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20261122/us-east-1/chime/aws4_request, SignedHeaders=content-type;host;x-amz-chime-bearer;x-amz-date, Signature=0222496b176635537c180f52cf39c5ad5a4934084b6e1d98b2c578c636226d20",
            ),
            ("amz-sdk-invocation-id", "5cc3180e-3f96-4528-8d3d-c6fc38bbb1b0"),
            ("amz-sdk-request", "attempt=1; max=3"),
            ("Content-Length", "90"),
        ])
    }

    #[test]
    fn captured_boto3_put_retention_settings_verifies() {
        let v = verify(
            "PUT",
            PUT_RETENTION_PATH,
            &put_retention_headers(),
            PUT_RETENTION_BODY.as_bytes(),
            &secrets(),
        )
        .unwrap();
        assert_eq!(
            v,
            VerifiedSig {
                access_key_id: AKID.into(),
                region: "us-east-1".into(),
                service: "chime".into(),
                signed_headers: vec!["content-type".into(), "host".into(), "x-amz-date".into()],
            }
        );
    }

    #[test]
    fn captured_boto3_channel_expiration_with_encoded_arn_verifies() {
        let v = verify(
            "PUT",
            CHANNEL_PATH,
            &channel_headers(),
            CHANNEL_BODY.as_bytes(),
            &secrets(),
        )
        .unwrap();
        assert_eq!(v.signed_headers.len(), 4);
        // The canonical URI double-encodes the already percent-encoded ARN.
        assert!(canonical_uri(CHANNEL_PATH).starts_with("/channels/arn%253Aaws%253Achime%253A"));
        assert!(canonical_uri(CHANNEL_PATH).contains("%252Fchannel%252Fch-0001/expiration-settings"));
    }

    #[test]
    fn captured_boto3_get_retention_settings_verifies() {
        let h = headers(&[
            ("Host", "127.0.0.1:18080"),
            ("X-Amz-Date", "20261122T043147Z"),
            (
                "Authorization",
                "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20261122/us-east-1/chime/aws4_request, SignedHeaders=host;x-amz-date, Signature=9318f359be7f9f9068b102ec94f7cd8eee3aa2966955b491610b3c79a6a48917",
            ),
        ]);
        verify("GET", PUT_RETENTION_PATH, &h, b"", &secrets()).unwrap();
    }

    #[test]
    fn captured_forward_proxy_absolute_form_verifies() {
        let h = headers(&[
            ("Host", "chime.us-east-1.amazonaws.com"),
            ("Content-Type", "application/json"),
            ("X-Amz-Date", "20261122T043658Z"),
            (
                "Authorization",
                "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20261122/us-east-1/chime/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=4be6aad3114db362a26d8e3d7760573dcc71431e2740d4ac7b7e7a5c4cd61ef7",
            ),
        ]);
        let body = br#"{"RetentionSettings": {"RoomRetentionSettings": {"RetentionDays": 365}}}"#;
        let absolute = format!("http://chime.us-east-1.amazonaws.com{PUT_RETENTION_PATH}");
        verify("PUT", &absolute, &h, body, &secrets()).unwrap();
        verify("PUT", PUT_RETENTION_PATH, &h, body, &secrets()).unwrap();
    }

    #[test]
    fn captured_aws_sdk_js_v3_with_content_sha256_verifies() {
        let h = headers(&[
            (
                "x-amz-chime-bearer",
                "arn:aws:chime:us-east-1:111122223333:app-instance/87654321-4321-4321-4321-210987654321/user/u1",
            ),
            ("content-type", "application/json"),
            ("content-length", "91"),
            ("x-amz-user-agent", "aws-sdk-js/3.1141.0"),
            ("user-agent", "aws-sdk-js/3.1141.0 ua/2.1"),
            ("host", "127.0.0.1:18080"),
            ("amz-sdk-invocation-id", "b867ad29-287e-4930-8edb-605b3e95952a"),
            ("amz-sdk-request", "attempt=1; max=3"),
            ("x-amz-date", "20261122T043621Z"),
            (
                "x-amz-content-sha256",
                "557a457bded3cfa4bf560b9148740de18198e464c06fd732558da3d03cc889c9",
            ),
            (
                "authorization",
                "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20261122/us-east-1/chime/aws4_request, SignedHeaders=amz-sdk-invocation-id;amz-sdk-request;content-length;content-type;host;x-amz-chime-bearer;x-amz-content-sha256;x-amz-date;x-amz-user-agent, Signature=b77be2bed5650bd431ff32078246f5c6849d4ecb6f992a3e441ab87f6f37b87e",
            ),
        ]);
        let body = br#"{"ExpirationSettings":{"ExpirationDays":30,"ExpirationCriterion":"LAST_MESSAGE_TIMESTAMP"}}"#;
        verify("PUT", CHANNEL_PATH, &h, body, &secrets()).unwrap();
        // The claimed payload hash must match the body actually received.
        let err = verify("PUT", CHANNEL_PATH, &h, b"{}", &secrets()).unwrap_err();
        assert!(err.contains("x-amz-content-sha256"), "{err}");
    }

    /// Fixture produced with botocore 1.43 `SigV4Auth` (temporary credentials, an unsorted
    /// query string with encoded values, a header needing whitespace folding).
    #[test]
    fn botocore_fixture_with_session_token_and_query_verifies() {
        let secrets = HashMap::from([(
            "ASIAEXAMPLETEMPKEY01".to_string(),
            "tempSecret/EXAMPLE+KEY/0123456789abcdefABCD".to_string(),
        )]);
        let h = headers(&[
            ("Host", "127.0.0.1:18080"),
            (
                "x-amz-chime-bearer",
                "arn:aws:chime:us-east-1:111122223333:app-instance/x/user/u1",
            ),
            ("X-Custom", "  a   b  c "),
            ("X-Amz-Date", "20261122T050000Z"),
            (
                "X-Amz-Security-Token",
                "FwoGZXIvYXdzEXAMPLE//////////wEaDExampleSessionToken+/=",
            ),
            (
                "Authorization",
                "AWS4-HMAC-SHA256 Credential=ASIAEXAMPLETEMPKEY01/20261122/us-east-1/chime/aws4_request, SignedHeaders=host;x-amz-chime-bearer;x-amz-date;x-amz-security-token;x-custom, Signature=deff8c722c3e26f5136046ef1d45c62dc83b5fa80cf22fc10500884fd6047b42",
            ),
        ]);
        let target = "/channels?next-token=abc%2Fdef%3D%3D&max-results=50&app-instance-arn=arn%3Aaws%3Achime%3Aus-east-1%3A111122223333%3Aapp-instance%2Fx";
        let v = verify("GET", target, &h, b"", &secrets).unwrap();
        assert!(v.signed_headers.contains(&"x-amz-security-token".to_string()));

        // A different session token breaks the signature.
        let mut other = h.clone();
        other.insert("x-amz-security-token", HeaderValue::from_static("other"));
        assert!(verify("GET", target, &other, b"", &secrets).is_err());
    }

    #[test]
    fn mismatches_are_reported_with_the_canonical_request() {
        let err = verify(
            "PUT",
            PUT_RETENTION_PATH,
            &put_retention_headers(),
            br#"{"RetentionSettings": {}}"#,
            &secrets(),
        )
        .unwrap_err();
        assert!(err.contains("signature mismatch"), "{err}");
        assert!(err.contains("Canonical request:\nPUT\n/accounts/"), "{err}");

        let wrong = HashMap::from([(AKID.to_string(), "not-the-secret".to_string())]);
        let body = PUT_RETENTION_BODY.as_bytes();
        assert!(verify("PUT", PUT_RETENTION_PATH, &put_retention_headers(), body, &wrong).is_err());

        let err = verify(
            "PUT",
            PUT_RETENTION_PATH,
            &put_retention_headers(),
            body,
            &HashMap::new(),
        )
        .unwrap_err();
        assert!(err.contains("unknown access key id"), "{err}");

        // A decoded path is a different canonical URI than the encoded one that was signed.
        let decoded = "/channels/arn:aws:chime:us-east-1:111122223333:app-instance/87654321-4321-4321-4321-210987654321/channel/ch-0001/expiration-settings";
        assert!(verify("PUT", decoded, &channel_headers(), CHANNEL_BODY.as_bytes(), &secrets()).is_err());

        let mut no_host = put_retention_headers();
        no_host.remove("host");
        let err = verify("PUT", PUT_RETENTION_PATH, &no_host, body, &secrets()).unwrap_err();
        assert!(err.contains("'host'"), "{err}");
    }

    #[test]
    fn sign_round_trips_and_matches_botocore() {
        let mut h = headers(&[
            ("Host", "127.0.0.1:18080"),
            ("Content-Type", "application/json"),
            ("User-Agent", "test"),
        ]);
        let params = SigningParams {
            access_key_id: AKID,
            secret_access_key: SECRET,
            session_token: None,
            region: "us-east-1",
            service: "chime",
            amz_date: "20261122T043147Z",
        };
        let auth = sign(
            "PUT",
            PUT_RETENTION_PATH,
            &mut h,
            PUT_RETENTION_BODY.as_bytes(),
            &params,
        )
        .unwrap();
        // Same inputs as the boto3 capture, so the same signature.
        assert!(
            auth.ends_with("Signature=6f9dd1f64f8823f0dfae1a3b9e2d3defdd5e83a83aae8987a17d5128488ea26c"),
            "{auth}"
        );
        verify("PUT", PUT_RETENTION_PATH, &h, PUT_RETENTION_BODY.as_bytes(), &secrets()).unwrap();
    }

    #[test]
    fn canonicalization_helpers() {
        assert_eq!(canonical_uri(""), "/");
        assert_eq!(canonical_uri("/a//b/./c/../d/"), "/a/b/d/");
        assert_eq!(canonical_uri("/x%3Ay z"), "/x%253Ay%20z");
        assert_eq!(canonical_query("b=2&a=1&a=0&c"), "a=0&a=1&b=2&c=");
        assert_eq!(canonical_query("k=a%2fb+c"), "k=a%2Fb%2Bc");
        assert_eq!(trim_all(b"  a \t b  "), "a b");
        assert!(is_amz_date(&amz_date_now()));
    }
}
