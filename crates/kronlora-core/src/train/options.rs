//! What a training run and an evaluation are asked to do (typed; `api` parses the options).

use serde_json::Value;

use super::ScheduleKind;

/// Where records come from: a JSONL (or JSON array) file, or records given inline.
#[derive(Debug, Clone, PartialEq)]
pub enum DataSpec {
    Path(String),
    Records(Value),
    /// File contents handed over by a host that read the file itself (`name` for errors).
    Text {
        name: String,
        text: String,
    },
}

/// Which metric early stopping and "best" watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    Loss,
    Accuracy,
    Perplexity,
}

impl Metric {
    pub fn name(self) -> &'static str {
        match self {
            Metric::Loss => "loss",
            Metric::Accuracy => "accuracy",
            Metric::Perplexity => "perplexity",
        }
    }
    pub fn higher_is_better(self) -> bool {
        self == Metric::Accuracy
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct EarlyStopping {
    /// Evaluations without improvement before stopping.
    pub patience: usize,
    /// The smallest change that counts as an improvement.
    pub min_delta: f64,
}

/// The task to train: from the model's task, or multiple choice on a causal LM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrainTask {
    Classification,
    CausalLm,
    MultipleChoice,
}

impl TrainTask {
    pub fn from_name(name: &str) -> Option<TrainTask> {
        [TrainTask::Classification, TrainTask::CausalLm, TrainTask::MultipleChoice]
            .into_iter()
            .find(|t| t.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            TrainTask::Classification => "classification",
            TrainTask::CausalLm => "causal-lm",
            TrainTask::MultipleChoice => "multiple-choice",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TrainOptions {
    pub task: Option<TrainTask>,
    pub data: DataSpec,
    pub validation_data: Option<DataSpec>,
    /// Held out of `data` when no validation data is given (0: none).
    pub validation_split: f64,
    pub epochs: usize,
    /// Stop after this many optimiser steps (None: run all epochs).
    pub max_steps: Option<u64>,
    pub batch_size: usize,
    pub eval_batch_size: usize,
    pub learning_rate: f64,
    pub warmup_ratio: f64,
    pub warmup_steps: Option<u64>,
    pub schedule: ScheduleKind,
    pub weight_decay: f64,
    pub max_grad_norm: Option<f64>,
    pub gradient_accumulation: usize,
    /// Recompute each transformer block's forward in backward instead of keeping its
    /// activations (`models::checkpoint`): less memory, about one more forward pass of time.
    pub gradient_checkpointing: bool,
    /// Tokens per example at most (None: 128, or the model's context when shorter).
    pub max_length: Option<usize>,
    pub seed: u64,
    /// Evaluate every N optimiser steps (None: at the end of each epoch only).
    pub eval_every: Option<u64>,
    pub metric: Metric,
    pub early_stopping: Option<EarlyStopping>,
    /// Restore the best evaluated weights at the end (default: when there is validation data).
    pub load_best_at_end: Option<bool>,
    pub output_dir: Option<String>,
    /// Checkpoint every N optimiser steps (None: at each evaluation and at the end of each epoch).
    pub checkpoint_every: Option<u64>,
    pub keep_checkpoints: usize,
    /// A checkpoint directory, or an output directory (its latest checkpoint).
    pub resume_from: Option<String>,
    /// Emit a step event every N optimiser steps.
    pub log_every: u64,
}

impl DataSpec {
    /// How errors name this data: its file, or `fallback` for records given in memory.
    pub fn name(&self, fallback: &str) -> String {
        match self {
            DataSpec::Path(p) => p.clone(),
            DataSpec::Text { name, .. } => name.clone(),
            DataSpec::Records(_) => fallback.to_string(),
        }
    }
}

impl TrainOptions {
    /// The settings a resumed run must share with the run that wrote the checkpoint.
    pub fn fingerprint(&self) -> Value {
        serde_json::json!({
            "task": self.task.map(TrainTask::name),
            "epochs": self.epochs,
            "maxSteps": self.max_steps,
            "batchSize": self.batch_size,
            "learningRate": self.learning_rate,
            "warmupRatio": self.warmup_ratio,
            "warmupSteps": self.warmup_steps,
            "schedule": format!("{:?}", self.schedule),
            "weightDecay": self.weight_decay,
            "maxGradNorm": self.max_grad_norm,
            "gradientAccumulation": self.gradient_accumulation,
            "maxLength": self.max_length,
            "seed": self.seed.to_string(),
            "validationSplit": self.validation_split,
        })
    }
}

/// Options of `model.evaluate(data, {...})`.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalOptions {
    pub task: Option<TrainTask>,
    pub batch_size: usize,
    /// Tokens per example at most (None: 128, or the model's context when shorter).
    pub max_length: Option<usize>,
}
