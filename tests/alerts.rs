//! Alerts (SPEC §11) against real receivers on loopback: a Standard Webhooks receiver that
//! verifies signatures and refuses stale timestamps, a Splunk HEC-shaped receiver, and a real
//! `rsyslogd`. Delivery is at least once across sink outages and `kill -9`, and a dead or
//! black-holed sink delays no call and no other sink.

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::binary::{self, BinaryProxy, BinaryProxyOpts, free_port};
use support::fake_vendor::{self, FakeVendor, FakeVendorOpts};
use support::fixtures::{PROXY_ACCESS_KEY_ID, PROXY_SECRET_ACCESS_KEY, SLACK_REMOVE, SLACK_SET, SLACK_TOKEN};
use support::in_process::{InProcessProxy, ProxySettings, config_toml, parse_config, proxy_credentials, read_audit};
use support::receivers::{BlackHole, Check, HEC_TOKEN, HttpReceiver, Rsyslog, WEBHOOK_SECRET, webhook_signature};
use support::toml_str;

/// How long a delivery may take to show up at a receiver.
const DELIVERED: Duration = Duration::from_secs(30);

fn secret_file(dir: &Path, name: &str, text: &str, mode: u32) -> String {
    let p = dir.join(name);
    std::fs::write(&p, format!("{text}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p.display().to_string()
}

/// Guardrails: channels `CD*` need 365 days (enforced), channels `CR*` too (dry run).
const GUARDRAILS: &str = "[[guardrails]]\nid = \"min-1y\"\ntargets = [\"slack.channel_retention\"]\nmin_days = 365\n\
[guardrails.scope]\nslack_channels = [\"CD*\"]\n\n\
[[guardrails]]\nid = \"min-1y-trial\"\ntargets = [\"slack.channel_retention\"]\nmin_days = 365\nmode = \"dry_run\"\n\
[guardrails.scope]\nslack_channels = [\"CR*\"]\n";

fn webhook_sink(id: &str, addr: SocketAddr, secret: &str, extra: &str) -> String {
    format!(
        "[[alerts]]\nid = \"{id}\"\nkind = \"webhook\"\nurl = \"http://{addr}/hook\"\nsecret_file = {}\n{extra}\n",
        toml_str(secret)
    )
}

fn hec_sink(id: &str, addr: SocketAddr, token: &str, extra: &str) -> String {
    format!(
        "[[alerts]]\nid = \"{id}\"\nkind = \"splunk_hec\"\nurl = \"http://{addr}/services/collector/event\"\ntoken_file = {}\n{extra}\n",
        toml_str(token)
    )
}

fn syslog_sink(id: &str, port: u16, extra: &str) -> String {
    format!("[[alerts]]\nid = \"{id}\"\nkind = \"syslog\"\naddress = \"tcp://127.0.0.1:{port}\"\n{extra}\n")
}

fn set(channel: &str, days: u32) -> http::Request<bytes::Bytes> {
    support::clients::slack_form(
        SLACK_SET,
        &format!("channel_id={channel}&duration_days={days}"),
        Some(SLACK_TOKEN),
        &[],
    )
}

fn ids(events: &[Value]) -> BTreeSet<String> {
    events
        .iter()
        .map(|e| e["eventID"].as_str().unwrap().to_string())
        .collect()
}

fn metric(text: &str, name: &str, sink: &str) -> Option<f64> {
    let prefix = format!("{name}{{sink=\"{sink}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

async fn admin_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let req = http::Request::get(path).body(bytes::Bytes::new()).unwrap();
    let r = fake_vendor::send(addr, req).await.unwrap();
    (r.status, String::from_utf8_lossy(&r.body).into_owned())
}

/// Each sink gets the merged event — exactly what `audit query` shows — of each call its
/// `when` names and of no other; a forwarded call's event carries its outcome; syslog
/// messages reach a real rsyslogd as RFC 5424 with the app name `retention-proxy`, as JSON
/// or CEF.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_sink_receives_the_merged_event_of_the_calls_it_asked_for() {
    let fake = FakeVendor::start(FakeVendorOpts::default()).await;
    let hook = HttpReceiver::start("127.0.0.1:0".parse().unwrap(), Check::Webhook).await;
    let hec = HttpReceiver::start("127.0.0.1:0".parse().unwrap(), Check::Hec).await;
    let rsyslog = Rsyslog::start(free_port()).await;
    let dir = tempfile::tempdir().unwrap();
    let secret = secret_file(dir.path(), "hook.key", WEBHOOK_SECRET, 0o600);
    let token = secret_file(dir.path(), "hec.token", HEC_TOKEN, 0o400);
    let db = dir.path().join("audit.db");
    let extra = format!(
        "{GUARDRAILS}\n{}{}{}{}",
        webhook_sink("hook", hook.addr, &secret, ""),
        hec_sink("hec", hec.addr, &token, "when = [\"denied\"]"),
        syslog_sink("siem-json", rsyslog.port, ""),
        syslog_sink("siem-cef", rsyslog.port, "format = \"cef\"\nwhen = [\"shortened\"]"),
    );
    let settings = ProxySettings {
        extra_toml: extra,
        ..ProxySettings::default()
    };
    let cfg = parse_config(&config_toml(&fake.url(), &db, &settings), "alerts.toml");
    let proxy = InProcessProxy::spawn(cfg, db.clone(), Some(proxy_credentials()), true).await;

    // Denied; allowed (unknown previous); shortened 400 → 100 and forwarded; dry-run denied
    // and forwarded; back to the workspace default; a first setting and a lengthening.
    let calls = [
        set("CD1", 30),
        set("CA1", 400),
        set("CA1", 100),
        set("CR1", 30),
        support::clients::slack_form(SLACK_REMOVE, "channel_id=CA1", Some(SLACK_TOKEN), &[]),
        set("CA2", 400),
        set("CA2", 500),
    ];
    for req in calls {
        let r = proxy.send(req).await;
        assert_eq!(r.status, 200);
    }
    let all = read_audit(&db).events;
    assert_eq!(all.len(), 7);
    let by_channel = |c: &str, days: u64| {
        all.iter()
            .find(|e| e["requestParameters"]["channel_id"] == c && e["changes"][0]["new"] == days)
            .unwrap_or_else(|| panic!("no event for {c} {days}"))
            .clone()
    };
    let denied = by_channel("CD1", 30);
    let shortened = by_channel("CA1", 100);
    let dry = by_channel("CR1", 30);
    assert_eq!(denied["guardrail"]["decision"], "deny");
    assert_eq!(shortened["changes"][0]["previous"], 400);
    assert_eq!(dry["guardrail"]["decision"], "dry_run_deny");

    let want_hook = ids(&[denied.clone(), shortened.clone(), dry.clone()]);
    assert!(
        hook.wait_until(DELIVERED, |got| ids(got) == want_hook).await,
        "webhook got {:#?}\nrejected {:?}",
        hook.accepted(),
        hook.rejected()
    );
    assert!(
        hec.wait_until(DELIVERED, |got| got.len() == 1).await,
        "{:?}",
        hec.rejected()
    );
    let json_msgs = |m: &[(String, String, String, String)]| m.iter().filter(|x| x.3.starts_with('{')).count();
    let cef_msgs = |m: &[(String, String, String, String)]| m.iter().filter(|x| x.3.starts_with("CEF:")).count();
    assert!(
        rsyslog
            .wait_until(DELIVERED, |m| json_msgs(m) == 3 && cef_msgs(m) == 1)
            .await,
        "{:#?}",
        rsyslog.messages()
    );

    // What `audit query` shows now (every outcome is in) is what the webhook carried.
    let now = read_audit(&db).events;
    for got in hook.accepted() {
        let want = now.iter().find(|e| e["eventID"] == got["eventID"]).unwrap();
        assert_eq!(&got, want);
    }
    let got_shortened = hook
        .accepted()
        .into_iter()
        .find(|e| e["eventID"] == shortened["eventID"])
        .unwrap();
    assert_eq!(got_shortened["outcome"], "forwarded");
    assert_eq!(got_shortened["httpStatus"], 200);
    // HEC: the envelope around the denied call only.
    let env = &hec.accepted()[0];
    assert_eq!(env["event"]["eventID"], denied["eventID"]);
    assert_eq!(env["event"]["outcome"], "denied");
    assert_eq!(env["sourcetype"], "retention-proxy");
    assert_eq!(env["host"], "test-proxy");
    assert!(hook.rejected().is_empty() && hec.rejected().is_empty());

    // rsyslog parsed RFC 5424: app name, msgid, host; the JSON body is the event.
    let msgs = rsyslog.messages();
    for (app, msgid, host, msg) in &msgs {
        assert_eq!(app, "retention-proxy");
        assert_eq!(host, "test-proxy");
        if msg.starts_with('{') {
            let v: Value = serde_json::from_str(msg).unwrap_or_else(|e| panic!("{e}: {msg}"));
            let want = now.iter().find(|e| e["eventID"] == v["eventID"]).unwrap();
            assert_eq!(&v, want);
            let expected = if v["eventID"] == denied["eventID"] {
                "denied"
            } else if v["eventID"] == dry["eventID"] {
                "dry_run_denied"
            } else {
                "shortened"
            };
            assert_eq!(msgid, expected, "{msg}");
        } else {
            assert_eq!(msgid, "shortened");
            assert!(
                msg.contains(&format!("externalId={}", shortened["eventID"].as_str().unwrap())),
                "{msg}"
            );
            assert!(msg.contains("cs2=slack.channel_retention CA1: 400 -> 100"), "{msg}");
            assert!(msg.contains("outcome=forwarded"), "{msg}");
        }
    }

    // Metrics per sink; readiness is the audit store's.
    let admin = proxy.admin.unwrap();
    let (status, text) = admin_get(admin, "/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(
        metric(&text, "retention_proxy_alerts_sent_total", "hook"),
        Some(3.0),
        "{text}"
    );
    assert_eq!(metric(&text, "retention_proxy_alerts_sent_total", "hec"), Some(1.0));
    assert_eq!(
        metric(&text, "retention_proxy_alerts_sent_total", "siem-cef"),
        Some(1.0)
    );
    assert_eq!(metric(&text, "retention_proxy_alerts_failed_total", "hook"), Some(0.0));
    let (status, _) = admin_get(admin, "/readyz").await;
    assert_eq!(status, 200);
    proxy.stop().await;
}

/// A black-holed webhook (connections accepted, never answered) and a syslog receiver that
/// refuses connections delay no call and no other sink; `/readyz` stays 200 while their lag
/// shows in the metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_or_black_holed_sink_delays_no_call_and_no_other_sink() {
    let fake = FakeVendor::start(FakeVendorOpts::default()).await;
    let hole = BlackHole::start().await;
    let hec = HttpReceiver::start("127.0.0.1:0".parse().unwrap(), Check::Hec).await;
    let dir = tempfile::tempdir().unwrap();
    let secret = secret_file(dir.path(), "hook.key", WEBHOOK_SECRET, 0o600);
    let token = secret_file(dir.path(), "hec.token", HEC_TOKEN, 0o600);
    let db = dir.path().join("audit.db");
    let dead_port = free_port();
    let extra = format!(
        "{GUARDRAILS}\n{}{}{}",
        webhook_sink("hole", hole.addr, &secret, "timeout = \"30s\""),
        syslog_sink("dead", dead_port, "retry_initial = \"50ms\"\nretry_max = \"200ms\""),
        hec_sink("hec", hec.addr, &token, ""),
    );
    let settings = ProxySettings {
        extra_toml: extra,
        ..ProxySettings::default()
    };
    let cfg = parse_config(&config_toml(&fake.url(), &db, &settings), "alerts.toml");
    let proxy = InProcessProxy::spawn(cfg, db.clone(), Some(proxy_credentials()), true).await;

    const CALLS: usize = 40;
    let mut slowest = Duration::ZERO;
    for i in 0..CALLS {
        let started = Instant::now();
        let r = proxy.send(set(&format!("CD{i}"), 30)).await;
        slowest = slowest.max(started.elapsed());
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["error"], "restricted_action");
    }
    // Far below the black hole's 30 s delivery timeout: no call waits for a sink.
    assert!(slowest < Duration::from_secs(2), "slowest call took {slowest:?}");
    assert!(
        hec.wait_until(DELIVERED, |got| got.len() == CALLS).await,
        "the live sink got {} of {CALLS}",
        hec.accepted().len()
    );
    let admin = proxy.admin.unwrap();
    let deadline = Instant::now() + DELIVERED;
    loop {
        let (_, text) = admin_get(admin, "/metrics").await;
        let failed = metric(&text, "retention_proxy_alerts_failed_total", "dead").unwrap_or(0.0);
        let retried = metric(&text, "retention_proxy_alerts_retried_total", "dead").unwrap_or(0.0);
        let lag_dead = metric(&text, "retention_proxy_alerts_lag_records", "dead").unwrap_or(0.0);
        let lag_hole = metric(&text, "retention_proxy_alerts_lag_records", "hole").unwrap_or(0.0);
        let lag_hole_s = metric(&text, "retention_proxy_alerts_lag_seconds", "hole").unwrap_or(0.0);
        let lag_hec = metric(&text, "retention_proxy_alerts_lag_records", "hec").unwrap_or(-1.0);
        if failed >= 2.0
            && retried >= 1.0
            && lag_dead >= CALLS as f64
            && lag_hole >= CALLS as f64
            && lag_hole_s > 0.0
            && lag_hec == 0.0
        {
            assert_eq!(metric(&text, "retention_proxy_alerts_sent_total", "hole"), Some(0.0));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "metrics never showed the dead sinks' lag:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, body) = admin_get(admin, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    // Shutdown is not held up by the black hole either.
    let started = Instant::now();
    proxy.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "stop took {:?}",
        started.elapsed()
    );
}

/// Every matching call is delivered at least once, and no other, although every sink is
/// down while 200 matching calls are made and the proxy is killed with SIGKILL halfway:
/// the real binary, restarted on the same database, catches up once the sinks come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_alert_is_lost_across_sink_outages_and_kill_9() {
    let fake =
        FakeVendor::start(FakeVendorOpts::with_example_key().secret(PROXY_ACCESS_KEY_ID, PROXY_SECRET_ACCESS_KEY))
            .await;
    let dir = tempfile::tempdir().unwrap();
    let secret = secret_file(dir.path(), "hook.key", WEBHOOK_SECRET, 0o600);
    let token = secret_file(dir.path(), "hec.token", HEC_TOKEN, 0o600);
    let (hook_addr, hec_addr): (SocketAddr, SocketAddr) = (
        format!("127.0.0.1:{}", free_port()).parse().unwrap(),
        format!("127.0.0.1:{}", free_port()).parse().unwrap(),
    );
    let syslog_port = free_port();
    let fast = "retry_initial = \"100ms\"\nretry_max = \"500ms\"\ntimeout = \"2s\"";
    let mut opts = BinaryProxyOpts::new(&fake.url());
    opts.extra_toml = format!(
        "{GUARDRAILS}\n{}{}{}",
        webhook_sink("hook", hook_addr, &secret, fast),
        hec_sink("hec", hec_addr, &token, fast),
        syslog_sink("siem", syslog_port, fast),
    );

    // Matching: denied calls on CD…; not matching: allowed first settings on CA….
    let mut matching = BTreeSet::new();
    let mut proxy = BinaryProxy::start(dir.path(), &opts).await;
    let send = |addr: SocketAddr, req| async move {
        let r = tokio::time::timeout(Duration::from_secs(15), fake_vendor::send(addr, req))
            .await
            .expect("call timed out")
            .expect("call failed");
        assert_eq!(r.status, 200);
    };
    for i in 0..100 {
        send(proxy.addr, set(&format!("CD{i}"), 30)).await;
        matching.insert(format!("CD{i}"));
        if i % 4 == 0 {
            send(proxy.addr, set(&format!("CA{i}"), 400)).await;
        }
    }
    proxy.signal("KILL");
    assert!(proxy.wait_exit(Duration::from_secs(10)).await.is_some());
    let mut proxy = BinaryProxy::start(dir.path(), &opts).await;
    for i in 100..200 {
        send(proxy.addr, set(&format!("CD{i}"), 30)).await;
        matching.insert(format!("CD{i}"));
        if i % 4 == 0 {
            send(proxy.addr, set(&format!("CA{i}"), 400)).await;
        }
    }
    assert_eq!(fake.count(), 50, "the denied calls never reached the vendor");

    // The sinks come back.
    let hook = HttpReceiver::start(hook_addr, Check::Webhook).await;
    let hec = HttpReceiver::start(hec_addr, Check::Hec).await;
    let rsyslog = Rsyslog::start(syslog_port).await;
    let channels = |events: &[Value]| -> BTreeSet<String> {
        events
            .iter()
            .map(|e| {
                let e = if e.get("event").is_some() { &e["event"] } else { e };
                e["requestParameters"]["channel_id"].as_str().unwrap().to_string()
            })
            .collect()
    };
    assert!(
        hook.wait_until(Duration::from_secs(60), |got| channels(got) == matching)
            .await,
        "webhook: {} of {} distinct, rejected {:?}\n{}",
        channels(&hook.accepted()).len(),
        matching.len(),
        hook.rejected(),
        proxy.log_text()
    );
    assert!(
        hec.wait_until(Duration::from_secs(60), |got| channels(got) == matching)
            .await,
        "hec: {} of {}",
        channels(&hec.accepted()).len(),
        matching.len()
    );
    let syslog_channels = |m: &[(String, String, String, String)]| -> BTreeSet<String> {
        m.iter()
            .filter_map(|x| serde_json::from_str::<Value>(&x.3).ok())
            .map(|v| v["requestParameters"]["channel_id"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(
        rsyslog
            .wait_until(Duration::from_secs(60), |m| syslog_channels(m) == matching)
            .await,
        "syslog: {} of {}",
        syslog_channels(&rsyslog.messages()).len(),
        matching.len()
    );
    // Nothing that does not match, even as a duplicate.
    for got in [channels(&hook.accepted()), channels(&hec.accepted())] {
        assert!(got.iter().all(|c| c.starts_with("CD")), "{got:?}");
    }
    proxy.stop().await;
    // The chain is intact: positions live beside it.
    let out = binary::run(&["audit", "verify", "--db", &proxy.db.display().to_string()]);
    assert!(out.status.success(), "{}", binary::stderr(&out));
}

/// `check-config` (and so `serve`) refuses bad sinks, naming each key: a wrong kind, a URL
/// that is not one, plain HTTP to a remote host, a secret file others can read (naming the
/// file), a missing token, an unknown key, a bad `when`, a bad syslog address.
#[test]
fn bad_alert_sinks_are_refused_with_every_problem_named() {
    let dir = tempfile::tempdir().unwrap();
    let open = secret_file(dir.path(), "open.key", WEBHOOK_SECRET, 0o644);
    let good = secret_file(dir.path(), "good.key", WEBHOOK_SECRET, 0o600);
    let not_whsec = secret_file(dir.path(), "plain.key", "hunter2hunter2hunter2", 0o600);
    let text = format!(
        "[[alerts]]\nid = \"a\"\nkind = \"pager\"\n\n\
         [[alerts]]\nid = \"b\"\nkind = \"webhook\"\nurl = \"not a url\"\nsecret_file = {open}\n\n\
         [[alerts]]\nid = \"c\"\nkind = \"webhook\"\nurl = \"http://hooks.example.com/x\"\nsecret_file = {good}\nurll = \"x\"\n\n\
         [[alerts]]\nid = \"d\"\nkind = \"splunk_hec\"\nurl = \"https://splunk.example.com:8088/services/collector/event\"\n\n\
         [[alerts]]\nid = \"e\"\nkind = \"syslog\"\naddress = \"siem.example.com:514\"\nwhen = [\"denied\", \"refused\"]\nformat = \"xml\"\n\n\
         [[alerts]]\nid = \"f\"\nkind = \"webhook\"\nurl = \"https://hooks.example.com/x\"\nsecret_file = {not_whsec}\n\n\
         [[alerts]]\nid = \"a\"\nkind = \"syslog\"\naddress = \"udp://127.0.0.1:514\"\n",
        open = toml_str(&open),
        good = toml_str(&good),
        not_whsec = toml_str(&not_whsec),
    );
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, text).unwrap();
    let out = binary::run(&["check-config", "--config", &cfg.display().to_string()]);
    assert_eq!(out.status.code(), Some(64), "{}", binary::stderr(&out));
    let err = binary::stderr(&out);
    for needle in [
        "alerts[0] (\"a\").kind: \"pager\"",
        "alerts[1] (\"b\").url",
        &format!("alerts[1] (\"b\").secret_file: {open} has mode 0644"),
        "alerts[2] (\"c\").url",
        "loopback",
        "alerts.2.urll",
        "alerts[3] (\"d\").token_file: is required",
        "alerts[4] (\"e\").address",
        "alerts[4] (\"e\").when[1]: \"refused\"",
        "alerts[4] (\"e\").format",
        &format!("alerts[5] (\"f\").secret_file: {not_whsec} does not hold a Standard Webhooks secret"),
        "alerts[6].id: \"a\" is used twice",
    ] {
        assert!(err.contains(needle), "{needle:?} missing from:\n{err}");
    }
    assert!(
        !err.contains("MfKQ9r8G") && !err.contains("hunter2"),
        "a secret was printed:\n{err}"
    );

    // A good configuration passes; the effective configuration names files, not secrets.
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o600)).unwrap();
    let text = format!(
        "[[alerts]]\nid = \"soc\"\nkind = \"webhook\"\nurl = \"https://hooks.example.com/retention\"\nsecret_file = {}\n\
         when = [\"denied\", \"turned_off\"]\n",
        toml_str(&open)
    );
    std::fs::write(&cfg, text).unwrap();
    let out = binary::run(&["check-config", "--config", &cfg.display().to_string()]);
    assert!(out.status.success(), "{}", binary::stderr(&out));
    let shown = binary::stdout(&out);
    assert!(shown.contains("[[alerts]]") && shown.contains("open.key"), "{shown}");
    assert!(!shown.contains("MfKQ9r8G"), "{shown}");
    assert!(binary::stderr(&out).contains("1 alert sink"));
}

/// `alerts test` sends one sample alert and says what the sink answered; a sink that cannot
/// be reached, or an unknown id, is one sentence and a non-zero exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_test_reports_what_the_sink_answered() {
    let hook = HttpReceiver::start("127.0.0.1:0".parse().unwrap(), Check::Webhook).await;
    let dir = tempfile::tempdir().unwrap();
    let secret = secret_file(dir.path(), "hook.key", WEBHOOK_SECRET, 0o600);
    let cfg = dir.path().join("alerts.toml");
    std::fs::write(
        &cfg,
        format!(
            "[audit]\npath = {}\n{}{}",
            toml_str(&dir.path().join("audit.db").display().to_string()),
            webhook_sink("soc", hook.addr, &secret, ""),
            syslog_sink("gone", free_port(), "timeout = \"2s\""),
        ),
    )
    .unwrap();
    let cfg = cfg.display().to_string();
    let out = binary::run_async(vec![
        "alerts".into(),
        "test".into(),
        "--config".into(),
        cfg.clone(),
        "--id".into(),
        "soc".into(),
    ])
    .await;
    assert!(out.status.success(), "{}", binary::stderr(&out));
    assert!(binary::stdout(&out).contains("HTTP 200"), "{}", binary::stdout(&out));
    let got = hook.accepted();
    assert_eq!(got.len(), 1, "{:?}", hook.rejected());
    assert_eq!(got[0]["alertTest"], true);
    assert_eq!(got[0]["guardrail"]["decision"], "deny");

    for (id, why) in [("gone", "cannot reach"), ("nope", "no alert sink \"nope\"")] {
        let out = binary::run_async(vec![
            "alerts".into(),
            "test".into(),
            "--config".into(),
            cfg.clone(),
            "--id".into(),
            id.into(),
        ])
        .await;
        binary::assert_one_line_error(&out, id);
        assert!(binary::stderr(&out).contains(why), "{}", binary::stderr(&out));
    }
    // The receiver refuses a stale timestamp, however well signed: the proxy's are fresh.
    let body = r#"{"eventID":"e1"}"#;
    let stale = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 3600)
        .to_string();
    let req = http::Request::post("/hook")
        .header("content-type", "application/json")
        .header("webhook-id", "e1")
        .header("webhook-timestamp", &stale)
        .header("webhook-signature", webhook_signature("e1", &stale, body.as_bytes()))
        .body(bytes::Bytes::from(body))
        .unwrap();
    let r = fake_vendor::send(hook.addr, req).await.unwrap();
    assert_eq!(r.status, 400);
}
