//! Which store an `audit` command reads: `--db` (a SQLite file, or the central store for a
//! postgres:// URL), else the configuration `serve` runs with (`--config`: `[audit] path`, or
//! `[audit.central]` when it is set), else `retention-audit.db`; and the keys beside it.

use std::path::{Path, PathBuf};

use super::{EXIT_CONFIG, FleetArgs};
use crate::audit::{self, Reader};
use crate::config::{Central, Config};

/// The database when neither `--db` nor `--config` names one.
pub const DEFAULT_DB: &str = "retention-audit.db";

/// `--db` and `--config`: where an `audit` command finds the log and the keys beside it.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DbArgs {
    /// The audit database: a SQLite file, or the fleet's central store as a postgres:// URL.
    /// Wins over --config; with neither, retention-audit.db in the current directory.
    #[arg(long, value_name = "FILE")]
    pub db: Option<PathBuf>,
    /// The configuration file `serve` runs with: the database is its `[audit] path` (the
    /// central store when `[audit.central]` is set, for commands that read), and the HMAC and
    /// checkpoint key files are its own. An explicit --db wins for the database.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// An `audit` command that could not run: one sentence, and the exit code.
#[derive(Debug)]
pub struct Failure {
    /// What went wrong.
    pub message: String,
    /// The exit code: 64 for a configuration that does not load, else 2.
    pub code: u8,
}

impl From<String> for Failure {
    fn from(message: String) -> Failure {
        Failure { message, code: 2 }
    }
}

impl From<&str> for Failure {
    fn from(message: &str) -> Failure {
        Failure::from(message.to_string())
    }
}

/// Where the log and its keys are, once `--db` and `--config` are weighed.
#[derive(Clone)]
pub struct Log {
    /// The SQLite file, or the postgres:// URL given as `--db`.
    pub db: PathBuf,
    /// The central store `[audit.central]` names, when the configuration chose it.
    pub central: Option<Central>,
    /// The key Slack tokens are fingerprinted under.
    pub hmac_key_file: PathBuf,
    /// The checkpoint signing key.
    pub checkpoint_key_file: PathBuf,
    /// Whether the key files come from a configuration (else they are the defaults beside
    /// the database).
    pub keys_configured: bool,
}

impl Log {
    /// Whether the log is the fleet's central store.
    pub fn is_central(&self) -> bool {
        self.central.is_some() || crate::config::central::is_postgres_url(&self.db.to_string_lossy())
    }
}

impl DbArgs {
    /// The log to read. `central`: whether the command can read the central store (`backup`
    /// and `archive` work on the local SQLite file only, so they take `[audit] path`).
    pub fn resolve(&self, central: bool) -> Result<Log, Failure> {
        let config = self.config.as_deref().map(load).transpose()?;
        let db = match (&self.db, &config) {
            (Some(db), _) => db.clone(),
            (None, Some(c)) => c.audit.path.clone(),
            (None, None) => PathBuf::from(DEFAULT_DB),
        };
        let central = match (&self.db, &config) {
            (None, Some(c)) if central => c.audit.central.clone(),
            _ => None,
        };
        let beside = |suffix: &str| {
            let mut s = db.clone().into_os_string();
            s.push(suffix);
            PathBuf::from(s)
        };
        Ok(Log {
            hmac_key_file: config
                .as_ref()
                .map_or_else(|| beside(".hmac-key"), |c| c.audit.hmac_key_file.clone()),
            checkpoint_key_file: config
                .as_ref()
                .map_or_else(|| beside(".checkpoint-key"), |c| c.audit.checkpoint_key_file.clone()),
            keys_configured: config.is_some(),
            central,
            db,
        })
    }
}

/// Loads `--config`; a file that does not load is one sentence and exit 64, as `check-config`.
fn load(path: &Path) -> Result<Config, Failure> {
    Config::load(path).map_err(|e| {
        let problems: Vec<String> = e
            .problems
            .iter()
            .map(|(key, reason)| match key.as_str() {
                "" => reason.clone(),
                key => format!("{key}: {reason}"),
            })
            .collect();
        Failure {
            message: format!("--config {} cannot be loaded: {}", path.display(), problems.join("; ")),
            code: EXIT_CONFIG,
        }
    })
}

/// Opens the log: the central store (a postgres:// `--db` or the configuration's
/// `[audit.central]`), else the SQLite file.
pub fn open(log: &Log, fleet: &FleetArgs) -> Result<Box<dyn Reader>, String> {
    if let Some(configured) = &log.central {
        if fleet.password_file.is_some() {
            return Err(
                "--password-file is for a postgres:// --db; with --config the password comes from [audit.central]"
                    .into(),
            );
        }
        let mut central = configured.clone();
        if central.ca_file.is_none() {
            central.ca_file.clone_from(&fleet.ca_file);
        }
        let reader =
            audit::postgres::PostgresReader::open(&central, fleet.instance.clone()).map_err(|e| e.to_string())?;
        return Ok(Box::new(reader));
    }
    let db = log.db.as_path();
    let text = db.to_string_lossy();
    if crate::config::central::is_postgres_url(&text) {
        let mut central = crate::config::Central::connect_to(&text, fleet.password_file.as_deref())
            .map_err(|e| format!("--db {e}"))?;
        central.ca_file.clone_from(&fleet.ca_file);
        let reader =
            audit::postgres::PostgresReader::open(&central, fleet.instance.clone()).map_err(|e| e.to_string())?;
        return Ok(Box::new(reader));
    }
    if fleet.password_file.is_some() {
        return Err("--password-file is for a postgres:// --db".into());
    }
    if fleet.ca_file.is_some() && std::env::var_os("PGSSLROOTCERT").is_none() {
        return Err("--ca-file is for a postgres:// --db".into());
    }
    audit::open_reader(&audit::Store::Local(db.to_path_buf())).map_err(|e| e.to_string())
}
