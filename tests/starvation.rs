//! No way to starve the proxy: a connection that never sends a byte is closed after
//! `server.header_read_timeout` (on the proxy and the admin listener), so silent connections
//! cannot hold every slot; an audited call whose body stalls is answered in the vendor's shape
//! after `server.body_read_timeout`, recorded as `rejected`, and nothing reaches the vendor;
//! the admin listener has its own connection limit; and when file descriptors run out, the
//! accept loops back off instead of spinning and flooding the log, and serve again once
//! descriptors free up.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::binary::{BinaryProxy, BinaryProxyOpts};
use support::checks::Checks;
use support::fake_vendor::{FakeVendor, FakeVendorOpts};
use support::fixtures::{ACCOUNT, SLACK_SET, WAIT};
use support::in_process::{InProcessProxy, ProxySettings, config_toml, parse_config, proxy_credentials};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A proxy in front of `fake` with `[server]` keys appended to the default test configuration,
/// and an admin listener when `admin`.
async fn proxy_with(fake: &FakeVendor, server_keys: &str, admin: bool) -> (InProcessProxy, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let db = dir.path().join("audit.db");
    let text = config_toml(&fake.url(), &db, &ProxySettings::default()).replacen(
        "admin_listen = \"\"\n",
        &format!("admin_listen = \"\"\n{server_keys}\n"),
        1,
    );
    let cfg = parse_config(&text, "starvation.toml");
    let proxy = InProcessProxy::spawn(cfg, db, Some(proxy_credentials()), admin).await;
    (proxy, dir)
}

/// Reads until the peer closes or `within` passes; what arrived and whether it closed.
async fn read_until_closed(s: &mut TcpStream, within: Duration) -> (Vec<u8>, bool) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return (got, false),
            Ok(Ok(0)) | Ok(Err(_)) => return (got, true),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// A `GET /healthz`-style request on a new connection: the status line's code, if any
/// arrived within `within`.
async fn status_within(addr: SocketAddr, path: &str, within: Duration) -> Option<u16> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let (got, _) = read_until_closed(&mut s, within).await;
    let text = String::from_utf8_lossy(&got);
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_closed_after_the_header_read_timeout() {
    let fake = FakeVendor::start(FakeVendorOpts::with_example_key()).await;
    let (proxy, _dir) = proxy_with(&fake, "header_read_timeout = \"300ms\"", true).await;
    let mut c = Checks::new("silent connections");
    for (name, addr) in [("proxy", proxy.addr), ("admin", proxy.admin.expect("admin listener"))] {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        let started = std::time::Instant::now();
        let (got, closed) = read_until_closed(&mut s, Duration::from_secs(5)).await;
        c.ok(
            "check",
            closed,
            format!("{name}: a connection that sent nothing is still open after 5s"),
        );
        c.ok(
            "check",
            started.elapsed() >= Duration::from_millis(250),
            format!("{name}: closed before its timeout ({:?})", started.elapsed()),
        );
        c.ok(
            "check",
            got.is_empty(),
            format!("{name}: a silent connection got {got:?}"),
        );
    }
    c.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_silent_connections_do_not_stop_service_for_a_real_client() {
    let fake = FakeVendor::start(FakeVendorOpts::with_example_key()).await;
    let (proxy, _dir) = proxy_with(&fake, "header_read_timeout = \"500ms\"\nmax_connections = 8", false).await;
    // Every slot taken by a connection that never speaks.
    let mut silent = Vec::new();
    for _ in 0..16 {
        silent.push(TcpStream::connect(proxy.addr).await.expect("connect"));
    }
    // A real client is still served (once the silent ones have timed out).
    let status = status_within(proxy.addr, "/nowhere", WAIT).await;
    assert_eq!(
        status,
        Some(404),
        "a real client was not served while silent connections held every slot"
    );
    drop(silent);
}

/// Sends the head of a call and part of its body, then stalls; the raw answer.
async fn stalled_call(addr: SocketAddr, head: &str, partial_body: &str) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(head.as_bytes()).await.expect("write head");
    s.write_all(partial_body.as_bytes())
        .await
        .expect("write part of the body");
    let (got, _) = read_until_closed(&mut s, WAIT).await;
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_audited_body_is_answered_in_the_vendors_shape_recorded_and_never_forwarded() {
    let fake = FakeVendor::start(FakeVendorOpts::with_example_key()).await;
    let (proxy, _dir) = proxy_with(&fake, "body_read_timeout = \"300ms\"", false).await;
    let mut c = Checks::new("stalled audited body");

    // AWS: 408 with the AWS error shape.
    let path = format!("/accounts/{ACCOUNT}/retention-settings");
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n",
        proxy.addr
    );
    let answer = stalled_call(proxy.addr, &head, "{\"RetentionSettings\":").await;
    c.ok(
        "check",
        answer.starts_with("HTTP/1.1 408"),
        format!("AWS answer: {answer}"),
    );
    c.ok(
        "check",
        answer
            .to_ascii_lowercase()
            .contains("x-amzn-errortype: requesttimeoutexception"),
        format!("AWS answer: {answer}"),
    );

    // Slack: its own `request_timeout` error.
    let head = format!(
        "POST {SLACK_SET} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Authorization: Bearer xoxp-1-stalled\r\nContent-Length: 200\r\n\r\n",
        proxy.addr
    );
    let answer = stalled_call(proxy.addr, &head, "channel_id=C0").await;
    c.ok(
        "check",
        answer.starts_with("HTTP/1.1 200"),
        format!("Slack answer: {answer}"),
    );
    c.ok(
        "check",
        answer.contains("\"error\":\"request_timeout\""),
        format!("Slack answer: {answer}"),
    );

    c.ok(
        "check",
        fake.received().is_empty(),
        format!("the vendor received {} request(s)", fake.received().len()),
    );
    let log = proxy.stop().await;
    let outcomes: Vec<(String, String)> = log
        .events
        .iter()
        .map(|e| {
            (
                e["eventName"].as_str().unwrap_or("").to_string(),
                e["outcome"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    c.ok(
        "check",
        outcomes
            == vec![
                ("PutRetentionSettings".to_string(), "rejected".to_string()),
                (
                    "admin.conversations.setCustomRetention".to_string(),
                    "rejected".to_string(),
                ),
            ],
        format!("events: {outcomes:?}"),
    );
    c.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_has_its_own_connection_limit() {
    let fake = FakeVendor::start(FakeVendorOpts::with_example_key()).await;
    let (proxy, _dir) = proxy_with(&fake, "header_read_timeout = \"2s\"\nadmin_max_connections = 2", true).await;
    let admin = proxy.admin.expect("admin listener");
    assert_eq!(
        status_within(admin, "/healthz", WAIT).await,
        Some(200),
        "admin listener up"
    );
    let held: Vec<TcpStream> = vec![
        TcpStream::connect(admin).await.expect("connect"),
        TcpStream::connect(admin).await.expect("connect"),
    ];
    // Both slots held: a third client waits...
    let started = std::time::Instant::now();
    assert_eq!(
        status_within(admin, "/healthz", Duration::from_millis(700)).await,
        None,
        "a third admin connection was served while admin_max_connections = 2 were held"
    );
    // ...and is served once the silent ones time out.
    assert_eq!(status_within(admin, "/healthz", WAIT).await, Some(200));
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_file_descriptors_the_proxy_backs_off_logs_little_and_recovers() {
    let fake = FakeVendor::start(FakeVendorOpts::with_example_key()).await;
    let dir = tempfile::tempdir().expect("temporary directory");
    let proxy = BinaryProxy::start(dir.path(), &BinaryProxyOpts::new(&fake.url())).await;
    // Lower the running proxy's open-file limit so that a few connections exhaust it.
    let st = std::process::Command::new("prlimit")
        .arg(format!("--pid={}", proxy.pid()))
        .arg("--nofile=64:64")
        .status()
        .expect("run prlimit");
    assert!(st.success(), "prlimit failed");

    let mut held = Vec::new();
    for _ in 0..150 {
        if let Ok(s) = TcpStream::connect(proxy.addr).await {
            held.push(s);
        }
    }
    // Wait (with a deadline) until the proxy reports that accept fails.
    let deadline = std::time::Instant::now() + WAIT;
    while !proxy.log_text().contains("accept failed") {
        assert!(
            std::time::Instant::now() < deadline,
            "no accept failure logged:\n{}",
            proxy.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Then measure the log over a fixed window while descriptors stay exhausted.
    let before = std::fs::metadata(&proxy.log).map(|m| m.len()).unwrap_or(0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let grown = std::fs::metadata(&proxy.log).map(|m| m.len()).unwrap_or(0) - before;
    assert!(
        grown < 16 * 1024,
        "the log grew by {grown} bytes in 2 s while descriptors were exhausted"
    );
    // Descriptors free up: the proxy serves again.
    drop(held);
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        if let Some(404) = status_within(proxy.addr, "/nowhere", Duration::from_secs(2)).await {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the proxy did not serve again:\n{}",
            proxy.log_text()
        );
    }
    assert!(proxy.admin_get("/healthz").await.is_ok_and(|(s, _)| s == 200));
}
