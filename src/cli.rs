//! The command line (SPEC §5). `main.rs` only parses arguments and calls `cli::run`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use serde_json::Value;

use crate::audit::query::{self, Filter, Verification};
use crate::audit::sqlite;
use crate::config::Config;

/// Exit code for a configuration error (EX_CONFIG-like, as SPEC §5 asks).
pub const EXIT_CONFIG: u8 = 64;

/// retention-proxy: audit-logging proxy for chat-retention admin APIs.
#[derive(Debug, Parser)]
#[command(name = "retention-proxy", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy (embedded defaults without --config: listen 127.0.0.1:8080).
    Serve {
        /// Configuration file (TOML).
        #[arg(long, env = "RETENTION_PROXY_CONFIG")]
        config: Option<PathBuf>,
        /// Log format.
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
    },
    /// Validate a configuration and print the effective configuration.
    CheckConfig {
        /// Configuration file (TOML).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Read the audit log.
    Audit {
        /// Which audit command.
        #[command(subcommand)]
        command: AuditCommand,
    },
}

/// Log output format.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `audit` subcommands.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Show merged events, filtered.
    Query {
        /// Audit database.
        #[arg(long, default_value = "retention-audit.db")]
        db: PathBuf,
        /// Events at or after T (RFC 3339 or an age: 15m, 24h, 7d).
        #[arg(long)]
        since: Option<String>,
        /// Events before T.
        #[arg(long)]
        until: Option<String>,
        /// eventName, e.g. PutRetentionSettings.
        #[arg(long)]
        event_name: Option<String>,
        /// eventSource (chime.amazonaws.com, slack.com, or chime, chime_messaging, chime_identity, slack).
        #[arg(long)]
        source: Option<String>,
        /// Access key id, bearer ARN, token fingerprint.
        #[arg(long)]
        actor: Option<String>,
        /// Account id, ARN or Slack channel id.
        #[arg(long)]
        resource: Option<String>,
        /// Guardrail decision: allow, deny, dry_run_deny, exempt.
        #[arg(long)]
        decision: Option<String>,
        /// At most N events.
        #[arg(long)]
        limit: Option<u64>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Walk the hash chain; exit 0 when intact, 1 with the first broken seq.
    Verify {
        /// Audit database.
        #[arg(long, default_value = "retention-audit.db")]
        db: PathBuf,
    },
}

/// `audit query` output formats.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Format {
    /// Aligned columns.
    Table,
    /// One JSON array.
    Json,
    /// One event per line.
    Jsonl,
    /// Comma-separated, with a header row.
    Csv,
}

/// Loads the configuration named on the command line, or the embedded defaults.
pub fn load_config(path: Option<&PathBuf>) -> Result<Config, crate::config::ConfigError> {
    match path {
        Some(p) => Config::load(p),
        None => Ok(Config::default()),
    }
}

/// Runs a non-serve command; errors go to stderr as one sentence.
pub fn run_offline(cmd: Command) -> ExitCode {
    match cmd {
        Command::CheckConfig { config } => match load_config(config.as_ref()) {
            Ok(c) => {
                print!("{}", c.to_toml());
                eprintln!(
                    "configuration OK ({} guardrail{})",
                    c.guardrails.len(),
                    if c.guardrails.len() == 1 { "" } else { "s" }
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Command::Audit { command } => match audit(command) {
            Ok(code) => code,
            Err(msg) => {
                eprintln!("retention-proxy: {msg}");
                ExitCode::from(2)
            }
        },
        Command::Serve { .. } => unreachable!("serve is run by main"),
    }
}

fn audit(cmd: AuditCommand) -> Result<ExitCode, String> {
    match cmd {
        AuditCommand::Verify { db } => {
            let conn = sqlite::open_read_only(&db).map_err(|e| e.to_string())?;
            match query::verify(&conn).map_err(|e| e.to_string())? {
                Verification::Intact { records } => {
                    println!("audit chain intact: {records} records verified");
                    Ok(ExitCode::SUCCESS)
                }
                Verification::Broken { seq, reason } => {
                    println!("audit chain broken at seq {seq}: {reason}");
                    Ok(ExitCode::from(1))
                }
            }
        }
        AuditCommand::Query {
            db,
            since,
            until,
            event_name,
            source,
            actor,
            resource,
            decision,
            limit,
            format,
        } => {
            let now = time::OffsetDateTime::now_utc();
            let since = since
                .map(|t| query::parse_time(&t, now).map_err(|e| format!("--since: {e}")))
                .transpose()?;
            let until = until
                .map(|t| query::parse_time(&t, now).map_err(|e| format!("--until: {e}")))
                .transpose()?;
            if let Some(d) = &decision
                && !["allow", "deny", "dry_run_deny", "exempt"].contains(&d.as_str())
            {
                return Err(format!(
                    "--decision {d:?} must be one of allow, deny, dry_run_deny, exempt"
                ));
            }
            let f = Filter {
                since,
                until,
                event_name,
                source,
                actor,
                resource,
                decision,
                after_seq: None,
                limit,
            };
            let conn = sqlite::open_read_only(&db).map_err(|e| e.to_string())?;
            let events = query::query(&conn, &f).map_err(|e| e.to_string())?;
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            let res = match format {
                Format::Json => serde_json::to_writer_pretty(&mut out, &events)
                    .map_err(std::io::Error::other)
                    .and_then(|_| writeln!(out)),
                Format::Jsonl => events.iter().try_for_each(|e| writeln!(out, "{e}")),
                Format::Csv => write_csv(&mut out, &events),
                Format::Table => write_table(&mut out, &events),
            };
            match res.and_then(|_| out.flush()) {
                Ok(()) => Ok(ExitCode::SUCCESS),
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
                Err(e) => Err(format!("cannot write the output: {e}")),
            }
        }
    }
}

/// The columns of `table` and `csv`.
const COLUMNS: [&str; 11] = [
    "seq",
    "eventTime",
    "eventSource",
    "eventName",
    "actor",
    "resource",
    "change",
    "decision",
    "outcome",
    "httpStatus",
    "eventID",
];

fn cell(e: &Value, col: &str) -> String {
    let s = |v: Option<&Value>| match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    };
    match col {
        "actor" => {
            let u = e.get("userIdentity");
            let pick = ["accessKeyId", "chimeBearer", "tokenFingerprint"]
                .iter()
                .find_map(|k| u.and_then(|u| u.get(*k)).filter(|v| !v.is_null()));
            s(pick)
        }
        "resource" => e
            .get("resources")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|r| r.get("id").and_then(Value::as_str))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default(),
        "change" => e
            .get("changes")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|c| {
                        let v = |k| match c.get(k) {
                            Some(Value::Null) | None => "?".to_string(),
                            Some(Value::String(x)) => x.clone(),
                            Some(x) => x.to_string(),
                        };
                        format!(
                            "{}: {} -> {}",
                            c.get("target").and_then(Value::as_str).unwrap_or(""),
                            v("previous"),
                            v("new")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .unwrap_or_default(),
        "decision" => s(e.get("guardrail").and_then(|g| g.get("decision"))),
        other => s(e.get(other)),
    }
}

fn write_csv(out: &mut impl Write, events: &[Value]) -> std::io::Result<()> {
    writeln!(out, "{}", COLUMNS.join(","))?;
    for e in events {
        let row: Vec<String> = COLUMNS
            .iter()
            .map(|c| {
                let v = cell(e, c);
                if v.contains([',', '"', '\n', '\r']) {
                    format!("\"{}\"", v.replace('"', "\"\""))
                } else {
                    v
                }
            })
            .collect();
        writeln!(out, "{}", row.join(","))?;
    }
    Ok(())
}

fn write_table(out: &mut impl Write, events: &[Value]) -> std::io::Result<()> {
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| COLUMNS.iter().map(|c| cell(e, c)).collect())
        .collect();
    let mut widths: Vec<usize> = COLUMNS.iter().map(|c| c.len()).collect();
    for r in &rows {
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
    writeln!(out, "{}", line(COLUMNS.to_vec()).trim_end())?;
    for r in &rows {
        writeln!(out, "{}", line(r.iter().map(String::as_str).collect()).trim_end())?;
    }
    if rows.is_empty() {
        writeln!(out, "(no events)")?;
    }
    Ok(())
}
