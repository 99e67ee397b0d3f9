//! Upstream failures through the real proxy, in-process, in forward and reverse mode (vendor
//! answers 500, vendor down, vendor too slow), and the audit chain across every outcome, both
//! modes and a restart on the same database.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::body_text;
use support::checks::Checks;
use support::clients::{AwsCall, Mode, slack_request};
use support::fake_vendor::{FakeVendorOpts, Received};
use support::fixtures::{
    ACCOUNT, CHIME_HOST, PROXY_ACCESS_KEY_ID, PROXY_SECRET_ACCESS_KEY, SLACK_SET, SLACK_TOKEN, WAIT,
};
use support::in_process::{InProcessProxy, ProxySettings, read_audit};
use support::modes::{Env, FORM, INVOCATION_ID, check_intact, check_previous, retention_path};

// ---------------------------------------------------------------------------------------------
// Upstream failures
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
    let proxy = InProcessProxy::start(&format!("http://{closed}"), ProxySettings::default()).await;
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
// The chain, across every outcome and a restart
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
    let opts = FakeVendorOpts::with_example_key().secret(PROXY_ACCESS_KEY_ID, PROXY_SECRET_ACCESS_KEY);
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
    let proxy = InProcessProxy::start(&fake.url(), settings).await;
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
