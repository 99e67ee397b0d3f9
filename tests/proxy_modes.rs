//! The real proxy, in-process, between real-shaped clients and the fake vendor, in both
//! forward mode (absolute-form request line, the vendor's `Host`, the client's signature
//! passed through intact) and reverse mode (origin-form, re-signed with the proxy's key):
//!
//! - every SPEC §1 operation (and its variants): what the client got, what the vendor got,
//!   and the audit event;
//! - `previous` values from the proxy's own changes and from reads;
//! - vendor limits the proxy enforces itself (nothing reaches the vendor);
//! - routing edges: unknown paths, hosts outside `allow_hosts`, pass-through, body limits,
//!   hop-by-hop headers and `X-Forwarded-For`;
//! - upstream failures (vendor 500, vendor down, vendor too slow);
//! - the audit chain verifies after each of the above, and across a restart.
//!
//! Each test starts its own fake vendor and proxy (with a fresh audit database), so tests are
//! independent and run in parallel. Nothing sleeps: the proxy commits a call's outcome before
//! it answers, and the fake records a request before it answers, so both can be read as soon
//! as the client has its answer.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use retention_proxy::audit::query::Verification;
use serde_json::{Value, json};
use support::fake_vendor::{EXAMPLE_ACCESS_KEY_ID, FakeVendor, FakeVendorOpts, Received, Resource, SimpleResponse};
use support::harness::{
    AwsCall, CHIME_HOST, Checks, IDENTITY_HOST, MESSAGING_HOST, Mode, Proxy, ProxySettings, SLACK_HOST, SLACK_TOKEN,
    WAIT, contains_bytes, json_contains, read_audit, send_raw, slack_request, with_headers,
};
use support::sigv4;

const ACCOUNT: &str = "12a3456b-7c89-012d-3456-78901e23fg45";
const APP: &str = "arn:aws:chime:us-east-1:111122223333:app-instance/87654321-4321-4321-4321-210987654321";
const CHANNEL: &str =
    "arn:aws:chime:us-east-1:111122223333:app-instance/87654321-4321-4321-4321-210987654321/channel/ch-0001";
const USER: &str =
    "arn:aws:chime:us-east-1:111122223333:app-instance/87654321-4321-4321-4321-210987654321/user/admin-user-1";
const NEW_USER: &str =
    "arn:aws:chime:us-east-1:111122223333:app-instance/87654321-4321-4321-4321-210987654321/user/user-2";
const BEARER: &str = USER;
const SLACK_CHANNEL: &str = "C0123456789";
const INVOCATION_ID: &str = "5cc3180e-3f96-4528-8d3d-c6fc38bbb1b0";

const FORM: &str = "application/x-www-form-urlencoded";
const SLACK_SET: &str = "/api/admin.conversations.setCustomRetention";
const SLACK_GET: &str = "/api/admin.conversations.getCustomRetention";
const SLACK_REMOVE: &str = "/api/admin.conversations.removeCustomRetention";

/// An ARN as botocore puts it in a path (`:` → `%3A`, `/` → `%2F`).
fn enc(arn: &str) -> String {
    sigv4::uri_encode(arn.as_bytes(), false)
}

fn retention_path(account: &str) -> String {
    format!("/accounts/{account}/retention-settings")
}

fn channel_expiration_path(channel: &str) -> String {
    format!("/channels/{}/expiration-settings", enc(channel))
}

fn app_retention_path(app: &str) -> String {
    format!("/app-instances/{}/retention-settings", enc(app))
}

fn user_expiration_path(user: &str) -> String {
    format!("/app-instance-users/{}/expiration-settings", enc(user))
}

fn body_text(r: &SimpleResponse) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

// ---------------------------------------------------------------------------------------------
// A fake vendor and a proxy, and calls through the proxy as real clients make them
// ---------------------------------------------------------------------------------------------

struct Env {
    mode: Mode,
    fake: FakeVendor,
    proxy: Proxy,
}

impl Env {
    async fn start(mode: Mode, settings: ProxySettings) -> Env {
        Env::start_with(mode, mode.fake_opts(), settings).await
    }

    async fn start_with(mode: Mode, opts: FakeVendorOpts, settings: ProxySettings) -> Env {
        let fake = FakeVendor::start(opts).await;
        let proxy = Proxy::start(&fake.url(), settings).await;
        Env { mode, fake, proxy }
    }

    /// A botocore-shaped AWS call.
    async fn aws(&self, method: &str, host: &str, path: &str, bearer: Option<&str>, body: &str) -> SimpleResponse {
        let call = AwsCall::botocore(method, host, path, bearer, INVOCATION_ID, body.as_bytes());
        self.proxy.send(call.request(self.mode, &self.proxy)).await
    }

    /// A slack_sdk-shaped call with `Authorization: Bearer`.
    async fn slack(&self, method: &str, path: &str, content_type: Option<&str>, body: &str) -> SimpleResponse {
        let req = slack_request(
            self.mode,
            &self.proxy,
            method,
            path,
            content_type,
            Some(SLACK_TOKEN),
            body.as_bytes(),
        );
        self.proxy.send(req).await
    }

    /// The newest event (the outcome of a call is committed before the proxy answers it).
    fn last_event(&self) -> Value {
        self.proxy.events().pop().unwrap_or(Value::Null)
    }
}

fn check_intact(c: &mut Checks, v: &Verification) {
    c.ok(
        "audit::query::verify",
        matches!(v, Verification::Intact { .. }),
        format!("{v:?}"),
    );
}

/// `changes[]` of an event as `(target, resource, previous, new)`.
fn changes(ev: &Value) -> Vec<(String, String, Value, Value)> {
    ev["changes"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| {
                    (
                        c["target"].as_str().unwrap_or("").to_string(),
                        c["resource"].as_str().unwrap_or("").to_string(),
                        c["previous"].clone(),
                        c["new"].clone(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// An expected change: `(target, resource, previous, new)`.
type ExpectedChange<'a> = (&'a str, &'a str, Value, Value);

fn check_previous(c: &mut Checks, what: &str, ev: &Value, expected: &[ExpectedChange<'_>]) {
    let got = changes(ev);
    let want: Vec<(String, String, Value, Value)> = expected
        .iter()
        .map(|(t, r, p, n)| (t.to_string(), r.to_string(), p.clone(), n.clone()))
        .collect();
    c.ok(
        what,
        got == want,
        format!(
            "changes (target, resource, previous, new) were {got:?}, expected {want:?}; event {}",
            ev["eventName"]
        ),
    );
}

// ---------------------------------------------------------------------------------------------
// 1. Every SPEC §1 operation, forward and reverse
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    /// An AWS call to this vendor host.
    Aws(&'static str),
    /// A Slack call; the token in `Authorization: Bearer` or, with `form_token`, in the body.
    Slack { form_token: bool },
}

struct Case {
    api: Api,
    method: &'static str,
    path: String,
    /// AWS: send `x-amz-chime-bearer: BEARER`.
    bearer: bool,
    /// Slack: `Content-Type`.
    content_type: Option<&'static str>,
    body: String,
    /// Vendor state the call needs (a channel to describe, …).
    seed: fn(&FakeVendor),
    /// The vendor answers Chime `PutRetentionSettings` with its modelled `204`, no body.
    vendor_204: bool,
    /// What the vendor answers (and so what the client must get).
    status: u16,
    response: Value,
    event_name: &'static str,
    event_source: &'static str,
    read_only: bool,
    /// `(target, resource, new)`.
    changes: Vec<(&'static str, String, Value)>,
    /// `(type, id)` that `resources` must contain.
    resources: Vec<(&'static str, String)>,
}

fn no_seed(_: &FakeVendor) {}

fn seed_account(f: &FakeVendor) {
    f.set_state(
        Resource::ChimeAccount(ACCOUNT.into()),
        json!({"RoomRetentionSettings": {"RetentionDays": 365}, "ConversationRetentionSettings": {"RetentionDays": 180}}),
    );
}

fn seeded_channel() -> Value {
    json!({
        "Name": "retention-test", "ChannelArn": CHANNEL, "Mode": "RESTRICTED", "Privacy": "PRIVATE",
        "ExpirationSettings": {"ExpirationDays": 7, "ExpirationCriterion": "LAST_MESSAGE_TIMESTAMP"}
    })
}

fn seed_channel(f: &FakeVendor) {
    f.set_state(Resource::Channel(CHANNEL.into()), seeded_channel());
}

fn seed_app_instance(f: &FakeVendor) {
    f.set_state(
        Resource::AppInstance(APP.into()),
        json!({"ChannelRetentionSettings": {"RetentionDays": 90}}),
    );
}

fn seeded_user() -> Value {
    json!({
        "AppInstanceUserArn": USER, "Name": "Admin",
        "ExpirationSettings": {"ExpirationDays": 365, "ExpirationCriterion": "CREATED_TIMESTAMP"}
    })
}

fn seed_user(f: &FakeVendor) {
    f.set_state(Resource::AppInstanceUser(USER.into()), seeded_user());
}

fn seed_slack(f: &FakeVendor) {
    f.set_state(Resource::SlackChannel(SLACK_CHANNEL.into()), json!(365));
}

const CHIME: &str = "chime.amazonaws.com";
const MESSAGING: &str = "messaging-chime.amazonaws.com";
const IDENTITY: &str = "identity-chime.amazonaws.com";
const SLACK: &str = "slack.com";
const ACCOUNT_T: &str = "AWS::Chime::Account";
const CHANNEL_T: &str = "AWS::ChimeSDKMessaging::Channel";
const APP_T: &str = "AWS::ChimeSDKIdentity::AppInstance";
const USER_T: &str = "AWS::ChimeSDKIdentity::AppInstanceUser";
const SLACK_T: &str = "Slack::Channel";

fn case(name: &str) -> Case {
    let aws = |host, method, path: String, bearer, body: &str| Case {
        api: Api::Aws(host),
        method,
        path,
        bearer,
        content_type: None,
        body: body.to_string(),
        seed: no_seed,
        vendor_204: false,
        status: 200,
        response: json!({}),
        event_name: "",
        event_source: "",
        read_only: false,
        changes: Vec::new(),
        resources: Vec::new(),
    };
    let slack = |method, path: &str, content_type, form_token, body: &str| Case {
        api: Api::Slack { form_token },
        method,
        path: path.to_string(),
        bearer: false,
        content_type,
        body: body.to_string(),
        seed: no_seed,
        vendor_204: false,
        status: 200,
        response: json!({"ok": true}),
        event_name: "",
        event_source: SLACK,
        read_only: false,
        changes: Vec::new(),
        resources: vec![(SLACK_T, SLACK_CHANNEL.to_string())],
    };
    let put_retention_body = r#"{"RetentionSettings": {"RoomRetentionSettings": {"RetentionDays": 365}, "ConversationRetentionSettings": {"RetentionDays": 180}}}"#;
    let create_channel_body = format!(
        r#"{{"AppInstanceArn": "{APP}", "Name": "retention-test", "Mode": "RESTRICTED", "Privacy": "PRIVATE", "ClientRequestToken": "tok-0001", "ExpirationSettings": {{"ExpirationDays": 7, "ExpirationCriterion": "LAST_MESSAGE_TIMESTAMP"}}, "Tags": [{{"Key": "team", "Value": "legal"}}]}}"#
    );
    let create_user_body = format!(
        r#"{{"AppInstanceArn": "{APP}", "AppInstanceUserId": "user-2", "Name": "User Two", "ClientRequestToken": "tok-0002", "ExpirationSettings": {{"ExpirationDays": 365, "ExpirationCriterion": "CREATED_TIMESTAMP"}}}}"#
    );
    match name {
        "put_retention_settings" => Case {
            response: json!({"RetentionSettings": {"RoomRetentionSettings": {"RetentionDays": 365}, "ConversationRetentionSettings": {"RetentionDays": 180}}}),
            event_name: "PutRetentionSettings",
            event_source: CHIME,
            changes: vec![
                ("chime.room_retention", ACCOUNT.into(), json!(365)),
                ("chime.conversation_retention", ACCOUNT.into(), json!(180)),
            ],
            resources: vec![(ACCOUNT_T, ACCOUNT.into())],
            ..aws(CHIME_HOST, "PUT", retention_path(ACCOUNT), false, put_retention_body)
        },
        "put_retention_settings_vendor_204" => Case {
            vendor_204: true,
            status: 204,
            response: Value::Null,
            event_name: "PutRetentionSettings",
            event_source: CHIME,
            changes: vec![
                ("chime.room_retention", ACCOUNT.into(), json!(365)),
                ("chime.conversation_retention", ACCOUNT.into(), json!(180)),
            ],
            resources: vec![(ACCOUNT_T, ACCOUNT.into())],
            ..aws(CHIME_HOST, "PUT", retention_path(ACCOUNT), false, put_retention_body)
        },
        "put_retention_settings_turn_off" => Case {
            response: json!({"RetentionSettings": {}}),
            event_name: "PutRetentionSettings",
            event_source: CHIME,
            changes: vec![
                ("chime.room_retention", ACCOUNT.into(), json!("off")),
                ("chime.conversation_retention", ACCOUNT.into(), json!("off")),
            ],
            resources: vec![(ACCOUNT_T, ACCOUNT.into())],
            ..aws(
                CHIME_HOST,
                "PUT",
                retention_path(ACCOUNT),
                false,
                r#"{"RetentionSettings": {}}"#,
            )
        },
        "get_retention_settings" => Case {
            seed: seed_account,
            response: json!({"RetentionSettings": {"RoomRetentionSettings": {"RetentionDays": 365}, "ConversationRetentionSettings": {"RetentionDays": 180}}}),
            event_name: "GetRetentionSettings",
            event_source: CHIME,
            read_only: true,
            resources: vec![(ACCOUNT_T, ACCOUNT.into())],
            ..aws(CHIME_HOST, "GET", retention_path(ACCOUNT), false, "")
        },
        "put_channel_expiration_settings" => Case {
            response: json!({"ChannelArn": CHANNEL, "ExpirationSettings": {"ExpirationDays": 30, "ExpirationCriterion": "CREATED_TIMESTAMP"}}),
            event_name: "PutChannelExpirationSettings",
            event_source: MESSAGING,
            changes: vec![("chime_sdk.channel_expiration", CHANNEL.into(), json!(30))],
            resources: vec![(CHANNEL_T, CHANNEL.into())],
            ..aws(
                MESSAGING_HOST,
                "PUT",
                channel_expiration_path(CHANNEL),
                true,
                r#"{"ExpirationSettings": {"ExpirationDays": 30, "ExpirationCriterion": "CREATED_TIMESTAMP"}}"#,
            )
        },
        "put_channel_expiration_settings_remove" => Case {
            seed: seed_channel,
            response: json!({"ChannelArn": CHANNEL}),
            event_name: "PutChannelExpirationSettings",
            event_source: MESSAGING,
            changes: vec![("chime_sdk.channel_expiration", CHANNEL.into(), json!("off"))],
            resources: vec![(CHANNEL_T, CHANNEL.into())],
            ..aws(MESSAGING_HOST, "PUT", channel_expiration_path(CHANNEL), false, "{}")
        },
        "create_channel_with_expiration" => Case {
            status: 201,
            response: json!({"ChannelArn": CHANNEL}),
            event_name: "CreateChannel",
            event_source: MESSAGING,
            changes: vec![("chime_sdk.channel_expiration", CHANNEL.into(), json!(7))],
            resources: vec![(APP_T, APP.into())],
            ..aws(MESSAGING_HOST, "POST", "/channels".into(), true, &create_channel_body)
        },
        "describe_channel" => Case {
            seed: seed_channel,
            response: json!({"Channel": seeded_channel()}),
            event_name: "DescribeChannel",
            event_source: MESSAGING,
            read_only: true,
            resources: vec![(CHANNEL_T, CHANNEL.into())],
            ..aws(MESSAGING_HOST, "GET", format!("/channels/{}", enc(CHANNEL)), true, "")
        },
        "put_app_instance_retention_settings" => Case {
            response: json!({"AppInstanceRetentionSettings": {"ChannelRetentionSettings": {"RetentionDays": 90}}, "InitiateDeletionTimestamp": 1_795_300_000}),
            event_name: "PutAppInstanceRetentionSettings",
            event_source: IDENTITY,
            changes: vec![("chime_sdk.app_instance_retention", APP.into(), json!(90))],
            resources: vec![(APP_T, APP.into())],
            ..aws(
                IDENTITY_HOST,
                "PUT",
                app_retention_path(APP),
                false,
                r#"{"AppInstanceRetentionSettings": {"ChannelRetentionSettings": {"RetentionDays": 90}}}"#,
            )
        },
        "put_app_instance_retention_settings_turn_off" => Case {
            response: json!({"AppInstanceRetentionSettings": {"ChannelRetentionSettings": {}}}),
            event_name: "PutAppInstanceRetentionSettings",
            event_source: IDENTITY,
            changes: vec![("chime_sdk.app_instance_retention", APP.into(), json!("off"))],
            resources: vec![(APP_T, APP.into())],
            ..aws(
                IDENTITY_HOST,
                "PUT",
                app_retention_path(APP),
                false,
                r#"{"AppInstanceRetentionSettings": {"ChannelRetentionSettings": {}}}"#,
            )
        },
        "get_app_instance_retention_settings" => Case {
            seed: seed_app_instance,
            response: json!({"AppInstanceRetentionSettings": {"ChannelRetentionSettings": {"RetentionDays": 90}}}),
            event_name: "GetAppInstanceRetentionSettings",
            event_source: IDENTITY,
            read_only: true,
            resources: vec![(APP_T, APP.into())],
            ..aws(IDENTITY_HOST, "GET", app_retention_path(APP), false, "")
        },
        "put_app_instance_user_expiration_settings" => Case {
            response: json!({"AppInstanceUserArn": USER, "ExpirationSettings": {"ExpirationDays": 365, "ExpirationCriterion": "CREATED_TIMESTAMP"}}),
            event_name: "PutAppInstanceUserExpirationSettings",
            event_source: IDENTITY,
            changes: vec![("chime_sdk.user_expiration", USER.into(), json!(365))],
            resources: vec![(USER_T, USER.into())],
            ..aws(
                IDENTITY_HOST,
                "PUT",
                user_expiration_path(USER),
                false,
                r#"{"ExpirationSettings": {"ExpirationDays": 365, "ExpirationCriterion": "CREATED_TIMESTAMP"}}"#,
            )
        },
        "create_app_instance_user_with_expiration" => Case {
            status: 201,
            response: json!({"AppInstanceUserArn": NEW_USER}),
            event_name: "CreateAppInstanceUser",
            event_source: IDENTITY,
            changes: vec![("chime_sdk.user_expiration", NEW_USER.into(), json!(365))],
            resources: vec![(APP_T, APP.into()), (USER_T, NEW_USER.into())],
            ..aws(
                IDENTITY_HOST,
                "POST",
                "/app-instance-users".into(),
                false,
                &create_user_body,
            )
        },
        "describe_app_instance_user" => Case {
            seed: seed_user,
            response: json!({"AppInstanceUser": seeded_user()}),
            event_name: "DescribeAppInstanceUser",
            event_source: IDENTITY,
            read_only: true,
            resources: vec![(USER_T, USER.into())],
            ..aws(
                IDENTITY_HOST,
                "GET",
                format!("/app-instance-users/{}", enc(USER)),
                false,
                "",
            )
        },
        "slack_set_custom_retention_form" => Case {
            event_name: "admin.conversations.setCustomRetention",
            changes: vec![("slack.channel_retention", SLACK_CHANNEL.into(), json!(365))],
            ..slack(
                "POST",
                SLACK_SET,
                Some(FORM),
                false,
                "channel_id=C0123456789&duration_days=365",
            )
        },
        "slack_set_custom_retention_json" => Case {
            event_name: "admin.conversations.setCustomRetention",
            changes: vec![("slack.channel_retention", SLACK_CHANNEL.into(), json!(400))],
            ..slack(
                "POST",
                SLACK_SET,
                Some("application/json; charset=utf-8"),
                false,
                r#"{"channel_id": "C0123456789", "duration_days": 400}"#,
            )
        },
        "slack_set_custom_retention_token_in_form" => Case {
            event_name: "admin.conversations.setCustomRetention",
            changes: vec![("slack.channel_retention", SLACK_CHANNEL.into(), json!(730))],
            ..slack(
                "POST",
                SLACK_SET,
                Some(FORM),
                true,
                &format!("token={SLACK_TOKEN}&channel_id=C0123456789&duration_days=730"),
            )
        },
        "slack_get_custom_retention" => Case {
            seed: seed_slack,
            response: json!({"ok": true, "is_policy_enabled": true, "duration_days": 365}),
            event_name: "admin.conversations.getCustomRetention",
            read_only: true,
            ..slack("POST", SLACK_GET, Some(FORM), false, "channel_id=C0123456789")
        },
        "slack_get_custom_retention_by_get" => Case {
            seed: seed_slack,
            response: json!({"ok": true, "is_policy_enabled": true, "duration_days": 365}),
            event_name: "admin.conversations.getCustomRetention",
            read_only: true,
            ..slack(
                "GET",
                "/api/admin.conversations.getCustomRetention?channel_id=C0123456789",
                None,
                false,
                "",
            )
        },
        "slack_get_custom_retention_token_in_query" => Case {
            seed: seed_slack,
            response: json!({"ok": true, "is_policy_enabled": true, "duration_days": 365}),
            event_name: "admin.conversations.getCustomRetention",
            read_only: true,
            ..slack(
                "GET",
                &format!("/api/admin.conversations.getCustomRetention?token={SLACK_TOKEN}&channel_id=C0123456789"),
                None,
                true,
                "",
            )
        },
        "slack_remove_custom_retention" => Case {
            seed: seed_slack,
            event_name: "admin.conversations.removeCustomRetention",
            changes: vec![("slack.channel_retention", SLACK_CHANNEL.into(), json!("default"))],
            ..slack("POST", SLACK_REMOVE, Some(FORM), false, "channel_id=C0123456789")
        },
        other => panic!("no case named {other}"),
    }
}

fn case_request(mode: Mode, proxy: &Proxy, case: &Case) -> http::Request<Bytes> {
    match case.api {
        Api::Aws(host) => AwsCall::botocore(
            case.method,
            host,
            &case.path,
            case.bearer.then_some(BEARER),
            INVOCATION_ID,
            case.body.as_bytes(),
        )
        .request(mode, proxy),
        Api::Slack { form_token } => slack_request(
            mode,
            proxy,
            case.method,
            &case.path,
            case.content_type,
            (!form_token).then_some(SLACK_TOKEN),
            case.body.as_bytes(),
        ),
    }
}

async fn run_operation(mode: Mode, name: &str) {
    let case = case(name);
    let opts = FakeVendorOpts {
        put_retention_204: case.vendor_204,
        ..mode.fake_opts()
    };
    let env = Env::start_with(mode, opts, ProxySettings::default()).await;
    (case.seed)(&env.fake);
    let req = case_request(mode, &env.proxy, &case);
    let client_auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let resp = env.proxy.send(req).await;
    let mut c = Checks::new(format!("{mode:?} {name}"));

    // What the client got.
    c.eq("client status", resp.status, case.status);
    c.ok(
        "client body",
        json_contains(&resp.json(), &case.response),
        format!("got {}, expected it to contain {}", body_text(&resp), case.response),
    );

    // What the vendor got.
    let received = env.fake.received();
    c.eq("requests the vendor received", received.len(), 1);
    let got = received.last().cloned();
    if let Some(got) = &got {
        check_received(&mut c, mode, &env, &case, got, &resp);
    }

    // The audit event.
    let log = env.proxy.stop().await;
    check_intact(&mut c, &log.verification);
    c.eq("events recorded", log.events.len(), 1);
    if let (Some(ev), Some(got)) = (log.events.first(), &got) {
        check_event(&mut c, mode, &case, ev, got, &client_auth);
    }
    c.ok(
        "no Slack token in the database files",
        !contains_bytes(&log.stored_bytes, SLACK_TOKEN.as_bytes()),
        "found",
    );
    if let Some(sig) = client_auth.split("Signature=").nth(1) {
        c.ok(
            "no client signature in the database files",
            !contains_bytes(&log.stored_bytes, sig.as_bytes()),
            "found",
        );
    }
    c.finish();
}

fn check_received(c: &mut Checks, mode: Mode, env: &Env, case: &Case, got: &Received, resp: &SimpleResponse) {
    c.eq("vendor method", got.method.as_str(), case.method);
    c.eq(
        "vendor path and query (raw)",
        got.path_and_query.as_str(),
        case.path.as_str(),
    );
    c.ok(
        "vendor body unchanged",
        got.body == case.body.as_bytes(),
        format!("got {:?}, sent {:?}", got.body_str(), case.body),
    );
    c.eq("client status = vendor status", resp.status, got.response_status);
    let vendor_host = match case.api {
        Api::Aws(h) => h,
        Api::Slack { .. } => SLACK_HOST,
    };
    let expected_host = match mode {
        Mode::Forward => vendor_host.to_string(),
        Mode::Reverse => env.fake.host(),
    };
    c.eq("vendor Host", got.header("host"), Some(expected_host.as_str()));
    match case.api {
        Api::Aws(_) => {
            match &got.sig {
                Some(Ok(sig)) => c.eq(
                    "vendor-verified access key",
                    sig.access_key_id.as_str(),
                    mode.vendor_access_key(),
                ),
                other => c.fail("vendor SigV4 verification (sig_ok)", format!("{other:?}")),
            }
            c.eq(
                "vendor x-amz-chime-bearer",
                got.header("x-amz-chime-bearer"),
                case.bearer.then_some(BEARER),
            );
            c.eq(
                "vendor amz-sdk-invocation-id",
                got.header("amz-sdk-invocation-id"),
                Some(INVOCATION_ID),
            );
            c.eq(
                "client x-amzn-RequestId = vendor's",
                resp.header("x-amzn-requestid"),
                got.request_id.as_deref(),
            );
        }
        Api::Slack { form_token } => {
            c.eq("vendor Slack token", got.slack_token.as_deref(), Some(SLACK_TOKEN));
            let bearer = format!("Bearer {SLACK_TOKEN}");
            c.eq(
                "vendor Authorization (bearer unchanged)",
                got.header("authorization"),
                (!form_token).then_some(bearer.as_str()),
            );
            c.eq(
                "client x-slack-req-id = vendor's",
                resp.header("x-slack-req-id"),
                got.request_id.as_deref(),
            );
        }
    }
}

fn check_event(c: &mut Checks, mode: Mode, case: &Case, ev: &Value, got: &Received, client_auth: &str) {
    let aws = matches!(case.api, Api::Aws(_));
    c.eq("eventName", &ev["eventName"], &json!(case.event_name));
    c.eq("eventSource", &ev["eventSource"], &json!(case.event_source));
    c.eq(
        "eventType",
        &ev["eventType"],
        &json!(if aws { "AwsApiCall" } else { "SlackApiCall" }),
    );
    c.eq("readOnly", &ev["readOnly"], &json!(case.read_only));
    c.eq("outcome", &ev["outcome"], &json!("forwarded"));
    c.eq("httpStatus", &ev["httpStatus"], &json!(got.response_status));
    c.eq(
        "requestID = vendor's request id",
        &ev["requestID"],
        &json!(got.request_id),
    );
    c.eq("errorCode", &ev["errorCode"], &Value::Null);
    c.ok(
        "eventID is a UUID",
        ev["eventID"].as_str().is_some_and(|s| s.len() == 36),
        &ev["eventID"],
    );
    c.ok(
        "seq and hash",
        ev["seq"].is_u64() && ev["hash"].as_str().is_some_and(|h| !h.is_empty()),
        format!("seq {} hash {}", ev["seq"], ev["hash"]),
    );
    let id = &ev["userIdentity"];
    if aws {
        c.eq("awsRegion", &ev["awsRegion"], &json!("us-east-1"));
        c.eq(
            "userIdentity.accessKeyId",
            &id["accessKeyId"],
            &json!(EXAMPLE_ACCESS_KEY_ID),
        );
        match mode {
            Mode::Reverse => c.eq("userIdentity.verified (reverse)", &id["verified"], &json!(false)),
            Mode::Forward => c.ok(
                "userIdentity.verified is a boolean",
                id["verified"].is_boolean(),
                &id["verified"],
            ),
        }
        if case.bearer {
            c.eq("userIdentity.chimeBearer", &id["chimeBearer"], &json!(BEARER));
        }
        c.eq("invocationId", &ev["invocationId"], &json!(INVOCATION_ID));
        c.eq("attempt", &ev["attempt"], &json!(2));
    } else {
        let fp = id["tokenFingerprint"].as_str().unwrap_or("");
        c.ok(
            "userIdentity.tokenFingerprint is hmac-sha256:<hex>",
            fp.starts_with("hmac-sha256:") && fp.len() > "hmac-sha256:".len(),
            fp,
        );
        c.ok(
            "tokenFingerprint does not contain the token",
            !fp.contains(SLACK_TOKEN) && !fp.contains("dummydummy"),
            fp,
        );
        c.eq("userIdentity.tokenType", &id["tokenType"], &json!("xoxp"));
        c.eq("userIdentity.accessKeyId", &id["accessKeyId"], &Value::Null);
    }
    let want: Vec<(String, String, Value, Value)> = case
        .changes
        .iter()
        .map(|(t, r, n)| (t.to_string(), r.clone(), Value::Null, n.clone()))
        .collect();
    let got_changes = changes(ev);
    c.ok(
        "changes (target, resource, previous, new)",
        got_changes == want,
        format!("got {got_changes:?}, expected {want:?}"),
    );
    let resources: Vec<(String, String)> = ev["resources"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| {
                    (
                        r["type"].as_str().unwrap_or("").to_string(),
                        r["id"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    for (t, id) in &case.resources {
        c.ok(
            "resources",
            resources.iter().any(|(rt, rid)| rt == t && rid == id),
            format!("{resources:?} lacks ({t}, {id})"),
        );
    }
    // No secrets at rest.
    let text = ev.to_string();
    c.ok(
        "event holds no Slack token",
        !text.contains(SLACK_TOKEN),
        "token found in the event",
    );
    if let Some(sig) = client_auth.split("Signature=").nth(1) {
        c.ok(
            "event holds no signature",
            !text.contains(sig),
            "signature found in the event",
        );
    }
    c.ok(
        "event holds no Authorization value",
        !text.contains("AWS4-HMAC-SHA256") && !text.contains("Bearer "),
        "Authorization text found in the event",
    );
}

macro_rules! operation_tests {
    ($($name:ident),* $(,)?) => {
        mod forward_operation {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    run_operation(Mode::Forward, stringify!($name)).await;
                }
            )*
        }
        mod reverse_operation {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    run_operation(Mode::Reverse, stringify!($name)).await;
                }
            )*
        }
    };
}

operation_tests!(
    put_retention_settings,
    put_retention_settings_vendor_204,
    put_retention_settings_turn_off,
    get_retention_settings,
    put_channel_expiration_settings,
    put_channel_expiration_settings_remove,
    create_channel_with_expiration,
    describe_channel,
    put_app_instance_retention_settings,
    put_app_instance_retention_settings_turn_off,
    get_app_instance_retention_settings,
    put_app_instance_user_expiration_settings,
    create_app_instance_user_with_expiration,
    describe_app_instance_user,
    slack_set_custom_retention_form,
    slack_set_custom_retention_json,
    slack_set_custom_retention_token_in_form,
    slack_get_custom_retention,
    slack_get_custom_retention_by_get,
    slack_get_custom_retention_token_in_query,
    slack_remove_custom_retention,
);

// ---------------------------------------------------------------------------------------------
// 2. `previous`
// ---------------------------------------------------------------------------------------------

async fn previous_from_own_changes(mode: Mode) {
    let env = Env::start(mode, ProxySettings::default()).await;
    let mut c = Checks::new(format!("{mode:?} previous from the proxy's own changes"));
    let acct = retention_path(ACCOUNT);
    let other_channel = format!("{APP}/channel/ch-0100");

    let steps: Vec<(&str, SimpleResponse, Vec<ExpectedChange<'_>>)> = vec![
        (
            "first PutRetentionSettings",
            env.aws(
                "PUT",
                CHIME_HOST,
                &acct,
                None,
                r#"{"RetentionSettings": {"RoomRetentionSettings": {"RetentionDays": 365}, "ConversationRetentionSettings": {"RetentionDays": 180}}}"#,
            )
            .await,
            vec![
                ("chime.room_retention", ACCOUNT, Value::Null, json!(365)),
                ("chime.conversation_retention", ACCOUNT, Value::Null, json!(180)),
            ],
        ),
        (
            "second PutRetentionSettings",
            env.aws(
                "PUT",
                CHIME_HOST,
                &acct,
                None,
                r#"{"RetentionSettings": {"RoomRetentionSettings": {"RetentionDays": 400}}}"#,
            )
            .await,
            vec![
                ("chime.room_retention", ACCOUNT, json!(365), json!(400)),
                ("chime.conversation_retention", ACCOUNT, json!(180), json!("off")),
            ],
        ),
        (
            "third PutRetentionSettings (turn off)",
            env.aws("PUT", CHIME_HOST, &acct, None, r#"{"RetentionSettings": {}}"#)
                .await,
            vec![
                ("chime.room_retention", ACCOUNT, json!(400), json!("off")),
                ("chime.conversation_retention", ACCOUNT, json!("off"), json!("off")),
            ],
        ),
        (
            "first PutChannelExpirationSettings",
            env.aws(
                "PUT",
                MESSAGING_HOST,
                &channel_expiration_path(&other_channel),
                Some(BEARER),
                r#"{"ExpirationSettings": {"ExpirationDays": 30, "ExpirationCriterion": "CREATED_TIMESTAMP"}}"#,
            )
            .await,
            vec![("chime_sdk.channel_expiration", other_channel.as_str(), Value::Null, json!(30))],
        ),
        (
            "PutChannelExpirationSettings removal",
            env.aws(
                "PUT",
                MESSAGING_HOST,
                &channel_expiration_path(&other_channel),
                Some(BEARER),
                "{}",
            )
            .await,
            vec![("chime_sdk.channel_expiration", other_channel.as_str(), json!(30), json!("off"))],
        ),
        (
            "CreateChannel with ExpirationSettings",
            env.aws(
                "POST",
                MESSAGING_HOST,
                "/channels",
                Some(BEARER),
                &format!(
                    r#"{{"AppInstanceArn": "{APP}", "Name": "n", "ClientRequestToken": "tok-0001", "ExpirationSettings": {{"ExpirationDays": 7, "ExpirationCriterion": "LAST_MESSAGE_TIMESTAMP"}}}}"#
                ),
            )
            .await,
            vec![("chime_sdk.channel_expiration", CHANNEL, Value::Null, json!(7))],
        ),
        (
            "PutChannelExpirationSettings on the created channel",
            env.aws(
                "PUT",
                MESSAGING_HOST,
                &channel_expiration_path(CHANNEL),
                Some(BEARER),
                r#"{"ExpirationSettings": {"ExpirationDays": 14, "ExpirationCriterion": "LAST_MESSAGE_TIMESTAMP"}}"#,
            )
            .await,
            vec![("chime_sdk.channel_expiration", CHANNEL, json!(7), json!(14))],
        ),
        (
            "first PutAppInstanceRetentionSettings",
            env.aws(
                "PUT",
                IDENTITY_HOST,
                &app_retention_path(APP),
                None,
                r#"{"AppInstanceRetentionSettings": {"ChannelRetentionSettings": {"RetentionDays": 90}}}"#,
            )
            .await,
            vec![("chime_sdk.app_instance_retention", APP, Value::Null, json!(90))],
        ),
        (
            "second PutAppInstanceRetentionSettings (off)",
            env.aws(
                "PUT",
                IDENTITY_HOST,
                &app_retention_path(APP),
                None,
                r#"{"AppInstanceRetentionSettings": {}}"#,
            )
            .await,
            vec![("chime_sdk.app_instance_retention", APP, json!(90), json!("off"))],
        ),
        (
            "CreateAppInstanceUser with ExpirationSettings",
            env.aws(
                "POST",
                IDENTITY_HOST,
                "/app-instance-users",
                None,
                &format!(
                    r#"{{"AppInstanceArn": "{APP}", "AppInstanceUserId": "user-2", "Name": "User Two", "ClientRequestToken": "tok-0002", "ExpirationSettings": {{"ExpirationDays": 365, "ExpirationCriterion": "CREATED_TIMESTAMP"}}}}"#
                ),
            )
            .await,
            vec![("chime_sdk.user_expiration", NEW_USER, Value::Null, json!(365))],
        ),
        (
            "PutAppInstanceUserExpirationSettings on the created user",
            env.aws(
                "PUT",
                IDENTITY_HOST,
                &user_expiration_path(NEW_USER),
                None,
                r#"{"ExpirationSettings": {"ExpirationDays": 30, "ExpirationCriterion": "CREATED_TIMESTAMP"}}"#,
            )
            .await,
            vec![("chime_sdk.user_expiration", NEW_USER, json!(365), json!(30))],
        ),
        (
            "first setCustomRetention",
            env.slack("POST", SLACK_SET, Some(FORM), "channel_id=C0123456789&duration_days=365")
                .await,
            vec![("slack.channel_retention", SLACK_CHANNEL, Value::Null, json!(365))],
        ),
        (
            "removeCustomRetention",
            env.slack("POST", SLACK_REMOVE, Some(FORM), "channel_id=C0123456789")
                .await,
            vec![("slack.channel_retention", SLACK_CHANNEL, json!(365), json!("default"))],
        ),
        (
            "setCustomRetention after removal (JSON body)",
            env.slack(
                "POST",
                SLACK_SET,
                Some("application/json"),
                r#"{"channel_id": "C0123456789", "duration_days": 30}"#,
            )
            .await,
            vec![("slack.channel_retention", SLACK_CHANNEL, json!("default"), json!(30))],
        ),
    ];
    let log = env.proxy.stop().await;
    check_intact(&mut c, &log.verification);
    c.eq("events recorded", log.events.len(), steps.len());
    for (i, (what, resp, expected)) in steps.iter().enumerate() {
        c.ok(
            &format!("{what}: client status"),
            (200..300).contains(&resp.status) && resp.json().get("ok") != Some(&json!(false)),
            format!("{} {}", resp.status, body_text(resp)),
        );
        match log.events.get(i) {
            Some(ev) => {
                c.eq(&format!("{what}: outcome"), &ev["outcome"], &json!("forwarded"));
                check_previous(&mut c, what, ev, expected);
            }
            None => c.fail(what, "no event"),
        }
    }
    c.finish();
}

async fn previous_from_reads(mode: Mode) {
    let env = Env::start(mode, ProxySettings::default()).await;
    let mut c = Checks::new(format!("{mode:?} previous from reads"));
    let f = &env.fake;
    f.set_state(
        Resource::ChimeAccount(ACCOUNT.into()),
        json!({"RoomRetentionSettings": {"RetentionDays": 30}}),
    );
    seed_channel(f);
    seed_app_instance(f);
    seed_user(f);
    f.set_state(Resource::SlackChannel(SLACK_CHANNEL.into()), json!(400));

    let acct = retention_path(ACCOUNT);
    let mut pairs: Vec<(&str, SimpleResponse, SimpleResponse, Vec<ExpectedChange<'_>>)> = Vec::new();
    pairs.push((
        "GetRetentionSettings then PutRetentionSettings",
        env.aws("GET", CHIME_HOST, &acct, None, "").await,
        env.aws(
            "PUT",
            CHIME_HOST,
            &acct,
            None,
            r#"{"RetentionSettings": {"RoomRetentionSettings": {"RetentionDays": 60}, "ConversationRetentionSettings": {"RetentionDays": 60}}}"#,
        )
        .await,
        vec![
            ("chime.room_retention", ACCOUNT, json!(30), json!(60)),
            ("chime.conversation_retention", ACCOUNT, json!("off"), json!(60)),
        ],
    ));
    pairs.push((
        "DescribeChannel then PutChannelExpirationSettings",
        env.aws(
            "GET",
            MESSAGING_HOST,
            &format!("/channels/{}", enc(CHANNEL)),
            Some(BEARER),
            "",
        )
        .await,
        env.aws(
            "PUT",
            MESSAGING_HOST,
            &channel_expiration_path(CHANNEL),
            Some(BEARER),
            r#"{"ExpirationSettings": {"ExpirationDays": 30, "ExpirationCriterion": "CREATED_TIMESTAMP"}}"#,
        )
        .await,
        vec![("chime_sdk.channel_expiration", CHANNEL, json!(7), json!(30))],
    ));
    pairs.push((
        "GetAppInstanceRetentionSettings then PutAppInstanceRetentionSettings",
        env.aws("GET", IDENTITY_HOST, &app_retention_path(APP), None, "").await,
        env.aws(
            "PUT",
            IDENTITY_HOST,
            &app_retention_path(APP),
            None,
            r#"{"AppInstanceRetentionSettings": {"ChannelRetentionSettings": {"RetentionDays": 120}}}"#,
        )
        .await,
        vec![("chime_sdk.app_instance_retention", APP, json!(90), json!(120))],
    ));
    pairs.push((
        "DescribeAppInstanceUser then PutAppInstanceUserExpirationSettings",
        env.aws(
            "GET",
            IDENTITY_HOST,
            &format!("/app-instance-users/{}", enc(USER)),
            None,
            "",
        )
        .await,
        env.aws(
            "PUT",
            IDENTITY_HOST,
            &user_expiration_path(USER),
            None,
            r#"{"ExpirationSettings": {"ExpirationDays": 100, "ExpirationCriterion": "CREATED_TIMESTAMP"}}"#,
        )
        .await,
        vec![("chime_sdk.user_expiration", USER, json!(365), json!(100))],
    ));
    pairs.push((
        "getCustomRetention then setCustomRetention",
        env.slack("POST", SLACK_GET, Some(FORM), "channel_id=C0123456789").await,
        env.slack(
            "POST",
            SLACK_SET,
            Some(FORM),
            "channel_id=C0123456789&duration_days=500",
        )
        .await,
        vec![("slack.channel_retention", SLACK_CHANNEL, json!(400), json!(500))],
    ));
    pairs.push((
        "getCustomRetention (no custom policy) then setCustomRetention",
        env.slack("POST", SLACK_GET, Some(FORM), "channel_id=C0999999999").await,
        env.slack("POST", SLACK_SET, Some(FORM), "channel_id=C0999999999&duration_days=90")
            .await,
        vec![("slack.channel_retention", "C0999999999", json!("default"), json!(90))],
    ));
    let log = env.proxy.stop().await;
    check_intact(&mut c, &log.verification);
    c.eq("events recorded", log.events.len(), pairs.len() * 2);
    for (i, (what, read, change, expected)) in pairs.iter().enumerate() {
        c.eq(&format!("{what}: read status"), read.status, 200);
        c.eq(&format!("{what}: change status"), change.status, 200);
        match (log.events.get(2 * i), log.events.get(2 * i + 1)) {
            (Some(r), Some(ev)) => {
                c.eq(&format!("{what}: read outcome"), &r["outcome"], &json!("forwarded"));
                c.eq(&format!("{what}: read readOnly"), &r["readOnly"], &json!(true));
                check_previous(&mut c, what, ev, expected);
            }
            _ => c.fail(what, "events missing"),
        }
    }
    c.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_previous_from_own_changes() {
    previous_from_own_changes(Mode::Forward).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reverse_previous_from_own_changes() {
    previous_from_own_changes(Mode::Reverse).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_previous_from_reads() {
    previous_from_reads(Mode::Forward).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reverse_previous_from_reads() {
    previous_from_reads(Mode::Reverse).await;
}

// ---------------------------------------------------------------------------------------------
// 3. Vendor limits the proxy enforces itself
// ---------------------------------------------------------------------------------------------

struct Rejection {
    api: Api,
    method: &'static str,
    path: String,
    bearer: bool,
    content_type: Option<&'static str>,
    body: String,
    event_name: &'static str,
}

fn rejection(name: &str) -> Rejection {
    let aws = |host, path: String, bearer, body: &str, event_name| Rejection {
        api: Api::Aws(host),
        method: "PUT",
        path,
        bearer,
        content_type: None,
        body: body.to_string(),
        event_name,
    };
    let slack = |content_type, body: &str| Rejection {
        api: Api::Slack { form_token: false },
        method: "POST",
        path: SLACK_SET.to_string(),
        bearer: false,
        content_type: Some(content_type),
        body: body.to_string(),
        event_name: "admin.conversations.setCustomRetention",
    };
    match name {
        "chime_retention_days_99999" => aws(
            CHIME_HOST,
            retention_path(ACCOUNT),
            false,
            r#"{"RetentionSettings": {"RoomRetentionSettings": {"RetentionDays": 99999}}}"#,
            "PutRetentionSettings",
        ),
        "chime_duplicate_json_keys" => aws(
            CHIME_HOST,
            retention_path(ACCOUNT),
            false,
            r#"{"RetentionSettings": {"RoomRetentionSettings": {"RetentionDays": 30, "RetentionDays": 4000}}}"#,
            "PutRetentionSettings",
        ),
        "channel_expiration_criterion_bogus" => aws(
            MESSAGING_HOST,
            channel_expiration_path(CHANNEL),
            true,
            r#"{"ExpirationSettings": {"ExpirationDays": 30, "ExpirationCriterion": "BOGUS"}}"#,
            "PutChannelExpirationSettings",
        ),
        "channel_malformed_arn" => aws(
            MESSAGING_HOST,
            "/channels/notanarn/expiration-settings".into(),
            true,
            r#"{"ExpirationSettings": {"ExpirationDays": 30, "ExpirationCriterion": "CREATED_TIMESTAMP"}}"#,
            "PutChannelExpirationSettings",
        ),
        "user_expiration_last_message_timestamp" => aws(
            IDENTITY_HOST,
            user_expiration_path(USER),
            false,
            r#"{"ExpirationSettings": {"ExpirationDays": 30, "ExpirationCriterion": "LAST_MESSAGE_TIMESTAMP"}}"#,
            "PutAppInstanceUserExpirationSettings",
        ),
        "slack_duration_36500" => slack(FORM, "channel_id=C0123456789&duration_days=36500"),
        "slack_duration_0" => slack(FORM, "channel_id=C0123456789&duration_days=0"),
        "slack_duration_abc" => slack(FORM, "channel_id=C0123456789&duration_days=abc"),
        "slack_duration_abc_json" => slack(
            "application/json",
            r#"{"channel_id": "C0123456789", "duration_days": "abc"}"#,
        ),
        "slack_duplicate_json_keys" => slack(
            "application/json",
            r#"{"channel_id": "C0123456789", "duration_days": 400, "duration_days": 30}"#,
        ),
        "slack_duplicate_form_parameter" => slack(FORM, "channel_id=C0123456789&duration_days=400&duration_days=30"),
        other => panic!("no rejection named {other}"),
    }
}

async fn run_rejection(mode: Mode, name: &str) {
    let r = rejection(name);
    let env = Env::start(mode, ProxySettings::default()).await;
    let req = match r.api {
        Api::Aws(host) => AwsCall::botocore(
            r.method,
            host,
            &r.path,
            r.bearer.then_some(BEARER),
            INVOCATION_ID,
            r.body.as_bytes(),
        )
        .request(mode, &env.proxy),
        Api::Slack { .. } => slack_request(
            mode,
            &env.proxy,
            r.method,
            &r.path,
            r.content_type,
            Some(SLACK_TOKEN),
            r.body.as_bytes(),
        ),
    };
    let resp = env.proxy.send(req).await;
    let mut c = Checks::new(format!("{mode:?} rejection {name}"));
    let aws = matches!(r.api, Api::Aws(_));
    let body = resp.json();
    if aws {
        c.eq("client status", resp.status, 400);
        c.ok(
            "x-amzn-ErrorType",
            resp.header("x-amzn-errortype")
                .is_some_and(|t| t.starts_with("BadRequestException")),
            format!("{:?}", resp.header("x-amzn-errortype")),
        );
        c.eq("body Code", &body["Code"], &json!("BadRequest"));
        c.ok(
            "body Message",
            body["Message"].as_str().is_some_and(|m| !m.is_empty()),
            body_text(&resp),
        );
    } else {
        c.eq("client status", resp.status, 200);
        c.eq("body ok", &body["ok"], &json!(false));
        c.eq("body error", &body["error"], &json!("invalid_arguments"));
    }
    c.eq("requests the vendor received", env.fake.count(), 0);
    let log = env.proxy.stop().await;
    check_intact(&mut c, &log.verification);
    c.eq("events recorded", log.events.len(), 1);
    if let Some(ev) = log.events.first() {
        c.eq("eventName", &ev["eventName"], &json!(r.event_name));
        c.eq("outcome", &ev["outcome"], &json!("rejected"));
        c.eq("httpStatus", &ev["httpStatus"], &json!(resp.status));
        c.eq(
            "errorCode",
            &ev["errorCode"],
            &json!(if aws {
                "BadRequestException"
            } else {
                "invalid_arguments"
            }),
        );
        if aws {
            c.eq(
                "client x-amzn-RequestId = eventID",
                resp.header("x-amzn-requestid"),
                ev["eventID"].as_str(),
            );
        }
    }
    c.finish();
}

macro_rules! rejection_tests {
    ($($name:ident),* $(,)?) => {
        mod forward_rejection {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    run_rejection(Mode::Forward, stringify!($name)).await;
                }
            )*
        }
        mod reverse_rejection {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    run_rejection(Mode::Reverse, stringify!($name)).await;
                }
            )*
        }
    };
}

rejection_tests!(
    chime_retention_days_99999,
    chime_duplicate_json_keys,
    channel_expiration_criterion_bogus,
    channel_malformed_arn,
    user_expiration_last_message_timestamp,
    slack_duration_36500,
    slack_duration_0,
    slack_duration_abc,
    slack_duration_abc_json,
    slack_duplicate_json_keys,
    slack_duplicate_form_parameter,
);

// ---------------------------------------------------------------------------------------------
// 4. Routing edges
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reverse_unknown_path_is_404_naming_the_prefixes() {
    let env = Env::start(Mode::Reverse, ProxySettings::default()).await;
    let mut c = Checks::new("unknown origin-form path");
    for path in ["/foo/bar", "/", "/apix/chat.postMessage", "/channelsX"] {
        let req = http::Request::builder()
            .method("GET")
            .uri(path)
            .body(Bytes::new())
            .unwrap();
        let resp = env.proxy.send(req).await;
        let text = body_text(&resp);
        c.eq(&format!("{path}: status"), resp.status, 404);
        for prefix in [
            "/api/",
            "/accounts/",
            "/channels",
            "/channel-flows",
            "/app-instances",
            "/app-instance-users",
        ] {
            c.ok(&format!("{path}: message names {prefix}"), text.contains(prefix), &text);
        }
    }
    c.eq("requests the vendor received", env.fake.count(), 0);
    let log = env.proxy.stop().await;
    check_intact(&mut c, &log.verification);
    c.eq("events recorded", log.events.len(), 0);
    c.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_to_host_outside_allow_hosts_is_403_and_nothing_connects() {
    let env = Env::start(Mode::Forward, ProxySettings::default()).await;
    let mut c = Checks::new("forward to a host outside allow_hosts");
    // A listener nobody should ever connect to: any connection attempt would complete in its
    // backlog before the proxy answers, so a non-blocking accept afterwards tells for sure.
    let canary = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    canary.set_nonblocking(true).unwrap();
    let canary_addr = canary.local_addr().unwrap();
    let acct = retention_path(ACCOUNT);
    let targets = [
        ("evil.example.com".to_string(), format!("http://evil.example.com{acct}")),
        (canary_addr.to_string(), format!("http://{canary_addr}{acct}")),
        (
            format!("localhost:{}", canary_addr.port()),
            format!("http://localhost:{}/api/chat.postMessage", canary_addr.port()),
        ),
        (env.fake.host(), format!("http://{}{acct}", env.fake.host())),
        (
            "chime.us-east-1.amazonaws.com.evil.example.com".to_string(),
            format!("http://chime.us-east-1.amazonaws.com.evil.example.com{acct}"),
        ),
        (
            "evilamazonaws.com".to_string(),
            format!("http://evilamazonaws.com{acct}"),
        ),
        (
            "slack.com.evil.example.com".to_string(),
            "http://slack.com.evil.example.com/api/x".to_string(),
        ),
    ];
    for (host, target) in &targets {
        let mut headers = http::HeaderMap::new();
        headers.insert("host", host.parse().unwrap());
        headers.insert("content-type", "application/json".parse().unwrap());
        let date = sigv4::amz_date_now();
        let body = br#"{"RetentionSettings": {}}"#;
        sigv4::sign(
            "PUT",
            target,
            &mut headers,
            body,
            &support::harness::client_params(&date),
        )
        .unwrap();
        let mut req = http::Request::builder()
            .method("PUT")
            .uri(target.as_str())
            .body(Bytes::from_static(body))
            .unwrap();
        *req.headers_mut() = headers;
        let resp = env.proxy.send(req).await;
        c.eq(&format!("{target}: status"), resp.status, 403);
    }
    // Raw request lines the http crate would not build: userinfo in the authority, and CONNECT.
    let raw = [
        format!(
            "GET http://chime.us-east-1.amazonaws.com@{canary_addr}/ HTTP/1.1\r\nHost: chime.us-east-1.amazonaws.com\r\nConnection: close\r\n\r\n"
        ),
        format!("CONNECT {canary_addr} HTTP/1.1\r\nHost: {canary_addr}\r\n\r\n"),
        "CONNECT evil.example.com:443 HTTP/1.1\r\nHost: evil.example.com:443\r\n\r\n".to_string(),
    ];
    for r in &raw {
        let resp = send_raw(env.proxy.addr, r.as_bytes()).await;
        let line = r.lines().next().unwrap_or("");
        c.ok(
            &format!("{line}: refused"),
            resp.status == 403 || (line.starts_with("GET") && resp.status == 400),
            &resp.text,
        );
    }
    match canary.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        Ok((_, peer)) => c.fail("canary listener", format!("the proxy connected to it (from {peer})")),
        Err(e) => c.fail("canary listener", e),
    }
    c.eq("requests the vendor received", env.fake.count(), 0);
    let log = env.proxy.stop().await;
    check_intact(&mut c, &log.verification);
    c.eq("events recorded", log.events.len(), 0);
    c.finish();
}

/// Calls not in SPEC §1 are streamed through unchanged, are not limited by `max_body_bytes`,
/// and leave no audit event.
async fn pass_through(mode: Mode) {
    let env = Env::start(
        mode,
        ProxySettings {
            max_body_bytes: Some(1024),
            ..Default::default()
        },
    )
    .await;
    let mut c = Checks::new(format!("{mode:?} pass-through"));

    let text = "a".repeat(4000);
    let post_body = format!("channel=C0123456789&text={text}");
    let resp = env.slack("POST", "/api/chat.postMessage", Some(FORM), &post_body).await;
    c.eq("chat.postMessage: client status", resp.status, 200);
    c.eq("chat.postMessage: client body", resp.json(), json!({"ok": true}));
    match env.fake.last() {
        Some(got) => {
            c.eq(
                "chat.postMessage: vendor path",
                got.path_and_query.as_str(),
                "/api/chat.postMessage",
            );
            c.ok(
                "chat.postMessage: vendor body unchanged",
                got.body == post_body.as_bytes(),
                format!("{} bytes", got.body_len),
            );
            c.eq(
                "chat.postMessage: vendor token",
                got.slack_token.as_deref(),
                Some(SLACK_TOKEN),
            );
        }
        None => c.fail("chat.postMessage", "the vendor received nothing"),
    }

    let reads = [
        (
            MESSAGING_HOST,
            format!("/channels/{}/messages?max-results=50", enc(CHANNEL)),
            Some(BEARER),
        ),
        (CHIME_HOST, format!("/accounts/{ACCOUNT}/users"), None),
        (
            IDENTITY_HOST,
            format!("/app-instance-users?app-instance-arn={}", enc(APP)),
            None,
        ),
    ];
    for (host, path, bearer) in &reads {
        env.fake.clear_received();
        let resp = env.aws("GET", host, path, *bearer, "").await;
        c.eq(&format!("GET {path}: client status"), resp.status, 200);
        match env.fake.received().as_slice() {
            [got] => {
                c.eq(
                    &format!("GET {path}: vendor path"),
                    got.path_and_query.as_str(),
                    path.as_str(),
                );
                match &got.sig {
                    Some(Ok(sig)) => c.eq(
                        &format!("GET {path}: vendor-verified key"),
                        sig.access_key_id.as_str(),
                        mode.vendor_access_key(),
                    ),
                    other => c.fail(&format!("GET {path}: vendor SigV4 verification"), format!("{other:?}")),
                }
            }
            other => c.fail(
                &format!("GET {path}"),
                format!("the vendor received {} requests", other.len()),
            ),
        }
    }

    // A streamed pass-through answer far larger than max_body_bytes (forward mode only: the
    // path has no reverse-mode prefix).
    if mode == Mode::Forward {
        let n = 200_000;
        let req = slack_request(mode, &env.proxy, "GET", &format!("/stream-bytes/{n}"), None, None, b"");
        let resp = env.proxy.send(req).await;
        c.eq("GET http://slack.com/stream-bytes: status", resp.status, 200);
        c.ok(
            "GET http://slack.com/stream-bytes: body",
            resp.body.as_ref() == support::fake_vendor::pattern_bytes(n).as_slice(),
            format!("{} bytes", resp.body.len()),
        );
    }

    let log = env.proxy.stop().await;
    check_intact(&mut c, &log.verification);
    c.eq("events recorded", log.events.len(), 0);
    c.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_pass_through_is_streamed_and_not_audited() {
    pass_through(Mode::Forward).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reverse_pass_through_is_streamed_and_not_audited() {
    pass_through(Mode::Reverse).await;
}

/// An intercepted call whose body is over `server.max_body_bytes` gets `413` and nothing is
/// forwarded, whether the length is declared or the body is chunked.
/// The request written by hand with `Transfer-Encoding: chunked` (500-byte chunks) instead of
/// `Content-Length`, and `Connection: close`.
fn chunked_wire(req: &http::Request<Bytes>) -> String {
    let mut wire = format!("{} {} HTTP/1.1\r\n", req.method(), req.uri());
    for (k, v) in req.headers() {
        if k != "content-length" {
            wire.push_str(&format!("{k}: {}\r\n", v.to_str().unwrap()));
        }
    }
    wire.push_str("transfer-encoding: chunked\r\nconnection: close\r\n\r\n");
    for chunk in req.body().chunks(500) {
        wire.push_str(&format!(
            "{:x}\r\n{}\r\n",
            chunk.len(),
            std::str::from_utf8(chunk).unwrap()
        ));
    }
    wire.push_str("0\r\n\r\n");
    wire
}

async fn body_over_limit(mode: Mode) {
    let env = Env::start(
        mode,
        ProxySettings {
            max_body_bytes: Some(1024),
            ..Default::default()
        },
    )
    .await;
    let mut c = Checks::new(format!("{mode:?} body over max_body_bytes"));
    let acct = retention_path(ACCOUNT);
    let padding = " ".repeat(2000);
    let big = format!(r#"{{"RetentionSettings": {{"RoomRetentionSettings": {{"RetentionDays": 365}}}}{padding}}}"#);

    // Declared Content-Length.
    let resp = env.aws("PUT", CHIME_HOST, &acct, None, &big).await;
    c.eq("Content-Length body: status", resp.status, 413);
    c.ok(
        "Content-Length body: AWS error shape",
        resp.header("x-amzn-errortype").is_some() && resp.json()["Message"].is_string(),
        format!("{:?} {}", resp.header("x-amzn-errortype"), body_text(&resp)),
    );

    // Chunked, no Content-Length.
    let call = AwsCall::botocore("PUT", CHIME_HOST, &acct, None, INVOCATION_ID, big.as_bytes());
    let wire = chunked_wire(&call.request(mode, &env.proxy));
    let raw = send_raw(env.proxy.addr, wire.as_bytes()).await;
    c.eq("chunked body: status", raw.status, 413);

    // A Slack form body.
    let resp = env
        .slack(
            "POST",
            SLACK_SET,
            Some(FORM),
            &format!("channel_id=C0123456789&duration_days=365&pad={}", "x".repeat(2000)),
        )
        .await;
    c.eq("Slack body: status", resp.status, 413);

    c.eq("requests the vendor received", env.fake.count(), 0);
    let log = env.proxy.stop().await;
    check_intact(&mut c, &log.verification);
    c.eq("events recorded", log.events.len(), 3);
    for ev in &log.events {
        c.eq("event outcome", &ev["outcome"], &json!("rejected"));
        c.eq("event httpStatus", &ev["httpStatus"], &json!(413));
    }
    c.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_intercepted_body_over_limit_is_413_and_not_forwarded() {
    body_over_limit(Mode::Forward).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reverse_intercepted_body_over_limit_is_413_and_not_forwarded() {
    body_over_limit(Mode::Reverse).await;
}

/// A body of exactly `max_body_bytes` is forwarded, and so is a chunked body under the limit
/// (with its signature intact in forward mode).
async fn body_at_limit_and_chunked(mode: Mode) {
    let env = Env::start(
        mode,
        ProxySettings {
            max_body_bytes: Some(1024),
            ..Default::default()
        },
    )
    .await;
    let mut c = Checks::new(format!("{mode:?} body at the limit, chunked body"));
    let acct = retention_path(ACCOUNT);
    let head = r#"{"RetentionSettings": {"RoomRetentionSettings": {"RetentionDays": 365}}"#;
    let at_limit = format!("{head}{}}}", " ".repeat(1024 - head.len() - 1));
    assert_eq!(at_limit.len(), 1024);
    let resp = env.aws("PUT", CHIME_HOST, &acct, None, &at_limit).await;
    c.eq("body of exactly max_body_bytes: status", resp.status, 200);
    c.ok(
        "body of exactly max_body_bytes: vendor body",
        env.fake
            .last()
            .is_some_and(|g| g.body == at_limit.as_bytes() && g.sig_ok()),
        "not received intact",
    );

    let body = r#"{"RetentionSettings": {"RoomRetentionSettings": {"RetentionDays": 400}, "ConversationRetentionSettings": {"RetentionDays": 400}}}"#;
    let call = AwsCall::botocore("PUT", CHIME_HOST, &acct, None, INVOCATION_ID, body.as_bytes());
    let raw = send_raw(env.proxy.addr, chunked_wire(&call.request(mode, &env.proxy)).as_bytes()).await;
    c.eq("chunked body: status", raw.status, 200);
    match env.fake.last() {
        Some(got) => {
            c.ok(
                "chunked body: vendor body unchanged",
                got.body == body.as_bytes(),
                got.body_str(),
            );
            c.ok("chunked body: vendor SigV4", got.sig_ok(), format!("{:?}", got.sig));
        }
        None => c.fail("chunked body", "the vendor received nothing"),
    }
    c.eq("requests the vendor received", env.fake.count(), 2);
    let log = env.proxy.stop().await;
    check_intact(&mut c, &log.verification);
    c.eq("events recorded", log.events.len(), 2);
    if let Some(ev) = log.events.get(1) {
        c.eq("chunked body: outcome", &ev["outcome"], &json!("forwarded"));
        check_previous(
            &mut c,
            "chunked body",
            ev,
            &[
                ("chime.room_retention", ACCOUNT, json!(365), json!(400)),
                ("chime.conversation_retention", ACCOUNT, json!("off"), json!(400)),
            ],
        );
    }
    c.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_body_at_limit_and_chunked_body_are_forwarded() {
    body_at_limit_and_chunked(Mode::Forward).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reverse_body_at_limit_and_chunked_body_are_forwarded() {
    body_at_limit_and_chunked(Mode::Reverse).await;
}

const HOP_BY_HOP: [(&str, &str); 7] = [
    ("connection", "X-Custom , keep-alive"),
    ("x-custom", "must-not-leave"),
    ("keep-alive", "timeout=5"),
    ("proxy-authorization", "Basic dXNlcjpwYXNz"),
    ("te", "trailers"),
    ("proxy-connection", "keep-alive"),
    ("x-forwarded-for", "203.0.113.9"),
];

fn check_hop_by_hop(c: &mut Checks, what: &str, got: Option<Received>) {
    let Some(got) = got else {
        c.fail(what, "the vendor received nothing");
        return;
    };
    for name in [
        "x-custom",
        "keep-alive",
        "proxy-authorization",
        "te",
        "proxy-connection",
    ] {
        c.eq(&format!("{what}: vendor header {name}"), got.header(name), None::<&str>);
    }
    c.ok(
        &format!("{what}: vendor Connection header"),
        got.header("connection")
            .is_none_or(|v| !v.to_ascii_lowercase().contains("x-custom")),
        format!("{:?}", got.header("connection")),
    );
    c.eq(
        &format!("{what}: vendor X-Forwarded-For"),
        got.header("x-forwarded-for"),
        Some("203.0.113.9, 127.0.0.1"),
    );
    if got.family.is_aws() {
        c.ok(
            &format!("{what}: vendor SigV4 verification"),
            got.sig_ok(),
            format!("{:?}", got.sig),
        );
    }
}

async fn hop_by_hop(mode: Mode) {
    let env = Env::start(mode, ProxySettings::default()).await;
    let mut c = Checks::new(format!("{mode:?} hop-by-hop headers"));

    let body = br#"{"RetentionSettings": {"RoomRetentionSettings": {"RetentionDays": 365}}}"#;
    let acct = retention_path(ACCOUNT);
    let call = AwsCall::botocore("PUT", CHIME_HOST, &acct, None, INVOCATION_ID, body);
    let resp = env
        .proxy
        .send(with_headers(call.request(mode, &env.proxy), &HOP_BY_HOP))
        .await;
    c.eq("intercepted AWS call: status", resp.status, 200);
    check_hop_by_hop(&mut c, "intercepted AWS call", env.fake.last());

    let req = slack_request(
        mode,
        &env.proxy,
        "POST",
        SLACK_SET,
        Some(FORM),
        Some(SLACK_TOKEN),
        b"channel_id=C0123456789&duration_days=365",
    );
    let resp = env.proxy.send(with_headers(req, &HOP_BY_HOP)).await;
    c.eq("intercepted Slack call: status", resp.status, 200);
    check_hop_by_hop(&mut c, "intercepted Slack call", env.fake.last());

    let req = slack_request(
        mode,
        &env.proxy,
        "POST",
        "/api/chat.postMessage",
        Some(FORM),
        Some(SLACK_TOKEN),
        b"channel=C0123456789&text=hi",
    );
    let resp = env.proxy.send(with_headers(req, &HOP_BY_HOP)).await;
    c.eq("pass-through Slack call: status", resp.status, 200);
    check_hop_by_hop(&mut c, "pass-through Slack call", env.fake.last());

    let messages = format!("/channels/{}/messages", enc(CHANNEL));
    let call = AwsCall::botocore("GET", MESSAGING_HOST, &messages, Some(BEARER), INVOCATION_ID, b"");
    let resp = env
        .proxy
        .send(with_headers(call.request(mode, &env.proxy), &HOP_BY_HOP))
        .await;
    c.eq("pass-through AWS call: status", resp.status, 200);
    check_hop_by_hop(&mut c, "pass-through AWS call", env.fake.last());

    c.eq("requests the vendor received", env.fake.count(), 4);
    let log = env.proxy.stop().await;
    check_intact(&mut c, &log.verification);
    c.eq("events recorded", log.events.len(), 2);
    for ev in &log.events {
        // No trusted proxies are configured: a client's X-Forwarded-For is not believed.
        c.eq(
            &format!("{}: sourceIPAddress", ev["eventName"]),
            &ev["sourceIPAddress"],
            &json!("127.0.0.1"),
        );
    }
    c.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_hop_by_hop_headers_are_stripped_and_xff_appended() {
    hop_by_hop(Mode::Forward).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reverse_hop_by_hop_headers_are_stripped_and_xff_appended() {
    hop_by_hop(Mode::Reverse).await;
}

/// Other spellings of a vendor host in the absolute-form target (upper case, trailing dot) are
/// the same vendor: the call is audited, not passed through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_vendor_host_spellings_are_audited() {
    let env = Env::start(Mode::Forward, ProxySettings::default()).await;
    let mut c = Checks::new("forward vendor host spellings");
    let acct = retention_path(ACCOUNT);
    let body = r#"{"RetentionSettings": {"RoomRetentionSettings": {"RetentionDays": 365}}}"#;
    let hosts = ["CHIME.US-EAST-1.AMAZONAWS.COM", "chime.us-east-1.amazonaws.com."];
    for (i, host) in hosts.iter().enumerate() {
        let resp = env.aws("PUT", host, &acct, None, body).await;
        c.eq(&format!("{host}: status"), resp.status, 200);
        c.eq(&format!("{host}: vendor requests"), env.fake.count(), i + 1);
        c.ok(
            &format!("{host}: vendor SigV4"),
            env.fake.last().is_some_and(|g| g.sig_ok()),
            format!("{:?}", env.fake.last().map(|g| g.sig)),
        );
        let events = env.proxy.events();
        c.eq(&format!("{host}: events"), events.len(), i + 1);
        if let Some(ev) = events.last() {
            c.eq(
                &format!("{host}: eventName"),
                &ev["eventName"],
                &json!("PutRetentionSettings"),
            );
            c.eq(&format!("{host}: outcome"), &ev["outcome"], &json!("forwarded"));
        }
    }
    let log = env.proxy.stop().await;
    check_intact(&mut c, &log.verification);
    c.finish();
}

/// `X-Forwarded-For` given on several header lines is one list (RFC 9110 §5.3): the proxy
/// appends the client's address to all of it, not to the first line only.
async fn forwarded_for_lines(mode: Mode) {
    let env = Env::start(mode, ProxySettings::default()).await;
    let mut c = Checks::new(format!("{mode:?} X-Forwarded-For on several lines"));
    let xff = [("x-forwarded-for", "203.0.113.9"), ("x-forwarded-for", "198.51.100.7")];
    let acct = retention_path(ACCOUNT);
    let body = br#"{"RetentionSettings": {"RoomRetentionSettings": {"RetentionDays": 365}}}"#;
    let call = AwsCall::botocore("PUT", CHIME_HOST, &acct, None, INVOCATION_ID, body);
    let intercepted = with_headers(call.request(mode, &env.proxy), &xff);
    let passed = with_headers(
        slack_request(
            mode,
            &env.proxy,
            "POST",
            "/api/chat.postMessage",
            Some(FORM),
            Some(SLACK_TOKEN),
            b"channel=C1&text=hi",
        ),
        &xff,
    );
    for (what, req) in [
        ("intercepted AWS call", intercepted),
        ("pass-through Slack call", passed),
    ] {
        let resp = env.proxy.send(req).await;
        c.eq(&format!("{what}: status"), resp.status, 200);
        let got: Vec<String> = env
            .fake
            .last()
            .map(|g| {
                g.headers
                    .get_all("x-forwarded-for")
                    .iter()
                    .map(|v| v.to_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default();
        c.eq(
            &format!("{what}: vendor X-Forwarded-For (all lines, joined)"),
            got.join(", "),
            "203.0.113.9, 198.51.100.7, 127.0.0.1",
        );
    }
    let log = env.proxy.stop().await;
    check_intact(&mut c, &log.verification);
    c.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_x_forwarded_for_lines_are_all_kept() {
    forwarded_for_lines(Mode::Forward).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reverse_x_forwarded_for_lines_are_all_kept() {
    forwarded_for_lines(Mode::Reverse).await;
}

/// Temporary credentials: in forward mode the client's `X-Amz-Security-Token` is part of its
/// signature and must reach the vendor; in reverse mode it belongs to the replaced signature
/// and must not. Either way it is never stored.
async fn session_token(mode: Mode) {
    const TOKEN: &str = "FwoGZXIvYXdzEXAMPLESESSIONTOKENdGhpcyBpcyBub3QgYSByZWFsIHRva2Vu";
    let env = Env::start(mode, ProxySettings::default()).await;
    let mut c = Checks::new(format!("{mode:?} client session token"));
    let acct = retention_path(ACCOUNT);
    let body = br#"{"RetentionSettings": {"RoomRetentionSettings": {"RetentionDays": 365}}}"#;
    let mut call = AwsCall::botocore("PUT", CHIME_HOST, &acct, None, INVOCATION_ID, body);
    call.session_token = Some(TOKEN);
    let resp = env.proxy.send(call.request(mode, &env.proxy)).await;
    c.eq("client status", resp.status, 200);
    match env.fake.last() {
        Some(got) => {
            c.ok("vendor SigV4 verification", got.sig_ok(), format!("{:?}", got.sig));
            let expected = match mode {
                Mode::Forward => Some(TOKEN),
                Mode::Reverse => None,
            };
            c.eq(
                "vendor x-amz-security-token",
                got.header("x-amz-security-token"),
                expected,
            );
        }
        None => c.fail("vendor", "received nothing"),
    }
    let log = env.proxy.stop().await;
    check_intact(&mut c, &log.verification);
    c.eq("events recorded", log.events.len(), 1);
    if let Some(ev) = log.events.first() {
        c.eq(
            "userIdentity.accessKeyId",
            &ev["userIdentity"]["accessKeyId"],
            &json!(EXAMPLE_ACCESS_KEY_ID),
        );
        c.ok("event holds no session token", !ev.to_string().contains(TOKEN), "found");
    }
    c.ok(
        "no session token in the database files",
        !contains_bytes(&log.stored_bytes, TOKEN.as_bytes()),
        "found",
    );
    c.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_client_session_token_passes_and_is_not_stored() {
    session_token(Mode::Forward).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reverse_client_session_token_is_replaced_and_not_stored() {
    session_token(Mode::Reverse).await;
}

/// An ARN with raw `/` and `:` (or lower-case escapes) in the path names the same resource as
/// botocore's `%3A`/`%2F` spelling: the call is still recognised and audited, not passed
/// through unaudited.
async fn other_arn_spellings(mode: Mode) {
    let env = Env::start(mode, ProxySettings::default()).await;
    let mut c = Checks::new(format!("{mode:?} other ARN spellings"));
    let lower = |arn: &str| enc(arn).replace("%3A", "%3a").replace("%2F", "%2f");
    let calls = [
        (
            "PUT",
            MESSAGING_HOST,
            format!("/channels/{CHANNEL}/expiration-settings"),
            r#"{"ExpirationSettings": {"ExpirationDays": 30, "ExpirationCriterion": "CREATED_TIMESTAMP"}}"#,
            "PutChannelExpirationSettings",
            vec![("chime_sdk.channel_expiration", CHANNEL, Value::Null, json!(30))],
        ),
        (
            "PUT",
            MESSAGING_HOST,
            format!("/channels/{}/expiration-settings", lower(CHANNEL)),
            r#"{"ExpirationSettings": {"ExpirationDays": 60, "ExpirationCriterion": "CREATED_TIMESTAMP"}}"#,
            "PutChannelExpirationSettings",
            vec![("chime_sdk.channel_expiration", CHANNEL, json!(30), json!(60))],
        ),
        (
            "GET",
            MESSAGING_HOST,
            format!("/channels/{CHANNEL}"),
            "",
            "DescribeChannel",
            vec![],
        ),
        (
            "PUT",
            IDENTITY_HOST,
            format!("/app-instance-users/{USER}/expiration-settings"),
            r#"{"ExpirationSettings": {"ExpirationDays": 30, "ExpirationCriterion": "CREATED_TIMESTAMP"}}"#,
            "PutAppInstanceUserExpirationSettings",
            vec![("chime_sdk.user_expiration", USER, Value::Null, json!(30))],
        ),
        (
            "PUT",
            IDENTITY_HOST,
            format!("/app-instances/{}/retention-settings", lower(APP)),
            r#"{"AppInstanceRetentionSettings": {"ChannelRetentionSettings": {"RetentionDays": 30}}}"#,
            "PutAppInstanceRetentionSettings",
            vec![("chime_sdk.app_instance_retention", APP, Value::Null, json!(30))],
        ),
    ];
    for (i, (method, host, path, body, event_name, expected)) in calls.iter().enumerate() {
        let bearer = (*host == MESSAGING_HOST).then_some(BEARER);
        let resp = env.aws(method, host, path, bearer, body).await;
        c.eq(&format!("{method} {path}: client status"), resp.status, 200);
        c.eq(&format!("{method} {path}: vendor requests"), env.fake.count(), i + 1);
        if let Some(got) = env.fake.last() {
            c.eq(
                &format!("{method} {path}: vendor path"),
                got.path_and_query.as_str(),
                path.as_str(),
            );
            c.ok(
                &format!("{method} {path}: vendor SigV4"),
                got.sig_ok(),
                format!("{:?}", got.sig),
            );
        }
        let events = env.proxy.events();
        c.eq(&format!("{method} {path}: events"), events.len(), i + 1);
        if let Some(ev) = events.last() {
            c.eq(
                &format!("{method} {path}: eventName"),
                &ev["eventName"],
                &json!(event_name),
            );
            c.eq(
                &format!("{method} {path}: outcome"),
                &ev["outcome"],
                &json!("forwarded"),
            );
            check_previous(&mut c, &format!("{method} {path}"), ev, expected);
        }
    }
    let log = env.proxy.stop().await;
    check_intact(&mut c, &log.verification);
    c.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_other_arn_spellings_are_audited() {
    other_arn_spellings(Mode::Forward).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reverse_other_arn_spellings_are_audited() {
    other_arn_spellings(Mode::Reverse).await;
}

// ---------------------------------------------------------------------------------------------
// 5. Upstream failures
// ---------------------------------------------------------------------------------------------

async fn vendor_500(mode: Mode) {
    let failure = r#"{"Code":"ServiceFailure","Message":"internal failure"}"#;
    let opts = FakeVendorOpts {
        status_override: Some((500, failure.to_string())),
        ..mode.fake_opts()
    };
    let env = Env::start_with(mode, opts, ProxySettings::default()).await;
    let mut c = Checks::new(format!("{mode:?} vendor answers 500"));
    let acct = retention_path(ACCOUNT);
    let body = r#"{"RetentionSettings": {"RoomRetentionSettings": {"RetentionDays": 365}}}"#;
    let resp = env.aws("PUT", CHIME_HOST, &acct, None, body).await;
    c.eq("client status", resp.status, 500);
    c.eq(
        "client x-amzn-ErrorType",
        resp.header("x-amzn-errortype"),
        Some("ServiceFailureException"),
    );
    c.eq("client body", body_text(&resp), failure.to_string());
    let got = env.fake.last();
    c.eq("requests the vendor received", env.fake.count(), 1);
    c.ok(
        "vendor SigV4 verification",
        got.as_ref().is_some_and(Received::sig_ok),
        format!("{:?}", got.as_ref().map(|g| &g.sig)),
    );
    let ev = env.last_event();
    c.eq("outcome", &ev["outcome"], &json!("forwarded"));
    c.eq("httpStatus", &ev["httpStatus"], &json!(500));
    c.eq("errorCode", &ev["errorCode"], &json!("ServiceFailureException"));
    c.eq("errorMessage", &ev["errorMessage"], &json!("internal failure"));
    c.eq(
        "requestID = vendor's",
        &ev["requestID"],
        &json!(got.as_ref().and_then(|g| g.request_id.clone())),
    );

    // A change the vendor refused is not a value the resource has: previous stays unknown.
    env.fake.set_status_override(None);
    let resp = env
        .aws(
            "PUT",
            CHIME_HOST,
            &acct,
            None,
            r#"{"RetentionSettings": {"RoomRetentionSettings": {"RetentionDays": 400}}}"#,
        )
        .await;
    c.eq("retry: client status", resp.status, 200);
    check_previous(
        &mut c,
        "retry after a vendor 500",
        &env.last_event(),
        &[
            ("chime.room_retention", ACCOUNT, Value::Null, json!(400)),
            ("chime.conversation_retention", ACCOUNT, Value::Null, json!("off")),
        ],
    );

    // Slack reports errors in a 200 body; a 500 is still passed through and recorded.
    env.fake.set_status_override(Some((500, "upstream broke".into())));
    let resp = env
        .slack(
            "POST",
            SLACK_SET,
            Some(FORM),
            "channel_id=C0123456789&duration_days=365",
        )
        .await;
    c.eq("Slack: client status", resp.status, 500);
    let ev = env.last_event();
    c.eq("Slack: outcome", &ev["outcome"], &json!("forwarded"));
    c.eq("Slack: httpStatus", &ev["httpStatus"], &json!(500));
    c.ok("Slack: errorCode", !ev["errorCode"].is_null(), &ev["errorCode"]);

    let log = env.proxy.stop().await;
    check_intact(&mut c, &log.verification);
    c.eq("events recorded", log.events.len(), 3);
    c.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_vendor_500_is_passed_through_and_recorded() {
    vendor_500(Mode::Forward).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reverse_vendor_500_is_passed_through_and_recorded() {
    vendor_500(Mode::Reverse).await;
}

async fn upstream_down(mode: Mode) {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let proxy = Proxy::start(&format!("http://{closed}"), ProxySettings::default()).await;
    let mut c = Checks::new(format!("{mode:?} upstream down"));
    let body = r#"{"RetentionSettings": {"RoomRetentionSettings": {"RetentionDays": 365}}}"#;
    let acct = retention_path(ACCOUNT);
    let call = AwsCall::botocore("PUT", CHIME_HOST, &acct, None, INVOCATION_ID, body.as_bytes());
    let resp = proxy.send(call.request(mode, &proxy)).await;
    c.eq("AWS: client status", resp.status, 502);
    c.ok(
        "AWS: x-amzn-ErrorType",
        resp.header("x-amzn-errortype")
            .is_some_and(|t| t.ends_with("Exception")),
        format!("{:?}", resp.header("x-amzn-errortype")),
    );
    c.ok(
        "AWS: body Code and Message",
        resp.json()["Code"].is_string() && resp.json()["Message"].is_string(),
        body_text(&resp),
    );
    let ev = proxy.events().pop().unwrap_or(Value::Null);
    c.eq("AWS: outcome", &ev["outcome"], &json!("upstream_error"));
    c.eq("AWS: httpStatus", &ev["httpStatus"], &json!(502));
    c.ok("AWS: errorCode", ev["errorCode"].is_string(), &ev["errorCode"]);

    let req = slack_request(
        mode,
        &proxy,
        "POST",
        SLACK_SET,
        Some(FORM),
        Some(SLACK_TOKEN),
        b"channel_id=C0123456789&duration_days=365",
    );
    let resp = proxy.send(req).await;
    c.eq("Slack: client status", resp.status, 502);
    c.eq("Slack: body ok", &resp.json()["ok"], &json!(false));
    c.ok("Slack: body error", resp.json()["error"].is_string(), body_text(&resp));
    let ev = proxy.events().pop().unwrap_or(Value::Null);
    c.eq("Slack: outcome", &ev["outcome"], &json!("upstream_error"));
    c.eq("Slack: httpStatus", &ev["httpStatus"], &json!(502));

    let log = proxy.stop().await;
    check_intact(&mut c, &log.verification);
    c.eq("events recorded", log.events.len(), 2);
    c.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_upstream_down_is_502_upstream_error() {
    upstream_down(Mode::Forward).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reverse_upstream_down_is_502_upstream_error() {
    upstream_down(Mode::Reverse).await;
}

async fn upstream_timeout(mode: Mode) {
    let opts = FakeVendorOpts {
        delay: Some(Duration::from_secs(3)),
        ..mode.fake_opts()
    };
    let env = Env::start_with(
        mode,
        opts,
        ProxySettings {
            request_timeout: Some("300ms".into()),
            ..Default::default()
        },
    )
    .await;
    let mut c = Checks::new(format!("{mode:?} upstream too slow"));
    let started = Instant::now();
    let resp = env
        .aws(
            "PUT",
            CHIME_HOST,
            &retention_path(ACCOUNT),
            None,
            r#"{"RetentionSettings": {"RoomRetentionSettings": {"RetentionDays": 365}}}"#,
        )
        .await;
    let elapsed = started.elapsed();
    c.eq("client status", resp.status, 504);
    c.ok(
        "answered at the request timeout, not the vendor's delay",
        elapsed < Duration::from_secs(2),
        format!("{elapsed:?}"),
    );
    c.ok(
        "x-amzn-ErrorType",
        resp.header("x-amzn-errortype")
            .is_some_and(|t| t.ends_with("Exception")),
        format!("{:?}", resp.header("x-amzn-errortype")),
    );
    c.ok("vendor received the call", env.fake.wait_for(1, WAIT).await, "nothing");
    let ev = env.last_event();
    c.eq("outcome", &ev["outcome"], &json!("upstream_error"));
    c.eq("httpStatus", &ev["httpStatus"], &json!(504));
    c.ok("errorCode", ev["errorCode"].is_string(), &ev["errorCode"]);

    let resp = env
        .slack(
            "POST",
            SLACK_SET,
            Some(FORM),
            "channel_id=C0123456789&duration_days=365",
        )
        .await;
    c.eq("Slack: client status", resp.status, 504);
    c.eq("Slack: body ok", &resp.json()["ok"], &json!(false));
    let ev = env.last_event();
    c.eq("Slack: outcome", &ev["outcome"], &json!("upstream_error"));
    c.eq("Slack: httpStatus", &ev["httpStatus"], &json!(504));

    let log = env.proxy.stop().await;
    check_intact(&mut c, &log.verification);
    c.eq("events recorded", log.events.len(), 2);
    c.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_upstream_timeout_is_504_upstream_error() {
    upstream_timeout(Mode::Forward).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reverse_upstream_timeout_is_504_upstream_error() {
    upstream_timeout(Mode::Reverse).await;
}

// ---------------------------------------------------------------------------------------------
// 6. The chain, across every outcome and a restart
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_is_intact_across_outcomes_modes_and_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("audit.db");
    let settings = ProxySettings {
        db_path: Some(db.clone()),
        request_timeout: Some("300ms".into()),
        ..Default::default()
    };
    let mut c = Checks::new("chain across outcomes, modes and a restart");
    let opts = FakeVendorOpts::with_example_key().secret(
        support::harness::PROXY_ACCESS_KEY_ID,
        support::harness::PROXY_SECRET_ACCESS_KEY,
    );
    let opts = FakeVendorOpts {
        slack_tokens: vec![SLACK_TOKEN.into()],
        ..opts
    };
    let acct = retention_path(ACCOUNT);
    let put =
        |days: u32| format!(r#"{{"RetentionSettings": {{"RoomRetentionSettings": {{"RetentionDays": {days}}}}}}}"#);

    let mut fwd = Env::start_with(Mode::Forward, opts, settings.clone()).await;
    let r1 = fwd.aws("PUT", CHIME_HOST, &acct, None, &put(365)).await;
    fwd.mode = Mode::Reverse;
    let r2 = fwd.aws("PUT", CHIME_HOST, &acct, None, &put(99999)).await;
    let r3 = fwd
        .slack("POST", "/api/chat.postMessage", Some(FORM), "channel=C1&text=hi")
        .await;
    fwd.fake.set_status_override(Some((500, "{}".into())));
    let r4 = fwd.aws("PUT", CHIME_HOST, &acct, None, &put(30)).await;
    fwd.fake.set_status_override(None);
    fwd.fake.set_delay(Some(Duration::from_secs(3)));
    let r5 = fwd
        .slack(
            "POST",
            SLACK_SET,
            Some(FORM),
            "channel_id=C0123456789&duration_days=365",
        )
        .await;
    fwd.fake.set_delay(None);
    c.eq(
        "statuses (forwarded, rejected, pass-through, vendor 500, timeout)",
        [r1.status, r2.status, r3.status, r4.status, r5.status],
        [200, 400, 200, 500, 504],
    );
    let Env { fake, proxy, .. } = fwd;
    let first = proxy.stop().await;
    check_intact(&mut c, &first.verification);
    let outcomes: Vec<Value> = first.events.iter().map(|e| e["outcome"].clone()).collect();
    c.eq(
        "outcomes of the first run",
        outcomes,
        vec![
            json!("forwarded"),
            json!("rejected"),
            json!("forwarded"),
            json!("upstream_error"),
        ],
    );

    // Restart on the same database: the chain continues and `previous` is remembered.
    let proxy = Proxy::start(&fake.url(), settings).await;
    let call = AwsCall::botocore(
        "PUT",
        CHIME_HOST,
        &acct,
        None,
        INVOCATION_ID,
        br#"{"RetentionSettings": {}}"#,
    );
    let r6 = proxy.send(call.request(Mode::Forward, &proxy)).await;
    c.eq("after restart: status", r6.status, 200);
    let second = proxy.stop().await;
    check_intact(&mut c, &second.verification);
    c.eq("events after restart", second.events.len(), first.events.len() + 1);
    if let Some(ev) = second.events.last() {
        check_previous(
            &mut c,
            "change after restart",
            ev,
            &[
                ("chime.room_retention", ACCOUNT, json!(365), json!("off")),
                ("chime.conversation_retention", ACCOUNT, json!("off"), json!("off")),
            ],
        );
    }
    let seqs: Vec<u64> = second.events.iter().filter_map(|e| e["seq"].as_u64()).collect();
    c.ok(
        "seq increases across the restart",
        seqs.windows(2).all(|w| w[0] < w[1]),
        format!("{seqs:?}"),
    );
    let again = read_audit(&db);
    check_intact(&mut c, &again.verification);
    c.finish();
}
