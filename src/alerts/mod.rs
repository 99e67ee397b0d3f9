//! Alerts (SPEC §11): refused and risky retention changes pushed to the tools a security
//! team watches — a webhook ([`webhook`]), syslog ([`syslog`]) or Splunk HEC ([`hec`]).
//!
//! Delivery works from the audit log itself, off the request path. Each sink runs as its own
//! task with its own two connections to the database: it reads the request links after its
//! position ([`crate::audit::sqlite::AlertFeed`]), picks the calls its `when` names
//! ([`when`]), waits for a forwarded call's outcome link (at most
//! `upstreams.request_timeout` + 5 s; a call left without one by a previous run is sent at
//! once, with outcome `unknown`), sends the merged event, and only then moves its position
//! ([`crate::audit::sqlite::Positions`]) past it. So a restart, a `kill -9` or a sink outage
//! loses nothing (at least once: an alert may come twice, never not at all). A failed
//! delivery is retried with exponential back-off and jitter; at most `max_in_flight` alerts
//! wait in memory per sink. A dead or slow sink delays only itself.

pub mod hec;
pub mod syslog;
pub mod webhook;
pub mod when;

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::admin::metrics::{AlertMetrics, SinkLabels};
use crate::audit::AuditError;
use crate::audit::query::merge;
use crate::audit::sqlite::{AlertFeed, FeedRecord, Positions};
pub use crate::config::alerts::{RawAlert, Secret, Sink, Target, read_secret_file};
use when::Reason;

/// Why one delivery failed.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The receiver could not be reached (connect, TLS, write).
    #[error("cannot reach the receiver: {0}")]
    Unreachable(String),
    /// The receiver answered, but not with success.
    #[error("the receiver refused the alert: {0}")]
    Refused(String),
    /// No answer in time.
    #[error("no answer within {0:?}")]
    TimedOut(Duration),
}

/// A sink's connection side.
pub enum Sender {
    /// Webhook.
    Webhook(webhook::Webhook),
    /// Syslog.
    Syslog(syslog::Syslog),
    /// Splunk HEC.
    Hec(hec::Hec),
}

impl Sender {
    /// Builds the sender of `sink` (TLS roots, client).
    pub fn new(sink: &Sink) -> Result<Sender, String> {
        Ok(match &sink.target {
            Target::Webhook { url, key } => Sender::Webhook(webhook::Webhook {
                url: url.clone(),
                key: key.clone(),
                client: webhook::HttpClient::new(sink.ca_file.as_deref(), sink.timeout)?,
            }),
            Target::SplunkHec { url, token, sourcetype } => Sender::Hec(hec::Hec {
                url: url.clone(),
                token: token.clone(),
                sourcetype: sourcetype.clone(),
                client: webhook::HttpClient::new(sink.ca_file.as_deref(), sink.timeout)?,
            }),
            Target::Syslog {
                transport,
                host,
                port,
                format,
            } => {
                let tls = if *transport == syslog::Transport::TcpTls {
                    let roots =
                        crate::http::upstream::root_store(sink.ca_file.as_deref()).map_err(|e| e.to_string())?;
                    let cfg =
                        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                            .with_safe_default_protocol_versions()
                            .map_err(|e| e.to_string())?
                            .with_root_certificates(roots)
                            .with_no_client_auth();
                    Some(tokio_rustls::TlsConnector::from(Arc::new(cfg)))
                } else {
                    None
                };
                Sender::Syslog(syslog::Syslog::new(*transport, host.clone(), *port, *format, tls))
            }
        })
    }

    /// Sends one alert within `timeout`; what the receiver answered.
    pub async fn send(
        &mut self,
        event: &Value,
        reasons: &[Reason],
        timeout: Duration,
    ) -> Result<String, DeliveryError> {
        let sent = async {
            match self {
                Sender::Webhook(w) => w.send(event).await,
                Sender::Hec(h) => h.send(event).await,
                Sender::Syslog(s) => s.send(event, reasons).await,
            }
        };
        match tokio::time::timeout(timeout, sent).await {
            Ok(r) => r,
            Err(_) => {
                // A half-written frame must not be followed by the next one.
                if let Sender::Syslog(s) = self {
                    *s = syslog::Syslog::new(s.transport, s.host.clone(), s.port, s.format, s.tls.clone());
                }
                Err(DeliveryError::TimedOut(timeout))
            }
        }
    }
}

/// How often a sink looks for new records.
pub const POLL: Duration = Duration::from_millis(200);

/// Request links read per page, and pages read per look: a sink passes up to 50,000
/// records a second.
const SCAN_PAGE: usize = 1000;
const MAX_PAGES: usize = 10;

/// The longest a position that only skips non-matching records waits before it is stored.
const SAVE_EVERY: Duration = Duration::from_secs(1);

/// The running sinks.
pub struct Alerts {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// One sink's connections to the database.
struct SinkDb {
    feed: AlertFeed,
    positions: Positions,
}

/// Runs `f` on the sink's database connections on a blocking thread (never on a runtime
/// worker).
async fn with_db<T: Send + 'static>(
    db: &Arc<Mutex<SinkDb>>,
    f: impl FnOnce(&SinkDb) -> Result<T, AuditError> + Send + 'static,
) -> Result<T, AuditError> {
    let db = db.clone();
    tokio::task::spawn_blocking(move || {
        let guard = db
            .lock()
            .map_err(|_| AuditError::Read("alert feed lock poisoned".into()))?;
        f(&guard)
    })
    .await
    .map_err(|e| AuditError::Read(e.to_string()))?
}

/// One call waiting to be sent.
struct Pending {
    seq: u64,
    event_id: String,
    /// The request link's text and hash, merged with the outcome link when it comes.
    body: String,
    hash: String,
    /// The merged event once its outcome is known (or waited for long enough).
    ready: Option<Value>,
    /// The request link merged alone (the event if no outcome link comes).
    alone: Value,
    reasons: Vec<Reason>,
    first_seen: Instant,
    /// Written by an earlier run of the proxy: its outcome link, if missing, never comes.
    earlier_run: bool,
    delivered: bool,
}

/// Exponential back-off with jitter.
struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            next: initial,
        }
    }

    /// The wait before the next attempt: between half and all of the current step ("equal
    /// jitter"), so sinks that failed together do not retry together.
    fn fail(&mut self) -> Duration {
        let step = self.next;
        self.next = (self.next * 2).min(self.max);
        let mut b = [0u8; 8];
        let r = match getrandom::fill(&mut b) {
            Ok(()) => u64::from_le_bytes(b) as f64 / u64::MAX as f64,
            Err(_) => 0.5,
        };
        step.mul_f64(0.5 + 0.5 * r)
    }

    fn reset(&mut self) {
        self.next = self.initial;
    }
}

impl Alerts {
    /// Starts one task per sink. Each sink's position is read (or, for a new sink, set to the
    /// head of the log) before this returns, so every call accepted afterwards is ahead of it.
    pub fn start(db: &Path, sinks: &[Sink], metrics: AlertMetrics, outcome_wait: Duration) -> Result<Alerts, String> {
        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        for sink in sinks {
            let positions = Positions::open(db).map_err(|e| e.to_string())?;
            let position = positions
                .get_or_start(&sink.id)
                .map_err(|e| format!("alert sink {:?}: {e}", sink.id))?;
            let feed = AlertFeed::open(db).map_err(|e| e.to_string())?;
            let started_head = feed.head().map_err(|e| e.to_string())?;
            let sender = Sender::new(sink).map_err(|e| format!("alert sink {:?}: {e}", sink.id))?;
            info!(sink = %sink.id, to = %sink.destination(), position, "alert sink started");
            let run = SinkRun {
                sink: sink.clone(),
                db: Arc::new(Mutex::new(SinkDb { feed, positions })),
                sender,
                metrics: metrics.clone(),
                labels: SinkLabels { sink: sink.id.clone() },
                position,
                started_head,
                outcome_wait,
            };
            tasks.push(tokio::spawn(run.run(stop_rx.clone())));
        }
        Ok(Alerts { stop, tasks })
    }

    /// Stops every sink: a delivery in progress is abandoned (it is sent again after a
    /// restart), positions are stored.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let abort = t.abort_handle();
            if tokio::time::timeout(Duration::from_secs(3), t).await.is_err() {
                abort.abort();
            }
        }
    }
}

/// One sink's delivery loop and its state.
struct SinkRun {
    sink: Sink,
    db: Arc<Mutex<SinkDb>>,
    sender: Sender,
    metrics: AlertMetrics,
    labels: SinkLabels,
    /// Everything up to here is delivered or not this sink's business (stored).
    position: u64,
    /// The head of the log when this run started.
    started_head: u64,
    outcome_wait: Duration,
}

impl SinkRun {
    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let id = self.sink.id.clone();
        // Every series exists from the start, at zero.
        let _ = self.metrics.sent.get_or_create(&self.labels);
        let _ = self.metrics.failed.get_or_create(&self.labels);
        let _ = self.metrics.retried.get_or_create(&self.labels);
        let mut queue: VecDeque<Pending> = VecDeque::new();
        let mut read_to = self.position;
        let mut saved = self.position;
        let mut last_save = Instant::now();
        let mut delivered_since_save = false;
        let mut backoff = Backoff::new(self.sink.retry_initial, self.sink.retry_max);
        let mut next_attempt = Instant::now();
        let mut retrying = false;
        let mut head = self.position;
        let mut read_error_logged: Option<Instant> = None;
        'run: loop {
            // 1. Read ahead: request links in pages, as far as the log goes (non-matching
            //    ones cost no memory), until `max_in_flight` alerts wait.
            let mut pages = 0;
            while queue.len() < self.sink.max_in_flight && pages < MAX_PAGES {
                pages += 1;
                let after = read_to;
                let page = match with_db(&self.db, move |d| d.feed.requests_after(after, SCAN_PAGE)).await {
                    Ok(page) => page,
                    Err(e) => {
                        if read_error_logged.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                            warn!(sink = %id, error = %e, "alert sink cannot read the audit log");
                            read_error_logged = Some(Instant::now());
                        }
                        break;
                    }
                };
                head = page.head;
                let full = page.records.len() >= SCAN_PAGE;
                let mut stopped_before = None;
                for r in page.records {
                    if queue.len() >= self.sink.max_in_flight {
                        stopped_before = Some(r.seq - 1);
                        break;
                    }
                    if let Some(p) = self.pending(r) {
                        queue.push_back(p);
                    }
                }
                read_to = stopped_before.unwrap_or(page.scanned_to);
                if !full || stopped_before.is_some() {
                    break;
                }
            }

            // 2. Outcomes: one look-up for every call still waiting for its outcome link.
            let waiting: Vec<String> = queue
                .iter()
                .filter(|p| p.ready.is_none())
                .map(|p| p.event_id.clone())
                .collect();
            if !waiting.is_empty() {
                let found = with_db(&self.db, move |d| {
                    waiting
                        .iter()
                        .map(|e| d.feed.outcome_of(e))
                        .collect::<Result<Vec<_>, _>>()
                })
                .await
                .unwrap_or_default();
                let mut found = found.into_iter();
                for p in queue.iter_mut().filter(|p| p.ready.is_none()) {
                    match found.next().flatten() {
                        Some(outcome) => p.ready = Some(merge(&p.body, &p.hash, Some(&outcome))),
                        None if p.earlier_run || p.first_seen.elapsed() >= self.outcome_wait => {
                            p.ready = Some(p.alone.clone())
                        }
                        None => {}
                    }
                }
            }

            // 3. Deliver in order what is ready; stop at the first failure and back off.
            if Instant::now() >= next_attempt {
                for p in queue.iter_mut().filter(|p| !p.delivered) {
                    let Some(event) = &p.ready else { continue };
                    if retrying {
                        self.metrics.retried.get_or_create(&self.labels).inc();
                    }
                    let sent = tokio::select! {
                        r = self.sender.send(event, &p.reasons, self.sink.timeout) => r,
                        _ = stop.changed() => break 'run,
                    };
                    match sent {
                        Ok(answer) => {
                            p.delivered = true;
                            delivered_since_save = true;
                            retrying = false;
                            backoff.reset();
                            self.metrics.sent.get_or_create(&self.labels).inc();
                            tracing::debug!(sink = %id, seq = p.seq, answer = %answer, "alert delivered");
                        }
                        Err(e) => {
                            self.metrics.failed.get_or_create(&self.labels).inc();
                            let wait = backoff.fail();
                            warn!(sink = %id, seq = p.seq, error = %e, retry_in = ?wait, "alert delivery failed");
                            next_attempt = Instant::now() + wait;
                            retrying = true;
                            break;
                        }
                    }
                }
            }

            // 4. Move the position past what is delivered (and what does not match).
            while queue.front().is_some_and(|p| p.delivered) {
                queue.pop_front();
            }
            self.position = queue.front().map_or(read_to, |p| p.seq - 1).max(self.position);
            if self.position > saved && (delivered_since_save || last_save.elapsed() >= SAVE_EVERY) {
                let (sink, seq) = (id.clone(), self.position);
                match with_db(&self.db, move |d| d.positions.set(&sink, seq)).await {
                    Ok(()) => {
                        saved = self.position;
                        delivered_since_save = false;
                        last_save = Instant::now();
                    }
                    Err(e) => {
                        warn!(sink = %id, error = %e, "cannot store the alert position; it is stored with the next one")
                    }
                }
            }

            // 5. Lag.
            self.update_lag(head).await;

            tokio::select! {
                _ = stop.changed() => break,
                _ = tokio::time::sleep(POLL) => {}
            }
        }
        if self.position > saved {
            let (sink, seq) = (id.clone(), self.position);
            let _ = with_db(&self.db, move |d| d.positions.set(&sink, seq)).await;
        }
    }

    /// A record this sink is told about, or `None`.
    fn pending(&self, r: FeedRecord) -> Option<Pending> {
        let reasons = self.sink.when.select(&when::reasons(&r.body));
        if reasons.is_empty() {
            return None;
        }
        let alone = merge(&r.body, &r.hash, None);
        // A refused call's request link carries its final outcome: nothing to wait for.
        let ready = (alone.get("outcome").and_then(Value::as_str) != Some("unknown")).then(|| alone.clone());
        Some(Pending {
            seq: r.seq,
            event_id: r.event_id,
            body: r.body,
            hash: r.hash,
            ready,
            alone,
            reasons,
            first_seen: Instant::now(),
            earlier_run: r.seq <= self.started_head,
            delivered: false,
        })
    }

    async fn update_lag(&self, head: u64) {
        let records = head.saturating_sub(self.position);
        self.metrics
            .lag_records
            .get_or_create(&self.labels)
            .set(records.min(i64::MAX as u64) as i64);
        let seconds = if records == 0 {
            0.0
        } else {
            let after = self.position;
            match with_db(&self.db, move |d| d.feed.time_after(after)).await {
                Ok(Some(t)) => time::OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339)
                    .map(|t| (time::OffsetDateTime::now_utc() - t).as_seconds_f64().max(0.0))
                    .unwrap_or(0.0),
                _ => 0.0,
            }
        };
        self.metrics.lag_seconds.get_or_create(&self.labels).set(seconds);
    }
}

/// A sample event for `alerts test`: a refused shortening, marked `"alertTest": true`.
pub fn sample_event(instance: &str) -> Value {
    let now = crate::audit::query::format_time(time::OffsetDateTime::now_utc());
    serde_json::json!({
        "eventVersion": "1.09",
        "eventID": uuid::Uuid::new_v4().to_string(),
        "eventTime": now,
        "eventSource": "slack.com",
        "eventName": "admin.conversations.setCustomRetention",
        "eventType": "SlackApiCall",
        "readOnly": false,
        "sourceIPAddress": "127.0.0.1",
        "userAgent": "retention-proxy alerts test",
        "userIdentity": {"type": "SlackToken", "tokenFingerprint": "hmac-sha256:0000", "verified": false},
        "requestParameters": {"channel_id": "C0000000000", "duration_days": 1},
        "resources": [{"type": "slack.channel", "id": "C0000000000"}],
        "guardrail": {"decision": "deny", "ruleIds": ["alerts-test"], "reason": "a sample alert sent by `retention-proxy alerts test`"},
        "changes": [{"target": "slack.channel_retention", "resource": "C0000000000", "previous": 365, "new": 1}],
        "outcome": "denied",
        "httpStatus": 200,
        "proxyInstance": instance,
        "alertTest": true
    })
}

/// `retention-proxy alerts test`: sends [`sample_event`] to the sink `id`; what it answered,
/// or one sentence saying why not.
pub async fn send_test(config: &crate::config::Config, id: &str) -> Result<String, String> {
    let sink = config.alerts.iter().find(|s| s.id == id).ok_or_else(|| {
        let ids: Vec<&str> = config.alerts.iter().map(|s| s.id.as_str()).collect();
        if ids.is_empty() {
            format!("no alert sink {id:?}: the configuration has no [[alerts]]")
        } else {
            format!("no alert sink {id:?}; the configured ones are {}", ids.join(", "))
        }
    })?;
    let mut sender = Sender::new(sink).map_err(|e| format!("alert sink {id:?}: {e}"))?;
    let event = sample_event(&config.audit.proxy_instance);
    let reasons = when::reasons(&event.to_string());
    sender
        .send(&event, &reasons, sink.timeout)
        .await
        .map(|answer| {
            format!(
                "alert sink {id:?} ({}) accepted the sample alert: {answer}",
                sink.destination()
            )
        })
        .map_err(|e| format!("alert sink {id:?} ({}): {e}", sink.destination()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_off_doubles_to_its_bound_with_jitter() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let waits: Vec<Duration> = (0..10).map(|_| b.fail()).collect();
        for (i, w) in waits.iter().enumerate() {
            let step = Duration::from_secs((1u64 << i).min(60));
            assert!(
                *w >= step / 2 && *w <= step,
                "{i}: {w:?} not in [{:?}, {step:?}]",
                step / 2
            );
        }
        b.reset();
        assert!(b.fail() <= Duration::from_secs(1));
    }
}
