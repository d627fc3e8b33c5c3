//! Llama-family decoders (Llama, Mistral, Qwen2, SmolLM2), following Hugging Face's
//! `modeling_llama.py`: RMSNorm, rotary embeddings (rotate-half form), grouped-query
//! attention, SwiGLU MLP, tied or untied LM head. Every linear is an `AdaptedLinear`.

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use serde::Deserialize;

use super::backbone::{Backbone, Family, LlamaCppLayout};
use super::checkpoint;
use super::config_check::{check_json_fields, epsilon, invalid, size};
use super::nn::{attention, rms_norm, rope, swiglu};
use super::{FrozenWeight, KvCache};
use crate::adapters::DropoutSeed;
use crate::error::{Error, Result};
use crate::io::{GgufFile, GgufWeights, TensorSource, Weights};
use crate::models::adapted_linear::AdaptedLinear;
use crate::ops::AttentionSpec;

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct LlamaConfig {
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    #[serde(default)]
    pub head_dim: Option<usize>,
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// q/k/v biases (Qwen2 has them; Llama does not).
    #[serde(default)]
    pub attention_bias: Option<bool>,
    #[serde(default = "default_act")]
    pub hidden_act: String,
}

fn default_eps() -> f64 {
    1e-6
}
fn default_theta() -> f64 {
    10000.0
}
fn default_max_pos() -> usize {
    2048
}
fn default_act() -> String {
    "silu".into()
}

impl LlamaConfig {
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }
    pub fn head_dim(&self) -> usize {
        self.head_dim.unwrap_or(self.hidden_size / self.num_attention_heads)
    }
    fn qkv_bias(&self) -> bool {
        self.attention_bias.unwrap_or(self.model_type == "qwen2")
    }

    /// The config of a llama.cpp GGUF file (`general.architecture` = llama or qwen2).
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        let arch = file.string("general.architecture")?;
        if !matches!(arch.as_str(), "llama" | "qwen2" | "mistral") {
            return Err(Error::InvalidModel(format!(
                "{}: architecture `{arch}` is not supported (llama, mistral and qwen2 are)",
                file.path().display()
            )));
        }
        let key = |k: &str| format!("{arch}.{k}");
        // llama.cpp's scaled rotary embeddings: a scaling type, or Llama 3.1's frequency factors.
        let scaling =
            if file.has(&key("rope.scaling.type")) { file.string(&key("rope.scaling.type"))? } else { "none".into() };
        if scaling != "none" || file.has_tensor("rope_freqs.weight") {
            let kind = if scaling != "none" { scaling } else { "rope_freqs (llama3)".into() };
            return Err(Error::Unsupported(format!(
                "{}: the model uses scaled rotary embeddings ({kind}); kronlora computes only the default (unscaled) kind",
                file.path().display()
            )));
        }
        let heads = file.usize(&key("attention.head_count"))?;
        let hidden = file.usize(&key("embedding_length"))?;
        let config = LlamaConfig {
            model_type: if arch == "mistral" { "llama".into() } else { arch.clone() },
            vocab_size: file.strings("tokenizer.ggml.tokens")?.len(),
            hidden_size: hidden,
            intermediate_size: file.usize(&key("feed_forward_length"))?,
            num_hidden_layers: file.usize(&key("block_count"))?,
            num_attention_heads: heads,
            num_key_value_heads: Some(if file.has(&key("attention.head_count_kv")) {
                file.usize(&key("attention.head_count_kv"))?
            } else {
                heads
            }),
            head_dim: if file.has(&key("attention.key_length")) {
                Some(file.usize(&key("attention.key_length"))?)
            } else {
                None
            },
            rms_norm_eps: file.f64(&key("attention.layer_norm_rms_epsilon"))?,
            rope_theta: if file.has(&key("rope.freq_base")) { file.f64(&key("rope.freq_base"))? } else { 10000.0 },
            max_position_embeddings: file.usize(&key("context_length"))?,
            tie_word_embeddings: !file.has_tensor("output.weight"),
            attention_bias: Some(file.has_tensor("blk.0.attn_q.bias")),
            hidden_act: "silu".into(),
        };
        let gguf_key = |name: &'static str| -> String {
            let key = match name {
                "vocab_size" => return "tokenizer.ggml.tokens".into(),
                "hidden_size" => "embedding_length",
                "intermediate_size" => "feed_forward_length",
                "num_hidden_layers" => "block_count",
                "num_attention_heads" => "attention.head_count",
                "num_key_value_heads" => "attention.head_count_kv",
                "head_dim" => "attention.key_length",
                "rms_norm_eps" => "attention.layer_norm_rms_epsilon",
                "rope_theta" => "rope.freq_base",
                "max_position_embeddings" => "context_length",
                other => other,
            };
            format!("{arch}.{key}")
        };
        config.validate_named(&file.path().display().to_string(), &gguf_key)?;
        Ok(config)
    }

    /// Check every field the model uses; `path` names the config file in errors, `field`
    /// gives a field's name in it (the GGUF key of a GGUF file's metadata).
    fn validate_named(&self, path: &str, field: &dyn Fn(&'static str) -> String) -> Result<()> {
        let bad = |name: &'static str, what: String| Err(invalid(path, &field(name), what));
        if !matches!(self.model_type.as_str(), "llama" | "mistral" | "qwen2") {
            return bad(
                "model_type",
                format!("= \"{}\" is not a Llama-family decoder (llama, mistral, qwen2)", self.model_type),
            );
        }
        if self.hidden_act != "silu" {
            return bad("hidden_act", format!("= \"{}\" is not supported (only \"silu\")", self.hidden_act));
        }
        size(path, &field("vocab_size"), self.vocab_size)?;
        size(path, &field("hidden_size"), self.hidden_size)?;
        size(path, &field("intermediate_size"), self.intermediate_size)?;
        size(path, &field("num_hidden_layers"), self.num_hidden_layers)?;
        size(path, &field("num_attention_heads"), self.num_attention_heads)?;
        size(path, &field("max_position_embeddings"), self.max_position_embeddings)?;
        if let Some(kv) = self.num_key_value_heads {
            size(path, &field("num_key_value_heads"), kv)?;
        }
        if !self.num_attention_heads.is_multiple_of(self.kv_heads()) {
            return bad(
                "num_attention_heads",
                format!(
                    "= {} is not a multiple of {} = {}",
                    self.num_attention_heads,
                    field("num_key_value_heads"),
                    self.kv_heads()
                ),
            );
        }
        match self.head_dim {
            Some(hd) => size(path, &field("head_dim"), hd)?,
            None if !self.hidden_size.is_multiple_of(self.num_attention_heads) => {
                return bad(
                    "hidden_size",
                    format!(
                        "= {} is not divisible by {} = {} (and no head_dim is given)",
                        self.hidden_size,
                        field("num_attention_heads"),
                        self.num_attention_heads
                    ),
                )
            }
            None => {}
        }
        if !self.head_dim().is_multiple_of(2) {
            return bad("head_dim", format!("= {} must be even for rotary embeddings", self.head_dim()));
        }
        epsilon(path, &field("rms_norm_eps"), self.rms_norm_eps)?;
        if !(self.rope_theta.is_finite() && self.rope_theta > 1.0) {
            return bad(
                "rope_theta",
                format!("= {} is out of range; expected a finite number above 1 (such as 10000)", self.rope_theta),
            );
        }
        Ok(())
    }

    /// Parse and check a `config.json`; `path` names it in errors.
    pub fn from_json(bytes: &[u8], path: &str) -> Result<Self> {
        let invalid_json = |e: serde_json::Error| Error::InvalidModel(format!("{path}: invalid: {e}"));
        let probe: serde_json::Value = serde_json::from_slice(bytes).map_err(invalid_json)?;
        let sizes = [
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
            "num_key_value_heads",
            "head_dim",
            "max_position_embeddings",
        ];
        check_json_fields(&probe, path, &sizes, &["rms_norm_eps", "rope_theta"])?;
        let probe = rope_theta_from_parameters(probe, path)?;
        let config: LlamaConfig = serde_json::from_value(probe).map_err(invalid_json)?;
        config.validate(path)?;
        Ok(config)
    }

    /// `validate_named` with the config's own field names.
    pub fn validate(&self, path: &str) -> Result<()> {
        self.validate_named(path, &|name| name.to_string())
    }
}

/// transformers ≥ 5 writes the rotary settings as `rope_parameters` (`{ rope_theta, rope_type }`),
/// older versions `rope_theta` with an optional `rope_scaling`. Only plain rotary embeddings are
/// computed here: a scaled one (`llama3`, `yarn`, `linear`, ...) is refused rather than computed
/// as if unscaled, which would give wrong outputs on long contexts without any error.
fn rope_theta_from_parameters(mut probe: serde_json::Value, path: &str) -> Result<serde_json::Value> {
    for key in ["rope_parameters", "rope_scaling"] {
        let Some(params) = probe.get(key).filter(|v| !v.is_null()) else { continue };
        let Some(params) = params.as_object() else {
            return Err(invalid(path, key, "must be an object".into()));
        };
        let kind = params.get("rope_type").or_else(|| params.get("type")).and_then(|t| t.as_str()).unwrap_or("default");
        if kind != "default" {
            return Err(Error::Unsupported(format!(
                "{path}: `{key}` asks for rotary embeddings of type \"{kind}\"; kronlora computes only the default (unscaled) kind"
            )));
        }
        if let (Some(theta), None) = (params.get("rope_theta"), probe.get("rope_theta")) {
            if !theta.as_f64().is_some_and(|t| t.is_finite() && t > 0.0) {
                return Err(invalid(
                    path,
                    &format!("{key}.rope_theta"),
                    format!("must be a positive number, got {theta}"),
                ));
            }
            let theta = theta.clone();
            probe["rope_theta"] = theta;
        }
    }
    Ok(probe)
}

#[derive(Clone)]
struct DecoderLayer {
    input_norm: Tensor,
    q_proj: AdaptedLinear,
    k_proj: AdaptedLinear,
    v_proj: AdaptedLinear,
    o_proj: AdaptedLinear,
    post_attention_norm: Tensor,
    gate_proj: AdaptedLinear,
    up_proj: AdaptedLinear,
    down_proj: AdaptedLinear,
}

pub struct LlamaModel {
    /// Switches adapter dropout on for a training step.
    dropout_seed: DropoutSeed,
    pub config: LlamaConfig,
    /// Kept quantised when loaded so from GGUF (it is also the tied output head).
    embed_tokens: FrozenWeight,
    layers: Vec<DecoderLayer>,
    norm: Tensor,
    /// Untied output head; None when tied to `embed_tokens`.
    lm_head: Option<AdaptedLinear>,
    device: Device,
}

impl LlamaModel {
    /// A Hugging Face directory (`config.json` + safetensors).
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let config_path = dir.join("config.json");
        let bytes = std::fs::read(&config_path)
            .map_err(|e| Error::InvalidModel(format!("{}: cannot read: {e}", config_path.display())))?;
        let config = LlamaConfig::from_json(&bytes, &config_path.display().to_string())?;
        let weights = Weights::open(dir, device)?;
        Self::from_weights(config, &weights)
    }

    /// A llama.cpp GGUF file; `quantized`: its projections and token embeddings stay in their
    /// quantised blocks (CPU only), else every weight is dequantised to f32.
    pub fn load_gguf(file: Arc<GgufFile>, device: &Device, quantized: bool) -> Result<Self> {
        let config = LlamaConfig::from_gguf(&file)?;
        let permuted = file.string("general.architecture")? != "qwen2";
        let unpermute = permuted.then(|| (config.num_attention_heads, config.kv_heads()));
        let weights = GgufWeights::new(file, device, unpermute, quantized);
        Self::from_weights(config, &weights)
    }

    pub fn from_weights(config: LlamaConfig, w: &dyn TensorSource) -> Result<Self> {
        // A GGUF file holds its own config; a Hugging Face directory has config.json.
        let is_gguf = w.path().extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf"));
        let config_path = if is_gguf { w.path().to_path_buf() } else { w.path().with_file_name("config.json") };
        config.validate(&config_path.display().to_string())?;
        let c = &config;
        let (h, i, hd) = (c.hidden_size, c.intermediate_size, c.head_dim());
        let (q_out, kv_out) = (c.num_attention_heads * hd, c.kv_heads() * hd);
        let proj = |name: &str, out: usize, inp: usize, bias: bool| -> Result<AdaptedLinear> {
            let weight = w.get_frozen(&format!("{name}.weight"), &[out, inp])?;
            let bias = if bias { Some(w.get(&format!("{name}.bias"), &[out])?) } else { None };
            AdaptedLinear::new(name.to_string(), weight, bias)
        };
        let qkv_bias = c.qkv_bias();
        let layers = (0..c.num_hidden_layers)
            .map(|l| {
                let p = format!("model.layers.{l}");
                Ok(DecoderLayer {
                    input_norm: w.get(&format!("{p}.input_layernorm.weight"), &[h])?,
                    q_proj: proj(&format!("{p}.self_attn.q_proj"), q_out, h, qkv_bias)?,
                    k_proj: proj(&format!("{p}.self_attn.k_proj"), kv_out, h, qkv_bias)?,
                    v_proj: proj(&format!("{p}.self_attn.v_proj"), kv_out, h, qkv_bias)?,
                    o_proj: proj(&format!("{p}.self_attn.o_proj"), h, q_out, false)?,
                    post_attention_norm: w.get(&format!("{p}.post_attention_layernorm.weight"), &[h])?,
                    gate_proj: proj(&format!("{p}.mlp.gate_proj"), i, h, false)?,
                    up_proj: proj(&format!("{p}.mlp.up_proj"), i, h, false)?,
                    down_proj: proj(&format!("{p}.mlp.down_proj"), h, i, false)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let lm_head = if c.tie_word_embeddings && !w.contains("lm_head.weight") {
            None
        } else {
            Some(proj("lm_head", c.vocab_size, h, false)?)
        };
        let model = LlamaModel {
            dropout_seed: Default::default(),
            embed_tokens: w.get_frozen("model.embed_tokens.weight", &[c.vocab_size, h])?,
            norm: w.get("model.norm.weight", &[h])?,
            layers,
            lm_head,
            device: w.device().clone(),
            config,
        };
        // Task heads of other model classes (`score`, a sequence-classification head) may go
        // unused, and so may rotary-frequency buffers that old checkpoints store; everything
        // else is the decoder and must have been read.
        let body =
            |n: &str| !(n.starts_with("score.") || n.starts_with("classifier.") || n.ends_with("rotary_emb.inv_freq"));
        super::refuse_unread(
            w,
            body,
            &["layers", "blk"],
            model.config.num_hidden_layers,
            "`num_hidden_layers` (GGUF: `block_count`)",
        )?;
        Ok(model)
    }

    /// `cos`, `sin` tables `[t, head_dim]` for positions `start..start + t` (rotate-half layout).
    fn rope_tables(&self, start: usize, t: usize) -> Result<(Tensor, Tensor)> {
        let hd = self.config.head_dim();
        let inv: Vec<f32> =
            (0..hd / 2).map(|i| 1.0 / self.config.rope_theta.powf(2.0 * i as f64 / hd as f64) as f32).collect();
        let inv = Tensor::from_vec(inv, (1, hd / 2), &self.device)?;
        let pos =
            Tensor::arange(start as u32, (start + t) as u32, &self.device)?.to_dtype(DType::F32)?.reshape((t, 1))?;
        let freqs = pos.broadcast_mul(&inv)?;
        let freqs = Tensor::cat(&[&freqs, &freqs], 1)?;
        Ok((freqs.cos()?, freqs.sin()?))
    }

    /// Logits `[batch, t, vocab]` for `input_ids [batch, t]` (u32). With a cache, the tokens
    /// continue the cached sequence (generation); without, they start at position 0 (training).
    fn decode(&self, input_ids: &Tensor, mut cache: Option<&mut KvCache>) -> Result<Tensor> {
        let c = &self.config;
        let (b, t) = input_ids.dims2()?;
        let start = cache.as_ref().map_or(0, |c| c.len());
        if start + t > c.max_position_embeddings {
            return Err(Error::InvalidOption(format!(
                "{} tokens exceed the model's context of {} positions; shorten the input",
                start + t,
                c.max_position_embeddings
            )));
        }
        if let Some(cache) = cache.as_deref_mut() {
            cache.layers.resize(self.layers.len(), None);
        }
        let (cos, sin) = self.rope_tables(start, t)?;
        let mut x = self.embed_tokens.embedding(&input_ids.flatten_all()?)?.reshape((b, t, c.hidden_size))?;
        let shape = BlockShape::of(c);
        for (l, layer) in self.layers.iter().enumerate() {
            let kv = cache.as_deref_mut().map(|c| &mut c.layers[l]);
            x = if kv.is_none() && checkpoint::is_enabled() {
                let (layer, cos, sin) = (layer.clone(), cos.clone(), sin.clone());
                checkpoint::checkpointed(&x, move |x| layer_forward(&layer, x, &cos, &sin, None, shape))?
            } else {
                layer_forward(layer, &x, &cos, &sin, kv, shape)?
            };
        }
        let x = rms_norm(&x, &self.norm, c.rms_norm_eps)?;
        Ok(match &self.lm_head {
            Some(head) => head.forward(&x)?,
            None => self.embed_tokens.matmul(&x)?,
        })
    }
}

/// What a decoder block needs of the config (copied into a checkpointed block's closure).
#[derive(Clone, Copy)]
struct BlockShape {
    heads: usize,
    kv_heads: usize,
    eps: f64,
}

impl BlockShape {
    fn of(c: &LlamaConfig) -> Self {
        BlockShape { heads: c.num_attention_heads, kv_heads: c.kv_heads(), eps: c.rms_norm_eps }
    }
}

/// One decoder block on token-major `x [b, t, hidden]`; queries and keys are rotated and
/// attended in the layout the projections write (no head-major copies). With a cache entry,
/// the keys and values before these tokens are read from it and these are appended.
fn layer_forward(
    l: &DecoderLayer,
    x: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
    kv: Option<&mut Option<(Tensor, Tensor)>>,
    shape: BlockShape,
) -> Result<Tensor> {
    let BlockShape { heads, kv_heads, eps } = shape;
    let h = rms_norm(x, &l.input_norm, eps)?;
    let q = rope(&l.q_proj.forward(&h)?, cos, sin)?;
    let mut k = rope(&l.k_proj.forward(&h)?, cos, sin)?;
    let mut v = l.v_proj.forward(&h)?;
    if let Some(kv) = kv {
        if let Some((pk, pv)) = kv.as_ref() {
            k = Tensor::cat(&[pk, &k], 1)?;
            v = Tensor::cat(&[pv, &v], 1)?;
        }
        *kv = Some((k.clone(), v.clone()));
    }
    // Causal with the cache's offset: query i sees the cached keys and the tokens up to itself.
    let spec = AttentionSpec { heads, kv_heads, causal: true, key_mask: None };
    let context = attention(&q, &k, &v, &spec)?;
    let x = (x + l.o_proj.forward(&context)?)?;
    let h = rms_norm(&x, &l.post_attention_norm, eps)?;
    let mlp = l.down_proj.forward(&swiglu(&l.gate_proj.forward(&h)?, &l.up_proj.forward(&h)?)?)?;
    Ok((x + mlp)?)
}

impl Backbone for LlamaModel {
    fn family(&self) -> Family {
        Family::Decoder
    }
    fn model_type(&self) -> &str {
        &self.config.model_type
    }
    fn num_layers(&self) -> usize {
        self.config.num_hidden_layers
    }
    fn hidden_size(&self) -> usize {
        self.config.hidden_size
    }
    fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }
    fn context_length(&self) -> usize {
        self.config.max_position_embeddings
    }
    fn device(&self) -> &Device {
        &self.device
    }
    fn dropout_seed(&self) -> &DropoutSeed {
        &self.dropout_seed
    }

    fn projections(&self) -> Vec<&AdaptedLinear> {
        let layers = self
            .layers
            .iter()
            .flat_map(|l| [&l.q_proj, &l.k_proj, &l.v_proj, &l.o_proj, &l.gate_proj, &l.up_proj, &l.down_proj]);
        layers.chain(self.lm_head.as_ref()).collect()
    }

    fn projections_mut(&mut self) -> Vec<&mut AdaptedLinear> {
        let layers = self.layers.iter_mut().flat_map(|l| {
            [
                &mut l.q_proj,
                &mut l.k_proj,
                &mut l.v_proj,
                &mut l.o_proj,
                &mut l.gate_proj,
                &mut l.up_proj,
                &mut l.down_proj,
            ]
        });
        layers.chain(self.lm_head.as_mut()).collect()
    }

    fn output_head(&self) -> Option<&str> {
        self.lm_head.as_ref().map(|h| h.name())
    }

    /// llama.cpp's converter writes Mistral as `llama`, and permutes Q and K rows of every
    /// architecture but qwen2 (the rule `load_gguf` undoes).
    fn llama_cpp_layout(&self) -> Option<LlamaCppLayout> {
        let qwen2 = self.config.model_type == "qwen2";
        Some(LlamaCppLayout {
            architecture: if qwen2 { "qwen2" } else { "llama" },
            permuted_heads: (!qwen2).then(|| (self.config.num_attention_heads, self.config.kv_heads())),
        })
    }

    fn num_base_parameters(&self) -> usize {
        let norms = (2 * self.layers.len() + 1) * self.config.hidden_size;
        self.embed_tokens.elem_count() + norms + self.projections().iter().map(|p| p.num_parameters()).sum::<usize>()
    }

    fn forward(
        &self,
        input_ids: &Tensor,
        _attention_mask: Option<&Tensor>,
        cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        self.decode(input_ids, cache)
    }
}
