//! Requests that are not retention calls: streamed through untouched, with no event.

use http::header::CONTENT_LENGTH;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use tracing::warn;

use super::route::Route;
use super::state::{App, Conn};
use super::{authenticate, new_id, resign};
use crate::admin::metrics::RouteLabels;
use crate::audit::event::Way;
use crate::http::body::{ProxyBody, full, plain};
use crate::http::headers::{header_str, strip_hop_by_hop};
use crate::vendors::Family;
use crate::vendors::aws_sigv4;
use crate::vendors::errors::VendorError;

/// Streams a request we do not audit: no buffering (except an AWS body that must be
/// re-signed in reverse mode and fits the limit), no event.
pub async fn serve(app: &App, conn: &Conn, route: Route, req: Request<Incoming>) -> Response<ProxyBody> {
    app.metrics.passthrough(route.label);
    let family = route.family.unwrap_or(Family::Slack);
    let (mut parts, body) = req.into_parts();
    let resign_needed = route.way == Way::Reverse && family.is_aws();
    let region_hint = if resign_needed {
        aws_sigv4::claimed_identity(header_str(&parts.headers, "authorization")).region
    } else {
        None
    };
    let len: Option<usize> = if resign_needed {
        parts
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
    } else {
        None
    };
    let out = if resign_needed {
        // The signature covers the body, so it must be read whole; a call too large to
        // re-sign is refused rather than sent with a signature the vendor would reject.
        let limit = app.config.server.max_body_bytes;
        if len.is_some_and(|l| l > limit) {
            return VendorError::too_large(limit).response(family, &new_id());
        }
        let bytes = match Limited::new(body, limit).collect().await {
            Ok(c) => c.to_bytes(),
            Err(_) => return VendorError::too_large(limit).response(family, &new_id()),
        };
        // A caller that must prove who it is does so on the request as it sent it, before
        // its head is rewritten for the upstream.
        if let Some(keys) = authenticate::keys_for(app, &route)
            && let Err(e) = authenticate::check(keys, &parts, &bytes)
        {
            app.metrics
                .refused
                .get_or_create(&RouteLabels {
                    route: "unauthenticated",
                })
                .inc();
            return e.response(family, &new_id());
        }
        if let Err(e) = route.upstream_head(&conn.peer_ip, &mut parts) {
            return plain(StatusCode::BAD_REQUEST, &format!("retention-proxy: bad request: {e}"));
        }
        let mut r = Request::from_parts(parts, full(bytes.clone()));
        r.headers_mut().insert(CONTENT_LENGTH, HeaderValue::from(bytes.len()));
        r.headers_mut().remove(http::header::TRANSFER_ENCODING);
        if let Err(e) = resign(app, &route, region_hint.as_deref(), &mut r, &bytes).await {
            return e.response(family, &new_id());
        }
        r
    } else {
        if let Err(e) = route.upstream_head(&conn.peer_ip, &mut parts) {
            return plain(StatusCode::BAD_REQUEST, &format!("retention-proxy: bad request: {e}"));
        }
        Request::from_parts(parts, ProxyBody::Streamed(body))
    };
    match tokio::time::timeout(app.config.upstreams.request_timeout, conn.upstream.send(out)).await {
        Ok(Ok(resp)) => client_response(resp),
        Ok(Err(e)) => {
            app.metrics
                .upstream_error(route.family.map_or("other", Family::label), e.kind());
            warn!(error = %e, upstream = %route.target.upstream, peer = %conn.peer, "pass-through upstream failed");
            VendorError::bad_gateway(format!("upstream {} failed: {e}", route.target.upstream))
                .response(family, &new_id())
        }
        Err(_) => {
            app.metrics
                .upstream_error(route.family.map_or("other", Family::label), "timeout");
            VendorError::gateway_timeout(format!("upstream {} did not answer in time", route.target.upstream))
                .response(family, &new_id())
        }
    }
}

fn client_response(resp: Response<Incoming>) -> Response<ProxyBody> {
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Response::from_parts(parts, ProxyBody::Streamed(body))
}
