//! `CONNECT host:port`. Vendor API hosts (and `forward.intercept_hosts`) are audited: the
//! proxy terminates the client's TLS with a leaf issued by the configured CA ([`ca`]) and
//! runs every inner request through [`crate::proxy`], as for the other ways in. Other allowed
//! hosts get a blind tunnel. A vendor host is never tunnelled blind — its retention calls
//! would escape the audit — so without a CA configured it is refused. Every tunnel counts
//! against `forward.max_tunnels` and closes after `forward.tunnel_idle_timeout` without
//! traffic.
//!
//! Egress policy: only ports in `forward.connect_ports` are opened, and a host that is not a
//! `[forward.resolve]` entry is resolved once and refused when any of its addresses is
//! internal (loopback, private, link-local, shared, unspecified, metadata); a blind tunnel
//! connects to the address that was checked.

pub mod ca;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{debug, info, warn};

use crate::admin::metrics::RouteLabels;
use crate::http::body::{ProxyBody, full, plain};
use crate::http::egress::{self, CheckedResolver};
use crate::http::headers::normalise_host;
use crate::proxy::{self, App, Conn, TlsTunnel};
use ca::Interceptor;

/// What tunnels share: the leaf issuer and the open-tunnel budget.
pub struct Tunnels {
    /// Leaf issuer, when `forward.ca_cert` is configured.
    pub interceptor: Option<Interceptor>,
    /// Open-tunnel budget (`forward.max_tunnels`).
    pub budget: Arc<Semaphore>,
    /// Names the configuration gives itself (not checked against the egress policy).
    pub resolver: CheckedResolver,
}

impl Tunnels {
    /// Tunnels for `interceptor`, at most `max` open at once, trusting the names `resolver`
    /// trusts.
    pub fn new(interceptor: Option<Interceptor>, max: usize, resolver: CheckedResolver) -> Tunnels {
        Tunnels {
            interceptor,
            budget: Arc::new(Semaphore::new(max)),
            resolver,
        }
    }
}

/// Handles a CONNECT request.
pub async fn connect(
    app: Arc<App>,
    tunnels: Arc<Tunnels>,
    peer: SocketAddr,
    proxy_user: Option<String>,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let Some(auth) = req.uri().authority().cloned() else {
        return plain(StatusCode::BAD_REQUEST, "retention-proxy: CONNECT needs host:port");
    };
    let host = normalise_host(auth.host());
    let port = auth.port_u16().unwrap_or(443);
    let refused = |why: &str| {
        app.metrics
            .refused
            .get_or_create(&RouteLabels { route: "tunnel" })
            .inc();
        warn!(host = %host, port, peer = %peer, reason = why, "CONNECT refused");
    };
    if !app.config.forward.allows(&host) {
        refused("host not in forward.allow_hosts");
        return plain(
            StatusCode::FORBIDDEN,
            &format!("retention-proxy: host {host:?} is not in forward.allow_hosts"),
        );
    }
    if !app.config.forward.connect_ports.contains(&port) {
        refused("port not in forward.connect_ports");
        return plain(
            StatusCode::FORBIDDEN,
            &format!(
                "retention-proxy: CONNECT to port {port} is refused; forward.connect_ports allows only {:?}",
                app.config.forward.connect_ports
            ),
        );
    }
    // Where a blind tunnel goes: a `[forward.resolve]` entry as configured, else the address
    // checked here (no second lookup for DNS rebinding to answer differently).
    let resolved = app.config.forward.resolve.contains_key(&host) || tunnels.resolver.trusts(&host);
    let checked = if resolved {
        None
    } else {
        match egress::resolve_checked(&host, port).await {
            Ok(addrs) => Some(addrs),
            Err(e) if e.is_refusal() => {
                refused("internal address");
                return plain(StatusCode::FORBIDDEN, &format!("retention-proxy: {e}"));
            }
            Err(e) => {
                return plain(StatusCode::BAD_GATEWAY, &format!("retention-proxy: {e}"));
            }
        }
    };
    let intercepted = app.config.forward.intercepts(&host);
    if intercepted && tunnels.interceptor.is_none() {
        refused("audited vendor host and TLS interception is not configured");
        return plain(
            StatusCode::FORBIDDEN,
            &format!(
                "retention-proxy: {host} carries audited retention calls and is never tunnelled blind; \
                 configure forward.ca_cert/forward.ca_key for TLS interception, or send plain-HTTP requests to the proxy"
            ),
        );
    }
    let Ok(permit) = tunnels.budget.clone().try_acquire_owned() else {
        refused("too many open tunnels");
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "retention-proxy: too many open tunnels; try again later",
        );
    };
    app.metrics
        .passthrough
        .get_or_create(&RouteLabels {
            route: if intercepted { "intercept" } else { "tunnel" },
        })
        .inc();
    if intercepted {
        tokio::spawn(terminate(app, tunnels, peer, host, port, proxy_user, req, permit));
        return Response::new(full(""));
    }
    let target = app.config.forward.upstream_for(&host, port);
    let (target_host, target_port) = (target.host, target.port);
    let connect_timeout = app.config.upstreams.connect_timeout;
    let dial = async {
        match checked {
            Some(addrs) => TcpStream::connect(&addrs[..]).await,
            None => TcpStream::connect((target_host.as_str(), target_port)).await,
        }
    };
    let upstream = match tokio::time::timeout(connect_timeout, dial).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            app.metrics.upstream_error("other", "connect");
            return plain(
                StatusCode::BAD_GATEWAY,
                &format!("retention-proxy: cannot reach {host}:{port}: {e}"),
            );
        }
        Err(_) => {
            app.metrics.upstream_error("other", "timeout");
            return plain(
                StatusCode::GATEWAY_TIMEOUT,
                &format!("retention-proxy: connecting to {host}:{port} timed out"),
            );
        }
    };
    let idle = app.config.forward.tunnel_idle_timeout;
    tokio::spawn(async move {
        let _permit = permit;
        match hyper::upgrade::on(req).await {
            Ok(upgraded) => match copy_until_idle(TokioIo::new(upgraded), upstream, idle).await {
                Ok((up, down)) => debug!(host = %host, up, down, "tunnel closed"),
                Err(e) => debug!(host = %host, error = %e, "tunnel ended with an error"),
            },
            Err(e) => warn!(error = %e, "CONNECT upgrade failed"),
        }
    });
    Response::new(full(""))
}

/// Terminates the client's TLS with a leaf for `host` and serves the inner requests.
#[allow(clippy::too_many_arguments)]
async fn terminate(
    app: Arc<App>,
    tunnels: Arc<Tunnels>,
    peer: SocketAddr,
    host: String,
    port: u16,
    proxy_user: Option<String>,
    req: Request<Incoming>,
    permit: OwnedSemaphorePermit,
) {
    let _permit = permit;
    let upgraded = match hyper::upgrade::on(req).await {
        Ok(u) => u,
        Err(e) => return warn!(error = %e, "CONNECT upgrade failed"),
    };
    let Some(interceptor) = tunnels.interceptor.as_ref() else {
        return;
    };
    let cfg = match interceptor.server_config(&host) {
        Ok(c) => c,
        Err(e) => return warn!(host = %host, error = %e, "cannot issue an interception certificate"),
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
    let handshake = tokio::time::timeout(
        app.config.forward.tls_handshake_timeout,
        acceptor.accept(TokioIo::new(upgraded)),
    );
    let tls = match handshake.await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            // Typically a client that does not trust the interception CA. Nothing is forwarded.
            return warn!(host = %host, peer = %peer, error = %e, "client TLS handshake failed inside CONNECT (does the client trust the interception CA?)");
        }
        Err(_) => return warn!(host = %host, peer = %peer, "client TLS handshake timed out inside CONNECT"),
    };
    let (_, session) = tls.get_ref();
    let tunnel = Arc::new(TlsTunnel {
        host: host.clone(),
        port,
        tls_version: match session.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".into(),
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".into(),
            Some(v) => format!("{v:?}"),
            None => "unknown".into(),
        },
        cipher_suite: session
            .negotiated_cipher_suite()
            .map(|c| cipher_suite_name(c.suite()))
            .unwrap_or_else(|| "unknown".into()),
        proxy_user: proxy_user.clone(),
    });
    info!(host = %host, peer = %peer, tls = %tunnel.tls_version, "intercepting CONNECT tunnel");
    let app_idle = app.config.forward.tunnel_idle_timeout;
    let mut conn = Conn::new(&app, peer);
    conn.tunnel = Some(tunnel);
    // Inside the tunnel, the user who opened it is the user.
    conn.proxy_user = proxy_user;
    let svc = service_fn(move |req| {
        let app = app.clone();
        let conn = conn.clone();
        async move { Ok::<_, std::convert::Infallible>(proxy::handle(app, conn, req).await) }
    });
    let result = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        // Also how long an idle intercepted tunnel waits for its next request.
        .header_read_timeout(app_idle)
        .serve_connection(TokioIo::new(tls), svc)
        .await;
    if let Err(e) = result {
        debug!(host = %host, error = %e, "intercepted tunnel ended with an error");
    }
}

/// Copies both ways until both sides close, or nothing moves for `idle`.
async fn copy_until_idle<A, B>(a: A, b: B, idle: Duration) -> std::io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (mut ar, mut aw) = tokio::io::split(a);
    let (mut br, mut bw) = tokio::io::split(b);
    let (mut up, mut down) = (0u64, 0u64);
    let (mut a_open, mut b_open) = (true, true);
    let mut abuf = vec![0u8; 16 * 1024];
    let mut bbuf = vec![0u8; 16 * 1024];
    while a_open || b_open {
        tokio::select! {
            r = ar.read(&mut abuf), if a_open => match r? {
                0 => { a_open = false; bw.shutdown().await?; }
                n => { bw.write_all(&abuf[..n]).await?; up += n as u64; }
            },
            r = br.read(&mut bbuf), if b_open => match r? {
                0 => { b_open = false; aw.shutdown().await?; }
                n => { aw.write_all(&bbuf[..n]).await?; down += n as u64; }
            },
            _ = tokio::time::sleep(idle) => {
                debug!(?idle, "tunnel idle; closing");
                break;
            }
        }
    }
    Ok((up, down))
}

/// The cipher suite as CloudTrail's `tlsDetails` spells it: the IANA name for TLS 1.3
/// (`TLS_AES_128_GCM_SHA256`), the OpenSSL name for TLS 1.2 (`ECDHE-RSA-AES128-GCM-SHA256`).
fn cipher_suite_name(s: rustls::CipherSuite) -> String {
    use rustls::CipherSuite as C;
    let name = match s {
        C::TLS13_AES_128_GCM_SHA256 => "TLS_AES_128_GCM_SHA256",
        C::TLS13_AES_256_GCM_SHA384 => "TLS_AES_256_GCM_SHA384",
        C::TLS13_CHACHA20_POLY1305_SHA256 => "TLS_CHACHA20_POLY1305_SHA256",
        C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 => "ECDHE-ECDSA-AES128-GCM-SHA256",
        C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 => "ECDHE-ECDSA-AES256-GCM-SHA384",
        C::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 => "ECDHE-ECDSA-CHACHA20-POLY1305",
        C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => "ECDHE-RSA-AES128-GCM-SHA256",
        C::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => "ECDHE-RSA-AES256-GCM-SHA384",
        C::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => "ECDHE-RSA-CHACHA20-POLY1305",
        other => return format!("{other:?}"),
    };
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cipher_suites_are_spelled_as_cloudtrail_does() {
        assert_eq!(
            cipher_suite_name(rustls::CipherSuite::TLS13_AES_256_GCM_SHA384),
            "TLS_AES_256_GCM_SHA384"
        );
        assert_eq!(
            cipher_suite_name(rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256),
            "ECDHE-RSA-AES128-GCM-SHA256"
        );
    }
}
