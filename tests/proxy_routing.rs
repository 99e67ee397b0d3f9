//! Routing edges through the real proxy, in-process, in forward and reverse mode: unknown
//! paths, hosts outside `allow_hosts`, pass-through calls (streamed, not audited), hop-by-hop
//! headers and `X-Forwarded-For`, other spellings of vendor hosts and ARNs, and client session
//! tokens.

mod support;

use bytes::Bytes;
use serde_json::{Value, json};
use support::body_text;
use support::checks::Checks;
use support::clients::{AwsCall, Mode, send_raw, slack_request, with_headers};
use support::contains_bytes;
use support::fake_vendor::{EXAMPLE_ACCESS_KEY_ID, Received};
use support::fixtures::{
    ACCOUNT, APP, CHANNEL, CHIME_HOST, IDENTITY_HOST, MESSAGING_HOST, SLACK_SET, SLACK_TOKEN, USER, enc,
};
use support::in_process::ProxySettings;
use support::modes::{BEARER, Env, FORM, INVOCATION_ID, check_intact, check_previous, retention_path};
use support::sigv4;

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
            &support::clients::client_params(&date),
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
