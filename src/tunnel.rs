//! `CONNECT host:port`: a blind tunnel to an allowed host that is not a vendor we audit.
//! A vendor host is never tunnelled blind — its retention calls would escape the audit — so
//! without interception configured it is refused.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tracing::{debug, warn};

use crate::config::Scheme;
use crate::errors::plain;
use crate::metrics::RouteLabels;
use crate::proxy::App;
use crate::recognise;
use crate::upstream::ProxyBody;

/// Handles a CONNECT request.
pub async fn connect(app: Arc<App>, peer: SocketAddr, req: Request<Incoming>) -> Response<ProxyBody> {
    let Some(auth) = req.uri().authority().cloned() else {
        return plain(StatusCode::BAD_REQUEST, "retention-proxy: CONNECT needs host:port");
    };
    let host = auth.host().trim_end_matches('.').to_ascii_lowercase();
    let port = auth.port_u16().unwrap_or(443);
    if !app.config.forward.allows(&host) {
        warn!(host = %host, peer = %peer, "CONNECT to a host outside allow_hosts refused");
        app.metrics
            .refused
            .get_or_create(&RouteLabels { route: "tunnel".into() })
            .inc();
        return plain(
            StatusCode::FORBIDDEN,
            &format!("retention-proxy: host {host:?} is not in forward.allow_hosts"),
        );
    }
    if recognise::family_for_host(&host).is_some() {
        warn!(host = %host, peer = %peer, "CONNECT to an audited vendor host refused: TLS interception is not configured");
        app.metrics
            .refused
            .get_or_create(&RouteLabels { route: "tunnel".into() })
            .inc();
        return plain(
            StatusCode::FORBIDDEN,
            &format!(
                "retention-proxy: {host} carries audited retention calls and cannot be tunnelled blind; use the proxy as an HTTP proxy (http:// endpoint) or configure forward.ca_cert/ca_key"
            ),
        );
    }
    let (target_host, target_port) = match app.config.forward.resolve.get(&host) {
        Some(u) if u.scheme == Scheme::Http || u.scheme == Scheme::Https => (u.host.clone(), u.port),
        _ => (host.clone(), port),
    };
    let connect_timeout = app.config.upstreams.connect_timeout;
    let upstream =
        match tokio::time::timeout(connect_timeout, TcpStream::connect((target_host.as_str(), target_port))).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                return plain(
                    StatusCode::BAD_GATEWAY,
                    &format!("retention-proxy: cannot reach {host}:{port}: {e}"),
                );
            }
            Err(_) => {
                return plain(
                    StatusCode::GATEWAY_TIMEOUT,
                    &format!("retention-proxy: connecting to {host}:{port} timed out"),
                );
            }
        };
    app.metrics
        .passthrough
        .get_or_create(&RouteLabels { route: "tunnel".into() })
        .inc();
    tokio::spawn(async move {
        match hyper::upgrade::on(req).await {
            Ok(upgraded) => {
                let mut client = TokioIo::new(upgraded);
                let mut upstream = upstream;
                match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                    Ok((up, down)) => debug!(host = %host, up, down, "tunnel closed"),
                    Err(e) => debug!(host = %host, error = %e, "tunnel ended with an error"),
                }
            }
            Err(e) => warn!(error = %e, "CONNECT upgrade failed"),
        }
    });
    Response::new(crate::errors::full(""))
}
