//! Training: the optimiser, learning-rate schedules and gradient clipping. (The training loop,
//! data and checkpoints build on these.)

mod adamw;
mod clip;
mod loss;
mod schedule;

pub use adamw::{AdamW, AdamWConfig, AdamWState};
pub use clip::clip_grad_norm;
pub use loss::{cross_entropy, log_softmax};
pub use schedule::{LrSchedule, ScheduleKind};
