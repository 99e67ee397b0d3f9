//! The admin listener: `/healthz`, `/readyz`, `/metrics`, `/v1/events`, `/v1/history`
//! ([`events`]), `/v1/chain` ([`chain`]), CloudTrail `LookupEvents` ([`lookup`]) and the audit
//! viewer under `/ui/` ([`ui`]). It reads the audit trail through the store's reading side and
//! never touches the request path's state.

pub mod chain;
pub mod events;
pub mod lookup;
pub mod metrics;
pub mod ui;

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;

use crate::audit::postgres::Shipping;
use crate::audit::{AuditError, AuditHandle, Store};
use crate::http::body::{ProxyBody, full, plain};
use metrics::Metrics;

/// How long `/readyz` waits for the audit writer's answer (a commit in progress, a lock
/// held elsewhere for up to the store's busy timeout).
const READY_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// What the admin listener needs.
pub struct Admin {
    /// `server.admin_token`.
    pub token: Option<String>,
    /// The audit writer (readiness, writer counters).
    pub audit: AuditHandle,
    /// The proxy's metrics.
    pub metrics: Arc<Metrics>,
    /// The store `/v1/events`, LookupEvents and the viewer read: the local log, or the
    /// fleet's central store when `[audit.central]` is set.
    pub store: Store,
    /// Shipping to the central store, when configured (readiness, metrics).
    pub shipping: Option<Arc<Shipping>>,
    /// The latest verification of the chain, for `/v1/chain`.
    pub chain: Arc<chain::ChainWatch>,
}

pub(crate) fn json_response(status: StatusCode, v: serde_json::Value) -> Response<ProxyBody> {
    let mut r = Response::new(full(v.to_string()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert("content-type", http::HeaderValue::from_static("application/json"));
    r
}

/// The admin token, when one is configured, as `Authorization: Bearer <token>` or — for AWS
/// clients of LookupEvents, which cannot send a bearer — as their session token
/// (`X-Amz-Security-Token`).
pub(crate) fn authorised<B>(admin: &Admin, req: &Request<B>) -> bool {
    let Some(want) = &admin.token else {
        return true;
    };
    let h = req.headers();
    let bearer = h
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let session = h.get("x-amz-security-token").and_then(|v| v.to_str().ok());
    [bearer, session]
        .into_iter()
        .flatten()
        .any(|got| constant_time_eq(want, got))
}

/// Compares digests of both strings, so the time taken does not depend on where they differ.
fn constant_time_eq(a: &str, b: &str) -> bool {
    use sha2::{Digest, Sha256};
    let (a, b) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn not_found() -> Response<ProxyBody> {
    plain(
        StatusCode::NOT_FOUND,
        "known paths: /healthz /readyz /metrics /v1/events /v1/events/{eventID} /v1/history /v1/chain /ui/",
    )
}

/// Serves one admin request.
pub async fn handle(admin: Arc<Admin>, req: Request<Incoming>) -> Response<ProxyBody> {
    if req.method() == Method::POST && req.uri().path() == "/" {
        return lookup::handle(admin, req).await;
    }
    if req.method() != Method::GET {
        return plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET is served here (and POST / for LookupEvents)",
        );
    }
    match req.uri().path() {
        "/healthz" => plain(StatusCode::OK, "ok"),
        "/readyz" => match tokio::time::timeout(READY_WAIT, admin.audit.probe()).await {
            Ok(Ok(())) => match admin.shipping.as_ref().and_then(|s| s.problem()) {
                None => plain(StatusCode::OK, "ready"),
                Some(why) => plain(StatusCode::SERVICE_UNAVAILABLE, &format!("not ready: {why}")),
            },
            Ok(Err(AuditError::Write(why))) => plain(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("not ready: the audit store cannot commit now: {why}"),
            ),
            Ok(Err(e)) => plain(StatusCode::SERVICE_UNAVAILABLE, &format!("not ready: {e}")),
            Err(_) => plain(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("not ready: the audit writer did not answer within {READY_WAIT:?}"),
            ),
        },
        "/metrics" => {
            if !authorised(&admin, &req) {
                return plain(StatusCode::UNAUTHORIZED, "admin_token required");
            }
            let mut text = admin.metrics.render(&admin.audit.stats);
            if let Some(s) = &admin.shipping {
                let eof = text.rfind("# EOF").unwrap_or(text.len());
                let mut central = String::new();
                s.render(&mut central);
                text.insert_str(eof, &central);
            }
            let mut r = Response::new(full(text));
            r.headers_mut().insert(
                "content-type",
                http::HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
            );
            r
        }
        "/ui" => ui::to_index(),
        p if p.starts_with("/ui/") => ui::serve(p),
        p if p.starts_with("/v1/") => {
            if !authorised(&admin, &req) {
                return json_response(StatusCode::UNAUTHORIZED, json!({"error": "admin_token required"}));
            }
            let q = req.uri().query().unwrap_or("");
            match p {
                "/v1/events" => events::serve(&admin, q).await,
                "/v1/history" => events::history(&admin, q).await,
                "/v1/chain" => json_response(StatusCode::OK, admin.chain.status()),
                p => match p.strip_prefix("/v1/events/") {
                    Some(id) if !id.contains('/') => events::one(&admin, id).await,
                    _ => not_found(),
                },
            }
        }
        _ => not_found(),
    }
}
