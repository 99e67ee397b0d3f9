//! The command line (SPEC §5). `main.rs` only parses arguments and calls `cli::run`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use serde_json::Value;

use crate::audit::AuditError;
use crate::audit::query::{self, Filter, Verification};
use crate::audit::sqlite;
use crate::config::Config;
use crate::export;

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
    /// Manage the CA used to intercept CONNECT tunnels to vendor hosts.
    Ca {
        /// Which CA command.
        #[command(subcommand)]
        command: CaCommand,
    },
    /// Read a password on standard input and print its Argon2 hash for `[forward.users]`.
    HashPassword,
    /// Try guardrails offline.
    Policy {
        /// Which policy command.
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Read the audit log.
    Audit {
        /// Which audit command.
        #[command(subcommand)]
        command: AuditCommand,
    },
}

/// `ca` subcommands.
#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Create a new interception CA: DIR/ca.pem (for clients to trust) and DIR/ca.key (0600).
    Init {
        /// Directory to create the CA in (created if missing; existing files are never overwritten).
        #[arg(long)]
        out: PathBuf,
    },
}

/// `policy` subcommands.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Evaluate one raw HTTP request (as it would arrive on the wire) against the configured
    /// guardrails; exit 0 when it would be forwarded, 2 when it would be refused.
    Test {
        /// Configuration file (TOML) with the guardrails to try.
        #[arg(long)]
        config: Option<PathBuf>,
        /// The request: request line, headers, blank line, body.
        request: PathBuf,
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
    /// Export events: CloudTrail log records, JSON lines or CSV.
    Export {
        /// Audit database.
        #[arg(long, default_value = "retention-audit.db")]
        db: PathBuf,
        /// Output format.
        #[arg(long, value_enum)]
        format: ExportFormat,
        /// Events at or after T (RFC 3339 or an age: 15m, 24h, 7d).
        #[arg(long)]
        since: Option<String>,
        /// Events before T.
        #[arg(long)]
        until: Option<String>,
        /// Output file; for cloudtrail, an existing directory (or one ending in /) receives
        /// gzip files split per hour. Default: standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Every change and read of one resource, in order: actor, previous -> new, decision, outcome.
    History {
        /// Audit database.
        #[arg(long, default_value = "retention-audit.db")]
        db: PathBuf,
        /// Account id, ARN or Slack channel id.
        #[arg(long)]
        resource: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// The last known retention of every resource the proxy has seen.
    State {
        /// Audit database.
        #[arg(long, default_value = "retention-audit.db")]
        db: PathBuf,
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

/// `audit export` formats.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum ExportFormat {
    /// `{"Records":[…]}` as CloudTrail log files are shaped.
    Cloudtrail,
    /// One merged event per line.
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
        Command::Policy {
            command: PolicyCommand::Test { config, request },
        } => {
            let config = match load_config(config.as_ref()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            match policy_test(&config, &request) {
                Ok(code) => code,
                Err(msg) => {
                    eprintln!("retention-proxy: {msg}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Ca {
            command: CaCommand::Init { out },
        } => match crate::intercept::init_ca(&out) {
            Ok((cert, key)) => {
                println!("Created the interception CA:");
                println!(
                    "  certificate: {}   (public: every client must trust it)",
                    cert.display()
                );
                println!(
                    "  private key: {}   (mode 0600: keep it on the proxy host only)",
                    key.display()
                );
                println!();
                println!("Enable interception in the proxy configuration:");
                println!("  [forward]");
                println!("  ca_cert = \"{}\"", cert.display());
                println!("  ca_key = \"{}\"", key.display());
                println!();
                println!("Make clients trust it (only for traffic through the proxy):");
                println!("  AWS CLI / boto3:   AWS_CA_BUNDLE={}", cert.display());
                println!("  Python requests:   REQUESTS_CA_BUNDLE={}", cert.display());
                println!(
                    "  slack_sdk:         ssl=ssl.create_default_context(cafile=\"{}\")",
                    cert.display()
                );
                println!("  Node.js:           NODE_EXTRA_CA_CERTS={}", cert.display());
                println!("  curl:              --cacert {}", cert.display());
                println!("with HTTPS_PROXY=http://<proxy host>:<port> set for the same clients.");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("retention-proxy: {e}");
                ExitCode::from(1)
            }
        },
        Command::HashPassword => {
            let mut line = String::new();
            if let Err(e) = std::io::stdin().read_line(&mut line) {
                eprintln!("retention-proxy: cannot read the password: {e}");
                return ExitCode::from(1);
            }
            let password = line.trim_end_matches(['\n', '\r']);
            if password.is_empty() {
                eprintln!("retention-proxy: the password is empty; type it on standard input");
                return ExitCode::from(1);
            }
            match crate::auth::hash_password(password) {
                Ok(h) => {
                    println!("{h}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("retention-proxy: cannot hash the password: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Serve { .. } => unreachable!("serve is run by main"),
    }
}

/// A raw HTTP/1.1 request read from a file.
struct RawRequest {
    method: http::Method,
    target: String,
    headers: http::HeaderMap,
    body: Vec<u8>,
}

fn parse_raw_request(bytes: &[u8]) -> Result<RawRequest, String> {
    let split = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, i + 4))
        .or_else(|| bytes.windows(2).position(|w| w == b"\n\n").map(|i| (i, i + 2)))
        .unwrap_or((bytes.len(), bytes.len()));
    let head = std::str::from_utf8(&bytes[..split.0]).map_err(|_| "the request head is not UTF-8".to_string())?;
    let mut lines = head.lines().map(|l| l.trim_end_matches('\r'));
    let first = lines
        .next()
        .filter(|l| !l.trim().is_empty())
        .ok_or("the file holds no request line")?;
    let mut parts = first.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Err(format!("{first:?} is not a request line like \"PUT /path HTTP/1.1\""));
    };
    let method =
        http::Method::from_bytes(method.as_bytes()).map_err(|_| format!("{method:?} is not an HTTP method"))?;
    let mut headers = http::HeaderMap::new();
    for l in lines {
        let (k, v) = l.split_once(':').ok_or_else(|| format!("{l:?} is not a header line"))?;
        let name =
            http::HeaderName::from_bytes(k.trim().as_bytes()).map_err(|_| format!("{k:?} is not a header name"))?;
        let value = http::HeaderValue::from_str(v.trim()).map_err(|_| format!("the value of {k:?} is not valid"))?;
        headers.append(name, value);
    }
    let mut body = bytes[split.1..].to_vec();
    if let Some(len) = headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
    {
        body.truncate(len);
    }
    Ok(RawRequest {
        method,
        target: target.to_string(),
        headers,
        body,
    })
}

fn policy_test(config: &Config, path: &PathBuf) -> Result<ExitCode, String> {
    use crate::guardrail;
    use crate::policy::{self, Judgement};
    use crate::recognise::{self, RequestParts};
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let req = parse_raw_request(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    let uri: http::Uri = req
        .target
        .parse()
        .map_err(|_| format!("{:?} is not a request target", req.target))?;
    let family = match uri.host() {
        Some(h) => recognise::family_for_host(h),
        None => recognise::route_family(uri.path()),
    };
    let matched = family.and_then(|f| recognise::classify_any(f, &req.method, uri.path()));
    let Some((m, odd_path)) = matched else {
        println!("request:  {} {}", req.method, req.target);
        println!("not a retention call: it would be streamed through without audit or guardrails");
        return Ok(ExitCode::SUCCESS);
    };
    let parts = RequestParts {
        method: &req.method,
        query: uri.query(),
        headers: &req.headers,
    };
    let body = (req.body.len() <= config.server.max_body_bytes).then_some(req.body.as_slice());
    let (call, problem) = policy::read(&m, odd_path, &parts, body, config.server.max_body_bytes);
    let mut principals = Vec::new();
    if m.op.family().is_aws() {
        let claimed = crate::aws::claimed_identity(req.headers.get("authorization").and_then(|v| v.to_str().ok()));
        principals.extend(claimed.access_key_id);
    }
    principals.extend(call.chime_bearer.clone());
    if let Some(tok) = &call.slack_token
        && let Ok(key) = std::fs::read_to_string(&config.audit.hmac_key_file)
        && let Ok(key) = hex::decode(key.trim())
    {
        principals.push(crate::event::token_fingerprint(&key, tok));
    }
    println!("request:   {} {}", req.method, req.target);
    println!("call:      {} {}", m.op.family().event_source(), m.op.name());
    for c in &call.changes {
        println!("change:    {} of {} -> {}", c.target, c.resource, c.new);
    }
    if !principals.is_empty() {
        println!("caller:    {}", principals.join(", "));
    }
    if problem.is_none() {
        for rule in &config.guardrails {
            let v = guardrail::evaluate(
                std::slice::from_ref(rule),
                &guardrail::Facts {
                    changes: &call.changes,
                    account: call.account.as_deref(),
                    arns: &call.arns,
                    slack_channel: call.slack_channel.as_deref(),
                    principals: &principals,
                },
            );
            let why = if v.reason.is_empty() {
                "passes or does not apply".to_string()
            } else {
                v.reason.clone()
            };
            println!("rule:      {:<24} {:<13} {why}", rule.id, v.decision.as_str());
        }
    }
    match policy::judge(&config.guardrails, &call, problem, &principals) {
        Judgement::Forward(v) => {
            println!("decision:  {} (forwarded)", v.decision.as_str());
            Ok(ExitCode::SUCCESS)
        }
        Judgement::Refuse {
            outcome,
            verdict,
            error,
        } => {
            println!(
                "decision:  {} ({outcome}: {})",
                verdict.decision.as_str(),
                error.message
            );
            Ok(ExitCode::from(2))
        }
    }
}

fn times(since: Option<String>, until: Option<String>) -> Result<(Option<String>, Option<String>), String> {
    let now = time::OffsetDateTime::now_utc();
    let since = since
        .map(|t| query::parse_time(&t, now).map_err(|e| format!("--since: {e}")))
        .transpose()?;
    let until = until
        .map(|t| query::parse_time(&t, now).map_err(|e| format!("--until: {e}")))
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
                    .push(self.columns.iter().map(|c| export::cell(e, c)).collect());
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
            let (since, until) = times(since, until)?;
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
                limit,
                ..Filter::default()
            };
            let conn = sqlite::open_read_only(&db).map_err(|e| e.to_string())?;
            print_events(format, &export::CSV_COLUMNS, None, |visit| {
                query::for_each(&conn, &f, |_, e| visit(e))
            })
        }
        AuditCommand::History { db, resource, format } => {
            let f = Filter {
                resource: Some(resource.clone()),
                ..Filter::default()
            };
            let conn = sqlite::open_read_only(&db).map_err(|e| e.to_string())?;
            let empty = format!("no events for resource {resource:?}");
            print_events(format, &HISTORY_COLUMNS, Some(empty), |visit| {
                query::for_each(&conn, &f, |_, mut e| {
                    // Keep only this resource's changes, so "previous -> new" reads as its
                    // own history.
                    if let Some(Value::Array(cs)) = e.get_mut("changes") {
                        cs.retain(|c| c.get("resource").and_then(Value::as_str) == Some(resource.as_str()));
                    }
                    visit(e)
                })
            })
        }
        AuditCommand::State { db, format } => {
            let conn = sqlite::open_read_only(&db).map_err(|e| e.to_string())?;
            let rows = query::state(&conn).map_err(|e| e.to_string())?;
            let columns = ["resource", "target", "value", "seenAt", "eventID"];
            let empty = "no retention values seen yet".to_string();
            print_events(format, &columns, Some(empty), |visit| {
                rows.into_iter().try_for_each(|r| {
                    visit(
                        serde_json::json!({"resource": r.resource, "target": r.target, "value": r.value,
                        "seenAt": r.seen_at, "eventID": r.event_id}),
                    )
                })
            })
        }
        AuditCommand::Export {
            db,
            format,
            since,
            until,
            out,
        } => {
            let (since, until) = times(since, until)?;
            let f = Filter {
                since,
                until,
                ..Filter::default()
            };
            let conn = sqlite::open_read_only(&db).map_err(|e| e.to_string())?;
            export_events(&conn, &f, format, out.as_deref())
        }
    }
}

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
    conn: &rusqlite::Connection,
    f: &Filter,
    format: ExportFormat,
    out: Option<&std::path::Path>,
) -> Result<ExitCode, String> {
    use std::io::IsTerminal;
    let progress = std::io::stderr().is_terminal();
    let mut n: u64 = 0;
    let tick = |n: u64| {
        if progress && n.is_multiple_of(10_000) {
            eprint!("\rexported {n} events");
        }
    };
    let werr = |e: std::io::Error| crate::audit::AuditError::Read(format!("cannot write the export: {e}"));
    let to_dir = out.filter(|p| {
        format == ExportFormat::Cloudtrail && (p.is_dir() || p.as_os_str().to_string_lossy().ends_with('/'))
    });
    let result = if let Some(dir) = to_dir {
        let mut files = export::HourlyFiles::new(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        query::for_each(conn, f, |_, e| {
            n += 1;
            tick(n);
            files.push(&export::cloudtrail_record(e)).map_err(werr)
        })
        .and_then(|_| files.finish().map_err(werr))
        .map(|files| {
            if progress {
                eprintln!();
            }
            eprintln!("exported {n} events to {} files under {}", files.len(), dir.display());
        })
    } else {
        let sink: Box<dyn Write> = match out {
            Some(p) => Box::new(std::fs::File::create(p).map_err(|e| format!("cannot create {}: {e}", p.display()))?),
            None => Box::new(std::io::stdout().lock()),
        };
        let mut w = std::io::BufWriter::new(sink);
        match format {
            ExportFormat::Cloudtrail => {
                let mut doc = export::RecordsWriter::new(w).map_err(|e| format!("cannot write the export: {e}"))?;
                query::for_each(conn, f, |_, e| {
                    n += 1;
                    tick(n);
                    doc.push(&export::cloudtrail_record(e)).map_err(werr)
                })
                .and_then(|_| doc.finish().map(|_| ()).map_err(werr))
            }
            ExportFormat::Jsonl => query::for_each(conn, f, |_, e| {
                n += 1;
                tick(n);
                writeln!(w, "{e}").map_err(werr)
            })
            .and_then(|_| w.flush().map_err(werr)),
            ExportFormat::Csv => writeln!(w, "{}", export::CSV_COLUMNS.join(","))
                .map_err(werr)
                .and_then(|_| {
                    query::for_each(conn, f, |_, e| {
                        n += 1;
                        tick(n);
                        writeln!(w, "{}", export::csv_row(&e)).map_err(werr)
                    })
                })
                .and_then(|_| w.flush().map_err(werr)),
        }
        .map(|_| {
            if progress {
                eprintln!("\rexported {n} events");
            }
        })
    };
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) if e.to_string().contains("Broken pipe") => Ok(ExitCode::SUCCESS),
        Err(e) => Err(e.to_string()),
    }
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
