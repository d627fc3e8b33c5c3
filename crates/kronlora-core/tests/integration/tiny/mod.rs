//! Tiny BERT checkpoints in real formats, written by the tests.
#![allow(dead_code)] // each suite uses a different part

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};

use super::reference::Lcg;

pub mod llama;

pub const CONFIG: &str = r#"{"model_type":"bert","vocab_size":50,"hidden_size":16,"num_hidden_layers":2,
  "num_attention_heads":4,"intermediate_size":32,"hidden_act":"gelu","max_position_embeddings":24,
  "type_vocab_size":2,"layer_norm_eps":1e-12}"#;

pub fn tensor(rng: &mut Lcg, shape: &[usize], scale: f32) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_vec(rng.vec(n).into_iter().map(|v| v * scale).collect::<Vec<_>>(), shape, &Device::Cpu).unwrap()
}

/// HF BertModel tensor names and shapes for CONFIG, random values.
pub fn tiny_bert_tensors(seed: u64) -> HashMap<String, Tensor> {
    bert_tensors(seed, &BertDims { vocab: 50, hidden: 16, layers: 2, ffn: 32, positions: 24, fan_in_scaled: false })
}

/// A BERT's sizes (heads live in the config only: they do not change tensor shapes).
pub struct BertDims {
    pub vocab: usize,
    pub hidden: usize,
    pub layers: usize,
    pub ffn: usize,
    pub positions: usize,
    /// Linear weights uniform in ±1.2/√fan_in (keeps activations sized through wide layers)
    /// instead of ±0.3.
    pub fan_in_scaled: bool,
}

/// HF BertModel tensor names and shapes for `d`, random values.
pub fn bert_tensors(seed: u64, d: &BertDims) -> HashMap<String, Tensor> {
    let mut rng = Lcg::new(seed);
    let (h, i) = (d.hidden, d.ffn);
    let mut t = HashMap::new();
    let mut put = |name: String, shape: &[usize], scale: f32, offset: f32| {
        let v = (tensor(&mut rng, shape, scale) + offset as f64).unwrap();
        t.insert(name, v);
    };
    put("embeddings.word_embeddings.weight".into(), &[d.vocab, h], 0.5, 0.0);
    put("embeddings.position_embeddings.weight".into(), &[d.positions, h], 0.5, 0.0);
    put("embeddings.token_type_embeddings.weight".into(), &[2, h], 0.5, 0.0);
    put("embeddings.LayerNorm.weight".into(), &[h], 0.1, 1.0);
    put("embeddings.LayerNorm.bias".into(), &[h], 0.1, 0.0);
    let scale = |fan_in: usize| if d.fan_in_scaled { 1.2 / (fan_in as f32).sqrt() } else { 0.3 };
    for l in 0..d.layers {
        let p = format!("encoder.layer.{l}");
        for (name, out, inp) in [
            ("attention.self.query", h, h),
            ("attention.self.key", h, h),
            ("attention.self.value", h, h),
            ("attention.output.dense", h, h),
            ("intermediate.dense", i, h),
            ("output.dense", h, i),
        ] {
            put(format!("{p}.{name}.weight"), &[out, inp], scale(inp), 0.0);
            put(format!("{p}.{name}.bias"), &[out], 0.1, 0.0);
        }
        for norm in ["attention.output.LayerNorm", "output.LayerNorm"] {
            put(format!("{p}.{norm}.weight"), &[h], 0.1, 1.0);
            put(format!("{p}.{norm}.bias"), &[h], 0.1, 0.0);
        }
    }
    t
}

pub fn write_model(dir: &Path, tensors: &HashMap<String, Tensor>, config: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("config.json"), config).unwrap();
    candle_core::safetensors::save(tensors, dir.join("model.safetensors")).unwrap();
}

pub fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("kronlora-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A word-level tokenizer: `[PAD] [CLS] [UNK] [SEP]`, then `w4 … w{vocab-1}`; `[CLS]` first.
pub fn word_tokenizer(vocab_size: usize) -> Vec<u8> {
    let mut vocab = serde_json::Map::new();
    for (i, w) in ["[PAD]", "[CLS]", "[UNK]", "[SEP]"].iter().enumerate() {
        vocab.insert(w.to_string(), i.into());
    }
    for i in 4..vocab_size {
        vocab.insert(format!("w{i}"), i.into());
    }
    serde_json::json!({
        "version": "1.0",
        "model": { "type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]" },
        "pre_tokenizer": { "type": "Whitespace" },
        "post_processor": { "type": "TemplateProcessing",
            "single": [{ "SpecialToken": { "id": "[CLS]", "type_id": 0 } }, { "Sequence": { "id": "A", "type_id": 0 } }],
            "pair": [{ "Sequence": { "id": "A", "type_id": 0 } }, { "Sequence": { "id": "B", "type_id": 1 } }],
            "special_tokens": { "[CLS]": { "id": "[CLS]", "ids": [1], "tokens": ["[CLS]"] } } }
    })
    .to_string()
    .into_bytes()
}

/// A word-level tokenizer over "a", "b", "c" for the tiny BERT.
pub const WORD_TOKENIZER: &str = r#"{"version":"1.0","model":{"type":"WordLevel","vocab":{"[UNK]":0,"a":1,"b":2,"c":3},"unk_token":"[UNK]"},
  "pre_tokenizer":{"type":"Whitespace"}}"#;

/// A tiny BERT (weights of `seed`) loaded for sequence classification with `num_labels`
/// classes (head seed 1), written to `dir` unless it is there already.
pub fn tiny_classifier(dir: &Path, seed: u64, num_labels: usize) -> kronlora_core::pretrained::PretrainedModel {
    if !dir.join("config.json").exists() {
        write_model(dir, &tiny_bert_tensors(seed), CONFIG);
        std::fs::write(dir.join("tokenizer.json"), WORD_TOKENIZER).unwrap();
    }
    let options = format!(r#"{{"task":"sequence-classification","numLabels":{num_labels},"seed":1}}"#);
    kronlora_core::api::load_model(kronlora_core::io::ModelSource::Path(dir.to_path_buf()), &options).unwrap()
}
