//! The clients file (`[reverse] clients_file`): the keys reverse-mode AWS clients may sign
//! with, read once with its permissions checked. A secret is kept only as the first HMAC key of
//! the SigV4 derivation, and never reaches a `Debug` output or an error.

use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::path::Path;
use std::sync::Mutex;

use ring::hmac;
use serde::Deserialize;

use super::request::Scope;
use super::{TERMINATOR, sha256};

/// The largest clients file read.
const MAX_CLIENTS_FILE_BYTES: u64 = 1 << 20;
/// The shortest secret accepted: a short secret falls to an offline search from one signed
/// request. AWS's own secret access keys are 40 characters.
const MIN_SECRET_CHARS: usize = 16;
/// The longest access key id (AWS's limit).
const MAX_ACCESS_KEY_ID: usize = 128;

/// One listed client.
pub(super) struct ClientKey {
    /// Recorded as `userIdentity.principal`.
    pub(super) name: String,
    /// `"AWS4" + secret` as an HMAC-SHA256 key: the first step of every signing key derivation.
    pub(super) root: hmac::Key,
    /// SHA-256 of the session token the client must send, when it has one.
    pub(super) session_token: Option<[u8; 32]>,
    /// The signing key last derived for this client and the scope it belongs to. A signing
    /// key is good for one day, region and service, so nearly every request reuses it and
    /// skips eight of the ten SHA-256 blocks of the derivation. Stored only after a
    /// signature made with it verified, so nobody without the secret can evict it.
    pub(super) signing: Mutex<Option<SigningKey>>,
}

/// A derived SigV4 signing key and its scope.
pub(super) struct SigningKey {
    pub(super) date: [u8; 8],
    pub(super) region: String,
    pub(super) service: String,
    pub(super) key: hmac::Key,
}

impl ClientKey {
    /// The signing key for `scope`, and whether it was derived just now (not cached).
    pub(super) fn signing_key(&self, scope: &Scope<'_>) -> (hmac::Key, bool) {
        if let Ok(cached) = self.signing.lock()
            && let Some(c) = cached.as_ref()
            && c.date == scope.date.as_bytes()
            && c.region == scope.region
            && c.service == scope.service
        {
            return (c.key.clone(), false);
        }
        let step = |key: &[u8], data: &[u8]| hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data);
        let k_date = hmac::sign(&self.root, scope.date.as_bytes());
        let k_region = step(k_date.as_ref(), scope.region.as_bytes());
        let k_service = step(k_region.as_ref(), scope.service.as_bytes());
        let k_signing = step(k_service.as_ref(), TERMINATOR.as_bytes());
        (hmac::Key::new(hmac::HMAC_SHA256, k_signing.as_ref()), true)
    }

    /// Keeps `key`, which just verified a signature for `scope`.
    pub(super) fn remember(&self, scope: &Scope<'_>, key: hmac::Key) {
        let Ok(date) = <[u8; 8]>::try_from(scope.date.as_bytes()) else {
            return;
        };
        if let Ok(mut cached) = self.signing.lock() {
            *cached = Some(SigningKey {
                date,
                region: scope.region.to_string(),
                service: scope.service.to_string(),
                key,
            });
        }
    }
}

/// The listed client keys, by access key id. `Debug` shows names and ids, never a secret.
pub struct ClientKeys {
    pub(super) by_id: HashMap<String, ClientKey>,
}

impl fmt::Debug for ClientKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ids: Vec<(&String, &ClientKey)> = self.by_id.iter().collect();
        ids.sort_by(|a, b| a.0.cmp(b.0));
        let mut list = f.debug_list();
        for (id, c) in ids {
            list.entry(&format_args!(
                "{{ name: {:?}, access_key_id: {id:?}, session_token: {} }}",
                c.name,
                if c.session_token.is_some() { "listed" } else { "none" }
            ));
        }
        list.finish()
    }
}

/// Why a clients file was refused: every problem found, none of them quoting a secret.
#[derive(Debug, thiserror::Error)]
#[error("{}", self.render())]
pub struct ClientsFileError {
    /// The file (or what the text came from).
    pub origin: String,
    /// One sentence each.
    pub problems: Vec<String>,
}

impl ClientsFileError {
    fn one(origin: &str, problem: String) -> ClientsFileError {
        ClientsFileError {
            origin: origin.to_string(),
            problems: vec![problem],
        }
    }

    fn render(&self) -> String {
        let lines: Vec<String> = self.problems.iter().map(|p| format!("{}: {p}", self.origin)).collect();
        lines.join("\n")
    }
}

/// The file as written; no `Debug`, since it holds secrets.
#[derive(Deserialize)]
struct RawClientsFile {
    #[serde(default)]
    client: Vec<RawClient>,
}

#[derive(Deserialize)]
struct RawClient {
    name: Option<String>,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    session_token: Option<String>,
}

impl ClientKeys {
    /// Reads the clients file at `path`. The file must be a regular file that grants nothing
    /// to group or others (mode 0600 or stricter): it holds secret keys.
    pub fn load(path: &Path) -> Result<ClientKeys, ClientsFileError> {
        let origin = path.display().to_string();
        let fail = |p: String| ClientsFileError::one(&origin, p);
        let file = std::fs::File::open(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => fail("the clients file does not exist".into()),
            _ => fail(format!("cannot open the clients file: {e}")),
        })?;
        // The checks look at the file that was opened, not at a path that may change under us.
        let meta = file
            .metadata()
            .map_err(|e| fail(format!("cannot read the clients file: {e}")))?;
        if !meta.is_file() {
            return Err(fail("the clients file is not a regular file".into()));
        }
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(fail(format!(
                    "the clients file holds secret keys but its mode {mode:04o} grants access to group or others: run `chmod 600 {origin}`"
                )));
            }
        }
        let mut text = String::new();
        file.take(MAX_CLIENTS_FILE_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(|e| fail(format!("cannot read the clients file: {e}")))?;
        if text.len() as u64 > MAX_CLIENTS_FILE_BYTES {
            return Err(fail(format!(
                "the clients file is larger than {MAX_CLIENTS_FILE_BYTES} bytes"
            )));
        }
        ClientKeys::from_toml_str(&text, &origin)
    }

    /// Parses the clients file's text; `origin` names it in errors. Unknown keys, missing or
    /// empty fields, duplicate names or access key ids and a file without clients are refused,
    /// every problem reported at once.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<ClientKeys, ClientsFileError> {
        let line_of = |span: Option<std::ops::Range<usize>>| {
            span.map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
        };
        let toml_problem = |e: toml::de::Error| {
            let msg = scrub_serde_message(e.message());
            match line_of(e.span()) {
                Some(line) => format!("line {line}: {msg}"),
                None => msg,
            }
        };
        let de = toml::Deserializer::parse(text).map_err(|e| ClientsFileError::one(origin, toml_problem(e)))?;
        let mut unknown: Vec<String> = Vec::new();
        let raw: RawClientsFile = serde_ignored::deserialize(de, |path| unknown.push(path.to_string()))
            .map_err(|e| ClientsFileError::one(origin, toml_problem(e)))?;
        let mut problems: Vec<String> = unknown
            .into_iter()
            .map(|k| format!("`{k}` is not a known key (a client has name, access_key_id, secret_access_key and optional session_token)"))
            .collect();
        if raw.client.is_empty() {
            problems.push(
                "the file lists no clients (add a [[client]] table with name, access_key_id and secret_access_key)"
                    .into(),
            );
        }
        let mut by_id: HashMap<String, ClientKey> = HashMap::new();
        let mut first_of_id: HashMap<String, usize> = HashMap::new();
        let mut first_of_name: HashMap<String, usize> = HashMap::new();
        for (i, c) in raw.client.into_iter().enumerate() {
            let n = i + 1;
            let before = problems.len();
            let mut field = |key: &str, value: Option<String>| -> Option<String> {
                match value.as_deref().map(str::trim) {
                    None => {
                        problems.push(format!("client #{n}: {key} is missing"));
                        None
                    }
                    Some("") => {
                        problems.push(format!("client #{n}: {key} is empty"));
                        None
                    }
                    Some(v) => Some(v.to_string()),
                }
            };
            let name = field("name", c.name);
            let id = field("access_key_id", c.access_key_id);
            let secret = field("secret_access_key", c.secret_access_key);
            let token = match c.session_token {
                None => None,
                some => field("session_token", some),
            };
            if let Some(name) = &name {
                if name.chars().any(char::is_control) {
                    problems.push(format!("client #{n}: name {name:?} holds a control character"));
                } else if let Some(first) = first_of_name.get(name) {
                    problems.push(format!("client #{n}: name {name:?} is also client #{first}'s"));
                } else {
                    first_of_name.insert(name.clone(), n);
                }
            }
            if let Some(id) = &id {
                if !valid_access_key_id(id) {
                    problems.push(format!(
                        "client #{n}: access_key_id must be 1 to {MAX_ACCESS_KEY_ID} letters, digits, `-` or `_`"
                    ));
                } else if let Some(first) = first_of_id.get(id) {
                    problems.push(format!("client #{n}: access_key_id {id} is also client #{first}'s"));
                } else {
                    first_of_id.insert(id.clone(), n);
                }
            }
            if let Some(s) = &secret
                && s.chars().count() < MIN_SECRET_CHARS
            {
                problems.push(format!(
                    "client #{n}: secret_access_key is shorter than {MIN_SECRET_CHARS} characters (use a random key, 40 characters like AWS's own)"
                ));
            }
            if problems.len() > before {
                continue;
            }
            let (Some(name), Some(id), Some(secret)) = (name, id, secret) else {
                continue;
            };
            let mut root = Vec::with_capacity(4 + secret.len());
            root.extend_from_slice(b"AWS4");
            root.extend_from_slice(secret.as_bytes());
            let key = ClientKey {
                name,
                root: hmac::Key::new(hmac::HMAC_SHA256, &root),
                session_token: token.map(|t| sha256(t.as_bytes())),
                signing: Mutex::new(None),
            };
            by_id.insert(id, key);
        }
        if problems.is_empty() {
            Ok(ClientKeys { by_id })
        } else {
            Err(ClientsFileError {
                origin: origin.to_string(),
                problems,
            })
        }
    }

    /// How many clients are listed.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether no client is listed (never true for a loaded file).
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

/// A serde/TOML message without the offending value: `invalid type: string "…", expected a
/// sequence` could quote a secret written in the wrong place.
fn scrub_serde_message(msg: &str) -> String {
    let msg = msg.trim().replace('\n', " ");
    for kind in ["invalid type", "invalid value", "invalid length"] {
        if msg.starts_with(kind) {
            return match msg.find(", expected") {
                Some(i) => format!("{kind}{}", &msg[i..]),
                None => kind.to_string(),
            };
        }
    }
    msg
}

/// Letters, digits, `-` and `_`, at most [`MAX_ACCESS_KEY_ID`].
pub(super) fn valid_access_key_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ACCESS_KEY_ID
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}
