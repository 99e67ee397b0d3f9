//! The audit trail: records ([`event`] decides what of a call is stored), the hash chain that
//! links them ([`canonical`] text, [`link`]), the writer thread that commits them in groups
//! ([`writer`]), and the two sides a store implements: [`Backend`] (writing, owned by the
//! writer thread) and [`Reader`] (filtered events, one resource's history, state, the chain
//! walk behind `verify`, export). SQLite ([`sqlite`]) implements both; [`query`] and [`export`]
//! work on any [`Reader`], and no SQL lives outside the store's own module.

pub mod canonical;
pub mod checkpoint;
pub mod event;
pub mod export;
pub mod postgres;
pub mod query;
pub mod reload;
pub mod sqlite;
mod top_level;
pub mod verify;
pub mod writer;

use crate::retention::Observed;

pub use canonical::ObjectText;
pub use query::{Filter, StateRow};

pub use writer::{AuditHandle, WriterStats};

/// Why an event could not be stored or read.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The store refused the write (disk full, read-only, locked…).
    #[error("audit store write failed: {0}")]
    Write(String),
    /// The store could not be opened.
    #[error("cannot open the audit database {path}: {reason}")]
    Open {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The store refused the write; the record (an outcome link) is kept and committed when
    /// the store takes writes again.
    #[error("audit store write failed: {0}; the record is kept and committed when the store recovers")]
    Pending(String),
    /// The writer has stopped (shutdown or a crash of its thread).
    #[error("the audit writer is not running")]
    Closed,
    /// A read failed.
    #[error("audit query failed: {0}")]
    Read(String),
}

/// Which half of a call a record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// Written before forwarding (or as the whole record of a refused call).
    Request,
    /// Written when the vendor's answer (or the failure) is known.
    Outcome,
    /// A signed checkpoint of the records since the previous one ([`checkpoint`]).
    Checkpoint,
}

impl RecordKind {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Request => "request",
            RecordKind::Outcome => "outcome",
            RecordKind::Checkpoint => "checkpoint",
        }
    }
}

/// Columns kept beside the record for filtering; derived from the record, not part of it.
#[derive(Debug, Clone, Default)]
pub struct IndexFields {
    /// `eventName`.
    pub event_name: String,
    /// `eventSource`.
    pub event_source: String,
    /// Principals: access key id, bearer ARN, token fingerprint, proxy user.
    pub actors: Vec<String>,
    /// `guardrail.decision`.
    pub decision: String,
    /// Resource ids (resources and changes).
    pub resources: Vec<String>,
}

/// A record on its way to the chain.
#[derive(Debug, Clone)]
pub struct NewRecord {
    /// Request or outcome.
    pub kind: RecordKind,
    /// The call's `eventID`.
    pub event_id: String,
    /// RFC 3339 UTC with milliseconds.
    pub event_time: String,
    /// The record's fields (no chain fields yet). Emptied by [`link`], which writes its text.
    pub body: ObjectText,
    /// Filter columns.
    pub index: IndexFields,
    /// Retention values this record reports, for the `previous` memory.
    pub observed: Vec<Observed>,
}

/// A record with its place in the chain.
#[derive(Debug, Clone)]
pub struct Linked {
    /// Position in the chain, from 1.
    pub seq: u64,
    /// Hash of the previous record (`GENESIS` for the first).
    pub prev_hash: String,
    /// `sha256(canonical JSON of body with seq and prevHash)`.
    pub hash: String,
    /// The canonical JSON text that `hash` covers.
    pub text: String,
    /// The record.
    pub record: NewRecord,
}

/// `prevHash` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Links `record` after `(seq, hash)`: its body gains `seq`, `prevHash` and `recordType`.
pub fn link(prev_seq: u64, prev_hash: &str, mut record: NewRecord) -> Linked {
    let seq = prev_seq + 1;
    let (mut seq_text, mut prev_text, mut kind_text) = (Vec::new(), Vec::new(), Vec::new());
    canonical::write_u64(seq, &mut seq_text);
    canonical::write_str(prev_hash, &mut prev_text);
    canonical::write_str(record.kind.as_str(), &mut kind_text);
    let text = std::mem::take(&mut record.body).finish(&[
        ("seq", &seq_text),
        ("prevHash", &prev_text),
        ("recordType", &kind_text),
    ]);
    let hash = canonical::sha256_hex(text.as_bytes());
    Linked {
        seq,
        prev_hash: prev_hash.to_string(),
        hash,
        text,
        record,
    }
}

/// A store the writer thread appends to. Implementations are synchronous and owned by one
/// thread; every method may block on I/O.
pub trait Backend: Send + 'static {
    /// The last `(seq, hash)` of the chain, `(0, GENESIS)` when empty.
    fn head(&mut self) -> Result<(u64, String), AuditError>;
    /// Appends a group of linked records durably, all or none.
    fn append(&mut self, batch: &[Linked]) -> Result<(), AuditError>;
    /// Checks that a commit would succeed now (for `/readyz`): the files can be written,
    /// the lock can be taken, the schema takes a record. The error says why not.
    fn probe(&mut self) -> Result<(), AuditError>;
    /// Every remembered retention value with the `eventTime` of the record that reported it,
    /// to seed the `previous` memory at start.
    fn last_seen(&mut self) -> Result<Vec<(Observed, String)>, AuditError>;

    /// The newest checkpoint record (`seq` and stored text), to continue checkpointing after
    /// a restart. A store without checkpoints has none.
    fn last_checkpoint(&mut self) -> Result<Option<(u64, String)>, AuditError> {
        Ok(None)
    }

    /// The hashes of the records from `seq` on, in order: the segment a checkpoint will cover.
    fn hashes_from(&mut self, seq: u64) -> Result<Vec<String>, AuditError> {
        let _ = seq;
        Ok(Vec::new())
    }
}

/// One record as stored, for the chain walk: its columns and the canonical text its hash
/// covers.
#[derive(Debug, Clone, Copy)]
pub struct StoredRecord<'a> {
    /// Position in the chain.
    pub seq: u64,
    /// `request` or `outcome`.
    pub kind: &'a str,
    /// The call's `eventID`.
    pub event_id: &'a str,
    /// `eventTime` column.
    pub event_time: &'a str,
    /// `eventName` column.
    pub event_name: &'a str,
    /// `eventSource` column.
    pub event_source: &'a str,
    /// The canonical JSON text.
    pub body: &'a str,
    /// `prevHash` column.
    pub prev_hash: &'a str,
    /// `hash` column.
    pub hash: &'a str,
}

/// One event as stored: the texts [`query::merge`] makes the merged event of.
#[derive(Debug, Clone, Copy)]
pub struct StoredEvent<'a> {
    /// The request link's `seq`.
    pub seq: u64,
    /// The request link's `eventTime` column (the time its text holds in an intact chain).
    pub event_time: &'a str,
    /// The request link's canonical text.
    pub request: &'a str,
    /// The request link's hash.
    pub hash: &'a str,
    /// The outcome link's canonical text, when it was recorded.
    pub outcome: Option<&'a str>,
}

/// The reading side of a store: what `audit` commands, `/v1/events`, LookupEvents and export
/// use, without knowing which store is behind it. Reads see a consistent snapshot per call.
pub trait Reader {
    /// Calls `visit(seq, event)` for each event `filter` selects, in its order; each event is
    /// the merge of its request and outcome links ([`query::merge`]).
    fn events(
        &self,
        filter: &Filter,
        visit: &mut dyn FnMut(u64, serde_json::Value) -> Result<(), AuditError>,
    ) -> Result<(), AuditError>;

    /// [`Reader::events`] as stored, unmerged: the texts of each event's two links, for a
    /// caller that reads them faster than a merged `Value` (the export). Answers `false`,
    /// having visited nothing, when the store does not offer them; the caller then reads
    /// [`Reader::events`].
    fn stored_events(
        &self,
        filter: &Filter,
        visit: &mut dyn FnMut(StoredEvent<'_>) -> Result<(), AuditError>,
    ) -> Result<bool, AuditError> {
        let _ = (filter, visit);
        Ok(false)
    }

    /// The last known retention of every resource the proxy has seen.
    fn state(&self) -> Result<Vec<StateRow>, AuditError>;

    /// The last known retention values of one resource (one row per setting). A store with an
    /// index on the resource answers without reading every row of [`Reader::state`].
    fn state_of(&self, resource: &str) -> Result<Vec<StateRow>, AuditError> {
        Ok(self.state()?.into_iter().filter(|s| s.resource == resource).collect())
    }

    /// Calls `visit` for every record in chain order, as stored, until it breaks.
    fn chain(&self, visit: &mut dyn FnMut(StoredRecord<'_>) -> std::ops::ControlFlow<()>) -> Result<(), AuditError>;

    /// The chain again, readable in ranges on connections of their own, for a store that can
    /// (the local log): [`verify::walk_ranged`] reads it on every core.
    fn ranged(&self) -> Option<&dyn verify::Ranged> {
        None
    }

    /// The instances whose chains the store holds, for a store of many (the central one);
    /// `None` for a store of one chain.
    fn instances(&self) -> Result<Option<Vec<String>>, AuditError> {
        Ok(None)
    }

    /// [`Reader::chain`] of one instance (a store of one chain has only its own).
    fn chain_of(
        &self,
        instance: &str,
        visit: &mut dyn FnMut(StoredRecord<'_>) -> std::ops::ControlFlow<()>,
    ) -> Result<(), AuditError> {
        let _ = instance;
        self.chain(visit)
    }

    /// The events that name `resource`, oldest first: its history.
    fn history(
        &self,
        resource: &str,
        visit: &mut dyn FnMut(serde_json::Value) -> Result<(), AuditError>,
    ) -> Result<(), AuditError> {
        let filter = Filter {
            resource: Some(resource.to_string()),
            ..Filter::default()
        };
        self.events(&filter, &mut |_, e| visit(e))
    }
}

impl dyn Reader + '_ {
    /// The events `filter` selects, collected.
    pub fn query(&self, filter: &Filter) -> Result<Vec<serde_json::Value>, AuditError> {
        let mut out = Vec::new();
        self.events(filter, &mut |_, e| {
            out.push(e);
            Ok(())
        })?;
        Ok(out)
    }
}

/// Where a reader reads: the local SQLite file, or the fleet's central store.
#[derive(Clone)]
pub enum Store {
    /// The instance's own log.
    Local(std::path::PathBuf),
    /// The central store, through a shared connection.
    Central(std::sync::Arc<postgres::Pool>),
}

/// Opens the store at `db` for reading. The one place a reader picks its store. A central
/// store is read over its shared connection, so this runs on a blocking thread of the runtime.
pub fn open_reader(store: &Store) -> Result<Box<dyn Reader>, AuditError> {
    match store {
        Store::Local(db) => Ok(Box::new(sqlite::SqliteReader::open(db)?)),
        Store::Central(pool) => Ok(Box::new(postgres::PostgresReader::shared(pool, None)?)),
    }
}

/// Records for the unit tests of the store and its readers.
#[cfg(test)]
pub(crate) mod testing {
    use serde_json::json;

    use super::{Backend, IndexFields, NewRecord, ObjectText, RecordKind, link};
    use crate::retention::{Observed, RetentionValue, Target};

    /// Stores one Slack retention call as its two links: a request by `alice` (listed twice)
    /// and `key-{i}` on channel `C0123`, and an outcome that saw `days`.
    pub fn call(store: &mut impl Backend, i: u32, days: u32) {
        let (seq, hash) = store.head().unwrap();
        let id = format!("id-{i}");
        let time = format!("2026-11-22T10:00:{i:02}.000Z");
        let request = NewRecord {
            kind: RecordKind::Request,
            event_id: id.clone(),
            event_time: time.clone(),
            body: ObjectText::from_value(&json!({"eventID": id, "eventTime": time,
                "eventName": "admin.conversations.setCustomRetention", "eventSource": "slack.com"})),
            index: IndexFields {
                event_name: "admin.conversations.setCustomRetention".into(),
                event_source: "slack.com".into(),
                // The same principal twice (an access key id equal to a proxy user name).
                actors: vec!["alice".into(), "alice".into(), format!("key-{i}")],
                decision: "allow".into(),
                resources: vec!["C0123".into()],
            },
            observed: vec![],
        };
        let outcome = NewRecord {
            kind: RecordKind::Outcome,
            event_id: id.clone(),
            event_time: time.clone(),
            body: ObjectText::from_value(&json!({"eventID": id, "outcome": "forwarded"})),
            index: IndexFields::default(),
            observed: vec![Observed {
                target: Target::SlackChannel,
                resource: "C0123".into(),
                value: RetentionValue::Days(days),
            }],
        };
        let r = link(seq, &hash, request);
        let o = link(r.seq, &r.hash, outcome);
        store.append(&[r, o]).unwrap();
    }
}
