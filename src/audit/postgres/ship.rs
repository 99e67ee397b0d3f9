//! Shipping an instance's chain to the central store: read the local log after the highest
//! `seq` PostgreSQL holds for the instance, check that it continues what PostgreSQL holds,
//! and insert it in batches of one transaction each. A batch sent twice changes nothing
//! (`ON CONFLICT DO NOTHING`, then the hashes of rows already there are compared); a chain
//! that does not continue PostgreSQL's (another live instance under the same name) is
//! refused, never merged. While PostgreSQL is down the shipper backs off and catches up when
//! it returns; the local log keeps every record meanwhile.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::{Notify, watch};
use tokio_postgres::Client;

use super::{connect, ensure_schema};
use crate::audit::AuditError;
use crate::audit::sqlite::{OutRecord, Outbox};
use crate::config::{Central, ShipMode};

/// Records per transaction.
const BATCH: usize = 1000;
/// First wait after a failure; doubled up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often a diverged chain is looked at again.
const DIVERGED_RECHECK: Duration = Duration::from_secs(30);
/// How often the shipper looks for new records when no commit wakes it.
const IDLE_TICK: Duration = Duration::from_secs(1);

/// Whether PostgreSQL is reachable, as the shipper last found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// Not tried yet.
    Connecting,
    /// Connected, and the chain continues PostgreSQL's.
    Up,
    /// The last attempt failed (or the chain diverged).
    Down,
}

/// What the shipper has done, as it reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Every record up to this `seq` is in PostgreSQL.
    pub shipped: u64,
    /// The link.
    pub link: Link,
}

/// The shipper's state, shared with readiness, the request path and `/metrics`.
pub struct Shipping {
    /// `proxyInstance`.
    pub instance: String,
    /// Async or sync.
    pub mode: ShipMode,
    /// Async mode's bound.
    pub max_lag: Duration,
    progress: watch::Sender<Progress>,
    diverged: Mutex<Option<String>>,
    last_error: Mutex<Option<String>>,
    /// `eventTime` of the oldest record not shipped yet.
    oldest_unshipped: Mutex<Option<String>>,
    lag_records: AtomicU64,
    shipped_total: AtomicU64,
    errors_total: AtomicU64,
    /// Woken by the writer after each commit.
    committed: Arc<Notify>,
}

impl Shipping {
    /// What is shipped, and whether PostgreSQL answers.
    pub fn progress(&self) -> Progress {
        *self.progress.borrow()
    }

    /// Why the chain is refused, when it diverged from PostgreSQL's.
    pub fn diverged(&self) -> Option<String> {
        self.diverged.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Age of the oldest record not shipped yet.
    pub fn lag(&self) -> Duration {
        let oldest = self.oldest_unshipped.lock().unwrap_or_else(|p| p.into_inner()).clone();
        oldest
            .and_then(|t| OffsetDateTime::parse(&t, &Rfc3339).ok())
            .map(|t| (OffsetDateTime::now_utc() - t).max(time::Duration::ZERO))
            .and_then(|d| Duration::try_from(d).ok())
            .unwrap_or_default()
    }

    /// Why the instance is not ready, if it is not: a diverged chain, or (async) a lag over
    /// `max_lag`, or (sync) PostgreSQL unreachable.
    pub fn problem(&self) -> Option<String> {
        if let Some(d) = self.diverged() {
            return Some(format!("the central store refuses this instance's chain: {d}"));
        }
        match self.mode {
            ShipMode::Async => {
                let lag = self.lag();
                (lag > self.max_lag).then(|| {
                    format!(
                        "the oldest record not shipped to the central store is {}s old (max_lag {}s){}",
                        lag.as_secs(),
                        self.max_lag.as_secs(),
                        self.last_error().map(|e| format!(": {e}")).unwrap_or_default()
                    )
                })
            }
            ShipMode::Sync => (self.progress().link == Link::Down).then(|| {
                format!(
                    "the central store is unreachable{}",
                    self.last_error().map(|e| format!(": {e}")).unwrap_or_default()
                )
            }),
        }
    }

    /// Whether a change must be refused before it is recorded: async mode past `max_lag`
    /// (the caller decides with `fail_mode`), or sync mode with PostgreSQL known down.
    pub fn refuses_changes(&self) -> Option<String> {
        match self.mode {
            ShipMode::Async => {
                let lag = self.lag();
                (lag > self.max_lag).then(|| format!("central store shipping is {}s behind", lag.as_secs()))
            }
            ShipMode::Sync => match (self.diverged(), self.progress().link) {
                (Some(d), _) => Some(format!("the central store refuses this instance's chain: {d}")),
                (None, Link::Down) => Some("the central store is unreachable".into()),
                _ => None,
            },
        }
    }

    fn last_error(&self) -> Option<String> {
        self.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Waits until `seq` is in PostgreSQL, at most `within`; fails as soon as PostgreSQL is
    /// found unreachable or the chain refused.
    pub async fn wait_shipped(&self, seq: u64, within: Duration) -> Result<(), String> {
        self.committed.notify_one();
        let mut rx = self.progress.subscribe();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let p = *rx.borrow_and_update();
            if p.shipped >= seq {
                return Ok(());
            }
            if let Some(d) = self.diverged() {
                return Err(format!("the central store refuses this instance's chain: {d}"));
            }
            if p.link == Link::Down {
                return Err(format!(
                    "the central store is unreachable{}",
                    self.last_error().map(|e| format!(": {e}")).unwrap_or_default()
                ));
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err("the shipper has stopped".into()),
                Err(_) => return Err(format!("the central store did not take the record within {within:?}")),
            }
        }
    }

    /// The shipping figures in the OpenMetrics text format, one series per instance.
    pub fn render(&self, out: &mut String) {
        let i = self
            .instance
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n");
        let p = self.progress();
        let mut metric = |name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(out, "# HELP retention_proxy_central_{name} {help}");
            let _ = writeln!(out, "# TYPE retention_proxy_central_{name} {kind}");
            let suffix = if kind == "counter" { "_total" } else { "" };
            let _ = writeln!(
                out,
                "retention_proxy_central_{name}{suffix}{{instance=\"{i}\"}} {value}"
            );
        };
        metric(
            "shipped_records",
            "counter",
            "Records shipped to the central store by this run.",
            self.shipped_total.load(Ordering::Relaxed).to_string(),
        );
        metric(
            "shipping_errors",
            "counter",
            "Failed attempts to reach or write the central store.",
            self.errors_total.load(Ordering::Relaxed).to_string(),
        );
        metric(
            "lag_records",
            "gauge",
            "Records of the local log not in the central store yet.",
            self.lag_records.load(Ordering::Relaxed).to_string(),
        );
        metric(
            "lag_seconds",
            "gauge",
            "Age of the oldest record not in the central store yet.",
            format!("{:.3}", self.lag().as_secs_f64()),
        );
        metric(
            "shipped_seq",
            "gauge",
            "Every record up to this seq is in the central store.",
            p.shipped.to_string(),
        );
        metric(
            "up",
            "gauge",
            "1 when the central store was reachable at the last attempt.",
            u8::from(p.link == Link::Up).to_string(),
        );
        metric(
            "diverged",
            "gauge",
            "1 when the central store holds another chain under this instance's name.",
            u8::from(self.diverged().is_some()).to_string(),
        );
    }

    fn failed(&self, e: &str) {
        self.errors_total.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
        self.progress.send_modify(|p| p.link = Link::Down);
    }
}

/// The shipper task and its shared state.
pub struct Shipper {
    /// Shared state.
    pub state: Arc<Shipping>,
    task: tokio::task::JoinHandle<()>,
    stop: watch::Sender<bool>,
}

impl Shipper {
    /// Starts shipping the log at `db` as `instance`; `committed` is notified by the writer
    /// after each commit.
    pub fn start(central: Central, instance: String, db: PathBuf, committed: Arc<Notify>) -> Shipper {
        let state = Arc::new(Shipping {
            instance,
            mode: central.mode,
            max_lag: central.max_lag,
            progress: watch::Sender::new(Progress {
                shipped: 0,
                link: Link::Connecting,
            }),
            diverged: Mutex::new(None),
            last_error: Mutex::new(None),
            oldest_unshipped: Mutex::new(None),
            lag_records: AtomicU64::new(0),
            shipped_total: AtomicU64::new(0),
            errors_total: AtomicU64::new(0),
            committed,
        });
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run(central, db, state.clone(), stopped));
        Shipper { state, task, stop }
    }

    /// Ships what is committed (for at most `within`), then stops.
    pub async fn stop(self, within: Duration) {
        let _ = self.stop.send(true);
        self.state.committed.notify_one();
        let mut task = self.task;
        if tokio::time::timeout(within, &mut task).await.is_err() {
            task.abort();
            tracing::warn!(instance = %self.state.instance, "shipping to the central store stopped before it caught up; the rest is shipped at the next start");
        }
    }
}

/// Why a shipping round ended.
enum Ended {
    /// PostgreSQL or the local log failed; try again after a back-off.
    Failed(String),
    /// The chain does not continue PostgreSQL's.
    Diverged(String),
    /// Asked to stop, everything committed is shipped.
    Stopped,
}

async fn run(central: Central, db: PathBuf, state: Arc<Shipping>, mut stop: watch::Receiver<bool>) {
    let mut backoff = FIRST_BACKOFF;
    let mut logged: Option<Instant> = None;
    let outbox: Arc<Mutex<Option<Outbox>>> = Arc::new(Mutex::new(None));
    loop {
        let ended = round(&central, &db, &state, &outbox, &mut stop).await;
        let wait = match ended {
            Ended::Stopped => return,
            Ended::Failed(e) => {
                state.failed(&e);
                if logged.is_none_or(|t| t.elapsed() >= Duration::from_secs(30)) {
                    tracing::error!(instance = %state.instance, database = %central.display(), error = %e, "shipping to the central store failed; the local log keeps every record and shipping resumes when it answers");
                    logged = Some(Instant::now());
                }
                let w = backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                w
            }
            Ended::Diverged(why) => {
                state.failed(&why);
                let first = state.diverged().as_deref() != Some(why.as_str());
                *state.diverged.lock().unwrap_or_else(|p| p.into_inner()) = Some(why.clone());
                if first {
                    tracing::error!(instance = %state.instance, database = %central.display(), reason = %why, "the central store holds a different chain under this instance's name; nothing is shipped until that is resolved (is another live instance using the same proxy_instance?)");
                }
                DIVERGED_RECHECK
            }
        };
        let _ = refresh_lag(&state, &outbox, &db).await;
        if *stop.borrow() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Runs `work` with the local log open (opened on first use), on a blocking thread.
async fn with_outbox<T: Send + 'static>(
    outbox: &Arc<Mutex<Option<Outbox>>>,
    db: &std::path::Path,
    work: impl FnOnce(&Outbox) -> Result<T, AuditError> + Send + 'static,
) -> Result<T, String> {
    let (outbox, db) = (outbox.clone(), db.to_path_buf());
    tokio::task::spawn_blocking(move || {
        let mut slot = outbox.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(Outbox::open(&db)?);
        }
        match slot.as_ref() {
            Some(o) => work(o),
            None => Err(AuditError::Read("the local log is not open".into())),
        }
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())
}

/// Reads what is not shipped yet, for the lag figures.
async fn refresh_lag(
    state: &Shipping,
    outbox: &Arc<Mutex<Option<Outbox>>>,
    db: &std::path::Path,
) -> Result<(), String> {
    let shipped = state.progress().shipped;
    let (head, oldest) = with_outbox(outbox, db, move |o| o.pending(shipped)).await?;
    state.lag_records.store(head.saturating_sub(shipped), Ordering::Relaxed);
    *state.oldest_unshipped.lock().unwrap_or_else(|p| p.into_inner()) = oldest;
    Ok(())
}

/// One connection's worth of shipping: connect, find where PostgreSQL's copy ends, check that
/// the local chain continues it, then ship until something fails or a stop is asked.
async fn round(
    central: &Central,
    db: &std::path::Path,
    state: &Arc<Shipping>,
    outbox: &Arc<Mutex<Option<Outbox>>>,
    stop: &mut watch::Receiver<bool>,
) -> Ended {
    let mut client = match connect(central).await {
        Ok(c) => c,
        Err(e) => return Ended::Failed(e.to_string()),
    };
    if let Err(e) = ensure_schema(&client, central).await {
        return Ended::Failed(e.to_string());
    }
    let instance = state.instance.clone();
    let head = client
        .query_opt(
            "SELECT seq, hash FROM audit_records WHERE instance = $1 ORDER BY seq DESC LIMIT 1",
            &[&instance],
        )
        .await;
    let (mut shipped, mut shipped_hash) = match head {
        Ok(Some(r)) => (r.get::<_, i64>(0).max(0) as u64, r.get::<_, String>(1)),
        Ok(None) => (0, crate::audit::GENESIS.to_string()),
        Err(e) => return Ended::Failed(super::rd(e).to_string()),
    };
    if shipped > 0 {
        let local = match with_outbox(outbox, db, move |o| o.hash_at(shipped)).await {
            Ok(h) => h,
            Err(e) => return Ended::Failed(e),
        };
        match local {
            Some(h) if h == shipped_hash => {}
            Some(_) => {
                return Ended::Diverged(format!(
                    "record {shipped} in the central store is not this instance's record {shipped}"
                ));
            }
            None => {
                return Ended::Diverged(format!(
                    "the central store holds records up to seq {shipped}, beyond the end of this instance's log"
                ));
            }
        }
    }
    if state.diverged().is_some() {
        tracing::info!(instance = %instance, "the central store's copy of this chain continues the local log again; shipping resumes");
        *state.diverged.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
    *state.last_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
    state.progress.send_replace(Progress {
        shipped,
        link: Link::Up,
    });
    loop {
        let from = shipped;
        let batch = match with_outbox(outbox, db, move |o| o.after(from, BATCH)).await {
            Ok(b) => b,
            Err(e) => return Ended::Failed(e),
        };
        if batch.is_empty() {
            if let Err(e) = refresh_lag(state, outbox, db).await {
                return Ended::Failed(e);
            }
            if *stop.borrow() {
                return Ended::Stopped;
            }
            tokio::select! {
                _ = state.committed.notified() => {}
                _ = tokio::time::sleep(IDLE_TICK) => {}
                _ = stop.changed() => {}
            }
            if client.is_closed() {
                return Ended::Failed("the connection to the central store closed".into());
            }
            continue;
        }
        if batch[0].prev_hash != shipped_hash {
            return Ended::Diverged(format!(
                "record {} of the local log does not continue record {shipped} of the central store",
                batch[0].seq
            ));
        }
        match insert(&mut client, &instance, &batch).await {
            Ok(()) => {}
            Err(Insert::Failed(e)) => return Ended::Failed(e),
            Err(Insert::Diverged(e)) => return Ended::Diverged(e),
        }
        let last = &batch[batch.len() - 1];
        shipped = last.seq;
        shipped_hash = last.hash.clone();
        state.shipped_total.fetch_add(batch.len() as u64, Ordering::Relaxed);
        state.progress.send_replace(Progress {
            shipped,
            link: Link::Up,
        });
        // After every batch, so the lag figures (and `max_lag`) never age a shipped record.
        if let Err(e) = refresh_lag(state, outbox, db).await {
            return Ended::Failed(e);
        }
    }
}

enum Insert {
    Failed(String),
    Diverged(String),
}

/// Inserts a batch in one transaction. Rows already there (a batch sent again after a lost
/// answer) are kept as they are, and must be the same records.
async fn insert(client: &mut Client, instance: &str, batch: &[OutRecord]) -> Result<(), Insert> {
    let failed = |e: tokio_postgres::Error| Insert::Failed(super::rd(e).to_string());
    let col = |f: fn(&OutRecord) -> &str| batch.iter().map(|r| f(r).to_string()).collect::<Vec<String>>();
    let seqs: Vec<i64> = batch.iter().map(|r| r.seq as i64).collect();
    let tx = client.transaction().await.map_err(failed)?;
    let inserted = tx
        .execute(
            "INSERT INTO audit_records (instance, seq, kind, event_id, event_time, event_name, event_source, decision, body, prev_hash, hash)
             SELECT $1, * FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[])
             ON CONFLICT (instance, seq) DO NOTHING",
            &[
                &instance,
                &seqs,
                &col(|r| &r.kind),
                &col(|r| &r.event_id),
                &col(|r| &r.event_time),
                &col(|r| &r.event_name),
                &col(|r| &r.event_source),
                &col(|r| &r.decision),
                &col(|r| &r.body),
                &col(|r| &r.prev_hash),
                &col(|r| &r.hash),
            ],
        )
        .await
        .map_err(failed)?;
    if inserted < batch.len() as u64 {
        let rows = tx
            .query(
                "SELECT seq, hash FROM audit_records WHERE instance = $1 AND seq = ANY($2)",
                &[&instance, &seqs],
            )
            .await
            .map_err(failed)?;
        for row in rows {
            let (seq, hash): (i64, String) = (row.get(0), row.get(1));
            let ours = batch.iter().find(|r| r.seq as i64 == seq);
            if ours.is_some_and(|r| r.hash != hash) {
                let _ = tx.rollback().await;
                return Err(Insert::Diverged(format!(
                    "record {seq} in the central store is not this instance's record {seq}"
                )));
            }
        }
    }
    let (mut a_val, mut a_seq, mut r_val, mut r_seq) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut o_target, mut o_res, mut o_time, mut o_seq, mut o_val) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for r in batch {
        for a in &r.actors {
            a_val.push(a.as_str());
            a_seq.push(r.seq as i64);
        }
        for x in &r.resources {
            r_val.push(x.as_str());
            r_seq.push(r.seq as i64);
        }
        for (t, res, v) in &r.observed {
            o_target.push(t.as_str());
            o_res.push(res.as_str());
            o_time.push(r.event_time.as_str());
            o_seq.push(r.seq as i64);
            o_val.push(v.as_str());
        }
    }
    if !a_val.is_empty() {
        tx.execute(
            "INSERT INTO audit_actors (actor, instance, seq) SELECT a, $1, s FROM unnest($2::text[], $3::bigint[]) AS t(a, s) ON CONFLICT DO NOTHING",
            &[&instance, &a_val, &a_seq],
        )
        .await
        .map_err(failed)?;
    }
    if !r_val.is_empty() {
        tx.execute(
            "INSERT INTO audit_resources (resource, instance, seq) SELECT x, $1, s FROM unnest($2::text[], $3::bigint[]) AS t(x, s) ON CONFLICT DO NOTHING",
            &[&instance, &r_val, &r_seq],
        )
        .await
        .map_err(failed)?;
    }
    if !o_target.is_empty() {
        tx.execute(
            "INSERT INTO audit_observed (target, resource, event_time, instance, seq, value)
             SELECT t, x, e, $1, s, v FROM unnest($2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[]) AS u(t, x, e, s, v)
             ON CONFLICT DO NOTHING",
            &[&instance, &o_target, &o_res, &o_time, &o_seq, &o_val],
        )
        .await
        .map_err(failed)?;
    }
    tx.commit().await.map_err(failed)
}

/// The latest value of a setting across the fleet, with the `eventTime` of the record that
/// reported it (for the `previous` of a change).
pub async fn fleet_previous(
    client: &Client,
    target: &str,
    resource: &str,
) -> Result<Option<(String, String)>, AuditError> {
    let row = client
        .query_opt(
            "SELECT value, event_time FROM audit_observed WHERE target = $1 AND resource = $2
             ORDER BY event_time DESC, instance, seq DESC LIMIT 1",
            &[&target, &resource],
        )
        .await
        .map_err(super::rd)?;
    Ok(row.map(|r| (r.get(0), r.get(1))))
}
