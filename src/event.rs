//! Turning a call into audit records. This is the one place that decides what of a request
//! may be stored: parameters come from the recogniser (secrets already removed), identities
//! are reduced to key ids, bearer ARNs and HMAC fingerprints; no header map is ever stored.

use serde_json::{Value, json};

use crate::audit::{IndexFields, NewRecord, RecordKind};
use crate::guardrail::Verdict;
use crate::recognise::{Call, Operation, arn_account, resolved_resource};
use crate::retention::{Change, Observed, RetentionValue};

/// The CloudTrail record version this proxy writes.
pub const EVENT_VERSION: &str = "1.09";

/// How a request reached the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    /// Absolute-form request to a vendor host.
    Forward,
    /// Origin-form request routed by path.
    Reverse,
}

/// Who is calling, as far as the proxy can tell.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    /// Claimed AWS access key id.
    pub access_key_id: Option<String>,
    /// `x-amz-chime-bearer`.
    pub chime_bearer: Option<String>,
    /// `hmac-sha256:<hex>` of the Slack token.
    pub token_fingerprint: Option<String>,
    /// `xoxp`, `xoxb`, … of the Slack token.
    pub token_type: Option<String>,
    /// CloudTrail identity type.
    pub kind: String,
    /// Whether the proxy itself verified the identity (never: it holds no client secrets).
    pub verified: bool,
    /// Client address (after trusted `X-Forwarded-For`).
    pub source_ip: String,
    /// `User-Agent`.
    pub user_agent: Option<String>,
    /// Authenticated proxy user (forward proxy with users configured).
    pub proxy_user: Option<String>,
}

impl Caller {
    /// Principals guardrail exemptions and `--actor` match against.
    pub fn principals(&self) -> Vec<String> {
        [
            &self.access_key_id,
            &self.chime_bearer,
            &self.token_fingerprint,
            &self.proxy_user,
        ]
        .into_iter()
        .flatten()
        .cloned()
        .collect()
    }
}

/// Fingerprints a Slack token: recognisable across events, not recoverable.
pub fn token_fingerprint(key: &[u8], token: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    format!("hmac-sha256:{}", hex::encode(ring::hmac::sign(&key, token.as_bytes())))
}

/// The Slack token family (`xoxp`, `xoxb`, …), never the token.
pub fn token_type(token: &str) -> String {
    match token.split('-').next() {
        Some(p) if p.starts_with("xox") && p.len() <= 5 => p.to_string(),
        _ => "unknown".into(),
    }
}

/// Facts of one call that every record of it shares.
#[derive(Debug, Clone)]
pub struct CallFacts {
    /// `eventID`.
    pub event_id: String,
    /// `eventTime`.
    pub event_time: String,
    /// The operation.
    pub op: Operation,
    /// Forward or reverse.
    pub way: Way,
    /// `awsRegion`.
    pub region: Option<String>,
    /// Caller.
    pub caller: Caller,
    /// `invocationId`.
    pub invocation_id: Option<String>,
    /// `attempt`.
    pub attempt: Option<u64>,
    /// `proxyInstance`.
    pub proxy_instance: String,
    /// CloudTrail `tlsDetails` of an intercepted tunnel.
    pub tls: Option<Value>,
}

/// Parses `amz-sdk-request: attempt=1; max=3`.
pub fn parse_attempt(v: Option<&str>) -> Option<u64> {
    v?.split(';')
        .find_map(|p| p.trim().strip_prefix("attempt="))
        .and_then(|n| n.trim().parse().ok())
}

fn value_json(v: Option<RetentionValue>) -> Value {
    v.map(RetentionValue::to_json).unwrap_or(Value::Null)
}

/// The request link: everything known before forwarding. `final_outcome` is set for calls
/// that end here (denied, rejected), so they need no outcome link.
pub fn request_record(
    f: &CallFacts,
    call: &Call,
    previous: &[Option<RetentionValue>],
    verdict: &Verdict,
    final_outcome: Option<FinalOutcome<'_>>,
) -> NewRecord {
    let changes: Vec<Value> = call
        .changes
        .iter()
        .zip(previous.iter().copied().chain(std::iter::repeat(None)))
        .map(|(c, p): (&Change, Option<RetentionValue>)| {
            json!({"target": c.target.as_str(), "resource": c.resource, "previous": value_json(p), "new": c.new.to_json()})
        })
        .collect();
    let aws = f.op.family().is_aws();
    let recipient = call.arns.iter().find_map(|a| arn_account(a)).map(str::to_string);
    let mut body = json!({
        "eventVersion": EVENT_VERSION,
        "eventID": f.event_id,
        "eventTime": f.event_time,
        "eventSource": f.op.family().event_source(),
        "eventName": f.op.name(),
        "eventType": if aws { "AwsApiCall" } else { "SlackApiCall" },
        "readOnly": f.op.read_only(),
        "sourceIPAddress": f.caller.source_ip,
        "userAgent": f.caller.user_agent,
        "userIdentity": {
            "type": f.caller.kind,
            "accessKeyId": f.caller.access_key_id,
            "chimeBearer": f.caller.chime_bearer,
            "tokenFingerprint": f.caller.token_fingerprint,
            "tokenType": f.caller.token_type,
            "verified": f.caller.verified,
            "proxyUser": f.caller.proxy_user,
        },
        "requestParameters": call.request_parameters,
        "resources": call.resources.iter().map(|(t, id)| json!({"type": t, "id": id})).collect::<Vec<_>>(),
        "recipientAccountId": recipient,
        "guardrail": {
            "decision": verdict.decision.as_str(),
            "ruleIds": verdict.rule_ids,
            "reason": if verdict.reason.is_empty() { Value::Null } else { Value::from(verdict.reason.clone()) },
        },
        "changes": changes,
        "invocationId": f.invocation_id,
        "attempt": f.attempt,
        "proxyInstance": f.proxy_instance,
        "proxyMode": match f.way { Way::Forward => "forward", Way::Reverse => "reverse" },
        "outcome": Value::Null,
    });
    if aws {
        body["awsRegion"] = json!(f.region);
    }
    if let Some(t) = &f.tls {
        body["tlsDetails"] = t.clone();
    }
    if let Some(o) = final_outcome {
        body["outcome"] = json!(o.outcome);
        body["httpStatus"] = json!(o.status);
        body["errorCode"] = json!(o.error_code);
        body["errorMessage"] = json!(o.error_message);
        body["requestID"] = json!(f.event_id);
        body["responseElements"] = Value::Null;
        body["durationMs"] = json!(o.duration_ms);
    }
    let mut resources: Vec<String> = call.resources.iter().map(|(_, id)| id.clone()).collect();
    resources.extend(call.changes.iter().map(|c| c.resource.clone()));
    if let Some(a) = &call.account {
        resources.push(a.clone());
    }
    resources.sort();
    resources.dedup();
    NewRecord {
        kind: RecordKind::Request,
        event_id: f.event_id.clone(),
        event_time: f.event_time.clone(),
        body,
        index: IndexFields {
            event_name: f.op.name().to_string(),
            event_source: f.op.family().event_source().to_string(),
            actors: f.caller.principals(),
            decision: verdict.decision.as_str().to_string(),
            resources,
        },
        observed: Vec::new(),
    }
}

/// How a call that never reaches the vendor ends.
#[derive(Debug, Clone, Copy)]
pub struct FinalOutcome<'a> {
    /// `denied` or `rejected`.
    pub outcome: &'a str,
    /// Status the client got.
    pub status: u16,
    /// Error code the client got.
    pub error_code: &'a str,
    /// Message the client got.
    pub error_message: &'a str,
    /// Time spent.
    pub duration_ms: u64,
}

/// What came back from upstream (or why nothing did).
#[derive(Debug, Clone)]
pub struct Answer {
    /// `forwarded` or `upstream_error`.
    pub outcome: &'static str,
    /// HTTP status (the vendor's, or the one the proxy answered).
    pub status: u16,
    /// The vendor's request id.
    pub request_id: Option<String>,
    /// Parsed JSON response (`null` when empty or not JSON).
    pub response: Value,
    /// Vendor or proxy error code.
    pub error_code: Option<String>,
    /// Vendor or proxy error message.
    pub error_message: Option<String>,
    /// Total time, ms.
    pub duration_ms: u64,
}

/// The outcome link.
pub fn outcome_record(
    f: &CallFacts,
    call: &Call,
    a: &Answer,
    observed: Vec<Observed>,
    event_time: String,
) -> NewRecord {
    let mut body = json!({
        "eventID": f.event_id,
        "eventTime": event_time,
        "outcome": a.outcome,
        "httpStatus": a.status,
        "requestID": a.request_id,
        "responseElements": a.response,
        "errorCode": a.error_code,
        "errorMessage": a.error_message,
        "durationMs": a.duration_ms,
    });
    // A forwarded signature the vendor accepted has been verified by the vendor.
    if f.way == Way::Forward && f.op.family().is_aws() && (200..300).contains(&a.status) {
        body["userIdentity"] = json!({"verified": true});
    }
    // A created channel's ARN is known only now.
    if call.changes.iter().any(|c| c.resource.ends_with("/channel/*")) {
        let changes: Vec<Value> = call
            .changes
            .iter()
            .map(|c| json!({"target": c.target.as_str(), "resource": resolved_resource(call, c, &a.response), "previous": Value::Null, "new": c.new.to_json()}))
            .collect();
        body["changes"] = Value::Array(changes);
    }
    // Only resources the request link could not name (a created channel's ARN) need indexing
    // here; the rest are indexed with the request.
    let mut resources: Vec<String> = observed
        .iter()
        .map(|o| o.resource.clone())
        .filter(|r| !call.resources.iter().any(|(_, id)| id == r) && !call.changes.iter().any(|c| &c.resource == r))
        .collect();
    resources.dedup();
    NewRecord {
        kind: RecordKind::Outcome,
        event_id: f.event_id.clone(),
        event_time: f.event_time.clone(),
        body,
        index: IndexFields {
            event_name: f.op.name().to_string(),
            event_source: f.op.family().event_source().to_string(),
            actors: Vec::new(),
            decision: String::new(),
            resources,
        },
        observed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_keyed_and_stable() {
        let a = token_fingerprint(b"key-one-key-one!", "xoxp-123");
        assert_eq!(a, token_fingerprint(b"key-one-key-one!", "xoxp-123"));
        assert_ne!(a, token_fingerprint(b"key-two-key-two!", "xoxp-123"));
        assert!(a.starts_with("hmac-sha256:") && a.len() == "hmac-sha256:".len() + 64);
        assert!(!a.contains("xoxp"));
        // RFC 4231 test case 2: the fingerprint is plain HMAC-SHA256, so earlier logs still match.
        assert_eq!(
            token_fingerprint(b"Jefe", "what do ya want for nothing?"),
            "hmac-sha256:5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(token_type("xoxb-1-2"), "xoxb");
        assert_eq!(token_type("garbage"), "unknown");
    }

    #[test]
    fn attempts() {
        assert_eq!(parse_attempt(Some("attempt=2; max=3")), Some(2));
        assert_eq!(parse_attempt(Some("ttl=20261122T043423Z; attempt=5; max=5")), Some(5));
        assert_eq!(parse_attempt(Some("nonsense")), None);
        assert_eq!(parse_attempt(None), None);
    }
}
