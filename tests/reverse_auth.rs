//! Reverse-mode AWS callers prove who they are (SPEC §13): with `[reverse] clients_file`, a
//! call signed by a listed client key is forwarded (re-signed) and recorded with its
//! `principal` and `"verified": true`; anything else is refused in AWS's own shape, recorded
//! as `rejected`, and never reaches the vendor. In forward mode `verified` means the vendor
//! accepted the client's own signature.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use http::Request;
use serde_json::{Value, json};
use support::checks::Checks;
use support::clients::{AwsCall, Mode, slack_request};
use support::fake_vendor::{EXAMPLE_ACCESS_KEY_ID, EXAMPLE_SECRET_ACCESS_KEY, SimpleResponse};
use support::fixtures::{ACCOUNT, CHANNEL, CHIME_HOST, MESSAGING_HOST, SLACK_SET, SLACK_TOKEN, enc};
use support::in_process::{ProxySettings, stored_bytes};
use support::modes::{BEARER, Env, FORM, INVOCATION_ID, check_intact, retention_path};
use support::sigv4::{self, SigningParams};
use support::toml_str;

/// The client's name in the clients file.
const CLIENT_NAME: &str = "retention-admin-tool";
const BODY: &str = r#"{"RetentionSettings": {"RoomRetentionSettings": {"RetentionDays": 365}}}"#;

/// Writes a clients file listing the AWS example key, with `mode`.
fn clients_file(dir: &Path, mode: u32, extra: &str) -> PathBuf {
    let path = dir.join("clients.toml");
    std::fs::write(
        &path,
        format!(
            "[[client]]\nname = \"{CLIENT_NAME}\"\naccess_key_id = \"{EXAMPLE_ACCESS_KEY_ID}\"\nsecret_access_key = \"{EXAMPLE_SECRET_ACCESS_KEY}\"\n{extra}"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

fn settings(clients: &Path) -> ProxySettings {
    ProxySettings {
        extra_toml: format!(
            "[reverse]\nclients_file = {}\n",
            toml_str(&clients.display().to_string())
        ),
        ..ProxySettings::default()
    }
}

/// A reverse-mode PutRetentionSettings signed with `params` for the proxy's host.
fn put_retention(env: &Env, params: &SigningParams<'_>, body: &str) -> Request<Bytes> {
    sigv4::signed_request(
        "PUT",
        &env.proxy.host(),
        &retention_path(ACCOUNT),
        &[("content-type", "application/json")],
        Bytes::copy_from_slice(body.as_bytes()),
        params,
    )
    .unwrap()
}

fn params<'a>(akid: &'a str, secret: &'a str, date: &'a str) -> SigningParams<'a> {
    SigningParams {
        access_key_id: akid,
        secret_access_key: secret,
        session_token: None,
        region: "us-east-1",
        service: "chime",
        amz_date: date,
    }
}

/// The refusal as boto3 reads it: `403`, `x-amzn-ErrorType`, and the message in the body.
fn check_refusal(c: &mut Checks, what: &str, resp: &SimpleResponse, code: &str, message_part: &str) {
    c.eq(&format!("{what}: status"), resp.status, 403);
    c.eq(
        &format!("{what}: x-amzn-ErrorType"),
        resp.header("x-amzn-errortype"),
        Some(code),
    );
    let body = resp.json();
    let message = body["Message"].as_str().or(body["message"].as_str()).unwrap_or("");
    c.ok(
        &format!("{what}: message"),
        message.contains(message_part),
        format!("{body}"),
    );
}

fn check_rejected_event(c: &mut Checks, what: &str, ev: &Value, code: &str, claimed: Option<&str>) {
    c.eq(&format!("{what}: outcome"), &ev["outcome"], &json!("rejected"));
    c.eq(&format!("{what}: errorCode"), &ev["errorCode"], &json!(code));
    c.eq(&format!("{what}: httpStatus"), &ev["httpStatus"], &json!(403));
    c.eq(
        &format!("{what}: verified"),
        &ev["userIdentity"]["verified"],
        &json!(false),
    );
    c.eq(
        &format!("{what}: principal"),
        &ev["userIdentity"]["principal"],
        &Value::Null,
    );
    c.eq(
        &format!("{what}: claimed accessKeyId"),
        ev["userIdentity"]["accessKeyId"].as_str(),
        claimed,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listed_client_key_is_verified_recorded_and_re_signed() {
    let dir = tempfile::tempdir().unwrap();
    let clients = clients_file(dir.path(), 0o600, "");
    let env = Env::start(Mode::Reverse, settings(&clients)).await;
    let mut c = Checks::new("listed client key");

    let date = sigv4::amz_date_now();
    let resp = env
        .proxy
        .send(put_retention(
            &env,
            &params(EXAMPLE_ACCESS_KEY_ID, EXAMPLE_SECRET_ACCESS_KEY, &date),
            BODY,
        ))
        .await;
    c.eq("status", resp.status, 200);
    c.eq("vendor requests", env.fake.count(), 1);
    if let Some(got) = env.fake.last() {
        c.ok("re-signed with the proxy's key", got.sig_ok(), format!("{:?}", got.sig));
    }
    let ev = env.last_event();
    c.eq("outcome", &ev["outcome"], &json!("forwarded"));
    c.eq("principal", &ev["userIdentity"]["principal"], &json!(CLIENT_NAME));
    c.eq("verified", &ev["userIdentity"]["verified"], &json!(true));
    c.eq(
        "accessKeyId",
        &ev["userIdentity"]["accessKeyId"],
        &json!(EXAMPLE_ACCESS_KEY_ID),
    );

    // A botocore-shaped call with a bearer and unsigned headers added after signing.
    let resp = env
        .aws(
            "PUT",
            MESSAGING_HOST,
            &format!("/channels/{}/expiration-settings", enc(CHANNEL)),
            Some(BEARER),
            r#"{"ExpirationSettings": {"ExpirationDays": 30, "ExpirationCriterion": "CREATED_TIMESTAMP"}}"#,
        )
        .await;
    c.eq("Chime SDK call: status", resp.status, 200);
    c.eq(
        "Chime SDK call: verified",
        &env.last_event()["userIdentity"]["verified"],
        &json!(true),
    );

    // A pass-through (not audited) AWS call with the listed key goes through.
    let messages = format!("/channels/{}/messages", enc(CHANNEL));
    let call = AwsCall::botocore("GET", MESSAGING_HOST, &messages, Some(BEARER), INVOCATION_ID, b"");
    let resp = env.proxy.send(call.request(Mode::Reverse, &env.proxy)).await;
    c.eq("pass-through: status", resp.status, 200);
    c.eq("vendor requests", env.fake.count(), 3);

    // Slack calls are not AWS calls: their token passes unchanged, as before.
    let req = slack_request(
        Mode::Reverse,
        &env.proxy,
        "POST",
        SLACK_SET,
        Some(FORM),
        Some(SLACK_TOKEN),
        b"channel_id=C0123456789&duration_days=365",
    );
    c.eq("Slack call: status", env.proxy.send(req).await.status, 200);

    // `audit query --actor` finds the call by the principal's name.
    let by_name = env
        .proxy
        .events()
        .into_iter()
        .filter(|e| e["userIdentity"]["principal"] == json!(CLIENT_NAME))
        .count();
    c.eq("events by principal", by_name, 2);
    let log = env.proxy.stop().await;
    check_intact(&mut c, &log.verification);
    c.finish();
}

/// What is sent, the AWS exception and a part of its message, and the claimed key id.
type RefusalCase<'a> = (&'a str, Request<Bytes>, &'a str, &'a str, Option<&'a str>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anything_but_a_valid_signature_from_a_listed_key_is_refused_recorded_and_not_forwarded() {
    let dir = tempfile::tempdir().unwrap();
    let clients = clients_file(dir.path(), 0o600, "");
    let env = Env::start(Mode::Reverse, settings(&clients)).await;
    let mut c = Checks::new("refused callers");
    let now = sigv4::amz_date_now();
    let stale = {
        let fmt = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
        (time::OffsetDateTime::now_utc() - time::Duration::minutes(20))
            .format(&fmt)
            .unwrap()
    };
    let unknown_secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYSOMEONEELSE";

    let cases: Vec<RefusalCase<'_>> = vec![
        (
            "unknown key",
            put_retention(&env, &params("AKIASOMEONEELSE00001", unknown_secret, &now), BODY),
            "UnrecognizedClientException",
            "security token included in the request is invalid",
            Some("AKIASOMEONEELSE00001"),
        ),
        (
            "wrong secret",
            put_retention(&env, &params(EXAMPLE_ACCESS_KEY_ID, unknown_secret, &now), BODY),
            "InvalidSignatureException",
            "signature we calculated does not match",
            Some(EXAMPLE_ACCESS_KEY_ID),
        ),
        (
            "stale date",
            put_retention(
                &env,
                &params(EXAMPLE_ACCESS_KEY_ID, EXAMPLE_SECRET_ACCESS_KEY, &stale),
                BODY,
            ),
            "InvalidSignatureException",
            "Signature expired",
            Some(EXAMPLE_ACCESS_KEY_ID),
        ),
        (
            "body changed after signing",
            {
                let req = put_retention(
                    &env,
                    &params(EXAMPLE_ACCESS_KEY_ID, EXAMPLE_SECRET_ACCESS_KEY, &now),
                    BODY,
                );
                let (parts, _) = req.into_parts();
                Request::from_parts(parts, Bytes::from(BODY.replace("365", "1")))
            },
            "InvalidSignatureException",
            "signature we calculated does not match",
            Some(EXAMPLE_ACCESS_KEY_ID),
        ),
        (
            "no signature",
            Request::builder()
                .method("PUT")
                .uri(retention_path(ACCOUNT))
                .header("host", env.proxy.host())
                .header("content-type", "application/json")
                .body(Bytes::from(BODY))
                .unwrap(),
            "MissingAuthenticationTokenException",
            "Missing Authentication Token",
            None,
        ),
        (
            "a forged claim without a signature",
            Request::builder()
                .method("PUT")
                .uri(retention_path(ACCOUNT))
                .header("host", env.proxy.host())
                .header("content-type", "application/json")
                .header(
                    "authorization",
                    format!(
                        "AWS4-HMAC-SHA256 Credential={EXAMPLE_ACCESS_KEY_ID}/20261202/us-east-1/chime/aws4_request"
                    ),
                )
                .body(Bytes::from(BODY))
                .unwrap(),
            "IncompleteSignatureException",
            "",
            Some(EXAMPLE_ACCESS_KEY_ID),
        ),
        (
            "a session token the client does not list",
            {
                let p = SigningParams {
                    session_token: Some("FwoGZXIvYXdzEXAMPLETOKEN"),
                    ..params(EXAMPLE_ACCESS_KEY_ID, EXAMPLE_SECRET_ACCESS_KEY, &now)
                };
                put_retention(&env, &p, BODY)
            },
            "UnrecognizedClientException",
            "security token included in the request is invalid",
            Some(EXAMPLE_ACCESS_KEY_ID),
        ),
    ];
    for (i, (what, req, code, message, claimed)) in cases.into_iter().enumerate() {
        let resp = env.proxy.send(req).await;
        check_refusal(&mut c, what, &resp, code, message);
        c.eq(&format!("{what}: vendor requests"), env.fake.count(), 0);
        let events = env.proxy.events();
        c.eq(&format!("{what}: one event each"), events.len(), i + 1);
        if let Some(ev) = events.last() {
            check_rejected_event(&mut c, what, ev, code, claimed);
        }
    }

    // A pass-through (not audited) AWS call is refused the same way: the proxy never lends
    // its credentials to an unknown caller, whatever the path.
    let messages = format!("/channels/{}/messages", enc(CHANNEL));
    let req = sigv4::signed_request(
        "GET",
        &env.proxy.host(),
        &messages,
        &[("x-amz-chime-bearer", BEARER)],
        Bytes::new(),
        &params("AKIASOMEONEELSE00001", unknown_secret, &now),
    )
    .unwrap();
    let resp = env.proxy.send(req).await;
    check_refusal(
        &mut c,
        "pass-through with an unknown key",
        &resp,
        "UnrecognizedClientException",
        "security token",
    );
    let req = Request::builder()
        .method("GET")
        .uri(&messages)
        .header("host", env.proxy.host())
        .body(Bytes::new())
        .unwrap();
    let resp = env.proxy.send(req).await;
    check_refusal(
        &mut c,
        "pass-through without a signature",
        &resp,
        "MissingAuthenticationTokenException",
        "Missing Authentication Token",
    );
    c.eq("vendor requests after everything", env.fake.count(), 0);

    let db = env.proxy.db_path.clone();
    let log = env.proxy.stop().await;
    check_intact(&mut c, &log.verification);
    let stored = stored_bytes(&db);
    for secret in [EXAMPLE_SECRET_ACCESS_KEY, unknown_secret, "FwoGZXIvYXdzEXAMPLETOKEN"] {
        c.ok(
            &format!("{secret:.8}… not stored"),
            !support::contains_bytes(&stored, secret.as_bytes()),
            "found in the database".to_string(),
        );
    }
    c.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_client_keys_a_loopback_listener_keeps_unverified_reverse_calls() {
    let env = Env::start(Mode::Reverse, ProxySettings::default()).await;
    let mut c = Checks::new("loopback without client keys");
    let resp = env.aws("PUT", CHIME_HOST, &retention_path(ACCOUNT), None, BODY).await;
    c.eq("status", resp.status, 200);
    let ev = env.last_event();
    c.eq("verified", &ev["userIdentity"]["verified"], &json!(false));
    c.eq("principal", &ev["userIdentity"]["principal"], &Value::Null);
    c.eq(
        "claimed accessKeyId",
        &ev["userIdentity"]["accessKeyId"],
        &json!(EXAMPLE_ACCESS_KEY_ID),
    );
    env.proxy.stop().await;
    c.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_forward_mode_verified_means_the_vendor_accepted_the_signature() {
    let dir = tempfile::tempdir().unwrap();
    let clients = clients_file(dir.path(), 0o600, "");
    // Client keys concern reverse mode only: forward calls keep the client's own signature.
    let env = Env::start(Mode::Forward, settings(&clients)).await;
    let mut c = Checks::new("forward verified");
    let resp = env.aws("PUT", CHIME_HOST, &retention_path(ACCOUNT), None, BODY).await;
    c.eq("accepted: status", resp.status, 200);
    c.eq(
        "accepted: verified",
        &env.last_event()["userIdentity"]["verified"],
        &json!(true),
    );

    // A 404 from the vendor still proves the key.
    env.fake.set_status_override(Some((404, "No such account".into())));
    let resp = env.aws("GET", CHIME_HOST, &retention_path(ACCOUNT), None, "").await;
    env.fake.set_status_override(None);
    c.eq("unknown account: a vendor error", resp.status, 404);
    let ev = env.last_event();
    c.eq("unknown account: outcome", &ev["outcome"], &json!("forwarded"));
    c.eq(
        "unknown account: verified",
        &ev["userIdentity"]["verified"],
        &json!(true),
    );

    // A signature the vendor refuses is not verified.
    let path = retention_path(ACCOUNT);
    let call = AwsCall::botocore("PUT", CHIME_HOST, &path, None, INVOCATION_ID, BODY.as_bytes());
    let mut req = call.request(Mode::Forward, &env.proxy);
    let auth = req.headers()["authorization"].to_str().unwrap().to_string();
    let forged = format!("{}0000", &auth[..auth.len() - 4]);
    req.headers_mut().insert("authorization", forged.parse().unwrap());
    let resp = env.proxy.send(req).await;
    c.eq("forged: status", resp.status, 403);
    let ev = env.last_event();
    c.eq("forged: outcome", &ev["outcome"], &json!("forwarded"));
    c.eq("forged: verified", &ev["userIdentity"]["verified"], &json!(false));
    env.proxy.stop().await;
    c.finish();
}

#[test]
fn a_clients_file_others_can_read_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let clients = clients_file(dir.path(), 0o644, "");
    let text = support::in_process::config_toml("http://127.0.0.1:9", &dir.path().join("a.db"), &settings(&clients));
    let e = retention_proxy::config::Config::from_toml_str(&text, "t.toml").unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("reverse.clients_file") && msg.contains("chmod 600"),
        "{msg}"
    );
    assert!(!msg.contains(EXAMPLE_SECRET_ACCESS_KEY), "{msg}");

    let missing = dir.path().join("absent.toml");
    let text = support::in_process::config_toml("http://127.0.0.1:9", &dir.path().join("a.db"), &settings(&missing));
    let e = retention_proxy::config::Config::from_toml_str(&text, "t.toml").unwrap_err();
    assert!(e.to_string().contains("absent.toml"), "{e}");
}
