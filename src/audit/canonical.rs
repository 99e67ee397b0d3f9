//! Canonical JSON (object keys sorted by their UTF-8 bytes, no whitespace, serde_json's
//! number and string spelling) and the hashes of the chain.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Serialises `v` canonically.
pub fn to_string(v: &Value) -> String {
    let mut out = String::with_capacity(512);
    write(v, &mut out);
    out
}

fn write(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort_unstable();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write(&m[k], out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// Lower-case hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_sorted_at_every_depth() {
        let v = json!({"b": 1, "a": {"d": [1, {"z": null, "y": "é"}], "c": true}});
        assert_eq!(to_string(&v), r#"{"a":{"c":true,"d":[1,{"y":"é","z":null}]},"b":1}"#);
        let again: Value = serde_json::from_str(&to_string(&v)).unwrap();
        assert_eq!(to_string(&again), to_string(&v));
    }
}
