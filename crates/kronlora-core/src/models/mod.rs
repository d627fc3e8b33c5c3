//! Pretrained transformer models whose linear projections can carry adapters.

pub mod bert;
mod nn;
mod projection;
mod targets;

pub use nn::{layer_norm, softmax_last_dim};
pub use projection::Projection;
pub use targets::{AdapterPlan, ModuleOverride, TargetModules};
