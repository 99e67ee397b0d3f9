//! The request path. One function per step, called in order from `handle`:
//! route → recognise → (pass through untouched) | read body → guard → record → forward → record outcome.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, HOST};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::Value;
use time::OffsetDateTime;
use tracing::warn;

use crate::audit::AuditHandle;
use crate::audit::query::format_time;
use crate::aws::{self, AwsCredentials};
use crate::config::{Config, FailMode, Scheme, Upstream};
use crate::errors::{VendorError, full, plain};
use crate::event::{self, Answer, CallFacts, Caller, FinalOutcome, Way};
use crate::guardrail::Verdict;
use crate::metrics::{CallLabels, Metrics, RouteLabels};
use crate::policy::{self, Judgement};
use crate::recognise::{self, Call, Family, Matched, RequestParts};
use crate::upstream::{Affinity, Dialer, ProxyBody};

/// Largest intercepted response the proxy reads to record it.
const MAX_RESPONSE_BYTES: usize = 8 * 1024 * 1024;

/// The connection a request arrived on.
#[derive(Clone)]
pub struct Conn {
    /// The client's address.
    pub peer: SocketAddr,
    /// The peer's IP as an `X-Forwarded-For` value, formatted once per connection.
    peer_ip: HeaderValue,
    /// The upstream connection this connection's streamed requests reuse.
    upstream: Arc<Affinity>,
    /// Set when the connection is an intercepted `CONNECT` tunnel.
    pub tunnel: Option<Arc<Tunnel>>,
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

/// An intercepted `CONNECT` tunnel: where it goes and how the client's TLS was negotiated.
#[derive(Debug, Clone)]
pub struct Tunnel {
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
    pub token_key: event::TokenKey,
    /// Leaf issuer for CONNECT interception, when `forward.ca_cert` is configured.
    pub interceptor: Option<crate::intercept::Interceptor>,
    /// Open-tunnel budget (`forward.max_tunnels`).
    pub tunnels: Arc<tokio::sync::Semaphore>,
    /// Proxy users for the forward proxy.
    pub users: crate::auth::ProxyUsers,
    /// The reverse-proxy upstreams, prepared.
    pub reverse: ReverseTargets,
}

/// An upstream with its URI scheme and authority worked out once (at start-up for the
/// reverse-proxy upstreams, per request in forward mode).
#[derive(Debug)]
pub struct Target {
    /// The upstream.
    pub upstream: Upstream,
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    /// The authority as a `Host` value.
    host: HeaderValue,
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
    pub fn new(up: &crate::config::UpstreamsConfig) -> Result<ReverseTargets, http::Error> {
        Ok(ReverseTargets {
            chime: Target::new(up.chime.clone())?,
            chime_messaging: Target::new(up.chime_messaging.clone())?,
            chime_identity: Target::new(up.chime_identity.clone())?,
            slack: Target::new(up.slack.clone())?,
        })
    }

    fn get(&self, f: Family) -> &Arc<Target> {
        match f {
            Family::Chime => &self.chime,
            Family::ChimeMessaging => &self.chime_messaging,
            Family::ChimeIdentity => &self.chime_identity,
            Family::Slack => &self.slack,
        }
    }
}

/// Where a request goes.
struct Route {
    way: Way,
    /// The vendor family, when the destination is a vendor we audit.
    family: Option<Family>,
    target: Arc<Target>,
    /// `Host` to send: the client's in forward mode, the upstream's in reverse mode.
    host: HeaderValue,
    /// Label for metrics.
    label: &'static str,
}

/// Serves one request, as [`handle_request`] does, behind a box: intercepted tunnels call it
/// again for their inner requests, and a future cannot contain itself.
pub fn handle(
    app: Arc<App>,
    conn: Conn,
    req: Request<Incoming>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Response<ProxyBody>> + Send>> {
    Box::pin(handle_request(app, conn, req))
}

/// Serves one request. Never fails: every error becomes a response.
///
/// Unboxed, for a connection's service: hyper keeps the request's future in one place per
/// connection, so a keep-alive client costs no allocation per request for it.
pub async fn handle_request(app: Arc<App>, mut conn: Conn, req: Request<Incoming>) -> Response<ProxyBody> {
    let peer = conn.peer;
    // The forward proxy (absolute-form and CONNECT) may require proxy authentication; inside
    // an intercepted tunnel the user who opened it is the user.
    let forward = req.method() == Method::CONNECT || req.uri().scheme().is_some();
    if let Some(t) = &conn.tunnel {
        conn.proxy_user = t.proxy_user.clone();
    } else if forward && app.users.enabled() {
        match app.users.check(req.headers()) {
            Ok(user) => conn.proxy_user = Some(user),
            Err(e) => {
                warn!(peer = %peer, error = %e, "proxy authentication failed");
                app.metrics
                    .refused
                    .get_or_create(&RouteLabels { route: "proxy_auth" })
                    .inc();
                let mut r = plain(
                    StatusCode::PROXY_AUTHENTICATION_REQUIRED,
                    &format!("retention-proxy: {e}"),
                );
                r.headers_mut().insert(
                    http::header::PROXY_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"retention-proxy\""),
                );
                return r;
            }
        }
    }
    if req.method() == Method::CONNECT {
        if conn.tunnel.is_some() {
            return plain(
                StatusCode::BAD_REQUEST,
                "retention-proxy: CONNECT inside a tunnel is not allowed",
            );
        }
        return Box::pin(crate::tunnel::connect(app, peer, conn.proxy_user, req)).await;
    }
    let route = match choose_route(&app, peer, conn.tunnel.as_deref(), &req) {
        Ok(r) => r,
        Err(resp) => {
            app.metrics.refused.get_or_create(&RouteLabels { route: "none" }).inc();
            return *resp;
        }
    };
    // A path that matches a retention call only once normalised "could mean two things": it is
    // intercepted (and refused), never streamed through unaudited.
    let matched = route.family.and_then(|f| {
        let (method, path) = (req.method(), req.uri().path());
        recognise::classify_any(f, method, path)
    });
    match matched {
        None => pass_through(&app, &conn, route, req).await,
        Some((m, odd_path)) => {
            // Boxed: the intercepted path's state is large, and every pass-through request
            // would otherwise carry (and move) room for it.
            Box::pin(intercept(app, &conn, route, m, odd_path, req)).await
        }
    }
}

fn choose_route<B>(
    app: &App,
    peer: SocketAddr,
    tunnel: Option<&Tunnel>,
    req: &Request<B>,
) -> Result<Route, Box<Response<ProxyBody>>> {
    let config = &app.config;
    let uri = req.uri();
    let bad_target = |e: http::Error| {
        Box::new(plain(
            StatusCode::BAD_REQUEST,
            &format!("retention-proxy: bad request target: {e}"),
        ))
    };
    if let Some(t) = tunnel {
        // Inside an intercepted tunnel the destination is the one CONNECT named (already
        // checked against allow_hosts), whatever the inner request line says.
        let upstream = config
            .forward
            .resolve
            .get(&t.host)
            .cloned()
            .unwrap_or_else(|| Upstream {
                scheme: Scheme::Https,
                host: t.host.clone(),
                port: t.port,
            });
        let host = match req.headers().get(HOST) {
            Some(h) => h.clone(),
            None => HeaderValue::from_str(&t.host).map_err(|e| bad_target(e.into()))?,
        };
        return Ok(Route {
            way: Way::Forward,
            family: vendor_family(config, &t.host, uri.path()),
            target: Target::new(upstream).map_err(bad_target)?,
            host,
            label: "intercept",
        });
    }
    if uri.scheme().is_some() {
        let host = uri.host().unwrap_or("").trim_end_matches('.').to_ascii_lowercase();
        let resolved = config.forward.resolve.get(&host).cloned();
        if host.is_empty() || !(config.forward.allows(&host) || resolved.is_some()) {
            warn!(host = %host, peer = %peer, "forward request to a host outside allow_hosts refused");
            return Err(Box::new(plain(
                StatusCode::FORBIDDEN,
                &format!("retention-proxy: host {host:?} is not in forward.allow_hosts"),
            )));
        }
        let upstream = resolved.unwrap_or_else(|| Upstream {
            scheme: Scheme::Https,
            host: host.clone(),
            port: match uri.port_u16() {
                None | Some(80) => 443,
                Some(p) => p,
            },
        });
        // RFC 9112 §3.2.2: an absolute-form target replaces any Host the client sent. Clients
        // sign the host they address, so the signature stays valid.
        let host_header = match uri.port_u16() {
            Some(p) => format!("{}:{p}", uri.host().unwrap_or(&host)),
            None => uri.host().unwrap_or(&host).to_string(),
        };
        return Ok(Route {
            way: Way::Forward,
            family: vendor_family(config, &host, uri.path()),
            target: Target::new(upstream).map_err(bad_target)?,
            host: HeaderValue::from_str(&host_header).map_err(|e| bad_target(e.into()))?,
            label: "forward",
        });
    }
    let path = uri.path();
    let Some(family) = recognise::route_family(path) else {
        return Err(Box::new(plain(
            StatusCode::NOT_FOUND,
            &format!(
                "retention-proxy: no route for {path:?}; known prefixes: {}",
                recognise::ROUTE_PREFIXES
            ),
        )));
    };
    let target = app.reverse.get(family).clone();
    Ok(Route {
        way: Way::Reverse,
        family: Some(family),
        host: target.host.clone(),
        target,
        label: family.label(),
    })
}

/// The vendor family of a forward-proxy destination: a Chime, Chime SDK or Slack API host by
/// name, or a configured `forward.intercept_hosts` host (a private endpoint) by path.
fn vendor_family(config: &Config, host: &str, path: &str) -> Option<Family> {
    recognise::family_for_host(host).or_else(|| {
        let h = host.trim_end_matches('.').to_ascii_lowercase();
        config
            .forward
            .intercept_hosts
            .contains(&h)
            .then(|| recognise::route_family(path))
            .flatten()
    })
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

/// Hop-by-hop headers (RFC 9110 §7.6.1), with the obsolete ones proxies still meet.
static HOP_BY_HOP: [HeaderName; 9] = [
    http::header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    http::header::PROXY_AUTHENTICATE,
    http::header::PROXY_AUTHORIZATION,
    http::header::TE,
    http::header::TRAILER,
    http::header::TRANSFER_ENCODING,
    http::header::UPGRADE,
];

/// The place of `name` in [`HOP_BY_HOP`]. One `match` on the name's text: most names differ
/// from all nine in length, and are passed over without comparing a byte.
fn hop_by_hop_index(name: &str) -> Option<usize> {
    match name {
        "connection" => Some(0),
        "keep-alive" => Some(1),
        "proxy-connection" => Some(2),
        "proxy-authenticate" => Some(3),
        "proxy-authorization" => Some(4),
        "te" => Some(5),
        "trailer" => Some(6),
        "transfer-encoding" => Some(7),
        "upgrade" => Some(8),
        _ => None,
    }
}

/// Removes hop-by-hop headers, including those the `Connection` header names. One pass over
/// the headers finds them; nothing is allocated unless `Connection` names another header.
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    let mut found = [false; HOP_BY_HOP.len()];
    let mut named: Vec<HeaderName> = Vec::new();
    for (name, value) in h.iter() {
        let Some(i) = hop_by_hop_index(name.as_str()) else {
            continue;
        };
        found[i] = true;
        if i == 0 {
            // `Connection`. `close` names no header, and `keep-alive` is removed anyway.
            for token in value.as_bytes().split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.is_empty() || token.eq_ignore_ascii_case(b"keep-alive") || token.eq_ignore_ascii_case(b"close")
                {
                    continue;
                }
                if let Ok(n) = HeaderName::from_bytes(token)
                    && hop_by_hop_index(n.as_str()).is_none()
                {
                    named.push(n);
                }
            }
        }
    }
    for (n, _) in HOP_BY_HOP.iter().zip(found).filter(|(_, f)| *f) {
        h.remove(n);
    }
    for n in named {
        h.remove(n);
    }
}

/// The client's address: the peer, or, when the peer is a trusted proxy, the nearest
/// untrusted address in `X-Forwarded-For`.
fn source_ip(config: &Config, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
    let trusted = &config.server.trusted_proxies;
    if !trusted.contains(&peer.ip()) {
        return peer.ip();
    }
    let chain: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    chain
        .into_iter()
        .rev()
        .find(|ip| !trusted.contains(ip))
        .unwrap_or(peer.ip())
}

fn append_forwarded_for(h: &mut HeaderMap, peer_ip: &HeaderValue) {
    const XFF: HeaderName = HeaderName::from_static("x-forwarded-for");
    if let http::header::Entry::Vacant(v) = h.entry(XFF) {
        v.insert(peer_ip.clone());
        return;
    }
    // Every X-Forwarded-For line the client sent is kept, in order, then our peer is added.
    let mut chain: Vec<String> = h
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect();
    chain.push(peer_ip.to_str().unwrap_or("unknown").to_string());
    if let Ok(v) = HeaderValue::from_str(&chain.join(", ")) {
        h.insert("x-forwarded-for", v);
    }
}

/// Turns the client's request head into the upstream's, in place (nothing copied): the
/// upstream's URI, HTTP/1.1, its Host, hop-by-hop headers removed, X-Forwarded-For appended,
/// and none of the server's extensions (an upgrade handle belongs to the client's connection).
fn upstream_head(route: &Route, peer_ip: &HeaderValue, parts: &mut http::request::Parts) -> Result<(), http::Error> {
    parts.uri = upstream_uri(&route.target, std::mem::take(&mut parts.uri))?;
    parts.version = Version::HTTP_11;
    parts.extensions.clear();
    strip_hop_by_hop(&mut parts.headers);
    append_forwarded_for(&mut parts.headers, peer_ip);
    parts.headers.insert(HOST, route.host.clone());
    Ok(())
}

/// Removes the client's signature and signs with the proxy's credentials (reverse mode, AWS).
fn resign<B>(
    app: &App,
    route: &Route,
    region_hint: Option<&str>,
    req: &mut Request<B>,
    body: &[u8],
) -> Result<(), VendorError> {
    let creds = app.credentials.as_ref().ok_or_else(|| {
        VendorError::internal("retention-proxy has no AWS credentials to re-sign this call (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a shared profile)")
    })?;
    for h in aws::SIGNING_HEADERS {
        req.headers_mut().remove(h);
    }
    let region = region_hint
        .map(str::to_string)
        .or_else(|| recognise::region_of_host(&route.target.upstream.host))
        .unwrap_or_else(|| "us-east-1".into());
    aws::resign(req, creds, &region, body).map_err(|e| VendorError::internal(e.to_string()))
}

fn client_response(resp: Response<Incoming>) -> Response<ProxyBody> {
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Response::from_parts(parts, ProxyBody::Streamed(body))
}

/// Streams a request we do not audit: no buffering (except an AWS body that must be
/// re-signed in reverse mode and fits the limit), no event.
async fn pass_through(app: &App, conn: &Conn, route: Route, req: Request<Incoming>) -> Response<ProxyBody> {
    app.metrics.passthrough(route.label);
    let family = route.family.unwrap_or(Family::Slack);
    let (mut parts, body) = req.into_parts();
    let resign_needed = route.way == Way::Reverse && family.is_aws();
    let region_hint = if resign_needed {
        aws::claimed_identity(header_str(&parts.headers, "authorization")).region
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
    if let Err(e) = upstream_head(&route, &conn.peer_ip, &mut parts) {
        return plain(StatusCode::BAD_REQUEST, &format!("retention-proxy: bad request: {e}"));
    }
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
        let mut r = Request::from_parts(parts, full(bytes.clone()));
        r.headers_mut().insert(CONTENT_LENGTH, HeaderValue::from(bytes.len()));
        r.headers_mut().remove(http::header::TRANSFER_ENCODING);
        if let Err(e) = resign(app, &route, region_hint.as_deref(), &mut r, &bytes) {
            return e.response(family, &new_id());
        }
        r
    } else {
        Request::from_parts(parts, ProxyBody::Streamed(body))
    };
    match tokio::time::timeout(app.config.upstreams.request_timeout, conn.upstream.send(out)).await {
        Ok(Ok(resp)) => client_response(resp),
        Ok(Err(e)) => {
            warn!(error = %e, upstream = %route.target.upstream, peer = %conn.peer, "pass-through upstream failed");
            VendorError::bad_gateway(format!("upstream {} failed: {e}", route.target.upstream))
                .response(family, &new_id())
        }
        Err(_) => VendorError::gateway_timeout(format!("upstream {} did not answer in time", route.target.upstream))
            .response(family, &new_id()),
    }
}

/// A new event or request id. Time-ordered (UUIDv7), so the audit store's `event_id` index
/// grows at its end instead of dirtying a random page per record.
fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// A warning about an intercepted call (`$facts: &CallFacts`): it names the call's operation,
/// event and client, then the fields and message given. These are fields of each warning
/// rather than of a span around the call: a span's fields are formatted when it is created,
/// for every call, and a warning is rare.
macro_rules! warn_call {
    ($facts:expr, $($rest:tt)+) => {
        warn!(
            operation = $facts.op.name(),
            event_id = %$facts.event_id,
            client = %$facts.caller.source_ip,
            $($rest)+
        )
    };
}

/// An intercepted call: read → recognise → guard → record → forward → record outcome.
async fn intercept(
    app: Arc<App>,
    conn: &Conn,
    route: Route,
    m: Matched,
    odd_path: bool,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let started = Instant::now();
    let peer = conn.peer;
    let family = m.op.family();
    let (parts, body) = req.into_parts();
    let now = OffsetDateTime::now_utc();
    let claimed = aws::claimed_identity(header_str(&parts.headers, "authorization"));

    // Who is calling (before the body: a too-large body is still attributed).
    let mut caller = Caller {
        access_key_id: if family.is_aws() {
            claimed.access_key_id.clone()
        } else {
            None
        },
        chime_bearer: header_str(&parts.headers, "x-amz-chime-bearer").map(str::to_string),
        token_fingerprint: None,
        token_type: None,
        kind: String::new(),
        verified: false,
        source_ip: source_ip(&app.config, peer, &parts.headers).to_string(),
        user_agent: header_str(&parts.headers, "user-agent").map(str::to_string),
        proxy_user: conn.proxy_user.clone(),
    };
    let mut facts = CallFacts {
        event_id: new_id(),
        event_time: format_time(now),
        op: m.op,
        way: route.way,
        region: if family.is_aws() {
            claimed.region.clone().or_else(|| {
                let vendor_host = route.host.to_str().unwrap_or("").split(':').next().unwrap_or("");
                recognise::region_of_host(vendor_host)
                    .or_else(|| recognise::region_of_host(&route.target.upstream.host))
            })
        } else {
            None
        },
        caller: caller.clone(),
        invocation_id: header_str(&parts.headers, "amz-sdk-invocation-id").map(str::to_string),
        attempt: event::parse_attempt(header_str(&parts.headers, "amz-sdk-request")),
        proxy_instance: app.config.audit.proxy_instance.clone(),
        tls: conn.tunnel.as_ref().map(|t| {
            serde_json::json!({
                "tlsVersion": t.tls_version,
                "cipherSuite": t.cipher_suite,
                "clientProvidedHostHeader": header_str(&parts.headers, "host").unwrap_or(&t.host),
            })
        }),
    };

    // 1. Read the body, bounded.
    let limit = app.config.server.max_body_bytes;
    let declared: Option<u64> = header_str(&parts.headers, "content-length").and_then(|v| v.parse().ok());
    let body = if declared.is_some_and(|l| l > limit as u64) {
        None
    } else {
        match Limited::new(body, limit).collect().await {
            Ok(c) => Some(c.to_bytes()),
            Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => None,
            Err(e) => {
                warn_call!(facts, error = %e, "client body could not be read");
                return plain(
                    StatusCode::BAD_REQUEST,
                    "retention-proxy: the request body could not be read",
                );
            }
        }
    };

    // 2. Recognise.
    let rparts = RequestParts {
        method: &parts.method,
        query: parts.uri.query(),
        headers: &parts.headers,
    };
    let (call, problem) = policy::read(&m, odd_path, &rparts, body.as_deref(), limit);
    if let Some(tok) = &call.slack_token {
        caller.token_fingerprint = Some(app.token_key.fingerprint(tok));
        caller.token_type = Some(event::token_type(tok));
        caller.kind = if tok.starts_with("xoxb") {
            "SlackBot".into()
        } else {
            "SlackUser".into()
        };
    } else if family.is_aws() {
        caller.kind = aws::identity_type(caller.access_key_id.as_deref()).into();
    } else {
        caller.kind = "Unknown".into();
    }
    caller.chime_bearer = call.chime_bearer.clone().or(caller.chime_bearer);
    facts.caller = caller;
    let previous: Vec<_> = call
        .changes
        .iter()
        .map(|c| app.audit.previous(c.target, &c.resource))
        .collect();

    // 3. Judge: refuse what the vendor would refuse, what cannot be read with certainty, and
    //    what breaks an enforcing guardrail.
    let principals = facts.caller.principals();
    let verdict = match policy::judge(&app.config.guardrails, &call, problem, &principals) {
        Judgement::Forward(v) => v,
        Judgement::Refuse {
            outcome,
            verdict,
            error,
        } => {
            return refuse(&app, &facts, &call, &previous, &verdict, outcome, error, started).await;
        }
    };

    // 4. Record, durably, before anything leaves.
    let request = event::request_record(&facts, &call, &previous, &verdict, None);
    if let Err(e) = app.audit.append(request).await {
        match app.config.audit.fail_mode {
            FailMode::Closed => {
                warn_call!(facts, error = %e, "audit commit failed; call refused (fail closed)");
                count(&app, &facts, &verdict, "audit_unavailable", started);
                return VendorError::audit_unavailable().response(family, &facts.event_id);
            }
            FailMode::Open => {
                warn_call!(facts, error = %e, "audit commit failed; forwarding anyway (fail_mode = open)")
            }
        }
    }

    // 5. Forward.
    let body = body.unwrap_or_default();
    let answer = forward(&app, conn, &route, parts, &claimed, body).await;

    // 6. Record the outcome, then answer.
    let (resp, answer) = match answer {
        Ok((resp, bytes)) => {
            let a = describe_answer(family, &resp, &bytes, started);
            let (mut rp, _) = resp.into_parts();
            strip_hop_by_hop(&mut rp.headers);
            rp.headers.remove(CONTENT_LENGTH);
            (Response::from_parts(rp, full(bytes)), a)
        }
        Err(err) => {
            let a = Answer {
                outcome: "upstream_error",
                status: err.status_for(family).as_u16(),
                request_id: None,
                response: Value::Null,
                error_code: Some(err.code(family).to_string()),
                error_message: Some(err.message.clone()),
                duration_ms: started.elapsed().as_millis() as u64,
            };
            (err.response(family, &facts.event_id), a)
        }
    };
    let observed = recognise::observed_in_response(&call, answer.status, &answer.response);
    let outcome = event::outcome_record(&facts, &call, &answer, observed, format_time(OffsetDateTime::now_utc()));
    if let Err(e) = app.audit.append(outcome).await {
        warn_call!(facts, error = %e, "outcome could not be recorded; the event stays 'unknown'");
    }
    count(&app, &facts, &verdict, answer.outcome, started);
    resp
}

fn count(app: &App, f: &CallFacts, v: &Verdict, outcome: &'static str, started: Instant) {
    let family = f.op.family().label();
    app.metrics
        .calls
        .get_or_create(&CallLabels {
            family,
            operation: f.op.name(),
            decision: v.decision.as_str(),
            outcome,
        })
        .inc();
    app.metrics
        .call_seconds
        .get_or_create(&RouteLabels { route: family })
        .observe(started.elapsed().as_secs_f64());
}

/// Answers a call the proxy refuses itself, after recording it.
#[allow(clippy::too_many_arguments)]
async fn refuse(
    app: &App,
    f: &CallFacts,
    call: &Call,
    previous: &[Option<crate::retention::RetentionValue>],
    verdict: &Verdict,
    outcome: &'static str,
    err: VendorError,
    started: Instant,
) -> Response<ProxyBody> {
    let family = f.op.family();
    let fin = FinalOutcome {
        outcome,
        status: err.status_for(family).as_u16(),
        error_code: err.code(family),
        error_message: &err.message,
        duration_ms: started.elapsed().as_millis() as u64,
    };
    let record = event::request_record(f, call, previous, verdict, Some(fin));
    if let Err(e) = app.audit.append(record).await {
        // The call is refused either way; only its record is missing.
        warn_call!(f, error = %e, outcome, "a refused call could not be recorded");
    }
    count(app, f, verdict, outcome, started);
    err.response(family, &f.event_id)
}

async fn forward(
    app: &App,
    conn: &Conn,
    route: &Route,
    mut parts: http::request::Parts,
    claimed: &aws::ClaimedIdentity,
    body: Bytes,
) -> Result<(Response<()>, Bytes), VendorError> {
    let family = route.family.unwrap_or(Family::Slack);
    upstream_head(route, &conn.peer_ip, &mut parts).map_err(|e| VendorError::bad_request(e.to_string()))?;
    let mut out = Request::from_parts(parts, full(body.clone()));
    out.headers_mut().insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    if route.way == Way::Reverse && family.is_aws() {
        resign(app, route, claimed.region.as_deref(), &mut out, &body)?;
    }
    let timeout = app.config.upstreams.request_timeout;
    let upstream = &route.target.upstream;
    let fut = async {
        let resp = conn
            .upstream
            .send(out)
            .await
            .map_err(|e| VendorError::bad_gateway(format!("upstream {upstream} failed: {e}")))?;
        let (rp, rb) = resp.into_parts();
        let bytes = Limited::new(rb, MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| VendorError::bad_gateway(format!("upstream {upstream} response could not be read: {e}")))?
            .to_bytes();
        Ok((Response::from_parts(rp, ()), bytes))
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(VendorError::gateway_timeout(format!(
            "upstream {} did not answer within {timeout:?}",
            route.target.upstream
        ))),
    }
}

fn describe_answer(family: Family, resp: &Response<()>, bytes: &Bytes, started: Instant) -> Answer {
    let status = resp.status().as_u16();
    let h = resp.headers();
    let response: Value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(bytes).unwrap_or(Value::Null)
    };
    let (request_id, error_code, error_message) = if family.is_aws() {
        let rid = header_str(h, "x-amzn-requestid").map(str::to_string);
        let code = if status >= 400 {
            header_str(h, "x-amzn-errortype")
                .map(|t| t.split(':').next().unwrap_or(t).to_string())
                .or_else(|| {
                    response
                        .get("__type")
                        .and_then(Value::as_str)
                        .map(|t| t.rsplit('#').next().unwrap_or(t).to_string())
                })
                .or_else(|| response.get("Code").and_then(Value::as_str).map(str::to_string))
                .or_else(|| Some(status.to_string()))
        } else {
            None
        };
        let msg = if status >= 400 {
            response
                .get("Message")
                .or_else(|| response.get("message"))
                .and_then(Value::as_str)
                .map(str::to_string)
        } else {
            None
        };
        (rid, code, msg)
    } else {
        let rid = header_str(h, "x-slack-req-id").map(str::to_string);
        let code = if response.get("ok") == Some(&Value::Bool(false)) {
            response.get("error").and_then(Value::as_str).map(str::to_string)
        } else if status >= 400 {
            Some(status.to_string())
        } else {
            None
        };
        (rid, code, None)
    };
    Answer {
        outcome: "forwarded",
        status,
        request_id,
        response,
        error_code,
        error_message,
        duration_ms: started.elapsed().as_millis() as u64,
    }
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

    #[test]
    fn the_hop_by_hop_match_and_list_agree() {
        // `strip_hop_by_hop` finds a name by the match and removes it by the list's entry.
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_by_hop_index(name.as_str()), Some(i), "{name}");
        }
        for other in ["host", "x-forwarded-for", "content-length", "connections", "t"] {
            assert_eq!(hop_by_hop_index(other), None, "{other}");
        }
    }

    #[test]
    fn every_hop_by_hop_header_is_removed_whatever_its_case_or_count() {
        let mut h = HeaderMap::new();
        for name in &HOP_BY_HOP {
            h.append(name.clone(), HeaderValue::from_static("x"));
            h.append(name.clone(), HeaderValue::from_static("y"));
        }
        // A Connection value naming headers in any case, with empty and padded tokens.
        h.append(http::header::CONNECTION, HeaderValue::from_static(" ,X-A ,, x-b,TE"));
        h.insert("x-a", HeaderValue::from_static("1"));
        h.insert("x-b", HeaderValue::from_static("2"));
        h.insert("x-kept", HeaderValue::from_static("3"));
        strip_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["x-kept"]);
    }

    #[test]
    fn hop_by_hop_headers_and_the_ones_connection_names_are_removed() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("keep-alive, X-Secret, close"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("content-type", HeaderValue::from_static("application/json"));
        strip_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["content-type"]);
    }
}
