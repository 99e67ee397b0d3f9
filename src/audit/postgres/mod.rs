//! The central store on PostgreSQL (SPEC §9): every instance's chain, keyed by
//! `(instance, seq)`, shipped there from the instance's local log ([`ship`]) and read back
//! for the whole fleet ([`read`]). The tables are append-only: shipping needs `INSERT` and
//! `SELECT`, nothing else, and never rewrites a row.

pub mod read;
pub mod ship;

use std::sync::Arc;

use tokio::sync::Mutex;
use tokio_postgres::Client;

use super::AuditError;
use crate::config::Central;

pub use read::PostgresReader;
pub use ship::{Shipper, Shipping};

/// The tables and their indexes. `id` orders the fleet's records as they arrived (the
/// cursor of fleet-wide listings); `(instance, seq)` is each instance's chain.
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS audit_records (
    id           bigserial   NOT NULL UNIQUE,
    instance     text        NOT NULL,
    seq          bigint      NOT NULL,
    kind         text        NOT NULL,
    event_id     text        NOT NULL,
    event_time   text        NOT NULL,
    event_name   text        NOT NULL,
    event_source text        NOT NULL,
    decision     text        NOT NULL,
    body         text        NOT NULL,
    prev_hash    text        NOT NULL,
    hash         text        NOT NULL,
    shipped_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (instance, seq)
);
CREATE INDEX IF NOT EXISTS audit_records_time ON audit_records (event_time, id) WHERE kind = 'request';
CREATE INDEX IF NOT EXISTS audit_records_name_time ON audit_records (event_name, event_time) WHERE kind = 'request';
CREATE INDEX IF NOT EXISTS audit_records_decision_time ON audit_records (decision, event_time) WHERE kind = 'request';
CREATE INDEX IF NOT EXISTS audit_records_event_id ON audit_records (event_id, instance, kind);
CREATE TABLE IF NOT EXISTS audit_actors (
    actor    text   NOT NULL,
    instance text   NOT NULL,
    seq      bigint NOT NULL,
    PRIMARY KEY (actor, instance, seq)
);
CREATE TABLE IF NOT EXISTS audit_resources (
    resource text   NOT NULL,
    instance text   NOT NULL,
    seq      bigint NOT NULL,
    PRIMARY KEY (resource, instance, seq)
);
CREATE TABLE IF NOT EXISTS audit_observed (
    target     text   NOT NULL,
    resource   text   NOT NULL,
    event_time text   NOT NULL,
    instance   text   NOT NULL,
    seq        bigint NOT NULL,
    value      text   NOT NULL,
    PRIMARY KEY (target, resource, event_time, instance, seq)
);
";

/// The tables [`SCHEMA`] creates.
pub const TABLES: [&str; 4] = ["audit_records", "audit_actors", "audit_resources", "audit_observed"];

fn pg_err(what: &str, e: &tokio_postgres::Error) -> String {
    // The server's own message when there is one ("permission denied for table …").
    match e.as_db_error() {
        Some(db) => format!("{what}: {}", db.message()),
        None => {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(e);
            while let Some(s) = src {
                msg.push_str(": ");
                msg.push_str(&s.to_string());
                src = s.source();
            }
            format!("{what}: {msg}")
        }
    }
}

/// A read error from PostgreSQL.
pub(crate) fn rd(e: tokio_postgres::Error) -> AuditError {
    AuditError::Read(pg_err("PostgreSQL", &e))
}

/// The TLS connector: rustls with `ring`, checking PostgreSQL's certificate against
/// `ca_file` or the public roots. Used only when the URI's `sslmode` asks for TLS.
fn tls(c: &Central) -> Result<tokio_postgres_rustls::MakeRustlsConnect, AuditError> {
    let roots = crate::http::upstream::root_store(c.ca_file.as_deref()).map_err(|e| AuditError::Open {
        path: c.display(),
        reason: e.to_string(),
    })?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| AuditError::Open {
            path: c.display(),
            reason: e.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// Connects to the central store; the connection is driven by a task on the current runtime.
pub async fn connect(c: &Central) -> Result<Client, AuditError> {
    let (client, connection) = c.pg.connect(tls(c)?).await.map_err(|e| AuditError::Open {
        path: c.display(),
        reason: pg_err("cannot connect", &e),
    })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "central store connection ended");
        }
    });
    Ok(client)
}

/// Creates the tables when they are missing and the role may; a role with only `INSERT` and
/// `SELECT` on tables created by hand is fine.
pub async fn ensure_schema(client: &Client, c: &Central) -> Result<(), AuditError> {
    let missing = missing_tables(client, c).await?;
    if missing.is_empty() {
        return Ok(());
    }
    if let Err(e) = client.batch_execute(SCHEMA).await {
        // Another instance may have created them at the same moment.
        if missing_tables(client, c).await?.is_empty() {
            return Ok(());
        }
        return Err(AuditError::Open {
            path: c.display(),
            reason: format!(
                "{} (the tables {} are missing; create them once as the README's \"Fleet\" section shows)",
                pg_err("cannot create the central tables", &e),
                missing.join(", ")
            ),
        });
    }
    tracing::info!(database = %c.display(), "central audit tables created");
    Ok(())
}

/// The tables of [`SCHEMA`] the database does not have.
async fn missing_tables(client: &Client, c: &Central) -> Result<Vec<String>, AuditError> {
    Ok(client
        .query(
            "SELECT t FROM unnest($1::text[]) AS t WHERE to_regclass(t) IS NULL",
            &[&TABLES.to_vec()],
        )
        .await
        .map_err(|e| AuditError::Open {
            path: c.display(),
            reason: pg_err("cannot read the catalog", &e),
        })?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// One connection shared by readers on the admin listener, made again when it breaks.
pub struct Pool {
    central: Central,
    client: Mutex<Option<Arc<Client>>>,
}

impl Pool {
    /// A pool for `central`, not yet connected.
    pub fn new(central: Central) -> Arc<Pool> {
        Arc::new(Pool {
            central,
            client: Mutex::new(None),
        })
    }

    /// The store's settings.
    pub fn central(&self) -> &Central {
        &self.central
    }

    /// A live connection (with the tables in place).
    pub async fn client(&self) -> Result<Arc<Client>, AuditError> {
        let mut slot = self.client.lock().await;
        if let Some(c) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        let client = connect(&self.central).await?;
        ensure_schema(&client, &self.central).await?;
        let client = Arc::new(client);
        *slot = Some(client.clone());
        Ok(client)
    }
}
