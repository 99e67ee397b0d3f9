//! What the request path shares: the proxy's state ([`App`]) and one client connection's
//! ([`Conn`]).

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use http::HeaderValue;

use super::slack_identity::SlackIdentities;
use crate::admin::metrics::Metrics;
use crate::audit::AuditHandle;
use crate::audit::event::TokenKey;
use crate::config::{Config, Scheme, Upstream, UpstreamsConfig};
use crate::http::upstream::{Affinity, Dialer};
use crate::policy::guardrail::{Guardrail, RawGuardrail};
use crate::proxy::credentials::ProxyCredentials;
use crate::vendors::Family;

/// Shared state of the proxy listener.
pub struct App {
    /// Validated configuration, as started. Its `guardrails` are the rules of the start;
    /// the rules in force are [`App::guardrails`].
    pub config: Config,
    /// The guardrails in force: the configuration's, until a reload replaces them.
    pub guardrails: Guardrails,
    /// The audit writer.
    pub audit: AuditHandle,
    /// Upstream connections for streamed requests, reused per downstream connection.
    pub dialer: Arc<Dialer>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The proxy's own AWS credentials for reverse mode.
    pub credentials: Option<ProxyCredentials>,
    /// HMAC key for Slack token fingerprints.
    pub token_key: TokenKey,
    /// The reverse-proxy upstreams, prepared.
    pub reverse: ReverseTargets,
    /// Who Slack tokens belong to, by fingerprint (`[slack] resolve_tokens`).
    pub slack_identities: SlackIdentities,
    /// The fleet's central store, when `[audit.central]` is set (fleet-wide `previous`).
    pub fleet: Option<Arc<crate::audit::postgres::Pool>>,
    /// Shipping to the central store: what sync mode and `max_lag` consult.
    pub shipping: Option<Arc<crate::audit::postgres::Shipping>>,
}

/// The connection a request arrived on.
#[derive(Clone)]
pub struct Conn {
    /// The client's address.
    pub peer: SocketAddr,
    /// The peer's IP as an `X-Forwarded-For` value, formatted once per connection.
    pub(crate) peer_ip: HeaderValue,
    /// The upstream connection this connection's streamed requests reuse.
    pub(crate) upstream: Arc<Affinity>,
    /// Set when the connection is a `CONNECT` tunnel whose TLS the proxy terminated.
    pub tunnel: Option<Arc<TlsTunnel>>,
    /// The authenticated proxy user (forward proxy and CONNECT, when users are configured).
    pub proxy_user: Option<String>,
}

impl Conn {
    /// A connection accepted from `peer` (not yet authenticated, not a tunnel).
    pub fn new(app: &App, peer: SocketAddr) -> Conn {
        Conn {
            peer,
            peer_ip: HeaderValue::from_str(&peer.ip().to_string()).unwrap_or(HeaderValue::from_static("unknown")),
            upstream: Arc::new(Affinity::new(app.dialer.clone())),
            tunnel: None,
            proxy_user: None,
        }
    }
}

/// A `CONNECT` tunnel whose TLS the proxy terminated: where it goes and how the client's TLS
/// was negotiated.
#[derive(Debug, Clone)]
pub struct TlsTunnel {
    /// The host the client asked to reach.
    pub host: String,
    /// Its port.
    pub port: u16,
    /// Negotiated TLS version (`TLSv1.3`).
    pub tls_version: String,
    /// Negotiated cipher suite.
    pub cipher_suite: String,
    /// The proxy user who opened the tunnel.
    pub proxy_user: Option<String>,
}

/// An upstream with its URI scheme and authority worked out once (at start-up for the
/// reverse-proxy upstreams, per request in forward mode).
#[derive(Debug)]
pub struct Target {
    /// The upstream.
    pub upstream: Upstream,
    /// Its URI scheme.
    pub(super) scheme: http::uri::Scheme,
    /// Its URI authority.
    pub(super) authority: http::uri::Authority,
    /// The authority as a `Host` value.
    pub(super) host: HeaderValue,
}

impl Target {
    /// Prepares `upstream`; fails only for a host that cannot appear in a URI.
    pub fn new(upstream: Upstream) -> Result<Arc<Target>, http::Error> {
        let a = authority(&upstream);
        let host = HeaderValue::from_str(&a)?;
        let authority = http::uri::Authority::try_from(a)?;
        let scheme = match upstream.scheme {
            Scheme::Http => http::uri::Scheme::HTTP,
            Scheme::Https => http::uri::Scheme::HTTPS,
        };
        Ok(Arc::new(Target {
            upstream,
            scheme,
            authority,
            host,
        }))
    }
}

/// The four reverse-proxy upstreams, prepared.
#[derive(Debug)]
pub struct ReverseTargets {
    chime: Arc<Target>,
    chime_messaging: Arc<Target>,
    chime_identity: Arc<Target>,
    slack: Arc<Target>,
}

impl ReverseTargets {
    /// Prepares `[upstreams]`.
    pub fn new(up: &UpstreamsConfig) -> Result<ReverseTargets, http::Error> {
        Ok(ReverseTargets {
            chime: Target::new(up.chime.clone())?,
            chime_messaging: Target::new(up.chime_messaging.clone())?,
            chime_identity: Target::new(up.chime_identity.clone())?,
            slack: Target::new(up.slack.clone())?,
        })
    }

    /// The upstream of `f`.
    pub fn get(&self, f: Family) -> &Arc<Target> {
        match f {
            Family::Chime => &self.chime,
            Family::ChimeMessaging => &self.chime_messaging,
            Family::ChimeIdentity => &self.chime_identity,
            Family::Slack => &self.slack,
        }
    }
}

/// `host[:port]`, the port omitted when it is the scheme's default.
fn authority(u: &Upstream) -> String {
    let default = matches!((u.scheme, u.port), (Scheme::Https, 443) | (Scheme::Http, 80));
    let host = if u.host.contains(':') {
        format!("[{}]", u.host)
    } else {
        u.host.clone()
    };
    if default { host } else { format!("{host}:{}", u.port) }
}

/// One set of guardrails: compiled for the request path, and as written (to tell what a
/// reload changes).
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    /// Compiled rules, in evaluation order.
    pub rules: Vec<Guardrail>,
    /// The same rules as the file wrote them, defaults filled in.
    pub raw: Vec<RawGuardrail>,
}

impl RuleSet {
    /// The rule ids, in order.
    pub fn ids(&self) -> Vec<String> {
        self.rules.iter().map(|r| r.id.clone()).collect()
    }
}

/// The guardrails in force, replaced whole by a reload. A call takes the current set once
/// (one uncontended read lock and a reference count), so it is judged by one set from start
/// to end even when a reload lands meanwhile.
#[derive(Debug)]
pub struct Guardrails(RwLock<Arc<RuleSet>>);

impl Guardrails {
    /// Starts with `set`.
    pub fn new(set: RuleSet) -> Guardrails {
        Guardrails(RwLock::new(Arc::new(set)))
    }

    /// The set in force now.
    pub fn current(&self) -> Arc<RuleSet> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Puts `set` in force for every call that starts from now on.
    pub fn replace(&self, set: RuleSet) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(set);
    }
}
