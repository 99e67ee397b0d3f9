//! The reading side of the SQLite store: the SPEC §5 filters as SQL over the filter
//! columns and their indexes, state, and the chain walk.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, params_from_iter, types::Value as Sql};
use serde_json::Value;

use super::open_read_only;
use crate::audit::query::{Filter, StateRow, merge};
use crate::audit::verify::Ranged;
use crate::audit::{AuditError, Reader, StoredEvent, StoredRecord};

fn rd(e: rusqlite::Error) -> AuditError {
    AuditError::Read(e.to_string())
}

/// Column `i` of a row as text, borrowed from the row.
fn text<'r>(r: &'r rusqlite::Row<'_>, i: usize) -> Result<&'r str, AuditError> {
    r.get_ref(i)
        .map_err(rd)?
        .as_str()
        .map_err(|e| AuditError::Read(format!("column {i}: {e}")))
}

/// A read-only connection to an audit database.
pub struct SqliteReader {
    conn: Connection,
    ranges: Ranges,
}

/// The same database, opened again per range of the chain walk.
struct Ranges {
    path: PathBuf,
}

impl SqliteReader {
    /// Opens `path` read-only; a clear error when it is missing or not an audit database.
    pub fn open(path: &Path) -> Result<SqliteReader, AuditError> {
        Ok(SqliteReader {
            conn: open_read_only(path)?,
            ranges: Ranges {
                path: path.to_path_buf(),
            },
        })
    }
}

impl Reader for SqliteReader {
    fn events(
        &self,
        f: &Filter,
        visit: &mut dyn FnMut(u64, Value) -> Result<(), AuditError>,
    ) -> Result<(), AuditError> {
        let (sql, args) = select(f);
        let mut st = self.conn.prepare(&sql).map_err(rd)?;
        let mut rows = st.query(params_from_iter(args)).map_err(rd)?;
        while let Some(r) = rows.next().map_err(rd)? {
            let seq = r.get::<_, i64>(0).map_err(rd)? as u64;
            // Borrowed from the row: no copy of the texts before they are parsed.
            let outcome = match r.get_ref(3).map_err(rd)? {
                rusqlite::types::ValueRef::Null => None,
                _ => Some(text(r, 3)?),
            };
            visit(seq, merge(text(r, 1)?, text(r, 2)?, outcome))?;
        }
        Ok(())
    }

    fn stored_events(
        &self,
        f: &Filter,
        visit: &mut dyn FnMut(StoredEvent<'_>) -> Result<(), AuditError>,
    ) -> Result<bool, AuditError> {
        let (sql, args) = select_as(f, Plan::Streamed);
        let mut st = self.conn.prepare(&sql).map_err(rd)?;
        let mut rows = st.query(params_from_iter(args)).map_err(rd)?;
        while let Some(r) = rows.next().map_err(rd)? {
            let outcome = match r.get_ref(3).map_err(rd)? {
                rusqlite::types::ValueRef::Null => None,
                _ => Some(text(r, 3)?),
            };
            visit(StoredEvent {
                seq: r.get::<_, i64>(0).map_err(rd)? as u64,
                event_time: text(r, 4)?,
                request: text(r, 1)?,
                hash: text(r, 2)?,
                outcome,
            })?;
        }
        Ok(true)
    }

    fn state(&self) -> Result<Vec<StateRow>, AuditError> {
        let mut st = self
            .conn
            .prepare(
                "SELECT l.target, l.resource, l.value, coalesce(r.event_time, ''), coalesce(r.event_id, ''), coalesce(r.body, '') FROM last_seen l
             LEFT JOIN records r ON r.seq = l.seq ORDER BY l.resource, l.target",
            )
            .map_err(rd)?;
        let rows = st
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                ))
            })
            .map_err(rd)?;
        let mut out = Vec::new();
        for row in rows {
            let (target, resource, value, time, event_id, body) = row.map_err(rd)?;
            // An outcome record carries the time of its request; prefer the outcome's own time.
            let seen_at = serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|b| b.get("eventTime").and_then(Value::as_str).map(str::to_string))
                .unwrap_or(time);
            out.push(StateRow {
                target,
                resource,
                value: serde_json::from_str(&value).unwrap_or(Value::Null),
                seen_at,
                event_id,
            });
        }
        Ok(out)
    }

    fn chain(&self, visit: &mut dyn FnMut(StoredRecord<'_>) -> ControlFlow<()>) -> Result<(), AuditError> {
        chain_from(&self.conn, 1, visit)
    }

    fn ranged(&self) -> Option<&dyn Ranged> {
        Some(&self.ranges)
    }
}

impl Ranged for Ranges {
    fn checkpoint_records(&self) -> Result<Vec<(u64, String, String)>, AuditError> {
        let conn = open_read_only(&self.path)?;
        let mut st = conn
            .prepare("SELECT seq, hash, body FROM records WHERE kind = 'checkpoint' ORDER BY seq")
            .map_err(rd)?;
        let rows = st
            .query_map([], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?, r.get(2)?)))
            .map_err(rd)?;
        rows.collect::<Result<_, _>>().map_err(rd)
    }

    fn last_seq(&self) -> Result<u64, AuditError> {
        let conn = open_read_only(&self.path)?;
        conn.query_row("SELECT coalesce(max(seq), 0) FROM records", [], |r| r.get::<_, i64>(0))
            .map(|s| s as u64)
            .map_err(rd)
    }

    fn chain_from(
        &self,
        first: u64,
        visit: &mut dyn FnMut(StoredRecord<'_>) -> ControlFlow<()>,
    ) -> Result<(), AuditError> {
        chain_from(&open_read_only(&self.path)?, first, visit)
    }
}

/// Calls `visit` for the records with `seq >= first`, in order, until it breaks.
fn chain_from(
    conn: &Connection,
    first: u64,
    visit: &mut dyn FnMut(StoredRecord<'_>) -> ControlFlow<()>,
) -> Result<(), AuditError> {
    let mut st = conn
        .prepare(
            "SELECT seq, kind, event_id, event_time, event_name, event_source, body, prev_hash, hash FROM records
             WHERE seq >= ?1 ORDER BY seq",
        )
        .map_err(rd)?;
    let mut rows = st.query([i64::try_from(first).unwrap_or(i64::MAX)]).map_err(rd)?;
    while let Some(r) = rows.next().map_err(rd)? {
        let record = StoredRecord {
            seq: r.get::<_, i64>(0).map_err(rd)? as u64,
            kind: text(r, 1)?,
            event_id: text(r, 2)?,
            event_time: text(r, 3)?,
            event_name: text(r, 4)?,
            event_source: text(r, 5)?,
            body: text(r, 6)?,
            prev_hash: text(r, 7)?,
            hash: text(r, 8)?,
        };
        if visit(record).is_break() {
            break;
        }
    }
    Ok(())
}

/// The statement and arguments of a filtered query.
fn select(f: &Filter) -> (String, Vec<Sql>) {
    select_as(f, Plan::Planned)
}

/// How a statement reaches its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    /// As SQLite's planner picks from the filters: an index, and the rows sorted by `seq`
    /// afterwards when the index is not in that order (a page of events).
    Planned,
    /// In `seq` order without sorting the rows (and their texts) afterwards: a scan of the
    /// table when no filter narrows through an index, else the matching `seq`s first (from
    /// the index), then their rows in order. For reading many events (an export), where
    /// sorting them would copy every text into a temporary B-tree.
    Streamed,
}

fn select_as(f: &Filter, plan: Plan) -> (String, Vec<Sql>) {
    let mut sql = String::from(
        "SELECT r.seq, r.body, r.hash, (SELECT o.body FROM records o WHERE o.event_id = r.event_id AND o.kind = 'outcome' ORDER BY o.seq LIMIT 1),
         r.event_time FROM records r WHERE ",
    );
    let narrowed = f.since.is_some()
        || f.until.is_some()
        || f.event_name.is_some()
        || f.decision.is_some()
        || f.event_id.is_some()
        || f.actor.is_some()
        || f.resource.is_some()
        || f.access_key_id.is_some()
        || f.user_name.is_some();
    let plan = if f.by_time { Plan::Planned } else { plan };
    sql.push_str(match (plan, narrowed) {
        (Plan::Planned, _) => "r.kind = 'request'",
        (Plan::Streamed, false) => "+r.kind = 'request'",
        (Plan::Streamed, true) => "r.seq IN (SELECT r.seq FROM records r WHERE r.kind = 'request'",
    });
    let mut args: Vec<Sql> = Vec::new();
    let mut cond = |clause: &str, v: Sql| {
        sql.push_str(clause);
        args.push(v);
    };
    if let Some(s) = &f.since {
        cond(" AND r.event_time >= ?", Sql::Text(s.clone()));
    }
    if let Some(s) = &f.until {
        cond(" AND r.event_time < ?", Sql::Text(s.clone()));
    }
    if let Some(s) = &f.event_name {
        cond(" AND r.event_name = ?", Sql::Text(s.clone()));
    }
    if let Some(s) = &f.source {
        cond(
            " AND r.event_source = ?",
            Sql::Text(crate::vendors::event_source_named(s)),
        );
    }
    if let Some(s) = &f.decision {
        cond(" AND r.decision = ?", Sql::Text(s.clone()));
    }
    if let Some(s) = &f.event_id {
        cond(" AND r.event_id = ?", Sql::Text(s.clone()));
    }
    if let Some(s) = &f.instance {
        cond(" AND json_extract(r.body, '$.proxyInstance') = ?", Sql::Text(s.clone()));
    }
    // As `merge` decides it: the outcome link's, else the request link's (a call that ended
    // at the proxy), else `unknown`.
    if let Some(s) = &f.outcome {
        cond(
            " AND coalesce((SELECT json_extract(o.body, '$.outcome') FROM records o WHERE o.event_id = r.event_id AND o.kind = 'outcome' ORDER BY o.seq LIMIT 1), json_extract(r.body, '$.outcome'), 'unknown') = ?",
            Sql::Text(s.clone()),
        );
    }
    if let Some(b) = f.read_only {
        cond(" AND json_extract(r.body, '$.readOnly') = ?", Sql::Integer(b as i64));
    }
    // The principal index narrows first; the JSON test then keeps only the exact field.
    if let Some(s) = &f.access_key_id {
        cond(
            " AND r.seq IN (SELECT seq FROM record_actors WHERE actor = ?)",
            Sql::Text(s.clone()),
        );
        cond(
            " AND json_extract(r.body, '$.userIdentity.accessKeyId') = ?",
            Sql::Text(s.clone()),
        );
    }
    if let Some(s) = &f.user_name {
        cond(
            " AND r.seq IN (SELECT seq FROM record_actors WHERE actor = ?)",
            Sql::Text(s.clone()),
        );
        cond(
            " AND coalesce(json_extract(r.body, '$.userIdentity.chimeBearer'), json_extract(r.body, '$.userIdentity.tokenFingerprint'), json_extract(r.body, '$.userIdentity.accessKeyId')) = ?",
            Sql::Text(s.clone()),
        );
    }
    if let Some(s) = &f.actor {
        cond(
            " AND r.seq IN (SELECT seq FROM record_actors WHERE actor = ?)",
            Sql::Text(s.clone()),
        );
    }
    // Tested on the request link's `seq`, which the time indexes hold: a newest-first page
    // reads only the index until it has its events.
    if let Some(s) = &f.resource {
        cond(
            " AND r.seq IN (SELECT y.seq FROM records y WHERE y.kind = 'request' AND y.event_id IN (SELECT x.event_id FROM records x JOIN record_resources rr ON rr.seq = x.seq WHERE rr.resource = ?))",
            Sql::Text(s.clone()),
        );
    }
    if let Some(a) = f.after_seq {
        cond(" AND r.seq > ?", Sql::Integer(a as i64));
    }
    if let Some(b) = f.before_seq {
        cond(" AND r.seq < ?", Sql::Integer(b as i64));
    }
    if let Some((t, seq)) = &f.time_cursor {
        let op = if f.newest_first { "<" } else { ">" };
        sql.push_str(&format!(" AND (r.event_time, r.seq) {op} (?, ?)"));
        args.push(Sql::Text(t.clone()));
        args.push(Sql::Integer((*seq).min(i64::MAX as u64) as i64));
    }
    if plan == Plan::Streamed && narrowed {
        sql.push(')');
    }
    sql.push_str(match (f.by_time, f.newest_first) {
        (false, false) => " ORDER BY r.seq",
        (false, true) => " ORDER BY r.seq DESC",
        (true, false) => " ORDER BY r.event_time, r.seq",
        (true, true) => " ORDER BY r.event_time DESC, r.seq DESC",
    });
    if let Some(l) = f.limit {
        sql.push_str(" LIMIT ?");
        args.push(Sql::Integer(l.min(i64::MAX as u64) as i64));
    }
    (sql, args)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::canonical;
    use crate::audit::query::{Verification, verify};
    use crate::audit::sqlite::SqliteStore;

    #[test]
    fn filtered_queries_use_the_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        drop(SqliteStore::open(&path).unwrap());
        let conn = open_read_only(&path).unwrap();
        let t = || Some("2026-11-22T10:00:00.000Z".to_string());
        let s = |v: &str| Some(v.to_string());
        for (f, index) in [
            (
                Filter {
                    since: t(),
                    ..Filter::default()
                },
                "records_time",
            ),
            (
                Filter {
                    until: t(),
                    ..Filter::default()
                },
                "records_time",
            ),
            (
                Filter {
                    event_name: s("GetRetentionSettings"),
                    since: t(),
                    ..Filter::default()
                },
                "records_name_time",
            ),
            (
                Filter {
                    event_id: s("e"),
                    ..Filter::default()
                },
                "records_event_id",
            ),
            (
                Filter {
                    actor: s("alice"),
                    ..Filter::default()
                },
                "PRIMARY KEY (actor=?)",
            ),
            (
                Filter {
                    resource: s("C0123"),
                    ..Filter::default()
                },
                "PRIMARY KEY (resource=?)",
            ),
        ] {
            let (sql, args) = select(&f);
            let mut st = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let plan: Vec<String> = st
                .query_map(params_from_iter(args), |r| r.get::<_, String>(3))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            assert!(
                plan.iter().any(|p| p.contains(index) && !p.starts_with("SCAN")),
                "{f:?}: {plan:?}"
            );
        }
    }

    /// Reading events as stored (the export) gives the rows a page of events gives, in the
    /// same order, and never sorts them afterwards.
    #[test]
    fn stored_events_are_the_events_in_seq_order_without_a_sort() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        let mut store = SqliteStore::open(&path).unwrap();
        for i in 0..9 {
            crate::audit::testing::call(&mut store, i, 30 + i);
        }
        let reader = SqliteReader::open(&path).unwrap();
        let s = |v: &str| Some(v.to_string());
        let filters = [
            Filter::default(),
            Filter {
                since: s("2026-11-22T10:00:03.000Z"),
                ..Filter::default()
            },
            Filter {
                until: s("2026-11-22T10:00:05.000Z"),
                newest_first: true,
                ..Filter::default()
            },
            Filter {
                event_name: s("admin.conversations.setCustomRetention"),
                since: s("2026-11-22T10:00:02.000Z"),
                limit: Some(3),
                ..Filter::default()
            },
            Filter {
                actor: s("key-4"),
                ..Filter::default()
            },
            Filter {
                resource: s("C0123"),
                after_seq: Some(4),
                ..Filter::default()
            },
            Filter {
                event_id: s("id-7"),
                ..Filter::default()
            },
            Filter {
                decision: s("allow"),
                limit: Some(2),
                newest_first: true,
                ..Filter::default()
            },
            Filter {
                source: s("slack"),
                before_seq: Some(9),
                ..Filter::default()
            },
        ];
        for f in filters {
            let mut planned = Vec::new();
            reader
                .events(&f, &mut |seq, e| {
                    planned.push((seq, e));
                    Ok(())
                })
                .unwrap();
            let mut streamed = Vec::new();
            let offered = reader
                .stored_events(&f, &mut |e| {
                    streamed.push((e.seq, merge(e.request, e.hash, e.outcome)));
                    assert_eq!(Some(e.event_time), streamed.last().unwrap().1["eventTime"].as_str());
                    Ok(())
                })
                .unwrap();
            assert!(offered);
            assert!(!planned.is_empty(), "{f:?} selects nothing");
            assert_eq!(streamed, planned, "{f:?}");
            let (sql, args) = select_as(&f, Plan::Streamed);
            let mut st = reader.conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let plan: Vec<String> = st
                .query_map(params_from_iter(args), |r| r.get::<_, String>(3))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            assert!(!plan.iter().any(|p| p.contains("TEMP B-TREE")), "{f:?}: {plan:?}");
        }
    }

    /// A store of three calls (six records), closed; its path.
    fn three_calls(dir: &std::path::Path) -> std::path::PathBuf {
        let path = dir.join("audit.db");
        let mut store = SqliteStore::open(&path).unwrap();
        for i in 0..3 {
            crate::audit::testing::call(&mut store, i, 30 + i);
        }
        path
    }

    /// Replaces the body of `seq` and recomputes its own hash, as a forger would.
    fn forge(path: &std::path::Path, seq: i64, body: &str) {
        let c = Connection::open(path).unwrap();
        let hash = canonical::sha256_hex(body.as_bytes());
        c.execute(
            "UPDATE records SET body = ?1, hash = ?2 WHERE seq = ?3",
            rusqlite::params![body, hash, seq],
        )
        .unwrap();
    }

    fn body(path: &std::path::Path, seq: i64) -> String {
        let c = Connection::open(path).unwrap();
        c.query_row("SELECT body FROM records WHERE seq = ?1", [seq], |r| r.get(0))
            .unwrap()
    }

    fn verified(path: &std::path::Path) -> Verification {
        verify(&SqliteReader::open(path).unwrap()).unwrap()
    }

    #[test]
    fn verify_compares_the_hashed_content_with_the_columns() {
        let dir = tempfile::tempdir().unwrap();
        let path = three_calls(dir.path());
        assert!(matches!(verified(&path), Verification::Intact { records: 6 }));
        let original = body(&path, 3);
        // Each forgery re-hashes the record itself, so only the column comparison (or the
        // next link) can catch it; the last record has no next link.
        for (forged, reason) in [
            (original.replacen("\"seq\":3", "\"seq\":4", 1), "seq or prevHash"),
            (
                original.replacen("\"recordType\":\"request\"", "\"recordType\":\"outcome\"", 1),
                "kind or eventID",
            ),
            (
                original.replacen(
                    "\"eventName\":\"admin.conversations.setCustomRetention\"",
                    "\"eventName\":\"x\"",
                    1,
                ),
                "eventTime, eventName or eventSource",
            ),
            (original.replacen("{", "{\"eventID\":\"id-9\",", 1), "not a JSON object"),
            (format!("[{original}]"), "not a JSON object"),
            (original.replacen("}", "", 1), "not a JSON object"),
        ] {
            assert_ne!(forged, original);
            let scratch = dir.path().join("forged.db");
            std::fs::copy(&path, &scratch).unwrap();
            // Make the forged record the last link, so the next link cannot catch it.
            let c = Connection::open(&scratch).unwrap();
            c.execute("DELETE FROM records WHERE seq > 3", []).unwrap();
            drop(c);
            forge(&scratch, 3, &forged);
            match verified(&scratch) {
                Verification::Broken { seq: 3, reason: r } => assert!(r.contains(reason), "{forged}: {r}"),
                other => panic!("{forged}: expected broken at 3, got {other:?}"),
            }
            std::fs::remove_file(&scratch).unwrap();
        }
        // Fields the columns do not hold are covered by the hash and the next link.
        let scratch = dir.path().join("forged.db");
        std::fs::copy(&path, &scratch).unwrap();
        forge(&scratch, 3, &original.replacen('{', "{\"added\":1,", 1));
        assert!(matches!(verified(&scratch), Verification::Broken { seq: 4, .. }));
    }
}
