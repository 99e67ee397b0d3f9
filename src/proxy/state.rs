//! What the request path shares: the proxy's state ([`App`]) and one client connection's
//! ([`Conn`]).

use std::net::SocketAddr;
use std::sync::Arc;

use http::HeaderValue;

use super::route::ReverseTargets;
use crate::admin::metrics::Metrics;
use crate::audit::AuditHandle;
use crate::audit::event::TokenKey;
use crate::config::Config;
use crate::http::upstream::{Affinity, Dialer};
use crate::vendor::aws_sigv4::AwsCredentials;

/// Shared state of the proxy listener.
pub struct App {
    /// Validated configuration.
    pub config: Config,
    /// The audit writer.
    pub audit: AuditHandle,
    /// Upstream connections for streamed requests, reused per downstream connection.
    pub dialer: Arc<Dialer>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The proxy's own AWS credentials for reverse mode.
    pub credentials: Option<AwsCredentials>,
    /// HMAC key for Slack token fingerprints.
    pub token_key: TokenKey,
    /// The reverse-proxy upstreams, prepared.
    pub reverse: ReverseTargets,
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
