//! A tiny Llama in real formats (a Hugging Face directory and a GGUF file), written by the tests.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};

use crate::reference::Lcg;

/// A minimal chat template (role markers, one line per message).
pub const CHAT_TEMPLATE: &str = "{% for m in messages %}<{{ m.role }}>{{ m.content }}\n{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}";

pub const VOCAB: usize = 300;
pub const HIDDEN: usize = 32;
pub const HEADS: usize = 4;
pub const KV_HEADS: usize = 2;
pub const FFN: usize = 48;
pub const LAYERS: usize = 2;

/// A Llama's sizes.
pub struct LlamaDims {
    pub vocab: usize,
    pub hidden: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub ffn: usize,
    pub layers: usize,
    /// Linear weights uniform in ±1.2/√fan_in instead of ±0.4 / ±0.3 (see `tensors_for`).
    pub fan_in_scaled: bool,
}

pub const TINY: LlamaDims = LlamaDims {
    vocab: VOCAB,
    hidden: HIDDEN,
    heads: HEADS,
    kv_heads: KV_HEADS,
    ffn: FFN,
    layers: LAYERS,
    fan_in_scaled: false,
};

pub fn config_json(tied: bool) -> String {
    config_json_for(&TINY, tied)
}

pub fn config_json_for(d: &LlamaDims, tied: bool) -> String {
    let LlamaDims { vocab, hidden, heads, kv_heads, ffn, layers, .. } = d;
    format!(
        r#"{{"model_type":"llama","vocab_size":{vocab},"hidden_size":{hidden},"intermediate_size":{ffn},
        "num_hidden_layers":{layers},"num_attention_heads":{heads},"num_key_value_heads":{kv_heads},
        "rms_norm_eps":1e-5,"rope_theta":10000.0,"max_position_embeddings":64,"tie_word_embeddings":{tied}}}"#
    )
}

pub fn tensors(seed: u64, tied: bool) -> Vec<(String, Tensor)> {
    tensors_for(seed, &TINY, tied)
}

pub fn tensors_for(seed: u64, d: &LlamaDims, tied: bool) -> Vec<(String, Tensor)> {
    let mut rng = Lcg::new(seed);
    let (hidden, ffn) = (d.hidden, d.ffn);
    let hd = hidden / d.heads;
    let scale = |fan_in: usize, tiny: f32| if d.fan_in_scaled { 1.2 / (fan_in as f32).sqrt() } else { tiny };
    let mut t = Vec::new();
    let mut put = |name: String, shape: &[usize], scale: f32, offset: f64| {
        let n = shape.iter().product();
        let v = Tensor::from_vec(rng.vec(n).into_iter().map(|x| x * scale).collect::<Vec<_>>(), shape, &Device::Cpu)
            .unwrap();
        t.push((name, (v + offset).unwrap()));
    };
    put("model.embed_tokens.weight".into(), &[d.vocab, hidden], 1.0, 0.0);
    for l in 0..d.layers {
        let p = format!("model.layers.{l}");
        put(format!("{p}.input_layernorm.weight"), &[hidden], 0.1, 1.0);
        put(format!("{p}.self_attn.q_proj.weight"), &[d.heads * hd, hidden], scale(hidden, 0.4), 0.0);
        put(format!("{p}.self_attn.k_proj.weight"), &[d.kv_heads * hd, hidden], scale(hidden, 0.4), 0.0);
        put(format!("{p}.self_attn.v_proj.weight"), &[d.kv_heads * hd, hidden], scale(hidden, 0.4), 0.0);
        put(format!("{p}.self_attn.o_proj.weight"), &[hidden, d.heads * hd], scale(hidden, 0.3), 0.0);
        put(format!("{p}.post_attention_layernorm.weight"), &[hidden], 0.1, 1.0);
        put(format!("{p}.mlp.gate_proj.weight"), &[ffn, hidden], scale(hidden, 0.3), 0.0);
        put(format!("{p}.mlp.up_proj.weight"), &[ffn, hidden], scale(hidden, 0.3), 0.0);
        put(format!("{p}.mlp.down_proj.weight"), &[hidden, ffn], scale(ffn, 0.3), 0.0);
    }
    put("model.norm.weight".into(), &[hidden], 0.1, 1.0);
    if !tied {
        put("lm_head.weight".into(), &[d.vocab, hidden], scale(hidden, 0.3), 0.0);
    }
    t
}

pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kronlora-llama-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// GPT-2's byte → printable character map (the byte-level BPE alphabet).
pub fn byte_chars() -> Vec<char> {
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
pub fn vocab() -> (Vec<String>, Vec<String>) {
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
pub fn permute(t: &Tensor, heads: usize) -> Tensor {
    let (out, inp) = t.dims2().unwrap();
    t.reshape((heads, 2, out / heads / 2, inp))
        .unwrap()
        .transpose(1, 2)
        .unwrap()
        .contiguous()
        .unwrap()
        .reshape((out, inp))
        .unwrap()
}

pub fn write_gguf(path: &Path, tensors: &[(String, Tensor)]) {
    write_gguf_typed(path, &TINY, tensors, |_| GgmlDType::F32)
}

/// A GGUF file of a Llama with sizes `d` (vocabulary `VOCAB`), each tensor stored as
/// `dtype(gguf name)` (1-D norms always F32).
pub fn write_gguf_typed(path: &Path, d: &LlamaDims, tensors: &[(String, Tensor)], dtype: impl Fn(&str) -> GgmlDType) {
    assert_eq!(d.vocab, VOCAB);
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
                permute(t, d.heads)
            } else if n.ends_with("k_proj.weight") {
                permute(t, d.kv_heads)
            } else {
                t.clone()
            };
            let g = gguf_name(n);
            let ty = if t.rank() == 1 { GgmlDType::F32 } else { dtype(&g) };
            (g, QTensor::quantize(&t, ty).unwrap())
        })
        .collect();
    let strings = |v: &[String]| Value::Array(v.iter().map(|s| Value::String(s.clone())).collect());
    let types: Vec<Value> =
        (0..tokens.len()).map(|i| Value::I32(if tokens[i] == "<|endoftext|>" { 3 } else { 1 })).collect();
    let eos = tokens.iter().position(|t| t == "<|endoftext|>").unwrap() as u32;
    let meta: Vec<(&str, Value)> = vec![
        ("general.architecture", Value::String("llama".into())),
        ("llama.block_count", Value::U32(d.layers as u32)),
        ("llama.embedding_length", Value::U32(d.hidden as u32)),
        ("llama.feed_forward_length", Value::U32(d.ffn as u32)),
        ("llama.attention.head_count", Value::U32(d.heads as u32)),
        ("llama.attention.head_count_kv", Value::U32(d.kv_heads as u32)),
        ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
        ("llama.rope.freq_base", Value::F32(10000.0)),
        ("llama.context_length", Value::U32(64)),
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.tokens", strings(&tokens)),
        ("tokenizer.ggml.merges", strings(&merges)),
        ("tokenizer.ggml.token_type", Value::Array(types)),
        ("tokenizer.ggml.bos_token_id", Value::U32(eos)),
        ("tokenizer.ggml.eos_token_id", Value::U32(eos)),
        ("tokenizer.chat_template", Value::String(CHAT_TEMPLATE.into())),
    ];
    let meta_refs: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (*k, v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = q.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut file = std::fs::File::create(path).unwrap();
    gguf_file::write(&mut file, &meta_refs, &tensor_refs).unwrap();
}

pub fn write_hf_dir(dir: &Path, tensors: &[(String, Tensor)], tied: bool) {
    write_hf_dir_for(dir, &TINY, tensors, tied)
}

pub fn write_hf_dir_for(dir: &Path, d: &LlamaDims, tensors: &[(String, Tensor)], tied: bool) {
    std::fs::write(dir.join("config.json"), config_json_for(d, tied)).unwrap();
    let map: HashMap<String, Tensor> = tensors.iter().cloned().collect();
    candle_core::safetensors::save(&map, dir.join("model.safetensors")).unwrap();
}
