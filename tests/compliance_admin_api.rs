//! Compliance queries on the admin listener over the shared trail (SPEC §7): `GET /v1/events`
//! (filters, pagination, also under concurrent inserts, errors, the admin token) and CloudTrail
//! `LookupEvents` (shape, lookup attributes, time windows, paging, errors). The trail
//! ([`support::trail`]) is generated once for the whole file; tests only read it. Tests that
//! insert events start a proxy of their own.

mod support;

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;

use bytes::Bytes;
use http::Request;
use serde_json::{Value, json};
use support::binary::query_json;
use support::checks::Checks;
use support::clients::Mode;
use support::fake_vendor::{EXAMPLE_ACCESS_KEY_ID, FakeVendor};
use support::fixtures::{CHANNEL, SLACK_SET, USER};
use support::trail::{
    ACCOUNT_A, ACCOUNT_B, ADMIN_TOKEN, COMMA_CHANNEL, End, OTHER_KEY, TOKEN_A, call, check_record, ids, opt, send,
    slack, slack_set_form, start_proxy, touches, trail, vendor_opts,
};

const LOOKUP_TARGET: &str = "com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.LookupEvents";

// ---------------------------------------------------------------------------------------------
// GET /v1/events
// ---------------------------------------------------------------------------------------------

async fn admin_get(admin: SocketAddr, path_and_query: &str, token: Option<&str>) -> (u16, Value) {
    let mut b = Request::builder().method("GET").uri(path_and_query);
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    let r = send(admin, b.body(Bytes::new()).unwrap()).await;
    (r.status, serde_json::from_slice(&r.body).unwrap_or(Value::Null))
}

fn q(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_events_applies_each_filter() {
    let t = trail();
    let ev = &t.events;
    let mut c = Checks::new("v1_events_applies_each_filter");
    let fingerprint_a = ev
        .iter()
        .find(|e| e["eventSource"] == "slack.com" && e["proxyMode"] == "forward")
        .and_then(|e| e["userIdentity"]["tokenFingerprint"].as_str())
        .unwrap()
        .to_string();
    let mid = ev[ev.len() / 2]["eventTime"].as_str().unwrap().to_string();
    type Pred = Box<dyn Fn(&Value) -> bool>;
    let fp = fingerprint_a.clone();
    let m1 = mid.clone();
    let m2 = mid.clone();
    let cases: Vec<(String, Pred)> = vec![
        (
            "event_name=PutRetentionSettings".to_string(),
            Box::new(|e: &Value| e["eventName"] == "PutRetentionSettings"),
        ),
        (
            "source=slack.com".to_string(),
            Box::new(|e: &Value| e["eventSource"] == "slack.com"),
        ),
        (
            "source=chime_identity".to_string(),
            Box::new(|e: &Value| e["eventSource"] == "identity-chime.amazonaws.com"),
        ),
        (
            format!("actor={OTHER_KEY}"),
            Box::new(|e: &Value| e["userIdentity"]["accessKeyId"] == OTHER_KEY),
        ),
        (
            format!("actor={}", q(&fingerprint_a)),
            Box::new(move |e: &Value| e["userIdentity"]["tokenFingerprint"] == fp.as_str()),
        ),
        (
            format!("actor={}", q(USER)),
            Box::new(|e: &Value| e["userIdentity"]["chimeBearer"] == USER),
        ),
        (
            format!("resource={}", q(CHANNEL)),
            Box::new(|e: &Value| touches(e, CHANNEL)),
        ),
        (
            format!("resource={}", q(COMMA_CHANNEL)),
            Box::new(|e: &Value| touches(e, COMMA_CHANNEL)),
        ),
        (
            format!("resource={ACCOUNT_B}"),
            Box::new(|e: &Value| touches(e, ACCOUNT_B)),
        ),
        (
            "decision=deny".to_string(),
            Box::new(|e: &Value| e["guardrail"]["decision"] == "deny"),
        ),
        (
            format!("since={}", q(&mid)),
            Box::new(move |e: &Value| e["eventTime"].as_str().unwrap() >= m1.as_str()),
        ),
        (
            format!("until={}", q(&mid)),
            Box::new(move |e: &Value| e["eventTime"].as_str().unwrap() < m2.as_str()),
        ),
        (
            "source=slack&decision=allow&since=1h".to_string(),
            Box::new(|e: &Value| e["eventSource"] == "slack.com" && e["guardrail"]["decision"] == "allow"),
        ),
    ];
    for (query, pred) in cases {
        let want: Vec<Value> = ev.iter().filter(|e| pred(e)).cloned().collect();
        c.ok(
            &format!("{query}: selects something"),
            !want.is_empty(),
            "fixture selects nothing",
        );
        let (status, body) = admin_get(t.admin, &format!("/v1/events?{query}"), Some(ADMIN_TOKEN)).await;
        c.eq(&format!("{query}: status"), status, 200);
        let got = body["events"].as_array().cloned().unwrap_or_default();
        c.eq(&format!("{query}: events"), ids(&got), ids(&want));
        c.ok(
            &format!("{query}: next_cursor"),
            body["next_cursor"].is_null(),
            &body["next_cursor"],
        );
    }
    // The events are the same merged events `audit query` prints.
    let (_, body) = admin_get(t.admin, "/v1/events?limit=1000", Some(ADMIN_TOKEN)).await;
    c.eq(
        "unfiltered = audit query",
        body["events"].as_array().cloned().unwrap_or_default(),
        ev.clone(),
    );
    c.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_events_pages_with_limit_and_cursor() {
    let t = trail();
    let mut c = Checks::new("v1_events_pages_with_limit_and_cursor");
    for limit in [1usize, 7, 13, t.events.len(), t.events.len() + 1] {
        let mut got: Vec<Value> = Vec::new();
        let mut cursor: Option<String> = None;
        for page in 0.. {
            assert!(page <= t.events.len() + 1, "limit {limit}: pagination does not end");
            let url = match &cursor {
                Some(cur) => format!("/v1/events?limit={limit}&cursor={}", q(cur)),
                None => format!("/v1/events?limit={limit}"),
            };
            let (status, body) = admin_get(t.admin, &url, Some(ADMIN_TOKEN)).await;
            assert_eq!(status, 200, "{url}: {body}");
            let events = body["events"].as_array().cloned().unwrap_or_default();
            c.ok(
                &format!("limit {limit}: page size"),
                events.len() <= limit,
                events.len(),
            );
            got.extend(events);
            match body["next_cursor"].as_str() {
                Some(n) => cursor = Some(n.to_string()),
                None => break,
            }
        }
        c.eq(
            &format!("limit {limit}: all events once, in order"),
            ids(&got),
            ids(&t.events),
        );
    }
    c.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_events_paging_neither_skips_nor_repeats_while_events_are_inserted() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeVendor::start(vendor_opts()).await;
    let mut proxy = start_proxy(&fake.url(), &dir.path().join("audit.db"), None).await;
    let (addr, admin) = (proxy.addr, proxy.admin.expect("an admin listener"));
    let mut n = 0u32;
    let mut insert = move |count: u32| {
        let reqs: Vec<Request<Bytes>> = (0..count)
            .map(|i| {
                let mode = if (n + i).is_multiple_of(2) {
                    Mode::Forward
                } else {
                    Mode::Reverse
                };
                slack(
                    mode,
                    SLACK_SET,
                    &slack_set_form(&format!("C0PAGE{}", (n + i) % 5), 31 + n + i),
                    TOKEN_A,
                )
            })
            .collect();
        n += count;
        async move {
            let calls = reqs.into_iter().map(|r| call(addr, r, End::Ok));
            futures_join_all(calls).await;
        }
    };
    insert(12).await;
    let limit = 3;
    let mut got: Vec<Value> = Vec::new();
    let mut cursor: Option<String> = None;
    let mut page = 0;
    loop {
        page += 1;
        assert!(page < 100, "pagination does not end");
        let url = match &cursor {
            Some(cur) => format!("/v1/events?limit={limit}&cursor={}", q(cur)),
            None => format!("/v1/events?limit={limit}"),
        };
        // For the first pages, two more calls run while the page is read.
        let fetch = admin_get(admin, &url, None);
        let (status, body) = if page <= 4 {
            let (r, ()) = tokio::join!(fetch, insert(2));
            r
        } else {
            fetch.await
        };
        assert_eq!(status, 200, "{url}: {body}");
        got.extend(body["events"].as_array().cloned().unwrap_or_default());
        match body["next_cursor"].as_str() {
            Some(n) => cursor = Some(n.to_string()),
            None => break,
        }
    }
    let all = query_json(&proxy.db_path, &[]);
    assert_eq!(all.len(), 20);
    let got_ids = ids(&got);
    let unique: BTreeSet<&String> = got_ids.iter().collect();
    assert_eq!(unique.len(), got_ids.len(), "an event was listed twice: {got_ids:?}");
    assert_eq!(got_ids, ids(&all), "pages skipped or reordered events");
    proxy.shutdown().await;
}

/// Runs futures concurrently and waits for all of them.
async fn futures_join_all<F: std::future::Future<Output = ()> + Send + 'static>(fs: impl Iterator<Item = F>) {
    let mut set = tokio::task::JoinSet::new();
    for f in fs {
        set.spawn(f);
    }
    while let Some(r) = set.join_next().await {
        r.expect("a call panicked");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_events_bad_parameters_are_400_json_errors() {
    let t = trail();
    let mut c = Checks::new("v1_events_bad_parameters_are_400_json_errors");
    for query in [
        "limit=0",
        "limit=abc",
        "limit=1001",
        "limit=-1",
        "since=yesterday",
        "until=5y",
        "cursor=not-a-cursor",
        "bogus=1",
    ] {
        let (status, body) = admin_get(t.admin, &format!("/v1/events?{query}"), Some(ADMIN_TOKEN)).await;
        c.eq(&format!("{query}: status"), status, 400);
        c.ok(
            &format!("{query}: JSON error"),
            body["error"].as_str().is_some_and(|s| !s.is_empty()),
            &body,
        );
    }
    c.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_events_needs_the_admin_token() {
    let t = trail();
    let (status, body) = admin_get(t.admin, "/v1/events", None).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.get("events").is_none(), "events leaked without a token: {body}");
    let (status, _) = admin_get(t.admin, "/v1/events", Some("wrong-token")).await;
    assert_eq!(status, 401);
    let r = send(
        t.admin,
        Request::builder()
            .uri("/v1/events")
            .header("authorization", format!("Basic {ADMIN_TOKEN}"))
            .body(Bytes::new())
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 401, "the token only as a bearer");
    let (status, body) = admin_get(t.admin, "/v1/events", Some(ADMIN_TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["events"].as_array().map(Vec::len), Some(t.events.len()));
}

// ---------------------------------------------------------------------------------------------
// LookupEvents
// ---------------------------------------------------------------------------------------------

async fn lookup_raw(admin: SocketAddr, input: &Value, token: Option<&str>) -> (u16, Value) {
    let mut b = Request::builder()
        .method("POST")
        .uri("/")
        .header("x-amz-target", LOOKUP_TARGET)
        .header("content-type", "application/x-amz-json-1.1");
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    let r = send(admin, b.body(Bytes::from(input.to_string())).unwrap()).await;
    (r.status, serde_json::from_slice(&r.body).unwrap_or(Value::Null))
}

async fn lookup(admin: SocketAddr, input: Value) -> Value {
    let (status, body) = lookup_raw(admin, &input, Some(ADMIN_TOKEN)).await;
    assert_eq!(status, 200, "LookupEvents {input}: {body}");
    body
}

/// Every page of a lookup, following NextToken.
async fn lookup_all(admin: SocketAddr, mut input: Value) -> Vec<Value> {
    let mut out = Vec::new();
    for _ in 0..200 {
        let body = lookup(admin, input.clone()).await;
        out.extend(body["Events"].as_array().cloned().unwrap_or_default());
        match body["NextToken"].as_str() {
            Some(tok) => input["NextToken"] = json!(tok),
            None => return out,
        }
    }
    panic!("LookupEvents paging does not end");
}

fn lookup_ids(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["EventId"].as_str().unwrap_or("?").to_string())
        .collect()
}

fn newest_first(events: &[Value]) -> Vec<String> {
    let mut v = ids(events);
    v.reverse();
    v
}

/// Epoch milliseconds of an audit time.
fn epoch_ms(t: &str) -> i64 {
    let t = time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).unwrap();
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_events_have_the_cloudtrail_shape() {
    let t = trail();
    let all = lookup_all(t.admin, json!({"MaxResults": 50})).await;
    assert_eq!(lookup_ids(&all), newest_first(&t.events), "all events, newest first");
    let by_id: HashMap<&str, &Value> = t.events.iter().map(|e| (e["eventID"].as_str().unwrap(), e)).collect();
    let mut c = Checks::new("lookup_events_have_the_cloudtrail_shape");
    for le in &all {
        let id = le["EventId"].as_str().unwrap_or("?");
        let Some(ev) = by_id.get(id) else { continue };
        c.eq(&format!("{id} EventName"), &le["EventName"], &ev["eventName"]);
        c.eq(&format!("{id} EventSource"), &le["EventSource"], &ev["eventSource"]);
        let ro = if ev["readOnly"] == true { "true" } else { "false" };
        c.eq(&format!("{id} ReadOnly"), le["ReadOnly"].as_str(), Some(ro));
        c.eq(
            &format!("{id} AccessKeyId"),
            opt(le, "AccessKeyId"),
            opt(&ev["userIdentity"], "accessKeyId"),
        );
        let when = le["EventTime"].as_f64().unwrap_or(0.0);
        let want = epoch_ms(ev["eventTime"].as_str().unwrap()) as f64 / 1000.0;
        c.ok(
            &format!("{id} EventTime"),
            (when - want).abs() < 0.0015,
            format!("{when} vs {want}"),
        );
        c.ok(
            &format!("{id} Username"),
            le["Username"].as_str().is_some_and(|u| !u.is_empty()),
            &le["Username"],
        );
        let res: Vec<(Value, Value)> = le["Resources"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|r| (r["ResourceType"].clone(), r["ResourceName"].clone()))
                    .collect()
            })
            .unwrap_or_default();
        let want_res: Vec<(Value, Value)> = ev["resources"]
            .as_array()
            .map(|a| a.iter().map(|r| (r["type"].clone(), r["id"].clone())).collect())
            .unwrap_or_default();
        c.eq(&format!("{id} Resources"), res, want_res);
        match le["CloudTrailEvent"].as_str().map(serde_json::from_str::<Value>) {
            Some(Ok(ct)) => {
                c.eq(
                    &format!("{id} CloudTrailEvent.eventID"),
                    ct["eventID"].as_str(),
                    Some(id),
                );
                check_record(&mut c, &ct, ev);
            }
            other => c.ok(
                &format!("{id} CloudTrailEvent is a JSON string"),
                false,
                format!("{other:?}"),
            ),
        }
    }
    c.finish();
}

/// Looks events up by each `(attribute, value)` and checks the answer is exactly the events of
/// the full listing whose own field equals the value (as CloudTrail selects them), newest first.
async fn check_lookup_attributes(c: &mut Checks, admin: SocketAddr, all: &[Value], attrs: Vec<(&str, String)>) {
    for (key, value) in attrs {
        // The events of the full listing whose own field matches, as CloudTrail selects them.
        let want: Vec<Value> = all
            .iter()
            .filter(|e| match key {
                "ResourceName" => e["Resources"]
                    .as_array()
                    .is_some_and(|r| r.iter().any(|x| x["ResourceName"] == value.as_str())),
                k => e[k] == value.as_str(),
            })
            .cloned()
            .collect();
        let fingerprint_as_key = key == "AccessKeyId" && value.starts_with("hmac-sha256:");
        c.ok(
            &format!("{key}={value}: fixture selects something"),
            !want.is_empty() || fingerprint_as_key,
            "nothing",
        );
        let got = lookup_all(
            admin,
            json!({"LookupAttributes": [{"AttributeKey": key, "AttributeValue": value}], "MaxResults": 50}),
        )
        .await;
        let extra: Vec<String> = got
            .iter()
            .filter(|g| !want.iter().any(|w| w["EventId"] == g["EventId"]))
            .map(|g| format!("{} {} ({key} {:?})", g["EventId"], g["EventName"], g.get(key)))
            .collect();
        c.ok(
            &format!("{key}={value}: no other events"),
            extra.is_empty(),
            format!("{extra:?}"),
        );
        c.eq(
            &format!("{key}={value}: events newest first"),
            lookup_ids(&got),
            lookup_ids(&want),
        );
    }
}

/// The Username of a Slack event (its token fingerprint) and one event id of the full listing.
async fn lookup_listing(admin: SocketAddr) -> (Vec<Value>, String, String) {
    let all = lookup_all(admin, json!({})).await;
    let slack_user = all
        .iter()
        .find(|e| e["EventSource"] == "slack.com")
        .and_then(|e| e["Username"].as_str())
        .unwrap()
        .to_string();
    let some_id = all[all.len() / 2]["EventId"].as_str().unwrap().to_string();
    (all, slack_user, some_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_by_event_resource_and_read_only_attributes() {
    let t = trail();
    let (all, _, some_id) = lookup_listing(t.admin).await;
    let attrs: Vec<(&str, String)> = vec![
        ("EventName", "admin.conversations.setCustomRetention".into()),
        ("EventName", "DescribeChannel".into()),
        ("EventSource", "messaging-chime.amazonaws.com".into()),
        ("EventSource", "slack.com".into()),
        ("ResourceName", ACCOUNT_A.into()),
        ("ResourceName", CHANNEL.into()),
        ("ResourceName", "C1".into()),
        ("ReadOnly", "true".into()),
        ("ReadOnly", "false".into()),
        ("EventId", some_id),
    ];
    let mut c = Checks::new("lookup_by_event_resource_and_read_only_attributes");
    check_lookup_attributes(&mut c, t.admin, &all, attrs).await;
    c.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_by_username_and_access_key_id_match_that_field_only() {
    let t = trail();
    let (all, slack_user, _) = lookup_listing(t.admin).await;
    let attrs: Vec<(&str, String)> = vec![
        ("Username", slack_user.clone()),
        ("Username", USER.into()),
        ("Username", OTHER_KEY.into()),
        // The example key signed calls with and without a bearer; with one, the bearer is the
        // Username the endpoint reports.
        ("Username", EXAMPLE_ACCESS_KEY_ID.into()),
        ("AccessKeyId", OTHER_KEY.into()),
        ("AccessKeyId", EXAMPLE_ACCESS_KEY_ID.into()),
        // A token fingerprint is a Username, never an AccessKeyId.
        ("AccessKeyId", slack_user),
    ];
    let mut c = Checks::new("lookup_by_username_and_access_key_id_match_that_field_only");
    check_lookup_attributes(&mut c, t.admin, &all, attrs).await;
    c.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_time_window_and_paging() {
    let t = trail();
    let mut c = Checks::new("lookup_time_window_and_paging");
    // Whole seconds: a window around every event returns them all.
    let ms_of = |e: &Value| epoch_ms(e["eventTime"].as_str().unwrap());
    let first = ms_of(&t.events[0]) / 1000;
    let last = ms_of(&t.events[t.events.len() - 1]) / 1000;
    let got = lookup_all(t.admin, json!({"StartTime": first, "EndTime": last + 1})).await;
    c.eq(
        "whole-second window around the trail",
        lookup_ids(&got),
        newest_first(&t.events),
    );
    // Sub-second windows with boundaries half a millisecond outside events k and j.
    let n = t.events.len();
    for (k, j) in [(0, n - 1), (n / 4, n / 2), (n / 2, n / 2), (n - 1, n - 1)] {
        let (lo, hi) = (ms_of(&t.events[k]), ms_of(&t.events[j]));
        let want: Vec<Value> = t
            .events
            .iter()
            .filter(|e| (lo..=hi).contains(&ms_of(e)))
            .cloned()
            .collect();
        let (start, end) = ((lo as f64 - 0.5) / 1000.0, (hi as f64 + 0.5) / 1000.0);
        let got = lookup_all(t.admin, json!({"StartTime": start, "EndTime": end})).await;
        c.eq(
            &format!("StartTime {start} EndTime {end}"),
            lookup_ids(&got),
            newest_first(&want),
        );
    }
    let got = lookup_all(t.admin, json!({"StartTime": last + 10})).await;
    c.eq("StartTime after every event", got.len(), 0);
    // Paging: MaxResults + NextToken, newest first, nothing repeated or skipped.
    for max in [1u64, 4, 7, 50] {
        let mut seen: Vec<Value> = Vec::new();
        let mut input = json!({"MaxResults": max});
        let mut pages = 0;
        loop {
            pages += 1;
            assert!(pages < 200);
            let body = lookup(t.admin, input.clone()).await;
            let events = body["Events"].as_array().cloned().unwrap_or_default();
            c.ok(
                &format!("MaxResults {max}: page size"),
                events.len() as u64 <= max,
                events.len(),
            );
            seen.extend(events);
            match body["NextToken"].as_str() {
                Some(tok) => input["NextToken"] = json!(tok),
                None => break,
            }
        }
        c.eq(
            &format!("MaxResults {max}: every event once, newest first"),
            lookup_ids(&seen),
            newest_first(&t.events),
        );
    }
    // Paging inside a filter.
    let slack_all: Vec<Value> = t
        .events
        .iter()
        .filter(|e| e["eventSource"] == "slack.com")
        .cloned()
        .collect();
    let got = lookup_all(
        t.admin,
        json!({"LookupAttributes": [{"AttributeKey": "EventSource", "AttributeValue": "slack.com"}], "MaxResults": 4}),
    )
    .await;
    c.eq("filtered paging", lookup_ids(&got), newest_first(&slack_all));
    c.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_end_time_includes_an_event_at_exactly_that_time() {
    // EndTime is inclusive ("at or before"): a window [EventTime, EventTime] built from the
    // EventTime LookupEvents itself returned must contain that event.
    let t = trail();
    let all = lookup_all(t.admin, json!({})).await;
    let mut missing = Vec::new();
    for e in &all {
        let at = e["EventTime"].clone();
        let got = lookup_all(t.admin, json!({"StartTime": at, "EndTime": at})).await;
        if !got.iter().any(|g| g["EventId"] == e["EventId"]) {
            missing.push(format!("{} at {at}", e["EventId"]));
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} events are not returned for StartTime = EndTime = their own EventTime: {missing:?}",
        missing.len(),
        all.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_errors_are_cloudtrail_exceptions() {
    let t = trail();
    let mut c = Checks::new("lookup_errors_are_cloudtrail_exceptions");
    let cases = [
        (
            json!({"LookupAttributes": [
                {"AttributeKey": "EventName", "AttributeValue": "PutRetentionSettings"},
                {"AttributeKey": "EventSource", "AttributeValue": "chime.amazonaws.com"}]}),
            "InvalidLookupAttributesException",
        ),
        (
            json!({"LookupAttributes": [{"AttributeKey": "Colour", "AttributeValue": "blue"}]}),
            "InvalidLookupAttributesException",
        ),
        (
            json!({"LookupAttributes": [{"AttributeKey": "ReadOnly", "AttributeValue": "maybe"}]}),
            "InvalidLookupAttributesException",
        ),
        (json!({"MaxResults": 0}), "InvalidMaxResultsException"),
        (json!({"MaxResults": 51}), "InvalidMaxResultsException"),
        (json!({"NextToken": "garbage"}), "InvalidNextTokenException"),
        (
            json!({"StartTime": 2_000_000_000, "EndTime": 1_000_000_000}),
            "InvalidTimeRangeException",
        ),
    ];
    for (input, code) in cases {
        let (status, body) = lookup_raw(t.admin, &input, Some(ADMIN_TOKEN)).await;
        c.eq(&format!("{input}: status"), status, 400);
        let ty = body["__type"].as_str().unwrap_or("");
        c.ok(&format!("{input}: __type"), ty.ends_with(code), format!("{body}"));
        c.ok(
            &format!("{input}: message"),
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            format!("{body}"),
        );
    }
    // The admin token guards LookupEvents too.
    let (status, body) = lookup_raw(t.admin, &json!({}), None).await;
    c.ok(
        "without the admin token",
        status >= 400 && body.get("Events").is_none(),
        format!("{status} {body}"),
    );
    // The token as the session token (what an AWS client can send) works.
    let r = send(
        t.admin,
        Request::builder()
            .method("POST")
            .uri("/")
            .header("x-amz-target", LOOKUP_TARGET)
            .header("content-type", "application/x-amz-json-1.1")
            .header("x-amz-security-token", ADMIN_TOKEN)
            .body(Bytes::from_static(b"{\"MaxResults\": 1}"))
            .unwrap(),
    )
    .await;
    c.eq("session-token auth", r.status, 200);
    c.eq("one event", r.json()["Events"].as_array().map(Vec::len), Some(1));
    c.finish();
}
