//! The shared trail of the compliance-query tests (SPEC §5, §7): a few dozen varied events
//! (both modes, four sources, two AWS keys and two Slack tokens, allowed, denied by a guardrail
//! and rejected calls, a resource changed sixteen times, a channel id holding a comma),
//! generated once per test binary by an in-process proxy with its admin listener in front of
//! the fake vendor, on a runtime of its own that outlives the tests; tests only read it. Also
//! the comparisons the export and admin API tests share.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use serde_json::{Value, json};

use super::binary::query_json;
use super::checks::Checks;
use super::clients::Mode;
use super::fake_vendor::{self, EXAMPLE_ACCESS_KEY_ID, EXAMPLE_SECRET_ACCESS_KEY, FakeVendor, FakeVendorOpts};
use super::fixtures::{
    ACCOUNT, APP, CHANNEL, CHIME_HOST, IDENTITY_HOST, MESSAGING_HOST, PROXY_ACCESS_KEY_ID, PROXY_SECRET_ACCESS_KEY,
    SLACK_GET, SLACK_HOST, SLACK_REMOVE, SLACK_SET, USER, enc,
};
use super::in_process::{InProcessProxy, parse_config, proxy_credentials};
use super::sigv4::{self, SigningParams};
use super::toml_str;

/// How long a call of the trail may take.
const CALL_WAIT: Duration = Duration::from_secs(15);

/// A second client key, so that access-key lookups can tell callers apart.
pub const OTHER_KEY: &str = "AKIAI44QH8DHBEXAMPLE";
/// Secret of [`OTHER_KEY`].
pub const OTHER_SECRET: &str = "je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY";
/// `server.admin_token` of the trail's proxy.
pub const ADMIN_TOKEN: &str = "compliance-admin-token-0123456789";

/// The first account (changed, read, denied).
pub const ACCOUNT_A: &str = ACCOUNT;
/// The second account (changed by the other key).
pub const ACCOUNT_B: &str = "98b7654c-3d21-098e-7654-32109f87ed65";
/// The first Slack token (xoxp).
pub const TOKEN_A: &str = "xoxp-1111111111-1111111111-1111111111-complianceAcomplianceAcomp01";
/// The second Slack token (xoxb).
pub const TOKEN_B: &str = "xoxb-2222222222-2222222222-complianceBcomplianceBcompliance02";
/// A Slack channel id with a comma, to exercise CSV quoting.
pub const COMMA_CHANNEL: &str = "C9,X";
/// The channel changed sixteen times.
pub const HISTORY_CHANNEL: &str = "C0HISTORY4";

/// Guardrails of the trail's proxy: Slack and Chime room retention of at least 30 days.
pub const GUARDRAILS: &str = r#"
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

/// A fake vendor that knows the example key, [`OTHER_KEY`] and the proxy's own key.
pub fn vendor_opts() -> FakeVendorOpts {
    FakeVendorOpts::with_example_key()
        .secret(OTHER_KEY, OTHER_SECRET)
        .secret(PROXY_ACCESS_KEY_ID, PROXY_SECRET_ACCESS_KEY)
}

/// The proxy, in-process, with [`GUARDRAILS`] and an admin listener (guarded by `admin_token`
/// when given), every upstream at `vendor_url`.
pub async fn start_proxy(vendor_url: &str, db: &Path, admin_token: Option<&str>) -> InProcessProxy {
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
    let cfg = parse_config(&t, "compliance.toml");
    InProcessProxy::spawn(cfg, db.to_path_buf(), Some(proxy_credentials()), true).await
}

// ---------------------------------------------------------------------------------------------
// Calls as clients make them, in forward (absolute-form) or reverse (origin-form) mode
// ---------------------------------------------------------------------------------------------

/// An AWS client key: access key id and secret.
#[derive(Debug, Clone, Copy)]
pub struct Key(&'static str, &'static str);

/// The AWS example key.
pub const EXAMPLE: Key = Key(EXAMPLE_ACCESS_KEY_ID, EXAMPLE_SECRET_ACCESS_KEY);
/// [`OTHER_KEY`].
pub const OTHER: Key = Key(OTHER_KEY, OTHER_SECRET);

/// A botocore-style signed AWS call.
#[allow(clippy::too_many_arguments)]
pub fn aws(
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
pub fn slack(mode: Mode, path: &str, form: &str, token: &str) -> Request<Bytes> {
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

/// The form of `setCustomRetention`.
pub fn slack_set_form(channel: &str, days: u32) -> String {
    form_urlencoded::Serializer::new(String::new())
        .append_pair("channel_id", channel)
        .append_pair("duration_days", &days.to_string())
        .finish()
}

/// A form naming only the channel.
pub fn channel_form(channel: &str) -> String {
    form_urlencoded::Serializer::new(String::new())
        .append_pair("channel_id", channel)
        .finish()
}

/// A Chime `PutRetentionSettings` body.
pub fn chime_body(room: Option<u32>, conversation: Option<u32>) -> String {
    let mut s = serde_json::Map::new();
    if let Some(d) = room {
        s.insert("RoomRetentionSettings".into(), json!({"RetentionDays": d}));
    }
    if let Some(d) = conversation {
        s.insert("ConversationRetentionSettings".into(), json!({"RetentionDays": d}));
    }
    json!({"RetentionSettings": s}).to_string()
}

/// Sends one request on a new connection.
pub async fn send(addr: SocketAddr, req: Request<Bytes>) -> fake_vendor::SimpleResponse {
    let what = format!("{} {}", req.method(), req.uri());
    tokio::time::timeout(CALL_WAIT, fake_vendor::send(addr, req))
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer in time"))
        .unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// What a call of the trail is expected to end as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Forwarded and answered with success.
    Ok,
    /// Denied by a guardrail.
    Denied,
    /// Rejected as invalid.
    Rejected,
}

/// One AWS call of the trail: mode, key, method, host, path, bearer, body, how it ends.
pub type AwsRow<'a> = (Mode, Key, &'a str, &'a str, &'a str, Option<&'a str>, String, End);

/// The calls of the trail, in order.
pub fn trail_calls(proxy: SocketAddr) -> Vec<(Request<Bytes>, End)> {
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
pub async fn call(proxy: SocketAddr, req: Request<Bytes>, end: End) {
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

/// The trail: its database and the admin listener of the proxy that wrote it.
pub struct Trail {
    /// The audit database.
    pub db: PathBuf,
    /// The admin listener (guarded by [`ADMIN_TOKEN`]).
    pub admin: SocketAddr,
    /// `audit query --format json`, in `seq` order.
    pub events: Vec<Value>,
    /// What each call was expected to end as, in `seq` order.
    pub ends: Vec<End>,
}

/// The trail, generated once; its proxy and fake vendor keep running on their own thread.
pub fn trail() -> &'static Trail {
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
                let admin = proxy.admin.expect("an admin listener");
                tx.send((db, admin, ends)).expect("hand over the trail");
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
// Comparisons
// ---------------------------------------------------------------------------------------------

/// The `eventID` of each event.
pub fn ids(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["eventID"].as_str().unwrap_or("?").to_string())
        .collect()
}

/// A member that is present and not null.
pub fn opt<'a>(v: &'a Value, k: &str) -> Option<&'a Value> {
    v.get(k).filter(|x| !x.is_null())
}

/// One CloudTrail record against the `audit query` event it came from, field by field.
pub fn check_record(c: &mut Checks, rec: &Value, ev: &Value) {
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

/// Whether an event names `resource` (in `resources[].id` or `changes[].resource`).
pub fn touches(e: &Value, resource: &str) -> bool {
    let in_list = |list: &str, key: &str| {
        e[list]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x[key].as_str() == Some(resource)))
    };
    in_list("resources", "id") || in_list("changes", "resource")
}
