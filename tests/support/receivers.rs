//! Alert receivers for the alert tests, on loopback: a Standard Webhooks receiver that
//! verifies each signature (computed here independently, with the `hmac` crate) and refuses
//! stale timestamps; a Splunk HEC-shaped receiver that checks the token and the envelope; a
//! real `rsyslogd` with its own configuration, pid file and work directory; and a black hole
//! that accepts connections and never reads or answers.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// The Standard Webhooks secret the tests use, and its key.
pub const WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// The Splunk HEC token the tests use.
pub const HEC_TOKEN: &str = "5f1c9d2e-0c6b-4a57-9d3e-hec-test-token";
/// How far a webhook timestamp may be from now, as the Standard Webhooks libraries allow.
pub const TOLERANCE_SECS: i64 = 300;

/// What a receiver checks.
#[derive(Debug, Clone)]
pub enum Check {
    /// Standard Webhooks signature and timestamp.
    Webhook,
    /// Splunk HEC token and envelope.
    Hec,
}

/// An HTTP receiver; dropping it closes the listener and every connection.
pub struct HttpReceiver {
    /// Where it listens.
    pub addr: SocketAddr,
    accepted: Arc<Mutex<Vec<Value>>>,
    rejected: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl Drop for HttpReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// The Standard Webhooks signature, computed independently of the proxy.
pub fn webhook_signature(id: &str, timestamp: &str, body: &[u8]) -> String {
    use hmac::{KeyInit, Mac};
    let key = base64::engine::general_purpose::STANDARD
        .decode(WEBHOOK_SECRET.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

/// Judges one request: the event it carries, or why it is refused (status, reason).
fn judge(check: &Check, req: &http::request::Parts, body: &[u8]) -> Result<Value, (StatusCode, String)> {
    let h = |k: &str| req.headers.get(k).and_then(|v| v.to_str().ok()).unwrap_or("");
    match check {
        Check::Webhook => {
            let (id, ts, sig) = (h("webhook-id"), h("webhook-timestamp"), h("webhook-signature"));
            let t: i64 = ts
                .parse()
                .map_err(|_| (StatusCode::BAD_REQUEST, format!("bad timestamp {ts:?}")))?;
            if (now_secs() - t).abs() > TOLERANCE_SECS {
                return Err((StatusCode::BAD_REQUEST, format!("stale timestamp {t}")));
            }
            let want = webhook_signature(id, ts, body);
            if !sig.split(' ').any(|s| s == want) {
                return Err((StatusCode::UNAUTHORIZED, format!("bad signature {sig:?}")));
            }
            let v: Value =
                serde_json::from_slice(body).map_err(|e| (StatusCode::BAD_REQUEST, format!("not JSON: {e}")))?;
            if v["eventID"] != id {
                return Err((StatusCode::BAD_REQUEST, "webhook-id is not the eventID".into()));
            }
            if h("content-type") != "application/json" {
                return Err((StatusCode::BAD_REQUEST, "not application/json".into()));
            }
            Ok(v)
        }
        Check::Hec => {
            if h("authorization") != format!("Splunk {HEC_TOKEN}") {
                return Err((StatusCode::UNAUTHORIZED, "Invalid token".into()));
            }
            if req.uri.path() != "/services/collector/event" {
                return Err((StatusCode::NOT_FOUND, format!("no endpoint {}", req.uri.path())));
            }
            let v: Value = serde_json::from_slice(body)
                .map_err(|e| (StatusCode::BAD_REQUEST, format!("Invalid data format: {e}")))?;
            let obj = v
                .as_object()
                .ok_or((StatusCode::BAD_REQUEST, "not an object".to_string()))?;
            let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
            keys.sort();
            if keys != ["event", "host", "source", "sourcetype", "time"] {
                return Err((StatusCode::BAD_REQUEST, format!("envelope keys {keys:?}")));
            }
            if !v["time"].is_number()
                || !v["host"].is_string()
                || v["source"] != "retention-proxy"
                || !v["sourcetype"].is_string()
                || !v["event"].is_object()
                || v["host"] != v["event"]["proxyInstance"]
            {
                return Err((StatusCode::BAD_REQUEST, format!("bad envelope {v}")));
            }
            Ok(v)
        }
    }
}

impl HttpReceiver {
    /// Listens on `addr` (port 0 for any).
    pub async fn start(addr: SocketAddr, check: Check) -> HttpReceiver {
        let listener = TcpListener::bind(addr).await.expect("bind the receiver");
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let rejected = Arc::new(Mutex::new(Vec::new()));
        let (acc, rej) = (accepted.clone(), rejected.clone());
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (acc, rej, check) = (acc.clone(), rej.clone(), check.clone());
                conns.spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let (acc, rej, check) = (acc.clone(), rej.clone(), check.clone());
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                            let (status, answer) = match judge(&check, &parts, &body) {
                                Ok(v) => {
                                    acc.lock().unwrap().push(v);
                                    (StatusCode::OK, json!({"text": "Success", "code": 0}))
                                }
                                Err((status, why)) => {
                                    rej.lock().unwrap().push(why.clone());
                                    (status, json!({"text": why, "code": 6}))
                                }
                            };
                            let mut r = Response::new(Full::new(Bytes::from(answer.to_string())));
                            *r.status_mut() = status;
                            Ok::<_, Infallible>(r)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        HttpReceiver {
            addr,
            accepted,
            rejected,
            task,
        }
    }

    /// What was accepted so far: webhook bodies, or HEC envelopes.
    pub fn accepted(&self) -> Vec<Value> {
        self.accepted.lock().unwrap().clone()
    }

    /// Why requests were refused.
    pub fn rejected(&self) -> Vec<String> {
        self.rejected.lock().unwrap().clone()
    }

    /// Waits until `done(accepted)` holds; false at the deadline.
    pub async fn wait_until(&self, timeout: Duration, done: impl Fn(&[Value]) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if done(&self.accepted()) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Accepts connections and never reads or answers them (until dropped).
pub struct BlackHole {
    /// Where it listens.
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl BlackHole {
    /// Listens on a fresh loopback port.
    pub async fn start() -> BlackHole {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        BlackHole { addr, task }
    }
}

/// `rsyslogd` from the distribution's packages.
pub fn rsyslogd() -> PathBuf {
    for p in ["/usr/sbin/rsyslogd", "/sbin/rsyslogd", "/usr/local/sbin/rsyslogd"] {
        if std::path::Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!("rsyslogd is not installed: the alert tests need a real syslog receiver (apt-get install -y rsyslog)");
}

/// A private `rsyslogd` on 127.0.0.1:`port` (RFC 5424 over TCP), in the foreground, with its
/// own configuration, pid file and work directory; every message is written to a file as
/// `app-name|msgid|hostname|msg`. Stopped when dropped.
pub struct Rsyslog {
    child: Child,
    /// Its port.
    pub port: u16,
    /// The file it writes.
    pub out: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Rsyslog {
    /// Starts it and waits until it accepts connections.
    pub async fn start(port: u16) -> Rsyslog {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        std::fs::create_dir(&work).unwrap();
        let out = dir.path().join("messages.log");
        let conf = dir.path().join("rsyslog.conf");
        std::fs::write(
            &conf,
            format!(
                "global(workDirectory=\"{}\")\n\
                 module(load=\"imtcp\")\n\
                 input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{port}\")\n\
                 template(name=\"fields\" type=\"string\" string=\"%app-name%|%msgid%|%hostname%|%msg%\\n\")\n\
                 *.* action(type=\"omfile\" file=\"{}\" template=\"fields\")\n",
                work.display(),
                out.display()
            ),
        )
        .unwrap();
        let child = Command::new(rsyslogd())
            .arg("-n")
            .arg("-f")
            .arg(&conf)
            .arg("-i")
            .arg(dir.path().join("rsyslogd.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("rsyslogd.stderr")).unwrap())
            .spawn()
            .expect("start rsyslogd");
        let mut r = Rsyslog {
            child,
            port,
            out,
            _dir: dir,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return r;
            }
            if let Ok(Some(st)) = r.child.try_wait() {
                panic!("rsyslogd exited with {st}");
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "rsyslogd did not listen on {port}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every message written so far: (app-name, msgid, hostname, msg).
    pub fn messages(&self) -> Vec<(String, String, String, String)> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let mut p = l.splitn(4, '|');
                Some((
                    p.next()?.to_string(),
                    p.next()?.to_string(),
                    p.next()?.to_string(),
                    p.next()?.trim_start().to_string(),
                ))
            })
            .collect()
    }

    /// Waits until `done(messages)` holds; false at the deadline.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        done: impl Fn(&[(String, String, String, String)]) -> bool,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if done(&self.messages()) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
