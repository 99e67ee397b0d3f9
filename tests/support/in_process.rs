//! The real proxy run in-process (`server::run` on a task of the test's runtime), on
//! 127.0.0.1 listeners the test binds, with a configuration the test gives or the default test
//! configuration ([`config_toml`]: every upstream and every forward-resolved vendor host at one
//! URL, no admin listener).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use retention_proxy::audit::query::{self, Filter, Verification};
use retention_proxy::config::Config;
use retention_proxy::proxy::credentials::ProxyCredentials;
use retention_proxy::server::{self, Listeners};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::fake_vendor::{self, SimpleResponse};
use super::fixtures::{
    CHIME_HOST, IDENTITY_HOST, MESSAGING_HOST, PROXY_ACCESS_KEY_ID, PROXY_SECRET_ACCESS_KEY, SLACK_HOST, WAIT,
};
use super::toml_str;

/// How long `server::run` may take to return once asked to stop.
pub const STOP_WAIT: Duration = Duration::from_secs(15);

/// Test-specific settings of the default configuration ([`config_toml`]).
#[derive(Debug, Clone, Default)]
pub struct ProxySettings {
    /// `server.max_body_bytes`.
    pub max_body_bytes: Option<u64>,
    /// `upstreams.request_timeout`, e.g. `"300ms"`.
    pub request_timeout: Option<String>,
    /// The audit database to use (default: `audit.db` in a fresh temporary directory).
    pub db_path: Option<PathBuf>,
    /// TOML appended verbatim at the end of the file (e.g. `[[guardrails]]` tables).
    pub extra_toml: String,
}

/// The default test configuration: every upstream and every forward-resolved vendor host
/// points at `vendor_url`; the admin listener is off.
pub fn config_toml(vendor_url: &str, db_path: &Path, settings: &ProxySettings) -> String {
    let url = toml_str(vendor_url);
    let mut t = String::new();
    t.push_str("[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"\"\n");
    if let Some(n) = settings.max_body_bytes {
        let _ = writeln!(t, "max_body_bytes = {n}");
    }
    let _ = writeln!(
        t,
        "\n[audit]\npath = {}\nproxy_instance = \"test-proxy\"\n",
        toml_str(&db_path.to_string_lossy())
    );
    let _ = writeln!(
        t,
        "[upstreams]\nchime = {url}\nchime_messaging = {url}\nchime_identity = {url}\nslack = {url}\nconnect_timeout = \"2s\""
    );
    if let Some(rt) = &settings.request_timeout {
        let _ = writeln!(t, "request_timeout = {}", toml_str(rt));
    }
    t.push_str("\n[forward]\nallow_hosts = [\"*.amazonaws.com\", \"slack.com\"]\n\n[forward.resolve]\n");
    for host in [CHIME_HOST, MESSAGING_HOST, IDENTITY_HOST, SLACK_HOST] {
        let _ = writeln!(t, "{} = {url}", toml_str(host));
    }
    t.push('\n');
    t.push_str(&settings.extra_toml);
    t
}

/// Parses a configuration, panicking with the text on error.
pub fn parse_config(text: &str, name: &str) -> Config {
    Config::from_toml_str(text, name).unwrap_or_else(|e| panic!("config: {e}\n{text}"))
}

/// The proxy's own AWS credentials ([`PROXY_ACCESS_KEY_ID`]).
pub fn proxy_credentials() -> ProxyCredentials {
    ProxyCredentials::fixed(PROXY_ACCESS_KEY_ID, PROXY_SECRET_ACCESS_KEY, None)
}

/// What a stopped proxy left in its audit database.
#[derive(Debug, Clone)]
pub struct AuditLog {
    /// Merged events, in `seq` order.
    pub events: Vec<Value>,
    /// The chain check.
    pub verification: Verification,
    /// The raw bytes of the database and its journal files (to look for secrets at rest).
    pub stored_bytes: Vec<u8>,
}

/// The proxy running in-process on 127.0.0.1 (as opposed to [`super::binary::BinaryProxy`]).
/// Dropping it asks it to stop.
pub struct InProcessProxy {
    /// The proxy listener.
    pub addr: SocketAddr,
    /// The admin listener, if started with one.
    pub admin: Option<SocketAddr>,
    /// The audit database.
    pub db_path: PathBuf,
    _dir: Option<tempfile::TempDir>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), server::RunError>>>,
}

impl Drop for InProcessProxy {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl InProcessProxy {
    /// Starts the proxy with the default configuration, every upstream at `vendor_url`, and
    /// the proxy's own credentials.
    pub async fn start(vendor_url: &str, settings: ProxySettings) -> InProcessProxy {
        let (dir, db_path) = match &settings.db_path {
            Some(p) => (None, p.clone()),
            None => {
                let dir = tempfile::tempdir().expect("temporary directory");
                let p = dir.path().join("audit.db");
                (Some(dir), p)
            }
        };
        let cfg = parse_config(&config_toml(vendor_url, &db_path, &settings), "test.toml");
        let mut proxy = InProcessProxy::spawn(cfg, db_path, Some(proxy_credentials()), false).await;
        proxy._dir = dir;
        proxy
    }

    /// Runs `server::run` with `cfg` (whose audit database is `db_path`) on a fresh
    /// 127.0.0.1 proxy listener, and a fresh admin listener too when `admin`.
    pub async fn spawn(cfg: Config, db_path: PathBuf, creds: Option<ProxyCredentials>, admin: bool) -> InProcessProxy {
        let proxy = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy listener");
        let addr = proxy.local_addr().expect("proxy address");
        let admin = if admin {
            Some(TcpListener::bind("127.0.0.1:0").await.expect("bind the admin listener"))
        } else {
            None
        };
        let admin_addr = admin.as_ref().map(|l| l.local_addr().expect("admin address"));
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(server::run(
            Listeners {
                proxy: Some(proxy),
                admin,
            },
            cfg,
            creds,
            async {
                let _ = rx.await;
            },
        ));
        InProcessProxy {
            addr,
            admin: admin_addr,
            db_path,
            _dir: None,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// Keeps `dir` (where the database lives) until the proxy is dropped.
    pub fn keeping(mut self, dir: tempfile::TempDir) -> InProcessProxy {
        self._dir = Some(dir);
        self
    }

    /// `host:port` of the proxy, as a `Host` header value.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Every merged event committed so far.
    pub fn events(&self) -> Vec<Value> {
        read_audit(&self.db_path).events
    }

    /// Sends one request to the proxy on a new connection.
    pub async fn send(&self, req: Request<Bytes>) -> SimpleResponse {
        let target = req.uri().to_string();
        match tokio::time::timeout(WAIT, fake_vendor::send(self.addr, req)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => panic!("request {target} to the proxy failed: {e}"),
            Err(_) => panic!("request {target} to the proxy got no answer within {WAIT:?}"),
        }
    }

    /// Stops the proxy and waits until `server::run` returned (it drains and commits every
    /// record); panics unless it returned `Ok` in time.
    pub async fn shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            match tokio::time::timeout(STOP_WAIT, task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => panic!("server::run failed: {e}"),
                Ok(Err(e)) => panic!("server::run panicked: {e}"),
                Err(_) => panic!("server::run did not return within {STOP_WAIT:?} of shutdown"),
            }
        }
    }

    /// Stops the proxy ([`InProcessProxy::shutdown`]), then reads the audit log.
    pub async fn stop(mut self) -> AuditLog {
        self.shutdown().await;
        read_audit(&self.db_path)
    }
}

/// Reads every merged event and verifies the chain.
pub fn read_audit(db: &Path) -> AuditLog {
    let conn = retention_proxy::audit::open_reader(&retention_proxy::audit::Store::Local(db.to_path_buf()))
        .unwrap_or_else(|e| panic!("open the audit database: {e}"));
    let events = conn
        .query(&Filter::default())
        .unwrap_or_else(|e| panic!("query the audit log: {e}"));
    let verification = query::verify(conn.as_ref()).unwrap_or_else(|e| panic!("verify the audit log: {e}"));
    AuditLog {
        events,
        verification,
        stored_bytes: stored_bytes(db),
    }
}

/// The raw bytes of the database and its journal files.
pub fn stored_bytes(db: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for suffix in ["", "-wal", "-journal"] {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        if let Ok(b) = std::fs::read(PathBuf::from(p)) {
            out.extend_from_slice(&b);
        }
    }
    out
}
