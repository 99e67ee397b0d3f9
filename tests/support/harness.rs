//! Runs the real proxy in-process next to a [`FakeVendor`], and builds client requests the way
//! real clients send them: botocore-style SigV4 (only `content-type`, `host`, `x-amz-date` and
//! `x-amz-chime-bearer` signed; `User-Agent`, `Accept-Encoding` and the `amz-sdk-*` headers
//! added unsigned) and slack_sdk-style Slack calls, in forward mode (absolute-form request line,
//! the vendor's real `Host`) or reverse mode (origin-form, the proxy's own `Host`).

use std::fmt::{Debug, Display, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request};
use retention_proxy::audit::query::{self, Filter, Verification};
use retention_proxy::config::Config;
use retention_proxy::server::{self, Listeners};
use retention_proxy::vendor::aws_sigv4::AwsCredentials;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::fake_vendor::{self, EXAMPLE_ACCESS_KEY_ID, EXAMPLE_SECRET_ACCESS_KEY, FakeVendorOpts, SimpleResponse};
use super::sigv4::{self, SigningParams};

/// The proxy's own AWS credentials (reverse mode re-signs with these).
pub const PROXY_ACCESS_KEY_ID: &str = "AKIAPROXY0000000000";
/// Secret for [`PROXY_ACCESS_KEY_ID`].
pub const PROXY_SECRET_ACCESS_KEY: &str = "proxy-secret";
/// The dummy Slack token of the wire captures.
pub const SLACK_TOKEN: &str = "xoxp-0000000000-0000000000-0000000000-dummydummydummydummydummydummy0";
/// Real vendor host names (forward mode; mapped to the fake with `forward.resolve`).
pub const CHIME_HOST: &str = "chime.us-east-1.amazonaws.com";
/// Chime SDK messaging host.
pub const MESSAGING_HOST: &str = "messaging-chime.us-east-1.amazonaws.com";
/// Chime SDK identity host.
pub const IDENTITY_HOST: &str = "identity-chime.us-east-1.amazonaws.com";
/// Slack host.
pub const SLACK_HOST: &str = "slack.com";
/// The user agent of the boto3 captures.
pub const BOTO3_USER_AGENT: &str = "Boto3/1.44.5 md/Botocore#1.44.5 ua/2.1 os/linux#6.18.44-fc-v669 md/arch#x86_64 lang/python#3.11.7 md/pyimpl#CPython m/N,E,b,Z cfg/retry-mode#standard Botocore/1.44.5";
/// The user agent of the slack_sdk captures.
pub const SLACK_SDK_USER_AGENT: &str = "Python/3.11.7 slackclient/3.47.0 Linux/6.18.44-fc-v669";
/// Deadline for anything a test waits on.
pub const WAIT: Duration = Duration::from_secs(10);

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

/// Test-specific configuration; everything else is the harness default.
#[derive(Debug, Clone, Default)]
pub struct ProxySettings {
    /// `server.max_body_bytes`.
    pub max_body_bytes: Option<u64>,
    /// `upstreams.request_timeout`, e.g. `"300ms"`.
    pub request_timeout: Option<String>,
    /// The audit database to use (default: `audit.db` in a fresh temporary directory).
    pub db_path: Option<PathBuf>,
    /// TOML appended verbatim at the end of the file (e.g. `[[guardrails]]` tables).
    pub extra_toml: String,
}

/// A TOML basic string (JSON string escapes are valid TOML escapes).
pub fn toml_str(s: &str) -> String {
    serde_json::to_string(s).expect("a string serialises")
}

/// The proxy configuration the harness uses: every upstream and every forward-resolved vendor
/// host points at `vendor_url`; the admin listener is off.
pub fn config_toml(vendor_url: &str, db_path: &Path, settings: &ProxySettings) -> String {
    let url = toml_str(vendor_url);
    let mut t = String::new();
    t.push_str("[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"\"\n");
    if let Some(n) = settings.max_body_bytes {
        let _ = writeln!(t, "max_body_bytes = {n}");
    }
    let _ = writeln!(
        t,
        "\n[audit]\npath = {}\nproxy_instance = \"test-proxy\"\n",
        toml_str(&db_path.to_string_lossy())
    );
    let _ = writeln!(
        t,
        "[upstreams]\nchime = {url}\nchime_messaging = {url}\nchime_identity = {url}\nslack = {url}\nconnect_timeout = \"2s\""
    );
    if let Some(rt) = &settings.request_timeout {
        let _ = writeln!(t, "request_timeout = {}", toml_str(rt));
    }
    t.push_str("\n[forward]\nallow_hosts = [\"*.amazonaws.com\", \"slack.com\"]\n\n[forward.resolve]\n");
    for host in [CHIME_HOST, MESSAGING_HOST, IDENTITY_HOST, SLACK_HOST] {
        let _ = writeln!(t, "{} = {url}", toml_str(host));
    }
    t.push('\n');
    t.push_str(&settings.extra_toml);
    t
}

/// What a stopped proxy left in its audit database.
#[derive(Debug, Clone)]
pub struct AuditLog {
    /// Merged events, in `seq` order.
    pub events: Vec<Value>,
    /// The chain check.
    pub verification: Verification,
    /// The raw bytes of the database and its journal files (to look for secrets at rest).
    pub stored_bytes: Vec<u8>,
}

/// The proxy, running in-process on 127.0.0.1.
pub struct Proxy {
    /// The proxy listener.
    pub addr: SocketAddr,
    /// The audit database.
    pub db_path: PathBuf,
    _dir: Option<tempfile::TempDir>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), server::RunError>>>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl Proxy {
    /// Starts the proxy with every upstream at `vendor_url`.
    pub async fn start(vendor_url: &str, settings: ProxySettings) -> Proxy {
        let (dir, db_path) = match &settings.db_path {
            Some(p) => (None, p.clone()),
            None => {
                let dir = tempfile::tempdir().expect("temporary directory");
                let p = dir.path().join("audit.db");
                (Some(dir), p)
            }
        };
        let text = config_toml(vendor_url, &db_path, &settings);
        let cfg = Config::from_toml_str(&text, "test.toml").unwrap_or_else(|e| panic!("config: {e}\n{text}"));
        let proxy = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy listener");
        let addr = proxy.local_addr().expect("proxy address");
        let (tx, rx) = oneshot::channel::<()>();
        let creds = AwsCredentials::new(PROXY_ACCESS_KEY_ID, PROXY_SECRET_ACCESS_KEY, None);
        let task = tokio::spawn(server::run(Listeners { proxy, admin: None }, cfg, Some(creds), async {
            let _ = rx.await;
        }));
        Proxy {
            addr,
            db_path,
            _dir: dir,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// `host:port` of the proxy, as a `Host` header value.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Every merged event committed so far.
    pub fn events(&self) -> Vec<Value> {
        read_audit(&self.db_path).events
    }

    /// Sends one request to the proxy on a new connection.
    pub async fn send(&self, req: Request<Bytes>) -> SimpleResponse {
        let target = req.uri().to_string();
        match tokio::time::timeout(WAIT, fake_vendor::send(self.addr, req)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => panic!("request {target} to the proxy failed: {e}"),
            Err(_) => panic!("request {target} to the proxy got no answer within {WAIT:?}"),
        }
    }

    /// Stops the proxy (it drains and commits every record), then reads the audit log.
    pub async fn stop(mut self) -> AuditLog {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            match tokio::time::timeout(WAIT, task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => panic!("server::run failed: {e}"),
                Ok(Err(e)) => panic!("server::run panicked: {e}"),
                Err(_) => panic!("server::run did not return within {WAIT:?} of shutdown"),
            }
        }
        read_audit(&self.db_path)
    }
}

/// Reads every merged event and verifies the chain.
pub fn read_audit(db: &Path) -> AuditLog {
    let conn = retention_proxy::audit::open_reader(db).unwrap_or_else(|e| panic!("open the audit database: {e}"));
    let events = conn
        .query(&Filter::default())
        .unwrap_or_else(|e| panic!("query the audit log: {e}"));
    let verification = query::verify(conn.as_ref()).unwrap_or_else(|e| panic!("verify the audit log: {e}"));
    let mut stored_bytes = Vec::new();
    for suffix in ["", "-wal", "-journal"] {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        if let Ok(b) = std::fs::read(PathBuf::from(p)) {
            stored_bytes.extend_from_slice(&b);
        }
    }
    AuditLog {
        events,
        verification,
        stored_bytes,
    }
}

/// Whether `needle` occurs in `haystack`.
pub fn contains_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Client signing parameters for the AWS example key.
pub fn client_params(amz_date: &str) -> SigningParams<'_> {
    crate::support::fake_vendor::example_params(amz_date)
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
pub fn host_and_target(mode: Mode, proxy: &Proxy, vendor_host: &str, path: &str) -> (String, String) {
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
    pub fn request(&self, mode: Mode, proxy: &Proxy) -> Request<Bytes> {
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
    proxy: &Proxy,
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
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
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

/// Soft assertions: collects every failed check of a test, then reports them all at once.
#[derive(Debug, Default)]
pub struct Checks {
    context: String,
    failures: Vec<String>,
}

impl Checks {
    /// Checks for one scenario, named in the report.
    pub fn new(context: impl Into<String>) -> Checks {
        Checks {
            context: context.into(),
            failures: Vec::new(),
        }
    }

    /// Records a failure unless `cond`.
    pub fn ok(&mut self, what: &str, cond: bool, detail: impl Display) {
        if !cond {
            self.failures.push(format!("{what}: {detail}"));
        }
    }

    /// Records a failure unless `actual == expected`.
    pub fn eq<A: PartialEq<E> + Debug, E: Debug>(&mut self, what: &str, actual: A, expected: E) {
        if actual != expected {
            self.failures
                .push(format!("{what}: got {actual:?}, expected {expected:?}"));
        }
    }

    /// Records a failure outright.
    pub fn fail(&mut self, what: &str, detail: impl Display) {
        self.failures.push(format!("{what}: {detail}"));
    }

    /// Whether nothing failed so far.
    pub fn clean(&self) -> bool {
        self.failures.is_empty()
    }

    /// Panics listing every failure, if any.
    #[track_caller]
    pub fn finish(self) {
        if !self.failures.is_empty() {
            panic!(
                "{}: {} check(s) failed:\n  - {}",
                self.context,
                self.failures.len(),
                self.failures.join("\n  - ")
            );
        }
    }
}
