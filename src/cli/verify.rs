//! `audit verify` and `audit pubkey`: the chain, its signed checkpoints (SPEC §12), and the
//! key they are signed with.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::FleetArgs;
use super::store::Log;
use crate::audit::checkpoint::{self, Checkpoint, PublicKey, SigningKey};
use crate::audit::query::{self, Verification};
use crate::audit::verify::Options;

/// The public key signatures are checked with: `--pubkey`, else the checkpoint key of a local
/// database (the configuration's with `--config`, else the one beside it) when it is readable
/// (said in the output), else none.
fn public_key(log: &Log, pubkey: Option<&Path>) -> Result<(Option<PublicKey>, Option<String>), String> {
    if let Some(p) = pubkey {
        return Ok((Some(PublicKey::read(p).map_err(|e| format!("--pubkey {e}"))?), None));
    }
    if log.is_central() {
        return Ok((None, Some("signatures not checked (give --pubkey)".into())));
    }
    let key_file = &log.checkpoint_key_file;
    let whose = if log.keys_configured {
        "the configuration's checkpoint key"
    } else {
        "the key beside the database"
    };
    match SigningKey::read(key_file) {
        Ok(k) => Ok((
            Some(k.public()),
            Some(format!(
                "signatures checked with {whose} ({}); give --pubkey to check them against a key kept elsewhere",
                key_file.display()
            )),
        )),
        Err(_) => Ok((
            None,
            Some(format!(
                "signatures not checked (no readable key at {}; give --pubkey)",
                key_file.display()
            )),
        )),
    }
}

/// An instance (none for a local log) and its checkpoint files.
type Named = (Option<String>, Vec<(String, Checkpoint)>);

/// Runs `audit verify`; exit 0 intact, 1 broken.
pub fn run(
    log: &Log,
    fleet: FleetArgs,
    pubkey: Option<PathBuf>,
    checkpoints: Option<PathBuf>,
) -> Result<ExitCode, String> {
    let (key, key_note) = public_key(log, pubkey.as_deref())?;
    let external: Option<Vec<(String, Checkpoint)>> = checkpoints
        .as_deref()
        .map(|d| checkpoint::read_dir(d).map_err(|e| format!("--checkpoints {e}")))
        .transpose()?;
    let reader = super::store::open(log, &fleet)?;
    let for_instance = |instance: Option<&str>| -> Vec<(String, Checkpoint)> {
        let all = external.as_deref().unwrap_or(&[]);
        match instance {
            Some(i) => all.iter().filter(|(_, c)| c.instance == i).cloned().collect(),
            None => all.to_vec(),
        }
    };
    let per_instance: Vec<Named> = match reader.instances().map_err(|e| e.to_string())? {
        Some(list) => list
            .into_iter()
            .map(|i| (Some(i.clone()), for_instance(Some(&i))))
            .collect(),
        None => vec![(None, for_instance(None))],
    };
    // The walk calls back every CALLBACK_EVERY records: a progress line on a terminal.
    let progress = std::cell::RefCell::new(super::progress::Progress::stderr("verified").counting("records"));
    let walked = std::cell::Cell::new(0u64);
    let all = query::verify_each_with(
        reader.as_ref(),
        &|instance| Options {
            public_key: key.as_ref(),
            external: external.as_ref().map(|_| {
                per_instance
                    .iter()
                    .find(|(i, _)| i.as_deref() == instance)
                    .map(|(_, files)| files.as_slice())
                    .unwrap_or(&[])
            }),
        },
        &|| {
            walked.set(walked.get() + crate::audit::verify::CALLBACK_EVERY);
            progress.borrow_mut().update_at(walked.get(), std::time::Instant::now());
            false
        },
    )
    .map_err(|e| e.to_string())?
    .unwrap_or_default();
    let records = all
        .iter()
        .map(|(_, r)| match r.verification {
            Verification::Intact { records } => records,
            Verification::Broken { seq, .. } => seq,
        })
        .sum::<u64>();
    progress.borrow_mut().finish(records.max(walked.get()));
    if all.is_empty() {
        if let Some(i) = &fleet.instance {
            return Err(format!("the central store holds no records for instance {i:?}"));
        }
        println!("audit chain intact: the central store holds no records yet");
        return Ok(ExitCode::SUCCESS);
    }
    let mut broken = false;
    for (instance, report) in all {
        let name = instance.map(|i| format!("instance {i}: ")).unwrap_or_default();
        match &report.verification {
            Verification::Intact { records } => println!("{name}audit chain intact: {records} records verified"),
            Verification::Broken { seq, reason } => {
                broken = true;
                println!("{name}audit chain broken at seq {seq}: {reason}");
            }
        }
        if report.checkpoints == 0 && external.is_none() && pubkey.is_none() {
            continue;
        }
        let signed = if report.signed { ", signatures verified" } else { "" };
        println!("{name}  {} checkpoints{signed}", report.checkpoints);
        if let Some((first, last, time)) = &report.newest {
            println!(
                "{name}  newest checkpoint {first}–{last} at {time}; {} records after it",
                report.after_newest
            );
        }
        if external.is_some() {
            println!("{name}  {} checkpoint files matched the log", report.external);
        }
    }
    if let Some(note) = key_note.filter(|_| !broken) {
        eprintln!("{note}");
    }
    Ok(if broken { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// Runs `audit verify --archive DIR`.
pub fn run_archive(dir: &Path, pubkey: Option<&Path>) -> Result<ExitCode, String> {
    let key = pubkey
        .map(|p| PublicKey::read(p).map_err(|e| format!("--pubkey {e}")))
        .transpose()?;
    match super::archive::verify_archive(dir, key.as_ref())? {
        (Verification::Intact { .. }, n) => {
            let signed = if key.is_some() {
                ", signatures verified"
            } else {
                " (signatures not checked: give --pubkey)"
            };
            println!("archive intact: {n} records verified against their checkpoints{signed}");
            Ok(ExitCode::SUCCESS)
        }
        (Verification::Broken { seq, reason }, _) => {
            println!("archive broken at seq {seq}: {reason}");
            Ok(ExitCode::from(1))
        }
    }
}

/// Runs `audit pubkey`: the PEM public key of the checkpoint signing key in `key_file`.
pub fn pubkey(key_file: &Path) -> Result<ExitCode, String> {
    let key = SigningKey::read(key_file)
        .map_err(|e| format!("{e} (the key is created when the proxy first runs with this database)"))?;
    print!("{}", key.public().to_pem());
    Ok(ExitCode::SUCCESS)
}
