//! Client requests the way real clients send them: botocore-style SigV4 (only `content-type`,
//! `host`, `x-amz-date` and `x-amz-chime-bearer` signed; `User-Agent`, `Accept-Encoding` and the
//! `amz-sdk-*` headers added unsigned) and slack_sdk-style Slack calls, in forward mode
//! (absolute-form request line, the vendor's real `Host`) or reverse mode (origin-form, the
//! proxy's own `Host`); and raw requests written on a plain socket.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::fake_vendor::{self, EXAMPLE_ACCESS_KEY_ID, EXAMPLE_SECRET_ACCESS_KEY, FakeVendorOpts};
use super::fixtures::{PROXY_ACCESS_KEY_ID, PROXY_SECRET_ACCESS_KEY, SLACK_HOST, SLACK_TOKEN, WAIT};
use super::in_process::InProcessProxy;
use super::sigv4::{self, SigningParams};

/// The user agent of the boto3 captures.
pub const BOTO3_USER_AGENT: &str = "Boto3/1.44.5 md/Botocore#1.44.5 ua/2.1 os/linux#6.18.44-fc-v669 md/arch#x86_64 lang/python#3.11.7 md/pyimpl#CPython m/N,E,b,Z cfg/retry-mode#standard Botocore/1.44.5";
/// The user agent of the slack_sdk captures.
pub const SLACK_SDK_USER_AGENT: &str = "Python/3.11.7 slackclient/3.47.0 Linux/6.18.44-fc-v669";

/// How the client reaches the proxy (SPEC §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Absolute-form request line with the vendor's real `Host`; the signature passes intact.
    Forward,
    /// Origin-form request to the proxy; AWS calls are re-signed with the proxy's credentials.
    Reverse,
}

impl Mode {
    /// Fake vendor options for this mode: it knows only the key that should reach it (the
    /// client's in forward mode, the proxy's in reverse mode) and accepts only [`SLACK_TOKEN`].
    pub fn fake_opts(self) -> FakeVendorOpts {
        let opts = match self {
            Mode::Forward => FakeVendorOpts::with_example_key(),
            Mode::Reverse => FakeVendorOpts::default().secret(PROXY_ACCESS_KEY_ID, PROXY_SECRET_ACCESS_KEY),
        };
        FakeVendorOpts {
            slack_tokens: vec![SLACK_TOKEN.to_string()],
            ..opts
        }
    }

    /// The access key id the vendor should see on an AWS call.
    pub fn vendor_access_key(self) -> &'static str {
        match self {
            Mode::Forward => EXAMPLE_ACCESS_KEY_ID,
            Mode::Reverse => PROXY_ACCESS_KEY_ID,
        }
    }
}

/// Client signing parameters for the AWS example key.
pub fn client_params(amz_date: &str) -> SigningParams<'_> {
    fake_vendor::example_params(amz_date)
}

/// Client signing parameters for the AWS example key with a session token.
pub fn client_params_with_token<'a>(amz_date: &'a str, session_token: Option<&'a str>) -> SigningParams<'a> {
    SigningParams {
        access_key_id: EXAMPLE_ACCESS_KEY_ID,
        secret_access_key: EXAMPLE_SECRET_ACCESS_KEY,
        session_token,
        region: "us-east-1",
        service: "chime",
        amz_date,
    }
}

/// `(Host, request target)` for a call to `vendor_host` + `path` in `mode`.
pub fn host_and_target(mode: Mode, proxy: &InProcessProxy, vendor_host: &str, path: &str) -> (String, String) {
    match mode {
        Mode::Forward => (vendor_host.to_string(), format!("http://{vendor_host}{path}")),
        Mode::Reverse => (proxy.host(), path.to_string()),
    }
}

fn append(req: &mut Request<Bytes>, headers: &[(&str, &str)]) {
    for (k, v) in headers {
        req.headers_mut().append(
            HeaderName::from_bytes(k.as_bytes()).expect("header name"),
            HeaderValue::from_str(v).expect("header value"),
        );
    }
}

/// One AWS call, described as a client would make it.
#[derive(Debug, Clone)]
pub struct AwsCall<'a> {
    /// HTTP method.
    pub method: &'a str,
    /// The vendor host (`Host` in forward mode).
    pub vendor_host: &'a str,
    /// Origin-form path and query, raw (ARNs percent-encoded).
    pub path: &'a str,
    /// Headers that are signed (besides `host` and `x-amz-date`).
    pub signed: Vec<(&'a str, &'a str)>,
    /// Headers added after signing.
    pub unsigned: Vec<(&'a str, &'a str)>,
    /// Body bytes.
    pub body: &'a [u8],
    /// `X-Amz-Security-Token` (signed), for temporary credentials.
    pub session_token: Option<&'a str>,
}

impl<'a> AwsCall<'a> {
    /// A botocore-like call: `content-type: application/json` signed when there is a body,
    /// `x-amz-chime-bearer` signed when given, and botocore's unsigned headers.
    pub fn botocore(
        method: &'a str,
        vendor_host: &'a str,
        path: &'a str,
        bearer: Option<&'a str>,
        invocation_id: &'a str,
        body: &'a [u8],
    ) -> AwsCall<'a> {
        let mut signed = Vec::new();
        if let Some(b) = bearer {
            signed.push(("x-amz-chime-bearer", b));
        }
        if !body.is_empty() {
            signed.push(("content-type", "application/json"));
        }
        AwsCall {
            method,
            vendor_host,
            path,
            signed,
            unsigned: vec![
                ("accept-encoding", "identity"),
                ("user-agent", BOTO3_USER_AGENT),
                ("amz-sdk-invocation-id", invocation_id),
                ("amz-sdk-request", "attempt=2; max=3"),
            ],
            body,
            session_token: None,
        }
    }

    /// The signed request for `mode`.
    pub fn request(&self, mode: Mode, proxy: &InProcessProxy) -> Request<Bytes> {
        let (host, target) = host_and_target(mode, proxy, self.vendor_host, self.path);
        let date = sigv4::amz_date_now();
        let mut req = sigv4::signed_request(
            self.method,
            &host,
            &target,
            &self.signed,
            Bytes::copy_from_slice(self.body),
            &client_params_with_token(&date, self.session_token),
        )
        .unwrap_or_else(|e| panic!("sign {} {target}: {e}", self.method));
        append(&mut req, &self.unsigned);
        req
    }
}

/// A Slack Web API call as slack_sdk sends it; `bearer` adds `Authorization: Bearer <token>`.
pub fn slack_request(
    mode: Mode,
    proxy: &InProcessProxy,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    bearer: Option<&str>,
    body: &[u8],
) -> Request<Bytes> {
    let (host, target) = host_and_target(mode, proxy, SLACK_HOST, path);
    let mut b = Request::builder()
        .method(method)
        .uri(target.as_str())
        .header("accept-encoding", "identity")
        .header("host", host)
        .header("user-agent", SLACK_SDK_USER_AGENT);
    if let Some(ct) = content_type {
        b = b.header("content-type", ct);
    }
    if let Some(t) = bearer {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    b.body(Bytes::copy_from_slice(body))
        .unwrap_or_else(|e| panic!("slack request {target}: {e}"))
}

/// A reverse-mode (origin-form) Slack form `POST`, with `Authorization: Bearer` when given and
/// `extra` headers.
pub fn slack_form(path: &str, form: &str, bearer: Option<&str>, extra: &[(&str, &str)]) -> Request<Bytes> {
    let mut b = Request::builder()
        .method("POST")
        .uri(path)
        .header("content-type", "application/x-www-form-urlencoded");
    if let Some(t) = bearer {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    for (k, v) in extra {
        b = b.header(*k, *v);
    }
    b.body(Bytes::from(form.to_string())).unwrap()
}

/// Adds headers to a request (after signing, so they are not signed).
pub fn with_headers(mut req: Request<Bytes>, headers: &[(&str, &str)]) -> Request<Bytes> {
    append(&mut req, headers);
    req
}

/// A response read from a raw connection.
#[derive(Debug, Clone)]
pub struct RawResponse {
    /// Status code (0 when the answer had no status line).
    pub status: u16,
    /// Everything received, lossily decoded.
    pub text: String,
}

impl RawResponse {
    /// The body (after the blank line).
    pub fn body(&self) -> &str {
        self.text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("")
    }

    /// A header value, case-insensitive.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.text.split_once("\r\n\r\n").map(|(h, _)| h).unwrap_or(&self.text);
        head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
}

/// Writes `bytes` on a new connection to `addr` and reads until the peer closes (the request
/// should carry `Connection: close`) or, for a `CONNECT` answer, until the head is complete.
pub async fn send_raw(addr: SocketAddr, bytes: &[u8]) -> RawResponse {
    let mut stream = TcpStream::connect(addr).await.expect("connect to the proxy");
    stream.write_all(bytes).await.expect("write the request");
    let mut buf = Vec::new();
    let read = async {
        let mut chunk = [0u8; 8192];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            if bytes.starts_with(b"CONNECT ") && buf.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    };
    if tokio::time::timeout(WAIT, read).await.is_err() {
        panic!("no complete answer within {WAIT:?}");
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .strip_prefix("HTTP/1.")
        .and_then(|r| r.get(2..5))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    RawResponse { status, text }
}

/// Whether every member of `expected` is in `actual` with an equal value (objects compared
/// recursively; anything else compared exactly).
pub fn json_contains(actual: &Value, expected: &Value) -> bool {
    match (actual, expected) {
        (Value::Object(a), Value::Object(e)) => {
            e.iter().all(|(k, ev)| a.get(k).is_some_and(|av| json_contains(av, ev)))
        }
        _ => actual == expected,
    }
}
