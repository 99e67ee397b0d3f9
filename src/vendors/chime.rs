//! Amazon Chime and the Chime SDK: the three AWS families (`chime`, `messaging-chime`,
//! `identity-chime`). Owns their host names, the path grammar of their retention calls, ARN
//! rules, how a call's JSON body is read and bounded, what a successful answer reports, how an
//! answer or error reads (`x-amzn-ErrorType`, `__type`, `Code`, `Message`, `x-amzn-RequestId`),
//! and the AWS shape of the proxy's own refusals.

use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use serde_json::{Map, Value, json};

use super::errors::VendorError;
use super::{
    AnswerFacts, Call, Family, Matched, Operation, Rejection, RequestParts, decode_segment, strict_json, up_to,
};
use super::{aws_endpoints, aws_sigv4};
use crate::http::body::{ProxyBody, full, plain};
use crate::retention::{Change, Observed, RetentionValue, Target};

/// Chime retention limits (days).
pub const AWS_MAX_DAYS: u64 = 5475;

/// Chime route words the lenient reading compares without case.
pub(super) const ROUTE_WORDS: [&str; 6] = [
    "accounts",
    "retention-settings",
    "channels",
    "expiration-settings",
    "app-instances",
    "app-instance-users",
];

/// The Chime family of an AWS endpoint host, any spelling the SDKs' endpoint rules produce:
/// every partition and region, `-fips`, dual-stack, the global endpoint, VPC endpoint names.
pub(super) fn family_for_host(h: &str) -> Option<Family> {
    let host = aws_endpoints::parse(h)?;
    let svc = host.service;
    if svc.eq_ignore_ascii_case("chime") {
        Some(Family::Chime)
    } else if svc.eq_ignore_ascii_case("messaging-chime") {
        Some(Family::ChimeMessaging)
    } else if svc.eq_ignore_ascii_case("identity-chime") {
        Some(Family::ChimeIdentity)
    } else {
        None
    }
}

/// The region an AWS endpoint host such as `chime.us-east-1.amazonaws.com` serves (its global
/// endpoint, `aws-global`, signs for `us-east-1`).
pub fn region_of_host(host: &str) -> Option<String> {
    let h = aws_endpoints::parse(host)?;
    Some(aws_endpoints::signing_region(h.region).to_ascii_lowercase())
}

/// Reverse-proxy routing: the Chime family whose routes start with the word `first` of `path`.
pub(super) fn route_family(first: &str, path: &str) -> Option<Family> {
    match first {
        "accounts" if path.starts_with("/accounts/") => Some(Family::Chime),
        "channels" | "channel-flows" => Some(Family::ChimeMessaging),
        "app-instances" | "app-instance-users" | "app-instance-bots" => Some(Family::ChimeIdentity),
        _ => None,
    }
}

fn matched(op: Operation, path_param: Option<String>) -> Option<Matched> {
    Some(Matched { op, path_param })
}

/// The path parameter in `segs[from..to]`, each segment decoded, joined with `/`; `None` when
/// the range is empty or holds an empty, `.` or `..` segment, or a segment a lenient server
/// would read as another id: one with surrounding whitespace or control bytes (`a1%20`) or a
/// matrix parameter (`a1;x`). Those are left to the lenient reading, which marks the path as
/// one that could mean two things. A segment of nothing but whitespace stays strict, for the
/// vendor's own refusal of a blank id.
fn middle(segs: &[&str], from: usize, to: usize) -> Option<String> {
    let odd = |s: &&str| {
        let d = decode_segment(s);
        let word = super::lenient_word(&d);
        d.is_empty() || d == "." || d == ".." || (word != d && !word.is_empty())
    };
    if to <= from || segs[from..to].iter().any(odd) {
        return None;
    }
    let joined = segs[from..to]
        .iter()
        .map(|s| decode_segment(s))
        .collect::<Vec<_>>()
        .join("/");
    Some(joined)
}

/// Recognises an Amazon Chime call; `rest` is the path without its leading `/` and its query.
pub(super) fn classify_account(method: &Method, rest: &str) -> Option<Matched> {
    // Every route starts with a fixed word; most traffic is rejected here, before anything
    // is split or decoded.
    if up_to(rest, |b| b == b'/') != "accounts" {
        return None;
    }
    let segs: Vec<&str> = rest.split('/').collect();
    let n = segs.len();
    if n == 3 && segs[n - 1] == "retention-settings" {
        let p = middle(&segs, 1, n - 1)?;
        match *method {
            Method::PUT => matched(Operation::PutRetentionSettings, Some(p)),
            Method::GET => matched(Operation::GetRetentionSettings, Some(p)),
            _ => None,
        }
    } else {
        None
    }
}

/// Recognises a Chime SDK messaging call; `rest` as for [`classify_account`].
pub(super) fn classify_messaging(method: &Method, rest: &str) -> Option<Matched> {
    if up_to(rest, |b| b == b'/') != "channels" {
        return None;
    }
    let segs: Vec<&str> = rest.split('/').collect();
    let n = segs.len();
    if n == 1 || (n == 2 && segs[1].is_empty()) {
        return (*method == Method::POST).then_some(Matched {
            op: Operation::CreateChannel,
            path_param: None,
        });
    }
    if n >= 3 && segs[n - 1] == "expiration-settings" && *method == Method::PUT {
        return matched(Operation::PutChannelExpirationSettings, Some(middle(&segs, 1, n - 1)?));
    }
    if *method == Method::GET && n >= 2 {
        // DescribeChannel is GET /channels/{arn}; other GETs under /channels/{arn}/…
        // (memberships, messages) are different operations.
        let p = middle(&segs, 1, n)?;
        if (n == 2 && valid_arn(&p)) || is_child_arn(&p, "channel") {
            return matched(Operation::DescribeChannel, Some(p));
        }
    }
    None
}

/// Recognises a Chime SDK identity call; `rest` as for [`classify_account`].
pub(super) fn classify_identity(method: &Method, rest: &str) -> Option<Matched> {
    let root = up_to(rest, |b| b == b'/');
    if root != "app-instances" && root != "app-instance-users" {
        return None;
    }
    let segs: Vec<&str> = rest.split('/').collect();
    let n = segs.len();
    if root == "app-instances" && n >= 3 && segs[n - 1] == "retention-settings" {
        let p = middle(&segs, 1, n - 1)?;
        return match *method {
            Method::PUT => matched(Operation::PutAppInstanceRetentionSettings, Some(p)),
            Method::GET => matched(Operation::GetAppInstanceRetentionSettings, Some(p)),
            _ => None,
        };
    }
    if root == "app-instance-users" {
        if n == 1 || (n == 2 && segs[1].is_empty()) {
            return (*method == Method::POST).then_some(Matched {
                op: Operation::CreateAppInstanceUser,
                path_param: None,
            });
        }
        if n >= 3 && segs[n - 1] == "expiration-settings" && *method == Method::PUT {
            return matched(
                Operation::PutAppInstanceUserExpirationSettings,
                Some(middle(&segs, 1, n - 1)?),
            );
        }
        if *method == Method::GET && n >= 2 {
            let p = middle(&segs, 1, n)?;
            if (n == 2 && valid_arn(&p)) || is_child_arn(&p, "user") {
                return matched(Operation::DescribeAppInstanceUser, Some(p));
            }
        }
    }
    None
}

/// The targets a Chime operation can change.
pub(super) fn targets_of(op: Operation) -> &'static [Target] {
    use Operation::*;
    match op {
        PutRetentionSettings => &[Target::ChimeRoom, Target::ChimeConversation],
        PutAppInstanceRetentionSettings => &[Target::AppInstanceRetention],
        PutChannelExpirationSettings | CreateChannel => &[Target::ChannelExpiration],
        PutAppInstanceUserExpirationSettings | CreateAppInstanceUser => &[Target::UserExpiration],
        _ => &[],
    }
}

/// `arn:…:app-instance/{id}/{kind}/{id}` exactly: how a raw-slash ARN is told apart from a
/// sub-resource path such as `/channels/{arn}/messages`.
fn is_child_arn(p: &str, kind: &str) -> bool {
    if !valid_arn(p) {
        return false;
    }
    let res = p.splitn(6, ':').nth(5).unwrap_or("");
    let parts: Vec<&str> = res.split('/').collect();
    parts.len() == 4 && parts[0] == "app-instance" && parts[2] == kind && !parts[1].is_empty() && !parts[3].is_empty()
}

/// The botocore `ChimeArn` constraint: length 5–1600 and
/// `arn:[a-z0-9-.]{1,63}:[a-z0-9-.]{0,63}:[a-z0-9-.]{0,63}:[a-z0-9-.]{0,63}:[^/].{0,1023}`.
pub fn valid_arn(s: &str) -> bool {
    let len = s.chars().count();
    if !(5..=1600).contains(&len) {
        return false;
    }
    let Some(rest) = s.strip_prefix("arn:") else {
        return false;
    };
    let mut parts = rest.splitn(5, ':');
    let ok_part = |p: Option<&str>, min: usize| {
        p.is_some_and(|p| {
            (min..=63).contains(&p.len())
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        })
    };
    if !ok_part(parts.next(), 1) || !ok_part(parts.next(), 0) || !ok_part(parts.next(), 0) || !ok_part(parts.next(), 0)
    {
        return false;
    }
    match parts.next() {
        Some(res) => {
            let n = res.chars().count();
            !res.is_empty() && !res.starts_with('/') && n <= 1024 && !res.contains(['\n', '\r'])
        }
        None => false,
    }
}

/// The AWS account id inside an ARN.
pub fn arn_account(arn: &str) -> Option<&str> {
    arn.split(':').nth(4).filter(|a| !a.is_empty())
}

/// Why a value was refused, and whether another reader could have taken it differently.
#[derive(Debug)]
struct Problem {
    msg: String,
    ambiguous: bool,
}

impl Problem {
    fn certain(msg: impl Into<String>) -> Problem {
        Problem {
            msg: msg.into(),
            ambiguous: false,
        }
    }
    fn unsure(msg: impl Into<String>) -> Problem {
        Problem {
            msg: msg.into(),
            ambiguous: true,
        }
    }
}

/// Body members that may hold customer content; recorded as this instead of their value.
const HIDDEN: &str = "HIDDEN_DUE_TO_SECURITY_REASONS";

/// Reads a Chime call's path parameter, `x-amz-chime-bearer` and JSON body into `call`, and
/// validates them against the vendor's limits.
pub(super) fn parse(mut call: Call, m: &Matched, parts: &RequestParts<'_>, body: &[u8]) -> Result<Call, Rejection> {
    let op = m.op;
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
    let problem = |call: &Call, p: Problem| {
        Err(Rejection {
            message: p.msg,
            partial: Box::new(call.clone()),
            ambiguous: p.ambiguous,
        })
    };
    let bearer = match parts
        .headers
        .get_all("x-amz-chime-bearer")
        .iter()
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] => None,
        [one] => Some(String::from_utf8_lossy(one.as_bytes()).into_owned()),
        _ => return unsure(&call, "x-amz-chime-bearer was given more than once".into()),
    };
    call.chime_bearer = bearer.clone();
    let params = &mut call.request_parameters;
    let param = m.path_param.clone().unwrap_or_default();
    match op {
        Operation::PutRetentionSettings | Operation::GetRetentionSettings => {
            params.insert("accountId".into(), json!(param));
            call.account = Some(param.clone());
            call.resources.push(("AWS::Chime::Account".into(), param.clone()));
            if !param.chars().any(|c| !c.is_whitespace()) {
                return reject(&call, "AccountId must contain a non-space character".into());
            }
        }
        Operation::PutChannelExpirationSettings | Operation::DescribeChannel => {
            params.insert("channelArn".into(), json!(param));
            call.resources
                .push(("AWS::ChimeSDKMessaging::Channel".into(), param.clone()));
            call.arns.push(param.clone());
            if !valid_arn(&param) {
                return reject(&call, format!("ChannelArn {param:?} is not a valid ARN"));
            }
        }
        Operation::PutAppInstanceRetentionSettings | Operation::GetAppInstanceRetentionSettings => {
            params.insert("appInstanceArn".into(), json!(param));
            call.resources
                .push(("AWS::ChimeSDKIdentity::AppInstance".into(), param.clone()));
            call.arns.push(param.clone());
            if !valid_arn(&param) {
                return reject(&call, format!("AppInstanceArn {param:?} is not a valid ARN"));
            }
        }
        Operation::PutAppInstanceUserExpirationSettings | Operation::DescribeAppInstanceUser => {
            params.insert("appInstanceUserArn".into(), json!(param));
            call.resources
                .push(("AWS::ChimeSDKIdentity::AppInstanceUser".into(), param.clone()));
            call.arns.push(param.clone());
            if !valid_arn(&param) {
                return reject(&call, format!("AppInstanceUserArn {param:?} is not a valid ARN"));
            }
        }
        Operation::CreateChannel | Operation::CreateAppInstanceUser => {}
        _ => unreachable!("not a Chime operation"),
    }
    if let Some(b) = &bearer {
        params.insert("chimeBearer".into(), json!(b));
        if !valid_arn(b) {
            return reject(&call, format!("ChimeBearer {b:?} is not a valid ARN"));
        }
    }
    if let Some(q) = parts.query.filter(|q| !q.is_empty()) {
        // None of these operations takes query parameters; keep what came for the record,
        // and do not guess whether the vendor would read a setting from it.
        // A presigned request's signature and session token are never kept, nor a token
        // some client put in the query.
        let mut qp = Map::new();
        for (k, v) in form_urlencoded::parse(q.as_bytes()) {
            if k.trim().eq_ignore_ascii_case("token") {
                qp.insert(k.into_owned(), json!(HIDDEN));
            } else if let Some(kept) = aws_sigv4::query_parameter_for_record(&k, &v) {
                qp.insert(k.into_owned(), json!(kept));
            }
        }
        params.insert("queryString".into(), Value::Object(qp));
        if !op.read_only() {
            return unsure(&call, "this operation takes no query parameters".into());
        }
    }

    let read_only = op.read_only();
    let body_obj: Map<String, Value> = if body.iter().all(u8::is_ascii_whitespace) {
        if read_only
            || matches!(
                op,
                Operation::PutChannelExpirationSettings | Operation::PutAppInstanceUserExpirationSettings
            )
        {
            Map::new()
        } else {
            return reject(&call, "the request body is empty; a JSON object is required".into());
        }
    } else {
        if let Some(enc) = parts.headers.get(http::header::CONTENT_ENCODING)
            && !enc.as_bytes().eq_ignore_ascii_case(b"identity")
        {
            return unsure(&call, "compressed request bodies are not accepted".into());
        }
        match strict_json::parse(body) {
            Ok(Value::Object(o)) => o,
            Ok(_) => return reject(&call, "the request body must be a JSON object".into()),
            Err(e) => return unsure(&call, format!("the request body is not valid JSON: {e}")),
        }
    };

    let param = m.path_param.clone().unwrap_or_default();
    match op {
        Operation::PutRetentionSettings => {
            let Some(rs) = body_obj.get("RetentionSettings") else {
                return reject(&call, "RetentionSettings is required".into());
            };
            let Some(rs) = rs.as_object() else {
                return reject(&call, "RetentionSettings must be an object".into());
            };
            for (key, target) in [
                ("RoomRetentionSettings", Target::ChimeRoom),
                ("ConversationRetentionSettings", Target::ChimeConversation),
            ] {
                let new = match settings_days(rs.get(key), key) {
                    Ok(v) => v,
                    Err(e) => return problem(&call, e),
                };
                call.changes.push(Change {
                    target,
                    resource: param.clone(),
                    new,
                });
            }
            if let Some(k) = rs
                .keys()
                .find(|k| *k != "RoomRetentionSettings" && *k != "ConversationRetentionSettings")
            {
                return unsure(&call, format!("RetentionSettings has an unknown member {k:?}"));
            }
        }
        Operation::PutAppInstanceRetentionSettings => {
            let Some(rs) = body_obj.get("AppInstanceRetentionSettings") else {
                return reject(&call, "AppInstanceRetentionSettings is required".into());
            };
            let Some(rs) = rs.as_object() else {
                return reject(&call, "AppInstanceRetentionSettings must be an object".into());
            };
            if let Some(k) = rs.keys().find(|k| *k != "ChannelRetentionSettings") {
                return unsure(
                    &call,
                    format!("AppInstanceRetentionSettings has an unknown member {k:?}"),
                );
            }
            let new = match settings_days(rs.get("ChannelRetentionSettings"), "ChannelRetentionSettings") {
                Ok(v) => v,
                Err(e) => return problem(&call, e),
            };
            call.changes.push(Change {
                target: Target::AppInstanceRetention,
                resource: param.clone(),
                new,
            });
        }
        Operation::PutChannelExpirationSettings | Operation::PutAppInstanceUserExpirationSettings => {
            let (target, allowed): (Target, &[&str]) = if op == Operation::PutChannelExpirationSettings {
                (
                    Target::ChannelExpiration,
                    &["CREATED_TIMESTAMP", "LAST_MESSAGE_TIMESTAMP"],
                )
            } else {
                (Target::UserExpiration, &["CREATED_TIMESTAMP"])
            };
            let new = match expiration(body_obj.get("ExpirationSettings"), allowed) {
                Ok(v) => v.unwrap_or(RetentionValue::Off),
                Err(e) => return problem(&call, e),
            };
            call.changes.push(Change {
                target,
                resource: param.clone(),
                new,
            });
        }
        Operation::CreateChannel | Operation::CreateAppInstanceUser => {
            let (target, allowed, rtype): (Target, &[&str], &str) = if op == Operation::CreateChannel {
                (
                    Target::ChannelExpiration,
                    &["CREATED_TIMESTAMP", "LAST_MESSAGE_TIMESTAMP"],
                    "AWS::ChimeSDKMessaging::Channel",
                )
            } else {
                (
                    Target::UserExpiration,
                    &["CREATED_TIMESTAMP"],
                    "AWS::ChimeSDKIdentity::AppInstanceUser",
                )
            };
            let app = match body_obj.get("AppInstanceArn") {
                Some(Value::String(s)) if valid_arn(s) => s.clone(),
                Some(v) => return reject(&call, format!("AppInstanceArn {v} is not a valid ARN")),
                None => return reject(&call, "AppInstanceArn is required".into()),
            };
            call.arns.push(app.clone());
            // The new resource's ARN is known up front when the client names it; otherwise
            // the vendor's response carries it (`ChannelArn`), filled in with the outcome.
            let child = if op == Operation::CreateChannel {
                match body_obj.get("ChannelId") {
                    Some(Value::String(id)) => Some(format!("{app}/channel/{id}")),
                    _ => None,
                }
            } else {
                match body_obj.get("AppInstanceUserId") {
                    Some(Value::String(id)) => Some(format!("{app}/user/{id}")),
                    Some(v) => return reject(&call, format!("AppInstanceUserId {v} must be a string")),
                    None => return reject(&call, "AppInstanceUserId is required".into()),
                }
            };
            call.resources
                .push(("AWS::ChimeSDKIdentity::AppInstance".into(), app.clone()));
            if let Some(c) = &child {
                call.resources.push((rtype.into(), c.clone()));
                call.arns.push(c.clone());
            }
            match expiration(body_obj.get("ExpirationSettings"), allowed) {
                Ok(Some(new)) => call.changes.push(Change {
                    target,
                    resource: child.unwrap_or_else(|| format!("{app}/channel/*")),
                    new,
                }),
                Ok(None) => {}
                Err(e) => return problem(&call, e),
            }
        }
        _ => {}
    }
    let params = &mut call.request_parameters;
    for (k, v) in body_obj {
        let v = match k.as_str() {
            "Name" | "Metadata" | "ClientRequestToken" | "Tags" => json!(HIDDEN),
            _ => v,
        };
        params.insert(k, v);
    }
    Ok(call)
}

fn settings_days(v: Option<&Value>, key: &str) -> Result<RetentionValue, Problem> {
    match v {
        None | Some(Value::Null) => Ok(RetentionValue::Off),
        Some(Value::Object(o)) => {
            if let Some(k) = o.keys().find(|k| *k != "RetentionDays") {
                return Err(Problem::unsure(format!("{key} has an unknown member {k:?}")));
            }
            match o.get("RetentionDays") {
                None | Some(Value::Null) => Ok(RetentionValue::Off),
                Some(d) => days(d, "RetentionDays", AWS_MAX_DAYS),
            }
        }
        Some(_) => Err(Problem::unsure(format!("{key} must be an object"))),
    }
}

fn days(v: &Value, name: &str, max: u64) -> Result<RetentionValue, Problem> {
    match v.as_u64() {
        Some(d) if (1..=max).contains(&d) => Ok(RetentionValue::Days(d as u32)),
        Some(_) => Err(Problem::certain(format!("{name} must be between 1 and {max}, got {v}"))),
        None if v.as_i64().is_some() => Err(Problem::certain(format!("{name} must be between 1 and {max}, got {v}"))),
        // Fractional or exponent numbers and strings: a lenient reader might truncate, round
        // or convert them, so what the vendor would store is not certain.
        None if v.is_number() => Err(Problem::unsure(format!(
            "{name} must be a whole number between 1 and {max}, got {v}"
        ))),
        None => Err(Problem::unsure(format!(
            "{name} must be a number between 1 and {max}, got {v}"
        ))),
    }
}

fn expiration(v: Option<&Value>, allowed: &[&str]) -> Result<Option<RetentionValue>, Problem> {
    let o = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(o)) => o,
        Some(_) => return Err(Problem::unsure("ExpirationSettings must be an object")),
    };
    if let Some(k) = o.keys().find(|k| *k != "ExpirationDays" && *k != "ExpirationCriterion") {
        return Err(Problem::unsure(format!(
            "ExpirationSettings has an unknown member {k:?}"
        )));
    }
    let d = o
        .get("ExpirationDays")
        .ok_or_else(|| Problem::certain("ExpirationSettings.ExpirationDays is required"))?;
    let d = days(d, "ExpirationDays", AWS_MAX_DAYS)?;
    match o.get("ExpirationCriterion") {
        Some(Value::String(c)) if allowed.contains(&c.as_str()) => Ok(Some(d)),
        Some(c) => Err(Problem::certain(format!(
            "ExpirationCriterion must be one of {}, got {c}",
            allowed.join(", ")
        ))),
        None => Err(Problem::certain("ExpirationSettings.ExpirationCriterion is required")),
    }
}

/// Settings a successful Chime answer reports: what a read returned, or what a change set.
pub(super) fn observed(call: &Call, body: &Value) -> Vec<Observed> {
    let mut out = Vec::new();
    let ob = |target, resource: &str, value| Observed {
        target,
        resource: resource.to_string(),
        value,
    };
    let exp = |v: Option<&Value>| match v {
        Some(Value::Object(o)) => o
            .get("ExpirationDays")
            .and_then(Value::as_u64)
            .map(|d| RetentionValue::Days(d as u32)),
        _ => Some(RetentionValue::Off),
    };
    let ret = |v: Option<&Value>| match v {
        Some(Value::Object(o)) => match o.get("RetentionDays") {
            Some(d) => d.as_u64().map(|d| RetentionValue::Days(d as u32)),
            None => Some(RetentionValue::Off),
        },
        _ => Some(RetentionValue::Off),
    };
    match call.op {
        Operation::GetRetentionSettings => {
            if let (Some(acct), Some(rs)) = (&call.account, body.get("RetentionSettings")) {
                for (k, t) in [
                    ("RoomRetentionSettings", Target::ChimeRoom),
                    ("ConversationRetentionSettings", Target::ChimeConversation),
                ] {
                    if let Some(v) = ret(rs.get(k)) {
                        out.push(ob(t, acct, v));
                    }
                }
            }
        }
        Operation::GetAppInstanceRetentionSettings => {
            if let (Some(arn), Some(rs)) = (call.arns.first(), body.get("AppInstanceRetentionSettings"))
                && let Some(v) = ret(rs.get("ChannelRetentionSettings"))
            {
                out.push(ob(Target::AppInstanceRetention, arn, v));
            }
        }
        Operation::DescribeChannel => {
            if let (Some(arn), Some(ch)) = (call.arns.first(), body.get("Channel"))
                && let Some(v) = exp(ch.get("ExpirationSettings"))
            {
                out.push(ob(Target::ChannelExpiration, arn, v));
            }
        }
        Operation::DescribeAppInstanceUser => {
            if let (Some(arn), Some(u)) = (call.arns.first(), body.get("AppInstanceUser"))
                && let Some(v) = exp(u.get("ExpirationSettings"))
            {
                out.push(ob(Target::UserExpiration, arn, v));
            }
        }
        _ => {
            // A change the vendor accepted: the values it asked for now hold.
            for c in &call.changes {
                let resource = resolved_resource(call, c, body);
                out.push(ob(c.target, &resource, c.new));
            }
        }
    }
    out
}

/// The resource of a change once the vendor has answered (a created channel's ARN).
pub fn resolved_resource(call: &Call, change: &Change, body: &Value) -> String {
    if call.op == Operation::CreateChannel
        && change.resource.ends_with("/channel/*")
        && let Some(arn) = body.get("ChannelArn").and_then(Value::as_str)
    {
        return arn.to_string();
    }
    change.resource.clone()
}

/// Reads an AWS answer: `x-amzn-RequestId` and, for an error, its code (`x-amzn-ErrorType`,
/// else the body's `__type` or `Code`, else the status) and `Message`.
pub(super) fn read_answer(status: u16, headers: &HeaderMap, response: &Value) -> AnswerFacts {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let code = (status >= 400).then(|| {
        header("x-amzn-errortype")
            .map(|t| t.split(':').next().unwrap_or(t).to_string())
            .or_else(|| {
                response
                    .get("__type")
                    .and_then(Value::as_str)
                    .map(|t| t.rsplit('#').next().unwrap_or(t).to_string())
            })
            .or_else(|| response.get("Code").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_else(|| status.to_string())
    });
    let message = (status >= 400)
        .then(|| {
            response
                .get("Message")
                .or_else(|| response.get("message"))
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .flatten();
    AnswerFacts {
        request_id: header("x-amzn-requestid").map(str::to_string),
        error_code: code,
        error_message: message,
    }
}

/// The proxy's own refusal in the AWS shape: the modeled body `{"Code":…,"Message":…}` (`Code`
/// is the exception name without `Exception`), `x-amzn-ErrorType` and `x-amzn-RequestId`.
pub(super) fn error_response(err: &VendorError, request_id: &str) -> Response<ProxyBody> {
    let code = err.aws_code.strip_suffix("Exception").unwrap_or(err.aws_code);
    let body = json!({"Code": code, "Message": err.message});
    let mut r = Response::builder()
        .status(err.status)
        .header("content-type", "application/json")
        .header("x-amzn-ErrorType", err.aws_code);
    if let Ok(v) = HeaderValue::from_str(request_id) {
        r = r.header("x-amzn-RequestId", v);
    }
    r.body(full(body.to_string()))
        .unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR, "internal error"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vendors::tests::{CH, CH_DEC, run};
    use crate::vendors::{classify, observed_in_response};

    #[test]
    fn raw_slashes_decode_to_the_same_arn() {
        let a = classify(
            Family::ChimeMessaging,
            &Method::PUT,
            &format!("/channels/{CH}/expiration-settings"),
        )
        .unwrap();
        let b = classify(
            Family::ChimeMessaging,
            &Method::PUT,
            &format!("/channels/{CH_DEC}/expiration-settings"),
        )
        .unwrap();
        assert_eq!(a.path_param.as_deref(), Some(CH_DEC));
        assert_eq!(a, b);
    }

    #[test]
    fn chime_put_values() {
        let body = r#"{"RetentionSettings": {"RoomRetentionSettings": {"RetentionDays": 365}, "ConversationRetentionSettings": {}}}"#;
        let c = run(
            Family::Chime,
            Method::PUT,
            "/accounts/acct-1/retention-settings",
            "application/json",
            body,
        )
        .unwrap();
        assert_eq!(c.changes.len(), 2);
        assert_eq!(c.changes[0].new, RetentionValue::Days(365));
        assert_eq!(c.changes[1].target, Target::ChimeConversation);
        assert_eq!(c.changes[1].new, RetentionValue::Off);
        assert_eq!(c.account.as_deref(), Some("acct-1"));
        let c = run(
            Family::Chime,
            Method::PUT,
            "/accounts/a/retention-settings",
            "application/json",
            r#"{"RetentionSettings": {}}"#,
        )
        .unwrap();
        assert!(c.changes.iter().all(|c| c.new == RetentionValue::Off));
    }

    #[test]
    fn vendor_limits_are_rejections() {
        for body in [
            r#"{"RetentionSettings": {"RoomRetentionSettings": {"RetentionDays": 99999}}}"#,
            r#"{"RetentionSettings": {"RoomRetentionSettings": {"RetentionDays": 0}}}"#,
            r#"{"RetentionSettings": {"RoomRetentionSettings": {"RetentionDays": "30"}}}"#,
            r#"{"RetentionSettings": {"RoomRetentionSettings": {"RetentionDays": 30.5}}}"#,
            r#"{"RetentionSettings": {"RoomRetentionSettings": {"RetentionDays": -1}}}"#,
            r#"{"RetentionSettings": {"RoomRetentionSettings": {"RetentionDays": 30, "RetentionDays": 4000}}}"#,
            r#"{"RetentionSettings": 7}"#,
            r#"{}"#,
            r#"not json"#,
            r#"[]"#,
            "",
        ] {
            assert!(
                run(
                    Family::Chime,
                    Method::PUT,
                    "/accounts/a/retention-settings",
                    "application/json",
                    body
                )
                .is_err(),
                "{body}"
            );
        }
        let p = format!("/channels/{CH}/expiration-settings");
        for body in [
            r#"{"ExpirationSettings": {"ExpirationDays": 30, "ExpirationCriterion": "BOGUS"}}"#,
            r#"{"ExpirationSettings": {"ExpirationDays": 5476, "ExpirationCriterion": "CREATED_TIMESTAMP"}}"#,
            r#"{"ExpirationSettings": {"ExpirationDays": 30}}"#,
        ] {
            assert!(
                run(Family::ChimeMessaging, Method::PUT, &p, "application/json", body).is_err(),
                "{body}"
            );
        }
        let ok = run(
            Family::ChimeMessaging,
            Method::PUT,
            &p,
            "application/json",
            r#"{"ExpirationSettings": {"ExpirationDays": 5475, "ExpirationCriterion": "LAST_MESSAGE_TIMESTAMP"}}"#,
        )
        .unwrap();
        assert_eq!(ok.changes[0].new, RetentionValue::Days(5475));
        let off = run(Family::ChimeMessaging, Method::PUT, &p, "application/json", "{}").unwrap();
        assert_eq!(off.changes[0].new, RetentionValue::Off);
        let user =
            "/app-instance-users/arn%3Aaws%3Achime%3Aus-east-1%3A1%3Aapp-instance%2Fx%2Fuser%2Fu/expiration-settings";
        assert!(
            run(
                Family::ChimeIdentity,
                Method::PUT,
                user,
                "application/json",
                r#"{"ExpirationSettings": {"ExpirationDays": 3, "ExpirationCriterion": "LAST_MESSAGE_TIMESTAMP"}}"#
            )
            .is_err()
        );
        assert!(
            run(
                Family::ChimeMessaging,
                Method::PUT,
                "/channels/notanarn/expiration-settings",
                "application/json",
                "{}"
            )
            .is_err()
        );
    }

    #[test]
    fn create_calls_carry_initial_expiration() {
        let body = r#"{"AppInstanceArn": "arn:aws:chime:us-east-1:111122223333:app-instance/8765", "Name": "secret name", "ClientRequestToken": "tok-0001", "ExpirationSettings": {"ExpirationDays": 7, "ExpirationCriterion": "LAST_MESSAGE_TIMESTAMP"}}"#;
        let c = run(
            Family::ChimeMessaging,
            Method::POST,
            "/channels",
            "application/json",
            body,
        )
        .unwrap();
        assert_eq!(c.changes[0].target, Target::ChannelExpiration);
        assert_eq!(c.changes[0].new, RetentionValue::Days(7));
        assert_eq!(c.request_parameters["Name"], HIDDEN);
        assert_eq!(c.request_parameters["ClientRequestToken"], HIDDEN);
        let resolved = resolved_resource(
            &c,
            &c.changes[0],
            &json!({"ChannelArn": "arn:aws:chime:us-east-1:111122223333:app-instance/8765/channel/c9"}),
        );
        assert!(resolved.ends_with("/channel/c9"));
        let body = r#"{"AppInstanceArn": "arn:aws:chime:us-east-1:1:app-instance/x", "AppInstanceUserId": "u2", "Name": "n", "ClientRequestToken": "t2"}"#;
        let c = run(
            Family::ChimeIdentity,
            Method::POST,
            "/app-instance-users",
            "application/json",
            body,
        )
        .unwrap();
        assert!(c.changes.is_empty());
        assert!(
            c.resources
                .iter()
                .any(|(_, id)| id == "arn:aws:chime:us-east-1:1:app-instance/x/user/u2")
        );
    }

    #[test]
    fn arn_pattern() {
        assert!(valid_arn(CH_DEC));
        assert!(!valid_arn("notanarn"));
        assert!(!valid_arn("arn:AWS:chime:us-east-1:1:x"));
        assert!(!valid_arn("arn:aws:chime:us-east-1:1:/x"));
        assert!(!valid_arn("arn:aws:chime:us-east-1:1"));
        assert_eq!(arn_account(CH_DEC), Some("111122223333"));
    }

    #[test]
    fn reads_feed_previous_values() {
        let c = run(Family::Chime, Method::GET, "/accounts/a/retention-settings", "", "").unwrap();
        let o = observed_in_response(
            &c,
            200,
            &json!({"RetentionSettings": {"RoomRetentionSettings": {"RetentionDays": 365}}}),
        );
        assert_eq!(o.len(), 2);
        assert_eq!(o[0].value, RetentionValue::Days(365));
        assert_eq!(o[1].value, RetentionValue::Off);
        assert!(observed_in_response(&c, 500, &json!({})).is_empty());
    }
}
