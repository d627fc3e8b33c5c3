//! A pretrained model ready for a task: backbone (BERT or Llama family), tokenizer, optional
//! classification head, and named adapters. What `loadModel` returns in JavaScript.

mod adapter_files;
mod inference;
mod options;

use std::sync::Arc;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::io::{GgufFile, ModelSource, TensorSource, Weights};
use crate::models::bert::{BertConfig, BertModel, WEIGHT_PREFIXES};
use crate::models::head::{ClassificationHead, HeadStyle};
use crate::models::llama::{LlamaConfig, LlamaModel};
use crate::tokenizer::TextTokenizer;

pub use crate::io::peft::{
    adapter_config_summary_json, ADAPTER_LAYOUT, ADAPTER_MARKER, CONFIG_FILE as ADAPTER_CONFIG_FILE,
    WEIGHTS_FILE as ADAPTER_WEIGHTS_FILE,
};
pub use inference::{Classification, GenerateOptions, Generation};
pub use options::{adapter_plan_from_json, ModelOptions, Task};

pub enum Backbone {
    Bert(BertModel),
    Llama(LlamaModel),
}

pub struct PretrainedModel {
    pub backbone: Backbone,
    pub tokenizer: TextTokenizer,
    pub task: Task,
    pub head: Option<ClassificationHead>,
    adapters: Vec<AdapterInfo>,
    /// Class names when the classifier was trained on string labels.
    pub labels: crate::data::LabelMap,
    /// Where the model was loaded from (recorded in saved adapters).
    pub source_name: String,
}

/// What was asked for when an adapter was added (or read back from its config).
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterInfo {
    pub name: String,
    pub modules: usize,
    pub config: crate::options::AdapterConfig,
    pub dropout: f64,
}

/// Like PEFT's `print_trainable_parameters`, with the adapters and head broken down.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ParameterReport {
    pub trainable: usize,
    pub total: usize,
    /// 100 · trainable / total.
    pub percentage: f64,
    /// Trainable parameters per adapter name.
    pub adapters: std::collections::BTreeMap<String, usize>,
    /// Trainable parameters of the classification head (0 without one).
    pub head: usize,
    /// How many projections carry each adapter.
    pub adapted_modules: std::collections::BTreeMap<String, usize>,
}

fn model_type(bytes: &[u8], path: &str) -> Result<String> {
    #[derive(serde::Deserialize)]
    struct Probe {
        model_type: Option<String>,
    }
    let probe: Probe =
        serde_json::from_slice(bytes).map_err(|e| Error::InvalidModel(format!("{path}: invalid JSON: {e}")))?;
    probe.model_type.ok_or_else(|| Error::InvalidModel(format!("{path}: field `model_type` is missing")))
}

fn to_json<T: Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::InvalidState(format!("cannot serialise a result: {e}")))
}

impl PretrainedModel {
    /// Load from a directory / `.gguf` path or from file bytes; `options_json` is `ModelOptions`.
    pub fn load(source: ModelSource, options_json: &str) -> Result<Self> {
        let name = source.display();
        // Loaders check what they read first; a candle failure left over is still the files'
        // doing (a shape they state, bytes they hold), not a kronlora bug.
        let mut model = Self::load_inner(source, options_json).map_err(|e| match e {
            Error::Internal(e) => Error::InvalidModel(format!(
                "{name}: the model cannot be read: {}",
                e.to_string().lines().next().unwrap_or("")
            )),
            other => other,
        })?;
        model.check_token_ids(&name)?;
        model.source_name = name;
        Ok(model)
    }

    /// Every id the tokenizer can produce must have an embedding row; otherwise the first text
    /// that uses it fails deep inside a forward pass.
    fn check_token_ids(&self, name: &str) -> Result<()> {
        let rows = match &self.backbone {
            Backbone::Bert(m) => m.config.vocab_size,
            Backbone::Llama(m) => m.config.vocab_size,
        };
        let largest = self.tokenizer.largest_token_id() as usize;
        if largest >= rows {
            return Err(Error::InvalidModel(format!(
                "{name}: the tokenizer has token id {largest}, but the model has only {rows} token embeddings (vocab_size); the tokenizer does not belong to these weights"
            )));
        }
        Ok(())
    }

    fn load_inner(mut source: ModelSource, options_json: &str) -> Result<Self> {
        let (task, options) = ModelOptions::from_json(options_json)?;
        source.check()?;
        let device = crate::default_device();
        if let Some(name) = source.gguf_name() {
            let file = match &source {
                ModelSource::Path(p) => GgufFile::open(p)?,
                ModelSource::Files(_) => {
                    let shown = source.file_path(&name).display().to_string();
                    GgufFile::from_bytes(&shown, source.take(&name)?)?
                }
            };
            let name = file.path().display().to_string();
            let file = Arc::new(file);
            let tokenizer = TextTokenizer::from_gguf(&file)?;
            let model = LlamaModel::load_gguf(file, &device)?;
            return Self::decoder(model, tokenizer, task, &name);
        }
        let config_path = source.file_path("config.json").display().to_string();
        let config_bytes = source.read("config.json")?;
        let tokenizer =
            TextTokenizer::from_bytes(&source.read("tokenizer.json")?, &source.file_path("tokenizer.json"))?;
        match model_type(&config_bytes, &config_path)?.as_str() {
            "bert" | "distilbert" => {
                let config = BertConfig::from_json(&config_bytes, &config_path)?;
                let mut weights = Weights::from_source(&mut source, &device)?;
                weights.detect_prefix("embeddings.word_embeddings.weight", WEIGHT_PREFIXES);
                let style = if config.is_distilbert() { HeadStyle::DistilBert } else { HeadStyle::BertPooler };
                let model = BertModel::from_weights(config, &weights)?;
                let task = task.unwrap_or(Task::Embedding);
                let head = match task {
                    Task::SequenceClassification => {
                        Some(ClassificationHead::new(&weights, style, model.config.hidden_size, options.num_labels, options.seed, &device)?)
                    }
                    Task::Embedding => None,
                    Task::CausalLm => {
                        return Err(Error::InvalidOption(format!(
                            "{config_path}: a BERT encoder has no causal-LM head; use task \"embedding\" or \"sequence-classification\""
                        )))
                    }
                };
                Ok(PretrainedModel {
                    backbone: Backbone::Bert(model),
                    tokenizer,
                    task,
                    head,
                    adapters: Vec::new(),
                    labels: Default::default(),
                    source_name: String::new(),
                })
            }
            "llama" | "mistral" | "qwen2" => {
                let config = LlamaConfig::from_json(&config_bytes, &config_path)?;
                let tokenizer_config = if source.exists("tokenizer_config.json") {
                    Some(source.read("tokenizer_config.json")?)
                } else {
                    None
                };
                let tokenizer = tokenizer.with_decoder_config(&config_bytes, tokenizer_config.as_deref());
                let weights = Weights::from_source(&mut source, &device)?;
                let model = LlamaModel::from_weights(config, &weights as &dyn TensorSource)?;
                Self::decoder(model, tokenizer, task, &config_path)
            }
            other => Err(Error::InvalidModel(format!(
                "{config_path}: model_type `{other}` is not supported; kronlora loads BERT-style encoders (bert) \
                 (bert, distilbert) and Llama-family decoders (llama, mistral, qwen2)"
            ))),
        }
    }

    fn decoder(model: LlamaModel, tokenizer: TextTokenizer, task: Option<Task>, path: &str) -> Result<Self> {
        match task.unwrap_or(Task::CausalLm) {
            Task::CausalLm => Ok(PretrainedModel {
                backbone: Backbone::Llama(model),
                tokenizer,
                task: Task::CausalLm,
                head: None,
                adapters: Vec::new(),
                labels: Default::default(),
                source_name: String::new(),
            }),
            other => Err(Error::InvalidOption(format!(
                "{path}: a Llama-family decoder is loaded for task \"causal-lm\", not \"{}\"",
                other.name()
            ))),
        }
    }

    /// The device the model's weights live on; everything it creates goes there too.
    pub fn device(&self) -> &candle_core::Device {
        match &self.backbone {
            Backbone::Bert(m) => m.device(),
            Backbone::Llama(m) => m.device(),
        }
    }

    /// Seed the adapters' dropout masks (None: no dropout, as in evaluation).
    pub fn set_dropout_seed(&self, seed: Option<u64>) {
        match &self.backbone {
            Backbone::Bert(m) => m.dropout_seed.set(seed),
            Backbone::Llama(m) => m.dropout_seed.set(seed),
        }
    }

    /// The most tokens one sequence may hold (the position embeddings' length).
    pub fn context_length(&self) -> usize {
        match &self.backbone {
            Backbone::Bert(m) => m.config.max_position_embeddings,
            Backbone::Llama(m) => m.config.max_position_embeddings,
        }
    }

    /// `bert` or `llama` (the family), and the config's model type.
    pub fn architecture(&self) -> String {
        match &self.backbone {
            Backbone::Bert(m) => format!(
                "{} ({} layers, hidden {})",
                m.config.model_type, m.config.num_hidden_layers, m.config.hidden_size
            ),
            Backbone::Llama(m) => format!(
                "{} ({} layers, hidden {})",
                m.config.model_type, m.config.num_hidden_layers, m.config.hidden_size
            ),
        }
    }

    /// Add an adapter from its JSON options; returns how many projections got one.
    pub fn add_adapter(&mut self, name: &str, options_json: &str) -> Result<usize> {
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            return Err(Error::InvalidOption(format!(
                "adapter name `{name}` must be non-empty letters, digits, `_` or `-`"
            )));
        }
        let plan = adapter_plan_from_json(options_json)?;
        let count = match &mut self.backbone {
            Backbone::Bert(m) => m.add_adapter(name, &plan)?,
            Backbone::Llama(m) => m.add_adapter(name, &plan)?,
        };
        self.adapters.push(AdapterInfo {
            name: name.to_string(),
            modules: count,
            config: plan.config.clone(),
            dropout: plan.dropout,
        });
        Ok(count)
    }

    /// The adapters added so far, in order.
    pub fn adapter_infos(&self) -> &[AdapterInfo] {
        &self.adapters
    }

    /// Every adapted projection's adapters, as `(module path, adapter name, adapter)`.
    pub fn adapters(&self) -> Vec<(String, String, &dyn crate::adapters::Adapter)> {
        let projections: Vec<&crate::models::Projection> = match &self.backbone {
            Backbone::Bert(m) => m.projections(),
            Backbone::Llama(m) => m.projections().into_iter().map(|(p, _)| p).collect(),
        };
        projections
            .into_iter()
            .flat_map(|p| p.adapters().map(move |(n, a)| (p.name.clone(), n.to_string(), a)))
            .collect()
    }

    /// Every trainable variable: adapter parameters in model order, then the head's.
    pub fn trainable_variables(&self) -> Vec<candle_core::Var> {
        let mut vars: Vec<candle_core::Var> = self
            .adapters()
            .into_iter()
            .flat_map(|(_, _, a)| a.parameters().into_iter().map(|(_, v)| v.clone()).collect::<Vec<_>>())
            .collect();
        if let Some(head) = &self.head {
            vars.extend(head.parameters().into_iter().map(|(_, v)| v.clone()));
        }
        vars
    }

    /// Class logits `[b, labels]` of a padded batch (training and evaluation).
    pub fn classification_logits(
        &self,
        ids: &candle_core::Tensor,
        mask: &candle_core::Tensor,
    ) -> Result<candle_core::Tensor> {
        let (Backbone::Bert(bert), Some(head)) = (&self.backbone, &self.head) else {
            return Err(Error::Unsupported(
                "classification training needs an encoder loaded with task \"sequence-classification\"".into(),
            ));
        };
        head.forward(&bert.forward(ids, mask)?)
    }

    /// JSON `{ architecture, task, report, modules, labels }`: what both bindings hand to the TS package.
    pub fn describe_json(&self) -> Result<String> {
        let projections: Vec<&crate::models::Projection> = match &self.backbone {
            Backbone::Bert(m) => m.projections(),
            Backbone::Llama(m) => m.projections().into_iter().map(|(p, _)| p).collect(),
        };
        let modules: Vec<serde_json::Value> = projections
            .iter()
            .map(|p| {
                let adapters: Vec<&str> = p.adapters().map(|(n, _)| n).collect();
                serde_json::json!({ "name": p.name, "inFeatures": p.in_features(), "outFeatures": p.out_features(), "adapters": adapters })
            })
            .collect();
        to_json(&serde_json::json!({
            "architecture": self.architecture(),
            "task": self.task.name(),
            "report": self.parameter_report(),
            "modules": modules,
            "labels": self.labels.names,
        }))
    }

    /// `classify` as JSON `[{ label, score, scores }]`.
    pub fn classify_json(&self, texts: &[String]) -> Result<String> {
        to_json(&self.classify(texts)?)
    }

    /// `generate` from JavaScript numbers, as JSON `{ text, promptTokens, generatedTokens, stoppedAtEos }`.
    pub fn generate_json(&self, prompt: &str, max_tokens: u32, temperature: f64, seed: f64) -> Result<String> {
        let seed = crate::options::seed("seed", Some(&serde_json::json!(seed)))?;
        to_json(&self.generate(prompt, &GenerateOptions { max_tokens: max_tokens as usize, temperature, seed })?)
    }

    pub fn parameter_report(&self) -> ParameterReport {
        let base = match &self.backbone {
            Backbone::Bert(m) => m.num_base_parameters(),
            Backbone::Llama(m) => m.num_base_parameters(),
        };
        let mut adapters = std::collections::BTreeMap::new();
        for (_, name, a) in self.adapters() {
            *adapters.entry(name).or_insert(0) += a.num_trainable_parameters();
        }
        let head = self.head.as_ref().map_or(0, |h| h.parameters().iter().map(|(_, v)| v.elem_count()).sum());
        let trainable = adapters.values().sum::<usize>() + head;
        let total = base + trainable;
        ParameterReport {
            trainable,
            total,
            percentage: 100.0 * trainable as f64 / total as f64,
            adapters,
            head,
            adapted_modules: self.adapters.iter().map(|a| (a.name.clone(), a.modules)).collect(),
        }
    }
}
