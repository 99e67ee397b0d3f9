//! Signed checkpoints (SPEC §12), end to end through the built binary and real SQLite files:
//! the checkpoint files and their fields, signatures checked with `openssl`, a chain rewritten
//! by someone who can write the database but does not hold the key, truncation and insider
//! rewrites caught by the checkpoint files kept elsewhere, tampered checkpoints named by their
//! range, checkpoints of an idle proxy across a restart, and `audit pubkey`.
//!
//! The attacker is played with `rusqlite`, `ring` and a canonical JSON writer of this file's
//! own (sorted keys, no whitespace), so nothing here trusts the project's own chain code.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use base64::Engine;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use support::binary::{self, BinaryProxy, BinaryProxyOpts};
use support::clients::slack_form;
use support::fake_vendor::{FakeVendor, FakeVendorOpts};
use support::fixtures::SLACK_SET;
use support::toml_str;
use tempfile::TempDir;

/// `proxyInstance` of every proxy here.
const INSTANCE: &str = "cp-test";
/// `prevHash` of the first record, `previousCheckpointHash` of the first checkpoint.
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// The fields of a checkpoint file (SPEC §12).
const FIELDS: [&str; 9] = [
    "count",
    "firstSeq",
    "instance",
    "lastHash",
    "lastSeq",
    "merkleRoot",
    "previousCheckpointHash",
    "signature",
    "time",
];
/// Calls made by the proxies with `checkpoint_every = 5`; two records each (request and
/// outcome links), committed one at a time because each call is answered only after its
/// outcome link is committed.
const CALLS: u32 = 10;
/// What those calls leave: checkpoints `(firstSeq, lastSeq, seq of the checkpoint record)`.
/// A segment after the first starts with the checkpoint record before it, so it holds that
/// record and four call records.
const EXPECTED: [(u64, u64, u64); 4] = [(1, 5, 6), (6, 10, 11), (11, 15, 16), (16, 20, 21)];
/// 20 call records and 4 checkpoints.
const LAST_SEQ: u64 = 24;
/// How long a test waits for anything the proxy does on its own.
const WAIT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Canonical JSON, hashes, Merkle roots: written here from the SPEC, not taken from the crate
// ---------------------------------------------------------------------------------------------

/// Canonical JSON: object keys sorted by their UTF-8 bytes, no whitespace, serde_json's
/// spelling of strings and numbers.
fn canonical(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let fields: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{}:{}", serde_json::to_string(k).unwrap(), canonical(&m[k])))
                .collect();
            format!("{{{}}}", fields.join(","))
        }
        Value::Array(a) => format!("[{}]", a.iter().map(canonical).collect::<Vec<_>>().join(",")),
        other => serde_json::to_string(other).unwrap(),
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn raw(hash_hex: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hash_hex, &mut out).unwrap_or_else(|e| panic!("{hash_hex:?} is not a hash: {e}"));
    out
}

/// RFC 6962 §2.1 Merkle tree hash.
fn merkle(leaves: &[[u8; 32]]) -> [u8; 32] {
    match leaves.len() {
        0 => Sha256::digest(b"").into(),
        1 => Sha256::new()
            .chain_update([0u8])
            .chain_update(leaves[0])
            .finalize()
            .into(),
        n => {
            let mut k = 1;
            while k * 2 < n {
                k *= 2;
            }
            Sha256::new()
                .chain_update([1u8])
                .chain_update(merkle(&leaves[..k]))
                .chain_update(merkle(&leaves[k..]))
                .finalize()
                .into()
        }
    }
}

/// A checkpoint's hash: SHA-256 of its canonical JSON, signature included.
fn checkpoint_hash(cp: &Value) -> String {
    sha256_hex(canonical(cp).as_bytes())
}

/// What a checkpoint's signature covers: its canonical JSON without `signature`.
fn signed_message(cp: &Value) -> String {
    let mut m = cp.as_object().expect("a checkpoint is an object").clone();
    m.remove("signature");
    canonical(&Value::Object(m))
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn unb64(text: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .unwrap_or_else(|e| panic!("{text:?} is not base64: {e}"))
}

/// The signing key in a key file (base64 of its PKCS#8 document).
fn read_key(path: &Path) -> Ed25519KeyPair {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Ed25519KeyPair::from_pkcs8_maybe_unchecked(&unb64(&text)).expect("an Ed25519 PKCS#8 key")
}

/// A fresh key, as a key file's text and the key.
fn new_key() -> (String, Ed25519KeyPair) {
    let doc = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
    let key = Ed25519KeyPair::from_pkcs8(doc.as_ref()).unwrap();
    (format!("{}\n", b64(doc.as_ref())), key)
}

/// A public key as PEM (`SubjectPublicKeyInfo`, RFC 8410), as `openssl pkey -pubout` writes it.
fn public_pem(key: &Ed25519KeyPair) -> String {
    let mut der = vec![0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];
    der.extend_from_slice(key.public_key().as_ref());
    format!("-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n", b64(&der))
}

// ---------------------------------------------------------------------------------------------
// The database, as an attacker who can write it sees it
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Row {
    seq: u64,
    kind: String,
    body: String,
    prev_hash: String,
    hash: String,
}

fn rows(db: &Path) -> Vec<Row> {
    let c = rusqlite::Connection::open(db).unwrap();
    let mut st = c
        .prepare("SELECT seq, kind, body, prev_hash, hash FROM records ORDER BY seq")
        .unwrap();
    st.query_map([], |r| {
        Ok(Row {
            seq: r.get::<_, i64>(0)? as u64,
            kind: r.get(1)?,
            body: r.get(2)?,
            prev_hash: r.get(3)?,
            hash: r.get(4)?,
        })
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

/// The checkpoint a checkpoint record holds: its body without the chain fields.
fn checkpoint_of(row: &Row) -> Value {
    assert_eq!(row.kind, "checkpoint", "seq {}", row.seq);
    let mut m: Map<String, Value> = serde_json::from_str(&row.body).unwrap();
    for chain_field in ["seq", "prevHash", "recordType"] {
        assert!(m.remove(chain_field).is_some(), "seq {} has no {chain_field}", row.seq);
    }
    Value::Object(m)
}

/// Copies the database files (`-wal` and `-shm` too) to `dir/name`, without any key.
fn copy_db(src: &Path, dir: &Path, name: &str) -> PathBuf {
    let dst = dir.join(name);
    std::fs::copy(src, &dst).unwrap();
    for suffix in ["-wal", "-shm"] {
        let s = PathBuf::from(format!("{}{suffix}", src.display()));
        if s.exists() {
            std::fs::copy(&s, format!("{}{suffix}", dst.display())).unwrap();
        }
    }
    dst
}

/// What a rewrite does to the checkpoint records it passes.
#[derive(Default)]
struct Recompute<'a> {
    last_hash: bool,
    merkle_root: bool,
    previous: bool,
    /// Re-sign with this key (after recomputing what is asked).
    sign_with: Option<&'a Ed25519KeyPair>,
}

impl Recompute<'_> {
    /// Everything, signed with `key`.
    fn all(key: &Ed25519KeyPair) -> Recompute<'_> {
        Recompute {
            last_hash: true,
            merkle_root: true,
            previous: true,
            sign_with: Some(key),
        }
    }
}

/// Rewrites the whole chain of `db` as someone who can write it would: every record gets the
/// `prevHash` of the record before it, checkpoint records get what `cp` says recomputed, then
/// `edit(seq, body)` changes what it wants (before a checkpoint is re-signed), and the record
/// gets the hash of its new canonical text. Returns how many records changed.
fn rewrite(db: &Path, mut edit: impl FnMut(u64, &mut Map<String, Value>), cp: &Recompute<'_>) -> usize {
    let before = rows(db);
    let mut c = rusqlite::Connection::open(db).unwrap();
    let tx = c.transaction().unwrap();
    let mut prev = GENESIS.to_string();
    let mut segment: Vec<[u8; 32]> = Vec::new();
    let mut previous_cp = GENESIS.to_string();
    let mut changed = 0;
    for row in &before {
        let mut m: Map<String, Value> = serde_json::from_str(&row.body).unwrap();
        m.insert("prevHash".into(), Value::from(prev.clone()));
        if row.kind == "checkpoint" {
            if cp.last_hash {
                m.insert("lastHash".into(), Value::from(prev.clone()));
            }
            if cp.merkle_root {
                m.insert("merkleRoot".into(), Value::from(hex::encode(merkle(&segment))));
            }
            if cp.previous {
                m.insert("previousCheckpointHash".into(), Value::from(previous_cp.clone()));
            }
        }
        edit(row.seq, &mut m);
        if row.kind == "checkpoint" {
            let mut checkpoint = m.clone();
            for chain_field in ["seq", "prevHash", "recordType"] {
                checkpoint.remove(chain_field);
            }
            let mut checkpoint = Value::Object(checkpoint);
            if let Some(key) = cp.sign_with {
                let sig = key.sign(signed_message(&checkpoint).as_bytes());
                checkpoint["signature"] = Value::from(b64(sig.as_ref()));
                m.insert("signature".into(), checkpoint["signature"].clone());
            }
            previous_cp = checkpoint_hash(&checkpoint);
            segment.clear();
        }
        let body = canonical(&Value::Object(m));
        let hash = sha256_hex(body.as_bytes());
        segment.push(raw(&hash));
        if body != row.body {
            changed += 1;
            tx.execute(
                "UPDATE records SET body = ?1, prev_hash = ?2, hash = ?3 WHERE seq = ?4",
                rusqlite::params![body, prev, hash, row.seq as i64],
            )
            .unwrap();
        }
        prev = hash;
    }
    tx.commit().unwrap();
    changed
}

/// Sets `changes[0].new` of the request record at `seq` to `days`.
fn hide_change(seq: u64, days: u64) -> impl FnMut(u64, &mut Map<String, Value>) {
    move |s, m| {
        if s == seq {
            assert_eq!(m["recordType"], "request", "seq {seq} is a request link: {m:?}");
            let new = &mut m["changes"][0]["new"];
            assert!(new.is_u64(), "seq {seq} records a change in days: {m:?}");
            assert_ne!(new.as_u64(), Some(days));
            *new = Value::from(days);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The proxy and the commands
// ---------------------------------------------------------------------------------------------

/// A proxy that ran `calls` Slack retention changes and stopped.
struct Ran {
    _fake: FakeVendor,
    dir: TempDir,
    db: PathBuf,
    /// `checkpoint_dir`.
    cps: PathBuf,
    /// The real public key, as `audit pubkey` printed it, kept "elsewhere".
    pubkey: PathBuf,
}

impl Ran {
    fn key_file(&self) -> PathBuf {
        PathBuf::from(format!("{}.checkpoint-key", self.db.display()))
    }

    fn scratch(&self) -> PathBuf {
        let p = self.dir.path().join("scratch");
        std::fs::create_dir_all(&p).unwrap();
        p
    }
}

fn checkpoint_toml(every: u64, interval: &str, dir: &Path) -> String {
    format!(
        "proxy_instance = {}\ncheckpoint_every = {every}\ncheckpoint_interval = {}\ncheckpoint_dir = {}\n",
        toml_str(INSTANCE),
        toml_str(interval),
        toml_str(&dir.display().to_string())
    )
}

async fn call(proxy: &BinaryProxy, i: u32) {
    let form = format!("channel_id=CCHECK{i:04}&duration_days={}", 30 + i);
    let req = slack_form(SLACK_SET, &form, Some("xoxp-5-checkpoints"), &[]);
    let resp = tokio::time::timeout(WAIT, support::fake_vendor::send(proxy.addr, req))
        .await
        .expect("the call timed out")
        .expect("the call failed");
    assert_eq!(resp.json()["ok"], true, "call {i}: {:?}", resp.body);
}

/// Starts a proxy with `checkpoint_every = 5` and `checkpoint_dir`, makes [`CALLS`] calls one
/// after the other, stops it, and keeps its public key.
async fn ran() -> Ran {
    let fake = FakeVendor::start(FakeVendorOpts::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let cps = dir.path().join("checkpoints");
    let mut opts = BinaryProxyOpts::new(&fake.url());
    opts.audit_toml = checkpoint_toml(5, "1h", &cps);
    let mut proxy = BinaryProxy::start(dir.path(), &opts).await;
    for i in 0..CALLS {
        call(&proxy, i).await;
    }
    proxy.stop().await;
    let pubkey = dir.path().join("real.pem");
    std::fs::write(&pubkey, binary::run_ok(&["audit", "pubkey", "--db", &s(&proxy.db)])).unwrap();
    Ran {
        _fake: fake,
        db: proxy.db.clone(),
        cps,
        pubkey,
        dir,
    }
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// `audit verify --db DB ARGS…`: exit code, stdout, stderr.
fn verify(db: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let db = s(db);
    let mut a = vec!["audit", "verify", "--db", db.as_str()];
    a.extend_from_slice(args);
    let o = binary::run(&a);
    let (out, err) = (binary::stdout(&o), binary::stderr(&o));
    assert!(!err.contains("panicked"), "{a:?} panicked:\n{err}");
    (o.status.code(), out, err)
}

/// Asserts `audit verify` exits 1 and its first line is exactly `line`.
fn assert_broken(db: &Path, args: &[&str], line: &str) {
    let (code, out, err) = verify(db, args);
    assert_eq!(code, Some(1), "audit verify {args:?} must exit 1:\n{out}{err}");
    assert_eq!(out.lines().next(), Some(line), "audit verify {args:?}:\n{out}{err}");
}

/// Asserts `audit verify` exits 0 and says `records` records were verified.
fn assert_intact(db: &Path, args: &[&str], records: u64) -> (String, String) {
    let (code, out, err) = verify(db, args);
    assert_eq!(code, Some(0), "audit verify {args:?} must exit 0:\n{out}{err}");
    assert_eq!(
        out.lines().next(),
        Some(format!("audit chain intact: {records} records verified").as_str()),
        "audit verify {args:?}:\n{out}{err}"
    );
    (out, err)
}

/// The checkpoint files in `dir`, by name, in name order.
fn files(dir: &Path) -> Vec<(String, Value)> {
    let mut out: Vec<(String, Value)> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.unwrap())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .map(|n| {
                let text = std::fs::read_to_string(dir.join(&n)).unwrap();
                let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{n} is not JSON: {e}\n{text}"));
                (n, v)
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("{}: {e}", dir.display()),
    };
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn file_name(first: u64, last: u64) -> String {
    format!("{INSTANCE}_checkpoint_{first:020}-{last:020}.json")
}

fn is_rfc3339_utc_ms(t: &str) -> bool {
    let b = t.as_bytes();
    b.len() == 24
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'.'
        && b[23] == b'Z'
        && t.chars()
            .enumerate()
            .all(|(i, c)| [4, 7, 10, 13, 16, 19, 23].contains(&i) || c.is_ascii_digit())
}

/// `openssl pkeyutl -verify -rawin`: whether `sig` over `msg` verifies with the PEM `pubkey`.
fn openssl_verifies(dir: &Path, pubkey: &Path, msg: &[u8], sig: &[u8]) -> bool {
    let (m, sg) = (dir.join("msg"), dir.join("sig"));
    std::fs::write(&m, msg).unwrap();
    std::fs::write(&sg, sig).unwrap();
    let o = Command::new("openssl")
        .args(["pkeyutl", "-verify", "-pubin", "-inkey"])
        .arg(pubkey)
        .arg("-rawin")
        .arg("-in")
        .arg(&m)
        .arg("-sigfile")
        .arg(&sg)
        .output()
        .expect("run openssl");
    let said = String::from_utf8_lossy(&o.stdout).into_owned();
    if o.status.success() {
        assert!(said.contains("Signature Verified Successfully"), "{said}");
        true
    } else {
        assert!(
            said.contains("Signature Verification Failure"),
            "openssl failed for another reason: {said}{}",
            String::from_utf8_lossy(&o.stderr)
        );
        false
    }
}

fn openssl_present() -> bool {
    Command::new("openssl")
        .arg("version")
        .output()
        .map(|o: Output| o.status.success())
        .unwrap_or(false)
}

// ---------------------------------------------------------------------------------------------
// 1. Checkpoint files, their fields, and their signatures
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_are_made_every_n_records_written_as_files_and_signed() {
    let r = ran().await;
    let rows = rows(&r.db);
    assert_eq!(rows.len() as u64, LAST_SEQ, "{rows:#?}");
    assert_eq!(rows.last().map(|r| r.seq), Some(LAST_SEQ));
    let cp_seqs: Vec<u64> = rows.iter().filter(|r| r.kind == "checkpoint").map(|r| r.seq).collect();
    assert_eq!(cp_seqs, EXPECTED.map(|(_, _, at)| at));
    // Every stored body is canonical JSON as written here: the attacker below rebuilds them
    // with the same writer.
    let mut prev = GENESIS;
    for row in &rows {
        let v: Value = serde_json::from_str(&row.body).unwrap();
        assert_eq!(canonical(&v), row.body, "seq {} is not canonical", row.seq);
        assert_eq!(sha256_hex(row.body.as_bytes()), row.hash, "seq {}", row.seq);
        assert_eq!(
            (row.prev_hash.as_str(), v["prevHash"].as_str()),
            (prev, Some(prev)),
            "seq {}",
            row.seq
        );
        prev = &row.hash;
    }

    // The key beside the database, private.
    let mode = std::fs::metadata(r.key_file()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", r.key_file().display());
    let real = read_key(&r.key_file());
    assert_eq!(std::fs::read_to_string(&r.pubkey).unwrap(), public_pem(&real));

    let files = files(&r.cps);
    let names: Vec<String> = files.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(names, EXPECTED.map(|(first, last, _)| file_name(first, last)));
    let mut previous = GENESIS.to_string();
    let openssl = openssl_present();
    if !openssl {
        println!("note: openssl is not installed; the openssl check of the signatures is skipped");
    }
    for ((name, file), (first, last, at)) in files.iter().zip(EXPECTED) {
        let keys: Vec<&str> = file.as_object().unwrap().keys().map(String::as_str).collect();
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, FIELDS, "{name}");
        let record = &rows[at as usize - 1];
        assert_eq!(
            &checkpoint_of(record),
            file,
            "{name} is the checkpoint record at seq {at}"
        );
        assert_eq!(file["instance"], INSTANCE, "{name}");
        assert_eq!(file["firstSeq"], first, "{name}");
        assert_eq!(file["lastSeq"], last, "{name}");
        assert_eq!(file["count"], last - first + 1, "{name}");
        assert_eq!(file["lastHash"], rows[last as usize - 1].hash, "{name}");
        let leaves: Vec<[u8; 32]> = rows[first as usize - 1..last as usize]
            .iter()
            .map(|r| raw(&r.hash))
            .collect();
        assert_eq!(file["merkleRoot"], hex::encode(merkle(&leaves)), "{name}");
        assert_eq!(file["previousCheckpointHash"], previous.as_str(), "{name}");
        let time = file["time"].as_str().unwrap();
        assert!(is_rfc3339_utc_ms(time), "{name}: time {time:?}");
        previous = checkpoint_hash(file);

        let msg = signed_message(file);
        let sig = unb64(file["signature"].as_str().unwrap());
        assert_eq!(sig.len(), 64, "{name}: an Ed25519 signature");
        ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, real.public_key().as_ref())
            .verify(msg.as_bytes(), &sig)
            .unwrap_or_else(|_| panic!("{name}: the signature does not verify over {msg}"));
        if openssl {
            let scratch = r.scratch();
            assert!(
                openssl_verifies(&scratch, &r.pubkey, msg.as_bytes(), &sig),
                "{name}: {msg}"
            );
            let forged = msg.replacen("\"count\":5", "\"count\":6", 1);
            assert_ne!(forged, msg);
            assert!(
                !openssl_verifies(&scratch, &r.pubkey, forged.as_bytes(), &sig),
                "{name}"
            );
        }
    }

    let (out, err) = assert_intact(
        &r.db,
        &["--pubkey", &s(&r.pubkey), "--checkpoints", &s(&r.cps)],
        LAST_SEQ,
    );
    assert_eq!(
        out.lines().skip(1).collect::<Vec<_>>(),
        [
            "  4 checkpoints, signatures verified",
            &format!(
                "  newest checkpoint 16–20 at {}; 3 records after it",
                files[3].1["time"].as_str().unwrap()
            ),
            "  4 checkpoint files matched the log",
        ],
        "{out}"
    );
    assert_eq!(err, "", "no note when --pubkey is given");
}

// ---------------------------------------------------------------------------------------------
// 2. A chain rewritten end to end without the key
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_rewritten_without_the_key_fails_on_the_first_signature() {
    let r = ran().await;
    let scratch = r.scratch();
    let original = rows(&r.db);
    let (attacker_key_text, attacker) = new_key();

    // The attacker hides the first call's change (seq 1: 30 days) and recomputes everything
    // after it, checkpoints included, signing them with a key of their own.
    let forged = copy_db(&r.db, &scratch, "forged.db");
    assert_eq!(
        rewrite(&forged, hide_change(1, 3650), &Recompute::all(&attacker)),
        LAST_SEQ as usize,
        "every record changes"
    );
    let after = rows(&forged);
    assert!(after[0].body.contains("\"new\":3650"), "{}", after[0].body);
    assert_ne!(after[0].hash, original[0].hash);

    // (a) The attacker's key beside the copy: the rewrite is consistent in every respect
    // the database can show; only a key kept elsewhere tells.
    let beside = PathBuf::from(format!("{}.checkpoint-key", forged.display()));
    std::fs::write(&beside, &attacker_key_text).unwrap();
    let (out, err) = assert_intact(&forged, &[], LAST_SEQ);
    assert!(out.contains("  4 checkpoints, signatures verified"), "{out}");
    assert!(
        err.contains("signatures checked with the key beside the database") && err.contains("give --pubkey"),
        "{err}"
    );

    // (b) The real public key, kept elsewhere: the first checkpoint is named.
    let signature_line =
        "audit chain broken at seq 6: checkpoint 1–5 (seq 6): its signature does not verify with the public key";
    assert_broken(&forged, &["--pubkey", &s(&r.pubkey)], signature_line);

    // (c) The real key beside the copy (the attacker could write the database, not the key
    // file): `audit verify` without --pubkey checks with it and names the same checkpoint.
    std::fs::copy(r.key_file(), &beside).unwrap();
    assert_broken(&forged, &[], signature_line);

    // A rewrite that leaves the checkpoints as they were (only relinked) fails without any key:
    // the first checkpoint's lastHash is no longer the hash of record 5.
    let lazy = copy_db(&r.db, &scratch, "lazy.db");
    rewrite(&lazy, hide_change(1, 3650), &Recompute::default());
    assert!(!PathBuf::from(format!("{}.checkpoint-key", lazy.display())).exists());
    assert_broken(
        &lazy,
        &[],
        "audit chain broken at seq 6: checkpoint 1–5 (seq 6): its lastHash is not the hash of its last record",
    );
    // With lastHash recomputed but not the Merkle root, the root is named.
    let half = copy_db(&r.db, &scratch, "half.db");
    rewrite(
        &half,
        hide_change(1, 3650),
        &Recompute {
            last_hash: true,
            ..Recompute::default()
        },
    );
    assert_broken(
        &half,
        &[],
        "audit chain broken at seq 6: checkpoint 1–5 (seq 6): its merkleRoot does not match the records it covers",
    );
    // The original is untouched.
    assert_intact(&r.db, &["--pubkey", &s(&r.pubkey)], LAST_SEQ);
}

// ---------------------------------------------------------------------------------------------
// 3. Truncation and insider rewrites, caught by the checkpoint files
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_files_catch_a_cut_off_log_and_an_insider_rewrite() {
    let r = ran().await;
    let scratch = r.scratch();
    let cps = s(&r.cps);
    let newest = file_name(16, 20);
    assert_eq!(files(&r.cps).last().map(|(n, _)| n.clone()), Some(newest.clone()));

    // Records 18–24 deleted (the newest checkpoint record, seq 21, with them).
    let cut = copy_db(&r.db, &scratch, "cut.db");
    {
        let c = rusqlite::Connection::open(&cut).unwrap();
        assert_eq!(c.execute("DELETE FROM records WHERE seq >= 18", []).unwrap(), 7);
    }
    // The log alone cannot know.
    assert_intact(&cut, &[], 17);
    assert_intact(&cut, &["--pubkey", &s(&r.pubkey)], 17);
    assert_broken(
        &cut,
        &["--checkpoints", &cps],
        &format!(
            "audit chain broken at seq 18: checkpoint file {newest} covers records up to seq 20 and was itself recorded as seq 21, but the log ends at seq 17: records were cut off"
        ),
    );

    // Cut exactly before the newest checkpoint record: its segment is whole, the record is not.
    let cut_at = copy_db(&r.db, &scratch, "cut-at.db");
    {
        let c = rusqlite::Connection::open(&cut_at).unwrap();
        assert_eq!(c.execute("DELETE FROM records WHERE seq >= 21", []).unwrap(), 4);
    }
    assert_intact(&cut_at, &[], 20);
    let (code, out, err) = verify(&cut_at, &["--checkpoints", &cps]);
    assert_eq!(code, Some(1), "{out}{err}");
    let first = out.lines().next().unwrap_or("");
    assert!(
        first.starts_with("audit chain broken at seq 21: ")
            && first.contains(&format!("checkpoint file {newest} "))
            && first.ends_with("records were cut off"),
        "{out}"
    );

    // An insider with the key rewrites a call inside the second segment (seq 8) and re-signs
    // every checkpoint with the real key: the log is consistent, signatures included…
    let insider = copy_db(&r.db, &scratch, "insider.db");
    let real = read_key(&r.key_file());
    let changed = rewrite(&insider, hide_change(8, 3650), &Recompute::all(&real));
    assert_eq!(changed, (LAST_SEQ - 7) as usize, "seq 8 onwards");
    let (out, _) = assert_intact(&insider, &["--pubkey", &s(&r.pubkey)], LAST_SEQ);
    assert!(out.contains("  4 checkpoints, signatures verified"), "{out}");
    // …but the checkpoint file of that segment, kept elsewhere, differs from the log's.
    assert_broken(
        &insider,
        &["--pubkey", &s(&r.pubkey), "--checkpoints", &cps],
        &format!(
            "audit chain broken at seq 6: checkpoint file {} differs from the log's checkpoint 6–10: the log was rewritten",
            file_name(6, 10)
        ),
    );
    // The original matches its files.
    assert_intact(&r.db, &["--pubkey", &s(&r.pubkey), "--checkpoints", &cps], LAST_SEQ);
}

// ---------------------------------------------------------------------------------------------
// 4. A tampered checkpoint record is named by its range
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_checkpoint_is_named_with_what_is_wrong() {
    let r = ran().await;
    let scratch = r.scratch();
    let pubkey = s(&r.pubkey);
    let original = rows(&r.db);

    // Each tamper changes one field of one checkpoint record; the chain is relinked after it
    // and the later checkpoints' lastHash, merkleRoot and previousCheckpointHash recomputed
    // (not re-signed: there is no key), so the checkpoint itself is the first thing wrong.
    let tamper = |name: &str, at: u64, field: &'static str, value: Value| -> PathBuf {
        let db = copy_db(&r.db, &scratch, name);
        let v = value.clone();
        let changed = rewrite(
            &db,
            move |seq, m| {
                if seq == at {
                    assert_eq!(m["recordType"], "checkpoint");
                    assert_ne!(m[field], v);
                    m.insert(field.into(), v.clone());
                }
            },
            &Recompute {
                last_hash: true,
                merkle_root: true,
                previous: true,
                sign_with: None,
            },
        );
        assert_eq!(changed as u64, LAST_SEQ - at + 1, "seq {at} onwards");
        let row = &rows(&db)[at as usize - 1];
        assert_eq!(checkpoint_of(row)[field], value);
        assert_ne!(row.hash, original[at as usize - 1].hash);
        db
    };

    // The signature of the second checkpoint: one bit flipped.
    let mut sig = unb64(checkpoint_of(&original[10])["signature"].as_str().unwrap());
    sig[0] ^= 1;
    let db = tamper("sig.db", 11, "signature", Value::from(b64(&sig)));
    let line =
        "audit chain broken at seq 11: checkpoint 6–10 (seq 11): its signature does not verify with the public key";
    assert_broken(&db, &["--pubkey", &pubkey], line);
    // Without a key the signature cannot be checked, and the output says so.
    let (_, err) = assert_intact(&db, &[], LAST_SEQ);
    assert!(err.contains("signatures not checked"), "{err}");

    // The Merkle root of the third.
    let db = tamper("root.db", 16, "merkleRoot", Value::from("ab".repeat(32)));
    let line =
        "audit chain broken at seq 16: checkpoint 11–15 (seq 16): its merkleRoot does not match the records it covers";
    assert_broken(&db, &[], line);
    assert_broken(&db, &["--pubkey", &pubkey], line);

    // The count of the first.
    let db = tamper("count.db", 6, "count", Value::from(4));
    let line = "audit chain broken at seq 6: checkpoint 1–5 (seq 6): its count 4 is not the 5 records it covers";
    assert_broken(&db, &[], line);
    assert_broken(&db, &["--pubkey", &pubkey], line);
}

// ---------------------------------------------------------------------------------------------
// 5. An idle proxy keeps checkpointing, across a restart
// ---------------------------------------------------------------------------------------------

/// Polls `dir` until it holds at least `n` checkpoint files; panics with the log after [`WAIT`].
async fn wait_files(dir: &Path, n: usize, proxy: &BinaryProxy) -> Vec<(String, Value)> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let f = files(dir);
        if f.len() >= n {
            return f;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} checkpoint files after {WAIT:?}, expected {n}:\n{}",
            f.len(),
            proxy.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Checks the chain of checkpoints of a proxy that saw no call: one file per record, the first
/// covering nothing, each later one covering exactly the checkpoint record before it and naming
/// the previous checkpoint's hash.
fn check_idle_chain(files: &[(String, Value)], rows: &[Row]) {
    assert_eq!(
        files.len(),
        rows.len(),
        "one file per record: every record is a checkpoint"
    );
    for (i, ((name, file), row)) in files.iter().zip(rows).enumerate() {
        assert_eq!(row.seq, i as u64 + 1);
        assert_eq!(&checkpoint_of(row), file, "{name} is the record at seq {}", row.seq);
        if i == 0 {
            // Nothing to cover yet: an empty segment before seq 1.
            assert_eq!(name, &file_name(1, 0));
            assert_eq!(file["count"], 0, "{name}");
            assert_eq!(file["lastHash"], GENESIS, "{name}");
            assert_eq!(file["merkleRoot"], sha256_hex(b""), "{name}");
            assert_eq!(file["previousCheckpointHash"], GENESIS, "{name}");
        } else {
            let before = &rows[i - 1];
            assert_eq!(name, &file_name(before.seq, before.seq));
            assert_eq!(file["count"], 1, "{name}");
            assert_eq!(file["lastHash"], before.hash, "{name}");
            assert_eq!(file["merkleRoot"], hex::encode(merkle(&[raw(&before.hash)])), "{name}");
            assert_eq!(
                file["previousCheckpointHash"],
                checkpoint_hash(&files[i - 1].1),
                "{name}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_proxy_keeps_signing_checkpoints_across_a_restart() {
    let fake = FakeVendor::start(FakeVendorOpts::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let cps = dir.path().join("checkpoints");
    let mut opts = BinaryProxyOpts::new(&fake.url());
    opts.audit_toml = checkpoint_toml(10_000, "1s", &cps);
    let mut proxy = BinaryProxy::start(dir.path(), &opts).await;
    wait_files(&cps, 3, &proxy).await;
    proxy.stop().await;

    let pubkey = dir.path().join("real.pem");
    std::fs::write(&pubkey, binary::run_ok(&["audit", "pubkey", "--db", &s(&proxy.db)])).unwrap();
    let before = files(&cps);
    let rows_before = rows(&proxy.db);
    assert!(before.len() >= 3, "{before:?}");
    check_idle_chain(&before, &rows_before);
    let n = before.len() as u64;
    let args = ["--pubkey", &s(&pubkey), "--checkpoints", &s(&cps)];
    let (out, _) = assert_intact(&proxy.db, &args, n);
    assert!(
        out.contains(&format!("  {n} checkpoint files matched the log")),
        "{out}"
    );

    // Restarted, the proxy continues the chain of checkpoints from the last one.
    let mut proxy = BinaryProxy::start(dir.path(), &opts).await;
    wait_files(&cps, before.len() + 2, &proxy).await;
    proxy.stop().await;
    let after = files(&cps);
    let rows_after = rows(&proxy.db);
    assert_eq!(
        after[..before.len()],
        before[..],
        "the files from before are kept as they were"
    );
    check_idle_chain(&after, &rows_after);
    let first_new = &after[before.len()].1;
    assert_eq!(first_new["firstSeq"], n);
    assert_eq!(first_new["lastSeq"], n);
    assert_eq!(
        first_new["previousCheckpointHash"],
        checkpoint_hash(&before.last().unwrap().1),
        "the first checkpoint after the restart names the last one before it"
    );
    let m = after.len() as u64;
    let (out, _) = assert_intact(&proxy.db, &args, m);
    assert!(
        out.contains(&format!("  {m} checkpoints, signatures verified")),
        "{out}"
    );
    assert!(
        out.contains(&format!("  {m} checkpoint files matched the log")),
        "{out}"
    );
}

// ---------------------------------------------------------------------------------------------
// 6. audit pubkey
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_pubkey_reads_the_key_beside_the_database_or_the_configured_one() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("none.db");

    // No key file: one sentence naming it, non-zero exit.
    let o = binary::run(&["audit", "pubkey", "--db", &s(&db)]);
    binary::assert_one_line_error(&o, "audit pubkey without a key");
    let err = binary::stderr(&o);
    assert!(err.contains(&format!("{}.checkpoint-key", db.display())), "{err}");
    assert_eq!(binary::stdout(&o), "");

    // A configuration naming the key file: that file is read, not the one beside the database.
    let key_file = dir.path().join("keys").join("signing.key");
    let fake = FakeVendor::start(FakeVendorOpts::default()).await;
    let mut opts = BinaryProxyOpts::new(&fake.url());
    opts.audit_toml = format!("checkpoint_key_file = {}\n", toml_str(&s(&key_file)));
    let config = dir.path().join("proxy.toml");
    std::fs::write(
        &config,
        binary::config_text(
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
            &dir.path().join("audit.db"),
            &opts,
        ),
    )
    .unwrap();
    let o = binary::run(&["audit", "pubkey", "--config", &s(&config)]);
    binary::assert_one_line_error(&o, "audit pubkey --config before the key exists");
    let err = binary::stderr(&o);
    assert!(err.contains(&s(&key_file)), "{err}");

    // The proxy creates it (0600) on its first run…
    let mut proxy = BinaryProxy::start(dir.path(), &opts).await;
    proxy.stop().await;
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(!PathBuf::from(format!("{}.checkpoint-key", proxy.db.display())).exists());
    // …and `audit pubkey --config` prints its public key.
    let pem = binary::run_ok(&["audit", "pubkey", "--config", &s(&proxy.config)]);
    assert_eq!(pem, public_pem(&read_key(&key_file)));
    // The database's own default key file does not exist: --db alone cannot find it.
    let o = binary::run(&["audit", "pubkey", "--db", &s(&proxy.db)]);
    binary::assert_one_line_error(&o, "audit pubkey --db when the key is configured elsewhere");
}

// ---------------------------------------------------------------------------------------------
// 7. Archive
// ---------------------------------------------------------------------------------------------

/// The CloudTrail records in every gzip file under `dir`.
fn cloudtrail_records(dir: &Path) -> Vec<Value> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().ends_with(".json.gz") {
                let mut text = String::new();
                std::io::Read::read_to_string(
                    &mut flate2::read::GzDecoder::new(std::fs::File::open(&p).unwrap()),
                    &mut text,
                )
                .unwrap();
                let v: Value = serde_json::from_str(&text).unwrap();
                out.extend(v["Records"].as_array().unwrap().iter().cloned());
            }
        }
    }
    out
}

/// `audit archive` moves everything before the newest checkpoint out; the log left verifies
/// (it starts at that signed checkpoint), the archive verifies against its checkpoints, and a
/// changed archived record does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archived_log_and_its_archive_both_verify_and_a_changed_archive_does_not() {
    let r = ran().await;
    let pubkey = s(&r.pubkey);
    let events_before = binary::query_json(&r.db, &[]).len();
    assert_eq!(events_before, CALLS as usize);
    let out = r.dir.path().join("archive");
    let o = binary::run(&[
        "audit",
        "archive",
        "--db",
        &s(&r.db),
        "--before",
        "2099-01-01T00:00:00Z",
        "--out",
        &s(&out),
    ]);
    assert!(
        o.status.success(),
        "archive: {}{}",
        binary::stdout(&o),
        binary::stderr(&o)
    );
    let (newest_first, newest_last, newest_seq) = EXPECTED[EXPECTED.len() - 1];
    assert!(
        binary::stdout(&o).contains(&format!(
            "the log now starts at checkpoint {newest_first}–{newest_last}"
        )),
        "{}",
        binary::stdout(&o)
    );
    // The log left: from the newest checkpoint's record on.
    let left = rows(&r.db);
    assert_eq!(left.first().map(|r| r.seq), Some(newest_seq));
    assert_eq!(left.last().map(|r| r.seq), Some(LAST_SEQ));
    assert_intact(&r.db, &["--pubkey", &pubkey], LAST_SEQ - newest_seq + 1);
    assert_intact(
        &r.db,
        &["--pubkey", &pubkey, "--checkpoints", &s(&r.cps)],
        LAST_SEQ - newest_seq + 1,
    );
    // Every event is in the archive's CloudTrail files or still in the log, once.
    let archived = cloudtrail_records(&out.join("cloudtrail"));
    let remaining = binary::query_json(&r.db, &[]);
    assert_eq!(
        archived.len() + remaining.len(),
        events_before,
        "{archived:?} {remaining:?}"
    );
    let o = binary::run(&["audit", "verify", "--archive", &s(&out), "--pubkey", &pubkey]);
    assert_eq!(o.status.code(), Some(0), "{}{}", binary::stdout(&o), binary::stderr(&o));
    assert_eq!(
        binary::stdout(&o).trim(),
        format!(
            "archive intact: {} records verified against their checkpoints, signatures verified",
            newest_seq - 1
        )
    );
    // Archiving again finds nothing older.
    let o = binary::run(&[
        "audit",
        "archive",
        "--db",
        &s(&r.db),
        "--before",
        "2099-01-01T00:00:00Z",
        "--out",
        &s(&out),
    ]);
    assert!(o.status.success());
    assert!(
        binary::stdout(&o).starts_with("nothing to archive"),
        "{}",
        binary::stdout(&o)
    );
    // One archived record changed: the archive no longer verifies.
    let chain = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".jsonl.gz"))
        .expect("the archived chain file");
    let mut text = String::new();
    std::io::Read::read_to_string(
        &mut flate2::read::GzDecoder::new(std::fs::File::open(&chain).unwrap()),
        &mut text,
    )
    .unwrap();
    let changed = text.replacen("\"duration_days\":30", "\"duration_days\":3650", 1);
    let changed = if changed == text {
        text.replacen("\"new\":30", "\"new\":3650", 1)
    } else {
        changed
    };
    assert_ne!(changed, text, "the archive holds the first call's value");
    let mut gz = flate2::write::GzEncoder::new(std::fs::File::create(&chain).unwrap(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, changed.as_bytes()).unwrap();
    gz.finish().unwrap();
    let o = binary::run(&["audit", "verify", "--archive", &s(&out), "--pubkey", &pubkey]);
    assert_eq!(o.status.code(), Some(1), "{}{}", binary::stdout(&o), binary::stderr(&o));
    assert!(
        binary::stdout(&o).starts_with("archive broken at seq "),
        "{}",
        binary::stdout(&o)
    );
}
