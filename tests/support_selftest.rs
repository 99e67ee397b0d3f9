//! Self-tests of the shared test support: the fake vendor, the SigV4 signer and verifier
//! (against captured client requests), and the check collector.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::json;
use support::fake_vendor::{self, EXAMPLE_ACCESS_KEY_ID, FakeVendor, FakeVendorOpts, Family, Resource};
use support::fixtures::{ACCOUNT, APP, SLACK_TOKEN, USER, WAIT, enc};
use support::sigv4;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The `x-amz-chime-bearer` of the Chime SDK calls.
const BEARER: &str = USER;

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
        &fake_vendor::example_params(&date),
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
        &fake_vendor::example_params(&date),
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
        "AppInstanceArn": APP, "Name": "retention-test", "Mode": "RESTRICTED",
        "Privacy": "PRIVATE", "ClientRequestToken": "tok-0001",
        "ExpirationSettings": {"ExpirationDays": 7, "ExpirationCriterion": "LAST_MESSAGE_TIMESTAMP"}
    })
    .to_string();
    let resp = aws(&fake, "POST", "/channels", &bearer, &create).await;
    assert_eq!(resp.status, 201);
    let channel = format!("{APP}/channel/ch-0001");
    assert_eq!(resp.json(), json!({ "ChannelArn": channel }));
    // Idempotent on ClientRequestToken.
    let again = aws(&fake, "POST", "/channels", &bearer, &create).await;
    assert_eq!(again.json(), json!({ "ChannelArn": channel }));

    let encoded = enc(&channel);
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
    let missing = enc(&format!("{APP}/channel/nope"));
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
    let app = enc(APP);
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
        &json!({"AppInstanceArn": APP, "AppInstanceUserId": "user-2", "Name": "User Two",
                "ClientRequestToken": "tok-0002",
                "ExpirationSettings": {"ExpirationDays": 365, "ExpirationCriterion": "CREATED_TIMESTAMP"}})
        .to_string(),
    )
    .await;
    assert_eq!(resp.status, 201);
    let user = format!("{APP}/user/user-2");
    assert_eq!(resp.json(), json!({ "AppInstanceUserArn": user }));
    let user_enc = enc(&user);
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

// ---------------------------------------------------------------------------------------------
// The SigV4 signer and verifier, against captured client requests
// ---------------------------------------------------------------------------------------------

mod sigv4_captures {
    use std::collections::HashMap;

    use http::{HeaderMap, HeaderName, HeaderValue};

    use crate::support::sigv4::*;

    const AKID: &str = "AKIAIOSFODNN7EXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

    fn secrets() -> HashMap<String, String> {
        HashMap::from([(AKID.to_string(), SECRET.to_string())])
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    const PUT_RETENTION_PATH: &str = "/accounts/12a3456b-7c89-012d-3456-78901e23fg45/retention-settings";
    const PUT_RETENTION_BODY: &str = r#"{"RetentionSettings": {"RoomRetentionSettings": {"RetentionDays": 365}, "ConversationRetentionSettings": {"RetentionDays": 180}}}"#;

    /// boto3 chime.put_retention_settings, exactly as captured.
    fn put_retention_headers() -> HeaderMap {
        headers(&[
            ("Host", "127.0.0.1:18080"),
            ("Accept-Encoding", "identity"),
            ("Content-Type", "application/json"),
            (
                "User-Agent",
                "Boto3/1.44.5 md/Botocore#1.44.5 ua/2.1 os/linux#6.18.44-fc-v669 md/arch#x86_64 lang/python#3.11.7 md/pyimpl#CPython m/E,Z,N,g,b cfg/retry-mode#standard Botocore/1.44.5",
            ),
            ("X-Amz-Date", "20261122T043147Z"),
            (
                "Authorization",
                "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20261122/us-east-1/chime/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=6f9dd1f64f8823f0dfae1a3b9e2d3defdd5e83a83aae8987a17d5128488ea26c",
            ),
            ("amz-sdk-invocation-id", "f96bebaf-5f66-43d4-a6ec-41c8823ea12d"),
            ("amz-sdk-request", "attempt=1; max=3"),
            ("Content-Length", "129"),
        ])
    }

    const CHANNEL_PATH: &str = "/channels/arn%3Aaws%3Achime%3Aus-east-1%3A111122223333%3Aapp-instance%2F87654321-4321-4321-4321-210987654321%2Fchannel%2Fch-0001/expiration-settings";
    const BEARER: &str =
        "arn:aws:chime:us-east-1:111122223333:app-instance/87654321-4321-4321-4321-210987654321/user/admin-user-1";
    const CHANNEL_BODY: &str =
        r#"{"ExpirationSettings": {"ExpirationDays": 30, "ExpirationCriterion": "CREATED_TIMESTAMP"}}"#;

    /// boto3 chime-sdk-messaging.put_channel_expiration_settings (CREATED_TIMESTAMP), as captured.
    fn channel_headers() -> HeaderMap {
        headers(&[
            ("Host", "127.0.0.1:18080"),
            ("Accept-Encoding", "identity"),
            ("x-amz-chime-bearer", BEARER),
            ("Content-Type", "application/json"),
            ("User-Agent", "Boto3/1.44.5 md/Botocore#1.44.5"),
            ("X-Amz-Date", "20261122T043147Z"),
            (
                "Authorization",
                "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20261122/us-east-1/chime/aws4_request, SignedHeaders=content-type;host;x-amz-chime-bearer;x-amz-date, Signature=0222496b176635537c180f52cf39c5ad5a4934084b6e1d98b2c578c636226d20",
            ),
            ("amz-sdk-invocation-id", "5cc3180e-3f96-4528-8d3d-c6fc38bbb1b0"),
            ("amz-sdk-request", "attempt=1; max=3"),
            ("Content-Length", "90"),
        ])
    }

    #[test]
    fn captured_boto3_put_retention_settings_verifies() {
        let v = verify(
            "PUT",
            PUT_RETENTION_PATH,
            &put_retention_headers(),
            PUT_RETENTION_BODY.as_bytes(),
            &secrets(),
        )
        .unwrap();
        assert_eq!(
            v,
            VerifiedSig {
                access_key_id: AKID.into(),
                region: "us-east-1".into(),
                service: "chime".into(),
                signed_headers: vec!["content-type".into(), "host".into(), "x-amz-date".into()],
            }
        );
    }

    #[test]
    fn captured_boto3_channel_expiration_with_encoded_arn_verifies() {
        let v = verify(
            "PUT",
            CHANNEL_PATH,
            &channel_headers(),
            CHANNEL_BODY.as_bytes(),
            &secrets(),
        )
        .unwrap();
        assert_eq!(v.signed_headers.len(), 4);
        // The canonical URI double-encodes the already percent-encoded ARN.
        assert!(canonical_uri(CHANNEL_PATH).starts_with("/channels/arn%253Aaws%253Achime%253A"));
        assert!(canonical_uri(CHANNEL_PATH).contains("%252Fchannel%252Fch-0001/expiration-settings"));
    }

    #[test]
    fn captured_boto3_get_retention_settings_verifies() {
        let h = headers(&[
            ("Host", "127.0.0.1:18080"),
            ("X-Amz-Date", "20261122T043147Z"),
            (
                "Authorization",
                "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20261122/us-east-1/chime/aws4_request, SignedHeaders=host;x-amz-date, Signature=9318f359be7f9f9068b102ec94f7cd8eee3aa2966955b491610b3c79a6a48917",
            ),
        ]);
        verify("GET", PUT_RETENTION_PATH, &h, b"", &secrets()).unwrap();
    }

    #[test]
    fn captured_forward_proxy_absolute_form_verifies() {
        let h = headers(&[
            ("Host", "chime.us-east-1.amazonaws.com"),
            ("Content-Type", "application/json"),
            ("X-Amz-Date", "20261122T043658Z"),
            (
                "Authorization",
                "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20261122/us-east-1/chime/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=4be6aad3114db362a26d8e3d7760573dcc71431e2740d4ac7b7e7a5c4cd61ef7",
            ),
        ]);
        let body = br#"{"RetentionSettings": {"RoomRetentionSettings": {"RetentionDays": 365}}}"#;
        let absolute = format!("http://chime.us-east-1.amazonaws.com{PUT_RETENTION_PATH}");
        verify("PUT", &absolute, &h, body, &secrets()).unwrap();
        verify("PUT", PUT_RETENTION_PATH, &h, body, &secrets()).unwrap();
    }

    #[test]
    fn captured_aws_sdk_js_v3_with_content_sha256_verifies() {
        let h = headers(&[
            (
                "x-amz-chime-bearer",
                "arn:aws:chime:us-east-1:111122223333:app-instance/87654321-4321-4321-4321-210987654321/user/u1",
            ),
            ("content-type", "application/json"),
            ("content-length", "91"),
            ("x-amz-user-agent", "aws-sdk-js/3.1141.0"),
            ("user-agent", "aws-sdk-js/3.1141.0 ua/2.1"),
            ("host", "127.0.0.1:18080"),
            ("amz-sdk-invocation-id", "b867ad29-287e-4930-8edb-605b3e95952a"),
            ("amz-sdk-request", "attempt=1; max=3"),
            ("x-amz-date", "20261122T043621Z"),
            (
                "x-amz-content-sha256",
                "557a457bded3cfa4bf560b9148740de18198e464c06fd732558da3d03cc889c9",
            ),
            (
                "authorization",
                "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20261122/us-east-1/chime/aws4_request, SignedHeaders=amz-sdk-invocation-id;amz-sdk-request;content-length;content-type;host;x-amz-chime-bearer;x-amz-content-sha256;x-amz-date;x-amz-user-agent, Signature=b77be2bed5650bd431ff32078246f5c6849d4ecb6f992a3e441ab87f6f37b87e",
            ),
        ]);
        let body = br#"{"ExpirationSettings":{"ExpirationDays":30,"ExpirationCriterion":"LAST_MESSAGE_TIMESTAMP"}}"#;
        verify("PUT", CHANNEL_PATH, &h, body, &secrets()).unwrap();
        // The claimed payload hash must match the body actually received.
        let err = verify("PUT", CHANNEL_PATH, &h, b"{}", &secrets()).unwrap_err();
        assert!(err.contains("x-amz-content-sha256"), "{err}");
    }

    /// Fixture produced with botocore 1.43 `SigV4Auth` (temporary credentials, an unsorted
    /// query string with encoded values, a header needing whitespace folding).
    #[test]
    fn botocore_fixture_with_session_token_and_query_verifies() {
        let secrets = HashMap::from([(
            "ASIAEXAMPLETEMPKEY01".to_string(),
            "tempSecret/EXAMPLE+KEY/0123456789abcdefABCD".to_string(),
        )]);
        let h = headers(&[
            ("Host", "127.0.0.1:18080"),
            (
                "x-amz-chime-bearer",
                "arn:aws:chime:us-east-1:111122223333:app-instance/x/user/u1",
            ),
            ("X-Custom", "  a   b  c "),
            ("X-Amz-Date", "20261122T050000Z"),
            (
                "X-Amz-Security-Token",
                "FwoGZXIvYXdzEXAMPLE//////////wEaDExampleSessionToken+/=",
            ),
            (
                "Authorization",
                "AWS4-HMAC-SHA256 Credential=ASIAEXAMPLETEMPKEY01/20261122/us-east-1/chime/aws4_request, SignedHeaders=host;x-amz-chime-bearer;x-amz-date;x-amz-security-token;x-custom, Signature=deff8c722c3e26f5136046ef1d45c62dc83b5fa80cf22fc10500884fd6047b42",
            ),
        ]);
        let target = "/channels?next-token=abc%2Fdef%3D%3D&max-results=50&app-instance-arn=arn%3Aaws%3Achime%3Aus-east-1%3A111122223333%3Aapp-instance%2Fx";
        let v = verify("GET", target, &h, b"", &secrets).unwrap();
        assert!(v.signed_headers.contains(&"x-amz-security-token".to_string()));

        // A different session token breaks the signature.
        let mut other = h.clone();
        other.insert("x-amz-security-token", HeaderValue::from_static("other"));
        assert!(verify("GET", target, &other, b"", &secrets).is_err());
    }

    #[test]
    fn mismatches_are_reported_with_the_canonical_request() {
        let err = verify(
            "PUT",
            PUT_RETENTION_PATH,
            &put_retention_headers(),
            br#"{"RetentionSettings": {}}"#,
            &secrets(),
        )
        .unwrap_err();
        assert!(err.contains("signature mismatch"), "{err}");
        assert!(err.contains("Canonical request:\nPUT\n/accounts/"), "{err}");

        let wrong = HashMap::from([(AKID.to_string(), "not-the-secret".to_string())]);
        let body = PUT_RETENTION_BODY.as_bytes();
        assert!(verify("PUT", PUT_RETENTION_PATH, &put_retention_headers(), body, &wrong).is_err());

        let err = verify(
            "PUT",
            PUT_RETENTION_PATH,
            &put_retention_headers(),
            body,
            &HashMap::new(),
        )
        .unwrap_err();
        assert!(err.contains("unknown access key id"), "{err}");

        // A decoded path is a different canonical URI than the encoded one that was signed.
        let decoded = "/channels/arn:aws:chime:us-east-1:111122223333:app-instance/87654321-4321-4321-4321-210987654321/channel/ch-0001/expiration-settings";
        assert!(verify("PUT", decoded, &channel_headers(), CHANNEL_BODY.as_bytes(), &secrets()).is_err());

        let mut no_host = put_retention_headers();
        no_host.remove("host");
        let err = verify("PUT", PUT_RETENTION_PATH, &no_host, body, &secrets()).unwrap_err();
        assert!(err.contains("'host'"), "{err}");
    }

    #[test]
    fn sign_round_trips_and_matches_botocore() {
        let mut h = headers(&[
            ("Host", "127.0.0.1:18080"),
            ("Content-Type", "application/json"),
            ("User-Agent", "test"),
        ]);
        let params = SigningParams {
            access_key_id: AKID,
            secret_access_key: SECRET,
            session_token: None,
            region: "us-east-1",
            service: "chime",
            amz_date: "20261122T043147Z",
        };
        let auth = sign(
            "PUT",
            PUT_RETENTION_PATH,
            &mut h,
            PUT_RETENTION_BODY.as_bytes(),
            &params,
        )
        .unwrap();
        // Same inputs as the boto3 capture, so the same signature.
        assert!(
            auth.ends_with("Signature=6f9dd1f64f8823f0dfae1a3b9e2d3defdd5e83a83aae8987a17d5128488ea26c"),
            "{auth}"
        );
        verify("PUT", PUT_RETENTION_PATH, &h, PUT_RETENTION_BODY.as_bytes(), &secrets()).unwrap();
    }

    #[test]
    fn canonicalization_helpers() {
        assert_eq!(canonical_uri(""), "/");
        assert_eq!(canonical_uri("/a//b/./c/../d/"), "/a/b/d/");
        assert_eq!(canonical_uri("/x%3Ay z"), "/x%253Ay%20z");
        assert_eq!(canonical_query("b=2&a=1&a=0&c"), "a=0&a=1&b=2&c=");
        assert_eq!(canonical_query("k=a%2fb+c"), "k=a%2Fb%2Bc");
        assert_eq!(trim_all(b"  a \t b  "), "a b");
        assert!(is_amz_date(&amz_date_now()));
    }
}

// ---------------------------------------------------------------------------------------------
// The check collector
// ---------------------------------------------------------------------------------------------

mod checks {
    use crate::support::checks::Checks;

    #[test]
    fn finished_clean_checks_pass() {
        let mut c = Checks::new("clean");
        c.ok("true", true, "never shown");
        c.eq("equal", 1, 1);
        assert!(c.clean());
        c.finish();
    }

    #[test]
    #[should_panic(expected = "2 check(s) failed")]
    fn finish_reports_every_failure() {
        let mut c = Checks::new("failing");
        c.eq("first", 1, 2);
        c.fail("second", "failed outright");
        c.finish();
    }

    #[test]
    #[should_panic(expected = "Checks dropped without finish()")]
    fn dropping_unfinished_checks_panics() {
        let mut c = Checks::new("unfinished");
        c.ok("recorded but never reported", false, "lost failure");
        drop(c);
    }
}
