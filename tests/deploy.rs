//! What deploying and operating the proxy rests on, shown on the built binary:
//! `retention-proxy health` (the container's HEALTHCHECK), `server.admin_token_file`, the
//! image's configuration (`config/docker.toml`) and Dockerfile, and `/metrics` against its
//! reference, `docs/metrics.md` (every metric the binary emits is documented there, and every
//! documented one is emitted).

mod support;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::binary::{BIN, READY_WAIT, assert_one_line_error, free_port, stderr, stdout};
use support::fixtures::{PROXY_ACCESS_KEY_ID, PROXY_SECRET_ACCESS_KEY};
use support::toml_str;

const TOKEN: &str = "s3cret-admin-token-for-the-health-check";

/// One `GET`-style exchange over a fresh connection (`Connection: close`): status and body.
fn http(addr: SocketAddr, request_line: &str, headers: &[(&str, &str)]) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(15)))?;
    let mut req = format!("{request_line}\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer)?;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// A token file of mode `mode` holding `text`.
fn secret_file(path: &Path, text: &str, mode: u32) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    path.to_path_buf()
}

/// A `retention-proxy` command without the caller's configuration variable.
fn command(args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args)
        .stdin(Stdio::null())
        .env_remove("RETENTION_PROXY_CONFIG")
        .env_remove("PGPASSWORD");
    c
}

fn run(args: &[&str]) -> Output {
    command(args).output().expect("run the binary")
}

fn health(config: &Path) -> Output {
    run(&["health", "--config", config.to_str().unwrap()])
}

/// `retention-proxy serve` on a configuration this test wrote.
struct Served {
    child: Child,
    /// The configuration file.
    config: PathBuf,
    /// The admin listener, as a client reaches it.
    admin: SocketAddr,
    /// The proxy listener.
    addr: SocketAddr,
    log: PathBuf,
}

impl Served {
    /// Writes `text` (with `{listen}`, `{admin}` and `{dir}` filled in) to `dir/proxy.toml`,
    /// starts the binary and waits until `/healthz` answers.
    fn start(dir: &Path, text: &str) -> Served {
        let (p, a) = (free_port(), free_port());
        let config = dir.join("proxy.toml");
        let text = text
            .replace("{listen}", &format!("127.0.0.1:{p}"))
            .replace("{admin}", &format!("127.0.0.1:{a}"))
            .replace("{dir}", dir.to_str().unwrap());
        std::fs::write(&config, text).unwrap();
        Served::spawn(dir, config, format!("127.0.0.1:{p}"), format!("127.0.0.1:{a}"))
    }

    fn spawn(dir: &Path, config: PathBuf, addr: String, admin: String) -> Served {
        let log = dir.join("proxy.log");
        let child = command(&["serve", "--config", config.to_str().unwrap()])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .env("AWS_ACCESS_KEY_ID", PROXY_ACCESS_KEY_ID)
            .env("AWS_SECRET_ACCESS_KEY", PROXY_SECRET_ACCESS_KEY)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_PROFILE")
            .spawn()
            .expect("spawn the proxy");
        let mut s = Served {
            child,
            config,
            admin: admin.parse().unwrap(),
            addr: addr.parse().unwrap(),
            log,
        };
        let deadline = Instant::now() + READY_WAIT;
        loop {
            if let Ok(Some(st)) = s.child.try_wait() {
                panic!("the proxy exited with {st}:\n{}", s.log_text());
            }
            if let Ok((200, _)) = http(s.admin, "GET /healthz HTTP/1.1", &[]) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "the proxy did not answer /healthz:\n{}",
                s.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn metrics(&self) -> String {
        let (status, body) = http(
            self.admin,
            "GET /metrics HTTP/1.1",
            &[("Authorization", &format!("Bearer {TOKEN}"))],
        )
        .expect("GET /metrics");
        assert_eq!(status, 200, "{body}");
        body
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const WITH_TOKEN_FILE: &str = "[server]\nlisten = \"{listen}\"\nadmin_listen = \"{admin}\"\n\
     admin_token_file = \"{dir}/secrets/admin_token\"\n[audit]\npath = \"{dir}/audit.db\"\n";

#[test]
fn health_is_0_for_a_healthy_proxy_and_1_with_another_token() {
    let dir = tempfile::tempdir().unwrap();
    // A final newline in the file is not part of the token.
    secret_file(&dir.path().join("secrets/admin_token"), &format!("{TOKEN}\n"), 0o600);
    let proxy = Served::start(dir.path(), WITH_TOKEN_FILE);

    let o = health(&proxy.config);
    assert!(o.status.success(), "health failed: {}", stderr(&o));
    assert!(stdout(&o).contains("healthy"), "{}", stdout(&o));
    // The token from the file is the one the listener wants.
    let bearer = format!("Bearer {TOKEN}");
    assert_eq!(
        http(proxy.admin, "GET /metrics HTTP/1.1", &[("Authorization", &bearer)])
            .unwrap()
            .0,
        200
    );
    assert_eq!(http(proxy.admin, "GET /metrics HTTP/1.1", &[]).unwrap().0, 401);

    // The same listener asked with another token: unhealthy, in one sentence.
    let other = dir.path().join("other.toml");
    let text = std::fs::read_to_string(&proxy.config).unwrap();
    std::fs::write(&other, text.replace("secrets/admin_token", "secrets/other_token")).unwrap();
    secret_file(&dir.path().join("secrets/other_token"), "not-the-token", 0o400);
    let o = health(&other);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_one_line_error(&o, "health with another token");
    assert!(
        stderr(&o).contains("refused the configured admin token"),
        "{}",
        stderr(&o)
    );
    assert!(!stderr(&o).contains("not-the-token") && !stderr(&o).contains(TOKEN));

    // check-config never shows the token, whether inline or from the file.
    let o = run(&["check-config", "--config", proxy.config.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("admin_token_file = "), "{}", stdout(&o));
    assert!(!stdout(&o).contains(TOKEN) && !stderr(&o).contains(TOKEN));
}

#[test]
fn health_is_1_without_an_admin_listener_or_an_answer() {
    let dir = tempfile::tempdir().unwrap();
    // No admin listener configured: it says so.
    let none = dir.path().join("none.toml");
    std::fs::write(&none, "[server]\nadmin_listen = \"\"\n").unwrap();
    let o = health(&none);
    assert_eq!(o.status.code(), Some(1));
    assert_one_line_error(&o, "health without an admin listener");
    assert!(stderr(&o).contains("no admin listener is configured"), "{}", stderr(&o));

    // Configured, but nothing listens there.
    let closed = dir.path().join("closed.toml");
    std::fs::write(
        &closed,
        format!("[server]\nadmin_listen = \"127.0.0.1:{}\"\n", free_port()),
    )
    .unwrap();
    let o = health(&closed);
    assert_eq!(o.status.code(), Some(1));
    assert_one_line_error(&o, "health with nothing listening");
    assert!(stderr(&o).contains("cannot ask the admin listener"), "{}", stderr(&o));

    // Something accepts the connection and never answers: the short timeout ends it.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let mute = dir.path().join("mute.toml");
    std::fs::write(&mute, format!("[server]\nadmin_listen = \"127.0.0.1:{port}\"\n")).unwrap();
    let started = Instant::now();
    let o = health(&mute);
    let took = started.elapsed();
    assert_eq!(o.status.code(), Some(1));
    assert_one_line_error(&o, "health against a silent listener");
    assert!(stderr(&o).contains("did not answer /healthz within"), "{}", stderr(&o));
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(10),
        "{took:?}"
    );
    drop(silent);

    // Not a configuration it can read: one sentence, exit 1 (HEALTHCHECK's "unhealthy").
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[server]\nadmin_lsten = \"127.0.0.1:9\"\n").unwrap();
    let o = health(&bad);
    assert_eq!(o.status.code(), Some(1));
    assert_one_line_error(&o, "health with a bad configuration");
    assert!(stderr(&o).contains("admin_lsten"), "{}", stderr(&o));
}

#[test]
fn admin_token_file_is_checked_like_every_secret_file() {
    let dir = tempfile::tempdir().unwrap();
    let check = |text: String| {
        let f = dir.path().join("c.toml");
        std::fs::write(&f, text).unwrap();
        run(&["check-config", "--config", f.to_str().unwrap()])
    };
    let token = dir.path().join("token");
    let server = |extra: &str| {
        format!(
            "[server]\nlisten = \"127.0.0.1:8080\"\nadmin_listen = \"0.0.0.0:9090\"\n{extra}\n[audit]\npath = \"{}\"\n",
            dir.path().join("a.db").display()
        )
    };
    let token_line = format!("admin_token_file = {}", toml_str(token.to_str().unwrap()));

    // A file others may read is refused, naming it.
    secret_file(&token, TOKEN, 0o644);
    let o = check(server(&token_line));
    assert_eq!(o.status.code(), Some(64), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("server.admin_token_file") && stderr(&o).contains("0644"),
        "{}",
        stderr(&o)
    );
    // Mode 0600 satisfies a listener that is not loopback.
    secret_file(&token, &format!("{TOKEN}\n\n"), 0o600);
    let o = check(server(&token_line));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stdout(&o).contains(TOKEN));
    // Not both ways at once; an empty file is no token; a missing file is named.
    let o = check(server(&format!("{token_line}\nadmin_token = \"x\"")));
    assert_eq!(o.status.code(), Some(64));
    assert!(stderr(&o).contains("cannot both be set"), "{}", stderr(&o));
    secret_file(&token, "\n", 0o600);
    let o = check(server(&token_line));
    assert_eq!(o.status.code(), Some(64));
    assert!(stderr(&o).contains("is empty"), "{}", stderr(&o));
    std::fs::remove_file(&token).unwrap();
    let o = check(server(&token_line));
    assert_eq!(o.status.code(), Some(64));
    assert!(stderr(&o).contains(token.to_str().unwrap()), "{}", stderr(&o));
    // Without either, a non-loopback admin listener is still refused.
    let o = check(server(""));
    assert_eq!(o.status.code(), Some(64));
    assert!(stderr(&o).contains("server.admin_token"), "{}", stderr(&o));
}

/// `config/docker.toml` with its absolute paths under `root`, its listeners on free ports.
fn docker_config_under(root: &Path) -> (PathBuf, u16, u16) {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/docker.toml")).unwrap();
    let (p, a) = (free_port(), free_port());
    let r = root.to_str().unwrap();
    let text = text
        .replace("\"/", &format!("\"{r}/"))
        .replace("0.0.0.0:8080", &format!("0.0.0.0:{p}"))
        .replace("0.0.0.0:9090", &format!("0.0.0.0:{a}"));
    let config = root.join("etc/retention-proxy/config.toml");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    std::fs::write(&config, text).unwrap();
    (config, p, a)
}

#[test]
fn the_image_configuration_serves_and_its_healthcheck_passes() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let (config, p, a) = docker_config_under(r);
    let table: toml::Table = toml::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    assert_eq!(table["server"]["admin_listen"].as_str(), Some(&*format!("0.0.0.0:{a}")));

    // Without its secrets it refuses to start, naming both.
    let o = run(&["check-config", "--config", config.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(64));
    for key in ["server.admin_token_file", "reverse.clients_file"] {
        assert!(stderr(&o).contains(key), "{key}: {}", stderr(&o));
    }

    secret_file(&r.join("run/secrets/admin_token"), &format!("{TOKEN}\n"), 0o400);
    secret_file(
        &r.join("etc/retention-proxy/clients.toml"),
        "[[client]]\nname = \"tool\"\naccess_key_id = \"RPCLIENTEXAMPLE0001\"\nsecret_access_key = \"c2VjcmV0LWtleS1mb3ItdGhlLWltYWdlLXRlc3Q\"\n",
        0o600,
    );
    let state = r.join("var/lib/retention-proxy");
    std::fs::create_dir_all(&state).unwrap();
    let before = files_under(r);
    let proxy = Served::spawn(r, config.clone(), format!("127.0.0.1:{p}"), format!("127.0.0.1:{a}"));
    // The HEALTHCHECK's command: the wildcard admin listener is asked on loopback, with the
    // token from the mounted file.
    let o = health(&config);
    assert!(
        o.status.success(),
        "health failed: {}\n{}",
        stderr(&o),
        proxy.log_text()
    );
    // Every file the proxy wrote is on the volume (the root filesystem can be read-only).
    let written: Vec<_> = files_under(r).difference(&before).cloned().collect();
    assert!(written.iter().any(|f| f.ends_with("retention-audit.db")), "{written:?}");
    let stray: Vec<_> = written
        .iter()
        .filter(|f| !f.starts_with(&state) && **f != proxy.log)
        .collect();
    assert!(stray.is_empty(), "written outside the volume: {stray:?}");
}

fn files_under(dir: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.insert(p);
            }
        }
    }
    out
}

#[test]
fn the_dockerfile_builds_what_it_copies_and_checks_health() {
    let dockerfile = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile")).unwrap();
    let ignore = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/.dockerignore")).unwrap();
    // The context is an allow-list: everything out, then what the build copies back in.
    let allowed: Vec<&str> = ignore
        .lines()
        .filter_map(|l| l.trim().strip_prefix('!'))
        .map(|l| l.trim_end_matches('/'))
        .collect();
    assert!(
        ignore.lines().any(|l| l.trim() == "*"),
        ".dockerignore does not start from nothing"
    );
    let mut copied = 0;
    for line in dockerfile
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from="))
    {
        let words: Vec<&str> = line.split_whitespace().collect();
        for src in &words[1..words.len() - 1] {
            copied += 1;
            assert!(allowed.contains(src), "{src} is copied but .dockerignore leaves it out");
        }
    }
    assert!(copied >= 4, "{copied}");
    for secret in ["clients.toml", "*.db", "admin_token"] {
        assert!(!allowed.contains(&secret), "{secret} would be in the build context");
    }
    // Dependencies in their own layer, built before the sources are copied, with the same profile.
    let deps = dockerfile.find("cargo build --profile dist").unwrap();
    let src = dockerfile.find("COPY src ./src").unwrap();
    assert!(deps < src, "the dependency layer must come before the sources");
    assert_eq!(
        dockerfile
            .matches("cargo build --profile dist --locked --bin retention-proxy")
            .count(),
        2
    );
    // Non-root by number (Kubernetes' runAsNonRoot checks it), the health check by the binary.
    assert!(dockerfile.contains("\nUSER 10001:10001\n"));
    assert!(
        dockerfile
            .contains("CMD [\"retention-proxy\", \"health\", \"--config\", \"/etc/retention-proxy/config.toml\"]")
    );
    assert!(dockerfile.contains("COPY config/docker.toml /etc/retention-proxy/config.toml"));
    // Everything written is on the volume: the database and SQLite's temporary files.
    assert!(dockerfile.contains("VOLUME [\"/var/lib/retention-proxy\"]"));
    assert!(dockerfile.contains("ENV SQLITE_TMPDIR=/var/lib/retention-proxy\n"));
    let docker_toml = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/docker.toml")).unwrap();
    assert!(docker_toml.contains("path = \"/var/lib/retention-proxy/"));
}

/// Metric names a scrape declares (`# TYPE` lines), as their samples are named: counters
/// with `_total`, info with `_info`.
fn declared(scrape: &str) -> BTreeSet<String> {
    scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| {
            let (name, kind) = l.split_once(' ').unwrap();
            match kind {
                "counter" if !name.ends_with("_total") => format!("{name}_total"),
                "info" => format!("{name}_info"),
                _ => name.to_string(),
            }
        })
        .collect()
}

/// The names `docs/metrics.md` documents: the first column of its tables.
fn documented() -> BTreeSet<String> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/metrics.md")).unwrap();
    doc.lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`'))
        .map(|(name, _)| name.to_string())
        .filter(|n| n.starts_with("retention_proxy_"))
        .collect()
}

/// A sample's value, by its name and labels as written.
fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn metrics_are_all_documented_and_count_upstream_failures() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    secret_file(&d.join("secrets/admin_token"), TOKEN, 0o600);
    // Chime: nothing listens. Slack: accepts, never answers. A non-vendor host: TLS to
    // something that speaks plain HTTP.
    let closed = free_port();
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let plain = TcpListener::bind("127.0.0.1:0").unwrap();
    let plain_port = plain.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in plain.incoming().flatten() {
            let mut s = s;
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n");
        }
    });
    // The central store is configured (its metrics are then shown) but not reachable.
    let pg_port = free_port();
    let text = format!(
        "{WITH_TOKEN_FILE}[audit.central]\nurl = \"postgres://retention@127.0.0.1:{pg_port}/audit?sslmode=disable\"\n\
         [upstreams]\nchime = \"http://127.0.0.1:{closed}\"\nslack = \"http://127.0.0.1:{silent}\"\n\
         request_timeout = \"500ms\"\n\
         [forward]\nallow_hosts = [\"plain.example.test\"]\n\
         [forward.resolve]\n\"plain.example.test\" = \"https://127.0.0.1:{plain_port}\"\n",
        silent = silent.local_addr().unwrap().port(),
    );
    let proxy = Served::start(d, &text);

    // No route: refused before routing.
    let (s, body) = http(proxy.addr, "GET /no/such/route HTTP/1.1", &[]).unwrap();
    assert!((400..500).contains(&s), "{s} {body}");
    let (s, body) = http(proxy.addr, "GET /accounts/111122223333/users HTTP/1.1", &[]).unwrap();
    assert_eq!(s, 502, "{body}");
    let (s, body) = http(proxy.addr, "GET /api/users.list HTTP/1.1", &[]).unwrap();
    assert_eq!(s, 504, "{body}");
    let (s, body) = http(
        proxy.addr,
        "GET http://plain.example.test/x HTTP/1.1",
        &[("Host", "plain.example.test")],
    )
    .unwrap();
    assert_eq!(s, 502, "{body}");

    let scrape = proxy.metrics();
    for (series, want) in [
        ("retention_proxy_refused_requests_total{route=\"none\"}", 1.0),
        (
            "retention_proxy_upstream_errors_total{family=\"chime\",kind=\"connect\"}",
            1.0,
        ),
        (
            "retention_proxy_upstream_errors_total{family=\"slack\",kind=\"timeout\"}",
            1.0,
        ),
        (
            "retention_proxy_upstream_errors_total{family=\"other\",kind=\"tls\"}",
            1.0,
        ),
        (
            &format!(
                "retention_proxy_build_info{{version=\"{}\"}}",
                env!("CARGO_PKG_VERSION")
            ),
            1.0,
        ),
    ] {
        assert_eq!(sample(&scrape, series), Some(want), "{series}:\n{scrape}");
    }
    // The database's size: the file and its write-ahead log, as they are on disk.
    let db = d.join("audit.db");
    let on_disk = || {
        let wal = std::fs::metadata(d.join("audit.db-wal")).map_or(0, |m| m.len());
        (std::fs::metadata(&db).unwrap().len() + wal) as f64
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let shown = sample(&proxy.metrics(), "retention_proxy_audit_db_bytes").expect("audit_db_bytes");
        assert!(shown > 0.0);
        if shown == on_disk() {
            break;
        }
        assert!(Instant::now() < deadline, "{shown} bytes shown, {} on disk", on_disk());
        std::thread::sleep(Duration::from_millis(50));
    }

    // Everything emitted is documented.
    let (declared, documented) = (declared(&scrape), documented());
    let missing: Vec<_> = declared.difference(&documented).collect();
    assert!(missing.is_empty(), "not in docs/metrics.md: {missing:?}");
    assert!(declared.len() >= 15, "{declared:?}");
    // And everything documented is still emitted: by this scrape, or (a labelled metric not
    // counted yet: alerts, intercepted calls, Slack lookups) registered under its name.
    let sources = [
        include_str!("../src/admin/metrics.rs"),
        include_str!("../src/audit/postgres/ship.rs"),
    ]
    .concat();
    for name in documented.difference(&declared) {
        let short = name.trim_start_matches("retention_proxy_");
        let short = short.strip_suffix("_total").unwrap_or(short);
        let short = short.strip_suffix("_info").unwrap_or(short);
        assert!(
            sources.contains(&format!("\"{short}\"")),
            "{name} is in docs/metrics.md but neither emitted nor registered"
        );
    }
    drop(silent);
}
