//! Compliance queries over a trail of a few dozen varied events (SPEC §5, §7): `audit export`
//! (CloudTrail document and hourly gzip files, JSON lines, CSV, time windows), `audit history`,
//! `audit state`, `GET /v1/events` (filters, pagination under concurrent inserts, errors, the
//! admin token) and CloudTrail `LookupEvents` on the admin listener.
//!
//! One trail is generated once for the whole file by an in-process proxy (with its admin
//! listener) in front of the fake vendor, on a runtime of its own that outlives the tests;
//! tests only read it. Tests that insert events start a proxy of their own.

#[allow(dead_code)]
mod support {
    pub mod fake_vendor;
    pub mod sigv4;
}

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use retention_proxy::config::Config;
use retention_proxy::server::{self, Listeners};
use retention_proxy::vendor::aws_sigv4::AwsCredentials;
use serde_json::{Value, json};
use support::fake_vendor::{self, EXAMPLE_ACCESS_KEY_ID, EXAMPLE_SECRET_ACCESS_KEY, FakeVendor, FakeVendorOpts};
use support::sigv4::{self, SigningParams};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const BIN: &str = env!("CARGO_BIN_EXE_retention-proxy");
const WAIT: Duration = Duration::from_secs(15);

const PROXY_KEY: &str = "AKIAPROXYCOMPLIANCE1";
const PROXY_SECRET: &str = "pRoXy/C0mpl1anceSecretEXAMPLEKEY000000001";
/// A second client key, so that access-key lookups can tell callers apart.
const OTHER_KEY: &str = "AKIAI44QH8DHBEXAMPLE";
const OTHER_SECRET: &str = "je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY";
const ADMIN_TOKEN: &str = "compliance-admin-token-0123456789";

const CHIME_HOST: &str = "chime.us-east-1.amazonaws.com";
const MESSAGING_HOST: &str = "messaging-chime.us-east-1.amazonaws.com";
const IDENTITY_HOST: &str = "identity-chime.us-east-1.amazonaws.com";
const SLACK_HOST: &str = "slack.com";

const ACCOUNT_A: &str = "12a3456b-7c89-012d-3456-78901e23fg45";
const ACCOUNT_B: &str = "98b7654c-3d21-098e-7654-32109f87ed65";
const APP: &str = "arn:aws:chime:us-east-1:111122223333:app-instance/87654321-4321-4321-4321-210987654321";
const CHANNEL: &str =
    "arn:aws:chime:us-east-1:111122223333:app-instance/87654321-4321-4321-4321-210987654321/channel/ch-0001";
const USER: &str =
    "arn:aws:chime:us-east-1:111122223333:app-instance/87654321-4321-4321-4321-210987654321/user/admin-user-1";
const TOKEN_A: &str = "xoxp-1111111111-1111111111-1111111111-complianceAcomplianceAcomp01";
const TOKEN_B: &str = "xoxb-2222222222-2222222222-complianceBcomplianceBcompliance02";
/// A Slack channel id with a comma, to exercise CSV quoting.
const COMMA_CHANNEL: &str = "C9,X";
const HISTORY_CHANNEL: &str = "C0HISTORY4";

const SLACK_SET: &str = "/api/admin.conversations.setCustomRetention";
const SLACK_GET: &str = "/api/admin.conversations.getCustomRetention";
const SLACK_REMOVE: &str = "/api/admin.conversations.removeCustomRetention";
const LOOKUP_TARGET: &str = "com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.LookupEvents";

const GUARDRAILS: &str = r#"
[[guardrails]]
id = "slack-min-30"
targets = ["slack.channel_retention"]
min_days = 30
allow_default = true

[[guardrails]]
id = "chime-room-min-30"
targets = ["chime.room_retention"]
min_days = 30
"#;

// ---------------------------------------------------------------------------------------------
// An in-process proxy with its admin listener
// ---------------------------------------------------------------------------------------------

struct Running {
    addr: SocketAddr,
    admin: SocketAddr,
    db: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), server::RunError>>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

impl Running {
    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            match tokio::time::timeout(WAIT, t).await {
                Ok(Ok(Ok(()))) => {}
                other => panic!("the proxy did not stop cleanly: {other:?}"),
            }
        }
    }
}

fn toml_str(s: &str) -> String {
    serde_json::to_string(s).expect("a string serialises")
}

fn vendor_opts() -> FakeVendorOpts {
    FakeVendorOpts::with_example_key()
        .secret(OTHER_KEY, OTHER_SECRET)
        .secret(PROXY_KEY, PROXY_SECRET)
}

async fn start_proxy(vendor_url: &str, db: &Path, admin_token: Option<&str>) -> Running {
    let url = toml_str(vendor_url);
    let mut t = String::new();
    t.push_str("[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n");
    if let Some(tok) = admin_token {
        let _ = writeln!(t, "admin_token = {}", toml_str(tok));
    }
    let _ = writeln!(
        t,
        "\n[audit]\npath = {}\nproxy_instance = \"compliance-proxy\"\n",
        toml_str(&db.to_string_lossy())
    );
    let _ = writeln!(
        t,
        "[upstreams]\nchime = {url}\nchime_messaging = {url}\nchime_identity = {url}\nslack = {url}\n"
    );
    t.push_str("[forward.resolve]\n");
    for h in [CHIME_HOST, MESSAGING_HOST, IDENTITY_HOST, SLACK_HOST] {
        let _ = writeln!(t, "{} = {url}", toml_str(h));
    }
    t.push_str(GUARDRAILS);
    let cfg = Config::from_toml_str(&t, "compliance.toml").unwrap_or_else(|e| panic!("config: {e}\n{t}"));
    let proxy = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
    let admin = TcpListener::bind("127.0.0.1:0").await.expect("bind the admin listener");
    let (addr, admin_addr) = (proxy.local_addr().unwrap(), admin.local_addr().unwrap());
    let (tx, rx) = oneshot::channel::<()>();
    let creds = AwsCredentials::new(PROXY_KEY, PROXY_SECRET, None);
    let task = tokio::spawn(server::run(
        Listeners {
            proxy,
            admin: Some(admin),
        },
        cfg,
        Some(creds),
        async {
            let _ = rx.await;
        },
    ));
    Running {
        addr,
        admin: admin_addr,
        db: db.to_path_buf(),
        stop: Some(tx),
        task: Some(task),
    }
}

// ---------------------------------------------------------------------------------------------
// Calls as clients make them, in forward (absolute-form) or reverse (origin-form) mode
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Forward,
    Reverse,
}

fn enc(arn: &str) -> String {
    sigv4::uri_encode(arn.as_bytes(), false)
}

#[derive(Debug, Clone, Copy)]
struct Key(&'static str, &'static str);

const EXAMPLE: Key = Key(EXAMPLE_ACCESS_KEY_ID, EXAMPLE_SECRET_ACCESS_KEY);
const OTHER: Key = Key(OTHER_KEY, OTHER_SECRET);

/// A botocore-style signed AWS call.
#[allow(clippy::too_many_arguments)]
fn aws(
    proxy: SocketAddr,
    mode: Mode,
    key: Key,
    method: &str,
    host: &str,
    path: &str,
    bearer: Option<&str>,
    body: &str,
) -> Request<Bytes> {
    let host_header = match mode {
        Mode::Forward => host.to_string(),
        Mode::Reverse => proxy.to_string(),
    };
    let date = sigv4::amz_date_now();
    let params = SigningParams {
        access_key_id: key.0,
        secret_access_key: key.1,
        session_token: None,
        region: "us-east-1",
        service: "chime",
        amz_date: &date,
    };
    let mut headers: Vec<(&str, &str)> = Vec::new();
    if let Some(b) = bearer {
        headers.push(("x-amz-chime-bearer", b));
    }
    if !body.is_empty() {
        headers.push(("content-type", "application/json"));
    }
    let mut req = sigv4::signed_request(
        method,
        &host_header,
        path,
        &headers,
        Bytes::from(body.to_string()),
        &params,
    )
    .unwrap_or_else(|e| panic!("sign {method} {path}: {e}"));
    req.headers_mut().insert(
        "user-agent",
        "Boto3/1.44.5 md/Botocore#1.44.5 compliance-test".parse().unwrap(),
    );
    if mode == Mode::Forward {
        *req.uri_mut() = format!("http://{host}{path}").parse().unwrap();
    }
    req
}

/// A slack_sdk-style form call with a bearer token.
fn slack(mode: Mode, path: &str, form: &str, token: &str) -> Request<Bytes> {
    let target = match mode {
        Mode::Forward => format!("http://{SLACK_HOST}{path}"),
        Mode::Reverse => path.to_string(),
    };
    let mut b = Request::builder()
        .method("POST")
        .uri(target)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("authorization", format!("Bearer {token}"))
        .header("user-agent", "Python/3.11.7 slackclient/3.47.0");
    if mode == Mode::Forward {
        b = b.header("host", SLACK_HOST);
    }
    b.body(Bytes::from(form.to_string())).unwrap()
}

fn slack_set_form(channel: &str, days: u32) -> String {
    form_urlencoded::Serializer::new(String::new())
        .append_pair("channel_id", channel)
        .append_pair("duration_days", &days.to_string())
        .finish()
}

fn channel_form(channel: &str) -> String {
    form_urlencoded::Serializer::new(String::new())
        .append_pair("channel_id", channel)
        .finish()
}

fn chime_body(room: Option<u32>, conversation: Option<u32>) -> String {
    let mut s = serde_json::Map::new();
    if let Some(d) = room {
        s.insert("RoomRetentionSettings".into(), json!({"RetentionDays": d}));
    }
    if let Some(d) = conversation {
        s.insert("ConversationRetentionSettings".into(), json!({"RetentionDays": d}));
    }
    json!({"RetentionSettings": s}).to_string()
}

async fn send(addr: SocketAddr, req: Request<Bytes>) -> fake_vendor::SimpleResponse {
    let what = format!("{} {}", req.method(), req.uri());
    tokio::time::timeout(WAIT, fake_vendor::send(addr, req))
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer in time"))
        .unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// What a call of the trail is expected to end as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Ok,
    Denied,
    Rejected,
}

/// One AWS call of the trail: mode, key, method, host, path, bearer, body, how it ends.
type AwsRow<'a> = (Mode, Key, &'a str, &'a str, &'a str, Option<&'a str>, String, End);

/// The calls of the trail, in order.
fn trail_calls(proxy: SocketAddr) -> Vec<(Request<Bytes>, End)> {
    use End::{Denied, Ok, Rejected};
    use Mode::{Forward as F, Reverse as R};
    let (acct_a, acct_b) = (
        format!("/accounts/{ACCOUNT_A}/retention-settings"),
        format!("/accounts/{ACCOUNT_B}/retention-settings"),
    );
    let chan_exp = format!("/channels/{}/expiration-settings", enc(CHANNEL));
    let chan = format!("/channels/{}", enc(CHANNEL));
    let app_ret = format!("/app-instances/{}/retention-settings", enc(APP));
    let user_exp = format!("/app-instance-users/{}/expiration-settings", enc(USER));
    let exp = |d: u32, c: &str| json!({"ExpirationSettings": {"ExpirationDays": d, "ExpirationCriterion": c}});
    let app_days = json!({"AppInstanceRetentionSettings": {"ChannelRetentionSettings": {"RetentionDays": 365}}});
    let off = r#"{"RetentionSettings": {}}"#.to_string();
    #[rustfmt::skip]
    let aws_calls: Vec<AwsRow<'_>> = vec![
        (F, EXAMPLE, "PUT", CHIME_HOST, &acct_a, None, chime_body(Some(365), Some(180)), Ok),
        (R, EXAMPLE, "GET", CHIME_HOST, &acct_a, None, String::new(), Ok),
        (R, EXAMPLE, "PUT", CHIME_HOST, &acct_a, None, chime_body(Some(400), Some(400)), Ok),
        (F, EXAMPLE, "PUT", CHIME_HOST, &acct_a, None, chime_body(Some(7), None), Denied),
        (F, EXAMPLE, "PUT", CHIME_HOST, &acct_a, None, chime_body(Some(500), Some(500)), Ok),
        (R, EXAMPLE, "PUT", CHIME_HOST, &acct_a, None, off, Ok),
        (F, EXAMPLE, "GET", CHIME_HOST, &acct_a, None, String::new(), Ok),
        (R, OTHER, "PUT", CHIME_HOST, &acct_b, None, chime_body(Some(90), Some(90)), Ok),
        (F, OTHER, "PUT", CHIME_HOST, &acct_b, None, chime_body(Some(6000), None), Rejected),
        (F, EXAMPLE, "PUT", MESSAGING_HOST, &chan_exp, Some(USER), exp(30, "CREATED_TIMESTAMP").to_string(), Ok),
        (R, EXAMPLE, "PUT", MESSAGING_HOST, &chan_exp, Some(USER), exp(60, "LAST_MESSAGE_TIMESTAMP").to_string(), Ok),
        (F, EXAMPLE, "GET", MESSAGING_HOST, &chan, Some(USER), String::new(), Ok),
        (R, OTHER, "PUT", IDENTITY_HOST, &app_ret, None, app_days.to_string(), Ok),
        (F, OTHER, "GET", IDENTITY_HOST, &app_ret, None, String::new(), Ok),
        (F, OTHER, "PUT", IDENTITY_HOST, &user_exp, None, exp(90, "CREATED_TIMESTAMP").to_string(), Ok),
    ];
    let mut v: Vec<(Request<Bytes>, End)> = aws_calls
        .into_iter()
        .map(|(mode, key, method, host, path, bearer, body, end)| {
            (aws(proxy, mode, key, method, host, path, bearer, &body), end)
        })
        .collect();
    #[rustfmt::skip]
    let slack_calls = [
        (F, SLACK_SET, slack_set_form("C1", 365), TOKEN_A, Ok),
        (R, SLACK_SET, slack_set_form("C1", 400), TOKEN_B, Ok),
        (F, SLACK_SET, slack_set_form("C1", 10), TOKEN_A, Denied),
        (R, SLACK_GET, channel_form("C1"), TOKEN_B, Ok),
        (F, SLACK_REMOVE, channel_form("C1"), TOKEN_A, Ok),
        (R, SLACK_SET, slack_set_form("C1", 45), TOKEN_A, Ok),
        (F, SLACK_SET, slack_set_form(COMMA_CHANNEL, 100), TOKEN_B, Ok),
        (R, SLACK_SET, "channel_id=C2&duration_days=0".to_string(), TOKEN_A, Rejected),
        (F, SLACK_SET, "channel_id=C2&duration_days=40000".to_string(), TOKEN_B, Rejected),
    ];
    for (mode, path, form, token, end) in slack_calls {
        v.push((slack(mode, path, &form, token), end));
    }
    for i in 0..16u32 {
        let (mode, token) = if i.is_multiple_of(2) {
            (F, TOKEN_A)
        } else {
            (R, TOKEN_B)
        };
        v.push((
            slack(mode, SLACK_SET, &slack_set_form(HISTORY_CHANNEL, 31 + i * 10), token),
            Ok,
        ));
    }
    v
}

/// Makes one call and checks the client got what `end` says.
async fn call(proxy: SocketAddr, req: Request<Bytes>, end: End) {
    let what = format!("{} {}", req.method(), req.uri());
    let slack = req.uri().path().starts_with("/api/");
    let resp = send(proxy, req).await;
    let body = String::from_utf8_lossy(&resp.body).into_owned();
    match (end, slack) {
        (End::Ok, false) => assert!((200..300).contains(&resp.status), "{what}: {} {body}", resp.status),
        (End::Ok, true) => assert_eq!(resp.json()["ok"], true, "{what}: {body}"),
        (End::Denied, false) => assert_eq!(resp.status, 403, "{what}: {body}"),
        (End::Denied, true) => assert_eq!(resp.json()["error"], "restricted_action", "{what}: {body}"),
        (End::Rejected, false) => assert_eq!(resp.status, 400, "{what}: {body}"),
        (End::Rejected, true) => assert_eq!(resp.json()["ok"], false, "{what}: {body}"),
    }
}

// ---------------------------------------------------------------------------------------------
// The shared trail
// ---------------------------------------------------------------------------------------------

struct Trail {
    db: PathBuf,
    admin: SocketAddr,
    /// `audit query --format json`, in `seq` order.
    events: Vec<Value>,
    /// What each call was expected to end as, in `seq` order.
    ends: Vec<End>,
}

/// The trail, generated once; its proxy and fake vendor keep running on their own thread.
fn trail() -> &'static Trail {
    static TRAIL: OnceLock<Trail> = OnceLock::new();
    TRAIL.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<(PathBuf, SocketAddr, Vec<End>)>();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let dir = tempfile::tempdir().expect("temporary directory");
                let fake = FakeVendor::start(vendor_opts()).await;
                let db = dir.path().join("audit.db");
                let proxy = start_proxy(&fake.url(), &db, Some(ADMIN_TOKEN)).await;
                let mut ends = Vec::new();
                for (req, end) in trail_calls(proxy.addr) {
                    call(proxy.addr, req, end).await;
                    ends.push(end);
                }
                tx.send((db, proxy.admin, ends)).expect("hand over the trail");
                // Serve the admin API for as long as the test process lives.
                let _keep = (dir, fake, proxy);
                std::future::pending::<()>().await;
            });
        });
        let (db, admin, ends) = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the trail was generated");
        let events = query_json(&db, &[]);
        assert_eq!(events.len(), ends.len(), "one event per call: {events:#?}");
        Trail {
            db,
            admin,
            events,
            ends,
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Running the binary
// ---------------------------------------------------------------------------------------------

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .env_remove("RETENTION_PROXY_CONFIG")
        .output()
        .expect("run the binary")
}

fn run_ok(args: &[&str]) -> String {
    let o = run(args);
    assert!(
        o.status.success(),
        "{args:?} failed ({:?}): {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).expect("UTF-8 output")
}

fn query_json(db: &Path, extra: &[&str]) -> Vec<Value> {
    let db = db.display().to_string();
    let mut a = vec!["audit", "query", "--db", db.as_str(), "--format", "json"];
    a.extend_from_slice(extra);
    match serde_json::from_str(&run_ok(&a)) {
        Ok(Value::Array(v)) => v,
        other => panic!("audit query --format json is not an array: {other:?}"),
    }
}

fn export(db: &Path, format: &str, extra: &[&str]) -> String {
    let db = db.display().to_string();
    let mut a = vec!["audit", "export", "--db", db.as_str(), "--format", format];
    a.extend_from_slice(extra);
    run_ok(&a)
}

fn ids(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["eventID"].as_str().unwrap_or("?").to_string())
        .collect()
}

/// Soft assertions: every failure of a test, reported at once.
#[derive(Default)]
struct Checks(Vec<String>);

impl Checks {
    fn eq<A: PartialEq<B> + std::fmt::Debug, B: std::fmt::Debug>(&mut self, what: &str, a: A, b: B) {
        if a != b {
            self.0.push(format!("{what}: got {a:?}, expected {b:?}"));
        }
    }

    fn ok(&mut self, what: &str, cond: bool, detail: impl std::fmt::Display) {
        if !cond {
            self.0.push(format!("{what}: {detail}"));
        }
    }

    #[track_caller]
    fn finish(self) {
        assert!(
            self.0.is_empty(),
            "{} check(s) failed:\n  - {}",
            self.0.len(),
            self.0.join("\n  - ")
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The trail itself
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trail_holds_every_kind_of_event() {
    let t = trail();
    let mut c = Checks::default();
    for (e, end) in t.events.iter().zip(&t.ends) {
        let want = match end {
            End::Ok => "forwarded",
            End::Denied => "denied",
            End::Rejected => "rejected",
        };
        c.eq(
            &format!("outcome of {}", e["eventID"]),
            e["outcome"].as_str(),
            Some(want),
        );
    }
    let modes: BTreeSet<&str> = t.events.iter().filter_map(|e| e["proxyMode"].as_str()).collect();
    c.eq("proxy modes", modes, BTreeSet::from(["forward", "reverse"]));
    let sources: BTreeSet<&str> = t.events.iter().filter_map(|e| e["eventSource"].as_str()).collect();
    c.eq("sources", sources.len(), 4);
    let seqs: Vec<u64> = t.events.iter().filter_map(|e| e["seq"].as_u64()).collect();
    c.ok(
        "seq ascending",
        seqs.windows(2).all(|w| w[0] < w[1]),
        format!("{seqs:?}"),
    );
    c.finish();
}

// ---------------------------------------------------------------------------------------------
// audit export
// ---------------------------------------------------------------------------------------------

fn opt<'a>(v: &'a Value, k: &str) -> Option<&'a Value> {
    v.get(k).filter(|x| !x.is_null())
}

/// One CloudTrail record against the `audit query` event it came from, field by field.
fn check_record(c: &mut Checks, rec: &Value, ev: &Value) {
    let id = ev["eventID"].as_str().unwrap_or("?");
    let w = |f: &str| format!("{id} {f}");
    for k in [
        "eventID",
        "eventName",
        "eventSource",
        "eventType",
        "readOnly",
        "requestID",
    ] {
        c.eq(&w(k), &rec[k], &ev[k]);
    }
    c.eq(
        &w("requestParameters"),
        opt(rec, "requestParameters"),
        opt(ev, "requestParameters"),
    );
    c.eq(
        &w("responseElements"),
        opt(rec, "responseElements"),
        opt(ev, "responseElements"),
    );
    c.eq(&w("awsRegion"), opt(rec, "awsRegion"), opt(ev, "awsRegion"));
    let t = ev["eventTime"].as_str().unwrap_or("");
    let want_time = format!("{}Z", t.get(..19).unwrap_or(""));
    c.eq(
        &w("eventTime (seconds, Z)"),
        rec["eventTime"].as_str(),
        Some(want_time.as_str()),
    );
    c.eq(
        &w("userIdentity.accessKeyId"),
        opt(&rec["userIdentity"], "accessKeyId"),
        opt(&ev["userIdentity"], "accessKeyId"),
    );
    c.eq(&w("errorCode"), opt(rec, "errorCode"), opt(ev, "errorCode"));
    let res_rec: Vec<(Value, Value)> = rec["resources"]
        .as_array()
        .map(|a| a.iter().map(|r| (r["ARN"].clone(), r["type"].clone())).collect())
        .unwrap_or_default();
    let res_ev: Vec<(Value, Value)> = ev["resources"]
        .as_array()
        .map(|a| a.iter().map(|r| (r["id"].clone(), r["type"].clone())).collect())
        .unwrap_or_default();
    c.eq(&w("resources[].ARN/type"), res_rec, res_ev);
    let extra = &rec["additionalEventData"];
    for k in ["changes", "guardrail", "outcome", "seq", "hash"] {
        c.eq(&w(&format!("additionalEventData.{k}")), &extra[k], &ev[k]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_cloudtrail_records_match_the_events_field_by_field() {
    let t = trail();
    let text = export(&t.db, "cloudtrail", &[]);
    let doc: Value = serde_json::from_str(&text).expect("the export is one JSON document");
    let records = doc["Records"].as_array().expect("{\"Records\": [...]}");
    assert_eq!(doc.as_object().map(|o| o.len()), Some(1), "only Records at the top");
    assert_eq!(records.len(), t.events.len());
    let mut c = Checks::default();
    for (rec, ev) in records.iter().zip(&t.events) {
        check_record(&mut c, rec, ev);
    }
    // The denied and rejected calls carry their error code.
    let codes: BTreeSet<&str> = records.iter().filter_map(|r| r["errorCode"].as_str()).collect();
    c.ok(
        "a denied call's errorCode",
        codes
            .iter()
            .any(|s| s.contains("Forbidden") || *s == "restricted_action"),
        format!("{codes:?}"),
    );
    c.finish();
}

fn gunzip(p: &Path) -> String {
    let mut s = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(p).expect("open export file"))
        .read_to_string(&mut s)
        .unwrap_or_else(|e| panic!("{} is not gzip text: {e}", p.display()));
    s
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_cloudtrail_to_a_directory_writes_gzip_log_files() {
    let t = trail();
    let dir = tempfile::tempdir().unwrap();
    let out = format!("{}/trail/", dir.path().display());
    let o = run(&[
        "audit",
        "export",
        "--db",
        &t.db.display().to_string(),
        "--format",
        "cloudtrail",
        "--out",
        &out,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let root = dir.path().join("trail");
    let files = files_under(&root);
    assert!(!files.is_empty(), "no files under {}", root.display());
    let mut c = Checks::default();
    let mut seen: Vec<Value> = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(&root).unwrap();
        let parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
        c.eq(&format!("{} depth YYYY/MM/DD/name", rel.display()), parts.len(), 4);
        if parts.len() != 4 {
            continue;
        }
        let name = &parts[3];
        // <account>_CloudTrail_<region>_<YYYYMMDDTHHmmZ>_<unique>.json.gz
        let fields: Vec<&str> = name.trim_end_matches(".json.gz").splitn(5, '_').collect();
        let well_formed = name.ends_with(".json.gz")
            && fields.len() == 5
            && fields[0].len() == 12
            && fields[0].bytes().all(|b| b.is_ascii_digit())
            && fields[1] == "CloudTrail"
            && !fields[2].is_empty()
            && fields[3].len() == 14
            && fields[3].as_bytes()[8] == b'T'
            && fields[3].ends_with('Z')
            && !fields[4].is_empty();
        c.ok(
            &format!("{name} is a CloudTrail log file name"),
            well_formed,
            "bad name",
        );
        if well_formed {
            let stamp = fields[3];
            c.eq(
                &format!("{name} date = directory"),
                &stamp[..8],
                format!("{}{}{}", parts[0], parts[1], parts[2]),
            );
        }
        let doc: Value = match serde_json::from_str(&gunzip(f)) {
            Ok(v) => v,
            Err(e) => {
                c.ok(&format!("{name} parses"), false, e);
                continue;
            }
        };
        for r in doc["Records"].as_array().cloned().unwrap_or_default() {
            let time = r["eventTime"].as_str().unwrap_or("").to_string();
            c.eq(
                &format!("{name}: record date = directory"),
                time.get(..10).map(|d| d.replace('-', "/")),
                Some(format!("{}/{}/{}", parts[0], parts[1], parts[2])),
            );
            if well_formed {
                let stamp = fields[3];
                c.eq(
                    &format!("{name}: record hour = file hour"),
                    time.get(11..13),
                    Some(&stamp[9..11]),
                );
            }
            seen.push(r);
        }
    }
    c.eq("records across files", seen.len(), t.events.len());
    // An existing directory named without the trailing slash gets the same files.
    let plain_dir = dir.path().join("existing");
    std::fs::create_dir(&plain_dir).unwrap();
    let o = run(&[
        "audit",
        "export",
        "--db",
        &t.db.display().to_string(),
        "--format",
        "cloudtrail",
        "--out",
        &plain_dir.display().to_string(),
    ]);
    c.ok(
        "export to an existing directory",
        o.status.success(),
        String::from_utf8_lossy(&o.stderr),
    );
    let again: usize = files_under(&plain_dir)
        .iter()
        .map(|f| serde_json::from_str::<Value>(&gunzip(f)).map_or(0, |d| d["Records"].as_array().map_or(0, Vec::len)))
        .sum();
    c.eq("records under an existing directory", again, t.events.len());
    let mut got = ids(&seen);
    got.sort();
    let mut want = ids(&t.events);
    want.sort();
    c.eq("every event exported exactly once", got, want);
    let by_id: HashMap<String, &Value> = t
        .events
        .iter()
        .map(|e| (e["eventID"].as_str().unwrap().to_string(), e))
        .collect();
    for r in &seen {
        if let Some(ev) = r["eventID"].as_str().and_then(|i| by_id.get(i)) {
            check_record(&mut c, r, ev);
        }
    }
    c.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_jsonl_is_one_event_per_line() {
    let t = trail();
    let text = export(&t.db, "jsonl", &[]);
    let lines: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {e}: {l}")))
        .collect();
    assert_eq!(lines, t.events, "jsonl export differs from audit query --format json");
    // --out FILE writes the same bytes, for each single-stream format.
    let dir = tempfile::tempdir().unwrap();
    for format in ["jsonl", "csv", "cloudtrail"] {
        let file = dir.path().join(format!("export.{format}"));
        let printed = export(&t.db, format, &[]);
        let o = run_ok(&[
            "audit",
            "export",
            "--db",
            &t.db.display().to_string(),
            "--format",
            format,
            "--out",
            &file.display().to_string(),
        ]);
        assert!(o.is_empty(), "nothing on stdout with --out: {o}");
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            printed,
            "--format {format} --out FILE"
        );
    }
}

/// Parses RFC 4180 CSV (quoted fields may hold commas, quotes and newlines).
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(ch) = chars.next() {
        match (ch, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', true) => quoted = false,
            ('"', false) if cur.is_empty() => quoted = true,
            (',', false) => row.push(std::mem::take(&mut cur)),
            ('\r', false) => {}
            ('\n', false) => {
                row.push(std::mem::take(&mut cur));
                rows.push(std::mem::take(&mut row));
            }
            (ch, _) => cur.push(ch),
        }
    }
    if !cur.is_empty() || !row.is_empty() {
        row.push(cur);
        rows.push(row);
    }
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_csv_has_a_header_and_one_quoted_row_per_event() {
    let t = trail();
    let text = export(&t.db, "csv", &[]);
    let rows = parse_csv(&text);
    assert!(!rows.is_empty(), "empty CSV");
    let header = &rows[0];
    assert_eq!(rows.len(), t.events.len() + 1, "header + one row per event:\n{text}");
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("no {name} column in {header:?}"))
    };
    let (id, seq, resource, name) = (col("eventID"), col("seq"), col("resource"), col("eventName"));
    let mut c = Checks::default();
    for (row, ev) in rows[1..].iter().zip(&t.events) {
        c.eq("columns per row", row.len(), header.len());
        if row.len() != header.len() {
            continue;
        }
        c.eq("eventID", row[id].as_str(), ev["eventID"].as_str().unwrap());
        c.eq("seq", row[seq].clone(), ev["seq"].to_string());
        c.eq("eventName", row[name].as_str(), ev["eventName"].as_str().unwrap());
    }
    let comma_rows: Vec<&Vec<String>> = rows[1..]
        .iter()
        .filter(|r| r.get(resource).is_some_and(|v| v == COMMA_CHANNEL))
        .collect();
    c.eq("rows whose resource holds a comma", comma_rows.len(), 1);
    c.ok(
        "the comma field is quoted on the wire",
        text.contains(&format!("\"{COMMA_CHANNEL}\"")),
        "no quoted field",
    );
    c.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_since_and_until_select_a_time_window() {
    let t = trail();
    let n = t.events.len();
    let mut c = Checks::default();
    for k in [n / 3, n / 2, 2 * n / 3] {
        let at = t.events[k]["eventTime"].as_str().unwrap();
        let after: Vec<Value> = t
            .events
            .iter()
            .filter(|e| e["eventTime"].as_str().unwrap() >= at)
            .cloned()
            .collect();
        let before: Vec<Value> = t
            .events
            .iter()
            .filter(|e| e["eventTime"].as_str().unwrap() < at)
            .cloned()
            .collect();
        let got = |args: &[&str]| -> Vec<String> {
            export(&t.db, "jsonl", args)
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| {
                    serde_json::from_str::<Value>(l).unwrap()["eventID"]
                        .as_str()
                        .unwrap()
                        .to_string()
                })
                .collect()
        };
        c.eq(&format!("--since {at}"), got(&["--since", at]), ids(&after));
        c.eq(&format!("--until {at}"), got(&["--until", at]), ids(&before));
        let first = t.events[0]["eventTime"].as_str().unwrap();
        let window: Vec<Value> = t
            .events
            .iter()
            .filter(|e| {
                let x = e["eventTime"].as_str().unwrap();
                x >= first && x < at
            })
            .cloned()
            .collect();
        c.eq(
            &format!("--since {first} --until {at}"),
            got(&["--since", first, "--until", at]),
            ids(&window),
        );
        let doc: Value = serde_json::from_str(&export(&t.db, "cloudtrail", &["--since", at])).unwrap();
        c.eq(
            &format!("cloudtrail --since {at}"),
            ids(doc["Records"].as_array().unwrap()),
            ids(&after),
        );
    }
    // Relative ages: everything is younger than a day.
    c.eq(
        "--since 24h",
        export(&t.db, "jsonl", &["--since", "24h"]).lines().count(),
        n,
    );
    c.eq(
        "--until 24h",
        export(&t.db, "jsonl", &["--until", "24h"]).lines().count(),
        0,
    );
    c.finish();
}

// ---------------------------------------------------------------------------------------------
// audit history and audit state
// ---------------------------------------------------------------------------------------------

fn touches(e: &Value, resource: &str) -> bool {
    let in_list = |list: &str, key: &str| {
        e[list]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x[key].as_str() == Some(resource)))
    };
    in_list("resources", "id") || in_list("changes", "resource")
}

fn applied(e: &Value) -> bool {
    e["outcome"] == "forwarded"
        && e["httpStatus"].as_u64().is_some_and(|s| (200..300).contains(&s))
        && e["errorCode"].is_null()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_lists_one_resource_in_order_with_chained_values() {
    let t = trail();
    let db = t.db.display().to_string();
    let mut c = Checks::default();
    for resource in [HISTORY_CHANNEL, "C1", ACCOUNT_A, CHANNEL, COMMA_CHANNEL] {
        let out = run_ok(&[
            "audit",
            "history",
            "--db",
            &db,
            "--resource",
            resource,
            "--format",
            "json",
        ]);
        let hist: Vec<Value> = serde_json::from_str(&out).unwrap_or_else(|e| panic!("history is not JSON: {e}\n{out}"));
        let want: Vec<Value> = t.events.iter().filter(|e| touches(e, resource)).cloned().collect();
        c.eq(&format!("{resource}: events"), ids(&hist), ids(&want));
        let seqs: Vec<u64> = hist.iter().filter_map(|e| e["seq"].as_u64()).collect();
        c.ok(
            &format!("{resource}: seq order"),
            seqs.windows(2).all(|w| w[0] < w[1]),
            format!("{seqs:?}"),
        );
        // previous → new: each change's previous is the value the last applied change set.
        let mut current: HashMap<String, Value> = HashMap::new();
        let mut changes_seen = 0;
        for e in &hist {
            for ch in e["changes"].as_array().cloned().unwrap_or_default() {
                c.eq(
                    &format!("{resource}: change only of this resource"),
                    ch["resource"].as_str(),
                    Some(resource),
                );
                let target = ch["target"].as_str().unwrap_or("").to_string();
                let prev = current.get(&target).cloned().unwrap_or(Value::Null);
                c.eq(
                    &format!("{resource} seq {}: {target} previous", e["seq"]),
                    &ch["previous"],
                    &prev,
                );
                changes_seen += 1;
                if applied(e) {
                    current.insert(target, ch["new"].clone());
                }
            }
        }
        c.ok(&format!("{resource}: has changes"), changes_seen > 0, "none");
    }
    // The 16 changes of the history channel chain exactly.
    let out = run_ok(&[
        "audit",
        "history",
        "--db",
        &db,
        "--resource",
        HISTORY_CHANNEL,
        "--format",
        "json",
    ]);
    let hist: Vec<Value> = serde_json::from_str(&out).unwrap();
    let pairs: Vec<(Value, Value)> = hist
        .iter()
        .map(|e| (e["changes"][0]["previous"].clone(), e["changes"][0]["new"].clone()))
        .collect();
    let want: Vec<(Value, Value)> = (0..16u32)
        .map(|i| {
            (
                if i == 0 { Value::Null } else { json!(31 + (i - 1) * 10) },
                json!(31 + i * 10),
            )
        })
        .collect();
    c.eq("history channel previous → new", pairs, want);
    // A resource never seen has no history (and that is not an error).
    let out = run_ok(&[
        "audit",
        "history",
        "--db",
        &db,
        "--resource",
        "C0NEVERSEEN",
        "--format",
        "json",
    ]);
    c.eq(
        "unknown resource",
        serde_json::from_str::<Value>(&out).ok(),
        Some(json!([])),
    );
    c.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_lists_the_last_value_of_every_setting() {
    let t = trail();
    let out = run_ok(&[
        "audit",
        "state",
        "--db",
        &t.db.display().to_string(),
        "--format",
        "json",
    ]);
    let rows: Vec<Value> = serde_json::from_str(&out).unwrap_or_else(|e| panic!("state is not JSON: {e}\n{out}"));
    let got: BTreeMap<(String, String), Value> = rows
        .iter()
        .map(|r| {
            (
                (
                    r["resource"].as_str().unwrap_or("").to_string(),
                    r["target"].as_str().unwrap_or("").to_string(),
                ),
                r["value"].clone(),
            )
        })
        .collect();
    let mut c = Checks::default();
    c.eq("one row per (resource, target)", got.len(), rows.len());
    // Replaying the applied changes gives the same answer.
    let mut want: BTreeMap<(String, String), Value> = BTreeMap::new();
    for e in t.events.iter().filter(|e| applied(e)) {
        for ch in e["changes"].as_array().cloned().unwrap_or_default() {
            want.insert(
                (
                    ch["resource"].as_str().unwrap().to_string(),
                    ch["target"].as_str().unwrap().to_string(),
                ),
                ch["new"].clone(),
            );
        }
    }
    c.eq("state = replay of applied changes", &got, &want);
    let key = |r: &str, t: &str| (r.to_string(), t.to_string());
    c.eq("C1", got.get(&key("C1", "slack.channel_retention")), Some(&json!(45)));
    c.eq(
        "history channel",
        got.get(&key(HISTORY_CHANNEL, "slack.channel_retention")),
        Some(&json!(181)),
    );
    c.eq(
        "account A room",
        got.get(&key(ACCOUNT_A, "chime.room_retention")),
        Some(&json!("off")),
    );
    c.eq(
        "account B room",
        got.get(&key(ACCOUNT_B, "chime.room_retention")),
        Some(&json!(90)),
    );
    c.eq(
        "channel",
        got.get(&key(CHANNEL, "chime_sdk.channel_expiration")),
        Some(&json!(60)),
    );
    c.eq(
        "C2 (only rejected calls)",
        got.get(&key("C2", "slack.channel_retention")),
        None,
    );
    let known: BTreeSet<&str> = t.events.iter().filter_map(|e| e["eventID"].as_str()).collect();
    for r in &rows {
        c.ok(
            "eventID of a row is an event",
            r["eventID"].as_str().is_some_and(|i| known.contains(i)),
            r,
        );
    }
    c.finish();
}

// ---------------------------------------------------------------------------------------------
// GET /v1/events
// ---------------------------------------------------------------------------------------------

async fn admin_get(admin: SocketAddr, path_and_query: &str, token: Option<&str>) -> (u16, Value) {
    let mut b = Request::builder().method("GET").uri(path_and_query);
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    let r = send(admin, b.body(Bytes::new()).unwrap()).await;
    (r.status, serde_json::from_slice(&r.body).unwrap_or(Value::Null))
}

fn q(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_events_applies_each_filter() {
    let t = trail();
    let ev = &t.events;
    let mut c = Checks::default();
    let fingerprint_a = ev
        .iter()
        .find(|e| e["eventSource"] == "slack.com" && e["proxyMode"] == "forward")
        .and_then(|e| e["userIdentity"]["tokenFingerprint"].as_str())
        .unwrap()
        .to_string();
    let mid = ev[ev.len() / 2]["eventTime"].as_str().unwrap().to_string();
    type Pred = Box<dyn Fn(&Value) -> bool>;
    let fp = fingerprint_a.clone();
    let m1 = mid.clone();
    let m2 = mid.clone();
    let cases: Vec<(String, Pred)> = vec![
        (
            "event_name=PutRetentionSettings".to_string(),
            Box::new(|e: &Value| e["eventName"] == "PutRetentionSettings"),
        ),
        (
            "source=slack.com".to_string(),
            Box::new(|e: &Value| e["eventSource"] == "slack.com"),
        ),
        (
            "source=chime_identity".to_string(),
            Box::new(|e: &Value| e["eventSource"] == "identity-chime.amazonaws.com"),
        ),
        (
            format!("actor={OTHER_KEY}"),
            Box::new(|e: &Value| e["userIdentity"]["accessKeyId"] == OTHER_KEY),
        ),
        (
            format!("actor={}", q(&fingerprint_a)),
            Box::new(move |e: &Value| e["userIdentity"]["tokenFingerprint"] == fp.as_str()),
        ),
        (
            format!("actor={}", q(USER)),
            Box::new(|e: &Value| e["userIdentity"]["chimeBearer"] == USER),
        ),
        (
            format!("resource={}", q(CHANNEL)),
            Box::new(|e: &Value| touches(e, CHANNEL)),
        ),
        (
            format!("resource={}", q(COMMA_CHANNEL)),
            Box::new(|e: &Value| touches(e, COMMA_CHANNEL)),
        ),
        (
            format!("resource={ACCOUNT_B}"),
            Box::new(|e: &Value| touches(e, ACCOUNT_B)),
        ),
        (
            "decision=deny".to_string(),
            Box::new(|e: &Value| e["guardrail"]["decision"] == "deny"),
        ),
        (
            format!("since={}", q(&mid)),
            Box::new(move |e: &Value| e["eventTime"].as_str().unwrap() >= m1.as_str()),
        ),
        (
            format!("until={}", q(&mid)),
            Box::new(move |e: &Value| e["eventTime"].as_str().unwrap() < m2.as_str()),
        ),
        (
            "source=slack&decision=allow&since=1h".to_string(),
            Box::new(|e: &Value| e["eventSource"] == "slack.com" && e["guardrail"]["decision"] == "allow"),
        ),
    ];
    for (query, pred) in cases {
        let want: Vec<Value> = ev.iter().filter(|e| pred(e)).cloned().collect();
        c.ok(
            &format!("{query}: selects something"),
            !want.is_empty(),
            "fixture selects nothing",
        );
        let (status, body) = admin_get(t.admin, &format!("/v1/events?{query}"), Some(ADMIN_TOKEN)).await;
        c.eq(&format!("{query}: status"), status, 200);
        let got = body["events"].as_array().cloned().unwrap_or_default();
        c.eq(&format!("{query}: events"), ids(&got), ids(&want));
        c.ok(
            &format!("{query}: next_cursor"),
            body["next_cursor"].is_null(),
            &body["next_cursor"],
        );
    }
    // The events are the same merged events `audit query` prints.
    let (_, body) = admin_get(t.admin, "/v1/events?limit=1000", Some(ADMIN_TOKEN)).await;
    c.eq(
        "unfiltered = audit query",
        body["events"].as_array().cloned().unwrap_or_default(),
        ev.clone(),
    );
    c.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_events_pages_with_limit_and_cursor() {
    let t = trail();
    let mut c = Checks::default();
    for limit in [1usize, 7, 13, t.events.len(), t.events.len() + 1] {
        let mut got: Vec<Value> = Vec::new();
        let mut cursor: Option<String> = None;
        for page in 0.. {
            assert!(page <= t.events.len() + 1, "limit {limit}: pagination does not end");
            let url = match &cursor {
                Some(cur) => format!("/v1/events?limit={limit}&cursor={}", q(cur)),
                None => format!("/v1/events?limit={limit}"),
            };
            let (status, body) = admin_get(t.admin, &url, Some(ADMIN_TOKEN)).await;
            assert_eq!(status, 200, "{url}: {body}");
            let events = body["events"].as_array().cloned().unwrap_or_default();
            c.ok(
                &format!("limit {limit}: page size"),
                events.len() <= limit,
                events.len(),
            );
            got.extend(events);
            match body["next_cursor"].as_str() {
                Some(n) => cursor = Some(n.to_string()),
                None => break,
            }
        }
        c.eq(
            &format!("limit {limit}: all events once, in order"),
            ids(&got),
            ids(&t.events),
        );
    }
    c.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_events_paging_neither_skips_nor_repeats_while_events_are_inserted() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeVendor::start(vendor_opts()).await;
    let proxy = start_proxy(&fake.url(), &dir.path().join("audit.db"), None).await;
    let addr = proxy.addr;
    let mut n = 0u32;
    let mut insert = move |count: u32| {
        let reqs: Vec<Request<Bytes>> = (0..count)
            .map(|i| {
                let mode = if (n + i).is_multiple_of(2) {
                    Mode::Forward
                } else {
                    Mode::Reverse
                };
                slack(
                    mode,
                    SLACK_SET,
                    &slack_set_form(&format!("C0PAGE{}", (n + i) % 5), 31 + n + i),
                    TOKEN_A,
                )
            })
            .collect();
        n += count;
        async move {
            let calls = reqs.into_iter().map(|r| call(addr, r, End::Ok));
            futures_join_all(calls).await;
        }
    };
    insert(12).await;
    let limit = 3;
    let mut got: Vec<Value> = Vec::new();
    let mut cursor: Option<String> = None;
    let mut page = 0;
    loop {
        page += 1;
        assert!(page < 100, "pagination does not end");
        let url = match &cursor {
            Some(cur) => format!("/v1/events?limit={limit}&cursor={}", q(cur)),
            None => format!("/v1/events?limit={limit}"),
        };
        // For the first pages, two more calls run while the page is read.
        let fetch = admin_get(proxy.admin, &url, None);
        let (status, body) = if page <= 4 {
            let (r, ()) = tokio::join!(fetch, insert(2));
            r
        } else {
            fetch.await
        };
        assert_eq!(status, 200, "{url}: {body}");
        got.extend(body["events"].as_array().cloned().unwrap_or_default());
        match body["next_cursor"].as_str() {
            Some(n) => cursor = Some(n.to_string()),
            None => break,
        }
    }
    let all = query_json(&proxy.db, &[]);
    assert_eq!(all.len(), 20);
    let got_ids = ids(&got);
    let unique: BTreeSet<&String> = got_ids.iter().collect();
    assert_eq!(unique.len(), got_ids.len(), "an event was listed twice: {got_ids:?}");
    assert_eq!(got_ids, ids(&all), "pages skipped or reordered events");
    proxy.stop().await;
}

/// Runs futures concurrently and waits for all of them.
async fn futures_join_all<F: std::future::Future<Output = ()> + Send + 'static>(fs: impl Iterator<Item = F>) {
    let mut set = tokio::task::JoinSet::new();
    for f in fs {
        set.spawn(f);
    }
    while let Some(r) = set.join_next().await {
        r.expect("a call panicked");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_events_bad_parameters_are_400_json_errors() {
    let t = trail();
    let mut c = Checks::default();
    for query in [
        "limit=0",
        "limit=abc",
        "limit=1001",
        "limit=-1",
        "since=yesterday",
        "until=5y",
        "cursor=not-a-cursor",
        "bogus=1",
    ] {
        let (status, body) = admin_get(t.admin, &format!("/v1/events?{query}"), Some(ADMIN_TOKEN)).await;
        c.eq(&format!("{query}: status"), status, 400);
        c.ok(
            &format!("{query}: JSON error"),
            body["error"].as_str().is_some_and(|s| !s.is_empty()),
            &body,
        );
    }
    c.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_events_needs_the_admin_token() {
    let t = trail();
    let (status, body) = admin_get(t.admin, "/v1/events", None).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.get("events").is_none(), "events leaked without a token: {body}");
    let (status, _) = admin_get(t.admin, "/v1/events", Some("wrong-token")).await;
    assert_eq!(status, 401);
    let r = send(
        t.admin,
        Request::builder()
            .uri("/v1/events")
            .header("authorization", format!("Basic {ADMIN_TOKEN}"))
            .body(Bytes::new())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 401, "the token only as a bearer");
    let (status, body) = admin_get(t.admin, "/v1/events", Some(ADMIN_TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["events"].as_array().map(Vec::len), Some(t.events.len()));
}

// ---------------------------------------------------------------------------------------------
// LookupEvents
// ---------------------------------------------------------------------------------------------

async fn lookup_raw(admin: SocketAddr, input: &Value, token: Option<&str>) -> (u16, Value) {
    let mut b = Request::builder()
        .method("POST")
        .uri("/")
        .header("x-amz-target", LOOKUP_TARGET)
        .header("content-type", "application/x-amz-json-1.1");
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    let r = send(admin, b.body(Bytes::from(input.to_string())).unwrap()).await;
    (r.status, serde_json::from_slice(&r.body).unwrap_or(Value::Null))
}

async fn lookup(admin: SocketAddr, input: Value) -> Value {
    let (status, body) = lookup_raw(admin, &input, Some(ADMIN_TOKEN)).await;
    assert_eq!(status, 200, "LookupEvents {input}: {body}");
    body
}

/// Every page of a lookup, following NextToken.
async fn lookup_all(admin: SocketAddr, mut input: Value) -> Vec<Value> {
    let mut out = Vec::new();
    for _ in 0..200 {
        let body = lookup(admin, input.clone()).await;
        out.extend(body["Events"].as_array().cloned().unwrap_or_default());
        match body["NextToken"].as_str() {
            Some(tok) => input["NextToken"] = json!(tok),
            None => return out,
        }
    }
    panic!("LookupEvents paging does not end");
}

fn lookup_ids(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["EventId"].as_str().unwrap_or("?").to_string())
        .collect()
}

fn newest_first(events: &[Value]) -> Vec<String> {
    let mut v = ids(events);
    v.reverse();
    v
}

/// Epoch milliseconds of an audit time.
fn epoch_ms(t: &str) -> i64 {
    let t = time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).unwrap();
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_events_have_the_cloudtrail_shape() {
    let t = trail();
    let all = lookup_all(t.admin, json!({"MaxResults": 50})).await;
    assert_eq!(lookup_ids(&all), newest_first(&t.events), "all events, newest first");
    let by_id: HashMap<&str, &Value> = t.events.iter().map(|e| (e["eventID"].as_str().unwrap(), e)).collect();
    let mut c = Checks::default();
    for le in &all {
        let id = le["EventId"].as_str().unwrap_or("?");
        let Some(ev) = by_id.get(id) else { continue };
        c.eq(&format!("{id} EventName"), &le["EventName"], &ev["eventName"]);
        c.eq(&format!("{id} EventSource"), &le["EventSource"], &ev["eventSource"]);
        let ro = if ev["readOnly"] == true { "true" } else { "false" };
        c.eq(&format!("{id} ReadOnly"), le["ReadOnly"].as_str(), Some(ro));
        c.eq(
            &format!("{id} AccessKeyId"),
            opt(le, "AccessKeyId"),
            opt(&ev["userIdentity"], "accessKeyId"),
        );
        let when = le["EventTime"].as_f64().unwrap_or(0.0);
        let want = epoch_ms(ev["eventTime"].as_str().unwrap()) as f64 / 1000.0;
        c.ok(
            &format!("{id} EventTime"),
            (when - want).abs() < 0.0015,
            format!("{when} vs {want}"),
        );
        c.ok(
            &format!("{id} Username"),
            le["Username"].as_str().is_some_and(|u| !u.is_empty()),
            &le["Username"],
        );
        let res: Vec<(Value, Value)> = le["Resources"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|r| (r["ResourceType"].clone(), r["ResourceName"].clone()))
                    .collect()
            })
            .unwrap_or_default();
        let want_res: Vec<(Value, Value)> = ev["resources"]
            .as_array()
            .map(|a| a.iter().map(|r| (r["type"].clone(), r["id"].clone())).collect())
            .unwrap_or_default();
        c.eq(&format!("{id} Resources"), res, want_res);
        match le["CloudTrailEvent"].as_str().map(serde_json::from_str::<Value>) {
            Some(Ok(ct)) => {
                c.eq(
                    &format!("{id} CloudTrailEvent.eventID"),
                    ct["eventID"].as_str(),
                    Some(id),
                );
                check_record(&mut c, &ct, ev);
            }
            other => c.ok(
                &format!("{id} CloudTrailEvent is a JSON string"),
                false,
                format!("{other:?}"),
            ),
        }
    }
    c.finish();
}

/// Looks events up by each `(attribute, value)` and checks the answer is exactly the events of
/// the full listing whose own field equals the value (as CloudTrail selects them), newest first.
async fn check_lookup_attributes(c: &mut Checks, admin: SocketAddr, all: &[Value], attrs: Vec<(&str, String)>) {
    for (key, value) in attrs {
        // The events of the full listing whose own field matches, as CloudTrail selects them.
        let want: Vec<Value> = all
            .iter()
            .filter(|e| match key {
                "ResourceName" => e["Resources"]
                    .as_array()
                    .is_some_and(|r| r.iter().any(|x| x["ResourceName"] == value.as_str())),
                k => e[k] == value.as_str(),
            })
            .cloned()
            .collect();
        let fingerprint_as_key = key == "AccessKeyId" && value.starts_with("hmac-sha256:");
        c.ok(
            &format!("{key}={value}: fixture selects something"),
            !want.is_empty() || fingerprint_as_key,
            "nothing",
        );
        let got = lookup_all(
            admin,
            json!({"LookupAttributes": [{"AttributeKey": key, "AttributeValue": value}], "MaxResults": 50}),
        )
        .await;
        let extra: Vec<String> = got
            .iter()
            .filter(|g| !want.iter().any(|w| w["EventId"] == g["EventId"]))
            .map(|g| format!("{} {} ({key} {:?})", g["EventId"], g["EventName"], g.get(key)))
            .collect();
        c.ok(
            &format!("{key}={value}: no other events"),
            extra.is_empty(),
            format!("{extra:?}"),
        );
        c.eq(
            &format!("{key}={value}: events newest first"),
            lookup_ids(&got),
            lookup_ids(&want),
        );
    }
}

/// The Username of a Slack event (its token fingerprint) and one event id of the full listing.
async fn lookup_listing(admin: SocketAddr) -> (Vec<Value>, String, String) {
    let all = lookup_all(admin, json!({})).await;
    let slack_user = all
        .iter()
        .find(|e| e["EventSource"] == "slack.com")
        .and_then(|e| e["Username"].as_str())
        .unwrap()
        .to_string();
    let some_id = all[all.len() / 2]["EventId"].as_str().unwrap().to_string();
    (all, slack_user, some_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_by_event_resource_and_read_only_attributes() {
    let t = trail();
    let (all, _, some_id) = lookup_listing(t.admin).await;
    let attrs: Vec<(&str, String)> = vec![
        ("EventName", "admin.conversations.setCustomRetention".into()),
        ("EventName", "DescribeChannel".into()),
        ("EventSource", "messaging-chime.amazonaws.com".into()),
        ("EventSource", "slack.com".into()),
        ("ResourceName", ACCOUNT_A.into()),
        ("ResourceName", CHANNEL.into()),
        ("ResourceName", "C1".into()),
        ("ReadOnly", "true".into()),
        ("ReadOnly", "false".into()),
        ("EventId", some_id),
    ];
    let mut c = Checks::default();
    check_lookup_attributes(&mut c, t.admin, &all, attrs).await;
    c.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_by_username_and_access_key_id_match_that_field_only() {
    let t = trail();
    let (all, slack_user, _) = lookup_listing(t.admin).await;
    let attrs: Vec<(&str, String)> = vec![
        ("Username", slack_user.clone()),
        ("Username", USER.into()),
        ("Username", OTHER_KEY.into()),
        // The example key signed calls with and without a bearer; with one, the bearer is the
        // Username the endpoint reports.
        ("Username", EXAMPLE_ACCESS_KEY_ID.into()),
        ("AccessKeyId", OTHER_KEY.into()),
        ("AccessKeyId", EXAMPLE_ACCESS_KEY_ID.into()),
        // A token fingerprint is a Username, never an AccessKeyId.
        ("AccessKeyId", slack_user),
    ];
    let mut c = Checks::default();
    check_lookup_attributes(&mut c, t.admin, &all, attrs).await;
    c.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_time_window_and_paging() {
    let t = trail();
    let mut c = Checks::default();
    // Whole seconds: a window around every event returns them all.
    let ms_of = |e: &Value| epoch_ms(e["eventTime"].as_str().unwrap());
    let first = ms_of(&t.events[0]) / 1000;
    let last = ms_of(&t.events[t.events.len() - 1]) / 1000;
    let got = lookup_all(t.admin, json!({"StartTime": first, "EndTime": last + 1})).await;
    c.eq(
        "whole-second window around the trail",
        lookup_ids(&got),
        newest_first(&t.events),
    );
    // Sub-second windows with boundaries half a millisecond outside events k and j.
    let n = t.events.len();
    for (k, j) in [(0, n - 1), (n / 4, n / 2), (n / 2, n / 2), (n - 1, n - 1)] {
        let (lo, hi) = (ms_of(&t.events[k]), ms_of(&t.events[j]));
        let want: Vec<Value> = t
            .events
            .iter()
            .filter(|e| (lo..=hi).contains(&ms_of(e)))
            .cloned()
            .collect();
        let (start, end) = ((lo as f64 - 0.5) / 1000.0, (hi as f64 + 0.5) / 1000.0);
        let got = lookup_all(t.admin, json!({"StartTime": start, "EndTime": end})).await;
        c.eq(
            &format!("StartTime {start} EndTime {end}"),
            lookup_ids(&got),
            newest_first(&want),
        );
    }
    let got = lookup_all(t.admin, json!({"StartTime": last + 10})).await;
    c.eq("StartTime after every event", got.len(), 0);
    // Paging: MaxResults + NextToken, newest first, nothing repeated or skipped.
    for max in [1u64, 4, 7, 50] {
        let mut seen: Vec<Value> = Vec::new();
        let mut input = json!({"MaxResults": max});
        let mut pages = 0;
        loop {
            pages += 1;
            assert!(pages < 200);
            let body = lookup(t.admin, input.clone()).await;
            let events = body["Events"].as_array().cloned().unwrap_or_default();
            c.ok(
                &format!("MaxResults {max}: page size"),
                events.len() as u64 <= max,
                events.len(),
            );
            seen.extend(events);
            match body["NextToken"].as_str() {
                Some(tok) => input["NextToken"] = json!(tok),
                None => break,
            }
        }
        c.eq(
            &format!("MaxResults {max}: every event once, newest first"),
            lookup_ids(&seen),
            newest_first(&t.events),
        );
    }
    // Paging inside a filter.
    let slack_all: Vec<Value> = t
        .events
        .iter()
        .filter(|e| e["eventSource"] == "slack.com")
        .cloned()
        .collect();
    let got = lookup_all(
        t.admin,
        json!({"LookupAttributes": [{"AttributeKey": "EventSource", "AttributeValue": "slack.com"}], "MaxResults": 4}),
    )
    .await;
    c.eq("filtered paging", lookup_ids(&got), newest_first(&slack_all));
    c.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_end_time_includes_an_event_at_exactly_that_time() {
    // EndTime is inclusive ("at or before"): a window [EventTime, EventTime] built from the
    // EventTime LookupEvents itself returned must contain that event.
    let t = trail();
    let all = lookup_all(t.admin, json!({})).await;
    let mut missing = Vec::new();
    for e in &all {
        let at = e["EventTime"].clone();
        let got = lookup_all(t.admin, json!({"StartTime": at, "EndTime": at})).await;
        if !got.iter().any(|g| g["EventId"] == e["EventId"]) {
            missing.push(format!("{} at {at}", e["EventId"]));
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} events are not returned for StartTime = EndTime = their own EventTime: {missing:?}",
        missing.len(),
        all.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_errors_are_cloudtrail_exceptions() {
    let t = trail();
    let mut c = Checks::default();
    let cases = [
        (
            json!({"LookupAttributes": [
                {"AttributeKey": "EventName", "AttributeValue": "PutRetentionSettings"},
                {"AttributeKey": "EventSource", "AttributeValue": "chime.amazonaws.com"}]}),
            "InvalidLookupAttributesException",
        ),
        (
            json!({"LookupAttributes": [{"AttributeKey": "Colour", "AttributeValue": "blue"}]}),
            "InvalidLookupAttributesException",
        ),
        (
            json!({"LookupAttributes": [{"AttributeKey": "ReadOnly", "AttributeValue": "maybe"}]}),
            "InvalidLookupAttributesException",
        ),
        (json!({"MaxResults": 0}), "InvalidMaxResultsException"),
        (json!({"MaxResults": 51}), "InvalidMaxResultsException"),
        (json!({"NextToken": "garbage"}), "InvalidNextTokenException"),
        (
            json!({"StartTime": 2_000_000_000, "EndTime": 1_000_000_000}),
            "InvalidTimeRangeException",
        ),
    ];
    for (input, code) in cases {
        let (status, body) = lookup_raw(t.admin, &input, Some(ADMIN_TOKEN)).await;
        c.eq(&format!("{input}: status"), status, 400);
        let ty = body["__type"].as_str().unwrap_or("");
        c.ok(&format!("{input}: __type"), ty.ends_with(code), format!("{body}"));
        c.ok(
            &format!("{input}: message"),
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            format!("{body}"),
        );
    }
    // The admin token guards LookupEvents too.
    let (status, body) = lookup_raw(t.admin, &json!({}), None).await;
    c.ok(
        "without the admin token",
        status >= 400 && body.get("Events").is_none(),
        format!("{status} {body}"),
    );
    // The token as the session token (what an AWS client can send) works.
    let r = send(
        t.admin,
        Request::builder()
            .method("POST")
            .uri("/")
            .header("x-amz-target", LOOKUP_TARGET)
            .header("content-type", "application/x-amz-json-1.1")
            .header("x-amz-security-token", ADMIN_TOKEN)
            .body(Bytes::from_static(b"{\"MaxResults\": 1}"))
            .unwrap(),
    )
    .await;
    c.eq("session-token auth", r.status, 200);
    c.eq("one event", r.json()["Events"].as_array().map(Vec::len), Some(1));
    c.finish();
}
