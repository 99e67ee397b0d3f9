//! The central store's operating edges (SPEC §9), against a real PostgreSQL (a private
//! cluster per test, `tests/support/postgres.rs`) and the built binary as child processes in
//! front of an in-process fake vendor:
//!
//! - least privilege: tables created once by the superuser, then a role with only `INSERT`
//!   and `SELECT` (and `USAGE` on the id sequence) ships; a role that may not create the
//!   tables in an empty database is told which are missing, and keeps running;
//! - the admin-only console (`server.listen = ""`) reads the whole fleet, and
//!   `check-config` refuses one without `[audit.central]`;
//! - `max_lag` in async mode: past it `/readyz` is 503 and, failing closed, changes are
//!   refused (recorded as `audit_unavailable`) while reads and pass-through still flow;
//!   failing open, changes go on; once PostgreSQL is back everything is shipped;
//! - the database password shows in no log, no `check-config` output and no CLI error;
//! - TLS to PostgreSQL (a cluster with `ssl = on` and a certificate from a test CA): with
//!   `ca_file` naming that CA an instance ships and the server sees TLS sessions; with a
//!   `ca_file` of another CA it refuses the certificate and never falls back to plaintext;
//!   `sslmode=disable` against a server that accepts only TLS is refused, and said why.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use retention_proxy::audit::postgres::{SCHEMA, TABLES};
use serde_json::Value;
use support::binary::{self, BinaryProxy, BinaryProxyOpts};
use support::clients::slack_form;
use support::fake_vendor::{FakeVendor, SimpleResponse};
use support::fixtures::{SLACK_GET, SLACK_SET, SLACK_TOKEN};
use support::fleet::{
    Instance, SHIPPED, assert_fleet_intact, assert_slack_ok, central_counts, central_toml, cli, event_ids, events,
    local_records, readyz_becomes, send, set_retention, text, vendor, wait_whole_chains,
};
use support::postgres::{DATABASE, Postgres, ROLE, ServerTls, WRITER_ROLE};
use support::tls::TestCa;
use support::toml_str;
use tokio::task::block_in_place;
use tokio_postgres::Client;

// ---------------------------------------------------------------------------------------------
// The fleet
// ---------------------------------------------------------------------------------------------

/// Slack `admin.conversations.getCustomRetention` (a read) through the proxy at `addr`.
async fn get_retention(addr: SocketAddr, channel: &str) -> SimpleResponse {
    let form = format!("channel_id={channel}");
    send(addr, slack_form(SLACK_GET, &form, Some(SLACK_TOKEN), &[])).await
}

/// Slack `chat.postMessage`: not a retention call, streamed through untouched.
async fn post_message(addr: SocketAddr) -> SimpleResponse {
    let req = slack_form("/api/chat.postMessage", "channel=C1&text=hello", Some(SLACK_TOKEN), &[]);
    send(addr, req).await
}

/// Asserts the vendor's "service unavailable" shape for a refused Slack change.
fn assert_slack_unavailable(r: &SimpleResponse, what: &str) {
    assert_eq!(r.status, 503, "{what}: {}", text(r));
    assert_eq!(r.json()["ok"], false, "{what}: {}", text(r));
    assert_eq!(r.json()["error"], "service_unavailable", "{what}: {}", text(r));
}

/// How many calls to `path` the vendor received.
fn received(fake: &FakeVendor, path: &str) -> usize {
    fake.received().iter().filter(|r| r.path_and_query == path).count()
}

// ---------------------------------------------------------------------------------------------
// Reading the local logs and the central store
// ---------------------------------------------------------------------------------------------

/// Polls the proxy's log until a line contains every one of `parts`; that line.
async fn log_line(proxy: &BinaryProxy, parts: &[&str]) -> String {
    let deadline = Instant::now() + SHIPPED;
    loop {
        let log = proxy.log_text();
        if let Some(l) = log.lines().find(|l| parts.iter().all(|p| l.contains(p))) {
            return l.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no log line with all of {parts:?} within {SHIPPED:?}:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `GET path` on the admin listener, as JSON; panics unless it answers 200.
async fn admin_json(proxy: &BinaryProxy, path: &str) -> Value {
    let (status, body) = proxy
        .admin_get(path)
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path} is not JSON ({e}): {body}"))
}

// ---------------------------------------------------------------------------------------------
// 1. Least privilege
// ---------------------------------------------------------------------------------------------

/// The tables created once by the superuser; a role with nothing but `CONNECT`, `USAGE` on
/// the schema, `INSERT`+`SELECT` on the four tables and `USAGE` on the id sequence ships every
/// record, and `audit verify` as that role passes. A role that may not create the tables in
/// an empty database is told, at start, which tables are missing (log, `/readyz`), keeps
/// running, and fails as each mode says: sync refuses changes, async lets them through until
/// `max_lag`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_least_privilege_role_ships_and_one_without_create_rights_is_told_what_is_missing() {
    let mut pg = block_in_place(Postgres::start);
    let fake = vendor().await;

    // The superuser creates the tables, as an operator would once by hand.
    block_in_place(|| pg.psql(SCHEMA));
    let writer_url = block_in_place(|| pg.least_privilege_url(&TABLES));
    let db = pg.superuser_client().await;

    // The role has exactly the documented rights, and no more.
    for t in TABLES {
        let row = db
            .query_one(
                "SELECT tableowner::text, has_table_privilege($2, $1, 'INSERT'), has_table_privilege($2, $1, 'SELECT'), \
                 has_table_privilege($2, $1, 'UPDATE'), has_table_privilege($2, $1, 'DELETE'), \
                 has_table_privilege($2, $1, 'TRUNCATE') FROM pg_tables WHERE tablename = $1",
                &[&t, &WRITER_ROLE],
            )
            .await
            .unwrap_or_else(|e| panic!("privileges on {t}: {e}"));
        let got: (String, bool, bool, bool, bool, bool) =
            (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4), row.get(5));
        assert_eq!(
            got,
            ("postgres".to_string(), true, true, false, false, false),
            "{t}: owner, INSERT, SELECT, UPDATE, DELETE, TRUNCATE for {WRITER_ROLE}"
        );
    }
    let row = db
        .query_one(
            "SELECT has_sequence_privilege($1, 'audit_records_id_seq', 'USAGE'), \
             has_sequence_privilege($1, 'audit_records_id_seq', 'UPDATE'), \
             has_schema_privilege($1, 'public', 'CREATE'), has_database_privilege($1, current_database(), 'CREATE')",
            &[&WRITER_ROLE],
        )
        .await
        .expect("the writer's other privileges");
    let got: (bool, bool, bool, bool) = (row.get(0), row.get(1), row.get(2), row.get(3));
    assert_eq!(
        got,
        (true, false, false, false),
        "sequence USAGE, sequence UPDATE, CREATE on schema public, CREATE on the database"
    );

    // That role ships every record of an instance, index tables included.
    let lp = Instance::start_failing(&fake, "lp", "closed", &central_toml(&writer_url, "async", "")).await;
    for i in 0..3u32 {
        assert_slack_ok(
            &set_retention(lp.addr(), &format!("CLP{i}"), 30 + i).await,
            "through lp",
        );
    }
    let local = wait_whole_chains(&db, &[&lp]).await;
    assert_eq!(local["lp"], 6, "three changes, a request and an outcome record each");
    assert_fleet_intact(&writer_url, &local).await;
    for t in ["audit_actors", "audit_resources", "audit_observed"] {
        let n: i64 = db
            .query_one(&format!("SELECT count(*)::bigint FROM {t} WHERE instance = 'lp'"), &[])
            .await
            .unwrap()
            .get(0);
        assert!(n > 0, "{t} holds nothing of lp's changes");
    }
    let (status, body) = lp.proxy.admin_get("/readyz").await.expect("GET /readyz");
    assert_eq!(status, 200, "lp is not ready: {body}");
    assert!(
        !lp.proxy.log_text().contains("permission denied"),
        "lp's log shows a permission error:\n{}",
        lp.proxy.log_text()
    );
    assert_eq!(
        event_ids(&writer_url, &["--instance", "lp"]),
        event_ids(&lp.db().display().to_string(), &[]),
        "the central events, read as the least-privilege role, are lp's local events"
    );

    // An empty database where the same role may connect and use the schema, but create nothing.
    block_in_place(|| {
        pg.psql_on("postgres", &["CREATE DATABASE audit_empty OWNER postgres"]);
        pg.psql_on(
            "audit_empty",
            &[
                &format!("GRANT CONNECT ON DATABASE audit_empty TO {WRITER_ROLE}"),
                &format!("GRANT USAGE ON SCHEMA public TO {WRITER_ROLE}"),
            ],
        );
        assert_eq!(
            pg.psql_on(
                "audit_empty",
                &[&format!(
                    "SELECT has_schema_privilege('{WRITER_ROLE}', 'public', 'CREATE'), \
                     has_schema_privilege('{WRITER_ROLE}', 'public', 'USAGE')"
                )]
            ),
            "f|t",
            "{WRITER_ROLE} on audit_empty's schema public: CREATE, USAGE"
        );
    });
    let empty_url = writer_url.replace(&format!("/{DATABASE}"), "/audit_empty");
    assert!(empty_url.ends_with("/audit_empty"), "{empty_url}");
    let missing = "the tables audit_records, audit_actors, audit_resources, audit_observed are missing";

    // Sync: at start, the log names the missing tables and /readyz is 503 with the reason;
    // changes are refused, nothing is forwarded, the process keeps running.
    let mut ns = Instance::start_failing(&fake, "ns", "closed", &central_toml(&empty_url, "sync", "")).await;
    let line = log_line(&ns.proxy, &["cannot create the central tables", missing]).await;
    assert!(line.contains("permission denied for schema public"), "{line}");
    let (status, body) = readyz_becomes(&ns.proxy, 503).await;
    assert_eq!(status, 503, "/readyz of ns: {body}");
    assert!(
        body.starts_with("not ready: the central store is unreachable: ")
            && body.contains("permission denied for schema public")
            && body.contains(missing),
        "/readyz of ns does not say what is missing: {body}"
    );
    let sets = received(&fake, SLACK_SET);
    assert_slack_unavailable(&set_retention(ns.addr(), "CNS1", 30).await, "a change through ns");
    assert_eq!(
        received(&fake, SLACK_SET),
        sets,
        "ns forwarded a change the store cannot hold"
    );
    ns.assert_alive("after a refused change").await;

    // Async with max_lag 1s: the same log line at start; a change goes through (committed
    // locally), then /readyz turns 503 for the lag, naming the missing tables.
    let mut na = Instance::start_failing(
        &fake,
        "na",
        "closed",
        &central_toml(&empty_url, "async", "max_lag = \"1s\""),
    )
    .await;
    let line = log_line(&na.proxy, &["cannot create the central tables", missing]).await;
    assert!(line.contains("permission denied for schema public"), "{line}");
    assert_slack_ok(&set_retention(na.addr(), "CNA1", 30).await, "a change through na");
    assert_eq!(received(&fake, SLACK_SET), sets + 1, "na forwarded its change");
    let (status, body) = readyz_becomes(&na.proxy, 503).await;
    assert_eq!(status, 503, "/readyz of na: {body}");
    assert!(
        body.contains("(max_lag 1s)") && body.contains(missing),
        "/readyz of na does not name the lag and the missing tables: {body}"
    );
    na.assert_alive("past max_lag").await;

    // Nothing was created in the empty database, and lp's store is untouched by the others.
    assert_eq!(
        block_in_place(|| pg.psql_on(
            "audit_empty",
            &["SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"]
        )),
        "0"
    );
    assert_eq!(
        central_counts(&db).await.keys().cloned().collect::<Vec<_>>(),
        ["lp"],
        "only lp ships to the audit database"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. The admin-only console
// ---------------------------------------------------------------------------------------------

/// `server.listen = ""` with `[audit.central]`: no proxy listener, and the admin listener
/// answers for the fleet (`/v1/events`, `?instance=`, `/v1/chain`). Without
/// `[audit.central]`, `check-config` refuses it, naming `server.listen`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_admin_only_console_reads_the_fleet_and_needs_a_central_store() {
    let pg = block_in_place(Postgres::start);
    let fake = vendor().await;
    let central = central_toml(&pg.url(), "async", "");
    let a = Instance::start_failing(&fake, "a", "closed", &central).await;
    let b = Instance::start_failing(&fake, "b", "closed", &central).await;
    for i in 0..2u32 {
        assert_slack_ok(&set_retention(a.addr(), &format!("CA{i}"), 30 + i).await, "through a");
    }
    for i in 0..3u32 {
        assert_slack_ok(&set_retention(b.addr(), &format!("CB{i}"), 40 + i).await, "through b");
    }
    let db = pg.superuser_client().await;
    let local = wait_whole_chains(&db, &[&a, &b]).await;
    let a_ids = event_ids(&a.db().display().to_string(), &[]);
    let b_ids = event_ids(&b.db().display().to_string(), &[]);
    assert_eq!((a_ids.len(), b_ids.len()), (2, 3), "one event per call locally");

    // The console: started after the fleet shipped, so its first chain check sees it all.
    let mut opts = BinaryProxyOpts::new(&fake.url());
    opts.admin_only = true;
    let console = Instance::start_with("console", opts, &central).await;
    log_line(&console.proxy, &["no proxy listener (server.listen is empty)"]).await;
    assert!(
        std::net::TcpStream::connect(console.addr()).is_err(),
        "something listens on the console's unused proxy port"
    );

    let all = admin_json(&console.proxy, "/v1/events?limit=1000").await;
    let events = all["events"]
        .as_array()
        .unwrap_or_else(|| panic!("no events array: {all}"));
    let got: BTreeSet<String> = events
        .iter()
        .map(|e| e["eventID"].as_str().unwrap().to_string())
        .collect();
    let want: BTreeSet<String> = a_ids.union(&b_ids).cloned().collect();
    assert_eq!(got, want, "/v1/events on the console: every instance's events, once");
    assert_eq!(events.len(), 5, "/v1/events: {all}");
    for e in events {
        let id = e["eventID"].as_str().unwrap();
        let from = if a_ids.contains(id) { "a" } else { "b" };
        assert_eq!(e["proxyInstance"], from, "event {id}");
    }

    let only_b = admin_json(&console.proxy, "/v1/events?instance=b&limit=1000").await;
    let only_b = only_b["events"].as_array().expect("an events array");
    let got: BTreeSet<String> = only_b
        .iter()
        .map(|e| e["eventID"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, b_ids, "/v1/events?instance=b");
    assert!(only_b.iter().all(|e| e["proxyInstance"] == "b"));

    // /v1/chain: every instance that shipped, intact up to its last seq.
    let deadline = Instant::now() + SHIPPED;
    let chain = loop {
        let chain = admin_json(&console.proxy, "/v1/chain").await;
        let verified = chain["instances"]
            .as_array()
            .is_some_and(|l| l.iter().all(|i| i["state"] != "not_verified"));
        if verified || Instant::now() >= deadline {
            break chain;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut states: Vec<(String, String, u64)> = chain["instances"]
        .as_array()
        .unwrap_or_else(|| panic!("no instances array: {chain}"))
        .iter()
        .map(|i| {
            (
                i["instance"].as_str().unwrap_or_default().to_string(),
                i["state"].as_str().unwrap_or_default().to_string(),
                i["seq"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    states.sort();
    assert_eq!(
        states,
        [
            ("a".to_string(), "intact".to_string(), local["a"]),
            ("b".to_string(), "intact".to_string(), local["b"]),
        ],
        "/v1/chain on the console: {chain}"
    );

    // check-config: an admin-only console without [audit.central] is refused.
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("audit.db");
    let admin: SocketAddr = format!("127.0.0.1:{}", binary::free_port()).parse().unwrap();
    let mut opts = BinaryProxyOpts::new(&fake.url());
    opts.admin_only = true;
    let bare = binary::config_text(admin, admin, &db_path, &opts);
    assert!(bare.contains("listen = \"\"\n"), "{bare}");
    let path = dir.path().join("console.toml");
    std::fs::write(&path, &bare).unwrap();
    let o = cli(&["check-config", "--config", &path.display().to_string()]).await;
    let err = binary::stderr(&o);
    assert_eq!(o.status.code(), Some(64), "check-config without [audit.central]: {err}");
    assert!(
        err.lines()
            .any(|l| l.contains("server.listen") && l.contains("[audit.central]")),
        "the refusal does not name server.listen and [audit.central]: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    // The same file with [audit.central] is accepted.
    opts.extra_toml = central.clone();
    std::fs::write(&path, binary::config_text(admin, admin, &db_path, &opts)).unwrap();
    let o = cli(&["check-config", "--config", &path.display().to_string()]).await;
    assert!(
        o.status.success(),
        "check-config of a console with [audit.central]: {}",
        binary::stderr(&o)
    );
}

// ---------------------------------------------------------------------------------------------
// 3. max_lag
// ---------------------------------------------------------------------------------------------

/// Async mode, `max_lag = "1s"`, PostgreSQL stopped: a change still succeeds (local commit);
/// once the oldest unshipped record is older than `max_lag`, `/readyz` is 503 naming it and,
/// failing closed, a change is refused (503, recorded as `audit_unavailable`) while a read and
/// pass-through still work; failing open, changes go through. PostgreSQL back: ready again,
/// and everything is shipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn past_max_lag_changes_are_refused_failing_closed_and_pass_failing_open() {
    let mut pg = block_in_place(Postgres::start);
    let fake = vendor().await;
    let central = central_toml(&pg.url(), "async", "max_lag = \"1s\"");
    let closed = Instance::start_failing(&fake, "closed", "closed", &central).await;
    let open = Instance::start_failing(&fake, "open", "open", &central).await;
    let db = pg.superuser_client().await;

    for inst in [&closed, &open] {
        assert_slack_ok(
            &set_retention(inst.addr(), &format!("CBEFORE{}", inst.name), 30).await,
            "before the outage",
        );
    }
    wait_whole_chains(&db, &[&closed, &open]).await;
    drop(db);
    for inst in [&closed, &open] {
        let (status, body) = inst.proxy.admin_get("/readyz").await.expect("GET /readyz");
        assert_eq!(status, 200, "{} before the outage: {body}", inst.name);
    }

    block_in_place(|| pg.stop());
    // Within max_lag: a change is committed locally and forwarded.
    for inst in [&closed, &open] {
        assert_slack_ok(
            &set_retention(inst.addr(), &format!("CDURING{}", inst.name), 31).await,
            "the first change while the database is down",
        );
    }
    for inst in [&closed, &open] {
        let (status, body) = readyz_becomes(&inst.proxy, 503).await;
        assert_eq!(status, 503, "/readyz of {} with the database down: {body}", inst.name);
        assert!(
            body.starts_with("not ready: the oldest record not shipped to the central store is ")
                && body.contains("(max_lag 1s)"),
            "/readyz of {} does not name max_lag: {body}",
            inst.name
        );
    }

    // Failing closed: the change is refused in the vendor's shape, and recorded.
    let sets = received(&fake, SLACK_SET);
    assert_slack_unavailable(
        &set_retention(closed.addr(), "CREFUSED", 32).await,
        "a change past max_lag, failing closed",
    );
    assert_eq!(received(&fake, SLACK_SET), sets, "a refused change was forwarded");
    let refused = events(&closed.db().display().to_string(), &["--resource", "CREFUSED"]);
    assert_eq!(refused.len(), 1, "one event for the refused change: {refused:#?}");
    assert_eq!(refused[0]["outcome"], "audit_unavailable", "{}", refused[0]);
    assert_eq!(refused[0]["eventName"], "admin.conversations.setCustomRetention");

    // A read and a pass-through call are not changes: they still flow.
    let gets = received(&fake, SLACK_GET);
    assert_slack_ok(&get_retention(closed.addr(), "CREFUSED").await, "a read past max_lag");
    assert_eq!(received(&fake, SLACK_GET), gets + 1, "the read reached the vendor");
    let r = post_message(closed.addr()).await;
    assert_eq!(r.status, 200, "pass-through past max_lag: {}", text(&r));
    assert_eq!(fake.last().unwrap().path_and_query, "/api/chat.postMessage");

    // Failing open: the same situation lets the change through.
    assert_slack_ok(
        &set_retention(open.addr(), "COPEN", 33).await,
        "a change past max_lag, failing open",
    );
    assert_eq!(
        received(&fake, SLACK_SET),
        sets + 1,
        "the open instance forwarded its change"
    );
    let passed = events(&open.db().display().to_string(), &["--resource", "COPEN"]);
    assert_eq!(passed.len(), 1, "{passed:#?}");
    assert_eq!(passed[0]["outcome"], "forwarded", "{}", passed[0]);

    // Back: ready again, and every record of both logs is in the central store.
    block_in_place(|| pg.start_again());
    for inst in [&closed, &open] {
        let (status, body) = readyz_becomes(&inst.proxy, 200).await;
        assert_eq!(
            status,
            200,
            "/readyz of {} after the database came back: {body}\n{}",
            inst.name,
            inst.proxy.log_text()
        );
    }
    let db = pg.superuser_client().await;
    let local = wait_whole_chains(&db, &[&closed, &open]).await;
    assert_fleet_intact(&pg.url(), &local).await;
    for inst in [&closed, &open] {
        assert_eq!(
            event_ids(&pg.url(), &["--instance", &inst.name]),
            event_ids(&inst.db().display().to_string(), &[]),
            "instance {}: the central events are its local events",
            inst.name
        );
    }
    let shipped = events(
        &pg.url(),
        &[
            "--instance",
            "closed",
            "--resource",
            "CREFUSED",
            "--event-name",
            "admin.conversations.setCustomRetention",
        ],
    );
    assert_eq!(shipped.len(), 1, "{shipped:#?}");
    assert_eq!(
        shipped[0]["outcome"], "audit_unavailable",
        "the refusal is shipped as recorded"
    );
}

// ---------------------------------------------------------------------------------------------
// 4. The password never shows
// ---------------------------------------------------------------------------------------------

/// The database password is in no proxy log (working, failing to authenticate, or with a
/// `password_file`), not in `check-config`'s output (`REDACTED`), and not in a CLI error
/// for a wrong password, which is one sentence.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_database_password_never_shows() {
    let pg = block_in_place(Postgres::start);
    let fake = vendor().await;
    let password = pg.password().to_string();
    let wrong = format!("WRONG{}", uuid::Uuid::new_v4().simple());
    let wrong_url = pg.url().replace(&password, &wrong);
    assert!(wrong_url.contains(&format!("{ROLE}:{wrong}@")), "{wrong_url}");
    let shown = format!("{ROLE}@127.0.0.1:{}/{DATABASE}", pg.port());

    // A working instance with the password in the URL, one with a password_file, and one
    // with a wrong password.
    let p = Instance::start_failing(&fake, "p", "closed", &central_toml(&pg.url(), "async", "")).await;
    let pw_file = tempfile::NamedTempFile::new().unwrap();
    pg.write_password_file(pw_file.path());
    let f = Instance::start_failing(
        &fake,
        "f",
        "closed",
        &central_toml(
            &pg.url_without_password(),
            "async",
            &format!("password_file = {}", toml_str(&pw_file.path().display().to_string())),
        ),
    )
    .await;
    let w = Instance::start_failing(&fake, "w", "closed", &central_toml(&wrong_url, "async", "")).await;
    for inst in [&p, &f, &w] {
        assert_slack_ok(
            &set_retention(inst.addr(), &format!("CPW{}", inst.name), 30).await,
            "a change",
        );
    }
    let db = pg.superuser_client().await;
    wait_whole_chains(&db, &[&p, &f]).await;
    // The wrong password fails to authenticate, and says so, naming the database.
    let line = log_line(
        &w.proxy,
        &["shipping to the central store failed", "password authentication failed"],
    )
    .await;
    assert!(
        line.contains(&shown),
        "the error does not name the database as {shown}: {line}"
    );
    assert_eq!(
        central_counts(&db).await.get("w"),
        None,
        "w shipped with a wrong password"
    );

    for inst in [&p, &f, &w] {
        let log = inst.proxy.log_text();
        assert!(
            log.contains(&shown),
            "instance {}'s log does not name the database as {shown}:\n{log}",
            inst.name
        );
        for secret in [&password, &wrong] {
            assert!(
                !log.contains(secret.as_str()),
                "instance {}'s log shows a database password:\n{log}",
                inst.name
            );
        }
        let (_, metrics) = inst.proxy.admin_get("/metrics").await.expect("GET /metrics");
        let (_, ready) = inst.proxy.admin_get("/readyz").await.expect("GET /readyz");
        assert!(
            !metrics.contains(&password) && !metrics.contains(&wrong) && !ready.contains(&wrong),
            "instance {}'s admin listener shows a password",
            inst.name
        );

        // check-config prints the effective configuration with the password REDACTED.
        let o = cli(&["check-config", "--config", &inst.proxy.config.display().to_string()]).await;
        let (out, err) = (binary::stdout(&o), binary::stderr(&o));
        assert!(o.status.success(), "check-config of {}: {err}", inst.name);
        for secret in [&password, &wrong] {
            assert!(
                !out.contains(secret.as_str()) && !err.contains(secret.as_str()),
                "check-config of {} shows a database password:\n{out}{err}",
                inst.name
            );
        }
        let want = if inst.name == "f" {
            format!("postgres://{shown}")
        } else {
            format!("postgres://{ROLE}:REDACTED@127.0.0.1:{}/{DATABASE}", pg.port())
        };
        assert!(
            out.lines().any(|l| l == format!("url = {}", toml_str(&want))),
            "check-config of {} does not show the URL as {want}:\n{out}",
            inst.name
        );
    }

    // The CLI with a wrong password: one sentence, non-zero, without the password.
    for args in [
        vec!["audit", "verify", "--db", &wrong_url],
        vec!["audit", "query", "--db", &wrong_url],
    ] {
        let o = cli(&args).await;
        let what = format!("{} with a wrong password", args[..2].join(" "));
        binary::assert_one_line_error(&o, &what);
        let err = binary::stderr(&o);
        assert!(!err.contains(&wrong), "{what} shows the password: {err}");
        assert!(binary::stdout(&o).is_empty(), "{what} printed: {}", binary::stdout(&o));
        assert!(
            err.contains("password authentication failed") && err.contains(&shown),
            "{what} does not say what failed, where: {err}"
        );
    }
    // A URL that cannot be read at all: the error names the URL's problem, not its password.
    let bad = format!("postgres://{ROLE}:{wrong}@127.0.0.1:notaport/{DATABASE}");
    let o = cli(&["audit", "verify", "--db", &bad]).await;
    binary::assert_one_line_error(&o, "audit verify with a malformed URL");
    let err = binary::stderr(&o);
    assert!(
        !err.contains(&wrong),
        "the malformed URL's error shows the password: {err}"
    );
    assert!(err.contains("--db"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// 5. TLS to PostgreSQL
// ---------------------------------------------------------------------------------------------

/// A cluster with `ssl = on` serving a leaf for `127.0.0.1` and `localhost` issued by `ca`;
/// with `hostssl_only`, the server refuses TCP connections without TLS.
fn start_tls_cluster(ca: &TestCa, hostssl_only: bool) -> Postgres {
    let (cert_pem, key_pem) = ca.leaf_pem(&["127.0.0.1", "localhost"]);
    block_in_place(|| {
        Postgres::start_tls(ServerTls {
            cert_pem,
            key_pem,
            ca_pem: ca.cert_pem.clone(),
            hostssl_only,
        })
    })
}

/// `url` with `?sslmode=MODE`.
fn with_sslmode(url: &str, mode: &str) -> String {
    assert!(!url.contains('?'), "{url} already has parameters");
    format!("{url}?sslmode={mode}")
}

/// `[audit.central]` lines naming `ca` (written to `path`) as `ca_file`.
fn ca_file_line(path: &Path, ca: &TestCa) -> String {
    std::fs::write(path, &ca.cert_pem).expect("write the CA file");
    format!("ca_file = {}", toml_str(&path.display().to_string()))
}

/// `(ssl, version)` of every session the proxies hold open (`application_name` is
/// `retention-proxy`), as the server sees them.
async fn proxy_sessions(db: &Client) -> Vec<(bool, Option<String>)> {
    db.query(
        "SELECT ssl, version FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
         WHERE application_name = 'retention-proxy'",
        &[],
    )
    .await
    .expect("read pg_stat_ssl")
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

/// `count(*)` of `audit_records`.
async fn central_total(db: &Client) -> i64 {
    db.query_one("SELECT count(*)::bigint FROM audit_records", &[])
        .await
        .expect("count audit_records")
        .get(0)
}

/// A server that accepts only TLS, its certificate issued by a test CA: instances whose
/// `ca_file` is that CA ship with `sslmode=require` (async) and with `sslmode=prefer` (sync:
/// every change committed in PostgreSQL before it is forwarded), and the server sees each of
/// their sessions as TLS. The CLI has no way to name a CA (`--db` takes only a URI, whose
/// TLS roots are the public ones): against this store it fails in one sentence saying the
/// certificate's issuer is unknown, without the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_its_ca_file_an_instance_ships_over_tls() {
    let ca = TestCa::new("retention-proxy central store test CA");
    let pg = start_tls_cluster(&ca, true);
    let fake = vendor().await;
    let dir = tempfile::tempdir().unwrap();
    let ca_line = ca_file_line(&dir.path().join("central-ca.pem"), &ca);
    let password = pg.password().to_string();

    let req = Instance::start_failing(
        &fake,
        "req",
        "closed",
        &central_toml(&with_sslmode(&pg.url(), "require"), "async", &ca_line),
    )
    .await;
    let pref = Instance::start_failing(
        &fake,
        "pref",
        "closed",
        &central_toml(&with_sslmode(&pg.url(), "prefer"), "sync", &ca_line),
    )
    .await;
    for inst in [&req, &pref] {
        let (status, body) = readyz_becomes(&inst.proxy, 200).await;
        assert_eq!(
            status,
            200,
            "/readyz of {} over TLS: {body}\n{}",
            inst.name,
            inst.proxy.log_text()
        );
    }
    let sets = received(&fake, SLACK_SET);
    for inst in [&req, &pref] {
        for i in 0..2u32 {
            assert_slack_ok(
                &set_retention(inst.addr(), &format!("CTLS{}{i}", inst.name), 40 + i).await,
                "a change through an instance shipping over TLS",
            );
        }
    }
    assert_eq!(received(&fake, SLACK_SET), sets + 4, "every change was forwarded");

    let db = pg.superuser_client().await;
    let local = wait_whole_chains(&db, &[&req, &pref]).await;
    assert_eq!(
        local,
        BTreeMap::from([("pref".to_string(), 4), ("req".to_string(), 4)]),
        "two changes, a request and an outcome record each, per instance"
    );
    // The central events are each instance's local events.
    for inst in [&req, &pref] {
        let central: BTreeSet<String> = db
            .query(
                "SELECT DISTINCT event_id FROM audit_records WHERE instance = $1",
                &[&inst.name],
            )
            .await
            .expect("read the central event ids")
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(
            central,
            event_ids(&inst.db().display().to_string(), &[]),
            "instance {}: the central events are its local events",
            inst.name
        );
    }

    // The server saw the proxies' sessions, every one of them over TLS (the superuser's own
    // session, also TLS, is not named retention-proxy). The shippers keep their sessions
    // open; wait until both are seen.
    let deadline = Instant::now() + SHIPPED;
    let sessions = loop {
        let sessions = proxy_sessions(&db).await;
        if sessions.len() >= 2 || Instant::now() >= deadline {
            break sessions;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        sessions.len() >= 2,
        "the server sees fewer than two sessions of the two instances: {sessions:?}"
    );
    for (ssl, version) in &sessions {
        assert!(
            *ssl && version.as_deref().is_some_and(|v| v.starts_with("TLSv1.")),
            "a proxy session without TLS: {sessions:?}"
        );
    }
    for inst in [&req, &pref] {
        let log = inst.proxy.log_text();
        assert!(
            !log.contains("shipping to the central store failed") && !log.contains(&password),
            "instance {}'s log:\n{log}",
            inst.name
        );
    }

    // The CLI: `--db` cannot name a CA, so the test CA is not trusted and the certificate is
    // refused; the error is one sentence that names the database and the cause.
    let shown = format!("{ROLE}@127.0.0.1:{}/{DATABASE}", pg.port());
    for mode in ["require", "prefer"] {
        let url = with_sslmode(&pg.url(), mode);
        let o = cli(&["audit", "verify", "--db", &url]).await;
        let what = format!("audit verify --db …?sslmode={mode} with a private CA");
        binary::assert_one_line_error(&o, &what);
        let err = binary::stderr(&o);
        assert!(
            err.contains(&shown) && err.contains("invalid peer certificate") && err.contains("UnknownIssuer"),
            "{what} does not say the certificate's issuer is unknown, where: {err}"
        );
        assert!(!err.contains(&password), "{what} shows the password: {err}");
        assert!(binary::stdout(&o).is_empty(), "{what} printed: {}", binary::stdout(&o));
    }
}

/// `sslmode=require` with a `ca_file` holding another CA, against a server that would also
/// take plaintext: the certificate is refused (never a fallback to plaintext), the log says
/// its issuer is unknown, `/readyz` answers 503 with the reason in both modes, a sync
/// instance refuses changes in the vendor's shape, nothing reaches the central tables, no
/// session of the proxies exists on the server, and the password is in no log.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_certificate_from_another_ca_is_refused_and_the_log_says_why() {
    let ca = TestCa::new("retention-proxy central store test CA");
    let other = TestCa::new("some other CA");
    let pg = start_tls_cluster(&ca, false);
    // The tables exist, so that "nothing inserted" is a count.
    block_in_place(|| pg.psql(SCHEMA));
    let fake = vendor().await;
    let dir = tempfile::tempdir().unwrap();
    let ca_line = ca_file_line(&dir.path().join("other-ca.pem"), &other);
    let password = pg.password().to_string();
    let url = with_sslmode(&pg.url(), "require");
    let shown = format!("{ROLE}@127.0.0.1:{}/{DATABASE}", pg.port());

    let sync = Instance::start_failing(&fake, "sync", "closed", &central_toml(&url, "sync", &ca_line)).await;
    let lagging = Instance::start_failing(
        &fake,
        "async",
        "closed",
        &central_toml(&url, "async", &format!("{ca_line}\nmax_lag = \"1s\"")),
    )
    .await;

    for inst in [&sync, &lagging] {
        let line = log_line(
            &inst.proxy,
            &["shipping to the central store failed", "invalid peer certificate"],
        )
        .await;
        assert!(
            line.contains("UnknownIssuer") && line.contains(&shown),
            "instance {}: the failure does not say the issuer is unknown, naming the database: {line}",
            inst.name
        );
    }

    // Sync: not ready, and a change is refused before it reaches the vendor.
    let (status, body) = readyz_becomes(&sync.proxy, 503).await;
    assert_eq!(status, 503, "/readyz of the sync instance: {body}");
    assert!(
        body.contains("the central store is unreachable") && body.contains("UnknownIssuer"),
        "/readyz of the sync instance does not say why: {body}"
    );
    let sets = received(&fake, SLACK_SET);
    assert_slack_unavailable(
        &set_retention(sync.addr(), "CUNTRUSTED", 30).await,
        "a sync change while the certificate is refused",
    );
    assert_eq!(received(&fake, SLACK_SET), sets, "a refused change was forwarded");

    // Async: the change is committed locally and forwarded; past max_lag, not ready.
    assert_slack_ok(
        &set_retention(lagging.addr(), "CLAGGING", 31).await,
        "an async change within max_lag",
    );
    assert_eq!(received(&fake, SLACK_SET), sets + 1, "the async change was forwarded");
    let (status, body) = readyz_becomes(&lagging.proxy, 503).await;
    assert_eq!(status, 503, "/readyz of the async instance: {body}");
    assert!(
        body.contains("(max_lag 1s)") && body.contains("UnknownIssuer"),
        "/readyz of the async instance does not say why: {body}"
    );

    // Nothing reached PostgreSQL: no row, and no session of the proxies at all.
    let db = pg.superuser_client().await;
    assert!(
        local_records(lagging.db()).await >= 2,
        "the async instance recorded its change"
    );
    assert!(
        local_records(sync.db()).await >= 1,
        "the sync instance recorded its refusal"
    );
    assert_eq!(central_total(&db).await, 0, "rows reached the central store");
    assert_eq!(
        proxy_sessions(&db).await,
        [],
        "a proxy holds a session although the certificate was refused"
    );
    for inst in [&sync, &lagging] {
        let log = inst.proxy.log_text();
        assert!(
            !log.contains(&password),
            "instance {}'s log shows the password:\n{log}",
            inst.name
        );
    }
}

/// `sslmode=disable` against a server whose `pg_hba.conf` has only `hostssl` lines: the
/// server refuses the plaintext connection and the instance's log, `/readyz` and the CLI say
/// so in the server's words (`no pg_hba.conf entry … no encryption`); nothing is shipped and
/// the password is in no log and no error.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_plaintext_connection_to_a_tls_only_server_is_refused_and_said_why() {
    let ca = TestCa::new("retention-proxy central store test CA");
    let pg = start_tls_cluster(&ca, true);
    block_in_place(|| pg.psql(SCHEMA));
    let fake = vendor().await;
    let password = pg.password().to_string();
    let url = with_sslmode(&pg.url(), "disable");
    let shown = format!("{ROLE}@127.0.0.1:{}/{DATABASE}", pg.port());
    let refusal =
        format!("no pg_hba.conf entry for host \"127.0.0.1\", user \"{ROLE}\", database \"{DATABASE}\", no encryption");

    let plain = Instance::start_failing(
        &fake,
        "plain",
        "closed",
        &central_toml(&url, "async", "max_lag = \"1s\""),
    )
    .await;
    let line = log_line(&plain.proxy, &["shipping to the central store failed", &refusal]).await;
    assert!(line.contains(&shown), "the failure does not name the database: {line}");

    assert_slack_ok(
        &set_retention(plain.addr(), "CPLAIN", 30).await,
        "an async change within max_lag",
    );
    let (status, body) = readyz_becomes(&plain.proxy, 503).await;
    assert_eq!(status, 503, "/readyz: {body}");
    assert!(
        body.contains("(max_lag 1s)") && body.contains(&refusal),
        "/readyz does not say why: {body}"
    );
    let sets = received(&fake, SLACK_SET);
    assert_slack_unavailable(
        &set_retention(plain.addr(), "CPLAIN2", 31).await,
        "a change past max_lag, failing closed",
    );
    assert_eq!(received(&fake, SLACK_SET), sets, "a refused change was forwarded");

    // The server refused it, in its own log too.
    let server_log = pg.log_text();
    assert!(
        server_log.contains(&refusal),
        "the server log does not show the refusal:\n{server_log}"
    );
    let db = pg.superuser_client().await;
    assert_eq!(central_total(&db).await, 0, "rows reached the central store");
    let log = plain.proxy.log_text();
    assert!(!log.contains(&password), "the log shows the password:\n{log}");

    // The CLI says the same, in one sentence.
    let o = cli(&["audit", "verify", "--db", &url]).await;
    binary::assert_one_line_error(&o, "audit verify --db …?sslmode=disable");
    let err = binary::stderr(&o);
    assert!(
        err.contains(&refusal) && err.contains(&shown),
        "audit verify --db …?sslmode=disable does not say why, where: {err}"
    );
    assert!(!err.contains(&password), "the CLI error shows the password: {err}");
}
