//! The fleet of the central-store tests (SPEC §9): proxies started from the built binary,
//! each with its own directory and SQLite log and a `[audit.central]` table, the calls made
//! through them, and what the central store holds, read back with SQL and with `audit …`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use serde_json::Value;
use tokio::task::block_in_place;
use tokio_postgres::Client;

use super::binary::{self, BinaryProxy, BinaryProxyOpts};
use super::clients::slack_form;
use super::fake_vendor::{self, FakeVendor, FakeVendorOpts, SimpleResponse};
use super::fixtures::{PROXY_ACCESS_KEY_ID, PROXY_SECRET_ACCESS_KEY, SLACK_SET, SLACK_TOKEN};
use super::toml_str;

/// How long shipping, readiness or a log line may take to show.
pub const SHIPPED: Duration = Duration::from_secs(60);
/// Deadline for one call through a proxy.
pub const CALL: Duration = Duration::from_secs(20);

/// `[audit.central]` for `url` in `mode`, plus `extra` lines of that table.
pub fn central_toml(url: &str, mode: &str, extra: &str) -> String {
    format!("[audit.central]\nurl = {}\nmode = \"{mode}\"\n{extra}\n", toml_str(url))
}

/// A fake vendor that accepts any Slack token and the proxy's re-signed AWS calls.
pub async fn vendor() -> FakeVendor {
    FakeVendor::start(FakeVendorOpts::with_example_key().secret(PROXY_ACCESS_KEY_ID, PROXY_SECRET_ACCESS_KEY)).await
}

/// One proxy of the fleet: the binary, its `[audit] proxy_instance`, its own directory (and
/// so its own SQLite file), kept across restarts.
pub struct Instance {
    pub name: String,
    pub opts: BinaryProxyOpts,
    pub proxy: BinaryProxy,
    pub dir: tempfile::TempDir,
}

impl Instance {
    /// Starts `retention-proxy serve` named `name` in a new directory, in front of `fake`,
    /// with `central` (the `[audit.central]` table).
    pub async fn start(fake: &FakeVendor, name: &str, central: &str) -> Instance {
        Instance::start_with(name, BinaryProxyOpts::new(&fake.url()), central).await
    }

    /// [`Instance::start`], failing `fail_mode` (`closed` or `open`).
    pub async fn start_failing(fake: &FakeVendor, name: &str, fail_mode: &'static str, central: &str) -> Instance {
        let mut opts = BinaryProxyOpts::new(&fake.url());
        opts.fail_mode = fail_mode;
        Instance::start_with(name, opts, central).await
    }

    /// Starts the binary with `opts`, named `name`, with `central`.
    pub async fn start_with(name: &str, mut opts: BinaryProxyOpts, central: &str) -> Instance {
        let dir = tempfile::tempdir().unwrap();
        opts.audit_toml = format!("proxy_instance = {}", toml_str(name));
        opts.extra_toml = central.to_string();
        let proxy = BinaryProxy::start(dir.path(), &opts).await;
        Instance {
            name: name.to_string(),
            opts,
            proxy,
            dir,
        }
    }

    /// Starts the binary again on the same directory, configuration and SQLite file.
    pub async fn restart(&mut self) {
        self.proxy.kill();
        self.proxy = BinaryProxy::start(self.dir.path(), &self.opts).await;
    }

    pub fn addr(&self) -> SocketAddr {
        self.proxy.addr
    }

    pub fn db(&self) -> &Path {
        &self.proxy.db
    }

    /// Asserts that the process still runs and answers `/healthz`.
    pub async fn assert_alive(&mut self, what: &str) {
        assert!(
            self.proxy.try_exit().is_none(),
            "{what}: instance {} exited: {:?}\n{}",
            self.name,
            self.proxy.try_exit(),
            self.proxy.log_text()
        );
        let (status, body) = self.proxy.admin_get("/healthz").await.expect("GET /healthz");
        assert_eq!(status, 200, "{what}: /healthz of {}: {body}", self.name);
    }
}

/// Sends a request to a proxy, panicking on a transport failure or after [`CALL`].
pub async fn send(addr: SocketAddr, req: Request<Bytes>) -> SimpleResponse {
    tokio::time::timeout(CALL, fake_vendor::send(addr, req))
        .await
        .unwrap_or_else(|_| panic!("a call through {addr} timed out"))
        .unwrap_or_else(|e| panic!("a call through {addr} failed: {e}"))
}

/// Slack `admin.conversations.setCustomRetention` (a change) through the proxy at `addr`
/// (reverse mode).
pub async fn set_retention(addr: SocketAddr, channel: &str, days: u32) -> SimpleResponse {
    let form = format!("channel_id={channel}&duration_days={days}");
    send(addr, slack_form(SLACK_SET, &form, Some(SLACK_TOKEN), &[])).await
}

/// A response body as text.
pub fn text(r: &SimpleResponse) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

/// Asserts that Slack answered with `ok: true`.
pub fn assert_slack_ok(r: &SimpleResponse, what: &str) {
    assert!(
        r.status == 200 && r.json()["ok"] == true,
        "{what}: {} {}",
        r.status,
        text(r)
    );
}

/// The binary with `args`, run without blocking the test's runtime.
pub async fn cli(args: &[&str]) -> Output {
    binary::run_async(args.iter().map(|s| s.to_string()).collect()).await
}

/// How many records a local log holds (`audit verify` on its SQLite file, which must pass).
pub async fn local_records(db: &Path) -> u64 {
    let o = cli(&["audit", "verify", "--db", &db.display().to_string()]).await;
    let out = binary::stdout(&o);
    assert!(
        o.status.success(),
        "the local log {db:?} does not verify: {out}{}",
        binary::stderr(&o)
    );
    out.lines()
        .find_map(|l| {
            l.strip_prefix("audit chain intact: ")?
                .strip_suffix(" records verified")
        })
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no record count in the local verify output: {out}"))
}

/// `audit query --db DB --format json ARGS…`.
pub fn events(db: &str, args: &[&str]) -> Vec<Value> {
    block_in_place(|| binary::query_json(Path::new(db), args))
}

/// The event ids of `audit query --db DB ARGS…`.
pub fn event_ids(db: &str, args: &[&str]) -> BTreeSet<String> {
    events(db, args)
        .iter()
        .map(|e| e["eventID"].as_str().expect("an eventID").to_string())
        .collect()
}

/// What the central store holds for one instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Shipped {
    /// `count(*)`.
    pub count: i64,
    /// `count(DISTINCT seq)`.
    pub distinct: i64,
    /// `min(seq)`.
    pub min: i64,
    /// `max(seq)`.
    pub max: i64,
}

/// Per instance, what `audit_records` holds (empty until the table exists).
pub async fn central_counts(db: &Client) -> BTreeMap<String, Shipped> {
    let rows = db
        .query(
            "SELECT instance::text, count(*)::bigint, count(DISTINCT seq)::bigint, \
             min(seq)::bigint, max(seq)::bigint FROM audit_records GROUP BY instance",
            &[],
        )
        .await;
    match rows {
        Ok(rows) => rows
            .iter()
            .map(|r| {
                (
                    r.get::<_, String>(0),
                    Shipped {
                        count: r.get(1),
                        distinct: r.get(2),
                        min: r.get(3),
                        max: r.get(4),
                    },
                )
            })
            .collect(),
        // The first proxy has not created the table yet.
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => BTreeMap::new(),
        Err(e) => panic!("read audit_records: {e}"),
    }
}

/// Waits until the central store holds at least as many records of each instance as its
/// local log; returns the local counts. Panics at the deadline with what is missing and the
/// instances' logs.
pub async fn wait_shipped(db: &Client, fleet: &[&Instance]) -> BTreeMap<String, u64> {
    let deadline = Instant::now() + SHIPPED;
    loop {
        let mut local = BTreeMap::new();
        for i in fleet {
            local.insert(i.name.clone(), local_records(i.db()).await);
        }
        let central = central_counts(db).await;
        let behind: Vec<String> = local
            .iter()
            .filter(|(name, n)| central.get(*name).map_or(0, |s| s.count) < **n as i64)
            .map(|(name, n)| format!("{name}: {} of {n}", central.get(name).map_or(0, |s| s.count)))
            .collect();
        if behind.is_empty() {
            return local;
        }
        if Instant::now() >= deadline {
            let logs: Vec<String> = fleet
                .iter()
                .map(|i| format!("--- {} ---\n{}", i.name, i.proxy.log_text()))
                .collect();
            panic!(
                "the central store did not catch up within {SHIPPED:?}: {}\n{}",
                behind.join(", "),
                logs.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Asserts that the central store holds exactly `local[name]` records of each instance,
/// numbered 1..=N, each once.
pub async fn assert_whole_chains(db: &Client, local: &BTreeMap<String, u64>) {
    let central = central_counts(db).await;
    for (name, n) in local {
        let n = *n as i64;
        let want = Shipped {
            count: n,
            distinct: n,
            min: 1,
            max: n,
        };
        assert_eq!(
            central.get(name).copied().unwrap_or_default(),
            want,
            "instance {name}: the central chain is not seq 1..={n}, each once"
        );
    }
}

/// [`wait_shipped`], then [`assert_whole_chains`]: the local counts.
pub async fn wait_whole_chains(db: &Client, fleet: &[&Instance]) -> BTreeMap<String, u64> {
    let local = wait_shipped(db, fleet).await;
    assert_whole_chains(db, &local).await;
    local
}

/// `audit verify --db URL`.
pub async fn fleet_verify(url: &str) -> Output {
    cli(&["audit", "verify", "--db", url]).await
}

/// Asserts that `audit verify` on the central store exits 0 and prints exactly one
/// `instance NAME: audit chain intact: N records verified` line per instance of `local`.
pub async fn assert_fleet_intact(url: &str, local: &BTreeMap<String, u64>) {
    let o = fleet_verify(url).await;
    let out = binary::stdout(&o);
    assert!(
        o.status.success(),
        "audit verify on the central store failed ({:?}):\n{out}{}",
        o.status,
        binary::stderr(&o)
    );
    let mut got: Vec<&str> = out.lines().filter(|l| !l.trim().is_empty()).collect();
    got.sort();
    let want: Vec<String> = local
        .iter()
        .map(|(name, n)| format!("instance {name}: audit chain intact: {n} records verified"))
        .collect();
    assert_eq!(got, want, "audit verify --db postgres://… output");
}

/// Polls `/readyz` of `proxy` until it answers `want`; the last answer (the caller asserts
/// on it).
pub async fn readyz_becomes(proxy: &BinaryProxy, want: u16) -> (u16, String) {
    let deadline = Instant::now() + SHIPPED;
    loop {
        let got = proxy.admin_get("/readyz").await.unwrap_or((0, String::new()));
        if got.0 == want || Instant::now() >= deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
