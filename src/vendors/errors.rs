//! Answers the proxy gives itself instead of the vendor: [`VendorError`] describes a refusal
//! once, for every vendor (status, AWS code, Slack error, message); each vendor's file renders
//! it (through `VendorError::response`, in the vendors module) in the shape that vendor's clients understand (see the captured error matrix).

use http::StatusCode;

use crate::vendors::Family;
use crate::vendors::sigv4_verify::Refusal;

/// A reply the proxy makes instead of the vendor.
#[derive(Debug, Clone)]
pub struct VendorError {
    /// HTTP status.
    pub status: StatusCode,
    /// AWS exception name (`BadRequestException`…); the body `Code` is it without `Exception`.
    pub aws_code: &'static str,
    /// Slack `error` value.
    pub slack_error: &'static str,
    /// Status Slack clients get (Slack reports most errors with 200).
    pub slack_status: StatusCode,
    /// One sentence.
    pub message: String,
}

impl VendorError {
    /// Input the vendor would reject (`400` / `invalid_arguments`).
    pub fn bad_request(message: impl Into<String>) -> VendorError {
        VendorError {
            status: StatusCode::BAD_REQUEST,
            aws_code: "BadRequestException",
            slack_error: "invalid_arguments",
            slack_status: StatusCode::OK,
            message: message.into(),
        }
    }

    /// A guardrail refusal (`403` / `restricted_action`).
    pub fn forbidden(message: impl Into<String>) -> VendorError {
        VendorError {
            status: StatusCode::FORBIDDEN,
            aws_code: "ForbiddenException",
            slack_error: "restricted_action",
            slack_status: StatusCode::OK,
            message: message.into(),
        }
    }

    /// The audit trail cannot take the event; nothing was forwarded.
    pub fn audit_unavailable() -> VendorError {
        VendorError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            aws_code: "ServiceUnavailableException",
            slack_error: "service_unavailable",
            slack_status: StatusCode::SERVICE_UNAVAILABLE,
            message: "Audit log unavailable; request not forwarded".into(),
        }
    }

    /// Body over the limit.
    pub fn too_large(limit: usize) -> VendorError {
        VendorError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            aws_code: "BadRequestException",
            slack_error: "request_too_large",
            slack_status: StatusCode::PAYLOAD_TOO_LARGE,
            message: format!("Request body exceeds the proxy's limit of {limit} bytes"),
        }
    }

    /// The client's body did not arrive in time (`408`; Slack's own `request_timeout`, "the
    /// POST data was either missing or truncated"). Nothing was forwarded.
    pub fn request_timeout(within: std::time::Duration) -> VendorError {
        VendorError {
            status: StatusCode::REQUEST_TIMEOUT,
            aws_code: "RequestTimeoutException",
            slack_error: "request_timeout",
            slack_status: StatusCode::OK,
            message: format!("The request body did not arrive within {within:?}; request not forwarded"),
        }
    }

    /// The vendor could not be reached or answered badly.
    pub fn bad_gateway(message: impl Into<String>) -> VendorError {
        VendorError {
            status: StatusCode::BAD_GATEWAY,
            aws_code: "ServiceFailureException",
            slack_error: "upstream_error",
            slack_status: StatusCode::BAD_GATEWAY,
            message: message.into(),
        }
    }

    /// The vendor did not answer in time.
    pub fn gateway_timeout(message: impl Into<String>) -> VendorError {
        VendorError {
            status: StatusCode::GATEWAY_TIMEOUT,
            aws_code: "ServiceUnavailableException",
            slack_error: "upstream_timeout",
            slack_status: StatusCode::GATEWAY_TIMEOUT,
            message: message.into(),
        }
    }

    /// The proxy cannot do its part (e.g. no credentials to re-sign).
    pub fn internal(message: impl Into<String>) -> VendorError {
        VendorError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            aws_code: "ServiceFailureException",
            slack_error: "internal_error",
            slack_status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.into(),
        }
    }

    /// A request whose SigV4 signature was not verified (`403` with the AWS exception the
    /// refusal names, `UnrecognizedClientException`, `InvalidSignatureException`…; Slack's
    /// `not_authed` / `invalid_auth` with `200`). Nothing was forwarded.
    pub fn unauthenticated(refusal: &Refusal) -> VendorError {
        VendorError {
            status: StatusCode::FORBIDDEN,
            aws_code: refusal.aws_code(),
            slack_error: match refusal {
                Refusal::MissingAuthenticationToken => "not_authed",
                _ => "invalid_auth",
            },
            slack_status: StatusCode::OK,
            message: refusal.message(),
        }
    }

    /// The error code as recorded in the audit event.
    pub fn code(&self, family: Family) -> &'static str {
        if family.is_aws() {
            self.aws_code
        } else {
            self.slack_error
        }
    }

    /// The status the client gets.
    pub fn status_for(&self, family: Family) -> StatusCode {
        if family.is_aws() {
            self.status
        } else {
            self.slack_status
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_shape_matches_the_verified_one() {
        let r = VendorError::forbidden("legal-hold: too short").response(Family::Chime, "req-1");
        assert_eq!(r.status(), 403);
        assert_eq!(r.headers()["x-amzn-ErrorType"], "ForbiddenException");
        assert_eq!(r.headers()["x-amzn-RequestId"], "req-1");
        let r = VendorError::forbidden("x").response(Family::Slack, "req-1");
        assert_eq!(r.status(), 200);
        assert_eq!(
            VendorError::audit_unavailable().code(Family::ChimeMessaging),
            "ServiceUnavailableException"
        );
    }

    #[test]
    fn an_unauthenticated_request_is_refused_in_each_vendor_shape() {
        use http_body_util::BodyExt;
        let body = |r: http::Response<crate::http::body::ProxyBody>| {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let b = rt.block_on(r.into_body().collect()).unwrap().to_bytes();
            serde_json::from_slice::<serde_json::Value>(&b).unwrap()
        };
        let unknown = Refusal::UnknownAccessKey {
            access_key_id: "AKIDNOTLISTED".into(),
        };
        let e = VendorError::unauthenticated(&unknown);
        let r = e.response(Family::ChimeMessaging, "req-2");
        assert_eq!(r.status(), 403);
        assert_eq!(r.headers()["x-amzn-ErrorType"], "UnrecognizedClientException");
        assert_eq!(r.headers()["x-amzn-RequestId"], "req-2");
        let b = body(r);
        assert_eq!(b["Code"], "UnrecognizedClient");
        assert_eq!(b["Message"], "The security token included in the request is invalid.");
        assert_eq!(e.code(Family::Chime), "UnrecognizedClientException");

        let bad = VendorError::unauthenticated(&Refusal::SignatureMismatch {
            access_key_id: "AKID".into(),
        });
        let r = bad.response(Family::Chime, "req-3");
        assert_eq!(r.status(), 403);
        assert_eq!(r.headers()["x-amzn-ErrorType"], "InvalidSignatureException");
        assert_eq!(body(r)["Code"], "InvalidSignature");

        let missing = VendorError::unauthenticated(&Refusal::MissingAuthenticationToken);
        let r = missing.response(Family::ChimeIdentity, "req-4");
        assert_eq!(r.headers()["x-amzn-ErrorType"], "MissingAuthenticationTokenException");
        assert_eq!(body(r)["Message"], "Missing Authentication Token");
        let r = missing.response(Family::Slack, "req-4");
        assert_eq!(r.status(), 200);
        let b = body(r);
        assert_eq!(
            (b["ok"].as_bool(), b["error"].as_str()),
            (Some(false), Some("not_authed"))
        );
        assert_eq!(e.response(Family::Slack, "req-5").status(), 200);
        assert_eq!(e.code(Family::Slack), "invalid_auth");
    }
}
