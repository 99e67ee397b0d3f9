//! An in-process fake of the vendor endpoints (Amazon Chime, Chime SDK messaging and identity,
//! Slack), merged on one plain-HTTP/1.1 listener on 127.0.0.1 and routed by path.
//!
//! - Every AWS request (paths under `/accounts`, `/channels`, `/channel-flows`,
//!   `/app-instances`, `/app-instance-users`, `/app-instance-bots`) is SigV4-verified with
//!   [`sigv4::verify_with_body_hash`] against `FakeVendorOpts::secrets`; a failure answers
//!   `403` `x-amzn-ErrorType: InvalidSignatureException` `{"message": "..."}`.
//! - Answers use the shapes of the captured wire exchanges, with `x-amzn-RequestId` on AWS
//!   answers and `x-slack-req-id` on Slack answers.
//! - The fake is stateful: retention/expiration settings it is given are returned by the
//!   matching Get/Describe call (see [`Resource`] and [`FakeVendor::state`]).
//! - Anything else is a pass-through target: `200` echoing the request body (bodies over
//!   [`BODY_KEEP_LIMIT`] are only counted and hashed, and answered with a JSON summary), except
//!   `GET /stream-bytes/{n}` which streams `n` bytes of [`pattern_bytes`].
//! - Slack's `auth.test` answers who a token belongs to, as Slack does: an identity derived
//!   from the token unless [`FakeVendor::set_auth_test`] says otherwise (another identity, an
//!   `ok:false` error, a slow answer).
//! - Every request is recorded as a [`Received`].

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};

use super::sigv4;

/// Bodies larger than this are not kept in [`Received::body`]; only their length and SHA-256.
pub const BODY_KEEP_LIMIT: u64 = 1024 * 1024;

/// The AWS documentation's example access key, used by the wire captures.
pub const EXAMPLE_ACCESS_KEY_ID: &str = "AKIAIOSFODNN7EXAMPLE";
/// The AWS documentation's example secret key, used by the wire captures.
pub const EXAMPLE_SECRET_ACCESS_KEY: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

/// Client signing parameters for a Chime call in us-east-1 with the AWS example key.
pub fn example_params(amz_date: &str) -> crate::support::sigv4::SigningParams<'_> {
    crate::support::sigv4::SigningParams {
        access_key_id: EXAMPLE_ACCESS_KEY_ID,
        secret_access_key: EXAMPLE_SECRET_ACCESS_KEY,
        session_token: None,
        region: "us-east-1",
        service: "chime",
        amz_date,
    }
}

/// The `InitiateDeletionTimestamp` the Chime SDK identity captures carry (epoch seconds).
const SDK_DELETION_TIMESTAMP: i64 = 1_795_300_000;

type RespBody = BoxBody<Bytes, Infallible>;

/// How a [`FakeVendor`] behaves.
#[derive(Debug, Clone, Default)]
pub struct FakeVendorOpts {
    /// AWS access key id -> secret access key, used to verify SigV4 signatures.
    pub secrets: HashMap<String, String>,
    /// Answer every request (whose signature, if AWS, verified) with this status and body
    /// instead of the normal answer; state is not changed. AWS answers also get an
    /// `x-amzn-ErrorType` derived from the status (400 BadRequestException, 403
    /// ForbiddenException, 404 NotFoundException, 429 ThrottledClientException, 500
    /// ServiceFailureException, 503 ServiceUnavailableException); a 429 Slack answer gets
    /// `Retry-After: 1`.
    pub status_override: Option<(u16, String)>,
    /// Wait this long (after the request is fully read and recorded) before answering.
    pub delay: Option<Duration>,
    /// Answer Chime `PutRetentionSettings` with `204` and no body (the modelled response code)
    /// instead of `200` echoing the settings.
    pub put_retention_204: bool,
    /// Slack tokens accepted; empty accepts any token (a missing token is always `not_authed`,
    /// except for `api.test`).
    pub slack_tokens: Vec<String>,
}

impl FakeVendorOpts {
    /// Options that know the example key pair used by the wire captures.
    pub fn with_example_key() -> Self {
        Self::default().secret(EXAMPLE_ACCESS_KEY_ID, EXAMPLE_SECRET_ACCESS_KEY)
    }

    /// Adds one access key id / secret pair.
    pub fn secret(mut self, access_key_id: &str, secret_access_key: &str) -> Self {
        self.secrets
            .insert(access_key_id.to_string(), secret_access_key.to_string());
        self
    }
}

/// Which vendor API a request was routed to (by path).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// `/accounts/...` (`chime.amazonaws.com`).
    Chime,
    /// `/channels...`, `/channel-flows...` (`messaging-chime.amazonaws.com`).
    ChimeMessaging,
    /// `/app-instances...`, `/app-instance-users...`, `/app-instance-bots...`.
    ChimeIdentity,
    /// `/api/...` (`slack.com`).
    Slack,
    /// Anything else.
    PassThrough,
}

impl Family {
    pub fn is_aws(self) -> bool {
        matches!(self, Family::Chime | Family::ChimeMessaging | Family::ChimeIdentity)
    }

    fn of(path: &str) -> Family {
        let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
        match first {
            "accounts" => Family::Chime,
            "channels" | "channel-flows" => Family::ChimeMessaging,
            "app-instances" | "app-instance-users" | "app-instance-bots" => Family::ChimeIdentity,
            "api" => Family::Slack,
            _ => Family::PassThrough,
        }
    }
}

/// A resource whose retention the fake remembers. ARNs are stored decoded.
///
/// State values: `ChimeAccount` -> the `RetentionSettings` object; `Channel` -> the `Channel`
/// object `DescribeChannel` returns; `AppInstance` -> the `AppInstanceRetentionSettings`
/// object; `AppInstanceUser` -> the `AppInstanceUser` object `DescribeAppInstanceUser`
/// returns; `SlackChannel` -> the custom retention in days (a JSON number).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Resource {
    ChimeAccount(String),
    Channel(String),
    AppInstance(String),
    AppInstanceUser(String),
    SlackChannel(String),
}

/// The path of Slack's `auth.test`.
pub const AUTH_TEST_PATH: &str = "/api/auth.test";

/// Who a Slack token belongs to, as `auth.test` answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlackUser {
    /// `user_id`.
    pub user_id: String,
    /// `team_id`.
    pub team_id: String,
    /// `enterprise_id`; `None` leaves the field out (a workspace outside Enterprise Grid).
    pub enterprise_id: Option<String>,
}

impl SlackUser {
    /// The identity the fake gives `token` unless told otherwise: ids derived from the token,
    /// so different tokens belong to different users of the same team and enterprise.
    pub fn of_token(token: &str) -> SlackUser {
        let h = hex::encode_upper(&Sha256::digest(token.as_bytes())[..5]);
        SlackUser {
            user_id: format!("U{h}"),
            team_id: "T0FAKETEAM".into(),
            enterprise_id: Some("E0FAKEGRID".into()),
        }
    }
}

/// How the fake answers `auth.test` for one token ([`FakeVendor::set_auth_test`]).
#[derive(Debug, Clone)]
pub struct AuthTestAnswer {
    /// The identity, or the `error` of an `{"ok":false}` answer (`invalid_auth`).
    pub result: Result<SlackUser, String>,
    /// Wait this long before answering.
    pub delay: Option<Duration>,
}

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    /// The request target, raw, as on the wire (percent-encoding untouched).
    pub path_and_query: String,
    /// The whole request target as received (differs from `path_and_query` only for an
    /// absolute-form target such as `http://host/path`).
    pub target: String,
    pub headers: HeaderMap,
    /// The body; empty when it was larger than [`BODY_KEEP_LIMIT`] (see `body_truncated`).
    pub body: Bytes,
    pub body_len: u64,
    /// Hex SHA-256 of the whole body.
    pub body_sha256: String,
    /// The body was too large to keep; only `body_len` and `body_sha256` describe it.
    pub body_truncated: bool,
    /// Reading the body failed part-way (for example the client went away).
    pub body_error: Option<String>,
    /// SigV4 verification result: always `Some` for AWS paths; `Some` for other paths only
    /// when they carry an `AWS4-HMAC-SHA256` Authorization (recorded, not enforced).
    pub sig: Option<Result<sigv4::VerifiedSig, String>>,
    /// Slack token from `Authorization: Bearer`, else a `token` form/query field.
    pub slack_token: Option<String>,
    pub family: Family,
    pub peer: SocketAddr,
    /// Status the fake answered with.
    pub response_status: u16,
    /// The `x-amzn-RequestId` / `x-slack-req-id` the fake answered with.
    pub request_id: Option<String>,
}

impl Received {
    /// The body as UTF-8 (lossy).
    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON (`Value::Null` if it is not JSON).
    pub fn body_json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// A header value as a string, if present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Whether the SigV4 signature verified.
    pub fn sig_ok(&self) -> bool {
        matches!(self.sig, Some(Ok(_)))
    }
}

#[derive(Default)]
struct State {
    resources: HashMap<Resource, Value>,
    /// CreateChannel idempotency: ClientRequestToken -> channel ARN.
    channel_tokens: HashMap<String, String>,
    next_channel: u32,
}

struct Behaviour {
    status_override: Option<(u16, String)>,
    delay: Option<Duration>,
}

struct Inner {
    secrets: HashMap<String, String>,
    put_retention_204: bool,
    slack_tokens: Vec<String>,
    behaviour: Mutex<Behaviour>,
    /// `auth.test` answers by token (others get [`SlackUser::of_token`]).
    auth_tests: Mutex<HashMap<String, AuthTestAnswer>>,
    received: Mutex<Vec<Received>>,
    state: Mutex<State>,
    notify: Notify,
}

/// Locks a mutex, ignoring poisoning (a panicking test thread must not hide the records).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The running fake vendor. Dropping it stops the listener and every open connection.
pub struct FakeVendor {
    addr: SocketAddr,
    inner: Arc<Inner>,
    accept: JoinHandle<()>,
}

impl Drop for FakeVendor {
    fn drop(&mut self) {
        // Aborting the accept task drops its JoinSet, which aborts every connection task.
        self.accept.abort();
    }
}

impl FakeVendor {
    /// Binds 127.0.0.1:0 and starts serving. Panics if it cannot bind.
    pub async fn start(opts: FakeVendorOpts) -> FakeVendor {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("fake vendor: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("fake vendor: local_addr");
        let inner = Arc::new(Inner {
            secrets: opts.secrets,
            put_retention_204: opts.put_retention_204,
            slack_tokens: opts.slack_tokens,
            behaviour: Mutex::new(Behaviour {
                status_override: opts.status_override,
                delay: opts.delay,
            }),
            auth_tests: Mutex::new(HashMap::new()),
            received: Mutex::new(Vec::new()),
            state: Mutex::new(State::default()),
            notify: Notify::new(),
        });
        let accept = tokio::spawn(accept_loop(listener, inner.clone()));
        FakeVendor { addr, inner, accept }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `127.0.0.1:PORT`, as a `Host` header value.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Every request received so far, in arrival order (of complete bodies).
    pub fn received(&self) -> Vec<Received> {
        lock(&self.inner.received).clone()
    }

    /// The most recent request, if any.
    pub fn last(&self) -> Option<Received> {
        lock(&self.inner.received).last().cloned()
    }

    /// How many requests were received.
    pub fn count(&self) -> usize {
        lock(&self.inner.received).len()
    }

    /// Forgets the recorded requests (not the resource state).
    pub fn clear_received(&self) {
        lock(&self.inner.received).clear();
    }

    /// Waits until at least `n` requests have been received; `false` on timeout.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.inner.notify.notified();
            tokio::pin!(notified);
            // Register before checking, so a request recorded in between is not missed.
            notified.as_mut().enable();
            if self.count() >= n {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.count() >= n;
            }
        }
    }

    /// What the fake currently remembers for a resource (see [`Resource`] for the shapes).
    pub fn state(&self, resource: &Resource) -> Option<Value> {
        lock(&self.inner.state).resources.get(resource).cloned()
    }

    /// Seeds or replaces what the fake remembers for a resource.
    pub fn set_state(&self, resource: Resource, value: Value) {
        lock(&self.inner.state).resources.insert(resource, value);
    }

    /// Forgets a resource.
    pub fn remove_state(&self, resource: &Resource) {
        lock(&self.inner.state).resources.remove(resource);
    }

    /// Changes the forced answer for subsequent requests.
    pub fn set_status_override(&self, status_override: Option<(u16, String)>) {
        lock(&self.inner.behaviour).status_override = status_override;
    }

    /// How `auth.test` answers for `token` from now on.
    pub fn set_auth_test(&self, token: &str, answer: AuthTestAnswer) {
        lock(&self.inner.auth_tests).insert(token.to_string(), answer);
    }

    /// How many `auth.test` requests were received.
    pub fn auth_test_count(&self) -> usize {
        lock(&self.inner.received)
            .iter()
            .filter(|r| r.path_and_query.split('?').next() == Some(AUTH_TEST_PATH))
            .count()
    }

    /// Changes the answer delay for subsequent requests.
    pub fn set_delay(&self, delay: Option<Duration>) {
        lock(&self.inner.behaviour).delay = delay;
    }
}

async fn accept_loop(listener: TcpListener, inner: Arc<Inner>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, peer)) = accepted else { continue };
                let inner = inner.clone();
                conns.spawn(serve_connection(stream, peer, inner));
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

async fn serve_connection(stream: TcpStream, peer: SocketAddr, inner: Arc<Inner>) {
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let inner = inner.clone();
        async move { Ok::<_, Infallible>(handle(inner, peer, req).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), svc)
        .await;
}

/// A response the fake decided on, before it is turned into a hyper response.
struct Answer {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: RespBody,
    request_id: Option<String>,
}

fn full(body: impl Into<Bytes>) -> RespBody {
    Full::new(body.into()).boxed()
}

fn new_request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn aws_answer(status: u16, body: Option<Value>) -> Answer {
    let request_id = new_request_id();
    Answer {
        status,
        headers: vec![
            ("content-type", "application/json".to_string()),
            ("x-amzn-RequestId", request_id.clone()),
        ],
        body: full(body.map(|b| b.to_string()).unwrap_or_default()),
        request_id: Some(request_id),
    }
}

fn aws_error(status: u16, error_type: &str, body: Value) -> Answer {
    let mut a = aws_answer(status, Some(body));
    a.headers.push(("x-amzn-ErrorType", error_type.to_string()));
    a
}

/// The Chime REST error shape: `{"Code": "BadRequest", "Message": ...}`.
fn aws_modeled_error(status: u16, code: &str, message: &str) -> Answer {
    aws_error(
        status,
        &format!("{code}Exception"),
        json!({"Code": code, "Message": message}),
    )
}

fn bad_request(message: &str) -> Answer {
    aws_modeled_error(400, "BadRequest", message)
}

fn not_found(message: &str) -> Answer {
    aws_modeled_error(404, "NotFound", message)
}

fn slack_answer(status: u16, body: Value) -> Answer {
    let request_id = hex::encode(uuid::Uuid::new_v4().as_bytes());
    Answer {
        status,
        headers: vec![
            ("content-type", "application/json; charset=utf-8".to_string()),
            ("x-slack-req-id", request_id.clone()),
        ],
        body: full(body.to_string()),
        request_id: Some(request_id),
    }
}

fn error_type_for_status(status: u16) -> Option<&'static str> {
    Some(match status {
        400 => "BadRequestException",
        403 => "ForbiddenException",
        404 => "NotFoundException",
        429 => "ThrottledClientException",
        500 => "ServiceFailureException",
        503 => "ServiceUnavailableException",
        _ => return None,
    })
}

struct ReadBody {
    kept: Vec<u8>,
    len: u64,
    sha256: String,
    truncated: bool,
    error: Option<String>,
}

/// Reads the body frame by frame, hashing everything and keeping at most [`BODY_KEEP_LIMIT`].
async fn read_body(mut body: Incoming) -> ReadBody {
    let mut hasher = Sha256::new();
    let mut kept = Vec::new();
    let mut len: u64 = 0;
    let mut truncated = false;
    let mut error = None;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    hasher.update(&data);
                    len += data.len() as u64;
                    if len > BODY_KEEP_LIMIT {
                        if !truncated {
                            truncated = true;
                            kept = Vec::new();
                        }
                    } else {
                        kept.extend_from_slice(&data);
                    }
                }
            }
            Err(e) => {
                error = Some(e.to_string());
                break;
            }
        }
    }
    ReadBody {
        kept,
        len,
        sha256: hex::encode(hasher.finalize()),
        truncated,
        error,
    }
}

fn decode_segment(segment: &str) -> String {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8_lossy()
        .into_owned()
}

async fn handle(inner: Arc<Inner>, peer: SocketAddr, req: Request<Incoming>) -> Response<RespBody> {
    let (parts, body) = req.into_parts();
    let method = parts.method.as_str().to_string();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str().to_string())
        .unwrap_or_else(|| "/".to_string());
    let target = parts.uri.to_string();
    let headers = parts.headers;
    let mut read = read_body(body).await;
    let body = Bytes::from(std::mem::take(&mut read.kept));
    let (path, query) = path_and_query.split_once('?').unwrap_or((path_and_query.as_str(), ""));
    let family = Family::of(path);

    let auth_is_sigv4 = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("AWS4-HMAC-SHA256"));
    let sig = (family.is_aws() || auth_is_sigv4)
        .then(|| sigv4::verify_with_body_hash(&method, &path_and_query, &headers, &read.sha256, &inner.secrets));

    let slack_params = if family == Family::Slack {
        slack_params(&headers, query, &body)
    } else {
        HashMap::new()
    };
    let slack_token = (family == Family::Slack)
        .then(|| slack_token(&headers, &slack_params))
        .flatten();

    let (status_override, mut delay) = {
        let b = lock(&inner.behaviour);
        (b.status_override.clone(), b.delay)
    };
    if path == AUTH_TEST_PATH
        && let Some(t) = &slack_token
        && let Some(a) = lock(&inner.auth_tests).get(t)
    {
        delay = delay.max(a.delay);
    }

    let answer = if let (true, Some(Err(reason))) = (family.is_aws(), &sig) {
        aws_error(403, "InvalidSignatureException", json!({ "message": reason }))
    } else if let Some((status, forced)) = status_override {
        forced_answer(family, status, forced)
    } else if read.error.is_some() {
        Answer {
            status: 400,
            headers: vec![],
            body: full("incomplete request body"),
            request_id: None,
        }
    } else {
        match family {
            Family::Chime | Family::ChimeMessaging | Family::ChimeIdentity => {
                let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
                aws_operation(&inner, &method, &segments, &headers, &body)
                    .unwrap_or_else(|| echo(&headers, &body, &read))
            }
            Family::Slack => {
                let api_method = path.trim_start_matches("/api/");
                slack_operation(&inner, api_method, &slack_params, slack_token.as_deref())
            }
            Family::PassThrough => pass_through(&method, path, &headers, &body, &read),
        }
    };

    let record = Received {
        method,
        path_and_query,
        target,
        headers,
        body,
        body_len: read.len,
        body_sha256: read.sha256,
        body_truncated: read.truncated,
        body_error: read.error,
        sig,
        slack_token,
        family,
        peer,
        response_status: answer.status,
        request_id: answer.request_id.clone(),
    };
    lock(&inner.received).push(record);
    inner.notify.notify_waiters();

    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }

    let mut response = Response::new(answer.body);
    *response.status_mut() = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in answer.headers {
        if let Ok(v) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, v);
        }
    }
    response
}

fn forced_answer(family: Family, status: u16, body: String) -> Answer {
    if family.is_aws() {
        let mut a = aws_answer(status, None);
        a.body = full(body);
        if status >= 400
            && let Some(t) = error_type_for_status(status)
        {
            a.headers.push(("x-amzn-ErrorType", t.to_string()));
        }
        a
    } else if family == Family::Slack {
        let mut a = slack_answer(status, Value::Null);
        a.body = full(body);
        if status == 429 {
            a.headers.push(("retry-after", "1".to_string()));
        }
        a
    } else {
        Answer {
            status,
            headers: vec![],
            body: full(body),
            request_id: None,
        }
    }
}

fn echo(headers: &HeaderMap, body: &Bytes, read: &ReadBody) -> Answer {
    let mut out = vec![
        ("x-echo-body-len", read.len.to_string()),
        ("x-echo-body-sha256", read.sha256.clone()),
    ];
    if read.truncated {
        out.push(("content-type", "application/json".to_string()));
        return Answer {
            status: 200,
            headers: out,
            body: full(json!({"body_len": read.len, "body_sha256": read.sha256}).to_string()),
            request_id: None,
        };
    }
    if let Some(ct) = headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) {
        out.push(("content-type", ct.to_string()));
    }
    Answer {
        status: 200,
        headers: out,
        body: full(body.clone()),
        request_id: None,
    }
}

fn pass_through(method: &str, path: &str, headers: &HeaderMap, body: &Bytes, read: &ReadBody) -> Answer {
    if method == "GET"
        && let Some(n) = path.strip_prefix("/stream-bytes/")
        && let Ok(n) = n.parse::<u64>()
    {
        return Answer {
            status: 200,
            headers: vec![("content-type", "application/octet-stream".to_string())],
            body: PatternBody {
                offset: 0,
                remaining: n,
            }
            .boxed(),
            request_id: None,
        };
    }
    echo(headers, body, read)
}

/// The deterministic content `GET /stream-bytes/{n}` streams: byte `i` is `i % 251`.
pub fn pattern_bytes(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

/// Streams [`pattern_bytes`] in 64 KiB frames without materialising them.
struct PatternBody {
    offset: u64,
    remaining: u64,
}

impl Body for PatternBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = self.remaining.min(64 * 1024);
        let start = self.offset;
        let chunk: Vec<u8> = (start..start + n).map(|i| (i % 251) as u8).collect();
        self.offset += n;
        self.remaining -= n;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(chunk)))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

// ---------------------------------------------------------------------------------------------
// AWS operations
// ---------------------------------------------------------------------------------------------

fn epoch_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn rfc3339_now() -> String {
    time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

/// Parses a JSON object body; an empty body is `{}`.
fn json_object(body: &Bytes) -> Result<Map<String, Value>, Answer> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(bad_request("The request body must be a JSON object.")),
        Err(e) => Err(bad_request(&format!("Malformed JSON body: {e}"))),
    }
}

/// Checks an optional integer field is within 1..=5475.
fn check_days(obj: &Value, field: &str) -> Result<(), Answer> {
    match obj.get(field) {
        None => Ok(()),
        Some(v) => match v.as_i64() {
            Some(d) if (1..=5475).contains(&d) => Ok(()),
            _ => Err(bad_request(&format!(
                "{field} must be an integer between 1 and 5475, got {v}"
            ))),
        },
    }
}

/// Validates an `ExpirationSettings` object.
fn check_expiration(settings: &Value, criteria: &[&str]) -> Result<(), Answer> {
    if !settings.is_object() {
        return Err(bad_request("ExpirationSettings must be an object."));
    }
    if settings.get("ExpirationDays").is_none() {
        return Err(bad_request("ExpirationSettings.ExpirationDays is required."));
    }
    check_days(settings, "ExpirationDays")?;
    match settings.get("ExpirationCriterion").and_then(Value::as_str) {
        Some(c) if criteria.contains(&c) => Ok(()),
        other => Err(bad_request(&format!(
            "ExpirationSettings.ExpirationCriterion must be one of {criteria:?}, got {other:?}"
        ))),
    }
}

fn has_retention_days(settings: &Value) -> bool {
    settings
        .as_object()
        .is_some_and(|m| m.values().any(|v| v.get("RetentionDays").is_some()))
}

fn required_str<'a>(obj: &'a Map<String, Value>, field: &str) -> Result<&'a str, Answer> {
    obj.get(field)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| bad_request(&format!("{field} is required.")))
}

/// Routes an AWS request; `None` for an AWS path the fake does not model (echoed instead).
fn aws_operation(inner: &Inner, method: &str, segments: &[&str], headers: &HeaderMap, body: &Bytes) -> Option<Answer> {
    let result = match (method, segments) {
        ("PUT", ["accounts", id, "retention-settings"]) => put_retention_settings(inner, &decode_segment(id), body),
        ("GET", ["accounts", id, "retention-settings"]) => Ok(get_retention_settings(inner, &decode_segment(id))),
        ("POST", ["channels"]) => create_channel(inner, headers, body),
        ("GET", ["channels", arn]) => Ok(describe_channel(inner, &decode_segment(arn))),
        ("PUT", ["channels", arn, "expiration-settings"]) => put_channel_expiration(inner, &decode_segment(arn), body),
        ("PUT", ["app-instances", arn, "retention-settings"]) => {
            put_app_instance_retention(inner, &decode_segment(arn), body)
        }
        ("GET", ["app-instances", arn, "retention-settings"]) => {
            Ok(get_app_instance_retention(inner, &decode_segment(arn)))
        }
        ("POST", ["app-instance-users"]) => create_app_instance_user(inner, body),
        ("GET", ["app-instance-users", arn]) => Ok(describe_app_instance_user(inner, &decode_segment(arn))),
        ("PUT", ["app-instance-users", arn, "expiration-settings"]) => {
            put_user_expiration(inner, &decode_segment(arn), body)
        }
        _ => return None,
    };
    Some(result.unwrap_or_else(|e| e))
}

fn put_retention_settings(inner: &Inner, account: &str, body: &Bytes) -> Result<Answer, Answer> {
    let obj = json_object(body)?;
    let settings = obj
        .get("RetentionSettings")
        .filter(|v| v.is_object())
        .cloned()
        .ok_or_else(|| bad_request("RetentionSettings is required."))?;
    for key in ["RoomRetentionSettings", "ConversationRetentionSettings"] {
        if let Some(s) = settings.get(key) {
            check_days(s, "RetentionDays")?;
        }
    }
    lock(&inner.state)
        .resources
        .insert(Resource::ChimeAccount(account.to_string()), settings.clone());
    if inner.put_retention_204 {
        let mut a = aws_answer(204, None);
        a.headers.retain(|(n, _)| *n != "content-type");
        return Ok(a);
    }
    Ok(aws_answer(200, Some(chime_retention_body(settings))))
}

fn chime_retention_body(settings: Value) -> Value {
    let mut out = json!({ "RetentionSettings": settings });
    if has_retention_days(&out["RetentionSettings"]) {
        out["InitiateDeletionTimestamp"] = json!(rfc3339_now());
    }
    out
}

fn get_retention_settings(inner: &Inner, account: &str) -> Answer {
    let settings = lock(&inner.state)
        .resources
        .get(&Resource::ChimeAccount(account.to_string()))
        .cloned()
        .unwrap_or_else(|| json!({}));
    aws_answer(200, Some(chime_retention_body(settings)))
}

fn create_channel(inner: &Inner, headers: &HeaderMap, body: &Bytes) -> Result<Answer, Answer> {
    let obj = json_object(body)?;
    let app_instance = required_str(&obj, "AppInstanceArn")?;
    let name = required_str(&obj, "Name")?;
    if let Some(exp) = obj.get("ExpirationSettings") {
        check_expiration(exp, &["CREATED_TIMESTAMP", "LAST_MESSAGE_TIMESTAMP"])?;
    }
    let token = obj.get("ClientRequestToken").and_then(Value::as_str);
    let mut state = lock(&inner.state);
    if let Some(arn) = token.and_then(|t| state.channel_tokens.get(t)) {
        return Ok(aws_answer(201, Some(json!({ "ChannelArn": arn }))));
    }
    let channel_id = match obj.get("ChannelId").and_then(Value::as_str) {
        Some(id) => id.to_string(),
        None => {
            state.next_channel += 1;
            format!("ch-{:04}", state.next_channel)
        }
    };
    let arn = format!("{app_instance}/channel/{channel_id}");
    let now = epoch_now();
    let mut channel = json!({
        "Name": name,
        "ChannelArn": arn,
        "Mode": obj.get("Mode").cloned().unwrap_or_else(|| json!("UNRESTRICTED")),
        "Privacy": obj.get("Privacy").cloned().unwrap_or_else(|| json!("PUBLIC")),
        "CreatedTimestamp": now,
        "LastUpdatedTimestamp": now,
    });
    if let Some(meta) = obj.get("Metadata") {
        channel["Metadata"] = meta.clone();
    }
    if let Some(exp) = obj.get("ExpirationSettings") {
        channel["ExpirationSettings"] = exp.clone();
    }
    if let Some(bearer) = headers.get("x-amz-chime-bearer").and_then(|v| v.to_str().ok()) {
        channel["CreatedBy"] = json!({ "Arn": bearer });
    }
    if let Some(t) = token {
        state.channel_tokens.insert(t.to_string(), arn.clone());
    }
    state.resources.insert(Resource::Channel(arn.clone()), channel);
    Ok(aws_answer(201, Some(json!({ "ChannelArn": arn }))))
}

fn describe_channel(inner: &Inner, arn: &str) -> Answer {
    match lock(&inner.state).resources.get(&Resource::Channel(arn.to_string())) {
        Some(channel) => aws_answer(200, Some(json!({ "Channel": channel }))),
        None => not_found(&format!("The channel {arn} was not found.")),
    }
}

fn put_channel_expiration(inner: &Inner, arn: &str, body: &Bytes) -> Result<Answer, Answer> {
    let obj = json_object(body)?;
    let settings = obj.get("ExpirationSettings").cloned();
    if let Some(s) = &settings {
        check_expiration(s, &["CREATED_TIMESTAMP", "LAST_MESSAGE_TIMESTAMP"])?;
    }
    let mut state = lock(&inner.state);
    let channel = state
        .resources
        .entry(Resource::Channel(arn.to_string()))
        .or_insert_with(|| json!({ "ChannelArn": arn }));
    let mut out = json!({ "ChannelArn": arn });
    match settings {
        Some(s) => {
            channel["ExpirationSettings"] = s.clone();
            out["ExpirationSettings"] = s;
        }
        None => {
            if let Some(m) = channel.as_object_mut() {
                m.remove("ExpirationSettings");
            }
        }
    }
    channel["LastUpdatedTimestamp"] = json!(epoch_now());
    Ok(aws_answer(200, Some(out)))
}

fn sdk_retention_body(settings: Value) -> Value {
    let mut out = json!({ "AppInstanceRetentionSettings": settings });
    let days = out["AppInstanceRetentionSettings"]
        .get("ChannelRetentionSettings")
        .and_then(|c| c.get("RetentionDays"))
        .is_some();
    if days {
        out["InitiateDeletionTimestamp"] = json!(SDK_DELETION_TIMESTAMP);
    }
    out
}

fn put_app_instance_retention(inner: &Inner, arn: &str, body: &Bytes) -> Result<Answer, Answer> {
    let obj = json_object(body)?;
    let settings = obj
        .get("AppInstanceRetentionSettings")
        .filter(|v| v.is_object())
        .cloned()
        .ok_or_else(|| bad_request("AppInstanceRetentionSettings is required."))?;
    if let Some(c) = settings.get("ChannelRetentionSettings") {
        check_days(c, "RetentionDays")?;
    }
    lock(&inner.state)
        .resources
        .insert(Resource::AppInstance(arn.to_string()), settings.clone());
    Ok(aws_answer(200, Some(sdk_retention_body(settings))))
}

fn get_app_instance_retention(inner: &Inner, arn: &str) -> Answer {
    let settings = lock(&inner.state)
        .resources
        .get(&Resource::AppInstance(arn.to_string()))
        .cloned()
        .unwrap_or_else(|| json!({}));
    aws_answer(200, Some(sdk_retention_body(settings)))
}

fn create_app_instance_user(inner: &Inner, body: &Bytes) -> Result<Answer, Answer> {
    let obj = json_object(body)?;
    let app_instance = required_str(&obj, "AppInstanceArn")?;
    let user_id = required_str(&obj, "AppInstanceUserId")?;
    let name = required_str(&obj, "Name")?;
    if let Some(exp) = obj.get("ExpirationSettings") {
        check_expiration(exp, &["CREATED_TIMESTAMP"])?;
    }
    let arn = format!("{app_instance}/user/{user_id}");
    let now = epoch_now();
    let mut user = json!({
        "AppInstanceUserArn": arn,
        "Name": name,
        "CreatedTimestamp": now,
        "LastUpdatedTimestamp": now,
    });
    if let Some(meta) = obj.get("Metadata") {
        user["Metadata"] = meta.clone();
    }
    if let Some(exp) = obj.get("ExpirationSettings") {
        user["ExpirationSettings"] = exp.clone();
    }
    lock(&inner.state)
        .resources
        .insert(Resource::AppInstanceUser(arn.clone()), user);
    Ok(aws_answer(201, Some(json!({ "AppInstanceUserArn": arn }))))
}

fn describe_app_instance_user(inner: &Inner, arn: &str) -> Answer {
    match lock(&inner.state)
        .resources
        .get(&Resource::AppInstanceUser(arn.to_string()))
    {
        Some(user) => aws_answer(200, Some(json!({ "AppInstanceUser": user }))),
        None => not_found(&format!("The app instance user {arn} was not found.")),
    }
}

fn put_user_expiration(inner: &Inner, arn: &str, body: &Bytes) -> Result<Answer, Answer> {
    let obj = json_object(body)?;
    let settings = obj.get("ExpirationSettings").cloned();
    if let Some(s) = &settings {
        check_expiration(s, &["CREATED_TIMESTAMP"])?;
    }
    let mut state = lock(&inner.state);
    let user = state
        .resources
        .entry(Resource::AppInstanceUser(arn.to_string()))
        .or_insert_with(|| json!({ "AppInstanceUserArn": arn }));
    let mut out = json!({ "AppInstanceUserArn": arn });
    match settings {
        Some(s) => {
            user["ExpirationSettings"] = s.clone();
            out["ExpirationSettings"] = s;
        }
        None => {
            if let Some(m) = user.as_object_mut() {
                m.remove("ExpirationSettings");
            }
        }
    }
    user["LastUpdatedTimestamp"] = json!(epoch_now());
    Ok(aws_answer(200, Some(out)))
}

// ---------------------------------------------------------------------------------------------
// Slack
// ---------------------------------------------------------------------------------------------

/// Query parameters merged with body parameters (JSON object or form), body winning.
fn slack_params(headers: &HeaderMap, query: &str, body: &Bytes) -> HashMap<String, String> {
    let mut params: HashMap<String, String> = form_urlencoded::parse(query.as_bytes()).into_owned().collect();
    let is_json = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.to_ascii_lowercase().contains("json"));
    if is_json {
        if let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(body) {
            for (k, v) in m {
                let v = match v {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                params.insert(k, v);
            }
        }
    } else {
        params.extend(form_urlencoded::parse(body).into_owned());
    }
    params
}

fn slack_token(headers: &HeaderMap, params: &HashMap<String, String>) -> Option<String> {
    headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_string())
        .or_else(|| params.get("token").cloned())
}

fn slack_operation(inner: &Inner, api_method: &str, params: &HashMap<String, String>, token: Option<&str>) -> Answer {
    if api_method != "api.test" {
        match token {
            None => return slack_answer(200, json!({"ok": false, "error": "not_authed"})),
            Some(t) if !inner.slack_tokens.is_empty() && !inner.slack_tokens.iter().any(|k| k == t) => {
                return slack_answer(200, json!({"ok": false, "error": "invalid_auth"}));
            }
            Some(_) => {}
        }
    }
    let invalid = || slack_answer(200, json!({"ok": false, "error": "invalid_arguments"}));
    let channel = params.get("channel_id").filter(|c| !c.is_empty());
    match api_method {
        "auth.test" => {
            let token = token.unwrap_or_default();
            let answer = lock(&inner.auth_tests).get(token).map(|a| a.result.clone());
            match answer.unwrap_or_else(|| Ok(SlackUser::of_token(token))) {
                Ok(u) => {
                    let mut body = json!({
                        "ok": true, "url": "https://fake-team.slack.com/", "team": "Fake Team",
                        "user": "fake.user", "team_id": u.team_id, "user_id": u.user_id,
                        "is_enterprise_install": false,
                    });
                    if let Some(e) = u.enterprise_id {
                        body["enterprise_id"] = json!(e);
                    }
                    slack_answer(200, body)
                }
                Err(error) => slack_answer(200, json!({"ok": false, "error": error})),
            }
        }
        "admin.conversations.setCustomRetention" => {
            let Some(channel) = channel else {
                return invalid();
            };
            let days = params.get("duration_days").and_then(|d| d.trim().parse::<i64>().ok());
            let Some(days) = days.filter(|d| (1..=36499).contains(d)) else {
                return invalid();
            };
            lock(&inner.state)
                .resources
                .insert(Resource::SlackChannel(channel.clone()), json!(days));
            slack_answer(200, json!({"ok": true}))
        }
        "admin.conversations.getCustomRetention" => {
            let Some(channel) = channel else {
                return invalid();
            };
            let days = lock(&inner.state)
                .resources
                .get(&Resource::SlackChannel(channel.clone()))
                .cloned();
            match days {
                Some(d) => slack_answer(200, json!({"ok": true, "is_policy_enabled": true, "duration_days": d})),
                None => slack_answer(200, json!({"ok": true, "is_policy_enabled": false})),
            }
        }
        "admin.conversations.removeCustomRetention" => {
            let Some(channel) = channel else {
                return invalid();
            };
            lock(&inner.state)
                .resources
                .remove(&Resource::SlackChannel(channel.clone()));
            slack_answer(200, json!({"ok": true}))
        }
        _ => slack_answer(200, json!({"ok": true})),
    }
}

// ---------------------------------------------------------------------------------------------
// A minimal client for tests
// ---------------------------------------------------------------------------------------------

/// A response read completely.
#[derive(Debug, Clone)]
pub struct SimpleResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl SimpleResponse {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Sends one HTTP/1.1 request on a new connection to `addr` and reads the whole response.
/// The request target is sent as given (raw percent-encoding preserved); a `Host` header is
/// added from `addr` when missing.
pub async fn send(addr: SocketAddr, req: Request<Bytes>) -> Result<SimpleResponse, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let conn_task = tokio::spawn(conn);
    let (mut parts, body) = req.into_parts();
    if !parts.headers.contains_key(http::header::HOST) {
        let host = HeaderValue::from_str(&addr.to_string()).map_err(|e| e.to_string())?;
        parts.headers.insert(http::header::HOST, host);
    }
    let req = Request::from_parts(parts, Full::new(body));
    let result = async {
        let resp = sender.send_request(req).await.map_err(|e| format!("send: {e}"))?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.map_err(|e| format!("read body: {e}"))?.to_bytes();
        Ok(SimpleResponse {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        })
    }
    .await;
    conn_task.abort();
    result
}
