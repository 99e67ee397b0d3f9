//! What a request says about its signature, read strictly: the `Authorization` header or the
//! presigned query parameters, the credential scope, the signed header list and the signature.
//! Anything repeated, malformed or missing is a [`Refusal`](super::Refusal), never a guess.

use std::borrow::Cow;

use http::{HeaderMap, HeaderValue};

use super::clients::valid_access_key_id;
use super::{
    ALGORITHM, MAX_PRESIGNED_EXPIRES, Refusal, TERMINATOR, X_AMZ_ALGORITHM, X_AMZ_CREDENTIAL, X_AMZ_DATE,
    X_AMZ_EXPIRES, X_AMZ_SIGNATURE, X_AMZ_SIGNED_HEADERS, incomplete,
};

/// One query parameter, percent-decoded (`+` is a space), as bytes: nothing lossy, so two
/// different queries never canonicalise alike.
/// Borrowed from the query when there is nothing to decode (the common case).
pub(super) struct Param<'a> {
    pub(super) name: Cow<'a, [u8]>,
    pub(super) value: Cow<'a, [u8]>,
}

/// `%XY` decoded (a `%` without two hex digits stays as it is) and `+` read as a space.
fn decode_component(s: &str) -> Cow<'_, [u8]> {
    let b = s.as_bytes();
    if !b.iter().any(|&c| c == b'%' || c == b'+') {
        return Cow::Borrowed(b);
    }
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => match (b.get(i + 1).copied().and_then(hex), b.get(i + 2).copied().and_then(hex)) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    Cow::Owned(out)
}

pub(super) fn parse_query(query: &str) -> Vec<Param<'_>> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (n, v) = p.split_once('=').unwrap_or((p, ""));
            Param {
                name: decode_component(n),
                value: decode_component(v),
            }
        })
        .collect()
}

/// The signature information of a request, from its `Authorization` header or its query.
pub(super) struct SignatureInput<'a> {
    pub(super) credential: &'a str,
    pub(super) signed_headers: &'a str,
    pub(super) signature: &'a str,
    pub(super) amz_date: &'a str,
    /// `X-Amz-Expires` of a presigned request; `None` for a header-signed one.
    pub(super) expires: Option<i64>,
}

/// The one value of header `name`: `None` if absent, a refusal if repeated or not ASCII text.
pub(super) fn single_header<'a>(
    headers: &'a HeaderMap,
    name: &str,
    akid: Option<&str>,
) -> Result<Option<&'a HeaderValue>, Refusal> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(incomplete(
            akid,
            format!("The request carries more than one {name} header."),
        ));
    }
    Ok(first)
}

fn header_text<'a>(v: &'a HeaderValue, name: &str, akid: Option<&str>) -> Result<&'a str, Refusal> {
    v.to_str()
        .map_err(|_| incomplete(akid, format!("The {name} header is not printable ASCII text.")))
}

/// The access key id at the front of a credential, when it is a plausible one.
fn credential_key_id(credential: &str) -> Option<&str> {
    credential.split('/').next().filter(|id| valid_access_key_id(id))
}

/// Reads `AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…`.
fn parse_authorization(value: &str) -> Result<(&str, &str, &str), Refusal> {
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if scheme != ALGORITHM {
        return Err(incomplete(
            None,
            format!("The Authorization header must use the {ALGORITHM} algorithm."),
        ));
    }
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let part = part.trim_matches(' ');
        let Some((k, v)) = part.split_once('=') else {
            return Err(incomplete(
                None,
                "The Authorization header must hold Credential=…, SignedHeaders=… and Signature=…, separated by commas.",
            ));
        };
        let slot = match k {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed_headers,
            "Signature" => &mut signature,
            _ => {
                return Err(incomplete(
                    credential.and_then(credential_key_id),
                    "The Authorization header holds a parameter other than Credential, SignedHeaders and Signature.",
                ));
            }
        };
        if slot.replace(v).is_some() {
            return Err(incomplete(
                credential.and_then(credential_key_id),
                format!("The Authorization header repeats its '{k}' parameter."),
            ));
        }
    }
    let akid = credential.and_then(credential_key_id);
    let mut missing = Vec::new();
    for (name, v) in [
        ("Credential", credential),
        ("SignedHeaders", signed_headers),
        ("Signature", signature),
    ] {
        if v.is_none() {
            missing.push(format!("Authorization header requires '{name}' parameter."));
        }
    }
    match (credential, signed_headers, signature) {
        (Some(c), Some(h), Some(s)) => Ok((c, h, s)),
        _ => Err(incomplete(akid, missing.join(" "))),
    }
}

/// The signature information from the `Authorization` header or the presigned query; also
/// refuses a request that carries both, or neither.
pub(super) fn signature_input<'a>(
    headers: &'a HeaderMap,
    params: &'a [Param<'a>],
) -> Result<SignatureInput<'a>, Refusal> {
    let presigned = params
        .iter()
        .any(|p| [X_AMZ_ALGORITHM, X_AMZ_CREDENTIAL, X_AMZ_SIGNATURE, X_AMZ_SIGNED_HEADERS].contains(&&*p.name));
    let authorization = single_header(headers, "authorization", None)?;
    match (authorization, presigned) {
        (None, false) => Err(Refusal::MissingAuthenticationToken),
        (Some(_), true) => Err(incomplete(
            None,
            "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter or the Authorization header should be specified.",
        )),
        (Some(a), false) => {
            let a = header_text(a, "Authorization", None)?;
            let (credential, signed_headers, signature) = parse_authorization(a)?;
            let akid = credential_key_id(credential);
            let amz_date = match single_header(headers, "x-amz-date", akid)? {
                Some(d) => header_text(d, "X-Amz-Date", akid)?,
                None => {
                    return Err(incomplete(
                        akid,
                        "Authorization header requires existence of an 'X-Amz-Date' header.",
                    ));
                }
            };
            Ok(SignatureInput {
                credential,
                signed_headers,
                signature,
                amz_date,
                expires: None,
            })
        }
        (None, true) => presigned_input(params),
    }
}

fn presigned_input<'a>(params: &'a [Param<'a>]) -> Result<SignatureInput<'a>, Refusal> {
    let mut akid: Option<&str> = None;
    let mut get = |name: &'static [u8]| -> Result<&str, Refusal> {
        let label = String::from_utf8_lossy(name);
        let mut found = params.iter().filter(|p| p.name == name);
        let Some(p) = found.next() else {
            return Err(incomplete(
                akid,
                format!("A presigned request requires the '{label}' query parameter."),
            ));
        };
        if found.next().is_some() {
            return Err(incomplete(akid, format!("The query repeats its '{label}' parameter.")));
        }
        let v = std::str::from_utf8(&p.value)
            .map_err(|_| incomplete(akid, format!("The '{label}' query parameter is not UTF-8 text.")))?;
        if name == X_AMZ_CREDENTIAL {
            akid = credential_key_id(v);
        }
        Ok(v)
    };
    let credential = get(X_AMZ_CREDENTIAL)?;
    let algorithm = get(X_AMZ_ALGORITHM)?;
    let signed_headers = get(X_AMZ_SIGNED_HEADERS)?;
    let signature = get(X_AMZ_SIGNATURE)?;
    let amz_date = get(X_AMZ_DATE)?;
    let expires_text = get(X_AMZ_EXPIRES)?;
    let akid = credential_key_id(credential);
    if algorithm != ALGORITHM {
        return Err(incomplete(akid, format!("X-Amz-Algorithm only supports {ALGORITHM}.")));
    }
    let expires =
        (!expires_text.is_empty() && expires_text.len() <= 7 && expires_text.bytes().all(|b| b.is_ascii_digit()))
            .then(|| expires_text.parse::<i64>().ok())
            .flatten()
            .filter(|e| (1..=MAX_PRESIGNED_EXPIRES).contains(e))
            .ok_or_else(|| {
                incomplete(
                    akid,
                    format!("X-Amz-Expires must be a whole number of seconds from 1 to {MAX_PRESIGNED_EXPIRES}."),
                )
            })?;
    Ok(SignatureInput {
        credential,
        signed_headers,
        signature,
        amz_date,
        expires: Some(expires),
    })
}

/// The credential scope `AKID/YYYYMMDD/region/service/aws4_request`.
pub(super) struct Scope<'a> {
    pub(super) access_key_id: &'a str,
    pub(super) date: &'a str,
    pub(super) region: &'a str,
    pub(super) service: &'a str,
}

pub(super) fn parse_scope(credential: &str) -> Result<Scope<'_>, Refusal> {
    let akid = credential_key_id(credential);
    let bad = |reason: &str| incomplete(akid, reason.to_string());
    let mut parts = credential.split('/');
    let (Some(id), Some(date), Some(region), Some(service), Some(terminator), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(bad(
            "Credential must have the form ACCESS_KEY_ID/YYYYMMDD/REGION/SERVICE/aws4_request.",
        ));
    };
    if !valid_access_key_id(id) {
        return Err(bad("Credential does not start with a valid access key id."));
    }
    if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("Credential's date must be YYYYMMDD."));
    }
    let word =
        |s: &str| !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !word(region) || !word(service) {
        return Err(bad(
            "Credential's region and service must be names like us-east-1 and chime.",
        ));
    }
    if terminator != TERMINATOR {
        return Err(bad(
            "Credential should be scoped with a valid terminator: 'aws4_request'.",
        ));
    }
    Ok(Scope {
        access_key_id: id,
        date,
        region,
        service,
    })
}

/// A header name SigV4 may list: lowercase token characters.
fn is_signed_header_byte(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&b)
}

pub(super) fn check_signed_headers(list: &str, akid: &str) -> Result<(), Refusal> {
    let bad = |reason: &str| incomplete(Some(akid), reason.to_string());
    let mut prev: Option<&str> = None;
    let mut host = false;
    for name in list.split(';') {
        if name.is_empty() || !name.bytes().all(is_signed_header_byte) {
            return Err(bad("SignedHeaders must list lowercase header names separated by ';'."));
        }
        if prev.is_some_and(|p| name <= p) {
            return Err(bad("SignedHeaders must be sorted, each name once."));
        }
        host |= name == "host";
        prev = Some(name);
    }
    if !host {
        return Err(bad("SignedHeaders must include host."));
    }
    Ok(())
}

/// 64 lowercase hex digits as 32 bytes.
pub(super) fn parse_signature(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = (nibble(b[2 * i])? << 4) | nibble(b[2 * i + 1])?;
    }
    Some(out)
}
