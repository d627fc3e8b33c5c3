//! kronlora-core: Kron-LoRA (`ΔW = A ⊗ (B1·B2)`) and LoRA adapters on candle.
//!
//! Everything numerical lives here; the Node (napi) and WASM bindings call `api` and only
//! convert arguments. The same code runs on every candle device (CPU; CUDA behind the `cuda`
//! feature): a model's device is chosen when it is loaded and everything it creates lives there.

pub mod adapters;
pub mod api;
pub mod chat_template;
pub mod compute_pool;
pub mod data;
pub mod error;
pub mod factorization;
pub mod grad_mode;
pub mod hash;
pub mod io;
pub mod limits;
pub mod models;
pub mod ops;
pub mod pretrained;
pub mod reuse_freed_memory;
pub mod tensor_data;
pub mod tokenizer;
pub mod train;

pub use adapters::AdapterConfig;
pub use adapters::{Adapter, AdapterKind, KronLora, Lora, LoraFactors};
pub use candle_core::Error as CandleError;
pub use error::{Error, Result};
pub use factorization::{factorization, resolve_kron_factor};
pub use models::adapted_linear::{AdaptedLinear, Gradients, LayerOptions};
pub use tensor_data::TensorData;
