//! Custom candle operations with their own backward passes. They know no model or adapter.

mod attention;
mod cpu_slices;
pub(crate) use cpu_slices::contiguous_f32;
mod fast_math;
mod frozen_weight;
mod fused;
mod gelu;
mod kron;
mod kron_mix;
mod linear;
mod matmul_t;
#[cfg(all(feature = "openblas", target_os = "linux"))]
mod openblas;
mod quantized_linear;
mod rms_norm;
mod rope;
mod strided_gemm;
mod swiglu;
mod target_log_probs;

pub use attention::{fused_attention, AttentionSpec};
pub use frozen_weight::FrozenWeight;
pub use fused::{composed_ops, fusable, fused_layer_norm, fused_softmax_last_dim, with_composed_ops};
pub use gelu::fused_gelu_erf;
pub use kron::kron;
pub use kron_mix::{kron_mix, kron_mix_composed};
pub use linear::{frozen_linear, UpdateProduct};
pub use matmul_t::{frozen_matmul, matmul_t};
pub use quantized_linear::{quantized_matmul, QuantizedWeight, QUANTIZED_KERNEL_ROWS, QUANTIZED_TYPES};
pub use rms_norm::fused_rms_norm;
pub use rope::fused_rope;
pub use swiglu::fused_swiglu;
pub use target_log_probs::fused_target_log_probs;
