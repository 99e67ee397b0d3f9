//! The record of a guardrail reload. It is a link of the chain like a call's request link
//! (with its outcome inline), so `audit query`, `audit verify` and `/v1/events` show it among
//! the calls: `eventSource` `retention-proxy`, `eventName` `ReloadGuardrails`. Who sent the
//! signal cannot be known; what changed can: the rule ids before and after, which rules were
//! added, removed or changed, and the SHA-256 of the file that was read.

use serde_json::{Value, json};

use super::event::EVENT_VERSION;
use super::{IndexFields, NewRecord, ObjectText, RecordKind};

/// `eventSource` of the proxy's own events.
pub const EVENT_SOURCE: &str = "retention-proxy";
/// `eventName` of a guardrail reload.
pub const EVENT_NAME: &str = "ReloadGuardrails";
/// `resources[].type` of the configuration file.
pub const RESOURCE_TYPE: &str = "RetentionProxy::ConfigFile";

/// What one reload read and changed.
#[derive(Debug, Clone, Default)]
pub struct Reload {
    /// `eventID`.
    pub event_id: String,
    /// `eventTime`.
    pub event_time: String,
    /// `proxyInstance`.
    pub proxy_instance: String,
    /// What asked for the reload (`SIGHUP`).
    pub trigger: String,
    /// The configuration file.
    pub file: String,
    /// Lower-case hex SHA-256 of the file's bytes.
    pub sha256: String,
    /// Rule ids in force before, in order.
    pub before: Vec<String>,
    /// Rule ids in force after, in order.
    pub after: Vec<String>,
    /// Ids of rules that are new.
    pub added: Vec<String>,
    /// Ids of rules that are gone.
    pub removed: Vec<String>,
    /// Ids of rules kept whose settings changed.
    pub changed: Vec<String>,
    /// Sections outside `[[guardrails]]` that differ from the running configuration and were
    /// not applied (they need a restart).
    pub restart_required: Vec<String>,
}

/// The chain record of `r`.
pub fn reload_record(r: &Reload) -> NewRecord {
    let mut body = ObjectText::with_capacity(512);
    body.str("eventVersion", EVENT_VERSION);
    body.str("eventID", &r.event_id);
    body.str("eventTime", &r.event_time);
    body.str("eventSource", EVENT_SOURCE);
    body.str("eventName", EVENT_NAME);
    body.str("eventType", "ProxyServiceEvent");
    body.value("readOnly", &Value::Bool(false));
    body.value(
        "userIdentity",
        &json!({"type": "Unknown", "invokedBy": r.trigger, "verified": false}),
    );
    body.value(
        "requestParameters",
        &json!({"configFile": r.file, "sha256": r.sha256, "trigger": r.trigger}),
    );
    body.value(
        "responseElements",
        &json!({
            "ruleIdsBefore": r.before,
            "ruleIdsAfter": r.after,
            "rulesAdded": r.added,
            "rulesRemoved": r.removed,
            "rulesChanged": r.changed,
            "restartRequired": r.restart_required,
        }),
    );
    body.value("resources", &json!([{"id": r.file, "type": RESOURCE_TYPE}]));
    body.value(
        "changes",
        &json!([{"target": "guardrails", "resource": r.file, "previous": r.before, "new": r.after}]),
    );
    body.str("proxyInstance", &r.proxy_instance);
    body.str("outcome", "applied");
    NewRecord {
        kind: RecordKind::Request,
        event_id: r.event_id.clone(),
        event_time: r.event_time.clone(),
        body,
        index: IndexFields {
            event_name: EVENT_NAME.to_string(),
            event_source: EVENT_SOURCE.to_string(),
            actors: Vec::new(),
            decision: String::new(),
            resources: vec![r.file.clone()],
        },
        observed: Vec::new(),
    }
}
