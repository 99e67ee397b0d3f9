//! AWS specifics: reading the caller's claimed identity from a SigV4 `Authorization` header,
//! and re-signing a request for its upstream in reverse-proxy mode with the proxy's own
//! credentials (which [`crate::proxy::credentials`] keeps).

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;

/// What a SigV4 `Authorization` header claims (not verified).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClaimedIdentity {
    /// Access key id from the credential scope.
    pub access_key_id: Option<String>,
    /// Region from the credential scope.
    pub region: Option<String>,
    /// Service from the credential scope.
    pub service: Option<String>,
}

/// Parses `AWS4-HMAC-SHA256 Credential=AKID/20261122/us-east-1/chime/aws4_request, …`.
pub fn claimed_identity(authorization: Option<&str>) -> ClaimedIdentity {
    let Some(a) = authorization else {
        return ClaimedIdentity::default();
    };
    let Some(rest) = a.trim().strip_prefix("AWS4-HMAC-SHA256") else {
        return ClaimedIdentity::default();
    };
    let cred = rest
        .split(',')
        .map(str::trim)
        .find_map(|p| p.strip_prefix("Credential="))
        .unwrap_or("");
    credential_scope(cred)
}

/// The identity a request claims: its SigV4 `Authorization` header's or, for a presigned
/// request (no such header), its query's `X-Amz-Credential=AKID/date/region/service/aws4_request`.
pub fn claimed_identity_of(authorization: Option<&str>, query: Option<&str>) -> ClaimedIdentity {
    let id = claimed_identity(authorization);
    if id.access_key_id.is_some() {
        return id;
    }
    let Some(q) = query.filter(|q| !q.is_empty()) else {
        return id;
    };
    form_urlencoded::parse(q.as_bytes())
        .find(|(k, _)| k.eq_ignore_ascii_case(X_AMZ_CREDENTIAL))
        .map_or(id, |(_, v)| credential_scope(&v))
}

/// Reads a credential scope `AKID/date/region/service/aws4_request`.
fn credential_scope(cred: &str) -> ClaimedIdentity {
    let mut parts = cred.split('/');
    let akid = parts.next().filter(|s| !s.is_empty()).map(str::to_string);
    let _date = parts.next();
    let region = parts.next().filter(|s| !s.is_empty()).map(str::to_string);
    let service = parts.next().filter(|s| !s.is_empty()).map(str::to_string);
    ClaimedIdentity {
        access_key_id: akid,
        region,
        service,
    }
}

/// The presigned query parameter that names the credential scope.
const X_AMZ_CREDENTIAL: &str = "X-Amz-Credential";

/// What of a query parameter may be stored: a presigned request's signature and session token
/// nothing (`None`), its credential only the access key id; anything else as it came. Names
/// compare without case, so no spelling keeps a secret.
pub fn query_parameter_for_record<'a>(name: &str, value: &'a str) -> Option<&'a str> {
    if name.eq_ignore_ascii_case("X-Amz-Signature") || name.eq_ignore_ascii_case("X-Amz-Security-Token") {
        return None;
    }
    if name.eq_ignore_ascii_case(X_AMZ_CREDENTIAL) {
        return Some(up_to_slash(value));
    }
    Some(value)
}

/// `s` up to its first `/`.
fn up_to_slash(s: &str) -> &str {
    s.split('/').next().unwrap_or("")
}

/// The CloudTrail `userIdentity.type` for an access key id.
pub fn identity_type(akid: Option<&str>) -> &'static str {
    match akid {
        Some(k) if k.starts_with("ASIA") => "AssumedRole",
        Some(_) => "IAMUser",
        None => "Unknown",
    }
}

/// Why re-signing failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot re-sign the request: {0}")]
pub struct SignError(String);

/// Re-signs `req` in place (its URI must be absolute; `Host` set) for `region`, service `chime`.
/// The client's signing headers must already be removed.
pub fn resign<B>(req: &mut http::Request<B>, creds: &Credentials, region: &str, body: &[u8]) -> Result<(), SignError> {
    let identity = creds.clone().into();
    let settings = SigningSettings::default();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("chime")
        .time(SystemTime::now())
        .settings(settings)
        .build()
        .map_err(|e| SignError(e.to_string()))?
        .into();
    let uri = req.uri().to_string();
    // Only the headers the vendor needs covered are signed: a hop after us (an egress gateway,
    // another proxy) may add X-Forwarded-For or change Accept-Encoding without breaking it.
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .filter(|(k, _)| {
            let k = k.as_str();
            k == "host" || k == "content-type" || k.starts_with("x-amz-")
        })
        .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str().to_string(), v.to_string())))
        .collect();
    let body = SignableBody::Bytes(body);
    let signable = SignableRequest::new(
        req.method().as_str(),
        &uri,
        headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        body,
    )
    .map_err(|e| SignError(e.to_string()))?;
    let (instructions, _sig) = sign(signable, &params)
        .map_err(|e| SignError(e.to_string()))?
        .into_parts();
    instructions.apply_to_request_http1x(req);
    Ok(())
}

/// Headers that carry the client's signature; removed before re-signing.
pub const SIGNING_HEADERS: [&str; 4] = [
    "authorization",
    "x-amz-date",
    "x-amz-security-token",
    "x-amz-content-sha256",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_credential_scope() {
        let id = claimed_identity(Some(
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20261122/us-east-1/chime/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=6f9d",
        ));
        assert_eq!(id.access_key_id.as_deref(), Some("AKIAIOSFODNN7EXAMPLE"));
        assert_eq!(id.region.as_deref(), Some("us-east-1"));
        assert_eq!(id.service.as_deref(), Some("chime"));
        assert_eq!(claimed_identity(Some("Bearer xoxp")), ClaimedIdentity::default());
        assert_eq!(claimed_identity(None), ClaimedIdentity::default());
        assert_eq!(claimed_identity(Some("AWS4-HMAC-SHA256 garbage")).access_key_id, None);
    }

    #[test]
    fn a_presigned_query_claims_as_the_header_does() {
        let q = "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20261122%2Fus-gov-west-1%2Fchime%2Faws4_request&X-Amz-Signature=6f9d";
        let id = claimed_identity_of(None, Some(q));
        assert_eq!(id.access_key_id.as_deref(), Some("AKIAIOSFODNN7EXAMPLE"));
        assert_eq!(id.region.as_deref(), Some("us-gov-west-1"));
        assert_eq!(id.service.as_deref(), Some("chime"));
        // The header wins when both are there.
        let h = "AWS4-HMAC-SHA256 Credential=AKIDHEADER/20261122/eu-west-1/chime/aws4_request, Signature=00";
        assert_eq!(
            claimed_identity_of(Some(h), Some(q)).access_key_id.as_deref(),
            Some("AKIDHEADER")
        );
        assert_eq!(claimed_identity_of(None, Some("a=b")), ClaimedIdentity::default());
        assert_eq!(claimed_identity_of(None, None), ClaimedIdentity::default());
    }

    #[test]
    fn presigned_secrets_are_not_kept() {
        assert_eq!(query_parameter_for_record("X-Amz-Signature", "abc"), None);
        assert_eq!(query_parameter_for_record("x-amz-signature", "abc"), None);
        assert_eq!(query_parameter_for_record("X-Amz-Security-Token", "tok"), None);
        assert_eq!(query_parameter_for_record("X-AMZ-SECURITY-TOKEN", "tok"), None);
        assert_eq!(
            query_parameter_for_record("X-Amz-Credential", "AKID/20261122/us-east-1/chime/aws4_request"),
            Some("AKID")
        );
        assert_eq!(query_parameter_for_record("X-Amz-Expires", "900"), Some("900"));
    }

    #[test]
    fn resign_replaces_the_signature() {
        let mut req = http::Request::builder()
            .method("PUT")
            .uri("https://chime.us-east-1.amazonaws.com/accounts/a/retention-settings")
            .header("host", "chime.us-east-1.amazonaws.com")
            .header("content-type", "application/json")
            .header("x-forwarded-for", "10.0.0.1")
            .header("accept-encoding", "identity")
            .body(())
            .unwrap();
        resign(
            &mut req,
            &Credentials::new("AKIDPROXY", "secret", Some("tok".into()), None, "test"),
            "us-east-1",
            b"{}",
        )
        .unwrap();
        let auth = req.headers()["authorization"].to_str().unwrap();
        assert!(auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDPROXY/"), "{auth}");
        assert!(auth.contains("/us-east-1/chime/aws4_request"));
        assert!(req.headers().contains_key("x-amz-date"));
        assert!(
            auth.contains("SignedHeaders=content-type;host;x-amz-date;x-amz-security-token,"),
            "{auth}"
        );
        assert_eq!(req.headers()["x-amz-security-token"], "tok");
    }
}
