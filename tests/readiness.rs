//! `/readyz` tells the truth about the audit store: it answers 503, with one sentence saying
//! why, while a commit cannot succeed (a full disk, a read-only file, a lock held elsewhere, a
//! schema it cannot write), and 200 again once it can. An outcome link that failed to commit
//! meanwhile is committed when the store recovers, so the call's event does not stay
//! `unknown`.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use retention_proxy::audit::query::Verification;
use support::checks::Checks;
use support::clients::slack_form;
use support::fake_vendor::{self, FakeVendor, FakeVendorOpts};
use support::fixtures::{SLACK_SET, SLACK_TOKEN, WAIT};
use support::in_process::{InProcessProxy, ProxySettings, config_toml, parse_config, proxy_credentials};

/// `GET /readyz`: status and body.
async fn readyz(admin: std::net::SocketAddr) -> (u16, String) {
    let req = Request::builder().uri("/readyz").body(Bytes::new()).unwrap();
    let r = tokio::time::timeout(WAIT, fake_vendor::send(admin, req))
        .await
        .expect("/readyz answers in time")
        .expect("/readyz answers");
    (r.status, String::from_utf8_lossy(&r.body).into_owned())
}

/// Polls `/readyz` until it answers `status`; the last answer.
async fn readyz_becomes(admin: std::net::SocketAddr, status: u16) -> (u16, String) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let got = readyz(admin).await;
        if got.0 == status || tokio::time::Instant::now() >= deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The proxy in-process with its admin listener, its database at `db`.
async fn proxy_with_admin(vendor: &str, db: &Path) -> (InProcessProxy, std::net::SocketAddr) {
    let settings = ProxySettings {
        db_path: Some(db.to_path_buf()),
        ..ProxySettings::default()
    };
    let cfg = parse_config(&config_toml(vendor, db, &settings), "readiness.toml");
    let proxy = InProcessProxy::spawn(cfg, db.to_path_buf(), Some(proxy_credentials()), true).await;
    let admin = proxy.admin.expect("admin listener");
    (proxy, admin)
}

fn run(cmd: &str, args: &[&str]) -> Result<(), String> {
    let o = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if o.status.success() {
        Ok(())
    } else {
        Err(format!("{cmd} {args:?}: {}", String::from_utf8_lossy(&o.stderr).trim()))
    }
}

/// A small tmpfs mounted on a directory, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        let d = dir.to_str().unwrap();
        if let Err(e) = run(
            "mount",
            &["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs", d],
        ) {
            panic!("this test fills a small tmpfs and needs to mount one (run it as root): {e}");
        }
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = run("umount", &["-l", self.0.to_str().unwrap()]);
    }
}

/// Files made immutable (`chattr +i`: not even root may write them), made mutable again when
/// dropped.
struct Immutable(Vec<PathBuf>);

impl Immutable {
    fn set(files: &[PathBuf]) -> Immutable {
        for f in files {
            if let Err(e) = run("chattr", &["+i", f.to_str().unwrap()]) {
                panic!(
                    "this test makes the database immutable with chattr (root, on a file system that supports it): {e}"
                );
            }
        }
        Immutable(files.to_vec())
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        for f in &self.0 {
            let _ = run("chattr", &["-i", f.to_str().unwrap()]);
        }
    }
}

fn wal(db: &Path) -> PathBuf {
    PathBuf::from(format!("{}-wal", db.display()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_on_a_full_disk_and_200_once_space_is_freed() {
    let fake = FakeVendor::start(FakeVendorOpts::with_example_key()).await;
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path().join("small");
    std::fs::create_dir(&mount).unwrap();
    let _tmpfs = Tmpfs::mount(&mount, "4m");
    let db = mount.join("audit.db");
    let (proxy, admin) = proxy_with_admin(&fake.url(), &db).await;
    let mut c = Checks::new("full disk");
    c.eq("ready before the disk fills", readyz(admin).await.0, 200);

    // Fill what is left of the file system.
    let filler = mount.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![7u8; 64 * 1024];
        loop {
            match f.write_all(&chunk) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
                Err(e) => panic!("filling the disk: {e}"),
            }
        }
        let _ = f.sync_all();
    }
    let (status, body) = readyz_becomes(admin, 503).await;
    c.eq("not ready on a full disk", status, 503);
    c.ok("the answer says the disk is full", body.contains("disk is full"), &body);
    c.ok("one sentence", !body.trim().contains('\n'), &body);

    std::fs::remove_file(&filler).unwrap();
    let (status, body) = readyz_becomes(admin, 200).await;
    c.eq("ready again once space is freed", status, 200);
    c.ok("ready says so", body.contains("ready"), &body);
    drop(proxy);
    c.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_while_the_database_file_is_read_only() {
    let fake = FakeVendor::start(FakeVendorOpts::with_example_key()).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("audit.db");
    let (proxy, admin) = proxy_with_admin(&fake.url(), &db).await;
    let mut c = Checks::new("read-only file");
    c.eq("ready at start", readyz(admin).await.0, 200);
    {
        let _ro = Immutable::set(&[db.clone(), wal(&db)]);
        let (status, body) = readyz(admin).await;
        c.eq("not ready while the file cannot be written", status, 503);
        c.ok(
            "the answer names the file that cannot be written",
            body.contains("audit.db") && body.contains("cannot be written"),
            &body,
        );
        // And it is the truth: a change is refused, not forwarded.
        let r = proxy
            .send(slack_form(
                SLACK_SET,
                "channel_id=C0READONLY&duration_days=400",
                Some(SLACK_TOKEN),
                &[],
            ))
            .await;
        c.ok(
            "a change is refused meanwhile",
            fake.count() == 0,
            format!("status {}", r.status),
        );
    }
    let (status, body) = readyz_becomes(admin, 200).await;
    c.eq("ready again once the file is writable", status, 200);
    c.ok("ready says so", body.contains("ready"), &body);
    drop(proxy);
    c.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_while_the_schema_is_not_the_one_it_writes() {
    let fake = FakeVendor::start(FakeVendorOpts::with_example_key()).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("audit.db");
    let (proxy, admin) = proxy_with_admin(&fake.url(), &db).await;
    let mut c = Checks::new("schema");
    c.eq("ready at start", readyz(admin).await.0, 200);
    let other = rusqlite::Connection::open(&db).unwrap();
    let version: i64 = other.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    c.ok("the schema version is stamped", version >= 1, version);
    other.execute_batch("PRAGMA user_version = 99").unwrap();
    let (status, body) = readyz(admin).await;
    c.eq("not ready under a schema it does not write", status, 503);
    c.ok("the answer says why", body.contains("schema version is now 99"), &body);
    other
        .execute_batch(&format!("PRAGMA user_version = {version}"))
        .unwrap();
    c.eq("ready again", readyz_becomes(admin, 200).await.0, 200);
    drop(proxy);
    c.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outcome_that_failed_while_the_store_was_locked_is_committed_when_it_frees() {
    let fake = FakeVendor::start(FakeVendorOpts::with_example_key()).await;
    fake.set_delay(Some(Duration::from_millis(500)));
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("audit.db");
    let (proxy, admin) = proxy_with_admin(&fake.url(), &db).await;
    let mut c = Checks::new("outcome retry");
    let addr = proxy.addr;
    let call = tokio::spawn(async move {
        let req = slack_form(
            SLACK_SET,
            "channel_id=C0LOCKED1&duration_days=400",
            Some(SLACK_TOKEN),
            &[],
        );
        fake_vendor::send(addr, req).await
    });
    c.ok(
        "the vendor received the call",
        fake.wait_for(1, WAIT).await,
        "nothing arrived",
    );
    // Another process takes the database's write lock while the vendor answers.
    let other = rusqlite::Connection::open(&db).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let answer = tokio::time::timeout(WAIT, call).await.expect("the call ends").unwrap();
    c.ok(
        "the client still gets the vendor's answer",
        answer.is_ok(),
        format!("{answer:?}"),
    );
    let (status, body) = readyz(admin).await;
    c.eq("not ready while the lock is held", status, 503);
    c.ok("the answer says it is locked", body.contains("locked"), &body);
    other.execute_batch("COMMIT").unwrap();
    drop(other);
    c.eq(
        "ready once the lock is released",
        readyz_becomes(admin, 200).await.0,
        200,
    );
    let log = proxy.stop().await;
    let ev = log
        .events
        .iter()
        .find(|e| e["requestParameters"]["channel_id"] == "C0LOCKED1");
    c.ok("the call has an event", ev.is_some(), format!("{:?}", log.events));
    if let Some(ev) = ev {
        c.eq(
            "its outcome was committed after all",
            ev["outcome"].as_str(),
            Some("forwarded"),
        );
        c.eq("with the vendor's status", ev["httpStatus"].as_u64(), Some(200));
    }
    c.ok(
        "the chain is intact",
        matches!(log.verification, Verification::Intact { .. }),
        format!("{:?}", log.verification),
    );
    c.finish();
}
