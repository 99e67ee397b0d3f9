//! Recognition: which SPEC §1 call a request is, and what it asks for. `classify` looks only
//! at the method and path (so pass-through traffic is never buffered); `parse` reads the body
//! of an intercepted call once, strictly, and yields the typed `Call` that guardrails and the
//! audit event are built from. Values the vendor would reject are a `Rejection`.

use std::collections::BTreeMap;

use http::{HeaderMap, Method};
use serde_json::{Map, Value, json};

pub mod aws_sigv4;
pub mod errors;
pub mod strict_json;

use crate::retention::{Change, Observed, RetentionValue, Target};

/// Chime retention limits (days).
pub const AWS_MAX_DAYS: u64 = 5475;
/// Slack custom retention limit (days).
pub const SLACK_MAX_DAYS: u64 = 36499;

/// A vendor API family; its `eventSource` and its upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// Amazon Chime (`chime.amazonaws.com`).
    Chime,
    /// Chime SDK messaging.
    ChimeMessaging,
    /// Chime SDK identity.
    ChimeIdentity,
    /// Slack Web API.
    Slack,
}

impl Family {
    /// CloudTrail `eventSource`.
    pub fn event_source(self) -> &'static str {
        match self {
            Family::Chime => "chime.amazonaws.com",
            Family::ChimeMessaging => "messaging-chime.amazonaws.com",
            Family::ChimeIdentity => "identity-chime.amazonaws.com",
            Family::Slack => "slack.com",
        }
    }

    /// Short label for metrics and logs (the `[upstreams]` key).
    pub fn label(self) -> &'static str {
        match self {
            Family::Chime => "chime",
            Family::ChimeMessaging => "chime_messaging",
            Family::ChimeIdentity => "chime_identity",
            Family::Slack => "slack",
        }
    }

    /// Whether calls are SigV4-signed AWS calls.
    pub fn is_aws(self) -> bool {
        self != Family::Slack
    }
}

/// The `eventSource` a user means by `s`: a family's short name (`chime`, `slack`, …), an
/// `eventSource` host without its domain (`messaging-chime`), or the `eventSource` itself.
pub fn event_source_named(s: &str) -> String {
    let family = match s {
        "chime" => Some(Family::Chime),
        "chime_messaging" | "messaging-chime" => Some(Family::ChimeMessaging),
        "chime_identity" | "identity-chime" => Some(Family::ChimeIdentity),
        "slack" => Some(Family::Slack),
        _ => None,
    };
    family.map_or_else(|| s.to_string(), |f| f.event_source().to_string())
}

/// The reverse-proxy route prefixes, for the 404 message.
pub const ROUTE_PREFIXES: &str = "/api/ (slack), /accounts/ (chime), /channels and /channel-flows (chime_messaging), /app-instances, /app-instance-users and /app-instance-bots (chime_identity)";

/// `s` up to the first byte that `stop` accepts (an ASCII delimiter), or all of it.
fn up_to(s: &str, stop: impl Fn(u8) -> bool) -> &str {
    match s.bytes().position(stop) {
        Some(i) => &s[..i],
        None => s,
    }
}

/// `path` without its query, if it has one.
fn before_query(path: &str) -> &str {
    up_to(path, |b| b == b'?')
}

/// Reverse-proxy routing: the family that serves an origin-form path.
pub fn route_family(path: &str) -> Option<Family> {
    let first = up_to(path.strip_prefix('/')?, |b| b == b'/' || b == b'?');
    match first {
        "api" if path.starts_with("/api/") => Some(Family::Slack),
        "accounts" if path.starts_with("/accounts/") => Some(Family::Chime),
        "channels" | "channel-flows" => Some(Family::ChimeMessaging),
        "app-instances" | "app-instance-users" | "app-instance-bots" => Some(Family::ChimeIdentity),
        _ => None,
    }
}

/// Forward-proxy routing: the family a vendor host belongs to, if it is one we audit.
pub fn family_for_host(host: &str) -> Option<Family> {
    let h = crate::http::headers::normalise_host(host);
    if h == "slack.com" {
        return Some(Family::Slack);
    }
    let rest = h.strip_suffix(".amazonaws.com")?;
    let mut parts = rest.split('.');
    let svc = parts.next()?;
    let region = parts.next()?;
    if parts.next().is_some() || region.is_empty() {
        return None;
    }
    match svc {
        "chime" => Some(Family::Chime),
        "messaging-chime" => Some(Family::ChimeMessaging),
        "identity-chime" => Some(Family::ChimeIdentity),
        _ => None,
    }
}

/// The region in a vendor host name such as `chime.us-east-1.amazonaws.com`.
pub fn region_of_host(host: &str) -> Option<String> {
    let rest = host.to_ascii_lowercase();
    let rest = rest.strip_suffix(".amazonaws.com")?;
    rest.split('.').nth(1).map(str::to_string)
}

/// A recognised operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// Chime `PutRetentionSettings`.
    PutRetentionSettings,
    /// Chime `GetRetentionSettings`.
    GetRetentionSettings,
    /// Chime SDK `PutChannelExpirationSettings`.
    PutChannelExpirationSettings,
    /// Chime SDK `CreateChannel`.
    CreateChannel,
    /// Chime SDK `DescribeChannel`.
    DescribeChannel,
    /// Chime SDK `PutAppInstanceRetentionSettings`.
    PutAppInstanceRetentionSettings,
    /// Chime SDK `GetAppInstanceRetentionSettings`.
    GetAppInstanceRetentionSettings,
    /// Chime SDK `PutAppInstanceUserExpirationSettings`.
    PutAppInstanceUserExpirationSettings,
    /// Chime SDK `CreateAppInstanceUser`.
    CreateAppInstanceUser,
    /// Chime SDK `DescribeAppInstanceUser`.
    DescribeAppInstanceUser,
    /// Slack `admin.conversations.setCustomRetention`.
    SlackSetCustomRetention,
    /// Slack `admin.conversations.getCustomRetention`.
    SlackGetCustomRetention,
    /// Slack `admin.conversations.removeCustomRetention`.
    SlackRemoveCustomRetention,
}

impl Operation {
    /// CloudTrail `eventName`.
    pub fn name(self) -> &'static str {
        match self {
            Operation::PutRetentionSettings => "PutRetentionSettings",
            Operation::GetRetentionSettings => "GetRetentionSettings",
            Operation::PutChannelExpirationSettings => "PutChannelExpirationSettings",
            Operation::CreateChannel => "CreateChannel",
            Operation::DescribeChannel => "DescribeChannel",
            Operation::PutAppInstanceRetentionSettings => "PutAppInstanceRetentionSettings",
            Operation::GetAppInstanceRetentionSettings => "GetAppInstanceRetentionSettings",
            Operation::PutAppInstanceUserExpirationSettings => "PutAppInstanceUserExpirationSettings",
            Operation::CreateAppInstanceUser => "CreateAppInstanceUser",
            Operation::DescribeAppInstanceUser => "DescribeAppInstanceUser",
            Operation::SlackSetCustomRetention => "admin.conversations.setCustomRetention",
            Operation::SlackGetCustomRetention => "admin.conversations.getCustomRetention",
            Operation::SlackRemoveCustomRetention => "admin.conversations.removeCustomRetention",
        }
    }

    /// The family the operation belongs to.
    pub fn family(self) -> Family {
        use Operation::*;
        match self {
            PutRetentionSettings | GetRetentionSettings => Family::Chime,
            PutChannelExpirationSettings | CreateChannel | DescribeChannel => Family::ChimeMessaging,
            PutAppInstanceRetentionSettings
            | GetAppInstanceRetentionSettings
            | PutAppInstanceUserExpirationSettings
            | CreateAppInstanceUser
            | DescribeAppInstanceUser => Family::ChimeIdentity,
            SlackSetCustomRetention | SlackGetCustomRetention | SlackRemoveCustomRetention => Family::Slack,
        }
    }

    /// CloudTrail `readOnly`.
    pub fn read_only(self) -> bool {
        use Operation::*;
        matches!(
            self,
            GetRetentionSettings
                | DescribeChannel
                | GetAppInstanceRetentionSettings
                | DescribeAppInstanceUser
                | SlackGetCustomRetention
        )
    }
}

/// What `classify` found: the operation and its decoded path parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matched {
    /// The operation.
    pub op: Operation,
    /// The decoded `{accountId}` / `{channelArn}` / … path parameter, if the route has one.
    pub path_param: Option<String>,
}

fn decode_segment(seg: &str) -> String {
    percent_encoding::percent_decode_str(seg)
        .decode_utf8_lossy()
        .into_owned()
}

/// Recognises a SPEC §1 call from its family, method and raw path (query excluded).
/// The path parameter may arrive percent-encoded (`%3A`, `%2F`) or with raw slashes; both
/// decode to the same ARN, so neither spelling slips past the audit.
pub fn classify(family: Family, method: &Method, path: &str) -> Option<Matched> {
    classify_path(family, method, before_query(path))
}

/// [`classify`] of a path without a query.
fn classify_path(family: Family, method: &Method, path: &str) -> Option<Matched> {
    let rest = path.strip_prefix('/')?;
    // Every route starts with a fixed word; most traffic is rejected here, before anything
    // is split or decoded.
    let first = up_to(rest, |b| b == b'/');
    let plausible = match family {
        Family::Slack => rest.starts_with("api/admin.conversations."),
        Family::Chime => first == "accounts",
        Family::ChimeMessaging => first == "channels",
        Family::ChimeIdentity => first == "app-instances" || first == "app-instance-users",
    };
    if !plausible {
        return None;
    }
    let segs: Vec<&str> = rest.split('/').collect();
    let m = |op, p: Option<String>| Some(Matched { op, path_param: p });
    let middle = |from: usize, to: usize| -> Option<String> {
        let odd = |s: &&str| {
            let d = decode_segment(s);
            d.is_empty() || d == "." || d == ".."
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
    };
    let n = segs.len();
    match family {
        Family::Slack => {
            if n != 2 || segs[0] != "api" {
                return None;
            }
            let op = match segs[1] {
                "admin.conversations.setCustomRetention" => Operation::SlackSetCustomRetention,
                "admin.conversations.getCustomRetention" => Operation::SlackGetCustomRetention,
                "admin.conversations.removeCustomRetention" => Operation::SlackRemoveCustomRetention,
                _ => return None,
            };
            if *method != Method::POST && *method != Method::GET {
                return None;
            }
            m(op, None)
        }
        Family::Chime => {
            if n == 3 && segs[0] == "accounts" && segs[n - 1] == "retention-settings" {
                let p = middle(1, n - 1)?;
                match *method {
                    Method::PUT => m(Operation::PutRetentionSettings, Some(p)),
                    Method::GET => m(Operation::GetRetentionSettings, Some(p)),
                    _ => None,
                }
            } else {
                None
            }
        }
        Family::ChimeMessaging => {
            if segs[0] != "channels" {
                return None;
            }
            if n == 1 || (n == 2 && segs[1].is_empty()) {
                return (*method == Method::POST).then_some(Matched {
                    op: Operation::CreateChannel,
                    path_param: None,
                });
            }
            if n >= 3 && segs[n - 1] == "expiration-settings" && *method == Method::PUT {
                return m(Operation::PutChannelExpirationSettings, Some(middle(1, n - 1)?));
            }
            if *method == Method::GET && n >= 2 {
                // DescribeChannel is GET /channels/{arn}; other GETs under /channels/{arn}/…
                // (memberships, messages) are different operations.
                let p = middle(1, n)?;
                if (n == 2 && valid_arn(&p)) || is_child_arn(&p, "channel") {
                    return m(Operation::DescribeChannel, Some(p));
                }
            }
            None
        }
        Family::ChimeIdentity => {
            let root = segs[0];
            if root == "app-instances" && n >= 3 && segs[n - 1] == "retention-settings" {
                let p = middle(1, n - 1)?;
                return match *method {
                    Method::PUT => m(Operation::PutAppInstanceRetentionSettings, Some(p)),
                    Method::GET => m(Operation::GetAppInstanceRetentionSettings, Some(p)),
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
                    return m(Operation::PutAppInstanceUserExpirationSettings, Some(middle(1, n - 1)?));
                }
                if *method == Method::GET && n >= 2 {
                    let p = middle(1, n)?;
                    if (n == 2 && valid_arn(&p)) || is_child_arn(&p, "user") {
                        return m(Operation::DescribeAppInstanceUser, Some(p));
                    }
                }
            }
            None
        }
    }
}

/// `classify`, then, when that finds nothing, `classify_lenient`; the flag says the lenient
/// reading matched. A request already in canonical form reads the same both ways, so the
/// lenient reading is skipped for it (most pass-through traffic).
pub fn classify_any(family: Family, method: &Method, path: &str) -> Option<(Matched, bool)> {
    let path = before_query(path);
    if let Some(m) = classify_path(family, method, path) {
        return Some((m, false));
    }
    if is_canonical(method, path) {
        return None;
    }
    classify_lenient(family, method, path).map(|m| (m, true))
}

/// Route words the lenient reading compares without case.
const ROUTE_WORDS: [&str; 7] = [
    "accounts",
    "retention-settings",
    "channels",
    "expiration-settings",
    "app-instances",
    "app-instance-users",
    "api",
];
/// Slack method names the lenient reading compares without case.
const SLACK_METHODS: [&str; 3] = [
    "admin.conversations.setCustomRetention",
    "admin.conversations.getCustomRetention",
    "admin.conversations.removeCustomRetention",
];

/// True when `classify_lenient` would rebuild exactly this method and path: an upper-case
/// method, no percent-escape, no empty, `.` or `..` segment, and first and last segments that
/// are either a route word spelled exactly or no route word at all. `path` has no query.
fn is_canonical(method: &Method, path: &str) -> bool {
    if method.as_str().bytes().any(|b| b.is_ascii_lowercase()) {
        return false;
    }
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    if rest.as_bytes().contains(&b'%') {
        return false;
    }
    // No empty, `.` or `..` segment.
    let (mut first, mut last): (&[u8], &[u8]) = (&[], &[]);
    for (i, seg) in rest.as_bytes().split(|&b| b == b'/').enumerate() {
        if seg.is_empty() || seg == b"." || seg == b".." {
            return false;
        }
        if i == 0 {
            first = seg;
        }
        last = seg;
    }
    let odd_case = |s: &[u8]| {
        ROUTE_WORDS
            .iter()
            .chain(SLACK_METHODS.iter())
            .any(|w| w.as_bytes().eq_ignore_ascii_case(s) && w.as_bytes() != s)
    };
    !odd_case(first) && !odd_case(last)
}

/// What a lenient server might make of a path that is not in canonical form: every
/// percent-escape decoded, empty and `.` segments dropped, `..` applied, route words compared
/// without case, the method upper-cased. A request that matches only this way "could mean two
/// things" (SPEC §4) and is refused rather than passed through unaudited.
pub fn classify_lenient(family: Family, method: &Method, path: &str) -> Option<Matched> {
    let path = before_query(path);
    let mut segs: Vec<String> = Vec::new();
    for raw in path.split('/') {
        let seg = decode_segment(raw);
        match seg.as_str() {
            "" | "." => {}
            ".." => {
                segs.pop();
            }
            _ => segs.push(seg),
        }
    }
    let canon = |s: &str| -> String {
        if let Some(w) = ROUTE_WORDS.iter().find(|w| w.eq_ignore_ascii_case(s)) {
            return w.to_string();
        }
        if let Some(w) = SLACK_METHODS.iter().find(|w| w.eq_ignore_ascii_case(s)) {
            return w.to_string();
        }
        // Keep ARN slashes inside one segment so the exact matcher sees one parameter.
        s.replace('/', "%2F")
    };
    let n = segs.len();
    let rebuilt: Vec<String> = segs
        .iter()
        .enumerate()
        .map(|(i, s)| {
            if i == 0 || i + 1 == n {
                canon(s)
            } else {
                s.replace('/', "%2F")
            }
        })
        .collect();
    let method = Method::from_bytes(method.as_str().to_ascii_uppercase().as_bytes()).ok()?;
    classify(family, &method, &format!("/{}", rebuilt.join("/")))
}

/// The targets an operation can change (for "could an enforcing rule apply?").
pub fn targets_of(op: Operation) -> &'static [Target] {
    use Operation::*;
    match op {
        PutRetentionSettings => &[Target::ChimeRoom, Target::ChimeConversation],
        PutAppInstanceRetentionSettings => &[Target::AppInstanceRetention],
        PutChannelExpirationSettings | CreateChannel => &[Target::ChannelExpiration],
        PutAppInstanceUserExpirationSettings | CreateAppInstanceUser => &[Target::UserExpiration],
        SlackSetCustomRetention | SlackRemoveCustomRetention => &[Target::SlackChannel],
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

/// A recognised call, with everything guardrails and the audit event need.
#[derive(Debug, Clone)]
pub struct Call {
    /// The operation.
    pub op: Operation,
    /// `requestParameters`: path parameters and body, secrets removed.
    pub request_parameters: Map<String, Value>,
    /// `resources`: `(type, id)`.
    pub resources: Vec<(String, String)>,
    /// Settings the call changes.
    pub changes: Vec<Change>,
    /// The Chime account id (Chime calls).
    pub account: Option<String>,
    /// Every ARN the call names (for guardrail scopes).
    pub arns: Vec<String>,
    /// Slack channel id.
    pub slack_channel: Option<String>,
    /// Slack token, from the header or the form (never stored; fingerprinted).
    pub slack_token: Option<String>,
    /// `x-amz-chime-bearer`.
    pub chime_bearer: Option<String>,
}

/// A call the vendor would refuse; the proxy answers it in the vendor's own shape.
#[derive(Debug, Clone)]
pub struct Rejection {
    /// One sentence for the client.
    pub message: String,
    /// What could be read of the call (for the audit event).
    pub partial: Box<Call>,
    /// The request could be read more than one way (a duplicated parameter, a compressed or
    /// mislabelled body, a number spelled as a string…): a guardrail cannot judge it.
    pub ambiguous: bool,
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

/// A call of which nothing could be read yet (its body was too large).
pub fn empty_call(op: Operation) -> Call {
    Call {
        op,
        request_parameters: Map::new(),
        resources: Vec::new(),
        changes: Vec::new(),
        account: None,
        arns: Vec::new(),
        slack_channel: None,
        slack_token: None,
        chime_bearer: None,
    }
}

/// Everything of the request `parse` looks at besides the body.
pub struct RequestParts<'a> {
    /// The request method.
    pub method: &'a Method,
    /// Raw query string, without `?`.
    pub query: Option<&'a str>,
    /// Request headers.
    pub headers: &'a HeaderMap,
}

const HIDDEN: &str = "HIDDEN_DUE_TO_SECURITY_REASONS";

/// Parses an intercepted call's body and validates it against the vendor's limits.
pub fn parse(m: &Matched, parts: &RequestParts<'_>, body: &[u8]) -> Result<Call, Rejection> {
    let op = m.op;
    let mut call = empty_call(op);
    if op.family() == Family::Slack {
        return parse_slack(call, parts, body);
    }
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
        _ => unreachable!("slack handled above"),
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
        let mut qp = Map::new();
        for (k, v) in form_urlencoded::parse(q.as_bytes()) {
            qp.insert(k.into_owned(), json!(v));
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

fn parse_slack(mut call: Call, parts: &RequestParts<'_>, body: &[u8]) -> Result<Call, Rejection> {
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

/// Settings a successful response reports, for the `previous` memory.
pub fn observed_in_response(call: &Call, status: u16, body: &Value) -> Vec<Observed> {
    if !(200..300).contains(&status) {
        return Vec::new();
    }
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
        Operation::SlackGetCustomRetention => {
            if body.get("ok") == Some(&Value::Bool(true))
                && let Some(ch) = &call.slack_channel
            {
                let v = if body.get("is_policy_enabled") == Some(&Value::Bool(false)) {
                    Some(RetentionValue::Default)
                } else {
                    body.get("duration_days")
                        .and_then(Value::as_u64)
                        .map(|d| RetentionValue::Days(d as u32))
                };
                if let Some(v) = v {
                    out.push(ob(Target::SlackChannel, ch, v));
                }
            }
        }
        _ => {
            // A change the vendor accepted: the values it asked for now hold.
            let accepted = if call.op.family() == Family::Slack {
                body.get("ok") == Some(&Value::Bool(true))
            } else {
                true
            };
            if accepted {
                for c in &call.changes {
                    let resource = resolved_resource(call, c, body);
                    out.push(ob(c.target, &resource, c.new));
                }
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

/// What the proxy reads from a vendor's answer for the outcome record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AnswerFacts {
    /// The vendor's request id (`x-amzn-RequestId`, `x-slack-req-id`).
    pub request_id: Option<String>,
    /// The vendor's error code, when the answer is an error.
    pub error_code: Option<String>,
    /// The vendor's error message, when it gives one.
    pub error_message: Option<String>,
}

/// Reads a vendor's answer: its request id and, for an error, its code and message.
pub fn read_answer(family: Family, status: u16, headers: &HeaderMap, response: &Value) -> AnswerFacts {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if family.is_aws() {
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
    } else {
        let code = if response.get("ok") == Some(&Value::Bool(false)) {
            response.get("error").and_then(Value::as_str).map(str::to_string)
        } else if status >= 400 {
            Some(status.to_string())
        } else {
            None
        };
        AnswerFacts {
            request_id: header("x-slack-req-id").map(str::to_string),
            error_code: code,
            error_message: None,
        }
    }
}

/// The CloudTrail `userIdentity.type` of a call's caller: a Slack bot or user by its token,
/// an IAM user or assumed role by its access key id.
pub fn identity_type(call: &Call, access_key_id: Option<&str>) -> &'static str {
    if let Some(tok) = &call.slack_token {
        return if tok.starts_with("xoxb") {
            "SlackBot"
        } else {
            "SlackUser"
        };
    }
    if call.op.family().is_aws() {
        return aws_sigv4::identity_type(access_key_id);
    }
    "Unknown"
}

#[cfg(test)]
mod tests {
    use super::*;

    const CH: &str = "arn%3Aaws%3Achime%3Aus-east-1%3A111122223333%3Aapp-instance%2F87654321-4321-4321-4321-210987654321%2Fchannel%2Fch-0001";
    const CH_DEC: &str =
        "arn:aws:chime:us-east-1:111122223333:app-instance/87654321-4321-4321-4321-210987654321/channel/ch-0001";

    fn run(family: Family, method: Method, path: &str, ct: &str, body: &str) -> Result<Call, Rejection> {
        let (p, q) = path.split_once('?').map(|(a, b)| (a, Some(b))).unwrap_or((path, None));
        let m = classify(family, &method, p).expect("recognised");
        let mut h = HeaderMap::new();
        if !ct.is_empty() {
            h.insert("content-type", ct.parse().unwrap());
        }
        parse(
            &m,
            &RequestParts {
                method: &method,
                query: q,
                headers: &h,
            },
            body.as_bytes(),
        )
    }

    #[test]
    fn routes() {
        assert_eq!(route_family("/api/chat.postMessage"), Some(Family::Slack));
        assert_eq!(route_family("/accounts/x/retention-settings"), Some(Family::Chime));
        assert_eq!(route_family("/channels"), Some(Family::ChimeMessaging));
        assert_eq!(route_family("/channel-flows/x"), Some(Family::ChimeMessaging));
        assert_eq!(route_family("/app-instance-users"), Some(Family::ChimeIdentity));
        assert_eq!(route_family("/app-instance-bots/x"), Some(Family::ChimeIdentity));
        assert_eq!(route_family("/"), None);
        assert_eq!(route_family("/channelsX"), None);
        assert_eq!(route_family("/apix"), None);
        assert_eq!(family_for_host("chime.us-east-1.amazonaws.com"), Some(Family::Chime));
        assert_eq!(
            family_for_host("messaging-chime.eu-central-1.amazonaws.com"),
            Some(Family::ChimeMessaging)
        );
        assert_eq!(
            family_for_host("identity-chime.us-east-1.amazonaws.com."),
            Some(Family::ChimeIdentity)
        );
        assert_eq!(family_for_host("SLACK.com"), Some(Family::Slack));
        assert_eq!(family_for_host("s3.us-east-1.amazonaws.com"), None);
        assert_eq!(
            region_of_host("chime.eu-west-2.amazonaws.com").as_deref(),
            Some("eu-west-2")
        );
    }

    #[test]
    fn classify_every_operation() {
        use Operation::*;
        let c = |f, m: Method, p: &str| classify(f, &m, p).map(|x| x.op);
        assert_eq!(
            c(Family::Chime, Method::PUT, "/accounts/a1/retention-settings"),
            Some(PutRetentionSettings)
        );
        assert_eq!(
            c(Family::Chime, Method::GET, "/accounts/a1/retention-settings"),
            Some(GetRetentionSettings)
        );
        assert_eq!(c(Family::Chime, Method::POST, "/accounts/a1/retention-settings"), None);
        assert_eq!(c(Family::Chime, Method::GET, "/accounts/a1/users"), None);
        let p = format!("/channels/{CH}/expiration-settings");
        assert_eq!(
            c(Family::ChimeMessaging, Method::PUT, &p),
            Some(PutChannelExpirationSettings)
        );
        assert_eq!(
            c(Family::ChimeMessaging, Method::POST, "/channels"),
            Some(CreateChannel)
        );
        assert_eq!(
            c(Family::ChimeMessaging, Method::GET, &format!("/channels/{CH}")),
            Some(DescribeChannel)
        );
        assert_eq!(
            c(Family::ChimeMessaging, Method::GET, &format!("/channels/{CH}/messages")),
            None
        );
        assert_eq!(c(Family::ChimeMessaging, Method::GET, "/channels"), None);
        assert_eq!(
            c(
                Family::ChimeIdentity,
                Method::PUT,
                "/app-instances/arn%3Aaws%3Achime%3Aus-east-1%3A1%3Aapp-instance%2Fx/retention-settings"
            ),
            Some(PutAppInstanceRetentionSettings)
        );
        assert_eq!(
            c(
                Family::ChimeIdentity,
                Method::GET,
                "/app-instances/arn%3Aaws%3Achime%3Aus-east-1%3A1%3Aapp-instance%2Fx/retention-settings"
            ),
            Some(GetAppInstanceRetentionSettings)
        );
        assert_eq!(
            c(
                Family::ChimeIdentity,
                Method::PUT,
                "/app-instance-users/arn%3Aaws%3Achime%3Aus-east-1%3A1%3Aapp-instance%2Fx%2Fuser%2Fu/expiration-settings"
            ),
            Some(PutAppInstanceUserExpirationSettings)
        );
        assert_eq!(
            c(Family::ChimeIdentity, Method::POST, "/app-instance-users"),
            Some(CreateAppInstanceUser)
        );
        assert_eq!(
            c(
                Family::ChimeIdentity,
                Method::GET,
                "/app-instance-users/arn%3Aaws%3Achime%3Aus-east-1%3A1%3Aapp-instance%2Fx%2Fuser%2Fu"
            ),
            Some(DescribeAppInstanceUser)
        );
        assert_eq!(
            c(
                Family::Slack,
                Method::POST,
                "/api/admin.conversations.setCustomRetention"
            ),
            Some(SlackSetCustomRetention)
        );
        assert_eq!(
            c(
                Family::Slack,
                Method::GET,
                "/api/admin.conversations.getCustomRetention"
            ),
            Some(SlackGetCustomRetention)
        );
        assert_eq!(
            c(
                Family::Slack,
                Method::POST,
                "/api/admin.conversations.removeCustomRetention"
            ),
            Some(SlackRemoveCustomRetention)
        );
        assert_eq!(c(Family::Slack, Method::POST, "/api/chat.postMessage"), None);
    }

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

    #[test]
    fn classify_any_equals_strict_then_lenient() {
        // Every path built from these pieces, with every method spelling: the fast path that
        // skips the lenient reading for canonical requests must never change the answer.
        let pieces = [
            "",
            ".",
            "..",
            "api",
            "API",
            "accounts",
            "Accounts",
            "a1",
            "%61ccounts",
            "retention-settings",
            "retention%2Dsettings",
            "RETENTION-SETTINGS",
            "channels",
            "expiration-settings",
            "app-instances",
            "app-instance-users",
            "admin.conversations.setCustomRetention",
            "admin.conversations.SETCUSTOMRETENTION",
            "arn:aws:chime:us-east-1:1:app-instance/i",
            "arn%3Aaws%3Achime%3Aus-east-1%3A1%3Aapp-instance%2Fi",
            "channel",
            "x",
        ];
        let methods = [
            Method::GET,
            Method::PUT,
            Method::POST,
            Method::from_bytes(b"put").unwrap(),
            Method::from_bytes(b"Post").unwrap(),
        ];
        let families = [
            Family::Slack,
            Family::Chime,
            Family::ChimeMessaging,
            Family::ChimeIdentity,
        ];
        let mut paths = vec![String::new(), "/".to_string(), "*".to_string()];
        for a in pieces {
            paths.push(format!("/{a}"));
            paths.push(format!("/{a}/"));
            for b in pieces {
                paths.push(format!("/{a}/{b}"));
                for c in pieces {
                    paths.push(format!("/{a}/{b}/{c}"));
                    paths.push(format!("/{a}/{b}/{c}?q=1"));
                }
            }
        }
        let mut checked = 0;
        for p in &paths {
            for m in &methods {
                for f in families {
                    let slow = classify(f, m, p)
                        .map(|x| (x, false))
                        .or_else(|| classify_lenient(f, m, p).map(|x| (x, true)));
                    assert_eq!(classify_any(f, m, p), slow, "{m} {p} ({f:?})");
                    checked += 1;
                }
            }
        }
        assert!(checked > 100_000, "{checked}");
    }

    #[test]
    fn lenient_spellings_are_found() {
        use Operation::*;
        let l = |f, m: Method, p: &str| {
            (
                classify(f, &m, p).map(|x| x.op),
                classify_lenient(f, &m, p).map(|x| x.op),
            )
        };
        for p in [
            "/accounts//a1/retention-settings",
            "/accounts/./a1/retention-settings",
            "/accounts/a1/retention-settings/",
            "/accounts/a1/Retention-Settings",
            "/%61ccounts/a1/retention%2Dsettings",
            "/x/../accounts/a1/retention-settings",
        ] {
            assert_eq!(
                l(Family::Chime, Method::PUT, p),
                (None, Some(PutRetentionSettings)),
                "{p}"
            );
        }
        assert_eq!(
            l(
                Family::Slack,
                Method::POST,
                "/api//admin.conversations.SETCUSTOMRETENTION"
            ),
            (None, Some(SlackSetCustomRetention))
        );
        let lower = Method::from_bytes(b"put").unwrap();
        assert_eq!(
            l(Family::Chime, lower, "/accounts/a1/retention-settings"),
            (None, Some(PutRetentionSettings))
        );
        let m = classify_lenient(
            Family::ChimeMessaging,
            &Method::PUT,
            &format!("/channels/{CH}/expiration-settings/"),
        )
        .unwrap();
        assert_eq!(m.path_param.as_deref(), Some(CH_DEC));
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

    /// Property: for any generated request, the recogniser either refuses it, or every
    /// lenient reading a vendor might apply (last-wins or first-wins JSON, every form value
    /// in query and body, numbers coerced from strings, floats truncated) yields exactly the
    /// value the guardrail judged.
    #[test]
    fn accepted_requests_mean_one_thing_to_every_lenient_reader() {
        struct Rng(u64);
        impl Rng {
            fn next(&mut self) -> u64 {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                self.0
            }
            fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
                xs[(self.next() % xs.len() as u64) as usize]
            }
        }
        fn lenient_days(v: &str) -> Option<i64> {
            let t = v.trim().trim_start_matches('+');
            t.parse::<i64>()
                .ok()
                .or_else(|| t.parse::<f64>().ok().filter(|f| f.is_finite()).map(|f| f as i64))
        }
        fn json_readings(body: &str, key: &str) -> Vec<Option<i64>> {
            // Every occurrence of `"key":value` at any depth is a reading some parser takes.
            let mut out = Vec::new();
            let needle = format!("\"{key}\":");
            let mut rest = body;
            while let Some(i) = rest.find(&needle) {
                rest = &rest[i + needle.len()..];
                let v: String = rest.chars().take_while(|c| *c != ',' && *c != '}').collect();
                out.push(lenient_days(v.trim().trim_matches('"')));
            }
            out
        }
        let values = [
            "30",
            "400",
            "0400",
            "+400",
            " 400",
            "4e2",
            "400.0",
            "%34%30%30",
            "",
            "abc",
            "36500",
            "365",
            "-1",
        ];
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let (mut accepted, mut refused) = (0, 0);
        for _ in 0..20_000 {
            // Slack, form or JSON, parameters spread over query and body, maybe duplicated.
            let json = rng.next().is_multiple_of(2);
            let n = 1 + rng.next() % 3;
            let mut query = Vec::new();
            let mut body = Vec::new();
            for _ in 0..n {
                let v = rng.pick(&values);
                let in_query = rng.next().is_multiple_of(4);
                if json && !in_query {
                    let quoted = rng.next().is_multiple_of(2);
                    let lit = if quoted || v.parse::<f64>().is_err() {
                        format!("\"{v}\"")
                    } else {
                        v.trim().to_string()
                    };
                    body.push(format!("\"duration_days\":{lit}"));
                } else if in_query {
                    query.push(format!("duration_days={v}"));
                } else {
                    body.push(format!("duration_days={v}"));
                }
            }
            let (ct, body_text) = if json {
                body.push("\"channel_id\":\"C1\"".into());
                ("application/json", format!("{{{}}}", body.join(",")))
            } else {
                body.push("channel_id=C1".into());
                ("application/x-www-form-urlencoded", body.join("&"))
            };
            let q = query.join("&");
            let path = if q.is_empty() {
                "/api/admin.conversations.setCustomRetention".to_string()
            } else {
                format!("/api/admin.conversations.setCustomRetention?{q}")
            };
            match run(Family::Slack, Method::POST, &path, ct, &body_text) {
                Err(_) => refused += 1,
                Ok(call) => {
                    accepted += 1;
                    let RetentionValue::Days(judged) = call.changes[0].new else {
                        panic!("not days")
                    };
                    let mut readings: Vec<Option<i64>> = form_urlencoded::parse(q.as_bytes())
                        .filter(|(k, _)| k == "duration_days")
                        .map(|(_, v)| lenient_days(&v))
                        .collect();
                    if json {
                        readings.extend(json_readings(&body_text, "duration_days"));
                    } else {
                        readings.extend(
                            form_urlencoded::parse(body_text.as_bytes())
                                .filter(|(k, _)| k == "duration_days")
                                .map(|(_, v)| lenient_days(&v)),
                        );
                    }
                    assert!(!readings.is_empty(), "{path} {body_text}");
                    for r in readings {
                        assert_eq!(
                            r,
                            Some(judged as i64),
                            "judged {judged} but a reader sees {r:?}: {path} {body_text}"
                        );
                    }
                }
            }
            // Chime: nested settings with possibly duplicated members.
            let mut members = Vec::new();
            for _ in 0..(1 + rng.next() % 2) {
                let v = rng.pick(&values);
                let lit = if rng.next().is_multiple_of(3) || v.parse::<f64>().is_err() {
                    format!("\"{v}\"")
                } else {
                    v.trim().to_string()
                };
                members.push(format!("\"RetentionDays\":{lit}"));
            }
            let body = format!(
                "{{\"RetentionSettings\":{{\"RoomRetentionSettings\":{{{}}}}}}}",
                members.join(",")
            );
            if let Ok(call) = run(
                Family::Chime,
                Method::PUT,
                "/accounts/a/retention-settings",
                "application/json",
                &body,
            ) {
                let RetentionValue::Days(judged) = call.changes[0].new else {
                    panic!("not days: {body}")
                };
                for r in json_readings(&body, "RetentionDays") {
                    assert_eq!(r, Some(judged as i64), "{body}");
                }
            }
        }
        assert!(
            accepted > 1000 && refused > 1000,
            "generator too narrow: {accepted} accepted, {refused} refused"
        );
    }
}
