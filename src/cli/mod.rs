//! The command line (SPEC §5). `main.rs` only parses arguments and calls `cli::run`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::Config;

pub mod archive;
pub mod audit;
pub mod health;
pub mod policy_test;
pub mod progress;
pub mod store;
pub mod verify;

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
    /// Read the audit log: the one --db names, else the one the --config file `serve` runs
    /// with names, else retention-audit.db in the current directory.
    Audit {
        /// Which audit command.
        #[command(subcommand)]
        command: Box<AuditCommand>,
    },
    /// Ask the configured admin listener's /healthz (for container health checks); exit 0
    /// when healthy, 1 otherwise.
    Health {
        /// Configuration file (TOML) naming the admin listener and its token.
        #[arg(long, env = "RETENTION_PROXY_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Alert sinks (`[[alerts]]`).
    Alerts {
        /// Which alerts command.
        #[command(subcommand)]
        command: AlertsCommand,
    },
}

/// `alerts` subcommands.
#[derive(Debug, Subcommand)]
pub enum AlertsCommand {
    /// Send one sample alert (a refused shortening, marked `"alertTest": true`) to a sink and
    /// print what it answered; exit 1 when it did not accept it.
    Test {
        /// Configuration file (TOML) with the `[[alerts]]` sink.
        #[arg(long)]
        config: PathBuf,
        /// The sink's `id`.
        #[arg(long)]
        id: String,
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
    /// guardrails; exit 0 when it would be forwarded, 2 when it would be refused. Warns when
    /// the configuration has no guardrail.
    Test {
        /// Configuration file (TOML) with the guardrails to try.
        #[arg(long)]
        config: Option<PathBuf>,
        /// The request file, or - for standard input: request line, headers, blank line,
        /// body. A line break ending the file is not part of the body (the body ends at
        /// Content-Length when given).
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

/// What narrows or opens the central store: a postgres:// `--db`, or `[audit.central]` of the
/// configuration `--config` names.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct FleetArgs {
    /// Only this instance's events (`proxyInstance`); with the central store, only its chain.
    #[arg(long)]
    pub instance: Option<String>,
    /// A file holding the central store's password (else the URL's, else PGPASSWORD).
    #[arg(long)]
    pub password_file: Option<PathBuf>,
    /// CA certificates (PEM) the central store's TLS certificate is checked against, besides
    /// the public roots (else PGSSLROOTCERT).
    #[arg(long, env = "PGSSLROOTCERT")]
    pub ca_file: Option<PathBuf>,
}

/// `audit` subcommands. Each finds the log through `--db`, else `--config` (the file `serve`
/// runs with), else `retention-audit.db` in the current directory.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Show merged events, filtered.
    Query {
        /// `--db` and `--config`.
        #[command(flatten)]
        db: store::DbArgs,
        /// `--instance` and `--password-file`.
        #[command(flatten)]
        fleet: FleetArgs,
        /// Events at or after T: RFC 3339, a UTC date YYYY-MM-DD (from its start) or an age
        /// (15m, 24h, 7d).
        #[arg(long, value_name = "T")]
        since: Option<String>,
        /// Events before T: RFC 3339, a UTC date YYYY-MM-DD (the whole day included) or an
        /// age (15m, 24h, 7d).
        #[arg(long, value_name = "T")]
        until: Option<String>,
        /// eventName: one of the calls the proxy records, e.g. PutRetentionSettings or
        /// admin.conversations.setCustomRetention (a name it never records is an error that
        /// lists them).
        #[arg(long)]
        event_name: Option<String>,
        /// eventSource: chime.amazonaws.com, messaging-chime.amazonaws.com,
        /// identity-chime.amazonaws.com, slack.com, retention-proxy, or a short name: chime,
        /// chime_messaging, chime_identity, slack.
        #[arg(long)]
        source: Option<String>,
        /// Who: a client key's principal name, an access key id, a bearer ARN, a Slack user
        /// id, a token fingerprint, or a raw Slack token (fingerprinted first, never printed).
        #[arg(long)]
        actor: Option<String>,
        /// The key Slack tokens are fingerprinted under, to compare a raw token given to
        /// `--actor`. Default: the configuration's `[audit] hmac_key_file` with --config, else
        /// `<db>.hmac-key`, where `serve` keeps it.
        #[arg(long)]
        hmac_key_file: Option<PathBuf>,
        /// Account id, ARN or Slack channel id.
        #[arg(long)]
        resource: Option<String>,
        /// Guardrail decision: allow, deny, dry_run_deny, exempt.
        #[arg(long)]
        decision: Option<String>,
        /// Outcome: forwarded, denied, rejected, upstream_error, audit_unavailable, applied,
        /// unknown.
        #[arg(long)]
        outcome: Option<String>,
        /// At most N events.
        #[arg(long, value_name = "N")]
        limit: Option<u64>,
        /// Which events first (and which N `--limit` keeps): newest (by event time) or oldest
        /// (in log order). Default: newest with --limit, oldest without.
        #[arg(long, value_enum)]
        order: Option<Order>,
        /// Output format. The table is sized for a terminal: token fingerprints shortened
        /// (hmac-sha256:<12 hex digits>…), times to the second, no eventSource column (the
        /// event name says it), the HTTP status beside an outcome only when it is not a
        /// success. json, jsonl and csv keep every field whole.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Export events, oldest first: CloudTrail log records, JSON lines or CSV.
    Export {
        /// `--db` and `--config`.
        #[command(flatten)]
        db: store::DbArgs,
        /// `--instance` and `--password-file`.
        #[command(flatten)]
        fleet: FleetArgs,
        /// Output format.
        #[arg(long, value_enum)]
        format: ExportFormat,
        /// Events at or after T: RFC 3339, a UTC date YYYY-MM-DD (from its start) or an age
        /// (15m, 24h, 7d).
        #[arg(long, value_name = "T")]
        since: Option<String>,
        /// Events before T: RFC 3339, a UTC date YYYY-MM-DD (the whole day included) or an
        /// age (15m, 24h, 7d).
        #[arg(long, value_name = "T")]
        until: Option<String>,
        /// Output file; for cloudtrail, an existing directory (or one ending in /) receives
        /// gzip files split per hour. Default: standard output.
        #[arg(long)]
        out: Option<PathBuf>,
        /// The 12-digit AWS account that names the hourly files of records that name none
        /// (Slack's); default 000000000000. Only with `--format cloudtrail --out DIR`.
        #[arg(long, value_name = "ACCOUNT")]
        account_id: Option<String>,
    },
    /// Copy a live database consistently (SQLite's online backup), for `audit verify` and
    /// safekeeping. The HMAC key file beside it is not copied.
    Backup {
        /// `--db` and `--config` (the local SQLite file: `[audit] path`; the proxy may be
        /// writing to it).
        #[command(flatten)]
        db: store::DbArgs,
        /// The copy to create (mode 0600).
        #[arg(long)]
        out: PathBuf,
        /// Replace `--out` when it exists.
        #[arg(long)]
        force: bool,
    },
    /// Every change and read of one resource, in order: actor, previous -> new, decision, outcome.
    History {
        /// `--db` and `--config`.
        #[command(flatten)]
        db: store::DbArgs,
        /// `--instance` and `--password-file`.
        #[command(flatten)]
        fleet: FleetArgs,
        /// Account id, ARN or Slack channel id.
        #[arg(long)]
        resource: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// The last known retention of every resource the proxy has seen.
    State {
        /// `--db` and `--config`.
        #[command(flatten)]
        db: store::DbArgs,
        /// `--instance` and `--password-file`.
        #[command(flatten)]
        fleet: FleetArgs,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Walk the hash chain and its signed checkpoints; exit 0 when intact, 1 with the first
    /// broken seq or checkpoint.
    Verify {
        /// `--db` and `--config`.
        #[command(flatten)]
        db: store::DbArgs,
        /// `--instance` and `--password-file`.
        #[command(flatten)]
        fleet: FleetArgs,
        /// The checkpoint public key (PEM, as `audit pubkey` prints it) kept elsewhere:
        /// every checkpoint's signature must verify with it. Default: the configuration's
        /// checkpoint key with --config, else the key beside the database, when it is readable.
        #[arg(long)]
        pubkey: Option<PathBuf>,
        /// The checkpoint files kept elsewhere (`[audit] checkpoint_dir`): each must be in the
        /// log as written, so a log cut short or rewritten before the newest one fails.
        #[arg(long)]
        checkpoints: Option<PathBuf>,
        /// Check a directory `audit archive` wrote instead of the database: the archived
        /// records against their checkpoints.
        #[arg(long)]
        archive: Option<PathBuf>,
    },
    /// Move records older than T out of the database into DIR: their stored texts, CloudTrail
    /// files of their events and the checkpoints that cover them. The chain left starts at a
    /// signed checkpoint.
    Archive {
        /// `--db` and `--config` (the local SQLite file: `[audit] path`).
        #[command(flatten)]
        db: store::DbArgs,
        /// Records before this time (RFC 3339, a UTC date YYYY-MM-DD or an age: 90d) that a
        /// checkpoint covers.
        #[arg(long, value_name = "T")]
        before: String,
        /// Directory the archive is written to.
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the checkpoint public key (PEM), to keep elsewhere for `verify --pubkey`.
    Pubkey {
        /// Audit database; the key is `<db>.checkpoint-key`.
        #[arg(long, default_value = "retention-audit.db", conflicts_with = "config")]
        db: PathBuf,
        /// Or a configuration file naming `[audit] checkpoint_key_file` (or `path`).
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

/// `audit query --order`.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Order {
    /// Newest first, by event time (as LookupEvents and the viewer list them).
    Newest,
    /// Oldest first, in the order the log holds them.
    Oldest,
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
                    "configuration OK ({} guardrail{}, {} alert sink{})",
                    c.guardrails.len(),
                    if c.guardrails.len() == 1 { "" } else { "s" },
                    c.alerts.len(),
                    if c.alerts.len() == 1 { "" } else { "s" }
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Command::Audit { command } => match audit::run(*command) {
            Ok(code) => code,
            Err(failed) => {
                eprintln!("retention-proxy: {}", failed.message);
                ExitCode::from(failed.code)
            }
        },
        Command::Policy {
            command: PolicyCommand::Test { config, request },
        } => {
            let config_path = config;
            let config = match load_config(config_path.as_ref()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            match policy_test::run(&config, config_path.as_deref(), &request) {
                Ok(code) => code,
                Err(msg) => {
                    eprintln!("retention-proxy: {msg}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Ca {
            command: CaCommand::Init { out },
        } => match crate::tunnel::ca::init_ca(&out) {
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
            match crate::http::proxy_auth::hash_password(password) {
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
        Command::Alerts {
            command: AlertsCommand::Test { config, id },
        } => {
            let config = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("retention-proxy: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(crate::alerts::send_test(&config, &id)) {
                Ok(answer) => {
                    println!("{answer}");
                    ExitCode::SUCCESS
                }
                Err(msg) => {
                    eprintln!("retention-proxy: {msg}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Health { config } => {
            let checked = load_config(config.as_ref())
                .map_err(|e| format!("cannot read the configuration: {}", e.to_string().replace('\n', "; ")))
                .and_then(|c| health::check(&c));
            match checked {
                Ok(line) => {
                    println!("{line}");
                    ExitCode::SUCCESS
                }
                Err(msg) => {
                    eprintln!("retention-proxy: {msg}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Serve { .. } => unreachable!("serve is run by main"),
    }
}
