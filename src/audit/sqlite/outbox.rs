//! What shipping to the central store (SPEC §9) reads of the local log: whole records after a
//! `seq`, with their filter rows and the retention values they were the last to report,
//! through a read-only connection of its own (never the writer's).

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

use super::open_read_only;
use crate::audit::AuditError;

fn rd(e: rusqlite::Error) -> AuditError {
    AuditError::Read(e.to_string())
}

/// One record as stored locally, with what is indexed beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutRecord {
    /// Place in the chain.
    pub seq: u64,
    /// `request` or `outcome`.
    pub kind: String,
    /// `eventID`.
    pub event_id: String,
    /// `eventTime` column.
    pub event_time: String,
    /// `eventName` column.
    pub event_name: String,
    /// `eventSource` column.
    pub event_source: String,
    /// `guardrail.decision` column.
    pub decision: String,
    /// The canonical JSON text the hash covers.
    pub body: String,
    /// `prevHash`.
    pub prev_hash: String,
    /// `hash`.
    pub hash: String,
    /// Principals indexed for it.
    pub actors: Vec<String>,
    /// Resources indexed for it.
    pub resources: Vec<String>,
    /// `(target, resource, value as JSON text)` this record was the last to report.
    pub observed: Vec<(String, String, String)>,
}

/// A read-only connection reading the local log forward for shipping.
pub struct Outbox {
    conn: Connection,
}

impl Outbox {
    /// Opens `path` read-only (it must be an audit database).
    pub fn open(path: &Path) -> Result<Outbox, AuditError> {
        Ok(Outbox {
            conn: open_read_only(path)?,
        })
    }

    /// Up to `limit` records after `after`, in order, from one snapshot.
    pub fn after(&self, after: u64, limit: usize) -> Result<Vec<OutRecord>, AuditError> {
        let tx = self.conn.unchecked_transaction().map_err(rd)?;
        let mut out: Vec<OutRecord> = Vec::new();
        {
            let mut st = tx
                .prepare_cached(
                    "SELECT seq, kind, event_id, event_time, event_name, event_source, decision, body, prev_hash, hash
                     FROM records WHERE seq > ?1 ORDER BY seq LIMIT ?2",
                )
                .map_err(rd)?;
            let mut rows = st
                .query(params![
                    after.min(i64::MAX as u64) as i64,
                    limit.min(i64::MAX as usize) as i64
                ])
                .map_err(rd)?;
            while let Some(r) = rows.next().map_err(rd)? {
                out.push(OutRecord {
                    seq: r.get::<_, i64>(0).map_err(rd)? as u64,
                    kind: r.get(1).map_err(rd)?,
                    event_id: r.get(2).map_err(rd)?,
                    event_time: r.get(3).map_err(rd)?,
                    event_name: r.get(4).map_err(rd)?,
                    event_source: r.get(5).map_err(rd)?,
                    decision: r.get(6).map_err(rd)?,
                    body: r.get(7).map_err(rd)?,
                    prev_hash: r.get(8).map_err(rd)?,
                    hash: r.get(9).map_err(rd)?,
                    actors: Vec::new(),
                    resources: Vec::new(),
                    observed: Vec::new(),
                });
            }
        }
        let (Some(first), Some(last)) = (out.first().map(|r| r.seq), out.last().map(|r| r.seq)) else {
            return Ok(out);
        };
        let range = params![first as i64, last as i64];
        let place = |seq: i64| (seq as u64 - first) as usize;
        {
            let mut st = tx
                .prepare_cached("SELECT seq, actor FROM record_actors WHERE seq BETWEEN ?1 AND ?2")
                .map_err(rd)?;
            let mut rows = st.query(range).map_err(rd)?;
            while let Some(r) = rows.next().map_err(rd)? {
                if let Some(rec) = out.get_mut(place(r.get(0).map_err(rd)?)) {
                    rec.actors.push(r.get(1).map_err(rd)?);
                }
            }
            let mut st = tx
                .prepare_cached("SELECT seq, resource FROM record_resources WHERE seq BETWEEN ?1 AND ?2")
                .map_err(rd)?;
            let mut rows = st.query(range).map_err(rd)?;
            while let Some(r) = rows.next().map_err(rd)? {
                if let Some(rec) = out.get_mut(place(r.get(0).map_err(rd)?)) {
                    rec.resources.push(r.get(1).map_err(rd)?);
                }
            }
            let mut st = tx
                .prepare_cached("SELECT seq, target, resource, value FROM last_seen WHERE seq BETWEEN ?1 AND ?2")
                .map_err(rd)?;
            let mut rows = st.query(range).map_err(rd)?;
            while let Some(r) = rows.next().map_err(rd)? {
                if let Some(rec) = out.get_mut(place(r.get(0).map_err(rd)?)) {
                    rec.observed
                        .push((r.get(1).map_err(rd)?, r.get(2).map_err(rd)?, r.get(3).map_err(rd)?));
                }
            }
        }
        // A record's seq is its place in the page only if the chain has no gap here.
        if out.iter().enumerate().any(|(i, r)| r.seq != first + i as u64) {
            return Err(AuditError::Read(format!(
                "the local audit log has a gap between seq {first} and {last}; run `audit verify`"
            )));
        }
        Ok(out)
    }

    /// The hash of `seq`, if the local log holds it.
    pub fn hash_at(&self, seq: u64) -> Result<Option<String>, AuditError> {
        self.conn
            .query_row("SELECT hash FROM records WHERE seq = ?1", [seq as i64], |r| r.get(0))
            .optional()
            .map_err(rd)
    }

    /// The last `seq` of the local log (0 when empty) and the time of the first record after
    /// `after`, if any: what is not shipped yet, and since when.
    pub fn pending(&self, after: u64) -> Result<(u64, Option<String>), AuditError> {
        let tx = self.conn.unchecked_transaction().map_err(rd)?;
        let head: i64 = tx
            .query_row("SELECT coalesce(max(seq), 0) FROM records", [], |r| r.get(0))
            .map_err(rd)?;
        let time = tx
            .query_row(
                "SELECT event_time FROM records WHERE seq > ?1 ORDER BY seq LIMIT 1",
                [after.min(i64::MAX as u64) as i64],
                |r| r.get(0),
            )
            .optional()
            .map_err(rd)?;
        Ok((head.max(0) as u64, time))
    }
}
