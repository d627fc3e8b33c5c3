//! JSON text as users' files hold it, read more strictly and more leniently than serde_json's
//! defaults where those would mislead: a key twice in one object is refused (serde_json keeps
//! the last copy silently, other parsers the first); a lone UTF-16 surrogate escape such as
//! `\ud800`, valid JSON text that no Rust string can hold, becomes U+FFFD (as JavaScript's
//! `TextDecoder` and Python's `errors="replace"` do) instead of failing the whole file; and
//! `NaN` / `Infinity`, which JSON does not have, are named in the error.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// The value of four hex digits at the start of `bytes`.
fn hex4(bytes: &[u8]) -> Option<u32> {
    let digits = std::str::from_utf8(bytes.get(..4)?).ok()?;
    u32::from_str_radix(digits, 16).ok()
}

/// `text` with every `\uXXXX` escape of an unpaired surrogate replaced by `\ufffd`; paired
/// surrogates and all other text are kept as they are (no copy when there is nothing to do).
pub fn replace_lone_surrogates(text: &str) -> Cow<'_, str> {
    let bytes = text.as_bytes();
    let is_low = |at: usize| {
        bytes.get(at..at + 2) == Some(b"\\u") && hex4(&bytes[at + 2..]).is_some_and(|c| (0xDC00..=0xDFFF).contains(&c))
    };
    let mut lone = Vec::new();
    let mut i = 0;
    // `get`: an escape at the very end (a truncated line) moves `i` past the end.
    while let Some(offset) = bytes.get(i..).and_then(|rest| rest.iter().position(|&b| b == b'\\')) {
        let at = i + offset;
        if bytes.get(at + 1) != Some(&b'u') {
            // Any other escape is two bytes (`\\`, `\"`, `\n`, …): skipping both keeps an
            // escaped backslash from starting a false `\u`.
            i = at + 2;
            continue;
        }
        match bytes.get(at + 2..).and_then(hex4) {
            Some(0xD800..=0xDBFF) if is_low(at + 6) => i = at + 12,
            Some(0xD800..=0xDFFF) => {
                lone.push(at);
                i = at + 6;
            }
            _ => i = at + 2,
        }
    }
    if lone.is_empty() {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut from = 0;
    for at in lone {
        out.push_str(&text[from..at]);
        out.push_str("\\ufffd");
        from = at + 6;
    }
    out.push_str(&text[from..]);
    Cow::Owned(out)
}

/// A JSON value whose objects hold each key once.
struct UniqueKeys(Value);

impl<'de> Deserialize<'de> for UniqueKeys {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(UniqueKeysVisitor).map(UniqueKeys)
    }
}

struct UniqueKeysVisitor;

impl<'de> Visitor<'de> for UniqueKeysVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(UniqueKeys(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(de::Error::custom(format!("{DUPLICATE}`{key}`")));
            }
            let UniqueKeys(v) = map.next_value()?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

const DUPLICATE: &str = "duplicate key ";

/// JSON's missing numbers, as other languages write them.
const NOT_JSON_NUMBERS: [&str; 5] = ["-Infinity", "+Infinity", "-NaN", "Infinity", "NaN"];

/// Parse `text` as above; the error is one line saying what is wrong and where in `text`.
pub fn parse_json(text: &str) -> Result<Value, String> {
    let text = replace_lone_surrogates(text.strip_prefix('\u{feff}').unwrap_or(text));
    let mut deserializer = serde_json::Deserializer::from_str(&text);
    let parsed = UniqueKeys::deserialize(&mut deserializer).and_then(|v| deserializer.end().map(|_| v.0));
    parsed.map_err(|e| {
        let message = e.to_string();
        if let Some(rest) = message.strip_prefix(DUPLICATE) {
            return format!("{DUPLICATE}{rest}: an object may hold each key once (parsers disagree on which copy counts)");
        }
        // serde_json's column is a 1-based byte offset into the failing line, at or just
        // after the token it could not read.
        let line = text.lines().nth(e.line().saturating_sub(1)).unwrap_or("");
        let found = (e.column().saturating_sub(2)..=e.column())
            .find_map(|start| NOT_JSON_NUMBERS.iter().find(|n| line.get(start..).is_some_and(|rest| rest.starts_with(*n))).map(|n| (start, n)));
        match found {
            Some((start, n)) => format!(
                "`{n}` at line {} column {} is not a JSON value (JSON numbers are finite); labels must be integers or strings",
                e.line(),
                start + 1
            ),
            None => message,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_escape_cut_off_at_the_end_is_an_error_not_a_panic() {
        for text in ["\\", "{\"text\":\"C:\\", "\"\\u", "\"\\ud8", "\"\\ud800\\"] {
            let _ = replace_lone_surrogates(text); // panicked on "\\" before
            assert!(parse_json(text).is_err(), "{text}");
        }
    }

    #[test]
    fn lone_surrogates_become_replacement_characters_and_pairs_stay() {
        assert_eq!(parse_json(r#"{"t":"a\ud800b"}"#).unwrap()["t"], "a\u{fffd}b");
        assert_eq!(parse_json(r#"{"t":"\udc00\ud83d"}"#).unwrap()["t"], "\u{fffd}\u{fffd}");
        assert_eq!(parse_json(r#"{"t":"\ud83d\ude00 ok"}"#).unwrap()["t"], "😀 ok");
        // An escaped backslash followed by `ud800` is text, not an escape.
        assert_eq!(parse_json(r#"{"t":"\\ud800"}"#).unwrap()["t"], "\\ud800");
        assert!(matches!(replace_lone_surrogates(r#"{"t":"plain \n"}"#), Cow::Borrowed(_)));
    }

    #[test]
    fn duplicate_keys_bom_and_non_json_numbers() {
        let err = parse_json(r#"{"text":"a","label":0,"label":1}"#).unwrap_err();
        assert!(err.starts_with("duplicate key `label` at line 1 column"), "{err}");
        let err = parse_json(r#"[{"a":{"b":1,"b":2}}]"#).unwrap_err();
        assert!(err.starts_with("duplicate key `b`"), "{err}");
        assert_eq!(parse_json("\u{feff}{\"a\":1}").unwrap()["a"], 1);
        for bad in ["NaN", "Infinity", "-Infinity"] {
            let err = parse_json(&format!(r#"{{"text":"a","label":{bad}}}"#)).unwrap_err();
            assert!(err.starts_with(&format!("`{bad}` at line 1 column 21 is not a JSON value")), "{err}");
            assert!(err.ends_with("labels must be integers or strings"), "{err}");
        }
        assert!(parse_json(r#"{"a":1} x"#).unwrap_err().contains("trailing characters"));
    }
}
