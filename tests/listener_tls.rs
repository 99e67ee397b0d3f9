//! `server.tls_cert` / `server.tls_key`: the proxy listener itself speaks TLS, and calls made
//! over it are recognised, audited and forwarded like any other.

mod support;

use std::time::Duration;

use base64::Engine;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use support::fake_vendor::{FakeVendor, FakeVendorOpts};
use support::in_process::{InProcessProxy, parse_config};
use support::tls::{TestCa, client_config, read_to_close, tls_handshake};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_over_a_tls_listener_are_audited_and_plain_http_is_not_served() {
    let vendor = FakeVendor::start(FakeVendorOpts::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("listener test CA");
    let (chain, key): (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) = ca.leaf(&["localhost", "127.0.0.1"]);
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(
        &cert_path,
        chain.iter().map(|c| pem("CERTIFICATE", c)).collect::<String>(),
    )
    .unwrap();
    std::fs::write(&key_path, pem("PRIVATE KEY", key.secret_der())).unwrap();
    let db = dir.path().join("audit.db");
    let toml = format!(
        "[server]\nadmin_listen = \"\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n[audit]\npath = \"{}\"\n[upstreams]\nslack = \"{}\"\n",
        cert_path.display(),
        key_path.display(),
        db.display(),
        vendor.url()
    );
    let config = parse_config(&toml, "tls.toml");
    let proxy = InProcessProxy::spawn(config, db, None, false).await;
    let addr = proxy.addr;

    let body = "channel_id=C0123456789&duration_days=400";
    let request = format!(
        "POST /api/admin.conversations.setCustomRetention HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer xoxp-tls-listener\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut tls = tls_handshake(tcp, "localhost", client_config(&[&ca.cert_pem]))
        .await
        .expect("TLS handshake");
    tls.write_all(request.as_bytes()).await.unwrap();
    let resp = String::from_utf8_lossy(&read_to_close(&mut tls, Duration::from_secs(10)).await).into_owned();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("\"ok\":true"), "{resp}");
    assert_eq!(vendor.count(), 1, "the call reached the vendor once");

    // Plain HTTP on the TLS listener is not served: no HTTP response comes back.
    let mut plain = TcpStream::connect(addr).await.unwrap();
    plain.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), plain.read_to_end(&mut buf)).await;
    assert!(!String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 200"));
    assert_eq!(vendor.count(), 1, "nothing more reached the vendor");

    let events = proxy.stop().await.events;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["eventName"], "admin.conversations.setCustomRetention");
    assert_eq!(events[0]["outcome"], "forwarded");
    assert_eq!(events[0]["changes"][0]["new"], 400);
}
