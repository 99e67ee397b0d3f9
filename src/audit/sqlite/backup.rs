//! `audit backup`: a consistent copy of a live database through SQLite's online backup API.
//! The copy is made in one step, inside one read transaction, so it is the database as it
//! was at one commit, while the proxy goes on writing (in WAL mode a reader never holds the
//! writer up). It is written beside its final name (mode 0600) and moved into place only
//! when complete, as one file (no WAL beside it); the HMAC key file beside the database is
//! not copied.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use rusqlite::backup::{Backup, StepResult};

use super::open_read_only;

/// How long a copy waits for the database while it is locked (it rarely is: in WAL mode
/// readers are not locked out).
const BUSY_FOR: Duration = Duration::from_secs(30);

/// What a backup copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    /// Records in the copy.
    pub records: u64,
    /// Its first `seq` (0 when empty).
    pub first_seq: u64,
    /// Its last `seq` (0 when empty).
    pub last_seq: u64,
}

/// The file beside `out` a copy is made in before it takes its name.
fn partial_of(out: &Path) -> PathBuf {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    out.with_file_name(format!(".{name}.partial-{}", std::process::id()))
}

/// Copies the audit database `db` to `out`, which must not exist unless `force`. The error
/// is one sentence.
pub fn backup(db: &Path, out: &Path, force: bool) -> Result<Copied, String> {
    let src = open_read_only(db).map_err(|e| e.to_string())?;
    match std::fs::symlink_metadata(out) {
        Ok(m) if m.is_dir() => return Err(format!("{} is a directory; give --out a file name", out.display())),
        Ok(_) if !force => {
            return Err(format!("{} exists; give --force to replace it", out.display()));
        }
        Ok(_) => {
            if let (Ok(a), Ok(b)) = (db.canonicalize(), out.canonicalize())
                && a == b
            {
                return Err(format!("--out {} is the database itself", out.display()));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("cannot check {}: {e}", out.display())),
    }
    let partial = partial_of(out);
    let _ = std::fs::remove_file(&partial);
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&partial)
        .map_err(|e| format!("cannot create {}: {e}", partial.display()))?;
    let copied = copy(&src, &partial)
        .map_err(|e| format!("the backup of {} failed: {e}", db.display()))
        .and_then(|copied| {
            std::fs::File::open(&partial)
                .and_then(|f| f.sync_all())
                .map_err(|e| format!("cannot write {}: {e}", partial.display()))?;
            put_in_place(&partial, out, force)?;
            Ok(copied)
        });
    if copied.is_err() {
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut p = partial.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
    }
    copied
}

/// Copies every page of `src` into the (empty) database file `to`, in one step.
fn copy(src: &Connection, to: &Path) -> Result<Copied, rusqlite::Error> {
    let mut dst = Connection::open(to)?;
    {
        let backup = Backup::new(src, &mut dst)?;
        let deadline = Instant::now() + BUSY_FOR;
        loop {
            match backup.step(-1)? {
                StepResult::Done => break,
                StepResult::More => {}
                // Locked for a moment (a WAL being reset): wait, within reason.
                _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                _ => {
                    return Err(rusqlite::Error::SqliteFailure(
                        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                        Some(format!("the database stayed locked for {} s", BUSY_FOR.as_secs())),
                    ));
                }
            }
        }
    }
    // The copy is one self-contained file (a rollback journal, not a WAL beside it): it opens
    // read-only anywhere, on an archive volume too; `serve` turns WAL on again if it is ever
    // restored.
    let mode: String = dst.query_row("PRAGMA journal_mode=DELETE", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("delete") {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
            Some(format!("the copy stayed in journal mode {mode}")),
        ));
    }
    let (records, first, last) = dst.query_row(
        "SELECT count(*), coalesce(min(seq), 0), coalesce(max(seq), 0) FROM records",
        [],
        |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?)),
    )?;
    dst.close().map_err(|(_, e)| e)?;
    Ok(Copied {
        records: records as u64,
        first_seq: first as u64,
        last_seq: last as u64,
    })
}

/// Gives the finished copy its name: never over an existing file unless `force` (a hard link
/// fails when the name is taken), and with `force` without the old file's WAL beside it.
fn put_in_place(partial: &Path, out: &Path, force: bool) -> Result<(), String> {
    if force {
        for suffix in ["-wal", "-shm", "-journal"] {
            let mut p = out.as_os_str().to_os_string();
            p.push(suffix);
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("cannot remove {}: {e}", Path::new(&p).display())),
            }
        }
        std::fs::rename(partial, out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    } else {
        std::fs::hard_link(partial, out).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => {
                format!("{} exists; give --force to replace it", out.display())
            }
            _ => format!("cannot create {}: {e}", out.display()),
        })?;
        let _ = std::fs::remove_file(partial);
    }
    let dir = out
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}
