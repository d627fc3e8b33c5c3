//! Hugging Face model directories (config.json + model.safetensors + tokenizer.json) of the
//! tiny BERT and the tiny Llama, mutated, through `PretrainedModel::load` from memory and from
//! disk (a memory-mapped reader), then a short forward pass.

use kronlora_core::api;
use kronlora_core::io::ModelSource;
use kronlora_core::pretrained::{GenerateOptions, PretrainedModel};
use proptest::prelude::*;

use super::mutate::{
    apply_json, apply_safetensors, json_mutation, safetensors_mutation, JsonMutation, SafetensorsMutation,
};
use super::tiny_files::{self, case_dir, Files, CLASSIFIER_OPTIONS};
use super::{finite, fuzz, CaseResult};

#[derive(Debug, Clone)]
pub enum FileMutation {
    Config(JsonMutation),
    Weights(SafetensorsMutation),
    Tokenizer(JsonMutation),
}

#[derive(Debug, Clone)]
pub struct DirCase {
    mutations: Vec<FileMutation>,
    on_disk: bool,
    /// BERT: loaded as a classifier (else an embedder). Llama: generate too.
    variant: bool,
}

fn dir_case() -> impl Strategy<Value = DirCase> {
    let mutation = prop_oneof![
        3 => json_mutation().prop_map(FileMutation::Config),
        4 => safetensors_mutation().prop_map(FileMutation::Weights),
        1 => json_mutation().prop_map(FileMutation::Tokenizer),
    ];
    (proptest::collection::vec(mutation, 1..3), any::<bool>(), any::<bool>())
        .prop_map(|(mutations, on_disk, variant)| DirCase { mutations, on_disk, variant })
}

fn mutated(base: &Files, case: &DirCase) -> Files {
    let mut files = base.clone();
    for m in &case.mutations {
        match m {
            FileMutation::Config(j) => {
                let f = files.get_mut("config.json").unwrap();
                *f = apply_json(f, j);
            }
            FileMutation::Weights(s) => apply_safetensors(files.get_mut("model.safetensors").unwrap(), s),
            FileMutation::Tokenizer(j) => {
                let f = files.get_mut("tokenizer.json").unwrap();
                *f = apply_json(f, j);
            }
        }
    }
    files
}

/// Load `files` from memory, or written to a directory of their own.
fn load(files: Files, on_disk: bool, options: &str) -> kronlora_core::Result<PretrainedModel> {
    if !on_disk {
        return api::load_model(ModelSource::Files(files), options);
    }
    let dir = case_dir("safetensors");
    for (name, bytes) in &files {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    let model = api::load_model(ModelSource::Path(dir.clone()), options);
    let _ = std::fs::remove_dir_all(&dir);
    model
}

fn bert_case(case: &DirCase) -> CaseResult {
    let files = mutated(tiny_files::bert(), case);
    let texts = vec!["w4 w5 w6".to_string(), "w9".to_string()];
    if case.variant {
        let model = load(files, case.on_disk, CLASSIFIER_OPTIONS)?;
        Ok(finite("logits", &model.logits(&texts)?.0))
    } else {
        let model = load(files, case.on_disk, "{}")?;
        Ok(finite("embeddings", &model.embed(&texts)?.0))
    }
}

fn llama_case(case: &DirCase) -> CaseResult {
    let model = load(mutated(tiny_files::llama_hf(), case), case.on_disk, "{}")?;
    let problems = finite("logits", &model.logits(&["w4 w5 w6".to_string()])?.0);
    if case.variant {
        // Generation goes through the KV cache, a second path through the weights.
        model.generate("w7 w8", &GenerateOptions { max_tokens: 3, temperature: 0.0, seed: 1 })?;
    }
    Ok(problems)
}

#[test]
fn safetensors_bert() {
    fuzz("safetensors_bert", file!(), 128, dir_case(), bert_case);
}

#[test]
fn safetensors_llama() {
    fuzz("safetensors_llama", file!(), 96, dir_case(), llama_case);
}
