//! Dataset records for every task (classification, causal LM as text / prompt-completion /
//! chat, multiple choice), as a JSONL file, a `.json` array file, or records passed in memory,
//! mutated, through `evaluate_model` (read, parse, label, tokenise, template, score) on the
//! tiny BERT classifier or the tiny GGUF Llama; classification files through
//! `label_summary_json` too.

use crate::json_api::evaluate_model;
use proptest::prelude::*;
use proptest::sample::Index;

use kronlora_core::train::label_summary_json;

use super::memory_storage::MemoryStorage;
use super::mutate::{apply_bytes, apply_json, byte_mutation, json_mutation, ByteMutation, JsonMutation};
use super::tiny_files::{bert_classifier, gguf_llama};
use super::{fuzz, CaseResult, Property};

/// (evaluation options, valid records) per task.
const TASKS: [(&str, &[&str]); 3] = [
    (
        r#"{"task":"classification"}"#,
        &[r#"{"text":"w4 w5 w6","label":0}"#, r#"{"text":"w9 w10","label":1}"#, r#"{"text":"w7","label":1}"#],
    ),
    (
        r#"{"task":"causal-lm","batchSize":2}"#,
        &[
            r#"{"text":"a the"}"#,
            r#"{"prompt":"the","completion":" a"}"#,
            r#"{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"the"}]}"#,
        ],
    ),
    (
        r#"{"task":"multiple-choice"}"#,
        &[
            r#"{"question":"the","choices":[" a"," the"],"answer":1}"#,
            r#"{"question":"a","choices":["x","y","z"],"answer":0}"#,
        ],
    ),
];

#[derive(Debug, Clone)]
pub enum RecordsMutation {
    /// A JSON mutation of one record.
    Record(Index, JsonMutation),
    /// The file's bytes (after the record mutations).
    Text(ByteMutation),
    /// A UTF-8 byte order mark before the first record.
    Bom,
}

#[derive(Debug, Clone)]
pub struct RecordsCase {
    task: usize,
    /// 0: a `.jsonl` file, 1: a `.json` file holding an array, 2: records given in memory.
    form: usize,
    mutations: Vec<RecordsMutation>,
}

fn records_case(case: &RecordsCase) -> CaseResult {
    let (options, valid) = TASKS[case.task];
    let mut records: Vec<Vec<u8>> = valid.iter().map(|r| r.as_bytes().to_vec()).collect();
    for m in &case.mutations {
        if let RecordsMutation::Record(i, j) = m {
            let r = &mut records[i.index(valid.len())];
            *r = apply_json(r, j);
        }
    }
    let mut text = if case.form == 0 {
        records.join(&b'\n')
    } else {
        [b"[".to_vec(), records.join(&b','), b"]".to_vec()].concat()
    };
    for m in &case.mutations {
        match m {
            RecordsMutation::Text(b) => apply_bytes(&mut text, b),
            RecordsMutation::Bom => text.splice(0..0, [0xef, 0xbb, 0xbf]).for_each(drop),
            RecordsMutation::Record(..) => {}
        }
    }
    let name = if case.form == 0 { "data.jsonl" } else { "data.json" };
    if case.task == 0 {
        if let Ok(text) = std::str::from_utf8(&text) {
            // A summary of the labels is what the CLI reads before loading the model.
            match label_summary_json(text, name) {
                Err(e) if e.code() == "ERR_INTERNAL" => {
                    return Ok(vec![(Property::NoInternal, format!("label_summary_json: {}", e.to_js_message()))])
                }
                _ => {}
            }
        }
    }
    let data_json = match case.form {
        2 => match String::from_utf8(text.clone()) {
            Ok(s) => s,
            Err(_) => return Ok(Vec::new()), // JavaScript cannot pass invalid UTF-8 in a string.
        },
        _ => serde_json::to_string(name).unwrap(),
    };
    let storage = MemoryStorage::new([(name.to_string(), text)].into());
    let metrics = if case.task == 0 {
        evaluate_model(&bert_classifier(), &data_json, options, &storage)?
    } else {
        evaluate_model(&gguf_llama(), &data_json, options, &storage)?
    };
    let mut problems = Vec::new();
    for (what, v) in [("loss", Some(metrics.loss)), ("accuracy", metrics.accuracy), ("perplexity", metrics.perplexity)]
    {
        if v.is_some_and(|v| !v.is_finite()) {
            problems.push((Property::Finite, format!("{what} = {v:?}")));
        }
    }
    Ok(problems)
}

#[test]
fn records() {
    let mutation = prop_oneof![
        6 => (any::<Index>(), json_mutation()).prop_map(|(i, j)| RecordsMutation::Record(i, j)),
        2 => byte_mutation().prop_map(RecordsMutation::Text),
        1 => Just(RecordsMutation::Bom),
    ];
    let strategy = (0..TASKS.len(), 0..3usize, proptest::collection::vec(mutation, 1..4))
        .prop_map(|(task, form, mutations)| RecordsCase { task, form, mutations });
    fuzz("records", file!(), 1024, strategy, records_case);
}
