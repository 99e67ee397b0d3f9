//! The command line of the built binary (SPEC §5, §6): `check-config`, `audit query` (every
//! format, filter and order), the `audit` commands finding the log through `--config`,
//! `audit verify`, `policy test`, and `serve` refusing a bad configuration.

mod support;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use serde_json::{Value, json};
use support::binary::{
    self, BinaryProxy, BinaryProxyOpts, assert_one_line_error, query_json, run, run_ok, stderr, stdout,
};
use support::clients::slack_form;
use support::fake_vendor::{self, EXAMPLE_ACCESS_KEY_ID, FakeVendor, FakeVendorOpts};
use support::fixtures::{ACCOUNT, PROXY_ACCESS_KEY_ID, PROXY_SECRET_ACCESS_KEY, SLACK_GET, SLACK_SET};
use support::{sigv4, toml_str};
const TOKEN_A: &str = "xoxp-1111111111-1111111111-1111111111-cliTokenAcliTokenAcliTokenA01";
const TOKEN_B: &str = "xoxb-2222222222-2222222222-cliTokenBcliTokenBcliTokenB02";
const EXIT_CONFIG: i32 = 64;

// ---------------------------------------------------------------------------------------------
// A database with known events
// ---------------------------------------------------------------------------------------------

struct EventDb {
    _dir: tempfile::TempDir,
    db: PathBuf,
    /// The configuration `serve` ran with.
    config: PathBuf,
    /// Every event, in `seq` order, as `audit query --format json` prints them.
    events: Vec<Value>,
}

impl EventDb {
    fn db(&self) -> String {
        self.db.display().to_string()
    }

    fn ids(events: &[Value]) -> Vec<String> {
        events
            .iter()
            .map(|e| e["eventID"].as_str().unwrap().to_string())
            .collect()
    }

    /// Event ids of `audit query --format json ARGS`.
    fn query(&self, args: &[&str]) -> Vec<String> {
        EventDb::ids(&query_json(&self.db, args))
    }

    /// Event ids of the events (from the unfiltered list) that satisfy `pred`.
    fn expect(&self, pred: impl Fn(&Value) -> bool) -> Vec<String> {
        let picked: Vec<Value> = self.events.iter().filter(|e| pred(e)).cloned().collect();
        EventDb::ids(&picked)
    }
}

fn chime(proxy: &BinaryProxy, method: &str, body: &str) -> Request<Bytes> {
    let date = sigv4::amz_date_now();
    let params = fake_vendor::example_params(&date);
    let headers: &[(&str, &str)] = if body.is_empty() {
        &[]
    } else {
        &[("content-type", "application/json")]
    };
    sigv4::signed_request(
        method,
        &proxy.addr.to_string(),
        &format!("/accounts/{ACCOUNT}/retention-settings"),
        headers,
        Bytes::from(body.to_string()),
        &params,
    )
    .unwrap()
}

/// Runs the proxy against the fake vendor and makes six calls:
/// 1. Slack set C1 365 (token A) → allowed;  2. Slack set C2 30 (token A) → denied by guardrail;
/// 3. Slack set C1 400 (token B, form)  → allowed;  4. Chime put 365 → allowed;
/// 5. Chime get;  6. Slack get C1 (token B).
async fn event_db() -> EventDb {
    let fake =
        FakeVendor::start(FakeVendorOpts::with_example_key().secret(PROXY_ACCESS_KEY_ID, PROXY_SECRET_ACCESS_KEY))
            .await;
    let dir = tempfile::tempdir().unwrap();
    let mut opts = BinaryProxyOpts::new(&fake.url());
    opts.extra_toml =
        "[[guardrails]]\nid = \"slack-min-90\"\ntargets = [\"slack.channel_retention\"]\nmin_days = 90\n".into();
    let mut proxy = BinaryProxy::start(dir.path(), &opts).await;
    let set = SLACK_SET;
    let put = json!({"RetentionSettings": {"RoomRetentionSettings": {"RetentionDays": 365}}}).to_string();
    let calls = vec![
        slack_form(set, "channel_id=C1&duration_days=365", Some(TOKEN_A), &[]),
        slack_form(set, "channel_id=C2&duration_days=30", Some(TOKEN_A), &[]),
        slack_form(
            set,
            &format!("token={TOKEN_B}&channel_id=C1&duration_days=400"),
            None,
            &[],
        ),
        chime(&proxy, "PUT", &put),
        chime(&proxy, "GET", ""),
        slack_form(SLACK_GET, "channel_id=C1", Some(TOKEN_B), &[]),
    ];
    for (i, req) in calls.into_iter().enumerate() {
        let resp = tokio::time::timeout(Duration::from_secs(15), fake_vendor::send(proxy.addr, req))
            .await
            .expect("timed out")
            .expect("request failed");
        assert_eq!(resp.status, 200, "call {}: {:?}", i + 1, resp.body);
    }
    assert_eq!(fake.count(), 5, "the denied call never reaches the vendor");
    proxy.stop().await;
    let db = proxy.db.clone();
    let events = query_json(&db, &[]);
    assert_eq!(events.len(), 6, "{events:#?}");
    assert_eq!(events[1]["guardrail"]["decision"], "deny", "{:#}", events[1]);
    EventDb {
        _dir: dir,
        db,
        config: proxy.config.clone(),
        events,
    }
}

// ---------------------------------------------------------------------------------------------
// audit query: formats
// ---------------------------------------------------------------------------------------------

/// Splits one CSV line (RFC 4180 quoting; no embedded newlines in these fixtures).
fn csv_fields(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', true) => quoted = false,
            ('"', false) if cur.is_empty() => quoted = true,
            (',', false) => out.push(std::mem::take(&mut cur)),
            (c, _) => cur.push(c),
        }
    }
    out.push(cur);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn audit_query_prints_every_format() {
    let t = event_db().await;
    let ids = EventDb::ids(&t.events);
    let db = t.db();
    let fmt = |f: &str| {
        let o = run(&["audit", "query", "--db", &db, "--format", f]);
        assert!(o.status.success(), "--format {f}: {}", stderr(&o));
        stdout(&o)
    };

    // json: one array.
    let json_text = fmt("json");
    let arr: Vec<Value> = serde_json::from_str(&json_text).expect("--format json is one JSON array");
    assert_eq!(EventDb::ids(&arr), ids);
    for (i, e) in arr.iter().enumerate() {
        for k in [
            "eventVersion",
            "eventID",
            "eventTime",
            "eventSource",
            "eventName",
            "userIdentity",
            "outcome",
            "guardrail",
            "seq",
            "prevHash",
            "hash",
        ] {
            assert!(e.get(k).is_some(), "event {i} lacks {k}: {e:#}");
        }
    }

    // jsonl: one event per line.
    let jsonl = fmt("jsonl");
    let lines: Vec<&str> = jsonl.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 6, "{jsonl}");
    let parsed: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("jsonl line does not parse ({e}): {l}")))
        .collect();
    assert_eq!(parsed, arr, "jsonl and json carry the same events");

    // csv: a header, then one row per event with as many fields.
    let csv = fmt("csv");
    let rows: Vec<Vec<String>> = csv.lines().map(csv_fields).collect();
    assert_eq!(rows.len(), 7, "{csv}");
    let header = &rows[0];
    for col in ["seq", "eventTime", "eventName", "outcome", "eventID"] {
        assert!(header.contains(&col.to_string()), "csv header lacks {col}: {header:?}");
    }
    let id_col = header.iter().position(|c| c == "eventID").unwrap();
    let seq_col = header.iter().position(|c| c == "seq").unwrap();
    for (i, row) in rows[1..].iter().enumerate() {
        assert_eq!(row.len(), header.len(), "csv row {i}: {row:?}");
        assert_eq!(row[id_col], ids[i]);
        assert_eq!(row[seq_col], arr[i]["seq"].to_string());
    }

    // table: a header line, then one line per event; also the default format.
    let table = fmt("table");
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines.len() >= 7, "{table}");
    for col in ["seq", "eventTime", "eventName", "outcome"] {
        assert!(lines[0].contains(col), "table header lacks {col}: {}", lines[0]);
    }
    for id in &ids {
        assert_eq!(
            lines.iter().filter(|l| l.contains(id.as_str())).count(),
            1,
            "{id} in table:\n{table}"
        );
    }
    let default = run(&["audit", "query", "--db", &db]);
    assert_eq!(stdout(&default), table, "table is the default format");
}

// ---------------------------------------------------------------------------------------------
// audit query: filters
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn audit_query_applies_every_filter() {
    let t = event_db().await;
    let e = &t.events;
    let all = EventDb::ids(e);

    // --event-name
    let set = "admin.conversations.setCustomRetention";
    let got = t.query(&["--event-name", set]);
    assert_eq!(got, t.expect(|x| x["eventName"] == set));
    assert_eq!(got.len(), 3);
    assert_eq!(t.query(&["--event-name", "PutRetentionSettings"]).len(), 1);
    assert!(t.query(&["--event-name", "PutAppInstanceRetentionSettings"]).is_empty());

    // --source, full and short names
    let slack = t.query(&["--source", "slack.com"]);
    assert_eq!(slack, t.expect(|x| x["eventSource"] == "slack.com"));
    assert_eq!(slack.len(), 4);
    assert_eq!(t.query(&["--source", "slack"]), slack);
    let chime = t.query(&["--source", "chime.amazonaws.com"]);
    assert_eq!(chime, t.expect(|x| x["eventSource"] == "chime.amazonaws.com"));
    assert_eq!(chime.len(), 2);
    assert_eq!(t.query(&["--source", "chime"]), chime);

    // --actor: a token fingerprint, an access key id
    let fp_a = e[0]["userIdentity"]["tokenFingerprint"]
        .as_str()
        .expect("fingerprint")
        .to_string();
    let fp_b = e[2]["userIdentity"]["tokenFingerprint"]
        .as_str()
        .expect("fingerprint")
        .to_string();
    assert_ne!(fp_a, fp_b);
    let got = t.query(&["--actor", &fp_a]);
    assert_eq!(
        got,
        t.expect(|x| x["userIdentity"]["tokenFingerprint"] == fp_a.as_str())
    );
    assert_eq!(got, vec![all[0].clone(), all[1].clone()]);
    assert_eq!(t.query(&["--actor", &fp_b]), vec![all[2].clone(), all[5].clone()]);
    assert_eq!(t.query(&["--actor", EXAMPLE_ACCESS_KEY_ID]), chime);
    assert!(t.query(&["--actor", "AKIANOBODY0000000000"]).is_empty());

    // --resource: a Slack channel, a Chime account
    assert_eq!(
        t.query(&["--resource", "C1"]),
        vec![all[0].clone(), all[2].clone(), all[5].clone()]
    );
    assert_eq!(t.query(&["--resource", "C2"]), vec![all[1].clone()]);
    assert_eq!(t.query(&["--resource", ACCOUNT]), chime);

    // --decision
    assert_eq!(t.query(&["--decision", "deny"]), vec![all[1].clone()]);
    assert_eq!(
        t.query(&["--decision", "allow"]),
        t.expect(|x| x["guardrail"]["decision"] == "allow")
    );
    assert_eq!(t.query(&["--decision", "allow"]).len(), 5);
    assert!(t.query(&["--decision", "dry_run_deny"]).is_empty());

    // --outcome
    assert_eq!(t.query(&["--outcome", "denied"]), vec![all[1].clone()]);
    assert_eq!(
        t.query(&["--outcome", "forwarded"]),
        t.expect(|x| x["outcome"] == "forwarded")
    );
    assert_eq!(t.query(&["--outcome", "forwarded"]).len(), 5);
    assert!(t.query(&["--outcome", "upstream_error"]).is_empty());

    // --limit with --order oldest: the first N in seq order
    assert_eq!(t.query(&["--limit", "2", "--order", "oldest"]), all[..2].to_vec());
    assert_eq!(t.query(&["--limit", "100", "--order", "oldest"]), all);

    // Filters combine.
    assert_eq!(
        t.query(&[
            "--source",
            "slack",
            "--decision",
            "allow",
            "--limit",
            "2",
            "--order",
            "oldest"
        ]),
        vec![all[0].clone(), all[2].clone()]
    );

    // --since / --until, relative ages
    assert_eq!(t.query(&["--since", "15m"]), all);
    assert!(t.query(&["--until", "15m"]).is_empty());
    assert_eq!(t.query(&["--since", "7d", "--until", "2099-01-01T00:00:00Z"]), all);

    // --since / --until, RFC 3339 (with an offset, too)
    assert_eq!(t.query(&["--since", "2000-01-01T00:00:00+02:00"]), all);
    assert!(t.query(&["--until", "2000-01-01T00:00:00Z"]).is_empty());
    assert!(t.query(&["--since", "2099-01-01T00:00:00Z"]).is_empty());
    let pivot = e[3]["eventTime"].as_str().unwrap().to_string();
    let since = t.query(&["--since", &pivot]);
    assert_eq!(since, t.expect(|x| x["eventTime"].as_str().unwrap() >= pivot.as_str()));
    assert!(since.contains(&all[3]) && since.len() <= 3);
    let until = t.query(&["--until", &pivot]);
    assert_eq!(until, t.expect(|x| x["eventTime"].as_str().unwrap() < pivot.as_str()));
    assert!(!until.contains(&all[3]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn audit_query_errors_are_one_sentence() {
    let t = event_db().await;
    let db = t.db();
    for (what, args) in [
        ("bad --since", vec!["--since", "yesterday"]),
        ("bad --until", vec!["--until", "5 fortnights"]),
        ("bad --decision", vec!["--decision", "maybe"]),
        ("bad --event-name", vec!["--event-name", "NoSuchOperation"]),
        ("bad --source", vec!["--source", "aws"]),
        ("bad --outcome", vec!["--outcome", "deny"]),
    ] {
        let mut a = vec!["audit", "query", "--db", db.as_str()];
        a.extend(args.iter().copied());
        let o = run(&a);
        assert_one_line_error(&o, what);
        assert!(stdout(&o).is_empty(), "{what}: nothing on stdout: {}", stdout(&o));
        let flag = args[0];
        assert!(
            stderr(&o).contains(flag),
            "{what}: the error names {flag}: {}",
            stderr(&o)
        );
    }
}

/// An enumerated filter's error lists every value it takes; a time's names every form.
#[test]
fn audit_query_errors_list_the_valid_values() {
    let dir = tempfile::tempdir().unwrap();
    // Checked before the database is opened: this one does not exist.
    let db = dir.path().join("absent.db").display().to_string();
    for (args, listed) in [
        (
            ["--event-name", "PutRetentionSetting"],
            &[
                "PutRetentionSettings",
                "GetRetentionSettings",
                "PutChannelExpirationSettings",
                "CreateChannel",
                "DescribeChannel",
                "PutAppInstanceRetentionSettings",
                "GetAppInstanceRetentionSettings",
                "PutAppInstanceUserExpirationSettings",
                "CreateAppInstanceUser",
                "DescribeAppInstanceUser",
                "admin.conversations.setCustomRetention",
                "admin.conversations.getCustomRetention",
                "admin.conversations.removeCustomRetention",
                "ReloadGuardrails",
            ][..],
        ),
        (
            ["--source", "amazonaws.com"],
            &[
                "chime.amazonaws.com",
                "messaging-chime.amazonaws.com",
                "identity-chime.amazonaws.com",
                "slack.com",
                "retention-proxy",
                "chime_messaging",
                "slack",
            ][..],
        ),
        (
            ["--decision", "denied"],
            &["allow", "deny", "dry_run_deny", "exempt"][..],
        ),
        (
            ["--outcome", "refused"],
            &[
                "forwarded",
                "denied",
                "rejected",
                "upstream_error",
                "audit_unavailable",
                "unknown",
            ][..],
        ),
        (
            ["--since", "2026-11-31"],
            &["RFC 3339", "UTC date", "2026-11-22", "15m", "24h", "7d"][..],
        ),
        (["--until", "last week"], &["RFC 3339", "UTC date", "15m"][..]),
    ] {
        let o = run(&["audit", "query", "--db", &db, args[0], args[1]]);
        let what = format!("{args:?}");
        assert_one_line_error(&o, &what);
        assert_eq!(o.status.code(), Some(2), "{what}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(
            err.contains(args[0]) && err.contains(args[1]),
            "{what}: names the value: {err}"
        );
        for v in listed {
            assert!(err.contains(v), "{what}: lists {v}: {err}");
        }
        assert!(!err.contains("absent.db"), "{what}: checked before the database: {err}");
    }
    // A date and an age are accepted as well-formed (the database is what fails then).
    for args in [["--since", "2026-11-22"], ["--until", "2026-11-22"], ["--since", "7d"]] {
        let o = run(&["audit", "query", "--db", &db, args[0], args[1]]);
        assert!(stderr(&o).contains("absent.db"), "{args:?}: {}", stderr(&o));
    }
}

#[test]
fn audit_commands_on_a_missing_or_foreign_database_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.db").display().to_string();
    for args in [
        vec!["audit", "query", "--db", missing.as_str()],
        vec!["audit", "query", "--db", missing.as_str(), "--format", "json"],
        vec!["audit", "verify", "--db", missing.as_str()],
    ] {
        let o = run(&args);
        assert_one_line_error(&o, &format!("{args:?}"));
        assert!(
            stderr(&o).contains("nope.db"),
            "the error names the file: {}",
            stderr(&o)
        );
    }
    assert!(
        !dir.path().join("nope.db").exists(),
        "reading must not create the database"
    );

    let foreign = dir.path().join("notes.txt");
    std::fs::write(&foreign, "this is not a database\n".repeat(200)).unwrap();
    let foreign = foreign.display().to_string();
    for args in [
        vec!["audit", "query", "--db", foreign.as_str()],
        vec!["audit", "verify", "--db", foreign.as_str()],
    ] {
        assert_one_line_error(&run(&args), &format!("{args:?}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn audit_verify_and_query_on_an_empty_database() {
    let fake = FakeVendor::start(FakeVendorOpts::with_example_key()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut proxy = BinaryProxy::start(dir.path(), &BinaryProxyOpts::new(&fake.url())).await;
    proxy.stop().await;
    let db = proxy.db.display().to_string();
    let o = run(&["audit", "verify", "--db", &db]);
    assert!(
        o.status.success(),
        "an empty chain is intact: {:?} {}{}",
        o.status,
        stdout(&o),
        stderr(&o)
    );
    assert!(stdout(&o).contains("0 records"), "{}", stdout(&o));
    assert!(query_json(&proxy.db, &[]).is_empty());
    let o = run(&["audit", "query", "--db", &db, "--format", "csv"]);
    assert!(o.status.success());
    assert_eq!(
        stdout(&o).lines().count(),
        1,
        "csv of nothing is its header: {}",
        stdout(&o)
    );
    let o = run(&["audit", "query", "--db", &db, "--format", "jsonl"]);
    assert!(o.status.success());
    assert!(stdout(&o).trim().is_empty());
}

// ---------------------------------------------------------------------------------------------
// audit query: order, dates, the table
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn audit_query_orders_newest_first_with_a_limit() {
    let t = event_db().await;
    let all = EventDb::ids(&t.events);
    // Newest first: by eventTime, then seq (as LookupEvents and the viewer list them).
    let mut by_time: Vec<&Value> = t.events.iter().collect();
    by_time.sort_by(|a, b| {
        let key = |e: &Value| (e["eventTime"].as_str().unwrap().to_string(), e["seq"].as_u64().unwrap());
        key(b).cmp(&key(a))
    });
    let newest: Vec<String> = by_time
        .iter()
        .map(|e| e["eventID"].as_str().unwrap().to_string())
        .collect();
    assert_ne!(newest, all, "the calls were made one after the other");

    // Without --limit: oldest first, the whole log; with it: the newest N.
    assert_eq!(t.query(&[]), all);
    assert_eq!(t.query(&["--limit", "2"]), newest[..2].to_vec());
    assert_eq!(t.query(&["--limit", "100"]), newest);
    // --order says it either way.
    assert_eq!(t.query(&["--order", "newest"]), newest);
    assert_eq!(t.query(&["--order", "oldest", "--limit", "3"]), all[..3].to_vec());
    assert_eq!(t.query(&["--order", "newest", "--limit", "1"]), newest[..1].to_vec());
    // With filters: the newest allowed Slack calls.
    assert_eq!(
        t.query(&["--source", "slack", "--decision", "allow", "--limit", "2"]),
        vec![all[5].clone(), all[2].clone()]
    );
    // Every format follows it.
    let db = t.db();
    let o = run(&["audit", "query", "--db", &db, "--limit", "2", "--format", "jsonl"]);
    let lines: Vec<Value> = stdout(&o).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(EventDb::ids(&lines), newest[..2].to_vec());
    let table = run_ok(&["audit", "query", "--db", &db, "--limit", "2"]);
    let rows: Vec<&str> = table.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{table}");
    assert!(rows[0].contains(&newest[0]) && rows[1].contains(&newest[1]), "{table}");
    // export stays chronological.
    let o = run(&["audit", "export", "--db", &db, "--format", "jsonl"]);
    let lines: Vec<Value> = stdout(&o).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(EventDb::ids(&lines), all);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn since_and_until_take_a_utc_date() {
    let t = event_db().await;
    let day = |e: &Value| e["eventTime"].as_str().unwrap()[..10].to_string();
    let first = day(&t.events[0]);
    let last = day(&t.events[5]);
    let date = |d: &str, days: i64| {
        let d = time::Date::parse(d, &time::macros::format_description!("[year]-[month]-[day]")).unwrap();
        (d + time::Duration::days(days)).to_string()
    };
    let all = EventDb::ids(&t.events);
    // --since DAY: from its 00:00:00Z; --until DAY: the whole day, included.
    assert_eq!(t.query(&["--since", &first]), all);
    assert_eq!(t.query(&["--until", &last]), all);
    assert_eq!(t.query(&["--since", &first, "--until", &last]), all);
    assert!(t.query(&["--until", &date(&first, -1)]).is_empty());
    assert!(t.query(&["--since", &date(&last, 1)]).is_empty());
    assert_eq!(
        t.query(&["--until", &first]),
        t.expect(|e| day(e) == first),
        "the events of that day"
    );
    // export and RFC 3339 as before.
    let db = t.db();
    let o = run(&["audit", "export", "--db", &db, "--format", "jsonl", "--until", &last]);
    assert_eq!(stdout(&o).lines().count(), 6, "{}", stderr(&o));
    let o = run(&[
        "audit",
        "export",
        "--db",
        &db,
        "--format",
        "jsonl",
        "--until",
        &date(&first, -1),
    ]);
    assert!(o.status.success() && stdout(&o).is_empty(), "{}", stdout(&o));
    let o = run(&[
        "audit",
        "export",
        "--db",
        &db,
        "--format",
        "jsonl",
        "--since",
        "2026-02-30",
    ]);
    assert_one_line_error(&o, "export --since 2026-02-30");
    assert!(stderr(&o).contains("UTC date"), "{}", stderr(&o));
}

/// Display width of the widest line.
fn widest(text: &str) -> usize {
    text.lines().map(|l| l.chars().count()).max().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_table_shortens_fingerprints_and_other_formats_keep_them() {
    let t = event_db().await;
    let db = t.db();
    let fp = t.events[0]["userIdentity"]["tokenFingerprint"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(fp.len(), "hmac-sha256:".len() + 64, "{fp}");
    let short = format!("{}…", &fp[.."hmac-sha256:".len() + 12]);
    let table = run_ok(&["audit", "query", "--db", &db]);
    assert!(table.contains(&short), "{table}");
    assert!(!table.contains(&fp), "no whole fingerprint in the table:\n{table}");
    // The Slack token's rows; the Chime call shows its access key whole.
    assert_eq!(table.lines().filter(|l| l.contains(&short)).count(), 2, "{table}");
    assert!(table.contains(EXAMPLE_ACCESS_KEY_ID), "{table}");
    // A refusal shows its status beside the outcome only when it is not a success.
    let csv = run_ok(&["audit", "query", "--db", &db, "--format", "csv"]);
    let jsonl = run_ok(&["audit", "query", "--db", &db, "--format", "jsonl"]);
    let json = run_ok(&["audit", "query", "--db", &db, "--format", "json"]);
    for (name, text) in [("csv", &csv), ("jsonl", &jsonl), ("json", &json)] {
        assert!(text.contains(&fp), "{name} keeps the whole fingerprint:\n{text}");
        assert!(!text.contains('…'), "{name} shortens nothing:\n{text}");
    }
    // The Slack calls of this log fit a terminal (278 columns with whole fingerprints, the
    // event source and the HTTP status; 180 now).
    let slack = run_ok(&["audit", "query", "--db", &db, "--source", "slack"]);
    assert!(widest(&slack) < 200, "{} columns:\n{slack}", widest(&slack));
    // The actor column is as wide as a shortened fingerprint.
    let header = table.lines().next().unwrap();
    let (actor, resource) = (header.find("actor").unwrap(), header.find("resource").unwrap());
    assert_eq!(resource - actor, short.chars().count() + 2, "{header}");
    assert!(
        !header.contains("eventSource") && !header.contains("httpStatus"),
        "{header}"
    );
    // Every row is one line, and the eventID stays whole.
    assert_eq!(table.lines().count(), 7, "{table}");
    for id in EventDb::ids(&t.events) {
        assert_eq!(table.lines().filter(|l| l.contains(&id)).count(), 1, "{id}\n{table}");
    }
}

// ---------------------------------------------------------------------------------------------
// audit …: --config, the file serve runs with
// ---------------------------------------------------------------------------------------------

/// Runs the binary in `dir`.
fn run_in(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(binary::BIN)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .env_remove("RETENTION_PROXY_CONFIG")
        .output()
        .expect("run the proxy binary")
}

fn ids_of_json(o: &std::process::Output) -> Vec<String> {
    assert!(o.status.success(), "{:?}: {}", o.status, stderr(o));
    let v: Vec<Value> = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(o)));
    EventDb::ids(&v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn audit_commands_read_the_log_the_configuration_names() {
    let t = event_db().await;
    let cfg = t.config.display().to_string();
    let all = EventDb::ids(&t.events);
    // Elsewhere: no retention-audit.db here, so only the configuration can lead to the log.
    let elsewhere = tempfile::tempdir().unwrap();
    let here = elsewhere.path();
    let q = |extra: &[&str]| {
        let mut a = vec!["audit", "query", "--config", cfg.as_str(), "--format", "json"];
        a.extend_from_slice(extra);
        ids_of_json(&run_in(here, &a))
    };
    assert_eq!(q(&[]), all);
    assert_eq!(
        q(&["--resource", "C1"]),
        vec![all[0].clone(), all[2].clone(), all[5].clone()]
    );
    // The configuration's HMAC key: a raw token is found by its fingerprint.
    assert_eq!(q(&["--actor", TOKEN_A]), vec![all[0].clone(), all[1].clone()]);

    let ok = |args: &[&str]| {
        let o = run_in(here, args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        (stdout(&o), stderr(&o))
    };
    let (out, err) = ok(&["audit", "verify", "--config", &cfg]);
    assert!(out.contains("audit chain intact"), "{out}");
    assert!(err.contains("the configuration's checkpoint key"), "{err}");
    let (out, _) = ok(&[
        "audit",
        "history",
        "--config",
        &cfg,
        "--resource",
        "C2",
        "--format",
        "json",
    ]);
    let hist: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(EventDb::ids(&hist), vec![all[1].clone()]);
    let (out, _) = ok(&["audit", "state", "--config", &cfg, "--format", "json"]);
    assert!(out.contains("\"C1\"") && out.contains("400"), "{out}");
    let (out, _) = ok(&["audit", "export", "--config", &cfg, "--format", "jsonl"]);
    assert_eq!(out.lines().count(), 6, "{out}");
    let (pem, _) = ok(&["audit", "pubkey", "--config", &cfg]);
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"), "{pem}");
    let copy = here.join("copy.db");
    let (out, err) = ok(&[
        "audit",
        "backup",
        "--config",
        &cfg,
        "--out",
        &copy.display().to_string(),
    ]);
    assert!(out.contains(&t.db()), "the configuration's database was copied: {out}");
    assert!(err.contains(".hmac-key"), "{err}");
    // archive opens the configuration's database (no checkpoint is that old, which it says).
    let o = run_in(
        here,
        &[
            "audit",
            "archive",
            "--config",
            &cfg,
            "--before",
            "2000-01-01",
            "--out",
            "archive",
        ],
    );
    assert_one_line_error(&o, "archive before 2000");
    assert!(
        stderr(&o).contains("no signed checkpoint was made before 2000-01-01T00:00:00.000Z"),
        "{}",
        stderr(&o)
    );

    // An explicit --db wins: the copy is read, and the keys still come from the configuration.
    let copy_s = copy.display().to_string();
    let o = run_in(
        here,
        &[
            "audit", "query", "--db", &copy_s, "--config", &cfg, "--format", "json", "--actor", TOKEN_A,
        ],
    );
    assert_eq!(ids_of_json(&o), vec![all[0].clone(), all[1].clone()]);
    let o = run_in(here, &["audit", "query", "--db", &copy_s, "--actor", TOKEN_A]);
    assert_one_line_error(&o, "no key beside the copy");
    let missing = here.join("missing.db").display().to_string();
    let o = run_in(here, &["audit", "query", "--db", &missing, "--config", &cfg]);
    assert_one_line_error(&o, "--db wins over --config");
    assert!(stderr(&o).contains("missing.db"), "{}", stderr(&o));
    let o = run_in(here, &["audit", "verify", "--db", &missing, "--config", &cfg]);
    assert!(stderr(&o).contains("missing.db"), "{}", stderr(&o));

    // Neither: retention-audit.db in the current directory.
    let o = run_in(here, &["audit", "query"]);
    assert_one_line_error(&o, "no database here");
    assert!(stderr(&o).contains("retention-audit.db"), "{}", stderr(&o));
    std::fs::copy(&copy, here.join("retention-audit.db")).unwrap();
    assert_eq!(ids_of_json(&run_in(here, &["audit", "query", "--format", "json"])), all);

    // The help says which wins.
    let help = run_ok(&["audit", "query", "--help"]);
    assert!(
        help.contains("Wins over --config") && help.contains("retention-audit.db"),
        "{help}"
    );
}

#[test]
fn a_configuration_that_does_not_load_is_exit_64_for_every_audit_command() {
    let dir = tempfile::tempdir().unwrap();
    let bad = write(
        dir.path(),
        "typo.toml",
        "[audit]
paht = \"x.db\"\n",
    );
    let missing = dir.path().join("absent.toml").display().to_string();
    let out = dir.path().join("out").display().to_string();
    for cfg in [bad.as_str(), missing.as_str()] {
        for args in [
            vec!["audit", "query", "--config", cfg],
            vec!["audit", "verify", "--config", cfg],
            vec!["audit", "export", "--config", cfg, "--format", "jsonl"],
            vec!["audit", "history", "--config", cfg, "--resource", "C1"],
            vec!["audit", "state", "--config", cfg],
            vec!["audit", "backup", "--config", cfg, "--out", &out],
            vec!["audit", "archive", "--config", cfg, "--before", "90d", "--out", &out],
            vec!["audit", "pubkey", "--config", cfg],
        ] {
            let o = run(&args);
            let what = format!("{args:?}");
            assert_one_line_error(&o, &what);
            let err = stderr(&o);
            assert!(err.contains(cfg), "{what}: names the file: {err}");
            assert_eq!(o.status.code(), Some(EXIT_CONFIG), "{what}: {err}");
            if cfg == bad {
                assert!(err.contains("audit.paht"), "{what}: names the key: {err}");
            }
        }
    }
    assert!(!dir.path().join("out").exists());
}

#[test]
fn a_configuration_with_a_central_store_is_read_from_it() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on this port: the reading commands must try it (and say so), while
    // backup and archive take the local file.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let db = dir.path().join("local.db");
    let cfg = write(
        dir.path(),
        "fleet.toml",
        &format!(
            "[audit]\npath = {}\n\n[audit.central]\nurl = \"postgres://audit@127.0.0.1:{port}/audit?sslmode=disable\"\n",
            toml_str(&db.display().to_string())
        ),
    );
    for args in [
        vec!["audit", "query", "--config", &cfg],
        vec!["audit", "verify", "--config", &cfg],
        vec!["audit", "state", "--config", &cfg],
    ] {
        let o = run(&args);
        assert_one_line_error(&o, &format!("{args:?}"));
        let err = stderr(&o);
        assert!(
            err.contains(&format!("127.0.0.1:{port}")),
            "{args:?} reads the central store: {err}"
        );
        assert!(!err.contains("local.db"), "{args:?}: {err}");
    }
    let out = dir.path().join("copy.db").display().to_string();
    let o = run(&["audit", "backup", "--config", &cfg, "--out", &out]);
    assert_one_line_error(&o, "backup of the local file");
    assert!(stderr(&o).contains("local.db"), "{}", stderr(&o));
    // --db wins over the central store too.
    let o = run(&["audit", "query", "--config", &cfg, "--db", &db.display().to_string()]);
    assert!(stderr(&o).contains("local.db"), "{}", stderr(&o));
}

// ---------------------------------------------------------------------------------------------
// policy test
// ---------------------------------------------------------------------------------------------

/// `policy test ARGS` with `input` on standard input.
fn policy_test(args: &[&str], input: &[u8]) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(binary::BIN)
        .arg("policy")
        .arg("test")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("RETENTION_PROXY_CONFIG")
        .spawn()
        .expect("spawn policy test");
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn policy_test_reads_files_as_editors_save_them() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        dir.path(),
        "min.toml",
        "[[guardrails]]\nid = \"slack-min-90\"\ntargets = [\"slack.channel_retention\"]\nmin_days = 90\n",
    );
    let form = |days: &str, end: &str, length: bool| {
        let body = format!("channel_id=C1&duration_days={days}");
        let length = if length {
            format!("Content-Length: {}\r\n", body.len())
        } else {
            String::new()
        };
        format!(
            "POST /api/admin.conversations.setCustomRetention HTTP/1.1\r\nHost: slack.com\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nAuthorization: Bearer {TOKEN_A}\r\n{length}\r\n{body}{end}"
        )
    };
    for (end, length) in [
        ("", false),
        ("\n", false),
        ("\r\n", false),
        ("\n", true),
        ("\r\n\r\n", true),
    ] {
        let what = format!("ending {end:?}, Content-Length {length}");
        let ok = write(dir.path(), "ok.http", &form("365", end, length));
        let o = run(&["policy", "test", "--config", &cfg, &ok]);
        assert_eq!(o.status.code(), Some(0), "{what}: {}{}", stdout(&o), stderr(&o));
        assert!(
            stdout(&o).contains("slack.channel_retention of C1 -> 365"),
            "{what}: {}",
            stdout(&o)
        );
        assert!(stdout(&o).contains("decision:  allow"), "{what}: {}", stdout(&o));
        assert!(stderr(&o).is_empty(), "{what}: {}", stderr(&o));
        let short = write(dir.path(), "short.http", &form("30", end, length));
        let o = run(&["policy", "test", "--config", &cfg, &short]);
        assert_eq!(o.status.code(), Some(2), "{what}: {}{}", stdout(&o), stderr(&o));
        assert!(stdout(&o).contains("decision:  deny"), "{what}: {}", stdout(&o));
        assert!(stdout(&o).contains("slack-min-90"), "{what}: {}", stdout(&o));
    }
    // `-`: standard input.
    let o = policy_test(&["--config", &cfg, "-"], form("30", "\n", false).as_bytes());
    assert_eq!(o.status.code(), Some(2), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("slack.channel_retention of C1 -> 30"),
        "{}",
        stdout(&o)
    );
    let o = policy_test(&["--config", &cfg, "-"], b"");
    assert_one_line_error(&o, "empty standard input");
    assert!(stderr(&o).contains("standard input"), "{}", stderr(&o));
}

#[test]
fn policy_test_warns_when_there_is_no_guardrail() {
    let dir = tempfile::tempdir().unwrap();
    let empty = write(dir.path(), "empty.toml", "");
    let req = write(
        dir.path(),
        "req.http",
        &format!(
            "POST /api/admin.conversations.setCustomRetention HTTP/1.1\nHost: slack.com\n\
             Content-Type: application/x-www-form-urlencoded\nAuthorization: Bearer {TOKEN_A}\n\nchannel_id=C1&duration_days=1\n"
        ),
    );
    for args in [
        vec!["policy", "test", "--config", &empty, &req],
        vec!["policy", "test", &req],
    ] {
        let o = run(&args);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}{}", stdout(&o), stderr(&o));
        assert!(stdout(&o).contains("decision:  allow"), "{}", stdout(&o));
        let err = stderr(&o);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.starts_with("warning:") && (err.contains("no guardrail") || err.contains("no [[guardrails]]")),
            "{err}"
        );
    }
    let o = run(&["policy", "test", "--config", &empty, &req]);
    assert!(stderr(&o).contains("empty.toml"), "{}", stderr(&o));
}

// ---------------------------------------------------------------------------------------------
// /v1/events: dates and enumerated values
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn v1_events_checks_enumerated_values_and_takes_dates() {
    let fake = FakeVendor::start(FakeVendorOpts::with_example_key()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut proxy = BinaryProxy::start(dir.path(), &BinaryProxyOpts::new(&fake.url())).await;
    let call = slack_form(SLACK_SET, "channel_id=C1&duration_days=365", Some(TOKEN_A), &[]);
    let resp = fake_vendor::send(proxy.addr, call).await.expect("call");
    assert_eq!(resp.status, 200);
    let get = |q: String| {
        let proxy = &proxy;
        async move {
            let (status, body) = proxy.admin_get(&format!("/v1/events?{q}")).await.unwrap();
            (
                status,
                serde_json::from_str::<Value>(&body).unwrap_or_else(|e| panic!("{e}: {body}")),
            )
        }
    };
    for (q, listed) in [
        (
            "event_name=PutRetentionSetting",
            &[
                "PutRetentionSettings",
                "admin.conversations.removeCustomRetention",
                "ReloadGuardrails",
            ][..],
        ),
        (
            "source=aws",
            &[
                "chime.amazonaws.com",
                "identity-chime.amazonaws.com",
                "slack.com",
                "slack",
            ][..],
        ),
        ("decision=denied", &["allow", "deny", "dry_run_deny", "exempt"][..]),
        (
            "outcome=refused",
            &["forwarded", "denied", "rejected", "upstream_error", "unknown"][..],
        ),
        ("until=2026-02-30", &["UTC date", "RFC 3339", "15m"][..]),
        (
            "bogus=1",
            &["since", "until", "event_name", "source", "outcome", "order", "cursor"][..],
        ),
    ] {
        let (status, body) = get(q.to_string()).await;
        assert_eq!(status, 400, "{q}: {body}");
        let err = body["error"].as_str().unwrap_or_else(|| panic!("{q}: {body}"));
        for v in listed {
            assert!(err.contains(v), "{q}: lists {v}: {err}");
        }
    }
    let day = query_json(&proxy.db, &[])[0]["eventTime"].as_str().unwrap()[..10].to_string();
    for q in [
        format!("until={day}"),
        format!("since={day}"),
        "event_name=admin.conversations.setCustomRetention".to_string(),
        "source=slack&decision=allow&outcome=forwarded".to_string(),
    ] {
        let (status, body) = get(q.clone()).await;
        assert_eq!(status, 200, "{q}: {body}");
        assert_eq!(body["events"].as_array().map(Vec::len), Some(1), "{q}: {body}");
    }
    let (status, body) = get("event_name=PutRetentionSettings".into()).await;
    assert_eq!(
        (status, body["events"].as_array().map(Vec::len)),
        (200, Some(0)),
        "{body}"
    );
    proxy.stop().await;
}

// ---------------------------------------------------------------------------------------------
// check-config
// ---------------------------------------------------------------------------------------------

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

fn toml_get<'a>(v: &'a toml::Value, path: &str) -> Option<&'a toml::Value> {
    path.split('.').try_fold(v, |v, k| v.get(k))
}

#[test]
fn check_config_prints_the_effective_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        dir.path(),
        "good.toml",
        r#"
[server]
listen = "127.0.0.1:18080"
admin_listen = "127.0.0.1:19090"

[audit]
path = "some/where/audit.db"

[upstreams]
slack = "http://127.0.0.1:18081"

[forward.resolve]
"chime.us-east-1.amazonaws.com" = "http://127.0.0.1:18082"

[[guardrails]]
id = "legal-hold-1y"
targets = ["chime.room_retention", "slack.channel_retention"]
min_days = 365
"#,
    );
    let o = run(&["check-config", "--config", &cfg]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    let v: toml::Value = toml::from_str(&out).unwrap_or_else(|e| panic!("stdout is not TOML ({e}):\n{out}"));
    let s = |p: &str| {
        toml_get(&v, p)
            .and_then(|x| x.as_str())
            .unwrap_or_else(|| panic!("{p} missing:\n{out}"))
            .to_string()
    };
    // What the file says…
    assert_eq!(s("server.listen"), "127.0.0.1:18080");
    assert_eq!(s("server.admin_listen"), "127.0.0.1:19090");
    assert_eq!(s("audit.path"), "some/where/audit.db");
    assert_eq!(s("upstreams.slack"), "http://127.0.0.1:18081");
    assert!(out.contains("http://127.0.0.1:18082"), "{out}");
    assert!(out.contains("legal-hold-1y"), "{out}");
    // …and every default it left out.
    assert_eq!(s("audit.fail_mode"), "closed");
    assert_eq!(s("upstreams.chime"), "https://chime.us-east-1.amazonaws.com");
    assert_eq!(
        s("upstreams.chime_messaging"),
        "https://messaging-chime.us-east-1.amazonaws.com"
    );
    assert_eq!(
        s("upstreams.chime_identity"),
        "https://identity-chime.us-east-1.amazonaws.com"
    );
    assert!(
        toml_get(&v, "forward.allow_hosts").and_then(|x| x.as_array()).is_some(),
        "{out}"
    );
    assert!(out.contains("*.amazonaws.com") && out.contains("slack.com"), "{out}");
    assert!(
        !dir.path().join("some").exists(),
        "check-config must not create the database"
    );

    // The printed configuration is itself valid and prints the same.
    let again = write(dir.path(), "effective.toml", &out);
    let o2 = run(&["check-config", "--config", &again]);
    assert_eq!(o2.status.code(), Some(0), "{}", stderr(&o2));
    assert_eq!(stdout(&o2), out);
}

#[test]
fn check_config_of_an_empty_file_prints_the_spec_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "empty.toml", "");
    let o = run(&["check-config", "--config", &cfg]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    let v: toml::Value = toml::from_str(&out).unwrap();
    let s = |p: &str| toml_get(&v, p).and_then(|x| x.as_str()).map(str::to_string);
    assert_eq!(s("server.listen").as_deref(), Some("127.0.0.1:8080"), "{out}");
    assert_eq!(s("server.admin_listen").as_deref(), Some("127.0.0.1:9090"));
    assert_eq!(s("audit.path").as_deref(), Some("retention-audit.db"));
    assert_eq!(s("audit.fail_mode").as_deref(), Some("closed"));
    assert_eq!(s("upstreams.slack").as_deref(), Some("https://slack.com"));
}

#[test]
fn check_config_names_every_bad_value() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        dir.path(),
        "bad.toml",
        r#"
[server]
listen = "nowhere"
shutdown_grace = "soon"

[audit]
fail_mode = "ajar"

[upstreams]
chime = "ftp://chime.example"
connect_timeout = "5 parsecs"

[forward.resolve]
"slack.com" = "not a url"

[[guardrails]]
id = "g1"
min_days = 0
mode = "sometimes"
"#,
    );
    let o = run(&["check-config", "--config", &cfg]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(EXIT_CONFIG), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        stdout(&o).is_empty(),
        "nothing is printed for a bad configuration: {}",
        stdout(&o)
    );
    for key in [
        "server.listen",
        "server.shutdown_grace",
        "audit.fail_mode",
        "upstreams.chime",
        "upstreams.connect_timeout",
        "forward.resolve",
        ".min_days",
        ".mode",
    ] {
        assert!(err.contains(key), "{key} is not named:\n{err}");
    }
}

#[test]
fn check_config_names_an_unknown_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "typo.toml", "[audit]\nfail_mod = \"open\"\n");
    let o = run(&["check-config", "--config", &cfg]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(EXIT_CONFIG), "{err}");
    assert!(err.contains("fail_mod"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    let cfg = write(dir.path(), "type.toml", "[server]\nmax_body_bytes = \"big\"\n");
    let o = run(&["check-config", "--config", &cfg]);
    assert_eq!(o.status.code(), Some(EXIT_CONFIG), "{}", stderr(&o));
    assert!(stderr(&o).contains("max_body_bytes"), "{}", stderr(&o));
}

#[test]
fn check_config_names_every_unknown_key_and_bad_value_at_once() {
    // A typo must never switch a guardrail off silently, and an operator fixing a file should
    // see every problem in one run, unknown keys included.
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        dir.path(),
        "typos.toml",
        r#"
[server]
listn = "127.0.0.1:8080"

[audit]
fail_mod = "open"
fail_mode = "ajar"

[[guardrails]]
id = "g1"
min_day = 365
"#,
    );
    let o = run(&["check-config", "--config", &cfg]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(EXIT_CONFIG), "{err}");
    let missing: Vec<&str> = ["listn", "fail_mod", "audit.fail_mode", "min_day"]
        .into_iter()
        .filter(|k| !err.contains(k))
        .collect();
    assert!(missing.is_empty(), "not named: {missing:?}\nstderr:\n{err}");
}

#[test]
fn check_config_of_a_missing_or_broken_file_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("absent.toml").display().to_string();
    let o = run(&["check-config", "--config", &missing]);
    assert_eq!(o.status.code(), Some(EXIT_CONFIG), "{}", stderr(&o));
    assert_one_line_error(&o, "missing config");
    assert!(stderr(&o).contains("absent.toml"), "{}", stderr(&o));

    let broken = write(dir.path(), "broken.toml", "[server\nlisten = 1\n");
    let o = run(&["check-config", "--config", &broken]);
    assert_eq!(o.status.code(), Some(EXIT_CONFIG), "{}", stderr(&o));
    // The toml crate's own layout (position, the line, a caret), after the file name.
    assert!(
        stderr(&o).starts_with(&format!("{broken}: TOML parse error at line 1")),
        "{}",
        stderr(&o)
    );
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
}

// ---------------------------------------------------------------------------------------------
// serve
// ---------------------------------------------------------------------------------------------

/// Runs `serve --config CFG` and waits (bounded) for it to exit on its own.
fn serve_expecting_exit(cfg: &str) -> std::process::Output {
    let mut child = Command::new(binary::BIN)
        .args(["serve", "--config", cfg])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("AWS_ACCESS_KEY_ID", PROXY_ACCESS_KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", PROXY_SECRET_ACCESS_KEY)
        .spawn()
        .expect("spawn serve");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("serve with a bad configuration kept running:\n{}", stderr(&out));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn serve_with_an_invalid_config_exits_64_before_binding() {
    let dir = tempfile::tempdir().unwrap();
    // Hold the listen port: a server that bound before validating would fail with
    // "cannot listen" (exit 1) instead of naming the bad key with exit 64.
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let db = dir.path().join("audit.db");
    let cfg = write(
        dir.path(),
        "serve.toml",
        &format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nadmin_listen = \"\"\n\n[audit]\npath = {}\nfail_mode = \"ajar\"\n",
            toml_str(&db.display().to_string())
        ),
    );
    let o = serve_expecting_exit(&cfg);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(EXIT_CONFIG), "{err}");
    assert!(err.contains("audit.fail_mode"), "{err}");
    assert!(!err.contains("cannot listen"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        !db.exists(),
        "no audit database is created for a configuration that fails validation"
    );

    let cfg = write(dir.path(), "typo.toml", "[server]\nlistn = \"127.0.0.1:1\"\n");
    let o = serve_expecting_exit(&cfg);
    assert_eq!(o.status.code(), Some(EXIT_CONFIG), "{}", stderr(&o));
    assert!(stderr(&o).contains("listn"), "{}", stderr(&o));
    drop(held);
}

#[test]
fn a_listener_others_can_reach_without_client_keys_exits_64_naming_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("audit.db");
    let cfg = write(
        dir.path(),
        "open.toml",
        &format!(
            "[server]\nlisten = \"0.0.0.0:0\"\nadmin_listen = \"\"\n\n[audit]\npath = {}\n",
            toml_str(&db.display().to_string())
        ),
    );
    for o in [serve_expecting_exit(&cfg), run(&["check-config", "--config", &cfg])] {
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(EXIT_CONFIG), "{err}");
        assert_one_line_error(&o, "non-loopback listener without client keys");
        assert!(
            err.contains("reverse.clients_file") && err.contains("allow_unauthenticated = true"),
            "{err}"
        );
    }
    assert!(!db.exists(), "nothing is created for a configuration that is refused");

    // Saying so explicitly is accepted (and shown in the effective configuration).
    let cfg = write(
        dir.path(),
        "opted-out.toml",
        &format!(
            "[server]\nlisten = \"0.0.0.0:0\"\nadmin_listen = \"\"\n\n[audit]\npath = {}\n\n[reverse]\nallow_unauthenticated = true\n",
            toml_str(&db.display().to_string())
        ),
    );
    let o = run(&["check-config", "--config", &cfg]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("allow_unauthenticated = true"), "{}", stdout(&o));
}
