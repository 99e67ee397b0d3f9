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
pub fn cloudtrail_record(e: &Value) -> Value {
    let g = |k: &str| e.get(k).cloned().unwrap_or(Value::Null);
    let ui = e.get("userIdentity").cloned().unwrap_or(json!({}));
    let account = e.get("recipientAccountId").cloned().unwrap_or(Value::Null);
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
    let resources: Vec<Value> = e
        .get("resources")
        .and_then(Value::as_array)
        .map(|rs| {
            rs.iter()
                .map(|r| {
                    let id = r.get("id").cloned().unwrap_or(Value::Null);
                    let mut o = Map::new();
                    if id.as_str().is_some_and(|s| s.starts_with("arn:")) {
                        o.insert("ARN".into(), id.clone());
                        if let Some(a) = id.as_str().and_then(crate::recognise::arn_account) {
                            o.insert("accountId".into(), json!(a));
                        }
                    } else {
                        o.insert("ARN".into(), id.clone());
                    }
                    o.insert("type".into(), r.get("type").cloned().unwrap_or(Value::Null));
                    Value::Object(o)
                })
                .collect()
        })
        .unwrap_or_default();
    let mut rec = json!({
        "eventVersion": g("eventVersion"),
        "userIdentity": Value::Object(identity),
        "eventTime": e.get("eventTime").and_then(Value::as_str).map(cloudtrail_time),
        "eventSource": g("eventSource"),
        "eventName": g("eventName"),
        "awsRegion": g("awsRegion"),
        "sourceIPAddress": g("sourceIPAddress"),
        "userAgent": g("userAgent"),
        "requestParameters": g("requestParameters"),
        "responseElements": g("responseElements"),
        "requestID": g("requestID"),
        "eventID": g("eventID"),
        "readOnly": g("readOnly"),
        "resources": resources,
        "eventType": g("eventType"),
        "managementEvent": true,
        "recipientAccountId": account,
        "eventCategory": "Management",
        "additionalEventData": {
            "outcome": g("outcome"),
            "httpStatus": g("httpStatus"),
            "guardrail": g("guardrail"),
            "changes": g("changes"),
            "tokenFingerprint": ui.get("tokenFingerprint").cloned().unwrap_or(Value::Null),
            "tokenType": ui.get("tokenType").cloned().unwrap_or(Value::Null),
            "identityVerified": ui.get("verified").cloned().unwrap_or(Value::Null),
            "invocationId": g("invocationId"),
            "attempt": g("attempt"),
            "durationMs": g("durationMs"),
            "proxyInstance": g("proxyInstance"),
            "proxyMode": g("proxyMode"),
            "seq": g("seq"),
            "prevHash": g("prevHash"),
            "hash": g("hash"),
        },
    });
    if let Some(o) = rec.as_object_mut() {
        for k in ["errorCode", "errorMessage"] {
            if let Some(v) = e.get(k).filter(|v| !v.is_null()) {
                o.insert(k.into(), v.clone());
            }
        }
        if let Some(t) = e.get("tlsDetails").filter(|v| !v.is_null()) {
            o.insert("tlsDetails".into(), t.clone());
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
        let r = cloudtrail_record(&event());
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
}
