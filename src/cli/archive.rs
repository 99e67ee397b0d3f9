//! `audit archive` and `audit verify --archive`: records older than a time leave the database
//! for a directory — their stored canonical text (`<instance>_chain_<first>-<last>.jsonl.gz`,
//! what their hashes cover), CloudTrail files of their events (`cloudtrail/`), and the
//! checkpoint files that cover them — and the chain left in the database starts at the signed
//! checkpoint that covers the last of them.

use std::io::{BufRead, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use serde_json::Value;

use crate::audit::checkpoint::{self, Checkpoint, PublicKey};
use crate::audit::query::{self, Filter, Verification};
use crate::audit::sqlite::Archiver;
use crate::audit::verify::{self, Options};
use crate::audit::{AuditError, Store, StoredRecord, canonical, export};

/// Runs `audit archive --db FILE --before T --out DIR`.
pub fn run(db: &Path, before: &str, out: &Path) -> Result<ExitCode, String> {
    let before = query::parse_time(before, time::OffsetDateTime::now_utc()).map_err(|e| format!("--before: {e}"))?;
    let mut store = Archiver::open(db).map_err(|e| e.to_string())?;
    let Some((end, text)) = store.checkpoint_before(&before).map_err(|e| e.to_string())? else {
        return Err(format!(
            "no signed checkpoint was made before {before}, so nothing can be archived yet (checkpoints come every checkpoint_every records and every checkpoint_interval)"
        ));
    };
    let covering = serde_json::from_str::<Value>(&text)
        .map_err(|e| e.to_string())
        .and_then(|v| Checkpoint::from_json(&v))
        .map_err(|e| format!("the checkpoint at seq {end} cannot be read: {e}"))?;
    let first = store.first_seq().map_err(|e| e.to_string())?.unwrap_or(end);
    if first >= end {
        println!(
            "nothing to archive: the log already starts at checkpoint {}",
            covering.range()
        );
        return Ok(ExitCode::SUCCESS);
    }
    std::fs::create_dir_all(out).map_err(|e| format!("{} cannot be created: {e}", out.display()))?;
    let name = |c: &Checkpoint| {
        c.file_name()
            .replace("_checkpoint_", "_chain_")
            .replace(".json", ".jsonl.gz")
    };
    let chain_file = out.join(name(&Checkpoint {
        first_seq: first,
        last_seq: end - 1,
        ..covering.clone()
    }));
    // 1. The stored texts, as they are, and the checkpoints among them.
    {
        let f = std::fs::File::create(&chain_file)
            .map_err(|e| format!("{} cannot be created: {e}", chain_file.display()))?;
        let mut gz = GzEncoder::new(std::io::BufWriter::new(f), Compression::fast());
        let werr = |e: std::io::Error| AuditError::Read(format!("{} cannot be written: {e}", chain_file.display()));
        store
            .records_before(end, &mut |_, body| {
                if body.contains("\"recordType\":\"checkpoint\"")
                    && let Ok(cp) = serde_json::from_str::<Value>(body)
                        .map_err(|e| e.to_string())
                        .and_then(|v| Checkpoint::from_json(&v))
                {
                    checkpoint::write_file(out, &cp).map_err(werr)?;
                }
                gz.write_all(body.as_bytes())
                    .and_then(|_| gz.write_all(b"\n"))
                    .map_err(werr)
            })
            .map_err(|e| e.to_string())?;
        gz.finish()
            .and_then(|mut w| w.flush())
            .map_err(|e| format!("{} cannot be written: {e}", chain_file.display()))?;
    }
    checkpoint::write_file(out, &covering).map_err(|e| format!("{}: {e}", out.display()))?;
    // 2. CloudTrail files of the events, for people and SIEMs.
    let reader = crate::audit::open_reader(&Store::Local(db.to_path_buf())).map_err(|e| e.to_string())?;
    let f = Filter {
        before_seq: Some(end),
        ..Filter::default()
    };
    let summary = export::export(
        reader.as_ref(),
        &f,
        export::Destination::Hourly {
            dir: &out.join("cloudtrail"),
            account: None,
        },
        &mut |_| {},
    )
    .map_err(|e| e.to_string())?;
    let events = summary.events;
    drop(reader);
    // 3. What was written must verify before anything is removed.
    match verify_archive(out, None)? {
        (Verification::Intact { .. }, _) => {}
        (Verification::Broken { seq, reason }, _) => {
            return Err(format!(
                "the archive written to {} does not verify (seq {seq}: {reason}); nothing was removed from the database",
                out.display()
            ));
        }
    }
    let removed = store.remove_before(end).map_err(|e| e.to_string())?;
    println!(
        "archived {removed} records ({events} events, seq {first}–{}) to {}; the log now starts at checkpoint {}",
        end - 1,
        out.display(),
        covering.range()
    );
    Ok(ExitCode::SUCCESS)
}

/// Checks the archived texts in `dir` against their checkpoints: links, Merkle roots,
/// (given a key) signatures, and that the last segment is the one its covering checkpoint
/// names. The verification and the number of records.
pub fn verify_archive(dir: &Path, key: Option<&PublicKey>) -> Result<(Verification, u64), String> {
    let mut chains: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{} cannot be read: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.contains("_chain_") && n.ends_with(".jsonl.gz"))
        })
        .collect();
    chains.sort();
    if chains.is_empty() {
        return Err(format!(
            "{} holds no archived records (*_chain_*.jsonl.gz)",
            dir.display()
        ));
    }
    let files = checkpoint::read_dir(dir)?;
    let mut failed: Option<String> = None;
    let mut n = 0u64;
    let mut walker = |visit: &mut dyn FnMut(StoredRecord<'_>) -> ControlFlow<()>| -> Result<(), AuditError> {
        for path in &chains {
            let f = std::fs::File::open(path).map_err(|e| AuditError::Read(format!("{}: {e}", path.display())))?;
            for line in std::io::BufReader::new(GzDecoder::new(f)).lines() {
                let line = line.map_err(|e| AuditError::Read(format!("{}: {e}", path.display())))?;
                let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
                let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
                let hash = canonical::sha256_hex(line.as_bytes());
                let (kind, event_id, time, name, source, prev) = (
                    s("recordType"),
                    s("eventID"),
                    s("eventTime"),
                    s("eventName"),
                    s("eventSource"),
                    s("prevHash"),
                );
                let Some(seq) = v.get("seq").and_then(Value::as_u64) else {
                    failed = Some(format!("{}: a line is not an archived record", path.display()));
                    return Ok(());
                };
                n += 1;
                let r = StoredRecord {
                    seq,
                    kind: &kind,
                    event_id: &event_id,
                    event_time: &time,
                    event_name: &name,
                    event_source: &source,
                    body: &line,
                    prev_hash: &prev,
                    hash: &hash,
                };
                if visit(r).is_break() {
                    return Ok(());
                }
            }
        }
        Ok(())
    };
    let report = verify::walk(
        &mut walker,
        &Options {
            public_key: key,
            external: None,
        },
        &|| false,
    )
    .map_err(|e| e.to_string())?
    .ok_or("the archive check was stopped")?;
    if let Some(f) = failed {
        return Err(f);
    }
    if let Verification::Broken { .. } = report.verification {
        return Ok((report.verification, n));
    }
    // Every checkpoint file must be in the archive as written, and the last segment must be
    // the one the covering checkpoint signs.
    let (open_first, open_root, last_hash) = &report.open_segment;
    let Some((name, covering)) = files.iter().find(|(_, c)| c.first_seq == *open_first) else {
        return Ok((
            Verification::Broken {
                seq: *open_first,
                reason: format!("no checkpoint file covers the archived records from seq {open_first}"),
            },
            n,
        ));
    };
    let bad = |why: &str| Verification::Broken {
        seq: covering.first_seq,
        reason: format!("checkpoint file {name} ({}): {why}", covering.range()),
    };
    if &covering.merkle_root != open_root || &covering.last_hash != last_hash {
        return Ok((bad("the archived records do not match its merkleRoot or lastHash"), n));
    }
    if let Some(k) = key
        && let Err(e) = covering.verify_signature(k)
    {
        return Ok((bad(&e), n));
    }
    Ok((report.verification, n))
}
