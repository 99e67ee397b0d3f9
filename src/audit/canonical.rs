//! Canonical JSON (object keys sorted by their UTF-8 bytes, no whitespace, serde_json's
//! number and string spelling) and the hashes of the chain.

use serde_json::Value;

/// Serialises `v` canonically.
pub fn to_string(v: &Value) -> String {
    let mut out = Vec::with_capacity(1024);
    write(v, &mut out);
    // serde_json writes valid UTF-8 and the structure bytes are ASCII.
    String::from_utf8(out).unwrap_or_default()
}

fn write(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(m) => {
            let mut entries: Vec<(&String, &Value)> = m.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                // Writing a string to a Vec cannot fail.
                let _ = serde_json::to_writer(&mut *out, k);
                out.push(b':');
                write(v, out);
            }
            out.push(b'}');
        }
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

/// Lower-case hex SHA-256 (ring's assembly implementation: the writer hashes every record).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes))
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
    fn keys_sorted_at_every_depth() {
        let v = json!({"b": 1, "a": {"d": [1, {"z": null, "y": "é"}], "c": true}});
        assert_eq!(to_string(&v), r#"{"a":{"c":true,"d":[1,{"y":"é","z":null}]},"b":1}"#);
        let again: Value = serde_json::from_str(&to_string(&v)).unwrap();
        assert_eq!(to_string(&again), to_string(&v));
    }
}
