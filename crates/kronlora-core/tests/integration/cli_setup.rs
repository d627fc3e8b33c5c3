//! What the CLI asks the core before loading a model (`api::training_setup_json`,
//! `api::saved_adapter_json`): the training task and head size come from the model's family and
//! the data, not from a file name, and a saved adapter is found in a run's output directory too.

use kronlora_core::api::{self, FsStorage};
use serde_json::{json, Value};

use crate::tiny::llama::{tensors, write_gguf, write_hf_dir};
use crate::training::{dataset, model_dir};

fn setup(model: &std::path::Path, options: Value) -> kronlora_core::Result<Value> {
    let text = api::training_setup_json(&FsStorage, &model.display().to_string(), &options.to_string())?;
    Ok(serde_json::from_str(&text).unwrap())
}

#[test]
fn the_training_task_comes_from_the_model_family_and_the_head_from_the_data() {
    let bert = model_dir("setup-bert");
    let data = bert.join("train.jsonl");
    let lines: Vec<String> = dataset(6, 1).as_array().unwrap().iter().map(Value::to_string).collect();
    std::fs::write(&data, lines.join("\n")).unwrap();
    let data = data.display().to_string();
    assert_eq!(
        setup(&bert, json!({ "data": data })).unwrap(),
        json!({ "task": "classification", "modelOptions": { "task": "sequence-classification", "numLabels": 2 } })
    );
    // A Hugging Face Llama directory is a decoder like a GGUF file: causal-lm, whatever its name.
    let hf = crate::tiny::llama::temp_dir("setup-llama-hf");
    write_hf_dir(&hf, &tensors(2, true), true);
    let gguf = crate::tiny::llama::temp_dir("setup-llama-gguf").join("tiny.gguf");
    write_gguf(&gguf, &tensors(2, true));
    for decoder in [&hf, &gguf] {
        let want = json!({ "task": "causal-lm", "modelOptions": { "task": "causal-lm" } });
        assert_eq!(setup(decoder, json!({ "data": data })).unwrap(), want, "{}", decoder.display());
        let choice = setup(decoder, json!({ "task": "multiple-choice", "data": data })).unwrap();
        assert_eq!(choice["modelOptions"]["task"], "causal-lm");
    }
    let err = setup(&bert, json!({ "task": "causal-lm", "data": data })).unwrap_err();
    assert_eq!(err.code(), "ERR_INVALID_OPTION");
    assert!(err.to_string().contains("BERT encoder cannot be trained for task \"causal-lm\""), "{err}");
    let err = setup(&bert, json!({ "task": "chat", "data": data })).unwrap_err();
    assert!(err.to_string().contains("option `task` must be"), "{err}");
    let err = setup(&bert.join("missing"), json!({ "data": data })).unwrap_err();
    assert_eq!(err.code(), "ERR_INVALID_MODEL");
}

#[test]
fn a_saved_adapter_is_found_in_its_directory_or_a_runs_output_directory() {
    let dir = model_dir("setup-saved");
    let model = crate::training::model(&dir, crate::training::LORA);
    let out = dir.join("run");
    std::fs::create_dir(&out).unwrap();
    api::save_adapter(&model, &FsStorage, &out.join("adapter").display().to_string(), None).unwrap();
    for given in [out.join("adapter"), out.clone()] {
        let saved: Value =
            serde_json::from_str(&api::saved_adapter_json(&FsStorage, &given.display().to_string()).unwrap()).unwrap();
        assert_eq!(saved["dir"], out.join("adapter").display().to_string());
        assert_eq!(saved["task"], "sequence-classification");
        assert_eq!(saved["numLabels"], 2);
        assert_eq!(saved["type"], "lora");
    }
    let err = api::saved_adapter_json(&FsStorage, &dir.display().to_string()).unwrap_err();
    assert!(err.to_string().contains("holds no adapter_config.json"), "{err}");
    let err = api::saved_adapter_json(&FsStorage, &dir.join("nope").display().to_string()).unwrap_err();
    assert!(err.to_string().contains("no such file or directory"), "{err}");
}
