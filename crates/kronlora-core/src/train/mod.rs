//! Training: the optimiser, learning-rate schedules, gradient clipping, losses and the
//! classification training loop (checkpoints and the other tasks' loops build on these).

mod adamw;
mod classifier;
mod clip;
mod loss;
mod schedule;

pub use adamw::{AdamW, AdamWConfig, AdamWState};
pub use classifier::{evaluate, train_classification, EvalMetrics, StepEvent, TrainOptions};
pub use clip::{clip_grad_norm, clip_grads, grad_norm};
pub use loss::{cross_entropy, log_softmax};
pub use schedule::{LrSchedule, ScheduleKind};
