//! The proxy's own AWS credentials (SPEC §13): resolved by the standard chain and refreshed
//! before they expire. The built binary runs in reverse mode in front of a fake Chime that
//! verifies every SigV4 signature against the keys it knows, and refuses (`403`) an unknown
//! or expired key; the credentials come from a fake ECS container-credentials endpoint that
//! hands out a new short-lived key pair each time it is asked, from environment variables,
//! from a shared profile, or from nowhere.

mod support;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::json;
use support::binary::{BinaryProxy, BinaryProxyOpts};
use support::fake_vendor::{self, EXAMPLE_ACCESS_KEY_ID, EXAMPLE_SECRET_ACCESS_KEY, SimpleResponse};
use support::fixtures::{ACCOUNT, PROXY_ACCESS_KEY_ID, PROXY_SECRET_ACCESS_KEY};
use support::sigv4::{self, SigningParams};
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// Lifetime of the keys the fake ECS endpoint hands out. The proxy refreshes with a quarter
/// of the lifetime left (at most 5 minutes), so any lifetime exercises the same path; 20 s
/// (rather than a minute) keeps the test short while still crossing a real expiry.
const LIFETIME: Duration = Duration::from_secs(20);
/// The authorization token the fake ECS endpoint requires (as EKS Pod Identity uses one).
const ECS_AUTH_TOKEN: &str = "Basic ecs-agent-token-EXAMPLE";
/// Deadline for one call through the proxy.
const CALL_WAIT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// The keys the vendor accepts, a fake ECS endpoint, a fake Chime
// ---------------------------------------------------------------------------------------------

/// One key pair the vendor knows.
#[derive(Clone)]
struct Key {
    secret: String,
    token: Option<String>,
    /// After this the vendor refuses it.
    expires: Option<SystemTime>,
}

/// What the fake Chime saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    access_key_id: String,
    at: SystemTime,
    /// `None` when accepted, else why it was refused.
    refused: Option<String>,
}

#[derive(Default)]
struct Shared {
    keys: Mutex<HashMap<String, Key>>,
    /// Access key ids in the order the ECS endpoint issued them.
    issued: Mutex<Vec<String>>,
    seen: Mutex<Vec<Seen>>,
    seen_changed: Notify,
}

impl Shared {
    fn know(&self, akid: &str, key: Key) {
        self.keys.lock().unwrap().insert(akid.to_string(), key);
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn issued(&self) -> Vec<String> {
        self.issued.lock().unwrap().clone()
    }

    /// Every secret and token the vendor knows.
    fn secrets(&self) -> Vec<String> {
        let keys = self.keys.lock().unwrap();
        keys.values()
            .flat_map(|k| std::iter::once(k.secret.clone()).chain(k.token.clone()))
            .collect()
    }
}

/// Serves `handle` on 127.0.0.1:0 over HTTP/1.1 until the test ends.
async fn serve<F>(handle: F) -> SocketAddr
where
    F: Fn(Request<Bytes>) -> Response<Full<Bytes>> + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().unwrap();
    let handle = Arc::new(handle);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let handle = handle.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let handle = handle.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        Ok::<_, Infallible>(handle(Request::from_parts(parts, body)))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

fn json_response(status: u16, headers: &[(&str, &str)], body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut b = Response::builder()
        .status(status)
        .header("content-type", "application/json");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(Bytes::from(body.to_string()))).unwrap()
}

/// `YYYY-MM-DDTHH:MM:SSZ`, as ECS writes `Expiration`.
fn rfc3339(t: SystemTime) -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    time::OffsetDateTime::from(t).format(&fmt).unwrap()
}

/// A fake ECS container-credentials endpoint (`GET /creds`): a new key pair each time, valid
/// for [`LIFETIME`], which the vendor learns at once. Requires [`ECS_AUTH_TOKEN`].
async fn ecs_endpoint(shared: Arc<Shared>) -> SocketAddr {
    let n = AtomicUsize::new(0);
    serve(move |req| {
        if req.uri().path() != "/creds" || req.headers().get("authorization").is_none_or(|v| v != ECS_AUTH_TOKEN) {
            return json_response(403, &[], json!({"Code": "AccessDenied", "Message": "no"}));
        }
        let i = n.fetch_add(1, Ordering::SeqCst) + 1;
        let akid = format!("ASIAROTATING{i:08}");
        let secret = format!("rotating/Secret/{i:04}/EXAMPLEKEYEXAMPLEKEY");
        let token = format!("rotatingSessionToken{i:04}EXAMPLETOKEN==");
        // Whole seconds, as ECS writes them, so the vendor enforces exactly what it announced.
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let expires = UNIX_EPOCH + Duration::from_secs(now) + LIFETIME;
        shared.know(
            &akid,
            Key {
                secret: secret.clone(),
                token: Some(token.clone()),
                expires: Some(expires),
            },
        );
        shared.issued.lock().unwrap().push(akid.clone());
        json_response(
            200,
            &[],
            json!({
                "RoleArn": "arn:aws:iam::111122223333:role/retention-proxy",
                "AccessKeyId": akid,
                "SecretAccessKey": secret,
                "Token": token,
                "Expiration": rfc3339(expires),
            }),
        )
    })
    .await
}

/// A fake Chime: verifies the SigV4 signature of every request against the known keys (and
/// the session token, and the key's expiry at arrival); `200` when it holds, else `403`.
async fn keyed_vendor(shared: Arc<Shared>) -> SocketAddr {
    serve(move |req| {
        let at = SystemTime::now();
        let (parts, body) = req.into_parts();
        let pq = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
            .to_string();
        let keys = shared.keys.lock().unwrap().clone();
        let secrets: HashMap<String, String> = keys.iter().map(|(k, v)| (k.clone(), v.secret.clone())).collect();
        let verdict = sigv4::verify(parts.method.as_str(), &pq, &parts.headers, &body, &secrets).and_then(|v| {
            let key = &keys[&v.access_key_id];
            let token = parts.headers.get("x-amz-security-token").and_then(|t| t.to_str().ok());
            if token != key.token.as_deref() {
                return Err(format!(
                    "session token {token:?} does not belong to {}",
                    v.access_key_id
                ));
            }
            if key.expires.is_some_and(|e| at >= e) {
                return Err(format!("{} has expired", v.access_key_id));
            }
            Ok(v.access_key_id)
        });
        let claimed = sigv4::parse_authorization(
            parts
                .headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or(""),
        )
        .map(|p| p.access_key_id)
        .unwrap_or_default();
        let (resp, refused) = match verdict {
            Ok(_) => (
                json_response(
                    200,
                    &[("x-amzn-RequestId", "req-1")],
                    json!({"RetentionSettings": {"RoomRetentionSettings": {"RetentionDays": 60}}}),
                ),
                None,
            ),
            Err(e) => (
                json_response(
                    403,
                    &[("x-amzn-ErrorType", "InvalidSignatureException")],
                    json!({"Code": "InvalidSignature", "Message": e}),
                ),
                Some(e),
            ),
        };
        shared.seen.lock().unwrap().push(Seen {
            access_key_id: claimed,
            at,
            refused,
        });
        shared.seen_changed.notify_waiters();
        resp
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// The proxy and its calls
// ---------------------------------------------------------------------------------------------

/// Options for a proxy whose only credentials are those `env` gives: every `AWS_*` variable
/// of the test's environment removed, no shared files, no instance metadata.
fn isolated_opts(vendor: SocketAddr, dir: &Path, env: &[(&str, &str)]) -> BinaryProxyOpts {
    let mut opts = BinaryProxyOpts::new(&format!("http://{vendor}"));
    opts.env_remove = std::env::vars()
        .map(|(k, _)| k)
        .filter(|k| k.starts_with("AWS_"))
        .chain(["AWS_ACCESS_KEY_ID".into(), "AWS_SECRET_ACCESS_KEY".into()])
        .collect();
    let none = |name: &str| dir.join(name).display().to_string();
    opts.env = vec![
        ("HOME".into(), dir.display().to_string()),
        ("AWS_CONFIG_FILE".into(), none("no-such-config")),
        ("AWS_SHARED_CREDENTIALS_FILE".into(), none("no-such-credentials")),
        ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
        ("AWS_REGION".into(), "us-east-1".into()),
    ];
    for (k, v) in env {
        opts.env.retain(|(k2, _)| k2 != k);
        opts.env.push((k.to_string(), v.to_string()));
    }
    opts
}

/// A Chime call as an admin tool signs it for the proxy (reverse mode): the audited
/// `GetRetentionSettings`, or (`audited = false`) a call the proxy passes through.
fn chime_call(proxy: &BinaryProxy, audited: bool) -> Request<Bytes> {
    let path = if audited {
        format!("/accounts/{ACCOUNT}/retention-settings")
    } else {
        format!("/accounts/{ACCOUNT}/users?max-results=10")
    };
    let date = sigv4::amz_date_now();
    let params = SigningParams {
        access_key_id: EXAMPLE_ACCESS_KEY_ID,
        secret_access_key: EXAMPLE_SECRET_ACCESS_KEY,
        session_token: None,
        region: "us-east-1",
        service: "chime",
        amz_date: &date,
    };
    sigv4::signed_request("GET", &proxy.addr.to_string(), &path, &[], Bytes::new(), &params).expect("sign")
}

async fn call(proxy: &BinaryProxy, audited: bool) -> SimpleResponse {
    tokio::time::timeout(CALL_WAIT, fake_vendor::send(proxy.addr, chime_call(proxy, audited)))
        .await
        .expect("the call timed out")
        .expect("the call failed")
}

/// `retention_proxy_aws_credential_refreshes_total{result="…"}` from `/metrics`.
async fn refreshes(proxy: &BinaryProxy, result: &str) -> Option<u64> {
    let (_, text) = proxy.admin_get("/metrics").await.expect("GET /metrics");
    let prefix = format!("retention_proxy_aws_credential_refreshes_total{{result=\"{result}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|v| v.trim().parse().ok())
}

fn assert_log_keeps_secrets(proxy: &BinaryProxy, secrets: &[String]) {
    let log = proxy.log_text();
    for s in secrets {
        assert!(!log.contains(s.as_str()), "the log shows a secret or token:\n{log}");
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// Calls go on without a failure across the expiry of the ECS credentials: the proxy fetched a
/// new pair before the old one expired, signed with each only while it was valid, and asked
/// the endpoint a few times, not once per call.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ecs_credentials_are_refreshed_before_they_expire() {
    let shared = Arc::new(Shared::default());
    let ecs = ecs_endpoint(shared.clone()).await;
    let vendor = keyed_vendor(shared.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let uri = format!("http://{ecs}/creds");
    let opts = isolated_opts(
        vendor,
        dir.path(),
        &[
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", &uri),
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN", ECS_AUTH_TOKEN),
        ],
    );
    let mut proxy = BinaryProxy::start(dir.path(), &opts).await;
    let proxy_ref = &proxy;

    // Three callers, each one call at a time (audited and passed-through calls in turn),
    // until a call signed after the first key's expiry has been accepted.
    let stop = AtomicBool::new(false);
    let failures = Mutex::new(Vec::<String>::new());
    let made = AtomicUsize::new(0);
    let caller = |c: usize| {
        let (stop, failures, made) = (&stop, &failures, &made);
        async move {
            let mut pace = tokio::time::interval(Duration::from_millis(100));
            let mut i = c;
            while !stop.load(Ordering::SeqCst) {
                pace.tick().await;
                let r = call(proxy_ref, i.is_multiple_of(2)).await;
                made.fetch_add(1, Ordering::SeqCst);
                if r.status != 200 {
                    failures
                        .lock()
                        .unwrap()
                        .push(format!("{} {}", r.status, String::from_utf8_lossy(&r.body)));
                }
                i += 1;
            }
        }
    };
    let watcher = async {
        let deadline = tokio::time::Instant::now() + 3 * LIFETIME + Duration::from_secs(30);
        loop {
            let changed = shared.seen_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let first_expiry = shared
                .issued()
                .first()
                .and_then(|k| shared.keys.lock().unwrap()[k].expires);
            let crossed = first_expiry.is_some_and(|e| shared.seen().iter().any(|s| s.refused.is_none() && s.at > e));
            let failed = !failures.lock().unwrap().is_empty();
            if crossed || failed {
                break;
            }
            assert!(
                tokio::time::timeout_at(deadline, changed).await.is_ok() || crossed,
                "no call was accepted after the first key expired (issued {:?}); log:\n{}",
                shared.issued(),
                proxy_ref.log_text()
            );
        }
        stop.store(true, Ordering::SeqCst);
    };
    tokio::join!(watcher, caller(0), caller(1), caller(2));

    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "calls failed: {failures:?}\nlog:\n{}",
        proxy.log_text()
    );
    let seen = shared.seen();
    let refused: Vec<&Seen> = seen.iter().filter(|s| s.refused.is_some()).collect();
    assert!(refused.is_empty(), "the vendor refused: {refused:?}");
    let mut used: Vec<&str> = seen.iter().map(|s| s.access_key_id.as_str()).collect();
    used.dedup();
    assert!(used.len() >= 2, "the vendor saw only {used:?}");
    let issued = shared.issued();
    let calls = made.load(Ordering::SeqCst);
    assert!(
        (2..=4).contains(&issued.len()),
        "the ECS endpoint was asked {} times for {calls} calls",
        issued.len()
    );
    assert!(
        calls >= 10 * issued.len(),
        "only {calls} calls for {} fetches",
        issued.len()
    );
    // Each key was used only before its expiry (the vendor checked at arrival; again here).
    let keys = shared.keys.lock().unwrap().clone();
    for s in &seen {
        let e = keys[&s.access_key_id].expires.unwrap();
        assert!(s.at < e, "{} used after it expired", s.access_key_id);
    }
    let ok = refreshes(&proxy, "ok").await.unwrap_or(0);
    assert!(ok >= 2, "/metrics counts {ok} successful refreshes");
    assert_log_keeps_secrets(&proxy, &shared.secrets());
    proxy.stop().await;
}

/// Static keys from the environment (with a session token) sign as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_credentials_sign() {
    const TOKEN: &str = "EnvironmentSessionTokenEXAMPLE0001==";
    let shared = Arc::new(Shared::default());
    shared.know(
        PROXY_ACCESS_KEY_ID,
        Key {
            secret: PROXY_SECRET_ACCESS_KEY.into(),
            token: Some(TOKEN.into()),
            expires: None,
        },
    );
    let vendor = keyed_vendor(shared.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let opts = isolated_opts(
        vendor,
        dir.path(),
        &[
            ("AWS_ACCESS_KEY_ID", PROXY_ACCESS_KEY_ID),
            ("AWS_SECRET_ACCESS_KEY", PROXY_SECRET_ACCESS_KEY),
            ("AWS_SESSION_TOKEN", TOKEN),
        ],
    );
    let mut proxy = BinaryProxy::start(dir.path(), &opts).await;
    for audited in [true, false] {
        let r = call(&proxy, audited).await;
        assert_eq!(
            r.status,
            200,
            "{}\n{:?}",
            String::from_utf8_lossy(&r.body),
            shared.seen()
        );
    }
    let seen = shared.seen();
    assert_eq!(seen.len(), 2);
    assert!(
        seen.iter()
            .all(|s| s.access_key_id == PROXY_ACCESS_KEY_ID && s.refused.is_none())
    );
    assert_log_keeps_secrets(&proxy, &shared.secrets());
    proxy.stop().await;
}

/// `AWS_PROFILE` selects a profile of `AWS_SHARED_CREDENTIALS_FILE`; the other profiles'
/// keys are not used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_profile_credentials_sign() {
    const AKID: &str = "AKIAPROFILEEXAMPLE01";
    const SECRET: &str = "pr0file/S3cr3tK3yF0rT3sts/EXAMPLEKEY0001";
    let shared = Arc::new(Shared::default());
    shared.know(
        AKID,
        Key {
            secret: SECRET.into(),
            token: None,
            expires: None,
        },
    );
    let vendor = keyed_vendor(shared.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("credentials");
    std::fs::write(
        &file,
        format!(
            "[default]\naws_access_key_id = AKIADEFAULTNOTTHIS01\naws_secret_access_key = wrong\n\n\
             [retention]\naws_access_key_id = {AKID}\naws_secret_access_key = {SECRET}\n"
        ),
    )
    .unwrap();
    let file = file.display().to_string();
    let opts = isolated_opts(
        vendor,
        dir.path(),
        &[("AWS_PROFILE", "retention"), ("AWS_SHARED_CREDENTIALS_FILE", &file)],
    );
    let mut proxy = BinaryProxy::start(dir.path(), &opts).await;
    for audited in [true, false] {
        let r = call(&proxy, audited).await;
        assert_eq!(
            r.status,
            200,
            "{}\n{:?}",
            String::from_utf8_lossy(&r.body),
            shared.seen()
        );
    }
    let seen = shared.seen();
    assert_eq!(seen.len(), 2);
    assert!(
        seen.iter().all(|s| s.access_key_id == AKID && s.refused.is_none()),
        "{seen:?}"
    );
    assert_log_keeps_secrets(&proxy, &shared.secrets());
    proxy.stop().await;
}

/// No credentials anywhere, and instance metadata that never answers: the proxy is ready
/// before the chain has given up, says so once, and a reverse-mode AWS call gets the internal
/// error in AWS's shape, with nothing forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_credentials_the_proxy_starts_and_refuses_to_forward() {
    // Instance metadata that accepts connections and never answers: each lookup waits for the
    // chain's read timeout (1 s), and the chain makes several.
    let imds = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let imds_addr = imds.local_addr().unwrap();
    let asked = Arc::new(AtomicUsize::new(0));
    let asked2 = asked.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = imds.accept().await {
            asked2.fetch_add(1, Ordering::SeqCst);
            held.push(s);
        }
    });
    let shared = Arc::new(Shared::default());
    let vendor = keyed_vendor(shared.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("http://{imds_addr}");
    let mut opts = isolated_opts(vendor, dir.path(), &[("AWS_EC2_METADATA_SERVICE_ENDPOINT", &endpoint)]);
    opts.env
        .retain(|(k, _)| k != "AWS_EC2_METADATA_DISABLED" && k != "AWS_REGION");

    let started = Instant::now();
    let mut proxy = BinaryProxy::start(dir.path(), &opts).await;
    let ready = started.elapsed();
    // The chain needs several seconds here (three region lookups and a credentials lookup,
    // each waiting 1 s); start-up did not wait for it.
    assert!(ready < Duration::from_secs(3), "ready only after {ready:?}");

    for audited in [true, false] {
        let r = call(&proxy, audited).await;
        assert_eq!(r.status, 500, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.header("x-amzn-errortype"), Some("ServiceFailureException"));
        let msg = r.json()["Message"].as_str().unwrap_or_default().to_string();
        assert!(msg.contains("no AWS credentials"), "{msg}");
    }
    assert!(asked.load(Ordering::SeqCst) >= 1, "instance metadata was never asked");
    assert!(shared.seen().is_empty(), "forwarded: {:?}", shared.seen());
    let log = proxy.log_text();
    assert_eq!(
        log.matches("no AWS credentials from the standard chain").count(),
        1,
        "the missing credentials are reported once:\n{log}"
    );
    assert!(refreshes(&proxy, "error").await.unwrap_or(0) >= 1);
    proxy.stop().await;
}
