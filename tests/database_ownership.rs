//! The audit database is the proxy's own. `serve` refuses, with one sentence naming the file
//! and why, a file that holds someone else's tables or a schema newer than it knows, and
//! changes nothing in it; the `audit` commands refuse it the same way. A database of an
//! earlier release (no schema version) is migrated: stamped, and its chain still verifies.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::binary::{self, BIN, BinaryProxy, BinaryProxyOpts, assert_one_line_error, config_text, free_port};
use support::checks::Checks;
use support::fixtures::WAIT;

/// The first release's schema (no `user_version`), as its databases are found.
const FIRST_SCHEMA: &str = "
    CREATE TABLE records (seq INTEGER PRIMARY KEY, kind TEXT NOT NULL, event_id TEXT NOT NULL,
        event_time TEXT NOT NULL, event_name TEXT NOT NULL, event_source TEXT NOT NULL,
        decision TEXT NOT NULL, body TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL);
    CREATE INDEX records_event_id ON records(event_id, kind);
    CREATE INDEX records_time ON records(kind, event_time);
    CREATE INDEX records_name_time ON records(kind, event_name, event_time);
    CREATE TABLE record_actors (seq INTEGER NOT NULL, actor TEXT NOT NULL);
    CREATE INDEX record_actors_actor ON record_actors(actor, seq);
    CREATE TABLE record_resources (seq INTEGER NOT NULL, resource TEXT NOT NULL);
    CREATE INDEX record_resources_resource ON record_resources(resource, seq);
    CREATE TABLE last_seen (target TEXT NOT NULL, resource TEXT NOT NULL, value TEXT NOT NULL,
        seq INTEGER NOT NULL, PRIMARY KEY (target, resource));";

/// Runs `serve` on `db` and waits for it to exit; `None` if it was still running after
/// `WAIT` (it was then killed): the database was accepted.
async fn serve_on(dir: &Path, db: &Path) -> Option<std::process::Output> {
    let listen = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let admin = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = dir.join("serve.toml");
    std::fs::write(
        &config,
        config_text(listen, admin, db, &BinaryProxyOpts::new("http://127.0.0.1:9")),
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("RUST_LOG", "off")
        .spawn()
        .expect("spawn the proxy");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if child.try_wait().expect("poll the proxy").is_some() {
            return Some(child.wait_with_output().expect("collect the proxy's output"));
        }
        if tokio::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The database file's bytes, and its write-ahead log's if it has one with content (a
/// read-only reader of a WAL database may leave an empty one and a shared-memory index
/// beside it; neither holds data).
fn files_of(db: &Path) -> (Vec<u8>, Option<Vec<u8>>) {
    let wal = std::fs::read(format!("{}-wal", db.display()))
        .ok()
        .filter(|b| !b.is_empty());
    (std::fs::read(db).expect("read the database file"), wal)
}

/// `serve`, `audit query` and `audit verify` all refuse `db` with one line that names it and
/// contains `why`, and leave its files as they were.
async fn refused_everywhere(c: &mut Checks, dir: &Path, db: &Path, why: &str) {
    let before = files_of(db);
    let name = db.display().to_string();
    match serve_on(dir, db).await {
        None => c.fail("serve refuses the file", "it started on it"),
        Some(o) => {
            assert_one_line_error(&o, "serve");
            let err = binary::stderr(&o);
            c.ok("serve names the file", err.contains(&name), &err);
            c.ok("serve says why", err.contains(why), &err);
        }
    }
    for args in [
        vec!["audit", "query", "--db", &name],
        vec!["audit", "verify", "--db", &name],
    ] {
        let o = binary::run(&args);
        assert_one_line_error(&o, &args.join(" "));
        let err = binary::stderr(&o);
        c.ok(
            &format!("{} names the file and says why", args[1]),
            err.contains(&name) && err.contains(why),
            &err,
        );
    }
    c.ok(
        "the file is left byte for byte as it was",
        files_of(db) == before,
        "it changed",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_with_someone_elses_tables_is_refused_and_left_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crm.db");
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch(
            "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT);
             INSERT INTO customers (name) VALUES ('Ada'), ('Grace');",
        )
        .unwrap();
    }
    let mut c = Checks::new("someone else's tables");
    refused_everywhere(&mut c, dir.path(), &db, "not retention-proxy's (customers)").await;
    // The proxy's own tables beside someone else's are refused too.
    let mixed = dir.path().join("mixed.db");
    {
        let conn = rusqlite::Connection::open(&mixed).unwrap();
        conn.execute_batch(FIRST_SCHEMA).unwrap();
        conn.execute_batch("CREATE TABLE notes (t TEXT);").unwrap();
    }
    refused_everywhere(&mut c, dir.path(), &mixed, "not retention-proxy's (notes)").await;
    c.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_of_a_newer_schema_is_refused_and_left_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("audit.db");
    // A database this release made, then marked by a newer one.
    drop(retention_proxy::audit::sqlite::SqliteStore::open(&db).unwrap());
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch("PRAGMA user_version = 42;").unwrap();
    }
    let mut c = Checks::new("newer schema");
    refused_everywhere(&mut c, dir.path(), &db, "schema version is 42, newer").await;
    c.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_of_the_first_release_is_migrated_and_still_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("audit.db");
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch(FIRST_SCHEMA).unwrap();
    }
    let mut c = Checks::new("first release");
    let mut proxy = BinaryProxy::start(dir.path(), &BinaryProxyOpts::new("http://127.0.0.1:9")).await;
    c.eq(
        "ready on the migrated database",
        proxy.admin_get("/readyz").await.map(|r| r.0),
        Ok(200),
    );
    proxy.stop().await;
    let conn = rusqlite::Connection::open(&db).unwrap();
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    c.eq(
        "stamped with the current schema version",
        version,
        retention_proxy::audit::sqlite::SCHEMA_VERSION,
    );
    let o = binary::run(&["audit", "verify", "--db", &db.display().to_string()]);
    c.ok("audit verify accepts it", o.status.success(), binary::stderr(&o));
    c.finish();
}
