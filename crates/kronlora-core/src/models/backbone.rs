//! What every model family implements (BERT-style encoders, Llama-style decoders), so that
//! loading, adapter attachment, adapter files, inference and training are written once.

use candle_core::{Device, Tensor};

use super::head::HeadStyle;
use super::KvCache;
use crate::adapters::DropoutSeed;
use crate::error::Result;
use crate::models::adapted_linear::AdaptedLinear;

/// What a model's task heads are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    SequenceClassification,
    CausalLm,
    Embedding,
}

impl Task {
    pub const ALL: [Task; 3] = [Task::SequenceClassification, Task::CausalLm, Task::Embedding];

    pub fn name(self) -> &'static str {
        match self {
            Task::SequenceClassification => "sequence-classification",
            Task::CausalLm => "causal-lm",
            Task::Embedding => "embedding",
        }
    }

    pub fn from_name(name: &str) -> Option<Task> {
        Task::ALL.into_iter().find(|t| t.name() == name)
    }
}

/// Encoders attend both ways and give hidden states; decoders are causal and give logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Encoder,
    Decoder,
}

impl Family {
    /// The tasks a model of this family can be loaded for; the first is the default.
    pub fn tasks(self) -> &'static [Task] {
        match self {
            Family::Encoder => &[Task::Embedding, Task::SequenceClassification],
            Family::Decoder => &[Task::CausalLm],
        }
    }

    /// How messages name the family.
    pub fn describe(self) -> &'static str {
        match self {
            Family::Encoder => "a BERT encoder",
            Family::Decoder => "a Llama-family decoder",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Family::Encoder => "encoder",
            Family::Decoder => "decoder",
        }
    }
}

pub trait Backbone: Send + Sync {
    fn family(&self) -> Family;
    /// The config's `model_type` (`bert`, `distilbert`, `llama`, `qwen2`, …).
    fn model_type(&self) -> &str;
    fn num_layers(&self) -> usize;
    fn hidden_size(&self) -> usize;
    /// Rows of the token embedding: every token id must be below it.
    fn vocab_size(&self) -> usize;
    /// The most tokens one sequence may hold (the position embeddings' length).
    fn context_length(&self) -> usize;
    /// Where the weights live; everything the model creates goes there too.
    fn device(&self) -> &Device;
    /// The model-wide switch of adapter dropout (on for a training step).
    fn dropout_seed(&self) -> &DropoutSeed;

    /// Every adapter-aware projection, in model order.
    fn projections(&self) -> Vec<&AdaptedLinear>;
    fn projections_mut(&mut self) -> Vec<&mut AdaptedLinear>;
    /// The output head's module path, when it is a projection (PEFT's `all-linear` skips it).
    fn output_head(&self) -> Option<&str> {
        None
    }
    /// Frozen parameters (embeddings, norms, projections).
    fn num_base_parameters(&self) -> usize;

    /// `input_ids [batch, t]` (u32) → encoders: hidden states `[batch, t, hidden]` under
    /// `attention_mask [batch, t]` (1 = token, 0 = padding); decoders: logits `[batch, t, vocab]`,
    /// causal (right padding needs no mask), continuing `cache` when one is given (generation).
    fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        cache: Option<&mut KvCache>,
    ) -> Result<Tensor>;

    /// The sequence-classification head this family puts on top, if it has one.
    fn head_style(&self) -> Option<HeadStyle> {
        None
    }
    /// The prefix transformers' model class for `task` puts before the backbone's module
    /// paths (`bert.` in `BertForSequenceClassification`), as PEFT files name modules.
    fn task_module_prefix(&self, _task: Task) -> &'static str {
        ""
    }
    /// How llama.cpp names this model (for GGUF LoRA files); None where llama.cpp has no such
    /// decoder.
    fn llama_cpp_layout(&self) -> Option<LlamaCppLayout> {
        None
    }
}

/// What a GGUF LoRA file for llama.cpp must agree with: the base's `general.architecture`,
/// and the head counts by which its converter permuted Q and K (None: not permuted, qwen2).
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaCppLayout {
    pub architecture: &'static str,
    pub permuted_heads: Option<(usize, usize)>,
}
