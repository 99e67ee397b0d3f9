//! Exports of the audit log: CloudTrail log-file records (`{"Records":[…]}`, one file or gzip
//! files split per hour), JSON lines and CSV. Everything streams: one event in memory at a time.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::{Map, Value, json};

/// CloudTrail time: second precision, `Z`.
fn cloudtrail_time(t: &str) -> String {
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

/// A gzip file, buffered on both sides: the JSON serialiser writes a token at a time, and the
/// encoder prepares its whole output buffer on every write it gets, so small writes are
/// gathered before they reach it.
type Gzip = BufWriter<GzEncoder<BufWriter<File>>>;

/// CloudTrail log files under a directory: one gzip file per UTC hour, account and region,
/// named as CloudTrail names them
/// (`YYYY/MM/DD/<account>_CloudTrail_<region>_<YYYYMMDDTHHmmZ>_<id>.json.gz`).
pub struct HourlyFiles {
    dir: PathBuf,
    /// Open files of the current hour, by (account, region).
    open: HashMap<(String, String), RecordsWriter<Gzip>>,
    hour: Option<String>,
    /// Files written.
    pub files: Vec<PathBuf>,
}

impl HourlyFiles {
    /// Writes under `dir` (created if missing).
    pub fn new(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(HourlyFiles {
            dir: dir.to_path_buf(),
            open: HashMap::new(),
            hour: None,
            files: Vec::new(),
        })
    }

    fn close_all(&mut self) -> std::io::Result<()> {
        for (_, w) in self.open.drain() {
            let gz = w.finish()?.into_inner().map_err(|e| e.into_error())?;
            gz.finish()?.flush()?;
        }
        Ok(())
    }

    /// Adds one record to its file. Events arrive in time order, so only the current hour's
    /// files are open; a late event for an earlier hour gets a file of its own.
    pub fn push(&mut self, rec: &Value) -> std::io::Result<()> {
        let t = rec
            .get("eventTime")
            .and_then(Value::as_str)
            .unwrap_or("1970-01-01T00:00:00Z");
        let hour: String = t.chars().take(13).collect(); // YYYY-MM-DDTHH
        if self.hour.as_deref() != Some(hour.as_str()) {
            self.close_all()?;
            self.hour = Some(hour.clone());
        }
        let account = rec
            .get("recipientAccountId")
            .and_then(Value::as_str)
            .unwrap_or("000000000000")
            .to_string();
        let region = rec
            .get("awsRegion")
            .and_then(Value::as_str)
            .unwrap_or("global")
            .to_string();
        let key = (account, region);
        if !self.open.contains_key(&key) {
            let (date, hh) = hour.split_at(10.min(hour.len()));
            let parts: Vec<&str> = date.split('-').collect();
            let sub = self
                .dir
                .join(parts.first().unwrap_or(&"0000"))
                .join(parts.get(1).unwrap_or(&"00"))
                .join(parts.get(2).unwrap_or(&"00"));
            std::fs::create_dir_all(&sub)?;
            let stamp = format!("{}T{}00Z", date.replace('-', ""), hh.trim_start_matches('T'));
            let mut n = 0;
            let path = loop {
                let p = sub.join(format!(
                    "{}_CloudTrail_{}_{stamp}_retention-proxy-{n}.json.gz",
                    key.0, key.1
                ));
                if !p.exists() {
                    break p;
                }
                n += 1;
            };
            let f = BufWriter::new(File::create(&path)?);
            self.files.push(path);
            self.open.insert(
                key.clone(),
                RecordsWriter::new(BufWriter::with_capacity(
                    64 * 1024,
                    GzEncoder::new(f, Compression::default()),
                ))?,
            );
        }
        match self.open.get_mut(&key) {
            Some(w) => w.push(rec),
            None => Err(std::io::Error::other("no open export file")),
        }
    }

    /// Closes every file.
    pub fn finish(mut self) -> std::io::Result<Vec<PathBuf>> {
        self.close_all()?;
        Ok(self.files)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> Value {
        json!({
            "eventVersion": "1.09", "eventID": "e1", "eventTime": "2026-11-22T06:06:45.578Z",
            "eventSource": "messaging-chime.amazonaws.com", "eventName": "PutChannelExpirationSettings",
            "eventType": "AwsApiCall", "readOnly": false, "awsRegion": "us-east-1",
            "sourceIPAddress": "127.0.0.1", "userAgent": "Boto3/1.44.5",
            "userIdentity": {"type": "IAMUser", "accessKeyId": "AKIA1", "chimeBearer": "arn:aws:chime:us-east-1:111122223333:app-instance/a/user/u", "tokenFingerprint": null, "tokenType": null, "verified": false},
            "requestParameters": {"channelArn": "arn:aws:chime:us-east-1:111122223333:app-instance/a/channel/c"},
            "responseElements": null, "requestID": "rid", "errorCode": null, "errorMessage": null,
            "resources": [{"type": "AWS::ChimeSDKMessaging::Channel", "id": "arn:aws:chime:us-east-1:111122223333:app-instance/a/channel/c"}],
            "recipientAccountId": "111122223333", "httpStatus": 200, "outcome": "forwarded",
            "guardrail": {"decision": "allow", "ruleIds": [], "reason": null},
            "changes": [{"target": "chime_sdk.channel_expiration", "resource": "c", "previous": null, "new": 30}],
            "seq": 7, "prevHash": "p", "hash": "h"
        })
    }

    #[test]
    fn cloudtrail_shape() {
        let r = cloudtrail_record(event());
        assert_eq!(r["eventTime"], "2026-11-22T06:06:45Z");
        assert_eq!(r["userIdentity"]["accessKeyId"], "AKIA1");
        assert_eq!(r["userIdentity"]["accountId"], "111122223333");
        assert_eq!(
            r["resources"][0]["ARN"],
            "arn:aws:chime:us-east-1:111122223333:app-instance/a/channel/c"
        );
        assert_eq!(r["resources"][0]["accountId"], "111122223333");
        assert_eq!(r["additionalEventData"]["changes"][0]["new"], 30);
        assert_eq!(r["additionalEventData"]["seq"], 7);
        assert_eq!(r["managementEvent"], true);
        assert!(r.get("errorCode").is_none());
    }

    #[test]
    fn records_document_and_hourly_files() {
        let mut w = RecordsWriter::new(Vec::new()).unwrap();
        w.push(&json!({"a": 1})).unwrap();
        w.push(&json!({"a": 2})).unwrap();
        let doc: Value = serde_json::from_slice(&w.finish().unwrap()).unwrap();
        assert_eq!(doc["Records"].as_array().unwrap().len(), 2);
        let empty: Value = serde_json::from_slice(&RecordsWriter::new(Vec::new()).unwrap().finish().unwrap()).unwrap();
        assert_eq!(empty["Records"].as_array().unwrap().len(), 0);

        let dir = tempfile::tempdir().unwrap();
        let mut h = HourlyFiles::new(dir.path()).unwrap();
        for t in ["2026-11-22T06:01:00Z", "2026-11-22T06:59:00Z", "2026-11-22T07:00:00Z"] {
            h.push(&json!({"eventTime": t, "recipientAccountId": "111122223333", "awsRegion": "us-east-1"}))
                .unwrap();
        }
        h.push(&json!({"eventTime": "2026-11-22T07:10:00Z", "eventSource": "slack.com"}))
            .unwrap();
        let files = h.finish().unwrap();
        assert_eq!(files.len(), 3, "one file per hour, account and region: {files:?}");
        let mut total = 0;
        for f in &files {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(File::open(f).unwrap()), &mut s).unwrap();
            let v: Value = serde_json::from_str(&s).unwrap();
            total += v["Records"].as_array().unwrap().len();
        }
        assert_eq!(total, 4);
        assert!(
            files[0]
                .to_string_lossy()
                .contains("2026/11/22/111122223333_CloudTrail_us-east-1_20261122T0600Z")
        );
    }

    #[test]
    fn csv_quoting() {
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("plain"), "plain");
    }

    /// The record's exact bytes, as the version that copied every field wrote them: moving
    /// the fields out of the event changes nothing an auditor's tooling reads (field order
    /// included), for a full event with escapes, big and float numbers, an error, TLS details
    /// and odd resources, for a non-object, and for a bearer-only identity with null extras.
    #[test]
    fn cloudtrail_record_bytes_are_pinned() {
        let full: Value = serde_json::from_str(EVENT).unwrap();
        assert_eq!(cloudtrail_record(full).to_string(), FULL);
        assert_eq!(cloudtrail_record(json!(["not an object"])).to_string(), ODD);
        let bearer = json!({"userIdentity": {"chimeBearer": "arn:aws:chime:x", "accessKeyId": "AK"},
            "awsRegion": "us-east-1", "errorCode": null, "tlsDetails": null, "resources": "x"});
        assert_eq!(cloudtrail_record(bearer).to_string(), BEARER);
    }

    const EVENT: &str = r##"{"eventVersion":"1.0","eventID":"01a2-e","eventTime":"2026-11-22T06:06:45.123Z","eventSource":"messaging-chime.amazonaws.com","eventName":"PutChannelExpirationSettings","eventType":"AwsApiCall","readOnly":false,"awsRegion":null,"sourceIPAddress":"127.0.0.1","userAgent":"Boto3/1.35 \"quoted\" \\ back\u0001","userIdentity":{"type":"IAMUser","accessKeyId":"AKIA1","chimeBearer":null,"tokenFingerprint":"hmac-sha256:ab","tokenType":"xoxp","verified":true},"requestParameters":{"ChannelArn":"arn:aws:chime:us-east-1:111122223333:app-instance/a/channel/c","ExpirationSettings":{"ExpirationDays":3.5,"ExpirationCriterion":"CREATED_TIMESTAMP"},"big":18446744073709551615,"neg":-1,"e":1e300},"responseElements":null,"errorCode":"ValidationException","errorMessage":"too short","requestID":"r-1","resources":[{"type":"AWS::ChimeSDKMessaging::Channel","id":"arn:aws:chime:us-east-1:111122223333:app-instance/a/channel/c"},{"type":"slack.channel","id":"C0123"},{"id":"arn:nothing"},"odd",{"type":"t"}],"recipientAccountId":"111122223333","httpStatus":400,"outcome":"denied","guardrail":{"decision":"deny","ruleIds":["min"],"reason":"below 30"},"changes":[{"target":"chime_sdk.channel_expiration","resource":"c","previous":null,"new":3}],"invocationId":"inv","attempt":2,"durationMs":5,"proxyInstance":"host-1","proxyMode":"reverse","tlsDetails":{"tlsVersion":"TLSv1.3"},"seq":7,"prevHash":"p","hash":"h","extra":"ignored"}"##;
    const FULL: &str = r##"{"eventVersion":"1.0","userIdentity":{"type":"IAMUser","accessKeyId":"AKIA1","accountId":"111122223333","userName":"hmac-sha256:ab"},"eventTime":"2026-11-22T06:06:45Z","eventSource":"messaging-chime.amazonaws.com","eventName":"PutChannelExpirationSettings","tlsDetails":{"tlsVersion":"TLSv1.3"},"sourceIPAddress":"127.0.0.1","userAgent":"Boto3/1.35 \"quoted\" \\ back\u0001","requestParameters":{"ChannelArn":"arn:aws:chime:us-east-1:111122223333:app-instance/a/channel/c","ExpirationSettings":{"ExpirationDays":3.5,"ExpirationCriterion":"CREATED_TIMESTAMP"},"big":18446744073709551615,"neg":-1,"e":1e+300},"responseElements":null,"requestID":"r-1","eventID":"01a2-e","readOnly":false,"resources":[{"ARN":"arn:aws:chime:us-east-1:111122223333:app-instance/a/channel/c","accountId":"111122223333","type":"AWS::ChimeSDKMessaging::Channel"},{"ARN":"C0123","type":"slack.channel"},{"ARN":"arn:nothing","type":null},{"ARN":null,"type":null},{"ARN":null,"type":"t"}],"eventType":"AwsApiCall","managementEvent":true,"recipientAccountId":"111122223333","eventCategory":"Management","additionalEventData":{"outcome":"denied","httpStatus":400,"guardrail":{"decision":"deny","ruleIds":["min"],"reason":"below 30"},"changes":[{"target":"chime_sdk.channel_expiration","resource":"c","previous":null,"new":3}],"tokenFingerprint":"hmac-sha256:ab","tokenType":"xoxp","identityVerified":true,"invocationId":"inv","attempt":2,"durationMs":5,"proxyInstance":"host-1","proxyMode":"reverse","seq":7,"prevHash":"p","hash":"h"},"errorCode":"ValidationException","errorMessage":"too short"}"##;
    const ODD: &str = r##"{"eventVersion":null,"userIdentity":{"type":"Unknown"},"eventTime":null,"eventSource":null,"eventName":null,"additionalEventData":{"outcome":null,"httpStatus":null,"guardrail":null,"changes":null,"tokenFingerprint":null,"tokenType":null,"identityVerified":null,"invocationId":null,"attempt":null,"durationMs":null,"proxyInstance":null,"proxyMode":null,"seq":null,"prevHash":null,"hash":null},"sourceIPAddress":null,"userAgent":null,"requestParameters":null,"responseElements":null,"requestID":null,"eventID":null,"readOnly":null,"resources":[],"eventType":null,"managementEvent":true,"recipientAccountId":null,"eventCategory":"Management"}"##;
    const BEARER: &str = r##"{"eventVersion":null,"userIdentity":{"type":"Unknown","accessKeyId":"AK","arn":"arn:aws:chime:x","userName":"arn:aws:chime:x"},"eventTime":null,"eventSource":null,"eventName":null,"awsRegion":"us-east-1","sourceIPAddress":null,"userAgent":null,"requestParameters":null,"responseElements":null,"requestID":null,"eventID":null,"readOnly":null,"resources":[],"eventType":null,"managementEvent":true,"recipientAccountId":null,"eventCategory":"Management","additionalEventData":{"outcome":null,"httpStatus":null,"guardrail":null,"changes":null,"tokenFingerprint":null,"tokenType":null,"identityVerified":null,"invocationId":null,"attempt":null,"durationMs":null,"proxyInstance":null,"proxyMode":null,"seq":null,"prevHash":null,"hash":null}}"##;
}
