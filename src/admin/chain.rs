//! `GET /v1/chain`: the chain status per instance, from the latest verification. The chain is
//! walked ([`query::verify`]) on a blocking thread at start and then every [`EVERY`], never on
//! a request: a page load reads the last result.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::audit::query::{self, Verification};

/// How often the chain is verified again.
pub const EVERY: Duration = Duration::from_secs(300);

/// The result of one verification.
#[derive(Debug, Clone)]
struct Checked {
    /// When it finished (RFC 3339 UTC, ms).
    at: String,
    /// What it found, or why it could not read the chain.
    result: Result<Verification, String>,
}

/// The latest verification of the chain of one store, kept for the admin listener.
#[derive(Debug)]
pub struct ChainWatch {
    /// `proxyInstance` of this store's chain.
    instance: String,
    /// The latest result; `None` until the first verification ends.
    last: Mutex<Option<Checked>>,
}

impl ChainWatch {
    /// A watch of `instance`'s chain, not yet verified.
    pub fn new(instance: String) -> Arc<ChainWatch> {
        Arc::new(ChainWatch {
            instance,
            last: Mutex::new(None),
        })
    }

    /// Verifies the chain in `db` now and every `every` until `stop` turns true.
    pub async fn run(self: Arc<Self>, db: PathBuf, every: Duration, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            let path = db.clone();
            let cancel = Arc::new(AtomicBool::new(false));
            let cancelled = cancel.clone();
            let walk = tokio::task::spawn_blocking(move || {
                let reader = crate::audit::open_reader(&path).map_err(|e| e.to_string())?;
                query::verify_unless(reader.as_ref(), &|| cancelled.load(Ordering::Relaxed)).map_err(|e| e.to_string())
            });
            let result = tokio::select! {
                r = walk => match r {
                    Ok(Ok(Some(v))) => Ok(v),
                    Ok(Ok(None)) => return,
                    Ok(Err(e)) => Err(e),
                    Err(e) => Err(e.to_string()),
                },
                _ = stop.changed() => {
                    // The walk stops at its next check rather than holding up the shutdown.
                    cancel.store(true, Ordering::Relaxed);
                    return;
                }
            };
            if let Ok(Verification::Broken { seq, reason }) = &result {
                tracing::error!(instance = %self.instance, seq, %reason, "the audit chain does not verify");
            }
            let at = query::format_time(time::OffsetDateTime::now_utc());
            if let Ok(mut last) = self.last.lock() {
                *last = Some(Checked { at, result });
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// `{"instances":[{instance, state, seq, checkedAt, text}]}`, `state` one of `intact`,
    /// `broken`, `unreadable` and `not_verified`.
    pub fn status(&self) -> Value {
        let last = self.last.lock().ok().and_then(|l| l.clone());
        let one = match last {
            None => json!({"instance": self.instance, "state": "not_verified", "seq": null,
                "checkedAt": null, "text": "not yet verified"}),
            Some(Checked {
                at,
                result: Ok(Verification::Intact { records }),
            }) => json!({"instance": self.instance, "state": "intact", "seq": records,
                "checkedAt": at, "text": format!("intact up to seq {records}")}),
            Some(Checked {
                at,
                result: Ok(Verification::Broken { seq, reason }),
            }) => json!({"instance": self.instance, "state": "broken", "seq": seq,
                "checkedAt": at, "reason": reason, "text": format!("broken at seq {seq}")}),
            Some(Checked { at, result: Err(e) }) => json!({"instance": self.instance, "state": "unreadable",
                "seq": null, "checkedAt": at, "reason": e, "text": "could not be read"}),
        };
        json!({"instances": [one], "everySeconds": EVERY.as_secs()})
    }
}
