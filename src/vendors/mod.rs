//! Recognition: which SPEC §1 call a request is, and what it asks for. `classify` looks only
//! at the method and path (so pass-through traffic is never buffered); `parse` reads the body
//! of an intercepted call once, strictly, and yields the typed `Call` that guardrails and the
//! audit event are built from. Values the vendor would reject are a `Rejection`.
//!
//! This file is the vendor-neutral frame: the families and operations, the types every layer
//! shares, the lenient (non-canonical) reading of a path, and the dispatchers that look at the
//! family and ask the vendor's own file. Each vendor owns its knowledge in one file — hosts,
//! paths, parsing, what its answers report, how its answers and errors read, the shape of the
//! proxy's own refusals: `chime.rs` for Amazon Chime and the Chime SDK, `slack.rs` for Slack.

use http::{HeaderMap, Method, Response};
use serde_json::{Map, Value};

pub mod aws_endpoints;
pub mod aws_sigv4;
mod chime;
pub mod errors;
pub mod sigv4_verify;
mod slack;
pub mod strict_json;

#[cfg(test)]
mod spelling_props;

pub use chime::{AWS_MAX_DAYS, arn_account, region_of_host, resolved_resource, valid_arn};
pub use slack::SLACK_MAX_DAYS;

use crate::http::body::ProxyBody;
use crate::retention::{Change, Observed, Target};
use errors::VendorError;

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
            Family::Slack => slack::HOST,
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
    slack::route_family(first, path).or_else(|| chime::route_family(first, path))
}

/// Forward-proxy routing: the family a vendor API host belongs to, if it is one we audit. The
/// one place that decides what a vendor API host is: CONNECT interception and absolute-form
/// auditing both ask it. `host` in any case, with or without a trailing `.`, no port.
/// Allocation-free: it runs for every forward request.
pub fn family_for_host(host: &str) -> Option<Family> {
    slack::family_for_host(host).or_else(|| chime::family_for_host(host))
}

/// The `forward.allow_hosts` default: every host the AWS SDKs pick for the Chime services, in
/// every partition (a `*.` pattern per partition DNS suffix), and Slack's Web API host.
pub fn default_allow_hosts() -> Vec<String> {
    aws_endpoints::PARTITION_SUFFIXES
        .iter()
        .map(|s| format!("*.{s}"))
        .chain(std::iter::once(slack::HOST.to_string()))
        .collect()
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
            Operation::SlackSetCustomRetention => slack::SET_CUSTOM_RETENTION,
            Operation::SlackGetCustomRetention => slack::GET_CUSTOM_RETENTION,
            Operation::SlackRemoveCustomRetention => slack::REMOVE_CUSTOM_RETENTION,
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

/// One path segment with every percent-escape decoded (invalid UTF-8 replaced).
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
    match family {
        Family::Chime => chime::classify_account(method, rest),
        Family::ChimeMessaging => chime::classify_messaging(method, rest),
        Family::ChimeIdentity => chime::classify_identity(method, rest),
        Family::Slack => slack::classify(method, rest),
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

/// Route words (fixed path words and Slack method names) the lenient reading compares
/// without case, one list per vendor.
const ROUTE_WORDS: [&[&str]; 2] = [&chime::ROUTE_WORDS, &slack::ROUTE_WORDS];

/// The route word `s` spells, compared without case. No two route words differ only in case.
fn route_word(s: &[u8]) -> Option<&'static str> {
    ROUTE_WORDS
        .iter()
        .flat_map(|words| words.iter())
        .find(|w| w.as_bytes().eq_ignore_ascii_case(s))
        .copied()
}

/// Bytes no canonical path holds because some server drops, splits or decodes at them:
/// percent-escapes, matrix parameters (`;`), backslashes, whitespace, control bytes, and
/// anything not ASCII (which a server may trim as Unicode whitespace).
fn is_odd_byte(b: u8) -> bool {
    matches!(b, b'%' | b';' | b'\\') || b <= b' ' || b >= 0x7f
}

/// True when `classify_lenient` would rebuild exactly this method and path: an upper-case
/// method, no [odd byte](is_odd_byte), no empty, `.` or `..` segment, and first and last
/// segments that are either a route word spelled exactly or no route word at all. `path` has
/// no query.
fn is_canonical(method: &Method, path: &str) -> bool {
    if method.as_str().bytes().any(|b| b.is_ascii_lowercase()) {
        return false;
    }
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    if rest.bytes().any(is_odd_byte) {
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
    let odd_case = |s: &[u8]| route_word(s).is_some_and(|w| w.as_bytes() != s);
    !odd_case(first) && !odd_case(last)
}

/// Most rounds of percent-decoding a lenient reader is assumed to apply (`%252F` is `%2F`
/// after one, `/` after two). Bounded: each round reads the whole path again.
const DECODE_ROUNDS: usize = 8;

/// `s` percent-decoded until nothing changes (at most [`DECODE_ROUNDS`] rounds, byte-wise, so
/// an escape split over two rounds still decodes), invalid UTF-8 replaced.
fn decode_fully(s: &str) -> String {
    let mut out: Vec<u8> = s.as_bytes().to_vec();
    for _ in 0..DECODE_ROUNDS {
        if !out.contains(&b'%') {
            break;
        }
        let next: Vec<u8> = percent_encoding::percent_decode(&out).collect();
        if next == out {
            break;
        }
        out = next;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What a lenient server keeps of one decoded segment: the part before a matrix parameter
/// (`;…`) or a decoded `?` or `#` (read again as a query or fragment), without surrounding
/// whitespace or control characters (`%20`, `%09`, `%00`, …).
fn lenient_word(seg: &str) -> &str {
    up_to(seg, |b| matches!(b, b';' | b'?' | b'#')).trim_matches(|c: char| c.is_whitespace() || c.is_control())
}

/// What a lenient server might make of a path that is not in canonical form: every
/// percent-escape decoded (repeatedly), matrix parameters and surrounding whitespace and
/// control bytes dropped from each segment, empty and `.` segments dropped, `..` applied,
/// route words compared without case, the method upper-cased; an encoded slash read both as
/// part of its segment and as a separator (so is a backslash). A request that matches only
/// this way "could mean two things" (SPEC §4) and is refused rather than passed through
/// unaudited.
pub fn classify_lenient(family: Family, method: &Method, path: &str) -> Option<Matched> {
    let path = before_query(path);
    let method = Method::from_bytes(method.as_str().to_ascii_uppercase().as_bytes()).ok()?;
    // Encoded slashes kept inside their segment (an ARN's), then read as separators.
    let kept: Vec<String> = path.split('/').map(decode_fully).collect();
    let split: Vec<String> = decode_fully(path).split(['/', '\\']).map(str::to_string).collect();
    [kept, split]
        .iter()
        .find_map(|segs| classify_segments(family, &method, segs))
}

/// [`classify_lenient`] of one reading of the path: its decoded segments, in order.
fn classify_segments(family: Family, method: &Method, decoded: &[String]) -> Option<Matched> {
    let mut segs: Vec<&str> = Vec::with_capacity(decoded.len());
    for seg in decoded {
        match lenient_word(seg) {
            "" | "." => {}
            ".." => {
                segs.pop();
            }
            w => segs.push(w),
        }
    }
    let canon = |s: &str| -> String {
        if let Some(w) = route_word(s.as_bytes()) {
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
    // Not `classify`: a decoded `?` is part of a segment here, not the start of a query.
    classify_path(family, method, &format!("/{}", rebuilt.join("/")))
}

/// The targets an operation can change (for "could an enforcing rule apply?").
pub fn targets_of(op: Operation) -> &'static [Target] {
    match op.family() {
        Family::Chime | Family::ChimeMessaging | Family::ChimeIdentity => chime::targets_of(op),
        Family::Slack => slack::targets_of(op),
    }
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

/// Parses an intercepted call's body and validates it against the vendor's limits.
pub fn parse(m: &Matched, parts: &RequestParts<'_>, body: &[u8]) -> Result<Call, Rejection> {
    let call = empty_call(m.op);
    match m.op.family() {
        Family::Chime | Family::ChimeMessaging | Family::ChimeIdentity => chime::parse(call, m, parts, body),
        Family::Slack => slack::parse(call, parts, body),
    }
}

/// Settings a successful response reports, for the `previous` memory.
pub fn observed_in_response(call: &Call, status: u16, body: &Value) -> Vec<Observed> {
    if !(200..300).contains(&status) {
        return Vec::new();
    }
    match call.op.family() {
        Family::Chime | Family::ChimeMessaging | Family::ChimeIdentity => chime::observed(call, body),
        Family::Slack => slack::observed(call, body),
    }
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
    match family {
        Family::Chime | Family::ChimeMessaging | Family::ChimeIdentity => chime::read_answer(status, headers, response),
        Family::Slack => slack::read_answer(status, headers, response),
    }
}

/// The CloudTrail `userIdentity.type` of a call's caller: a Slack bot or user by its token,
/// an IAM user or assumed role by its access key id.
pub fn identity_type(call: &Call, access_key_id: Option<&str>) -> &'static str {
    if let Some(kind) = slack::identity_type(call) {
        return kind;
    }
    if call.op.family().is_aws() {
        return aws_sigv4::identity_type(access_key_id);
    }
    "Unknown"
}

impl VendorError {
    /// Renders the vendor-shaped response; `request_id` becomes `x-amzn-RequestId` (AWS) or
    /// `x-slack-req-id` (Slack).
    pub fn response(&self, family: Family, request_id: &str) -> Response<ProxyBody> {
        match family {
            Family::Chime | Family::ChimeMessaging | Family::ChimeIdentity => chime::error_response(self, request_id),
            Family::Slack => slack::error_response(self, request_id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retention::RetentionValue;

    pub(super) const CH: &str = "arn%3Aaws%3Achime%3Aus-east-1%3A111122223333%3Aapp-instance%2F87654321-4321-4321-4321-210987654321%2Fchannel%2Fch-0001";
    pub(super) const CH_DEC: &str =
        "arn:aws:chime:us-east-1:111122223333:app-instance/87654321-4321-4321-4321-210987654321/channel/ch-0001";

    /// Classifies and parses one request as the proxy does (also used by the vendor files'
    /// tests); `path` may carry a query.
    pub(super) fn run(family: Family, method: Method, path: &str, ct: &str, body: &str) -> Result<Call, Rejection> {
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

    /// Every endpoint boto3 picks for chime, chime-sdk-messaging and chime-sdk-identity in
    /// us-east-1, us-west-2, eu-central-1, ap-southeast-1 and us-gov-west-1, with FIPS and
    /// dual-stack each on and off (`client.meta.endpoint_url`; the 60 combinations name 48
    /// hosts, Amazon Chime's being global outside GovCloud).
    const BOTO3_ENDPOINTS: [(&str, Family); 48] = [
        ("chime.us-east-1.amazonaws.com", Family::Chime),
        ("chime.aws-global.api.aws", Family::Chime),
        ("chime-fips.aws-global.amazonaws.com", Family::Chime),
        ("chime-fips.aws-global.api.aws", Family::Chime),
        ("chime.us-gov-west-1.amazonaws.com", Family::Chime),
        ("chime.us-gov-west-1.api.aws", Family::Chime),
        ("chime-fips.us-gov-west-1.amazonaws.com", Family::Chime),
        ("chime-fips.us-gov-west-1.api.aws", Family::Chime),
        ("messaging-chime.us-east-1.amazonaws.com", Family::ChimeMessaging),
        ("messaging-chime.us-east-1.api.aws", Family::ChimeMessaging),
        ("messaging-chime-fips.us-east-1.amazonaws.com", Family::ChimeMessaging),
        ("messaging-chime-fips.us-east-1.api.aws", Family::ChimeMessaging),
        ("messaging-chime.us-west-2.amazonaws.com", Family::ChimeMessaging),
        ("messaging-chime.us-west-2.api.aws", Family::ChimeMessaging),
        ("messaging-chime-fips.us-west-2.amazonaws.com", Family::ChimeMessaging),
        ("messaging-chime-fips.us-west-2.api.aws", Family::ChimeMessaging),
        ("messaging-chime.eu-central-1.amazonaws.com", Family::ChimeMessaging),
        ("messaging-chime.eu-central-1.api.aws", Family::ChimeMessaging),
        (
            "messaging-chime-fips.eu-central-1.amazonaws.com",
            Family::ChimeMessaging,
        ),
        ("messaging-chime-fips.eu-central-1.api.aws", Family::ChimeMessaging),
        ("messaging-chime.ap-southeast-1.amazonaws.com", Family::ChimeMessaging),
        ("messaging-chime.ap-southeast-1.api.aws", Family::ChimeMessaging),
        (
            "messaging-chime-fips.ap-southeast-1.amazonaws.com",
            Family::ChimeMessaging,
        ),
        ("messaging-chime-fips.ap-southeast-1.api.aws", Family::ChimeMessaging),
        ("messaging-chime.us-gov-west-1.amazonaws.com", Family::ChimeMessaging),
        ("messaging-chime.us-gov-west-1.api.aws", Family::ChimeMessaging),
        (
            "messaging-chime-fips.us-gov-west-1.amazonaws.com",
            Family::ChimeMessaging,
        ),
        ("messaging-chime-fips.us-gov-west-1.api.aws", Family::ChimeMessaging),
        ("identity-chime.us-east-1.amazonaws.com", Family::ChimeIdentity),
        ("identity-chime.us-east-1.api.aws", Family::ChimeIdentity),
        ("identity-chime-fips.us-east-1.amazonaws.com", Family::ChimeIdentity),
        ("identity-chime-fips.us-east-1.api.aws", Family::ChimeIdentity),
        ("identity-chime.us-west-2.amazonaws.com", Family::ChimeIdentity),
        ("identity-chime.us-west-2.api.aws", Family::ChimeIdentity),
        ("identity-chime-fips.us-west-2.amazonaws.com", Family::ChimeIdentity),
        ("identity-chime-fips.us-west-2.api.aws", Family::ChimeIdentity),
        ("identity-chime.eu-central-1.amazonaws.com", Family::ChimeIdentity),
        ("identity-chime.eu-central-1.api.aws", Family::ChimeIdentity),
        ("identity-chime-fips.eu-central-1.amazonaws.com", Family::ChimeIdentity),
        ("identity-chime-fips.eu-central-1.api.aws", Family::ChimeIdentity),
        ("identity-chime.ap-southeast-1.amazonaws.com", Family::ChimeIdentity),
        ("identity-chime.ap-southeast-1.api.aws", Family::ChimeIdentity),
        (
            "identity-chime-fips.ap-southeast-1.amazonaws.com",
            Family::ChimeIdentity,
        ),
        ("identity-chime-fips.ap-southeast-1.api.aws", Family::ChimeIdentity),
        ("identity-chime.us-gov-west-1.amazonaws.com", Family::ChimeIdentity),
        ("identity-chime.us-gov-west-1.api.aws", Family::ChimeIdentity),
        ("identity-chime-fips.us-gov-west-1.amazonaws.com", Family::ChimeIdentity),
        ("identity-chime-fips.us-gov-west-1.api.aws", Family::ChimeIdentity),
    ];

    #[test]
    fn every_endpoint_the_sdks_pick_is_a_vendor_host() {
        for (host, family) in BOTO3_ENDPOINTS {
            assert_eq!(family_for_host(host), Some(family), "{host}");
            assert_eq!(family_for_host(&host.to_ascii_uppercase()), Some(family), "{host}");
            assert_eq!(family_for_host(&format!("{host}.")), Some(family), "{host}.");
            let region = region_of_host(host).unwrap_or_default();
            assert!(
                [
                    "us-east-1",
                    "us-west-2",
                    "eu-central-1",
                    "ap-southeast-1",
                    "us-gov-west-1"
                ]
                .contains(&region.as_str()),
                "{host}: {region}"
            );
        }
    }

    #[test]
    fn other_partitions_vpc_endpoints_and_slack_hosts_are_vendor_hosts() {
        for (host, family) in [
            ("chime.cn-north-1.amazonaws.com.cn", Family::Chime),
            ("chime-fips.cn-north-1.api.amazonwebservices.com.cn", Family::Chime),
            ("messaging-chime.eusc-de-east-1.amazonaws.eu", Family::ChimeMessaging),
            (
                "messaging-chime-fips.eusc-de-east-1.api.amazonwebservices.eu",
                Family::ChimeMessaging,
            ),
            ("identity-chime.us-iso-east-1.c2s.ic.gov", Family::ChimeIdentity),
            ("identity-chime.us-iso-east-1.api.aws.ic.gov", Family::ChimeIdentity),
            (
                "identity-chime-fips.us-isob-east-1.sc2s.sgov.gov",
                Family::ChimeIdentity,
            ),
            ("messaging-chime.us-isob-east-1.api.aws.scloud", Family::ChimeMessaging),
            ("chime.eu-isoe-west-1.cloud.adc-e.uk", Family::Chime),
            ("chime.eu-isoe-west-1.api.cloud-aws.adc-e.uk", Family::Chime),
            ("chime.us-isof-south-1.csp.hci.ic.gov", Family::Chime),
            ("chime.us-isof-south-1.api.aws.hci.ic.gov", Family::Chime),
            ("messaging-chime.mx-central-1.amazonaws.com", Family::ChimeMessaging),
            (
                "vpce-0123456789abcdef0-abcdefgh.messaging-chime.us-east-1.vpce.amazonaws.com",
                Family::ChimeMessaging,
            ),
            (
                "vpce-0123456789abcdef0-abcdefgh-us-east-1a.identity-chime.us-east-1.vpce.amazonaws.com",
                Family::ChimeIdentity,
            ),
            ("slack.com", Family::Slack),
            ("acme.slack.com", Family::Slack),
            ("acme.enterprise.slack.com", Family::Slack),
            ("ACME.Enterprise.Slack.COM.", Family::Slack),
            ("slack-gov.com", Family::Slack),
            ("acme.slack-gov.com", Family::Slack),
        ] {
            assert_eq!(family_for_host(host), Some(family), "{host}");
        }
        for host in [
            "s3.us-east-1.amazonaws.com",
            "meetings-chime.us-east-1.amazonaws.com",
            "chime.amazonaws.com",
            "x.chime.us-east-1.amazonaws.com",
            "chime.us-east-1.amazonaws.com.evil.example",
            "evilslack.com",
            ".slack.com",
            "slack.com.evil.example",
            "slack-gov.com.evil.example",
            "notslack-gov.com",
            "",
        ] {
            assert_eq!(family_for_host(host), None, "{host}");
        }
        assert_eq!(
            region_of_host("chime-fips.aws-global.api.aws").as_deref(),
            Some("us-east-1")
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
    fn an_id_a_lenient_server_would_trim_is_an_odd_path() {
        for p in [
            "/accounts/acct-1%20/retention-settings",
            "/accounts/%09acct-1/retention-settings",
            "/accounts/acct-1%00/retention-settings",
            "/accounts/acct-1;x/retention-settings",
        ] {
            let (m, odd) = classify_any(Family::Chime, &Method::PUT, p).expect(p);
            assert!(odd, "{p}");
            assert_eq!(m.path_param.as_deref(), Some("acct-1"), "{p}");
        }
        // A blank id is read strictly, so the vendor's own refusal of it is what the client gets.
        let (m, odd) = classify_any(Family::Chime, &Method::PUT, "/accounts/%20/retention-settings").unwrap();
        assert!(!odd);
        assert_eq!(m.path_param.as_deref(), Some(" "));
        // An id with a space inside it is one id either way.
        let (m, odd) = classify_any(Family::Chime, &Method::PUT, "/accounts/a%20b/retention-settings").unwrap();
        assert!(!odd);
        assert_eq!(m.path_param.as_deref(), Some("a b"));
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
