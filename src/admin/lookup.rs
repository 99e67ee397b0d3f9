//! A CloudTrail `LookupEvents`-compatible endpoint on the admin listener (JSON 1.1 protocol),
//! so `aws cloudtrail lookup-events --endpoint-url http://<admin>`, boto3's cloudtrail client
//! and the AWS SDK for JavaScript v3's `CloudTrailClient` read the audit log. Events come
//! newest first, as CloudTrail returns them.
//!
//! The admin token is checked before anything else about the request: a caller without it
//! learns nothing, not even which operations are served.

use std::sync::Arc;

use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::{Value, json};

use super::{Admin, authorised};
use crate::audit::export::cloudtrail_record;
use crate::audit::query::{self, Filter};
use crate::http::body::{ProxyBody, full};

/// The `X-Amz-Target` values AWS SDKs send for LookupEvents: botocore (boto3, the AWS CLI) and
/// the Java SDKs prefix the full target namespace; the Smithy-generated SDKs (JavaScript v3,
/// Go v2, Rust, …) send the service shape name alone.
const TARGETS: [&str; 2] = [
    "com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.LookupEvents",
    "CloudTrail_20131101.LookupEvents",
];

fn error(status: StatusCode, code: &str, message: &str) -> Response<ProxyBody> {
    let mut r = Response::new(full(json!({"__type": code, "message": message}).to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/x-amz-json-1.1"),
    );
    if let Ok(v) = http::HeaderValue::from_str(code) {
        r.headers_mut().insert("x-amzn-ErrorType", v);
    }
    r
}

/// Epoch seconds (as AWS clients send them, with microseconds) to the audit log's whole
/// milliseconds: `floor` for an inclusive end, `ceil` for a start, each with half a
/// microsecond of allowance so that a float such as 1795330225.735 still means .735.
fn epoch_ms(v: &Value, end: bool) -> Option<i64> {
    let ms = v.as_f64().filter(|s| s.is_finite())? * 1000.0;
    Some(if end {
        (ms + 0.0005).floor()
    } else {
        (ms - 0.0005).ceil()
    } as i64)
}

fn ms_to_time(ms: i64) -> Option<String> {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000).ok()?;
    Some(query::format_time(t))
}

/// Serves one LookupEvents call.
pub async fn handle(admin: Arc<Admin>, req: Request<Incoming>) -> Response<ProxyBody> {
    if !authorised(&admin, &req) {
        return error(
            StatusCode::FORBIDDEN,
            "AccessDeniedException",
            "the admin token is required (as the session token)",
        );
    }
    let target = req
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !TARGETS.contains(&target) {
        return error(
            StatusCode::BAD_REQUEST,
            "UnknownOperationException",
            "only LookupEvents is served here",
        );
    }
    let body = match Limited::new(req.into_body(), 64 * 1024).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "InvalidParameterException",
                "request body too large",
            );
        }
    };
    let input: Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(&body) {
            Ok(v @ Value::Object(_)) => v,
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "SerializationException",
                    "the body is not a JSON object",
                );
            }
        }
    };
    let filter = match to_filter(&input) {
        Ok(f) => f,
        Err((code, msg)) => return error(StatusCode::BAD_REQUEST, code, &msg),
    };
    // Only management events are recorded; asking for Insights events finds none.
    if input.get("EventCategory").and_then(Value::as_str) == Some("insight") {
        let mut r = Response::new(full(json!({"Events": []}).to_string()));
        r.headers_mut().insert(
            "content-type",
            http::HeaderValue::from_static("application/x-amz-json-1.1"),
        );
        return r;
    }
    let limit = filter.limit.unwrap_or(50);
    let store = admin.store.clone();
    let res = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        crate::audit::open_reader(&store)?.events(&filter, &mut |seq, e| {
            out.push((seq, e));
            Ok(())
        })?;
        Ok::<_, crate::audit::AuditError>(out)
    })
    .await;
    let events = match res {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalServerException",
                &e.to_string(),
            );
        }
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalServerException",
                &e.to_string(),
            );
        }
    };
    let next = (events.len() as u64 == limit)
        .then(|| events.last().map(|(s, _)| s.to_string()))
        .flatten();
    let out: Vec<Value> = events.into_iter().map(|(_, e)| lookup_event(e)).collect();
    let mut body = json!({ "Events": out });
    if let Some(n) = next {
        body["NextToken"] = json!(n);
    }
    let mut r = Response::new(full(body.to_string()));
    r.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/x-amz-json-1.1"),
    );
    r
}

fn to_filter(input: &Value) -> Result<Filter, (&'static str, String)> {
    let mut f = Filter {
        newest_first: true,
        ..Filter::default()
    };
    let bad = |m: String| ("InvalidLookupAttributesException", m);
    if let Some(attrs) = input.get("LookupAttributes") {
        let attrs = attrs
            .as_array()
            .ok_or_else(|| bad("LookupAttributes must be a list".into()))?;
        if attrs.len() > 1 {
            return Err(bad("You cannot specify more than one lookup attribute.".into()));
        }
        for a in attrs {
            let key = a.get("AttributeKey").and_then(Value::as_str).unwrap_or("");
            let value = a
                .get("AttributeValue")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            match key {
                "EventName" => f.event_name = Some(value),
                "EventSource" => f.source = Some(value),
                "Username" => f.user_name = Some(value),
                "AccessKeyId" => f.access_key_id = Some(value),
                "ResourceName" => f.resource = Some(value),
                "EventId" => f.event_id = Some(value),
                "ReadOnly" => match value.as_str() {
                    "true" => f.read_only = Some(true),
                    "false" => f.read_only = Some(false),
                    other => return Err(bad(format!("ReadOnly must be true or false, got {other:?}"))),
                },
                "ResourceType" | "EventCategory" => {
                    return Err(bad(format!(
                        "the lookup attribute {key} is not supported by retention-proxy"
                    )));
                }
                other => return Err(bad(format!("{other:?} is not a lookup attribute"))),
            }
        }
    }
    let bad_time = |k: &str| ("InvalidTimeRangeException", format!("{k} is not a time"));
    if let Some(t) = input.get("StartTime") {
        f.since = Some(
            epoch_ms(t, false)
                .and_then(ms_to_time)
                .ok_or_else(|| bad_time("StartTime"))?,
        );
    }
    if let Some(t) = input.get("EndTime") {
        // EndTime is inclusive; the filter's `until` is exclusive: one millisecond later.
        f.until = Some(
            epoch_ms(t, true)
                .and_then(|ms| ms_to_time(ms + 1))
                .ok_or_else(|| bad_time("EndTime"))?,
        );
    }
    if let (Some(a), Some(b)) = (&f.since, &f.until)
        && a > b
    {
        return Err(("InvalidTimeRangeException", "StartTime is after EndTime".into()));
    }
    match input.get("MaxResults") {
        None => f.limit = Some(50),
        Some(v) => match v.as_u64() {
            Some(n) if (1..=50).contains(&n) => f.limit = Some(n),
            _ => {
                return Err((
                    "InvalidMaxResultsException",
                    "MaxResults must be between 1 and 50".into(),
                ));
            }
        },
    }
    if let Some(t) = input.get("NextToken") {
        let seq = t.as_str().and_then(|s| s.parse::<u64>().ok());
        f.before_seq = Some(seq.ok_or((
            "InvalidNextTokenException",
            "NextToken is not one this endpoint returned".to_string(),
        ))?);
    }
    Ok(f)
}

fn lookup_event(e: Value) -> Value {
    let time = e
        .get("eventTime")
        .and_then(Value::as_str)
        .and_then(|t| time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok())
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as f64 / 1000.0);
    let resources: Vec<Value> = e
        .get("resources")
        .and_then(Value::as_array)
        .map(|rs| {
            rs.iter()
                .map(|r| json!({"ResourceType": r.get("type"), "ResourceName": r.get("id")}))
                .collect()
        })
        .unwrap_or_default();
    let field = |k: &str| e.get(k).cloned();
    let (id, name, source) = (field("eventID"), field("eventName"), field("eventSource"));
    let read_only = e.get("readOnly").and_then(Value::as_bool).map(|b| b.to_string());
    let access_key = e.pointer("/userIdentity/accessKeyId").cloned();
    let rec = cloudtrail_record(e);
    json!({
        "EventId": id,
        "EventName": name,
        "ReadOnly": read_only,
        "AccessKeyId": access_key,
        "EventTime": time,
        "EventSource": source,
        "Username": rec.pointer("/userIdentity/userName"),
        "Resources": resources,
        "CloudTrailEvent": rec.to_string(),
    })
}
