//! Upstream connections: HTTP/1.1 over TCP or rustls (webpki roots plus `upstreams.ca_file`),
//! with a connect timeout. Each downstream connection keeps the upstream connection it last
//! used; idle ones are shared through one list.

use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use super::body::{BoxError, ProxyBody};
use super::egress::CheckedResolver;

/// Why the client could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up upstream TLS: {0}")]
pub struct ClientError(String);

/// Root store: webpki roots, then the system's, then `ca_file`.
pub fn root_store(ca_file: Option<&std::path::Path>) -> Result<RootCertStore, ClientError> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| ClientError(format!("{}: {e}", path.display())))?
            .collect::<Result<_, _>>()
            .map_err(|e| ClientError(format!("{}: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(ClientError(format!("{}: no certificates in the file", path.display())));
        }
        for c in certs {
            roots
                .add(c)
                .map_err(|e| ClientError(format!("{}: {e}", path.display())))?;
        }
    }
    Ok(roots)
}

/// TCP (no Nagle, connect timeout) with rustls on top for `https` upstreams, HTTP/1.1 only.
/// Names are resolved by `resolver`, which checks them against the egress policy.
fn connector(
    ca_file: Option<&std::path::Path>,
    connect_timeout: Duration,
    resolver: CheckedResolver,
) -> Result<HttpsConnector<HttpConnector<CheckedResolver>>, ClientError> {
    let roots = root_store(ca_file)?;
    let tls =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| ClientError(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
    let mut http = HttpConnector::new_with_resolver(resolver);
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http))
}

/// Upstream connections for streamed (pass-through) requests.
///
/// A downstream connection keeps the upstream connection it last used (its [`Affinity`]), so a
/// keep-alive client costs no pool lookup, hashing or lock per request. When the downstream
/// connection closes, its upstream connection goes back to a shared idle list that the next
/// downstream connection to the same upstream takes from. A connection unused for longer
/// than the idle timeout is closed rather than reused: a middlebox may have dropped it.
pub struct Dialer {
    connector: HttpsConnector<HttpConnector<CheckedResolver>>,
    idle: std::sync::Mutex<std::collections::HashMap<Key, Vec<(Instant, Sender)>>>,
    max_idle_per_upstream: usize,
    idle_timeout: Duration,
}

/// Idle upstream connections kept per upstream (scheme and authority) for the next client.
pub const MAX_IDLE_PER_UPSTREAM: usize = 256;
/// How long an upstream connection may sit unused and still be reused.
pub const UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

type Key = (http::uri::Scheme, http::uri::Authority);
type Sender = hyper::client::conn::http1::SendRequest<ProxyBody>;

/// Why a streamed request got no response.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The request's URI has no scheme or authority.
    #[error("the upstream URI has no scheme or authority")]
    NoAuthority,
    /// No connection to the upstream.
    #[error("cannot connect: {0}")]
    Connect(BoxError),
    /// The connection failed during the exchange.
    #[error(transparent)]
    Exchange(#[from] hyper::Error),
}

impl SendError {
    /// What went wrong, for metrics: `tls` (the handshake with the upstream failed),
    /// `timeout` (connecting took longer than `connect_timeout`), `connect` (no connection:
    /// refused, unreachable, a name not resolved or not allowed) or `closed` (the connection
    /// failed during the exchange).
    pub fn kind(&self) -> &'static str {
        match self {
            SendError::NoAuthority => "connect",
            SendError::Connect(e) => failure_kind(e.as_ref()).unwrap_or("connect"),
            SendError::Exchange(e) if e.is_timeout() => "timeout",
            SendError::Exchange(e) => failure_kind(e).unwrap_or("closed"),
        }
    }
}

/// `tls` or `timeout` when an error in `e`'s chain says so.
fn failure_kind(e: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    let mut next = Some(e);
    while let Some(e) = next {
        if e.is::<rustls::Error>() {
            return Some("tls");
        }
        next = e.source();
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return Some("timeout");
            }
            // An I/O error's `source` skips the error it wraps (the TLS connector wraps
            // rustls' I/O error in another): go on with the wrapped one.
            if let Some(inner) = io.get_ref() {
                next = Some(inner);
            }
        }
    }
    None
}

impl Dialer {
    /// A dialer with [`MAX_IDLE_PER_UPSTREAM`] and [`UPSTREAM_IDLE_TIMEOUT`], resolving names
    /// through `resolver`.
    pub fn new(
        ca_file: Option<&std::path::Path>,
        connect_timeout: Duration,
        resolver: CheckedResolver,
    ) -> Result<std::sync::Arc<Dialer>, ClientError> {
        Dialer::build(
            ca_file,
            connect_timeout,
            MAX_IDLE_PER_UPSTREAM,
            UPSTREAM_IDLE_TIMEOUT,
            resolver,
        )
    }

    /// A dialer keeping up to `max_idle_per_upstream` idle connections per upstream (one
    /// handed back beyond that is closed) and reusing none unused for over `idle_timeout`.
    /// Every name it resolves is checked against the egress policy (it trusts none).
    pub fn with_limits(
        ca_file: Option<&std::path::Path>,
        connect_timeout: Duration,
        max_idle_per_upstream: usize,
        idle_timeout: Duration,
    ) -> Result<std::sync::Arc<Dialer>, ClientError> {
        Dialer::build(
            ca_file,
            connect_timeout,
            max_idle_per_upstream,
            idle_timeout,
            CheckedResolver::default(),
        )
    }

    fn build(
        ca_file: Option<&std::path::Path>,
        connect_timeout: Duration,
        max_idle_per_upstream: usize,
        idle_timeout: Duration,
        resolver: CheckedResolver,
    ) -> Result<std::sync::Arc<Dialer>, ClientError> {
        Ok(std::sync::Arc::new(Dialer {
            connector: connector(ca_file, connect_timeout, resolver)?,
            idle: Default::default(),
            max_idle_per_upstream,
            idle_timeout,
        }))
    }

    fn usable(&self, since: Instant, s: &Sender) -> bool {
        !s.is_closed() && since.elapsed() <= self.idle_timeout
    }

    fn take_idle(&self, key: &Key) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.get_mut(key)?;
        while let Some((since, s)) = list.pop() {
            if self.usable(since, &s) {
                return Some(s);
            }
        }
        None
    }

    fn put_idle(&self, key: Key, since: Instant, sender: Sender) {
        if !self.usable(since, &sender) {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.entry(key).or_default();
        list.retain(|(t, s)| self.usable(*t, s));
        if list.len() < self.max_idle_per_upstream {
            list.push((since, sender));
        }
    }

    async fn connect(&self, key: &Key) -> Result<Sender, SendError> {
        use tower_service::Service;
        let uri = http::Uri::builder()
            .scheme(key.0.clone())
            .authority(key.1.clone())
            .path_and_query("/")
            .build()
            .map_err(|e| SendError::Connect(Box::new(e)))?;
        let io = self
            .connector
            .clone()
            .call(uri.clone())
            .await
            .map_err(SendError::Connect)?;
        let (sender, conn) = hyper::client::conn::http1::Builder::new()
            .handshake(io)
            .await
            .map_err(|e| SendError::Connect(Box::new(e)))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }
}

/// Whether two keys name the same upstream.
fn same_key(a: &Key, b: &Key) -> bool {
    a.0 == b.0 && (a.1.as_str() == b.1.as_str() || a.1 == b.1)
}

/// The upstream connection one downstream connection holds between its requests.
pub struct Affinity {
    dialer: std::sync::Arc<Dialer>,
    /// The connection, its upstream and when it last carried a request.
    held: std::sync::Mutex<Option<(Key, Instant, Sender)>>,
}

impl Affinity {
    /// Nothing held yet.
    pub fn new(dialer: std::sync::Arc<Dialer>) -> Affinity {
        Affinity {
            dialer,
            held: std::sync::Mutex::new(None),
        }
    }

    fn take(&self, key: &Key) -> Option<Sender> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        match held.take() {
            // The same upstream is almost always spelled the same: bytes first, then the
            // case-insensitive comparison `Authority` defines.
            Some((k, since, s)) if same_key(&k, key) => self.dialer.usable(since, &s).then_some(s),
            Some((k, since, s)) => {
                // Another upstream this time: the old connection is free for others.
                self.dialer.put_idle(k, since, s);
                None
            }
            None => None,
        }
    }

    /// Sends `req` (absolute URI) over the held connection, else an idle one, else a new one.
    /// A request that could not be written because the connection had just closed is sent
    /// again on another; one that was written is never sent twice.
    pub async fn send(&self, mut req: Request<ProxyBody>) -> Result<Response<Incoming>, SendError> {
        // HTTP/1.1 to an origin server: the request line carries the origin form. The URI is
        // taken apart in place (moved, not copied): its scheme and authority name the
        // connection.
        let parts = std::mem::take(req.uri_mut()).into_parts();
        let (Some(scheme), Some(authority)) = (parts.scheme, parts.authority) else {
            return Err(SendError::NoAuthority);
        };
        *req.uri_mut() = http::Uri::from(
            parts
                .path_and_query
                .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
        );
        let key = (scheme, authority);
        let mut reused = self.take(&key).or_else(|| self.dialer.take_idle(&key));
        loop {
            let fresh = reused.is_none();
            let mut sender = match reused.take() {
                Some(s) => s,
                // Boxed: dialling is rare, and its state would otherwise sit in every request's
                // future (and be moved with it).
                None => Box::pin(self.dialer.connect(&key)).await?,
            };
            if let Err(e) = sender.ready().await {
                if fresh {
                    return Err(e.into());
                }
                reused = self.dialer.take_idle(&key);
                continue;
            }
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    *self.held.lock().unwrap_or_else(|p| p.into_inner()) = Some((key, Instant::now(), sender));
                    return Ok(resp);
                }
                Err(mut e) => match e.take_message() {
                    Some(r) if !fresh => {
                        req = r;
                        reused = self.dialer.take_idle(&key);
                    }
                    _ => return Err(e.into_error().into()),
                },
            }
        }
    }
}

impl Drop for Affinity {
    fn drop(&mut self) {
        let held = self.held.get_mut().unwrap_or_else(|p| p.into_inner()).take();
        if let Some((k, since, s)) = held {
            self.dialer.put_idle(k, since, s);
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body::Body;
    use http_body_util::BodyExt;

    use super::{Key, same_key};
    use crate::http::body::full;

    #[test]
    fn bytes_in_hand_announce_their_length_and_their_end() {
        // hyper writes `Content-Length` from the size hint, and ends a body on `is_end_stream`.
        let b = full(r#"{"ok":true}"#);
        assert_eq!(b.size_hint().exact(), Some(11));
        assert!(!b.is_end_stream());
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let got = rt.block_on(b.collect()).unwrap().to_bytes();
        assert_eq!(&got[..], br#"{"ok":true}"#);
        let empty = full("");
        assert_eq!(empty.size_hint().exact(), Some(0));
        assert!(empty.is_end_stream());
    }

    fn key(scheme: &str, authority: &str) -> Key {
        (scheme.parse().unwrap(), authority.parse().unwrap())
    }

    #[test]
    fn keys_name_the_same_upstream_whatever_the_case_of_its_host() {
        let held = key("https", "slack.com");
        assert!(same_key(&held, &key("https", "slack.com")));
        // The byte comparison is only a shortcut: a host differing in case is the same upstream.
        assert!(same_key(&held, &key("https", "Slack.COM")));
        assert!(!same_key(&held, &key("https", "slack.com:8443")));
        assert!(!same_key(&held, &key("http", "slack.com")));
        assert!(!same_key(&held, &key("https", "evil-slack.com")));
    }
}
