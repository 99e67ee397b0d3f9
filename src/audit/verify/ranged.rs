//! The walk of a local log in ranges, one thread and one connection per range at a time
//! ([`walk_ranged`]): each range starts just after a checkpoint record and checks everything
//! [`walk`](super::walk) checks for its records; the first broken `seq` of all ranges is the
//! answer, as the walk in order would give.

use std::ops::ControlFlow;
use std::sync::mpsc;

use serde_json::Value;

use super::{CALLBACK_EVERY, Links, Options, Report, Verification, check_content, workers};
use crate::audit::checkpoint::{self, Checkpoint};
use crate::audit::{AuditError, StoredRecord};

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

impl<'o> Links<'o> {
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
    use super::super::walk;
    use super::*;
    use crate::audit::GENESIS;
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
