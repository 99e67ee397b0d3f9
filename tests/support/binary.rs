//! Running the built `retention-proxy` binary in integration tests: a config written to a
//! temporary directory, ports picked by binding `127.0.0.1:0`, readiness polled on `/healthz`,
//! signals sent with `kill`, and the offline commands (`audit …`, `check-config`) run to
//! completion.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http::Request;

use super::fake_vendor;
use super::fixtures::{PROXY_ACCESS_KEY_ID, PROXY_SECRET_ACCESS_KEY};
use super::toml_str;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_retention-proxy");

/// How long the proxy may take to become healthy.
pub const READY_WAIT: Duration = Duration::from_secs(20);

/// A free port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// What a proxy started by [`BinaryProxy::start`] is configured with.
#[derive(Debug, Clone)]
pub struct BinaryProxyOpts {
    /// Every upstream and every `[forward.resolve]` vendor host point here.
    pub upstream: String,
    /// `audit.fail_mode`.
    pub fail_mode: &'static str,
    /// Extra lines inside `[audit]` (for example `proxy_instance = "a"`).
    pub audit_toml: String,
    /// Extra TOML appended to the file (for example `[[guardrails]]`).
    pub extra_toml: String,
    /// Extra environment for the child.
    pub env: Vec<(String, String)>,
    /// Variables removed from the child's environment (before `env` is applied).
    pub env_remove: Vec<String>,
    /// `server.listen = ""`: an admin-only console (SPEC §9); [`BinaryProxy::addr`] is then
    /// a port nothing listens on.
    pub admin_only: bool,
}

impl BinaryProxyOpts {
    /// Fail-closed proxy in front of `upstream`, nothing else.
    pub fn new(upstream: &str) -> BinaryProxyOpts {
        BinaryProxyOpts {
            upstream: upstream.to_string(),
            fail_mode: "closed",
            audit_toml: String::new(),
            extra_toml: String::new(),
            env: Vec::new(),
            env_remove: Vec::new(),
            admin_only: false,
        }
    }
}

/// The configuration file text for a proxy on `listen`/`admin` writing `db`.
pub fn config_text(listen: SocketAddr, admin: SocketAddr, db: &Path, opts: &BinaryProxyOpts) -> String {
    let up = toml_str(&opts.upstream);
    let listen = if opts.admin_only {
        String::new()
    } else {
        listen.to_string()
    };
    let mut s = format!(
        "[server]\nlisten = \"{listen}\"\nadmin_listen = \"{admin}\"\nshutdown_grace = \"10s\"\n\n\
         [audit]\npath = {db}\nfail_mode = \"{fail}\"\n{audit}\n\
         [upstreams]\nchime = {up}\nchime_messaging = {up}\nchime_identity = {up}\nslack = {up}\n\n\
         [forward.resolve]\n\"chime.us-east-1.amazonaws.com\" = {up}\n\
         \"messaging-chime.us-east-1.amazonaws.com\" = {up}\n\
         \"identity-chime.us-east-1.amazonaws.com\" = {up}\n\"slack.com\" = {up}\n",
        db = toml_str(&db.display().to_string()),
        fail = opts.fail_mode,
        audit = if opts.audit_toml.is_empty() {
            String::new()
        } else {
            format!("{}\n", opts.audit_toml.trim_end())
        },
    );
    if !opts.extra_toml.is_empty() {
        s.push('\n');
        s.push_str(&opts.extra_toml);
        s.push('\n');
    }
    s
}

/// The built binary running `retention-proxy serve` as a child process (as opposed to
/// [`super::in_process::InProcessProxy`]). Dropping it kills the process if it still runs.
pub struct BinaryProxy {
    child: Child,
    exit: Option<ExitStatus>,
    /// The proxy listener.
    pub addr: SocketAddr,
    /// The admin listener.
    pub admin: SocketAddr,
    /// The audit database.
    pub db: PathBuf,
    /// The configuration file.
    pub config: PathBuf,
    /// Where the child's stderr goes.
    pub log: PathBuf,
}

impl BinaryProxy {
    /// Writes a config into `dir` (database `dir/audit.db`), starts the binary and waits until
    /// `/healthz` answers. Retries with other ports if a picked port was taken meanwhile.
    pub async fn start(dir: &Path, opts: &BinaryProxyOpts) -> BinaryProxy {
        let db = dir.join("audit.db");
        let mut last_log = String::new();
        for attempt in 0..5 {
            let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
            let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
            if addr == admin {
                continue;
            }
            let config = dir.join("proxy.toml");
            std::fs::write(&config, config_text(addr, admin, &db, opts)).expect("write config");
            let log = dir.join(format!("proxy-{attempt}.log"));
            let stderr = std::fs::File::create(&log).expect("create log");
            let mut cmd = Command::new(BIN);
            cmd.arg("serve")
                .arg("--config")
                .arg(&config)
                .current_dir(dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr)
                .env("AWS_ACCESS_KEY_ID", PROXY_ACCESS_KEY_ID)
                .env("AWS_SECRET_ACCESS_KEY", PROXY_SECRET_ACCESS_KEY)
                .env("RUST_LOG", "info")
                .env_remove("AWS_SESSION_TOKEN")
                .env_remove("AWS_PROFILE")
                .env_remove("RETENTION_PROXY_CONFIG");
            // Tests talk to loopback only: no instance-metadata lookups for a region, unless
            // the test points the metadata client somewhere itself.
            if !opts.env.iter().any(|(k, _)| k.starts_with("AWS_EC2_METADATA")) {
                cmd.env("AWS_EC2_METADATA_DISABLED", "true");
            }
            for k in &opts.env_remove {
                cmd.env_remove(k);
            }
            for (k, v) in &opts.env {
                cmd.env(k, v);
            }
            let child = cmd.spawn().expect("spawn the proxy binary");
            let mut p = BinaryProxy {
                child,
                exit: None,
                addr,
                admin,
                db: db.clone(),
                config,
                log,
            };
            match p.wait_healthy(READY_WAIT).await {
                Ok(()) => return p,
                Err(e) => {
                    last_log = format!("{e}\n{}", p.log_text());
                    if !last_log.contains("cannot listen") {
                        break;
                    }
                }
            }
        }
        panic!("the proxy did not become healthy:\n{last_log}");
    }

    async fn wait_healthy(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_exit() {
                return Err(format!("the proxy exited early with {st}"));
            }
            if let Ok((200, _)) = self.admin_get("/healthz").await {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                self.kill();
                return Err("the proxy did not answer /healthz in time".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `GET` on the admin listener: status and body.
    pub async fn admin_get(&self, path: &str) -> Result<(u16, String), String> {
        let req = Request::builder()
            .method("GET")
            .uri(path)
            .body(Bytes::new())
            .map_err(|e| e.to_string())?;
        let resp = tokio::time::timeout(Duration::from_secs(10), fake_vendor::send(self.admin, req))
            .await
            .map_err(|_| format!("GET {path} timed out"))??;
        Ok((resp.status, String::from_utf8_lossy(&resp.body).into_owned()))
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (`TERM`, `KILL`, …) to the child with `kill`.
    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(st.success(), "kill -{sig} {} failed", self.pid());
    }

    /// The exit status, if the child has exited.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().ok().flatten();
        }
        self.exit
    }

    /// Waits (polling) until the child exits; `None` on timeout.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_exit() {
                return Some(st);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// SIGTERM, then wait for a clean exit (status 0); panics with the log otherwise.
    pub async fn stop(&mut self) {
        self.signal("TERM");
        match self.wait_exit(Duration::from_secs(20)).await {
            Some(st) if st.success() => {}
            other => panic!("the proxy did not stop cleanly: {other:?}\n{}", self.log_text()),
        }
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if self.try_exit().is_none() {
            let _ = self.child.kill();
            self.exit = self.child.wait().ok();
        }
    }

    /// What the child wrote to stderr so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A field (in KiB) of `/proc/<pid>/status`, such as `VmHWM` or `VmRSS`.
    pub fn status_kib(&self, field: &str) -> Option<u64> {
        let text = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }
}

impl Drop for BinaryProxy {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs the binary with `args` to completion (stdin closed).
pub fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .env_remove("RETENTION_PROXY_CONFIG")
        .output()
        .expect("run the proxy binary")
}

/// `run`, asserting success; stdout as text.
pub fn run_ok(args: &[&str]) -> String {
    let o = run(args);
    assert!(
        o.status.success(),
        "{args:?} failed ({:?}): {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).expect("UTF-8 output")
}

/// `run` from an async test without blocking its runtime.
pub async fn run_async(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&a)
    })
    .await
    .expect("join the CLI runner")
}

/// Stdout as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts a CLI failure the way SPEC §5 describes it: non-zero exit, one non-empty line on
/// stderr, no panic.
pub fn assert_one_line_error(o: &Output, what: &str) {
    let err = stderr(o);
    assert!(
        !o.status.success(),
        "{what}: expected failure, got {:?}\n{err}",
        o.status
    );
    assert!(o.status.code().is_some(), "{what}: killed by a signal: {:?}", o.status);
    assert!(!err.contains("panicked"), "{what}: panicked:\n{err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{what}: stderr must be one line:\n{err}");
}

/// `audit query --db DB --format json ARGS…`, parsed.
pub fn query_json(db: &Path, args: &[&str]) -> Vec<serde_json::Value> {
    let db = db.display().to_string();
    let mut a = vec!["audit", "query", "--db", db.as_str(), "--format", "json"];
    a.extend_from_slice(args);
    let o = run(&a);
    assert!(o.status.success(), "audit query {args:?} failed: {}", stderr(&o));
    match serde_json::from_slice(&o.stdout) {
        Ok(serde_json::Value::Array(v)) => v,
        other => panic!(
            "audit query --format json is not a JSON array: {other:?}\n{}",
            stdout(&o)
        ),
    }
}
