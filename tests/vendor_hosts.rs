//! Every vendor API host is audited, whichever endpoint the client's SDK picked: FIPS, other
//! regions and partitions, dual-stack, the global endpoint, VPC endpoint names, and Slack's
//! workspace, Enterprise Grid and GovSlack hosts. In absolute form such a call is judged and
//! recorded; under `CONNECT` the host is TLS-intercepted when a CA is configured and refused
//! otherwise, never tunnelled blind.
//!
//! Each test starts its own fake vendor and in-process proxy with an enforcing guardrail
//! (`min_days = 365`), the default `forward.allow_hosts` plus Slack's other hosts, and every
//! vendor host of the test resolved to the fake.

mod support;

use std::fmt::Write as _;

use bytes::Bytes;
use http::Request;
use serde_json::{Value, json};
use support::checks::Checks;
use support::fake_vendor::{FakeVendor, FakeVendorOpts, SimpleResponse};
use support::fixtures::{ACCOUNT, CHANNEL, SLACK_SET, SLACK_TOKEN, WAIT, enc};
use support::in_process::{InProcessProxy, parse_config};
use support::tls::{TestCa, TlsFront, connect_tunnel, tls_handshake};
use support::{sigv4, toml_str};
use tokio::io::AsyncReadExt;

/// AWS hosts the SDKs pick besides the default regional ones, and the family's `eventSource`.
const AWS_HOSTS: [(&str, &str); 8] = [
    ("chime-fips.aws-global.amazonaws.com", "chime.amazonaws.com"),
    ("chime.aws-global.api.aws", "chime.amazonaws.com"),
    ("chime-fips.us-gov-west-1.api.aws", "chime.amazonaws.com"),
    (
        "messaging-chime-fips.us-east-1.amazonaws.com",
        "messaging-chime.amazonaws.com",
    ),
    (
        "messaging-chime.ap-southeast-1.api.aws",
        "messaging-chime.amazonaws.com",
    ),
    (
        "vpce-0123456789abcdef0-abcdefgh.messaging-chime.us-east-1.vpce.amazonaws.com",
        "messaging-chime.amazonaws.com",
    ),
    (
        "identity-chime-fips.us-gov-west-1.amazonaws.com",
        "identity-chime.amazonaws.com",
    ),
    (
        "identity-chime.cn-north-1.amazonaws.com.cn",
        "identity-chime.amazonaws.com",
    ),
];

/// Slack's other Web API hosts (allowed in this test's configuration).
const SLACK_HOSTS: [&str; 4] = [
    "acme.slack.com",
    "acme.enterprise.slack.com",
    "slack-gov.com",
    "acme.slack-gov.com",
];

const APP: &str = "arn:aws:chime:us-east-1:111122223333:app-instance/87654321-4321-4321-4321-210987654321";

/// A proxy in front of `upstream` (every vendor host resolved to it), with the floor
/// guardrail; with the interception CA when `ca` is given.
async fn proxy(
    upstream: &str,
    upstream_ca: Option<&str>,
    ca: Option<(&str, &str)>,
    dir: &std::path::Path,
) -> InProcessProxy {
    let db = dir.join("audit.db");
    let up = toml_str(upstream);
    let mut t = String::new();
    let _ = writeln!(
        t,
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"\"\n\n[audit]\npath = {}\n",
        toml_str(&db.to_string_lossy())
    );
    let _ = writeln!(
        t,
        "[upstreams]\nchime = {up}\nchime_messaging = {up}\nchime_identity = {up}\nslack = {up}\nconnect_timeout = \"2s\""
    );
    if let Some(f) = upstream_ca {
        let _ = writeln!(t, "ca_file = {}", toml_str(f));
    }
    let mut allow = retention_proxy::config::RawForward::default().allow_hosts;
    allow.extend(["*.slack.com", "slack-gov.com", "*.slack-gov.com"].map(String::from));
    let allow: Vec<String> = allow.iter().map(|h| toml_str(h)).collect();
    let _ = writeln!(t, "\n[forward]\nallow_hosts = [{}]", allow.join(", "));
    if let Some((cert, key)) = ca {
        let _ = writeln!(t, "ca_cert = {}\nca_key = {}", toml_str(cert), toml_str(key));
    }
    t.push_str("\n[forward.resolve]\n");
    for h in AWS_HOSTS.iter().map(|(h, _)| *h).chain(SLACK_HOSTS) {
        let _ = writeln!(t, "{} = {up}", toml_str(h));
    }
    t.push_str("\n[[guardrails]]\nid = \"floor\"\nmin_days = 365\n");
    InProcessProxy::spawn(parse_config(&t, "vendor-hosts.toml"), db, None, false).await
}

/// The retention change of the family `event_source` names, to `days`: (method, path, body).
fn change(event_source: &str, days: u32) -> (&'static str, String, String) {
    match event_source {
        "chime.amazonaws.com" => (
            "PUT",
            format!("/accounts/{ACCOUNT}/retention-settings"),
            json!({"RetentionSettings": {"RoomRetentionSettings": {"RetentionDays": days}}}).to_string(),
        ),
        "messaging-chime.amazonaws.com" => (
            "PUT",
            format!("/channels/{}/expiration-settings", enc(CHANNEL)),
            json!({"ExpirationSettings": {"ExpirationDays": days, "ExpirationCriterion": "LAST_MESSAGE_TIMESTAMP"}})
                .to_string(),
        ),
        _ => (
            "PUT",
            format!("/app-instances/{}/retention-settings", enc(APP)),
            json!({"AppInstanceRetentionSettings": {"ChannelRetentionSettings": {"RetentionDays": days}}}).to_string(),
        ),
    }
}

/// A botocore-style call signed for `host` with the example key; absolute-form when `absolute`.
fn aws_call(host: &str, event_source: &str, days: u32, absolute: bool) -> Request<Bytes> {
    let (method, path, body) = change(event_source, days);
    let date = sigv4::amz_date_now();
    let params = support::fake_vendor::example_params(&date);
    let mut req = sigv4::signed_request(
        method,
        host,
        &path,
        &[("content-type", "application/json")],
        Bytes::from(body),
        &params,
    )
    .unwrap_or_else(|e| panic!("sign {path}: {e}"));
    if absolute {
        *req.uri_mut() = format!("http://{host}{path}").parse().unwrap();
    }
    req
}

/// slack_sdk's `admin.conversations.setCustomRetention` to `host`.
fn slack_call(host: &str, days: u32, absolute: bool) -> Request<Bytes> {
    let uri = if absolute {
        format!("http://{host}{SLACK_SET}")
    } else {
        SLACK_SET.to_string()
    };
    Request::builder()
        .method("POST")
        .uri(uri)
        .header("host", host)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("authorization", format!("Bearer {SLACK_TOKEN}"))
        .body(Bytes::from(format!("channel_id=C0123456789&duration_days={days}")))
        .unwrap()
}

fn fake_opts() -> FakeVendorOpts {
    FakeVendorOpts {
        slack_tokens: vec![SLACK_TOKEN.to_string()],
        ..FakeVendorOpts::with_example_key()
    }
}

fn refused_as_aws(c: &mut Checks, what: &str, r: &SimpleResponse) {
    c.eq(&format!("{what}: status"), r.status, 403);
    c.eq(
        &format!("{what}: x-amzn-ErrorType"),
        r.header("x-amzn-errortype"),
        Some("ForbiddenException"),
    );
}

fn refused_as_slack(c: &mut Checks, what: &str, r: &SimpleResponse) {
    let body: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    c.eq(&format!("{what}: status"), r.status, 200);
    c.eq(&format!("{what}: error"), &body["error"], &json!("restricted_action"));
}

/// Events of `log` by outcome, as `(eventSource, outcome)`.
fn outcomes(events: &[Value]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|e| {
            (
                e["eventSource"].as_str().unwrap_or("").to_string(),
                e["outcome"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_form_calls_to_every_vendor_host_are_judged_and_recorded() {
    let fake = FakeVendor::start(fake_opts()).await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = proxy(&fake.url(), None, None, dir.path()).await;
    let mut c = Checks::new("absolute-form calls to other vendor hosts");
    let mut expected = Vec::new();
    for (host, source) in AWS_HOSTS {
        let before = fake.count();
        let r = proxy.send(aws_call(host, source, 30, true)).await;
        refused_as_aws(&mut c, &format!("{host} 30 days"), &r);
        c.eq(&format!("{host} 30 days: vendor received"), fake.count() - before, 0);
        let r = proxy.send(aws_call(host, source, 400, true)).await;
        c.eq(&format!("{host} 400 days: status"), r.status, 200);
        c.eq(&format!("{host} 400 days: vendor received"), fake.count() - before, 1);
        if let Some(last) = fake.last() {
            c.ok(
                &format!("{host}: signature intact"),
                last.sig_ok(),
                format!("{:?}", last.sig),
            );
            c.eq(&format!("{host}: Host"), last.header("host"), Some(host));
        }
        expected.push((source.to_string(), "denied".to_string()));
        expected.push((source.to_string(), "forwarded".to_string()));
    }
    for host in SLACK_HOSTS {
        let before = fake.count();
        let r = proxy.send(slack_call(host, 30, true)).await;
        refused_as_slack(&mut c, &format!("{host} 30 days"), &r);
        c.eq(&format!("{host} 30 days: vendor received"), fake.count() - before, 0);
        let r = proxy.send(slack_call(host, 400, true)).await;
        c.eq(&format!("{host} 400 days: status"), r.status, 200);
        c.eq(&format!("{host} 400 days: vendor received"), fake.count() - before, 1);
        expected.push(("slack.com".to_string(), "denied".to_string()));
        expected.push(("slack.com".to_string(), "forwarded".to_string()));
    }
    let log = proxy.stop().await;
    c.eq("events (eventSource, outcome)", outcomes(&log.events), expected);
    c.finish();
}

/// The interception CA and a TLS front for the fake vendor whose certificate the proxy trusts.
struct Tls {
    ca_cert: String,
    ca_key: String,
    ca_pem: String,
    upstream_ca_file: String,
    front: TlsFront,
}

async fn tls_env(fake: &FakeVendor, dir: &std::path::Path) -> Tls {
    let upstream_ca = TestCa::new("vendor-hosts upstream CA");
    let front = TlsFront::start(upstream_ca.server_config(&["127.0.0.1", "localhost"]), fake.addr()).await;
    let (ca_cert, ca_key) = retention_proxy::tunnel::ca::init_ca(&dir.join("ca")).expect("create the interception CA");
    let upstream_ca_file = dir.join("upstream-ca.pem");
    std::fs::write(&upstream_ca_file, &upstream_ca.cert_pem).unwrap();
    Tls {
        ca_pem: std::fs::read_to_string(&ca_cert).unwrap(),
        ca_cert: ca_cert.to_string_lossy().into_owned(),
        ca_key: ca_key.to_string_lossy().into_owned(),
        upstream_ca_file: upstream_ca_file.to_string_lossy().into_owned(),
        front,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_to_every_vendor_host_is_intercepted_and_audited() {
    let fake = FakeVendor::start(fake_opts()).await;
    let dir = tempfile::tempdir().unwrap();
    let tls = tls_env(&fake, dir.path()).await;
    let proxy = proxy(
        &tls.front.url(),
        Some(&tls.upstream_ca_file),
        Some((&tls.ca_cert, &tls.ca_key)),
        dir.path(),
    )
    .await;
    let client = support::tls::client_config(&[&tls.ca_pem]);
    let mut c = Checks::new("CONNECT to other vendor hosts");
    let mut expected = Vec::new();
    let hosts = AWS_HOSTS
        .iter()
        .map(|(h, s)| (*h, Some(*s)))
        .chain(SLACK_HOSTS.iter().map(|h| (*h, None)));
    for (host, source) in hosts {
        let (head, stream) = connect_tunnel(proxy.addr, &format!("{host}:443"), &[]).await;
        c.eq(&format!("CONNECT {host}: status"), head.status, 200);
        if head.status != 200 {
            continue;
        }
        // Only a leaf from the interception CA completes this handshake: a blind tunnel would
        // reach the resolved vendor, whose certificate the client does not trust.
        let Ok(stream) = tokio::time::timeout(WAIT, tls_handshake(stream, host, client.clone()))
            .await
            .unwrap_or_else(|_| panic!("TLS handshake with {host} timed out"))
        else {
            c.fail(&format!("{host}: TLS with the interception CA"), "handshake failed");
            continue;
        };
        let mut http = support::tls::Http1::over(stream).await.expect("HTTP/1.1 in the tunnel");
        let before = fake.count();
        let (refuse, allow) = match source {
            Some(s) => (aws_call(host, s, 30, false), aws_call(host, s, 400, false)),
            None => (slack_call(host, 30, false), slack_call(host, 400, false)),
        };
        let r = http.send(refuse).await.expect("30-day call in the tunnel");
        match source {
            Some(_) => refused_as_aws(&mut c, &format!("{host} 30 days"), &r),
            None => refused_as_slack(&mut c, &format!("{host} 30 days"), &r),
        }
        c.eq(&format!("{host} 30 days: vendor received"), fake.count() - before, 0);
        let r = http.send(allow).await.expect("400-day call in the tunnel");
        c.eq(&format!("{host} 400 days: status"), r.status, 200);
        c.eq(&format!("{host} 400 days: vendor received"), fake.count() - before, 1);
        let source = source.unwrap_or("slack.com").to_string();
        expected.push((source.clone(), "denied".to_string()));
        expected.push((source, "forwarded".to_string()));
    }
    let log = proxy.stop().await;
    c.eq("events (eventSource, outcome)", outcomes(&log.events), expected);
    c.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_to_a_vendor_host_without_a_ca_is_refused_never_tunnelled() {
    // The vendor hosts resolve to a listener that records whether anything connected.
    let canary = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    canary.set_nonblocking(true).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let proxy = proxy(
        &format!("http://{}", canary.local_addr().unwrap()),
        None,
        None,
        dir.path(),
    )
    .await;
    let mut c = Checks::new("CONNECT without an interception CA");
    for host in AWS_HOSTS.iter().map(|(h, _)| *h).chain(SLACK_HOSTS) {
        let (head, mut stream) = connect_tunnel(proxy.addr, &format!("{host}:443"), &[]).await;
        c.eq(&format!("CONNECT {host}: status"), head.status, 403);
        let len: usize = head.header("content-length").and_then(|l| l.parse().ok()).unwrap_or(0);
        let mut body = vec![0u8; len];
        let read = tokio::time::timeout(WAIT, stream.read_exact(&mut body)).await;
        c.ok(
            &format!("CONNECT {host}: body read"),
            matches!(read, Ok(Ok(_))),
            format!("{read:?}"),
        );
        let body = String::from_utf8_lossy(&body).into_owned();
        c.ok(
            &format!("CONNECT {host}: refused as an audited host"),
            body.contains("never tunnelled blind"),
            &body,
        );
    }
    c.ok(
        "nothing connected to the vendor",
        canary.accept().is_err(),
        "a connection reached the resolved vendor",
    );
    let log = proxy.stop().await;
    c.eq("events", log.events.len(), 0);
    c.finish();
}
