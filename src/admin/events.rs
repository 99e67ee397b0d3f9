//! `GET /v1/events` (the audit trail as JSON, filtered as `audit query` filters it, or
//! downloaded as CSV or CloudTrail JSON), `GET /v1/events/{eventID}` (one merged event and its
//! CloudTrail record) and `GET /v1/history?resource=` (one resource's events and its last known
//! values). All read through the store's [`Reader`](crate::audit::Reader).

use http::{HeaderValue, Response, StatusCode};
use serde_json::{Value, json};

use super::{Admin, json_response};
use crate::audit::export;
use crate::audit::query::{self, Bound, Filter};
use crate::audit::{AuditError, Reader};
use crate::http::body::{ProxyBody, full};

/// The query parameters `/v1/events` takes, as an unknown one's error lists them.
pub const PARAMETERS: [&str; 14] = [
    "since",
    "until",
    "event_name",
    "source",
    "actor",
    "resource",
    "decision",
    "outcome",
    "instance",
    "order",
    "limit",
    "cursor",
    "format",
    "event_id",
];

/// Largest page of `/v1/events` and `/v1/history`.
pub const MAX_PAGE: u64 = 1000;

/// Largest download (`format=csv|json`); past it the answer says where it stopped
/// (`X-Next-Cursor`) and `audit export` writes the rest.
pub const MAX_DOWNLOAD: u64 = 100_000;

/// What the answer is written as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// `{"events":[…],"next_cursor":…}` (the default).
    Page,
    /// `audit export --format csv`, as a file.
    Csv,
    /// `audit export --format cloudtrail` (`{"Records":[…]}`), as a file.
    Json,
}

/// A parsed `/v1/events` query.
struct Query {
    filter: Filter,
    format: Format,
}

fn bad(m: impl Into<String>) -> Response<ProxyBody> {
    json_response(StatusCode::BAD_REQUEST, json!({"error": m.into()}))
}

/// Parses the query string; a bad value or an unknown name is the client's error, and the
/// message of an unknown name, or of an unknown `event_name`, `source`, `decision` or
/// `outcome`, lists the valid ones.
fn parse(q: &str, allowed: &[&str]) -> Result<Query, String> {
    let now = time::OffsetDateTime::now_utc();
    let mut f = Filter::default();
    let mut limit = None;
    let mut format = Format::Page;
    let mut cursor: Option<String> = None;
    for (k, v) in form_urlencoded::parse(q.as_bytes()) {
        let v = v.into_owned();
        if !allowed.contains(&k.as_ref()) {
            return Err(format!(
                "unknown parameter {:?}; the parameters are: {}",
                k.as_ref(),
                allowed.join(", ")
            ));
        }
        // An empty value is no filter (an empty field of a form).
        if v.is_empty() {
            continue;
        }
        match k.as_ref() {
            "since" => f.since = Some(query::parse_bound(&v, now, Bound::Since).map_err(|e| format!("since {e}"))?),
            "until" => f.until = Some(query::parse_bound(&v, now, Bound::Until).map_err(|e| format!("until {e}"))?),
            "event_name" => f.event_name = Some(v),
            "source" => f.source = Some(v),
            "actor" => f.actor = Some(v),
            "resource" => f.resource = Some(v),
            "decision" => f.decision = Some(v),
            "outcome" => f.outcome = Some(v),
            "instance" => f.instance = Some(v),
            "event_id" => f.event_id = Some(v),
            "order" => match v.as_str() {
                "newest" => (f.newest_first, f.by_time) = (true, true),
                "oldest" => (f.newest_first, f.by_time) = (false, false),
                _ => return Err(format!("order {v:?} must be newest or oldest")),
            },
            "limit" => match v.parse::<u64>() {
                Ok(n) if n >= 1 => limit = Some(n),
                _ => return Err(format!("limit {v:?} must be a number from 1")),
            },
            "cursor" => cursor = Some(v),
            "format" => match v.as_str() {
                "csv" => format = Format::Csv,
                "json" => format = Format::Json,
                _ => return Err(format!("format {v:?} must be csv or json")),
            },
            _ => {}
        }
    }
    // An enumerated value that no event can have is a mistake, not an empty answer.
    query::check_filter(&f, str::to_string)?;
    let max = if format == Format::Page { MAX_PAGE } else { MAX_DOWNLOAD };
    match limit {
        Some(n) if n > max => return Err(format!("limit {n} must be a number from 1 to {max}")),
        Some(n) => f.limit = Some(n),
        None => f.limit = Some(if format == Format::Page { 100 } else { MAX_DOWNLOAD }),
    }
    // The cursor names the last event of the previous page: its `seq` (oldest first), or its
    // `eventTime,seq` (newest first, by time).
    if let Some(c) = cursor {
        let not_ours = || format!("cursor {c:?} is not a cursor this API returned for this order");
        if f.by_time {
            let (t, seq) = c.split_once(',').ok_or_else(not_ours)?;
            let seq = seq.parse::<u64>().map_err(|_| not_ours())?;
            let t = query::parse_time(t, now).map_err(|_| not_ours())?;
            f.time_cursor = Some((t, seq));
        } else {
            f.after_seq = Some(c.parse::<u64>().map_err(|_| not_ours())?);
        }
    }
    Ok(Query { filter: f, format })
}

/// Reads on a blocking thread: SQLite never runs on a runtime worker.
async fn read<T: Send + 'static>(
    admin: &Admin,
    work: impl FnOnce(&dyn Reader) -> Result<T, AuditError> + Send + 'static,
) -> Result<T, Response<ProxyBody>> {
    let store = admin.store.clone();
    match tokio::task::spawn_blocking(move || work(crate::audit::open_reader(&store)?.as_ref())).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": e.to_string()}),
        )),
        Err(e) => Err(json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"error": e.to_string()}),
        )),
    }
}

/// The events `f` selects, each with its `seq`, and the cursor of the next page.
fn page(reader: &dyn Reader, f: &Filter) -> Result<(Vec<Value>, Option<String>), AuditError> {
    let mut events = Vec::new();
    let mut last = None;
    reader.events(f, &mut |seq, e| {
        last = Some(seq);
        events.push(e);
        Ok(())
    })?;
    let full_page = f.limit.is_some_and(|l| events.len() as u64 == l);
    let cursor = last.filter(|_| full_page).map(|seq| {
        if f.by_time {
            let t = events.last().and_then(|e| e.get("eventTime")).and_then(Value::as_str);
            format!("{},{seq}", t.unwrap_or_default())
        } else {
            seq.to_string()
        }
    });
    Ok((events, cursor))
}

/// Serves `GET /v1/events?…`.
pub async fn serve(admin: &Admin, q: &str) -> Response<ProxyBody> {
    let Query { filter, format } = match parse(q, &PARAMETERS) {
        Ok(q) => q,
        Err(m) => return bad(m),
    };
    let (events, next) = match read(admin, move |r| page(r, &filter)).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    match format {
        Format::Page => json_response(StatusCode::OK, json!({"events": events, "next_cursor": next})),
        Format::Csv => {
            let mut out = export::CSV_COLUMNS.join(",");
            out.push('\n');
            for e in &events {
                out.push_str(&export::csv_row(e));
                out.push('\n');
            }
            download(out.into_bytes(), "text/csv; charset=utf-8", "audit-events.csv", next)
        }
        Format::Json => {
            let mut doc = match export::RecordsWriter::new(Vec::new()) {
                Ok(d) => d,
                Err(e) => return json_response(StatusCode::INTERNAL_SERVER_ERROR, json!({"error": e.to_string()})),
            };
            for e in events {
                if let Err(e) = doc.push(&export::cloudtrail_record(e)) {
                    return json_response(StatusCode::INTERNAL_SERVER_ERROR, json!({"error": e.to_string()}));
                }
            }
            match doc.finish() {
                Ok(bytes) => download(bytes, "application/json", "audit-events.json", next),
                Err(e) => json_response(StatusCode::INTERNAL_SERVER_ERROR, json!({"error": e.to_string()})),
            }
        }
    }
}

/// A file to save, and where it stopped when the filter selects more than one download holds.
fn download(body: Vec<u8>, content_type: &'static str, name: &str, next: Option<String>) -> Response<ProxyBody> {
    let mut r = Response::new(full(body));
    let h = r.headers_mut();
    h.insert("content-type", HeaderValue::from_static(content_type));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        h.insert("content-disposition", v);
    }
    if let Some(v) = next.and_then(|n| HeaderValue::from_str(&n).ok()) {
        h.insert("x-next-cursor", v);
    }
    r
}

/// Serves `GET /v1/events/{eventID}` (`id` still percent-encoded): the merged event and its
/// CloudTrail record, or 404.
pub async fn one(admin: &Admin, id: &str) -> Response<ProxyBody> {
    let id = percent_encoding::percent_decode_str(id)
        .decode_utf8_lossy()
        .into_owned();
    if id.is_empty() {
        return bad("an eventID is required: /v1/events/{eventID}");
    }
    let filter = Filter {
        event_id: Some(id.clone()),
        limit: Some(1),
        ..Filter::default()
    };
    match read(admin, move |r| r.query(&filter)).await {
        Ok(mut events) => match events.pop() {
            Some(e) => json_response(
                StatusCode::OK,
                json!({"event": e.clone(), "cloudTrailEvent": export::cloudtrail_record(e)}),
            ),
            None => json_response(StatusCode::NOT_FOUND, json!({"error": format!("no event {id:?}")})),
        },
        Err(r) => r,
    }
}

/// The parameters of `/v1/history`.
pub const HISTORY_PARAMETERS: [&str; 5] = ["resource", "order", "limit", "cursor", "since"];

/// Serves `GET /v1/history?resource=ID[&order=&limit=&cursor=]`: every event naming the
/// resource (oldest first unless `order=newest`) and its last known retention values.
pub async fn history(admin: &Admin, q: &str) -> Response<ProxyBody> {
    let Query { filter, .. } = match parse(q, &HISTORY_PARAMETERS) {
        Ok(q) => q,
        Err(m) => return bad(m),
    };
    let Some(resource) = filter.resource.clone() else {
        return bad("resource is required: /v1/history?resource=ID");
    };
    let res = read(admin, move |r| {
        let (events, next) = page(r, &filter)?;
        let last_known: Vec<Value> = r
            .state_of(&resource)?
            .into_iter()
            .map(|s| json!({"target": s.target, "value": s.value, "seenAt": s.seen_at, "eventID": s.event_id}))
            .collect();
        Ok(json!({"resource": resource, "lastKnown": last_known, "events": events, "next_cursor": next}))
    })
    .await;
    match res {
        Ok(v) => json_response(StatusCode::OK, v),
        Err(r) => r,
    }
}
