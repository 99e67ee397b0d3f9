//! `GET /v1/events`: the audit trail as JSON, filtered as `audit query` filters it.

use http::{Response, StatusCode};
use serde_json::json;

use super::{Admin, json_response};
use crate::audit::query::{self, Filter};
use crate::http::body::ProxyBody;

/// Serves `GET /v1/events?…`: filtered events, oldest first, with a cursor.
pub async fn serve(admin: &Admin, q: &str) -> Response<ProxyBody> {
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
    let path = admin.db.clone();
    let limit = f.limit.unwrap_or(100);
    let res = tokio::task::spawn_blocking(move || crate::audit::open_reader(&path)?.query(&f)).await;
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
