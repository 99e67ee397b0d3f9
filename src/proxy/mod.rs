//! The request path for everything but `CONNECT` (which [`crate::tunnel`] takes): route →
//! recognise → [`passthrough`] untouched, or the audited [`call`] (read → judge → record →
//! forward → record outcome).

pub mod authenticate;
pub mod call;
pub mod credentials;
pub mod fleet;
pub mod passthrough;
pub mod reload;
pub mod route;
pub mod slack_identity;
pub mod slack_lookup;
pub mod state;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

pub use state::{App, Conn, TlsTunnel};

use crate::admin::metrics::RouteLabels;
use crate::http::body::{ProxyBody, plain};
use crate::vendors::errors::VendorError;
use crate::vendors::{self, aws_sigv4};
use route::Route;

/// Serves one request, as [`handle_request`] does, behind a box: a terminated tunnel's
/// connection is served from inside a request's future, and a future cannot contain itself.
pub fn handle(
    app: Arc<App>,
    conn: Conn,
    req: Request<Incoming>,
) -> Pin<Box<dyn Future<Output = Response<ProxyBody>> + Send>> {
    Box::pin(handle_request(app, conn, req))
}

/// Serves one request. Never fails: every error becomes a response.
///
/// Unboxed, for a connection's service: hyper keeps the request's future in one place per
/// connection, so a keep-alive client costs no allocation per request for it.
pub async fn handle_request(app: Arc<App>, conn: Conn, req: Request<Incoming>) -> Response<ProxyBody> {
    if req.method() == Method::CONNECT {
        // The listener hands CONNECT to the tunnel; one here came through a tunnel.
        return plain(
            StatusCode::BAD_REQUEST,
            "retention-proxy: CONNECT inside a tunnel is not allowed",
        );
    }
    let route = match route::choose(&app.config, &app.reverse, conn.peer, conn.tunnel.as_deref(), &req) {
        Ok(r) => r,
        Err(resp) => {
            app.metrics.refused.get_or_create(&RouteLabels { route: "none" }).inc();
            return *resp;
        }
    };
    // A path that matches a retention call only once normalised "could mean two things": it is
    // audited (and refused), never streamed through unaudited.
    let matched = route
        .family
        .and_then(|f| vendors::classify_any(f, req.method(), req.uri().path()));
    match matched {
        None => passthrough::serve(&app, &conn, route, req).await,
        // Boxed: the audited call's state is large, and every pass-through request would
        // otherwise carry (and move) room for it.
        Some((m, odd_path)) => Box::pin(call::serve(app, &conn, route, m, odd_path, req)).await,
    }
}

/// Removes the client's signature and signs with the proxy's current credentials (reverse
/// mode, AWS). Without credentials the call fails (internal error) and nothing is forwarded.
async fn resign<B>(
    app: &App,
    route: &Route,
    region_hint: Option<&str>,
    req: &mut Request<B>,
    body: &[u8],
) -> Result<(), VendorError> {
    const NONE: &str = "retention-proxy has no AWS credentials to re-sign this call (see its log)";
    let source = app.credentials.as_ref().ok_or_else(|| VendorError::internal(NONE))?;
    // Why there are none is logged where it is found out; the client learns only that.
    let creds = source.current().await.map_err(|_| VendorError::internal(NONE))?;
    for h in aws_sigv4::SIGNING_HEADERS {
        req.headers_mut().remove(h);
    }
    let region = region_hint
        .map(str::to_string)
        .or_else(|| vendors::region_of_host(&route.target.upstream.host))
        .unwrap_or_else(|| "us-east-1".into());
    aws_sigv4::resign(req, &creds, &region, body).map_err(|e| VendorError::internal(e.to_string()))
}

/// A new event or request id. Time-ordered (UUIDv7), so the audit store's `event_id` index
/// grows at its end instead of dirtying a random page per record.
fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_are_unique_uuids_in_creation_order() {
        let ids: Vec<String> = (0..2000).map(|_| new_id()).collect();
        for id in &ids {
            let u = uuid::Uuid::parse_str(id).expect("a UUID");
            assert_eq!(u.get_version_num(), 7, "{id}");
        }
        // Creation order is index order: that is what keeps the event_id index append-only.
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids are not strictly increasing");
    }
}
