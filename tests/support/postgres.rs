//! A throw-away PostgreSQL cluster for the central-store tests (SPEC §9): the distribution's
//! own server binaries, a fresh data directory in a temporary directory, `127.0.0.1` on a free
//! port, password (SCRAM) authentication for every connection, and a database `audit` owned
//! by the unprivileged role `retention`.
//!
//! - The binaries are found with `pg_config --bindir`, else the newest
//!   `/usr/lib/postgresql/*/bin` (Debian's layout), else the directory of `initdb` on `PATH`.
//! - PostgreSQL refuses to run as root. When the tests run as root, the server runs as the
//!   system user [`SERVER_USER`] (created when missing) through `runuser`, and the temporary
//!   directory is handed to that user; otherwise it runs as the test's own user.
//! - Settings are PostgreSQL's defaults (durability included: `fsync` and
//!   `synchronous_commit` stay on) except `listen_addresses`, `port`,
//!   `unix_socket_directories` (inside the temporary directory) and `max_connections`.
//! - [`Postgres::start_tls`] also turns on `ssl` with a given certificate and key (files of
//!   the server's user, mode 0600, named by `ssl_cert_file` / `ssl_key_file`) and, when asked,
//!   allows TCP connections only over TLS (`hostssl` lines and no `host` line in
//!   `pg_hba.conf`), so that the server itself refuses a plaintext connection.
//! - Readiness is polled with `pg_isready` against a deadline; nothing sleeps a fixed time.
//! - [`Postgres::stop`], [`Postgres::start_again`] (same data directory, same port) and
//!   [`Postgres::kill9`] make outages and crashes; dropping a [`Postgres`] stops the server
//!   and removes the directory.
//!
//! Starting, stopping and `psql` block the calling thread (they wait for PostgreSQL's own
//! tools); from an async test call them inside `tokio::task::block_in_place` on a
//! multi-threaded runtime. [`Postgres::client`] is async (tokio-postgres: no TLS on loopback,
//! or `sslmode=require` trusting the cluster's CA when it was started with TLS).

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, NoTls};

/// The system user the server runs as when the tests run as root.
pub const SERVER_USER: &str = "retention-pg";
/// The superuser role (its password is random per cluster).
pub const SUPERUSER: &str = "postgres";
/// The role that owns [`DATABASE`]: what a proxy connects as.
pub const ROLE: &str = "retention";
/// The database the proxies write to.
pub const DATABASE: &str = "audit";
/// The least-privilege role [`Postgres::least_privilege_url`] creates.
pub const WRITER_ROLE: &str = "retention_writer";

/// How long PostgreSQL may take to start, stop or become ready.
pub const PG_WAIT: Duration = Duration::from_secs(60);

/// The server programs this module runs (all in one directory).
const PROGRAMS: [&str; 5] = ["initdb", "pg_ctl", "postgres", "pg_isready", "psql"];

/// The directory holding PostgreSQL's server programs; panics, saying how to install them,
/// when there is none.
pub fn bindir() -> PathBuf {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    DIR.get_or_init(find_bindir).clone().unwrap_or_else(|| {
        panic!(
            "PostgreSQL's server programs ({}) were not found (pg_config --bindir, \
             /usr/lib/postgresql/*/bin, PATH): the central-store tests need a real PostgreSQL; \
             install the distribution's package (apt-get install -y --no-install-recommends postgresql)",
            PROGRAMS.join(", ")
        )
    })
}

fn has_programs(dir: &Path) -> bool {
    PROGRAMS.iter().all(|p| dir.join(p).is_file())
}

fn find_bindir() -> Option<PathBuf> {
    // 1. What pg_config says (it may belong to a client-only install: check the programs).
    if let Ok(o) = Command::new("pg_config").arg("--bindir").stdin(Stdio::null()).output()
        && o.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
        if has_programs(&dir) {
            return Some(dir);
        }
    }
    // 2. Debian and Ubuntu: /usr/lib/postgresql/<major>/bin, the newest major version.
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let major: u32 = e.file_name().to_str()?.parse().ok()?;
            Some((major, e.path().join("bin")))
        })
        .filter(|(_, dir)| has_programs(dir))
        .collect();
    versions.sort();
    if let Some((_, dir)) = versions.pop() {
        return Some(dir);
    }
    // 3. initdb on PATH (followed through symbolic links to where its siblings are).
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("initdb"))
        .filter(|p| p.is_file())
        .filter_map(|p| std::fs::canonicalize(p).ok())
        .filter_map(|p| p.parent().map(Path::to_path_buf))
        .find(|d| has_programs(d))
}

/// A program from `/usr/sbin` or `/sbin` (often missing from a non-login `PATH`), else `PATH`.
fn sbin(name: &str) -> PathBuf {
    ["/usr/sbin", "/sbin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}

/// The unprivileged user the server runs as (tests running as root).
#[derive(Debug, Clone)]
struct ServerUser {
    uid: u32,
    gid: u32,
}

fn id_of(flag: &str) -> Option<u32> {
    let o = Command::new("id").arg(flag).arg(SERVER_USER).output().ok()?;
    if !o.status.success() {
        return None;
    }
    String::from_utf8_lossy(&o.stdout).trim().parse().ok()
}

/// [`SERVER_USER`], created when missing (once per test process; another process creating it
/// at the same moment is fine).
fn server_user() -> ServerUser {
    static USER: OnceLock<ServerUser> = OnceLock::new();
    USER.get_or_init(|| {
        if id_of("-u").is_none() {
            let o = Command::new(sbin("useradd"))
                .args([
                    "--system",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                    SERVER_USER,
                ])
                .stdin(Stdio::null())
                .output()
                .expect("run useradd");
            if !o.status.success() && id_of("-u").is_none() {
                panic!(
                    "cannot create the system user {SERVER_USER} that PostgreSQL runs as (it refuses \
                     to run as root): useradd exited with {}: {}",
                    o.status,
                    String::from_utf8_lossy(&o.stderr).trim()
                );
            }
        }
        match (id_of("-u"), id_of("-g")) {
            (Some(uid), Some(gid)) => ServerUser { uid, gid },
            _ => panic!("the system user {SERVER_USER} has no uid/gid"),
        }
    })
    .clone()
}

/// A random password (hex, so it needs no escaping in a URL or in SQL).
fn random_password() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Whether a process exists and is not a zombie.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // `pid (comm) S …`: the state follows the last `)`.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Whether `pid` is a live `postgres` serving `data` (its command line names the directory).
fn is_postmaster_of(pid: u32, data: &Path) -> bool {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let text = String::from_utf8_lossy(&cmdline);
    alive(pid) && text.contains("postgres") && text.contains(&*data.to_string_lossy())
}

/// Connects to `url` (no TLS: loopback) and drives the connection on the current runtime.
pub async fn connect(url: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Connects to `url` over TLS whatever its `sslmode` says (`require`), trusting exactly the
/// PEM certificates in `ca_pem`, and drives the connection on the current runtime.
pub async fn connect_tls(url: &str, ca_pem: &str) -> Result<Client, tokio_postgres::Error> {
    let mut config: tokio_postgres::Config = url.parse()?;
    config.ssl_mode(SslMode::Require);
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(c.expect("a PEM certificate in the CA"))
            .expect("a usable trust anchor");
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let (client, connection) = config
        .connect(tokio_postgres_rustls::MakeRustlsConnect::new(tls))
        .await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// TLS for a test cluster ([`Postgres::start_tls`]).
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// The server's certificate chain (leaf first), PEM.
    pub cert_pem: String,
    /// The server's private key, PEM.
    pub key_pem: String,
    /// The CA that issued the certificate, PEM: what the test's own clients trust.
    pub ca_pem: String,
    /// Whether TCP connections must use TLS (`hostssl` only in `pg_hba.conf`).
    pub hostssl_only: bool,
}

/// A PostgreSQL cluster of its own. Dropping it stops the server and removes every file.
pub struct Postgres {
    bindir: PathBuf,
    /// `Some` when the tests run as root: the server runs as [`SERVER_USER`].
    user: Option<ServerUser>,
    /// The temporary directory: `data/`, `socket/`, `server.log`.
    dir: tempfile::TempDir,
    port: u16,
    superuser_password: String,
    password: String,
    writer_password: Option<String>,
    /// Whether the server is (believed to be) running.
    running: bool,
    /// TLS, when the cluster was started with it.
    tls: Option<ServerTls>,
}

impl Postgres {
    /// A new cluster, started and ready, with role [`ROLE`] owning database [`DATABASE`].
    /// Panics with the reason and the end of the server log if anything fails.
    pub fn start() -> Postgres {
        Postgres::start_with(None)
    }

    /// [`Postgres::start`] with `ssl = on`, serving `tls`'s certificate; with
    /// `tls.hostssl_only`, a TCP connection without TLS is refused by the server
    /// (`no pg_hba.conf entry … no encryption`).
    pub fn start_tls(tls: ServerTls) -> Postgres {
        Postgres::start_with(Some(tls))
    }

    fn start_with(tls: Option<ServerTls>) -> Postgres {
        let bindir = bindir();
        let user = rustix::process::geteuid().is_root().then(server_user);
        let dir = tempfile::Builder::new()
            .prefix("retention-pg-")
            .tempdir()
            .expect("create a temporary directory for PostgreSQL");
        let mut pg = Postgres {
            bindir,
            user,
            dir,
            port: 0,
            superuser_password: random_password(),
            password: random_password(),
            writer_password: None,
            running: false,
            tls,
        };
        pg.init();
        // A port found free may be taken before the server binds it: try a few.
        let mut last = String::new();
        for _ in 0..5 {
            pg.port = free_port();
            pg.write_settings();
            match pg.pg_ctl_start() {
                Ok(()) => {
                    pg.running = true;
                    pg.wait_ready();
                    pg.create_role_and_database();
                    return pg;
                }
                Err(e) if e.contains("could not bind") || e.contains("could not create any TCP/IP sockets") => {
                    last = e;
                }
                Err(e) => pg.fail(&e),
            }
        }
        pg.fail(&format!("no free port after 5 attempts: {last}"))
    }

    /// `postgres://retention:PASSWORD@127.0.0.1:PORT/audit`: the database the proxies use, as
    /// its owner.
    pub fn url(&self) -> String {
        format!("postgres://{ROLE}:{}@127.0.0.1:{}/{DATABASE}", self.password, self.port)
    }

    /// [`Postgres::url`] without the password (for `password_file` / `--password-file`).
    pub fn url_without_password(&self) -> String {
        format!("postgres://{ROLE}@127.0.0.1:{}/{DATABASE}", self.port)
    }

    /// The password of [`ROLE`].
    pub fn password(&self) -> &str {
        &self.password
    }

    /// Writes [`Postgres::password`] (and a final newline) to `path`, mode 0600.
    pub fn write_password_file(&self, path: &Path) {
        std::fs::write(path, format!("{}\n", self.password)).expect("write the password file");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod the password file");
    }

    /// `postgres://postgres:PASSWORD@127.0.0.1:PORT/audit`: the superuser, on [`DATABASE`].
    pub fn superuser_url(&self) -> String {
        format!(
            "postgres://{SUPERUSER}:{}@127.0.0.1:{}/{DATABASE}",
            self.superuser_password, self.port
        )
    }

    /// The TCP port (the same across [`Postgres::stop`] and [`Postgres::start_again`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The temporary directory holding everything (`data/`, `socket/`, `server.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Whether the server is running (as far as this handle knows).
    pub fn is_running(&self) -> bool {
        self.running
    }

    /// The postmaster's process id, while its `postmaster.pid` exists.
    pub fn postmaster_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.data_dir().join("postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    /// The server log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The last `n` lines of the server log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// A client connected as [`ROLE`] to [`DATABASE`] (its connection runs on the current
    /// tokio runtime; over TLS when the cluster has it). Panics if it cannot connect.
    pub async fn client(&self) -> Client {
        self.connect_as(&self.url())
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e}\n{}", self.url_without_password(), self.log_tail(20)))
    }

    /// A client connected as the superuser to [`DATABASE`] (over TLS when the cluster has it).
    pub async fn superuser_client(&self) -> Client {
        self.connect_as(&self.superuser_url())
            .await
            .unwrap_or_else(|e| panic!("connect as {SUPERUSER}: {e}\n{}", self.log_tail(20)))
    }

    async fn connect_as(&self, url: &str) -> Result<Client, tokio_postgres::Error> {
        match &self.tls {
            Some(tls) => connect_tls(url, &tls.ca_pem).await,
            None => connect(url).await,
        }
    }

    /// The CA (PEM) that issued the server's certificate, when the cluster has TLS.
    pub fn ca_pem(&self) -> Option<&str> {
        self.tls.as_ref().map(|t| t.ca_pem.as_str())
    }

    /// Runs `sql` with `psql` as the superuser on [`DATABASE`] (stopping at the first error):
    /// its unaligned, tuples-only output (`|` between columns, one row per line), without the
    /// final newline. Panics on an error.
    pub fn psql(&self, sql: &str) -> String {
        self.psql_on(DATABASE, &[sql])
    }

    /// Runs each of `statements` as its own `psql -c` (so each is its own transaction, as
    /// `CREATE DATABASE` requires) as the superuser on `database`.
    pub fn psql_on(&self, database: &str, statements: &[&str]) -> String {
        let mut cmd = Command::new(self.bindir.join("psql"));
        cmd.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"])
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", SUPERUSER, "-d", database]);
        for s in statements {
            cmd.arg("-c").arg(s);
        }
        clean_env(&mut cmd);
        let o = cmd
            .env("PGPASSWORD", &self.superuser_password)
            .env("PGCONNECT_TIMEOUT", "10")
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .expect("run psql");
        if !o.status.success() {
            panic!(
                "psql {statements:?} failed ({}): {}\n{}",
                o.status,
                String::from_utf8_lossy(&o.stderr).trim(),
                self.log_tail(20)
            );
        }
        String::from_utf8_lossy(&o.stdout).trim_end_matches('\n').to_string()
    }

    /// Creates (once) the role [`WRITER_ROLE`] with only `INSERT` and `SELECT` on `tables`
    /// (which must exist), `USAGE` on the sequences those tables' columns own (a `bigserial`
    /// default calls `nextval`, which needs it) and `CONNECT`/`USAGE` to reach them, the
    /// least-privilege setup the README documents, and returns its URL on [`DATABASE`].
    pub fn least_privilege_url(&mut self, tables: &[&str]) -> String {
        let password = match &self.writer_password {
            Some(p) => p.clone(),
            None => {
                let p = random_password();
                self.psql_on(
                    DATABASE,
                    &[
                        &format!("CREATE ROLE {WRITER_ROLE} LOGIN PASSWORD '{p}'"),
                        &format!("GRANT CONNECT ON DATABASE {DATABASE} TO {WRITER_ROLE}"),
                        &format!("GRANT USAGE ON SCHEMA public TO {WRITER_ROLE}"),
                    ],
                );
                self.writer_password = Some(p.clone());
                p
            }
        };
        for t in tables {
            self.psql(&format!("GRANT INSERT, SELECT ON TABLE {t} TO {WRITER_ROLE}"));
            // The sequences owned by the table's columns (serial: an automatic dependency;
            // identity: an internal one).
            let sequences = self.psql(&format!(
                "SELECT c.oid::regclass::text FROM pg_class c \
                 JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = c.oid \
                 WHERE c.relkind = 'S' AND d.refclassid = 'pg_class'::regclass \
                 AND d.refobjid = '{t}'::regclass AND d.deptype IN ('a', 'i')"
            ));
            for seq in sequences.lines().filter(|l| !l.is_empty()) {
                self.psql(&format!("GRANT USAGE ON SEQUENCE {seq} TO {WRITER_ROLE}"));
            }
        }
        format!("postgres://{WRITER_ROLE}:{password}@127.0.0.1:{}/{DATABASE}", self.port)
    }

    /// Stops the server (`pg_ctl stop -m fast`: open sessions are ended, committed data is on
    /// disk) and waits until it has exited.
    pub fn stop(&mut self) {
        let o = self.pg_ctl(&["stop", "-m", "fast"]);
        if !o.status.success() {
            self.fail(&format!("pg_ctl stop failed: {}", output_text(&o)));
        }
        self.running = false;
    }

    /// Starts the stopped (or killed) server again on the same data directory and port, and
    /// waits until it accepts connections. After [`Postgres::kill9`] the old server's
    /// processes may take a moment to notice and exit: starting is retried until then.
    pub fn start_again(&mut self) {
        assert!(!self.running, "start_again: the server is already running");
        let deadline = Instant::now() + PG_WAIT;
        loop {
            match self.pg_ctl_start() {
                Ok(()) => break,
                // Backends of a killed postmaster still attached to its shared memory.
                Err(e) if e.contains("already exists") || e.contains("still in use") => {
                    if Instant::now() >= deadline {
                        self.fail(&e);
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => self.fail(&e),
            }
        }
        self.running = true;
        self.wait_ready();
    }

    /// Kills the postmaster with SIGKILL (a crash: no shutdown checkpoint; its backends exit
    /// when they notice) and waits until it is gone. [`Postgres::start_again`] recovers.
    pub fn kill9(&mut self) {
        let pid = self
            .postmaster_pid()
            .unwrap_or_else(|| self.fail("kill9: no postmaster.pid (is the server running?)"));
        let st = Command::new("kill")
            .arg("-KILL")
            .arg(pid.to_string())
            .status()
            .expect("run kill");
        assert!(st.success(), "kill -KILL {pid} failed");
        let deadline = Instant::now() + PG_WAIT;
        while alive(pid) {
            assert!(Instant::now() < deadline, "the postmaster {pid} survived SIGKILL");
            std::thread::sleep(Duration::from_millis(10));
        }
        self.running = false;
    }

    // -----------------------------------------------------------------------------------------

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    fn socket_dir(&self) -> PathBuf {
        self.dir.path().join("socket")
    }

    /// Panics with `why` and the end of the server log.
    fn fail(&self, why: &str) -> ! {
        panic!(
            "PostgreSQL test cluster ({}, port {}): {why}\n--- server log (last lines) ---\n{}",
            self.dir.path().display(),
            self.port,
            self.log_tail(40)
        )
    }

    /// A server program, run as [`SERVER_USER`] when the tests run as root.
    fn server_command(&self, program: &str) -> Command {
        let exe = self.bindir.join(program);
        let mut cmd = match &self.user {
            Some(_) => {
                let mut c = Command::new(sbin("runuser"));
                c.args(["-u", SERVER_USER, "--"]).arg(exe);
                c
            }
            None => Command::new(exe),
        };
        clean_env(&mut cmd);
        cmd.env("LC_ALL", "C").current_dir(self.dir.path()).stdin(Stdio::null());
        cmd
    }

    /// Hands `path` to the server's user (when running as root).
    fn give(&self, path: &Path) {
        if let Some(u) = &self.user {
            std::os::unix::fs::chown(path, Some(u.uid), Some(u.gid))
                .unwrap_or_else(|e| panic!("chown {} to {SERVER_USER}: {e}", path.display()));
        }
    }

    /// `initdb`: SCRAM passwords for every connection, UTF-8, the superuser's password from a
    /// file; the socket directory beside the data directory.
    fn init(&mut self) {
        let root = self.dir.path().to_path_buf();
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o700)).expect("chmod the cluster directory");
        self.give(&root);
        let pwfile = root.join("superuser.password");
        std::fs::write(&pwfile, format!("{}\n", self.superuser_password)).expect("write the password file");
        std::fs::set_permissions(&pwfile, std::fs::Permissions::from_mode(0o600)).expect("chmod the password file");
        self.give(&pwfile);
        let socket = self.socket_dir();
        std::fs::create_dir(&socket).expect("create the socket directory");
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o700)).expect("chmod the socket directory");
        self.give(&socket);
        let o = self
            .server_command("initdb")
            .arg("-D")
            .arg(self.data_dir())
            .args([
                "-U",
                SUPERUSER,
                "--auth=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .expect("run initdb");
        if !o.status.success() {
            self.fail(&format!("initdb failed ({}): {}", o.status, output_text(&o)));
        }
        if let Some(tls) = self.tls.clone() {
            self.install_tls(&tls);
        }
        // The settings this module owns live in a file of their own, included once.
        let conf = self.data_dir().join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).expect("read postgresql.conf");
        text.push_str("\n# Test cluster settings (port, addresses, socket directory)\ninclude 'retention-test.conf'\n");
        std::fs::write(&conf, text).expect("write postgresql.conf");
    }

    /// The server's certificate and key files (in the cluster directory).
    fn tls_files(&self) -> (PathBuf, PathBuf) {
        (self.dir.path().join("server.crt"), self.dir.path().join("server.key"))
    }

    /// Writes the certificate and key (the server's user's, mode 0600: PostgreSQL refuses a
    /// key others may read) and, for `hostssl_only`, a `pg_hba.conf` whose only TCP lines are
    /// `hostssl`.
    fn install_tls(&self, tls: &ServerTls) {
        let (cert, key) = self.tls_files();
        for (path, pem) in [(&cert, &tls.cert_pem), (&key, &tls.key_pem)] {
            std::fs::write(path, pem).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
            self.give(path);
        }
        if tls.hostssl_only {
            let hba = self.data_dir().join("pg_hba.conf");
            std::fs::write(
                &hba,
                "# Test cluster: TCP only over TLS\n\
                 local   all all                scram-sha-256\n\
                 hostssl all all 127.0.0.1/32   scram-sha-256\n",
            )
            .expect("write pg_hba.conf");
            self.give(&hba);
        }
    }

    fn write_settings(&self) {
        let path = self.data_dir().join("retention-test.conf");
        let quote = |p: &Path| p.display().to_string().replace('\'', "''");
        let mut text = format!(
            "listen_addresses = '127.0.0.1'\nport = {}\nunix_socket_directories = '{}'\nmax_connections = 100\n",
            self.port,
            quote(&self.socket_dir())
        );
        if self.tls.is_some() {
            let (cert, key) = self.tls_files();
            text.push_str(&format!(
                "ssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n",
                quote(&cert),
                quote(&key)
            ));
        }
        std::fs::write(&path, text).expect("write the cluster settings");
        self.give(&path);
    }

    fn pg_ctl(&self, args: &[&str]) -> Output {
        self.server_command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-w", "-t", &PG_WAIT.as_secs().to_string()])
            .args(args)
            .output()
            .expect("run pg_ctl")
    }

    /// `pg_ctl start -w`; the error is pg_ctl's output and the end of the server log.
    fn pg_ctl_start(&self) -> Result<(), String> {
        let log = self.log_path().display().to_string();
        let o = self.pg_ctl(&["-l", &log, "start"]);
        if o.status.success() {
            Ok(())
        } else {
            Err(format!(
                "pg_ctl start failed ({}): {}\n{}",
                o.status,
                output_text(&o),
                self.log_tail(20)
            ))
        }
    }

    /// Polls `pg_isready` on the TCP port until the server accepts connections.
    fn wait_ready(&self) {
        let deadline = Instant::now() + PG_WAIT;
        loop {
            let mut cmd = Command::new(self.bindir.join("pg_isready"));
            cmd.args(["-h", "127.0.0.1", "-t", "2", "-U", SUPERUSER, "-d", DATABASE])
                .arg("-p")
                .arg(self.port.to_string());
            clean_env(&mut cmd);
            let st = cmd
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("run pg_isready");
            if st.success() {
                return;
            }
            if Instant::now() >= deadline {
                self.fail("the server did not accept connections in time (pg_isready)");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn create_role_and_database(&self) {
        self.psql_on(
            "postgres",
            &[
                &format!("CREATE ROLE {ROLE} LOGIN PASSWORD '{}'", self.password),
                &format!("CREATE DATABASE {DATABASE} OWNER {ROLE}"),
            ],
        );
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.running || self.postmaster_pid().is_some() {
            let pid = self.postmaster_pid();
            let stopped = self.pg_ctl(&["stop", "-m", "immediate"]).status.success();
            // Only the postmaster of this data directory, and only while it still runs.
            if !stopped && let Some(pid) = pid.filter(|p| is_postmaster_of(*p, &self.data_dir())) {
                let _ = Command::new("kill").arg("-KILL").arg(pid.to_string()).status();
            }
            self.running = false;
        }
        // The temporary directory removes itself.
    }
}

/// Removes the libpq environment (`PGHOST`, `PGPORT`, `PGUSER`, `PGSSLMODE`, …) so that only
/// what a command is given applies.
fn clean_env(cmd: &mut Command) {
    for (k, _) in std::env::vars_os() {
        if k.to_str().is_some_and(|k| k.starts_with("PG")) {
            cmd.env_remove(k);
        }
    }
}

fn output_text(o: &Output) -> String {
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    format!("{}\n{}", out.trim(), err.trim()).trim().to_string()
}

/// A free port on 127.0.0.1 (bound, then released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}
