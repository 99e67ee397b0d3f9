//! `audit verify`: one chain walked in order, with what each record must satisfy split in
//! two. What depends on the record before it (`seq` continuity, `prevHash` links, the
//! checkpoints and their segments) is checked in order as the store yields the records; what a
//! record must satisfy alone (its hash over the stored canonical bytes, its columns against its
//! content) is checked on every core, in chunks. The first broken `seq` of either is reported.
//!
//! Checkpoints (SPEC §12) are checked as they come: their segment, count, last hash, Merkle
//! root, the hash of the checkpoint before, and — given a public key — their signature. Given
//! the checkpoint files kept elsewhere (`--checkpoints DIR`), each must be in the log as it was
//! written, so a log cut short or rewritten before the newest file is named.

use std::ops::ControlFlow;
use std::sync::mpsc;

use serde_json::Value;

use super::checkpoint::{self, Checkpoint, PublicKey};
use super::{AuditError, GENESIS, StoredRecord, canonical};

mod ranged;
pub use ranged::{Ranged, walk_ranged};

/// The result of walking the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    /// Every link verified.
    Intact {
        /// Records checked.
        records: u64,
    },
    /// The first record that does not verify.
    Broken {
        /// Its `seq`.
        seq: u64,
        /// What is wrong.
        reason: String,
    },
}

/// What to check besides the links.
#[derive(Default)]
pub struct Options<'a> {
    /// Checkpoint signatures are checked with this key.
    pub public_key: Option<&'a PublicKey>,
    /// Checkpoint files kept elsewhere (name, checkpoint), for this chain's instance.
    pub external: Option<&'a [(String, Checkpoint)]>,
}

/// What a walk found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Intact, or the first broken record.
    pub verification: Verification,
    /// Checkpoints in the log.
    pub checkpoints: u64,
    /// The newest checkpoint's range and time.
    pub newest: Option<(u64, u64, String)>,
    /// Records after the newest checkpoint.
    pub after_newest: u64,
    /// Whether signatures were checked.
    pub signed: bool,
    /// External checkpoint files compared with the log.
    pub external: u64,
    /// The chain starts at this checkpoint record (the records before it were archived).
    pub starts_at: Option<u64>,
    /// The segment not yet covered by a checkpoint: its first `seq`, the Merkle root of its
    /// records and the hash of its last one (what the next checkpoint must say).
    pub open_segment: (u64, String, String),
}

/// A chain walker: calls its visitor for each record of one chain, in order.
pub type Walker<'a> = dyn FnMut(&mut dyn FnMut(StoredRecord<'_>) -> ControlFlow<()>) -> Result<(), AuditError> + 'a;

/// Records copied out of the store for a worker thread: their texts end to end in one buffer
/// (one allocation per chunk, not one per field, and the buffers go back to the reader to be
/// filled again), with where each field ends.
#[derive(Default)]
struct Chunk {
    text: String,
    /// Per record: its `seq` and the end offsets of its eight text fields in `text`.
    records: Vec<(u64, [usize; 8])>,
}

impl Chunk {
    fn push(&mut self, r: &StoredRecord<'_>) {
        let mut ends = [0usize; 8];
        let fields = [
            r.kind,
            r.event_id,
            r.event_time,
            r.event_name,
            r.event_source,
            r.body,
            r.prev_hash,
            r.hash,
        ];
        for (end, field) in ends.iter_mut().zip(fields) {
            self.text.push_str(field);
            *end = self.text.len();
        }
        self.records.push((r.seq, ends));
    }

    fn len(&self) -> usize {
        self.records.len()
    }

    fn clear(&mut self) {
        self.text.clear();
        self.records.clear();
    }

    fn iter(&self) -> impl Iterator<Item = StoredRecord<'_>> {
        let mut start = 0;
        self.records.iter().map(move |(seq, ends)| {
            let mut f = [""; 8];
            for (field, end) in f.iter_mut().zip(ends) {
                *field = &self.text[start..*end];
                start = *end;
            }
            StoredRecord {
                seq: *seq,
                kind: f[0],
                event_id: f[1],
                event_time: f[2],
                event_name: f[3],
                event_source: f[4],
                body: f[5],
                prev_hash: f[6],
                hash: f[7],
            }
        })
    }
}

/// Records per chunk handed to a worker.
const CHUNK: usize = 2048;

/// The fields of a record that are compared with its columns. Every other field is skipped
/// without being built; one of these keys given twice makes the record unreadable.
#[derive(serde::Deserialize)]
struct Checked {
    seq: Option<Value>,
    #[serde(rename = "prevHash")]
    prev_hash: Option<Value>,
    #[serde(rename = "recordType")]
    record_type: Option<Value>,
    #[serde(rename = "eventID")]
    event_id: Option<Value>,
    #[serde(rename = "eventTime")]
    event_time: Option<Value>,
    #[serde(rename = "eventName")]
    event_name: Option<Value>,
    #[serde(rename = "eventSource")]
    event_source: Option<Value>,
}

/// What a record must satisfy on its own: its hash over the stored bytes, and its columns
/// against its content.
pub fn check_content(r: &StoredRecord<'_>) -> Result<(), String> {
    if canonical::sha256_hex(r.body.as_bytes()) != r.hash {
        return Err("its content does not match its hash".into());
    }
    let (seq, [prev_hash, record_type, event_id, event_time, event_name, event_source]) = match checked_fast(r.body) {
        Some(fields) => fields,
        None => checked_parsed(r.body)?,
    };
    if seq != Some(r.seq) || prev_hash != r.prev_hash {
        return Err("its seq or prevHash column differs from its content".into());
    }
    if record_type != r.kind || event_id != r.event_id {
        return Err("its kind or eventID column differs from its content".into());
    }
    if r.kind == "request"
        && (event_time != r.event_time || event_name != r.event_name || event_source != r.event_source)
    {
        return Err("its eventTime, eventName or eventSource column differs from its content".into());
    }
    Ok(())
}

/// The compared fields: `seq`, then `prevHash`, `recordType`, `eventID`, `eventTime`,
/// `eventName`, `eventSource` (a missing or non-string one reads as empty).
type CheckedFields<'a> = (Option<u64>, [std::borrow::Cow<'a, str>; 6]);

const CHECKED: [&str; 7] = [
    "seq",
    "prevHash",
    "recordType",
    "eventID",
    "eventTime",
    "eventName",
    "eventSource",
];

/// The compared fields read straight from the text; `None` when a parser must decide.
fn checked_fast(body: &str) -> Option<CheckedFields<'_>> {
    let raw = super::top_level::scan(body, CHECKED)?;
    let seq = raw[0].and_then(|v| v.parse::<u64>().ok());
    let mut out: [std::borrow::Cow<'_, str>; 6] = Default::default();
    for (o, v) in out.iter_mut().zip(&raw[1..]) {
        match v {
            Some(v) if v.starts_with('"') => *o = super::top_level::plain_str(v)?.into(),
            _ => {}
        }
    }
    Some((seq, out))
}

/// The compared fields, parsed; an error when the text is not a JSON object with each of them
/// at most once.
fn checked_parsed(body: &str) -> Result<CheckedFields<'static>, String> {
    let v: Checked = match body.starts_with('{').then(|| serde_json::from_str(body)) {
        Some(Ok(v)) => v,
        _ => return Err("its content is not a JSON object (with each key once)".into()),
    };
    let s = |v: &Option<Value>| v.as_ref().and_then(Value::as_str).unwrap_or("").to_string().into();
    Ok((
        v.seq.as_ref().and_then(Value::as_u64),
        [
            s(&v.prev_hash),
            s(&v.record_type),
            s(&v.event_id),
            s(&v.event_time),
            s(&v.event_name),
            s(&v.event_source),
        ],
    ))
}

/// The in-order state of a walk.
struct Links<'o> {
    opts: &'o Options<'o>,
    expect: u64,
    prev: String,
    /// First `seq` of the open segment, and its record hashes.
    seg_first: u64,
    seg: Vec<[u8; 32]>,
    previous_cp: String,
    report: Report,
    stored: Vec<Checkpoint>,
}

impl<'o> Links<'o> {
    /// The state at the start of a chain.
    fn new(opts: &'o Options<'o>) -> Links<'o> {
        Links {
            opts,
            expect: 1,
            prev: GENESIS.to_string(),
            seg_first: 1,
            seg: Vec::new(),
            previous_cp: GENESIS.to_string(),
            report: Report {
                verification: Verification::Intact { records: 0 },
                checkpoints: 0,
                newest: None,
                after_newest: 0,
                signed: opts.public_key.is_some(),
                external: 0,
                starts_at: None,
                open_segment: (1, String::new(), GENESIS.to_string()),
            },
            stored: Vec::new(),
        }
    }

    /// The report of a walk that ended here: `first` is its verification when broken.
    fn finish(mut self, first: Option<Verification>) -> Report {
        let last = self.expect - 1;
        self.report.open_segment = (
            self.seg_first,
            hex::encode(checkpoint::merkle_root(&self.seg)),
            self.prev.clone(),
        );
        self.report.verification = match first {
            Some(b) => b,
            None => match self.external(last) {
                Ok(()) => Verification::Intact {
                    records: last + 1 - self.report.starts_at.unwrap_or(1).min(last + 1),
                },
                Err(b) => b,
            },
        };
        self.report
    }

    fn broken(seq: u64, reason: String) -> Verification {
        Verification::Broken { seq, reason }
    }

    /// Checks `r` against the records before it.
    fn check(&mut self, r: &StoredRecord<'_>) -> Result<(), Verification> {
        if self.expect == 1 && r.seq > 1 && r.kind == "checkpoint" {
            return self.start_at(r);
        }
        if r.seq != self.expect {
            return Err(Links::broken(
                self.expect,
                format!("record {} is missing (next present is {})", self.expect, r.seq),
            ));
        }
        if r.prev_hash != self.prev {
            return Err(Links::broken(
                r.seq,
                "its prevHash does not match the hash of the record before it".into(),
            ));
        }
        if r.kind == "checkpoint" {
            self.checkpoint(r)?;
        } else {
            let leaf = checkpoint::leaf(r.hash).ok_or_else(|| Links::broken(r.seq, "its hash is not hex".into()))?;
            self.seg.push(leaf);
            self.report.after_newest += 1;
        }
        self.prev.clear();
        self.prev.push_str(r.hash);
        self.expect += 1;
        Ok(())
    }

    /// A chain whose records before `r` were archived starts at the checkpoint `r`, which
    /// covers them: it must link to them and (given a key) be signed.
    fn start_at(&mut self, r: &StoredRecord<'_>) -> Result<(), Verification> {
        let cp = serde_json::from_str::<Value>(r.body)
            .map_err(|e| e.to_string())
            .and_then(|v| Checkpoint::from_json(&v))
            .map_err(|e| {
                Links::broken(
                    r.seq,
                    format!(
                        "the chain starts at seq {}, which is not a readable checkpoint: {e}",
                        r.seq
                    ),
                )
            })?;
        let bad = |what: &str| Links::broken(r.seq, format!("checkpoint {} (seq {}): {what}", cp.range(), r.seq));
        if cp.last_seq + 1 != r.seq || cp.last_hash != r.prev_hash {
            return Err(bad(
                "the chain starts here, but this checkpoint does not cover the records before it",
            ));
        }
        if let Some(key) = self.opts.public_key {
            cp.verify_signature(key).map_err(|e| bad(&e))?;
        }
        self.report.starts_at = Some(r.seq);
        self.expect = r.seq;
        self.prev = r.prev_hash.to_string();
        self.previous_cp = cp.hash();
        self.seg_first = r.seq;
        self.seg.clear();
        self.seg.extend(checkpoint::leaf(r.hash));
        self.report.checkpoints += 1;
        self.report.after_newest = 0;
        self.report.newest = Some((cp.first_seq, cp.last_seq, cp.time.clone()));
        self.stored.push(cp);
        self.prev.clear();
        self.prev.push_str(r.hash);
        self.expect += 1;
        Ok(())
    }

    fn checkpoint(&mut self, r: &StoredRecord<'_>) -> Result<(), Verification> {
        let cp = serde_json::from_str::<Value>(r.body)
            .map_err(|e| e.to_string())
            .and_then(|v| Checkpoint::from_json(&v))
            .map_err(|e| Links::broken(r.seq, format!("the checkpoint at seq {} is not readable: {e}", r.seq)))?;
        let bad = |what: &str| Links::broken(r.seq, format!("checkpoint {} (seq {}): {what}", cp.range(), r.seq));
        if cp.first_seq != self.seg_first || cp.last_seq + 1 != r.seq {
            return Err(bad(&format!(
                "it covers {}, not the records {}–{} since the checkpoint before it",
                cp.range(),
                self.seg_first,
                r.seq - 1
            )));
        }
        if cp.count != self.seg.len() as u64 {
            return Err(bad(&format!(
                "its count {} is not the {} records it covers",
                cp.count,
                self.seg.len()
            )));
        }
        if cp.last_hash != r.prev_hash {
            return Err(bad("its lastHash is not the hash of its last record"));
        }
        if cp.merkle_root != hex::encode(checkpoint::merkle_root(&self.seg)) {
            return Err(bad("its merkleRoot does not match the records it covers"));
        }
        if cp.previous_checkpoint_hash != self.previous_cp {
            return Err(bad(
                "its previousCheckpointHash is not the hash of the checkpoint before it",
            ));
        }
        if let Some(key) = self.opts.public_key {
            cp.verify_signature(key).map_err(|e| bad(&e))?;
        }
        self.previous_cp = cp.hash();
        self.seg_first = r.seq;
        self.seg.clear();
        self.seg.extend(checkpoint::leaf(r.hash));
        self.report.checkpoints += 1;
        self.report.after_newest = 0;
        self.report.newest = Some((cp.first_seq, cp.last_seq, cp.time.clone()));
        self.stored.push(cp);
        Ok(())
    }

    /// Compares the checkpoint files kept elsewhere with the log's checkpoints.
    fn external(&mut self, last_seq: u64) -> Result<(), Verification> {
        let Some(files) = self.opts.external else { return Ok(()) };
        for (name, file) in files {
            // Records archived before the chain's first checkpoint are checked with the archive.
            if self.report.starts_at.is_some_and(|s| file.last_seq + 1 < s) {
                continue;
            }
            if let Some(key) = self.opts.public_key {
                file.verify_signature(key)
                    .map_err(|e| Links::broken(file.first_seq, format!("checkpoint file {name}: {e}")))?;
            }
            match self
                .stored
                .iter()
                .find(|c| c.first_seq == file.first_seq && c.last_seq == file.last_seq)
            {
                Some(c) if c == file => {}
                Some(_) => {
                    return Err(Links::broken(
                        file.first_seq,
                        format!(
                            "checkpoint file {name} differs from the log's checkpoint {}: the log was rewritten",
                            file.range()
                        ),
                    ));
                }
                None if file.last_seq >= last_seq => {
                    return Err(Links::broken(
                        last_seq + 1,
                        format!(
                            "checkpoint file {name} covers records up to seq {} and was itself recorded as seq {}, but the log ends at seq {last_seq}: records were cut off",
                            file.last_seq,
                            file.last_seq + 1
                        ),
                    ));
                }
                None => {
                    return Err(Links::broken(
                        file.first_seq,
                        format!(
                            "checkpoint file {name} ({}) is not in the log: the log was rewritten",
                            file.range()
                        ),
                    ));
                }
            }
            self.report.external += 1;
        }
        Ok(())
    }
}

/// How many records the walk reads between two calls of its `cancelled` callback (which a
/// caller may also use to show progress).
pub const CALLBACK_EVERY: u64 = 4096;

/// Walks one chain; `None` when `cancelled` stopped it. `cancelled` is called every
/// [`CALLBACK_EVERY`] records.
pub fn walk(
    chain: &mut Walker<'_>,
    opts: &Options<'_>,
    cancelled: &dyn Fn() -> bool,
) -> Result<Option<Report>, AuditError> {
    let workers = workers();
    let mut links = Links::new(opts);
    let mut in_order: Option<Verification> = None;
    let mut stopped = false;
    // Chunks go to the workers, and come back emptied to be filled again.
    let (chunks_tx, chunks_rx) = mpsc::sync_channel::<Chunk>(workers * 2);
    let chunks_rx = std::sync::Mutex::new(chunks_rx);
    let (spare_tx, spare_rx) = mpsc::channel::<Chunk>();
    let content: Result<Option<Verification>, AuditError> = std::thread::scope(|scope| {
        // The first broken record of each chunk a worker found one in.
        let (found_tx, found_rx) = mpsc::channel::<Verification>();
        for _ in 0..workers {
            let (rx, found, spare) = (&chunks_rx, found_tx.clone(), spare_tx.clone());
            scope.spawn(move || {
                loop {
                    let mut chunk = match rx.lock().map(|r| r.recv()) {
                        Ok(Ok(c)) => c,
                        _ => break,
                    };
                    if let Some((seq, reason)) = chunk.iter().find_map(|r| check_content(&r).err().map(|e| (r.seq, e)))
                    {
                        let _ = found.send(Verification::Broken { seq, reason });
                    }
                    chunk.clear();
                    let _ = spare.send(chunk);
                }
            });
        }
        drop((found_tx, spare_tx));
        let mut chunk = Chunk::default();
        let mut n = 0u64;
        let read = chain(&mut |r| {
            n += 1;
            if n.is_multiple_of(CALLBACK_EVERY) && cancelled() {
                stopped = true;
                return ControlFlow::Break(());
            }
            if let Err(b) = links.check(&r) {
                in_order = Some(b);
                return ControlFlow::Break(());
            }
            chunk.push(&r);
            if chunk.len() == CHUNK {
                let next = spare_rx.try_recv().unwrap_or_default();
                if chunks_tx.send(std::mem::replace(&mut chunk, next)).is_err() {
                    return ControlFlow::Break(());
                }
            }
            ControlFlow::Continue(())
        });
        if chunk.len() > 0 {
            let _ = chunks_tx.send(chunk);
        }
        drop(chunks_tx);
        read?;
        Ok(first_broken(found_rx.iter()))
    });
    if stopped {
        return Ok(None);
    }
    let content = content?;
    Ok(Some(
        links.finish(first_broken([in_order, content].into_iter().flatten())),
    ))
}

/// Threads a walk uses: every core, at most 8.
fn workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 8)
}

/// The broken record with the lowest `seq`.
fn first_broken(found: impl Iterator<Item = Verification>) -> Option<Verification> {
    found.min_by_key(|v| match v {
        Verification::Broken { seq, .. } => *seq,
        Verification::Intact { .. } => u64::MAX,
    })
}
