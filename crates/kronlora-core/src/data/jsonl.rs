//! Records from JSONL: one JSON object per line, validated with the file and line number in
//! every error. The same parser reads the JSON array a JS caller passes ("record N" instead).

use serde_json::{Map, Value};

use super::json_text::parse_json;
use super::labels::Label;
use crate::error::{Error, Result};
use crate::limits::MAX_NUM_LABELS;

/// Largest record accepted, in bytes of JSON (a JSONL line) or of text (a record given as a
/// value): 1 MiB is far more text than any model's context holds, and tokenising a much
/// longer text would take gigabytes for nothing.
pub const MAX_RECORD_BYTES: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordTask {
    Classification,
    CausalLm,
    MultipleChoice,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// `{ "text": …, "label": int | string }`
    Classification { text: String, label: Label },
    /// `{ "text": … }`
    Text { text: String },
    /// `{ "prompt": …, "completion": … }` (loss on the completion only)
    PromptCompletion { prompt: String, completion: String },
    /// `{ "messages": [{ "role": …, "content": … }] }`
    Chat { messages: Vec<(String, String)> },
    /// `{ "question": …, "choices": [...], "answer": int }`
    MultipleChoice { question: String, choices: Vec<String>, answer: usize },
}

/// Where a record came from, for errors: `train.jsonl:12` or `record 3`.
fn place(source: &str, index: usize, jsonl: bool) -> String {
    if jsonl {
        format!("{source}:{}", index + 1)
    } else {
        format!("{source} record {index}")
    }
}

fn string(obj: &Map<String, Value>, key: &str, at: &str) -> Result<String> {
    match obj.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(v) => Err(Error::InvalidData(format!("{at}: `{key}` must be a string, got {v}"))),
        None => Err(Error::InvalidData(format!("{at}: `{key}` is missing"))),
    }
}

fn only_keys(obj: &Map<String, Value>, allowed: &[&str], at: &str) -> Result<()> {
    match obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(Error::InvalidData(format!("{at}: unknown field `{k}`; expected {}", allowed.join(", ")))),
        None => Ok(()),
    }
}

/// Bytes of all strings in `value`.
fn text_bytes(value: &Value) -> usize {
    match value {
        Value::String(s) => s.len(),
        Value::Array(items) => items.iter().map(text_bytes).sum(),
        Value::Object(obj) => obj.iter().map(|(k, v)| k.len() + text_bytes(v)).sum(),
        _ => 0,
    }
}

fn too_long(at: &str, bytes: usize) -> Error {
    Error::InvalidData(format!(
        "{at}: the record is {bytes} bytes long; the limit is {MAX_RECORD_BYTES} bytes (1 MiB) per record, far more than a model's context holds: split or shorten it"
    ))
}

fn record(task: RecordTask, value: &Value, at: &str) -> Result<Record> {
    let Value::Object(obj) = value else {
        return Err(Error::InvalidData(format!("{at}: expected a JSON object, got {value}")));
    };
    let bytes = text_bytes(value);
    if bytes > MAX_RECORD_BYTES {
        return Err(too_long(at, bytes));
    }
    match task {
        RecordTask::Classification => {
            only_keys(obj, &["text", "label"], at)?;
            let label = match obj.get("label") {
                Some(Value::Number(n)) => match n.as_u64() {
                    Some(i) if i < MAX_NUM_LABELS as u64 => Label::Index(i as usize),
                    Some(i) => {
                        return Err(Error::InvalidData(format!(
                        "{at}: `label` = {i} is too large; integer labels are 0..{} (at most {MAX_NUM_LABELS} classes)",
                        MAX_NUM_LABELS - 1
                    )))
                    }
                    None => {
                        return Err(Error::InvalidData(format!(
                            "{at}: `label` must be a non-negative integer or a string, got {n}"
                        )))
                    }
                },
                Some(Value::String(s)) => Label::Name(s.clone()),
                Some(v) => {
                    return Err(Error::InvalidData(format!(
                        "{at}: `label` must be a non-negative integer or a string, got {v}"
                    )))
                }
                None => return Err(Error::InvalidData(format!("{at}: `label` is missing"))),
            };
            Ok(Record::Classification { text: string(obj, "text", at)?, label })
        }
        RecordTask::CausalLm => {
            if obj.contains_key("messages") {
                only_keys(obj, &["messages"], at)?;
                let Some(Value::Array(list)) = obj.get("messages") else {
                    return Err(Error::InvalidData(format!(
                        "{at}: `messages` must be an array of {{ role, content }}"
                    )));
                };
                if list.is_empty() {
                    return Err(Error::InvalidData(format!("{at}: `messages` is empty")));
                }
                let messages = list
                    .iter()
                    .enumerate()
                    .map(|(i, m)| match m {
                        Value::Object(o) => Ok((
                            string(o, "role", &format!("{at} message {i}"))?,
                            string(o, "content", &format!("{at} message {i}"))?,
                        )),
                        v => Err(Error::InvalidData(format!(
                            "{at}: message {i} must be an object {{ role, content }}, got {v}"
                        ))),
                    })
                    .collect::<Result<_>>()?;
                Ok(Record::Chat { messages })
            } else if obj.contains_key("prompt") || obj.contains_key("completion") {
                only_keys(obj, &["prompt", "completion"], at)?;
                Ok(Record::PromptCompletion {
                    prompt: string(obj, "prompt", at)?,
                    completion: string(obj, "completion", at)?,
                })
            } else {
                only_keys(obj, &["text"], at)?;
                Ok(Record::Text { text: string(obj, "text", at)? })
            }
        }
        RecordTask::MultipleChoice => {
            only_keys(obj, &["question", "choices", "answer"], at)?;
            let choices: Vec<String> = match obj.get("choices") {
                Some(Value::Array(list)) if list.len() >= 2 => list
                    .iter()
                    .map(|c| {
                        c.as_str()
                            .map(str::to_string)
                            .ok_or_else(|| Error::InvalidData(format!("{at}: every choice must be a string, got {c}")))
                    })
                    .collect::<Result<_>>()?,
                Some(v) => {
                    return Err(Error::InvalidData(format!(
                        "{at}: `choices` must be an array of at least two strings, got {v}"
                    )))
                }
                None => return Err(Error::InvalidData(format!("{at}: `choices` is missing"))),
            };
            let answer = match obj.get("answer").and_then(Value::as_u64) {
                Some(a) if (a as usize) < choices.len() => a as usize,
                Some(a) => {
                    return Err(Error::InvalidData(format!(
                        "{at}: `answer` = {a} is out of range for {} choices",
                        choices.len()
                    )))
                }
                None => {
                    return Err(Error::InvalidData(format!("{at}: `answer` must be the index of the correct choice")))
                }
            };
            Ok(Record::MultipleChoice { question: string(obj, "question", at)?, choices, answer })
        }
    }
}

/// Parse JSONL text (`jsonl = true`: one object per line, blank lines skipped) or a JSON array
/// of records; `source` names the file (or "data") in errors. An empty dataset is an error.
pub fn parse_records(task: RecordTask, text: &str, source: &str, jsonl: bool) -> Result<Vec<Record>> {
    Ok(parse_placed_records(task, text, source, jsonl)?.into_iter().map(|(r, _)| r).collect())
}

/// `parse_records`, each record with where it came from (`train.jsonl:12`, `data record 3`),
/// so that later errors (tokenisation, unknown labels) can name the line too.
pub fn parse_placed_records(task: RecordTask, text: &str, source: &str, jsonl: bool) -> Result<Vec<(Record, String)>> {
    // A byte-order mark, as some Windows editors write, is not part of the first record.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    if jsonl {
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let at = place(source, i, true);
            // Checked before parsing: a parsed value takes several times the line's size.
            if line.len() > MAX_RECORD_BYTES {
                return Err(too_long(&at, line.len()));
            }
            let value = parse_json(line).map_err(|e| Error::InvalidData(format!("{at}: invalid JSON: {e}")))?;
            out.push((record(task, &value, &at)?, at));
        }
    } else {
        let value = parse_json(text).map_err(|e| Error::InvalidData(format!("{source}: invalid JSON: {e}")))?;
        return placed_records_from_json(task, &value, source);
    }
    if out.is_empty() {
        return Err(Error::InvalidData(format!("{source}: the dataset is empty; it needs at least one record")));
    }
    Ok(out)
}

/// Records from an already-parsed JSON array (what a JS caller passes), placed as `record N`.
pub fn placed_records_from_json(task: RecordTask, value: &Value, source: &str) -> Result<Vec<(Record, String)>> {
    let Value::Array(items) = value else {
        return Err(Error::InvalidData(format!("{source}: expected an array of records")));
    };
    let out = items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let at = place(source, i, false);
            Ok((record(task, item, &at)?, at))
        })
        .collect::<Result<Vec<_>>>()?;
    if out.is_empty() {
        return Err(Error::InvalidData(format!("{source}: the dataset is empty; it needs at least one record")));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_record_kind() {
        let text = "{\"text\":\"good\",\"label\":1}\n\n{\"text\":\"bad\",\"label\":\"neg\"}\n";
        let r = parse_records(RecordTask::Classification, text, "train.jsonl", true).unwrap();
        assert_eq!(r[1], Record::Classification { text: "bad".into(), label: Label::Name("neg".into()) });
        let lm = r#"[{"text":"a"},{"prompt":"p","completion":"c"},{"messages":[{"role":"user","content":"hi"}]}]"#;
        let r = parse_records(RecordTask::CausalLm, lm, "data", false).unwrap();
        assert!(
            matches!(r[0], Record::Text { .. })
                && matches!(r[1], Record::PromptCompletion { .. })
                && matches!(r[2], Record::Chat { .. })
        );
        let mc = r#"{"question":"q","choices":["a","b","c"],"answer":2}"#;
        assert_eq!(
            parse_records(RecordTask::MultipleChoice, mc, "mc.jsonl", true).unwrap()[0],
            Record::MultipleChoice {
                question: "q".into(),
                choices: vec!["a".into(), "b".into(), "c".into()],
                answer: 2
            }
        );
    }

    #[test]
    fn errors_name_the_file_and_line() {
        let cases = [
            (
                RecordTask::Classification,
                "{\"text\":\"a\",\"label\":0}\n{\"text\":\"b\"",
                "train.jsonl:2: invalid JSON",
            ),
            (RecordTask::Classification, "{\"text\":\"a\"}", "train.jsonl:1: `label` is missing"),
            (RecordTask::Classification, "{\"text\":3,\"label\":0}", "train.jsonl:1: `text` must be a string, got 3"),
            (
                RecordTask::Classification,
                "{\"text\":\"a\",\"label\":-1}",
                "`label` must be a non-negative integer or a string, got -1",
            ),
            (
                RecordTask::Classification,
                "{\"txt\":\"a\",\"label\":0}",
                "train.jsonl:1: unknown field `txt`; expected text, label",
            ),
            (RecordTask::CausalLm, "{\"prompt\":\"a\"}", "train.jsonl:1: `completion` is missing"),
            (
                RecordTask::MultipleChoice,
                "{\"question\":\"q\",\"choices\":[\"a\",\"b\"],\"answer\":2}",
                "`answer` = 2 is out of range for 2 choices",
            ),
            (RecordTask::Classification, "\n  \n", "train.jsonl: the dataset is empty"),
            (RecordTask::Classification, "[1]", "train.jsonl:1: expected a JSON object, got [1]"),
        ];
        for (task, text, want) in cases {
            let err = parse_records(task, text, "train.jsonl", true).unwrap_err();
            assert_eq!(err.code(), "ERR_INVALID_DATA");
            assert!(err.to_string().contains(want), "{text:?}: {err}");
        }
        let err = parse_records(RecordTask::Classification, r#"[{"text":"a","label":0},{"text":"b"}]"#, "data", false)
            .unwrap_err();
        assert!(err.to_string().contains("data record 1: `label` is missing"), "{err}");
    }
}
