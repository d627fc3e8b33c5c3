//! Custom candle operations with their own backward passes. They know no model or adapter.

mod attention;
mod cpu_slices;
mod fused;
mod gelu;
mod kron;
mod matmul_t;

pub use attention::{fused_attention, AttentionSpec};
pub use fused::{fusable, fused_layer_norm, fused_softmax_last_dim};
pub use gelu::fused_gelu_erf;
pub use kron::kron;
pub use matmul_t::{frozen_matmul, matmul_t};
