//! BERT-style encoders (BERT, MiniLM, DistilBERT), following Hugging Face's `modeling_bert.py`
//! and `modeling_distilbert.py` module by module so a reader can check it line by line (the two
//! compute the same layer; DistilBERT has other names and no token-type embeddings). Every
//! linear is an `AdaptedLinear`.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde::Deserialize;

use super::backbone::{Backbone, Family, Task};
use super::checkpoint;
use super::config_check::{check_json_fields, epsilon, invalid, size};
use super::head::HeadStyle;
use super::nn::{attention, gelu_erf, layer_norm};
use super::KvCache;
use crate::adapters::DropoutSeed;
use crate::error::{Error, Result};
use crate::io::{TensorSource, Weights};
use crate::models::adapted_linear::AdaptedLinear;
use crate::ops::AttentionSpec;

/// The fields of a BERT `config.json` that the model needs.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct BertConfig {
    #[serde(default = "default_model_type")]
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
}

/// DistilBERT's `config.json` fields, which differ in name from BERT's.
#[derive(Deserialize)]
struct DistilBertConfig {
    vocab_size: usize,
    dim: usize,
    n_layers: usize,
    n_heads: usize,
    hidden_dim: usize,
    max_position_embeddings: usize,
    #[serde(default = "default_act")]
    activation: String,
    #[serde(default)]
    sinusoidal_pos_embds: bool,
}

impl BertConfig {
    /// Parse a `config.json` of model type `bert` or `distilbert`; `path` names it in errors.
    pub fn from_json(bytes: &[u8], path: &str) -> Result<Self> {
        let invalid = |e: serde_json::Error| Error::InvalidModel(format!("{path}: invalid: {e}"));
        let probe: serde_json::Value = serde_json::from_slice(bytes).map_err(invalid)?;
        if probe.get("model_type").and_then(|v| v.as_str()) != Some("distilbert") {
            let sizes = [
                "vocab_size",
                "hidden_size",
                "num_hidden_layers",
                "num_attention_heads",
                "intermediate_size",
                "max_position_embeddings",
                "type_vocab_size",
            ];
            check_json_fields(&probe, path, &sizes, &["layer_norm_eps"])?;
            let config: BertConfig = serde_json::from_value(probe).map_err(invalid)?;
            config.validate(path)?;
            return Ok(config);
        }
        check_json_fields(
            &probe,
            path,
            &["vocab_size", "dim", "n_layers", "n_heads", "hidden_dim", "max_position_embeddings"],
            &[],
        )?;
        let d: DistilBertConfig = serde_json::from_value(probe).map_err(invalid)?;
        if d.sinusoidal_pos_embds {
            return Err(Error::InvalidModel(format!("{path}: sinusoidal_pos_embds = true is not supported")));
        }
        let config = BertConfig {
            model_type: "distilbert".into(),
            vocab_size: d.vocab_size,
            hidden_size: d.dim,
            num_hidden_layers: d.n_layers,
            num_attention_heads: d.n_heads,
            intermediate_size: d.hidden_dim,
            hidden_act: d.activation,
            max_position_embeddings: d.max_position_embeddings,
            type_vocab_size: 0,
            layer_norm_eps: 1e-12,
        };
        config.validate(path)?;
        Ok(config)
    }

    pub fn is_distilbert(&self) -> bool {
        self.model_type == "distilbert"
    }

    /// Check every field the model uses; `path` (the config file) and the field's name in
    /// that file (BERT's or DistilBERT's) are named in errors.
    pub fn validate(&self, path: &str) -> Result<()> {
        let distil = self.is_distilbert();
        let name = |bert: &'static str, distilbert: &'static str| if distil { distilbert } else { bert };
        if !matches!(self.model_type.as_str(), "bert" | "distilbert") {
            return Err(invalid(
                path,
                "model_type",
                format!(
                    "= \"{}\" is not a BERT-style encoder this loader reads (expected \"bert\" or \"distilbert\")",
                    self.model_type
                ),
            ));
        }
        if self.hidden_act != "gelu" {
            return Err(invalid(
                path,
                name("hidden_act", "activation"),
                format!("= \"{}\" is not supported (only \"gelu\")", self.hidden_act),
            ));
        }
        size(path, "vocab_size", self.vocab_size)?;
        size(path, name("hidden_size", "dim"), self.hidden_size)?;
        size(path, name("num_hidden_layers", "n_layers"), self.num_hidden_layers)?;
        size(path, name("num_attention_heads", "n_heads"), self.num_attention_heads)?;
        size(path, name("intermediate_size", "hidden_dim"), self.intermediate_size)?;
        size(path, "max_position_embeddings", self.max_position_embeddings)?;
        if !distil {
            size(path, "type_vocab_size", self.type_vocab_size)?;
        }
        epsilon(path, "layer_norm_eps", self.layer_norm_eps)?;
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(invalid(
                path,
                name("hidden_size", "dim"),
                format!(
                    "= {} is not divisible by {} = {}",
                    self.hidden_size,
                    name("num_attention_heads", "n_heads"),
                    self.num_attention_heads
                ),
            ));
        }
        Ok(())
    }
}

/// Module names of one encoder layer, as transformers names them.
struct LayerNames {
    layer: &'static str,
    query: &'static str,
    key: &'static str,
    value: &'static str,
    attention_output: &'static str,
    attention_norm: &'static str,
    intermediate: &'static str,
    output: &'static str,
    output_norm: &'static str,
}

const BERT_NAMES: LayerNames = LayerNames {
    layer: "encoder.layer",
    query: "attention.self.query",
    key: "attention.self.key",
    value: "attention.self.value",
    attention_output: "attention.output.dense",
    attention_norm: "attention.output.LayerNorm",
    intermediate: "intermediate.dense",
    output: "output.dense",
    output_norm: "output.LayerNorm",
};

const DISTILBERT_NAMES: LayerNames = LayerNames {
    layer: "transformer.layer",
    query: "attention.q_lin",
    key: "attention.k_lin",
    value: "attention.v_lin",
    attention_output: "attention.out_lin",
    attention_norm: "sa_layer_norm",
    intermediate: "ffn.lin1",
    output: "ffn.lin2",
    output_norm: "output_layer_norm",
};

fn default_model_type() -> String {
    "bert".into()
}
fn default_act() -> String {
    "gelu".into()
}
fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}

#[derive(Clone)]
struct Norm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl Norm {
    fn load(w: &dyn TensorSource, name: &str, size: usize, eps: f64) -> Result<Self> {
        Ok(Norm {
            weight: w.get(&format!("{name}.weight"), &[size])?,
            bias: w.get(&format!("{name}.bias"), &[size])?,
            eps,
        })
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(layer_norm(x, &self.weight, &self.bias, self.eps)?)
    }
}

fn projection(w: &dyn TensorSource, name: &str, out: usize, inp: usize) -> Result<AdaptedLinear> {
    let weight = w.get(&format!("{name}.weight"), &[out, inp])?;
    let bias = w.get(&format!("{name}.bias"), &[out])?;
    AdaptedLinear::new(name.to_string(), weight, Some(bias))
}

#[derive(Clone)]
struct BertLayer {
    query: AdaptedLinear,
    key: AdaptedLinear,
    value: AdaptedLinear,
    attention_output: AdaptedLinear,
    attention_norm: Norm,
    intermediate: AdaptedLinear,
    output: AdaptedLinear,
    output_norm: Norm,
}

/// Name prefixes of the encoder in transformers' checkpoints (task models nest it).
pub const WEIGHT_PREFIXES: &[&str] = &["", "bert.", "distilbert.", "model."];

pub struct BertModel {
    /// Switches adapter dropout on for a training step.
    dropout_seed: DropoutSeed,
    pub config: BertConfig,
    word_embeddings: Tensor,
    position_embeddings: Tensor,
    /// None for DistilBERT, which has no token types.
    token_type_embeddings: Option<Tensor>,
    embedding_norm: Norm,
    layers: Vec<BertLayer>,
    device: Device,
}

impl BertModel {
    /// Load `dir/config.json` and the directory's safetensors weights.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let config_path = dir.join("config.json");
        let bytes = std::fs::read(&config_path)
            .map_err(|e| Error::InvalidModel(format!("{}: cannot read: {e}", config_path.display())))?;
        let config = BertConfig::from_json(&bytes, &config_path.display().to_string())?;
        let mut weights = Weights::open(dir, device)?;
        weights.detect_prefix("embeddings.word_embeddings.weight", WEIGHT_PREFIXES);
        Self::from_weights(config, &weights)
    }

    pub fn from_weights(config: BertConfig, w: &dyn TensorSource) -> Result<Self> {
        config.validate(&w.path().with_file_name("config.json").display().to_string())?;
        let c = &config;
        let (h, i) = (c.hidden_size, c.intermediate_size);
        let eps = c.layer_norm_eps;
        let n = if c.is_distilbert() { &DISTILBERT_NAMES } else { &BERT_NAMES };
        let layers = (0..c.num_hidden_layers)
            .map(|l| {
                let p = format!("{}.{l}", n.layer);
                Ok(BertLayer {
                    query: projection(w, &format!("{p}.{}", n.query), h, h)?,
                    key: projection(w, &format!("{p}.{}", n.key), h, h)?,
                    value: projection(w, &format!("{p}.{}", n.value), h, h)?,
                    attention_output: projection(w, &format!("{p}.{}", n.attention_output), h, h)?,
                    attention_norm: Norm::load(w, &format!("{p}.{}", n.attention_norm), h, eps)?,
                    intermediate: projection(w, &format!("{p}.{}", n.intermediate), i, h)?,
                    output: projection(w, &format!("{p}.{}", n.output), h, i)?,
                    output_norm: Norm::load(w, &format!("{p}.{}", n.output_norm), h, eps)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let model = BertModel {
            dropout_seed: Default::default(),
            word_embeddings: w.get("embeddings.word_embeddings.weight", &[c.vocab_size, h])?,
            position_embeddings: w.get("embeddings.position_embeddings.weight", &[c.max_position_embeddings, h])?,
            token_type_embeddings: if c.is_distilbert() {
                None
            } else {
                Some(w.get("embeddings.token_type_embeddings.weight", &[c.type_vocab_size, h])?)
            },
            embedding_norm: Norm::load(w, "embeddings.LayerNorm", h, eps)?,
            layers,
            device: w.device().clone(),
            config,
        };
        // Task heads (pooler, classifier, `cls.*` MLM heads) may go unused: one checkpoint
        // serves several tasks. An encoder tensor left over means the config describes another
        // model (fewer layers, say), and reading part of it would give wrong outputs.
        let encoder = |n: &str| {
            WEIGHT_PREFIXES.iter().any(|p| {
                n.strip_prefix(p)
                    .is_some_and(|rest| ["embeddings.", "encoder.", "transformer."].iter().any(|b| rest.starts_with(b)))
            }) && !n.ends_with("position_ids")
        };
        let field =
            if model.config.is_distilbert() { "config.json's `n_layers`" } else { "config.json's `num_hidden_layers`" };
        super::refuse_unread(w, encoder, &[n.layer], model.config.num_hidden_layers, field)?;
        Ok(model)
    }

    /// Hidden states `[batch, seq, hidden]` for `input_ids [batch, seq]` (u32) and
    /// `attention_mask [batch, seq]` (1 = token, 0 = padding); token types are all 0.
    fn encode(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
        let c = &self.config;
        let (b, t) = input_ids.dims2()?;
        if t > c.max_position_embeddings {
            return Err(Error::InvalidOption(format!(
                "sequence of {t} tokens is longer than the model's max_position_embeddings = {}; truncate the input",
                c.max_position_embeddings
            )));
        }
        let words = self.word_embeddings.index_select(&input_ids.flatten_all()?, 0)?.reshape((b, t, c.hidden_size))?;
        let positions = self.position_embeddings.narrow(0, 0, t)?;
        let mut x = words.broadcast_add(&positions)?;
        if let Some(types) = &self.token_type_embeddings {
            x = x.broadcast_add(&types.narrow(0, 0, 1)?)?;
        }
        let mut x = self.embedding_norm.forward(&x)?;
        // Additive key mask [b, t]: 0 for tokens, a large negative number for padding.
        let mask = ((attention_mask.to_dtype(DType::F32)? - 1.0)? * 1e30)?;
        let heads = c.num_attention_heads;
        for layer in &self.layers {
            x = if checkpoint::is_enabled() {
                let (layer, mask) = (layer.clone(), mask.clone());
                checkpoint::checkpointed(&x, move |x| layer_forward(&layer, x, &mask, heads))?
            } else {
                layer_forward(layer, &x, &mask, heads)?
            };
        }
        Ok(x)
    }
}

/// One encoder block (a free function: a checkpointed block runs it again on a clone of `l`).
fn layer_forward(l: &BertLayer, x: &Tensor, mask: &Tensor, heads: usize) -> Result<Tensor> {
    let spec = AttentionSpec { heads, kv_heads: heads, causal: false, key_mask: Some(mask) };
    let (q, k, v) = (l.query.forward(x)?, l.key.forward(x)?, l.value.forward(x)?);
    let context = attention(&q, &k, &v, &spec)?;
    let attended = l.attention_norm.forward(&(l.attention_output.forward(&context)? + x)?)?;
    let inner = gelu_erf(&l.intermediate.forward(&attended)?)?;
    l.output_norm.forward(&(l.output.forward(&inner)? + attended)?)
}

impl Backbone for BertModel {
    fn family(&self) -> Family {
        Family::Encoder
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
        self.layers
            .iter()
            .flat_map(|l| [&l.query, &l.key, &l.value, &l.attention_output, &l.intermediate, &l.output])
            .collect()
    }

    fn projections_mut(&mut self) -> Vec<&mut AdaptedLinear> {
        self.layers
            .iter_mut()
            .flat_map(|l| {
                [&mut l.query, &mut l.key, &mut l.value, &mut l.attention_output, &mut l.intermediate, &mut l.output]
            })
            .collect()
    }

    fn num_base_parameters(&self) -> usize {
        let norms = (1 + 2 * self.layers.len()) * 2 * self.config.hidden_size;
        let types = self.token_type_embeddings.as_ref().map_or(0, |t| t.elem_count());
        let emb = self.word_embeddings.elem_count() + self.position_embeddings.elem_count() + types;
        emb + norms + self.projections().iter().map(|p| p.num_parameters()).sum::<usize>()
    }

    fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        if cache.is_some() {
            return Err(Error::Unsupported("an encoder has no key-value cache; it reads whole sequences".into()));
        }
        match attention_mask {
            Some(mask) => self.encode(input_ids, mask),
            None => self.encode(input_ids, &input_ids.ones_like()?.to_dtype(DType::F32)?),
        }
    }

    fn head_style(&self) -> Option<HeadStyle> {
        Some(if self.config.is_distilbert() { HeadStyle::DistilBert } else { HeadStyle::BertPooler })
    }

    fn task_module_prefix(&self, task: Task) -> &'static str {
        match task {
            Task::SequenceClassification if self.config.is_distilbert() => "distilbert.",
            Task::SequenceClassification => "bert.",
            _ => "",
        }
    }
}
