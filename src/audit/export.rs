//! Exports of the audit log: CloudTrail log-file records (`{"Records":[…]}`, one file or gzip
//! files split per hour), JSON lines and CSV. Everything streams: a few batches of events in
//! memory at a time, turned into records on every core ([`export`]).

use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, mpsc};

use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::Value;

use super::query::Filter;
use super::{AuditError, Reader, StoredEvent};

mod records;
mod stored;

use records::cloudtrail_time;
pub use records::{CSV_COLUMNS, RecordsWriter, cell, cloudtrail_record, csv_field, csv_row};

/// How hard the hourly files are compressed.
const GZIP_LEVEL: u32 = 6;

/// A batch handed to a worker closes at this many events or bytes of stored text, whichever
/// comes first: small for a stream (what is in memory is a few batches and their output),
/// larger for hourly files (a batch is at most one file per account and region, so an hour
/// of more events than this is split into several files).
const STREAM_CHUNK: (usize, usize) = (1024, 1 << 20);
/// See [`STREAM_CHUNK`]; hourly files also close a batch at the end of each hour.
const HOURLY_CHUNK: (usize, usize) = (4096, 4 << 20);

/// What `audit export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `{"Records":[…]}`, as CloudTrail log files are shaped.
    CloudTrail,
    /// One merged event per line.
    Jsonl,
    /// Comma-separated, with a header row.
    Csv,
}

/// Where an export goes.
pub enum Destination<'a> {
    /// One stream (standard output or a file) in `format`.
    Stream {
        /// The format.
        format: Format,
        /// The stream; written from a thread of its own.
        out: Box<dyn Write + Send + 'a>,
    },
    /// CloudTrail log files under `dir`: gzip, one per UTC hour, account and region (an hour
    /// of more than one batch in several), named as CloudTrail names them, and the same names
    /// for the same records on every run:
    /// `YYYY/MM/DD/<account>_CloudTrail_<region>_<YYYYMMDDTHH00Z>_<unique>.json.gz`.
    Hourly {
        /// The directory (created if missing).
        dir: &'a Path,
        /// The account of records that name none (Slack's): default `000000000000`.
        account: Option<&'a str>,
    },
}

/// What an export wrote.
#[derive(Debug, Default)]
pub struct Summary {
    /// Events exported.
    pub events: u64,
    /// Files written (hourly files), sorted.
    pub files: Vec<PathBuf>,
}

/// Why an export stopped.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Reading the store failed.
    #[error(transparent)]
    Read(#[from] AuditError),
    /// Writing the stream failed.
    #[error("cannot write the export: {0}")]
    Write(std::io::Error),
    /// Writing a file failed.
    #[error("cannot write {}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl ExportError {
    /// The reader of the stream went away (`| head`): not a failure of the export.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, ExportError::Write(e) if e.kind() == std::io::ErrorKind::BrokenPipe)
    }
}

/// Checks an `--account-id`: twelve digits, as AWS spells an account.
pub fn valid_account(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

/// Exports the events `filter` selects. The calling thread reads the store and hands batches
/// of stored texts to one worker per core, which turn them into records (and, for hourly
/// files, compress and write them); a stream is written in order by a thread of its own.
/// At most a few batches are in memory at once. `progress` is called with the number of
/// events read so far, after each event.
pub fn export(
    reader: &dyn Reader,
    filter: &Filter,
    to: Destination<'_>,
    progress: &mut dyn FnMut(u64),
) -> Result<Summary, ExportError> {
    let workers = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let shared = Shared {
        gate: Gate {
            state: Mutex::new((0, false)),
            turn: Condvar::new(),
            limit: workers + 2,
        },
        error: Mutex::new(None),
    };
    let (work, out) = match to {
        Destination::Stream { format, out } => (Work::Stream(format), Some(out)),
        Destination::Hourly { dir, account } => {
            std::fs::create_dir_all(dir).map_err(|source| ExportError::File {
                path: dir.to_path_buf(),
                source,
            })?;
            let account = account.unwrap_or("000000000000");
            (Work::Hourly { dir, account }, None)
        }
    };
    let hourly = matches!(work, Work::Hourly { .. });
    let (job_tx, job_rx) = mpsc::sync_channel::<Chunk>(workers);
    let job_rx = Mutex::new(job_rx);
    let (done_tx, done_rx) = mpsc::channel::<Done>();
    let mut done_rx = Some(done_rx);
    let mut summary = Summary::default();
    std::thread::scope(|scope| {
        for _ in 0..workers {
            let done_tx = done_tx.clone();
            let (shared, job_rx, work) = (&shared, &job_rx, &work);
            std::thread::Builder::new()
                .name("export-worker".into())
                .spawn_scoped(scope, move || worker(job_rx, &done_tx, work, shared))
                .map_err(|e| ExportError::Write(std::io::Error::other(format!("cannot start a thread: {e}"))))?;
        }
        drop(done_tx);
        let writer = match (out, &work, done_rx.take()) {
            (Some(out), Work::Stream(format), Some(done)) => {
                let (format, shared) = (*format, &shared);
                Some(
                    std::thread::Builder::new()
                        .name("export-write".into())
                        .spawn_scoped(scope, move || write_in_order(out, format, done, shared))
                        .map_err(|e| {
                            ExportError::Write(std::io::Error::other(format!("cannot start a thread: {e}")))
                        })?,
                )
            }
            (_, _, done) => {
                done_rx = done;
                None
            }
        };

        let mut chunks = Chunker {
            hourly,
            next: 0,
            current: Chunk::new(0),
        };
        let mut n = 0u64;
        let mut dispatch = |chunk: Chunk| {
            if !shared.gate.enter() {
                return Err(AuditError::Read("the export stopped".into()));
            }
            job_tx
                .send(chunk)
                .map_err(|_| AuditError::Read("the export stopped".into()))
        };
        let read = reader
            .stored_events(filter, &mut |e| {
                n += 1;
                progress(n);
                match chunks.push_stored(e) {
                    Some(full) => dispatch(full),
                    None => Ok(()),
                }
            })
            .and_then(|stored| {
                if stored {
                    return Ok(());
                }
                reader.events(filter, &mut |_, e| {
                    n += 1;
                    progress(n);
                    match chunks.push_merged(e) {
                        Some(full) => dispatch(full),
                        None => Ok(()),
                    }
                })
            })
            .and_then(|()| chunks.finish().map_or(Ok(()), &mut dispatch));
        if let Err(e) = read {
            shared.fail(ExportError::Read(e));
        }
        drop(job_tx);
        summary.events = n;
        if let Some(w) = writer {
            let _ = w.join();
        } else if let Some(done) = done_rx.take() {
            for d in done {
                if let Done::Files(files) = d {
                    summary.files.extend(files);
                }
            }
        }
        Ok::<(), ExportError>(())
    })?;
    if let Some(e) = lock(&shared.error).take() {
        return Err(e);
    }
    summary.files.sort();
    Ok(summary)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// At most `limit` batches between the reader and the output: the reader waits at the gate,
/// the writer (or, for hourly files, the worker) lets one through when a batch is out.
struct Gate {
    /// Batches in flight, and whether the export stopped.
    state: Mutex<(usize, bool)>,
    turn: Condvar,
    limit: usize,
}

impl Gate {
    /// Waits for room; `false` once the export stopped.
    fn enter(&self) -> bool {
        let mut s = lock(&self.state);
        while s.0 >= self.limit && !s.1 {
            s = self.turn.wait(s).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        if s.1 {
            return false;
        }
        s.0 += 1;
        true
    }

    fn leave(&self) {
        let mut s = lock(&self.state);
        s.0 = s.0.saturating_sub(1);
        self.turn.notify_all();
    }

    fn stop(&self) {
        lock(&self.state).1 = true;
        self.turn.notify_all();
    }
}

/// What the threads of one export share: the gate and the first error.
struct Shared {
    gate: Gate,
    error: Mutex<Option<ExportError>>,
}

impl Shared {
    /// Records the first error and stops the export.
    fn fail(&self, e: ExportError) {
        lock(&self.error).get_or_insert(e);
        self.gate.stop();
    }

    fn failed(&self) -> bool {
        lock(&self.error).is_some()
    }
}

/// Stops the export when the thread holding it panics, so that no other thread waits for it.
struct StopOnPanic<'a>(&'a Shared);

impl Drop for StopOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0
                .fail(ExportError::Write(std::io::Error::other("an export thread failed")));
        }
    }
}

/// What the workers do with a batch.
enum Work<'a> {
    /// Render it for the stream.
    Stream(Format),
    /// Write its hourly files.
    Hourly { dir: &'a Path, account: &'a str },
}

/// A worker's answer.
enum Done {
    /// The rendered batch with this index.
    Bytes(u64, Vec<u8>),
    /// Files written.
    Files(Vec<PathBuf>),
}

/// One event's texts in a batch.
struct Span {
    request: Range<usize>,
    hash: Range<usize>,
    outcome: Option<Range<usize>>,
}

/// A batch of events: stored texts (in one buffer), or merged events from a store that does
/// not offer its texts.
struct Chunk {
    index: u64,
    /// `YYYY-MM-DDTHH` of its events (hourly files).
    hour: String,
    texts: String,
    spans: Vec<Span>,
    merged: Vec<Value>,
}

impl Chunk {
    fn new(index: u64) -> Chunk {
        Chunk {
            index,
            hour: String::new(),
            texts: String::new(),
            spans: Vec::new(),
            merged: Vec::new(),
        }
    }

    fn len(&self) -> usize {
        self.spans.len() + self.merged.len()
    }

    /// Calls `f` with each event, in order.
    fn each(&self, mut f: impl FnMut(Event<'_>)) {
        for s in &self.spans {
            let t = |r: &Range<usize>| &self.texts[r.clone()];
            f(Event::Stored(stored::merged(
                t(&s.request),
                Some(t(&s.hash)),
                s.outcome.as_ref().map(t),
            )));
        }
        for v in &self.merged {
            f(Event::Merged(v));
        }
    }
}

/// Cuts the events read into batches.
struct Chunker {
    hourly: bool,
    next: u64,
    current: Chunk,
}

impl Chunker {
    /// Whether the next event, of `time`, starts a new batch; if so the full one is returned.
    fn cut(&mut self, time: Option<&str>) -> Option<Chunk> {
        let hour = time.and_then(|t| t.get(..13)).unwrap_or("");
        let (events, bytes) = if self.hourly { HOURLY_CHUNK } else { STREAM_CHUNK };
        let full = self.current.len() > 0
            && (self.current.len() >= events
                || self.current.texts.len() >= bytes
                || (self.hourly && self.current.hour != hour));
        let done = full.then(|| {
            self.next += 1;
            let mut next = Chunk::new(self.next);
            next.texts.reserve(bytes + (bytes >> 3));
            std::mem::replace(&mut self.current, next)
        });
        if self.current.len() == 0 {
            self.current.hour.push_str(hour);
        }
        done
    }

    fn push_stored(&mut self, e: StoredEvent<'_>) -> Option<Chunk> {
        let full = self.cut(Some(e.event_time));
        let c = &mut self.current;
        let mut put = |s: &str| {
            let start = c.texts.len();
            c.texts.push_str(s);
            start..c.texts.len()
        };
        let span = Span {
            request: put(e.request),
            hash: put(e.hash),
            outcome: e.outcome.map(&mut put),
        };
        c.spans.push(span);
        full
    }

    fn push_merged(&mut self, e: Value) -> Option<Chunk> {
        let full = self.cut(e.get("eventTime").and_then(Value::as_str));
        self.current.merged.push(e);
        full
    }

    fn finish(self) -> Option<Chunk> {
        (self.current.len() > 0).then_some(self.current)
    }
}

/// One event of a batch.
enum Event<'a> {
    Stored(stored::Obj<'a>),
    Merged(&'a Value),
}

impl Event<'_> {
    fn write(self, format: Format, out: &mut Vec<u8>) {
        match (self, format) {
            (Event::Stored(e), Format::CloudTrail) => stored::write_cloudtrail(e, out),
            (Event::Stored(e), Format::Jsonl) => stored::write_event(&e, out),
            (Event::Stored(e), Format::Csv) => stored::write_csv_row(&e, out),
            (Event::Merged(e), Format::CloudTrail) => {
                let _ = serde_json::to_writer(&mut *out, &cloudtrail_record(e.clone()));
            }
            (Event::Merged(e), Format::Jsonl) => {
                let _ = serde_json::to_writer(&mut *out, e);
            }
            (Event::Merged(e), Format::Csv) => out.extend_from_slice(csv_row(e).as_bytes()),
        }
    }

    /// Where its CloudTrail file is, and its `eventID`.
    fn place(&self, account: &str) -> (FileKey, String) {
        let f = match self {
            Event::Stored(e) => stored::facts(e),
            Event::Merged(e) => {
                let s = |k: &str| e.get(k).and_then(Value::as_str);
                stored::Facts {
                    event_time: s("eventTime"),
                    account: s("recipientAccountId"),
                    region: s("awsRegion"),
                    event_id: s("eventID"),
                }
            }
        };
        let hour = f
            .event_time
            .and_then(|t| t.get(..13))
            .filter(|h| {
                h.bytes().enumerate().all(|(i, b)| match i {
                    4 | 7 => b == b'-',
                    10 => b == b'T',
                    _ => b.is_ascii_digit(),
                })
            })
            .unwrap_or("1970-01-01T00");
        let account = f.account.filter(|a| valid_account(a)).unwrap_or(account);
        let region = f
            .region
            .filter(|r| {
                !r.is_empty()
                    && r.len() <= 64
                    && r.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            })
            .unwrap_or("global");
        (
            FileKey {
                hour: hour.to_string(),
                account: account.to_string(),
                region: region.to_string(),
            },
            f.event_id.unwrap_or("").to_string(),
        )
    }
}

/// The records of one batch in one CloudTrail file.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct FileKey {
    /// `YYYY-MM-DDTHH`.
    hour: String,
    account: String,
    region: String,
}

/// The records of one file, as they will be compressed.
struct FileRecords {
    body: Vec<u8>,
    first_id: String,
    last_id: String,
}

fn worker(jobs: &Mutex<mpsc::Receiver<Chunk>>, done: &mpsc::Sender<Done>, work: &Work<'_>, shared: &Shared) {
    let _guard = StopOnPanic(shared);
    loop {
        let Ok(chunk) = lock(jobs).recv() else {
            return;
        };
        match work {
            Work::Stream(_) if shared.failed() => shared.gate.leave(),
            Work::Stream(format) => {
                let bytes = render(&chunk, *format);
                if done.send(Done::Bytes(chunk.index, bytes)).is_err() {
                    shared.gate.leave();
                }
            }
            Work::Hourly { .. } if shared.failed() => shared.gate.leave(),
            Work::Hourly { dir, account } => {
                match write_files(&chunk, dir, account) {
                    Ok(files) => {
                        let _ = done.send(Done::Files(files));
                    }
                    Err(e) => shared.fail(e),
                }
                shared.gate.leave();
            }
        }
    }
}

/// A batch in a stream format; a CloudTrail document's first record follows `[` alone.
fn render(chunk: &Chunk, format: Format) -> Vec<u8> {
    let mut out = Vec::with_capacity(chunk.texts.len() + 64 * chunk.len() + 1024);
    let mut first = chunk.index == 0;
    chunk.each(|e| {
        match format {
            Format::CloudTrail => out.extend_from_slice(if first { b"\n" } else { b",\n" }),
            Format::Jsonl | Format::Csv => {}
        }
        first = false;
        e.write(format, &mut out);
        if format != Format::CloudTrail {
            out.push(b'\n');
        }
    });
    out
}

/// The stream: its head, the batches in order as they come, its end (unless the export
/// failed).
fn write_in_order(mut out: Box<dyn Write + Send + '_>, format: Format, done: mpsc::Receiver<Done>, shared: &Shared) {
    let _guard = StopOnPanic(shared);
    let head = match format {
        Format::CloudTrail => b"{\"Records\":[".to_vec(),
        Format::Jsonl => Vec::new(),
        Format::Csv => format!("{}\n", CSV_COLUMNS.join(",")).into_bytes(),
    };
    if let Err(e) = out.write_all(&head) {
        return shared.fail(ExportError::Write(e));
    }
    let mut next = 0u64;
    let mut waiting = std::collections::BTreeMap::new();
    for d in done {
        let Done::Bytes(index, bytes) = d else { continue };
        waiting.insert(index, bytes);
        while let Some(bytes) = waiting.remove(&next) {
            let written = out.write_all(&bytes);
            shared.gate.leave();
            if let Err(e) = written {
                return shared.fail(ExportError::Write(e));
            }
            next += 1;
        }
    }
    if shared.failed() {
        return;
    }
    let tail: &[u8] = match format {
        Format::CloudTrail => b"\n]}\n",
        Format::Jsonl | Format::Csv => b"",
    };
    if let Err(e) = out.write_all(tail).and_then(|()| out.flush()) {
        shared.fail(ExportError::Write(e));
    }
}

/// Writes a batch's CloudTrail files: one per hour, account and region it holds, each named
/// after its first and last `eventID`, written beside its final name and renamed into place
/// (a re-run replaces a file whole).
fn write_files(chunk: &Chunk, dir: &Path, account: &str) -> Result<Vec<PathBuf>, ExportError> {
    let mut files: std::collections::BTreeMap<FileKey, FileRecords> = std::collections::BTreeMap::new();
    chunk.each(|e| {
        let (key, id) = e.place(account);
        let f = files.entry(key).or_insert_with(|| FileRecords {
            body: Vec::with_capacity(chunk.texts.len() + 1024),
            first_id: id.clone(),
            last_id: String::new(),
        });
        f.body.extend_from_slice(if f.body.is_empty() { b"\n" } else { b",\n" });
        e.write(Format::CloudTrail, &mut f.body);
        f.last_id = id;
    });
    let mut written = Vec::with_capacity(files.len());
    for (key, f) in files {
        let (y, m, d, h) = (&key.hour[0..4], &key.hour[5..7], &key.hour[8..10], &key.hour[11..13]);
        let sub = dir.join(y).join(m).join(d);
        let unique = crate::audit::canonical::sha256_hex(format!("{}\n{}", f.first_id, f.last_id).as_bytes());
        let name = format!(
            "{}_CloudTrail_{}_{y}{m}{d}T{h}00Z_{}.json.gz",
            key.account,
            key.region,
            &unique[..16]
        );
        let path = sub.join(&name);
        let partial = sub.join(format!(".{name}.partial"));
        let fail = |p: &Path| {
            let p = p.to_path_buf();
            move |source| ExportError::File { path: p, source }
        };
        let mut gz = GzEncoder::new(Vec::with_capacity(f.body.len() / 6 + 64), Compression::new(GZIP_LEVEL));
        let bytes = gz
            .write_all(b"{\"Records\":[")
            .and_then(|()| gz.write_all(&f.body))
            .and_then(|()| gz.write_all(b"\n]}\n"))
            .and_then(|()| gz.finish())
            .map_err(fail(&path))?;
        std::fs::create_dir_all(&sub).map_err(fail(&sub))?;
        std::fs::write(&partial, &bytes).map_err(fail(&partial))?;
        std::fs::rename(&partial, &path).map_err(fail(&path))?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

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
    fn records_document() {
        let mut w = RecordsWriter::new(Vec::new()).unwrap();
        w.push(&json!({"a": 1})).unwrap();
        w.push(&json!({"a": 2})).unwrap();
        let doc: Value = serde_json::from_slice(&w.finish().unwrap()).unwrap();
        assert_eq!(doc["Records"].as_array().unwrap().len(), 2);
        let empty: Value = serde_json::from_slice(&RecordsWriter::new(Vec::new()).unwrap().finish().unwrap()).unwrap();
        assert_eq!(empty["Records"].as_array().unwrap().len(), 0);
    }

    /// A store of events given as their stored texts, which offers them as texts (`offer`) or
    /// only as merged events, as a store without [`Reader::stored_events`] does.
    struct Texts {
        events: Vec<(String, String, Option<String>)>,
        offer: bool,
    }

    impl Reader for Texts {
        fn events(
            &self,
            _: &Filter,
            visit: &mut dyn FnMut(u64, Value) -> Result<(), AuditError>,
        ) -> Result<(), AuditError> {
            for (i, (r, h, o)) in self.events.iter().enumerate() {
                visit(i as u64 + 1, crate::audit::query::merge(r, h, o.as_deref()))?;
            }
            Ok(())
        }

        fn stored_events(
            &self,
            _: &Filter,
            visit: &mut dyn FnMut(StoredEvent<'_>) -> Result<(), AuditError>,
        ) -> Result<bool, AuditError> {
            if !self.offer {
                return Ok(false);
            }
            for (i, (r, h, o)) in self.events.iter().enumerate() {
                let time = serde_json::from_str::<Value>(r)
                    .ok()
                    .and_then(|v| v.get("eventTime").and_then(Value::as_str).map(str::to_string))
                    .unwrap_or_default();
                visit(StoredEvent {
                    seq: i as u64 + 1,
                    event_time: &time,
                    request: r,
                    hash: h,
                    outcome: o.as_deref(),
                })?;
            }
            Ok(true)
        }

        fn state(&self) -> Result<Vec<crate::audit::StateRow>, AuditError> {
            Ok(Vec::new())
        }

        fn chain(
            &self,
            _: &mut dyn FnMut(crate::audit::StoredRecord<'_>) -> std::ops::ControlFlow<()>,
        ) -> Result<(), AuditError> {
            Ok(())
        }
    }

    /// A `Write` whose bytes can be read after the export took it.
    #[derive(Clone, Default)]
    struct Shared(std::sync::Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            lock(&self.0).extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn streamed(store: &Texts, format: Format) -> Vec<u8> {
        let out = Shared::default();
        let summary = export(
            store,
            &Filter::default(),
            Destination::Stream {
                format,
                out: Box::new(out.clone()),
            },
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(summary.events, store.events.len() as u64);
        lock(&out.0).clone()
    }

    /// Every file under `dir`, by its path below it, with its decompressed text.
    fn files_under(dir: &Path) -> std::collections::BTreeMap<String, (Vec<u8>, String)> {
        let mut out = std::collections::BTreeMap::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                    continue;
                }
                let bytes = std::fs::read(&p).unwrap();
                let mut text = String::new();
                std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut text).unwrap();
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                out.insert(rel, (bytes, text));
            }
        }
        out
    }

    fn request(id: &str, time: &str, account: Option<&str>, region: Option<&str>) -> (String, String, Option<String>) {
        let body = json!({"eventID": id, "eventTime": time, "recipientAccountId": account,
            "awsRegion": region, "recordType": "request", "seq": 1});
        (
            crate::audit::canonical::to_string(&body),
            format!("h-{id}"),
            Some(format!(r#"{{"eventID":"{id}","outcome":"forwarded"}}"#)),
        )
    }

    /// Hourly files: one per hour, account and region; names from their records, the same on
    /// every run (a re-run replaces them); the fallback account for records without one; odd
    /// times and accounts kept out of the path; the same files whether the store offers its
    /// texts or only merged events.
    #[test]
    fn hourly_files_are_named_by_their_records() {
        let store = Texts {
            events: vec![
                request(
                    "a1",
                    "2026-11-22T06:01:00.000Z",
                    Some("111122223333"),
                    Some("us-east-1"),
                ),
                request(
                    "a2",
                    "2026-11-22T06:59:00.000Z",
                    Some("111122223333"),
                    Some("us-east-1"),
                ),
                request("s1", "2026-11-22T06:30:00.000Z", None, None),
                request(
                    "a3",
                    "2026-11-22T07:00:00.000Z",
                    Some("111122223333"),
                    Some("us-east-1"),
                ),
                request("odd", "../../../x", Some("../../etc"), Some("us/east")),
            ],
            offer: true,
        };
        let dir = tempfile::tempdir().unwrap();
        let export_to = |store: &Texts, dir: &Path, account: Option<&str>| {
            export(
                store,
                &Filter::default(),
                Destination::Hourly { dir, account },
                &mut |_| {},
            )
            .unwrap()
        };
        let summary = export_to(&store, dir.path(), Some("123456789012"));
        assert_eq!(summary.events, 5);
        let first = files_under(dir.path());
        let names: Vec<&String> = first.keys().collect();
        assert_eq!(names.len(), 4, "{names:?}");
        let unique =
            |a: &str, b: &str| crate::audit::canonical::sha256_hex(format!("{a}\n{b}").as_bytes())[..16].to_string();
        let want = [
            format!(
                "1970/01/01/123456789012_CloudTrail_global_19700101T0000Z_{}.json.gz",
                unique("odd", "odd")
            ),
            format!(
                "2026/11/22/111122223333_CloudTrail_us-east-1_20261122T0600Z_{}.json.gz",
                unique("a1", "a2")
            ),
            format!(
                "2026/11/22/111122223333_CloudTrail_us-east-1_20261122T0700Z_{}.json.gz",
                unique("a3", "a3")
            ),
            format!(
                "2026/11/22/123456789012_CloudTrail_global_20261122T0600Z_{}.json.gz",
                unique("s1", "s1")
            ),
        ];
        assert_eq!(names, want.iter().collect::<Vec<_>>());
        let ids = |text: &str| -> Vec<String> {
            let doc: Value = serde_json::from_str(text).unwrap();
            doc["Records"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["eventID"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(ids(&first[&want[1]].1), ["a1", "a2"]);
        assert_eq!(
            summary.files,
            want.iter().map(|w| dir.path().join(w)).collect::<Vec<_>>()
        );

        // A re-run writes the same names and bytes, over the old files; nothing else is left.
        export_to(&store, dir.path(), Some("123456789012"));
        assert_eq!(files_under(dir.path()), first);
        // Without --account-id, the account is zeros; from merged events, the same files.
        let zeros = tempfile::tempdir().unwrap();
        export_to(&store, zeros.path(), None);
        assert!(
            files_under(zeros.path())
                .keys()
                .any(|k| k.contains("/000000000000_CloudTrail_global_20261122T0600Z_"))
        );
        let merged = tempfile::tempdir().unwrap();
        let by_value = Texts {
            events: store.events.clone(),
            offer: false,
        };
        export_to(&by_value, merged.path(), Some("123456789012"));
        assert_eq!(files_under(merged.path()), first);
    }

    /// An hour of more events than a batch holds is split into files of at most a batch each,
    /// with every record once.
    #[test]
    fn a_big_hour_is_split_into_files() {
        let n = HOURLY_CHUNK.0 * 2 + 10;
        let store = Texts {
            events: (0..n)
                .map(|i| {
                    request(
                        &format!("e{i:05}"),
                        "2026-11-22T06:00:00.000Z",
                        Some("111122223333"),
                        Some("us-east-1"),
                    )
                })
                .collect(),
            offer: true,
        };
        let dir = tempfile::tempdir().unwrap();
        let summary = export(
            &store,
            &Filter::default(),
            Destination::Hourly {
                dir: dir.path(),
                account: None,
            },
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(summary.files.len(), 3);
        let mut ids: Vec<String> = Vec::new();
        for (_, (_, text)) in files_under(dir.path()) {
            let doc: Value = serde_json::from_str(&text).unwrap();
            let records = doc["Records"].as_array().unwrap();
            assert!(records.len() <= HOURLY_CHUNK.0);
            ids.extend(records.iter().map(|r| r["eventID"].as_str().unwrap().to_string()));
        }
        ids.sort();
        assert_eq!(ids, (0..n).map(|i| format!("e{i:05}")).collect::<Vec<_>>());
    }

    /// The streams are the same bytes from stored texts as from merged events, across batch
    /// boundaries: the CloudTrail document, JSON lines and CSV.
    #[test]
    fn streams_are_the_same_from_texts_and_from_merged_events() {
        let n = STREAM_CHUNK.0 * 2 + 3;
        let texts = Texts {
            events: (0..n)
                .map(|i| request(&format!("e{i}"), "2026-11-22T06:00:00.000Z", Some("111122223333"), None))
                .collect(),
            offer: true,
        };
        let merged = Texts {
            events: texts.events.clone(),
            offer: false,
        };
        for format in [Format::CloudTrail, Format::Jsonl, Format::Csv] {
            let a = streamed(&texts, format);
            assert_eq!(a, streamed(&merged, format), "{format:?}");
            let mut want = Vec::new();
            match format {
                Format::CloudTrail => {
                    let mut w = RecordsWriter::new(&mut want).unwrap();
                    merged
                        .events(&Filter::default(), &mut |_, e| {
                            w.push(&cloudtrail_record(e))
                                .map_err(|e| AuditError::Read(e.to_string()))
                        })
                        .unwrap();
                    w.finish().unwrap();
                }
                Format::Jsonl => merged
                    .events(&Filter::default(), &mut |_, e| {
                        writeln!(want, "{e}").map_err(|e| AuditError::Read(e.to_string()))
                    })
                    .unwrap(),
                Format::Csv => {
                    writeln!(want, "{}", CSV_COLUMNS.join(",")).unwrap();
                    merged
                        .events(&Filter::default(), &mut |_, e| {
                            writeln!(want, "{}", csv_row(&e)).map_err(|e| AuditError::Read(e.to_string()))
                        })
                        .unwrap();
                }
            }
            assert_eq!(
                String::from_utf8(a).unwrap(),
                String::from_utf8(want).unwrap(),
                "{format:?}"
            );
        }
        // Nothing selected: the empty document, the header alone, nothing.
        let none = Texts {
            events: vec![],
            offer: true,
        };
        assert_eq!(streamed(&none, Format::CloudTrail), b"{\"Records\":[\n]}\n");
        assert_eq!(
            streamed(&none, Format::Csv),
            format!("{}\n", CSV_COLUMNS.join(",")).into_bytes()
        );
        assert_eq!(streamed(&none, Format::Jsonl), b"");
    }

    /// A failed write stops the export with that error (and a closed pipe is recognised).
    #[test]
    fn a_failed_write_stops_the_export() {
        struct Closed;
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        // The reader is held at the gate once `workers + 2` batches wait for the output. It
        // can read those, one more let in by the failed write, and the batch it was filling:
        // no more, however the threads are scheduled and however many cores there are.
        let workers = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let bound = (workers + 4) * STREAM_CHUNK.0;
        let store = Texts {
            events: (0..bound + 2 * STREAM_CHUNK.0)
                .map(|i| request(&format!("e{i}"), "2026-11-22T06:00:00.000Z", None, None))
                .collect(),
            offer: true,
        };
        let mut read = 0;
        let e = export(
            &store,
            &Filter::default(),
            Destination::Stream {
                format: Format::Jsonl,
                out: Box::new(Closed),
            },
            &mut |n| read = n,
        )
        .unwrap_err();
        assert!(e.is_broken_pipe(), "{e}");
        assert!(
            read as usize <= bound,
            "the reading went on after the output closed ({read} events read, at most {bound} expected)"
        );
    }

    /// JSON texts, with what canonical text never holds but a stored one might: keys twice,
    /// escapes serde_json would not write, spaces, numbers of every kind.
    fn json_text() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            Just("null".to_string()),
            Just("true".to_string()),
            Just("false".to_string()),
            Just("0".to_string()),
            Just("-5".to_string()),
            Just("18446744073709551615".to_string()),
            Just("18446744073709551616".to_string()),
            Just("3.5".to_string()),
            Just("1e300".to_string()),
            Just("-0".to_string()),
            Just("-0.0".to_string()),
            Just("0.30000000000000004".to_string()),
            Just("\"s\"".to_string()),
            Just(r#""a\"b,c""#.to_string()),
            Just(r#""\u0001\n""#.to_string()),
            Just(r#""\u00e9\/""#.to_string()),
            Just("\"é\"".to_string()),
            Just("\"arn:aws:chime:us-east-1:111122223333:channel/c\"".to_string()),
            Just("\"arn:\"".to_string()),
            Just("\"2026-11-22T06:06:45.123Z\"".to_string()),
            Just("\"2026\"".to_string()),
            Just(" 7 ".to_string()),
        ];
        let keys = prop_oneof![
            Just("id"),
            Just("type"),
            Just("target"),
            Just("previous"),
            Just("new"),
            Just("decision"),
            Just("accessKeyId"),
            Just("chimeBearer"),
            Just("tokenFingerprint"),
            Just("tokenType"),
            Just("verified"),
            Just("a"),
        ];
        leaf.prop_recursive(3, 24, 4, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(","))),
                proptest::collection::vec((keys.clone(), inner), 0..5).prop_map(|v| {
                    let fields: Vec<String> = v.into_iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                    format!("{{{}}}", fields.join(","))
                }),
            ]
        })
    }

    /// An object text with keys of a stored record (some twice, some escaped).
    fn record_text() -> impl Strategy<Value = String> {
        let keys = prop_oneof![
            proptest::sample::select(vec![
                "eventVersion",
                "userIdentity",
                "eventTime",
                "eventSource",
                "eventName",
                "awsRegion",
                "sourceIPAddress",
                "userAgent",
                "requestParameters",
                "responseElements",
                "requestID",
                "eventID",
                "readOnly",
                "resources",
                "eventType",
                "recipientAccountId",
                "outcome",
                "httpStatus",
                "guardrail",
                "changes",
                "invocationId",
                "attempt",
                "durationMs",
                "proxyInstance",
                "proxyMode",
                "seq",
                "prevHash",
                "hash",
                "errorCode",
                "errorMessage",
                "tlsDetails",
                "recordType",
                "resource",
                "extra",
            ]),
            Just("event\\u0049D"),
        ];
        proptest::collection::vec((keys, json_text()), 0..14).prop_map(|v| {
            let fields: Vec<String> = v.into_iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
            format!("{{{}}}", fields.join(","))
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        /// From any stored texts, the CloudTrail record, the event's JSON line and its CSV row
        /// are the bytes the merged `Value` gives.
        #[test]
        fn rendering_from_texts_is_the_value_path_byte_for_byte(
            request in prop_oneof![4 => record_text(), 1 => json_text(), 1 => Just("{".to_string())],
            outcome in proptest::option::of(prop_oneof![4 => record_text(), 1 => json_text()]),
            hash in prop_oneof![Just("h"), Just("a\"b")],
        ) {
            let value = crate::audit::query::merge(&request, hash, outcome.as_deref());
            let render = |f: fn(stored::Obj<'_>, &mut Vec<u8>)| {
                let mut out = Vec::new();
                f(stored::merged(&request, Some(hash), outcome.as_deref()), &mut out);
                String::from_utf8(out).unwrap()
            };
            prop_assert_eq!(render(stored::write_cloudtrail), cloudtrail_record(value.clone()).to_string());
            prop_assert_eq!(render(|e, out| stored::write_event(&e, out)), value.to_string());
            prop_assert_eq!(render(|e, out| stored::write_csv_row(&e, out)), csv_row(&value));
            // A merged event given back as its text is itself.
            let text = value.to_string();
            let again = stored::merged(&text, None, None);
            let mut out = Vec::new();
            stored::write_event(&again, &mut out);
            prop_assert_eq!(String::from_utf8(out).unwrap(), value.to_string());
        }
    }

    /// The pinned event, from its text.
    #[test]
    fn the_pinned_event_from_its_text() {
        let mut out = Vec::new();
        stored::write_cloudtrail(stored::merged(EVENT, None, None), &mut out);
        // `merge` adds nothing when given no hash and no outcome, so this is the pinned record.
        assert_eq!(String::from_utf8(out).unwrap(), FULL);
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
