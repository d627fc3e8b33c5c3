//! Custom candle operations with their own backward passes. They know no model or adapter.

mod fused;
mod kron;
mod matmul_t;

pub use fused::{fusable, fused_layer_norm, fused_softmax_last_dim};
pub use kron::kron;
pub use matmul_t::{frozen_matmul, matmul_t};
