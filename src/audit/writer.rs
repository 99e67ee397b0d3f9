//! The writer thread: the only owner of the store's write connection. It takes records from
//! a bounded channel, links each group into the chain, commits the group in one transaction
//! (one fsync for many concurrent calls) and then acknowledges every sender.
//!
//! A group's acknowledgements go back to the runtime in one message, to a small task that
//! answers each sender there: waking a task from outside the runtime costs a system call per
//! task, waking it from inside costs none.
//!
//! On a process with one CPU the writer and the runtime take turns on it ([`Turns::Shared`]):
//! the first record of a burst wakes the writer, which yields once so that the runtime can
//! finish its turn and queue the rest of the burst for the same commit.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use super::checkpoint::{self, Checkpoint, Segment, SigningKey};
use super::{AuditError, Backend, Linked, NewRecord, ObjectText, RecordKind, link};
use crate::retention::{RetentionValue, Target};

/// Largest number of records committed in one transaction.
const MAX_GROUP: usize = 512;

/// Where a caller of [`AuditHandle::append`] waits for its record's `seq`.
type Ack = oneshot::Sender<Result<u64, AuditError>>;

/// A group's answers, in the order the records were linked.
type Answers = Vec<(Ack, Result<u64, AuditError>)>;

enum Msg {
    Append(Box<NewRecord>, Ack),
    Probe(oneshot::Sender<Result<(), AuditError>>),
    /// Commit the outcome links kept through a failure, if any.
    Retry,
    /// `checkpoint_interval` has passed: sign a checkpoint unless one was made meanwhile.
    Checkpoint,
    Shutdown,
}

/// How the writer signs checkpoints (SPEC §12).
#[derive(Debug)]
pub struct CheckpointSettings {
    /// The signing key.
    pub key: SigningKey,
    /// `proxyInstance` of the chain.
    pub instance: String,
    /// A checkpoint every this many records.
    pub every: u64,
    /// And at least this often.
    pub interval: std::time::Duration,
    /// Where each checkpoint is also written as a JSON file.
    pub dir: Option<std::path::PathBuf>,
}

/// The writer's checkpointing state: the segment since the last checkpoint.
struct Checkpointing {
    settings: CheckpointSettings,
    /// The open segment.
    segment: Segment,
    /// When the last checkpoint was made (or the writer started).
    made: Instant,
}

impl Checkpointing {
    /// Continues from what `backend` holds: the segment after its newest checkpoint.
    fn resume<B: Backend>(settings: CheckpointSettings, backend: &mut B) -> Result<Checkpointing, AuditError> {
        let mut segment = Segment::default();
        if let Some((seq, text)) = backend.last_checkpoint()? {
            let cp = serde_json::from_str::<serde_json::Value>(&text)
                .map_err(|e| e.to_string())
                .and_then(|v| Checkpoint::from_json(&v))
                .map_err(|e| AuditError::Read(format!("the checkpoint at seq {seq} cannot be read: {e}")))?;
            segment.first = seq;
            segment.previous = cp.hash();
        }
        let first = segment.first;
        segment.hashes = backend
            .hashes_from(first)?
            .iter()
            .map(|h| {
                checkpoint::leaf(h)
                    .ok_or_else(|| AuditError::Read(format!("a record hash after seq {first} is not hex")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Checkpointing {
            settings,
            segment,
            made: Instant::now(),
        })
    }
}

/// Most outcome links kept through a store failure for a later commit. Past it, an outcome
/// link that fails is dropped (logged) and its event stays `unknown`: a bounded memory, and
/// the request link already proves the call was sent.
pub const MAX_PENDING_OUTCOMES: usize = 1024;

/// How often kept outcome links are retried when nothing else commits.
const RETRY_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Counters the writer keeps for `/metrics`.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Records committed.
    pub committed: AtomicU64,
    /// Groups committed.
    pub groups: AtomicU64,
    /// Failed groups.
    pub failures: AtomicU64,
    /// Records waiting in the channel.
    pub queued: AtomicU64,
    /// Outcome links kept through a failed commit, waiting to be committed.
    pub pending: AtomicU64,
    /// Sum of commit latencies, microseconds.
    pub commit_micros: AtomicU64,
    /// Commit latency histogram buckets (upper bounds in `COMMIT_BUCKETS_US`), cumulative later.
    pub commit_buckets: [AtomicU64; 8],
    /// Notified after each commit (the shipper to the central store waits on it).
    pub commit_signal: Arc<tokio::sync::Notify>,
}

/// Upper bounds (µs) of the commit latency buckets.
pub const COMMIT_BUCKETS_US: [u64; 8] = [250, 500, 1_000, 2_500, 5_000, 10_000, 50_000, u64::MAX];

/// The last value seen per (target, resource), with the `eventTime` of the record that
/// reported it: the `previous` of the next change.
pub type LastSeen = Arc<Mutex<HashMap<(Target, String), (RetentionValue, String)>>>;

/// How the writer shares the CPU with the runtime that feeds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turns {
    /// The writer has a CPU of its own: it commits as soon as a record arrives.
    Own,
    /// One CPU for both: woken by the first record of a burst, the writer yields the CPU once
    /// before taking what is queued, so the records the runtime queues in the rest of its turn
    /// go into the same commit (one fsync) instead of the next ones.
    Shared,
}

/// A cloneable handle to the writer.
#[derive(Clone)]
pub struct AuditHandle {
    tx: mpsc::Sender<Msg>,
    /// Writer counters.
    pub stats: Arc<WriterStats>,
    /// The `previous` memory, updated as records commit.
    pub last_seen: LastSeen,
}

/// Owns the writer thread; `shutdown` commits everything queued and joins it.
pub struct Writer {
    handle: AuditHandle,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Starts the writer over `backend`, sharing the CPU as `turns` says.
    pub fn start<B: Backend>(backend: B, capacity: usize, turns: Turns) -> Result<Writer, AuditError> {
        Writer::start_inner(backend, capacity, turns, None)
    }

    fn start_inner<B: Backend>(
        mut backend: B,
        capacity: usize,
        turns: Turns,
        checkpoints: Option<Checkpointing>,
    ) -> Result<Writer, AuditError> {
        let head = backend.head()?;
        let seen: HashMap<(Target, String), (RetentionValue, String)> = backend
            .last_seen()?
            .into_iter()
            .map(|(o, time)| ((o.target, o.resource), (o.value, time)))
            .collect();
        let last_seen: LastSeen = Arc::new(Mutex::new(seen));
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let stats = Arc::new(WriterStats::default());
        // Outside a runtime (no one to hand answers to) the writer answers each sender itself.
        let answers = tokio::runtime::Handle::try_current().ok().map(|rt| {
            let (answers, mut groups) = mpsc::unbounded_channel::<Answers>();
            rt.spawn(async move {
                while let Some(group) = groups.recv().await {
                    answer(group);
                }
            });
            answers
        });
        // Kept outcome links are committed with the next group, or by a probe; this commits
        // them within a second of the store's recovery when neither comes.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let (tx, stats) = (tx.clone(), stats.clone());
            rt.spawn(async move {
                let mut tick = tokio::time::interval(RETRY_EVERY);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    if stats.pending.load(Ordering::Relaxed) > 0 && tx.try_send(Msg::Retry).is_err() && tx.is_closed() {
                        break;
                    }
                }
            });
        }
        let thread = {
            let stats = stats.clone();
            let last_seen = last_seen.clone();
            std::thread::Builder::new()
                .name("audit-writer".into())
                .spawn(move || run(backend, rx, head, stats, last_seen, answers, turns, checkpoints))
                .map_err(|e| AuditError::Write(format!("cannot start the writer thread: {e}")))?
        };
        Ok(Writer {
            handle: AuditHandle { tx, stats, last_seen },
            thread: Some(thread),
        })
    }

    /// Starts the writer over `backend`, signing checkpoints as `checkpoints` says.
    pub fn start_with_checkpoints<B: Backend>(
        mut backend: B,
        capacity: usize,
        turns: Turns,
        checkpoints: CheckpointSettings,
    ) -> Result<Writer, AuditError> {
        let interval = checkpoints.interval;
        let cp = Checkpointing::resume(checkpoints, &mut backend)?;
        let writer = Writer::start_inner(backend, capacity, turns, Some(cp))?;
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let tx = writer.handle.tx.clone();
            rt.spawn(async move {
                let mut tick = tokio::time::interval(interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    if tx.send(Msg::Checkpoint).await.is_err() {
                        break;
                    }
                }
            });
        }
        Ok(writer)
    }

    /// A handle for request handlers.
    pub fn handle(&self) -> AuditHandle {
        self.handle.clone()
    }

    /// Commits everything queued before this call, then stops the thread.
    pub async fn shutdown(mut self) {
        let _ = self.handle.tx.send(Msg::Shutdown).await;
        if let Some(t) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}

impl AuditHandle {
    /// Queues a record and waits until it is durably committed; returns its `seq`.
    pub async fn append(&self, record: NewRecord) -> Result<u64, AuditError> {
        let (ack, done) = oneshot::channel();
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        if self.tx.send(Msg::Append(Box::new(record), ack)).await.is_err() {
            self.stats.queued.fetch_sub(1, Ordering::Relaxed);
            return Err(AuditError::Closed);
        }
        done.await.unwrap_or(Err(AuditError::Closed))
    }

    /// Whether the store can commit now: outcome links kept through a failure are committed
    /// first, then the store is probed (see [`Backend::probe`]). The error says why not.
    pub async fn probe(&self) -> Result<(), AuditError> {
        let (ack, done) = oneshot::channel();
        self.tx.send(Msg::Probe(ack)).await.map_err(|_| AuditError::Closed)?;
        done.await.unwrap_or(Err(AuditError::Closed))
    }

    /// The last value seen for a setting.
    pub fn previous(&self, target: Target, resource: &str) -> Option<RetentionValue> {
        self.previous_seen(target, resource).map(|(v, _)| v)
    }

    /// The last value seen for a setting, with the `eventTime` of the record that reported it.
    pub fn previous_seen(&self, target: Target, resource: &str) -> Option<(RetentionValue, String)> {
        let map = self.last_seen.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&(target, resource.to_string())).cloned()
    }
}

/// Answers every sender of a group.
fn answer(group: Answers) {
    for (ack, result) in group {
        let _ = ack.send(result);
    }
}

/// What the writer thread owns besides its channel.
struct State<B> {
    backend: B,
    /// The chain's head as committed: `seq` and `hash` of its last record.
    seq: u64,
    hash: String,
    stats: Arc<WriterStats>,
    last_seen: LastSeen,
    /// Where a group's answers go: the runtime's task, or `None` to answer directly.
    answers: Option<mpsc::UnboundedSender<Answers>>,
    /// Outcome links whose commit failed, oldest first, to be committed when the store takes
    /// writes again (at most [`MAX_PENDING_OUTCOMES`]).
    pending: VecDeque<NewRecord>,
    /// Checkpoint signing, when configured.
    checkpoints: Option<Checkpointing>,
}

impl<B: Backend> State<B> {
    /// Hands a group's answers to the runtime, or gives them directly if it is gone.
    fn deliver(&self, group: Answers) {
        match &self.answers {
            Some(tx) => {
                if let Err(mpsc::error::SendError(group)) = tx.send(group) {
                    answer(group);
                }
            }
            None => answer(group),
        }
    }

    /// Links and commits the pending outcome links, then `group`, in one transaction, and
    /// answers every sender. On failure, outcome links are kept for the next attempt.
    fn commit(&mut self, group: Vec<(NewRecord, Ack)>) -> Result<(), AuditError> {
        let retried = self.pending.len();
        if retried == 0 && group.is_empty() {
            return Ok(());
        }
        let n_new = group.len() as u64;
        let (mut s, mut h) = (self.seq, self.hash.clone());
        let mut linked: Vec<Linked> = Vec::with_capacity(retried + group.len());
        let mut acks: Vec<Option<Ack>> = Vec::with_capacity(retried + group.len());
        let records = self
            .pending
            .drain(..)
            .map(|r| (r, None))
            .chain(group.into_iter().map(|(r, a)| (r, Some(a))));
        for (r, ack) in records {
            let l = link(s, &h, r);
            s = l.seq;
            h = l.hash.clone();
            linked.push(l);
            acks.push(ack);
        }
        let n = linked.len() as u64;
        let started = Instant::now();
        let result = self.backend.append(&linked);
        let micros = started.elapsed().as_micros() as u64;
        let stats = &self.stats;
        stats.queued.fetch_sub(n_new, Ordering::Relaxed);
        stats.commit_micros.fetch_add(micros, Ordering::Relaxed);
        let bucket = COMMIT_BUCKETS_US.iter().position(|b| micros <= *b).unwrap_or(7);
        stats.commit_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(()) => {
                self.seq = s;
                self.hash = h;
                stats.committed.fetch_add(n, Ordering::Relaxed);
                stats.groups.fetch_add(1, Ordering::Relaxed);
                stats.pending.store(0, Ordering::Relaxed);
                if retried > 0 {
                    tracing::info!(
                        records = retried,
                        "outcome links kept through an audit store failure are committed"
                    );
                }
                {
                    let mut map = self.last_seen.lock().unwrap_or_else(|p| p.into_inner());
                    for l in &linked {
                        for o in &l.record.observed {
                            map.insert((o.target, o.resource.clone()), (o.value, l.record.event_time.clone()));
                        }
                    }
                }
                let answers = acks
                    .into_iter()
                    .zip(linked.iter().map(|l| Ok(l.seq)))
                    .filter_map(|(ack, r)| ack.map(|a| (a, r)))
                    .collect();
                self.deliver(answers);
                let due = self.checkpoints.as_mut().is_some_and(|cp| {
                    for l in &linked {
                        cp.segment.push(&l.hash);
                    }
                    cp.segment.len() >= cp.settings.every
                });
                if due {
                    self.checkpoint();
                }
                self.stats.commit_signal.notify_one();
                Ok(())
            }
            Err(e) => {
                stats.failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, records = n, "audit commit failed");
                // The store's own words, without a second "write failed" prefix.
                let message = match &e {
                    AuditError::Write(m) => m.clone(),
                    other => other.to_string(),
                };
                let mut answers: Answers = Vec::with_capacity(acks.len());
                let mut dropped = 0usize;
                for (l, ack) in linked.into_iter().zip(acks) {
                    let kept = l.record.kind == RecordKind::Outcome && self.pending.len() < MAX_PENDING_OUTCOMES;
                    if kept {
                        self.pending.push_back(unlinked(l));
                    } else if l.record.kind == RecordKind::Outcome {
                        dropped += 1;
                    }
                    if let Some(ack) = ack {
                        let err = if kept {
                            AuditError::Pending(message.clone())
                        } else {
                            AuditError::Write(message.clone())
                        };
                        answers.push((ack, Err(err)));
                    }
                }
                if dropped > 0 {
                    tracing::error!(
                        records = dropped,
                        kept = MAX_PENDING_OUTCOMES,
                        "outcome links dropped: as many are already kept for retry; their events stay 'unknown'"
                    );
                }
                stats.pending.store(self.pending.len() as u64, Ordering::Relaxed);
                self.deliver(answers);
                Err(e)
            }
        }
    }
}

impl<B: Backend> State<B> {
    /// Signs and commits a checkpoint of the open segment, and writes its file. A failure is
    /// logged; the segment stays open and the next checkpoint covers it.
    fn checkpoint(&mut self) {
        let Some(cp) = self.checkpoints.as_mut() else { return };
        let now = crate::audit::query::format_time(time::OffsetDateTime::now_utc());
        let c = cp
            .segment
            .seal(&cp.settings.instance, self.seq, &self.hash, now, &cp.settings.key);
        let record = c.to_record();
        let l = link(self.seq, &self.hash, record);
        if let Err(e) = self.backend.append(std::slice::from_ref(&l)) {
            tracing::error!(error = %e, range = %c.range(), "checkpoint could not be committed; the next one covers its records");
            self.stats.failures.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.seq = l.seq;
        self.hash.clone_from(&l.hash);
        self.stats.committed.fetch_add(1, Ordering::Relaxed);
        cp.segment.restart(&c, l.seq, &l.hash);
        cp.made = Instant::now();
        if let Some(dir) = &cp.settings.dir
            && let Err(e) = checkpoint::write_file(dir, &c)
        {
            tracing::error!(error = %e, dir = %dir.display(), range = %c.range(), "checkpoint file could not be written (the checkpoint is in the log)");
        }
    }
}

/// A linked record turned back into one that can be linked again (elsewhere in the chain):
/// its text without the chain fields. Only on the failure path.
fn unlinked(l: Linked) -> NewRecord {
    let mut body = match serde_json::from_str::<serde_json::Value>(&l.text) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    for chain_field in ["seq", "prevHash", "recordType"] {
        body.remove(chain_field);
    }
    NewRecord {
        body: ObjectText::from_value(&serde_json::Value::Object(body)),
        ..l.record
    }
}

#[allow(clippy::too_many_arguments)]
fn run<B: Backend>(
    backend: B,
    mut rx: mpsc::Receiver<Msg>,
    (seq, hash): (u64, String),
    stats: Arc<WriterStats>,
    last_seen: LastSeen,
    answers: Option<mpsc::UnboundedSender<Answers>>,
    turns: Turns,
    checkpoints: Option<Checkpointing>,
) {
    let mut state = State {
        backend,
        seq,
        hash,
        stats,
        last_seen,
        answers,
        pending: VecDeque::new(),
        checkpoints,
    };
    let mut group: Vec<(NewRecord, Ack)> = Vec::new();
    let mut stop = false;
    while !stop {
        let Some(first) = rx.blocking_recv() else { break };
        if turns == Turns::Shared {
            std::thread::yield_now();
        }
        let mut msgs = vec![first];
        while msgs.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(m) => msgs.push(m),
                Err(_) => break,
            }
        }
        let mut probes = Vec::new();
        let mut retry = false;
        let mut due = false;
        for m in msgs {
            match m {
                Msg::Append(r, ack) => group.push((*r, ack)),
                Msg::Probe(ack) => probes.push(ack),
                Msg::Retry => retry = true,
                Msg::Checkpoint => due = true,
                Msg::Shutdown => stop = true,
            }
        }
        let committed = if !group.is_empty() || retry || !probes.is_empty() {
            state.commit(std::mem::take(&mut group))
        } else {
            Ok(())
        };
        if due
            && committed.is_ok()
            && state
                .checkpoints
                .as_ref()
                .is_some_and(|c| c.made.elapsed() >= c.settings.interval.mul_f64(0.9))
        {
            state.checkpoint();
        }
        if !probes.is_empty() {
            // Ready when what failed before commits now and a write would succeed now.
            let ready = committed.and_then(|()| state.backend.probe());
            for ack in probes {
                let _ = ack.send(match &ready {
                    Ok(()) => Ok(()),
                    Err(AuditError::Write(m) | AuditError::Pending(m)) => Err(AuditError::Write(m.clone())),
                    Err(e) => Err(AuditError::Write(e.to_string())),
                });
            }
        }
    }
    // Anything still queued after a shutdown request is refused, never silently dropped.
    rx.close();
    while let Ok(m) = rx.try_recv() {
        if let Msg::Append(_, ack) = m {
            let _ = ack.send(Err(AuditError::Closed));
        }
    }
    if !state.pending.is_empty() && state.commit(Vec::new()).is_err() {
        tracing::error!(
            records = state.pending.len(),
            "outcome links could not be committed before stopping; their events stay 'unknown'"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::audit::{GENESIS, IndexFields, RecordKind, canonical::ObjectText};
    use crate::retention::Observed;

    /// An in-memory store that can be told to fail its commits.
    struct Memory {
        seqs: Arc<Mutex<Vec<u64>>>,
        fail: Arc<std::sync::atomic::AtomicBool>,
    }

    impl Backend for Memory {
        fn head(&mut self) -> Result<(u64, String), AuditError> {
            Ok((0, GENESIS.to_string()))
        }
        fn append(&mut self, batch: &[Linked]) -> Result<(), AuditError> {
            if self.fail.load(Ordering::SeqCst) {
                return Err(AuditError::Write("disk full".into()));
            }
            let mut seqs = self.seqs.lock().unwrap();
            seqs.extend(batch.iter().map(|l| l.seq));
            Ok(())
        }
        fn probe(&mut self) -> Result<(), AuditError> {
            Ok(())
        }
        fn last_seen(&mut self) -> Result<Vec<(Observed, String)>, AuditError> {
            Ok(Vec::new())
        }
    }

    fn record(i: usize) -> NewRecord {
        NewRecord {
            kind: RecordKind::Request,
            event_id: format!("id-{i}"),
            event_time: "2026-11-22T10:00:00.000Z".into(),
            body: ObjectText::default(),
            index: IndexFields::default(),
            observed: Vec::new(),
        }
    }

    fn memory(fail: bool) -> (Memory, Arc<Mutex<Vec<u64>>>) {
        let seqs = Arc::new(Mutex::new(Vec::new()));
        (
            Memory {
                seqs: seqs.clone(),
                fail: Arc::new(fail.into()),
            },
            seqs,
        )
    }

    /// Appends `n` records at once; every caller's result, in call order.
    async fn append_all(handle: &AuditHandle, n: usize) -> Vec<Result<u64, AuditError>> {
        let mut calls = tokio::task::JoinSet::new();
        for i in 0..n {
            let h = handle.clone();
            calls.spawn(async move { (i, h.append(record(i)).await) });
        }
        let wait = async {
            let mut out: Vec<Option<Result<u64, AuditError>>> = (0..n).map(|_| None).collect();
            while let Some(done) = calls.join_next().await {
                let (i, r) = done.expect("append task");
                out[i] = Some(r);
            }
            out.into_iter().map(|r| r.expect("every call answered")).collect()
        };
        tokio::time::timeout(Duration::from_secs(20), wait)
            .await
            .expect("every caller is answered")
    }

    /// 200 concurrent callers through a writer started with `turns`: each gets its own seq,
    /// the store holds them in order, and the counters agree.
    async fn every_caller_gets_its_own_seq(turns: Turns) {
        let (store, seqs) = memory(false);
        let writer = Writer::start(store, 16, turns).unwrap();
        let results = append_all(&writer.handle(), 200).await;
        let mut got: Vec<u64> = results.into_iter().map(|r| r.unwrap()).collect();
        got.sort_unstable();
        assert_eq!(got, (1..=200).collect::<Vec<u64>>());
        assert_eq!(*seqs.lock().unwrap(), (1..=200).collect::<Vec<u64>>());
        let stats = &writer.handle().stats;
        assert_eq!(stats.committed.load(Ordering::Relaxed), 200);
        assert!((1..=200).contains(&stats.groups.load(Ordering::Relaxed)));
        writer.shutdown().await;
    }

    #[tokio::test]
    async fn every_caller_gets_its_own_seq_through_the_runtime() {
        every_caller_gets_its_own_seq(Turns::Own).await;
    }

    /// A writer that yields before each group answers exactly as one that does not.
    #[tokio::test]
    async fn a_writer_taking_turns_answers_every_caller() {
        every_caller_gets_its_own_seq(Turns::Shared).await;
    }

    /// Started outside a runtime, the writer has no task to hand answers to and gives them
    /// itself: callers on a runtime built later are still answered.
    #[test]
    fn a_writer_started_outside_a_runtime_answers_its_callers_itself() {
        let (store, seqs) = memory(false);
        let writer = Writer::start(store, 4, Turns::Own).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let results = rt.block_on(append_all(&writer.handle(), 50));
        let mut got: Vec<u64> = results.into_iter().map(|r| r.unwrap()).collect();
        got.sort_unstable();
        assert_eq!(got, (1..=50).collect::<Vec<u64>>());
        assert_eq!(seqs.lock().unwrap().len(), 50);
        rt.block_on(writer.shutdown());
    }

    #[tokio::test]
    async fn a_failed_commit_is_reported_to_every_caller_in_the_group() {
        let (store, seqs) = memory(true);
        let writer = Writer::start(store, 16, Turns::Own).unwrap();
        for r in append_all(&writer.handle(), 40).await {
            match r {
                Err(AuditError::Write(m)) => assert_eq!(m, "disk full"),
                other => panic!("expected the write error, got {other:?}"),
            }
        }
        assert!(seqs.lock().unwrap().is_empty());
        writer.shutdown().await;
    }

    /// Outcome links that fail are kept, up to `MAX_PENDING_OUTCOMES`, and committed by the
    /// first probe after the store recovers; past the bound they are refused for good.
    #[tokio::test]
    async fn failed_outcome_links_are_kept_up_to_the_bound_and_committed_on_recovery() {
        let (store, seqs) = memory(true);
        let fail = store.fail.clone();
        let writer = Writer::start(store, 64, Turns::Own).unwrap();
        let handle = writer.handle();
        let extra = 10;
        let mut calls = tokio::task::JoinSet::new();
        for i in 0..MAX_PENDING_OUTCOMES + extra {
            let h = handle.clone();
            calls.spawn(async move {
                let mut r = record(i);
                r.kind = RecordKind::Outcome;
                h.append(r).await
            });
        }
        let (mut kept, mut refused) = (0, 0);
        while let Some(done) = calls.join_next().await {
            match done.unwrap() {
                Err(AuditError::Pending(m)) => {
                    assert_eq!(m, "disk full");
                    kept += 1;
                }
                Err(AuditError::Write(_)) => refused += 1,
                other => panic!("expected a failure, got {other:?}"),
            }
        }
        assert_eq!((kept, refused), (MAX_PENDING_OUTCOMES, extra));
        assert!(handle.probe().await.is_err(), "not ready while the store fails");
        assert_eq!(
            handle.stats.pending.load(Ordering::Relaxed),
            MAX_PENDING_OUTCOMES as u64
        );
        fail.store(false, Ordering::SeqCst);
        handle.probe().await.expect("ready once the store recovers");
        assert_eq!(seqs.lock().unwrap().len(), MAX_PENDING_OUTCOMES);
        assert_eq!(handle.stats.pending.load(Ordering::Relaxed), 0);
        // A request link that fails is not kept: its call was refused.
        fail.store(true, Ordering::SeqCst);
        assert!(matches!(handle.append(record(0)).await, Err(AuditError::Write(_))));
        fail.store(false, Ordering::SeqCst);
        handle.probe().await.unwrap();
        assert_eq!(seqs.lock().unwrap().len(), MAX_PENDING_OUTCOMES);
        writer.shutdown().await;
    }
}
