//! Canonical JSON (object keys sorted by their UTF-8 bytes, no whitespace, serde_json's
//! number and string spelling) and the hashes of the chain.

use std::borrow::Cow;

use serde_json::{Map, Value};

/// Serialises `v` canonically.
pub fn to_string(v: &Value) -> String {
    let mut out = Vec::with_capacity(1024);
    write(v, &mut out);
    // serde_json writes valid UTF-8 and the structure bytes are ASCII.
    String::from_utf8(out).unwrap_or_default()
}

/// Writes `v` canonically at the end of `out`.
pub fn write(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(m) => write_map(m, out),
        Value::Array(a) => {
            out.push(b'[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(x, out);
            }
            out.push(b']');
        }
        other => {
            let _ = serde_json::to_writer(&mut *out, other);
        }
    }
}

/// Writes the object `m` canonically at the end of `out`.
pub fn write_map(m: &Map<String, Value>, out: &mut Vec<u8>) {
    let mut entries: Vec<(&String, &Value)> = m.iter().collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
    out.push(b'{');
    for (i, (k, v)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(k, out);
        out.push(b':');
        write(v, out);
    }
    out.push(b'}');
}

/// Writes a JSON string (serde_json's escaping) at the end of `out`.
pub fn write_str(s: &str, out: &mut Vec<u8>) {
    // serde_json escapes only control characters, `"` and `\`; most strings have none.
    // No early exit: the compiler turns this fold into a vector loop.
    let escapes = s
        .bytes()
        .fold(false, |e, b| e | (b < 0x20) | (b == b'"') | (b == b'\\'));
    if !escapes {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        // Writing a string to a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

/// A JSON object built one field at a time, written canonically without an intermediate
/// `Value` tree: each value is written (canonically) into one buffer as it is added, and
/// [`ObjectText::finish`] puts the fields in key order. A key added twice keeps its last value.
#[derive(Debug, Clone, Default)]
pub struct ObjectText {
    buf: Vec<u8>,
    fields: Vec<(Cow<'static, str>, usize, usize)>,
}

impl ObjectText {
    /// An empty object with room for about `bytes` of values.
    pub fn with_capacity(bytes: usize) -> ObjectText {
        ObjectText {
            buf: Vec::with_capacity(bytes),
            fields: Vec::with_capacity(32),
        }
    }

    /// The fields of a JSON object (anything else gives an empty object).
    pub fn from_value(v: &Value) -> ObjectText {
        let mut o = ObjectText::with_capacity(512);
        if let Value::Object(m) = v {
            for (k, v) in m {
                o.field(Cow::Owned(k.clone()), |out| write(v, out));
            }
        }
        o
    }

    /// Adds `key`; `value` must write exactly one canonical JSON value.
    pub fn field(&mut self, key: impl Into<Cow<'static, str>>, value: impl FnOnce(&mut Vec<u8>)) {
        let start = self.buf.len();
        value(&mut self.buf);
        self.fields.push((key.into(), start, self.buf.len()));
    }

    /// Adds a string field.
    pub fn str(&mut self, key: &'static str, v: &str) {
        self.field(key, |out| write_str(v, out));
    }

    /// Adds a string field, `null` when absent.
    pub fn opt_str(&mut self, key: &'static str, v: Option<&str>) {
        self.field(key, |out| write_opt_str(v, out));
    }

    /// Adds any value.
    pub fn value(&mut self, key: &'static str, v: &Value) {
        self.field(key, |out| write(v, out));
    }

    /// Adds a number, `null` when absent.
    pub fn opt_u64(&mut self, key: &'static str, v: Option<u64>) {
        self.field(key, |out| match v {
            Some(n) => write_u64(n, out),
            None => out.extend_from_slice(b"null"),
        });
    }

    /// The canonical text, with `extra` fields (already canonical JSON values) added last.
    pub fn finish(&self, extra: &[(&'static str, &[u8])]) -> String {
        let mut all: Vec<(&str, &[u8])> = Vec::with_capacity(self.fields.len() + extra.len());
        all.extend(self.fields.iter().map(|(k, s, e)| (k.as_ref(), &self.buf[*s..*e])));
        all.extend(extra.iter().map(|(k, v)| (*k, *v)));
        // Stable: of equal keys, the one added last ends up last and wins below.
        all.sort_by(|a, b| a.0.cmp(b.0));
        let mut out = Vec::with_capacity(self.buf.len() + 24 * all.len() + 16);
        out.push(b'{');
        let mut first = true;
        for (i, (k, v)) in all.iter().enumerate() {
            if all.get(i + 1).is_some_and(|next| next.0 == *k) {
                continue;
            }
            if !first {
                out.push(b',');
            }
            first = false;
            write_str(k, &mut out);
            out.push(b':');
            out.extend_from_slice(v);
        }
        out.push(b'}');
        // Every piece is valid UTF-8: serde_json output and ASCII punctuation.
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Writes a string or `null`.
pub fn write_opt_str(v: Option<&str>, out: &mut Vec<u8>) {
    match v {
        Some(s) => write_str(s, out),
        None => out.extend_from_slice(b"null"),
    }
}

/// Writes an unsigned number as serde_json spells it.
pub fn write_u64(n: u64, out: &mut Vec<u8>) {
    let _ = serde_json::to_writer(&mut *out, &n);
}

/// Writes the fields of a nested object whose keys are fixed: the caller names them in
/// byte order (checked in debug builds), so the object is canonical as written.
pub struct Nested<'a> {
    out: &'a mut Vec<u8>,
    last: Option<&'static str>,
}

impl<'a> Nested<'a> {
    /// Opens an object at the end of `out`.
    pub fn open(out: &'a mut Vec<u8>) -> Nested<'a> {
        out.push(b'{');
        Nested { out, last: None }
    }

    /// Starts the next field and returns the buffer its value goes to.
    pub fn key(&mut self, key: &'static str) -> &mut Vec<u8> {
        debug_assert!(self.last.is_none_or(|l| l < key), "{key} written out of order");
        if self.last.is_some() {
            self.out.push(b',');
        }
        self.last = Some(key);
        write_str(key, self.out);
        self.out.push(b':');
        self.out
    }

    /// Closes the object.
    pub fn close(self) {
        self.out.push(b'}');
    }
}

/// Lower-case hex SHA-256 (ring's assembly implementation: the writer hashes every record).
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 64];
    // 32 bytes always fit 64 hex digits, which are ASCII.
    let _ = hex::encode_to_slice(digest.as_ref(), &mut out);
    String::from_utf8(out.to_vec()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sha256_known_answer() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn object_text_sorts_fields_and_keeps_the_last_of_a_key() {
        let mut o = ObjectText::with_capacity(64);
        o.str("b", "x\"y");
        o.opt_u64("a", Some(7));
        o.opt_str("c", None);
        o.value("a", &json!({"z": 1, "y": [true]}));
        o.field(String::from("é"), |out| out.extend_from_slice(b"0"));
        assert_eq!(
            o.finish(&[("ab", b"1"), ("b", b"2")]),
            r#"{"a":{"y":[true],"z":1},"ab":1,"b":2,"c":null,"é":0}"#
        );
        assert_eq!(ObjectText::default().finish(&[]), "{}");
        let v = json!({"k": {"b": 1, "a": 2}, "j": "é\n"});
        assert_eq!(ObjectText::from_value(&v).finish(&[]), to_string(&v));
    }

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let mut samples: Vec<String> = (0u32..0x800).filter_map(char::from_u32).map(String::from).collect();
        samples.extend(["", "plain", "a\"b", "a\\b", "line\nnext", "\u{7f}\u{2028}\u{1F600}é/"].map(String::from));
        for s in samples {
            let mut out = Vec::new();
            write_str(&s, &mut out);
            assert_eq!(out, serde_json::to_vec(&s).unwrap(), "{s:?}");
        }
    }

    #[test]
    fn nested_objects_are_canonical_as_written() {
        let mut out = Vec::new();
        let mut n = Nested::open(&mut out);
        write_str("1", n.key("a"));
        write_u64(2, n.key("b"));
        n.close();
        assert_eq!(out, br#"{"a":"1","b":2}"#);
    }

    #[test]
    fn keys_sorted_at_every_depth() {
        let v = json!({"b": 1, "a": {"d": [1, {"z": null, "y": "é"}], "c": true}});
        assert_eq!(to_string(&v), r#"{"a":{"c":true,"d":[1,{"y":"é","z":null}]},"b":1}"#);
        let again: Value = serde_json::from_str(&to_string(&v)).unwrap();
        assert_eq!(to_string(&again), to_string(&v));
    }
}
