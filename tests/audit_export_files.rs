//! `audit export` over a log of thousands of calls, turned into records on every core: the
//! hourly CloudTrail files hold exactly the records a sequential read of the store gives,
//! under names that are the same on every run (`--account-id` names the files of records
//! without an account), and the single-stream formats are the sequential bytes.

mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use retention_proxy::audit::export::{CSV_COLUMNS, RecordsWriter, cloudtrail_record, csv_row};
use retention_proxy::audit::sqlite::SqliteReader;
use retention_proxy::audit::{Filter, Reader};
use serde_json::Value;
use support::binary::{run, run_ok};
use support::seeded::{ACCOUNT, Seeder};

/// Calls in the first hour: more than one batch of a worker, so that hour has several files.
const BIG_HOUR: u64 = 4_500;
/// Calls after it, 250 an hour.
const SPREAD: u64 = 7_500;

/// The seeded log, made once for the file: a big first hour, then 30 hours of 250 calls.
fn db() -> &'static Path {
    static DB: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &DB.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("audit.db");
        let mut s = Seeder::open(&db);
        s.calls(BIG_HOUR + SPREAD, 2_000, |i| {
            if i < BIG_HOUR {
                format!("2026-11-20T05:{:02}:{:02}.{:03}Z", i / 75 % 60, i % 60, i % 1000)
            } else {
                let j = i - BIG_HOUR;
                let hour = 6 + j / 250;
                format!(
                    "2026-11-{:02}T{:02}:{:02}:{:02}.000Z",
                    20 + hour / 24,
                    hour % 24,
                    j % 250 / 5,
                    j % 60
                )
            }
        });
        (dir, db)
    })
    .1
}

fn db_arg() -> String {
    db().display().to_string()
}

/// The store read in order, one event at a time, through the merged `Value`s.
fn sequential() -> Vec<Value> {
    let reader = SqliteReader::open(db()).unwrap();
    (&reader as &dyn Reader).query(&Filter::default()).unwrap()
}

/// Every file under `dir`, by its path below it, with its bytes.
fn files_under(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

fn gunzip(bytes: &[u8]) -> String {
    let mut s = String::new();
    flate2::read::GzDecoder::new(bytes).read_to_string(&mut s).unwrap();
    s
}

/// The records of a CloudTrail document as their exact lines (`{"Records":[`, one record a
/// line, `]}`).
fn record_lines(doc: &str) -> Vec<String> {
    let body = doc
        .strip_prefix("{\"Records\":[\n")
        .and_then(|b| b.strip_suffix("\n]}\n"))
        .unwrap_or_else(|| panic!("not a CloudTrail document: {}", &doc[..doc.len().min(80)]));
    body.split(",\n").map(str::to_string).collect()
}

fn export_dir(dir: &Path, extra: &[&str]) -> std::process::Output {
    let (db, out) = (db_arg(), format!("{}/", dir.display()));
    let mut args = vec!["audit", "export", "--db", &db, "--format", "cloudtrail", "--out", &out];
    args.extend_from_slice(extra);
    run(&args)
}

#[test]
fn hourly_files_hold_exactly_the_records_of_a_sequential_read() {
    let dir = tempfile::tempdir().unwrap();
    let o = export_dir(dir.path(), &["--account-id", "123456789012"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let events = sequential();
    assert_eq!(events.len() as u64, BIG_HOUR + SPREAD);
    let stderr = String::from_utf8_lossy(&o.stderr);
    let files = files_under(dir.path());
    assert!(
        stderr.contains(&format!("exported {} events to {} files", events.len(), files.len())),
        "{stderr}"
    );
    assert!(
        !stderr.contains('\r'),
        "no progress line when stderr is not a terminal: {stderr:?}"
    );

    let mut want: Vec<String> = events
        .iter()
        .map(|e| cloudtrail_record(e.clone()).to_string())
        .collect();
    let mut got = Vec::new();
    let mut per_hour: BTreeMap<String, usize> = BTreeMap::new();
    for (name, bytes) in &files {
        // YYYY/MM/DD/<account>_CloudTrail_<region>_<YYYYMMDDTHH00Z>_<16 hex>.json.gz
        let parts: Vec<&str> = name.split('/').collect();
        assert_eq!(parts.len(), 4, "{name}");
        let fields: Vec<&str> = parts[3].trim_end_matches(".json.gz").split('_').collect();
        assert_eq!(fields.len(), 5, "{name}");
        assert_eq!(fields[1], "CloudTrail");
        assert!(
            fields[4].len() == 16 && fields[4].bytes().all(|b| b.is_ascii_hexdigit()),
            "{name}"
        );
        *per_hour.entry(format!("{}/{}", fields[2], fields[3])).or_default() += 1;
        for line in record_lines(&gunzip(bytes)) {
            let r: Value = serde_json::from_str(&line).unwrap();
            let time = r["eventTime"].as_str().unwrap();
            assert_eq!(
                format!("{}{}{}T{}00Z", &time[..4], &time[5..7], &time[8..10], &time[11..13]),
                fields[3],
                "{name}"
            );
            assert_eq!(parts[..3].join("-"), time[..10], "{name}");
            let (account, region) = match r["recipientAccountId"].as_str() {
                Some(a) => (a, r["awsRegion"].as_str().unwrap()),
                None => ("123456789012", "global"),
            };
            assert_eq!((fields[0], fields[2]), (account, region), "{name}");
            got.push(line);
        }
    }
    assert_eq!(got.len(), want.len(), "every event once");
    got.sort();
    want.sort();
    assert!(got == want, "the files' records differ from a sequential read");
    // The big hour came in more than one file per account and region; the others in one.
    assert!(per_hour["us-east-1/20261120T0500Z"] >= 2, "{per_hour:?}");
    assert_eq!(per_hour["us-east-1/20261120T0600Z"], 1, "{per_hour:?}");
    assert!(
        files
            .keys()
            .any(|k| k.contains(&format!("/{ACCOUNT}_CloudTrail_eu-west-1_20261121T")))
    );
}

#[test]
fn a_rerun_writes_the_same_files_and_account_id_names_them() {
    let dir = tempfile::tempdir().unwrap();
    let o = export_dir(dir.path(), &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let first = files_under(dir.path());
    assert!(first.keys().any(|k| k.contains("/000000000000_CloudTrail_global_")));
    // The same range again, into the same directory: the same names and bytes, nothing added.
    let o = export_dir(dir.path(), &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(files_under(dir.path()) == first, "a re-run changed the files");
    // A second directory gets the same files too.
    let other = tempfile::tempdir().unwrap();
    export_dir(other.path(), &[]);
    assert!(files_under(other.path()) == first);

    // --account-id renames only the files of records without an account.
    let named = tempfile::tempdir().unwrap();
    let o = export_dir(named.path(), &["--account-id", "123456789012"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let renamed = files_under(named.path());
    assert_eq!(renamed.len(), first.len());
    for (name, bytes) in &first {
        let want = name.replace("/000000000000_", "/123456789012_");
        assert_eq!(renamed.get(&want), Some(bytes), "{want}");
    }
    // Bad values are refused, in one sentence, before anything is written.
    for bad in ["12345", "12345678901a", "1234567890123", "", "../../etc/x"] {
        let empty = tempfile::tempdir().unwrap();
        let o = export_dir(empty.path(), &["--account-id", bad]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{bad:?} accepted");
        assert!(
            err.contains("--account-id") && err.contains("12-digit"),
            "{bad:?}: {err}"
        );
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(files_under(empty.path()).is_empty());
    }
    // It names files, so it comes with --out DIR.
    let o = run(&[
        "audit",
        "export",
        "--db",
        &db_arg(),
        "--format",
        "jsonl",
        "--account-id",
        "123456789012",
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--out DIR"));
}

#[test]
fn streams_are_the_bytes_of_a_sequential_read() {
    let events = sequential();
    for format in ["cloudtrail", "jsonl", "csv"] {
        let printed = run_ok(&["audit", "export", "--db", &db_arg(), "--format", format]);
        let mut want = Vec::new();
        match format {
            "cloudtrail" => {
                let mut w = RecordsWriter::new(&mut want).unwrap();
                for e in &events {
                    w.push(&cloudtrail_record(e.clone())).unwrap();
                }
                w.finish().unwrap();
            }
            "jsonl" => {
                for e in &events {
                    writeln!(want, "{e}").unwrap();
                }
            }
            _ => {
                writeln!(want, "{}", CSV_COLUMNS.join(",")).unwrap();
                for e in &events {
                    writeln!(want, "{}", csv_row(e)).unwrap();
                }
            }
        }
        assert!(
            printed.as_bytes() == want,
            "--format {format}: the export differs from a sequential read"
        );
    }
    // A window: the events of one hour, in order.
    let printed = run_ok(&[
        "audit",
        "export",
        "--db",
        &db_arg(),
        "--format",
        "jsonl",
        "--since",
        "2026-11-20T07:00:00Z",
        "--until",
        "2026-11-20T08:00:00Z",
    ]);
    let window: Vec<&Value> = events
        .iter()
        .filter(|e| e["eventTime"].as_str().is_some_and(|t| t.starts_with("2026-11-20T07")))
        .collect();
    assert_eq!(window.len(), 250);
    let lines: Vec<Value> = printed.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.iter().collect::<Vec<_>>(), window);
}
