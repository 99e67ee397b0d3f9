//! Reading the trail: merged events (request link + outcome link) with the SPEC §5 filters,
//! and `verify`, which walks the chain and names the first broken `seq`.

use rusqlite::{Connection, params_from_iter, types::Value as Sql};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::canonical;
use super::{AuditError, GENESIS};

/// Filters shared by `audit query` and `GET /v1/events`.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Events at or after (RFC 3339 UTC, ms).
    pub since: Option<String>,
    /// Events before.
    pub until: Option<String>,
    /// `eventName`.
    pub event_name: Option<String>,
    /// `eventSource` (`chime.amazonaws.com`, or a short name such as `slack`).
    pub source: Option<String>,
    /// A principal: access key id, bearer ARN, token fingerprint or proxy user.
    pub actor: Option<String>,
    /// A resource id (account, ARN or channel).
    pub resource: Option<String>,
    /// `guardrail.decision`.
    pub decision: Option<String>,
    /// `userIdentity.accessKeyId` exactly (LookupEvents `AccessKeyId`).
    pub access_key_id: Option<String>,
    /// The user name CloudTrail records show: the bearer ARN, else the token fingerprint, else
    /// the access key id (LookupEvents `Username`).
    pub user_name: Option<String>,
    /// `readOnly`.
    pub read_only: Option<bool>,
    /// `eventID`.
    pub event_id: Option<String>,
    /// Events after this request `seq` (cursor).
    pub after_seq: Option<u64>,
    /// Events before this request `seq` (cursor, newest-first listings).
    pub before_seq: Option<u64>,
    /// Newest first instead of oldest first.
    pub newest_first: bool,
    /// At most this many events.
    pub limit: Option<u64>,
}

/// Formats a time as the audit log spells it: `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC).
pub fn format_time(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    let mut out = String::with_capacity(24);
    let mut digits = |n: u32, width: usize, after: char| {
        let mut buf = [b'0'; 10];
        let mut n = n;
        for i in (0..width).rev() {
            buf[i] = b'0' + (n % 10) as u8;
            n /= 10;
        }
        out.extend(buf[..width].iter().map(|&b| char::from(b)));
        out.push(after);
    };
    // Years outside 0..=9999 cannot be written in this form; they are clamped (the clock
    // would have to be wildly wrong).
    digits(t.year().clamp(0, 9999) as u32, 4, '-');
    digits(u32::from(u8::from(t.month())), 2, '-');
    digits(u32::from(t.day()), 2, 'T');
    digits(u32::from(t.hour()), 2, ':');
    digits(u32::from(t.minute()), 2, ':');
    digits(u32::from(t.second()), 2, '.');
    digits(u32::from(t.millisecond()), 3, 'Z');
    out
}

/// Parses `T`: RFC 3339, or an age such as `15m`, `24h`, `7d` counted back from `now`.
pub fn parse_time(s: &str, now: OffsetDateTime) -> Result<String, String> {
    let s = s.trim();
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Ok(format_time(t));
    }
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: i64 = n
        .parse()
        .map_err(|_| format!("{s:?} is neither an RFC 3339 time nor an age like 15m, 24h or 7d"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        "w" => n * 7 * 86400,
        _ => {
            return Err(format!(
                "{s:?} is neither an RFC 3339 time nor an age like 15m, 24h or 7d"
            ));
        }
    };
    Ok(format_time(now - time::Duration::seconds(secs)))
}

fn source_name(s: &str) -> String {
    match s {
        "chime" => "chime.amazonaws.com".into(),
        "chime_messaging" | "messaging-chime" => "messaging-chime.amazonaws.com".into(),
        "chime_identity" | "identity-chime" => "identity-chime.amazonaws.com".into(),
        "slack" => "slack.com".into(),
        other => other.to_string(),
    }
}

/// Merges a request link and its outcome link into one event.
pub fn merge(request: &str, req_hash: &str, outcome: Option<&str>) -> Value {
    let mut ev: Map<String, Value> = match serde_json::from_str(request) {
        Ok(Value::Object(o)) => o,
        _ => Map::new(),
    };
    ev.remove("recordType");
    ev.insert("hash".into(), Value::from(req_hash));
    if let Some(o) = outcome
        && let Ok(Value::Object(o)) = serde_json::from_str::<Value>(o)
    {
        for (k, v) in o {
            match k.as_str() {
                "seq" | "prevHash" | "recordType" | "eventID" | "eventTime" => {}
                "userIdentity" => {
                    if let (Some(Value::Object(dst)), Value::Object(src)) = (ev.get_mut("userIdentity"), &v) {
                        for (a, b) in src {
                            dst.insert(a.clone(), b.clone());
                        }
                    } else {
                        ev.insert(k, v);
                    }
                }
                _ => {
                    ev.insert(k, v);
                }
            }
        }
    }
    if ev.get("outcome").is_none_or(Value::is_null) {
        ev.insert("outcome".into(), Value::from("unknown"));
    }
    Value::Object(ev)
}

/// Runs a filtered query; events in `seq` order, each the merge of its two links.
pub fn query(conn: &Connection, f: &Filter) -> Result<Vec<Value>, AuditError> {
    let mut out = Vec::new();
    for_each(conn, f, |_, e| {
        out.push(e);
        Ok(())
    })?;
    Ok(out)
}

/// The statement and arguments of a filtered query.
fn select(f: &Filter) -> (String, Vec<Sql>) {
    let mut sql = String::from(
        "SELECT r.seq, r.body, r.hash, (SELECT o.body FROM records o WHERE o.event_id = r.event_id AND o.kind = 'outcome' ORDER BY o.seq LIMIT 1)
         FROM records r WHERE r.kind = 'request'",
    );
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
        cond(" AND r.event_source = ?", Sql::Text(source_name(s)));
    }
    if let Some(s) = &f.decision {
        cond(" AND r.decision = ?", Sql::Text(s.clone()));
    }
    if let Some(s) = &f.event_id {
        cond(" AND r.event_id = ?", Sql::Text(s.clone()));
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
    if let Some(s) = &f.resource {
        cond(
            " AND r.event_id IN (SELECT x.event_id FROM records x JOIN record_resources rr ON rr.seq = x.seq WHERE rr.resource = ?)",
            Sql::Text(s.clone()),
        );
    }
    if let Some(a) = f.after_seq {
        cond(" AND r.seq > ?", Sql::Integer(a as i64));
    }
    if let Some(b) = f.before_seq {
        cond(" AND r.seq < ?", Sql::Integer(b as i64));
    }
    sql.push_str(if f.newest_first {
        " ORDER BY r.seq DESC"
    } else {
        " ORDER BY r.seq"
    });
    if let Some(l) = f.limit {
        sql.push_str(" LIMIT ?");
        args.push(Sql::Integer(l.min(i64::MAX as u64) as i64));
    }
    (sql, args)
}

/// Streams a filtered query: `visit(seq, event)` for each event, without holding them all.
pub fn for_each(
    conn: &Connection,
    f: &Filter,
    mut visit: impl FnMut(u64, Value) -> Result<(), AuditError>,
) -> Result<(), AuditError> {
    let (sql, args) = select(f);
    let rd = |e: rusqlite::Error| AuditError::Read(e.to_string());
    let mut st = conn.prepare(&sql).map_err(rd)?;
    let mut rows = st.query(params_from_iter(args)).map_err(rd)?;
    while let Some(r) = rows.next().map_err(rd)? {
        let seq = r.get::<_, i64>(0).map_err(rd)? as u64;
        // Borrowed from the row: no copy of the texts before they are parsed.
        let text = |i: usize| -> Result<&str, AuditError> {
            r.get_ref(i)
                .map_err(rd)?
                .as_str()
                .map_err(|e| AuditError::Read(format!("column {i}: {e}")))
        };
        let outcome = match r.get_ref(3).map_err(rd)? {
            rusqlite::types::ValueRef::Null => None,
            _ => Some(text(3)?),
        };
        visit(seq, merge(text(1)?, text(2)?, outcome))?;
    }
    Ok(())
}

/// One row of `audit state`: the last known value of a setting.
#[derive(Debug, Clone)]
pub struct StateRow {
    /// Target name.
    pub target: String,
    /// Resource id.
    pub resource: String,
    /// Value (`365`, `"off"`, `"default"`).
    pub value: Value,
    /// Time of the record that reported it.
    pub seen_at: String,
    /// `eventID` of that record.
    pub event_id: String,
}

/// The last known retention of every resource the proxy has seen.
pub fn state(conn: &Connection) -> Result<Vec<StateRow>, AuditError> {
    let rd = |e: rusqlite::Error| AuditError::Read(e.to_string());
    let mut st = conn
        .prepare(
            "SELECT l.target, l.resource, l.value, r.event_time, r.event_id, r.body FROM last_seen l
             JOIN records r ON r.seq = l.seq ORDER BY l.resource, l.target",
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

/// The result of walking the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    /// Every link verified.
    Intact {
        /// Records checked.
        records: u64,
    },
    /// The first record that does not verify.
    Broken {
        /// Its `seq`.
        seq: u64,
        /// What is wrong.
        reason: String,
    },
}

/// The fields of a record that `verify` compares with its columns. Every other field is
/// skipped without being built, which is most of the work of reading a record; one of these
/// keys given twice makes the record unreadable rather than letting one of its values win.
#[derive(serde::Deserialize)]
struct Checked {
    seq: Option<Value>,
    #[serde(rename = "prevHash")]
    prev_hash: Option<Value>,
    #[serde(rename = "recordType")]
    record_type: Option<Value>,
    #[serde(rename = "eventID")]
    event_id: Option<Value>,
    #[serde(rename = "eventTime")]
    event_time: Option<Value>,
    #[serde(rename = "eventName")]
    event_name: Option<Value>,
    #[serde(rename = "eventSource")]
    event_source: Option<Value>,
}

/// Walks every record in order and checks seq continuity, `prevHash` links, hashes and
/// that the filter columns agree with the hashed body.
pub fn verify(conn: &Connection) -> Result<Verification, AuditError> {
    let rd = |e: rusqlite::Error| AuditError::Read(e.to_string());
    let mut st = conn
        .prepare("SELECT seq, kind, event_id, event_time, event_name, event_source, body, prev_hash, hash FROM records ORDER BY seq")
        .map_err(rd)?;
    let mut rows = st.query([]).map_err(rd)?;
    let mut expect_seq = 1u64;
    let mut prev = GENESIS.to_string();
    let mut n = 0u64;
    while let Some(r) = rows.next().map_err(rd)? {
        let seq = r.get::<_, i64>(0).map_err(rd)? as u64;
        let kind: String = r.get(1).map_err(rd)?;
        let event_id: String = r.get(2).map_err(rd)?;
        let event_time: String = r.get(3).map_err(rd)?;
        let event_name: String = r.get(4).map_err(rd)?;
        let event_source: String = r.get(5).map_err(rd)?;
        let body: String = r.get(6).map_err(rd)?;
        let prev_hash: String = r.get(7).map_err(rd)?;
        let hash: String = r.get(8).map_err(rd)?;
        let broken = |reason: String| Ok(Verification::Broken { seq, reason });
        if seq != expect_seq {
            return Ok(Verification::Broken {
                seq: expect_seq,
                reason: format!("record {expect_seq} is missing (next present is {seq})"),
            });
        }
        if prev_hash != prev {
            return broken("its prevHash does not match the hash of the record before it".into());
        }
        if canonical::sha256_hex(body.as_bytes()) != hash {
            return broken("its content does not match its hash".into());
        }
        let v: Checked = match body.starts_with('{').then(|| serde_json::from_str(&body)) {
            Some(Ok(v)) => v,
            _ => return broken("its content is not a JSON object (with each key once)".into()),
        };
        let s = |v: &Option<Value>| v.as_ref().and_then(Value::as_str).unwrap_or("").to_string();
        if v.seq.as_ref().and_then(Value::as_u64) != Some(seq) || s(&v.prev_hash) != prev_hash {
            return broken("its seq or prevHash column differs from its content".into());
        }
        if s(&v.record_type) != kind || s(&v.event_id) != event_id {
            return broken("its kind or eventID column differs from its content".into());
        }
        if kind == "request"
            && (s(&v.event_time) != event_time || s(&v.event_name) != event_name || s(&v.event_source) != event_source)
        {
            return broken("its eventTime, eventName or eventSource column differs from its content".into());
        }
        prev = hash;
        expect_seq += 1;
        n += 1;
    }
    Ok(Verification::Intact { records: n })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Filtered queries over a large log go through an index, not a scan of every record.
    #[test]
    fn filtered_queries_use_the_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        drop(super::super::sqlite::SqliteStore::open(&path).unwrap());
        let conn = super::super::sqlite::open_read_only(&path).unwrap();
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

    /// A store of three calls (six records), closed; its path.
    fn three_calls(dir: &std::path::Path) -> std::path::PathBuf {
        let path = dir.join("audit.db");
        let mut store = super::super::sqlite::SqliteStore::open(&path).unwrap();
        for i in 0..3 {
            super::super::testing::call(&mut store, i, 30 + i);
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
        verify(&super::super::sqlite::open_read_only(path).unwrap()).unwrap()
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

    #[test]
    fn times() {
        for (t, want) in [
            ("2026-11-22T10:00:00Z", "2026-11-22T10:00:00.000Z"),
            ("0999-01-02T03:04:05.006+00:00", "0999-01-02T03:04:05.006Z"),
            ("2026-12-31T23:59:59.999999+00:00", "2026-12-31T23:59:59.999Z"),
            ("2027-01-01T01:30:00.5+02:00", "2026-12-31T23:30:00.500Z"),
        ] {
            assert_eq!(format_time(OffsetDateTime::parse(t, &Rfc3339).unwrap()), want);
        }
        let now = OffsetDateTime::parse("2026-11-22T10:00:00Z", &Rfc3339).unwrap();
        assert_eq!(parse_time("15m", now).unwrap(), "2026-11-22T09:45:00.000Z");
        assert_eq!(parse_time("7d", now).unwrap(), "2026-11-15T10:00:00.000Z");
        assert_eq!(
            parse_time("2026-11-22T12:00:00+02:00", now).unwrap(),
            "2026-11-22T10:00:00.000Z"
        );
        assert!(parse_time("yesterday", now).is_err());
        assert!(parse_time("", now).is_err());
        assert!(parse_time("5y", now).is_err());
    }

    #[test]
    fn merge_overlays_outcome_and_defaults_unknown() {
        let m = merge(
            r#"{"eventID":"e","seq":1,"recordType":"request","userIdentity":{"accessKeyId":"A","verified":false}}"#,
            "h",
            None,
        );
        assert_eq!(m["outcome"], "unknown");
        assert_eq!(m["hash"], "h");
        assert!(m.get("recordType").is_none());
        let m = merge(
            r#"{"eventID":"e","seq":1,"userIdentity":{"accessKeyId":"A","verified":false}}"#,
            "h",
            Some(r#"{"eventID":"e","seq":2,"outcome":"forwarded","httpStatus":200,"userIdentity":{"verified":true}}"#),
        );
        assert_eq!(m["outcome"], "forwarded");
        assert_eq!(m["seq"], 1);
        assert_eq!(m["userIdentity"]["accessKeyId"], "A");
        assert_eq!(m["userIdentity"]["verified"], true);
    }
}
