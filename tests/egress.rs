//! The egress gateway (SPEC §2.2): `CONNECT` to a vendor host is TLS-intercepted with a leaf
//! issued by the configured CA, the inner calls are audited and forwarded over verified TLS
//! with the client's signature intact; other allowed hosts get a blind tunnel; everything else
//! is refused. Also proxy authentication, the tunnel budget and idle timeout, and `ca init`.
//!
//! The vendor is the plain fake from `tests/support` behind a TLS front whose certificate is
//! issued by a test upstream CA (trusted by the proxy through `upstreams.ca_file`); vendor
//! hosts are resolved to that front with `[forward.resolve]`. Each test starts its own fake
//! vendor, front and in-process proxy with a fresh audit database.

mod support;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use retention_proxy::audit::query::Verification;
use serde_json::{Value, json};
use support::binary::BIN;
use support::fake_vendor::{EXAMPLE_ACCESS_KEY_ID, FakeVendor, FakeVendorOpts, Received, SimpleResponse};
use support::fixtures::{ACCOUNT, CHIME_HOST, IDENTITY_HOST, MESSAGING_HOST, SLACK_HOST, SLACK_SET, WAIT};
use support::in_process::{InProcessProxy, parse_config, read_audit, stored_bytes};
use support::tls::{
    self, EchoServer, Head, Http1, TestCa, TlsFront, basic_auth, basic_auth_value, connect_tunnel, read_to_close,
    tls_handshake,
};
use support::{body_text, contains_bytes, sigv4, toml_str};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
/// An allowed host that is not a vendor host: blind tunnel, resolved to the echo server.
const BLIND_HOST: &str = "blind.test";
/// A private endpoint name listed in `forward.intercept_hosts`, resolved to the TLS front.
const PRIVATE_HOST: &str = "chime-vpce.corp.example";
/// Resolved (to the canary) but not in `allow_hosts`.
const CANARY_HOST: &str = "canary.test";
const SLACK_TOKEN: &str = "xoxp-4444444444-4444444444-4444444444-egressTokenegressTokenegress01";
/// A user of `forward.users`.
const PROXY_USER: &str = "alice";
const PASSWORD: &str = "corr3ct horse:battery";

/// One Argon2 hash for the whole file (hashing is deliberately slow).
fn alice_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| retention_proxy::http::proxy_auth::hash_password(PASSWORD).expect("hash the password"))
}

// ---------------------------------------------------------------------------------------------
// Environment: fake vendor behind TLS, echo and canary servers, in-process proxy
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct EgressOpts {
    /// Configure `forward.ca_cert`/`ca_key`.
    intercept: bool,
    /// Configure `upstreams.ca_file` with the test upstream CA.
    trust_upstream: bool,
    max_tunnels: Option<usize>,
    tunnel_idle_timeout: Option<&'static str>,
    tls_handshake_timeout: Option<&'static str>,
    users: bool,
}

impl Default for EgressOpts {
    fn default() -> Self {
        EgressOpts {
            intercept: true,
            trust_upstream: true,
            max_tunnels: None,
            tunnel_idle_timeout: None,
            tls_handshake_timeout: None,
            users: false,
        }
    }
}

struct EgressEnv {
    _dir: tempfile::TempDir,
    fake: FakeVendor,
    front: TlsFront,
    echo: EchoServer,
    canary: EchoServer,
    /// The interception CA certificate (PEM), what clients are told to trust.
    intercept_ca_pem: String,
    /// The CA of the vendor's (the TLS front's) certificate.
    upstream_ca: TestCa,
    proxy: InProcessProxy,
}

impl EgressEnv {
    async fn start(opts: EgressOpts) -> EgressEnv {
        let dir = tempfile::tempdir().expect("temporary directory");
        let fake = FakeVendor::start(FakeVendorOpts::with_example_key()).await;
        let upstream_ca = TestCa::new("egress test upstream CA");
        let front_cfg = upstream_ca.server_config(&["127.0.0.1", "localhost", CHIME_HOST, SLACK_HOST, PRIVATE_HOST]);
        let front = TlsFront::start(front_cfg, fake.addr()).await;
        let echo = EchoServer::start().await;
        let canary = EchoServer::start().await;
        let ca_dir = dir.path().join("ca");
        let (ca_cert, ca_key) = retention_proxy::tunnel::ca::init_ca(&ca_dir).expect("create the interception CA");
        let intercept_ca_pem = std::fs::read_to_string(&ca_cert).expect("read ca.pem");
        let upstream_ca_file = dir.path().join("upstream-ca.pem");
        std::fs::write(&upstream_ca_file, &upstream_ca.cert_pem).expect("write the upstream CA");

        let db = dir.path().join("audit.db");
        let front_url = toml_str(&front.url());
        let mut t = String::new();
        t.push_str("[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"\"\n\n");
        let _ = writeln!(
            t,
            "[audit]\npath = {}\nproxy_instance = \"egress-test\"\n",
            toml_str(&db.to_string_lossy())
        );
        t.push_str("[upstreams]\n");
        for key in ["chime", "chime_messaging", "chime_identity", "slack"] {
            let _ = writeln!(t, "{key} = {front_url}");
        }
        t.push_str("connect_timeout = \"2s\"\nrequest_timeout = \"10s\"\n");
        if opts.trust_upstream {
            let _ = writeln!(t, "ca_file = {}", toml_str(&upstream_ca_file.to_string_lossy()));
        }
        let _ = writeln!(
            t,
            "\n[forward]\nallow_hosts = [\"*.amazonaws.com\", \"slack.com\", {}, {}]\nintercept_hosts = [{}]",
            toml_str(BLIND_HOST),
            toml_str(PRIVATE_HOST),
            toml_str(PRIVATE_HOST)
        );
        if opts.intercept {
            let _ = writeln!(
                t,
                "ca_cert = {}\nca_key = {}",
                toml_str(&ca_cert.to_string_lossy()),
                toml_str(&ca_key.to_string_lossy())
            );
        }
        if let Some(n) = opts.max_tunnels {
            let _ = writeln!(t, "max_tunnels = {n}");
        }
        if let Some(d) = opts.tunnel_idle_timeout {
            let _ = writeln!(t, "tunnel_idle_timeout = {}", toml_str(d));
        }
        if let Some(d) = opts.tls_handshake_timeout {
            let _ = writeln!(t, "tls_handshake_timeout = {}", toml_str(d));
        }
        if opts.users {
            let _ = writeln!(
                t,
                "\n[forward.users]\n{} = {}",
                toml_str(PROXY_USER),
                toml_str(alice_hash())
            );
        }
        t.push_str("\n[forward.resolve]\n");
        for host in [CHIME_HOST, MESSAGING_HOST, IDENTITY_HOST, SLACK_HOST, PRIVATE_HOST] {
            let _ = writeln!(t, "{} = {front_url}", toml_str(host));
        }
        let _ = writeln!(
            t,
            "{} = {}",
            toml_str(BLIND_HOST),
            toml_str(&format!("http://{}", echo.addr))
        );
        let _ = writeln!(
            t,
            "{} = {}",
            toml_str(CANARY_HOST),
            toml_str(&format!("http://{}", canary.addr))
        );

        let cfg = parse_config(&t, "egress-test.toml");
        let proxy = InProcessProxy::spawn(cfg, db, None, false).await;
        EgressEnv {
            _dir: dir,
            fake,
            front,
            echo,
            canary,
            intercept_ca_pem,
            upstream_ca,
            proxy,
        }
    }

    /// Client TLS trusting only the interception CA.
    fn trusting_client(&self) -> std::sync::Arc<rustls::ClientConfig> {
        tls::client_config(&[&self.intercept_ca_pem])
    }

    /// CONNECT `host:443`, expect 200, handshake TLS inside with SNI `host`, speak HTTP/1.1.
    async fn intercepted(&self, host: &str, extra: &[String]) -> (Http1, Option<rustls::ProtocolVersion>) {
        let (head, stream) = connect_tunnel(self.proxy.addr, &format!("{host}:443"), extra).await;
        assert_eq!(head.status, 200, "CONNECT {host}:443: {}", head.text);
        let tls = tls_handshake(stream, host, self.trusting_client())
            .await
            .unwrap_or_else(|e| panic!("TLS inside the tunnel to {host} (trusting the interception CA): {e}"));
        let version = tls.get_ref().1.protocol_version();
        let http = Http1::over(tls).await.expect("HTTP/1.1 inside the tunnel");
        (http, version)
    }

    /// Every merged event committed so far.
    fn events(&self) -> Vec<Value> {
        read_events(&self.proxy.db_path).0
    }

    /// The raw bytes of the database files.
    fn stored_bytes(&self) -> Vec<u8> {
        stored_bytes(&self.proxy.db_path)
    }

    /// Stops the proxy (drains, commits).
    async fn stop(&mut self) {
        self.proxy.shutdown().await;
    }
}

/// The events and the chain check; none (and intact) before the database exists.
fn read_events(db: &Path) -> (Vec<Value>, Verification) {
    if !db.exists() {
        return (Vec::new(), Verification::Intact { records: 0 });
    }
    let log = read_audit(db);
    (log.events, log.verification)
}

// ---------------------------------------------------------------------------------------------
// Requests as clients send them inside a tunnel (origin-form, the vendor's Host)
// ---------------------------------------------------------------------------------------------

fn retention_body(room: u32, conversation: u32) -> String {
    json!({"RetentionSettings": {
        "RoomRetentionSettings": {"RetentionDays": room},
        "ConversationRetentionSettings": {"RetentionDays": conversation}
    }})
    .to_string()
}

/// A botocore-style SigV4 call signed for `host` with the example key; `target` is origin-form
/// unless `absolute` is set.
fn signed(method: &str, host: &str, path: &str, body: &str, absolute: bool) -> Request<Bytes> {
    let date = sigv4::amz_date_now();
    let params = support::fake_vendor::example_params(&date);
    let headers: &[(&str, &str)] = if body.is_empty() {
        &[]
    } else {
        &[("content-type", "application/json")]
    };
    let mut req = sigv4::signed_request(method, host, path, headers, Bytes::from(body.to_string()), &params)
        .unwrap_or_else(|e| panic!("sign {method} {path}: {e}"));
    req.headers_mut()
        .insert("user-agent", "Boto3/1.44.5 egress-test".parse().unwrap());
    if absolute {
        *req.uri_mut() = format!("http://{host}{path}").parse().expect("absolute-form target");
    }
    req
}

fn retention_path() -> String {
    format!("/accounts/{ACCOUNT}/retention-settings")
}

fn slack_set(channel: &str, days: u32) -> Request<Bytes> {
    Request::builder()
        .method("POST")
        .uri(SLACK_SET)
        .header("host", SLACK_HOST)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("authorization", format!("Bearer {SLACK_TOKEN}"))
        .body(Bytes::from(format!("channel_id={channel}&duration_days={days}")))
        .unwrap()
}

async fn send_plain(addr: SocketAddr, req: Request<Bytes>) -> SimpleResponse {
    tokio::time::timeout(WAIT, support::fake_vendor::send(addr, req))
        .await
        .expect("the proxy answered in time")
        .expect("request to the proxy")
}

fn check_tls_details(ev: &Value, host: &str) {
    let t = &ev["tlsDetails"];
    let v = t["tlsVersion"].as_str().unwrap_or("");
    assert!(v == "TLSv1.3" || v == "TLSv1.2", "tlsDetails.tlsVersion: {t}");
    assert!(
        t["cipherSuite"]
            .as_str()
            .is_some_and(|s| !s.is_empty() && s != "unknown"),
        "tlsDetails.cipherSuite: {t}"
    );
    assert_eq!(t["clientProvidedHostHeader"], host, "tlsDetails: {t}");
}

// ---------------------------------------------------------------------------------------------
// Interception
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intercepted_chime_calls_are_audited_and_reach_the_vendor_with_the_client_signature() {
    let mut env = EgressEnv::start(EgressOpts::default()).await;
    let (mut http, version) = env.intercepted(CHIME_HOST, &[]).await;

    let put = signed("PUT", CHIME_HOST, &retention_path(), &retention_body(365, 180), false);
    let client_sig = put.headers()["authorization"].to_str().unwrap().to_string();
    let resp = http.send(put).await.expect("PutRetentionSettings inside the tunnel");
    assert_eq!(resp.status, 200, "{}", body_text(&resp));
    assert_eq!(
        resp.json()["RetentionSettings"]["RoomRetentionSettings"]["RetentionDays"],
        365
    );
    // A second call on the same tunnel (keep-alive): a read.
    let get = signed("GET", CHIME_HOST, &retention_path(), "", false);
    let resp2 = http.send(get).await.expect("GetRetentionSettings inside the tunnel");
    assert_eq!(resp2.status, 200, "{}", body_text(&resp2));

    // The vendor got both, over TLS from the proxy, with the client's own valid signature.
    let got: Vec<Received> = env.fake.received();
    assert_eq!(got.len(), 2, "{got:#?}");
    for r in &got {
        assert!(r.sig_ok(), "signature the vendor verified: {:?}", r.sig);
        assert_eq!(r.header("host"), Some(CHIME_HOST));
        assert!(r.header("proxy-authorization").is_none());
    }
    assert_eq!(
        got[0].header("authorization"),
        Some(client_sig.as_str()),
        "signature untouched"
    );
    assert_eq!(
        got[0].body_json(),
        serde_json::from_str::<Value>(&retention_body(365, 180)).unwrap()
    );
    assert!(env.front.handshakes() >= 1, "the upstream leg is TLS");

    drop(http);
    env.stop().await;
    let (events, verification) = read_events(&env.proxy.db_path);
    assert!(matches!(verification, Verification::Intact { .. }), "{verification:?}");
    assert_eq!(events.len(), 2, "{events:#?}");
    let ev = &events[0];
    assert_eq!(ev["eventName"], "PutRetentionSettings", "{ev:#}");
    assert_eq!(ev["eventSource"], "chime.amazonaws.com");
    assert_eq!(ev["outcome"], "forwarded", "{ev:#}");
    assert_eq!(ev["httpStatus"], 200);
    assert_eq!(ev["proxyMode"], "forward");
    assert_eq!(ev["awsRegion"], "us-east-1");
    assert_eq!(ev["userIdentity"]["accessKeyId"], EXAMPLE_ACCESS_KEY_ID);
    assert_eq!(
        ev["userIdentity"]["verified"], true,
        "the vendor accepted the signature"
    );
    assert_eq!(ev["requestID"].as_str(), got[0].request_id.as_deref());
    check_tls_details(ev, CHIME_HOST);
    let version = match version {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
        other => panic!("client negotiated {other:?}"),
    };
    assert_eq!(
        ev["tlsDetails"]["tlsVersion"], version,
        "the version the client negotiated"
    );
    let changes: Vec<(Value, Value)> = ev["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["target"].clone(), c["new"].clone()))
        .collect();
    assert_eq!(
        changes,
        vec![
            (json!("chime.room_retention"), json!(365)),
            (json!("chime.conversation_retention"), json!(180))
        ]
    );
    let read = &events[1];
    assert_eq!(read["eventName"], "GetRetentionSettings");
    assert_eq!(read["readOnly"], true);
    assert_eq!(read["outcome"], "forwarded");
    check_tls_details(read, CHIME_HOST);
    let sig = client_sig.split("Signature=").nth(1).unwrap();
    assert!(
        !contains_bytes(&env.stored_bytes(), sig.as_bytes()),
        "client signature at rest"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intercepted_slack_call_is_audited_and_other_calls_pass_through() {
    let mut env = EgressEnv::start(EgressOpts::default()).await;
    let (mut http, _) = env.intercepted(SLACK_HOST, &[]).await;
    let resp = http
        .send(slack_set("C0EGRESS1", 400))
        .await
        .expect("setCustomRetention");
    assert_eq!(resp.status, 200, "{}", body_text(&resp));
    assert_eq!(resp.json()["ok"], true, "{}", body_text(&resp));
    // Not a retention call: streamed through the same tunnel, not audited.
    let other = Request::builder()
        .method("POST")
        .uri("/api/api.test")
        .header("host", SLACK_HOST)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Bytes::from_static(b"foo=bar"))
        .unwrap();
    let resp = http.send(other).await.expect("api.test");
    assert_eq!(resp.status, 200, "{}", body_text(&resp));

    let got = env.fake.received();
    assert_eq!(got.len(), 2, "{got:#?}");
    assert_eq!(got[0].path_and_query, SLACK_SET);
    assert_eq!(
        got[0].slack_token.as_deref(),
        Some(SLACK_TOKEN),
        "token passes unchanged"
    );
    assert_eq!(got[0].body_str(), "channel_id=C0EGRESS1&duration_days=400");
    assert_eq!(got[1].path_and_query, "/api/api.test");

    drop(http);
    env.stop().await;
    let events = env.events();
    assert_eq!(events.len(), 1, "only the retention call is audited: {events:#?}");
    let ev = &events[0];
    assert_eq!(ev["eventName"], "admin.conversations.setCustomRetention");
    assert_eq!(ev["eventSource"], "slack.com");
    assert_eq!(ev["outcome"], "forwarded");
    assert_eq!(ev["proxyMode"], "forward");
    assert_eq!(ev["changes"][0]["resource"], "C0EGRESS1");
    assert_eq!(ev["changes"][0]["new"], 400);
    assert!(
        ev["userIdentity"]["tokenFingerprint"]
            .as_str()
            .is_some_and(|f| f.starts_with("hmac-sha256:")),
        "{ev:#}"
    );
    check_tls_details(ev, SLACK_HOST);
    assert!(
        !contains_bytes(&env.stored_bytes(), SLACK_TOKEN.as_bytes()),
        "Slack token at rest"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_that_does_not_trust_the_interception_ca_fails_and_nothing_is_forwarded() {
    let mut env = EgressEnv::start(EgressOpts::default()).await;
    // Trusts the vendor's real CA, not the proxy's: the interception must be detected.
    let (head, stream) = connect_tunnel(env.proxy.addr, &format!("{CHIME_HOST}:443"), &[]).await;
    assert_eq!(head.status, 200, "{}", head.text);
    let cfg = tls::client_config(&[&env.upstream_ca.cert_pem]);
    let res = tls_handshake(stream, CHIME_HOST, cfg).await;
    let err = match res {
        Ok(_) => panic!("a client not trusting the interception CA completed the handshake"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.to_ascii_lowercase().contains("certificate") || err.to_ascii_lowercase().contains("issuer"),
        "handshake failure names the certificate: {err}"
    );
    // The leaf is for the host asked for: a client trusting the CA but asking another name fails.
    let (head, stream) = connect_tunnel(env.proxy.addr, &format!("{CHIME_HOST}:443"), &[]).await;
    assert_eq!(head.status, 200);
    let res = tls_handshake(stream, SLACK_HOST, env.trusting_client()).await;
    assert!(
        res.is_err(),
        "the leaf for {CHIME_HOST} must not be valid for {SLACK_HOST}"
    );

    env.stop().await;
    assert_eq!(env.front.accepted(), 0, "the proxy connected upstream");
    assert_eq!(env.fake.count(), 0, "the vendor received something");
    assert!(env.events().is_empty(), "{:#?}", env.events());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_certificate_is_verified() {
    // No upstreams.ca_file: the vendor's certificate is not trusted, so nothing may be sent.
    let mut env = EgressEnv::start(EgressOpts {
        trust_upstream: false,
        ..EgressOpts::default()
    })
    .await;
    let (mut http, _) = env.intercepted(CHIME_HOST, &[]).await;
    let resp = http
        .send(signed(
            "PUT",
            CHIME_HOST,
            &retention_path(),
            &retention_body(400, 400),
            false,
        ))
        .await
        .expect("an answer");
    assert_eq!(resp.status, 502, "{}", body_text(&resp));
    drop(http);
    env.stop().await;
    assert_eq!(
        env.front.handshakes(),
        0,
        "a TLS session with an untrusted upstream completed"
    );
    assert_eq!(env.fake.count(), 0);
    let events = env.events();
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0]["outcome"], "upstream_error", "{:#}", events[0]);
    assert_eq!(events[0]["httpStatus"], 502);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intercept_hosts_are_intercepted_and_their_calls_audited() {
    let mut env = EgressEnv::start(EgressOpts::default()).await;
    let (mut http, _) = env.intercepted(PRIVATE_HOST, &[]).await;
    let resp = http
        .send(signed(
            "PUT",
            PRIVATE_HOST,
            &retention_path(),
            &retention_body(400, 400),
            false,
        ))
        .await
        .expect("PutRetentionSettings to the private endpoint");
    assert_eq!(resp.status, 200, "{}", body_text(&resp));
    let got = env.fake.received();
    assert_eq!(got.len(), 1);
    assert!(got[0].sig_ok(), "{:?}", got[0].sig);
    assert_eq!(got[0].header("host"), Some(PRIVATE_HOST));
    drop(http);
    env.stop().await;
    let events = env.events();
    assert_eq!(
        events.len(),
        1,
        "a retention change through an intercepted `forward.intercept_hosts` tunnel reached the vendor \
         without an audit event: {events:#?}"
    );
    assert_eq!(events[0]["eventName"], "PutRetentionSettings");
    assert_eq!(events[0]["outcome"], "forwarded");
    check_tls_details(&events[0], PRIVATE_HOST);
}

// ---------------------------------------------------------------------------------------------
// Blind tunnels and refusals
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blind_tunnel_to_an_allowed_non_vendor_host_round_trips_bytes() {
    let mut env = EgressEnv::start(EgressOpts::default()).await;
    let (head, mut stream) = connect_tunnel(env.proxy.addr, &format!("{BLIND_HOST}:443"), &[]).await;
    assert_eq!(head.status, 200, "{}", head.text);
    // Arbitrary bytes, including what looks like a TLS record and an HTTP request.
    let payload: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
    stream.write_all(&payload).await.unwrap();
    let mut back = vec![0u8; payload.len()];
    tokio::time::timeout(WAIT, stream.read_exact(&mut back))
        .await
        .expect("echo in time")
        .expect("read the echo");
    assert!(back == payload, "bytes changed in the tunnel");
    stream.shutdown().await.unwrap();
    let rest = read_to_close(&mut stream, WAIT).await;
    assert!(rest.is_empty(), "nothing after the echo: {rest:?}");
    assert_eq!(env.echo.accepted(), 1);
    env.stop().await;
    assert!(env.events().is_empty(), "a blind tunnel is not audited");
    assert_eq!(env.fake.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_to_a_host_outside_allow_hosts_is_403_and_opens_nothing() {
    let mut env = EgressEnv::start(EgressOpts::default()).await;
    let canary_port = env.canary.addr.port();
    for target in [
        format!("{CANARY_HOST}:443"),
        format!("127.0.0.1:{canary_port}"),
        format!("localhost:{canary_port}"),
        "evil.example.com:443".to_string(),
        "amazonaws.com:443".to_string(),
        "slack.com.evil.example:443".to_string(),
    ] {
        let (head, mut stream) = connect_tunnel(env.proxy.addr, &target, &[]).await;
        assert_eq!(head.status, 403, "CONNECT {target}: {}", head.text);
        // Whatever the client sends next never reaches anything.
        let _ = stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    }
    env.stop().await;
    assert_eq!(env.canary.accepted(), 0, "a refused CONNECT opened a connection");
    assert!(env.events().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_to_a_vendor_host_without_a_ca_is_403_never_a_blind_tunnel() {
    let mut env = EgressEnv::start(EgressOpts {
        intercept: false,
        ..EgressOpts::default()
    })
    .await;
    for host in [
        CHIME_HOST,
        MESSAGING_HOST,
        IDENTITY_HOST,
        SLACK_HOST,
        "CHIME.us-east-1.amazonaws.com.",
    ] {
        let (head, mut stream) = connect_tunnel(env.proxy.addr, &format!("{host}:443"), &[]).await;
        assert_eq!(head.status, 403, "CONNECT {host}: {}", head.text);
        let body = String::from_utf8_lossy(&read_to_close(&mut stream, Duration::from_secs(2)).await).into_owned();
        assert!(
            body.contains("ca_cert"),
            "the refusal says how to enable interception: {body}"
        );
    }
    // A non-vendor allowed host still gets its blind tunnel.
    let (head, mut stream) = connect_tunnel(env.proxy.addr, &format!("{BLIND_HOST}:443"), &[]).await;
    assert_eq!(head.status, 200, "{}", head.text);
    stream.write_all(b"ping").await.unwrap();
    let mut b = [0u8; 4];
    tokio::time::timeout(WAIT, stream.read_exact(&mut b))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&b, b"ping");
    drop(stream);
    env.stop().await;
    assert_eq!(env.front.accepted(), 0, "a vendor host was tunnelled");
    assert_eq!(env.fake.count(), 0);
}

// ---------------------------------------------------------------------------------------------
// Proxy authentication
// ---------------------------------------------------------------------------------------------

fn assert_407(head: &Head, what: &str) {
    assert_eq!(head.status, 407, "{what}: {}", head.text);
    let challenge = head.header("proxy-authenticate").unwrap_or_default();
    assert!(
        challenge.to_ascii_lowercase().starts_with("basic"),
        "{what}: Proxy-Authenticate {challenge:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_needs_proxy_authentication_and_records_the_proxy_user() {
    let mut env = EgressEnv::start(EgressOpts {
        users: true,
        ..EgressOpts::default()
    })
    .await;
    let target = format!("{CHIME_HOST}:443");
    let (head, _) = connect_tunnel(env.proxy.addr, &target, &[]).await;
    assert_407(&head, "no Proxy-Authorization");
    let (head, _) = connect_tunnel(env.proxy.addr, &target, &[basic_auth(PROXY_USER, "wrong")]).await;
    assert_407(&head, "wrong password");
    let (head, _) = connect_tunnel(env.proxy.addr, &target, &[basic_auth("mallory", PASSWORD)]).await;
    assert_407(&head, "unknown user");
    let (head, _) = connect_tunnel(
        env.proxy.addr,
        &target,
        &["Proxy-Authorization: Bearer abc".to_string()],
    )
    .await;
    assert_407(&head, "not Basic");
    // A refused CONNECT to a blind host opens nothing either.
    let (head, _) = connect_tunnel(env.proxy.addr, &format!("{BLIND_HOST}:443"), &[]).await;
    assert_407(&head, "blind host without credentials");
    assert_eq!(env.echo.accepted(), 0);

    let (mut http, _) = env.intercepted(CHIME_HOST, &[basic_auth(PROXY_USER, PASSWORD)]).await;
    let resp = http
        .send(signed(
            "PUT",
            CHIME_HOST,
            &retention_path(),
            &retention_body(400, 400),
            false,
        ))
        .await
        .unwrap();
    assert_eq!(resp.status, 200, "{}", body_text(&resp));
    drop(http);
    env.stop().await;
    assert_eq!(env.fake.count(), 1);
    let events = env.events();
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0]["userIdentity"]["proxyUser"], PROXY_USER, "{:#}", events[0]);
    assert_eq!(events[0]["outcome"], "forwarded");
    check_tls_details(&events[0], CHIME_HOST);
    assert!(
        !contains_bytes(&env.stored_bytes(), PASSWORD.as_bytes()),
        "password at rest"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_form_requests_need_proxy_authentication() {
    let mut env = EgressEnv::start(EgressOpts {
        users: true,
        ..EgressOpts::default()
    })
    .await;
    let put = || signed("PUT", CHIME_HOST, &retention_path(), &retention_body(500, 500), true);

    let resp = send_plain(env.proxy.addr, put()).await;
    assert_eq!(resp.status, 407, "{}", body_text(&resp));
    assert!(
        resp.header("proxy-authenticate")
            .is_some_and(|v| v.to_ascii_lowercase().starts_with("basic")),
        "{:?}",
        resp.headers
    );
    let mut wrong = put();
    wrong
        .headers_mut()
        .insert("proxy-authorization", basic_auth_value(PROXY_USER, "nope"));
    let resp = send_plain(env.proxy.addr, wrong).await;
    assert_eq!(resp.status, 407, "{}", body_text(&resp));
    assert_eq!(env.fake.count(), 0, "an unauthenticated request reached the vendor");
    assert!(env.events().is_empty(), "{:#?}", env.events());

    let mut right = put();
    right
        .headers_mut()
        .insert("proxy-authorization", basic_auth_value(PROXY_USER, PASSWORD));
    let resp = send_plain(env.proxy.addr, right).await;
    assert_eq!(resp.status, 200, "{}", body_text(&resp));
    let got = env.fake.received();
    assert_eq!(got.len(), 1);
    assert!(got[0].sig_ok(), "{:?}", got[0].sig);
    assert!(
        got[0].header("proxy-authorization").is_none(),
        "Proxy-Authorization forwarded to the vendor"
    );
    env.stop().await;
    let events = env.events();
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0]["userIdentity"]["proxyUser"], PROXY_USER);
    assert_eq!(events[0]["proxyMode"], "forward");
    assert!(events[0].get("tlsDetails").is_none_or(Value::is_null), "not a tunnel");
    assert!(
        !contains_bytes(&env.stored_bytes(), PASSWORD.as_bytes()),
        "password at rest"
    );
}

// ---------------------------------------------------------------------------------------------
// Tunnel budget and timeouts
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_tunnels_refuses_a_second_concurrent_tunnel_with_503() {
    let mut env = EgressEnv::start(EgressOpts {
        max_tunnels: Some(1),
        ..EgressOpts::default()
    })
    .await;
    let (head, mut first) = connect_tunnel(env.proxy.addr, &format!("{BLIND_HOST}:443"), &[]).await;
    assert_eq!(head.status, 200, "{}", head.text);
    // Make sure the first tunnel is established end to end.
    first.write_all(b"one").await.unwrap();
    let mut b = [0u8; 3];
    tokio::time::timeout(WAIT, first.read_exact(&mut b))
        .await
        .unwrap()
        .unwrap();

    let (head, _) = connect_tunnel(env.proxy.addr, &format!("{BLIND_HOST}:443"), &[]).await;
    assert_eq!(head.status, 503, "second blind tunnel: {}", head.text);
    let (head, _) = connect_tunnel(env.proxy.addr, &format!("{CHIME_HOST}:443"), &[]).await;
    assert_eq!(head.status, 503, "intercepted tunnel counts too: {}", head.text);
    assert_eq!(env.echo.accepted(), 1);

    // Closing the first frees its slot (bounded polling: the proxy notices the close).
    first.shutdown().await.unwrap();
    let _ = read_to_close(&mut first, WAIT).await;
    drop(first);
    let deadline = Instant::now() + WAIT;
    loop {
        let (head, mut s) = connect_tunnel(env.proxy.addr, &format!("{BLIND_HOST}:443"), &[]).await;
        if head.status == 200 {
            s.write_all(b"two").await.unwrap();
            tokio::time::timeout(WAIT, s.read_exact(&mut b)).await.unwrap().unwrap();
            assert_eq!(&b, b"two");
            break;
        }
        assert_eq!(head.status, 503, "{}", head.text);
        assert!(Instant::now() < deadline, "the slot of a closed tunnel was never freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    env.stop().await;
}

/// Reads until EOF; returns how long it took, or `None` past `limit`.
async fn time_to_eof<S: tokio::io::AsyncRead + Unpin>(s: &mut S, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    let res = tokio::time::timeout(limit, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    res.ok().map(|_| started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_blind_tunnel_is_closed_after_tunnel_idle_timeout() {
    let mut env = EgressEnv::start(EgressOpts {
        tunnel_idle_timeout: Some("300ms"),
        ..EgressOpts::default()
    })
    .await;
    let (head, mut s) = connect_tunnel(env.proxy.addr, &format!("{BLIND_HOST}:443"), &[]).await;
    assert_eq!(head.status, 200, "{}", head.text);
    // Traffic every 100 ms keeps it open well past the idle timeout.
    let active_since = Instant::now();
    let mut b = [0u8; 4];
    for i in 0..8u8 {
        s.write_all(&[b'k', b'a', b'-', b'0' + i]).await.unwrap();
        tokio::time::timeout(WAIT, s.read_exact(&mut b))
            .await
            .expect("echo in time")
            .unwrap_or_else(|e| panic!("tunnel closed while active after {:?}: {e}", active_since.elapsed()));
        assert_eq!(b, [b'k', b'a', b'-', b'0' + i]);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Then silence: the proxy closes it.
    let took = time_to_eof(&mut s, Duration::from_secs(5))
        .await
        .expect("an idle blind tunnel was still open 5 s after a 300ms idle timeout");
    assert!(took >= Duration::from_millis(150), "closed after only {took:?}");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_intercepted_tunnel_is_closed_after_tunnel_idle_timeout() {
    let mut env = EgressEnv::start(EgressOpts {
        tunnel_idle_timeout: Some("300ms"),
        max_tunnels: Some(1),
        ..EgressOpts::default()
    })
    .await;
    let (head, stream) = connect_tunnel(env.proxy.addr, &format!("{CHIME_HOST}:443"), &[]).await;
    assert_eq!(head.status, 200, "{}", head.text);
    let mut tls = tls_handshake(stream, CHIME_HOST, env.trusting_client()).await.unwrap();
    let took = time_to_eof(&mut tls, Duration::from_secs(5)).await;
    // The idle tunnel also holds the only slot of max_tunnels = 1.
    let (head, _) = connect_tunnel(env.proxy.addr, &format!("{BLIND_HOST}:443"), &[]).await;
    env.stop().await;
    assert!(
        took.is_some(),
        "an idle intercepted tunnel was still open 5 s after a 300ms tunnel_idle_timeout \
         (and a new CONNECT got {} while it held the only tunnel slot)",
        head.status
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnel_without_a_client_handshake_is_closed_after_tls_handshake_timeout() {
    let mut env = EgressEnv::start(EgressOpts {
        tls_handshake_timeout: Some("300ms"),
        max_tunnels: Some(1),
        ..EgressOpts::default()
    })
    .await;
    let (head, mut s) = connect_tunnel(env.proxy.addr, &format!("{CHIME_HOST}:443"), &[]).await;
    assert_eq!(head.status, 200, "{}", head.text);
    let took = time_to_eof(&mut s, Duration::from_secs(5))
        .await
        .expect("a tunnel with no TLS handshake was still open 5 s after a 300ms tls_handshake_timeout");
    assert!(took >= Duration::from_millis(150), "closed after only {took:?}");
    // Its slot is free again.
    let deadline = Instant::now() + WAIT;
    loop {
        let (head, _) = connect_tunnel(env.proxy.addr, &format!("{BLIND_HOST}:443"), &[]).await;
        if head.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "slot not freed: {}", head.text);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    env.stop().await;
    assert_eq!(env.front.accepted(), 0);
}

// ---------------------------------------------------------------------------------------------
// `ca init`
// ---------------------------------------------------------------------------------------------

#[test]
fn ca_init_creates_a_usable_ca_once() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("new").join("ca");
    let run = || {
        std::process::Command::new(BIN)
            .args(["ca", "init", "--out"])
            .arg(&out)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run ca init")
    };
    let o = run();
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&o.stderr));
    let (cert, key) = (out.join("ca.pem"), out.join("ca.key"));
    assert!(cert.is_file() && key.is_file(), "{stdout}");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "ca.key mode {mode:o}");
    assert!(
        stdout.contains("AWS_CA_BUNDLE"),
        "instructions name AWS_CA_BUNDLE: {stdout}"
    );
    assert!(
        stdout.contains(&cert.display().to_string()),
        "instructions name ca.pem: {stdout}"
    );
    assert!(stdout.contains("ca_cert") && stdout.contains("ca_key"), "{stdout}");

    // It is a CA clients can trust, and the proxy can issue leaves with it.
    let pem = std::fs::read_to_string(&cert).unwrap();
    let _ = tls::client_config(&[&pem]);
    let i = retention_proxy::tunnel::ca::Interceptor::load(&cert, &key).expect("load the CA");
    i.server_config(CHIME_HOST).expect("issue a leaf");
    let before: BTreeMap<&str, Vec<u8>> = [
        ("pem", std::fs::read(&cert).unwrap()),
        ("key", std::fs::read(&key).unwrap()),
    ]
    .into_iter()
    .collect();

    // A second run refuses to overwrite, in one sentence, and changes nothing.
    let o = run();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success(), "a second ca init succeeded");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(err.lines().filter(|l| !l.trim().is_empty()).count(), 1, "{err}");
    assert!(err.contains("exists"), "{err}");
    let after: BTreeMap<&str, Vec<u8>> = [
        ("pem", std::fs::read(&cert).unwrap()),
        ("key", std::fs::read(&key).unwrap()),
    ]
    .into_iter()
    .collect();
    assert!(before == after, "an existing CA was overwritten");
}
