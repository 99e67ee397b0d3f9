//! Compliance queries on the command line over the shared trail (SPEC §5, §7): `audit export`
//! (CloudTrail document and hourly gzip files, JSON lines, CSV, time windows), `audit history`
//! and `audit state`. The trail ([`support::trail`]) is generated once for the whole file;
//! tests only read it.

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use support::binary::{run, run_ok};
use support::checks::Checks;
use support::fixtures::CHANNEL;
use support::trail::{ACCOUNT_A, ACCOUNT_B, COMMA_CHANNEL, End, HISTORY_CHANNEL, check_record, ids, touches, trail};

fn export(db: &Path, format: &str, extra: &[&str]) -> String {
    let db = db.display().to_string();
    let mut a = vec!["audit", "export", "--db", db.as_str(), "--format", format];
    a.extend_from_slice(extra);
    run_ok(&a)
}

// ---------------------------------------------------------------------------------------------
// The trail itself
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trail_holds_every_kind_of_event() {
    let t = trail();
    let mut c = Checks::new("trail_holds_every_kind_of_event");
    for (e, end) in t.events.iter().zip(&t.ends) {
        let want = match end {
            End::Ok => "forwarded",
            End::Denied => "denied",
            End::Rejected => "rejected",
        };
        c.eq(
            &format!("outcome of {}", e["eventID"]),
            e["outcome"].as_str(),
            Some(want),
        );
    }
    let modes: BTreeSet<&str> = t.events.iter().filter_map(|e| e["proxyMode"].as_str()).collect();
    c.eq("proxy modes", modes, BTreeSet::from(["forward", "reverse"]));
    let sources: BTreeSet<&str> = t.events.iter().filter_map(|e| e["eventSource"].as_str()).collect();
    c.eq("sources", sources.len(), 4);
    let seqs: Vec<u64> = t.events.iter().filter_map(|e| e["seq"].as_u64()).collect();
    c.ok(
        "seq ascending",
        seqs.windows(2).all(|w| w[0] < w[1]),
        format!("{seqs:?}"),
    );
    c.finish();
}

// ---------------------------------------------------------------------------------------------
// audit export
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_cloudtrail_records_match_the_events_field_by_field() {
    let t = trail();
    let text = export(&t.db, "cloudtrail", &[]);
    let doc: Value = serde_json::from_str(&text).expect("the export is one JSON document");
    let records = doc["Records"].as_array().expect("{\"Records\": [...]}");
    assert_eq!(doc.as_object().map(|o| o.len()), Some(1), "only Records at the top");
    assert_eq!(records.len(), t.events.len());
    let mut c = Checks::new("export_cloudtrail_records_match_the_events_field_by_field");
    for (rec, ev) in records.iter().zip(&t.events) {
        check_record(&mut c, rec, ev);
    }
    // The denied and rejected calls carry their error code.
    let codes: BTreeSet<&str> = records.iter().filter_map(|r| r["errorCode"].as_str()).collect();
    c.ok(
        "a denied call's errorCode",
        codes
            .iter()
            .any(|s| s.contains("Forbidden") || *s == "restricted_action"),
        format!("{codes:?}"),
    );
    c.finish();
}

fn gunzip(p: &Path) -> String {
    let mut s = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(p).expect("open export file"))
        .read_to_string(&mut s)
        .unwrap_or_else(|e| panic!("{} is not gzip text: {e}", p.display()));
    s
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_cloudtrail_to_a_directory_writes_gzip_log_files() {
    let t = trail();
    let dir = tempfile::tempdir().unwrap();
    let out = format!("{}/trail/", dir.path().display());
    let o = run(&[
        "audit",
        "export",
        "--db",
        &t.db.display().to_string(),
        "--format",
        "cloudtrail",
        "--out",
        &out,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let root = dir.path().join("trail");
    let files = files_under(&root);
    assert!(!files.is_empty(), "no files under {}", root.display());
    let mut c = Checks::new("export_cloudtrail_to_a_directory_writes_gzip_log_files");
    let mut seen: Vec<Value> = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(&root).unwrap();
        let parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
        c.eq(&format!("{} depth YYYY/MM/DD/name", rel.display()), parts.len(), 4);
        if parts.len() != 4 {
            continue;
        }
        let name = &parts[3];
        // <account>_CloudTrail_<region>_<YYYYMMDDTHHmmZ>_<unique>.json.gz
        let fields: Vec<&str> = name.trim_end_matches(".json.gz").splitn(5, '_').collect();
        let well_formed = name.ends_with(".json.gz")
            && fields.len() == 5
            && fields[0].len() == 12
            && fields[0].bytes().all(|b| b.is_ascii_digit())
            && fields[1] == "CloudTrail"
            && !fields[2].is_empty()
            && fields[3].len() == 14
            && fields[3].as_bytes()[8] == b'T'
            && fields[3].ends_with('Z')
            && !fields[4].is_empty();
        c.ok(
            &format!("{name} is a CloudTrail log file name"),
            well_formed,
            "bad name",
        );
        if well_formed {
            let stamp = fields[3];
            c.eq(
                &format!("{name} date = directory"),
                &stamp[..8],
                format!("{}{}{}", parts[0], parts[1], parts[2]),
            );
        }
        let doc: Value = match serde_json::from_str(&gunzip(f)) {
            Ok(v) => v,
            Err(e) => {
                c.ok(&format!("{name} parses"), false, e);
                continue;
            }
        };
        for r in doc["Records"].as_array().cloned().unwrap_or_default() {
            let time = r["eventTime"].as_str().unwrap_or("").to_string();
            c.eq(
                &format!("{name}: record date = directory"),
                time.get(..10).map(|d| d.replace('-', "/")),
                Some(format!("{}/{}/{}", parts[0], parts[1], parts[2])),
            );
            if well_formed {
                let stamp = fields[3];
                c.eq(
                    &format!("{name}: record hour = file hour"),
                    time.get(11..13),
                    Some(&stamp[9..11]),
                );
            }
            seen.push(r);
        }
    }
    c.eq("records across files", seen.len(), t.events.len());
    // An existing directory named without the trailing slash gets the same files.
    let plain_dir = dir.path().join("existing");
    std::fs::create_dir(&plain_dir).unwrap();
    let o = run(&[
        "audit",
        "export",
        "--db",
        &t.db.display().to_string(),
        "--format",
        "cloudtrail",
        "--out",
        &plain_dir.display().to_string(),
    ]);
    c.ok(
        "export to an existing directory",
        o.status.success(),
        String::from_utf8_lossy(&o.stderr),
    );
    let again: usize = files_under(&plain_dir)
        .iter()
        .map(|f| serde_json::from_str::<Value>(&gunzip(f)).map_or(0, |d| d["Records"].as_array().map_or(0, Vec::len)))
        .sum();
    c.eq("records under an existing directory", again, t.events.len());
    let mut got = ids(&seen);
    got.sort();
    let mut want = ids(&t.events);
    want.sort();
    c.eq("every event exported exactly once", got, want);
    let by_id: HashMap<String, &Value> = t
        .events
        .iter()
        .map(|e| (e["eventID"].as_str().unwrap().to_string(), e))
        .collect();
    for r in &seen {
        if let Some(ev) = r["eventID"].as_str().and_then(|i| by_id.get(i)) {
            check_record(&mut c, r, ev);
        }
    }
    c.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_jsonl_is_one_event_per_line() {
    let t = trail();
    let text = export(&t.db, "jsonl", &[]);
    let lines: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {e}: {l}")))
        .collect();
    assert_eq!(lines, t.events, "jsonl export differs from audit query --format json");
    // --out FILE writes the same bytes, for each single-stream format.
    let dir = tempfile::tempdir().unwrap();
    for format in ["jsonl", "csv", "cloudtrail"] {
        let file = dir.path().join(format!("export.{format}"));
        let printed = export(&t.db, format, &[]);
        let o = run_ok(&[
            "audit",
            "export",
            "--db",
            &t.db.display().to_string(),
            "--format",
            format,
            "--out",
            &file.display().to_string(),
        ]);
        assert!(o.is_empty(), "nothing on stdout with --out: {o}");
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            printed,
            "--format {format} --out FILE"
        );
    }
}

/// Parses RFC 4180 CSV (quoted fields may hold commas, quotes and newlines).
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(ch) = chars.next() {
        match (ch, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', true) => quoted = false,
            ('"', false) if cur.is_empty() => quoted = true,
            (',', false) => row.push(std::mem::take(&mut cur)),
            ('\r', false) => {}
            ('\n', false) => {
                row.push(std::mem::take(&mut cur));
                rows.push(std::mem::take(&mut row));
            }
            (ch, _) => cur.push(ch),
        }
    }
    if !cur.is_empty() || !row.is_empty() {
        row.push(cur);
        rows.push(row);
    }
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_csv_has_a_header_and_one_quoted_row_per_event() {
    let t = trail();
    let text = export(&t.db, "csv", &[]);
    let rows = parse_csv(&text);
    assert!(!rows.is_empty(), "empty CSV");
    let header = &rows[0];
    assert_eq!(rows.len(), t.events.len() + 1, "header + one row per event:\n{text}");
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("no {name} column in {header:?}"))
    };
    let (id, seq, resource, name) = (col("eventID"), col("seq"), col("resource"), col("eventName"));
    let mut c = Checks::new("export_csv_has_a_header_and_one_quoted_row_per_event");
    for (row, ev) in rows[1..].iter().zip(&t.events) {
        c.eq("columns per row", row.len(), header.len());
        if row.len() != header.len() {
            continue;
        }
        c.eq("eventID", row[id].as_str(), ev["eventID"].as_str().unwrap());
        c.eq("seq", row[seq].clone(), ev["seq"].to_string());
        c.eq("eventName", row[name].as_str(), ev["eventName"].as_str().unwrap());
    }
    let comma_rows: Vec<&Vec<String>> = rows[1..]
        .iter()
        .filter(|r| r.get(resource).is_some_and(|v| v == COMMA_CHANNEL))
        .collect();
    c.eq("rows whose resource holds a comma", comma_rows.len(), 1);
    c.ok(
        "the comma field is quoted on the wire",
        text.contains(&format!("\"{COMMA_CHANNEL}\"")),
        "no quoted field",
    );
    c.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_since_and_until_select_a_time_window() {
    let t = trail();
    let n = t.events.len();
    let mut c = Checks::new("export_since_and_until_select_a_time_window");
    for k in [n / 3, n / 2, 2 * n / 3] {
        let at = t.events[k]["eventTime"].as_str().unwrap();
        let after: Vec<Value> = t
            .events
            .iter()
            .filter(|e| e["eventTime"].as_str().unwrap() >= at)
            .cloned()
            .collect();
        let before: Vec<Value> = t
            .events
            .iter()
            .filter(|e| e["eventTime"].as_str().unwrap() < at)
            .cloned()
            .collect();
        let got = |args: &[&str]| -> Vec<String> {
            export(&t.db, "jsonl", args)
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| {
                    serde_json::from_str::<Value>(l).unwrap()["eventID"]
                        .as_str()
                        .unwrap()
                        .to_string()
                })
                .collect()
        };
        c.eq(&format!("--since {at}"), got(&["--since", at]), ids(&after));
        c.eq(&format!("--until {at}"), got(&["--until", at]), ids(&before));
        let first = t.events[0]["eventTime"].as_str().unwrap();
        let window: Vec<Value> = t
            .events
            .iter()
            .filter(|e| {
                let x = e["eventTime"].as_str().unwrap();
                x >= first && x < at
            })
            .cloned()
            .collect();
        c.eq(
            &format!("--since {first} --until {at}"),
            got(&["--since", first, "--until", at]),
            ids(&window),
        );
        let doc: Value = serde_json::from_str(&export(&t.db, "cloudtrail", &["--since", at])).unwrap();
        c.eq(
            &format!("cloudtrail --since {at}"),
            ids(doc["Records"].as_array().unwrap()),
            ids(&after),
        );
    }
    // Relative ages: everything is younger than a day.
    c.eq(
        "--since 24h",
        export(&t.db, "jsonl", &["--since", "24h"]).lines().count(),
        n,
    );
    c.eq(
        "--until 24h",
        export(&t.db, "jsonl", &["--until", "24h"]).lines().count(),
        0,
    );
    c.finish();
}

// ---------------------------------------------------------------------------------------------
// audit history and audit state
// ---------------------------------------------------------------------------------------------

fn applied(e: &Value) -> bool {
    e["outcome"] == "forwarded"
        && e["httpStatus"].as_u64().is_some_and(|s| (200..300).contains(&s))
        && e["errorCode"].is_null()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_lists_one_resource_in_order_with_chained_values() {
    let t = trail();
    let db = t.db.display().to_string();
    let mut c = Checks::new("history_lists_one_resource_in_order_with_chained_values");
    for resource in [HISTORY_CHANNEL, "C1", ACCOUNT_A, CHANNEL, COMMA_CHANNEL] {
        let out = run_ok(&[
            "audit",
            "history",
            "--db",
            &db,
            "--resource",
            resource,
            "--format",
            "json",
        ]);
        let hist: Vec<Value> = serde_json::from_str(&out).unwrap_or_else(|e| panic!("history is not JSON: {e}\n{out}"));
        let want: Vec<Value> = t.events.iter().filter(|e| touches(e, resource)).cloned().collect();
        c.eq(&format!("{resource}: events"), ids(&hist), ids(&want));
        let seqs: Vec<u64> = hist.iter().filter_map(|e| e["seq"].as_u64()).collect();
        c.ok(
            &format!("{resource}: seq order"),
            seqs.windows(2).all(|w| w[0] < w[1]),
            format!("{seqs:?}"),
        );
        // previous → new: each change's previous is the value the last applied change set.
        let mut current: HashMap<String, Value> = HashMap::new();
        let mut changes_seen = 0;
        for e in &hist {
            for ch in e["changes"].as_array().cloned().unwrap_or_default() {
                c.eq(
                    &format!("{resource}: change only of this resource"),
                    ch["resource"].as_str(),
                    Some(resource),
                );
                let target = ch["target"].as_str().unwrap_or("").to_string();
                let prev = current.get(&target).cloned().unwrap_or(Value::Null);
                c.eq(
                    &format!("{resource} seq {}: {target} previous", e["seq"]),
                    &ch["previous"],
                    &prev,
                );
                changes_seen += 1;
                if applied(e) {
                    current.insert(target, ch["new"].clone());
                }
            }
        }
        c.ok(&format!("{resource}: has changes"), changes_seen > 0, "none");
    }
    // The 16 changes of the history channel chain exactly.
    let out = run_ok(&[
        "audit",
        "history",
        "--db",
        &db,
        "--resource",
        HISTORY_CHANNEL,
        "--format",
        "json",
    ]);
    let hist: Vec<Value> = serde_json::from_str(&out).unwrap();
    let pairs: Vec<(Value, Value)> = hist
        .iter()
        .map(|e| (e["changes"][0]["previous"].clone(), e["changes"][0]["new"].clone()))
        .collect();
    let want: Vec<(Value, Value)> = (0..16u32)
        .map(|i| {
            (
                if i == 0 { Value::Null } else { json!(31 + (i - 1) * 10) },
                json!(31 + i * 10),
            )
        })
        .collect();
    c.eq("history channel previous → new", pairs, want);
    // A resource never seen has no history (and that is not an error).
    let out = run_ok(&[
        "audit",
        "history",
        "--db",
        &db,
        "--resource",
        "C0NEVERSEEN",
        "--format",
        "json",
    ]);
    c.eq(
        "unknown resource",
        serde_json::from_str::<Value>(&out).ok(),
        Some(json!([])),
    );
    c.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_lists_the_last_value_of_every_setting() {
    let t = trail();
    let out = run_ok(&[
        "audit",
        "state",
        "--db",
        &t.db.display().to_string(),
        "--format",
        "json",
    ]);
    let rows: Vec<Value> = serde_json::from_str(&out).unwrap_or_else(|e| panic!("state is not JSON: {e}\n{out}"));
    let got: BTreeMap<(String, String), Value> = rows
        .iter()
        .map(|r| {
            (
                (
                    r["resource"].as_str().unwrap_or("").to_string(),
                    r["target"].as_str().unwrap_or("").to_string(),
                ),
                r["value"].clone(),
            )
        })
        .collect();
    let mut c = Checks::new("state_lists_the_last_value_of_every_setting");
    c.eq("one row per (resource, target)", got.len(), rows.len());
    // Replaying the applied changes gives the same answer.
    let mut want: BTreeMap<(String, String), Value> = BTreeMap::new();
    for e in t.events.iter().filter(|e| applied(e)) {
        for ch in e["changes"].as_array().cloned().unwrap_or_default() {
            want.insert(
                (
                    ch["resource"].as_str().unwrap().to_string(),
                    ch["target"].as_str().unwrap().to_string(),
                ),
                ch["new"].clone(),
            );
        }
    }
    c.eq("state = replay of applied changes", &got, &want);
    let key = |r: &str, t: &str| (r.to_string(), t.to_string());
    c.eq("C1", got.get(&key("C1", "slack.channel_retention")), Some(&json!(45)));
    c.eq(
        "history channel",
        got.get(&key(HISTORY_CHANNEL, "slack.channel_retention")),
        Some(&json!(181)),
    );
    c.eq(
        "account A room",
        got.get(&key(ACCOUNT_A, "chime.room_retention")),
        Some(&json!("off")),
    );
    c.eq(
        "account B room",
        got.get(&key(ACCOUNT_B, "chime.room_retention")),
        Some(&json!(90)),
    );
    c.eq(
        "channel",
        got.get(&key(CHANNEL, "chime_sdk.channel_expiration")),
        Some(&json!(60)),
    );
    c.eq(
        "C2 (only rejected calls)",
        got.get(&key("C2", "slack.channel_retention")),
        None,
    );
    let known: BTreeSet<&str> = t.events.iter().filter_map(|e| e["eventID"].as_str()).collect();
    for r in &rows {
        c.ok(
            "eventID of a row is an event",
            r["eventID"].as_str().is_some_and(|i| known.contains(i)),
            r,
        );
    }
    c.finish();
}
