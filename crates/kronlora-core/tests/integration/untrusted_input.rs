//! Untrusted model files and data: a hostile chat template (endless loops, gigabytes of
//! output, unbounded recursion) ends in `ERR_INVALID_MODEL` naming the template, within a time
//! limit, and the model stays usable; cancellation reaches data encoding; options that would
//! allocate gigabytes (numLabels, rank) and over-long records are refused with the limit; and
//! data files get precise messages (BOM, NaN, duplicate keys, label locations, lone surrogates).

use crate::json_api::{evaluate_model, train};
use kronlora_core::api;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use candle_core::quantized::gguf_file;
use kronlora_core::data::{parse_records, Label, Record, RecordTask};
use kronlora_core::io::{FsStorage, ModelSource};
use kronlora_core::pretrained::PretrainedModel;
use kronlora_core::train::{StopReason, TrainEvent, TrainObserver};
use kronlora_core::Error;
use serde_json::json;

use crate::tiny::llama::{temp_dir, tensors, write_gguf, CHAT_TEMPLATE};
use crate::training::model_dir;

const LORA: &str = r#"{"type":"lora","rank":4,"alpha":8,"targetModules":"all-linear"}"#;
/// No render of any template may take longer than this (a hang guard, not a speed test).
const HANG_LIMIT: Duration = Duration::from_secs(20);

struct Quiet;
impl TrainObserver for Quiet {
    fn event(&mut self, _: &TrainEvent) {}
}

/// The tiny Llama GGUF with `template` as its `tokenizer.chat_template`.
fn gguf_with_template(name: &str, template: &str) -> PathBuf {
    let dir = temp_dir(name);
    let plain = dir.join("plain.gguf");
    write_gguf(&plain, &tensors(5, true));
    let mut reader = std::fs::File::open(&plain).unwrap();
    let content = gguf_file::Content::read(&mut reader).unwrap();
    let mut metadata = content.metadata.clone();
    metadata.insert("tokenizer.chat_template".into(), gguf_file::Value::String(template.into()));
    let qtensors: Vec<(String, candle_core::quantized::QTensor)> = content
        .tensor_infos
        .keys()
        .map(|n| (n.clone(), content.tensor(&mut reader, n, &candle_core::Device::Cpu).unwrap()))
        .collect();
    let path = dir.join("templated.gguf");
    let meta: Vec<(&str, &gguf_file::Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensor_refs: Vec<(&str, &candle_core::quantized::QTensor)> =
        qtensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    gguf_file::write(&mut std::fs::File::create(&path).unwrap(), &meta, &tensor_refs).unwrap();
    path
}

fn load(path: &Path) -> PretrainedModel {
    let mut m = api::load_model(ModelSource::Path(path.to_path_buf()), "{}").unwrap();
    api::add_adapter(&mut m, "default", LORA).unwrap();
    m
}

fn chat_data(n: usize) -> serde_json::Value {
    let record =
        json!({ "messages": [{ "role": "user", "content": "a the" }, { "role": "assistant", "content": "the b" }] });
    serde_json::Value::Array(vec![record; n])
}

/// Train `model` on chat records in a thread, failing the test if it takes past `HANG_LIMIT`;
/// the model comes back for further use.
fn train_guarded(
    mut model: PretrainedModel,
    options: serde_json::Value,
) -> (kronlora_core::Result<kronlora_core::train::TrainResult>, PretrainedModel) {
    let (send, receive) = mpsc::channel();
    std::thread::spawn(move || {
        let result = train(&mut model, &options.to_string(), &FsStorage, &mut Quiet);
        let _ = send.send((result, model));
    });
    receive.recv_timeout(HANG_LIMIT).expect("training did not end within the hang limit")
}

#[test]
fn hostile_chat_templates_end_in_invalid_model_and_leave_the_model_usable() {
    let cases = [
        (
            "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}",
            "instructions for one conversation",
        ),
        (
            "{% for i in range(10000) %}{% for j in range(10000) %}x{% endfor %}{% endfor %}",
            "instructions for one conversation",
        ),
        ("{% for i in range(10000) %}{{ 'y' * 100000 }}{% endfor %}", "more than 16 MiB for one conversation"),
        (
            "{% set s %}{% for i in range(10000) %}{{ 'y' * 100000 }}{% endfor %}{% endset %}{{ s | length }}",
            "more than 16 MiB",
        ),
        ("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "nests calls deeper than"),
    ];
    for (template, limit) in cases {
        let path = gguf_with_template("hostile", template);
        let (result, mut model) = train_guarded(load(&path), json!({ "data": chat_data(3), "epochs": 1 }));
        let err = result.err().unwrap();
        assert_eq!(err.code(), "ERR_INVALID_MODEL", "{template}: {err}");
        let message = err.to_string();
        assert!(message.starts_with("training data record 0: the chat template ("), "{message}");
        assert!(message.contains("templated.gguf: tokenizer.chat_template)"), "{message}");
        assert!(message.contains(limit), "{template}: {message}");
        assert_eq!(err.to_js_message().lines().count(), 1);
        // The same model still trains on data that does not need its template.
        let plain = json!([{ "prompt": "a", "completion": " the b" }]);
        let result =
            train(&mut model, &json!({ "data": plain, "epochs": 1 }).to_string(), &FsStorage, &mut Quiet).unwrap();
        assert_eq!(result.reason, StopReason::Completed);
    }
}

#[test]
fn a_template_that_raises_blames_the_data_and_real_templates_render_as_before() {
    let raising = "{% for m in messages %}{% if m.role == 'user' and loop.index0 % 2 == 1 %}{{ raise_exception('Conversation roles must alternate') }}{% endif %}{{ m.content }}{% endfor %}";
    let model = load(&gguf_with_template("raise", raising));
    let data = json!([{ "messages": [{ "role": "assistant", "content": "a" }, { "role": "user", "content": "b" }] }]);
    let (result, _) = train_guarded(model, json!({ "data": data, "epochs": 1 }));
    let err = result.unwrap_err();
    assert_eq!(err.code(), "ERR_INVALID_DATA", "{err}");
    assert!(err.to_string().ends_with("refuses this conversation: Conversation roles must alternate"), "{err}");

    // The tiny model's own template, written with the same limits in force, renders as the
    // template text says (the parity suite checks SmolLM2's against transformers).
    let model = load(&gguf_with_template("real", CHAT_TEMPLATE));
    let messages = vec![("user".to_string(), "hi".to_string()), ("assistant".to_string(), "yo".to_string())];
    assert_eq!(model.tokenizer.render_chat(&messages, false, "x").unwrap(), "<user>hi\n<assistant>yo\n");
    assert_eq!(model.tokenizer.render_chat(&messages[..1], true, "x").unwrap(), "<user>hi\n<assistant>");
}

/// Says stop once it has been asked `after` times, and counts the questions.
struct StopAfter {
    after: usize,
    asked: usize,
    steps: usize,
}

impl TrainObserver for StopAfter {
    fn event(&mut self, event: &TrainEvent) {
        if matches!(event, TrainEvent::Step { .. }) {
            self.steps += 1;
        }
    }
    fn should_stop(&mut self) -> bool {
        self.asked += 1;
        self.asked > self.after
    }
}

#[test]
fn cancellation_is_checked_between_records_while_encoding() {
    let dir = temp_dir("cancel-encode");
    let gguf = dir.join("tiny.gguf");
    write_gguf(&gguf, &tensors(5, true));
    let mut model = load(&gguf);
    let mut observer = StopAfter { after: 5, asked: 0, steps: 0 };
    let result =
        train(&mut model, &json!({ "data": chat_data(50), "epochs": 1 }).to_string(), &FsStorage, &mut observer)
            .unwrap();
    assert_eq!((result.reason, result.step, observer.steps), (StopReason::Cancelled, 0, 0));
    assert_eq!(observer.asked, 6, "asked before each record until it said stop");
    assert!(result.adapter_dir.is_none() && result.checkpoint.is_none());
}

#[test]
fn options_that_would_allocate_gigabytes_are_refused_with_the_limit() {
    let bert = model_dir("untrusted-labels");
    let err =
        api::load_model(ModelSource::Path(bert.clone()), r#"{"task":"sequence-classification","numLabels":16777216}"#)
            .err()
            .unwrap();
    assert_eq!(err.code(), "ERR_INVALID_OPTION");
    assert!(err.to_string().contains("`numLabels` = 16777216 is larger than the supported maximum of 65536"), "{err}");
    assert!(api::load_model(ModelSource::Path(bert), r#"{"task":"sequence-classification","numLabels":65536}"#).is_ok());

    let dir = temp_dir("untrusted-rank");
    let gguf = dir.join("tiny.gguf");
    write_gguf(&gguf, &tensors(5, true));
    let mut model = api::load_model(ModelSource::Path(gguf), "{}").unwrap();
    let err =
        api::add_adapter(&mut model, "big", r#"{"type":"lora","rank":65536,"alpha":8,"targetModules":"all-linear"}"#)
            .unwrap_err();
    assert_eq!(err.code(), "ERR_INVALID_OPTION");
    assert!(
        err.to_string().contains("`rank` = 65536 is too large for layer `model.layers.0.self_attn.q_proj`"),
        "{err}"
    );
    assert!(err.to_string().contains("use rank ≤ 32"), "{err}");
    // Kron-LoRA is held to the layer's size too: k_proj is 16×32.
    let err = api::add_adapter(
        &mut model,
        "big",
        r#"{"type":"kron-lora","rank":17,"alpha":8,"kronIn":2,"kronOut":4,"targetModules":["k_proj"]}"#,
    )
    .unwrap_err();
    assert_eq!(err.code(), "ERR_INVALID_OPTION");
    assert!(
        err.to_string().contains(
            "layer `model.layers.0.self_attn.k_proj`: an update of this 16×32 layer has rank at most 16; use rank ≤ 16"
        ),
        "{err}"
    );
    assert!(model.adapter_infos().is_empty(), "a refused adapter leaves the model unchanged");
    api::add_adapter(
        &mut model,
        "fits",
        r#"{"type":"kron-lora","rank":16,"alpha":8,"kronIn":2,"kronOut":4,"targetModules":["k_proj"]}"#,
    )
    .unwrap();
}

fn data_error(task: RecordTask, text: &str) -> Error {
    parse_records(task, text, "train.jsonl", true).unwrap_err()
}

#[test]
fn a_record_longer_than_the_limit_is_refused_with_its_line() {
    let long = format!("{{\"text\":\"a\",\"label\":0}}\n{{\"text\":\"{}\",\"label\":1}}\n", "w ".repeat(600_000));
    let err = data_error(RecordTask::Classification, &long);
    assert_eq!(err.code(), "ERR_INVALID_DATA");
    let bytes = long.lines().nth(1).unwrap().len();
    let want =
        format!("train.jsonl:2: the record is {bytes} bytes long; the limit is 1048576 bytes (1 MiB) per record");
    assert!(err.to_string().starts_with(&want), "{err}");
    // Records given in memory are held to the same limit.
    let records = json!([{ "text": "a", "label": 0 }, { "text": "w".repeat(1 << 21), "label": 1 }]);
    let err = kronlora_core::data::placed_records_from_json(RecordTask::Classification, &records, "data").unwrap_err();
    assert!(err.to_string().starts_with("data record 1: the record is 2097161 bytes long"), "{err}");
}

#[test]
fn data_files_get_precise_messages() {
    // A byte-order mark is not part of the first record.
    let records =
        parse_records(RecordTask::Classification, "\u{feff}{\"text\":\"a\",\"label\":0}\n", "train.jsonl", true)
            .unwrap();
    assert_eq!(records, [Record::Classification { text: "a".into(), label: Label::Index(0) }]);
    // JSON has no NaN or Infinity.
    for bad in ["NaN", "Infinity", "-Infinity"] {
        let err = data_error(
            RecordTask::Classification,
            &format!("{{\"text\":\"a\",\"label\":0}}\n{{\"text\":\"b\",\"label\":{bad}}}"),
        );
        assert_eq!(err.code(), "ERR_INVALID_DATA");
        let want = format!("train.jsonl:2: invalid JSON: `{bad}` at line 1 column 21 is not a JSON value (JSON numbers are finite); labels must be integers or strings");
        assert_eq!(err.to_string(), want);
    }
    // A key twice: which one counts differs between parsers, so neither does.
    let err = data_error(RecordTask::Classification, "{\"text\":\"a\",\"label\":0,\"label\":1}");
    assert_eq!(err.code(), "ERR_INVALID_DATA");
    assert!(
        err.to_string().starts_with("train.jsonl:1: invalid JSON: duplicate key `label` at line 1 column"),
        "{err}"
    );
    // A lone surrogate escape is valid JSON: it reads as U+FFFD.
    let records = parse_records(RecordTask::CausalLm, "{\"text\":\"a\\ud800b\"}", "train.jsonl", true).unwrap();
    assert_eq!(records, [Record::Text { text: "a\u{fffd}b".into() }]);
    // Labels too large for any head are refused where they are.
    let err =
        data_error(RecordTask::Classification, "{\"text\":\"a\",\"label\":0}\n{\"text\":\"a\",\"label\":16777216}");
    assert!(err.to_string().starts_with("train.jsonl:2: `label` = 16777216 is too large"), "{err}");
}

#[test]
fn label_errors_name_the_record_and_the_model_labels() {
    let dir = model_dir("untrusted-label-errors");
    let mut m =
        api::load_model(ModelSource::Path(dir.clone()), r#"{"task":"sequence-classification","numLabels":2,"seed":1}"#)
            .unwrap();
    api::add_adapter(&mut m, "default", LORA).unwrap();
    let file = dir.join("train.jsonl");
    std::fs::write(&file, "{\"text\":\"w4 w5\",\"label\":0}\n\n{\"text\":\"w6\",\"label\":5}\n").unwrap();
    let err =
        train(&mut m, &json!({ "data": file.to_str().unwrap(), "epochs": 1 }).to_string(), &FsStorage, &mut Quiet)
            .unwrap_err();
    assert_eq!(err.code(), "ERR_INVALID_DATA");
    assert_eq!(
        err.to_string(),
        format!("{}:3: label 5 is out of range for numLabels = 2; labels are 0..1", file.display())
    );

    // A model trained with string labels, evaluated on integer labels, lists its labels.
    let named = json!([{ "text": "w4 w5", "label": "neg" }, { "text": "w9 w10", "label": "pos" }]);
    train(&mut m, &json!({ "data": named, "epochs": 1, "validationSplit": 0 }).to_string(), &FsStorage, &mut Quiet)
        .unwrap();
    let err = evaluate_model(
        &m,
        &json!([{ "text": "w4", "label": "neg" }, { "text": "w9", "label": 1 }]).to_string(),
        "{}",
        &FsStorage,
    )
    .unwrap_err();
    assert_eq!(err.code(), "ERR_INVALID_DATA");
    assert_eq!(err.to_string(), "evaluation data record 1: label 1 is an integer, but this model was trained with string labels: neg, pos; use one of them");

    // Records from JavaScript may hold lone surrogates (JSON.stringify writes them as escapes).
    let options = "{\"data\":[{\"text\":\"w4 \\ud800\",\"label\":\"neg\"},{\"text\":\"w9\",\"label\":\"pos\"}],\"epochs\":1,\"validationSplit\":0}";
    assert_eq!(train(&mut m, options, &FsStorage, &mut Quiet).unwrap().reason, StopReason::Completed);
}
