//! Which store an `audit` command reads: a SQLite file, or the central store for a
//! postgres:// `--db`.

use super::FleetArgs;
use crate::audit::{self, Reader};

/// Opens `--db`: a SQLite file, or the central store for a postgres:// URL.
pub fn open(db: &std::path::Path, fleet: &FleetArgs) -> Result<Box<dyn Reader>, String> {
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
