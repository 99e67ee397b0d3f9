//! Reloading the guardrails from the configuration file (SIGHUP in the binary). The file is
//! read and validated whole first: a file that does not validate keeps the rules in force.
//! Only `[[guardrails]]` are applied; other sections that differ are named in the log as
//! needing a restart. A reload is recorded in the audit chain before its rules take effect,
//! like a change before it is forwarded: when it cannot be recorded, it is not applied.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use tracing::{info, warn};

use super::new_id;
use super::state::{App, RuleSet};
use crate::audit::query::format_time;
use crate::audit::reload::{Reload, reload_record};
use crate::config::Config;

/// A request to reload the guardrails from a configuration file.
#[derive(Debug, Clone)]
pub struct ReloadRequest {
    /// The configuration file to read (the one the proxy started with).
    pub path: PathBuf,
    /// What asked for it, recorded as `userIdentity.invokedBy` (`SIGHUP`).
    pub trigger: String,
}

/// Reloads the guardrails as `req` asks and logs the result in one line (plus one line for
/// sections that need a restart). Returns what was applied, or why nothing was.
pub async fn reload(app: &App, req: &ReloadRequest) -> Result<Reload, String> {
    let result = apply(app, req).await;
    match &result {
        Ok(r) => {
            info!(
                file = %r.file,
                sha256 = %r.sha256,
                before = ?r.before,
                after = ?r.after,
                added = ?r.added,
                removed = ?r.removed,
                changed = ?r.changed,
                "guardrails reloaded"
            );
            if !r.restart_required.is_empty() {
                warn!(
                    file = %r.file,
                    sections = ?r.restart_required,
                    "only [[guardrails]] are reloaded: the changes to the other sections named here take effect after a restart"
                );
            }
        }
        Err(why) => warn!(file = %req.path.display(), "guardrails not reloaded, the rules in force stay: {why}"),
    }
    result
}

async fn apply(app: &App, req: &ReloadRequest) -> Result<Reload, String> {
    let path = req.path.clone();
    let read = tokio::task::spawn_blocking(move || {
        let bytes = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let text = std::str::from_utf8(&bytes).map_err(|e| format!("{} is not UTF-8: {e}", path.display()))?;
        let config =
            Config::from_toml_str(text, &path.display().to_string()).map_err(|e| e.to_string().replace('\n', "; "))?;
        Ok::<_, String>((hex::encode(Sha256::digest(&bytes)), config))
    })
    .await
    .map_err(|e| format!("the reload stopped: {e}"))?;
    let (sha256, config) = read?;
    let before = app.guardrails.current();
    let after = RuleSet {
        rules: config.guardrails.clone(),
        raw: config.raw.guardrails.clone(),
    };
    let rules = |set: &RuleSet| -> BTreeMap<String, Value> {
        set.raw
            .iter()
            .map(|r| (r.id.clone(), serde_json::to_value(r).unwrap_or(Value::Null)))
            .collect()
    };
    let (old, new) = (rules(&before), rules(&after));
    let record = Reload {
        event_id: new_id(),
        event_time: format_time(OffsetDateTime::now_utc()),
        proxy_instance: app.config.audit.proxy_instance.clone(),
        trigger: req.trigger.clone(),
        file: req.path.display().to_string(),
        sha256,
        before: before.ids(),
        after: after.ids(),
        added: new.keys().filter(|id| !old.contains_key(*id)).cloned().collect(),
        removed: old.keys().filter(|id| !new.contains_key(*id)).cloned().collect(),
        changed: new
            .iter()
            .filter(|(id, rule)| old.get(*id).is_some_and(|o| o != *rule))
            .map(|(id, _)| id.clone())
            .collect(),
        restart_required: sections_changed(&app.config, &config),
    };
    app.audit
        .append(reload_record(&record))
        .await
        .map_err(|e| format!("the reload could not be recorded: {e}"))?;
    app.guardrails.replace(after);
    Ok(record)
}

/// Top-level sections other than `[[guardrails]]` whose effective values differ.
fn sections_changed(running: &Config, read: &Config) -> Vec<String> {
    let (Ok(Value::Object(a)), Ok(Value::Object(b))) =
        (serde_json::to_value(&running.raw), serde_json::to_value(&read.raw))
    else {
        return Vec::new();
    };
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).filter(|k| *k != "guardrails").collect();
    keys.sort();
    keys.dedup();
    keys.into_iter().filter(|k| a.get(*k) != b.get(*k)).cloned().collect()
}
