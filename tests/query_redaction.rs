//! Query strings are redacted as headers and bodies are: a presigned request's signature and
//! session token never reach `requestParameters` (its credential keeps only the access key
//! id, which identifies the caller as an `Authorization` header would), and a Slack token in a
//! query becomes a fingerprint and is stored nowhere. Forward mode, in-process proxy, fake
//! vendor; the database files are searched byte for byte.

mod support;

use bytes::Bytes;
use http::Request;
use serde_json::Value;
use support::checks::Checks;
use support::clients::Mode;
use support::contains_bytes;
use support::fixtures::{ACCOUNT, CHIME_HOST, SLACK_HOST, SLACK_TOKEN};
use support::in_process::ProxySettings;
use support::modes::Env;

const AKID: &str = "AKIAIOSFODNN7EXAMPLE";
const SIGNATURE: &str = "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7";
const SESSION_TOKEN: &str = "IQoJb3JpZ2luX2VjEPresignedSessionTokenNeverStored0123456789";
/// What must never be stored of the credential: its scope after the key id.
const SCOPE: &str = "20261122/us-gov-west-1/chime/aws4_request";

fn presigned_query(extra: &str) -> String {
    format!(
        "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={AKID}%2F20261122%2Fus-gov-west-1%2Fchime%2Faws4_request\
         &X-Amz-Date=20261122T043147Z&X-Amz-Expires=300&X-Amz-SignedHeaders=host\
         &X-Amz-Security-Token={SESSION_TOKEN}&X-Amz-Signature={SIGNATURE}{extra}"
    )
}

fn absolute(method: &str, host: &str, path_and_query: &str, body: &str) -> Request<Bytes> {
    Request::builder()
        .method(method)
        .uri(format!("http://{host}{path_and_query}"))
        .header("host", host)
        .header("content-type", "application/json")
        .body(Bytes::from(body.to_string()))
        .unwrap()
}

fn no_secrets(c: &mut Checks, what: &str, stored: &[u8]) {
    for (name, secret) in [
        ("X-Amz-Signature", SIGNATURE),
        ("X-Amz-Security-Token", SESSION_TOKEN),
        ("credential scope", SCOPE),
        ("Slack token", SLACK_TOKEN),
    ] {
        c.ok(
            &format!("{what}: no {name} at rest"),
            !contains_bytes(stored, secret.as_bytes()),
            "found in the database files",
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_secrets_are_never_stored_and_presigned_calls_name_their_caller() {
    let env = Env::start(Mode::Forward, ProxySettings::default()).await;
    let mut c = Checks::new("presigned query");
    let path = format!("/accounts/{ACCOUNT}/retention-settings");
    // A presigned read goes to the vendor; a presigned change cannot be judged (its query
    // could carry settings) and is refused. Both are recorded.
    let read = absolute("GET", CHIME_HOST, &format!("{path}?{}", presigned_query("")), "");
    env.proxy.send(read).await;
    let change = absolute(
        "PUT",
        CHIME_HOST,
        &format!("{path}?{}", presigned_query("&token=xoxp-in-a-chime-query")),
        r#"{"RetentionSettings":{"RoomRetentionSettings":{"RetentionDays":400}}}"#,
    );
    let r = env.proxy.send(change).await;
    c.eq("presigned change: status", r.status, 400);
    // A Slack token in the query is fingerprinted like a form token (this already held).
    let slack = Request::builder()
        .method("GET")
        .uri(format!(
            "http://{SLACK_HOST}/api/admin.conversations.getCustomRetention?token={SLACK_TOKEN}&channel_id=C0123456789"
        ))
        .header("host", SLACK_HOST)
        .body(Bytes::new())
        .unwrap();
    c.eq("slack: status", env.proxy.send(slack).await.status, 200);
    c.eq("vendor received", env.fake.count(), 2);

    let log = env.proxy.stop().await;
    c.eq("events", log.events.len(), 3);
    if let Some(e) = log.events.get(2) {
        let fp = e["userIdentity"]["tokenFingerprint"].as_str().unwrap_or("");
        c.ok("slack: tokenFingerprint", fp.starts_with("hmac-sha256:"), fp);
        c.eq(
            "slack: tokenType",
            &e["userIdentity"]["tokenType"],
            &Value::from("xoxp"),
        );
        c.ok(
            "slack: no token parameter",
            e["requestParameters"].get("token").is_none(),
            &e["requestParameters"],
        );
    }
    for (i, e) in log.events.iter().take(2).enumerate() {
        let what = format!("event {i} ({})", e["eventName"]);
        c.eq(
            &format!("{what}: accessKeyId"),
            &e["userIdentity"]["accessKeyId"],
            &Value::from(AKID),
        );
        c.eq(
            &format!("{what}: type"),
            &e["userIdentity"]["type"],
            &Value::from("IAMUser"),
        );
        c.eq(
            &format!("{what}: awsRegion"),
            &e["awsRegion"],
            &Value::from("us-gov-west-1"),
        );
        let q = &e["requestParameters"]["queryString"];
        c.eq(
            &format!("{what}: credential"),
            &q["X-Amz-Credential"],
            &Value::from(AKID),
        );
        c.eq(
            &format!("{what}: expires kept"),
            &q["X-Amz-Expires"],
            &Value::from("300"),
        );
        c.ok(&format!("{what}: no signature"), q.get("X-Amz-Signature").is_none(), q);
        c.ok(
            &format!("{what}: no session token"),
            q.get("X-Amz-Security-Token").is_none(),
            q,
        );
        let text = e.to_string();
        c.ok(
            &format!("{what}: no token"),
            !text.contains("xoxp-in-a-chime-query"),
            &text,
        );
    }
    no_secrets(&mut c, "presigned", &log.stored_bytes);
    c.ok(
        "presigned: no query token at rest",
        !contains_bytes(&log.stored_bytes, b"xoxp-in-a-chime-query"),
        "found",
    );
    c.finish();
}
