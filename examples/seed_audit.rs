//! Fills an audit database with synthetic calls (a request link and an outcome link each,
//! properly chained) for the scale benchmark `bench/audit_scale.sh`, with a signed checkpoint
//! every `CHECKPOINT_EVERY` records (10,000 unless set; 0 for none) as the proxy writes them,
//! signed with the database's checkpoint key (`DB.checkpoint-key`, made when missing).
//!
//! `cargo run --release --example seed_audit -- DB EVENTS`

use retention_proxy::audit::checkpoint::{Segment, SigningKey, default_key_file};
use retention_proxy::audit::query::format_time;
use retention_proxy::audit::sqlite::SqliteStore;
use retention_proxy::audit::{Backend, IndexFields, NewRecord, ObjectText, RecordKind, link};
use serde_json::json;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(db), Some(n)) = (args.get(1), args.get(2).and_then(|n| n.parse::<u64>().ok())) else {
        eprintln!("usage: seed_audit DB EVENTS");
        std::process::exit(2);
    };
    let mut store = SqliteStore::open(std::path::Path::new(db)).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(1)
    });
    let (mut seq, mut hash) = store.head().expect("head");
    let every: u64 = std::env::var("CHECKPOINT_EVERY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let key = SigningKey::load_or_create(&default_key_file(std::path::Path::new(db))).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(1)
    });
    let mut segment = Segment::default();
    let start = time::OffsetDateTime::now_utc() - time::Duration::days(30);
    let ops = [
        ("PutRetentionSettings", "chime.amazonaws.com", "chime.room_retention"),
        (
            "PutChannelExpirationSettings",
            "messaging-chime.amazonaws.com",
            "chime_sdk.channel_expiration",
        ),
        (
            "PutAppInstanceRetentionSettings",
            "identity-chime.amazonaws.com",
            "chime_sdk.app_instance_retention",
        ),
        (
            "admin.conversations.setCustomRetention",
            "slack.com",
            "slack.channel_retention",
        ),
        ("GetRetentionSettings", "chime.amazonaws.com", ""),
    ];
    let mut batch = Vec::with_capacity(10_000);
    for i in 0..n {
        let (name, source, target) = ops[(i % ops.len() as u64) as usize];
        let t = format_time(start + time::Duration::milliseconds((i * 2_592_000_000 / n.max(1)) as i64));
        let id = format!("00000000-0000-4000-8000-{i:012}");
        let resource = format!("res-{}", i % 5000);
        let actor = format!("AKIASEED{:012}", i % 200);
        let changes = if target.is_empty() {
            json!([])
        } else {
            json!([{"target": target, "resource": resource, "previous": 365, "new": 400 + (i % 100)}])
        };
        let body = json!({
            "eventVersion": "1.09", "eventID": id, "eventTime": t, "eventSource": source, "eventName": name,
            "eventType": if source == "slack.com" { "SlackApiCall" } else { "AwsApiCall" },
            "readOnly": target.is_empty(), "awsRegion": "us-east-1", "sourceIPAddress": "10.0.0.1",
            "userAgent": "Boto3/1.44.5", "userIdentity": {"type": "IAMUser", "accessKeyId": actor, "verified": false},
            "requestParameters": {"accountId": resource, "RetentionSettings": {"RoomRetentionSettings": {"RetentionDays": 400}}},
            "resources": [{"type": "AWS::Chime::Account", "id": resource}], "recipientAccountId": "111122223333",
            "guardrail": {"decision": "allow", "ruleIds": [], "reason": null}, "changes": changes,
            "invocationId": id, "attempt": 1, "proxyInstance": "seed", "proxyMode": "reverse", "outcome": null,
        });
        let index = |kind| IndexFields {
            event_name: name.into(),
            event_source: source.into(),
            actors: if kind == RecordKind::Request {
                vec![actor.clone()]
            } else {
                vec![]
            },
            decision: if kind == RecordKind::Request {
                "allow".into()
            } else {
                String::new()
            },
            resources: if kind == RecordKind::Request {
                vec![resource.clone()]
            } else {
                vec![]
            },
        };
        let request = NewRecord {
            kind: RecordKind::Request,
            event_id: id.clone(),
            event_time: t.clone(),
            body: ObjectText::from_value(&body),
            index: index(RecordKind::Request),
            observed: vec![],
        };
        let outcome = NewRecord {
            kind: RecordKind::Outcome,
            event_id: id.clone(),
            event_time: t.clone(),
            body: ObjectText::from_value(
                &json!({"eventID": id, "eventTime": t, "outcome": "forwarded", "httpStatus": 200,
                "requestID": format!("req-{i}"), "responseElements": {"RetentionSettings": {}}, "durationMs": 3}),
            ),
            index: index(RecordKind::Outcome),
            observed: vec![],
        };
        for r in [request, outcome] {
            let l = link(seq, &hash, r);
            seq = l.seq;
            hash = l.hash.clone();
            segment.push(&l.hash);
            batch.push(l);
            if every > 0 && segment.len() >= every {
                let cp = segment.seal("seed", seq, &hash, t.clone(), &key);
                let l = link(seq, &hash, cp.to_record());
                seq = l.seq;
                hash = l.hash.clone();
                segment.restart(&cp, l.seq, &l.hash);
                batch.push(l);
            }
        }
        if batch.len() >= 10_000 {
            store.append(&batch).expect("append");
            batch.clear();
        }
    }
    if !batch.is_empty() {
        store.append(&batch).expect("append");
    }
    println!("seeded {n} events ({} records) into {db}", 2 * n);
}
