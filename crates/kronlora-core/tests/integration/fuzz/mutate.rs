//! Mutations of valid files, as proptest strategies: bytes (truncate, flip, overwrite with an
//! extreme integer), JSON (replace a value with a hostile one, drop it, duplicate a key, or
//! corrupt the text) and safetensors headers (a JSON mutation of the header, lengths fixed up
//! so that the file still parses as far as the header).

use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::Value;

/// Integers that break size arithmetic: 0, 1, the 31/32/63/64-bit edges.
pub const EXTREME_INTEGERS: [u64; 10] =
    [0, 1, 2, 0x7fff_ffff, 0x8000_0000, 0xffff_ffff, 1 << 32, 1 << 53, 1 << 63, u64::MAX];

pub fn extreme_integer() -> impl Strategy<Value = u64> {
    prop_oneof![4 => proptest::sample::select(EXTREME_INTEGERS.to_vec()), 1 => any::<u64>(), 1 => 0u64..1024]
}

#[derive(Debug, Clone)]
pub enum ByteMutation {
    /// Keep only the first bytes (the index picks where to cut).
    Truncate(Index),
    /// XOR one byte.
    Flip(Index, u8),
    /// Write an integer (little-endian, 4 or 8 bytes wide) over the bytes at the index.
    Overwrite { at: Index, wide: bool, value: u64 },
}

pub fn byte_mutation() -> impl Strategy<Value = ByteMutation> {
    prop_oneof![
        any::<Index>().prop_map(ByteMutation::Truncate),
        (any::<Index>(), 1u8..=255).prop_map(|(i, x)| ByteMutation::Flip(i, x)),
        (any::<Index>(), any::<bool>(), extreme_integer()).prop_map(|(at, wide, value)| ByteMutation::Overwrite {
            at,
            wide,
            value
        }),
    ]
}

pub fn apply_bytes(bytes: &mut Vec<u8>, m: &ByteMutation) {
    if bytes.is_empty() {
        return;
    }
    match m {
        ByteMutation::Truncate(i) => bytes.truncate(i.index(bytes.len())),
        ByteMutation::Flip(i, x) => {
            let at = i.index(bytes.len());
            bytes[at] ^= x;
        }
        ByteMutation::Overwrite { at, wide, value } => {
            let width = if *wide { 8 } else { 4 };
            let at = at.index(bytes.len());
            let le = value.to_le_bytes();
            for (k, b) in bytes[at..].iter_mut().take(width).enumerate() {
                *b = le[k];
            }
        }
    }
}

/// JSON text that replaces a value: numbers at and past every edge, non-numbers where numbers
/// belong, invalid literals, and other types.
pub fn hostile_json_value() -> impl Strategy<Value = String> {
    let fixed: Vec<&'static str> = vec![
        "0",
        "-1",
        "1",
        "2",
        "-0",
        "0.5",
        "1e-300",
        "2147483648",
        "4294967296",
        "9007199254740993",
        "9223372036854775808",
        "18446744073709551615",
        "18446744073709551616",
        "-9223372036854775809",
        "1e30",
        "-1e30",
        "1e308",
        "1e999",
        "-1e999",
        "NaN",
        "Infinity",
        "-Infinity",
        "null",
        "true",
        "false",
        "\"\"",
        "\"x\"",
        "\"I32\"",
        "\"F16\"",
        "\"BF16\"",
        "\"F64\"",
        "\"U8\"",
        "\"BOOL\"",
        "\"llama\"",
        "\"bert\"",
        "\"\\ud800\"",
        "[]",
        "[0]",
        "{}",
        "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[0]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
    ];
    prop_oneof![
        6 => proptest::sample::select(fixed).prop_map(|s| s.to_string()),
        1 => any::<i64>().prop_map(|v| v.to_string()),
        1 => any::<f64>().prop_filter("finite", |v| v.is_finite()).prop_map(|v| v.to_string()),
        1 => "[a-z_ -]{0,12}".prop_map(|s| format!("{s:?}")),
        1 => (1usize..2000).prop_map(|n| format!("\"{}\"", "y".repeat(n))),
    ]
}

#[derive(Debug, Clone)]
pub enum JsonMutation {
    /// Replace the value at the index-th path (depth first) with raw JSON text.
    Replace(Index, String),
    /// Remove the index-th path (an object field or an array element).
    Remove(Index),
    /// Repeat a top-level key with another value (serde keeps the last, JS the last too).
    Duplicate(Index, String),
    /// Corrupt the text itself.
    Text(ByteMutation),
}

pub fn json_mutation() -> impl Strategy<Value = JsonMutation> {
    prop_oneof![
        5 => (any::<Index>(), hostile_json_value()).prop_map(|(i, v)| JsonMutation::Replace(i, v)),
        2 => any::<Index>().prop_map(JsonMutation::Remove),
        1 => (any::<Index>(), hostile_json_value()).prop_map(|(i, v)| JsonMutation::Duplicate(i, v)),
        2 => byte_mutation().prop_map(JsonMutation::Text),
    ]
}

#[derive(Debug, Clone)]
enum Step {
    Key(String),
    At(usize),
}

fn paths(value: &Value, prefix: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                prefix.push(Step::Key(k.clone()));
                out.push(prefix.clone());
                paths(v, prefix, out);
                prefix.pop();
            }
        }
        Value::Array(list) => {
            // Long arrays (token lists) would drown the rest: their first elements only.
            for (i, v) in list.iter().enumerate().take(4) {
                prefix.push(Step::At(i));
                out.push(prefix.clone());
                paths(v, prefix, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

fn at_mut<'a>(value: &'a mut Value, path: &[Step]) -> Option<&'a mut Value> {
    path.iter().try_fold(value, |v, step| match step {
        Step::Key(k) => v.get_mut(k.as_str()),
        Step::At(i) => v.get_mut(*i),
    })
}

/// A marker no valid file contains, replaced by raw JSON text after serialising.
const MARK: &str = "\u{1}kronlora-fuzz-mark\u{1}";

/// `text` (valid JSON) with `m` applied. Invalid JSON text gets only text mutations.
pub fn apply_json(text: &[u8], m: &JsonMutation) -> Vec<u8> {
    let Ok(mut value) = serde_json::from_slice::<Value>(text) else {
        let mut bytes = text.to_vec();
        if let JsonMutation::Text(b) = m {
            apply_bytes(&mut bytes, b);
        }
        return bytes;
    };
    let mut all = Vec::new();
    paths(&value, &mut Vec::new(), &mut all);
    let marked = |value: &Value, raw: &str| {
        let text = serde_json::to_string(value).expect("serialisable");
        text.replacen(&serde_json::to_string(MARK).expect("a string"), raw, 1).into_bytes()
    };
    match m {
        JsonMutation::Text(b) => {
            let mut bytes = text.to_vec();
            apply_bytes(&mut bytes, b);
            bytes
        }
        _ if all.is_empty() => text.to_vec(),
        JsonMutation::Replace(i, raw) => {
            let path = &all[i.index(all.len())];
            if let Some(slot) = at_mut(&mut value, path) {
                *slot = Value::String(MARK.into());
            }
            marked(&value, raw)
        }
        JsonMutation::Remove(i) => {
            let path = &all[i.index(all.len())];
            let (last, parent) = path.split_last().expect("non-empty");
            match (at_mut(&mut value, parent), last) {
                (Some(Value::Object(map)), Step::Key(k)) => {
                    map.remove(k);
                }
                (Some(Value::Array(list)), Step::At(i)) => {
                    list.remove(*i);
                }
                _ => {}
            }
            serde_json::to_vec(&value).expect("serialisable")
        }
        JsonMutation::Duplicate(i, raw) => {
            let Value::Object(map) = &value else { return text.to_vec() };
            let keys: Vec<&String> = map.keys().collect();
            if keys.is_empty() {
                return text.to_vec();
            }
            let key = serde_json::to_string(keys[i.index(keys.len())]).expect("a string");
            let body = serde_json::to_string(&value).expect("serialisable");
            format!("{{{key}:{raw},{}", &body[1..]).into_bytes()
        }
    }
}

/// A safetensors file with its header (the JSON after the 8-byte length) mutated; the length
/// is rewritten to fit, so the mutation reaches the header's fields, not only its framing.
pub fn apply_safetensors_header(bytes: &[u8], m: &JsonMutation) -> Vec<u8> {
    let Some(len) = bytes.get(..8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize) else {
        return bytes.to_vec();
    };
    let Some(header) = bytes.get(8..8 + len) else { return bytes.to_vec() };
    let new_header = apply_json(header, m);
    let mut out = (new_header.len() as u64).to_le_bytes().to_vec();
    out.extend(new_header);
    out.extend(&bytes[8 + len..]);
    out
}

#[derive(Debug, Clone)]
pub enum SafetensorsMutation {
    Bytes(ByteMutation),
    Header(JsonMutation),
}

pub fn safetensors_mutation() -> impl Strategy<Value = SafetensorsMutation> {
    prop_oneof![1 => byte_mutation().prop_map(SafetensorsMutation::Bytes), 2 => json_mutation().prop_map(SafetensorsMutation::Header)]
}

pub fn apply_safetensors(bytes: &mut Vec<u8>, m: &SafetensorsMutation) {
    match m {
        SafetensorsMutation::Bytes(b) => apply_bytes(bytes, b),
        SafetensorsMutation::Header(j) => *bytes = apply_safetensors_header(bytes, j),
    }
}
