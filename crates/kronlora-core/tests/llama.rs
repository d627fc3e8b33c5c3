//! Llama-family decoders on tiny models generated here: a Hugging Face directory and a GGUF
//! file (written with candle's GGUF writer, Q/K permuted as llama.cpp stores them) of the same
//! random weights must give the same logits; adapters behave as in the BERT tests.

mod reference;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use kronlora_core::io::{GgufFile, ModelSource};
use kronlora_core::models::llama::{KvCache, LlamaModel};
use kronlora_core::models::{AdapterPlan, TargetModules};
use kronlora_core::pretrained::{GenerateOptions, PretrainedModel};
use kronlora_core::{AdapterConfig, AdapterKind};
use reference::Lcg;

const VOCAB: usize = 300;
const HIDDEN: usize = 32;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const FFN: usize = 48;
const LAYERS: usize = 2;

fn config_json(tied: bool) -> String {
    format!(
        r#"{{"model_type":"llama","vocab_size":{VOCAB},"hidden_size":{HIDDEN},"intermediate_size":{FFN},
        "num_hidden_layers":{LAYERS},"num_attention_heads":{HEADS},"num_key_value_heads":{KV_HEADS},
        "rms_norm_eps":1e-5,"rope_theta":10000.0,"max_position_embeddings":64,"tie_word_embeddings":{tied}}}"#
    )
}

fn tensors(seed: u64, tied: bool) -> Vec<(String, Tensor)> {
    let mut rng = Lcg::new(seed);
    let hd = HIDDEN / HEADS;
    let mut t = Vec::new();
    let mut put = |name: String, shape: &[usize], scale: f32, offset: f64| {
        let n = shape.iter().product();
        let v = Tensor::from_vec(rng.vec(n).into_iter().map(|x| x * scale).collect::<Vec<_>>(), shape, &Device::Cpu).unwrap();
        t.push((name, (v + offset).unwrap()));
    };
    put("model.embed_tokens.weight".into(), &[VOCAB, HIDDEN], 1.0, 0.0);
    for l in 0..LAYERS {
        let p = format!("model.layers.{l}");
        put(format!("{p}.input_layernorm.weight"), &[HIDDEN], 0.1, 1.0);
        put(format!("{p}.self_attn.q_proj.weight"), &[HEADS * hd, HIDDEN], 0.4, 0.0);
        put(format!("{p}.self_attn.k_proj.weight"), &[KV_HEADS * hd, HIDDEN], 0.4, 0.0);
        put(format!("{p}.self_attn.v_proj.weight"), &[KV_HEADS * hd, HIDDEN], 0.4, 0.0);
        put(format!("{p}.self_attn.o_proj.weight"), &[HIDDEN, HEADS * hd], 0.3, 0.0);
        put(format!("{p}.post_attention_layernorm.weight"), &[HIDDEN], 0.1, 1.0);
        put(format!("{p}.mlp.gate_proj.weight"), &[FFN, HIDDEN], 0.3, 0.0);
        put(format!("{p}.mlp.up_proj.weight"), &[FFN, HIDDEN], 0.3, 0.0);
        put(format!("{p}.mlp.down_proj.weight"), &[HIDDEN, FFN], 0.3, 0.0);
    }
    put("model.norm.weight".into(), &[HIDDEN], 0.1, 1.0);
    if !tied {
        put("lm_head.weight".into(), &[VOCAB, HIDDEN], 0.3, 0.0);
    }
    t
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kronlora-llama-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// GPT-2's byte → printable character map (the byte-level BPE alphabet).
fn byte_chars() -> Vec<char> {
    let mut bs: Vec<u32> = (33..=126).chain(161..=172).chain(174..=255).collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    let mut by_byte = vec!['?'; 256];
    for (b, c) in bs.iter().zip(cs) {
        by_byte[*b as usize] = char::from_u32(c).unwrap();
    }
    by_byte
}

/// A byte-level vocabulary: the 256 bytes, a few merges, then `<|endoftext|>` and filler.
fn vocab() -> (Vec<String>, Vec<String>) {
    let bytes = byte_chars();
    let mut tokens: Vec<String> = bytes.iter().map(|c| c.to_string()).collect();
    let g = bytes[b' ' as usize];
    let merges = vec![format!("{g} t"), "h e".to_string(), format!("{g}t he")];
    tokens.extend([format!("{g}t"), "he".to_string(), format!("{g}the"), "<|endoftext|>".to_string()]);
    while tokens.len() < VOCAB {
        tokens.push(format!("<unused{}>", tokens.len()));
    }
    (tokens, merges)
}

/// llama.cpp's `permute` for Q/K: `[h, 2, hd/2, in] → [h, hd/2, 2, in]`.
fn permute(t: &Tensor, heads: usize) -> Tensor {
    let (out, inp) = t.dims2().unwrap();
    t.reshape((heads, 2, out / heads / 2, inp)).unwrap().transpose(1, 2).unwrap().contiguous().unwrap().reshape((out, inp)).unwrap()
}

fn write_gguf(path: &Path, tensors: &[(String, Tensor)]) {
    let (tokens, merges) = vocab();
    let gguf_name = |hf: &str| -> String {
        let map = [
            ("model.embed_tokens.weight", "token_embd.weight"),
            ("model.norm.weight", "output_norm.weight"),
            ("lm_head.weight", "output.weight"),
        ];
        if let Some((_, g)) = map.iter().find(|(h, _)| *h == hf) {
            return g.to_string();
        }
        let rest = hf.strip_prefix("model.layers.").unwrap();
        let (l, m) = rest.split_once('.').unwrap();
        let g = match m {
            "input_layernorm.weight" => "attn_norm.weight",
            "post_attention_layernorm.weight" => "ffn_norm.weight",
            "self_attn.q_proj.weight" => "attn_q.weight",
            "self_attn.k_proj.weight" => "attn_k.weight",
            "self_attn.v_proj.weight" => "attn_v.weight",
            "self_attn.o_proj.weight" => "attn_output.weight",
            "mlp.gate_proj.weight" => "ffn_gate.weight",
            "mlp.up_proj.weight" => "ffn_up.weight",
            "mlp.down_proj.weight" => "ffn_down.weight",
            other => panic!("{other}"),
        };
        format!("blk.{l}.{g}")
    };
    let q: Vec<(String, QTensor)> = tensors
        .iter()
        .map(|(n, t)| {
            let t = if n.ends_with("q_proj.weight") {
                permute(t, HEADS)
            } else if n.ends_with("k_proj.weight") {
                permute(t, KV_HEADS)
            } else {
                t.clone()
            };
            (gguf_name(n), QTensor::quantize(&t, GgmlDType::F32).unwrap())
        })
        .collect();
    let strings = |v: &[String]| Value::Array(v.iter().map(|s| Value::String(s.clone())).collect());
    let types: Vec<Value> = (0..tokens.len()).map(|i| Value::I32(if tokens[i] == "<|endoftext|>" { 3 } else { 1 })).collect();
    let eos = tokens.iter().position(|t| t == "<|endoftext|>").unwrap() as u32;
    let meta: Vec<(&str, Value)> = vec![
        ("general.architecture", Value::String("llama".into())),
        ("llama.block_count", Value::U32(LAYERS as u32)),
        ("llama.embedding_length", Value::U32(HIDDEN as u32)),
        ("llama.feed_forward_length", Value::U32(FFN as u32)),
        ("llama.attention.head_count", Value::U32(HEADS as u32)),
        ("llama.attention.head_count_kv", Value::U32(KV_HEADS as u32)),
        ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
        ("llama.rope.freq_base", Value::F32(10000.0)),
        ("llama.context_length", Value::U32(64)),
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.tokens", strings(&tokens)),
        ("tokenizer.ggml.merges", strings(&merges)),
        ("tokenizer.ggml.token_type", Value::Array(types)),
        ("tokenizer.ggml.bos_token_id", Value::U32(eos)),
        ("tokenizer.ggml.eos_token_id", Value::U32(eos)),
    ];
    let meta_refs: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (*k, v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = q.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut file = std::fs::File::create(path).unwrap();
    gguf_file::write(&mut file, &meta_refs, &tensor_refs).unwrap();
}

fn write_hf_dir(dir: &Path, tensors: &[(String, Tensor)], tied: bool) {
    std::fs::write(dir.join("config.json"), config_json(tied)).unwrap();
    let map: HashMap<String, Tensor> = tensors.iter().cloned().collect();
    candle_core::safetensors::save(&map, dir.join("model.safetensors")).unwrap();
}

fn logits(model: &LlamaModel, ids: &[u32]) -> Vec<f32> {
    let t = ids.len();
    model.forward(&Tensor::new(ids, &Device::Cpu).unwrap().reshape((1, t)).unwrap(), None).unwrap().flatten_all().unwrap().to_vec1().unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

const IDS: [u32; 6] = [5, 77, 102, 33, 260, 9];

#[test]
fn gguf_and_hf_directory_of_the_same_weights_agree() {
    for tied in [false, true] {
        let t = tensors(1, tied);
        let dir = temp_dir(&format!("agree-{tied}"));
        write_hf_dir(&dir, &t, tied);
        let gguf = dir.join("tiny.gguf");
        write_gguf(&gguf, &t);
        let hf = LlamaModel::load(&dir, &Device::Cpu).unwrap();
        let gg = LlamaModel::load_gguf(Arc::new(GgufFile::open(&gguf).unwrap()), &Device::Cpu).unwrap();
        assert_eq!(gg.config.tie_word_embeddings, tied);
        let (a, b) = (logits(&hf, &IDS), logits(&gg, &IDS));
        assert!(max_diff(&a, &b) < 1e-5, "tied={tied}: GGUF (un-permuted Q/K) and HF logits differ by {}", max_diff(&a, &b));
    }
}

#[test]
fn kv_cache_generation_equals_full_recompute() {
    let t = tensors(2, false);
    let dir = temp_dir("cache");
    write_hf_dir(&dir, &t, false);
    let model = LlamaModel::load(&dir, &Device::Cpu).unwrap();
    let full = logits(&model, &IDS);
    let mut cache = KvCache::default();
    let first = model.forward(&Tensor::new(&IDS[..4], &Device::Cpu).unwrap().unsqueeze(0).unwrap(), Some(&mut cache)).unwrap();
    let rest = model.forward(&Tensor::new(&IDS[4..], &Device::Cpu).unwrap().unsqueeze(0).unwrap(), Some(&mut cache)).unwrap();
    let stitched: Vec<f32> = [first, rest].iter().flat_map(|l| l.flatten_all().unwrap().to_vec1::<f32>().unwrap()).collect();
    assert!(max_diff(&full, &stitched) < 1e-5);
    assert_eq!(cache.len(), IDS.len());
}

fn plan(kind: AdapterKind) -> AdapterPlan {
    let config = AdapterConfig {
        kind,
        rank: 4,
        alpha: 8.0,
        kron_in: (kind == AdapterKind::KronLora).then_some(2),
        kron_out: (kind == AdapterKind::KronLora).then_some(4),
        use_rslora: false,
        seed: 1,
    };
    AdapterPlan { targets: TargetModules::AllLinear, config, overrides: vec![] }
}

#[test]
fn adapters_on_a_decoder_start_neutral_train_everywhere_and_merge() {
    let t = tensors(3, false);
    let dir = temp_dir("adapters");
    write_hf_dir(&dir, &t, false);
    let base = LlamaModel::load(&dir, &Device::Cpu).unwrap();
    let want = logits(&base, &IDS);
    for kind in [AdapterKind::KronLora, AdapterKind::Lora] {
        let mut model = LlamaModel::load(&dir, &Device::Cpu).unwrap();
        // all-linear: 7 projections per layer, the lm_head excluded.
        assert_eq!(model.add_adapter("a", &plan(kind)).unwrap(), 7 * LAYERS);
        assert_eq!(logits(&model, &IDS), want, "{kind:?}: fresh adapters must not change the logits");
        let mut rng = Lcg::new(4);
        for (p, _) in model.projections() {
            for (_, adapter) in p.adapters() {
                for (_, var) in adapter.parameters() {
                    let n = var.elem_count();
                    var.set(&Tensor::from_vec(rng.vec(n).into_iter().map(|x| x * 0.2).collect::<Vec<_>>(), var.dims(), &Device::Cpu).unwrap()).unwrap();
                }
            }
        }
        // Gradients reach every adapter parameter in every layer.
        let ids = Tensor::new(&IDS, &Device::Cpu).unwrap().unsqueeze(0).unwrap();
        let out = model.forward(&ids, None).unwrap();
        let w = Tensor::from_vec(Lcg::new(5).vec(out.elem_count()), out.dims(), &Device::Cpu).unwrap();
        let grads = (out * w).unwrap().sum_all().unwrap().backward().unwrap();
        for (p, _) in model.projections() {
            for (_, adapter) in p.adapters() {
                for (name, var) in adapter.parameters() {
                    let g = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("{kind:?} {}.{name}: no gradient", p.name));
                    assert!(g.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() > 0.0, "{kind:?} {}.{name}: zero gradient", p.name);
                }
            }
        }
        // Equal to the base model with W + ΔW.
        let mut merged = t.clone();
        for (p, _) in model.projections() {
            for (_, adapter) in p.adapters() {
                let entry = merged.iter_mut().find(|(n, _)| *n == format!("{}.weight", p.name)).unwrap();
                entry.1 = (&entry.1 + adapter.delta_weight().unwrap()).unwrap();
            }
        }
        let merged_dir = temp_dir(&format!("merged-{kind:?}"));
        write_hf_dir(&merged_dir, &merged, false);
        let d = max_diff(&logits(&model, &IDS), &logits(&LlamaModel::load(&merged_dir, &Device::Cpu).unwrap(), &IDS));
        assert!(d < 1e-4, "{kind:?}: adapters vs merged weights differ by {d}");
    }
}

#[test]
fn gguf_tokenizer_and_generation() {
    let dir = temp_dir("generate");
    let gguf = dir.join("tiny.gguf");
    write_gguf(&gguf, &tensors(6, true));
    let model = PretrainedModel::load(ModelSource::Path(gguf.clone()), "{}").unwrap();
    // " the" merges to one token; bytes otherwise.
    let ids = model.tokenizer.encode("a the").unwrap();
    assert_eq!(ids, vec![b'a' as u32, 258]);
    assert_eq!(model.tokenizer.decode(&ids).unwrap(), "a the");
    let options = GenerateOptions { max_tokens: 5, temperature: 0.0, seed: 0 };
    let g1 = model.generate("a the", &options).unwrap();
    assert_eq!(g1, model.generate("a the", &options).unwrap(), "greedy generation is deterministic");
    let sampled = GenerateOptions { max_tokens: 5, temperature: 1.0, seed: 9 };
    assert_eq!(model.generate("a the", &sampled).unwrap(), model.generate("a the", &sampled).unwrap(), "same seed, same sample");
    assert_eq!(g1.prompt_tokens, 2);
    // From bytes, as the WASM backend in a browser loads it.
    let bytes = std::fs::read(&gguf).unwrap();
    let from_bytes = PretrainedModel::load(ModelSource::Files([("tiny.gguf".to_string(), bytes)].into_iter().collect()), "{}").unwrap();
    assert_eq!(from_bytes.generate("a the", &options).unwrap(), g1);
}

#[test]
fn bad_gguf_files_are_named() {
    let dir = temp_dir("bad");
    let gguf = dir.join("tiny.gguf");
    write_gguf(&gguf, &tensors(7, false));
    let bytes = std::fs::read(&gguf).unwrap();
    std::fs::write(&gguf, &bytes[..bytes.len() - 1000]).unwrap();
    let err = PretrainedModel::load(ModelSource::Path(gguf.clone()), "{}").err().unwrap().to_string();
    assert!(err.contains("tiny.gguf") && err.contains("truncated"), "{err}");
    std::fs::write(&gguf, b"not a gguf file at all").unwrap();
    let err = PretrainedModel::load(ModelSource::Path(gguf), "{}").err().unwrap().to_string();
    assert!(err.contains("not a valid GGUF file"), "{err}");
    let err = PretrainedModel::load(ModelSource::Path(dir.join("missing.gguf")), "{}").err().unwrap().to_string();
    assert!(err.contains("no such file or directory"), "{err}");
}

#[test]
fn qwen2_checkpoints_use_their_qkv_biases() {
    let t = tensors(8, false);
    let llama_dir = temp_dir("qwen-base");
    write_hf_dir(&llama_dir, &t, false);
    let with_bias = |scale: f32, name: &str| {
        let dir = temp_dir(name);
        let mut qt = t.clone();
        let mut rng = Lcg::new(9);
        for l in 0..LAYERS {
            for (proj, out) in [("q_proj", HIDDEN), ("k_proj", KV_HEADS * HIDDEN / HEADS), ("v_proj", KV_HEADS * HIDDEN / HEADS)] {
                let b = Tensor::from_vec(rng.vec(out).into_iter().map(|x| x * scale).collect::<Vec<_>>(), out, &Device::Cpu).unwrap();
                qt.push((format!("model.layers.{l}.self_attn.{proj}.bias"), b));
            }
        }
        write_hf_dir(&dir, &qt, false);
        std::fs::write(dir.join("config.json"), config_json(false).replace("\"llama\"", "\"qwen2\"")).unwrap();
        LlamaModel::load(&dir, &Device::Cpu).unwrap()
    };
    let llama = logits(&LlamaModel::load(&llama_dir, &Device::Cpu).unwrap(), &IDS);
    assert!(max_diff(&logits(&with_bias(0.0, "qwen-zero"), &IDS), &llama) < 1e-6, "zero biases must change nothing");
    assert!(max_diff(&logits(&with_bias(0.5, "qwen-bias"), &IDS), &llama) > 1e-3, "the biases must be applied");
    // A qwen2 config whose checkpoint lacks the biases names the missing tensor.
    let dir = temp_dir("qwen-missing");
    write_hf_dir(&dir, &t, false);
    std::fs::write(dir.join("config.json"), config_json(false).replace("\"llama\"", "\"qwen2\"")).unwrap();
    let err = LlamaModel::load(&dir, &Device::Cpu).err().unwrap().to_string();
    assert!(err.contains("model.layers.0.self_attn.q_proj.bias` is missing"), "{err}");
}
