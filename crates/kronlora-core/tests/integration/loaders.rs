//! Loaders refuse what they cannot read correctly: tiny models generated here, then mutated
//! (safetensors headers, configs, GGUF types / offsets / dims / metadata, adapter configs and
//! tensors). Each mutation must give ERR_INVALID_MODEL naming the file and the field or tensor;
//! the unmutated files must still load and give the same outputs.

use kronlora_core::api;
use kronlora_core::models::Backbone;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::quantized::gguf_file::{self, Content};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use kronlora_core::io::{GgufFile, ModelSource};
use kronlora_core::models::bert::BertModel;
use kronlora_core::models::llama::LlamaModel;
use kronlora_core::pretrained::PretrainedModel;
use kronlora_core::Error;

use crate::tiny::llama::{self as tl, write_gguf, write_hf_dir};
use crate::tiny::{temp_dir, tiny_bert_tensors, write_model, CONFIG};

/// `err`'s code is ERR_INVALID_MODEL and its message holds every one of `parts`.
fn assert_refused(err: Error, parts: &[&str]) {
    let message = err.to_js_message();
    assert!(message.starts_with("[ERR_INVALID_MODEL] "), "{message}");
    for part in parts {
        assert!(message.contains(part), "`{part}` missing from: {message}");
    }
}

fn bert_dir(name: &str) -> PathBuf {
    let dir = temp_dir(&format!("loaders-{name}"));
    write_model(&dir, &tiny_bert_tensors(11), CONFIG);
    dir
}

fn load_bert(dir: &Path) -> Result<BertModel, Error> {
    BertModel::load(dir, &Device::Cpu)
}

/// Rewrite the JSON header of a safetensors file (the data stays where it was).
fn edit_header(path: &Path, edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    edit(header.as_object_mut().unwrap());
    let mut json = serde_json::to_vec(&header).unwrap();
    while !json.len().is_multiple_of(8) {
        json.push(b' ');
    }
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend(json);
    out.extend(&bytes[8 + n..]);
    std::fs::write(path, out).unwrap();
}

fn edit_config(dir: &Path, field: &str, value: serde_json::Value) {
    let path = dir.join("config.json");
    let mut config: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    config[field] = value;
    std::fs::write(path, config.to_string()).unwrap();
}

#[test]
fn valid_tiny_models_still_load() {
    let dir = bert_dir("valid");
    let model = load_bert(&dir).unwrap();
    assert_eq!(model.projections().len(), 12);
    let ids = Tensor::new(&[[1u32, 7, 9, 2]], &Device::Cpu).unwrap();
    let mask = Tensor::new(&[[1f32, 1., 1., 1.]], &Device::Cpu).unwrap();
    let out = model.forward(&ids, Some(&mask), None).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert!(out.iter().all(|v| v.is_finite()));
    // Task heads and buffers a real checkpoint carries may go unused.
    let mut extra = tiny_bert_tensors(11);
    let t = |shape: &[usize]| Tensor::zeros(shape, candle_core::DType::F32, &Device::Cpu).unwrap();
    extra.insert("cls.predictions.bias".into(), t(&[50]));
    extra.insert("pooler.dense.weight".into(), t(&[16, 16]));
    extra.insert("embeddings.position_ids".into(), t(&[1, 24]));
    let dir = temp_dir("loaders-heads");
    write_model(&dir, &extra, CONFIG);
    let with_heads = load_bert(&dir).unwrap();
    let again = with_heads.forward(&ids, Some(&mask), None).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(out, again);
}

#[test]
fn safetensors_dtype_size_and_truncation_are_checked() {
    let dir = bert_dir("dtype");
    let weights = dir.join("model.safetensors");
    let tensor = "encoder.layer.0.attention.self.query.weight";
    edit_header(&weights, |h| h[tensor]["dtype"] = "I32".into());
    assert_refused(load_bert(&dir).err().unwrap(), &["model.safetensors", tensor, "I32", "F32"]);

    // A stated shape whose byte size is not the tensor's extent.
    let dir = bert_dir("shape");
    edit_header(&dir.join("model.safetensors"), |h| h[tensor]["shape"] = serde_json::json!([16, 15]));
    assert_refused(load_bert(&dir).err().unwrap(), &["model.safetensors", "not a valid safetensors file"]);

    // Overlapping tensors.
    let dir = bert_dir("overlap");
    edit_header(&dir.join("model.safetensors"), |h| {
        let s = h[tensor]["data_offsets"][0].as_u64().unwrap();
        h[tensor]["data_offsets"] = serde_json::json!([s + 4, s + 4 + 16 * 16 * 4]);
    });
    assert_refused(load_bert(&dir).err().unwrap(), &["model.safetensors"]);

    let dir = bert_dir("truncated");
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    std::fs::write(dir.join("model.safetensors"), &bytes[..bytes.len() - 100]).unwrap();
    assert_refused(load_bert(&dir).err().unwrap(), &["model.safetensors", "not a valid safetensors file"]);

    // Same file from bytes (the WASM path): named by the path it was given under.
    let dir = bert_dir("bytes");
    edit_header(&dir.join("model.safetensors"), |h| h[tensor]["dtype"] = "I32".into());
    std::fs::write(dir.join("tokenizer.json"), TOKENIZER).unwrap();
    let files = ["config.json", "model.safetensors", "tokenizer.json"]
        .map(|f| (dir.join(f).display().to_string(), std::fs::read(dir.join(f)).unwrap()))
        .into_iter()
        .collect();
    let err = api::load_model(ModelSource::Files(files), "{}").err().unwrap();
    assert_refused(err, &[&dir.join("model.safetensors").display().to_string(), tensor, "I32"]);
}

#[test]
fn non_finite_weights_are_refused() {
    let mut t = tiny_bert_tensors(11);
    let name = "encoder.layer.1.output.dense.weight";
    let mut values = t[name].flatten_all().unwrap().to_vec1::<f32>().unwrap();
    values[5] = f32::NAN;
    t.insert(name.into(), Tensor::from_vec(values, (16, 32), &Device::Cpu).unwrap());
    let dir = temp_dir("loaders-nan");
    write_model(&dir, &t, CONFIG);
    assert_refused(load_bert(&dir).err().unwrap(), &["model.safetensors", name, "NaN", "index 5"]);
}

#[test]
fn checkpoint_tensors_must_match_the_config() {
    // Fewer layers in config.json than in the checkpoint.
    let dir = bert_dir("layers");
    edit_config(&dir, "num_hidden_layers", 1.into());
    assert_refused(
        load_bert(&dir).err().unwrap(),
        &["model.safetensors", "encoder.layer.1.", "num_hidden_layers` = 1", "layers up to 1"],
    );
    // More layers than it holds.
    let dir = bert_dir("more-layers");
    edit_config(&dir, "num_hidden_layers", 3.into());
    assert_refused(load_bert(&dir).err().unwrap(), &["encoder.layer.2.attention.self.query.weight` is missing"]);
    // A stray encoder tensor.
    let mut t = tiny_bert_tensors(11);
    t.insert(
        "encoder.layer.0.attention.self.extra.weight".into(),
        Tensor::zeros(4, candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    let dir = temp_dir("loaders-stray");
    write_model(&dir, &t, CONFIG);
    assert_refused(load_bert(&dir).err().unwrap(), &["encoder.layer.0.attention.self.extra.weight"]);
    // vocab_size against the embedding's shape.
    let dir = bert_dir("vocab");
    edit_config(&dir, "vocab_size", 51.into());
    assert_refused(load_bert(&dir).err().unwrap(), &["embeddings.word_embeddings.weight", "[50, 16]", "[51, 16]"]);

    // Llama: a config with fewer layers than the checkpoint.
    let dir = tl::temp_dir("loaders-llama-layers");
    write_hf_dir(&dir, &tl::tensors(3, false), false);
    edit_config(&dir, "num_hidden_layers", 1.into());
    let err = LlamaModel::load(&dir, &Device::Cpu).err().unwrap();
    assert_refused(err, &["model.safetensors", "model.layers.1.", "layers up to 1"]);
}

#[test]
fn config_values_out_of_range_name_config_json_and_the_field() {
    let cases: &[(&str, serde_json::Value)] = &[
        ("layer_norm_eps", (-1.0).into()),
        ("layer_norm_eps", 0.0.into()),
        ("layer_norm_eps", 5.0.into()),
        ("hidden_size", 0.into()),
        ("num_attention_heads", 5.into()),
        ("num_hidden_layers", 0.into()),
        ("vocab_size", 1_000_000_000.into()),
        ("max_position_embeddings", 0.into()),
        ("type_vocab_size", 0.into()),
        ("hidden_act", "relu".into()),
    ];
    for (field, value) in cases {
        let dir = bert_dir(&format!("config-{field}"));
        edit_config(&dir, field, value.clone());
        let err = load_bert(&dir).err().unwrap();
        let field = if *field == "num_attention_heads" { "hidden_size" } else { field };
        assert_refused(err, &["config.json", &format!("`{field}`")]);
    }
    // negative sizes are not sizes: serde names the field.
    let dir = bert_dir("config-negative");
    edit_config(&dir, "intermediate_size", (-3).into());
    assert_refused(load_bert(&dir).err().unwrap(), &["config.json"]);

    let llama_cases: &[(&str, serde_json::Value)] = &[
        ("rms_norm_eps", (-1.0).into()),
        ("rope_theta", (-10000.0).into()),
        ("rope_theta", 0.5.into()),
        ("num_key_value_heads", 3.into()),
        ("num_attention_heads", 6.into()),
        ("head_dim", 7.into()),
        ("max_position_embeddings", 0.into()),
    ];
    for (field, value) in llama_cases {
        let dir = tl::temp_dir(&format!("loaders-llama-{field}"));
        write_hf_dir(&dir, &tl::tensors(3, false), false);
        edit_config(&dir, field, value.clone());
        let err = LlamaModel::load(&dir, &Device::Cpu).err().unwrap();
        let field = match *field {
            "num_key_value_heads" => "num_attention_heads",
            "num_attention_heads" => "hidden_size",
            other => other,
        };
        assert_refused(err, &["config.json", &format!("`{field}`")]);
    }
}

// ---- GGUF ----

fn gguf(name: &str) -> PathBuf {
    let dir = tl::temp_dir(&format!("loaders-{name}"));
    let path = dir.join("tiny.gguf");
    write_gguf(&path, &tl::tensors(5, false));
    path
}

fn load_gguf(path: &Path) -> Result<LlamaModel, Error> {
    LlamaModel::load_gguf(Arc::new(GgufFile::open(path)?), &Device::Cpu, true)
}

/// The byte position of tensor `name`'s directory entry fields: (n_dims at, dims at, type at, offset at).
fn entry(bytes: &[u8], name: &str) -> (usize, usize, usize, usize) {
    let at = bytes.windows(name.len()).position(|w| w == name.as_bytes()).unwrap() + name.len();
    let n_dims = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    let dims = at + 4;
    let ty = dims + 8 * n_dims;
    (at, dims, ty, ty + 4)
}

fn edit(path: &Path, f: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = std::fs::read(path).unwrap();
    f(&mut bytes);
    std::fs::write(path, bytes).unwrap();
}

/// The tiny GGUF with `token_embd.weight` stored as Q4_1 (the real SmolLM2 file's kind).
fn q4_1_gguf(name: &str) -> PathBuf {
    let path = gguf(name);
    let mut file = std::fs::File::open(&path).unwrap();
    let content = Content::read(&mut file).unwrap();
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    let tensors: Vec<(String, QTensor)> = names
        .into_iter()
        .map(|n| {
            let q = content.tensor(&mut file, n, &Device::Cpu).unwrap();
            let q = if n == "token_embd.weight" {
                QTensor::quantize(&q.dequantize(&Device::Cpu).unwrap(), GgmlDType::Q4_1).unwrap()
            } else {
                q
            };
            (n.clone(), q)
        })
        .collect();
    let metadata: Vec<(&str, &gguf_file::Value)> = content.metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let out = path.with_file_name("q41.gguf");
    gguf_file::write(&mut std::fs::File::create(&out).unwrap(), &metadata, &refs).unwrap();
    out
}

#[test]
fn gguf_types_offsets_and_dims_are_checked_against_the_layout() {
    // The valid files load, the Q4_1 one included.
    load_gguf(&gguf("valid")).unwrap();
    let q41 = q4_1_gguf("q41");
    load_gguf(&q41).unwrap();

    // Q4_1 data relabelled F16 (type 1): its F16 size overruns the next tensor.
    edit(&q41, |b| {
        let (_, _, ty, _) = entry(b, "token_embd.weight");
        assert_eq!(b[ty], 3);
        b[ty] = 1;
    });
    assert_refused(load_gguf(&q41).err().unwrap(), &["q41.gguf", "token_embd.weight", "offset"]);

    // F32 data relabelled F16: it would leave a gap before the next tensor.
    let path = gguf("f16");
    edit(&path, |b| {
        let (_, _, ty, _) = entry(b, "blk.0.attn_q.weight");
        b[ty] = 1;
    });
    assert_refused(load_gguf(&path).err().unwrap(), &["tiny.gguf", "offset"]);

    // An offset off by one: misaligned.
    let path = gguf("offset");
    edit(&path, |b| {
        let (_, _, _, off) = entry(b, "blk.1.ffn_up.weight");
        b[off] = b[off].wrapping_add(1);
    });
    assert_refused(load_gguf(&path).err().unwrap(), &["tiny.gguf", "blk.1.ffn_up.weight", "general.alignment = 32"]);

    // An offset moved by a whole alignment step: aligned, but not where it should be.
    let path = gguf("offset-32");
    edit(&path, |b| {
        let (_, _, _, off) = entry(b, "blk.1.ffn_up.weight");
        let v = u64::from_le_bytes(b[off..off + 8].try_into().unwrap()) + 32;
        b[off..off + 8].copy_from_slice(&v.to_le_bytes());
    });
    assert_refused(
        load_gguf(&path).err().unwrap(),
        &["blk.1.ffn_up.weight", "is not where the tensor before it (`blk.1.ffn_gate.weight`"],
    );

    // A huge dim is reported as stated (not truncated).
    let path = gguf("dims");
    edit(&path, |b| {
        let (_, dims, _, _) = entry(b, "output_norm.weight");
        b[dims..dims + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    });
    assert_refused(load_gguf(&path).err().unwrap(), &["output_norm.weight", "1099511627776"]);

    // Too many dims, and an unknown type.
    let path = gguf("ndims");
    edit(&path, |b| {
        let (at, _, _, _) = entry(b, "output_norm.weight");
        b[at..at + 4].copy_from_slice(&9u32.to_le_bytes());
    });
    assert_refused(load_gguf(&path).err().unwrap(), &["output_norm.weight", "9 dimensions"]);
    let path = gguf("type");
    edit(&path, |b| {
        let (_, _, ty, _) = entry(b, "output_norm.weight");
        b[ty] = 77;
    });
    assert_refused(load_gguf(&path).err().unwrap(), &["output_norm.weight", "type 77"]);

    // Truncated inside the data.
    let path = gguf("truncated");
    edit(&path, |b| b.truncate(b.len() - 1000));
    assert_refused(load_gguf(&path).err().unwrap(), &["tiny.gguf", "truncated"]);
}

#[test]
fn gguf_lengths_and_counts_beyond_the_file_are_refused_before_allocating() {
    // A metadata string length of 2^40 (candle would allocate it).
    let path = gguf("string-length");
    edit(&path, |b| {
        let key = b"general.architecture";
        let at = b.windows(key.len()).position(|w| w == key).unwrap() + key.len() + 4;
        b[at..at + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    });
    assert_refused(load_gguf(&path).err().unwrap(), &["tiny.gguf", "general.architecture", "truncated"]);
    // A tensor count of 2^60.
    let path = gguf("count");
    edit(&path, |b| b[8..16].copy_from_slice(&(1u64 << 60).to_le_bytes()));
    assert_refused(load_gguf(&path).err().unwrap(), &["tiny.gguf", "tensor directory"]);
    // An array of 2^50 tokens.
    let path = gguf("array");
    edit(&path, |b| {
        let key = b"tokenizer.ggml.tokens";
        let at = b.windows(key.len()).position(|w| w == key).unwrap() + key.len() + 8;
        b[at..at + 8].copy_from_slice(&(1u64 << 50).to_le_bytes());
    });
    assert_refused(load_gguf(&path).err().unwrap(), &["tokenizer.ggml.tokens"]);
}

#[test]
fn gguf_metadata_out_of_range_names_the_key() {
    let set_f32 = |path: &Path, key: &str, value: f32| {
        edit(path, |b| {
            let at = b.windows(key.len()).position(|w| w == key.as_bytes()).unwrap() + key.len();
            assert_eq!(u32::from_le_bytes(b[at..at + 4].try_into().unwrap()), 6, "an f32");
            b[at + 4..at + 8].copy_from_slice(&value.to_le_bytes());
        })
    };
    let path = gguf("eps");
    set_f32(&path, "llama.attention.layer_norm_rms_epsilon", -1.0);
    assert_refused(load_gguf(&path).err().unwrap(), &["tiny.gguf", "`llama.attention.layer_norm_rms_epsilon`"]);
    let path = gguf("theta");
    set_f32(&path, "llama.rope.freq_base", f32::NAN);
    assert_refused(load_gguf(&path).err().unwrap(), &["tiny.gguf", "`llama.rope.freq_base`"]);
    // block_count below the tensors' layers.
    let path = gguf("blocks");
    edit(&path, |b| {
        let key = b"llama.block_count";
        let at = b.windows(key.len()).position(|w| w == key).unwrap() + key.len() + 4;
        b[at..at + 4].copy_from_slice(&1u32.to_le_bytes());
    });
    assert_refused(load_gguf(&path).err().unwrap(), &["tiny.gguf", "blk.1.", "layers up to 1"]);
}

// ---- adapters ----

const TOKENIZER: &str = r#"{"version":"1.0","model":{"type":"WordLevel","vocab":{"[UNK]":0,"a":1,"b":2,"c":3},"unk_token":"[UNK]"},
  "pre_tokenizer":{"type":"Whitespace"}}"#;

fn classifier(name: &str) -> PretrainedModel {
    let dir = bert_dir(name);
    std::fs::write(dir.join("tokenizer.json"), TOKENIZER).unwrap();
    api::load_model(ModelSource::Path(dir), r#"{"task":"sequence-classification","numLabels":2,"seed":1}"#).unwrap()
}

/// A trained-looking adapter's files (non-zero B), as `(config JSON, tensors)`.
fn adapter_files(kind: &str) -> (serde_json::Value, HashMap<String, Tensor>) {
    let mut m = classifier(&format!("adapter-src-{kind}"));
    api::add_adapter(
        &mut m,
        "a",
        &format!(r#"{{"type":"{kind}","rank":4,"alpha":8,"targetModules":["query","value"],"seed":2}}"#),
    )
    .unwrap();
    let files = m.adapter_files(None).unwrap();
    let file = |name: &str| &files.iter().find(|(n, _)| n == name).unwrap().1;
    let config: serde_json::Value = serde_json::from_slice(file("adapter_config.json")).unwrap();
    let tensors = candle_core::safetensors::load_buffer(file("adapter_model.safetensors"), &Device::Cpu).unwrap();
    let tensors = tensors.into_iter().map(|(k, t)| (k, (t + 0.05).unwrap())).collect();
    (config, tensors)
}

/// A fresh name per call: the tests run in parallel and each writes its own files.
fn unique(name: &str) -> String {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    format!("{name}-{}", NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
}

fn load_adapter(config: &serde_json::Value, tensors: &HashMap<String, Tensor>) -> Result<PretrainedModel, Error> {
    let mut m = classifier(&unique("adapter-dst"));
    let dir = temp_dir(&unique("adapter-bytes"));
    std::fs::create_dir_all(&dir).unwrap();
    candle_core::safetensors::save(tensors, dir.join("w.safetensors")).unwrap();
    let weights = std::fs::read(dir.join("w.safetensors")).unwrap();
    m.load_adapter_bytes(config.to_string().as_bytes(), &weights, "my-adapter", None, false)?;
    Ok(m)
}

#[test]
fn adapter_files_that_disagree_or_are_out_of_range_are_refused() {
    let texts = ["a b c".to_string(), "c a".to_string()];
    for kind in ["lora", "kron-lora"] {
        let (config, tensors) = adapter_files(kind);
        let alpha = if kind == "lora" { "lora_alpha" } else { "alpha" };
        let loaded = load_adapter(&config, &tensors).unwrap();
        assert!(loaded.classify(&texts).unwrap().iter().all(|c| c.scores.iter().all(|s| s.is_finite())));

        for value in [serde_json::json!(1e30), serde_json::json!(0), serde_json::json!("8")] {
            let mut c = config.clone();
            c[alpha] = value;
            assert_refused(
                load_adapter(&c, &tensors).err().unwrap(),
                &["my-adapter/adapter_config.json", &format!("`{alpha}`"), "1e6"],
            );
        }
        let mut c = config.clone();
        c["r"] = 2.into();
        assert_refused(
            load_adapter(&c, &tensors).err().unwrap(),
            &["adapter_config.json", "`r` = 2", "adapter_model.safetensors", "rank 4"],
        );
        let mut c = config.clone();
        c["r"] = 2.5.into();
        assert_refused(load_adapter(&c, &tensors).err().unwrap(), &["adapter_config.json", "`r`"]);

        // target_modules missing a module the tensors hold, or naming one they lack.
        let mut c = config.clone();
        let modules = c["target_modules"].as_array().unwrap().clone();
        c["target_modules"] = serde_json::json!(modules[1..]);
        let first = modules[0].as_str().unwrap();
        assert_refused(
            load_adapter(&c, &tensors).err().unwrap(),
            &["adapter_model.safetensors", first, "target_modules"],
        );
        let mut c = config.clone();
        c["target_modules"].as_array_mut().unwrap().push("bert.encoder.layer.0.intermediate.dense".into());
        assert_refused(
            load_adapter(&c, &tensors).err().unwrap(),
            &["adapter_config.json", "`target_modules` lists `bert.encoder.layer.0.intermediate.dense`"],
        );
        // PEFT's short names still match.
        let mut c = config.clone();
        c["target_modules"] = serde_json::json!(["query", "value"]);
        load_adapter(&c, &tensors).unwrap();
        let mut c = config.clone();
        c["target_modules"] = serde_json::json!(".*\\.(query|value)");
        load_adapter(&c, &tensors).unwrap();
    }

    // LoRA tensors: a module the model lacks, a missing half, a shape that does not fit, NaN.
    let (config, tensors) = adapter_files("lora");
    let a_key = tensors.keys().find(|k| k.ends_with("layer.0.attention.self.query.lora_A.weight")).unwrap().clone();
    let b_key = a_key.replace("lora_A", "lora_B");
    let mut t = tensors.clone();
    for key in [&a_key, &b_key] {
        let moved = t.remove(key).unwrap();
        t.insert(key.replace("layer.0", "layer.7"), moved);
    }
    assert_refused(
        load_adapter(&config, &t).err().unwrap(),
        &["adapter_model.safetensors", "layer.7", "no module of this model"],
    );
    let mut t = tensors.clone();
    t.remove(&a_key);
    assert_refused(
        load_adapter(&config, &t).err().unwrap(),
        &["adapter_model.safetensors", "lora_B.weight", "without the other half"],
    );
    let mut t = tensors.clone();
    t.remove(&b_key);
    assert_refused(
        load_adapter(&config, &t).err().unwrap(),
        &["adapter_model.safetensors", "lora_B.weight is missing"],
    );
    let mut t = tensors.clone();
    t.insert(a_key.clone(), Tensor::zeros((4, 15), candle_core::DType::F32, &Device::Cpu).unwrap());
    assert_refused(
        load_adapter(&config, &t).err().unwrap(),
        &["adapter_model.safetensors", "do not fit a [16, 16] layer"],
    );
    let mut t = tensors.clone();
    t.insert(a_key.clone(), Tensor::zeros(4, candle_core::DType::F32, &Device::Cpu).unwrap());
    assert_refused(load_adapter(&config, &t).err().unwrap(), &["adapter_model.safetensors", "must be matrices"]);
    let mut t = tensors.clone();
    t.insert(b_key.clone(), (t[&b_key].clone() * f64::INFINITY).unwrap());
    assert_refused(load_adapter(&config, &t).err().unwrap(), &["adapter_model.safetensors", &b_key, "inf"]);
}

#[test]
fn non_finite_outputs_are_an_error_not_null() {
    // Finite but absurd adapter weights overflow the logits.
    let (config, mut tensors) = adapter_files("lora");
    for t in tensors.values_mut() {
        *t = (t.ones_like().unwrap() * 1e30).unwrap();
    }
    tensors.retain(|k, _| k.contains("lora_"));
    let m = load_adapter(&config, &tensors).unwrap();
    let err = m.classify(&["a b".to_string()]).err().unwrap().to_js_message();
    assert!(err.starts_with("[ERR_NON_FINITE]") && err.contains("class scores") && err.contains("corrupt"), "{err}");
    let err = m.logits(&["a b".to_string()]).err().unwrap().to_js_message();
    assert!(err.starts_with("[ERR_NON_FINITE]"), "{err}");
}

#[test]
fn a_tensor_stored_in_two_shards_is_refused() {
    // Which copy would win depended on the shards' order: refuse instead of guessing.
    let tensors = tiny_bert_tensors(6);
    let dir = temp_dir("loaders-two-shards");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), CONFIG).unwrap();
    let (first, second) = ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors");
    let mut b: HashMap<String, Tensor> = HashMap::new();
    let mut weight_map = serde_json::Map::new();
    for name in tensors.keys() {
        weight_map.insert(name.clone(), first.into());
    }
    let (dup, t) = tensors.iter().next().unwrap();
    b.insert(dup.clone(), (t + 1.0).unwrap());
    candle_core::safetensors::save(&tensors, dir.join(first)).unwrap();
    candle_core::safetensors::save(&b, dir.join(second)).unwrap();
    weight_map.insert("extra".into(), second.into());
    std::fs::write(
        dir.join("model.safetensors.index.json"),
        serde_json::json!({ "metadata": {}, "weight_map": weight_map }).to_string(),
    )
    .unwrap();
    assert_refused(load_bert(&dir).err().unwrap(), &["model-0000", dup, "also in another shard"]);
}
