//! Prometheus metrics for `/metrics`: intercepted calls by family, operation, decision and
//! outcome; pass-through requests; latency histograms; upstream failures; the build; and the
//! audit writer's and database's figures. `docs/metrics.md` lists every one (a test keeps it
//! true).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::audit::WriterStats;
use crate::audit::writer::COMMIT_BUCKETS_US;
use crate::proxy::credentials::RefreshLabels;

/// Labels of an intercepted call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    /// `[upstreams]` key.
    pub family: &'static str,
    /// `eventName`.
    pub operation: &'static str,
    /// Guardrail decision.
    pub decision: &'static str,
    /// Outcome.
    pub outcome: &'static str,
}

/// Labels of a pass-through request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// Route (`[upstreams]` key, `forward` or `tunnel`).
    pub route: &'static str,
}

/// Labels of a failed exchange with an upstream.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamErrorLabels {
    /// The vendor family (`[upstreams]` key), or `other` for a host that is not a vendor's.
    pub family: &'static str,
    /// What went wrong: `connect`, `tls`, `timeout`, `closed` or `response` (see
    /// [`crate::http::upstream::SendError::kind`]).
    pub kind: &'static str,
}

/// Labels of a Slack token lookup.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LookupLabels {
    /// `hit` (no `auth.test` needed: the cache knew, or another call's was in flight),
    /// `resolved` or `failed` (an `auth.test`, and how it ended).
    pub result: &'static str,
}

/// Labels of an alert sink's figures.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabels {
    /// The sink's `id`.
    pub sink: String,
}

/// Alert delivery figures (SPEC §11), one series per sink (`sink` label).
#[derive(Clone, Default)]
pub struct AlertMetrics {
    /// Alerts the sink accepted.
    pub sent: Family<SinkLabels, Counter>,
    /// Delivery attempts that failed (each one is retried).
    pub failed: Family<SinkLabels, Counter>,
    /// Delivery attempts that were retries of an earlier failure.
    pub retried: Family<SinkLabels, Counter>,
    /// Age of the oldest record the sink has not passed yet, seconds (0 when caught up).
    pub lag_seconds: Family<SinkLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// Records in the log after the sink's position.
    pub lag_records: Family<SinkLabels, Gauge>,
}

/// All metrics.
pub struct Metrics {
    registry: Registry,
    /// Intercepted calls.
    pub calls: Family<CallLabels, Counter>,
    /// Pass-through requests.
    pub passthrough: Family<RouteLabels, Counter>,
    /// Intercepted call latency, seconds.
    pub call_seconds: Family<RouteLabels, Histogram>,
    /// Refused connections or requests (host not allowed, no route).
    pub refused: Family<RouteLabels, Counter>,
    /// Slack token lookups (`[slack] resolve_tokens`).
    pub slack_lookups: Family<LookupLabels, Counter>,
    /// Alert delivery, per sink.
    pub alerts: AlertMetrics,
    /// Upstream exchanges that brought no usable answer, by family and kind.
    pub upstream_errors: Family<UpstreamErrorLabels, Counter>,
    /// The audit database whose size (with its write-ahead log) `/metrics` shows.
    audit_db: Option<PathBuf>,
    /// Pass-through counters of the known routes, made once so the hot path allocates nothing.
    pass_routes: Vec<(&'static str, Counter)>,
}

/// Route labels of pass-through traffic.
const PASS_ROUTES: [&str; 7] = [
    "chime",
    "chime_messaging",
    "chime_identity",
    "slack",
    "forward",
    "intercept",
    "tunnel",
];

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("retention_proxy");
        let calls = Family::<CallLabels, Counter>::default();
        let passthrough = Family::<RouteLabels, Counter>::default();
        let refused = Family::<RouteLabels, Counter>::default();
        let slack_lookups = Family::<LookupLabels, Counter>::default();
        let call_seconds = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ])
        });
        registry.register("requests", "Intercepted retention calls", calls.clone());
        registry.register(
            "passthrough_requests",
            "Requests streamed through without audit",
            passthrough.clone(),
        );
        registry.register("refused_requests", "Requests refused before routing", refused.clone());
        registry.register(
            "request_duration_seconds",
            "Latency of intercepted calls",
            call_seconds.clone(),
        );
        registry.register(
            "slack_token_lookups",
            "Slack token lookups: hit (no auth.test needed), resolved or failed (one auth.test)",
            slack_lookups.clone(),
        );
        let alerts = AlertMetrics::default();
        registry.register("alerts_sent", "Alerts a sink accepted", alerts.sent.clone());
        registry.register(
            "alerts_failed",
            "Alert delivery attempts that failed (each is retried)",
            alerts.failed.clone(),
        );
        registry.register(
            "alerts_retried",
            "Alert delivery attempts that retried an earlier failure",
            alerts.retried.clone(),
        );
        registry.register(
            "alerts_lag_seconds",
            "Age of the oldest audit record a sink has not passed yet (0 when caught up)",
            alerts.lag_seconds.clone(),
        );
        registry.register(
            "alerts_lag_records",
            "Audit records after a sink's position",
            alerts.lag_records.clone(),
        );
        let upstream_errors = Family::<UpstreamErrorLabels, Counter>::default();
        registry.register(
            "upstream_errors",
            "Upstream exchanges that brought no usable answer, by family and kind",
            upstream_errors.clone(),
        );
        registry.register(
            "build",
            "The running build (value 1)",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        let pass_routes = PASS_ROUTES
            .iter()
            .map(|r| (*r, passthrough.get_or_create(&RouteLabels { route: r }).clone()))
            .collect();
        Metrics {
            registry,
            calls,
            passthrough,
            call_seconds,
            refused,
            slack_lookups,
            alerts,
            upstream_errors,
            audit_db: None,
            pass_routes,
        }
    }
}

impl Metrics {
    /// Counts one pass-through request on `route`.
    pub fn passthrough(&self, route: &'static str) {
        match self.pass_routes.iter().find(|(r, _)| *r == route) {
            Some((_, c)) => {
                c.inc();
            }
            None => {
                self.passthrough.get_or_create(&RouteLabels { route }).inc();
            }
        }
    }

    /// Counts one upstream exchange that failed with `kind` for `family`.
    pub fn upstream_error(&self, family: &'static str, kind: &'static str) {
        self.upstream_errors
            .get_or_create(&UpstreamErrorLabels { family, kind })
            .inc();
    }

    /// Shows the size of the SQLite database at `path` (and its write-ahead log).
    pub fn watch_audit_db(&mut self, path: &Path) {
        self.audit_db = Some(path.to_path_buf());
    }

    /// Adds the proxy's AWS credential refreshes (by `result`) to the exposition.
    pub fn register_credential_refreshes(&mut self, refreshes: Family<RefreshLabels, Counter>) {
        self.registry.register(
            "aws_credential_refreshes",
            "Refreshes of the proxy's own AWS credentials, by result",
            refreshes,
        );
    }

    /// Renders the Prometheus text exposition.
    pub fn render(&self, writer: &WriterStats) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode_registry(&mut out, &self.registry);
        if out.ends_with("# EOF\n") {
            out.truncate(out.len() - "# EOF\n".len());
        }
        let _ = writeln!(
            out,
            "# HELP retention_proxy_audit_queue_depth Audit records waiting for the writer."
        );
        let _ = writeln!(out, "# TYPE retention_proxy_audit_queue_depth gauge");
        let _ = writeln!(
            out,
            "retention_proxy_audit_queue_depth {}",
            writer.queued.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP retention_proxy_audit_records_committed Audit records committed."
        );
        let _ = writeln!(out, "# TYPE retention_proxy_audit_records_committed counter");
        let _ = writeln!(
            out,
            "retention_proxy_audit_records_committed_total {}",
            writer.committed.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP retention_proxy_audit_commit_failures Failed audit commits."
        );
        let _ = writeln!(out, "# TYPE retention_proxy_audit_commit_failures counter");
        let _ = writeln!(
            out,
            "retention_proxy_audit_commit_failures_total {}",
            writer.failures.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP retention_proxy_audit_commit_seconds Latency of one group commit."
        );
        let _ = writeln!(out, "# TYPE retention_proxy_audit_commit_seconds histogram");
        let mut cum = 0u64;
        for (i, b) in COMMIT_BUCKETS_US.iter().enumerate() {
            cum += writer.commit_buckets[i].load(Ordering::Relaxed);
            let le = if *b == u64::MAX {
                "+Inf".to_string()
            } else {
                format!("{}", *b as f64 / 1e6)
            };
            let _ = writeln!(out, "retention_proxy_audit_commit_seconds_bucket{{le=\"{le}\"}} {cum}");
        }
        let _ = writeln!(
            out,
            "retention_proxy_audit_commit_seconds_sum {}",
            writer.commit_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "retention_proxy_audit_commit_seconds_count {cum}");
        if let Some(db) = &self.audit_db {
            let _ = writeln!(
                out,
                "# HELP retention_proxy_audit_db_bytes Size of the audit database file and its write-ahead log."
            );
            let _ = writeln!(out, "# TYPE retention_proxy_audit_db_bytes gauge");
            let _ = writeln!(out, "retention_proxy_audit_db_bytes {}", db_bytes(db));
        }
        out.push_str("# EOF\n");
        out
    }
}

/// Bytes of the SQLite file at `db` plus its `-wal` file (a missing file counts 0).
fn db_bytes(db: &Path) -> u64 {
    let mut wal = db.as_os_str().to_os_string();
    wal.push("-wal");
    [db.to_path_buf(), PathBuf::from(wal)]
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}
