//! `[slack] resolve_tokens` (SPEC §13) through the real proxy: a call's Slack token is resolved
//! by one `auth.test` per token fingerprint, sent where the call goes, and its event carries
//! `slackUserId`, `slackTeamId` and `slackEnterpriseId`; concurrent first calls share one
//! `auth.test`; a failing or slow one never fails the call; the token is never stored or
//! logged; the Slack user id is an actor `audit query` finds and a guardrail can exempt.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use retention_proxy::audit::query::Filter;
use serde_json::Value;
use support::binary::{BinaryProxy, BinaryProxyOpts, query_json, run, stderr};
use support::clients::Mode;
use support::contains_bytes;
use support::fake_vendor::{AUTH_TEST_PATH, AuthTestAnswer, FakeVendor, FakeVendorOpts, SlackUser};
use support::fixtures::{SLACK_HOST, SLACK_SET, WAIT};
use support::in_process::{InProcessProxy, ProxySettings};
use support::tls;
use support::trail::{self, slack_set_form};

const TOKEN_A: &str = "xoxp-1111111111-1111111111-1111111111-resolveAresolveAresolveAres01";
const TOKEN_B: &str = "xoxb-2222222222-2222222222-resolveBresolveBresolveBresolve02";
const CHANNEL: &str = "C0RESOLVE1";

const RESOLVE: &str = "[slack]\nresolve_tokens = true\n";

/// A fake vendor that accepts any Slack token, and a proxy in front of it.
async fn start(resolve: bool, request_timeout: Option<&str>, extra_toml: &str) -> (FakeVendor, InProcessProxy) {
    let fake = FakeVendor::start(FakeVendorOpts::default()).await;
    let mut extra = String::new();
    if resolve {
        extra.push_str(RESOLVE);
    }
    extra.push_str(extra_toml);
    let proxy = InProcessProxy::start(
        &fake.url(),
        ProxySettings {
            request_timeout: request_timeout.map(str::to_string),
            extra_toml: extra,
            ..ProxySettings::default()
        },
    )
    .await;
    (fake, proxy)
}

/// `setCustomRetention` of [`CHANNEL`] to `days` with `token`, as slack_sdk sends it.
fn set_call(mode: Mode, token: &str, days: u32) -> Request<Bytes> {
    trail::slack(mode, SLACK_SET, &slack_set_form(CHANNEL, days), token)
}

/// The `userIdentity` Slack ids of an event: (user, team, enterprise).
fn ids(ev: &Value) -> (Value, Value, Value) {
    let u = &ev["userIdentity"];
    (
        u["slackUserId"].clone(),
        u["slackTeamId"].clone(),
        u["slackEnterpriseId"].clone(),
    )
}

fn expected_ids(token: &str) -> (Value, Value, Value) {
    let u = SlackUser::of_token(token);
    (u.user_id.into(), u.team_id.into(), u.enterprise_id.into())
}

fn none() -> (Value, Value, Value) {
    (Value::Null, Value::Null, Value::Null)
}

/// How many setCustomRetention calls reached the vendor.
fn forwarded(fake: &FakeVendor) -> usize {
    fake.received().iter().filter(|r| r.path_and_query == SLACK_SET).count()
}

async fn resolves_once_per_token(mode: Mode) {
    let (fake, proxy) = start(true, None, "").await;
    for days in [400, 401, 402] {
        let resp = proxy.send(set_call(mode, TOKEN_A, days)).await;
        assert_eq!(resp.status, 200, "{mode:?}: {}", support::body_text(&resp));
        assert_eq!(resp.json()["ok"], true, "{mode:?}");
    }
    assert_eq!(
        fake.auth_test_count(),
        1,
        "{mode:?}: one auth.test for three calls with one token"
    );
    let resp = proxy.send(set_call(mode, TOKEN_B, 403)).await;
    assert_eq!(resp.status, 200, "{mode:?}");
    assert_eq!(fake.auth_test_count(), 2, "{mode:?}: another token, another auth.test");
    assert_eq!(forwarded(&fake), 4, "{mode:?}");

    // auth.test went where the calls went, as Slack wants it, with the caller's token.
    let asked: Vec<_> = fake
        .received()
        .into_iter()
        .filter(|r| r.path_and_query == AUTH_TEST_PATH)
        .collect();
    assert_eq!(asked[0].method, "POST");
    assert_eq!(asked[0].slack_token.as_deref(), Some(TOKEN_A));
    assert_eq!(asked[1].slack_token.as_deref(), Some(TOKEN_B));
    assert_eq!(
        asked[0].header("authorization"),
        Some(format!("Bearer {TOKEN_A}").as_str())
    );
    let host = match mode {
        Mode::Forward => SLACK_HOST.to_string(),
        Mode::Reverse => fake.host(),
    };
    assert_eq!(asked[0].header("host"), Some(host.as_str()), "{mode:?}");

    let log = proxy.stop().await;
    assert!(
        matches!(
            log.verification,
            retention_proxy::audit::query::Verification::Intact { .. }
        ),
        "{:?}",
        log.verification
    );
    assert_eq!(log.events.len(), 4, "{mode:?}: {:#?}", log.events);
    for ev in &log.events[..3] {
        assert_eq!(ev["outcome"], "forwarded", "{ev:#}");
        assert_eq!(ids(ev), expected_ids(TOKEN_A), "{mode:?}: {ev:#}");
        assert!(ev["userIdentity"]["tokenFingerprint"].is_string(), "{ev:#}");
    }
    assert_eq!(ids(&log.events[3]), expected_ids(TOKEN_B), "{mode:?}");
    assert_ne!(ids(&log.events[3]).0, ids(&log.events[0]).0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reverse_mode_events_carry_the_token_owner_and_auth_test_is_asked_once_per_token() {
    resolves_once_per_token(Mode::Reverse).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_mode_events_carry_the_token_owner_and_auth_test_is_asked_once_per_token() {
    resolves_once_per_token(Mode::Forward).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_calls_with_one_token_share_one_auth_test() {
    let (fake, proxy) = start(true, Some("10s"), "").await;
    // A slow answer keeps the first lookup in flight while the other calls arrive.
    fake.set_auth_test(
        TOKEN_A,
        AuthTestAnswer {
            result: Ok(SlackUser::of_token(TOKEN_A)),
            delay: Some(Duration::from_millis(300)),
        },
    );
    const CALLS: u32 = 8;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..CALLS {
        let req = set_call(Mode::Reverse, TOKEN_A, 400 + i);
        let addr = proxy.addr;
        tasks.spawn(async move { trail::send(addr, req).await.status });
    }
    while let Some(status) = tasks.join_next().await {
        assert_eq!(status.expect("a call task"), 200);
    }
    assert_eq!(fake.auth_test_count(), 1, "concurrent first calls share one auth.test");
    let log = proxy.stop().await;
    assert_eq!(log.events.len(), CALLS as usize);
    for ev in &log.events {
        assert_eq!(
            ids(ev),
            expected_ids(TOKEN_A),
            "every call waited for the answer: {ev:#}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_auth_answer_records_no_ids_and_the_call_goes_on() {
    let (fake, proxy) = start(true, None, "").await;
    fake.set_auth_test(
        TOKEN_A,
        AuthTestAnswer {
            result: Err("invalid_auth".into()),
            delay: None,
        },
    );
    for days in [400, 401] {
        let resp = proxy.send(set_call(Mode::Reverse, TOKEN_A, days)).await;
        assert_eq!(resp.status, 200);
        assert_eq!(resp.json()["ok"], true, "the vendor's own answer reaches the client");
    }
    assert_eq!(forwarded(&fake), 2, "both calls were forwarded");
    assert_eq!(
        fake.auth_test_count(),
        1,
        "a failure is remembered, not asked again at once"
    );
    let log = proxy.stop().await;
    assert_eq!(log.events.len(), 2);
    for ev in &log.events {
        assert_eq!(ev["outcome"], "forwarded", "{ev:#}");
        assert_eq!(ids(ev), none(), "{ev:#}");
        assert!(ev["userIdentity"]["tokenFingerprint"].is_string(), "{ev:#}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_auth_test_delays_the_call_by_at_most_request_timeout() {
    const TIMEOUT: Duration = Duration::from_millis(500);
    let (fake, proxy) = start(true, Some("500ms"), "").await;
    fake.set_auth_test(
        TOKEN_A,
        AuthTestAnswer {
            result: Ok(SlackUser::of_token(TOKEN_A)),
            delay: Some(Duration::from_secs(30)),
        },
    );
    let t0 = Instant::now();
    let resp = proxy.send(set_call(Mode::Reverse, TOKEN_A, 400)).await;
    let took = t0.elapsed();
    assert_eq!(resp.status, 200, "{}", support::body_text(&resp));
    assert_eq!(resp.json()["ok"], true);
    assert_eq!(forwarded(&fake), 1);
    // The call waited for the answer until request_timeout after it started, then went on;
    // the call's own exchange with the vendor is immediate.
    assert!(took >= TIMEOUT - Duration::from_millis(100), "took {took:?}");
    assert!(took < TIMEOUT + Duration::from_millis(1500), "took {took:?}");
    // The lookup that did not answer in time is not asked again by the next call.
    let resp = proxy.send(set_call(Mode::Reverse, TOKEN_A, 401)).await;
    assert_eq!(resp.status, 200);
    assert_eq!(fake.auth_test_count(), 1);
    let log = proxy.stop().await;
    assert_eq!(log.events.len(), 2);
    assert_eq!(log.events[0]["outcome"], "forwarded");
    assert_eq!(ids(&log.events[0]), none(), "{:#}", log.events[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_resolve_tokens_auth_test_is_never_asked() {
    let (fake, proxy) = start(false, None, "").await;
    for mode in [Mode::Reverse, Mode::Forward] {
        let resp = proxy.send(set_call(mode, TOKEN_A, 400)).await;
        assert_eq!(resp.status, 200);
    }
    assert_eq!(forwarded(&fake), 2);
    assert_eq!(fake.auth_test_count(), 0);
    let log = proxy.stop().await;
    for ev in &log.events {
        assert_eq!(ids(ev), none(), "{ev:#}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_slack_user_id_is_an_actor_and_a_guardrail_can_exempt_it() {
    let owner_a = SlackUser::of_token(TOKEN_A).user_id;
    let guardrail = format!(
        "\n[[guardrails]]\nid = \"min-1y\"\ntargets = [\"slack.channel_retention\"]\nmin_days = 365\nexempt = [{}]\n",
        support::toml_str(&owner_a)
    );
    let (fake, proxy) = start(true, None, &guardrail).await;
    let exempt = proxy.send(set_call(Mode::Reverse, TOKEN_A, 30)).await;
    assert_eq!(exempt.status, 200, "{}", support::body_text(&exempt));
    assert_eq!(exempt.json()["ok"], true, "the token's owner is exempt");
    let denied = proxy.send(set_call(Mode::Reverse, TOKEN_B, 30)).await;
    assert_eq!(
        denied.json()["ok"],
        false,
        "another user is not: {}",
        support::body_text(&denied)
    );
    assert_eq!(forwarded(&fake), 1);

    // Every record is committed before its call is answered: the live database can be read.
    let reader = retention_proxy::audit::open_reader(&retention_proxy::audit::Store::Local(proxy.db_path.clone()))
        .expect("open the audit database");
    let found = reader
        .query(&Filter {
            actor: Some(owner_a.clone()),
            ..Filter::default()
        })
        .expect("query by actor");
    drop(reader);
    let log = proxy.stop().await;
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0]["eventID"], log.events[0]["eventID"]);
    assert_eq!(found[0]["userIdentity"]["slackUserId"], owner_a.as_str());
    assert_eq!(log.events[1]["guardrail"]["decision"], "deny", "{:#}", log.events[1]);
    assert_eq!(
        ids(&log.events[1]),
        expected_ids(TOKEN_B),
        "a refused call names who tried"
    );
}

/// Inside an intercepted `CONNECT` tunnel the lookup goes where the tunnel goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_intercepted_call_is_resolved_through_its_tunnel() {
    let fake = FakeVendor::start(FakeVendorOpts::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (ca_cert, ca_key) = retention_proxy::tunnel::ca::init_ca(&dir.path().join("ca")).expect("interception CA");
    let db = dir.path().join("audit.db");
    let settings = ProxySettings {
        extra_toml: RESOLVE.to_string(),
        ..ProxySettings::default()
    };
    let text = support::in_process::config_toml(&fake.url(), &db, &settings).replacen(
        "[forward]\n",
        &format!(
            "[forward]\nca_cert = {}\nca_key = {}\n",
            support::toml_str(&ca_cert.to_string_lossy()),
            support::toml_str(&ca_key.to_string_lossy())
        ),
        1,
    );
    let cfg = support::in_process::parse_config(&text, "intercept.toml");
    let proxy = InProcessProxy::spawn(cfg, db, None, false).await.keeping(dir);

    let (head, stream) = tls::connect_tunnel(proxy.addr, &format!("{SLACK_HOST}:443"), &[]).await;
    assert_eq!(head.status, 200, "{}", head.text);
    let ca_pem = std::fs::read_to_string(&ca_cert).unwrap();
    let stream = tls::tls_handshake(stream, SLACK_HOST, tls::client_config(&[&ca_pem]))
        .await
        .expect("TLS inside the tunnel");
    let mut http = tls::Http1::over(stream).await.expect("HTTP/1.1 inside the tunnel");
    for days in [400, 401] {
        let mut req = set_call(Mode::Reverse, TOKEN_A, days);
        req.headers_mut().insert("host", SLACK_HOST.parse().unwrap());
        let resp = http.send(req).await.expect("an answer inside the tunnel");
        assert_eq!(resp.status, 200, "{}", support::body_text(&resp));
    }
    drop(http);
    let asked: Vec<_> = fake
        .received()
        .into_iter()
        .filter(|r| r.path_and_query == AUTH_TEST_PATH)
        .collect();
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].header("host"), Some(SLACK_HOST));
    let log = proxy.stop().await;
    assert_eq!(log.events.len(), 2);
    for ev in &log.events {
        assert_eq!(ev["proxyMode"], "forward");
        assert!(ev["tlsDetails"].is_object(), "{ev:#}");
        assert_eq!(ids(ev), expected_ids(TOKEN_A), "{ev:#}");
    }
}

/// The built binary with `RUST_LOG=trace`: the token is in neither the database nor the log,
/// `audit query --actor U…` finds the event, and `/metrics` counts the lookups.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_is_never_stored_or_logged_and_the_cli_finds_its_owner() {
    let fake = FakeVendor::start(FakeVendorOpts::default()).await;
    fake.set_auth_test(
        TOKEN_B,
        AuthTestAnswer {
            result: Err("invalid_auth".into()),
            delay: None,
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let mut opts = BinaryProxyOpts::new(&fake.url());
    opts.extra_toml = RESOLVE.to_string();
    opts.env.push(("RUST_LOG".into(), "trace".into()));
    let mut proxy = BinaryProxy::start(dir.path(), &opts).await;
    for (token, days) in [(TOKEN_A, 400), (TOKEN_A, 401), (TOKEN_B, 402)] {
        let resp = tokio::time::timeout(WAIT, trail::send(proxy.addr, set_call(Mode::Reverse, token, days)))
            .await
            .expect("an answer");
        assert_eq!(resp.status, 200);
    }
    assert_eq!(fake.auth_test_count(), 2);
    let (status, metrics) = proxy.admin_get("/metrics").await.expect("/metrics");
    assert_eq!(status, 200);
    for line in [
        "retention_proxy_slack_token_lookups_total{result=\"resolved\"} 1",
        "retention_proxy_slack_token_lookups_total{result=\"failed\"} 1",
        "retention_proxy_slack_token_lookups_total{result=\"hit\"} 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} missing:\n{metrics}");
    }
    proxy.stop().await;

    let log = proxy.log_text();
    assert!(log.contains("auth.test"), "the failed lookup is logged:\n{log}");
    let stored = support::in_process::stored_bytes(&proxy.db);
    for token in [TOKEN_A, TOKEN_B] {
        assert!(!log.contains(token), "a token in the log:\n{log}");
        assert!(!contains_bytes(&stored, token.as_bytes()), "a token at rest");
    }

    let owner = SlackUser::of_token(TOKEN_A);
    let events = query_json(&proxy.db, &["--actor", &owner.user_id]);
    assert_eq!(events.len(), 2, "{events:#?}");
    for ev in &events {
        assert_eq!(ev["userIdentity"]["slackUserId"], owner.user_id.as_str());
        assert_eq!(ev["userIdentity"]["slackTeamId"], owner.team_id.as_str());
        assert_eq!(
            ev["userIdentity"]["slackEnterpriseId"],
            owner.enterprise_id.as_deref().unwrap()
        );
    }
}

#[test]
fn an_unknown_key_under_slack_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("proxy.toml");
    std::fs::write(&cfg, "[slack]\nresolve_tokens = true\nresolve_token = true\n").unwrap();
    let o = run(&["check-config", "--config", &cfg.display().to_string()]);
    assert_eq!(o.status.code(), Some(64), "{}", stderr(&o));
    assert!(stderr(&o).contains("slack.resolve_token:"), "{}", stderr(&o));
    std::fs::write(&cfg, RESOLVE).unwrap();
    let o = run(&["check-config", "--config", &cfg.display().to_string()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("[slack]\nresolve_tokens = true"),
        "check-config shows the effective [slack]"
    );
}
