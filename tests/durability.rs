//! Durability and evidence properties of the built binary (SPEC §3 rules, §8): no secrets at
//! rest, fail closed, kill -9 under load, tamper evidence, streaming with flat memory, and
//! draining on SIGTERM.

mod support;

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::binary::{self, BinaryProxy, BinaryProxyOpts};
use support::clients::slack_form;
use support::fake_vendor::{
    self, EXAMPLE_ACCESS_KEY_ID, EXAMPLE_SECRET_ACCESS_KEY, FakeVendor, FakeVendorOpts, Received, SimpleResponse,
};
use support::fixtures::{ACCOUNT, CHIME_HOST, PROXY_ACCESS_KEY_ID, PROXY_SECRET_ACCESS_KEY, SLACK_SET};
use support::sigv4::{self, SigningParams};
use tokio::net::TcpStream;

/// Deadline for anything a test waits on (the binary, under load).
const SLOW_WAIT: Duration = Duration::from_secs(15);

/// A client using temporary credentials (session token).
const SESSION_ACCESS_KEY_ID: &str = "ASIAEXAMPLECLIENT001";
const SESSION_SECRET_ACCESS_KEY: &str = "cl1ent/SessionSecretKeyEXAMPLE00000000001";

fn vendor_opts() -> FakeVendorOpts {
    FakeVendorOpts::with_example_key()
        .secret(PROXY_ACCESS_KEY_ID, PROXY_SECRET_ACCESS_KEY)
        .secret(SESSION_ACCESS_KEY_ID, SESSION_SECRET_ACCESS_KEY)
}

fn retention_body(days: u32) -> String {
    json!({"RetentionSettings": {
        "RoomRetentionSettings": {"RetentionDays": days},
        "ConversationRetentionSettings": {"RetentionDays": days}
    }})
    .to_string()
}

struct AwsClient<'a> {
    access_key_id: &'a str,
    secret: &'a str,
    session_token: Option<&'a str>,
}

const EXAMPLE_CLIENT: AwsClient<'static> = AwsClient {
    access_key_id: EXAMPLE_ACCESS_KEY_ID,
    secret: EXAMPLE_SECRET_ACCESS_KEY,
    session_token: None,
};

/// A SigV4-signed Chime `PutRetentionSettings`. Reverse mode: origin-form, the proxy's `Host`.
/// Forward mode: absolute-form `http://chime.us-east-1.amazonaws.com/…`, the vendor's `Host`.
fn chime_put(proxy: &BinaryProxy, forward: bool, account: &str, days: u32, client: &AwsClient<'_>) -> Request<Bytes> {
    let path = format!("/accounts/{account}/retention-settings");
    let host = if forward {
        CHIME_HOST.to_string()
    } else {
        proxy.addr.to_string()
    };
    let date = sigv4::amz_date_now();
    let params = SigningParams {
        access_key_id: client.access_key_id,
        secret_access_key: client.secret,
        session_token: client.session_token,
        region: "us-east-1",
        service: "chime",
        amz_date: &date,
    };
    let mut req = sigv4::signed_request(
        "PUT",
        &host,
        &path,
        &[("content-type", "application/json")],
        retention_body(days),
        &params,
    )
    .expect("sign");
    if forward {
        *req.uri_mut() = format!("http://{CHIME_HOST}{path}").parse().unwrap();
    }
    req
}

async fn send(proxy: &BinaryProxy, req: Request<Bytes>) -> SimpleResponse {
    tokio::time::timeout(SLOW_WAIT, fake_vendor::send(proxy.addr, req))
        .await
        .expect("request timed out")
        .expect("request failed")
}

fn signature_of(auth: &str) -> Option<String> {
    auth.split("Signature=")
        .nth(1)
        .map(|s| s.chars().take_while(char::is_ascii_hexdigit).collect::<String>())
        .filter(|s| s.len() == 64)
}

/// Every file of the database (`audit.db`, `-wal`, `-shm`, journal) present now.
fn db_files(db: &Path) -> Vec<PathBuf> {
    let name = db.file_name().unwrap().to_string_lossy().into_owned();
    let mut out: Vec<PathBuf> = std::fs::read_dir(db.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            let f = p.file_name().unwrap().to_string_lossy();
            f == name || (f.starts_with(&name) && !f.ends_with(".hmac-key"))
        })
        .collect();
    out.sort();
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Which needles occur in which files (`authorization` case-insensitively).
fn secrets_found(files: &[PathBuf], needles: &[(String, String)]) -> Vec<String> {
    let mut hits = Vec::new();
    for f in files {
        let bytes = std::fs::read(f).unwrap_or_default();
        let lower = bytes.to_ascii_lowercase();
        for (what, needle) in needles {
            let found = if needle.eq_ignore_ascii_case("authorization") {
                contains(&lower, b"authorization")
            } else {
                contains(&bytes, needle.as_bytes())
            };
            if let Some(at) = found {
                let from = at.saturating_sub(60);
                let to = (at + needle.len() + 60).min(bytes.len());
                hits.push(format!(
                    "{what} in {}: …{}…",
                    f.file_name().unwrap().to_string_lossy(),
                    String::from_utf8_lossy(&bytes[from..to])
                ));
            }
        }
    }
    hits
}

fn mode_of(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn form_field(body: &[u8], key: &str) -> Option<String> {
    form_urlencoded::parse(body)
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

/// Resource ids an event names (`resources[].id` and `changes[].resource`).
fn event_resources(e: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for (list, key) in [("resources", "id"), ("changes", "resource")] {
        if let Some(a) = e.get(list).and_then(Value::as_array) {
            out.extend(a.iter().filter_map(|x| x.get(key)?.as_str().map(str::to_string)));
        }
    }
    out
}

/// The key an intercepted change the vendor received is known by: Slack channel or Chime account.
fn change_key(r: &Received) -> Option<String> {
    if r.method == "POST" && r.path_and_query == SLACK_SET {
        return form_field(&r.body, "channel_id");
    }
    let p = r.path_and_query.strip_prefix("/accounts/")?;
    let acct = p.strip_suffix("/retention-settings")?;
    (r.method == "PUT").then(|| acct.to_string())
}

fn verify(db: &Path) -> std::process::Output {
    binary::run(&["audit", "verify", "--db", &db.display().to_string()])
}

// ---------------------------------------------------------------------------------------------
// 1. No secrets at rest
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_secrets_at_rest_and_database_is_private() {
    const BEARER_TOKEN: &str = "xoxp-1234567890-1234567890-1234567890-bearerSECRETbearerSECRET000001";
    const FORM_TOKEN: &str = "xoxb-9876543210-9876543210-formSECRETformSECRETformSECR0002";
    const COOKIE: &str = "xoxd-cookieSECRETcookieSECRETcookieSECRET%2B0003";
    const FWD_SESSION: &str = "FwoGZXIvYXdzEXAMPLEclientSessionTokenForwardSECRET0004/ZZZZ==";
    const REV_SESSION: &str = "FwoGZXIvYXdzEXAMPLEclientSessionTokenReverseSECRET0005/YYYY==";
    const PROXY_SESSION: &str = "IQoJb3JpZ2luX2VjEXAMPLEProxyOwnSessionTokenSECRET0006/XXXX==";

    let fake = FakeVendor::start(vendor_opts()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut opts = BinaryProxyOpts::new(&fake.url());
    opts.env.push(("AWS_SESSION_TOKEN".into(), PROXY_SESSION.into()));
    let mut proxy = BinaryProxy::start(dir.path(), &opts).await;

    let mut sent_auth: Vec<String> = Vec::new();
    let mut calls: Vec<Request<Bytes>> = vec![
        slack_form(
            SLACK_SET,
            "channel_id=CBEARER0001&duration_days=400",
            Some(BEARER_TOKEN),
            &[("cookie", &format!("d={COOKIE}; b=1"))],
        ),
        slack_form(
            SLACK_SET,
            &format!("token={FORM_TOKEN}&channel_id=CFORM00002&duration_days=500"),
            None,
            &[],
        ),
        chime_put(&proxy, false, ACCOUNT, 365, &EXAMPLE_CLIENT),
        chime_put(&proxy, true, "acct-forward", 366, &EXAMPLE_CLIENT),
    ];
    let fwd_session = AwsClient {
        access_key_id: SESSION_ACCESS_KEY_ID,
        secret: SESSION_SECRET_ACCESS_KEY,
        session_token: Some(FWD_SESSION),
    };
    let rev_session = AwsClient {
        session_token: Some(REV_SESSION),
        ..fwd_session
    };
    calls.push(chime_put(&proxy, true, "acct-fwd-session", 367, &fwd_session));
    calls.push(chime_put(&proxy, false, "acct-rev-session", 368, &rev_session));
    for req in calls {
        if let Some(a) = req.headers().get("authorization") {
            sent_auth.push(a.to_str().unwrap().to_string());
        }
        let target = req.uri().to_string();
        let resp = send(&proxy, req).await;
        assert_eq!(resp.status, 200, "{target}: {:?}\n{}", resp.body, proxy.log_text());
        if target.contains("/api/") {
            assert_eq!(resp.json()["ok"], true, "{target}: {:?}", resp.body);
        }
    }

    // The calls really reached the vendor, tokens and signatures intact or re-signed.
    let received = fake.received();
    assert_eq!(received.len(), 6, "the vendor got every call");
    assert_eq!(received[0].slack_token.as_deref(), Some(BEARER_TOKEN));
    assert_eq!(received[1].slack_token.as_deref(), Some(FORM_TOKEN));
    for r in &received[2..] {
        assert!(r.sig_ok(), "{} {}: {:?}", r.method, r.target, r.sig);
    }
    let mut signatures: Vec<String> = sent_auth.iter().filter_map(|a| signature_of(a)).collect();
    signatures.extend(received.iter().filter_map(|r| signature_of(r.header("authorization")?)));
    assert!(signatures.len() >= 8, "signatures collected: {signatures:?}");

    let mut needles: Vec<(String, String)> = vec![
        ("the Slack bearer token".into(), BEARER_TOKEN.into()),
        ("the Slack form token".into(), FORM_TOKEN.into()),
        ("the Slack cookie".into(), COOKIE.into()),
        ("the client's secret key".into(), EXAMPLE_SECRET_ACCESS_KEY.into()),
        (
            "the session client's secret key".into(),
            SESSION_SECRET_ACCESS_KEY.into(),
        ),
        ("the proxy's secret key".into(), PROXY_SECRET_ACCESS_KEY.into()),
        ("a client session token (forward)".into(), FWD_SESSION.into()),
        ("a client session token (reverse)".into(), REV_SESSION.into()),
        ("the proxy's session token".into(), PROXY_SESSION.into()),
        ("an Authorization header".into(), "Authorization".into()),
    ];
    for s in &signatures {
        needles.push((format!("signature {s}"), s.clone()));
    }

    // While running (records may still sit in the WAL)…
    let files = db_files(&proxy.db);
    let control = [("a channel id (control)".to_string(), "CBEARER0001".to_string())];
    assert!(
        !secrets_found(&files, &control).is_empty(),
        "the scan sees the records' text"
    );
    let hits = secrets_found(&files, &needles);
    assert!(hits.is_empty(), "secrets stored while running:\n{}", hits.join("\n"));
    for f in &files {
        assert_eq!(mode_of(f), 0o600, "{} is not private", f.display());
    }

    proxy.stop().await;

    // …and after a clean stop.
    let files = db_files(&proxy.db);
    assert!(files.contains(&proxy.db));
    assert!(
        !secrets_found(&files, &control).is_empty(),
        "the scan sees the records' text"
    );
    let hits = secrets_found(&files, &needles);
    assert!(hits.is_empty(), "secrets stored at rest:\n{}", hits.join("\n"));
    assert_eq!(mode_of(&proxy.db), 0o600, "the database file mode");
    let key_file = dir.path().join("audit.db.hmac-key");
    assert!(key_file.exists(), "the HMAC key file is created next to the database");
    assert_eq!(mode_of(&key_file), 0o600, "the HMAC key file mode");

    // The events are there (so the scan looked at real records), with fingerprints instead of tokens.
    let events = binary::query_json(&proxy.db, &[]);
    assert_eq!(events.len(), 6, "{events:#?}");
    let fp = |e: &Value| e["userIdentity"]["tokenFingerprint"].as_str().map(str::to_string);
    let (fp_bearer, fp_form) = (fp(&events[0]), fp(&events[1]));
    assert!(
        fp_bearer.as_deref().is_some_and(|f| f.starts_with("hmac-sha256:")),
        "{:#?}",
        events[0]
    );
    assert!(fp_form.as_deref().is_some_and(|f| f.starts_with("hmac-sha256:")));
    assert_ne!(fp_bearer, fp_form);
    assert_eq!(events[0]["userIdentity"]["tokenType"], "xoxp");
    assert_eq!(events[1]["userIdentity"]["tokenType"], "xoxb");
    assert_eq!(events[2]["userIdentity"]["accessKeyId"], EXAMPLE_ACCESS_KEY_ID);
    assert_eq!(events[2]["userIdentity"]["verified"], false);
    assert_eq!(events[4]["userIdentity"]["accessKeyId"], SESSION_ACCESS_KEY_ID);
    for e in &events {
        assert_eq!(e["outcome"], "forwarded", "{e:#}");
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Fail closed (and the explicit fail-open opt-out)
// ---------------------------------------------------------------------------------------------

/// Holds the database's write lock from another connection until dropped or released.
struct WriteLock(rusqlite::Connection);

impl WriteLock {
    fn take(db: &Path) -> WriteLock {
        let conn = rusqlite::Connection::open(db).expect("open the audit database");
        conn.busy_timeout(Duration::from_secs(5)).unwrap();
        let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
        assert_eq!(mode.to_ascii_lowercase(), "wal", "the audit database is in WAL mode");
        conn.execute_batch("BEGIN EXCLUSIVE").expect("BEGIN EXCLUSIVE");
        WriteLock(conn)
    }

    fn release(self) {
        self.0.execute_batch("ROLLBACK").expect("ROLLBACK");
    }
}

async fn wait_ready(proxy: &BinaryProxy, want: u16) -> (u16, String) {
    let deadline = Instant::now() + SLOW_WAIT;
    loop {
        let got = proxy.admin_get("/readyz").await.expect("GET /readyz");
        if got.0 == want || Instant::now() >= deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fail_closed_when_the_audit_store_is_locked() {
    let fake = FakeVendor::start(vendor_opts()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut proxy = BinaryProxy::start(dir.path(), &BinaryProxyOpts::new(&fake.url())).await;
    assert_eq!(wait_ready(&proxy, 200).await.0, 200);

    let lock = WriteLock::take(&proxy.db);
    let before = fake.count();

    // An intercepted AWS change is refused in the vendor's "service unavailable" shape.
    let resp = send(&proxy, chime_put(&proxy, false, ACCOUNT, 400, &EXAMPLE_CLIENT)).await;
    assert_eq!(resp.status, 503, "{:?}", resp.body);
    assert_eq!(resp.header("x-amzn-errortype"), Some("ServiceUnavailableException"));
    assert!(resp.header("x-amzn-requestid").is_some());
    assert_eq!(resp.json()["Code"], "ServiceUnavailable", "{:?}", resp.body);
    // The operator's warning names the operation, the event (the id the client was given) and
    // the client.
    let request_id = resp.header("x-amzn-requestid").unwrap().to_string();
    let log = proxy.log_text();
    let warning = log
        .lines()
        .find(|l| l.contains("call refused (fail closed)"))
        .unwrap_or_else(|| panic!("no fail-closed warning in the log:\n{log}"));
    for want in ["PutRetentionSettings", request_id.as_str(), "127.0.0.1"] {
        assert!(warning.contains(want), "the warning does not name {want:?}: {warning}");
    }

    // So is an intercepted Slack change.
    let resp = send(
        &proxy,
        slack_form(
            SLACK_SET,
            "channel_id=CLOCKED01&duration_days=400",
            Some("xoxp-1-locked"),
            &[],
        ),
    )
    .await;
    assert_eq!(resp.json()["ok"], false, "{:?}", resp.body);
    assert_eq!(
        fake.count(),
        before,
        "nothing may be forwarded while the audit store is locked"
    );

    // Pass-through traffic is not audited and still flows.
    let resp = send(
        &proxy,
        slack_form(
            "/api/chat.postMessage",
            "channel=C1&text=hello",
            Some("xoxp-1-locked"),
            &[],
        ),
    )
    .await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    assert_eq!(fake.count(), before + 1);
    assert_eq!(fake.last().unwrap().path_and_query, "/api/chat.postMessage");

    // Readiness reflects it.
    let (status, body) = proxy.admin_get("/readyz").await.unwrap();
    assert_eq!(status, 503, "/readyz while locked: {body}");

    lock.release();
    assert_eq!(
        wait_ready(&proxy, 200).await.0,
        200,
        "/readyz after the lock is released"
    );
    let resp = send(&proxy, chime_put(&proxy, false, ACCOUNT, 401, &EXAMPLE_CLIENT)).await;
    assert_eq!(resp.status, 200, "{:?}", resp.body);
    assert_eq!(fake.count(), before + 2);
    assert!(fake.last().unwrap().sig_ok());

    proxy.stop().await;
    let events = binary::query_json(&proxy.db, &[]);
    assert_eq!(events.len(), 1, "only the forwarded call is recorded: {events:#?}");
    assert_eq!(events[0]["outcome"], "forwarded");
    assert!(verify(&proxy.db).status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fail_open_forwards_when_the_audit_store_is_locked() {
    let fake = FakeVendor::start(vendor_opts()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut opts = BinaryProxyOpts::new(&fake.url());
    opts.fail_mode = "open";
    let mut proxy = BinaryProxy::start(dir.path(), &opts).await;
    assert_eq!(wait_ready(&proxy, 200).await.0, 200);

    let lock = WriteLock::take(&proxy.db);
    let resp = send(&proxy, chime_put(&proxy, false, ACCOUNT, 400, &EXAMPLE_CLIENT)).await;
    assert_eq!(resp.status, 200, "fail_mode = \"open\" forwards: {:?}", resp.body);
    assert_eq!(fake.count(), 1);
    let got = fake.last().unwrap();
    assert_eq!(got.path_and_query, format!("/accounts/{ACCOUNT}/retention-settings"));
    assert!(got.sig_ok());
    lock.release();
    proxy.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 3. kill -9 under concurrent load
// ---------------------------------------------------------------------------------------------

const WORKERS: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn kill_9_under_load_leaves_an_event_for_every_change_the_vendor_got() {
    let fake = FakeVendor::start(vendor_opts()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut proxy = BinaryProxy::start(dir.path(), &BinaryProxyOpts::new(&fake.url())).await;
    let addr = proxy.addr;
    let host = addr.to_string();

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for t in 0..32u32 {
        let (stop, ok, host) = (stop.clone(), ok.clone(), host.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let req = if t % 2 == 0 {
                    let form = format!("channel_id=CLOAD{t:02}N{n:05}&duration_days={}", 30 + n % 300);
                    slack_form(SLACK_SET, &form, Some("xoxp-42-load"), &[])
                } else {
                    let date = sigv4::amz_date_now();
                    let params = fake_vendor::example_params(&date);
                    sigv4::signed_request(
                        "PUT",
                        &host,
                        &format!("/accounts/load-{t:02}-{n:05}/retention-settings"),
                        &[("content-type", "application/json")],
                        retention_body(30 + n % 300),
                        &params,
                    )
                    .unwrap()
                };
                match tokio::time::timeout(SLOW_WAIT, fake_vendor::send(addr, req)).await {
                    Ok(Ok(r)) if r.status == 200 => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Ok(r)) => panic!("task {t}: unexpected answer {} {:?}", r.status, r.body),
                    // The proxy was killed under us.
                    _ => break,
                }
                n += 1;
            }
        }));
    }

    // Let the load run, then park the next requests inside the vendor so that some calls are
    // certainly between "vendor received" and "outcome recorded" when the proxy dies.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    fake.set_delay(Some(Duration::from_secs(30)));
    let parked_from = fake.count();
    assert!(
        fake.wait_for(parked_from + 16, SLOW_WAIT).await,
        "the load did not reach the vendor: {}\n{}",
        fake.count(),
        proxy.log_text()
    );
    proxy.signal("KILL");
    let st = proxy.wait_exit(SLOW_WAIT).await.expect("the proxy did not die");
    assert!(!st.success());
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("a load task failed");
    }
    let answered = ok.load(Ordering::Relaxed);
    assert!(answered > 50, "too little load got through: {answered}");

    let received = fake.received();
    let keys: Vec<(usize, String)> = received
        .iter()
        .enumerate()
        .filter_map(|(i, r)| change_key(r).map(|k| (i, k)))
        .collect();
    assert_eq!(keys.len(), received.len(), "every request the vendor got is a change");

    let out = verify(&proxy.db);
    assert!(
        out.status.success(),
        "audit verify after kill -9: {:?}\n{}{}",
        out.status,
        binary::stdout(&out),
        binary::stderr(&out)
    );

    let events = binary::query_json(&proxy.db, &[]);
    let mut by_resource: HashMap<String, &Value> = HashMap::new();
    for e in &events {
        let outcome = e["outcome"].as_str().unwrap_or("");
        assert!(["forwarded", "unknown"].contains(&outcome), "unexpected outcome: {e:#}");
        for r in event_resources(e) {
            by_resource.insert(r, e);
        }
    }
    let missing: Vec<&String> = keys
        .iter()
        .filter(|(_, k)| !by_resource.contains_key(k))
        .map(|(_, k)| k)
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} changes the vendor received have no event, e.g. {:?}",
        missing.len(),
        keys.len(),
        &missing[..missing.len().min(5)]
    );
    // A forwarded outcome was only recorded for calls the vendor actually answered.
    let received_keys: HashSet<&String> = keys.iter().map(|(_, k)| k).collect();
    for e in &events {
        if e["outcome"] == "forwarded" {
            let named = event_resources(e);
            assert!(
                named.iter().any(|r| received_keys.contains(r)),
                "forwarded but never received: {e:#}"
            );
            assert_eq!(e["httpStatus"], 200, "{e:#}");
        }
    }
    // Calls parked in the vendor when the proxy died were never answered, so their events must
    // show outcome unknown. Only requests that had read the vendor's behaviour before the delay
    // was switched on (at most one per worker thread of this runtime) may have been answered.
    let parked: Vec<&String> = keys.iter().filter(|(i, _)| *i >= parked_from).map(|(_, k)| k).collect();
    let answered_late: Vec<&&String> = parked
        .iter()
        .filter(|k| by_resource[**k]["outcome"] != "unknown")
        .collect();
    assert!(
        answered_late.len() <= WORKERS,
        "calls the vendor never answered show an outcome other than unknown: {answered_late:?}"
    );
    assert!(parked.len() - answered_late.len() >= 8, "parked: {}", parked.len());
    eprintln!(
        "kill -9: {answered} answered, {} received by the vendor, {} events, {} unknown",
        received.len(),
        events.len(),
        events.iter().filter(|e| e["outcome"] == "unknown").count()
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Tamper evidence
// ---------------------------------------------------------------------------------------------

fn copy_db(src: &Path, dir: &Path, name: &str) -> PathBuf {
    let dst = dir.join(name);
    std::fs::copy(src, &dst).unwrap();
    for suffix in ["-wal", "-shm"] {
        let s = PathBuf::from(format!("{}{suffix}", src.display()));
        if s.exists() {
            std::fs::copy(&s, format!("{}{suffix}", dst.display())).unwrap();
        }
    }
    dst
}

fn assert_broken_at(db: &Path, seq: u64, what: &str) {
    let out = verify(db);
    let text = binary::stdout(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{what}: audit verify must exit 1\n{text}{}",
        binary::stderr(&out)
    );
    assert!(
        text.contains(&format!("broken at seq {seq}")),
        "{what}: audit verify must name seq {seq}:\n{text}"
    );
    assert!(!binary::stderr(&out).contains("panicked"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tampering_is_detected_and_located() {
    let fake = FakeVendor::start(vendor_opts()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut proxy = BinaryProxy::start(dir.path(), &BinaryProxyOpts::new(&fake.url())).await;
    for (channel, days) in [("CTAMPER01", 365), ("CTAMPER02", 400), ("CTAMPER03", 500)] {
        let form = format!("channel_id={channel}&duration_days={days}");
        let resp = send(&proxy, slack_form(SLACK_SET, &form, Some("xoxp-7-tamper"), &[])).await;
        assert_eq!(resp.json()["ok"], true, "{:?}", resp.body);
    }
    proxy.stop().await;

    let out = verify(&proxy.db);
    assert!(out.status.success(), "{}", binary::stdout(&out));
    assert!(binary::stdout(&out).contains("6 records"), "{}", binary::stdout(&out));

    let body_of = |c: &rusqlite::Connection, seq: i64| -> (String, String) {
        c.query_row("SELECT kind, body FROM records WHERE seq = ?1", [seq], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap()
    };
    let scratch = tempfile::tempdir().unwrap();

    // (a) One number in the body of seq 3 changed.
    let a = copy_db(&proxy.db, scratch.path(), "a.db");
    {
        let c = rusqlite::Connection::open(&a).unwrap();
        let (kind, body) = body_of(&c, 3);
        assert_eq!(kind, "request", "seq 3 is the request link of the second call");
        assert!(body.contains("\"new\":400"), "{body}");
        let forged = body.replacen("\"new\":400", "\"new\":4000", 1);
        c.execute("UPDATE records SET body = ?1 WHERE seq = 3", [&forged])
            .unwrap();
    }
    assert_broken_at(&a, 3, "a changed number");

    // (b) A record deleted.
    let b = copy_db(&proxy.db, scratch.path(), "b.db");
    {
        let c = rusqlite::Connection::open(&b).unwrap();
        assert_eq!(c.execute("DELETE FROM records WHERE seq = 4", []).unwrap(), 1);
    }
    assert_broken_at(&b, 4, "a deleted record");

    // (c) The body changed and its own hash recomputed: the next link no longer matches.
    let c_db = copy_db(&proxy.db, scratch.path(), "c.db");
    {
        let c = rusqlite::Connection::open(&c_db).unwrap();
        let (_, body) = body_of(&c, 3);
        let forged = body.replacen("\"new\":400", "\"new\":4000", 1);
        let hash = hex::encode(Sha256::digest(forged.as_bytes()));
        c.execute(
            "UPDATE records SET body = ?1, hash = ?2 WHERE seq = 3",
            rusqlite::params![forged, hash],
        )
        .unwrap();
    }
    assert_broken_at(&c_db, 4, "a re-hashed record");

    // (d) A filter column rewritten so that queries would lie about the record.
    let d = copy_db(&proxy.db, scratch.path(), "d.db");
    {
        let c = rusqlite::Connection::open(&d).unwrap();
        c.execute(
            "UPDATE records SET event_name = 'admin.conversations.getCustomRetention' WHERE seq = 5",
            [],
        )
        .unwrap();
    }
    assert_broken_at(&d, 5, "a rewritten index column");
}

// ---------------------------------------------------------------------------------------------
// 5. Streaming 100 MiB each way with flat memory
// ---------------------------------------------------------------------------------------------

const STREAM_BYTES: u64 = 100 * 1024 * 1024;
const CHUNK: usize = 64 * 1024;
/// SHA-256 of the first [`STREAM_BYTES`] bytes of the pattern (`byte i = i % 251`), computed
/// once outside the test: hashing 100 MiB again in an unoptimised test build costs seconds.
const STREAM_SHA256: &str = "85a38859acdd54fd3381d9f1e0d4c8ad8158f2c66c0a496d1756585056ebed76";

/// The fake's `stream-bytes` pattern (`byte i = i % 251`), long enough to slice any chunk from.
fn pattern(len: usize) -> Bytes {
    Bytes::from(fake_vendor::pattern_bytes(len + 251))
}

/// A request body of `remaining` pattern bytes, produced chunk by chunk (never held whole).
struct GeneratedBody {
    pattern: Bytes,
    offset: u64,
    remaining: u64,
    produced: Arc<AtomicU64>,
}

impl Body for GeneratedBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = self.remaining.min(CHUNK as u64) as usize;
        let start = (self.offset % 251) as usize;
        let chunk = self.pattern.slice(start..start + n);
        self.produced.fetch_add(n as u64, Ordering::Relaxed);
        self.offset += n as u64;
        self.remaining -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hundred_mib_each_way_streams_with_flat_memory() {
    let fake = FakeVendor::start(vendor_opts()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut proxy = BinaryProxy::start(dir.path(), &BinaryProxyOpts::new(&fake.url())).await;
    let baseline = proxy.status_kib("VmHWM").expect("VmHWM");
    let pat = pattern(1024 * 1024);

    // Upload: reverse mode, a Slack path the proxy does not audit.
    let produced = Arc::new(AtomicU64::new(0));
    let body = GeneratedBody {
        pattern: pat.clone(),
        offset: 0,
        remaining: STREAM_BYTES,
        produced: produced.clone(),
    };
    let stream = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let req = Request::builder()
        .method("POST")
        .uri("/api/files.upload")
        .header("host", proxy.addr.to_string())
        .header("authorization", "Bearer xoxp-5-upload")
        .header("content-type", "application/octet-stream")
        .header("content-length", STREAM_BYTES.to_string())
        .body(body)
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(60), async {
        let resp = sender.send_request(req).await.expect("upload");
        let status = resp.status();
        let body = resp.into_body().collect().await.expect("upload answer").to_bytes();
        (status, body)
    })
    .await
    .expect("the upload timed out");
    conn.abort();
    assert_eq!(resp.0, 200, "{:?}", resp.1);
    assert_eq!(produced.load(Ordering::Relaxed), STREAM_BYTES, "bytes the client sent");
    let got = fake.last().expect("the vendor got the upload");
    assert_eq!(got.path_and_query, "/api/files.upload");
    assert!(got.body_truncated);
    assert_eq!(got.body_error, None);
    assert_eq!(got.body_len, STREAM_BYTES, "bytes the vendor received");
    assert_eq!(got.body_sha256, STREAM_SHA256, "the upload arrived intact");

    // Download: forward mode (the fake serves stream-bytes outside /api/).
    let stream = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let req = Request::builder()
        .method("GET")
        .uri(format!("http://slack.com/stream-bytes/{STREAM_BYTES}"))
        .header("host", "slack.com")
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let (received, mismatch_at) = tokio::time::timeout(Duration::from_secs(60), async {
        let resp = sender.send_request(req).await.expect("download");
        assert_eq!(resp.status(), 200);
        let mut body = resp.into_body();
        let mut offset: u64 = 0;
        let mut mismatch = None;
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame.expect("download body").into_data() else {
                continue;
            };
            for piece in data.chunks(1024 * 1024) {
                let start = (offset % 251) as usize;
                if mismatch.is_none() && piece != &pat[start..start + piece.len()] {
                    mismatch = Some(offset);
                }
                offset += piece.len() as u64;
            }
        }
        (offset, mismatch)
    })
    .await
    .expect("the download timed out");
    conn.abort();
    assert_eq!(received, STREAM_BYTES, "bytes the client received");
    assert_eq!(mismatch_at, None, "the download arrived intact");

    let peak = proxy.status_kib("VmHWM").expect("VmHWM");
    eprintln!("proxy peak RSS: {baseline} KiB at start, {peak} KiB after 2 x 100 MiB");
    assert!(
        peak < 60 * 1024,
        "the proxy's peak RSS grew to {peak} KiB (from {baseline} KiB) while streaming"
    );
    proxy.stop().await;
    assert!(
        binary::query_json(&proxy.db, &[]).is_empty(),
        "pass-through traffic is not audited"
    );
}

// ---------------------------------------------------------------------------------------------
// 6. SIGTERM drains in-flight calls
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_drains_in_flight_calls_and_records_their_outcomes() {
    let fake = FakeVendor::start(vendor_opts()).await;
    fake.set_delay(Some(Duration::from_millis(500)));
    let dir = tempfile::tempdir().unwrap();
    let mut proxy = BinaryProxy::start(dir.path(), &BinaryProxyOpts::new(&fake.url())).await;

    let mut clients = Vec::new();
    for i in 0..10 {
        let req = if i % 2 == 0 {
            let mut r = slack_form(
                SLACK_SET,
                &format!("channel_id=CDRAIN{i:02}&duration_days={}", 100 + i),
                Some("xoxp-3-drain"),
                &[],
            );
            r.headers_mut().insert("host", proxy.addr.to_string().parse().unwrap());
            r
        } else {
            chime_put(&proxy, false, &format!("drain-{i:02}"), 100 + i, &EXAMPLE_CLIENT)
        };
        let addr = proxy.addr;
        clients.push(tokio::spawn(async move {
            tokio::time::timeout(SLOW_WAIT, fake_vendor::send(addr, req)).await
        }));
    }
    assert!(
        fake.wait_for(10, SLOW_WAIT).await,
        "the calls did not reach the vendor: {}",
        fake.count()
    );
    let sent_at = Instant::now();
    proxy.signal("TERM");

    for (i, c) in clients.into_iter().enumerate() {
        let resp = c
            .await
            .unwrap()
            .expect("timed out")
            .unwrap_or_else(|e| panic!("client {i} lost its call: {e}"));
        assert_eq!(resp.status, 200, "client {i}: {:?}", resp.body);
        if i % 2 == 0 {
            assert_eq!(resp.json()["ok"], true, "client {i}: {:?}", resp.body);
            assert!(resp.header("x-slack-req-id").is_some());
        } else {
            assert!(resp.header("x-amzn-requestid").is_some());
        }
    }
    let st = proxy
        .wait_exit(SLOW_WAIT)
        .await
        .expect("the proxy did not exit after SIGTERM");
    assert!(st.success(), "exit status after SIGTERM: {st}\n{}", proxy.log_text());
    eprintln!("drained and exited {:?} after SIGTERM", sent_at.elapsed());

    let events = binary::query_json(&proxy.db, &[]);
    assert_eq!(events.len(), 10, "{events:#?}");
    let mut seen = HashSet::new();
    for e in &events {
        assert_eq!(e["outcome"], "forwarded", "{e:#}");
        assert_eq!(e["httpStatus"], 200, "{e:#}");
        seen.extend(event_resources(e));
    }
    for i in 0..10 {
        let key = if i % 2 == 0 {
            format!("CDRAIN{i:02}")
        } else {
            format!("drain-{i:02}")
        };
        assert!(seen.contains(&key), "no event for {key}");
    }
    assert!(verify(&proxy.db).status.success());
}
