//! `audit backup`: a copy of a live database, taken while a writer commits, is a whole chain
//! that `audit verify` accepts and holds every record committed before the backup started;
//! the copy is 0600, never replaces a file without `--force`, and leaves the HMAC key behind.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use support::binary::{run, run_ok};
use support::seeded::Seeder;

fn time(i: u64) -> String {
    format!("2026-11-22T{:02}:{:02}:{:02}.000Z", i / 3600 % 24, i / 60 % 60, i % 60)
}

/// Records `audit verify` finds intact in `db`.
fn verified(db: &Path) -> u64 {
    let out = run_ok(&["audit", "verify", "--db", &db.display().to_string()]);
    let n = out
        .strip_prefix("audit chain intact: ")
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok());
    n.unwrap_or_else(|| panic!("not intact: {out}"))
}

#[test]
fn a_backup_under_write_load_is_a_whole_chain() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("audit.db");
    let mut seeder = Seeder::open(&db);
    // Enough for the copy to take a while.
    seeder.calls(20_000, 2_000, time);
    let committed = Arc::new(AtomicU64::new(seeder.head()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (committed, stop) = (committed.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                // One call (two links) per commit, each committed with synchronous=FULL.
                seeder.calls(1, 1, time);
                committed.store(seeder.head(), Ordering::SeqCst);
            }
            seeder.head()
        })
    };
    // The writer is committing.
    let started = committed.load(Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(30);
    while committed.load(Ordering::SeqCst) == started {
        assert!(Instant::now() < deadline, "the writer never committed");
        std::thread::yield_now();
    }

    let copy = dir.path().join("copy.db");
    let before = committed.load(Ordering::SeqCst);
    let o = run(&[
        "audit",
        "backup",
        "--db",
        &db.display().to_string(),
        "--out",
        &copy.display().to_string(),
    ]);
    let after = committed.load(Ordering::SeqCst);
    stop.store(true, Ordering::SeqCst);
    let last = writer.join().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(after > before, "no commit landed while the backup ran ({before})");

    let records = verified(&copy);
    assert!(
        records >= before,
        "the copy holds {records} records, {before} were committed before it started"
    );
    assert!(records <= last);
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(
        said.starts_with(&format!("backed up {records} records (seq 1 to {records})")),
        "{said}"
    );
    // The original goes on as it was.
    assert_eq!(verified(&db), last);
    let mode = std::fs::metadata(&copy).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // Nothing but the copy is left beside it.
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("copy") || n.starts_with(".copy"))
        .collect();
    names.sort();
    assert_eq!(names, ["copy.db"]);
}

#[test]
fn a_backup_never_replaces_a_file_unasked_and_leaves_the_key_behind() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("audit.db");
    let mut seeder = Seeder::open(&db);
    seeder.calls(10, 10, time);
    let head = seeder.head();
    drop(seeder);
    let key = dir.path().join("audit.db.hmac-key");
    std::fs::write(&key, "00112233445566778899aabbccddeeff").unwrap();
    let (db_s, out) = (db.display().to_string(), dir.path().join("copy.db"));
    let out_s = out.display().to_string();
    let backup = |extra: &[&str]| {
        let mut a = vec!["audit", "backup", "--db", &db_s, "--out", &out_s];
        a.extend_from_slice(extra);
        run(&a)
    };

    let o = backup(&[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("audit.db.hmac-key was not copied"));
    assert!(!dir.path().join("copy.db.hmac-key").exists());
    assert_eq!(verified(&out), head);

    // An existing file is refused, in one sentence, and left as it was.
    std::fs::write(&out, "not mine to overwrite").unwrap();
    let o = backup(&[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("exists; give --force to replace it"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "not mine to overwrite");
    // --force replaces it (and a stale WAL of the old file with it), still 0600.
    std::fs::write(dir.path().join("copy.db-wal"), "stale").unwrap();
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = backup(&["--force"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(verified(&out), head);
    assert_eq!(std::fs::metadata(&out).unwrap().permissions().mode() & 0o777, 0o600);

    // A database that is not there, or not the proxy's, is refused in one sentence.
    for (source, why) in [
        (dir.path().join("missing.db"), "no such file"),
        (key.clone(), "not an SQLite database"),
    ] {
        let o = run(&[
            "audit",
            "backup",
            "--db",
            &source.display().to_string(),
            "--out",
            &dir.path().join("other.db").display().to_string(),
        ]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success());
        assert!(err.contains(why), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(!dir.path().join("other.db").exists());
    }
    // The copy of the database itself is refused, even with --force.
    let o = run(&["audit", "backup", "--db", &db_s, "--out", &db_s, "--force"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("is the database itself"));
    assert_eq!(verified(&db), head);
}
