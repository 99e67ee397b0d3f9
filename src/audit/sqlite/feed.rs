//! What alert delivery (SPEC §11) needs of the SQLite store: the request links after a
//! position, read forward through a read-only connection ([`AlertFeed`]), and each sink's
//! position, kept in `alert_positions` through a connection of its own ([`Positions`]).
//!
//! Neither touches the chain: `alert_positions` is beside it, and a position write is one
//! short statement on its own connection, never on the writer thread. It commits with
//! `synchronous=NORMAL`: it survives a crash of the process (it is in the WAL), and the
//! writer's next `FULL` commit makes it durable on disk too. A position lost to a power cut
//! only means an alert is sent again, never that one is skipped.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use super::{open_err, open_read_only};
use crate::audit::AuditError;

fn rd(e: rusqlite::Error) -> AuditError {
    AuditError::Read(e.to_string())
}

/// One request link, as the feed reads it.
#[derive(Debug, Clone)]
pub struct FeedRecord {
    /// Its place in the chain.
    pub seq: u64,
    /// The call's `eventID`.
    pub event_id: String,
    /// The stored canonical JSON text.
    pub body: String,
    /// Its `hash` (the merged event carries it).
    pub hash: String,
}

/// A page of request links read forward.
#[derive(Debug, Clone, Default)]
pub struct FeedPage {
    /// Request links after the position asked for, in `seq` order.
    pub records: Vec<FeedRecord>,
    /// Every record up to this `seq` has been looked at (requests and outcomes alike).
    pub scanned_to: u64,
    /// The last `seq` in the log when the page was read.
    pub head: u64,
}

/// Request links in a `seq` range, by the primary key. The `+` keeps SQLite from reaching
/// them through an index on `kind` (every request link, then sorted): that cost grew with the
/// log and slowed the proxy beside a sink that reads it several times a second.
const REQUESTS_AFTER: &str = "SELECT seq, event_id, body, hash FROM records
     WHERE seq > ?1 AND seq <= ?2 AND +kind = 'request' ORDER BY seq LIMIT ?3";

/// The outcome link of one call.
const OUTCOME_OF: &str = "SELECT body FROM records WHERE event_id = ?1 AND kind = 'outcome' ORDER BY seq LIMIT 1";

/// The time of the first record after a `seq`.
const TIME_AFTER: &str = "SELECT event_time FROM records WHERE seq > ?1 ORDER BY seq LIMIT 1";

/// A read-only connection for reading the log forward.
pub struct AlertFeed {
    conn: Connection,
}

impl AlertFeed {
    /// Opens `path` read-only (it must be an audit database).
    pub fn open(path: &Path) -> Result<AlertFeed, AuditError> {
        Ok(AlertFeed {
            conn: open_read_only(path)?,
        })
    }

    /// Up to `limit` request links after `after`, from one snapshot of the log.
    pub fn requests_after(&self, after: u64, limit: usize) -> Result<FeedPage, AuditError> {
        let tx = self.conn.unchecked_transaction().map_err(rd)?;
        let head: i64 = tx
            .query_row("SELECT coalesce(max(seq), 0) FROM records", [], |r| r.get(0))
            .map_err(rd)?;
        let head = head.max(0) as u64;
        let mut page = FeedPage {
            records: Vec::new(),
            scanned_to: head.max(after),
            head,
        };
        {
            let mut st = tx.prepare_cached(REQUESTS_AFTER).map_err(rd)?;
            let mut rows = st
                .query(params![after as i64, head as i64, limit.min(i64::MAX as usize) as i64])
                .map_err(rd)?;
            while let Some(r) = rows.next().map_err(rd)? {
                page.records.push(FeedRecord {
                    seq: r.get::<_, i64>(0).map_err(rd)? as u64,
                    event_id: r.get(1).map_err(rd)?,
                    body: r.get(2).map_err(rd)?,
                    hash: r.get(3).map_err(rd)?,
                });
            }
        }
        if page.records.len() >= limit
            && let Some(last) = page.records.last()
        {
            page.scanned_to = last.seq;
        }
        tx.commit().map_err(rd)?;
        Ok(page)
    }

    /// The last `seq` in the log (0 when empty).
    pub fn head(&self) -> Result<u64, AuditError> {
        self.conn
            .query_row("SELECT coalesce(max(seq), 0) FROM records", [], |r| r.get::<_, i64>(0))
            .map(|h| h.max(0) as u64)
            .map_err(rd)
    }

    /// The outcome link of the call `event_id`, when it has been written.
    pub fn outcome_of(&self, event_id: &str) -> Result<Option<String>, AuditError> {
        self.conn
            .prepare_cached(OUTCOME_OF)
            .map_err(rd)?
            .query_row([event_id], |r| r.get(0))
            .optional()
            .map_err(rd)
    }

    /// The `eventTime` of the first record after `after`, when there is one: how old the
    /// oldest record a sink has not passed is.
    pub fn time_after(&self, after: u64) -> Result<Option<String>, AuditError> {
        self.conn
            .prepare_cached(TIME_AFTER)
            .map_err(rd)?
            .query_row([after as i64], |r| r.get(0))
            .optional()
            .map_err(rd)
    }
}

/// The position of each alert sink (the last `seq` it has passed: delivered or not its
/// business), on a read-write connection of its own.
pub struct Positions {
    conn: Connection,
}

impl Positions {
    /// Opens the database at `path`, which [`super::SqliteStore::open`] has already created
    /// or upgraded (so `alert_positions` exists).
    pub fn open(path: &Path) -> Result<Positions, AuditError> {
        // The same ownership checks as every other opening.
        drop(open_read_only(path)?);
        let conn = Connection::open(path).map_err(|e| open_err(path, e))?;
        // Short: a position that cannot be written now is written with the next one.
        conn.busy_timeout(Duration::from_millis(250))
            .and_then(|_| conn.execute_batch("PRAGMA synchronous=NORMAL;"))
            .map_err(|e| open_err(path, e))?;
        Ok(Positions { conn })
    }

    /// The stored position of `sink`, if it has one.
    pub fn get(&self, sink: &str) -> Result<Option<u64>, AuditError> {
        self.conn
            .prepare_cached("SELECT seq FROM alert_positions WHERE sink = ?1")
            .map_err(rd)?
            .query_row([sink], |r| r.get::<_, i64>(0))
            .optional()
            .map(|v| v.map(|s| s.max(0) as u64))
            .map_err(rd)
    }

    /// The position of `sink`, or — for a sink seen for the first time — the head of the log,
    /// stored at once: a new sink is told about what happens from now on, not the history.
    pub fn get_or_start(&self, sink: &str) -> Result<u64, AuditError> {
        if let Some(p) = self.get(sink)? {
            return Ok(p);
        }
        let head: i64 = self
            .conn
            .query_row("SELECT coalesce(max(seq), 0) FROM records", [], |r| r.get(0))
            .map_err(rd)?;
        let head = head.max(0) as u64;
        self.set(sink, head)?;
        Ok(head)
    }

    /// Stores `seq` as the position of `sink`.
    pub fn set(&self, sink: &str, seq: u64) -> Result<(), AuditError> {
        let now = crate::audit::query::format_time(time::OffsetDateTime::now_utc());
        self.conn
            .prepare_cached(
                "INSERT INTO alert_positions (sink, seq, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (sink) DO UPDATE SET seq = excluded.seq, updated_at = excluded.updated_at",
            )
            .map_err(|e| AuditError::Write(e.to_string()))?
            .execute(params![sink, seq as i64, now])
            .map(|_| ())
            .map_err(|e| AuditError::Write(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::Backend;
    use crate::audit::query::{Verification, verify};
    use crate::audit::sqlite::{SqliteReader, SqliteStore};
    use crate::audit::testing::call;

    #[test]
    fn the_feed_reads_request_links_forward_and_positions_persist_beside_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        let mut store = SqliteStore::open(&path).unwrap();
        let positions = Positions::open(&path).unwrap();
        // A new sink starts at the head: 0 in an empty log.
        assert_eq!(positions.get_or_start("a").unwrap(), 0);
        for i in 1..=3 {
            call(&mut store, i, 100 + i);
        }
        // Another new sink starts after what is there.
        assert_eq!(positions.get_or_start("late").unwrap(), 6);
        assert_eq!(positions.get_or_start("a").unwrap(), 0);

        let feed = AlertFeed::open(&path).unwrap();
        let page = feed.requests_after(0, 10).unwrap();
        let seqs: Vec<u64> = page.records.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, [1, 3, 5]);
        assert_eq!((page.scanned_to, page.head), (6, 6));
        // A full page stops at its last record.
        let page = feed.requests_after(1, 1).unwrap();
        assert_eq!(page.records[0].seq, 3);
        assert_eq!(page.scanned_to, 3);
        assert_eq!(feed.requests_after(6, 10).unwrap().records.len(), 0);
        assert!(feed.outcome_of("id-2").unwrap().unwrap().contains("forwarded"));
        assert_eq!(feed.outcome_of("nope").unwrap(), None);
        assert_eq!(feed.time_after(4).unwrap().as_deref(), Some("2026-11-22T10:00:03.000Z"));
        assert_eq!(feed.time_after(6).unwrap(), None);

        positions.set("a", 5).unwrap();
        drop(positions);
        // Writes go on, positions stay, and the chain is untouched by them.
        call(&mut store, 4, 7);
        let positions = Positions::open(&path).unwrap();
        assert_eq!(positions.get("a").unwrap(), Some(5));
        assert!(matches!(
            verify(&SqliteReader::open(&path).unwrap()).unwrap(),
            Verification::Intact { records: 8 }
        ));
        assert_eq!(store.head().unwrap().0, 8);
    }

    /// Every statement a sink runs several times a second reaches its rows by `seq` (or the
    /// `event_id` index), never by a scan of the log or a sort: its cost must not grow with
    /// the log.
    #[test]
    fn feed_statements_do_not_grow_with_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        let mut store = SqliteStore::open(&path).unwrap();
        for i in 1..=3 {
            call(&mut store, i, 100 + i);
        }
        let feed = AlertFeed::open(&path).unwrap();
        for (sql, args) in [
            (REQUESTS_AFTER, vec![1i64, 5, 10]),
            (TIME_AFTER, vec![1]),
            (OUTCOME_OF, vec![1]),
        ] {
            let mut st = feed.conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let plan: Vec<String> = st
                .query_map(rusqlite::params_from_iter(args), |r| r.get::<_, String>(3))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            let plan = plan.join("; ");
            assert!(
                plan.contains("INTEGER PRIMARY KEY") || plan.contains("USING INDEX records_event_id"),
                "{sql}: {plan}"
            );
            assert!(!plan.contains("TEMP B-TREE") && !plan.contains("SCAN"), "{sql}: {plan}");
        }
    }

    /// A database of the previous schema version gains the (empty) positions table when it
    /// is opened, and keeps its records.
    #[test]
    fn a_version_1_database_gains_the_positions_table() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        {
            let mut store = SqliteStore::open(&path).unwrap();
            call(&mut store, 1, 10);
        }
        let c = Connection::open(&path).unwrap();
        c.execute_batch("DROP TABLE alert_positions; PRAGMA user_version = 1;")
            .unwrap();
        drop(c);
        assert!(Positions::open(&path).unwrap().get("a").is_err(), "no table yet");
        drop(SqliteStore::open(&path).unwrap());
        let positions = Positions::open(&path).unwrap();
        assert_eq!(positions.get_or_start("a").unwrap(), 2);
        assert!(matches!(
            verify(&SqliteReader::open(&path).unwrap()).unwrap(),
            Verification::Intact { records: 2 }
        ));
    }
}
