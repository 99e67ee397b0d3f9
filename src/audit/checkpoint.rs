//! Signed checkpoints (SPEC §12), after CloudTrail's digest files: every `checkpoint_every`
//! records, and at least every `checkpoint_interval`, the writer signs a checkpoint of the
//! segment since the previous one — its first and last `seq`, count, last hash, the Merkle
//! root of its record hashes (RFC 6962), the time and the previous checkpoint's hash — with
//! Ed25519. The checkpoint is itself a record of the chain (`recordType` `checkpoint`), so it
//! is stored and shipped with the records, and it may also be written to `checkpoint_dir` as
//! one JSON file.
//!
//! What is signed is the canonical JSON of the checkpoint without `signature`; a checkpoint's
//! hash (the next one's `previousCheckpointHash`) is the SHA-256 of its canonical JSON with
//! `signature`. Both can be checked with standard tools (`openssl pkeyutl -verify -rawin`).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::canonical;

/// The fields of a checkpoint, as its JSON file spells them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// `proxyInstance` of the chain.
    pub instance: String,
    /// First `seq` of the segment.
    pub first_seq: u64,
    /// Last `seq` of the segment (`first_seq - 1` for an empty one).
    pub last_seq: u64,
    /// Records in the segment.
    pub count: u64,
    /// `hash` of record `last_seq` (`GENESIS` for an empty chain).
    pub last_hash: String,
    /// RFC 6962 Merkle root of the segment's record hashes, hex.
    pub merkle_root: String,
    /// When it was made (RFC 3339 UTC, ms).
    pub time: String,
    /// Hash of the previous checkpoint (`GENESIS` for the first).
    pub previous_checkpoint_hash: String,
    /// Ed25519 signature, base64.
    pub signature: String,
}

impl Checkpoint {
    /// The JSON object, with or without the signature.
    pub fn to_json(&self, with_signature: bool) -> Value {
        let mut v = json!({
            "instance": self.instance,
            "firstSeq": self.first_seq,
            "lastSeq": self.last_seq,
            "count": self.count,
            "lastHash": self.last_hash,
            "merkleRoot": self.merkle_root,
            "time": self.time,
            "previousCheckpointHash": self.previous_checkpoint_hash,
        });
        if with_signature && let Value::Object(m) = &mut v {
            m.insert("signature".into(), Value::from(self.signature.clone()));
        }
        v
    }

    /// The bytes the signature covers.
    pub fn signed_bytes(&self) -> Vec<u8> {
        canonical::to_string(&self.to_json(false)).into_bytes()
    }

    /// The checkpoint's hash: what the next one names as `previousCheckpointHash`.
    pub fn hash(&self) -> String {
        canonical::sha256_hex(canonical::to_string(&self.to_json(true)).as_bytes())
    }

    /// Reads a checkpoint from its JSON (a file, or a stored record whose chain fields are
    /// ignored). The error names the field.
    pub fn from_json(v: &Value) -> Result<Checkpoint, String> {
        let s = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| format!("it has no {k}"))
        };
        let n = |k: &str| v.get(k).and_then(Value::as_u64).ok_or_else(|| format!("it has no {k}"));
        Ok(Checkpoint {
            instance: s("instance")?,
            first_seq: n("firstSeq")?,
            last_seq: n("lastSeq")?,
            count: n("count")?,
            last_hash: s("lastHash")?,
            merkle_root: s("merkleRoot")?,
            time: s("time")?,
            previous_checkpoint_hash: s("previousCheckpointHash")?,
            signature: s("signature")?,
        })
    }

    /// `firstSeq–lastSeq`, how errors name a checkpoint.
    pub fn range(&self) -> String {
        format!("{}–{}", self.first_seq, self.last_seq)
    }

    /// The file name in `checkpoint_dir`: the instance and the range, zero-padded so that
    /// names sort in chain order.
    pub fn file_name(&self) -> String {
        let safe: String = self
            .instance
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        format!("{safe}_checkpoint_{:020}-{:020}.json", self.first_seq, self.last_seq)
    }

    /// Checks the signature with `key`.
    pub fn verify_signature(&self, key: &PublicKey) -> Result<(), String> {
        let sig = base64::engine::general_purpose::STANDARD
            .decode(self.signature.trim())
            .map_err(|_| "its signature is not base64".to_string())?;
        UnparsedPublicKey::new(&ED25519, &key.0)
            .verify(&self.signed_bytes(), &sig)
            .map_err(|_| "its signature does not verify with the public key".to_string())
    }
}

/// The records since the last checkpoint: what the next checkpoint covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// First `seq` of the segment.
    pub first: u64,
    /// Hashes of the segment's records, in order (raw bytes).
    pub hashes: Vec<[u8; 32]>,
    /// Hash of the last checkpoint (`GENESIS` before the first).
    pub previous: String,
}

impl Default for Segment {
    /// The segment of a chain without a checkpoint: from `seq` 1.
    fn default() -> Segment {
        Segment {
            first: 1,
            hashes: Vec::new(),
            previous: super::GENESIS.to_string(),
        }
    }
}

impl Segment {
    /// Adds a record's hash (hex); one that is not hex adds nothing.
    pub fn push(&mut self, hash_hex: &str) {
        self.hashes.extend(leaf(hash_hex));
    }

    /// Records in the segment.
    pub fn len(&self) -> u64 {
        self.hashes.len() as u64
    }

    /// Whether the segment holds no record yet.
    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// The signed checkpoint of the segment, which ends at `last_seq` (hash `last_hash`).
    pub fn seal(&self, instance: &str, last_seq: u64, last_hash: &str, time: String, key: &SigningKey) -> Checkpoint {
        let mut c = Checkpoint {
            instance: instance.to_string(),
            first_seq: self.first,
            last_seq,
            count: self.len(),
            last_hash: last_hash.to_string(),
            merkle_root: hex::encode(merkle_root(&self.hashes)),
            time,
            previous_checkpoint_hash: self.previous.clone(),
            signature: String::new(),
        };
        key.sign(&mut c);
        c
    }

    /// Starts the segment after `sealed`, whose record was linked at `seq` with `hash`: the
    /// checkpoint's own record is the first of the next segment.
    pub fn restart(&mut self, sealed: &Checkpoint, seq: u64, hash: &str) {
        self.previous = sealed.hash();
        self.first = seq;
        self.hashes.clear();
        self.push(hash);
    }
}

impl Checkpoint {
    /// The checkpoint as a record of the chain (`recordType` `checkpoint`).
    pub fn to_record(&self) -> super::NewRecord {
        super::NewRecord {
            kind: super::RecordKind::Checkpoint,
            event_id: String::new(),
            event_time: self.time.clone(),
            body: super::ObjectText::from_value(&self.to_json(true)),
            index: super::IndexFields {
                event_name: "Checkpoint".into(),
                event_source: "retention-proxy".into(),
                ..super::IndexFields::default()
            },
            observed: Vec::new(),
        }
    }
}

/// RFC 6962 Merkle tree hash of `leaves` (each a record hash, raw bytes): a leaf is
/// `SHA-256(0x00 ‖ leaf)`, a node `SHA-256(0x01 ‖ left ‖ right)`, split at the largest power
/// of two below the count; the empty tree is `SHA-256("")`.
pub fn merkle_root(leaves: &[[u8; 32]]) -> [u8; 32] {
    match leaves.len() {
        0 => Sha256::digest([]).into(),
        1 => {
            let mut h = Sha256::new();
            h.update([0u8]);
            h.update(leaves[0]);
            h.finalize().into()
        }
        n => {
            let k = 1usize << (usize::BITS - 1 - (n - 1).leading_zeros());
            let (l, r) = (merkle_root(&leaves[..k]), merkle_root(&leaves[k..]));
            let mut h = Sha256::new();
            h.update([1u8]);
            h.update(l);
            h.update(r);
            h.finalize().into()
        }
    }
}

/// A record hash (hex) as raw bytes; `None` when it is not 64 hex digits.
///
/// `audit verify` decodes every record's hash on the thread that reads the log in order, so
/// this is a table lookup per digit with one check at the end, not a branch per digit.
pub fn leaf(hash_hex: &str) -> Option<[u8; 32]> {
    let b = hash_hex.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    let mut bad = 0u8;
    for (o, pair) in out.iter_mut().zip(b.chunks_exact(2)) {
        let (hi, lo) = (HEX_DIGIT[pair[0] as usize], HEX_DIGIT[pair[1] as usize]);
        bad |= hi | lo;
        *o = (hi << 4) | (lo & 0x0f);
    }
    (bad & NOT_HEX == 0).then_some(out)
}

/// Marks a byte that is not a hex digit in [`HEX_DIGIT`].
const NOT_HEX: u8 = 0x10;

/// The value of each byte as a hex digit (either case), or [`NOT_HEX`].
const HEX_DIGIT: [u8; 256] = {
    let mut t = [NOT_HEX; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        t[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

/// An Ed25519 public key (32 bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey(pub Vec<u8>);

/// The DER prefix of an Ed25519 `SubjectPublicKeyInfo` (RFC 8410), before the 32 key bytes.
const SPKI_PREFIX: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];

impl PublicKey {
    /// PEM (`-----BEGIN PUBLIC KEY-----`), as `openssl pkey -pubout` writes it.
    pub fn to_pem(&self) -> String {
        let mut der = SPKI_PREFIX.to_vec();
        der.extend_from_slice(&self.0);
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        format!("-----BEGIN PUBLIC KEY-----\n{b64}\n-----END PUBLIC KEY-----\n")
    }

    /// Reads a PEM public key (as [`PublicKey::to_pem`] writes it) or the base64 of the 32
    /// key bytes.
    pub fn parse(text: &str) -> Result<PublicKey, String> {
        let body: String = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.starts_with("-----"))
            .collect();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(body.trim())
            .map_err(|_| "it is neither a PEM public key nor base64".to_string())?;
        match bytes.len() {
            32 => Ok(PublicKey(bytes)),
            44 if bytes[..12] == SPKI_PREFIX => Ok(PublicKey(bytes[12..].to_vec())),
            _ => Err("it is not an Ed25519 public key".into()),
        }
    }

    /// Reads `path` with [`PublicKey::parse`]; the error is one sentence naming the file.
    pub fn read(path: &Path) -> Result<PublicKey, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{} cannot be read: {e}", path.display()))?;
        PublicKey::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// The signing key: Ed25519 from a PKCS#8 document, kept base64 in a 0600 file.
pub struct SigningKey {
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("public", &self.public())
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Reads the key at `path`, or creates one there (mode 0600) when there is none.
    pub fn load_or_create(path: &Path) -> Result<SigningKey, String> {
        match std::fs::read_to_string(path) {
            Ok(text) => SigningKey::parse(&text).map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let rng = ring::rand::SystemRandom::new();
                let doc =
                    Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| "cannot generate a checkpoint key".to_string())?;
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
                }
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(|e| format!("{} cannot be created: {e}", path.display()))?;
                let text = base64::engine::general_purpose::STANDARD.encode(doc.as_ref());
                writeln!(f, "{text}")
                    .and_then(|_| f.sync_all())
                    .map_err(|e| format!("{} cannot be written: {e}", path.display()))?;
                tracing::info!(key = %path.display(), "checkpoint signing key created; keep its public key (`audit pubkey`) elsewhere");
                SigningKey::parse(&text)
            }
            Err(e) => Err(format!("{} cannot be read: {e}", path.display())),
        }
    }

    /// Reads an existing key.
    pub fn read(path: &Path) -> Result<SigningKey, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{} cannot be read: {e}", path.display()))?;
        SigningKey::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    fn parse(text: &str) -> Result<SigningKey, String> {
        let doc = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| "the checkpoint key file is not base64".to_string())?;
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&doc)
            .map_err(|_| "the checkpoint key file does not hold an Ed25519 key".to_string())?;
        Ok(SigningKey { pair })
    }

    /// The public key.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.pair.public_key().as_ref().to_vec())
    }

    /// Signs `cp` (its `signature` is replaced).
    pub fn sign(&self, cp: &mut Checkpoint) {
        let sig = self.pair.sign(&cp.signed_bytes());
        cp.signature = base64::engine::general_purpose::STANDARD.encode(sig.as_ref());
    }
}

/// The default key file of a database: `<db>.checkpoint-key`.
pub fn default_key_file(db: &Path) -> PathBuf {
    let mut s = db.as_os_str().to_os_string();
    s.push(".checkpoint-key");
    PathBuf::from(s)
}

/// Writes `cp` into `dir` as one JSON file (written whole, then renamed into place).
pub fn write_file(dir: &Path, cp: &Checkpoint) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(cp.file_name());
    let tmp = dir.join(format!(".{}.tmp", cp.file_name()));
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&tmp)?;
        let text = serde_json::to_string_pretty(&cp.to_json(true)).map_err(std::io::Error::other)?;
        f.write_all(text.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &path)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(path)
}

/// Reads every checkpoint file in `dir` (`*.json`), in chain order; the error names the file.
pub fn read_dir(dir: &Path) -> Result<Vec<(String, Checkpoint)>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{} cannot be read: {e}", dir.display()))?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().to_string();
        if !name.ends_with(".json") || name.starts_with('.') {
            continue;
        }
        let text =
            std::fs::read_to_string(entry.path()).map_err(|e| format!("checkpoint {name} cannot be read: {e}"))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| format!("checkpoint {name} is not JSON: {e}"))?;
        let cp = Checkpoint::from_json(&v).map_err(|e| format!("checkpoint {name}: {e}"))?;
        out.push((name, cp));
    }
    out.sort_by_key(|(_, cp)| (cp.instance.clone(), cp.first_seq, cp.last_seq));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table decoder agrees with the `hex` crate on every digit, both cases, and on
    /// every way of not being 64 hex digits.
    #[test]
    fn leaf_decodes_exactly_what_hex_does() {
        let mut cases: Vec<String> = Vec::new();
        for byte in 0u8..=255 {
            // Each byte value at the high and the low place of a digit pair.
            let c = byte as char;
            if c.is_ascii() {
                cases.push(format!("{c}0{}", "ab".repeat(31)));
                cases.push(format!("0{c}{}", "CD".repeat(31)));
            }
        }
        let digest = canonical::sha256_hex(b"x");
        cases.extend([
            digest.clone(),
            digest.to_uppercase(),
            digest[..63].to_string(),
            format!("{digest}0"),
            String::new(),
            format!("{}é", &digest[..62]),
        ]);
        for case in cases {
            let mut expected = [0u8; 32];
            let expected = hex::decode_to_slice(&case, &mut expected).ok().map(|()| expected);
            assert_eq!(leaf(&case), expected, "{case:?}");
        }
    }

    fn h(i: u8) -> [u8; 32] {
        [i; 32]
    }

    /// RFC 6962 §2.1 by hand for small trees: the split is at the largest power of two below n.
    #[test]
    fn merkle_roots_follow_rfc_6962() {
        let leaf_hash =
            |x: [u8; 32]| -> [u8; 32] { Sha256::new().chain_update([0u8]).chain_update(x).finalize().into() };
        let node = |l: [u8; 32], r: [u8; 32]| -> [u8; 32] {
            Sha256::new()
                .chain_update([1u8])
                .chain_update(l)
                .chain_update(r)
                .finalize()
                .into()
        };
        let empty: [u8; 32] = Sha256::digest([]).into();
        assert_eq!(merkle_root(&[]), empty);
        assert_eq!(merkle_root(&[h(1)]), leaf_hash(h(1)));
        assert_eq!(merkle_root(&[h(1), h(2)]), node(leaf_hash(h(1)), leaf_hash(h(2))));
        let three = node(node(leaf_hash(h(1)), leaf_hash(h(2))), leaf_hash(h(3)));
        assert_eq!(merkle_root(&[h(1), h(2), h(3)]), three);
        let five = node(
            node(
                node(leaf_hash(h(1)), leaf_hash(h(2))),
                node(leaf_hash(h(3)), leaf_hash(h(4))),
            ),
            leaf_hash(h(5)),
        );
        assert_eq!(merkle_root(&[h(1), h(2), h(3), h(4), h(5)]), five);
        // Order matters.
        assert_ne!(merkle_root(&[h(2), h(1)]), merkle_root(&[h(1), h(2)]));
    }

    #[test]
    fn a_signed_checkpoint_verifies_and_any_change_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("k");
        let key = SigningKey::load_or_create(&key_file).unwrap();
        let mode = std::fs::metadata(&key_file).unwrap().permissions();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600);
        // Read back, the same key.
        assert_eq!(SigningKey::load_or_create(&key_file).unwrap().public(), key.public());
        let mut cp = Checkpoint {
            instance: "a".into(),
            first_seq: 1,
            last_seq: 3,
            count: 3,
            last_hash: "ab".repeat(32),
            merkle_root: hex::encode(merkle_root(&[h(1), h(2), h(3)])),
            time: "2026-12-02T10:00:00.000Z".into(),
            previous_checkpoint_hash: crate::audit::GENESIS.into(),
            signature: String::new(),
        };
        key.sign(&mut cp);
        let public = PublicKey::parse(&key.public().to_pem()).unwrap();
        cp.verify_signature(&public).unwrap();
        let back = Checkpoint::from_json(&cp.to_json(true)).unwrap();
        assert_eq!(back, cp);
        let tampers: [fn(&mut Checkpoint); 4] = [
            |c| c.count = 4,
            |c| c.merkle_root = "00".repeat(32),
            |c| c.last_seq = 2,
            |c| {
                let mut sig = base64::engine::general_purpose::STANDARD.decode(&c.signature).unwrap();
                sig[0] ^= 1;
                c.signature = base64::engine::general_purpose::STANDARD.encode(sig);
            },
        ];
        for tamper in tampers {
            let mut t = cp.clone();
            tamper(&mut t);
            assert_ne!(t, cp);
            assert!(t.verify_signature(&public).is_err(), "{t:?}");
        }
        let other = SigningKey::load_or_create(&dir.path().join("other")).unwrap();
        assert!(cp.verify_signature(&other.public()).is_err());
        assert!(PublicKey::parse("not a key").is_err());
        assert!(SigningKey::read(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn files_are_named_in_chain_order_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::load_or_create(&dir.path().join("k")).unwrap();
        let mut cps = Vec::new();
        for (first, last) in [(11u64, 20u64), (1, 10)] {
            let mut cp = Checkpoint {
                instance: "gw/1".into(),
                first_seq: first,
                last_seq: last,
                count: last - first + 1,
                last_hash: "cd".repeat(32),
                merkle_root: "ef".repeat(32),
                time: "2026-12-02T10:00:00.000Z".into(),
                previous_checkpoint_hash: crate::audit::GENESIS.into(),
                signature: String::new(),
            };
            key.sign(&mut cp);
            write_file(&dir.path().join("cps"), &cp).unwrap();
            cps.push(cp);
        }
        let read = read_dir(&dir.path().join("cps")).unwrap();
        assert_eq!(read.len(), 2);
        assert_eq!(read[0].1, cps[1]);
        assert_eq!(read[1].1, cps[0]);
        assert_eq!(
            read[0].0,
            "gw_1_checkpoint_00000000000000000001-00000000000000000010.json"
        );
    }
}
