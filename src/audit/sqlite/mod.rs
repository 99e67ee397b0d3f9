//! The embedded SQLite store: one file in WAL mode with `synchronous=FULL`, created 0600.
//! `records` holds the chain; `record_actors` and `record_resources` are filter indexes
//! derived from it; `last_seen` is the `previous` memory. A [`Checkpointer`] copies committed
//! WAL frames into the file beside the writer.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, params};

use super::{AuditError, Backend, GENESIS, Linked};

mod archive;
pub mod backup;
mod feed;
mod outbox;
mod read;
use crate::retention::{Observed, RetentionValue, Target};
pub use archive::{Archiver, RawRecord};
pub use feed::{AlertFeed, FeedPage, FeedRecord, Positions};
pub use outbox::{OutRecord, Outbox};
pub use read::SqliteReader;

/// Each record costs one B-tree insert per table and index it lands in, so the schema keeps
/// that number low: outcome links are left out of the time and name indexes (queries select
/// request links; `kind` stays their first column so the planner sees an equality), and the filter tables and `last_seen` are clustered on their keys
/// (`WITHOUT ROWID`). A database created by an earlier version keeps its own tables and
/// indexes; the statements below work against both.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS records (
    seq         INTEGER PRIMARY KEY,
    kind        TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    event_time  TEXT NOT NULL,
    event_name  TEXT NOT NULL,
    event_source TEXT NOT NULL,
    decision    TEXT NOT NULL,
    body        TEXT NOT NULL,
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS records_event_id ON records(event_id, kind);
CREATE INDEX IF NOT EXISTS records_time ON records(kind, event_time) WHERE kind = 'request';
CREATE INDEX IF NOT EXISTS records_name_time ON records(kind, event_name, event_time) WHERE kind = 'request';
CREATE TABLE IF NOT EXISTS record_actors (
    actor TEXT NOT NULL,
    seq   INTEGER NOT NULL,
    PRIMARY KEY (actor, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS record_resources (
    resource TEXT NOT NULL,
    seq      INTEGER NOT NULL,
    PRIMARY KEY (resource, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS last_seen (
    target   TEXT NOT NULL,
    resource TEXT NOT NULL,
    value    TEXT NOT NULL,
    seq      INTEGER NOT NULL,
    PRIMARY KEY (target, resource)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS alert_positions (
    sink       TEXT PRIMARY KEY,
    seq        INTEGER NOT NULL,
    updated_at TEXT NOT NULL
) WITHOUT ROWID;
";

/// Indexes later releases added to [`SCHEMA`], created on open when missing: the viewer's
/// refusals page (`decision`, newest first by time) reads one index range.
const ADDED_INDEXES: &str =
    "CREATE INDEX IF NOT EXISTS records_decision_time ON records(kind, decision, event_time) WHERE kind = 'request';
     CREATE INDEX IF NOT EXISTS records_checkpoints ON records(kind, seq) WHERE kind = 'checkpoint';";

/// WAL pages after which the writer checkpoints by itself (SQLite's automatic checkpoint):
/// 64 MiB. Normally the [`Checkpointer`] keeps the WAL far below this.
pub const WRITER_CHECKPOINT_PAGES: u32 = 16_384;

/// The SQLite backend (write side).
pub struct SqliteStore {
    conn: Connection,
    /// The database file, for the readiness probe.
    path: PathBuf,
}

fn open_err(path: &Path, e: impl std::fmt::Display) -> AuditError {
    AuditError::Open {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// The schema this release writes, kept in SQLite's `user_version`. Earlier releases left it
/// at 0; their tables are this schema's (or the first release's, which the statements above
/// still serve), so such a database is stamped with this version when it is opened.
/// Version 2 added `alert_positions` (where each alert sink is in the log); a version 1
/// database gains the table, empty, when it is opened.
pub const SCHEMA_VERSION: i64 = 2;

/// `PRAGMA application_id` of an audit database ("RPXY"): the file says whose it is.
pub const APPLICATION_ID: i64 = 0x5250_5859;

/// The tables (and only those) an audit database holds.
const OWN_TABLES: [&str; 5] = [
    "records",
    "record_actors",
    "record_resources",
    "last_seen",
    "alert_positions",
];

/// The columns of `records` every release has written.
const RECORD_COLUMNS: [&str; 10] = [
    "seq",
    "kind",
    "event_id",
    "event_time",
    "event_name",
    "event_source",
    "decision",
    "body",
    "prev_hash",
    "hash",
];

/// What an existing file holds, once it is known to be the proxy's (or nothing yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owned {
    /// No tables: a new database.
    Empty,
    /// An audit database with this `user_version` (0: an earlier release's, unstamped).
    Audit(i64),
}

/// Whether the database behind `conn` is the proxy's own: an empty file, or the proxy's
/// tables and nothing else, at a schema version this release knows. Only reads.
fn ownership(conn: &Connection) -> Result<Owned, String> {
    let pragma = |name: &str| conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get::<_, i64>(0));
    let version = pragma("user_version").map_err(|e| describe_sqlite_error(&e))?;
    let app = pragma("application_id").map_err(|e| describe_sqlite_error(&e))?;
    if app != 0 && app != APPLICATION_ID {
        return Err(format!(
            "it belongs to another application (application_id {app:#x}), so it was left unchanged"
        ));
    }
    if version > SCHEMA_VERSION {
        return Err(format!(
            "its schema version is {version}, newer than the {SCHEMA_VERSION} this release knows (a newer retention-proxy wrote it), so it was left unchanged"
        ));
    }
    if version < 0 {
        return Err(format!(
            "its schema version {version} is not one retention-proxy writes"
        ));
    }
    let mut st = conn
        .prepare("SELECT name FROM sqlite_master WHERE type IN ('table', 'view', 'trigger') AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name")
        .map_err(|e| describe_sqlite_error(&e))?;
    let names: Vec<String> = st
        .query_map([], |r| r.get(0))
        .and_then(|rows| rows.collect())
        .map_err(|e| describe_sqlite_error(&e))?;
    if names.is_empty() {
        return if version == 0 {
            Ok(Owned::Empty)
        } else {
            Err(format!(
                "it has schema version {version} but none of retention-proxy's tables, so it was left unchanged"
            ))
        };
    }
    let foreign: Vec<&str> = names
        .iter()
        .map(String::as_str)
        .filter(|n| !OWN_TABLES.contains(n))
        .collect();
    if !foreign.is_empty() {
        return Err(format!(
            "it holds tables that are not retention-proxy's ({}), so it was left unchanged; give the audit log a file of its own",
            foreign.join(", ")
        ));
    }
    let mut st = conn
        .prepare("SELECT name FROM pragma_table_info('records')")
        .map_err(|e| describe_sqlite_error(&e))?;
    let columns: Vec<String> = st
        .query_map([], |r| r.get(0))
        .and_then(|rows| rows.collect())
        .map_err(|e| describe_sqlite_error(&e))?;
    if columns.is_empty() {
        return Err(
            "it is not a retention-proxy audit database (it has no records table), so it was left unchanged".into(),
        );
    }
    if let Some(missing) = RECORD_COLUMNS.iter().find(|c| !columns.iter().any(|have| have == *c)) {
        return Err(format!(
            "its records table is not retention-proxy's (it has no {missing} column), so it was left unchanged"
        ));
    }
    Ok(Owned::Audit(version))
}

/// SQLite's words for an error, with the one users meet on a wrong file made plain.
fn describe_sqlite_error(e: &rusqlite::Error) -> String {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::NotADatabase) => "it is not an SQLite database".into(),
        _ => e.to_string(),
    }
}

/// Opens `path` read-only and checks that it is the proxy's own; never writes to it.
fn check_read_only(path: &Path) -> Result<(Connection, Owned), AuditError> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(|e| open_err(path, describe_sqlite_error(&e)))?;
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(|e| open_err(path, e))?;
    let owned = ownership(&conn).map_err(|reason| open_err(path, reason))?;
    Ok((conn, owned))
}

impl SqliteStore {
    /// Opens (creating, mode 0600) the database and its schema. An existing file is first
    /// checked read-only: a file that is not the proxy's (other tables, another application,
    /// a newer schema) is refused and left byte for byte as it was; an earlier release's
    /// database is stamped with [`SCHEMA_VERSION`].
    pub fn open(path: &Path) -> Result<SqliteStore, AuditError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && !dir.exists()
        {
            std::fs::create_dir_all(dir).map_err(|e| open_err(path, e))?;
        }
        if path.exists() {
            check_read_only(path)?;
        } else {
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(path)
                .map_err(|e| open_err(path, e))?;
        }
        let mut conn = Connection::open(path).map_err(|e| open_err(path, describe_sqlite_error(&e)))?;
        conn.busy_timeout(Duration::from_millis(1000))
            .map_err(|e| open_err(path, e))?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(|e| open_err(path, e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(open_err(path, format!("cannot switch to WAL (journal_mode is {mode})")));
        }
        // The proxy checkpoints on its own thread ([`Checkpointer`]); the writer's own
        // checkpoint is only the backstop, and the whole checkpointing for a store opened
        // without a `Checkpointer` (tools, tests).
        conn.execute_batch(&format!(
            "PRAGMA synchronous=FULL; PRAGMA wal_autocheckpoint={WRITER_CHECKPOINT_PAGES};"
        ))
        .map_err(|e| open_err(path, e))?;
        // Checked again under the write lock (another process may have written meanwhile),
        // then created or stamped in the same transaction.
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| open_err(path, e))?;
        let owned = ownership(&tx).map_err(|reason| open_err(path, reason))?;
        if owned != Owned::Audit(SCHEMA_VERSION) {
            tx.execute_batch(SCHEMA)
                .and_then(|_| {
                    tx.execute_batch(&format!(
                        "PRAGMA user_version = {SCHEMA_VERSION}; PRAGMA application_id = {APPLICATION_ID};"
                    ))
                })
                .map_err(|e| open_err(path, e))?;
            if let Owned::Audit(0) = owned {
                tracing::info!(db = %path.display(), version = SCHEMA_VERSION, "audit database of an earlier release stamped with its schema version");
            }
        }
        // Indexes added since: an index is not part of what `ownership` checks, so a database
        // that has it stays readable by earlier releases, and one without it gains it here.
        tx.execute_batch(ADDED_INDEXES).map_err(|e| open_err(path, e))?;
        tx.commit().map_err(|e| open_err(path, e))?;
        Ok(SqliteStore {
            conn,
            path: path.to_path_buf(),
        })
    }

    /// Whether the files the next commit writes can be written now: the database, its WAL,
    /// and a page of new space beside them (a full disk or a read-only file system refuses
    /// it, whoever the process runs as).
    fn files_writable(&self) -> Result<(), AuditError> {
        let unwritable = |p: &Path, e: std::io::Error| {
            let why = match e.kind() {
                std::io::ErrorKind::StorageFull => "the disk is full".to_string(),
                std::io::ErrorKind::ReadOnlyFilesystem => "the file system is read-only".to_string(),
                _ => e.to_string(),
            };
            AuditError::Write(format!("{} cannot be written: {why}", p.display()))
        };
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        for p in [self.path.as_path(), Path::new(&wal)] {
            match OpenOptions::new().write(true).open(p) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && p != self.path => {}
                Err(e) => return Err(unwritable(p, e)),
            }
        }
        let mut probe = self.path.clone().into_os_string();
        probe.push("-probe");
        let probe = PathBuf::from(probe);
        let written = (|| {
            use std::io::Write;
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&probe)?;
            f.write_all(&[0u8; 4096])?;
            f.sync_data()
        })();
        let _ = std::fs::remove_file(&probe);
        written.map_err(|e| unwritable(&probe, e))
    }
}

fn write_err(e: rusqlite::Error) -> AuditError {
    AuditError::Write(e.to_string())
}

impl Backend for SqliteStore {
    fn head(&mut self) -> Result<(u64, String), AuditError> {
        let row = self
            .conn
            .query_row("SELECT seq, hash FROM records ORDER BY seq DESC LIMIT 1", [], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get::<_, String>(1)?))
            });
        match row {
            Ok(h) => Ok(h),
            Err(rusqlite::Error::QueryReturnedNoRows) => Ok((0, GENESIS.to_string())),
            Err(e) => Err(AuditError::Read(e.to_string())),
        }
    }

    fn append(&mut self, batch: &[Linked]) -> Result<(), AuditError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(write_err)?;
        {
            let mut ins = tx
                .prepare_cached(
                    "INSERT INTO records (seq, kind, event_id, event_time, event_name, event_source, decision, body, prev_hash, hash)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                )
                .map_err(write_err)?;
            let mut actor = tx
                .prepare_cached("INSERT OR IGNORE INTO record_actors (seq, actor) VALUES (?1, ?2)")
                .map_err(write_err)?;
            let mut res = tx
                .prepare_cached("INSERT OR IGNORE INTO record_resources (seq, resource) VALUES (?1, ?2)")
                .map_err(write_err)?;
            let mut seen = tx
                .prepare_cached(
                    "INSERT INTO last_seen (target, resource, value, seq) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (target, resource) DO UPDATE SET value = excluded.value, seq = excluded.seq",
                )
                .map_err(write_err)?;
            for l in batch {
                let r = &l.record;
                ins.execute(params![
                    l.seq as i64,
                    r.kind.as_str(),
                    r.event_id,
                    r.event_time,
                    r.index.event_name,
                    r.index.event_source,
                    r.index.decision,
                    l.text,
                    l.prev_hash,
                    l.hash
                ])
                .map_err(write_err)?;
                for a in &r.index.actors {
                    actor.execute(params![l.seq as i64, a]).map_err(write_err)?;
                }
                for x in &r.index.resources {
                    res.execute(params![l.seq as i64, x]).map_err(write_err)?;
                }
                for o in &r.observed {
                    seen.execute(params![
                        o.target.as_str(),
                        o.resource,
                        o.value.to_json().to_string(),
                        l.seq as i64
                    ])
                    .map_err(write_err)?;
                }
            }
        }
        tx.commit().map_err(write_err)
    }

    fn probe(&mut self) -> Result<(), AuditError> {
        self.files_writable()?;
        let version: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(write_err)?;
        if version != SCHEMA_VERSION {
            return Err(AuditError::Write(format!(
                "the database's schema version is now {version}, not the {SCHEMA_VERSION} this release writes"
            )));
        }
        // A real write under the write lock, rolled back: the lock is free and the schema
        // takes a record.
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(write_err)?;
        tx.execute(
            "INSERT INTO records (seq, kind, event_id, event_time, event_name, event_source, decision, body, prev_hash, hash)
             VALUES (-1, 'probe', '', '', '', '', '', '', '', '')",
            [],
        )
        .map_err(write_err)?;
        tx.rollback().map_err(write_err)
    }

    fn last_checkpoint(&mut self) -> Result<Option<(u64, String)>, AuditError> {
        use rusqlite::OptionalExtension;
        self.conn
            .query_row(
                "SELECT seq, body FROM records WHERE kind = 'checkpoint' ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, String>(1)?)),
            )
            .optional()
            .map_err(|e| AuditError::Read(e.to_string()))
    }

    fn hashes_from(&mut self, seq: u64) -> Result<Vec<String>, AuditError> {
        let mut st = self
            .conn
            .prepare("SELECT hash FROM records WHERE seq >= ?1 ORDER BY seq")
            .map_err(|e| AuditError::Read(e.to_string()))?;
        let rows = st
            .query_map([seq.min(i64::MAX as u64) as i64], |r| r.get::<_, String>(0))
            .map_err(|e| AuditError::Read(e.to_string()))?;
        rows.collect::<Result<_, _>>()
            .map_err(|e| AuditError::Read(e.to_string()))
    }

    fn last_seen(&mut self) -> Result<Vec<(Observed, String)>, AuditError> {
        let mut st = self
            .conn
            .prepare(
                "SELECT l.target, l.resource, l.value, coalesce(r.event_time, '') FROM last_seen l
                 LEFT JOIN records r ON r.seq = l.seq",
            )
            .map_err(|e| AuditError::Read(e.to_string()))?;
        let rows = st
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                ))
            })
            .map_err(|e| AuditError::Read(e.to_string()))?;
        let mut out = Vec::new();
        for row in rows {
            let (t, res, v, time) = row.map_err(|e| AuditError::Read(e.to_string()))?;
            let (Some(target), Some(value)) = (
                Target::parse(&t),
                serde_json::from_str(&v)
                    .ok()
                    .and_then(|v| RetentionValue::from_json(&v)),
            ) else {
                continue;
            };
            out.push((
                Observed {
                    target,
                    resource: res,
                    value,
                },
                time,
            ));
        }
        Ok(out)
    }
}

/// Copies committed WAL frames back into the database file on its own thread and its own
/// connection. A checkpoint run by the writer (SQLite's automatic one) stops every commit
/// behind it for as long as the copy and the database fsync take; this one runs beside the
/// writer (`PASSIVE`: it never blocks a commit), shortly after each change.
pub struct Checkpointer {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    /// How often the checkpointer looks for new commits.
    pub const INTERVAL: Duration = Duration::from_millis(200);

    /// Starts checkpointing the database at `path` (already opened by [`SqliteStore::open`]).
    pub fn start(path: &Path, every: Duration) -> Result<Checkpointer, AuditError> {
        let conn = Connection::open(path).map_err(|e| open_err(path, e))?;
        conn.busy_timeout(Duration::from_millis(1000))
            .and_then(|_| conn.execute_batch("PRAGMA synchronous=FULL;"))
            .map_err(|e| open_err(path, e))?;
        let data_version = |c: &Connection| c.query_row("PRAGMA data_version", [], |r| r.get::<_, i64>(0));
        let mut seen = data_version(&conn).map_err(|e| open_err(path, e))?;
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("audit-checkpoint".into())
            .spawn(move || {
                // Ends when `stop` is dropped (or sent to).
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                    // `data_version` changes when another connection (the writer) commits.
                    match data_version(&conn) {
                        Ok(v) if v == seen => continue,
                        Ok(v) => seen = v,
                        Err(e) => {
                            tracing::warn!(error = %e, "audit checkpoint: cannot read the data version");
                            continue;
                        }
                    }
                    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                        // The writer's own checkpoint still bounds the WAL.
                        tracing::warn!(error = %e, "audit checkpoint failed");
                    }
                }
            })
            .map_err(|e| open_err(path, format!("cannot start the checkpoint thread: {e}")))?;
        Ok(Checkpointer {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Stops the thread and waits for it (at most one checkpoint in progress).
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Opens the database read-only for queries; a clear error when it does not exist or is not
/// the proxy's own (the same checks as [`SqliteStore::open`], without writing anything).
pub fn open_read_only(path: &Path) -> Result<Connection, AuditError> {
    if !path.exists() {
        return Err(open_err(path, "no such file"));
    }
    match check_read_only(path)? {
        (conn, Owned::Audit(_)) => Ok(conn),
        (_, Owned::Empty) => Err(open_err(
            path,
            "it is not a retention-proxy audit database (it is empty)",
        )),
    }
}

/// The HMAC key for token fingerprints: read, or created (0600, 32 random bytes) on first run.
pub fn load_or_create_key(path: &PathBuf) -> Result<Vec<u8>, AuditError> {
    use std::io::Write;
    let err = |e: &dyn std::fmt::Display| AuditError::Open {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    match std::fs::read_to_string(path) {
        Ok(s) => {
            let key = hex::decode(s.trim()).map_err(|e| err(&format!("the key file is not hex: {e}")))?;
            if key.len() < 16 {
                return Err(err(&"the key file holds fewer than 16 bytes"));
            }
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| err(&e))?;
            }
            let mut key = vec![0u8; 32];
            getrandom::fill(&mut key).map_err(|e| err(&e))?;
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| err(&e))?;
            f.write_all(hex::encode(&key).as_bytes())
                .and_then(|_| f.sync_all())
                .map_err(|e| err(&e))?;
            Ok(key)
        }
        Err(e) => Err(err(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::Reader;
    use crate::audit::query::{self, Filter, Verification};
    use crate::audit::testing::call;
    use crate::audit::{IndexFields, NewRecord, ObjectText, RecordKind, link};
    use serde_json::json;

    /// The schema of the first release: rowid filter tables with separate indexes, and time
    /// and name indexes over every record.
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

    fn ids(reader: &SqliteReader, f: Filter) -> Vec<String> {
        (reader as &dyn Reader)
            .query(&f)
            .unwrap()
            .iter()
            .map(|e| e["eventID"].as_str().unwrap().to_string())
            .collect()
    }

    /// A database made by the first release and one made now take the same writes and answer
    /// the same queries.
    #[test]
    fn first_release_and_current_schemas_store_and_find_the_same_events() {
        for first_release in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("audit.db");
            if first_release {
                Connection::open(&path).unwrap().execute_batch(FIRST_SCHEMA).unwrap();
            }
            let mut store = SqliteStore::open(&path).unwrap();
            for i in 1..=3 {
                call(&mut store, i, 100 + i);
            }
            let conn = SqliteReader::open(&path).unwrap();
            let all = |f: Filter| ids(&conn, f);
            assert_eq!(all(Filter::default()), ["id-1", "id-2", "id-3"], "{first_release}");
            let actor = |a: &str| Filter {
                actor: Some(a.into()),
                ..Filter::default()
            };
            assert_eq!(all(actor("alice")), ["id-1", "id-2", "id-3"]);
            assert_eq!(all(actor("key-2")), ["id-2"]);
            assert_eq!(
                all(Filter {
                    resource: Some("C0123".into()),
                    since: Some("2026-11-22T10:00:02.000Z".into()),
                    ..Filter::default()
                }),
                ["id-2", "id-3"]
            );
            assert_eq!(
                all(Filter {
                    event_name: Some("admin.conversations.setCustomRetention".into()),
                    until: Some("2026-11-22T10:00:02.000Z".into()),
                    ..Filter::default()
                }),
                ["id-1"]
            );
            let merged = (&conn as &dyn Reader).query(&Filter::default()).unwrap();
            assert!(merged.iter().all(|e| e["outcome"] == "forwarded"));
            assert!(matches!(
                query::verify(&conn).unwrap(),
                Verification::Intact { records: 6 }
            ));
            let seen = store.last_seen().unwrap();
            assert_eq!(seen.len(), 1);
            assert_eq!(seen[0].0.value, RetentionValue::Days(103));
            let state = conn.state().unwrap();
            assert_eq!(state.len(), 1);
            assert_eq!(state[0].seen_at, "2026-11-22T10:00:03.000Z");
        }
    }

    /// Commits reach the database file through the checkpointer, not only the WAL; the same
    /// writes without it stay in the WAL (the writer's own checkpoint is far off).
    #[test]
    fn the_checkpointer_copies_commits_into_the_database_file() {
        let dir = tempfile::tempdir().unwrap();
        let size = |p: &Path| std::fs::metadata(p).unwrap().len();
        let (with, without) = (dir.path().join("with.db"), dir.path().join("without.db"));
        let mut a = SqliteStore::open(&with).unwrap();
        let mut b = SqliteStore::open(&without).unwrap();
        let (base_a, base_b) = (size(&with), size(&without));
        let checkpointer = Checkpointer::start(&with, Duration::from_millis(5)).unwrap();
        for i in 1..=40 {
            call(&mut a, i, 100);
            call(&mut b, i, 100);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while size(&with) <= base_a {
            assert!(std::time::Instant::now() < deadline, "nothing was checkpointed");
            std::thread::sleep(Duration::from_millis(5));
        }
        checkpointer.stop();
        assert_eq!(size(&without), base_b);
        // Checkpointed or not, both hold the same chain.
        for p in [&with, &without] {
            let conn = SqliteReader::open(p).unwrap();
            assert!(matches!(
                query::verify(&conn).unwrap(),
                Verification::Intact { records: 80 }
            ));
        }
    }

    /// Without a checkpointer the writer still checkpoints, once the WAL passes
    /// `WRITER_CHECKPOINT_PAGES`, and not before.
    #[test]
    fn the_writer_checkpoints_by_itself_past_its_backstop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        let wal = dir.path().join("audit.db-wal");
        let mut store = SqliteStore::open(&path).unwrap();
        let base = std::fs::metadata(&path).unwrap().len();
        let wal_pages = || {
            std::fs::metadata(&wal)
                .map(|m| m.len().saturating_sub(32) / (4096 + 24))
                .unwrap_or(0)
        };
        // Records of about one page each, 1,000 per commit.
        let pad = "x".repeat(3500);
        let mut batches = 0;
        while std::fs::metadata(&path).unwrap().len() == base {
            assert!(
                wal_pages() < u64::from(WRITER_CHECKPOINT_PAGES),
                "no checkpoint at {} pages",
                wal_pages()
            );
            assert!(batches < 40, "the WAL never reached the backstop");
            let (mut seq, mut hash) = store.head().unwrap();
            let mut batch = Vec::new();
            for _ in 0..1000 {
                let record = NewRecord {
                    kind: RecordKind::Request,
                    event_id: format!("id-{seq}"),
                    event_time: "2026-11-22T10:00:00.000Z".into(),
                    body: ObjectText::from_value(&json!({"pad": pad})),
                    index: IndexFields::default(),
                    observed: vec![],
                };
                let l = link(seq, &hash, record);
                (seq, hash) = (l.seq, l.hash.clone());
                batch.push(l);
            }
            store.append(&batch).unwrap();
            batches += 1;
        }
        assert!(wal_pages() >= u64::from(WRITER_CHECKPOINT_PAGES));
        assert!(batches > 10, "checkpointed after only {batches} batches");
    }

    fn user_version(path: &Path) -> i64 {
        Connection::open(path)
            .unwrap()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap()
    }

    /// A new database and one of the first release are stamped with the schema version; a
    /// file that is not the proxy's is refused, by both openings, and not changed.
    #[test]
    fn the_database_is_the_proxys_own() {
        let dir = tempfile::tempdir().unwrap();
        let new = dir.path().join("new.db");
        drop(SqliteStore::open(&new).unwrap());
        assert_eq!(user_version(&new), SCHEMA_VERSION);
        let old = dir.path().join("old.db");
        Connection::open(&old).unwrap().execute_batch(FIRST_SCHEMA).unwrap();
        assert_eq!(user_version(&old), 0);
        assert!(
            open_read_only(&old).is_ok(),
            "an earlier release's database is readable"
        );
        drop(SqliteStore::open(&old).unwrap());
        assert_eq!(user_version(&old), SCHEMA_VERSION);

        let refused = |name: &str, setup: &str, why: &str| {
            let p = dir.path().join(name);
            Connection::open(&p).unwrap().execute_batch(setup).unwrap();
            let bytes = std::fs::read(&p).unwrap();
            for e in [SqliteStore::open(&p).err(), open_read_only(&p).err()] {
                let e = e.unwrap_or_else(|| panic!("{name} was accepted")).to_string();
                assert!(e.contains(why) && e.contains(name), "{name}: {e}");
            }
            assert_eq!(std::fs::read(&p).unwrap(), bytes, "{name} was changed");
        };
        refused("foreign.db", "CREATE TABLE t (x);", "not retention-proxy's (t)");
        refused(
            "newer.db",
            &format!("{FIRST_SCHEMA} PRAGMA user_version = {};", SCHEMA_VERSION + 1),
            "newer than",
        );
        refused(
            "other-app.db",
            "PRAGMA application_id = 7; CREATE TABLE t (x);",
            "another application",
        );
        refused("lookalike.db", "CREATE TABLE records (id INTEGER);", "no seq column");
        let text = dir.path().join("notes.db");
        std::fs::write(
            &text,
            "these are notes, not a database, and long enough to have a header",
        )
        .unwrap();
        let e = SqliteStore::open(&text).err().unwrap().to_string();
        assert!(e.contains("not an SQLite database"), "{e}");
    }
}
