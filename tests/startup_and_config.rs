//! What an operator sees before the first request, from the built binary:
//! - `check-config` refuses a guardrail that can never refuse anything, naming it, together
//!   with every other problem of the file (exit 64);
//! - a TOML syntax error keeps the toml crate's layout (line, column, the line itself and a
//!   caret under the culprit), after the file name;
//! - `serve` logs one start-up line saying what it runs with (in text and in JSON), and no
//!   secret in it;
//! - LookupEvents on the admin listener answers every `X-Amz-Target` form AWS SDKs send, and
//!   checks the admin token before the operation.

mod support;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use serde_json::{Value, json};
use support::binary::{self, BIN, free_port, run, run_ok, stderr, stdout};
use support::clients::slack_form;
use support::fake_vendor::{self, FakeVendor, FakeVendorOpts, SimpleResponse};
use support::fixtures::{PROXY_ACCESS_KEY_ID, PROXY_SECRET_ACCESS_KEY, SLACK_SET, SLACK_TOKEN};
use support::receivers::WEBHOOK_SECRET;
use support::toml_str;

const EXIT_CONFIG: i32 = 64;
/// How long the binary may take to log its start-up line or answer `/healthz`.
const WAIT: Duration = Duration::from_secs(20);

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

fn secret_file(dir: &Path, name: &str, text: &str) -> String {
    let p = write(dir, name, &format!("{text}\n"));
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

// ---------------------------------------------------------------------------------------------
// check-config
// ---------------------------------------------------------------------------------------------

#[test]
fn a_guardrail_that_can_never_refuse_is_a_config_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    // Each way of writing a rule without a bound: nothing at all, only allow_default (either
    // way), only a mode and targets.
    for (i, body) in [
        "",
        "allow_default = false\n",
        "allow_default = true\n",
        "targets = [\"slack.channel_retention\"]\nmode = \"dry_run\"\nexempt = [\"AKIAEXAMPLE\"]\n",
    ]
    .into_iter()
    .enumerate()
    {
        let cfg = write(
            dir.path(),
            &format!("toothless-{i}.toml"),
            &format!(
                "[audit]\nfail_mode = \"ajar\"\n\n[[guardrails]]\nid = \"legal-hold-1y\"\nmin_days = 365\n\n\
                 [[guardrails]]\nid = \"keeps-anything\"\n{body}"
            ),
        );
        let o = run(&["check-config", "--config", &cfg]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(EXIT_CONFIG), "{body:?}:\n{err}");
        assert!(
            stdout(&o).is_empty(),
            "no effective configuration is printed:\n{}",
            stdout(&o)
        );
        let line = err
            .lines()
            .find(|l| l.contains("\"keeps-anything\""))
            .unwrap_or_else(|| panic!("{body:?}: the rule is not named:\n{err}"));
        assert!(
            line.starts_with(&format!("{cfg}: guardrails[1] (\"keeps-anything\")"))
                && line.contains("neither min_days nor max_days")
                && line.contains("never refuses anything"),
            "{body:?}: {line}"
        );
        // Reported with the file's other problem, and the sound rule is not blamed.
        assert!(
            err.contains("audit.fail_mode"),
            "{body:?}: not reported together:\n{err}"
        );
        assert!(
            !err.contains("legal-hold-1y"),
            "{body:?}: the bounded rule is blamed:\n{err}"
        );
        // `serve` refuses it the same way, before binding anything.
        let o = Command::new(BIN)
            .args(["serve", "--config", &cfg])
            .stdin(Stdio::null())
            .env_remove("RETENTION_PROXY_CONFIG")
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(EXIT_CONFIG), "serve {body:?}:\n{}", stderr(&o));
        assert!(stderr(&o).contains("\"keeps-anything\""), "{}", stderr(&o));
    }

    // A rule with either bound passes.
    for bound in ["min_days = 1", "max_days = 2555"] {
        let cfg = write(
            dir.path(),
            "bounded.toml",
            &format!("[[guardrails]]\nid = \"bounded\"\n{bound}\n"),
        );
        let o = run(&["check-config", "--config", &cfg]);
        assert_eq!(o.status.code(), Some(0), "{bound}: {}", stderr(&o));
        assert!(stdout(&o).contains("id = \"bounded\""), "{}", stdout(&o));
    }
}

/// The caret line under `line` (the source line as the toml crate shows it) points at the
/// 1-based `column` of that line.
fn assert_caret(err: &str, line_no: usize, column: usize) {
    let lines: Vec<&str> = err.lines().collect();
    let prefix = format!("{line_no} | ");
    let at = lines
        .iter()
        .position(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("line {line_no} is not shown:\n{err}"));
    let caret = lines.get(at + 1).copied().unwrap_or("");
    assert_eq!(
        caret.find('^'),
        Some(prefix.len() + column - 1),
        "the caret is not under column {column} of line {line_no}:\n{err}"
    );
    assert!(caret.trim_start().starts_with('|'), "not the caret line:\n{err}");
}

#[test]
fn a_toml_syntax_error_keeps_its_line_column_and_caret() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        dir.path(),
        "broken.toml",
        "[server]\nlisten = \"127.0.0.1:8080\"\n\n[audit\npath = \"audit.db\"\n",
    );
    let o = run(&["check-config", "--config", &cfg]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(EXIT_CONFIG), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let first = err.lines().next().unwrap_or("");
    let want = format!("{cfg}: TOML parse error at line 4, column ");
    assert!(first.starts_with(&want), "first line {first:?}, want {want:?}…\n{err}");
    let column: usize = first[want.len()..].trim().parse().expect("a column number");
    assert_eq!(column, "[audit".len() + 1, "{err}");
    assert!(err.contains("4 | [audit\n"), "the line itself is not shown:\n{err}");
    assert_caret(&err, 4, column);
    assert!(err.lines().count() >= 5, "the message is flattened:\n{err}");

    // A value of the wrong type: the same layout, with the unknown key met before it.
    let cfg = write(
        dir.path(),
        "type.toml",
        "[server]\nlistn = \"127.0.0.1:1\"\nmax_body_bytes = \"big\"\n",
    );
    let o = run(&["check-config", "--config", &cfg]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(EXIT_CONFIG), "{err}");
    assert!(
        err.contains(&format!("{cfg}: server.listn: is not a known key")),
        "{err}"
    );
    assert!(
        err.contains(&format!("{cfg}: TOML parse error at line 3, column 18")),
        "{err}"
    );
    assert!(err.contains("3 | max_body_bytes = \"big\"\n"), "{err}");
    assert_caret(&err, 3, 18);
    assert!(err.contains("invalid type"), "{err}");

    // Two syntax errors in one file: both are shown, each with its own position.
    let cfg = write(
        dir.path(),
        "two.toml",
        "[server]\nlisten = \"127.0.0.1:8080\n\n[audit]\nfail_mode = closed\n",
    );
    let o = run(&["check-config", "--config", &cfg]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(EXIT_CONFIG), "{err}");
    let positions: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with(&format!("{cfg}: TOML parse error at line ")))
        .collect();
    assert!(positions.iter().any(|l| l.contains("at line 2,")), "{err}");
    assert!(positions.iter().any(|l| l.contains("at line 5,")), "{err}");
}

// ---------------------------------------------------------------------------------------------
// The start-up line
// ---------------------------------------------------------------------------------------------

/// The built binary running `serve`, its stderr in a file; killed when dropped.
struct Serve {
    child: Child,
    log: PathBuf,
}

impl Serve {
    fn start(dir: &Path, cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Serve {
        let log = dir.join(format!("serve-{}.log", free_port()));
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .args(args)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .env("AWS_ACCESS_KEY_ID", PROXY_ACCESS_KEY_ID)
            .env("AWS_SECRET_ACCESS_KEY", PROXY_SECRET_ACCESS_KEY)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("RUST_LOG", "info")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_PROFILE")
            .env_remove("RETENTION_PROXY_CONFIG");
        for (k, v) in env {
            cmd.env(k, v);
        }
        Serve {
            child: cmd.spawn().expect("spawn the proxy binary"),
            log,
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Polls stderr until a line holds `needle`; returns that line.
    async fn wait_line(&mut self, needle: &str) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let text = self.log_text();
            if let Some(l) = text.lines().find(|l| l.contains(needle)) {
                return l.to_string();
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                // It may have written the line just before exiting.
                let text = self.log_text();
                if let Some(l) = text.lines().find(|l| l.contains(needle)) {
                    return l.to_string();
                }
                panic!("the proxy exited ({st}) without logging {needle:?}:\n{text}");
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no line with {needle:?} within {WAIT:?}:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `key=value` of a text-format log line (values quoted as tracing quotes strings).
fn text_field(line: &str, key: &str) -> Option<String> {
    let start = line.find(&format!(" {key}="))? + key.len() + 2;
    let rest = &line[start..];
    if let Some(quoted) = rest.strip_prefix('"') {
        let end = quoted.find('"')?;
        Some(quoted[..end].to_string())
    } else {
        Some(rest.split(' ').next().unwrap_or("").to_string())
    }
}

struct Everything {
    cfg: String,
    db: String,
    listen: SocketAddr,
    admin: SocketAddr,
    upstream: String,
    pg_port: u16,
    secrets: Vec<String>,
}

/// A configuration with every part the start-up line reports, secrets included.
fn everything(dir: &Path) -> Everything {
    let ca_dir = dir.join("ca");
    run_ok(&["ca", "init", "--out", &ca_dir.display().to_string()]);
    let ca_key = std::fs::read_to_string(ca_dir.join("ca.key")).unwrap();
    let ca_key_body = ca_key
        .lines()
        .find(|l| !l.starts_with("-----") && l.len() > 20)
        .expect("a key line")
        .to_string();
    let admin_token = "admin-tok-7f1c9e2b5a4d8e3f6a0b";
    let pg_password = "pg-pw-1b3d5f7h9j";
    let hook_secret = secret_file(dir, "hook.key", WEBHOOK_SECRET);
    let db = dir.join("audit.db").display().to_string();
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let upstream = format!("http://127.0.0.1:{}", free_port());
    let pg_port = free_port();
    let up = toml_str(&upstream);
    let text = format!(
        "[server]\nlisten = \"{listen}\"\nadmin_listen = \"{admin}\"\nadmin_token = {token}\n\n\
         [audit]\npath = {db}\nproxy_instance = \"edge-7\"\n\n\
         [audit.central]\nurl = \"postgres://retention:{pg_password}@127.0.0.1:{pg_port}/audit?sslmode=disable\"\n\n\
         [upstreams]\nchime = {up}\nchime_messaging = {up}\nchime_identity = {up}\nslack = {up}\n\n\
         [forward]\nca_cert = {ca_cert}\nca_key = {ca_key}\n\n\
         [[guardrails]]\nid = \"floor\"\nmin_days = 30\n\n\
         [[guardrails]]\nid = \"ceiling\"\nmax_days = 2555\n\n\
         [[guardrails]]\nid = \"slack-floor\"\ntargets = [\"slack.channel_retention\"]\nmin_days = 90\n\n\
         [[alerts]]\nid = \"hook\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:{hook_port}/hook\"\nsecret_file = {hook}\n\n\
         [[alerts]]\nid = \"siem\"\nkind = \"syslog\"\naddress = \"udp://127.0.0.1:{syslog_port}\"\n",
        token = toml_str(admin_token),
        db = toml_str(&db),
        ca_cert = toml_str(&ca_dir.join("ca.pem").display().to_string()),
        ca_key = toml_str(&ca_dir.join("ca.key").display().to_string()),
        hook_port = free_port(),
        hook = toml_str(&hook_secret),
        syslog_port = free_port(),
    );
    let cfg = write(dir, "proxy.toml", &text);
    Everything {
        cfg,
        db,
        listen,
        admin,
        upstream,
        pg_port,
        secrets: vec![
            admin_token.to_string(),
            pg_password.to_string(),
            WEBHOOK_SECRET.to_string(),
            ca_key_body,
        ],
    }
}

fn assert_no_secret(log: &str, secrets: &[String]) {
    for s in secrets {
        assert!(
            !log.contains(s.as_str()),
            "a secret ({} chars) is in the log:\n{log}",
            s.len()
        );
    }
}

#[tokio::test]
async fn the_startup_line_says_what_the_proxy_runs_with_and_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let e = everything(dir.path());
    let mut p = Serve::start(dir.path(), dir.path(), &["--config", &e.cfg], &[]);
    let line = p.wait_line("retention-proxy starting").await;
    let field = |k: &str| text_field(&line, k).unwrap_or_else(|| panic!("no {k}= in {line}"));
    assert!(line.contains(" INFO "), "{line}");
    assert_eq!(field("config"), e.cfg);
    assert_eq!(field("database"), e.db);
    assert_eq!(field("proxy_instance"), "edge-7");
    assert_eq!(field("listen"), e.listen.to_string());
    assert_eq!(field("admin_listen"), e.admin.to_string());
    assert_eq!(field("listen_tls"), "false");
    let upstreams = field("upstreams");
    for family in ["chime", "chime_messaging", "chime_identity", "slack"] {
        assert!(
            upstreams.contains(&format!("{family}={}", e.upstream)),
            "{family} missing from {upstreams:?}"
        );
    }
    assert_eq!(field("guardrails"), "3");
    assert_eq!(field("alert_sinks"), "2");
    assert_eq!(field("tls_interception"), "true");
    assert_eq!(
        field("fleet_store"),
        format!(
            "postgres://retention:REDACTED@127.0.0.1:{}/audit?sslmode=disable",
            e.pg_port
        )
    );
    assert_eq!(field("version"), env!("CARGO_PKG_VERSION"));
    // The proxy goes on to listen where the line says.
    p.wait_line("proxy listening").await;
    assert_no_secret(&p.log_text(), &e.secrets);
}

#[tokio::test]
async fn the_startup_line_in_json() {
    let dir = tempfile::tempdir().unwrap();
    let e = everything(dir.path());
    let mut p = Serve::start(
        dir.path(),
        dir.path(),
        &["--config", &e.cfg, "--log-format", "json"],
        &[],
    );
    let line = p.wait_line("retention-proxy starting").await;
    let v: Value = serde_json::from_str(&line).unwrap_or_else(|err| panic!("not JSON ({err}): {line}"));
    assert_eq!(v["level"], "INFO", "{v}");
    let f = &v["fields"];
    assert_eq!(f["message"], "retention-proxy starting", "{v}");
    assert_eq!(f["config"], e.cfg.as_str(), "{v}");
    assert_eq!(f["database"], e.db.as_str(), "{v}");
    assert_eq!(f["proxy_instance"], "edge-7", "{v}");
    assert_eq!(f["listen"], e.listen.to_string(), "{v}");
    assert_eq!(f["admin_listen"], e.admin.to_string(), "{v}");
    assert_eq!(f["guardrails"], 3, "{v}");
    assert_eq!(f["alert_sinks"], 2, "{v}");
    assert_eq!(f["tls_interception"], true, "{v}");
    assert_eq!(f["listen_tls"], false, "{v}");
    assert_eq!(
        f["fleet_store"],
        format!(
            "postgres://retention:REDACTED@127.0.0.1:{}/audit?sslmode=disable",
            e.pg_port
        ),
        "{v}"
    );
    let upstreams = f["upstreams"].as_str().unwrap_or_default();
    assert!(upstreams.contains(&format!("slack={}", e.upstream)), "{v}");
    p.wait_line("proxy listening").await;
    assert_no_secret(&p.log_text(), &e.secrets);
}

#[tokio::test]
async fn the_startup_line_of_embedded_defaults() {
    // No file: the embedded defaults (127.0.0.1:8080 and :9090, retention-audit.db in the
    // working directory). The line comes before anything is bound, so it is logged even when
    // another process holds those ports.
    let dir = tempfile::tempdir().unwrap();
    let mut p = Serve::start(dir.path(), dir.path(), &["--log-format", "json"], &[]);
    let line = p.wait_line("retention-proxy starting").await;
    let v: Value = serde_json::from_str(&line).unwrap_or_else(|err| panic!("not JSON ({err}): {line}"));
    let f = &v["fields"];
    assert_eq!(f["config"], "embedded defaults", "{v}");
    assert_eq!(f["database"], "retention-audit.db", "{v}");
    assert_eq!(f["listen"], "127.0.0.1:8080", "{v}");
    assert_eq!(f["admin_listen"], "127.0.0.1:9090", "{v}");
    assert_eq!(f["guardrails"], 0, "{v}");
    assert_eq!(f["alert_sinks"], 0, "{v}");
    assert_eq!(f["tls_interception"], false, "{v}");
    assert!(f.get("fleet_store").is_none(), "no fleet store is configured: {v}");
    assert!(
        f["upstreams"]
            .as_str()
            .unwrap_or_default()
            .contains("slack=https://slack.com:443"),
        "{v}"
    );
    assert!(!f["proxy_instance"].as_str().unwrap_or_default().is_empty(), "{v}");
}

#[tokio::test]
async fn the_startup_line_names_an_admin_only_console_and_a_config_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let cfg = write(
        dir.path(),
        "console.toml",
        &format!(
            "[server]\nlisten = \"\"\nadmin_listen = \"{admin}\"\n\n[audit]\npath = \"console.db\"\n\n\
             [audit.central]\nurl = \"postgresql://reader@127.0.0.1:{}/audit?password=q-pw-55aa77\"\n",
            free_port()
        ),
    );
    let mut p = Serve::start(dir.path(), dir.path(), &[], &[("RETENTION_PROXY_CONFIG", &cfg)]);
    let line = p.wait_line("retention-proxy starting").await;
    assert_eq!(text_field(&line, "config").as_deref(), Some(cfg.as_str()), "{line}");
    assert_eq!(
        text_field(&line, "listen").as_deref(),
        Some("none (admin-only console)"),
        "{line}"
    );
    assert_eq!(text_field(&line, "admin_listen"), Some(admin.to_string()), "{line}");
    let store = text_field(&line, "fleet_store").unwrap_or_default();
    assert!(store.ends_with("/audit?password=REDACTED"), "{line}");
    assert!(!p.log_text().contains("q-pw-55aa77"), "{}", p.log_text());
}

// ---------------------------------------------------------------------------------------------
// LookupEvents: every X-Amz-Target form, the token first
// ---------------------------------------------------------------------------------------------

const BOTOCORE_TARGET: &str = "com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.LookupEvents";
const SMITHY_TARGET: &str = "CloudTrail_20131101.LookupEvents";
const ADMIN_TOKEN: &str = "lookup-admin-token-3c5e7a9b1d";

async fn lookup(admin: SocketAddr, target: Option<&str>, token: Option<&str>, body: &str) -> SimpleResponse {
    let mut b = Request::builder()
        .method("POST")
        .uri("/")
        .header("content-type", "application/x-amz-json-1.1");
    if let Some(t) = target {
        b = b.header("x-amz-target", t);
    }
    if let Some(t) = token {
        b = b.header("x-amz-security-token", t);
    }
    let req = b.body(Bytes::from(body.to_string())).unwrap();
    tokio::time::timeout(Duration::from_secs(10), fake_vendor::send(admin, req))
        .await
        .expect("LookupEvents answered in time")
        .expect("LookupEvents answered")
}

/// The `EventId`s of a LookupEvents answer's `Events`.
fn ids(events: &Value) -> Vec<String> {
    events
        .as_array()
        .map(|es| {
            es.iter()
                .map(|e| e["EventId"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// The CloudTrail error code of an answer: `x-amzn-ErrorType` and `__type` agree on it.
fn error_code(r: &SimpleResponse) -> String {
    let body = r.json();
    let code = body["__type"].as_str().unwrap_or_default().to_string();
    assert_eq!(r.header("x-amzn-errortype"), Some(code.as_str()), "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    assert_eq!(r.header("content-type"), Some("application/x-amz-json-1.1"));
    code
}

/// A proxy with an admin token in front of `fake`, its stderr in `dir`.
async fn proxy_with_token(dir: &Path, fake: &FakeVendor) -> (Serve, SocketAddr, SocketAddr) {
    for _ in 0..5 {
        let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        if listen == admin {
            continue;
        }
        let text = binary::config_text(
            listen,
            admin,
            &dir.join("audit.db"),
            &binary::BinaryProxyOpts::new(&fake.url()),
        )
        .replacen(
            "[server]\n",
            &format!("[server]\nadmin_token = {}\n", toml_str(ADMIN_TOKEN)),
            1,
        );
        let cfg = write(dir, "lookup.toml", &text);
        let mut p = Serve::start(dir, dir, &["--config", &cfg], &[]);
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let get = Request::get("/healthz").body(Bytes::new()).unwrap();
            if let Ok(r) = fake_vendor::send(admin, get).await
                && r.status == 200
            {
                return (p, listen, admin);
            }
            if let Ok(Some(_)) = p.child.try_wait() {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the proxy did not answer /healthz:\n{}",
                p.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let log = p.log_text();
        assert!(log.contains("cannot listen"), "the proxy exited:\n{log}");
    }
    panic!("no free ports for the proxy after five tries");
}

#[tokio::test]
async fn lookup_events_takes_every_sdk_target_form_and_checks_the_token_first() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeVendor::start(FakeVendorOpts::default()).await;
    let (p, listen, admin) = proxy_with_token(dir.path(), &fake).await;

    // One audited call, so that a lookup has something to find.
    let call = slack_form(
        SLACK_SET,
        "channel_id=C0123456789&duration_days=400",
        Some(SLACK_TOKEN),
        &[],
    );
    let r = fake_vendor::send(listen, call).await.expect("the Slack call");
    assert_eq!(r.status, 200, "{}", support::body_text(&r));
    let deadline = tokio::time::Instant::now() + WAIT;
    let events = loop {
        let r = lookup(admin, Some(BOTOCORE_TARGET), Some(ADMIN_TOKEN), "{}").await;
        assert_eq!(r.status, 200, "{}", support::body_text(&r));
        let events = r.json()["Events"].as_array().cloned().unwrap_or_default();
        if !events.is_empty() {
            break events;
        }
        assert!(tokio::time::Instant::now() < deadline, "the call was never recorded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["EventName"], "admin.conversations.setCustomRetention");
    let want = ids(&json!(events));

    // Both forms, with and without a body, answer the same events.
    for target in [BOTOCORE_TARGET, SMITHY_TARGET] {
        for body in ["{}", "", "{\"MaxResults\": 5}"] {
            let r = lookup(admin, Some(target), Some(ADMIN_TOKEN), body).await;
            assert_eq!(r.status, 200, "{target} {body:?}: {}", support::body_text(&r));
            assert_eq!(r.header("content-type"), Some("application/x-amz-json-1.1"));
            assert_eq!(ids(&r.json()["Events"]), want, "{target} {body:?}");
        }
        // And the same validation.
        let r = lookup(admin, Some(target), Some(ADMIN_TOKEN), "{\"MaxResults\": 51}").await;
        assert_eq!(r.status, 400, "{target}");
        assert_eq!(error_code(&r), "InvalidMaxResultsException", "{target}");
    }

    // Another operation, or another service's LookupEvents, is unknown (with the token).
    for target in [
        Some("CloudTrail_20131101.DescribeTrails"),
        Some("com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.DescribeTrails"),
        Some("LookupEvents"),
        Some("cloudtrail_20131101.lookupevents"),
        Some("Other_20131101.LookupEvents"),
        Some(""),
        None,
    ] {
        let r = lookup(admin, target, Some(ADMIN_TOKEN), "{}").await;
        assert_eq!(r.status, 400, "{target:?}: {}", support::body_text(&r));
        assert_eq!(error_code(&r), "UnknownOperationException", "{target:?}");
    }

    // Without the token, or with a wrong one: 403 whatever the operation, before it is read.
    let wrong = format!("not-{ADMIN_TOKEN}");
    for token in [None, Some(wrong.as_str()), Some("")] {
        for target in [
            Some(BOTOCORE_TARGET),
            Some(SMITHY_TARGET),
            Some("CloudTrail_20131101.DescribeTrails"),
            None,
        ] {
            let r = lookup(admin, target, token, "{}").await;
            assert_eq!(r.status, 403, "{target:?} {token:?}: {}", support::body_text(&r));
            assert_eq!(error_code(&r), "AccessDeniedException", "{target:?} {token:?}");
            assert!(r.json()["Events"].is_null(), "{target:?} {token:?}");
            assert!(!support::body_text(&r).contains(ADMIN_TOKEN));
        }
        // A body the endpoint could not read is not read either.
        let r = lookup(admin, Some(SMITHY_TARGET), token, "not json").await;
        assert_eq!(r.status, 403, "{token:?}");
    }
    // The bearer form of the token works for LookupEvents too.
    let req = Request::post("/")
        .header("content-type", "application/x-amz-json-1.1")
        .header("x-amz-target", SMITHY_TARGET)
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .body(Bytes::from_static(b"{}"))
        .unwrap();
    let r = fake_vendor::send(admin, req).await.unwrap();
    assert_eq!(r.status, 200, "{}", support::body_text(&r));
    assert_eq!(ids(&r.json()["Events"]), want);
    assert!(!p.log_text().contains(ADMIN_TOKEN), "the admin token is in the log");
}
