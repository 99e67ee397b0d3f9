//! `audit query | export | verify | history | state | backup`: reading and keeping the trail
//! offline.

use std::io::Write;
use std::process::ExitCode;

use serde_json::Value;

use super::store::{Failure, Log};
use super::{AuditCommand, ExportFormat, Format, Order};
use crate::audit::query::{self, Bound, Filter};
use crate::audit::{self, AuditError, Reader, export};

fn times(since: Option<String>, until: Option<String>) -> Result<(Option<String>, Option<String>), String> {
    let now = time::OffsetDateTime::now_utc();
    let since = since
        .map(|t| query::parse_bound(&t, now, Bound::Since).map_err(|e| format!("--since {e}")))
        .transpose()?;
    let until = until
        .map(|t| query::parse_bound(&t, now, Bound::Until).map_err(|e| format!("--until {e}")))
        .transpose()?;
    Ok((since, until))
}

fn io_result(r: std::io::Result<()>) -> Result<ExitCode, String> {
    match r {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(e) => Err(format!("cannot write the output: {e}")),
    }
}

/// Writes events as they are read: memory stays flat however many a query returns (a table
/// keeps only its cells, to size its columns).
struct EventPrinter<'c, W: Write> {
    out: W,
    format: Format,
    columns: &'c [&'c str],
    /// What an empty table prints instead of its header; `None`: the header and "(no events)".
    empty: Option<String>,
    rows: Vec<Vec<String>>,
    count: u64,
}

impl<'c, W: Write> EventPrinter<'c, W> {
    fn new(out: W, format: Format, columns: &'c [&'c str], empty: Option<String>) -> Self {
        EventPrinter {
            out,
            format,
            columns,
            empty,
            rows: Vec::new(),
            count: 0,
        }
    }

    fn push(&mut self, e: &Value) -> std::io::Result<()> {
        let first = self.count == 0;
        self.count += 1;
        match self.format {
            Format::Json => {
                // The bytes `to_writer_pretty` gives for the whole array: each element on
                // its own lines, indented one level (JSON strings hold no raw newline).
                let text = serde_json::to_string_pretty(e).map_err(std::io::Error::other)?;
                self.out.write_all(if first { b"[\n  " } else { b",\n  " })?;
                self.out.write_all(text.replace('\n', "\n  ").as_bytes())
            }
            Format::Jsonl => writeln!(self.out, "{e}"),
            Format::Csv => {
                if first {
                    writeln!(self.out, "{}", self.columns.join(","))?;
                }
                let row: Vec<String> = self
                    .columns
                    .iter()
                    .map(|c| export::csv_field(&export::cell(e, c)))
                    .collect();
                writeln!(self.out, "{}", row.join(","))
            }
            Format::Table => {
                self.rows
                    .push(self.columns.iter().map(|c| table_cell(e, c, self.columns)).collect());
                Ok(())
            }
        }
    }

    fn finish(mut self) -> std::io::Result<()> {
        match self.format {
            Format::Json if self.count == 0 => writeln!(self.out, "[]")?,
            Format::Json => writeln!(self.out, "\n]")?,
            Format::Jsonl => {}
            Format::Csv if self.count == 0 => writeln!(self.out, "{}", self.columns.join(","))?,
            Format::Csv => {}
            Format::Table => match self.empty.take().filter(|_| self.rows.is_empty()) {
                Some(message) => writeln!(self.out, "{message}")?,
                None => write_table(&mut self.out, &self.rows, self.columns)?,
            },
        }
        self.out.flush()
    }
}

/// Prints what `read` visits, as it visits it. A failed write ends the reading; a closed pipe
/// (`| head`) is not an error.
fn print_events(
    format: Format,
    columns: &[&str],
    empty: Option<String>,
    read: impl FnOnce(&mut dyn FnMut(Value) -> Result<(), AuditError>) -> Result<(), AuditError>,
) -> Result<ExitCode, String> {
    let stdout = std::io::stdout();
    let mut printer = EventPrinter::new(std::io::BufWriter::new(stdout.lock()), format, columns, empty);
    let mut failed: Option<std::io::Error> = None;
    let read = read(&mut |e| {
        printer.push(&e).map_err(|err| {
            let message = err.to_string();
            failed = Some(err);
            AuditError::Read(message)
        })
    });
    match (read, failed) {
        (_, Some(err)) => io_result(Err(err)),
        (Err(e), None) => Err(e.to_string()),
        (Ok(()), None) => io_result(printer.finish()),
    }
}

/// What `--actor` is compared with: itself, or for a raw Slack token (`xoxb-…`, `xoxp-…`),
/// its fingerprint under the installation's key, so the token is never compared, stored or
/// printed as it is.
fn actor_as_recorded(actor: String, log: &Log, key_file: Option<std::path::PathBuf>) -> Result<String, String> {
    let actor = actor.trim().to_string();
    if !looks_like_slack_token(&actor) {
        return Ok(actor);
    }
    let key_file = key_file.unwrap_or_else(|| log.hmac_key_file.clone());
    let key = std::fs::read_to_string(&key_file)
        .ok()
        .and_then(|k| hex::decode(k.trim()).ok())
        .filter(|k| k.len() >= 16)
        .ok_or_else(|| {
            format!(
                "--actor is a Slack token, which is compared by its fingerprint: the installation's key was not readable at {} (give --hmac-key-file)",
                key_file.display()
            )
        })?;
    Ok(crate::audit::event::TokenKey::new(&key).fingerprint(&actor))
}

/// A Slack token: `xox?-…` (user, bot, app-level, configuration, refresh tokens).
fn looks_like_slack_token(s: &str) -> bool {
    (s.len() > 5 && s.starts_with("xox") && s.as_bytes().get(4) == Some(&b'-')) || s.starts_with("xapp-")
}

/// Runs an `audit` command; an error is one sentence (exit 64 for a configuration that does
/// not load, else 2).
pub fn run(cmd: AuditCommand) -> Result<ExitCode, Failure> {
    match cmd {
        AuditCommand::Verify {
            db,
            fleet,
            pubkey,
            checkpoints,
            archive,
        } => Ok(match archive {
            Some(dir) => super::verify::run_archive(&dir, pubkey.as_deref())?,
            None => super::verify::run(&db.resolve(true)?, fleet, pubkey, checkpoints)?,
        }),
        AuditCommand::Archive { db, before, out } => Ok(super::archive::run(&db.resolve(false)?.db, &before, &out)?),
        AuditCommand::Pubkey { db, config } => {
            let key_file = match config {
                Some(config) => {
                    let args = super::store::DbArgs {
                        db: None,
                        config: Some(config),
                    };
                    args.resolve(false)?.checkpoint_key_file
                }
                None => crate::audit::checkpoint::default_key_file(&db),
            };
            Ok(super::verify::pubkey(&key_file)?)
        }
        AuditCommand::Query {
            db,
            fleet,
            since,
            until,
            event_name,
            source,
            actor,
            hmac_key_file,
            resource,
            decision,
            outcome,
            limit,
            order,
            format,
        } => {
            let log = db.resolve(true)?;
            let (since, until) = times(since, until)?;
            let actor = actor.map(|a| actor_as_recorded(a, &log, hmac_key_file)).transpose()?;
            // Newest first when a limit keeps a few (the latest), oldest first for everything.
            let newest = order.unwrap_or(if limit.is_some() { Order::Newest } else { Order::Oldest }) == Order::Newest;
            let f = Filter {
                since,
                until,
                event_name,
                source,
                actor,
                resource,
                decision,
                outcome,
                limit,
                instance: fleet.instance.clone(),
                // The order `/v1/events?order=newest` and LookupEvents read in.
                newest_first: newest,
                by_time: newest,
                ..Filter::default()
            };
            query::check_filter(&f, |name| format!("--{}", name.replace('_', "-")))?;
            let reader = super::store::open(&log, &fleet)?;
            let table = if format == Format::Table {
                &TABLE_COLUMNS[..]
            } else {
                &export::CSV_COLUMNS[..]
            };
            Ok(print_events(format, table, None, |visit| {
                reader.events(&f, &mut |_, e| visit(e))
            })?)
        }
        AuditCommand::History {
            db,
            fleet,
            resource,
            format,
        } => {
            let reader = super::store::open(&db.resolve(true)?, &fleet)?;
            let empty = format!("no events for resource {resource:?}");
            let f = Filter {
                resource: Some(resource.clone()),
                instance: fleet.instance.clone(),
                ..Filter::default()
            };
            Ok(print_events(format, &HISTORY_COLUMNS, Some(empty), |visit| {
                reader.events(&f, &mut |_, mut e| {
                    // Keep only this resource's changes, so "previous -> new" reads as its
                    // own history.
                    if let Some(Value::Array(cs)) = e.get_mut("changes") {
                        cs.retain(|c| c.get("resource").and_then(Value::as_str) == Some(resource.as_str()));
                    }
                    visit(e)
                })
            })?)
        }
        AuditCommand::State { db, fleet, format } => {
            let reader = super::store::open(&db.resolve(true)?, &fleet)?;
            let rows = reader.state().map_err(|e| e.to_string())?;
            let columns = ["resource", "target", "value", "seenAt", "eventID"];
            let empty = "no retention values seen yet".to_string();
            Ok(print_events(format, &columns, Some(empty), |visit| {
                rows.into_iter().try_for_each(|r| {
                    visit(
                        serde_json::json!({"resource": r.resource, "target": r.target, "value": r.value,
                        "seenAt": r.seen_at, "eventID": r.event_id}),
                    )
                })
            })?)
        }
        AuditCommand::Export {
            db,
            fleet,
            format,
            since,
            until,
            out,
            account_id,
        } => {
            let log = db.resolve(true)?;
            if let Some(a) = &account_id
                && !export::valid_account(a)
            {
                return Err(format!("--account-id {a:?} must be a 12-digit AWS account id").into());
            }
            let (since, until) = times(since, until)?;
            let f = Filter {
                since,
                until,
                instance: fleet.instance.clone(),
                ..Filter::default()
            };
            let reader = super::store::open(&log, &fleet)?;
            Ok(export_events(
                reader.as_ref(),
                &f,
                format,
                out.as_deref(),
                account_id.as_deref(),
            )?)
        }
        AuditCommand::Backup { db, out, force } => {
            let log = db.resolve(false)?;
            let db = log.db;
            if crate::config::central::is_postgres_url(&db.to_string_lossy()) {
                return Err(
                    "audit backup copies a local SQLite database; back the central store up with PostgreSQL's own tools (pg_dump)".into(),
                );
            }
            let copied = audit::sqlite::backup::backup(&db, &out, force).map_err(|e| e.to_string())?;
            println!(
                "backed up {} records (seq {} to {}) from {} to {}",
                copied.records,
                copied.first_seq,
                copied.last_seq,
                db.display(),
                out.display()
            );
            if log.hmac_key_file.exists() {
                eprintln!(
                    "note: the key file {} was not copied; keep it separately (see README, \"Keeping the log\")",
                    log.hmac_key_file.display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Columns of `audit query --format table`: the CSV columns but `eventSource` (the event name
/// says it) and `httpStatus` (the outcome shows it when it is not a success), so a row fits a
/// terminal.
const TABLE_COLUMNS: [&str; 9] = [
    "seq",
    "eventTime",
    "eventName",
    "actor",
    "resource",
    "change",
    "decision",
    "outcome",
    "eventID",
];

/// Columns of `audit history`.
const HISTORY_COLUMNS: [&str; 8] = [
    "eventTime",
    "eventName",
    "actor",
    "change",
    "decision",
    "outcome",
    "httpStatus",
    "eventID",
];

fn export_events(
    reader: &dyn Reader,
    f: &Filter,
    format: ExportFormat,
    out: Option<&std::path::Path>,
    account: Option<&str>,
) -> Result<ExitCode, String> {
    let to_dir = out.filter(|p| {
        format == ExportFormat::Cloudtrail && (p.is_dir() || p.as_os_str().to_string_lossy().ends_with('/'))
    });
    if account.is_some() && to_dir.is_none() {
        return Err("--account-id names hourly files: give it with --format cloudtrail --out DIR".into());
    }
    let to = match to_dir {
        Some(dir) => export::Destination::Hourly { dir, account },
        None => export::Destination::Stream {
            format: match format {
                ExportFormat::Cloudtrail => export::Format::CloudTrail,
                ExportFormat::Jsonl => export::Format::Jsonl,
                ExportFormat::Csv => export::Format::Csv,
            },
            out: match out {
                Some(p) => {
                    Box::new(std::fs::File::create(p).map_err(|e| format!("cannot create {}: {e}", p.display()))?)
                }
                None => Box::new(std::io::stdout()),
            },
        },
    };
    let mut progress = super::progress::Progress::stderr("exported");
    let result = export::export(reader, f, to, &mut |n| progress.update(n));
    match result {
        Ok(summary) => {
            progress.finish(summary.events);
            if let Some(dir) = to_dir {
                eprintln!(
                    "exported {} events to {} files under {}",
                    summary.events,
                    summary.files.len(),
                    dir.display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) if e.is_broken_pipe() => Ok(ExitCode::SUCCESS),
        Err(e) => Err(e.to_string()),
    }
}

/// A cell as a table shows it: token fingerprints shortened, times to the second, and an
/// unsuccessful HTTP status beside the outcome when the table has no column for it. The other
/// formats keep every value whole.
fn table_cell(e: &Value, col: &str, columns: &[&str]) -> String {
    let text = export::cell(e, col);
    match col {
        "eventTime" | "seenAt" => to_the_second(text),
        "outcome" if !columns.contains(&"httpStatus") => match e.get("httpStatus").and_then(Value::as_u64) {
            Some(status) if !(200..300).contains(&status) => format!("{text} {status}"),
            _ => text,
        },
        _ => shorten_fingerprints(&text),
    }
}

/// `2026-11-22T10:00:00.123Z` as `2026-11-22T10:00:00Z`; any other text as it is.
fn to_the_second(t: String) -> String {
    match t.split_once('.') {
        Some((head, ms)) if t.len() == 24 && ms.len() == 4 && ms.ends_with('Z') => format!("{head}Z"),
        _ => t,
    }
}

/// Hex digits of a fingerprint a table shows.
const FINGERPRINT_DIGITS: usize = 12;

/// Every `hmac-sha256:<hex>` in `text` cut to its first [`FINGERPRINT_DIGITS`] hex digits and
/// `…` (enough to tell tokens apart by eye; `--format json` has the whole value).
fn shorten_fingerprints(text: &str) -> String {
    const PREFIX: &str = "hmac-sha256:";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(PREFIX) {
        let digits_at = at + PREFIX.len();
        let digits = rest[digits_at..].bytes().take_while(u8::is_ascii_hexdigit).count();
        out.push_str(&rest[..digits_at]);
        if digits > FINGERPRINT_DIGITS {
            out.push_str(&rest[digits_at..digits_at + FINGERPRINT_DIGITS]);
            out.push('…');
        } else {
            out.push_str(&rest[digits_at..digits_at + digits]);
        }
        rest = &rest[digits_at + digits..];
    }
    out.push_str(rest);
    out
}

fn write_table(out: &mut impl Write, rows: &[Vec<String>], columns: &[&str]) -> std::io::Result<()> {
    let mut widths: Vec<usize> = columns.iter().map(|c| c.len()).collect();
    for r in rows {
        for (i, v) in r.iter().enumerate() {
            widths[i] = widths[i].max(v.chars().count());
        }
    }
    let line = |vals: Vec<&str>| {
        vals.iter()
            .enumerate()
            .map(|(i, v)| format!("{:<w$}", v, w = widths[i]))
            .collect::<Vec<_>>()
            .join("  ")
    };
    writeln!(out, "{}", line(columns.to_vec()).trim_end())?;
    for r in rows {
        writeln!(out, "{}", line(r.iter().map(String::as_str).collect()).trim_end())?;
    }
    if rows.is_empty() {
        writeln!(out, "(no events)")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn printed(format: Format, events: &[Value], empty: Option<&str>) -> String {
        let columns = ["eventName", "outcome"];
        let mut out = Vec::new();
        let mut p = EventPrinter::new(&mut out, format, &columns, empty.map(str::to_string));
        for e in events {
            p.push(e).unwrap();
        }
        p.finish().unwrap();
        String::from_utf8(out).unwrap()
    }

    fn events() -> Vec<Value> {
        vec![
            json!({"eventName": "PutRetentionSettings", "outcome": "forwarded",
                   "changes": [{"new": 30, "previous": null}], "empty": {}, "none": [],
                   "text": "two\nlines \"quoted\""}),
            json!({"eventName": "admin.conversations.setCustomRetention", "outcome": "denied",
                   "nested": {"a": [1, {"b": []}]}}),
            json!({}),
        ]
    }

    #[test]
    fn streamed_json_is_the_pretty_array_byte_for_byte() {
        let all = events();
        for n in 0..=all.len() {
            let some = &all[..n];
            let want = format!("{}\n", serde_json::to_string_pretty(some).unwrap());
            assert_eq!(printed(Format::Json, some, None), want, "{n} events");
        }
    }

    #[test]
    fn lines_and_csv_stream_one_event_per_line() {
        let all = events();
        let jsonl = printed(Format::Jsonl, &all, None);
        let lines: Vec<Value> = jsonl.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines, all);
        assert_eq!(
            printed(Format::Csv, &all[..2], None),
            "eventName,outcome\nPutRetentionSettings,forwarded\nadmin.conversations.setCustomRetention,denied\n"
        );
        assert_eq!(printed(Format::Csv, &[], None), "eventName,outcome\n");
        assert_eq!(printed(Format::Jsonl, &[], None), "");
    }

    #[test]
    fn tables_shorten_fingerprints_and_times_and_nothing_else_does() {
        let fp = format!(
            "hmac-sha256:{}",
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let e = json!({"eventTime": "2026-11-22T10:00:00.123Z", "httpStatus": 403, "outcome": "denied",
                       "userIdentity": {"tokenFingerprint": fp}});
        let columns = ["eventTime", "actor", "outcome"];
        assert_eq!(table_cell(&e, "actor", &columns), "hmac-sha256:5bdcc146bf60…");
        assert_eq!(table_cell(&e, "eventTime", &columns), "2026-11-22T10:00:00Z");
        assert_eq!(table_cell(&e, "outcome", &columns), "denied 403");
        assert_eq!(table_cell(&e, "outcome", &["outcome", "httpStatus"]), "denied");
        let ok = json!({"httpStatus": 200, "outcome": "forwarded"});
        assert_eq!(table_cell(&ok, "outcome", &columns), "forwarded");
        // Short or odd values are left alone.
        assert_eq!(shorten_fingerprints("hmac-sha256:00ff"), "hmac-sha256:00ff");
        assert_eq!(shorten_fingerprints("AKIAEXAMPLE"), "AKIAEXAMPLE");
        assert_eq!(
            shorten_fingerprints(&format!("{fp} and {fp}!")),
            "hmac-sha256:5bdcc146bf60… and hmac-sha256:5bdcc146bf60…!"
        );
        assert_eq!(to_the_second("2026-11-22".into()), "2026-11-22");
        // The other formats print the value whole.
        let columns = ["actor"];
        let mut out = Vec::new();
        let mut p = EventPrinter::new(&mut out, Format::Csv, &columns, None);
        p.push(&e).unwrap();
        p.finish().unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), format!("actor\n{fp}\n"));
    }

    #[test]
    fn tables_are_aligned_and_say_when_they_are_empty() {
        assert_eq!(
            printed(Format::Table, &events()[..2], None),
            "eventName                               outcome\n\
             PutRetentionSettings                    forwarded\n\
             admin.conversations.setCustomRetention  denied\n"
        );
        assert_eq!(printed(Format::Table, &[], None), "eventName  outcome\n(no events)\n");
        assert_eq!(printed(Format::Table, &[], Some("nothing here")), "nothing here\n");
        assert!(printed(Format::Table, &events()[..1], Some("nothing here")).starts_with("eventName"));
    }
}
