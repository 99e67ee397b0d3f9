//! Slack's Web API: the host `slack.com`, the `/api/admin.conversations.*` retention methods,
//! how their form, JSON or query parameters are read and bounded, the caller's token kind,
//! what a successful answer reports, how an answer reads (`ok`, `error`, `x-slack-req-id`),
//! and the Slack shape of the proxy's own refusals (`{"ok":false,"error":…}`).

use std::collections::BTreeMap;

use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use serde_json::{Value, json};

use super::errors::VendorError;
use super::{AnswerFacts, Call, Family, Matched, Operation, Rejection, RequestParts, strict_json};
use crate::http::body::{ProxyBody, full, plain};
use crate::retention::{Change, Observed, RetentionValue, Target};

/// Slack custom retention limit (days).
pub const SLACK_MAX_DAYS: u64 = 36499;

/// The Slack Web API host (also its `eventSource`).
pub(super) const HOST: &str = "slack.com";

/// The method that sets a channel's custom retention.
pub(super) const SET_CUSTOM_RETENTION: &str = "admin.conversations.setCustomRetention";
/// The method that reads a channel's custom retention.
pub(super) const GET_CUSTOM_RETENTION: &str = "admin.conversations.getCustomRetention";
/// The method that removes a channel's custom retention.
pub(super) const REMOVE_CUSTOM_RETENTION: &str = "admin.conversations.removeCustomRetention";

/// Slack route words (the `api` prefix and the method names) the lenient reading compares
/// without case.
pub(super) const ROUTE_WORDS: [&str; 4] = [
    "api",
    SET_CUSTOM_RETENTION,
    GET_CUSTOM_RETENTION,
    REMOVE_CUSTOM_RETENTION,
];

/// The domains of Slack's Web API: `slack.com` (workspace and Enterprise Grid hosts such as
/// `acme.slack.com`, `acme.enterprise.slack.com` serve it too) and GovSlack's `slack-gov.com`.
pub(super) const DOMAINS: [&str; 2] = [HOST, "slack-gov.com"];

/// The Slack family, if `h` (any case, no port) is one of its domains or a host under one.
pub(super) fn family_for_host(h: &str) -> Option<Family> {
    let h = h.strip_suffix('.').unwrap_or(h);
    let under = |d: &str| match h.len().checked_sub(d.len()).and_then(|i| h.split_at_checked(i)) {
        Some((head, tail)) => {
            tail.eq_ignore_ascii_case(d) && (head.is_empty() || (head.len() > 1 && head.ends_with('.')))
        }
        None => false,
    };
    DOMAINS.iter().any(|d| under(d)).then_some(Family::Slack)
}

/// Reverse-proxy routing: Slack serves `/api/…`; `first` is the first word of `path`.
pub(super) fn route_family(first: &str, path: &str) -> Option<Family> {
    (first == "api" && path.starts_with("/api/")).then_some(Family::Slack)
}

/// Recognises a Slack retention method; `rest` is the path without its leading `/` and its
/// query. Both `POST` and `GET` reach a Web API method.
pub(super) fn classify(method: &Method, rest: &str) -> Option<Matched> {
    let op = match rest.strip_prefix("api/")? {
        SET_CUSTOM_RETENTION => Operation::SlackSetCustomRetention,
        GET_CUSTOM_RETENTION => Operation::SlackGetCustomRetention,
        REMOVE_CUSTOM_RETENTION => Operation::SlackRemoveCustomRetention,
        _ => return None,
    };
    if *method != Method::POST && *method != Method::GET {
        return None;
    }
    Some(Matched { op, path_param: None })
}

/// The targets a Slack operation can change.
pub(super) fn targets_of(op: Operation) -> &'static [Target] {
    match op {
        Operation::SlackSetCustomRetention | Operation::SlackRemoveCustomRetention => &[Target::SlackChannel],
        _ => &[],
    }
}

/// Reads a Slack call's parameters (query, then a form or JSON body; a token from
/// `Authorization` or the form) into `call`, and validates them against Slack's limits.
pub(super) fn parse(mut call: Call, parts: &RequestParts<'_>, body: &[u8]) -> Result<Call, Rejection> {
    let reject = |call: &Call, msg: String| {
        Err(Rejection {
            message: msg,
            partial: Box::new(call.clone()),
            ambiguous: false,
        })
    };
    let unsure = |call: &Call, msg: String| {
        Err(Rejection {
            message: msg,
            partial: Box::new(call.clone()),
            ambiguous: true,
        })
    };
    let mut fields: BTreeMap<String, Value> = BTreeMap::new();
    let mut dup: Option<String> = None;
    let mut put = |fields: &mut BTreeMap<String, Value>, k: String, v: Value| {
        if fields.insert(k.clone(), v).is_some() && dup.is_none() {
            dup = Some(k);
        }
    };
    if let Some(q) = parts.query.filter(|q| !q.is_empty()) {
        for (k, v) in form_urlencoded::parse(q.as_bytes()) {
            put(&mut fields, k.into_owned(), json!(v));
        }
    }
    if !body.is_empty() {
        if let Some(enc) = parts.headers.get(http::header::CONTENT_ENCODING)
            && !enc.as_bytes().eq_ignore_ascii_case(b"identity")
        {
            return unsure(&call, "compressed request bodies are not accepted".into());
        }
        let ct = parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let mime = ct.split(';').next().unwrap_or("").trim().to_string();
        if mime == "application/json" {
            match strict_json::parse(body) {
                Ok(Value::Object(o)) => {
                    for (k, v) in o {
                        put(&mut fields, k, v);
                    }
                }
                Ok(_) => return reject(&call, "the JSON body must be an object".into()),
                Err(e) => return unsure(&call, format!("the JSON body is not valid: {e}")),
            }
        } else if mime == "application/x-www-form-urlencoded" || mime.is_empty() {
            if std::str::from_utf8(body).is_err() {
                return unsure(&call, "the form body is not UTF-8".into());
            }
            for (k, v) in form_urlencoded::parse(body) {
                put(&mut fields, k.into_owned(), json!(v));
            }
        } else {
            return unsure(&call, format!("unsupported content type {mime:?}"));
        }
    }
    if let Some(d) = dup {
        return unsure(&call, format!("parameter {d:?} was given more than once"));
    }
    let header_token = parts
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(|t| t.trim().to_string());
    let form_token = match fields.remove("token") {
        Some(Value::String(s)) => Some(s),
        Some(_) => return unsure(&call, "token must be a string".into()),
        None => None,
    };
    call.slack_token = header_token.or(form_token);
    let channel = match fields.get("channel_id") {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Value::String(_)) | None => None,
        Some(v) => return unsure(&call, format!("channel_id must be a string, got {v}")),
    };
    let params = &mut call.request_parameters;
    for (k, v) in &fields {
        params.insert(k.clone(), v.clone());
    }
    let Some(channel) = channel else {
        return reject(&call, "channel_id is required".into());
    };
    call.slack_channel = Some(channel.clone());
    call.resources.push(("Slack::Channel".into(), channel.clone()));
    match call.op {
        Operation::SlackSetCustomRetention => {
            let d = match fields.get("duration_days") {
                Some(Value::String(s)) if !s.is_empty() && s.len() <= 10 && s.bytes().all(|b| b.is_ascii_digit()) => {
                    s.parse::<u64>().ok()
                }
                Some(Value::Number(n)) => n.as_u64(),
                None => return reject(&call, "duration_days is required".into()),
                _ => None,
            };
            match d {
                Some(d) if (1..=SLACK_MAX_DAYS).contains(&d) => call.changes.push(Change {
                    target: Target::SlackChannel,
                    resource: channel,
                    new: RetentionValue::Days(d as u32),
                }),
                _ => {
                    return reject(
                        &call,
                        format!("duration_days must be a whole number between 1 and {SLACK_MAX_DAYS}"),
                    );
                }
            }
        }
        Operation::SlackRemoveCustomRetention => call.changes.push(Change {
            target: Target::SlackChannel,
            resource: channel,
            new: RetentionValue::Default,
        }),
        _ => {}
    }
    Ok(call)
}

/// Settings a successful Slack answer (`"ok": true`) reports: what a read returned, or what a
/// change set.
pub(super) fn observed(call: &Call, body: &Value) -> Vec<Observed> {
    let mut out = Vec::new();
    if body.get("ok") != Some(&Value::Bool(true)) {
        return out;
    }
    match call.op {
        Operation::SlackGetCustomRetention => {
            if let Some(ch) = &call.slack_channel {
                let v = if body.get("is_policy_enabled") == Some(&Value::Bool(false)) {
                    Some(RetentionValue::Default)
                } else {
                    body.get("duration_days")
                        .and_then(Value::as_u64)
                        .map(|d| RetentionValue::Days(d as u32))
                };
                if let Some(v) = v {
                    out.push(Observed {
                        target: Target::SlackChannel,
                        resource: ch.clone(),
                        value: v,
                    });
                }
            }
        }
        _ => {
            // A change the vendor accepted: the values it asked for now hold.
            for c in &call.changes {
                out.push(Observed {
                    target: c.target,
                    resource: c.resource.clone(),
                    value: c.new,
                });
            }
        }
    }
    out
}

/// Reads a Slack answer: `x-slack-req-id` and, for an error, its code (the body's `error` when
/// `"ok": false`, else the status of a 4xx/5xx answer). Slack gives no separate message.
pub(super) fn read_answer(status: u16, headers: &HeaderMap, response: &Value) -> AnswerFacts {
    let code = if response.get("ok") == Some(&Value::Bool(false)) {
        response.get("error").and_then(Value::as_str).map(str::to_string)
    } else if status >= 400 {
        Some(status.to_string())
    } else {
        None
    };
    AnswerFacts {
        request_id: headers
            .get("x-slack-req-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        error_code: code,
        error_message: None,
    }
}

/// The caller's CloudTrail `userIdentity.type` by its Slack token, if the call carries one:
/// `SlackBot` for a bot token (`xoxb…`), `SlackUser` for any other.
pub(super) fn identity_type(call: &Call) -> Option<&'static str> {
    let tok = call.slack_token.as_ref()?;
    Some(if tok.starts_with("xoxb") {
        "SlackBot"
    } else {
        "SlackUser"
    })
}

/// The proxy's own refusal in the Slack shape: `{"ok":false,"error":…,"detail":…}` with
/// `x-slack-req-id`.
pub(super) fn error_response(err: &VendorError, request_id: &str) -> Response<ProxyBody> {
    let body = json!({"ok": false, "error": err.slack_error, "detail": err.message});
    let mut r = Response::builder()
        .status(err.slack_status)
        .header("content-type", "application/json; charset=utf-8");
    if let Ok(v) = HeaderValue::from_str(request_id) {
        r = r.header("x-slack-req-id", v);
    }
    r.body(full(body.to_string()))
        .unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR, "internal error"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vendors::tests::run;

    #[test]
    fn slack_both_encodings_and_tokens() {
        let f = run(
            Family::Slack,
            Method::POST,
            "/api/admin.conversations.setCustomRetention",
            "application/x-www-form-urlencoded",
            "channel_id=C0123&duration_days=365&token=xoxp-secret",
        )
        .unwrap();
        assert_eq!(f.changes[0].new, RetentionValue::Days(365));
        assert_eq!(f.slack_token.as_deref(), Some("xoxp-secret"));
        assert!(f.request_parameters.get("token").is_none());
        let j = run(
            Family::Slack,
            Method::POST,
            "/api/admin.conversations.setCustomRetention",
            "application/json;charset=utf-8",
            r#"{"channel_id": "C0123", "duration_days": 400}"#,
        )
        .unwrap();
        assert_eq!(j.changes[0].new, RetentionValue::Days(400));
        let r = run(
            Family::Slack,
            Method::POST,
            "/api/admin.conversations.removeCustomRetention",
            "application/x-www-form-urlencoded",
            "channel_id=C0123",
        )
        .unwrap();
        assert_eq!(r.changes[0].new, RetentionValue::Default);
        let g = run(
            Family::Slack,
            Method::GET,
            "/api/admin.conversations.getCustomRetention?channel_id=C9",
            "",
            "",
        )
        .unwrap();
        assert_eq!(g.slack_channel.as_deref(), Some("C9"));
        for (ct, body) in [
            ("application/x-www-form-urlencoded", "channel_id=C1&duration_days=36500"),
            ("application/x-www-form-urlencoded", "channel_id=C1&duration_days=0"),
            ("application/x-www-form-urlencoded", "channel_id=C1&duration_days=3e2"),
            (
                "application/x-www-form-urlencoded",
                "channel_id=C1&duration_days=400&duration_days=30",
            ),
            ("application/x-www-form-urlencoded", "duration_days=400"),
            ("application/json", r#"{"channel_id": "C1", "duration_days": 400.5}"#),
            ("text/plain", "channel_id=C1&duration_days=400"),
        ] {
            assert!(
                run(
                    Family::Slack,
                    Method::POST,
                    "/api/admin.conversations.setCustomRetention",
                    ct,
                    body
                )
                .is_err(),
                "{body}"
            );
        }
        assert!(
            run(
                Family::Slack,
                Method::POST,
                "/api/admin.conversations.setCustomRetention?duration_days=30",
                "application/x-www-form-urlencoded",
                "channel_id=C1&duration_days=400"
            )
            .is_err()
        );
    }
}
