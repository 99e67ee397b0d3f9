//! The top-level fields of a stored record's JSON, read without building it: `audit verify`
//! compares a handful of them with the record's columns for every record of the log, and a
//! full parse of every body was most of its work.
//!
//! [`scan`] walks the object's top level, jumping over strings with `memchr`, and gives the raw
//! value of each wanted key. It answers `None` — "ask a real parser" — for anything outside
//! the plain shape the proxy writes (whitespace between tokens, an escaped key, an escaped or
//! non-string wanted value, a wanted key twice, an unbalanced or truncated text), so a caller
//! falls back to `serde_json` and reports exactly what it reports. What it skips (the values
//! of other keys) is only walked for its extent, not validated: its bytes are covered by the
//! record's hash.

/// The raw JSON text of the value of each of `keys` (a string with its quotes), in the order
/// given; `None` inside for a key that is absent.
pub fn scan<'a, const N: usize>(text: &'a str, keys: [&str; N]) -> Option<[Option<&'a str>; N]> {
    let b = text.as_bytes();
    let mut out: [Option<&str>; N] = [None; N];
    if b.first() != Some(&b'{') {
        return None;
    }
    let mut i = 1;
    if b.get(i) == Some(&b'}') {
        return (i + 1 == b.len()).then_some(out);
    }
    loop {
        // A key: a string without escapes.
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let end = string_end(b, i)?;
        let key = &text[i + 1..end];
        if key.contains('\\') {
            return None;
        }
        i = end + 1;
        if b.get(i) != Some(&b':') {
            return None;
        }
        i += 1;
        let value_end = value_end(b, i)?;
        if let Some(k) = keys.iter().position(|k| *k == key) {
            if out[k].is_some() {
                return None;
            }
            out[k] = Some(&text[i..value_end]);
        }
        i = value_end;
        match b.get(i) {
            Some(b',') => i += 1,
            Some(b'}') if i + 1 == b.len() => return Some(out),
            _ => return None,
        }
    }
}

/// The contents of a raw JSON string value without escapes; `None` for anything else.
pub fn plain_str(raw: &str) -> Option<&str> {
    let inner = raw.strip_prefix('"')?.strip_suffix('"')?;
    (!inner.contains('\\')).then_some(inner)
}

/// Index of the quote that closes the string whose opening quote is at `start`.
fn string_end(b: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    loop {
        i += memchr::memchr2(b'"', b'\\', b.get(i..)?)?;
        if b[i] == b'"' {
            return Some(i);
        }
        i += 2; // an escape and the character it escapes
    }
}

/// Index just past the value starting at `start`: a string, an object or array (nested to any
/// depth), or a scalar running to the next `,` or `}`.
fn value_end(b: &[u8], start: usize) -> Option<usize> {
    match *b.get(start)? {
        b'"' => string_end(b, start).map(|e| e + 1),
        b'{' | b'[' => {
            // The open brackets as bits (1 for `{`), innermost lowest; deeper than 64 is left
            // to a real parser.
            let mut open = u64::from(b[start] == b'{');
            let mut depth = 1u32;
            let mut i = start + 1;
            while depth > 0 {
                match *b.get(i)? {
                    b'"' => i = string_end(b, i)?,
                    c @ (b'{' | b'[') => {
                        if depth == 64 {
                            return None;
                        }
                        open = (open << 1) | u64::from(c == b'{');
                        depth += 1;
                    }
                    c @ (b'}' | b']') => {
                        if (open & 1 == 1) != (c == b'}') {
                            return None;
                        }
                        open >>= 1;
                        depth -= 1;
                    }
                    _ => {}
                }
                i += 1;
            }
            Some(i)
        }
        _ => {
            let len = b[start..].iter().position(|c| matches!(c, b',' | b'}'))?;
            let scalar = &b[start..start + len];
            (len > 0 && !scalar.iter().any(u8::is_ascii_whitespace)).then_some(start + len)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEYS: [&str; 3] = ["seq", "eventName", "prevHash"];

    /// What a real parser says of the same keys, when the fast path answers.
    fn parsed(text: &str) -> Option<[Option<serde_json::Value>; 3]> {
        let v: serde_json::Value = serde_json::from_str(text).ok()?;
        let o = v.as_object()?;
        Some(KEYS.map(|k| o.get(k).cloned()))
    }

    #[test]
    fn reads_the_wanted_keys_and_skips_the_rest() {
        let text =
            r#"{"a":{"seq":9,"x":["}",{"y":"\"]"}]},"eventName":"Put","n":-1.5e3,"prevHash":"ab","seq":42,"z":[]}"#;
        assert_eq!(scan(text, KEYS), Some([Some("42"), Some("\"Put\""), Some("\"ab\"")]));
        assert_eq!(scan(r#"{"seq":1}"#, KEYS), Some([Some("1"), None, None]));
        assert_eq!(scan("{}", KEYS), Some([None, None, None]));
        // Nesting to the deepest the scan follows, and one deeper (left to a real parser).
        let deep = |depth: usize| format!(r#"{{"a":{}{},"seq":7}}"#, "[".repeat(depth), "]".repeat(depth));
        assert_eq!(scan(&deep(64), KEYS), Some([Some("7"), None, None]));
        assert_eq!(scan(&deep(65), KEYS), None);
    }

    #[test]
    fn plain_strings_only() {
        assert_eq!(plain_str("\"Put\""), Some("Put"));
        assert_eq!(plain_str("\"a\\\"b\""), None);
        assert_eq!(plain_str("42"), None);
        assert_eq!(plain_str("\""), None);
    }

    #[test]
    fn anything_unusual_is_left_to_a_real_parser() {
        for text in [
            "",
            "[]",
            "{",
            r#"{"seq":1,"seq":2}"#, // a wanted key twice
            r#"{"se\u0071":1}"#,    // an escaped key
            r#"{"seq": 1}"#,        // whitespace
            r#"{"a":[}"#,           // unbalanced
            r#"{"a":{"b":"c"}"#,    // truncated
            r#"{"a":1}x"#,          // trailing text
            r#"{"a":"unterminated}"#,
            r#"{"a":}"#,
            r#"{"a":[1}]}"#, // crossed brackets
        ] {
            assert_eq!(scan(text, KEYS), None, "{text}");
        }
    }

    proptest! {
        /// Whenever the fast path answers for valid JSON, a real parser agrees.
        #[test]
        fn agrees_with_serde_json(v in json_value(3)) {
            for text in [serde_json::to_string(&v).unwrap(), serde_json::to_string_pretty(&v).unwrap()] {
                if let Some(fast) = scan(&text, KEYS) {
                    let real = parsed(&text).expect("the fast path answered for a non-object");
                    let fast = fast.map(|f| f.map(|raw| serde_json::from_str::<serde_json::Value>(raw).unwrap()));
                    prop_assert_eq!(fast, real);
                }
            }
        }
    }

    /// Objects whose keys are often the wanted ones, with nested values of every kind.
    fn json_value(depth: u32) -> impl Strategy<Value = serde_json::Value> {
        let key = prop_oneof![
            Just("seq".to_string()),
            Just("eventName".to_string()),
            Just("prevHash".to_string()),
            "[a-z\"\\\\{}\\[\\],:]{0,4}"
        ];
        let leaf = prop_oneof![
            any::<u32>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<bool>().prop_map(serde_json::Value::from),
            "[a-z\"\\\\{}\\[\\],:é]{0,6}".prop_map(serde_json::Value::from),
            Just(serde_json::Value::Null),
        ];
        leaf.prop_recursive(depth, 24, 5, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                prop::collection::vec((key.clone(), inner), 0..5)
                    .prop_map(|kv| serde_json::Value::Object(kv.into_iter().collect())),
            ]
        })
    }
}
