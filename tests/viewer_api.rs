//! What the audit viewer (SPEC §10) needs from the admin listener: `/v1/events` newest first by
//! time with its cursor, the unknown-parameter message, downloads, one event by id, one
//! resource's history, the chain status, and the `/ui/` assets with their strict headers,
//! served without the token while every data call needs it. Reads the shared trail.

mod support;

use std::net::SocketAddr;

use bytes::Bytes;
use http::Request;
use serde_json::Value;
use support::trail::{ADMIN_TOKEN, HISTORY_CHANNEL, send, start_proxy, touches, trail, vendor_opts};

async fn get(admin: SocketAddr, path: &str, token: Option<&str>) -> support::fake_vendor::SimpleResponse {
    let mut b = Request::builder().method("GET").uri(path);
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    send(admin, b.body(Bytes::new()).unwrap()).await
}

async fn get_json(admin: SocketAddr, path: &str) -> (u16, Value) {
    let r = get(admin, path, Some(ADMIN_TOKEN)).await;
    (r.status, serde_json::from_slice(&r.body).unwrap_or(Value::Null))
}

fn ids(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| e["eventID"].as_str().unwrap().to_string())
        .collect()
}

/// `order=newest` pages through every event, newest first by time, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newest_first_pages_cover_the_trail_in_time_order() {
    let t = trail();
    let mut want: Vec<&Value> = t.events.iter().collect();
    want.sort_by(|a, b| {
        (b["eventTime"].as_str(), b["seq"].as_u64()).cmp(&(a["eventTime"].as_str(), a["seq"].as_u64()))
    });
    let want: Vec<String> = want
        .iter()
        .map(|e| e["eventID"].as_str().unwrap().to_string())
        .collect();
    let mut got = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let path = match &cursor {
            Some(c) => format!("/v1/events?order=newest&limit=7&cursor={}", enc(c)),
            None => "/v1/events?order=newest&limit=7".to_string(),
        };
        let (status, body) = get_json(t.admin, &path).await;
        assert_eq!(status, 200, "{body}");
        got.extend(ids(&body["events"]));
        match body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(got, want);
    // The default stays oldest first, by seq.
    let (_, body) = get_json(t.admin, "/v1/events?limit=1000").await;
    let oldest: Vec<String> = t
        .events
        .iter()
        .map(|e| e["eventID"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids(&body["events"]), oldest);
}

fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_parameter_lists_the_valid_ones_and_bad_values_are_400() {
    let t = trail();
    let (status, body) = get_json(t.admin, "/v1/events?decison=deny").await;
    assert_eq!(status, 400);
    let msg = body["error"].as_str().unwrap();
    for name in retention_proxy::admin::events::PARAMETERS {
        assert!(msg.contains(name), "{msg} does not name {name}");
    }
    assert!(msg.contains("decison"), "{msg}");
    for q in [
        "order=sideways",
        "format=xml",
        "order=newest&cursor=12",
        "cursor=2026-01-01T00:00:00Z,3",
    ] {
        let (status, body) = get_json(t.admin, &format!("/v1/events?{q}")).await;
        assert_eq!(status, 400, "{q}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcome_and_instance_filters() {
    let t = trail();
    for outcome in ["forwarded", "denied", "rejected"] {
        let (_, body) = get_json(t.admin, &format!("/v1/events?limit=1000&outcome={outcome}")).await;
        let want: Vec<String> = t
            .events
            .iter()
            .filter(|e| e["outcome"] == outcome)
            .map(|e| e["eventID"].as_str().unwrap().to_string())
            .collect();
        assert!(!want.is_empty(), "the trail has {outcome} events");
        assert_eq!(ids(&body["events"]), want, "{outcome}");
    }
    let (_, body) = get_json(t.admin, "/v1/events?limit=1000&instance=compliance-proxy").await;
    assert_eq!(body["events"].as_array().unwrap().len(), t.events.len());
    let (_, body) = get_json(t.admin, "/v1/events?instance=another").await;
    assert_eq!(body["events"].as_array().unwrap().len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_are_the_export_formats() {
    let t = trail();
    let r = get(t.admin, "/v1/events?decision=deny&format=csv", Some(ADMIN_TOKEN)).await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/csv"));
    assert!(r.header("content-disposition").unwrap().starts_with("attachment"));
    let text = String::from_utf8(r.body.to_vec()).unwrap();
    let denied: Vec<&Value> = t
        .events
        .iter()
        .filter(|e| e["guardrail"]["decision"] == "deny")
        .collect();
    assert_eq!(text.lines().count(), denied.len() + 1, "{text}");
    assert!(text.starts_with(&retention_proxy::audit::export::CSV_COLUMNS.join(",")));
    let r = get(t.admin, "/v1/events?decision=deny&format=json", Some(ADMIN_TOKEN)).await;
    let doc: Value = serde_json::from_slice(&r.body).unwrap();
    let recs = doc["Records"].as_array().unwrap();
    assert_eq!(recs.len(), denied.len());
    assert!(
        recs.iter()
            .all(|r| r["additionalEventData"]["guardrail"]["decision"] == "deny")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_event_by_id() {
    let t = trail();
    let ev = &t.events[t.events.len() / 2];
    let id = ev["eventID"].as_str().unwrap();
    let (status, body) = get_json(t.admin, &format!("/v1/events/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(&body["event"], ev);
    assert_eq!(body["cloudTrailEvent"]["eventID"], id);
    assert!(body["cloudTrailEvent"]["additionalEventData"].is_object());
    let (status, body) = get_json(t.admin, "/v1/events/no-such-event").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(get(t.admin, &format!("/v1/events/{id}"), None).await.status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_resource_history_and_its_last_value() {
    let t = trail();
    let (status, body) = get_json(t.admin, &format!("/v1/history?resource={HISTORY_CHANNEL}&limit=1000")).await;
    assert_eq!(status, 200, "{body}");
    let want: Vec<String> = t
        .events
        .iter()
        .filter(|e| touches(e, HISTORY_CHANNEL))
        .map(|e| e["eventID"].as_str().unwrap().to_string())
        .collect();
    assert!(want.len() >= 16);
    assert_eq!(ids(&body["events"]), want);
    let last = &body["lastKnown"][0];
    assert_eq!(last["target"], "slack.channel_retention", "{body}");
    // The last known value is the last change the vendor accepted.
    let accepted = t
        .events
        .iter()
        .rev()
        .find(|e| {
            touches(e, HISTORY_CHANNEL) && e["outcome"] == "forwarded" && !e["changes"].as_array().unwrap().is_empty()
        })
        .unwrap();
    assert_eq!(last["value"], accepted["changes"][0]["new"], "{body}");
    let (status, _) = get_json(t.admin, "/v1/history").await;
    assert_eq!(status, 400);
    let (status, _) = get_json(t.admin, "/v1/history?resource=x&actor=y").await;
    assert_eq!(status, 400);
}

/// The chain status comes from the verification run in the background at start: a proxy
/// started on a finished trail reports it intact up to its last record; tampered, broken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_status_from_the_background_verification() {
    let t = trail();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("audit.db");
    let src = rusqlite::Connection::open_with_flags(&t.db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    src.execute("VACUUM INTO ?1", [db.to_string_lossy()]).unwrap();
    let records: i64 = src.query_row("SELECT max(seq) FROM records", [], |r| r.get(0)).unwrap();
    let fake = support::fake_vendor::FakeVendor::start(vendor_opts()).await;
    let status = |proxy: &support::in_process::InProcessProxy| {
        let admin = proxy.admin.unwrap();
        async move {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            loop {
                let (s, body) = get_json(admin, "/v1/chain").await;
                assert_eq!(s, 200);
                let one = body["instances"][0].clone();
                if one["state"] != "not_verified" {
                    return one;
                }
                assert!(std::time::Instant::now() < deadline, "never verified");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    };
    let proxy = start_proxy(&fake.url(), &db, Some(ADMIN_TOKEN)).await;
    assert_eq!(get(proxy.admin.unwrap(), "/v1/chain", None).await.status, 401);
    let one = status(&proxy).await;
    assert_eq!(one["state"], "intact", "{one}");
    assert_eq!(one["seq"], records);
    assert_eq!(one["text"], format!("intact up to seq {records}"));
    assert_eq!(one["instance"], "compliance-proxy");
    assert!(one["checkedAt"].as_str().is_some_and(|s| s.ends_with('Z')));
    proxy.stop().await;
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute(
            "UPDATE records SET body = replace(body, 'Boto3', 'B0to3') WHERE seq = 5",
            [],
        )
        .unwrap();
    let proxy = start_proxy(&fake.url(), &db, Some(ADMIN_TOKEN)).await;
    let one = status(&proxy).await;
    assert_eq!(one["state"], "broken", "{one}");
    assert_eq!(one["seq"], 5);
    assert_eq!(one["text"], "broken at seq 5");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_assets_have_strict_headers_and_need_no_token() {
    let t = trail();
    for (path, ty) in [
        ("/ui/", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/style.css", "text/css"),
    ] {
        let r = get(t.admin, path, None).await;
        assert_eq!(r.status, 200, "{path}: the page shell loads without the token");
        assert!(r.header("content-type").unwrap().starts_with(ty), "{path}");
        let csp = r.header("content-security-policy").unwrap();
        assert!(
            csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"),
            "{csp}"
        );
        assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "{csp}");
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(r.header("referrer-policy"), Some("no-referrer"));
        assert_eq!(r.header("cache-control"), Some("no-store"));
    }
    let page = String::from_utf8(get(t.admin, "/ui/", None).await.body.to_vec()).unwrap();
    assert!(page.contains("Admin token") && page.contains(r#"type="password""#));
    assert!(
        !page.contains("<script>") && !page.contains("http://") && !page.contains("https://"),
        "no inline script, no external asset"
    );
    for path in ["/ui/index.htm", "/ui/../v1/events", "/ui/app.js/x", "/ui/secret"] {
        let r = get(t.admin, path, None).await;
        assert_eq!(r.status, 404, "{path}");
        assert!(r.header("content-security-policy").is_some(), "{path}");
    }
    let r = get(t.admin, "/ui", None).await;
    assert_eq!(r.status, 308);
    assert_eq!(r.header("location"), Some("/ui/"));
    for path in ["/v1/events", "/v1/history?resource=x", "/v1/chain", "/v1/events/x"] {
        assert_eq!(get(t.admin, path, None).await.status, 401, "{path}");
        assert_eq!(get(t.admin, path, Some("wrong")).await.status, 401, "{path}");
    }
}
