//! The throw-away PostgreSQL cluster of `tests/support/postgres.rs` does what the central-store
//! tests rely on: a real server on loopback with password authentication, a database owned
//! by an unprivileged role, committed data surviving a stop and a SIGKILL, the same port after
//! a restart, a least-privilege role, and nothing left behind when it is dropped.

mod support;

use std::time::Duration;

use support::postgres::{self, DATABASE, Postgres, ROLE, WRITER_ROLE};
use tokio::task::block_in_place;

/// Every value of `SELECT n FROM t ORDER BY n`.
async fn numbers(client: &tokio_postgres::Client) -> Vec<i64> {
    client
        .query("SELECT n FROM t ORDER BY n", &[])
        .await
        .expect("select")
        .iter()
        .map(|r| r.get::<_, i64>(0))
        .collect()
}

/// The real uid of a process.
fn uid_of(pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("a Uid line")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_serves_survives_restarts_and_crashes_and_leaves_nothing_behind() {
    let mut pg = block_in_place(Postgres::start);
    let port = pg.port();
    let dir = pg.dir().to_path_buf();
    assert!(
        pg.data_dir().join("PG_VERSION").is_file(),
        "no data directory in {dir:?}"
    );
    assert!(pg.url().starts_with(&format!("postgres://{ROLE}:")), "{}", pg.url());
    assert!(
        pg.url().ends_with(&format!("@127.0.0.1:{port}/{DATABASE}")),
        "{}",
        pg.url()
    );

    // The server runs unprivileged even when the tests run as root.
    let pid = pg.postmaster_pid().expect("a postmaster.pid while running");
    if rustix::process::geteuid().is_root() {
        assert_ne!(uid_of(pid), 0, "the postmaster runs as root");
    }

    // The proxies' role: owns the database, is no superuser.
    let client = pg.client().await;
    let row = client
        .query_one(
            "SELECT current_user::text, current_database()::text, rolsuper FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .expect("who am I");
    assert_eq!(row.get::<_, String>(0), ROLE);
    assert_eq!(row.get::<_, String>(1), DATABASE);
    assert!(!row.get::<_, bool>(2), "{ROLE} must not be a superuser");

    // It can create a table in its database and use it.
    client
        .batch_execute("CREATE TABLE t (n bigint PRIMARY KEY, note text NOT NULL)")
        .await
        .expect("create table");
    for n in 1..=3i64 {
        client
            .execute("INSERT INTO t (n, note) VALUES ($1, $2)", &[&n, &format!("row {n}")])
            .await
            .expect("insert");
    }
    assert_eq!(numbers(&client).await, vec![1, 2, 3]);

    // Authentication is by password over TCP: a wrong one is refused.
    let wrong = pg.url().replace(pg.password(), "not-the-password");
    let refused = postgres::connect(&wrong).await;
    assert!(refused.is_err(), "a wrong password was accepted");

    // psql as the superuser sees the same data.
    assert_eq!(block_in_place(|| pg.psql("SELECT count(*) FROM t")), "3");
    assert_eq!(
        block_in_place(|| pg.psql("SELECT n, note FROM t WHERE n = 2")),
        "2|row 2"
    );

    // The least-privilege role may insert and select, not update or delete.
    let writer_url = block_in_place(|| pg.least_privilege_url(&["t"]));
    assert!(writer_url.contains(&format!("{WRITER_ROLE}:")), "{writer_url}");
    let writer = postgres::connect(&writer_url).await.expect("connect as the writer");
    writer
        .execute("INSERT INTO t (n, note) VALUES (4, 'by the writer')", &[])
        .await
        .expect("the writer may insert");
    assert_eq!(numbers(&writer).await, vec![1, 2, 3, 4]);
    let update = writer.execute("UPDATE t SET note = 'changed' WHERE n = 1", &[]).await;
    assert!(update.is_err(), "the writer may not update: {update:?}");
    let delete = writer.execute("DELETE FROM t WHERE n = 1", &[]).await;
    assert!(delete.is_err(), "the writer may not delete: {delete:?}");
    drop(writer);

    // Stopped: nothing accepts connections on the port.
    drop(client);
    block_in_place(|| pg.stop());
    assert!(!pg.is_running());
    assert!(pg.postmaster_pid().is_none(), "postmaster.pid left after a clean stop");
    assert!(
        postgres::connect(&pg.url()).await.is_err(),
        "a stopped server accepted a connection"
    );

    // Started again: same port, same data.
    block_in_place(|| pg.start_again());
    assert_eq!(pg.port(), port);
    let client = pg.client().await;
    assert_eq!(numbers(&client).await, vec![1, 2, 3, 4]);

    // A committed row survives a SIGKILL of the postmaster (crash recovery on restart).
    client
        .execute("INSERT INTO t (n, note) VALUES (5, 'before the crash')", &[])
        .await
        .expect("insert before the crash");
    let pid = pg.postmaster_pid().expect("running");
    block_in_place(|| pg.kill9());
    assert!(!pg.is_running());
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z")),
        "the postmaster {pid} still runs after kill9"
    );
    drop(client);
    block_in_place(|| pg.start_again());
    let client = pg.client().await;
    assert_eq!(numbers(&client).await, vec![1, 2, 3, 4, 5]);
    assert!(
        pg.log_text().contains("not properly shut down") || pg.log_text().contains("automatic recovery"),
        "no crash recovery in the server log:\n{}",
        pg.log_tail(30)
    );
    drop(client);

    // Dropped: the server is stopped and every file removed.
    let pid = pg.postmaster_pid().expect("running");
    block_in_place(|| drop(pg));
    assert!(!dir.exists(), "{dir:?} is left behind");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z")) {
        assert!(
            std::time::Instant::now() < deadline,
            "the postmaster {pid} still runs after drop"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "port {port} still accepts connections after drop"
    );
}

/// Two clusters side by side: different ports, different directories, independent data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clusters_are_independent() {
    let (a, b) = block_in_place(|| (Postgres::start(), Postgres::start()));
    assert_ne!(a.port(), b.port());
    assert_ne!(a.dir(), b.dir());
    let ca = a.client().await;
    let cb = b.client().await;
    ca.batch_execute("CREATE TABLE only_in_a (x int)")
        .await
        .expect("create in a");
    let in_b = cb
        .query_one("SELECT to_regclass('only_in_a') IS NULL", &[])
        .await
        .expect("look in b");
    assert!(in_b.get::<_, bool>(0), "a table made in one cluster shows in the other");
}
