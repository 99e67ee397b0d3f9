//! Every SPEC §1 operation (and its variants) through the real proxy, in-process, in forward
//! mode (absolute-form request line, the vendor's `Host`, the client's signature passed through
//! intact) and reverse mode (origin-form, re-signed with the proxy's key): what the client got,
//! what the vendor got, and the audit event, with no secret in the database.

mod support;

use bytes::Bytes;
use serde_json::{Value, json};
use support::body_text;
use support::checks::Checks;
use support::clients::{AwsCall, Mode, json_contains, slack_request};
use support::contains_bytes;
use support::fake_vendor::{EXAMPLE_ACCESS_KEY_ID, FakeVendor, FakeVendorOpts, Received, SimpleResponse};
use support::fixtures::{
    ACCOUNT, APP, CHANNEL, CHIME_HOST, IDENTITY_HOST, MESSAGING_HOST, SLACK_GET, SLACK_HOST, SLACK_REMOVE, SLACK_SET,
    SLACK_TOKEN, USER, enc,
};
use support::in_process::{InProcessProxy, ProxySettings};
use support::modes::{
    Api, BEARER, Env, FORM, INVOCATION_ID, NEW_USER, SLACK_CHANNEL, app_retention_path, changes,
    channel_expiration_path, check_intact, no_seed, retention_path, seed_account, seed_app_instance, seed_channel,
    seed_slack, seed_user, seeded_channel, seeded_user, user_expiration_path,
};

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

fn case_request(mode: Mode, proxy: &InProcessProxy, case: &Case) -> http::Request<Bytes> {
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
