//! kronlora-core: Kron-LoRA (`ΔW = A ⊗ (B1·B2)`) and LoRA adapters on candle.
//!
//! Everything numerical lives here; the Node (napi) and WASM bindings only convert arguments.
//! The same code runs on every candle device (CPU now; CUDA behind the `cuda` feature).

pub mod adapters;
pub mod chat_template;
pub mod data;
pub mod error;
pub mod factorization;
pub mod grad_mode;
pub mod hash;
pub mod io;
pub mod linear;
pub mod models;
pub mod ops;
pub mod options;
pub mod pretrained;
pub mod tensor_data;
pub mod tokenizer;
pub mod train;

pub use adapters::{Adapter, AdapterKind, KronLora, Lora, LoraFactors};
pub use candle_core::Error as CandleError;
pub use error::{Error, Result};
pub use factorization::{factorization, factorization_checked, resolve_kron_factor};
pub use linear::{AdaptedLinear, Gradients};
pub use options::{AdapterConfig, LayerOptions};
pub use tensor_data::TensorData;

/// The device new layers are created on. CPU for now; the `cuda` feature will pick a GPU here.
pub fn default_device() -> candle_core::Device {
    candle_core::Device::Cpu
}
