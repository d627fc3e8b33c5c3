//! A pretrained model ready for a task: backbone (BERT or Llama family), tokenizer, optional
//! classification head, and named adapters. What `loadModel` returns in JavaScript.

mod active_adapters;
mod adapter_files;
mod export;
mod foreign_adapters;
mod inference;
mod merged;
mod merged_hf;
mod options;

use candle_core::{Device, Tensor};
use serde::Serialize;

use crate::adapters::AdapterConfig;
use crate::error::{Error, Result};
use crate::io::{ModelSource, TensorSource};
use crate::models::head::ClassificationHead;
use crate::models::{attach_adapter, load_backbone, AdapterPlan, Backbone, FrozenWeight, LoadedBackbone};
use crate::tokenizer::TextTokenizer;

pub use crate::io::peft::{
    adapter_config_summary_json, ADAPTER_LAYOUT, ADAPTER_MARKER, CONFIG_FILE as ADAPTER_CONFIG_FILE,
    WEIGHTS_FILE as ADAPTER_WEIGHTS_FILE,
};
pub use crate::models::Task;
pub use export::ExportFormat;
pub use inference::{Classification, GenerateOptions, Generation};
pub use options::ModelOptions;

pub struct PretrainedModel {
    pub backbone: Box<dyn Backbone>,
    pub tokenizer: TextTokenizer,
    pub task: Task,
    pub head: Option<ClassificationHead>,
    adapters: Vec<AdapterInfo>,
    /// Class names when the classifier was trained on string labels.
    pub labels: crate::data::LabelMap,
    /// Where the model was loaded from (recorded in saved adapters).
    pub source_name: String,
}

/// Adapter names: non-empty ASCII letters, digits, `_` and `-`.
fn valid_adapter_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// What was asked for when an adapter was added (or read back from its config).
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterInfo {
    pub name: String,
    pub modules: usize,
    pub config: AdapterConfig,
    pub dropout: f64,
    /// The weight it is active with (1 when added or loaded), None while inactive.
    pub weight: Option<f64>,
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

/// What a model is, for `describe` (the wire names are the API's).
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ModelDescription {
    pub architecture: String,
    pub family: &'static str,
    pub task: &'static str,
    pub device: String,
    pub report: ParameterReport,
    pub modules: Vec<ModuleDescription>,
    pub labels: Vec<String>,
    /// The adapters forward passes use, in the order they were added, with their weights.
    pub active_adapters: Vec<ActiveAdapter>,
    /// Whether the active adapters are merged into the base weights (`mergeAdapters`).
    pub merged: bool,
}

/// An active adapter and the weight on its update.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ActiveAdapter {
    pub name: String,
    pub weight: f64,
}

/// One projection adapters can target.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ModuleDescription {
    pub name: String,
    pub in_features: usize,
    pub out_features: usize,
    pub adapters: Vec<String>,
    /// How the frozen weight is held: `F32` (or the file's float type), or its GGUF block type
    /// (`Q4_1`, `Q8_0`, ...) when kept quantised.
    pub weight_type: String,
    /// Each adapter's shape here, by adapter name: its rank, and Kron-LoRA's `(d_A1, d_A2)`.
    pub factors: std::collections::BTreeMap<String, AdapterFactors>,
}

/// One adapter's shape on one module, as the layer resolved it.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AdapterFactors {
    pub rank: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kron_in: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kron_out: Option<usize>,
}

/// How messages and `describe` name a device: `cpu`, `cuda:0`, `metal:0`.
pub fn device_name(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

impl PretrainedModel {
    /// Load from a directory / `.gguf` path or from file bytes, for `options.task`, on
    /// `options.device`.
    pub fn load(source: ModelSource, options: &ModelOptions) -> Result<Self> {
        let name = source.display();
        // Loaders check what they read first; a candle failure left over is still the files'
        // doing (a shape they state, bytes they hold), not a kronlora bug.
        let mut model = Self::load_inner(source, options).map_err(|e| match e {
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
        let rows = self.backbone.vocab_size();
        let largest = self.tokenizer.largest_token_id() as usize;
        if largest >= rows {
            return Err(Error::InvalidModel(format!(
                "{name}: the tokenizer has token id {largest}, but the model has only {rows} token embeddings (vocab_size); the tokenizer does not belong to these weights"
            )));
        }
        Ok(())
    }

    fn load_inner(source: ModelSource, options: &ModelOptions) -> Result<Self> {
        let LoadedBackbone { backbone, tokenizer, weights, config_path, labels } =
            load_backbone(source, &options.device, options.quantized)?;
        let family = backbone.family();
        let task = options.task.unwrap_or(family.tasks()[0]);
        if !family.tasks().contains(&task) {
            let tasks: Vec<String> = family.tasks().iter().map(|t| format!("\"{}\"", t.name())).collect();
            return Err(Error::InvalidOption(format!(
                "{config_path}: {} has no {} head; use task {}",
                family.describe(),
                if task == Task::CausalLm { "causal-LM" } else { task.name() },
                tasks.join(" or ")
            )));
        }
        let head = match (task, backbone.head_style()) {
            (Task::SequenceClassification, Some(style)) => Some(ClassificationHead::new(
                weights.as_ref().map(|w| w as &dyn TensorSource).ok_or_else(|| {
                    Error::Unsupported(format!(
                        "{config_path}: a classification head needs a model directory's weights"
                    ))
                })?,
                style,
                backbone.hidden_size(),
                options.num_labels,
                options.seed,
                backbone.device(),
            )?),
            _ => None,
        };
        // A merged classifier's class names, when its head has that many classes.
        let labels = match &head {
            Some(h) if h.num_labels() == labels.len() => crate::data::LabelMap { names: labels },
            _ => Default::default(),
        };
        Ok(PretrainedModel {
            backbone,
            tokenizer,
            task,
            head,
            adapters: Vec::new(),
            labels,
            source_name: String::new(),
        })
    }

    /// The device the model's weights live on; everything it creates goes there too.
    pub fn device(&self) -> &Device {
        self.backbone.device()
    }

    /// Seed the adapters' dropout masks (None: no dropout, as in evaluation).
    pub fn set_dropout_seed(&self, seed: Option<u64>) {
        self.backbone.dropout_seed().set(seed)
    }

    /// The most tokens one sequence may hold (the position embeddings' length).
    pub fn context_length(&self) -> usize {
        self.backbone.context_length()
    }

    /// The config's model type with its size, e.g. `bert (6 layers, hidden 384)`.
    pub fn architecture(&self) -> String {
        let b = &self.backbone;
        format!("{} ({} layers, hidden {})", b.model_type(), b.num_layers(), b.hidden_size())
    }

    /// Add an adapter named `name` to the projections `plan` selects; returns how many got one.
    pub fn add_adapter(&mut self, name: &str, plan: &AdapterPlan) -> Result<usize> {
        if !valid_adapter_name(name) {
            return Err(Error::InvalidOption(format!(
                "adapter name `{name}` must be non-empty letters, digits, `_` or `-`"
            )));
        }
        let count = attach_adapter(self.backbone.as_mut(), name, plan)?;
        self.adapters.push(AdapterInfo {
            name: name.to_string(),
            modules: count,
            config: plan.config.clone(),
            dropout: plan.dropout,
            weight: Some(1.0),
        });
        Ok(count)
    }

    /// The adapters added so far, in order.
    pub fn adapter_infos(&self) -> &[AdapterInfo] {
        &self.adapters
    }

    /// Every adapted projection's adapters, as `(module path, adapter name, adapter)`.
    pub fn adapters(&self) -> Vec<(String, String, &dyn crate::adapters::Adapter)> {
        self.backbone
            .projections()
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
    pub fn classification_logits(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let Some(head) = &self.head else {
            return Err(Error::Unsupported(
                "classification training needs an encoder loaded with task \"sequence-classification\"".into(),
            ));
        };
        head.forward(&self.backbone.forward(ids, Some(mask), None)?)
    }

    /// What the model is: architecture, task, device, parameter counts, modules and labels.
    pub fn describe(&self) -> ModelDescription {
        let modules = self
            .backbone
            .projections()
            .iter()
            .map(|p| ModuleDescription {
                name: p.name.clone(),
                in_features: p.in_features(),
                out_features: p.out_features(),
                adapters: p.adapters().map(|(n, _)| n.to_string()).collect(),
                weight_type: match p.frozen_weight() {
                    Some(FrozenWeight::Quantized(q)) => crate::io::ggml_type_name(q.dtype()),
                    Some(FrozenWeight::Dense(t)) => format!("{:?}", t.dtype()).to_uppercase(),
                    None => "none".into(),
                },
                factors: p
                    .adapters()
                    .map(|(n, a)| {
                        let (kron_in, kron_out) = a.kron_factors().unzip();
                        (n.to_string(), AdapterFactors { rank: a.rank(), kron_in, kron_out })
                    })
                    .collect(),
            })
            .collect();
        ModelDescription {
            architecture: self.architecture(),
            family: self.backbone.family().name(),
            task: self.task.name(),
            device: device_name(self.device()),
            report: self.parameter_report(),
            modules,
            labels: self.labels.names.clone(),
            active_adapters: self.active_adapters(),
            merged: self.is_merged(),
        }
    }

    pub fn parameter_report(&self) -> ParameterReport {
        let base = self.backbone.num_base_parameters();
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
