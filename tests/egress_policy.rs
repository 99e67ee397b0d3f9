//! The egress policy: `CONNECT` opens only ports in `forward.connect_ports`; a host that is
//! not a `[forward.resolve]` entry and resolves (or is written) as a loopback, private,
//! link-local, shared, unspecified or metadata address is refused, for blind and intercepted
//! `CONNECT` and for absolute-form forwards, while an explicit resolve entry works; and an
//! absolute-form target with any scheme but `http` is refused with `400`.

mod support;

use std::fmt::Write as _;
use std::net::SocketAddr;

use bytes::Bytes;
use http::Request;
use support::checks::Checks;
use support::fake_vendor::{FakeVendor, FakeVendorOpts};
use support::fixtures::{SLACK_HOST, WAIT};
use support::in_process::{InProcessProxy, parse_config, proxy_credentials};
use support::tls::{EchoServer, connect_tunnel};
use support::{body_text, toml_str};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An allowed name resolved explicitly to the echo server.
const BLIND_HOST: &str = "blind.test";

/// A proxy allowing `localhost`, `127.0.0.1`, `169.254.169.254`, [`BLIND_HOST`] and
/// `slack.com`; [`BLIND_HOST`] resolves to `echo`, `slack.com` to `fake`, and so does every
/// name in `resolve_to_fake`. `forward_keys` go into `[forward]`.
async fn proxy(
    echo: &EchoServer,
    fake: &FakeVendor,
    forward_keys: &str,
    resolve_to_fake: &[&str],
) -> (InProcessProxy, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let db = dir.path().join("audit.db");
    let url = toml_str(&fake.url());
    let mut t = String::new();
    t.push_str("[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"\"\n\n");
    let _ = writeln!(t, "[audit]\npath = {}\n", toml_str(&db.to_string_lossy()));
    let _ = writeln!(
        t,
        "[upstreams]\nchime = {url}\nchime_messaging = {url}\nchime_identity = {url}\nslack = {url}\nconnect_timeout = \"2s\"\n"
    );
    let _ = writeln!(
        t,
        "[forward]\nallow_hosts = [\"localhost\", \"127.0.0.1\", \"169.254.169.254\", \"{BLIND_HOST}\", \"slack.com\"]\n{forward_keys}\n"
    );
    t.push_str("[forward.resolve]\n");
    let _ = writeln!(
        t,
        "{} = {}",
        toml_str(BLIND_HOST),
        toml_str(&format!("http://{}", echo.addr))
    );
    let _ = writeln!(t, "{} = {url}", toml_str(SLACK_HOST));
    for h in resolve_to_fake {
        let _ = writeln!(t, "{} = {url}", toml_str(h));
    }
    let cfg = parse_config(&t, "egress-policy.toml");
    let p = InProcessProxy::spawn(cfg, db, Some(proxy_credentials()), false).await;
    (p, dir)
}

/// The head and body of a refusal (the proxy answers with a short plain-text body).
async fn answer(head: &support::tls::Head, mut s: tokio::net::TcpStream) -> String {
    let mut buf = vec![0u8; 1024];
    let n = match tokio::time::timeout(WAIT, s.read(&mut buf)).await {
        Ok(Ok(n)) => n,
        _ => 0,
    };
    format!("{}\n{}", head.text, String::from_utf8_lossy(&buf[..n]))
}

/// Sends bytes through an open tunnel and reads them back from the echo server.
async fn echoes(mut s: tokio::net::TcpStream) -> bool {
    if s.write_all(b"ping").await.is_err() {
        return false;
    }
    let mut buf = [0u8; 4];
    matches!(
        tokio::time::timeout(WAIT, s.read_exact(&mut buf)).await,
        Ok(Ok(_)) if &buf == b"ping"
    )
}

async fn send(addr: SocketAddr, req: Request<Bytes>) -> support::fake_vendor::SimpleResponse {
    tokio::time::timeout(WAIT, support::fake_vendor::send(addr, req))
        .await
        .expect("the proxy answered in time")
        .expect("request to the proxy")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_to_a_port_outside_connect_ports_is_refused() {
    let echo = EchoServer::start().await;
    let fake = FakeVendor::start(FakeVendorOpts::with_example_key()).await;
    let mut c = Checks::new("connect_ports");
    let (p, _dir) = proxy(&echo, &fake, "", &[]).await;
    for port in [22, 80, 8443] {
        let (head, s) = connect_tunnel(p.addr, &format!("{BLIND_HOST}:{port}"), &[]).await;
        c.eq(&format!("CONNECT {BLIND_HOST}:{port}"), head.status, 403);
        let text = answer(&head, s).await;
        c.ok("one sentence naming the key", text.contains("connect_ports"), &text);
    }
    c.eq("connections opened by refused CONNECTs", echo.accepted(), 0);
    let (head, s) = connect_tunnel(p.addr, &format!("{BLIND_HOST}:443"), &[]).await;
    c.eq("CONNECT to the default port 443", head.status, 200);
    c.ok("the tunnel carries bytes", echoes(s).await, "no echo");

    let (p2, _dir2) = proxy(&echo, &fake, "connect_ports = [443, 8443]", &[]).await;
    let (head, s) = connect_tunnel(p2.addr, &format!("{BLIND_HOST}:8443"), &[]).await;
    c.eq("CONNECT to a configured port", head.status, 200);
    c.ok("the tunnel carries bytes", echoes(s).await, "no echo");
    c.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_to_an_internal_address_is_refused_unless_resolved_explicitly() {
    let echo = EchoServer::start().await;
    let fake = FakeVendor::start(FakeVendorOpts::with_example_key()).await;
    let mut c = Checks::new("CONNECT to internal addresses");
    let (p, _dir) = proxy(&echo, &fake, "", &[]).await;
    for target in ["localhost:443", "127.0.0.1:443", "169.254.169.254:443"] {
        let (head, s) = connect_tunnel(p.addr, target, &[]).await;
        c.eq(&format!("CONNECT {target}"), head.status, 403);
        let text = answer(&head, s).await;
        c.ok(
            &format!("CONNECT {target} says why"),
            text.contains("loopback") || text.contains("metadata"),
            &text,
        );
    }
    // An explicit resolve entry for the same name is the operator's choice: it works.
    let echo_url = format!("http://{}", echo.addr);
    let dir = tempfile::tempdir().expect("temporary directory");
    let db = dir.path().join("audit.db");
    let t = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"\"\n[audit]\npath = {}\n\
         [forward]\nallow_hosts = [\"localhost\"]\n[forward.resolve]\n\"localhost\" = {}\n",
        toml_str(&db.to_string_lossy()),
        toml_str(&echo_url)
    );
    let p3 = InProcessProxy::spawn(parse_config(&t, "resolve.toml"), db, None, false).await;
    let (head, s) = connect_tunnel(p3.addr, "localhost:443", &[]).await;
    c.eq("CONNECT localhost:443 with an explicit resolve entry", head.status, 200);
    c.ok("the tunnel carries bytes", echoes(s).await, "no echo");
    c.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_form_to_an_internal_address_is_refused_unless_resolved_explicitly() {
    let echo = EchoServer::start().await;
    let fake = FakeVendor::start(FakeVendorOpts::with_example_key()).await;
    let mut c = Checks::new("absolute-form to internal addresses");
    let (p, _dir) = proxy(&echo, &fake, "", &[]).await;
    let port = fake.addr().port();
    for target in [
        format!("http://localhost:{port}/anything"),
        format!("http://127.0.0.1:{port}/anything"),
        "http://169.254.169.254/latest/meta-data/".to_string(),
    ] {
        let req = Request::builder()
            .method("GET")
            .uri(&target)
            .body(Bytes::new())
            .unwrap();
        let r = send(p.addr, req).await;
        c.eq(&format!("GET {target}"), r.status, 403);
    }
    c.eq("requests the fake vendor received", fake.received().len(), 0);

    // With an explicit entry, the same name is forwarded.
    let (p2, _dir2) = proxy(&echo, &fake, "", &["localhost"]).await;
    let req = Request::builder()
        .method("GET")
        .uri("http://localhost/anything")
        .body(Bytes::new())
        .unwrap();
    let r = send(p2.addr, req).await;
    c.ok("an explicit resolve entry is forwarded", r.status != 403, body_text(&r));
    c.ok(
        "the fake vendor received it",
        !fake.received().is_empty(),
        "nothing received",
    );
    c.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absolute_form_target_with_another_scheme_than_http_is_refused() {
    let echo = EchoServer::start().await;
    let fake = FakeVendor::start(FakeVendorOpts::with_example_key()).await;
    let mut c = Checks::new("absolute-form schemes");
    let (p, _dir) = proxy(&echo, &fake, "", &[]).await;
    for target in [
        format!("https://{SLACK_HOST}/api/admin.conversations.getCustomRetention"),
        format!("ftp://{SLACK_HOST}/api/admin.conversations.getCustomRetention"),
    ] {
        let req = Request::builder()
            .method("POST")
            .uri(&target)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Bytes::from_static(b"channel_id=C0123"))
            .unwrap();
        let r = send(p.addr, req).await;
        c.eq(&format!("POST {target}"), r.status, 400);
        c.ok("one sentence", body_text(&r).contains("http://"), body_text(&r));
    }
    c.eq("requests the fake vendor received", fake.received().len(), 0);
    c.finish();
}
