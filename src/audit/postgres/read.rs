//! Reading the fleet: the SPEC §5 filters as SQL over the central tables, the fleet-wide
//! state, and each instance's chain for `verify`. The [`Reader`] interface is synchronous (the
//! CLI, and the admin listener's blocking threads); queries run on a runtime the reader is
//! given or owns.

use std::future::Future;
use std::ops::ControlFlow;
use std::pin::pin;
use std::sync::Arc;

use futures_util::StreamExt;
use serde_json::Value;
use tokio_postgres::Client;
use tokio_postgres::types::ToSql;

use super::{Pool, rd};
use crate::audit::query::{Filter, StateRow, merge};
use crate::audit::{AuditError, Reader, StoredRecord};
use crate::config::Central;

/// Where the reader's queries run.
enum Runtime {
    /// The process's runtime (the reader is used on one of its blocking threads).
    Shared(tokio::runtime::Handle),
    /// A runtime of its own (the CLI).
    Own(tokio::runtime::Runtime),
}

/// A reader of the central store, optionally narrowed to one instance.
pub struct PostgresReader {
    client: Arc<Client>,
    rt: Runtime,
    instance: Option<String>,
}

/// A value bound to a statement.
enum Arg {
    Text(String),
    Int(i64),
    Bool(bool),
}

impl Arg {
    fn as_sql(&self) -> &(dyn ToSql + Sync) {
        match self {
            Arg::Text(s) => s,
            Arg::Int(i) => i,
            Arg::Bool(b) => b,
        }
    }
}

impl PostgresReader {
    /// Connects with a runtime of its own (for the CLI).
    pub fn open(central: &Central, instance: Option<String>) -> Result<PostgresReader, AuditError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| AuditError::Read(format!("cannot start a runtime: {e}")))?;
        let client = rt.block_on(async {
            let client = super::connect(central).await?;
            super::ensure_schema(&client, central).await?;
            Ok::<_, AuditError>(client)
        })?;
        Ok(PostgresReader {
            client: Arc::new(client),
            rt: Runtime::Own(rt),
            instance,
        })
    }

    /// A reader over `pool`'s connection, for a blocking thread of the process's runtime.
    pub fn shared(pool: &Pool, instance: Option<String>) -> Result<PostgresReader, AuditError> {
        let handle = tokio::runtime::Handle::current();
        let client = handle.block_on(pool.client())?;
        Ok(PostgresReader {
            client,
            rt: Runtime::Shared(handle),
            instance,
        })
    }

    fn block<F: Future>(&self, f: F) -> F::Output {
        match &self.rt {
            Runtime::Shared(h) => h.block_on(f),
            Runtime::Own(rt) => rt.block_on(f),
        }
    }

    /// Streams the rows of `sql`, calling `row` for each until it breaks or fails.
    fn stream(
        &self,
        sql: &str,
        args: &[Arg],
        row: &mut dyn FnMut(&tokio_postgres::Row) -> Result<ControlFlow<()>, AuditError>,
    ) -> Result<(), AuditError> {
        self.block(async {
            let st = self.client.prepare(sql).await.map_err(rd)?;
            let rows = self
                .client
                .query_raw(&st, args.iter().map(Arg::as_sql))
                .await
                .map_err(rd)?;
            let mut rows = pin!(rows);
            while let Some(r) = rows.next().await {
                if row(&r.map_err(rd)?)?.is_break() {
                    break;
                }
            }
            Ok(())
        })
    }
}

fn text(r: &tokio_postgres::Row, i: usize) -> Result<&str, AuditError> {
    r.try_get::<_, &str>(i).map_err(rd)
}

impl Reader for PostgresReader {
    fn events(
        &self,
        f: &Filter,
        visit: &mut dyn FnMut(u64, Value) -> Result<(), AuditError>,
    ) -> Result<(), AuditError> {
        let mut f = f.clone();
        if f.instance.is_none() {
            f.instance.clone_from(&self.instance);
        }
        let (sql, args) = select(&f);
        self.stream(&sql, &args, &mut |r| {
            let id = r.try_get::<_, i64>(0).map_err(rd)?;
            let outcome = r.try_get::<_, Option<&str>>(3).map_err(rd)?;
            visit(id as u64, merge(text(r, 1)?, text(r, 2)?, outcome))?;
            Ok(ControlFlow::Continue(()))
        })
    }

    fn state(&self) -> Result<Vec<StateRow>, AuditError> {
        let mut out = Vec::new();
        let (sql, args) = state_query(None, self.instance.as_deref());
        self.stream(&sql, &args, &mut |r| {
            out.push(state_row(r)?);
            Ok(ControlFlow::Continue(()))
        })?;
        Ok(out)
    }

    fn state_of(&self, resource: &str) -> Result<Vec<StateRow>, AuditError> {
        let mut out = Vec::new();
        let (sql, args) = state_query(Some(resource), self.instance.as_deref());
        self.stream(&sql, &args, &mut |r| {
            out.push(state_row(r)?);
            Ok(ControlFlow::Continue(()))
        })?;
        Ok(out)
    }

    fn chain(&self, visit: &mut dyn FnMut(StoredRecord<'_>) -> ControlFlow<()>) -> Result<(), AuditError> {
        match &self.instance {
            Some(i) => self.chain_of(i, visit),
            None => Err(AuditError::Read(
                "the central store holds one chain per instance: name one with --instance".into(),
            )),
        }
    }

    fn instances(&self) -> Result<Option<Vec<String>>, AuditError> {
        if let Some(i) = &self.instance {
            let mut found = false;
            self.stream(
                "SELECT 1 FROM audit_records WHERE instance = $1 LIMIT 1",
                &[Arg::Text(i.clone())],
                &mut |_| {
                    found = true;
                    Ok(ControlFlow::Break(()))
                },
            )?;
            return Ok(Some(if found { vec![i.clone()] } else { Vec::new() }));
        }
        let mut out = Vec::new();
        self.stream(
            "SELECT DISTINCT instance FROM audit_records ORDER BY instance",
            &[],
            &mut |r| {
                out.push(text(r, 0)?.to_string());
                Ok(ControlFlow::Continue(()))
            },
        )?;
        Ok(Some(out))
    }

    fn chain_of(
        &self,
        instance: &str,
        visit: &mut dyn FnMut(StoredRecord<'_>) -> ControlFlow<()>,
    ) -> Result<(), AuditError> {
        self.stream(
            "SELECT seq, kind, event_id, event_time, event_name, event_source, body, prev_hash, hash
             FROM audit_records WHERE instance = $1 ORDER BY seq",
            &[Arg::Text(instance.to_string())],
            &mut |r| {
                let record = StoredRecord {
                    seq: r.try_get::<_, i64>(0).map_err(rd)?.max(0) as u64,
                    kind: text(r, 1)?,
                    event_id: text(r, 2)?,
                    event_time: text(r, 3)?,
                    event_name: text(r, 4)?,
                    event_source: text(r, 5)?,
                    body: text(r, 6)?,
                    prev_hash: text(r, 7)?,
                    hash: text(r, 8)?,
                };
                Ok(visit(record))
            },
        )
    }
}

/// The latest value of each setting across the fleet (by the time of the record that reported
/// it), with that record's event.
fn state_query(resource: Option<&str>, instance: Option<&str>) -> (String, Vec<Arg>) {
    let mut sql = String::from(
        "SELECT DISTINCT ON (o.target, o.resource) o.target, o.resource, o.value, o.event_time, r.event_id, r.body
         FROM audit_observed o JOIN audit_records r ON r.instance = o.instance AND r.seq = o.seq WHERE true",
    );
    let mut args = Vec::new();
    if let Some(res) = resource {
        args.push(Arg::Text(res.to_string()));
        sql.push_str(&format!(" AND o.resource = ${}", args.len()));
    }
    if let Some(i) = instance {
        args.push(Arg::Text(i.to_string()));
        sql.push_str(&format!(" AND o.instance = ${}", args.len()));
    }
    sql.push_str(" ORDER BY o.target, o.resource, o.event_time DESC, o.instance, o.seq DESC");
    (sql, args)
}

fn state_row(r: &tokio_postgres::Row) -> Result<StateRow, AuditError> {
    let body = text(r, 5)?;
    // An outcome record carries the time of its request; prefer the outcome's own time.
    let seen_at = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|b| b.get("eventTime").and_then(Value::as_str).map(str::to_string))
        .unwrap_or(text(r, 3)?.to_string());
    Ok(StateRow {
        target: text(r, 0)?.to_string(),
        resource: text(r, 1)?.to_string(),
        value: serde_json::from_str(text(r, 2)?).unwrap_or(Value::Null),
        seen_at,
        event_id: text(r, 4)?.to_string(),
    })
}

/// The statement and arguments of a filtered query. Each event's position is its `id`.
fn select(f: &Filter) -> (String, Vec<Arg>) {
    const OUTCOME: &str = "(SELECT o.body FROM audit_records o WHERE o.event_id = r.event_id AND o.instance = r.instance AND o.kind = 'outcome' ORDER BY o.seq LIMIT 1)";
    let mut sql = format!("SELECT r.id, r.body, r.hash, {OUTCOME} FROM audit_records r WHERE r.kind = 'request'");
    let mut args: Vec<Arg> = Vec::new();
    let mut cond = |clause: &str, v: Arg| {
        args.push(v);
        sql.push_str(&clause.replace('?', &format!("${}", args.len())));
    };
    if let Some(s) = &f.since {
        cond(" AND r.event_time >= ?", Arg::Text(s.clone()));
    }
    if let Some(s) = &f.until {
        cond(" AND r.event_time < ?", Arg::Text(s.clone()));
    }
    if let Some(s) = &f.event_name {
        cond(" AND r.event_name = ?", Arg::Text(s.clone()));
    }
    if let Some(s) = &f.source {
        cond(
            " AND r.event_source = ?",
            Arg::Text(crate::vendors::event_source_named(s)),
        );
    }
    if let Some(s) = &f.decision {
        cond(" AND r.decision = ?", Arg::Text(s.clone()));
    }
    if let Some(s) = &f.event_id {
        cond(" AND r.event_id = ?", Arg::Text(s.clone()));
    }
    if let Some(s) = &f.instance {
        cond(" AND r.instance = ?", Arg::Text(s.clone()));
    }
    if let Some(s) = &f.outcome {
        cond(
            &format!(
                " AND coalesce({}, r.body::jsonb ->> 'outcome', 'unknown') = ?",
                OUTCOME.replace("SELECT o.body", "SELECT o.body::jsonb ->> 'outcome'")
            ),
            Arg::Text(s.clone()),
        );
    }
    if let Some(b) = f.read_only {
        cond(" AND (r.body::jsonb ->> 'readOnly')::boolean = ?", Arg::Bool(b));
    }
    if let Some(s) = &f.access_key_id {
        cond(
            " AND (r.instance, r.seq) IN (SELECT instance, seq FROM audit_actors WHERE actor = ?)",
            Arg::Text(s.clone()),
        );
        cond(
            " AND r.body::jsonb #>> '{userIdentity,accessKeyId}' = ?",
            Arg::Text(s.clone()),
        );
    }
    if let Some(s) = &f.user_name {
        cond(
            " AND (r.instance, r.seq) IN (SELECT instance, seq FROM audit_actors WHERE actor = ?)",
            Arg::Text(s.clone()),
        );
        cond(
            " AND coalesce(r.body::jsonb #>> '{userIdentity,chimeBearer}', r.body::jsonb #>> '{userIdentity,tokenFingerprint}', r.body::jsonb #>> '{userIdentity,accessKeyId}') = ?",
            Arg::Text(s.clone()),
        );
    }
    if let Some(s) = &f.actor {
        cond(
            " AND (r.instance, r.seq) IN (SELECT instance, seq FROM audit_actors WHERE actor = ?)",
            Arg::Text(s.clone()),
        );
    }
    if let Some(s) = &f.resource {
        cond(
            " AND (r.instance, r.event_id) IN (SELECT x.instance, x.event_id FROM audit_records x JOIN audit_resources rr ON rr.instance = x.instance AND rr.seq = x.seq WHERE rr.resource = ?)",
            Arg::Text(s.clone()),
        );
    }
    if let Some(a) = f.after_seq {
        cond(" AND r.id > ?", Arg::Int(a.min(i64::MAX as u64) as i64));
    }
    if let Some(b) = f.before_seq {
        cond(" AND r.id < ?", Arg::Int(b.min(i64::MAX as u64) as i64));
    }
    if let Some((t, id)) = &f.time_cursor {
        let op = if f.newest_first { "<" } else { ">" };
        args.push(Arg::Text(t.clone()));
        args.push(Arg::Int((*id).min(i64::MAX as u64) as i64));
        sql.push_str(&format!(
            " AND (r.event_time, r.id) {op} (${}, ${})",
            args.len() - 1,
            args.len()
        ));
    }
    sql.push_str(match (f.by_time, f.newest_first) {
        (false, false) => " ORDER BY r.id",
        (false, true) => " ORDER BY r.id DESC",
        (true, false) => " ORDER BY r.event_time, r.id",
        (true, true) => " ORDER BY r.event_time DESC, r.id DESC",
    });
    if let Some(l) = f.limit {
        args.push(Arg::Int(l.min(i64::MAX as u64) as i64));
        sql.push_str(&format!(" LIMIT ${}", args.len()));
    }
    (sql, args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_in_order() {
        let f = Filter {
            since: Some("2026-01-01T00:00:00.000Z".into()),
            instance: Some("b".into()),
            outcome: Some("forwarded".into()),
            time_cursor: Some(("2026-01-02T00:00:00.000Z".into(), 7)),
            newest_first: true,
            by_time: true,
            limit: Some(10),
            ..Filter::default()
        };
        let (sql, args) = select(&f);
        assert_eq!(args.len(), 6);
        for i in 1..=6 {
            assert!(sql.contains(&format!("${i}")), "{sql}");
        }
        assert!(!sql.contains("$7") && !sql.contains('?'), "{sql}");
        assert!(sql.ends_with("ORDER BY r.event_time DESC, r.id DESC LIMIT $6"), "{sql}");
    }
}
