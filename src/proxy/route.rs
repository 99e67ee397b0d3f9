//! Where a request goes: the reverse-proxy upstream its path names, the host an
//! absolute-form target or a terminated tunnel names, and whether that destination is a
//! vendor whose retention calls are audited.

use std::net::SocketAddr;
use std::sync::Arc;

use http::header::HOST;
use http::{HeaderValue, Request, Response, StatusCode, Uri, Version};
use tracing::warn;

use super::state::{ReverseTargets, Target, TlsTunnel};
use crate::audit::event::Way;
use crate::config::Config;
use crate::http::body::{ProxyBody, plain};
use crate::http::egress;
use crate::http::headers::{append_forwarded_for, normalise_host, strip_hop_by_hop};
use crate::vendors::{self, Family};

/// Where a request goes.
pub struct Route {
    /// Reverse proxy or forward proxy.
    pub way: Way,
    /// The vendor family, when the destination is a vendor we audit.
    pub family: Option<Family>,
    /// The upstream.
    pub target: Arc<Target>,
    /// `Host` to send: the client's in forward mode, the upstream's in reverse mode.
    pub host: HeaderValue,
    /// Label for metrics.
    pub label: &'static str,
}

impl Route {
    /// Turns the client's request head into the upstream's, in place (nothing copied): the
    /// upstream's URI, HTTP/1.1, its Host, hop-by-hop headers removed, X-Forwarded-For
    /// appended, and none of the server's extensions (an upgrade handle belongs to the
    /// client's connection).
    pub fn upstream_head(&self, peer_ip: &HeaderValue, parts: &mut http::request::Parts) -> Result<(), http::Error> {
        parts.uri = upstream_uri(&self.target, std::mem::take(&mut parts.uri))?;
        parts.version = Version::HTTP_11;
        parts.extensions.clear();
        strip_hop_by_hop(&mut parts.headers);
        append_forwarded_for(&mut parts.headers, peer_ip);
        parts.headers.insert(HOST, self.host.clone());
        Ok(())
    }
}

fn bad_target(e: http::Error) -> Box<Response<ProxyBody>> {
    Box::new(plain(
        StatusCode::BAD_REQUEST,
        &format!("retention-proxy: bad request target: {e}"),
    ))
}

/// Chooses the route of a request: inside a terminated tunnel, by absolute-form target
/// (forward proxy), or by path prefix (reverse proxy). An answer instead when there is none.
pub fn choose<B>(
    config: &Config,
    reverse: &ReverseTargets,
    peer: SocketAddr,
    tunnel: Option<&TlsTunnel>,
    req: &Request<B>,
) -> Result<Route, Box<Response<ProxyBody>>> {
    let uri = req.uri();
    if let Some(t) = tunnel {
        // Inside a terminated tunnel the destination is the one CONNECT named (already
        // checked against allow_hosts), whatever the inner request line says.
        let host = match req.headers().get(HOST) {
            Some(h) => h.clone(),
            None => HeaderValue::from_str(&t.host).map_err(|e| bad_target(e.into()))?,
        };
        return Ok(Route {
            way: Way::Forward,
            family: vendor_family(config, &t.host, uri.path()),
            target: Target::new(config.forward.upstream_for(&t.host, t.port)).map_err(bad_target)?,
            host,
            label: "intercept",
        });
    }
    if let Some(scheme) = uri.scheme_str() {
        if scheme != "http" {
            return Err(Box::new(plain(
                StatusCode::BAD_REQUEST,
                &format!(
                    "retention-proxy: an absolute-form target must use http:// ({scheme}:// is not forwarded; use CONNECT for TLS)"
                ),
            )));
        }
        return forward_route(config, peer, uri);
    }
    let path = uri.path();
    let Some(family) = vendors::route_family(path) else {
        return Err(Box::new(plain(
            StatusCode::NOT_FOUND,
            &format!(
                "retention-proxy: no route for {path:?}; known prefixes: {}",
                vendors::ROUTE_PREFIXES
            ),
        )));
    };
    let target = reverse.get(family).clone();
    Ok(Route {
        way: Way::Reverse,
        family: Some(family),
        host: target.host.clone(),
        target,
        label: family.label(),
    })
}

/// An absolute-form target: a host in `forward.allow_hosts` (or `forward.resolve`).
fn forward_route(config: &Config, peer: SocketAddr, uri: &Uri) -> Result<Route, Box<Response<ProxyBody>>> {
    let host = normalise_host(uri.host().unwrap_or(""));
    if host.is_empty() || !(config.forward.allows(&host) || config.forward.resolve.contains_key(&host)) {
        warn!(host = %host, peer = %peer, "forward request to a host outside allow_hosts refused");
        return Err(Box::new(plain(
            StatusCode::FORBIDDEN,
            &format!("retention-proxy: host {host:?} is not in forward.allow_hosts"),
        )));
    }
    check_literal(config, peer, &host)?;
    let port = match uri.port_u16() {
        None | Some(80) => 443,
        Some(p) => p,
    };
    // RFC 9112 §3.2.2: an absolute-form target replaces any Host the client sent. Clients
    // sign the host they address, so the signature stays valid.
    let host_header = match uri.port_u16() {
        Some(p) => format!("{}:{p}", uri.host().unwrap_or(&host)),
        None => uri.host().unwrap_or(&host).to_string(),
    };
    Ok(Route {
        way: Way::Forward,
        family: vendor_family(config, &host, uri.path()),
        target: Target::new(config.forward.upstream_for(&host, port)).map_err(bad_target)?,
        host: HeaderValue::from_str(&host_header).map_err(|e| bad_target(e.into()))?,
        label: "forward",
    })
}

/// Refuses an IP-literal forward target that is an internal address (loopback, private,
/// link-local, shared, unspecified, metadata) unless it is a `[forward.resolve]` entry. Names
/// are checked when they are resolved (by the listener, and by the upstream connector).
fn check_literal(config: &Config, peer: SocketAddr, host: &str) -> Result<(), Box<Response<ProxyBody>>> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let Ok(ip) = bare.parse::<std::net::IpAddr>() else {
        return Ok(());
    };
    if config.forward.resolve.contains_key(host) {
        return Ok(());
    }
    egress::check(host, ip).map_err(|e| {
        warn!(host = %host, peer = %peer, error = %e, "forward request to an internal address refused");
        Box::new(plain(StatusCode::FORBIDDEN, &format!("retention-proxy: {e}")))
    })
}

/// The vendor family of a forward-proxy destination: a Chime, Chime SDK or Slack API host by
/// name, or a configured `forward.intercept_hosts` host (a private endpoint) by path.
fn vendor_family(config: &Config, host: &str, path: &str) -> Option<Family> {
    vendors::family_for_host(host).or_else(|| {
        let h = normalise_host(host);
        config
            .forward
            .intercept_hosts
            .contains(&h)
            .then(|| vendors::route_family(path))
            .flatten()
    })
}

/// The client's path and query (moved, not re-parsed) on the upstream's scheme and authority.
fn upstream_uri(target: &Target, original: Uri) -> Result<Uri, http::Error> {
    let mut p = original.into_parts();
    p.scheme = Some(target.scheme.clone());
    p.authority = Some(target.authority.clone());
    if p.path_and_query.is_none() {
        p.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    Ok(Uri::from_parts(p)?)
}
