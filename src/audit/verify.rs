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

    /// The state just after the checkpoint record `split`, whose segment starts with it.
    fn after(opts: &'o Options<'o>, split: &Split) -> Links<'o> {
        let mut links = Links::new(opts);
        links.expect = split.seq + 1;
        links.prev.clone_from(&split.hash);
        links.seg_first = split.seq;
        links.seg.extend(checkpoint::leaf(&split.hash));
        links.previous_cp.clone_from(&split.checkpoint_hash);
        links
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

/// A chain that can be read from any `seq` on a connection of its own, so that several
/// threads read parts of it at once (the local SQLite log).
pub trait Ranged: Sync {
    /// The chain's checkpoint records as `(seq, hash, body)`, in order (from an index: a
    /// record it leaves out is still checked, it just does not start a range).
    fn checkpoint_records(&self) -> Result<Vec<(u64, String, String)>, AuditError>;

    /// The highest `seq` stored (0 when empty).
    fn last_seq(&self) -> Result<u64, AuditError>;

    /// Calls `visit` for every record with `seq >= first`, in order, until it breaks.
    fn chain_from(
        &self,
        first: u64,
        visit: &mut dyn FnMut(StoredRecord<'_>) -> ControlFlow<()>,
    ) -> Result<(), AuditError>;
}

/// A checkpoint record a range starts after: what the range takes on trust, and what the
/// range before it must find there.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Split {
    seq: u64,
    /// The record's hash.
    hash: String,
    /// The hash of the checkpoint it holds (what the next checkpoint names as previous).
    checkpoint_hash: String,
}

/// Where each range starts (`None`: at the chain's beginning), about `per_range` records
/// apart, each after a readable checkpoint record.
fn splits(records: Vec<(u64, String, String)>, per_range: u64) -> Vec<Option<Split>> {
    let mut out = vec![None];
    let mut next_at = per_range;
    for (seq, hash, body) in records {
        if seq < next_at {
            continue;
        }
        let Ok(cp) = serde_json::from_str::<Value>(&body)
            .map_err(|e| e.to_string())
            .and_then(|v| Checkpoint::from_json(&v))
        else {
            continue;
        };
        out.push(Some(Split {
            seq,
            hash,
            checkpoint_hash: cp.hash(),
        }));
        next_at = seq.saturating_add(per_range);
    }
    out
}

/// Ranges a walk is cut into per thread, so that one slow range does not leave a core idle.
const RANGES_PER_WORKER: u64 = 4;

/// The fewest records worth a range of their own.
const MIN_RANGE: u64 = 50_000;

/// One range's walk: its report so far and its first broken record.
struct RangeWalk<'o> {
    links: Links<'o>,
    broken: Option<Verification>,
}

/// [`walk`] of a chain read in ranges that start after checkpoint records, each range on
/// its own thread and connection doing everything [`walk`] does for its records. A range
/// starts from what the checkpoint record before it says (its hash, its checkpoint's hash,
/// a segment beginning with it); the range before it checks that the record is there and
/// says exactly that. The first broken `seq` of all ranges is reported, as [`walk`] would.
pub fn walk_ranged(
    chain: &dyn Ranged,
    opts: &Options<'_>,
    cancelled: &dyn Fn() -> bool,
) -> Result<Option<Report>, AuditError> {
    let per_range = (chain.last_seq()? / (workers() as u64 * RANGES_PER_WORKER)).max(MIN_RANGE);
    walk_ranges(chain, opts, cancelled, per_range)
}

/// [`walk_ranged`] with ranges of about `per_range` records.
fn walk_ranges(
    chain: &dyn Ranged,
    opts: &Options<'_>,
    cancelled: &dyn Fn() -> bool,
    per_range: u64,
) -> Result<Option<Report>, AuditError> {
    use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
    let workers = workers();
    let starts = splits(chain.checkpoint_records()?, per_range);
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    // The lowest broken seq found so far: ranges after it are not worth walking.
    let lowest_broken = AtomicU64::new(u64::MAX);
    let (tick_tx, tick_rx) = mpsc::channel::<()>();
    let walked: Result<Vec<(usize, RangeWalk<'_>)>, AuditError> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                let tick = tick_tx.clone();
                let (starts, next, stop, lowest_broken) = (&starts, &next, &stop, &lowest_broken);
                scope.spawn(move || -> Result<Vec<(usize, RangeWalk<'_>)>, AuditError> {
                    let mut done = Vec::new();
                    // Records this thread walked, for the calls back every CALLBACK_EVERY.
                    let mut walked = 0u64;
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(start) = starts.get(i) else { break };
                        let first = start.as_ref().map_or(1, |s| s.seq + 1);
                        if stop.load(Ordering::Relaxed) || first > lowest_broken.load(Ordering::Relaxed) {
                            break;
                        }
                        let end = starts.get(i + 1).and_then(Option::as_ref);
                        let walk = walk_range(chain, opts, (start.as_ref(), end), stop, (&tick, &mut walked))?;
                        if let Some(Verification::Broken { seq, .. }) = &walk.broken {
                            lowest_broken.fetch_min(*seq, Ordering::Relaxed);
                        }
                        done.push((i, walk));
                    }
                    Ok(done)
                })
            })
            .collect();
        drop(tick_tx);
        // Progress and cancellation are answered here, on the caller's thread.
        for () in tick_rx.iter() {
            if !stop.load(Ordering::Relaxed) && cancelled() {
                stop.store(true, Ordering::Relaxed);
            }
        }
        let mut all = Vec::new();
        for h in handles {
            all.extend(
                h.join()
                    .map_err(|_| AuditError::Read("a verification thread failed".into()))??,
            );
        }
        Ok(all)
    });
    if stop.load(Ordering::Relaxed) {
        return Ok(None);
    }
    let mut walked = walked?;
    walked.sort_by_key(|(i, _)| *i);
    // The ranges in order up to the first broken one, as one walk.
    let mut ranges = walked.into_iter().map(|(_, w)| w);
    let Some(mut whole) = ranges.next() else {
        return Ok(Some(Links::new(opts).finish(None)));
    };
    for next in ranges {
        if whole.broken.is_some() {
            break;
        }
        let (acc, r) = (&mut whole.links, next.links);
        acc.report.checkpoints += r.report.checkpoints;
        if r.report.checkpoints > 0 {
            acc.report.newest = r.report.newest;
            acc.report.after_newest = r.report.after_newest;
        } else {
            acc.report.after_newest += r.report.after_newest;
        }
        acc.stored.extend(r.stored);
        acc.expect = r.expect;
        acc.prev = r.prev;
        acc.seg_first = r.seg_first;
        acc.seg = r.seg;
        acc.previous_cp = r.previous_cp;
        whole.broken = next.broken;
    }
    Ok(Some(whole.links.finish(whole.broken)))
}

/// Walks the records after `start` (from the beginning when `None`) through the checkpoint
/// record `end` (to the chain's end when `None`), checking links and content record by record.
fn walk_range<'o>(
    chain: &dyn Ranged,
    opts: &'o Options<'o>,
    (start, end): (Option<&Split>, Option<&Split>),
    stop: &std::sync::atomic::AtomicBool,
    (tick, n): (&mpsc::Sender<()>, &mut u64),
) -> Result<RangeWalk<'o>, AuditError> {
    let mut links = match start {
        Some(s) => Links::after(opts, s),
        None => Links::new(opts),
    };
    let last = end.map_or(u64::MAX, |s| s.seq);
    let mut broken = None;
    chain.chain_from(links.expect, &mut |r| {
        if r.seq > last && links.expect > last {
            return ControlFlow::Break(());
        }
        *n += 1;
        if n.is_multiple_of(CALLBACK_EVERY)
            && (tick.send(()).is_err() || stop.load(std::sync::atomic::Ordering::Relaxed))
        {
            return ControlFlow::Break(());
        }
        if let Err(b) = links.check(&r) {
            broken = Some(b);
            return ControlFlow::Break(());
        }
        if let Err(reason) = check_content(&r) {
            broken = Some(Verification::Broken { seq: r.seq, reason });
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    })?;
    if broken.is_none()
        && let Some(end) = end
    {
        broken = range_end(&links, end);
    }
    Ok(RangeWalk { links, broken })
}

/// What is wrong where a range ends at the checkpoint record `end`, if anything: the next
/// range started from the index's word that this record is a checkpoint with a given hash,
/// so it must be that record, walked as a checkpoint.
fn range_end(links: &Links<'_>, end: &Split) -> Option<Verification> {
    if links.expect <= end.seq {
        return Some(Links::broken(
            links.expect,
            format!(
                "record {} is missing (the log ends at seq {})",
                links.expect,
                links.expect - 1
            ),
        ));
    }
    let walked = Split {
        seq: links.seg_first,
        hash: links.prev.clone(),
        checkpoint_hash: links.previous_cp.clone(),
    };
    (walked != *end).then(|| {
        Links::broken(
            end.seq,
            format!(
                "the record at seq {} is not the checkpoint the log's checkpoint index names",
                end.seq
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::checkpoint::{Segment, SigningKey};
    use crate::audit::{IndexFields, NewRecord, ObjectText, RecordKind, link};

    /// A record as a store holds it.
    #[derive(Clone)]
    struct Owned {
        seq: u64,
        kind: String,
        event_id: String,
        event_time: String,
        event_name: String,
        event_source: String,
        body: String,
        prev_hash: String,
        hash: String,
    }

    impl Owned {
        fn stored(&self) -> StoredRecord<'_> {
            StoredRecord {
                seq: self.seq,
                kind: &self.kind,
                event_id: &self.event_id,
                event_time: &self.event_time,
                event_name: &self.event_name,
                event_source: &self.event_source,
                body: &self.body,
                prev_hash: &self.prev_hash,
                hash: &self.hash,
            }
        }
    }

    /// A log in memory, readable both ways; its checkpoint index may be given (to lie).
    struct Log {
        records: Vec<Owned>,
        index: Option<Vec<(u64, String, String)>>,
    }

    impl Ranged for Log {
        fn checkpoint_records(&self) -> Result<Vec<(u64, String, String)>, AuditError> {
            Ok(self.index.clone().unwrap_or_else(|| {
                self.records
                    .iter()
                    .filter(|r| r.kind == "checkpoint")
                    .map(|r| (r.seq, r.hash.clone(), r.body.clone()))
                    .collect()
            }))
        }

        fn last_seq(&self) -> Result<u64, AuditError> {
            Ok(self.records.last().map_or(0, |r| r.seq))
        }

        fn chain_from(
            &self,
            first: u64,
            visit: &mut dyn FnMut(StoredRecord<'_>) -> ControlFlow<()>,
        ) -> Result<(), AuditError> {
            for r in self.records.iter().filter(|r| r.seq >= first) {
                if visit(r.stored()).is_break() {
                    break;
                }
            }
            Ok(())
        }
    }

    /// `calls` calls of two records each, a signed checkpoint every `every` records.
    fn log(calls: u64, every: u64, key: &SigningKey) -> Log {
        let (mut seq, mut hash) = (0u64, GENESIS.to_string());
        let mut segment = Segment::default();
        let mut records = Vec::new();
        let add = |l: crate::audit::Linked, records: &mut Vec<Owned>| {
            records.push(Owned {
                seq: l.seq,
                kind: l.record.kind.as_str().to_string(),
                event_id: l.record.event_id.clone(),
                event_time: l.record.event_time.clone(),
                event_name: l.record.index.event_name.clone(),
                event_source: l.record.index.event_source.clone(),
                body: l.text.clone(),
                prev_hash: l.prev_hash.clone(),
                hash: l.hash.clone(),
            });
        };
        for i in 0..calls {
            let id = format!("id-{i}");
            let time = format!("2026-11-22T10:{:02}:{:02}.000Z", i / 60, i % 60);
            for kind in [RecordKind::Request, RecordKind::Outcome] {
                let record = NewRecord {
                    kind,
                    event_id: id.clone(),
                    event_time: time.clone(),
                    body: ObjectText::from_value(&serde_json::json!({"eventID": id, "eventTime": time,
                        "eventName": "PutRetentionSettings", "eventSource": "chime.amazonaws.com",
                        "requestParameters": {"accountId": format!("acct-{i}"), "nested": [[{"a": "}]"}]]}})),
                    index: IndexFields {
                        event_name: "PutRetentionSettings".into(),
                        event_source: "chime.amazonaws.com".into(),
                        ..IndexFields::default()
                    },
                    observed: vec![],
                };
                let l = link(seq, &hash, record);
                (seq, hash) = (l.seq, l.hash.clone());
                segment.push(&l.hash);
                add(l, &mut records);
                if segment.len() >= every {
                    let cp = segment.seal("test", seq, &hash, time.clone(), key);
                    let l = link(seq, &hash, cp.to_record());
                    (seq, hash) = (l.seq, l.hash.clone());
                    segment.restart(&cp, l.seq, &l.hash);
                    add(l, &mut records);
                }
            }
        }
        Log { records, index: None }
    }

    fn new_key() -> (tempfile::TempDir, SigningKey) {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::load_or_create(&dir.path().join("key")).unwrap();
        (dir, key)
    }

    fn in_order(log: &Log, opts: &Options<'_>) -> Report {
        let mut chain = |visit: &mut dyn FnMut(StoredRecord<'_>) -> ControlFlow<()>| log.chain_from(1, visit);
        walk(&mut chain, opts, &|| false).unwrap().unwrap()
    }

    fn in_ranges(log: &Log, opts: &Options<'_>) -> Report {
        walk_ranges(log, opts, &|| false, 15).unwrap().unwrap()
    }

    /// What the ranged walk says of a log agrees with the walk in order: the whole report
    /// when intact, the first broken record and its reason when not.
    fn agree(log: &Log, opts: &Options<'_>, what: &str) -> Verification {
        let (a, b) = (in_order(log, opts), in_ranges(log, opts));
        assert_eq!(a.verification, b.verification, "{what}");
        if matches!(a.verification, Verification::Intact { .. }) {
            assert_eq!(a, b, "{what}");
        }
        a.verification
    }

    #[test]
    fn ranges_report_what_the_walk_in_order_reports() {
        let (_dir, key) = new_key();
        let public = key.public();
        let opts = Options {
            public_key: Some(&public),
            external: None,
        };
        let whole = log(70, 10, &key);
        let n = whole.records.len();
        assert!(n > 150 && whole.checkpoint_records().unwrap().len() >= 13);
        assert_eq!(
            agree(&whole, &opts, "intact"),
            Verification::Intact { records: n as u64 }
        );
        assert!(
            splits(whole.checkpoint_records().unwrap(), 15).len() >= 8,
            "the log is cut into ranges"
        );
        let tampered = |f: &dyn Fn(&mut Vec<Owned>)| {
            let mut records = whole.records.clone();
            f(&mut records);
            Log { records, index: None }
        };
        for i in 0..n {
            let removed = agree(&tampered(&|r| drop(r.remove(i))), &opts, &format!("record {i} removed"));
            assert!(
                matches!(removed, Verification::Broken { .. }) || i == n - 1,
                "record {i} removed"
            );
            let changed = agree(
                &tampered(&|r| {
                    r[i].body = r[i]
                        .body
                        .replacen("acct-", "acct+", 1)
                        .replacen("\"test\"", "\"tset\"", 1)
                }),
                &opts,
                &format!("record {i} changed"),
            );
            assert!(
                matches!(changed, Verification::Broken { seq, .. } if seq == i as u64 + 1),
                "record {i} changed: {changed:?}"
            );
            agree(
                &tampered(&|r| r[i].hash = GENESIS.into()),
                &opts,
                &format!("hash {i} changed"),
            );
            agree(
                &tampered(&|r| r[i].kind = "request".into()),
                &opts,
                &format!("kind {i} changed"),
            );
            agree(&tampered(&|r| r.truncate(i)), &opts, &format!("cut to {i} records"));
        }
        // A log whose records before a checkpoint were archived starts at that checkpoint.
        for cp in whole.records.iter().filter(|r| r.kind == "checkpoint") {
            let from = cp.seq;
            let archived = tampered(&|r| r.retain(|x| x.seq >= from));
            let report = in_order(&archived, &opts);
            assert_eq!(report.starts_at, Some(from));
            assert_eq!(report, in_ranges(&archived, &opts));
        }
        // Another key: the first checkpoint is named either way.
        let (_other_dir, other) = new_key();
        let other = other.public();
        let wrong = Options {
            public_key: Some(&other),
            external: None,
        };
        let first_cp = whole.records.iter().find(|r| r.kind == "checkpoint").unwrap().seq;
        assert!(matches!(agree(&whole, &wrong, "another key"), Verification::Broken { seq, .. } if seq == first_cp));
    }

    /// A range starts from what the checkpoint index says of the record before it; an index
    /// that does not match that record is named, not trusted.
    #[test]
    fn a_lying_checkpoint_index_is_named() {
        let (_dir, key) = new_key();
        let mut forged = log(70, 10, &key);
        let mut index = forged.checkpoint_records().unwrap();
        let (seq, hash, _) = index[3].clone();
        index[3].1 = GENESIS.into();
        forged.index = Some(index.clone());
        let report = in_ranges(&forged, &Options::default());
        assert!(
            matches!(&report.verification, Verification::Broken { seq: s, reason } if *s == seq && reason.contains("checkpoint index")),
            "{:?}",
            report.verification
        );
        // A record that is not a checkpoint, listed as one.
        index[3] = (seq - 1, hash, index[3].2.clone());
        forged.index = Some(index);
        let report = in_ranges(&forged, &Options::default());
        assert!(
            matches!(&report.verification, Verification::Broken { seq: s, .. } if *s == seq - 1),
            "{:?}",
            report.verification
        );
    }

    /// A cancelled ranged walk stops and says so.
    #[test]
    fn a_cancelled_ranged_walk_stops() {
        let (_dir, key) = new_key();
        let log = log(CALLBACK_EVERY * 3, 1000, &key);
        let asked = std::cell::Cell::new(0);
        let stopped = walk_ranges(
            &log,
            &Options::default(),
            &|| {
                asked.set(asked.get() + 1);
                true
            },
            2000,
        )
        .unwrap();
        assert!(stopped.is_none());
        assert!(asked.get() >= 1);
    }
}
