//! What the audited call asks of the fleet's central store (SPEC §9): the fleet-wide
//! `previous` of a change, and whether a change may go ahead (`mode = "sync"` waits for its
//! request link to reach PostgreSQL; `max_lag` in async mode refuses changes when shipping is
//! too far behind and `fail_mode` is `closed`).

use std::time::Duration;

use crate::audit::postgres::ship::fleet_previous;
use crate::config::{FailMode, ShipMode};
use crate::proxy::App;
use crate::retention::{RetentionValue, Target};

/// The longest a change waits for the central store's `previous` before using the local one.
const PREVIOUS_WITHIN: Duration = Duration::from_millis(1000);

/// The last known value of a setting: the newer of this instance's and the central store's
/// (another instance may have changed it since), the local one when the store does not
/// answer in time (a refused connection answers at once; an unreachable host costs a change
/// at most [`PREVIOUS_WITHIN`]).
pub async fn previous(app: &App, target: Target, resource: &str) -> Option<RetentionValue> {
    let local = app.audit.previous_seen(target, resource);
    let Some(pool) = &app.fleet else {
        return local.map(|(v, _)| v);
    };
    let lookup = async {
        let client = pool.client().await?;
        fleet_previous(&client, target.as_str(), resource).await
    };
    let central = match tokio::time::timeout(PREVIOUS_WITHIN, lookup).await {
        Ok(Ok(Some((value, time)))) => serde_json::from_str(&value)
            .ok()
            .and_then(|v| RetentionValue::from_json(&v))
            .map(|v| (v, time)),
        Ok(Ok(None)) => None,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "the central store's previous value could not be read; the local one is used");
            None
        }
        Err(_) => None,
    };
    match (central, local) {
        (Some((c, ct)), Some((l, lt))) => Some(if ct > lt { c } else { l }),
        (Some((c, _)), None) => Some(c),
        (None, l) => l.map(|(v, _)| v),
    }
}

/// Why a change must be refused before it is recorded, if it must.
pub fn refusal(app: &App, read_only: bool) -> Option<String> {
    let shipping = app.shipping.as_ref().filter(|_| !read_only)?;
    let why = shipping.refuses_changes()?;
    match shipping.mode {
        ShipMode::Async if app.config.audit.fail_mode == FailMode::Open => None,
        _ => Some(why),
    }
}

/// In sync mode, waits until the change's request link `seq` is in the central store.
pub async fn sync(app: &App, read_only: bool, seq: u64) -> Result<(), String> {
    let Some(shipping) = app.shipping.as_ref().filter(|s| s.mode == ShipMode::Sync && !read_only) else {
        return Ok(());
    };
    let within = app.config.upstreams.request_timeout.min(Duration::from_secs(10));
    shipping.wait_shipped(seq, within).await
}
