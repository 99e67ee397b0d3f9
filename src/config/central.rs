//! `[audit.central]`: the PostgreSQL store a fleet of proxies ships its chains to (SPEC §9).
//! The URL is read as libpq reads a connection URI; the password comes from `password_file`,
//! else the URI, else `PGPASSWORD`, and is never shown: [`Central`]'s `Debug` and
//! [`Central::display`] leave it out.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[audit.central]` as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RawCentral {
    /// libpq-style URI: `postgres://user@host:5432/db?sslmode=require`.
    pub url: String,
    /// A file holding the password (its first line).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<String>,
    /// CA certificates (PEM) PostgreSQL's TLS certificate is checked against; default the
    /// public roots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// `async` (default) or `sync`.
    pub mode: String,
    /// Async mode: the oldest unshipped record may be at most this old. Default `5m`.
    pub max_lag: String,
}

impl Default for RawCentral {
    fn default() -> Self {
        RawCentral {
            url: String::new(),
            password_file: None,
            ca_file: None,
            mode: "async".into(),
            max_lag: "5m".into(),
        }
    }
}

/// When a change may be forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShipMode {
    /// After the local commit; shipped right after.
    Async,
    /// After its request link is committed in PostgreSQL too.
    Sync,
}

/// A validated `[audit.central]`, or the target of `--db postgres://…`.
#[derive(Clone)]
pub struct Central {
    /// Connection parameters, password included.
    pub pg: tokio_postgres::Config,
    /// CA file for TLS.
    pub ca_file: Option<PathBuf>,
    /// Async or sync.
    pub mode: ShipMode,
    /// Async mode's bound on the age of the oldest unshipped record.
    pub max_lag: Duration,
}

impl fmt::Debug for Central {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Central")
            .field("database", &self.display())
            .field("mode", &self.mode)
            .field("max_lag", &self.max_lag)
            .finish()
    }
}

/// Whether `s` names a PostgreSQL database rather than a file.
pub fn is_postgres_url(s: &str) -> bool {
    s.starts_with("postgres://") || s.starts_with("postgresql://")
}

/// `url` with its passwords shown as `REDACTED`: the one of its user part (`user:password@`)
/// and the `password` and `sslpassword` parameters of its query string.
pub fn redact_url(url: &str) -> String {
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let rest = &url[start..];
    let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    let authority = match authority.rfind('@') {
        Some(at) => match authority[..at].find(':') {
            Some(colon) => format!("{}:REDACTED{}", &authority[..colon], &authority[at..]),
            None => authority.to_string(),
        },
        None => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let params: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k @ ("password" | "sslpassword"), _)) => format!("{k}=REDACTED"),
                    _ => kv.to_string(),
                })
                .collect();
            format!("{path}?{}", params.join("&"))
        }
        None => tail.to_string(),
    };
    format!("{}{authority}{tail}", &url[..start])
}

impl Central {
    /// Reads `url` with its password from `password_file`, else the URI, else `PGPASSWORD`.
    /// The error is one sentence that never holds the password.
    pub fn connect_to(url: &str, password_file: Option<&std::path::Path>) -> Result<Central, String> {
        let url = url.trim();
        if !is_postgres_url(url) {
            return Err("must be a postgres:// or postgresql:// URI".into());
        }
        // tokio-postgres' own messages name the part that is wrong, never the password.
        let mut pg =
            tokio_postgres::Config::from_str(url).map_err(|e| format!("is not a valid PostgreSQL URI: {e}"))?;
        if pg.get_hosts().is_empty() {
            return Err("names no host".into());
        }
        if let Some(file) = password_file {
            let text = std::fs::read_to_string(file)
                .map_err(|e| format!("password_file {} cannot be read: {e}", file.display()))?;
            let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
            if line.is_empty() {
                return Err(format!("password_file {} is empty", file.display()));
            }
            pg.password(line);
        } else if pg.get_password().is_none()
            && let Ok(p) = std::env::var("PGPASSWORD")
            && !p.is_empty()
        {
            pg.password(p);
        }
        if pg.get_user().is_none() {
            let user = std::env::var("PGUSER")
                .or_else(|_| std::env::var("USER"))
                .unwrap_or_else(|_| "postgres".into());
            pg.user(user);
        }
        if pg.get_dbname().is_none() {
            let db = pg.get_user().unwrap_or("postgres").to_string();
            pg.dbname(db);
        }
        pg.application_name("retention-proxy");
        pg.connect_timeout(Duration::from_secs(5));
        Ok(Central {
            pg,
            ca_file: None,
            mode: ShipMode::Async,
            max_lag: Duration::from_secs(300),
        })
    }

    /// `user@host:port/db`, for logs and messages: never the password.
    pub fn display(&self) -> String {
        let host = match self.pg.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
            None => String::new(),
        };
        let port = self.pg.get_ports().first().copied().unwrap_or(5432);
        format!(
            "{}@{host}:{port}/{}",
            self.pg.get_user().unwrap_or(""),
            self.pg.get_dbname().unwrap_or("")
        )
    }
}

/// Validates `[audit.central]`; each problem is reported against its key through `bad`.
pub fn validate(raw: &RawCentral, bad: &mut dyn FnMut(&str, String)) -> Option<Central> {
    let mode = match raw.mode.as_str() {
        "async" => ShipMode::Async,
        "sync" => ShipMode::Sync,
        other => {
            bad("audit.central.mode", format!("{other:?} must be \"async\" or \"sync\""));
            ShipMode::Async
        }
    };
    let max_lag = match super::parse_duration(&raw.max_lag) {
        Ok(d) if d >= Duration::from_secs(1) => d,
        Ok(_) => {
            bad("audit.central.max_lag", "must be at least 1s".into());
            Duration::from_secs(300)
        }
        Err(e) => {
            bad("audit.central.max_lag", e);
            Duration::from_secs(300)
        }
    };
    let ca_file = raw.ca_file.as_deref().map(PathBuf::from);
    if let Some(f) = &ca_file
        && let Err(e) = std::fs::metadata(f)
    {
        bad("audit.central.ca_file", format!("{} cannot be read: {e}", f.display()));
    }
    let password_file = raw.password_file.as_deref().map(std::path::Path::new);
    match Central::connect_to(&raw.url, password_file) {
        Ok(mut c) => {
            c.mode = mode;
            c.max_lag = max_lag;
            c.ca_file = ca_file;
            Some(c)
        }
        Err(e) => {
            let key = if e.starts_with("password_file") {
                "audit.central.password_file"
            } else {
                "audit.central.url"
            };
            bad(key, e);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(raw: RawCentral) -> Result<Central, Vec<(String, String)>> {
        let mut problems = Vec::new();
        let c = validate(&raw, &mut |k, r| problems.push((k.to_string(), r)));
        match c {
            Some(c) if problems.is_empty() => Ok(c),
            _ => Err(problems),
        }
    }

    #[test]
    fn a_url_is_read_without_ever_showing_its_password() {
        let c = check(RawCentral {
            url: "postgres://retention:s3cret-pw@db.internal:6543/audit?sslmode=require".into(),
            mode: "sync".into(),
            max_lag: "30s".into(),
            ..RawCentral::default()
        })
        .unwrap();
        assert_eq!(c.display(), "retention@db.internal:6543/audit");
        assert_eq!(c.mode, ShipMode::Sync);
        assert_eq!(c.max_lag, Duration::from_secs(30));
        assert_eq!(c.pg.get_password(), Some(&b"s3cret-pw"[..]));
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn urls_are_shown_without_their_password() {
        assert_eq!(
            redact_url("postgres://retention:p%40ss:w@rd@db:5432/audit?sslmode=require"),
            "postgres://retention:REDACTED@db:5432/audit?sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://retention@db/audit"),
            "postgres://retention@db/audit"
        );
        assert_eq!(
            redact_url("postgresql://db/audit?user=a"),
            "postgresql://db/audit?user=a"
        );
        assert_eq!(
            redact_url("postgresql://db/audit?user=a&password=s3cret&sslmode=require&sslpassword=k3y"),
            "postgresql://db/audit?user=a&password=REDACTED&sslmode=require&sslpassword=REDACTED"
        );
        assert_eq!(
            redact_url("postgres://u:pw@db?password=pw2"),
            "postgres://u:REDACTED@db?password=REDACTED"
        );
    }

    #[test]
    fn a_password_file_wins_and_bad_values_name_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        std::fs::write(&f, "from-file\nsecond line\n").unwrap();
        let c = check(RawCentral {
            url: "postgresql://u:from-url@127.0.0.1/audit".into(),
            password_file: Some(f.display().to_string()),
            ..RawCentral::default()
        })
        .unwrap();
        assert_eq!(c.pg.get_password(), Some(&b"from-file"[..]));
        let problems = check(RawCentral {
            url: "mysql://u@h/db".into(),
            mode: "eventually".into(),
            max_lag: "soon".into(),
            password_file: Some(dir.path().join("missing").display().to_string()),
            ..RawCentral::default()
        })
        .unwrap_err();
        let keys: Vec<&str> = problems.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            ["audit.central.mode", "audit.central.max_lag", "audit.central.url"]
        );
        let problems = check(RawCentral {
            url: "postgres://u:pw@h:notaport/db".into(),
            ..RawCentral::default()
        })
        .unwrap_err();
        assert_eq!(problems[0].0, "audit.central.url");
        assert!(!problems[0].1.contains("pw@"), "{}", problems[0].1);
    }
}
