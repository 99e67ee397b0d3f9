//! `GET /v1/chain`: the chain status per instance, from the latest verification. The chain is
//! walked ([`query::verify`]) on a blocking thread at start and then every [`EVERY`], never on
//! a request: a page load reads the last result.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::audit::Store;
use crate::audit::query::{self, InstanceVerification, Verification};

/// How often the chain is verified again.
pub const EVERY: Duration = Duration::from_secs(300);

/// The result of one verification.
#[derive(Debug, Clone)]
struct Checked {
    /// When it finished (RFC 3339 UTC, ms).
    at: String,
    /// What it found per chain (one for a local log, one per instance for the central store),
    /// or why it could not read the store.
    result: Result<Vec<InstanceVerification>, String>,
}

/// The latest verification of the chains of one store, kept for the admin listener.
#[derive(Debug)]
pub struct ChainWatch {
    /// `proxyInstance` of this instance (the name of a local log's one chain).
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

    /// Verifies the chains in `store` now and every `every` until `stop` turns true.
    pub async fn run(self: Arc<Self>, store: Store, every: Duration, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            let store = store.clone();
            let cancel = Arc::new(AtomicBool::new(false));
            let cancelled = cancel.clone();
            let walk = tokio::task::spawn_blocking(move || {
                let reader = crate::audit::open_reader(&store).map_err(|e| e.to_string())?;
                query::verify_each_unless(reader.as_ref(), &|| cancelled.load(Ordering::Relaxed))
                    .map_err(|e| e.to_string())
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
            if let Ok(all) = &result {
                for (instance, v) in all {
                    if let Verification::Broken { seq, reason } = v {
                        let instance = instance.as_deref().unwrap_or(&self.instance);
                        tracing::error!(instance = %instance, seq, %reason, "the audit chain does not verify");
                    }
                }
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
    /// `broken`, `unreadable` and `not_verified`; one entry per chain.
    pub fn status(&self) -> Value {
        let last = self.last.lock().ok().and_then(|l| l.clone());
        let instances: Vec<Value> = match last {
            None => vec![json!({"instance": self.instance, "state": "not_verified", "seq": null,
                "checkedAt": null, "text": "not yet verified"})],
            Some(Checked { at, result: Err(e) }) => vec![json!({"instance": self.instance, "state": "unreadable",
                "seq": null, "checkedAt": at, "reason": e, "text": "could not be read"})],
            Some(Checked { at, result: Ok(all) }) => all
                .into_iter()
                .map(|(instance, v)| {
                    let instance = instance.unwrap_or_else(|| self.instance.clone());
                    match v {
                        Verification::Intact { records } => json!({"instance": instance, "state": "intact",
                            "seq": records, "checkedAt": at, "text": format!("intact up to seq {records}")}),
                        Verification::Broken { seq, reason } => json!({"instance": instance, "state": "broken",
                            "seq": seq, "checkedAt": at, "reason": reason, "text": format!("broken at seq {seq}")}),
                    }
                })
                .collect(),
        };
        json!({"instances": instances, "everySeconds": EVERY.as_secs()})
    }
}
