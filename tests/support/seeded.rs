//! Audit databases filled through the library, thousands of chained calls in a moment, for
//! the tests that need volume (the parallel export, a backup under write load). The calls are
//! varied the way a real log is: Chime calls in two regions under one account, Slack calls
//! with no account or region, refusals with an error code, calls whose outcome never arrived,
//! escapes and non-ASCII text, a fractional number.

use std::path::Path;

use retention_proxy::audit::sqlite::SqliteStore;
use retention_proxy::audit::{Backend, IndexFields, Linked, NewRecord, ObjectText, RecordKind, link};
use serde_json::json;

/// The Chime account of the seeded calls.
pub const ACCOUNT: &str = "111122223333";

/// Appends chained calls to an audit database.
pub struct Seeder {
    store: SqliteStore,
    seq: u64,
    hash: String,
    calls: u64,
}

impl Seeder {
    /// Opens (or creates) the database at `db`.
    pub fn open(db: &Path) -> Seeder {
        let mut store = SqliteStore::open(db).expect("open the audit database");
        let (seq, hash) = store.head().expect("head");
        Seeder {
            store,
            seq,
            hash,
            calls: 0,
        }
    }

    /// The last `seq` committed.
    pub fn head(&self) -> u64 {
        self.seq
    }

    /// Appends `count` calls, `per_commit` calls per transaction; call `i` (counted over the
    /// seeder's life) happens at `time(i)` (`YYYY-MM-DDTHH:MM:SS.mmmZ`).
    pub fn calls(&mut self, count: u64, per_commit: u64, time: impl Fn(u64) -> String) {
        let mut batch: Vec<Linked> = Vec::new();
        for _ in 0..count {
            let i = self.calls;
            self.calls += 1;
            for r in call(i, &time(i)) {
                let l = link(self.seq, &self.hash, r);
                self.seq = l.seq;
                self.hash.clone_from(&l.hash);
                batch.push(l);
            }
            if self.calls.is_multiple_of(per_commit.max(1)) {
                self.store.append(&batch).expect("append");
                batch.clear();
            }
        }
        if !batch.is_empty() {
            self.store.append(&batch).expect("append");
        }
    }
}

/// Call `i`: its request link and, unless it is one of the calls whose outcome never
/// arrived, its outcome link.
fn call(i: u64, t: &str) -> Vec<NewRecord> {
    let id = format!("00000000-0000-4000-8000-{i:012}");
    let slack = i.is_multiple_of(3);
    let (name, source) = if slack {
        ("admin.conversations.setCustomRetention", "slack.com")
    } else {
        ("PutChannelExpirationSettings", "messaging-chime.amazonaws.com")
    };
    let region = match i % 3 {
        0 => None,
        1 => Some("us-east-1"),
        _ => Some("eu-west-1"),
    };
    let resource = if slack {
        format!("C{:08}", i % 400)
    } else {
        format!(
            "arn:aws:chime:{}:{ACCOUNT}:app-instance/a/channel/c{}",
            region.unwrap_or(""),
            i % 400
        )
    };
    let actor = format!("AKIASEED{:012}", i % 50);
    let refused = i.is_multiple_of(7);
    let identity = if slack {
        json!({"type": "SlackToken", "tokenFingerprint": format!("hmac-sha256:{:064x}", i % 50), "tokenType": "xoxp", "verified": false})
    } else {
        json!({"type": "IAMUser", "accessKeyId": actor, "verified": true})
    };
    let body = json!({
        "eventVersion": "1.09", "eventID": id, "eventTime": t, "eventSource": source, "eventName": name,
        "eventType": if slack { "SlackApiCall" } else { "AwsApiCall" }, "readOnly": false,
        "awsRegion": region, "sourceIPAddress": "10.0.0.1",
        "userAgent": format!("Boto3/1.35 \"seed\" \u{e9}\u{1} #{i}"),
        "userIdentity": identity,
        "requestParameters": {"channelArn": resource, "ExpirationSettings": {"ExpirationDays": if i.is_multiple_of(5) { json!(3.5) } else { json!(30 + i % 90) }}},
        "resources": [{"type": if slack { "slack.channel" } else { "AWS::ChimeSDKMessaging::Channel" }, "id": resource}],
        "recipientAccountId": if slack { None } else { Some(ACCOUNT) },
        "guardrail": {"decision": if refused { "deny" } else { "allow" }, "ruleIds": if refused { json!(["min-30"]) } else { json!([]) }, "reason": if refused { json!("below 30, \"min\"") } else { json!(null) }},
        "changes": [{"target": "chime_sdk.channel_expiration", "resource": resource, "previous": if i.is_multiple_of(2) { json!(null) } else { json!(365) }, "new": 30 + i % 90}],
        "invocationId": id, "attempt": 1, "proxyInstance": "seed", "proxyMode": "reverse",
        "outcome": if refused { json!("denied") } else { json!(null) },
        "errorCode": if refused { json!("ForbiddenException") } else { json!(null) },
        "errorMessage": if refused { json!("refused by guardrail min-30") } else { json!(null) },
    });
    let index = IndexFields {
        event_name: name.into(),
        event_source: source.into(),
        actors: vec![actor],
        decision: if refused { "deny" } else { "allow" }.into(),
        resources: vec![resource],
    };
    let mut records = vec![NewRecord {
        kind: RecordKind::Request,
        event_id: id.clone(),
        event_time: t.to_string(),
        body: ObjectText::from_value(&body),
        index,
        observed: vec![],
    }];
    if !refused && i % 11 != 5 {
        records.push(NewRecord {
            kind: RecordKind::Outcome,
            event_id: id.clone(),
            event_time: t.to_string(),
            body: ObjectText::from_value(&json!({"eventID": id, "eventTime": t, "outcome": "forwarded",
                "httpStatus": 200, "requestID": format!("req-{i}"), "responseElements": {"ok": true}, "durationMs": 3,
                "userIdentity": {"verified": true}})),
            index: IndexFields::default(),
            observed: vec![],
        });
    }
    records
}
