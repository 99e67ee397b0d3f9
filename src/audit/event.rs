//! Turning a call into audit records. This is the one place that decides what of a request
//! may be stored: parameters come from the recogniser (secrets already removed), identities
//! are reduced to key ids, bearer ARNs and HMAC fingerprints; no header map is ever stored.

use serde_json::Value;

use crate::audit::canonical::{self, Nested};
use crate::audit::{IndexFields, NewRecord, ObjectText, RecordKind};
use crate::policy::guardrail::Verdict;
use crate::retention::{Change, Observed, RetentionValue};
use crate::vendors::{Call, Operation, arn_account, resolved_resource};

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
    /// The name of the client key that signed the call (`[reverse] clients_file`), once the
    /// proxy has checked the signature.
    pub principal: Option<String>,
    /// Whether the identity is proven: by the proxy (a listed client key's signature) or, in
    /// forward and egress modes, by the vendor accepting the client's own signature.
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
            &self.principal,
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

/// The per-installation key Slack tokens are fingerprinted under, prepared once.
pub struct TokenKey(ring::hmac::Key);

impl TokenKey {
    /// Prepares `key` (its HMAC pads are computed here, not per call).
    pub fn new(key: &[u8]) -> TokenKey {
        TokenKey(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key))
    }

    /// `hmac-sha256:<hex>` of `token`: recognisable across events, not recoverable.
    pub fn fingerprint(&self, token: &str) -> String {
        const PREFIX: &str = "hmac-sha256:";
        let tag = ring::hmac::sign(&self.0, token.as_bytes());
        let mut hex_tag = [0u8; 64];
        // 32 bytes always fit 64 hex digits.
        let _ = hex::encode_to_slice(tag.as_ref(), &mut hex_tag);
        let mut out = String::with_capacity(PREFIX.len() + hex_tag.len());
        out.push_str(PREFIX);
        out.extend(hex_tag.iter().map(|&b| char::from(b)));
        out
    }
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
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

fn write_retention(v: Option<RetentionValue>, out: &mut Vec<u8>) {
    match v {
        Some(RetentionValue::Days(d)) => canonical::write_u64(u64::from(d), out),
        Some(RetentionValue::Off) => out.extend_from_slice(b"\"off\""),
        Some(RetentionValue::Default) => out.extend_from_slice(b"\"default\""),
        None => out.extend_from_slice(b"null"),
    }
}

fn write_bool(b: bool, out: &mut Vec<u8>) {
    out.extend_from_slice(if b { b"true" } else { b"false" });
}

/// `changes`: `[{new, previous, resource, target}]`.
fn write_changes<'a>(changes: impl Iterator<Item = (&'a Change, Option<RetentionValue>, &'a str)>, out: &mut Vec<u8>) {
    out.push(b'[');
    for (i, (c, previous, resource)) in changes.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let mut o = Nested::open(out);
        write_retention(Some(c.new), o.key("new"));
        write_retention(previous, o.key("previous"));
        canonical::write_str(resource, o.key("resource"));
        canonical::write_str(c.target.as_str(), o.key("target"));
        o.close();
    }
    out.push(b']');
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
    let aws = f.op.family().is_aws();
    let recipient = call.arns.iter().find_map(|a| arn_account(a));
    let mut body = ObjectText::with_capacity(1024);
    body.str("eventVersion", EVENT_VERSION);
    body.str("eventID", &f.event_id);
    body.str("eventTime", &f.event_time);
    body.str("eventSource", f.op.family().event_source());
    body.str("eventName", f.op.name());
    body.str("eventType", if aws { "AwsApiCall" } else { "SlackApiCall" });
    body.field("readOnly", |out| write_bool(f.op.read_only(), out));
    body.str("sourceIPAddress", &f.caller.source_ip);
    body.opt_str("userAgent", f.caller.user_agent.as_deref());
    body.field("userIdentity", |out| {
        let c = &f.caller;
        let mut o = Nested::open(out);
        canonical::write_opt_str(c.access_key_id.as_deref(), o.key("accessKeyId"));
        canonical::write_opt_str(c.chime_bearer.as_deref(), o.key("chimeBearer"));
        canonical::write_opt_str(c.principal.as_deref(), o.key("principal"));
        canonical::write_opt_str(c.proxy_user.as_deref(), o.key("proxyUser"));
        canonical::write_opt_str(c.token_fingerprint.as_deref(), o.key("tokenFingerprint"));
        canonical::write_opt_str(c.token_type.as_deref(), o.key("tokenType"));
        canonical::write_str(&c.kind, o.key("type"));
        write_bool(c.verified, o.key("verified"));
        o.close();
    });
    body.field("requestParameters", |out| {
        canonical::write_map(&call.request_parameters, out)
    });
    body.field("resources", |out| {
        out.push(b'[');
        for (i, (t, id)) in call.resources.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            let mut o = Nested::open(out);
            canonical::write_str(id, o.key("id"));
            canonical::write_str(t, o.key("type"));
            o.close();
        }
        out.push(b']');
    });
    body.opt_str("recipientAccountId", recipient);
    body.field("guardrail", |out| {
        let mut o = Nested::open(out);
        canonical::write_str(verdict.decision.as_str(), o.key("decision"));
        canonical::write_opt_str(Some(verdict.reason.as_str()).filter(|r| !r.is_empty()), o.key("reason"));
        let ids = o.key("ruleIds");
        ids.push(b'[');
        for (i, id) in verdict.rule_ids.iter().enumerate() {
            if i > 0 {
                ids.push(b',');
            }
            canonical::write_str(id, ids);
        }
        ids.push(b']');
        o.close();
    });
    body.field("changes", |out| {
        let previous = previous.iter().copied().chain(std::iter::repeat(None));
        write_changes(
            call.changes
                .iter()
                .zip(previous)
                .map(|(c, p)| (c, p, c.resource.as_str())),
            out,
        );
    });
    body.opt_str("invocationId", f.invocation_id.as_deref());
    body.opt_u64("attempt", f.attempt);
    body.str("proxyInstance", &f.proxy_instance);
    body.str(
        "proxyMode",
        match f.way {
            Way::Forward => "forward",
            Way::Reverse => "reverse",
        },
    );
    if aws {
        body.opt_str("awsRegion", f.region.as_deref());
    }
    if let Some(t) = &f.tls {
        body.value("tlsDetails", t);
    }
    match final_outcome {
        None => body.field("outcome", |out| out.extend_from_slice(b"null")),
        Some(o) => {
            body.str("outcome", o.outcome);
            body.opt_u64("httpStatus", Some(u64::from(o.status)));
            body.str("errorCode", o.error_code);
            body.str("errorMessage", o.error_message);
            body.str("requestID", &f.event_id);
            body.field("responseElements", |out| out.extend_from_slice(b"null"));
            body.opt_u64("durationMs", Some(o.duration_ms));
        }
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

/// AWS error codes that mean the vendor did not accept the caller's credentials or signature.
const AWS_AUTHENTICATION_ERRORS: [&str; 11] = [
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "IncompleteSignatureException",
    "MissingAuthenticationTokenException",
    "MissingAuthenticationToken",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "ExpiredTokenException",
    "ExpiredToken",
    "UnauthorizedException",
    "RequestExpired",
];

/// Whether an AWS answer proves the caller's signature: the vendor answered (not the proxy,
/// not a failure before authentication) with anything but an authentication error. A `404`
/// or a validation error comes after the signature was checked; an `AccessDenied` names a
/// proven identity that lacks a permission.
fn vendor_accepted_signature(a: &Answer) -> bool {
    if a.outcome != "forwarded" || a.status >= 500 || a.status == 401 {
        return false;
    }
    let code = a.error_code.as_deref().unwrap_or("");
    // `x-amzn-ErrorType` may carry a suffix (`Code:http://…`).
    let code = code.split(':').next().unwrap_or("");
    !AWS_AUTHENTICATION_ERRORS.contains(&code)
}

/// The outcome link.
pub fn outcome_record(
    f: &CallFacts,
    call: &Call,
    a: &Answer,
    observed: Vec<Observed>,
    event_time: String,
) -> NewRecord {
    let mut body = ObjectText::with_capacity(512);
    body.str("eventID", &f.event_id);
    body.str("eventTime", &event_time);
    body.str("outcome", a.outcome);
    body.opt_u64("httpStatus", Some(u64::from(a.status)));
    body.opt_str("requestID", a.request_id.as_deref());
    body.value("responseElements", &a.response);
    body.opt_str("errorCode", a.error_code.as_deref());
    body.opt_str("errorMessage", a.error_message.as_deref());
    body.opt_u64("durationMs", Some(a.duration_ms));
    // A forwarded signature the vendor accepted has been verified by the vendor.
    if f.way == Way::Forward && f.op.family().is_aws() && vendor_accepted_signature(a) {
        body.field("userIdentity", |out| out.extend_from_slice(br#"{"verified":true}"#));
    }
    // A created channel's ARN is known only now.
    if call.changes.iter().any(|c| c.resource.ends_with("/channel/*")) {
        let resolved: Vec<String> = call
            .changes
            .iter()
            .map(|c| resolved_resource(call, c, &a.response))
            .collect();
        body.field("changes", |out| {
            write_changes(
                call.changes.iter().zip(&resolved).map(|(c, r)| (c, None, r.as_str())),
                out,
            )
        });
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

    /// The records as they were first built, through a `serde_json::Value` tree: the
    /// oracle for the text the writer now builds directly.
    mod reference {
        use super::super::*;
        use serde_json::json;

        fn value_json(v: Option<RetentionValue>) -> Value {
            v.map(RetentionValue::to_json).unwrap_or(Value::Null)
        }

        /// [`super::super::request_record`] as a `Value` tree (the first implementation).
        pub fn request_record(
            f: &CallFacts,
            call: &Call,
            previous: &[Option<RetentionValue>],
            verdict: &Verdict,
            final_outcome: Option<FinalOutcome<'_>>,
        ) -> Value {
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
                    "principal": f.caller.principal,
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
            body
        }

        /// [`super::super::outcome_record`] as a `Value` tree (the first implementation).
        pub fn outcome_record(
            f: &CallFacts,
            call: &Call,
            a: &Answer,
            _observed: Vec<Observed>,
            event_time: String,
        ) -> Value {
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
            if f.way == Way::Forward && f.op.family().is_aws() && vendor_accepted_signature(a) {
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
            body
        }
    }

    fn sample_call(op: Operation, changes: Vec<Change>) -> Call {
        let mut params = serde_json::Map::new();
        params.insert(
            "ChannelArn".into(),
            Value::from("arn:aws:chime:us-east-1:111122223333:app-instance/a/channel/c"),
        );
        params.insert(
            "ExpirationSettings".into(),
            serde_json::json!({"ExpirationDays": 3, "ExpirationCriterion": "LAST_MESSAGE_TIMESTAMP"}),
        );
        params.insert(
            "note".into(),
            Value::from("quote \" backslash \\ tab \t é \u{1F600} \u{7}"),
        );
        params.insert("Z".into(), Value::Null);
        Call {
            op,
            request_parameters: params,
            resources: vec![
                (
                    "AWS::Chime::Channel".into(),
                    "arn:aws:chime:us-east-1:111122223333:app-instance/a/channel/c".into(),
                ),
                ("Slack::Channel".into(), "C0123".into()),
            ],
            changes,
            account: Some("111122223333".into()),
            arns: vec!["arn:aws:chime:us-east-1:111122223333:app-instance/a/channel/c".into()],
            slack_channel: None,
            slack_token: None,
            chime_bearer: None,
        }
    }

    fn sample_facts(op: Operation, way: Way, full: bool) -> CallFacts {
        CallFacts {
            event_id: "01a202fb-8f0a-7020-9fc0-8faa56d4ef9c".into(),
            event_time: "2026-11-22T11:19:30.314Z".into(),
            op,
            way,
            region: full.then(|| "us-east-1".to_string()),
            caller: Caller {
                access_key_id: full.then(|| "AKIDEXAMPLE".to_string()),
                chime_bearer: full.then(|| "arn:aws:chime:us-east-1:111122223333:app-instance/a/user/u".to_string()),
                token_fingerprint: full.then(|| "hmac-sha256:00ff".to_string()),
                token_type: full.then(|| "xoxp".to_string()),
                kind: "IAMUser".into(),
                principal: full.then(|| "retention-admin-tool".to_string()),
                verified: full,
                source_ip: "10.0.0.1".into(),
                user_agent: full.then(|| "Boto3/1.35 \"quoted\"".to_string()),
                proxy_user: full.then(|| "alice".to_string()),
            },
            invocation_id: full.then(|| "inv-1".to_string()),
            attempt: full.then_some(2),
            proxy_instance: "vm-1".into(),
            tls: full.then(|| serde_json::json!({"tlsVersion": "TLSv1.3", "cipherSuite": "TLS_AES_128_GCM_SHA256", "clientProvidedHostHeader": "slack.com"})),
        }
    }

    fn chained(body: Value, kind: RecordKind) -> String {
        let mut v = body;
        v["seq"] = Value::from(42u64);
        v["prevHash"] = Value::from(crate::audit::GENESIS);
        v["recordType"] = Value::from(kind.as_str());
        canonical::to_string(&v)
    }

    /// The directly written text is byte for byte the canonical text of the record as it
    /// was built through a `Value` tree, over every optional part of both links.
    #[test]
    fn record_text_matches_the_value_tree_it_replaced() {
        use crate::audit::{GENESIS, link};
        use crate::policy::guardrail::Decision;
        use crate::retention::Target;
        let change = |target, resource: &str, new| Change {
            target,
            resource: resource.into(),
            new,
        };
        let calls = [
            sample_call(Operation::SlackGetCustomRetention, vec![]),
            sample_call(
                Operation::SlackSetCustomRetention,
                vec![change(Target::SlackChannel, "C0123", RetentionValue::Days(400))],
            ),
            sample_call(
                Operation::CreateChannel,
                vec![
                    change(
                        Target::ChannelExpiration,
                        "arn:aws:chime:us-east-1:111122223333:app-instance/a/channel/*",
                        RetentionValue::Off,
                    ),
                    change(
                        Target::AppInstanceRetention,
                        "arn:aws:chime:us-east-1:111122223333:app-instance/a",
                        RetentionValue::Default,
                    ),
                ],
            ),
        ];
        let verdicts = [
            Verdict {
                decision: Decision::Allow,
                rule_ids: vec![],
                reason: String::new(),
            },
            Verdict {
                decision: Decision::Deny,
                rule_ids: vec!["legal-hold-1y".into(), "r\"2".into()],
                reason: "legal-hold-1y: 30 days is below 365".into(),
            },
        ];
        let previous = [
            vec![],
            vec![Some(RetentionValue::Days(7))],
            vec![None, Some(RetentionValue::Off)],
        ];
        let fin = FinalOutcome {
            outcome: "denied",
            status: 400,
            error_code: "BadRequestException",
            error_message: "refused \"by\" policy",
            duration_ms: 12,
        };
        let answers = [
            Answer {
                outcome: "forwarded",
                status: 200,
                request_id: Some("req-1".into()),
                response: serde_json::json!({"ChannelArn": "arn:aws:chime:us-east-1:111122223333:app-instance/a/channel/new", "b": [1, 2.5, -3, {"y": null, "x": "é"}]}),
                error_code: None,
                error_message: None,
                duration_ms: 5,
            },
            Answer {
                outcome: "upstream_error",
                status: 502,
                request_id: None,
                response: Value::Null,
                error_code: Some("BadGateway".into()),
                error_message: Some("upstream closed".into()),
                duration_ms: 30_000,
            },
        ];
        let mut checked = 0;
        for call in &calls {
            for (op, way) in [
                (Operation::PutRetentionSettings, Way::Forward),
                (Operation::CreateChannel, Way::Reverse),
                (Operation::SlackSetCustomRetention, Way::Forward),
            ] {
                for full in [false, true] {
                    let f = sample_facts(op, way, full);
                    for v in &verdicts {
                        for p in &previous {
                            for fo in [None, Some(fin)] {
                                let want = chained(reference::request_record(&f, call, p, v, fo), RecordKind::Request);
                                let got = link(41, GENESIS, request_record(&f, call, p, v, fo));
                                assert_eq!(got.text, want);
                                assert_eq!(got.hash, canonical::sha256_hex(want.as_bytes()));
                                checked += 1;
                            }
                        }
                    }
                    for a in &answers {
                        let t = "2026-11-22T11:19:30.999Z".to_string();
                        let want = chained(
                            reference::outcome_record(&f, call, a, vec![], t.clone()),
                            RecordKind::Outcome,
                        );
                        assert_eq!(link(41, GENESIS, outcome_record(&f, call, a, vec![], t)).text, want);
                        checked += 1;
                    }
                }
            }
        }
        assert_eq!(checked, 3 * 3 * 2 * (2 * 3 * 2 + 2));
    }

    #[test]
    fn fingerprints_are_keyed_and_stable() {
        let a = TokenKey::new(b"key-one-key-one!").fingerprint("xoxp-123");
        assert_eq!(a, TokenKey::new(b"key-one-key-one!").fingerprint("xoxp-123"));
        assert_ne!(a, TokenKey::new(b"key-two-key-two!").fingerprint("xoxp-123"));
        assert!(a.starts_with("hmac-sha256:") && a.len() == "hmac-sha256:".len() + 64);
        assert!(!a.contains("xoxp"));
        // RFC 4231 test case 2: the fingerprint is plain HMAC-SHA256, so earlier logs still match.
        assert_eq!(
            TokenKey::new(b"Jefe").fingerprint("what do ya want for nothing?"),
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

    #[test]
    fn only_an_answer_past_authentication_proves_the_signature() {
        let answer = |outcome: &'static str, status: u16, code: Option<&str>| Answer {
            outcome,
            status,
            request_id: None,
            response: Value::Null,
            error_code: code.map(str::to_string),
            error_message: None,
            duration_ms: 1,
        };
        for (outcome, status, code, proven) in [
            ("forwarded", 200, None, true),
            ("forwarded", 204, None, true),
            ("forwarded", 404, Some("NotFoundException"), true),
            ("forwarded", 400, Some("BadRequestException"), true),
            ("forwarded", 403, Some("ForbiddenException"), true),
            ("forwarded", 403, Some("AccessDeniedException"), true),
            ("forwarded", 429, Some("ThrottledClientException"), true),
            ("forwarded", 403, Some("UnrecognizedClientException"), false),
            ("forwarded", 403, Some("InvalidSignatureException"), false),
            (
                "forwarded",
                403,
                Some("InvalidSignatureException:http://internal.amazon.com/coral/"),
                false,
            ),
            ("forwarded", 403, Some("ExpiredTokenException"), false),
            ("forwarded", 400, Some("IncompleteSignatureException"), false),
            ("forwarded", 403, Some("MissingAuthenticationTokenException"), false),
            ("forwarded", 401, Some("UnauthorizedClientException"), false),
            ("forwarded", 500, Some("ServiceFailureException"), false),
            ("forwarded", 503, None, false),
            ("upstream_error", 502, Some("ServiceFailureException"), false),
        ] {
            assert_eq!(
                vendor_accepted_signature(&answer(outcome, status, code)),
                proven,
                "{outcome} {status} {code:?}"
            );
        }
    }
}
