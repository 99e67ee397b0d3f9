//! The record of one merged event in each export format: a CloudTrail record (and the
//! `{"Records":[…]}` document around records) and a CSV row. [`super::stored`] writes the same
//! bytes straight from the stored texts; these are the reference it is tested against, and what
//! the admin API and `audit query` use for a page of events.

use std::io::Write;

use serde_json::{Map, Value, json};

/// CloudTrail time: second precision, `Z`.
pub(super) fn cloudtrail_time(t: &str) -> String {
    match t.split_once('.') {
        Some((secs, _)) => format!("{secs}Z"),
        None => t.to_string(),
    }
}

/// Turns a merged audit event into a CloudTrail record: CloudTrail's own fields in its
/// spelling and nesting, and the proxy's facts (guardrail, changes, outcome, chain) under
/// `additionalEventData`, where CloudTrail keeps service-specific data.
///
/// Takes the event: its values move into the record instead of being copied (an export
/// builds one record per event).
pub fn cloudtrail_record(e: Value) -> Value {
    let mut e = match e {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    let mut take = |k: &str| e.remove(k).unwrap_or(Value::Null);
    let mut ui = match take("userIdentity") {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    let account = take("recipientAccountId");
    let mut identity = Map::new();
    identity.insert("type".into(), ui.get("type").cloned().unwrap_or(json!("Unknown")));
    for (from, to) in [("accessKeyId", "accessKeyId"), ("chimeBearer", "arn")] {
        if let Some(v) = ui.get(from).filter(|v| !v.is_null()) {
            identity.insert(to.into(), v.clone());
        }
    }
    if !account.is_null() {
        identity.insert("accountId".into(), account.clone());
    }
    let user_name = ["chimeBearer", "tokenFingerprint", "accessKeyId"]
        .iter()
        .find_map(|k| ui.get(*k).filter(|v| !v.is_null()).cloned());
    if let Some(u) = user_name {
        identity.insert("userName".into(), u);
    }
    // The identity facts CloudTrail has no field for go under `additionalEventData`.
    let mut from_ui = |k: &str| ui.remove(k).unwrap_or(Value::Null);
    let (token_fingerprint, token_type, verified) =
        (from_ui("tokenFingerprint"), from_ui("tokenType"), from_ui("verified"));
    let resources: Vec<Value> = match take("resources") {
        Value::Array(rs) => rs
            .into_iter()
            .map(|mut r| {
                let id = r.get_mut("id").map(Value::take).unwrap_or(Value::Null);
                let mut o = Map::new();
                let account: Option<Value> = id
                    .as_str()
                    .filter(|s| s.starts_with("arn:"))
                    .and_then(crate::vendors::arn_account)
                    .map(|a| json!(a));
                o.insert("ARN".into(), id);
                if let Some(a) = account {
                    o.insert("accountId".into(), a);
                }
                o.insert("type".into(), r.get_mut("type").map(Value::take).unwrap_or(Value::Null));
                Value::Object(o)
            })
            .collect(),
        _ => Vec::new(),
    };
    let event_time = take("eventTime");
    let mut rec = json!({
        "eventVersion": take("eventVersion"),
        "userIdentity": Value::Object(identity),
        "eventTime": event_time.as_str().map(cloudtrail_time),
        "eventSource": take("eventSource"),
        "eventName": take("eventName"),
        "awsRegion": take("awsRegion"),
        "sourceIPAddress": take("sourceIPAddress"),
        "userAgent": take("userAgent"),
        "requestParameters": take("requestParameters"),
        "responseElements": take("responseElements"),
        "requestID": take("requestID"),
        "eventID": take("eventID"),
        "readOnly": take("readOnly"),
        "resources": resources,
        "eventType": take("eventType"),
        "managementEvent": true,
        "recipientAccountId": account,
        "eventCategory": "Management",
        "additionalEventData": {
            "outcome": take("outcome"),
            "httpStatus": take("httpStatus"),
            "guardrail": take("guardrail"),
            "changes": take("changes"),
            "tokenFingerprint": token_fingerprint,
            "tokenType": token_type,
            "identityVerified": verified,
            "invocationId": take("invocationId"),
            "attempt": take("attempt"),
            "durationMs": take("durationMs"),
            "proxyInstance": take("proxyInstance"),
            "proxyMode": take("proxyMode"),
            "seq": take("seq"),
            "prevHash": take("prevHash"),
            "hash": take("hash"),
        },
    });
    if let Some(o) = rec.as_object_mut() {
        for k in ["errorCode", "errorMessage"] {
            if let Some(v) = e.remove(k).filter(|v| !v.is_null()) {
                o.insert(k.into(), v);
            }
        }
        if let Some(t) = e.remove("tlsDetails").filter(|v| !v.is_null()) {
            o.insert("tlsDetails".into(), t);
        }
        if o.get("awsRegion").is_some_and(Value::is_null) {
            o.remove("awsRegion");
        }
    }
    rec
}

/// Writes `{"Records":[…]}` incrementally to one stream.
pub struct RecordsWriter<W: Write> {
    out: W,
    first: bool,
}

impl<W: Write> RecordsWriter<W> {
    /// Starts the document.
    pub fn new(mut out: W) -> std::io::Result<Self> {
        out.write_all(b"{\"Records\":[")?;
        Ok(RecordsWriter { out, first: true })
    }

    /// Appends one record.
    pub fn push(&mut self, rec: &Value) -> std::io::Result<()> {
        if !self.first {
            self.out.write_all(b",\n")?;
        } else {
            self.out.write_all(b"\n")?;
        }
        self.first = false;
        serde_json::to_writer(&mut self.out, rec)?;
        Ok(())
    }

    /// Ends the document and returns the stream.
    pub fn finish(mut self) -> std::io::Result<W> {
        self.out.write_all(b"\n]}\n")?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// CSV columns of `audit query` and `audit export --format csv`.
pub const CSV_COLUMNS: [&str; 11] = [
    "seq",
    "eventTime",
    "eventSource",
    "eventName",
    "actor",
    "resource",
    "change",
    "decision",
    "outcome",
    "httpStatus",
    "eventID",
];

/// The text of one column for table and CSV output.
pub fn cell(e: &Value, col: &str) -> String {
    let s = |v: Option<&Value>| match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    };
    match col {
        "actor" => {
            let u = e.get("userIdentity");
            let pick = ["accessKeyId", "chimeBearer", "tokenFingerprint"]
                .iter()
                .find_map(|k| u.and_then(|u| u.get(*k)).filter(|v| !v.is_null()));
            s(pick)
        }
        "resource" if e.get("resource").is_some_and(Value::is_string) => s(e.get("resource")),
        "resource" => e
            .get("resources")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|r| r.get("id").and_then(Value::as_str))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default(),
        "change" => e
            .get("changes")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|c| {
                        let v = |k| match c.get(k) {
                            Some(Value::Null) | None => "?".to_string(),
                            Some(Value::String(x)) => x.clone(),
                            Some(x) => x.to_string(),
                        };
                        format!(
                            "{}: {} -> {}",
                            c.get("target").and_then(Value::as_str).unwrap_or(""),
                            v("previous"),
                            v("new")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .unwrap_or_default(),
        "decision" => s(e.get("guardrail").and_then(|g| g.get("decision"))),
        other => s(e.get(other)),
    }
}

/// Quotes a CSV field when needed (RFC 4180).
pub fn csv_field(v: &str) -> String {
    if v.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", v.replace('"', "\"\""))
    } else {
        v.to_string()
    }
}

/// One CSV row.
pub fn csv_row(e: &Value) -> String {
    CSV_COLUMNS
        .iter()
        .map(|c| csv_field(&cell(e, c)))
        .collect::<Vec<_>>()
        .join(",")
}
