//! Self-test of the fake vendor used by the integration tests.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::json;
use support::fake_vendor::{self, EXAMPLE_ACCESS_KEY_ID, FakeVendor, FakeVendorOpts, Family, Resource};
use support::sigv4::{self, SigningParams};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ACCOUNT: &str = "12a3456b-7c89-012d-3456-78901e23fg45";
const APP_INSTANCE: &str = "arn:aws:chime:us-east-1:111122223333:app-instance/87654321-4321-4321-4321-210987654321";
const BEARER: &str =
    "arn:aws:chime:us-east-1:111122223333:app-instance/87654321-4321-4321-4321-210987654321/user/admin-user-1";
const SLACK_TOKEN: &str = "xoxp-0000000000-0000000000-0000000000-dummydummydummydummydummydummy0";
const WAIT: Duration = Duration::from_secs(10);

fn encode_arn(arn: &str) -> String {
    sigv4::uri_encode(arn.as_bytes(), false)
}

fn params(amz_date: &str) -> SigningParams<'_> {
    fake_vendor::example_params(amz_date)
}

async fn aws(
    fake: &FakeVendor,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> fake_vendor::SimpleResponse {
    let date = sigv4::amz_date_now();
    let req = sigv4::signed_request(
        method,
        &fake.host(),
        target,
        headers,
        Bytes::from(body.to_string()),
        &params(&date),
    )
    .unwrap();
    fake_vendor::send(fake.addr(), req).await.unwrap()
}

fn plain(method: &str, target: &str, headers: &[(&str, &str)], body: &str) -> Request<Bytes> {
    let mut b = Request::builder().method(method).uri(target);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Bytes::from(body.to_string())).unwrap()
}

#[tokio::test]
async fn signed_request_is_accepted_and_state_is_kept() {
    let fake = FakeVendor::start(FakeVendorOpts::with_example_key()).await;
    assert!(fake.url().starts_with("http://127.0.0.1:"));
    let target = format!("/accounts/{ACCOUNT}/retention-settings");
    let settings = json!({
        "RoomRetentionSettings": {"RetentionDays": 365},
        "ConversationRetentionSettings": {"RetentionDays": 180}
    });
    let body = json!({ "RetentionSettings": settings }).to_string();

    let resp = aws(&fake, "PUT", &target, &[("content-type", "application/json")], &body).await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    assert_eq!(resp.json()["RetentionSettings"], settings);
    assert!(resp.json()["InitiateDeletionTimestamp"].is_string());
    let request_id = resp.header("x-amzn-requestid").unwrap().to_string();
    assert_eq!(request_id.len(), 36);

    assert!(fake.wait_for(1, WAIT).await);
    let got = fake.last().unwrap();
    assert_eq!(got.method, "PUT");
    assert_eq!(got.path_and_query, target);
    assert_eq!(got.family, Family::Chime);
    assert_eq!(got.body_str(), body);
    assert_eq!(got.body_len, body.len() as u64);
    assert_eq!(got.body_sha256, sigv4::sha256_hex(body.as_bytes()));
    assert_eq!(got.response_status, 200);
    assert_eq!(got.request_id.as_deref(), Some(request_id.as_str()));
    let sig = got.sig.clone().unwrap().unwrap();
    assert_eq!(sig.access_key_id, EXAMPLE_ACCESS_KEY_ID);
    assert_eq!(sig.region, "us-east-1");
    assert_eq!(sig.service, "chime");
    assert!(sig.signed_headers.contains(&"host".to_string()));

    assert_eq!(
        fake.state(&Resource::ChimeAccount(ACCOUNT.into())),
        Some(settings.clone())
    );
    let read = aws(&fake, "GET", &target, &[], "").await;
    assert_eq!(read.status, 200);
    assert_eq!(read.json()["RetentionSettings"], settings);
    assert_eq!(fake.count(), 2);
}

#[tokio::test]
async fn tampered_body_is_rejected_with_invalid_signature() {
    let fake = FakeVendor::start(FakeVendorOpts::with_example_key()).await;
    let target = format!("/accounts/{ACCOUNT}/retention-settings");
    let signed_body = r#"{"RetentionSettings": {"RoomRetentionSettings": {"RetentionDays": 365}}}"#;
    let tampered = r#"{"RetentionSettings": {"RoomRetentionSettings": {"RetentionDays": 1}}}"#;
    let date = sigv4::amz_date_now();
    let req = sigv4::signed_request(
        "PUT",
        &fake.host(),
        &target,
        &[("content-type", "application/json")],
        signed_body,
        &params(&date),
    )
    .unwrap();

    // Write the request by hand on a raw TCP stream, with the tampered body.
    let mut wire = format!("PUT {target} HTTP/1.1\r\n");
    for (name, value) in req.headers() {
        wire.push_str(&format!("{}: {}\r\n", name, value.to_str().unwrap()));
    }
    wire.push_str(&format!(
        "content-length: {}\r\nconnection: close\r\n\r\n{tampered}",
        tampered.len()
    ));
    let mut stream = TcpStream::connect(fake.addr()).await.unwrap();
    stream.write_all(wire.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();

    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    let lower = answer.to_ascii_lowercase();
    assert!(
        lower.contains("x-amzn-errortype: invalidsignatureexception"),
        "{answer}"
    );
    assert!(lower.contains("x-amzn-requestid: "), "{answer}");
    let json_start = answer.find("\r\n\r\n").unwrap() + 4;
    let body: serde_json::Value = serde_json::from_str(&answer[json_start..]).unwrap();
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("signature mismatch"), "{message}");
    assert!(message.contains("Canonical request:"), "{message}");

    let got = fake.last().unwrap();
    assert_eq!(got.body_str(), tampered);
    assert_eq!(got.response_status, 403);
    assert!(matches!(&got.sig, Some(Err(reason)) if reason.contains("signature mismatch")));
    assert_eq!(fake.state(&Resource::ChimeAccount(ACCOUNT.into())), None);

    // Unknown keys are rejected the same way.
    let fake2 = FakeVendor::start(FakeVendorOpts::default().secret("AKIDOTHER", "s")).await;
    let resp = aws(&fake2, "GET", &target, &[], "").await;
    assert_eq!(resp.status, 403);
    assert_eq!(resp.header("x-amzn-errortype"), Some("InvalidSignatureException"));
    assert!(
        resp.json()["message"]
            .as_str()
            .unwrap()
            .contains("unknown access key id")
    );
}

#[tokio::test]
async fn chime_sdk_messaging_and_identity_round_trip() {
    let fake = FakeVendor::start(FakeVendorOpts::with_example_key()).await;
    let bearer = [("content-type", "application/json"), ("x-amz-chime-bearer", BEARER)];

    let create = json!({
        "AppInstanceArn": APP_INSTANCE, "Name": "retention-test", "Mode": "RESTRICTED",
        "Privacy": "PRIVATE", "ClientRequestToken": "tok-0001",
        "ExpirationSettings": {"ExpirationDays": 7, "ExpirationCriterion": "LAST_MESSAGE_TIMESTAMP"}
    })
    .to_string();
    let resp = aws(&fake, "POST", "/channels", &bearer, &create).await;
    assert_eq!(resp.status, 201);
    let channel = format!("{APP_INSTANCE}/channel/ch-0001");
    assert_eq!(resp.json(), json!({ "ChannelArn": channel }));
    // Idempotent on ClientRequestToken.
    let again = aws(&fake, "POST", "/channels", &bearer, &create).await;
    assert_eq!(again.json(), json!({ "ChannelArn": channel }));

    let encoded = encode_arn(&channel);
    assert!(encoded.contains("%3A") && encoded.contains("%2F"));
    let put = json!({"ExpirationSettings": {"ExpirationDays": 30, "ExpirationCriterion": "CREATED_TIMESTAMP"}});
    let resp = aws(
        &fake,
        "PUT",
        &format!("/channels/{encoded}/expiration-settings"),
        &bearer,
        &put.to_string(),
    )
    .await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    assert_eq!(
        resp.json(),
        json!({"ChannelArn": channel, "ExpirationSettings": put["ExpirationSettings"]})
    );
    let got = fake.last().unwrap();
    assert!(got.sig_ok(), "{:?}", got.sig);
    assert_eq!(got.path_and_query, format!("/channels/{encoded}/expiration-settings"));

    let resp = aws(&fake, "GET", &format!("/channels/{encoded}"), &bearer[1..], "").await;
    assert_eq!(resp.status, 200);
    let described = &resp.json()["Channel"];
    assert_eq!(described["Name"], "retention-test");
    assert_eq!(described["ExpirationSettings"], put["ExpirationSettings"]);

    // Removing the expiry.
    let resp = aws(
        &fake,
        "PUT",
        &format!("/channels/{encoded}/expiration-settings"),
        &bearer[..1],
        "{}",
    )
    .await;
    assert_eq!(resp.json(), json!({ "ChannelArn": channel }));
    let state = fake.state(&Resource::Channel(channel.clone())).unwrap();
    assert!(state.get("ExpirationSettings").is_none());

    // Unknown channels are not found.
    let missing = encode_arn(&format!("{APP_INSTANCE}/channel/nope"));
    let resp = aws(&fake, "GET", &format!("/channels/{missing}"), &[], "").await;
    assert_eq!(resp.status, 404);
    assert_eq!(resp.header("x-amzn-errortype"), Some("NotFoundException"));

    // Out-of-range days are a BadRequestException.
    let resp = aws(
        &fake,
        "PUT",
        &format!("/channels/{encoded}/expiration-settings"),
        &bearer[..1],
        r#"{"ExpirationSettings": {"ExpirationDays": 9999, "ExpirationCriterion": "CREATED_TIMESTAMP"}}"#,
    )
    .await;
    assert_eq!(resp.status, 400);
    assert_eq!(resp.header("x-amzn-errortype"), Some("BadRequestException"));
    assert_eq!(resp.json()["Code"], "BadRequest");

    // Identity: app instance retention.
    let app = encode_arn(APP_INSTANCE);
    let target = format!("/app-instances/{app}/retention-settings");
    let resp = aws(&fake, "GET", &target, &[], "").await;
    assert_eq!(resp.json(), json!({"AppInstanceRetentionSettings": {}}));
    let resp = aws(
        &fake,
        "PUT",
        &target,
        &bearer[..1],
        r#"{"AppInstanceRetentionSettings": {"ChannelRetentionSettings": {"RetentionDays": 90}}}"#,
    )
    .await;
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.json(),
        json!({"AppInstanceRetentionSettings": {"ChannelRetentionSettings": {"RetentionDays": 90}}, "InitiateDeletionTimestamp": 1795300000})
    );
    let resp = aws(&fake, "GET", &target, &[], "").await;
    assert_eq!(
        resp.json()["AppInstanceRetentionSettings"]["ChannelRetentionSettings"]["RetentionDays"],
        90
    );

    // Identity: users.
    let resp = aws(
        &fake,
        "POST",
        "/app-instance-users",
        &bearer[..1],
        &json!({"AppInstanceArn": APP_INSTANCE, "AppInstanceUserId": "user-2", "Name": "User Two",
                "ClientRequestToken": "tok-0002",
                "ExpirationSettings": {"ExpirationDays": 365, "ExpirationCriterion": "CREATED_TIMESTAMP"}})
        .to_string(),
    )
    .await;
    assert_eq!(resp.status, 201);
    let user = format!("{APP_INSTANCE}/user/user-2");
    assert_eq!(resp.json(), json!({ "AppInstanceUserArn": user }));
    let user_enc = encode_arn(&user);
    let resp = aws(
        &fake,
        "PUT",
        &format!("/app-instance-users/{user_enc}/expiration-settings"),
        &bearer[..1],
        r#"{"ExpirationSettings": {"ExpirationDays": 400, "ExpirationCriterion": "CREATED_TIMESTAMP"}}"#,
    )
    .await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["AppInstanceUserArn"], user);
    let resp = aws(&fake, "GET", &format!("/app-instance-users/{user_enc}"), &[], "").await;
    assert_eq!(
        resp.json()["AppInstanceUser"]["ExpirationSettings"]["ExpirationDays"],
        400
    );
    assert!(fake.received().iter().all(|r| r.sig_ok()));
}

#[tokio::test]
async fn slack_methods_record_tokens_and_keep_state() {
    let fake = FakeVendor::start(FakeVendorOpts::default()).await;
    let form = [("content-type", "application/x-www-form-urlencoded")];
    let bearer = format!("Bearer {SLACK_TOKEN}");
    let with_bearer = [form[0], ("authorization", bearer.as_str())];

    let resp = fake_vendor::send(
        fake.addr(),
        plain(
            "POST",
            "/api/admin.conversations.setCustomRetention",
            &with_bearer,
            "channel_id=C0123456789&duration_days=365",
        ),
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json(), json!({"ok": true}));
    assert!(resp.header("x-slack-req-id").is_some());
    let got = fake.last().unwrap();
    assert_eq!(got.family, Family::Slack);
    assert_eq!(got.slack_token.as_deref(), Some(SLACK_TOKEN));
    assert!(got.sig.is_none());
    assert_eq!(
        fake.state(&Resource::SlackChannel("C0123456789".into())),
        Some(json!(365))
    );

    // Token as a form field, JSON bodies, and GET with a query string.
    let resp = fake_vendor::send(
        fake.addr(),
        plain(
            "POST",
            "/api/admin.conversations.getCustomRetention",
            &form,
            "token=xoxp-form&channel_id=C0123456789",
        ),
    )
    .await
    .unwrap();
    assert_eq!(
        resp.json(),
        json!({"ok": true, "is_policy_enabled": true, "duration_days": 365})
    );
    assert_eq!(fake.last().unwrap().slack_token.as_deref(), Some("xoxp-form"));

    let resp = fake_vendor::send(
        fake.addr(),
        plain(
            "POST",
            "/api/admin.conversations.removeCustomRetention",
            &[
                ("content-type", "application/json; charset=utf-8"),
                ("authorization", bearer.as_str()),
            ],
            r#"{"channel_id":"C0123456789"}"#,
        ),
    )
    .await
    .unwrap();
    assert_eq!(resp.json(), json!({"ok": true}));

    let resp = fake_vendor::send(
        fake.addr(),
        plain(
            "GET",
            "/api/admin.conversations.getCustomRetention?channel_id=C0123456789",
            &with_bearer[1..],
            "",
        ),
    )
    .await
    .unwrap();
    assert_eq!(resp.json(), json!({"ok": true, "is_policy_enabled": false}));

    let resp = fake_vendor::send(fake.addr(), plain("POST", "/api/chat.postMessage", &form, ""))
        .await
        .unwrap();
    assert_eq!(resp.json(), json!({"ok": false, "error": "not_authed"}));
    let resp = fake_vendor::send(
        fake.addr(),
        plain("POST", "/api/chat.postMessage", &with_bearer, "channel=C1&text=hi"),
    )
    .await
    .unwrap();
    assert_eq!(resp.json(), json!({"ok": true}));
}

#[tokio::test]
async fn pass_through_echoes_and_counts_large_bodies() {
    let fake = FakeVendor::start(FakeVendorOpts::default()).await;
    let resp = fake_vendor::send(
        fake.addr(),
        plain("POST", "/other/thing?x=1", &[("content-type", "text/plain")], "hello"),
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, "hello");
    assert_eq!(resp.header("content-type"), Some("text/plain"));
    let got = fake.last().unwrap();
    assert_eq!(got.family, Family::PassThrough);
    assert_eq!(got.path_and_query, "/other/thing?x=1");
    assert_eq!(got.target, "/other/thing?x=1");

    let big = fake_vendor::pattern_bytes(3 * 1024 * 1024 + 7);
    let big_sha = sigv4::sha256_hex(&big);
    let resp = fake_vendor::send(
        fake.addr(),
        Request::post("/upload").body(Bytes::from(big.clone())).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json(), json!({"body_len": big.len(), "body_sha256": big_sha}));
    let got = fake.last().unwrap();
    assert!(got.body_truncated);
    assert!(got.body.is_empty());
    assert_eq!(got.body_len, big.len() as u64);
    assert_eq!(got.body_sha256, big_sha);

    let resp = fake_vendor::send(
        fake.addr(),
        Request::get("/stream-bytes/200000").body(Bytes::new()).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(resp.body, fake_vendor::pattern_bytes(200_000));
}

#[tokio::test]
async fn status_override_and_delay() {
    let opts = FakeVendorOpts {
        status_override: Some((500, r#"{"Code":"ServiceFailure","Message":"boom"}"#.to_string())),
        ..FakeVendorOpts::with_example_key()
    };
    let fake = FakeVendor::start(opts).await;
    let target = format!("/accounts/{ACCOUNT}/retention-settings");
    let resp = aws(
        &fake,
        "PUT",
        &target,
        &[("content-type", "application/json")],
        r#"{"RetentionSettings": {}}"#,
    )
    .await;
    assert_eq!(resp.status, 500);
    assert_eq!(resp.header("x-amzn-errortype"), Some("ServiceFailureException"));
    assert_eq!(resp.json()["Message"], "boom");
    assert_eq!(fake.state(&Resource::ChimeAccount(ACCOUNT.into())), None);

    fake.set_status_override(Some((429, r#"{"ok":false,"error":"ratelimited"}"#.into())));
    let resp = fake_vendor::send(
        fake.addr(),
        plain(
            "POST",
            "/api/admin.conversations.setCustomRetention",
            &[("authorization", "Bearer xoxp-1")],
            "",
        ),
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 429);
    assert_eq!(resp.header("retry-after"), Some("1"));

    // A delayed answer: the request is recorded (and wait_for wakes) before the answer.
    fake.set_status_override(None);
    fake.set_delay(Some(Duration::from_secs(60)));
    let addr = fake.addr();
    let pending = tokio::spawn(async move { fake_vendor::send(addr, plain("POST", "/slow", &[], "x")).await });
    assert!(fake.wait_for(3, WAIT).await);
    assert!(!pending.is_finished());
    pending.abort();
    assert!(!fake.wait_for(4, Duration::from_millis(50)).await);
}

#[tokio::test]
async fn keep_alive_and_shutdown_on_drop() {
    let fake = FakeVendor::start(FakeVendorOpts::default()).await;
    let stream = TcpStream::connect(fake.addr()).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let conn_task = tokio::spawn(conn);
    for i in 0..3 {
        let req = Request::post("/echo")
            .header("host", fake.host())
            .body(Full::new(Bytes::from(format!("n{i}"))))
            .unwrap();
        sender.ready().await.unwrap();
        let resp = sender.send_request(req).await.unwrap();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, format!("n{i}"));
    }
    let peers: Vec<_> = fake.received().iter().map(|r| r.peer).collect();
    assert_eq!(peers.len(), 3);
    assert!(peers.iter().all(|p| *p == peers[0]), "one connection reused");

    drop(fake);
    // The open keep-alive connection is closed by the fake shutting down.
    let closed = tokio::time::timeout(WAIT, conn_task).await;
    assert!(closed.is_ok(), "connection still open after drop");
}
