//! The proxy's own AWS credentials, with which reverse-mode AWS calls are re-signed.
//!
//! They come from the standard chain, resolved as the AWS SDKs resolve it (the `aws-config`
//! crate): environment variables, the shared profile (`AWS_PROFILE`, `AWS_CONFIG_FILE`,
//! `AWS_SHARED_CREDENTIALS_FILE`, including `credential_process`, SSO and assume-role), web
//! identity (EKS IRSA), ECS container credentials and EC2 instance metadata (IMDSv2).
//!
//! They are cached, and refreshed **before** they expire, one refresh at a time:
//!
//! - With a lifetime `L` (expiry minus the time they were fetched), a refresh starts once less
//!   than `lead = min(5 min, L / 4)` is left, so short-lived credentials (60 s: refreshed with
//!   15 s left) cost one fetch per three quarters of their lifetime, never one per call.
//! - While it runs, calls go on with the held credentials as long as more than
//!   `margin = min(10 s, lead / 2)` is left; closer to expiry they wait for the refresh (never
//!   longer than [`LOAD_TIMEOUT`] + [`FETCH_TIMEOUT`]). Credentials inside their margin are
//!   never handed out: a call signed with them could arrive after they expired.
//! - Credentials without an expiry (static keys) count as expiring [`STATIC_LIFETIME`] after
//!   they were read, as in the SDKs, so rotated keys in a profile are picked up.
//! - A failed refresh is retried no sooner than [`RETRY_AFTER_FAILURE`] later; meanwhile calls
//!   without usable credentials fail at once instead of each asking the chain again.
//!
//! The refresh runs on a task of its own, so a caller that goes away does not cancel it.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use aws_config::BehaviorVersion;
use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::sync::{OnceCell, watch};

/// How long loading the chain's configuration (profiles, region) may take.
pub const LOAD_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one fetch from the chain may take (the SDKs' identity cache allows as much).
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// How long after a failed refresh the next one may start.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);
/// The lifetime given to credentials that name no expiry.
pub const STATIC_LIFETIME: Duration = Duration::from_secs(15 * 60);
/// The longest lead before expiry at which a refresh starts.
const MAX_REFRESH_LEAD: Duration = Duration::from_secs(5 * 60);
/// The longest margin before expiry inside which credentials are no longer handed out.
const MAX_EXPIRY_MARGIN: Duration = Duration::from_secs(10);

/// Why there are no credentials to sign with (for the log: the client is told less).
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot get AWS credentials: {0}")]
pub struct CredentialsError(String);

/// Labels of the refresh counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefreshLabels {
    /// `ok` or `error`.
    pub result: &'static str,
}

/// The proxy's AWS credentials: cheap to clone, shared by every call.
#[derive(Clone)]
pub struct ProxyCredentials {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ProxyCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `Credentials`' own Debug shows the access key id and redacts the secret and token.
        let (source, held) = match &self.inner.source {
            Source::Fixed(c) => ("fixed", Some(c.clone())),
            Source::Chain(_) => (
                "standard chain",
                self.inner.lock().held.as_ref().map(|h| h.creds.clone()),
            ),
        };
        f.debug_struct("ProxyCredentials")
            .field("source", &source)
            .field("held", &held)
            .finish()
    }
}

struct Inner {
    source: Source,
    state: Mutex<State>,
    refreshes: Family<RefreshLabels, Counter>,
}

enum Source {
    /// Given once, never refreshed (tests, embedding).
    Fixed(Credentials),
    /// The standard chain, loaded on first use.
    Chain(OnceCell<SharedCredentialsProvider>),
}

#[derive(Default)]
struct State {
    held: Option<Held>,
    /// The refresh under way: its receiver turns `true` when it has finished.
    in_flight: Option<watch::Receiver<bool>>,
    /// When the last refresh failed, and why (cleared by a successful one).
    failure: Option<(Instant, CredentialsError)>,
}

/// Credentials with the times that govern them.
struct Held {
    creds: Credentials,
    /// From then on a refresh is due.
    refresh_at: SystemTime,
    /// From then on they are no longer handed out.
    usable_until: SystemTime,
}

impl Held {
    /// Works out the refresh point and margin of `creds` fetched at `now`; `None` when they
    /// are already too close to their expiry to be used.
    fn new(creds: Credentials, now: SystemTime) -> Option<Held> {
        let expiry = creds.expiry().unwrap_or(now + STATIC_LIFETIME);
        let lifetime = expiry.duration_since(now).unwrap_or(Duration::ZERO);
        let lead = MAX_REFRESH_LEAD.min(lifetime / 4);
        let margin = MAX_EXPIRY_MARGIN.min(lead / 2);
        let usable_until = expiry - margin;
        if usable_until <= now {
            return None;
        }
        Some(Held {
            creds,
            refresh_at: expiry - lead,
            usable_until,
        })
    }
}

impl ProxyCredentials {
    /// The standard AWS credential chain. Nothing is read until [`Self::current`] (or
    /// [`Self::prime`]) first asks, so creating it never blocks nor fails.
    pub fn standard_chain() -> ProxyCredentials {
        ProxyCredentials::with_source(Source::Chain(OnceCell::new()))
    }

    /// Fixed credentials, never refreshed.
    pub fn fixed(access_key_id: &str, secret_access_key: &str, session_token: Option<&str>) -> ProxyCredentials {
        let creds = Credentials::new(
            access_key_id,
            secret_access_key,
            session_token.map(str::to_string),
            None,
            "retention-proxy",
        );
        ProxyCredentials::with_source(Source::Fixed(creds))
    }

    fn with_source(source: Source) -> ProxyCredentials {
        ProxyCredentials {
            inner: Arc::new(Inner {
                source,
                state: Mutex::new(State::default()),
                refreshes: Family::default(),
            }),
        }
    }

    /// Refreshes counted by result (`ok`, `error`), for `/metrics`.
    pub fn refresh_counter(&self) -> Family<RefreshLabels, Counter> {
        self.inner.refreshes.clone()
    }

    /// Starts the first fetch in the background, so the first call need not wait for it and
    /// a missing chain is reported (once) at start-up. Needs a Tokio runtime.
    pub fn prime(&self) {
        let this = self.clone();
        tokio::spawn(async move {
            // A failure is logged by the refresh itself.
            let _ = this.current().await;
        });
    }

    /// Credentials to sign with now: the held ones while they are fresh, else those of a
    /// refresh (started here unless one is under way). Never expired ones.
    pub async fn current(&self) -> Result<Credentials, CredentialsError> {
        if let Source::Fixed(c) = &self.inner.source {
            return Ok(c.clone());
        }
        let mut waited = false;
        loop {
            let mut done = {
                let mut st = self.inner.lock();
                let now = SystemTime::now();
                let backing_off = st
                    .failure
                    .as_ref()
                    .is_some_and(|(at, _)| at.elapsed() < RETRY_AFTER_FAILURE);
                if let Some(h) = st.held.as_ref().filter(|h| now < h.usable_until) {
                    let creds = h.creds.clone();
                    if now >= h.refresh_at && !backing_off {
                        self.refresh(&mut st);
                    }
                    return Ok(creds);
                }
                if waited || (backing_off && st.in_flight.is_none()) {
                    return Err(st
                        .failure
                        .as_ref()
                        .map(|(_, e)| e.clone())
                        .unwrap_or_else(|| CredentialsError("the refresh did not finish in time".into())));
                }
                self.refresh(&mut st)
            };
            // The refresh is bounded by its own timeouts; this bound only guards against a
            // refresh task that never reports.
            let wait = LOAD_TIMEOUT + FETCH_TIMEOUT + Duration::from_secs(1);
            let _ = tokio::time::timeout(wait, done.wait_for(|d| *d)).await;
            waited = true;
        }
    }

    /// The refresh under way, or a new one.
    fn refresh(&self, st: &mut MutexGuard<'_, State>) -> watch::Receiver<bool> {
        if let Some(rx) = &st.in_flight {
            return rx.clone();
        }
        let (tx, rx) = watch::channel(false);
        st.in_flight = Some(rx.clone());
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let outcome = inner.fetch().await;
            let now = SystemTime::now();
            let outcome = outcome.and_then(|c| {
                Held::new(c, now).ok_or_else(|| CredentialsError("the credentials found expire too soon".into()))
            });
            {
                let mut st = inner.lock();
                match outcome {
                    Ok(held) => {
                        inner.refreshes.get_or_create(&RefreshLabels { result: "ok" }).inc();
                        let lifetime = held.creds.expiry().and_then(|e| e.duration_since(now).ok());
                        tracing::debug!(
                            access_key_id = held.creds.access_key_id(),
                            expires_in_s = lifetime.map(|d| d.as_secs()),
                            "AWS credentials refreshed"
                        );
                        if st.held.is_none() || st.failure.is_some() {
                            tracing::info!(access_key_id = held.creds.access_key_id(), "AWS credentials found");
                        }
                        st.held = Some(held);
                        st.failure = None;
                    }
                    Err(e) => {
                        inner.refreshes.get_or_create(&RefreshLabels { result: "error" }).inc();
                        // Once per outage at warn level; its repetitions at debug.
                        const WHAT: &str = "no AWS credentials from the standard chain: \
                                            reverse-proxied AWS calls cannot be re-signed until there are";
                        if st.failure.is_none() {
                            tracing::warn!(error = %e.0, "{WHAT}");
                        } else {
                            tracing::debug!(error = %e.0, "{WHAT}");
                        }
                        st.failure = Some((Instant::now(), e));
                    }
                }
                st.in_flight = None;
            }
            let _ = tx.send(true);
        });
        rx
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One fetch from the chain (loaded first if it is not yet), bounded.
    async fn fetch(&self) -> Result<Credentials, CredentialsError> {
        let Source::Chain(cell) = &self.source else {
            return Err(CredentialsError("fixed credentials are not fetched".into()));
        };
        let provider = tokio::time::timeout(LOAD_TIMEOUT, cell.get_or_try_init(load_chain))
            .await
            .map_err(|_| {
                CredentialsError(format!(
                    "loading the AWS configuration took longer than {LOAD_TIMEOUT:?}"
                ))
            })??;
        match tokio::time::timeout(FETCH_TIMEOUT, provider.provide_credentials()).await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(CredentialsError(error_chain(&e))),
            Err(_) => Err(CredentialsError(format!(
                "the credential chain did not answer within {FETCH_TIMEOUT:?}"
            ))),
        }
    }
}

/// The standard chain, with an HTTPS client on the proxy's one crypto provider (ring).
async fn load_chain() -> Result<SharedCredentialsProvider, CredentialsError> {
    use aws_smithy_http_client::tls;
    let client = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::Ring))
        .build_https();
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(client)
        .load()
        .await
        .credentials_provider()
        .ok_or_else(|| CredentialsError("the AWS configuration names no credentials provider".into()))
}

/// An error with its sources, `: `-separated.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expiring_in(now: SystemTime, secs: u64) -> Credentials {
        Credentials::new(
            "ASIATEST",
            "secret",
            Some("tok".into()),
            Some(now + Duration::from_secs(secs)),
            "t",
        )
    }

    #[test]
    fn refresh_point_and_margin() {
        let now = SystemTime::now();
        // One minute: refreshed with 15 s left, handed out until 7.5 s before expiry.
        let h = Held::new(expiring_in(now, 60), now).unwrap();
        assert_eq!(h.refresh_at, now + Duration::from_secs(45));
        assert_eq!(h.usable_until, now + Duration::from_millis(52_500));
        // One hour: refreshed with 5 min left, handed out until 10 s before expiry.
        let h = Held::new(expiring_in(now, 3600), now).unwrap();
        assert_eq!(h.refresh_at, now + Duration::from_secs(3300));
        assert_eq!(h.usable_until, now + Duration::from_secs(3590));
        // No expiry: as if fifteen minutes.
        let c = Credentials::new("AKIATEST", "secret", None, None, "t");
        let h = Held::new(c, now).unwrap();
        assert_eq!(h.refresh_at, now + STATIC_LIFETIME - STATIC_LIFETIME / 4);
        assert_eq!(h.usable_until, now + STATIC_LIFETIME - MAX_EXPIRY_MARGIN);
        // Already expired: not usable at all.
        let c = Credentials::new("ASIATEST", "s", None, Some(now - Duration::from_secs(1)), "t");
        assert!(Held::new(c, now).is_none());
    }

    #[tokio::test]
    async fn fixed_credentials_are_handed_out_and_never_shown() {
        let p = ProxyCredentials::fixed("AKIDFIXED", "very-secret-key", Some("very-secret-token"));
        let c = p.current().await.unwrap();
        assert_eq!(c.access_key_id(), "AKIDFIXED");
        assert_eq!(c.session_token(), Some("very-secret-token"));
        let shown = format!("{p:?} {c:?}");
        assert!(shown.contains("AKIDFIXED"), "{shown}");
        assert!(!shown.contains("very-secret"), "{shown}");
    }
}
