//! The admin listener: `/healthz`, `/readyz`, `/metrics`, `/v1/events`.

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;

use crate::audit::query::{self, Filter};
use crate::errors::{full, plain};
use crate::proxy::App;
use crate::upstream::ProxyBody;

fn json_response(status: StatusCode, v: serde_json::Value) -> Response<ProxyBody> {
    let mut r = Response::new(full(v.to_string()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert("content-type", http::HeaderValue::from_static("application/json"));
    r
}

/// The admin token, when one is configured, as `Authorization: Bearer <token>` or — for AWS
/// clients of LookupEvents, which cannot send a bearer — as their session token
/// (`X-Amz-Security-Token`).
pub(crate) fn authorised<B>(app: &App, req: &Request<B>) -> bool {
    let Some(want) = &app.config.server.admin_token else {
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

/// Serves one admin request.
pub async fn handle(app: Arc<App>, req: Request<Incoming>) -> Response<ProxyBody> {
    if req.method() == Method::POST && req.uri().path() == "/" {
        return crate::lookup::handle(app, req).await;
    }
    if req.method() != Method::GET {
        return plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET is served here (and POST / for LookupEvents)",
        );
    }
    match req.uri().path() {
        "/healthz" => plain(StatusCode::OK, "ok"),
        "/readyz" => match app.audit.probe().await {
            Ok(()) => plain(StatusCode::OK, "ready"),
            Err(e) => plain(StatusCode::SERVICE_UNAVAILABLE, &format!("not ready: {e}")),
        },
        "/metrics" => {
            if !authorised(&app, &req) {
                return plain(StatusCode::UNAUTHORIZED, "admin_token required");
            }
            let mut r = Response::new(full(app.metrics.render(&app.audit.stats)));
            r.headers_mut().insert(
                "content-type",
                http::HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
            );
            r
        }
        "/v1/events" => {
            if !authorised(&app, &req) {
                return json_response(StatusCode::UNAUTHORIZED, json!({"error": "admin_token required"}));
            }
            events(&app, req.uri().query().unwrap_or("")).await
        }
        _ => plain(
            StatusCode::NOT_FOUND,
            "known paths: /healthz /readyz /metrics /v1/events",
        ),
    }
}

async fn events(app: &App, q: &str) -> Response<ProxyBody> {
    let now = time::OffsetDateTime::now_utc();
    let mut f = Filter {
        limit: Some(100),
        ..Filter::default()
    };
    for (k, v) in form_urlencoded::parse(q.as_bytes()) {
        let v = v.into_owned();
        let bad = |m: String| json_response(StatusCode::BAD_REQUEST, json!({"error": m}));
        match k.as_ref() {
            "since" => match query::parse_time(&v, now) {
                Ok(t) => f.since = Some(t),
                Err(e) => return bad(e),
            },
            "until" => match query::parse_time(&v, now) {
                Ok(t) => f.until = Some(t),
                Err(e) => return bad(e),
            },
            "event_name" => f.event_name = Some(v),
            "source" => f.source = Some(v),
            "actor" => f.actor = Some(v),
            "resource" => f.resource = Some(v),
            "decision" => f.decision = Some(v),
            "limit" => match v.parse::<u64>() {
                Ok(n) if (1..=1000).contains(&n) => f.limit = Some(n),
                _ => return bad(format!("limit {v:?} must be a number from 1 to 1000")),
            },
            "cursor" => match v.parse::<u64>() {
                Ok(n) => f.after_seq = Some(n),
                Err(_) => return bad(format!("cursor {v:?} is not a cursor this API returned")),
            },
            other => return bad(format!("unknown parameter {other:?}")),
        }
    }
    let path = app.config.audit.path.clone();
    let limit = f.limit.unwrap_or(100);
    let res = tokio::task::spawn_blocking(move || {
        let conn = crate::audit::sqlite::open_read_only(&path)?;
        query::query(&conn, &f)
    })
    .await;
    match res {
        Ok(Ok(events)) => {
            let next = if events.len() as u64 == limit {
                events
                    .last()
                    .and_then(|e| e.get("seq"))
                    .and_then(|s| s.as_u64())
                    .map(|s| s.to_string())
            } else {
                None
            };
            json_response(StatusCode::OK, json!({"events": events, "next_cursor": next}))
        }
        Ok(Err(e)) => json_response(StatusCode::SERVICE_UNAVAILABLE, json!({"error": e.to_string()})),
        Err(e) => json_response(StatusCode::INTERNAL_SERVER_ERROR, json!({"error": e.to_string()})),
    }
}
