//! Limits the proxy enforces itself, in forward and reverse mode: vendor limits on values
//! (out-of-range days, bad criteria, malformed ARNs, duplicate keys) are rejected with the
//! vendor's error shape and nothing reaches the vendor; bodies over `server.max_body_bytes`
//! get `413`, while a body at the limit and a chunked body are forwarded.

mod support;

use bytes::Bytes;
use serde_json::json;
use support::body_text;
use support::checks::Checks;
use support::clients::{AwsCall, Mode, send_raw, slack_request};
use support::fixtures::{
    ACCOUNT, CHANNEL, CHIME_HOST, IDENTITY_HOST, MESSAGING_HOST, SLACK_SET, SLACK_TOKEN, USER, WAIT,
};
use support::in_process::ProxySettings;
use support::modes::{
    Api, BEARER, Env, FORM, INVOCATION_ID, channel_expiration_path, check_intact, check_previous, retention_path,
    user_expiration_path,
};

// ---------------------------------------------------------------------------------------------
// Vendor limits
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
// Body size
// ---------------------------------------------------------------------------------------------

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

/// An intercepted call whose body is over `server.max_body_bytes` gets `413` and nothing is
/// forwarded, whether the length is declared or the body is chunked.
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

// ---------------------------------------------------------------------------------------------
// A body that breaks off
// ---------------------------------------------------------------------------------------------

/// A retention call whose client stops sending half-way through its declared body and closes:
/// the call still leaves an event (outcome `rejected`, the reason in `errorMessage`), and
/// nothing reaches the vendor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_breaks_off_is_recorded_as_rejected_and_not_forwarded() {
    use tokio::io::AsyncWriteExt;
    let env = Env::start(Mode::Reverse, ProxySettings::default()).await;
    let mut c = Checks::new("a body that breaks off");
    let body = format!("token={SLACK_TOKEN}&channel_id=C0123456789&duration_days=30");
    let head = format!(
        "POST {SLACK_SET} HTTP/1.1\r\nHost: {}\r\nContent-Type: {FORM}\r\nContent-Length: {}\r\n\r\n",
        env.proxy.host(),
        body.len() + 100
    );
    let mut s = tokio::net::TcpStream::connect(env.proxy.addr).await.expect("connect");
    s.write_all(head.as_bytes()).await.expect("send the head");
    s.write_all(body.as_bytes()).await.expect("send part of the body");
    // Half-close: the proxy reads the end of the stream before the declared length.
    s.shutdown().await.expect("half-close");
    let deadline = std::time::Instant::now() + WAIT;
    // The proxy may still be creating its database when the test first looks.
    let newest = || {
        let reader =
            retention_proxy::audit::open_reader(&retention_proxy::audit::Store::Local(env.proxy.db_path.clone()))
                .ok()?;
        reader.query(&Default::default()).ok()?.pop()
    };
    let event = loop {
        if let Some(e) = newest() {
            break e;
        }
        assert!(std::time::Instant::now() < deadline, "no event for the broken-off call");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    c.eq(
        "eventName",
        &event["eventName"],
        &json!("admin.conversations.setCustomRetention"),
    );
    c.eq("outcome", &event["outcome"], &json!("rejected"));
    c.ok(
        "errorMessage names the body",
        event["errorMessage"]
            .as_str()
            .is_some_and(|m| m.contains("the request body could not be read")),
        &event["errorMessage"],
    );
    c.eq("requests the vendor received", env.fake.count(), 0);
    c.finish();
}
