//! Training: the optimiser, learning-rate schedules, gradient clipping, losses, the datasets
//! of each task, checkpoints, and the training loop.

mod adamw;
mod checkpoint;
mod clip;
mod events;
mod loss;
mod options;
mod schedule;
mod task_data;
mod trainer;

pub use adamw::{AdamW, AdamWConfig, AdamWState};
pub use checkpoint::{find_checkpoint, read_checkpoint, Checkpoint, TrainerState, STATE_FILE};
pub use clip::{clip_grad_norm, clip_grads, grad_norm};
pub use events::{StopReason, TrainEvent, TrainObserver, TrainResult};
pub use loss::{cross_entropy, log_softmax, target_log_probs, target_log_probs_composed};
pub use options::{DataSpec, EarlyStopping, EvalOptions, Metric, TrainOptions, TrainTask};
pub use schedule::{LrSchedule, ScheduleKind};
pub use task_data::{label_summary, label_summary_json, EvalMetrics, TaskData};
pub use trainer::{evaluate_model, train, trainable_named};
