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
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::admin::metrics::{AlertMetrics, SinkLabels};
use crate::audit::AuditError;
use crate::audit::query::merge;
use crate::audit::sqlite::{AlertFeed, FeedRecord, Positions};
use crate::config::parse_duration;
use when::{Reason, When};

/// `[[alerts]]` as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RawAlert {
    /// The sink's name: its metrics label and the key of its position. Required.
    pub id: String,
    /// `webhook`, `syslog` or `splunk_hec`. Required.
    pub kind: String,
    /// Where to POST (webhook, splunk_hec): `https://…`, or `http://` to a loopback address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Syslog receiver: `tcp://host:port`, `tcp+tls://host:port` or `udp://host:port`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Syslog message body: `json` (default) or `cef`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// Webhook: file holding the Standard Webhooks secret (`whsec_` + base64), mode 0600 or
    /// stricter. Required for webhooks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<String>,
    /// Splunk HEC: file holding the HEC token, mode 0600 or stricter. Required for HEC.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<String>,
    /// Splunk HEC `sourcetype`. Default `retention-proxy`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sourcetype: Option<String>,
    /// Extra trusted root certificates (PEM) for `https://` and `tcp+tls://`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// What to alert on: `denied`, `dry_run_denied`, `exempt`, `shortened`, `turned_off`.
    /// Default: all five.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub when: Option<Vec<String>>,
    /// Longest one delivery may take (connect included). Default `10s`.
    pub timeout: String,
    /// First wait after a failed delivery; doubled after each further failure. Default `1s`.
    pub retry_initial: String,
    /// Longest wait between retries. Default `60s`.
    pub retry_max: String,
    /// Most alerts read ahead and waiting in memory for this sink. Default 100.
    pub max_in_flight: usize,
}

impl Default for RawAlert {
    fn default() -> Self {
        RawAlert {
            id: String::new(),
            kind: String::new(),
            url: None,
            address: None,
            format: None,
            secret_file: None,
            token_file: None,
            sourcetype: None,
            ca_file: None,
            when: None,
            timeout: "10s".into(),
            retry_initial: "1s".into(),
            retry_max: "60s".into(),
            max_in_flight: 100,
        }
    }
}

/// Key material read from a file; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// Wraps bytes.
    pub fn new(b: Vec<u8>) -> Secret {
        Secret(b)
    }

    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// Where a sink sends, validated.
#[derive(Debug, Clone)]
pub enum Target {
    /// Standard Webhooks POST.
    Webhook {
        /// The URL.
        url: http::Uri,
        /// The signing key.
        key: Secret,
    },
    /// RFC 5424 syslog.
    Syslog {
        /// TCP, TCP+TLS or UDP.
        transport: syslog::Transport,
        /// Receiver host.
        host: String,
        /// Receiver port.
        port: u16,
        /// JSON or CEF.
        format: syslog::Format,
    },
    /// Splunk HEC POST.
    SplunkHec {
        /// The collector URL.
        url: http::Uri,
        /// The HEC token.
        token: Secret,
        /// `sourcetype`.
        sourcetype: String,
    },
}

/// A validated `[[alerts]]` entry.
#[derive(Debug, Clone)]
pub struct Sink {
    /// `id`.
    pub id: String,
    /// Where and how.
    pub target: Target,
    /// `when`.
    pub when: When,
    /// `ca_file`.
    pub ca_file: Option<PathBuf>,
    /// `timeout`.
    pub timeout: Duration,
    /// `retry_initial`.
    pub retry_initial: Duration,
    /// `retry_max`.
    pub retry_max: Duration,
    /// `max_in_flight`.
    pub max_in_flight: usize,
}

/// Reads a secret or token file: a regular file of mode 0600 or stricter; a final newline
/// (trailing whitespace) is ignored. The error names the file.
pub fn read_secret_file(path: &Path) -> Result<String, String> {
    use std::os::unix::fs::PermissionsExt;
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{shown} is not a regular file"));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "{shown} has mode {mode:04o}: a secret file must be mode 0600 or stricter (readable by its owner only)"
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    let text = text.trim_end();
    if text.is_empty() {
        return Err(format!("{shown} is empty"));
    }
    Ok(text.to_string())
}

/// Parses `http(s)://host[:port]/path`; plain `http://` only to a loopback address (alerts
/// and tokens are not sent in the clear across a network).
fn parse_url(s: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = s.parse().map_err(|e| format!("{s:?} is not a URL ({e})"))?;
    let host = uri
        .host()
        .filter(|h| !h.is_empty())
        .ok_or(format!("{s:?} has no host"))?;
    match uri.scheme_str() {
        Some("https") => Ok(uri),
        Some("http") => {
            let h = host.trim_start_matches('[').trim_end_matches(']');
            let loopback =
                h.eq_ignore_ascii_case("localhost") || h.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
            if loopback {
                Ok(uri)
            } else {
                Err(format!(
                    "{s:?}: plain http:// is allowed only to a loopback address; use https://"
                ))
            }
        }
        _ => Err(format!(
            "{s:?} must start with https:// (or http:// to a loopback address)"
        )),
    }
}

/// Parses a syslog `address`.
fn parse_address(s: &str) -> Result<(syslog::Transport, String, u16), String> {
    let (transport, rest) = if let Some(r) = s.strip_prefix("tcp://") {
        (syslog::Transport::Tcp, r)
    } else if let Some(r) = s.strip_prefix("tcp+tls://") {
        (syslog::Transport::TcpTls, r)
    } else if let Some(r) = s.strip_prefix("udp://") {
        (syslog::Transport::Udp, r)
    } else {
        return Err(format!("{s:?} must start with tcp://, tcp+tls:// or udp://"));
    };
    let rest = rest.trim_end_matches('/');
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| format!("{s:?} has no port (host:port)"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("{s:?} has no valid port"))?;
    if host.is_empty() || host.contains('/') {
        return Err(format!("{s:?} has no host"));
    }
    Ok((transport, host.to_string(), port))
}

impl Sink {
    /// Validates one `[[alerts]]` entry, reading its secret file; every problem as
    /// `(key, reason)`.
    pub fn compile(raw: &RawAlert) -> Result<Sink, Vec<(String, String)>> {
        let mut p: Vec<(String, String)> = Vec::new();
        let mut bad = |k: &str, r: String| p.push((k.to_string(), r));
        if raw.id.is_empty() {
            bad("id", "is required".into());
        } else if !raw
            .id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            bad(
                "id",
                format!("{:?} may hold only letters, digits, '-', '_' and '.'", raw.id),
            );
        }
        let mut dur = |k: &str, v: &str, dflt: u64| {
            parse_duration(v)
                .and_then(|d| {
                    if d.is_zero() {
                        Err("must be longer than zero".into())
                    } else {
                        Ok(d)
                    }
                })
                .unwrap_or_else(|e| {
                    bad(k, e);
                    Duration::from_secs(dflt)
                })
        };
        let timeout = dur("timeout", &raw.timeout, 10);
        let retry_initial = dur("retry_initial", &raw.retry_initial, 1);
        let retry_max = dur("retry_max", &raw.retry_max, 60);
        if retry_max < retry_initial {
            bad("retry_max", "must not be shorter than retry_initial".into());
        }
        if raw.max_in_flight == 0 {
            bad("max_in_flight", "must be at least 1".into());
        }
        let when = match &raw.when {
            None => When::all(),
            Some(list) if list.is_empty() => {
                bad(
                    "when",
                    "names nothing; leave it out for all of denied, dry_run_denied, exempt, shortened, turned_off"
                        .into(),
                );
                When::all()
            }
            Some(list) => {
                let mut rs = Vec::new();
                for (i, w) in list.iter().enumerate() {
                    match Reason::parse(w) {
                        Some(r) => rs.push(r),
                        None => bad(
                            &format!("when[{i}]"),
                            format!("{w:?} is not one of denied, dry_run_denied, exempt, shortened, turned_off"),
                        ),
                    }
                }
                When::of(rs)
            }
        };
        let only = |bad: &mut dyn FnMut(&str, String), key: &str, v: &Option<String>, kinds: &str| {
            if v.is_some() {
                bad(key, format!("applies only to kind {kinds}"));
            }
        };
        let secret = |bad: &mut dyn FnMut(&str, String), key: &str, v: &Option<String>| -> Option<String> {
            match v.as_deref().map(str::trim) {
                None | Some("") => {
                    bad(key, "is required for this kind".into());
                    None
                }
                Some(f) => match read_secret_file(Path::new(f)) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        bad(key, e);
                        None
                    }
                },
            }
        };
        let url = |bad: &mut dyn FnMut(&str, String)| match raw.url.as_deref() {
            None => {
                bad("url", "is required for this kind".into());
                None
            }
            Some(u) => parse_url(u).map_err(|e| bad("url", e)).ok(),
        };
        let placeholder = Target::Syslog {
            transport: syslog::Transport::Udp,
            host: String::new(),
            port: 0,
            format: syslog::Format::Json,
        };
        let target = match raw.kind.as_str() {
            "webhook" => {
                only(&mut bad, "address", &raw.address, "syslog");
                only(&mut bad, "format", &raw.format, "syslog");
                only(&mut bad, "token_file", &raw.token_file, "splunk_hec");
                only(&mut bad, "sourcetype", &raw.sourcetype, "splunk_hec");
                let url = url(&mut bad);
                let key = secret(&mut bad, "secret_file", &raw.secret_file).and_then(|s| {
                    webhook::decode_secret(&s)
                        .map_err(|e| {
                            bad(
                                "secret_file",
                                format!("{} {e}", raw.secret_file.as_deref().unwrap_or("")),
                            )
                        })
                        .ok()
                });
                match (url, key) {
                    (Some(url), Some(key)) => Target::Webhook { url, key },
                    _ => placeholder,
                }
            }
            "splunk_hec" => {
                only(&mut bad, "address", &raw.address, "syslog");
                only(&mut bad, "format", &raw.format, "syslog");
                only(&mut bad, "secret_file", &raw.secret_file, "webhook");
                let url = url(&mut bad);
                let token = secret(&mut bad, "token_file", &raw.token_file);
                if let Some(t) = &token
                    && t.chars().any(|c| c.is_control() || c == ' ')
                {
                    bad(
                        "token_file",
                        format!(
                            "{} holds a token with spaces or control characters",
                            raw.token_file.as_deref().unwrap_or("")
                        ),
                    );
                }
                let sourcetype = raw.sourcetype.clone().unwrap_or_else(|| "retention-proxy".into());
                if sourcetype.is_empty() {
                    bad("sourcetype", "must not be empty".into());
                }
                match (url, token) {
                    (Some(url), Some(token)) => Target::SplunkHec {
                        url,
                        token: Secret::new(token.into_bytes()),
                        sourcetype,
                    },
                    _ => placeholder,
                }
            }
            "syslog" => {
                only(&mut bad, "url", &raw.url, "webhook or splunk_hec");
                only(&mut bad, "secret_file", &raw.secret_file, "webhook");
                only(&mut bad, "token_file", &raw.token_file, "splunk_hec");
                only(&mut bad, "sourcetype", &raw.sourcetype, "splunk_hec");
                let format = match raw.format.as_deref() {
                    None | Some("json") => syslog::Format::Json,
                    Some("cef") => syslog::Format::Cef,
                    Some(other) => {
                        bad("format", format!("{other:?} must be \"json\" or \"cef\""));
                        syslog::Format::Json
                    }
                };
                match raw.address.as_deref() {
                    None => {
                        bad("address", "is required for kind syslog".into());
                        placeholder
                    }
                    Some(a) => match parse_address(a) {
                        Ok((transport, host, port)) => Target::Syslog {
                            transport,
                            host,
                            port,
                            format,
                        },
                        Err(e) => {
                            bad("address", e);
                            placeholder
                        }
                    },
                }
            }
            "" => {
                bad("kind", "is required: \"webhook\", \"syslog\" or \"splunk_hec\"".into());
                placeholder
            }
            other => {
                bad(
                    "kind",
                    format!("{other:?} must be \"webhook\", \"syslog\" or \"splunk_hec\""),
                );
                placeholder
            }
        };
        let ca_file = raw.ca_file.as_ref().map(PathBuf::from);
        if let Some(f) = &ca_file
            && let Err(e) = crate::http::upstream::root_store(Some(f))
        {
            bad("ca_file", e.to_string());
        }
        if !p.is_empty() {
            return Err(p);
        }
        Ok(Sink {
            id: raw.id.clone(),
            target,
            when,
            ca_file,
            timeout,
            retry_initial,
            retry_max,
            max_in_flight: raw.max_in_flight,
        })
    }

    /// Where the sink sends, for messages (no secret in it).
    pub fn destination(&self) -> String {
        match &self.target {
            Target::Webhook { url, .. } | Target::SplunkHec { url, .. } => url.to_string(),
            Target::Syslog {
                transport, host, port, ..
            } => {
                let scheme = match transport {
                    syslog::Transport::Tcp => "tcp",
                    syslog::Transport::TcpTls => "tcp+tls",
                    syslog::Transport::Udp => "udp",
                };
                format!("{scheme}://{host}:{port}")
            }
        }
    }
}

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
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn addresses_and_urls() {
        assert_eq!(
            parse_address("tcp://siem.example.com:6514").unwrap(),
            (syslog::Transport::Tcp, "siem.example.com".into(), 6514)
        );
        assert_eq!(
            parse_address("udp://[::1]:514").unwrap(),
            (syslog::Transport::Udp, "::1".into(), 514)
        );
        assert_eq!(parse_address("tcp+tls://h:6514").unwrap().0, syslog::Transport::TcpTls);
        for bad in [
            "siem:514",
            "tcp://siem",
            "tcp://:514",
            "tcp://h:0",
            "tcp://h:x",
            "http://h:1",
        ] {
            assert!(parse_address(bad).is_err(), "{bad}");
        }
        assert!(parse_url("https://hooks.example.com/x").is_ok());
        assert!(parse_url("http://127.0.0.1:9/x").is_ok());
        assert!(parse_url("http://[::1]:9/x").is_ok());
        assert!(
            parse_url("http://hooks.example.com/x")
                .unwrap_err()
                .contains("loopback")
        );
        assert!(parse_url("ftp://h/x").is_err());
        assert!(parse_url("not a url").is_err());
    }

    #[test]
    fn secret_files_must_be_private() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("key");
        std::fs::write(&f, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n").unwrap();
        for (mode, ok) in [
            (0o600, true),
            (0o400, true),
            (0o640, false),
            (0o644, false),
            (0o604, false),
        ] {
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
            let r = read_secret_file(&f);
            assert_eq!(r.is_ok(), ok, "{mode:o}: {r:?}");
            if let Err(e) = r {
                assert!(e.contains(&f.display().to_string()) && e.contains("0600"), "{e}");
            } else {
                assert_eq!(r.unwrap(), "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
            }
        }
        assert!(read_secret_file(dir.path()).unwrap_err().contains("not a regular file"));
        assert!(read_secret_file(&dir.path().join("missing")).is_err());
    }

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
