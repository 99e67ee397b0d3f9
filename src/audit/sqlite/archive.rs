//! What `audit archive` needs of the SQLite store: the newest checkpoint older than a time,
//! the records before it read forward, and their removal in one transaction. The chain left in
//! the database then starts at that signed checkpoint.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use super::{check_read_only, open_err};
use crate::audit::AuditError;

fn rd(e: rusqlite::Error) -> AuditError {
    AuditError::Read(e.to_string())
}

/// A read-write connection for archiving (the proxy may run meanwhile: its writer waits for
/// the removal, which is one transaction).
pub struct Archiver {
    conn: Connection,
}

/// One stored record: its `seq` and the canonical text its hash covers.
pub type RawRecord = (u64, String);

impl Archiver {
    /// Opens `path`, which must be an audit database.
    pub fn open(path: &Path) -> Result<Archiver, AuditError> {
        check_read_only(path)?;
        let conn = Connection::open(path).map_err(|e| open_err(path, e))?;
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(|e| open_err(path, e))?;
        Ok(Archiver { conn })
    }

    /// The newest checkpoint made before `before` (RFC 3339, as the log spells times): its
    /// `seq` and text. Everything before it may be archived.
    pub fn checkpoint_before(&self, before: &str) -> Result<Option<RawRecord>, AuditError> {
        self.conn
            .query_row(
                "SELECT seq, body FROM records WHERE kind = 'checkpoint' AND event_time < ?1 ORDER BY seq DESC LIMIT 1",
                [before],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)),
            )
            .optional()
            .map_err(rd)
    }

    /// The first `seq` the database holds.
    pub fn first_seq(&self) -> Result<Option<u64>, AuditError> {
        self.conn
            .query_row("SELECT min(seq) FROM records", [], |r| r.get::<_, Option<i64>>(0))
            .map(|s| s.map(|s| s as u64))
            .map_err(rd)
    }

    /// Calls `visit` for each record with `seq` below `end`, in order.
    pub fn records_before(
        &self,
        end: u64,
        visit: &mut dyn FnMut(u64, &str) -> Result<(), AuditError>,
    ) -> Result<(), AuditError> {
        let mut st = self
            .conn
            .prepare("SELECT seq, body FROM records WHERE seq < ?1 ORDER BY seq")
            .map_err(rd)?;
        let mut rows = st.query([end as i64]).map_err(rd)?;
        while let Some(r) = rows.next().map_err(rd)? {
            let seq = r.get::<_, i64>(0).map_err(rd)? as u64;
            let body = r
                .get_ref(1)
                .map_err(rd)?
                .as_str()
                .map_err(|e| AuditError::Read(e.to_string()))?;
            visit(seq, body)?;
        }
        Ok(())
    }

    /// Removes every record before `end` (and its filter rows), in one transaction; the
    /// number removed.
    pub fn remove_before(&mut self, end: u64) -> Result<u64, AuditError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| AuditError::Write(e.to_string()))?;
        let end = end as i64;
        let n = tx
            .execute("DELETE FROM records WHERE seq < ?1", params![end])
            .map_err(|e| AuditError::Write(e.to_string()))?;
        for table in ["record_actors", "record_resources"] {
            tx.execute(&format!("DELETE FROM {table} WHERE seq < ?1"), params![end])
                .map_err(|e| AuditError::Write(e.to_string()))?;
        }
        tx.commit().map_err(|e| AuditError::Write(e.to_string()))?;
        Ok(n as u64)
    }
}
